//! Many rules over one stream: dispatch by event category, one reorder buffer in front of all
//! sequence rules, hot reload that keeps the pending state of unchanged rules.
//!
//! Architecture invariant: an event is only shown to rules whose queries can match its
//! `event.category` (plus the rules with an `any` step), so adding rules for one category costs
//! nothing for events of another.

use crate::alert::Alert;
use crate::eql::sequence::Shared;
use crate::eql::Dialect;
use crate::event::{Event, Field, Value};
use crate::rules::{RuleDef, RuleError};
use crate::runner::{Reorder, RuleRunner, RunnerConfig, RunnerStats};
use crate::Detector;
use std::collections::HashMap;

struct Slot {
    def: RuleDef,
    runner: RuleRunner,
}

/// Counters of a rule set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RuleSetStats {
    pub events: u64,
    pub alerts: u64,
    /// Events older than the lateness window when they arrived: seen by single-event rules, not by
    /// sequence rules.
    pub late: u64,
    pub evicted: u64,
    pub expired: u64,
}

/// What a reload did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Unchanged rules (pending state kept).
    pub kept: Vec<String>,
    pub added: Vec<String>,
    /// Rules whose query or options changed (state dropped).
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Rules that did not compile (the old version, if any, keeps running).
    pub failed: Vec<(String, String)>,
}

/// A set of compiled rules run as one [`Detector`].
pub struct RuleSet {
    slots: Vec<Slot>,
    by_category: HashMap<Box<str>, Vec<usize>>,
    any: Vec<usize>,
    cat_field: Field,
    cfg: RunnerConfig,
    reorder: Reorder,
    /// Per-rule marker of the last event it was given (dedup across several categories).
    seen: Vec<u64>,
    tick: u64,
    has_seq: bool,
    /// Newest event time given to sequence rules (zero-lateness mode).
    last_ts: i64,
    stats: RuleSetStats,
}

impl RuleSet {
    pub fn new(cfg: RunnerConfig) -> RuleSet {
        RuleSet {
            slots: Vec::new(),
            by_category: HashMap::new(),
            any: Vec::new(),
            cat_field: Field::intern("event.category"),
            cfg,
            reorder: Reorder::new(cfg.lateness_ns),
            seen: Vec::new(),
            tick: 0,
            has_seq: false,
            last_ts: i64::MIN,
            stats: RuleSetStats::default(),
        }
    }

    /// Compiles and adds `def` (rules with the same id replace the older one).
    pub fn add(&mut self, def: RuleDef) -> Result<(), RuleError> {
        let query = def.compile()?;
        let runner = RuleRunner::new(
            def.meta.clone(),
            query,
            RunnerConfig {
                lateness_ns: 0,
                ..self.cfg
            },
        );
        self.slots.retain(|s| s.def.meta.id != def.meta.id);
        self.slots.push(Slot { def, runner });
        self.reindex();
        Ok(())
    }

    /// Replaces the rule set with `defs`. Rules whose id, query and options are unchanged keep their
    /// runner (and so their pending sequences); metadata-only changes are applied in place.
    pub fn reload(&mut self, defs: Vec<RuleDef>) -> ReloadReport {
        let mut report = ReloadReport::default();
        let mut old: HashMap<String, Slot> = self
            .slots
            .drain(..)
            .map(|s| (s.def.meta.id.clone(), s))
            .collect();
        let mut slots = Vec::new();
        for def in defs {
            let id = def.meta.id.clone();
            if let Some(prev) = old.remove(&id) {
                if prev.def.query == def.query
                    && prev.def.options == def.options
                    && prev.def.language == def.language
                {
                    let mut prev = prev;
                    if prev.def.meta != def.meta {
                        prev.runner = rebuild_meta(prev.runner, &def);
                    }
                    prev.def = def;
                    report.kept.push(id);
                    slots.push(prev);
                    continue;
                }
                match def.compile() {
                    Ok(q) => {
                        let runner = RuleRunner::new(
                            def.meta.clone(),
                            q,
                            RunnerConfig {
                                lateness_ns: 0,
                                ..self.cfg
                            },
                        );
                        slots.push(Slot { def, runner });
                        report.changed.push(id);
                    }
                    Err(e) => {
                        report.failed.push((id, e.to_string()));
                        slots.push(prev);
                    }
                }
                continue;
            }
            match def.compile() {
                Ok(q) => {
                    let runner = RuleRunner::new(
                        def.meta.clone(),
                        q,
                        RunnerConfig {
                            lateness_ns: 0,
                            ..self.cfg
                        },
                    );
                    slots.push(Slot { def, runner });
                    report.added.push(id);
                }
                Err(e) => report.failed.push((id, e.to_string())),
            }
        }
        report.removed = old.into_keys().collect();
        report.removed.sort();
        self.slots = slots;
        self.reindex();
        report
    }

    fn reindex(&mut self) {
        self.by_category.clear();
        self.any.clear();
        self.has_seq = false;
        for (i, s) in self.slots.iter().enumerate() {
            self.has_seq |= s.runner.is_sequence();
            let cats = if s.runner.query().options().dialect == Dialect::Elastic {
                s.runner.query().categories()
            } else {
                None
            };
            match cats {
                Some(cats) => {
                    for c in cats {
                        self.by_category.entry(c.into()).or_default().push(i);
                    }
                }
                None => self.any.push(i),
            }
        }
        self.seen = vec![0; self.slots.len()];
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn stats(&self) -> RuleSetStats {
        let mut s = self.stats;
        for slot in &self.slots {
            s.evicted += slot.runner.stats.seq.evicted;
            s.expired += slot.runner.stats.seq.expired;
        }
        s
    }

    /// Per-rule counters.
    pub fn rule_stats(&self) -> Vec<(&str, RunnerStats)> {
        self.slots
            .iter()
            .map(|s| (s.def.meta.id.as_str(), s.runner.stats))
            .collect()
    }

    /// Approximate bytes of pending sequence state over all rules.
    pub fn pending_bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|s| s.runner.pending_bytes())
            .sum::<usize>()
            + self.reorder.buffered() * 64
    }

    fn dispatch(&mut self, sh: &Shared<'_>, sequences: bool, events: bool, out: &mut Vec<Alert>) {
        self.tick += 1;
        let tick = self.tick;
        let before = out.len();
        let mut visit = |i: usize, slots: &mut Vec<Slot>, seen: &mut Vec<u64>| {
            if seen[i] == tick {
                return;
            }
            seen[i] = tick;
            let r = &mut slots[i].runner;
            if (r.is_sequence() && sequences) || (!r.is_sequence() && events) {
                r.feed_ordered(sh, out);
            }
        };
        match sh.ev.get(self.cat_field) {
            Some(Value::Str(c)) => {
                if let Some(list) = lookup(&self.by_category, c) {
                    for &i in list {
                        visit(i, &mut self.slots, &mut self.seen);
                    }
                }
            }
            Some(Value::Array(cs)) => {
                for c in cs.iter().filter_map(Value::as_str) {
                    if let Some(list) = lookup(&self.by_category, c) {
                        for &i in list {
                            visit(i, &mut self.slots, &mut self.seen);
                        }
                    }
                }
            }
            _ => {}
        }
        for k in 0..self.any.len() {
            let i = self.any[k];
            visit(i, &mut self.slots, &mut self.seen);
        }
        self.stats.alerts += (out.len() - before) as u64;
    }

    /// End of input: release buffered events and close every window.
    pub fn flush(&mut self, out: &mut Vec<Alert>) {
        self.on_watermark(i64::MAX, out);
    }
}

fn lookup<'a>(map: &'a HashMap<Box<str>, Vec<usize>>, c: &str) -> Option<&'a Vec<usize>> {
    map.get(c).or_else(|| {
        if c.bytes().any(|b| b.is_ascii_uppercase()) {
            map.get(c.to_ascii_lowercase().as_str())
        } else {
            None
        }
    })
}

fn rebuild_meta(runner: RuleRunner, def: &RuleDef) -> RuleRunner {
    runner.with_meta(def.meta.clone())
}

impl Detector for RuleSet {
    fn id(&self) -> &str {
        "eql-ruleset"
    }

    fn on_event(&mut self, event: &Event, out: &mut Vec<Alert>) {
        self.stats.events += 1;
        if !self.has_seq || self.cfg.lateness_ns == 0 {
            let late = self.has_seq && event.timestamp_ns < self.last_ts;
            if late {
                self.stats.late += 1;
            }
            let sh = Shared::new(event);
            self.dispatch(&sh, !late, true, out);
            if !late {
                self.last_ts = event.timestamp_ns;
            }
            return;
        }
        // Single-event rules do not care about order: evaluate now.
        let sh = Shared::new(event);
        self.dispatch(&sh, false, true, out);
        let arc = sh.arc();
        if !self.reorder.push(arc) {
            self.stats.late += 1;
            return;
        }
        while let Some(ev) = self.reorder.pop_ready(None) {
            self.dispatch(&Shared::from_arc(&ev), true, false, out);
        }
    }

    fn on_watermark(&mut self, now_ns: i64, out: &mut Vec<Alert>) {
        if self.cfg.lateness_ns > 0 {
            while let Some(ev) = self.reorder.pop_ready(Some(now_ns)) {
                self.dispatch(&Shared::from_arc(&ev), true, false, out);
            }
        }
        let before = out.len();
        for s in &mut self.slots {
            s.runner.watermark_ordered(now_ns, out);
        }
        self.stats.alerts += (out.len() - before) as u64;
    }

    fn pending(&self) -> usize {
        self.slots.iter().map(|s| s.runner.pending()).sum::<usize>() + self.reorder.buffered()
    }
}
