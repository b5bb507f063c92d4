//! Many rules over one stream: dispatch by event category, one reorder buffer in front of all
//! sequence rules, hot reload that keeps the pending state of unchanged rules.
//!
//! Architecture invariant: an event is only shown to rules whose queries can match its
//! `event.category` (plus the rules with an `any` step), so adding rules for one category costs
//! nothing for events of another.

mod state;

use crate::alert::Alert;
use crate::eql::sequence::Shared;
use crate::eql::{CatMask, Dialect, Memo, TermVal, INDEX_AFFIX};
use crate::event::{Event, Field, Value};
use crate::rules::{RuleDef, RuleError};
use crate::runner::{Reorder, RuleRunner, RunnerConfig, RunnerStats};
use crate::Detector;
use std::sync::Arc;
/// Hash maps on the hot path use aHash (SipHash costs more than the rest of a lookup).
type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

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
    /// Keyed by the category name's bytes (an inline string is compared without a UTF-8 check).
    by_category: HashMap<Box<[u8]>, Bucket>,
    /// For each name of [`crate::event::ECS_CATEGORIES`], the key of its bucket in `by_category`
    /// (the same name), if it has one: an event whose [`Event::category_bits`] has one bit is given
    /// that bucket without reading its `event.category`.
    ecs_buckets: Vec<Option<Box<[u8]>>>,
    any: Bucket,
    cat_field: Field,
    /// Category names with their mask bits, for the per-event category mask.
    cat_bits: Vec<(Box<str>, u8)>,
    /// Results of shared terms on the current event.
    memo: Memo,
    cfg: RunnerConfig,
    reorder: Reorder,
    /// Per-rule marker of the last event it was given (dedup across several categories).
    seen: Vec<u64>,
    cands: Vec<usize>,
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
            by_category: HashMap::default(),
            ecs_buckets: Vec::new(),
            any: Bucket::default(),
            cat_field: Field::intern("event.category"),
            cat_bits: Vec::new(),
            memo: Memo::default(),
            cfg,
            reorder: Reorder::new(cfg.lateness_ns),
            seen: Vec::new(),
            cands: Vec::new(),
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
        self.any = Bucket::default();
        self.has_seq = false;
        let low: Vec<Field> = LOW_CARDINALITY.iter().map(|f| Field::intern(f)).collect();
        let skip = |f: Field| low.contains(&f);
        for (i, s) in self.slots.iter().enumerate() {
            self.has_seq |= s.runner.is_sequence();
            let q = s.runner.query();
            let elastic = q.options().dialect == Dialect::Elastic;
            let mut cats = if elastic { q.categories() } else { None };
            if cats.is_none() && elastic {
                // `any where event.category in (...) and ...`: the condition names the categories.
                let cat_field = self.cat_field;
                cats = q.index_terms(&|f| f != cat_field).and_then(|terms| {
                    terms
                        .iter()
                        .flat_map(|(_, vs)| vs.iter())
                        .map(|v| match v {
                            TermVal::Str(s) => Some(s.clone()),
                            _ => None,
                        })
                        .collect::<Option<Vec<_>>>()
                });
            }
            // Single-event rules with a required exact-value term are indexed on it.
            let terms = if q.options().dialect == Dialect::Elastic && !q.has_pipes() {
                q.index_terms(&skip)
            } else {
                None
            };
            let buckets: Vec<&mut Bucket> = match cats {
                Some(cats) => {
                    let mut v = Vec::new();
                    for c in &cats {
                        self.by_category.entry(c.as_bytes().into()).or_default();
                    }
                    for (name, b) in self.by_category.iter_mut() {
                        if cats.iter().any(|c| **name == *c.as_bytes()) {
                            v.push(b);
                        }
                    }
                    v
                }
                None => vec![&mut self.any],
            };
            for b in buckets {
                match &terms {
                    Some(terms) => b.add_indexed(i, terms),
                    None => b.always.push(i),
                }
            }
        }
        self.ecs_buckets = crate::event::ECS_CATEGORIES
            .iter()
            .map(|c| {
                self.by_category
                    .get_key_value(c.as_bytes())
                    .map(|(k, _)| k.clone())
            })
            .collect();
        self.seen = vec![0; self.slots.len()];
        self.cat_bits = crate::eql::category_bits();
        self.memo = Memo::with_terms(crate::eql::term_count());
    }

    /// Gives `sh` to the rules that may match it (sequence rules when `sequences`, single-event
    /// rules when `events`); returns the event as an `Arc` when `want_arc`. The event's category
    /// mask is computed once here, and terms shared between rules are evaluated once per event.
    fn dispatch(
        &mut self,
        sh: Shared<'_>,
        sequences: bool,
        events: bool,
        want_arc: bool,
        out: &mut Vec<Alert>,
    ) -> Option<Arc<Event>> {
        std::hint::black_box(sh.ev.warm());
        let memo = std::mem::take(&mut self.memo);
        memo.next_event();
        let mut sh = sh.with_memo(&memo);
        sh.cats = Some(CatMask::of(sh.ev, self.cat_field, &self.cat_bits));
        self.offer(&sh, sequences, events, out);
        let arc = want_arc.then(|| sh.arc());
        drop(sh);
        self.memo = memo;
        arc
    }

    /// How many rules are reached through the value index (the rest are tried on every event of
    /// their categories).
    pub fn indexed_rules(&self) -> usize {
        let mut set = std::collections::HashSet::<usize>::new();
        for b in self.by_category.values().chain(std::iter::once(&self.any)) {
            for ix in &b.index {
                for v in ix.all() {
                    set.extend(v.iter().copied());
                }
            }
        }
        set.len()
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

    fn offer(&mut self, sh: &Shared<'_>, sequences: bool, events: bool, out: &mut Vec<Alert>) {
        self.tick += 1;
        let tick = self.tick;
        let before = out.len();
        let ev = sh.ev;
        let mut cands: Vec<usize> = std::mem::take(&mut self.cands);
        cands.clear();
        // One exact ECS category (nearly every event): its bucket, found from the event's summary.
        // Otherwise read the field, in its order (several categories keep their order).
        let one = ev
            .category_bits()
            .filter(|b| b.count_ones() == 1)
            .map(u32::trailing_zeros);
        let field = match one {
            Some(bit) => {
                let key = self.ecs_buckets.get(bit as usize).and_then(Option::as_ref);
                if let Some(b) = key.and_then(|k| self.by_category.get(k)) {
                    b.candidates(ev, &mut cands);
                }
                None
            }
            None => ev.get(self.cat_field),
        };
        match field {
            Some(Value::Str(c)) => {
                if let Some(b) = lookup(&self.by_category, c.as_bytes()) {
                    b.candidates(ev, &mut cands);
                }
            }
            Some(Value::Array(cs)) => {
                for c in cs.iter() {
                    if let Value::Str(c) = c {
                        if let Some(b) = lookup(&self.by_category, c.as_bytes()) {
                            b.candidates(ev, &mut cands);
                        }
                    }
                }
            }
            _ => {}
        }
        self.any.candidates(ev, &mut cands);
        for &i in &cands {
            if self.seen[i] == tick {
                continue;
            }
            self.seen[i] = tick;
            let r = &mut self.slots[i].runner;
            if (r.is_sequence() && sequences) || (!r.is_sequence() && events) {
                r.feed_ordered(sh, out);
            }
        }
        self.cands = cands;
        self.stats.alerts += (out.len() - before) as u64;
    }

    /// End of input: release buffered events and close every window.
    pub fn flush(&mut self, out: &mut Vec<Alert>) {
        self.on_watermark(i64::MAX, out);
    }
}

/// Fields too common to index on (almost every event of a category has one of few values).
const LOW_CARDINALITY: &[&str] = &[
    "event.type",
    "event.action",
    "event.category",
    "event.kind",
    "event.outcome",
    "event.module",
    "event.dataset",
    "data_stream.dataset",
    "host.os.type",
    "host.os.name",
    "host.os.platform",
    "network.direction",
    "network.transport",
    "user.id",
    "user.name",
];

/// One indexed field: rules by lower-cased exact value, integer value, prefix and suffix.
#[derive(Default)]
struct FieldIndex {
    field: Option<Field>,
    /// Keyed by bytes: a lookup of an inline string needs no UTF-8 check.
    exact: HashMap<Box<[u8]>, Vec<usize>>,
    ints: HashMap<i64, Vec<usize>>,
    /// Keyed by the first / last `INDEX_AFFIX` bytes of the lower-cased value.
    prefix: HashMap<[u8; INDEX_AFFIX], Vec<usize>>,
    suffix: HashMap<[u8; INDEX_AFFIX], Vec<usize>>,
}

impl FieldIndex {
    fn all(&self) -> impl Iterator<Item = &Vec<usize>> {
        self.exact
            .values()
            .chain(self.ints.values())
            .chain(self.prefix.values())
            .chain(self.suffix.values())
    }

    #[inline]
    fn lookup(&self, v: &Value, out: &mut Vec<usize>) {
        match v {
            Value::Str(s) => {
                let f = fold(s);
                let b: &[u8] = &f;
                if let Some(l) = self.exact.get(b) {
                    out.extend_from_slice(l);
                }
                if b.len() >= INDEX_AFFIX {
                    if !self.prefix.is_empty() {
                        if let Some(l) = self.prefix.get(&affix(&b[..INDEX_AFFIX])) {
                            out.extend_from_slice(l);
                        }
                    }
                    if !self.suffix.is_empty() {
                        if let Some(l) = self.suffix.get(&affix(&b[b.len() - INDEX_AFFIX..])) {
                            out.extend_from_slice(l);
                        }
                    }
                }
            }
            Value::Int(_) | Value::Float(_) if !self.ints.is_empty() => {
                if let Some(l) = v.as_i64().and_then(|i| self.ints.get(&i)) {
                    out.extend_from_slice(l);
                }
            }
            _ => {}
        }
    }
}

fn affix(b: &[u8]) -> [u8; INDEX_AFFIX] {
    let mut k = [0u8; INDEX_AFFIX];
    k.copy_from_slice(&b[..INDEX_AFFIX]);
    k
}

/// The rules of one category: those tried on every event, and those reached through a required
/// value of a field.
#[derive(Default)]
struct Bucket {
    always: Vec<usize>,
    index: Vec<FieldIndex>,
}

impl Bucket {
    fn add_indexed(&mut self, rule: usize, terms: &[(Field, Vec<TermVal>)]) {
        for (f, values) in terms {
            let pos = match self.index.iter().position(|x| x.field == Some(*f)) {
                Some(p) => p,
                None => {
                    self.index.push(FieldIndex {
                        field: Some(*f),
                        ..FieldIndex::default()
                    });
                    self.index.len() - 1
                }
            };
            let ix = &mut self.index[pos];
            for v in values {
                let list = match v {
                    TermVal::Str(s) => ix.exact.entry(s.as_bytes().into()).or_default(),
                    TermVal::Int(i) => ix.ints.entry(*i).or_default(),
                    TermVal::Prefix(p) => ix
                        .prefix
                        .entry(affix(&p.as_bytes()[..INDEX_AFFIX]))
                        .or_default(),
                    TermVal::Suffix(p) => ix
                        .suffix
                        .entry(affix(&p.as_bytes()[p.len() - INDEX_AFFIX..]))
                        .or_default(),
                };
                if !list.contains(&rule) {
                    list.push(rule);
                }
            }
        }
    }

    #[inline]
    fn candidates(&self, ev: &Event, out: &mut Vec<usize>) {
        out.extend_from_slice(&self.always);
        for ix in &self.index {
            let Some(f) = ix.field else { continue };
            match ev.get(f) {
                Some(Value::Array(a)) => {
                    for v in a.iter() {
                        ix.lookup(v, out);
                    }
                }
                Some(v) => ix.lookup(v, out),
                None => {}
            }
        }
    }
}

/// The lower-cased bytes of `s` (borrowed when already lower-case ASCII, the common case, which then
/// needs no UTF-8 check of an inline string).
fn fold(s: &crate::event::Str) -> std::borrow::Cow<'_, [u8]> {
    let b = s.as_bytes();
    if b.iter().any(|c| c.is_ascii_uppercase() || !c.is_ascii()) {
        std::borrow::Cow::Owned(s.to_lowercase().into_bytes())
    } else {
        std::borrow::Cow::Borrowed(b)
    }
}

fn lookup<'a>(map: &'a HashMap<Box<[u8]>, Bucket>, c: &[u8]) -> Option<&'a Bucket> {
    map.get(c).or_else(|| {
        if c.iter().any(u8::is_ascii_uppercase) {
            map.get(c.to_ascii_lowercase().as_slice())
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
            self.dispatch(Shared::new(event), !late, true, false, out);
            if !late {
                self.last_ts = event.timestamp_ns;
            }
            return;
        }
        // Single-event rules do not care about order: evaluate now.
        let Some(arc) = self.dispatch(Shared::new(event), false, true, true, out) else {
            return;
        };
        if !self.reorder.push(arc) {
            self.stats.late += 1;
            return;
        }
        while let Some(ev) = self.reorder.pop_ready(None) {
            self.dispatch(Shared::from_arc(&ev), true, false, false, out);
        }
    }

    fn on_watermark(&mut self, now_ns: i64, out: &mut Vec<Alert>) {
        if self.cfg.lateness_ns > 0 {
            while let Some(ev) = self.reorder.pop_ready(Some(now_ns)) {
                self.dispatch(Shared::from_arc(&ev), true, false, false, out);
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

    fn shed(&self) -> u64 {
        self.slots.iter().map(|s| s.runner.stats.seq.evicted).sum()
    }

    fn export_state(&self) -> Option<serde_json::Value> {
        Some(self.export())
    }

    fn import_state(&mut self, state: &serde_json::Value) -> Result<(), crate::detect::StateError> {
        self.import(state)
    }
}
