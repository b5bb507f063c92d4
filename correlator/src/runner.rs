//! Streaming rule runner: any compiled query (event query, sequence, sample, join) as a [`Detector`].

mod state;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use crate::alert::{Alert, AttackRef, Severity};
use crate::eql::sequence::{SampleEngine, SeqLimits, SeqMatch, SeqStats, SequenceEngine, Shared};
use crate::eql::{Query, QueryKind};
use crate::event::{Event, Field, Value};
use crate::Detector;

/// What an alert says about the rule that raised it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleMeta {
    pub id: String,
    pub name: String,
    pub description: String,
    pub severity: Severity,
    pub risk_score: u32,
    pub attack: AttackRef,
}

/// Runner settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunnerConfig {
    /// How far behind the newest event time an event may arrive and still be put in order
    /// (nanoseconds). 0: no reordering; out-of-order events are counted as late.
    pub lateness_ns: i64,
    pub limits: SeqLimits,
}

/// Counters of a runner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunnerStats {
    pub events: u64,
    pub alerts: u64,
    /// Events that arrived older than the lateness window allows (not given to sequence state).
    pub late: u64,
    pub seq: SeqStats,
}

/// Orders events by event time within a lateness window.
pub struct Reorder {
    lateness: i64,
    heap: BinaryHeap<Reverse<Item>>,
    seq: u64,
    max_seen: i64,
    /// Time of the last released event: anything older is late.
    released: i64,
}

struct Item(i64, u64, Arc<Event>);

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.0, self.1) == (o.0, o.1)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(o.0, o.1))
    }
}

impl Reorder {
    pub fn new(lateness_ns: i64) -> Reorder {
        Reorder {
            lateness: lateness_ns.max(0),
            heap: BinaryHeap::new(),
            seq: 0,
            max_seen: i64::MIN,
            released: i64::MIN,
        }
    }

    /// Whether an event with this time would be late now.
    pub fn is_late(&self, ts: i64) -> bool {
        ts < self.released
    }

    /// Buffers `ev`; returns false (and keeps nothing) if it is late.
    pub fn push(&mut self, ev: Arc<Event>) -> bool {
        let ts = ev.timestamp_ns;
        if ts < self.released {
            return false;
        }
        self.seq += 1;
        self.max_seen = self.max_seen.max(ts);
        self.heap.push(Reverse(Item(ts, self.seq, ev)));
        true
    }

    /// Pops the next event whose time is at or below the watermark (`newest - lateness`, or `limit`).
    pub fn pop_ready(&mut self, limit: Option<i64>) -> Option<Arc<Event>> {
        let wm = limit.unwrap_or_else(|| self.max_seen.saturating_sub(self.lateness));
        if self.heap.peek().is_some_and(|Reverse(i)| i.0 <= wm) {
            let Reverse(Item(ts, _, ev)) = self.heap.pop()?;
            self.released = self.released.max(ts);
            return Some(ev);
        }
        None
    }

    pub fn buffered(&self) -> usize {
        self.heap.len()
    }
}

enum Engine {
    Event,
    Sequence(Box<SequenceEngine>),
    Sample(Box<SampleEngine>),
}

/// One rule, run over a stream.
pub struct RuleRunner {
    meta: Arc<RuleMeta>,
    query: Arc<Query>,
    engine: Engine,
    reorder: Option<Reorder>,
    matches: Vec<SeqMatch>,
    last_ts: i64,
    pub stats: RunnerStats,
}

impl RuleRunner {
    pub fn new(meta: RuleMeta, query: Query, cfg: RunnerConfig) -> RuleRunner {
        RuleRunner::with_shared(Arc::new(meta), Arc::new(query), cfg)
    }

    pub(crate) fn with_shared(
        meta: Arc<RuleMeta>,
        query: Arc<Query>,
        cfg: RunnerConfig,
    ) -> RuleRunner {
        let engine = match &query.kind {
            QueryKind::Event(_) => Engine::Event,
            QueryKind::Sequence { .. } => SequenceEngine::new(&query.kind, cfg.limits)
                .map_or(Engine::Event, |e| Engine::Sequence(Box::new(e))),
            QueryKind::Sample { .. } | QueryKind::Join { .. } => {
                SampleEngine::new(&query.kind, cfg.limits)
                    .map_or(Engine::Event, |e| Engine::Sample(Box::new(e)))
            }
        };
        let reorder = (cfg.lateness_ns > 0 && !matches!(engine, Engine::Event))
            .then(|| Reorder::new(cfg.lateness_ns));
        RuleRunner {
            meta,
            query,
            engine,
            reorder,
            matches: Vec::new(),
            last_ts: i64::MIN,
            stats: RunnerStats::default(),
        }
    }

    /// A runner for a bare query (rule id and name are the query text).
    pub fn from_query(id: &str, query: Query) -> RuleRunner {
        let meta = RuleMeta {
            id: id.to_string(),
            name: id.to_string(),
            ..RuleMeta::default()
        };
        RuleRunner::new(meta, query, RunnerConfig::default())
    }

    /// The same runner (state kept) with new metadata.
    pub fn with_meta(mut self, meta: RuleMeta) -> RuleRunner {
        self.meta = Arc::new(meta);
        self
    }

    pub fn meta(&self) -> &RuleMeta {
        &self.meta
    }

    pub fn query(&self) -> &Query {
        &self.query
    }

    pub fn is_sequence(&self) -> bool {
        !matches!(self.engine, Engine::Event)
    }

    /// Approximate bytes of pending sequence state.
    pub fn pending_bytes(&self) -> usize {
        match &self.engine {
            Engine::Sequence(s) => s.pending_bytes(),
            _ => 0,
        }
    }

    /// Bytes of the events pending sequence partials hold (bounded by `SeqLimits::max_pending_bytes`).
    pub fn pending_event_bytes(&self) -> usize {
        match &self.engine {
            Engine::Sequence(s) => s.pending_event_bytes(),
            _ => 0,
        }
    }

    /// Feeds an event that is already in order (the rule set's path: no reorder buffer here).
    pub(crate) fn feed_ordered(&mut self, sh: &Shared<'_>, out: &mut Vec<Alert>) {
        self.stats.events += 1;
        self.last_ts = self.last_ts.max(sh.ev.timestamp_ns);
        match &mut self.engine {
            Engine::Event => {
                if let QueryKind::Event(f) = &self.query.kind {
                    if f.matches_env(sh.ev, &sh.env()) {
                        self.stats.alerts += 1;
                        out.push(make_alert(&self.meta, &[sh.ev], Vec::new()));
                    }
                }
            }
            Engine::Sequence(s) => {
                s.on_event(sh, &mut self.matches);
                self.stats.seq = s.stats;
            }
            Engine::Sample(s) => {
                s.on_event(sh, &mut self.matches);
                self.stats.seq = s.stats;
            }
        }
        self.drain(out);
    }

    pub(crate) fn watermark_ordered(&mut self, now: i64, out: &mut Vec<Alert>) {
        if let Engine::Sequence(s) = &mut self.engine {
            s.on_watermark(now, &mut self.matches);
            self.stats.seq = s.stats;
        }
        self.drain(out);
    }

    fn drain(&mut self, out: &mut Vec<Alert>) {
        for m in self.matches.drain(..) {
            self.stats.alerts += 1;
            let evs: Vec<&Event> = m.events.iter().map(|e| &**e).collect();
            out.push(make_alert(&self.meta, &evs, m.join_keys));
        }
    }

    /// Drop all pending state (used when a rule's query changes on reload).
    pub fn reset(&mut self) {
        if let Engine::Sequence(s) = &mut self.engine {
            s.clear();
        }
    }

    /// Releases every buffered event and closes all windows (end of input).
    pub fn flush(&mut self, out: &mut Vec<Alert>) {
        if let Some(mut r) = self.reorder.take() {
            while let Some(ev) = r.pop_ready(Some(i64::MAX)) {
                self.feed_ordered(&Shared::from_arc(&ev), out);
            }
            self.reorder = Some(r);
        }
        self.watermark_ordered(i64::MAX, out);
    }
}

impl Detector for RuleRunner {
    fn id(&self) -> &str {
        &self.meta.id
    }

    fn on_event(&mut self, event: &Event, out: &mut Vec<Alert>) {
        match self.reorder.take() {
            None => {
                if self.is_sequence() && event.timestamp_ns < self.last_ts {
                    self.stats.late += 1;
                    return;
                }
                self.feed_ordered(&Shared::new(event), out);
            }
            Some(mut r) => {
                if !r.push(Arc::new(event.clone())) {
                    self.stats.late += 1;
                } else {
                    while let Some(ev) = r.pop_ready(None) {
                        self.feed_ordered(&Shared::from_arc(&ev), out);
                    }
                }
                self.reorder = Some(r);
            }
        }
    }

    fn on_watermark(&mut self, now_ns: i64, out: &mut Vec<Alert>) {
        if let Some(mut r) = self.reorder.take() {
            while let Some(ev) = r.pop_ready(Some(now_ns)) {
                self.feed_ordered(&Shared::from_arc(&ev), out);
            }
            self.reorder = Some(r);
        }
        self.watermark_ordered(now_ns, out);
    }

    fn export_state(&self) -> Option<serde_json::Value> {
        let mut tab = crate::checkpoint::EventTable::default();
        let body = self.export_state_with(&mut tab);
        Some(
            serde_json::json!({"v": crate::checkpoint::STATE_VERSION, "events": tab.into_json(), "runner": body}),
        )
    }

    fn import_state(&mut self, state: &serde_json::Value) -> Result<(), crate::detect::StateError> {
        let id = self.meta.id.clone();
        let st = crate::checkpoint::check_version(&id, state)?;
        let evs = crate::checkpoint::Events::decode(st.get("events"))
            .map_err(|e| crate::checkpoint::invalid(&id, e))?;
        self.import_state_with(st.get("runner").unwrap_or(&serde_json::Value::Null), &evs)
            .map_err(|e| crate::checkpoint::invalid(&id, e))
    }

    fn pending(&self) -> usize {
        match &self.engine {
            Engine::Event => 0,
            Engine::Sequence(s) => s.pending(),
            Engine::Sample(s) => s.pending(),
        }
    }
}

/// Alert context fields, interned once: host, user, process (in order of preference).
static CONTEXT: std::sync::LazyLock<[Vec<Field>; 3]> = std::sync::LazyLock::new(|| {
    let f = |xs: &[&str]| xs.iter().map(|x| Field::intern(x)).collect::<Vec<_>>();
    [
        f(&["host.name", "host.hostname", "host.id"]),
        f(&["user.name", "user.id"]),
        f(&["process.executable", "process.name"]),
    ]
});

fn first_str(ev: &Event, fields: &[Field]) -> Option<String> {
    for f in fields {
        match ev.get(*f) {
            Some(Value::Str(s)) => return Some(s.to_string()),
            Some(Value::Array(a)) => {
                if let Some(s) = a.iter().find_map(Value::as_str) {
                    return Some(s.to_string());
                }
            }
            Some(v) if !v.is_null() => return Some(v.to_json().to_string()),
            _ => {}
        }
    }
    None
}

/// Evidence JSON of one event: the ECS document, with the raw record under `event.original`.
pub fn evidence_json(ev: &Event) -> serde_json::Value {
    let mut v = ev.to_json();
    if let (Some(raw), serde_json::Value::Object(m)) = (&ev.raw, &mut v) {
        let event = m
            .entry("event")
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        if let serde_json::Value::Object(e) = event {
            e.entry("original")
                .or_insert_with(|| serde_json::Value::String(raw.to_string()));
        }
    }
    v
}

/// Builds an alert for `meta` from the matching events (in match order).
pub fn make_alert(meta: &RuleMeta, events: &[&Event], join_keys: Vec<serde_json::Value>) -> Alert {
    let last = events.last().copied();
    let first_ts = events.first().map_or(0, |e| e.timestamp_ns);
    let keys_txt = if join_keys.is_empty() {
        String::new()
    } else {
        format!(" on {}", serde_json::Value::Array(join_keys.clone()))
    };
    Alert {
        rule_id: meta.id.clone(),
        rule_name: meta.name.clone(),
        severity: meta.severity,
        risk_score: meta.risk_score,
        attack: meta.attack.clone(),
        timestamp_ns: last.map_or(0, |e| e.timestamp_ns),
        first_event_ns: first_ts,
        join_keys,
        host: last.and_then(|e| first_str(e, &CONTEXT[0])),
        user: last.and_then(|e| first_str(e, &CONTEXT[1])),
        process: last.and_then(|e| first_str(e, &CONTEXT[2])),
        settings: serde_json::Map::new(),
        reason: format!(
            "EQL rule `{}` matched {} event(s){}",
            meta.name,
            events.len(),
            keys_txt
        ),
        evidence: events.iter().map(|e| evidence_json(e)).collect(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn runner_runs_a_sequence_as_a_detector() {
        let q = crate::eql::compile("sequence by host.id with maxspan=10s [process where process.name == \"a\"] [network where true]", &crate::eql::Options::elastic()).unwrap();
        let mut r = RuleRunner::from_query("t", q);
        let mk = |ts: i64, cat: &str, name: &str, host: &str| {
            let mut e = Event::from_json(&serde_json::json!({"event": {"category": cat}, "process": {"name": name}, "host": {"id": host}}),
            )
            .unwrap();
            e.timestamp_ns = ts * 1_000_000_000;
            e
        };
        let mut out = Vec::new();
        r.on_event(&mk(1, "process", "a", "h1"), &mut out);
        r.on_event(&mk(2, "network", "x", "h2"), &mut out);
        assert!(out.is_empty());
        assert_eq!(r.pending(), 1);
        r.on_event(&mk(3, "network", "x", "h1"), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].join_keys, vec![serde_json::json!("h1")]);
        assert_eq!(out[0].evidence.len(), 2);
        r.on_event(&mk(20, "process", "a", "h1"), &mut out);
        r.on_event(&mk(31, "network", "x", "h1"), &mut out);
        assert_eq!(out.len(), 1, "maxspan exceeded");
    }
}
