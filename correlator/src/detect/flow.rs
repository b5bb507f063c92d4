//! Flow lifetime and volume: a connection open longer than D, or moving more than B bytes out, reported
//! while it is still open (checked on the watermark and on each update) as well as when it closes.
//!
//! Each flow event is joined to its owning process: exec events (`process_events`) fill a process table
//! keyed by `process_key` (e.g. `host.id`, `process.pid`), and the flow's `process.*` fields that are
//! absent are copied from it (executable, code signature...). The `candidate` filter then runs on the
//! enriched flow, e.g. "not Apple-signed and not an allowed uploader". Byte counts are cumulative per flow
//! (the largest value seen wins); a flow whose only record is its close derives its start from the
//! duration field.
//!
//! Both tables are bounded in entries and in bytes ([`MAX_TABLE_BYTES`] each, events measured with
//! [`event_bytes`]): remote agents choose the keys and the size of the events. Past a bound the entry
//! seen longest ago goes, and is counted ([`Detector::shed`]).

use std::collections::BTreeMap;

use super::{draft_alert, format_duration, key_of, render_template, FieldSpec, Filter};
use crate::eql::sequence::event_bytes;
use crate::{Alert, Detector, Event, Value};

const MAX_FLOWS: usize = 200_000;
const MAX_PROCS: usize = 200_000;
/// Most bytes of events the flow table holds, and (apart) the process table.
pub const MAX_TABLE_BYTES: usize = 64 << 20;

pub struct FlowConfig {
    pub id: String,
    /// Which events are records of a flow (start, updates, end).
    pub filter: Filter,
    /// Identifies a flow across its records.
    pub flow_key: Vec<FieldSpec>,
    /// Which flow records close the flow.
    pub closing: Filter,
    /// Cumulative bytes sent out so far (e.g. `source.bytes` for an outbound connection).
    pub bytes_out: FieldSpec,
    /// Optional duration in nanoseconds on close records (e.g. `event.duration`).
    pub duration: Option<FieldSpec>,
    /// Events that describe a process (exec), used to enrich flows.
    pub process_events: Filter,
    /// Joins a flow to the process table (same spec applied to both).
    pub process_key: Vec<FieldSpec>,
    /// Evaluated on the enriched flow; only candidates alert.
    pub candidate: Filter,
    /// 0 disables the duration check.
    pub max_duration_ns: i64,
    /// 0 disables the volume check.
    pub max_bytes_out: i64,
    /// Open flows with no record for this long are forgotten.
    pub idle_timeout_ns: i64,
    pub reason: String,
}

struct FlowState {
    start_ns: i64,
    last_ns: i64,
    bytes_out: i64,
    first: Event,
    last: Event,
    alerted: bool,
}

impl FlowState {
    /// What this flow counts against [`MAX_TABLE_BYTES`].
    fn held(&self) -> usize {
        event_bytes(&self.first) + event_bytes(&self.last)
    }
}

pub struct FlowMonitor {
    cfg: FlowConfig,
    flows: BTreeMap<String, FlowState>,
    /// Sum of the flows' [`FlowState::held`].
    flow_bytes: usize,
    procs: BTreeMap<String, (Event, usize)>,
    /// Sum of the processes' event bytes.
    proc_bytes: usize,
    /// Entries dropped to stay within the bounds.
    shed: u64,
}

impl FlowMonitor {
    pub fn new(cfg: FlowConfig) -> FlowMonitor {
        FlowMonitor {
            cfg,
            flows: BTreeMap::new(),
            flow_bytes: 0,
            procs: BTreeMap::new(),
            proc_bytes: 0,
            shed: 0,
        }
    }

    fn take_flow(&mut self, key: &str) -> Option<FlowState> {
        let st = self.flows.remove(key)?;
        self.flow_bytes -= st.held();
        Some(st)
    }

    fn put_flow(&mut self, key: String, st: FlowState) {
        self.flow_bytes += st.held();
        if let Some(old) = self.flows.insert(key, st) {
            self.flow_bytes -= old.held();
        }
    }

    /// Makes room for `incoming` more bytes (and one more entry) in the flow table.
    fn evict_flows(&mut self, incoming: usize) {
        while !self.flows.is_empty()
            && (self.flows.len() >= MAX_FLOWS || self.flow_bytes + incoming > MAX_TABLE_BYTES)
        {
            let Some(k) = self
                .flows
                .iter()
                .min_by_key(|(_, s)| s.last_ns)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.take_flow(&k);
            self.shed += 1;
        }
    }

    fn remember_process(&mut self, key: String, event: &Event) {
        let bytes = event_bytes(event) + key.len();
        if let Some((_, old)) = self.procs.remove(&key) {
            self.proc_bytes -= old;
        }
        while !self.procs.is_empty()
            && (self.procs.len() >= MAX_PROCS || self.proc_bytes + bytes > MAX_TABLE_BYTES)
        {
            let Some(k) = self
                .procs
                .iter()
                .min_by_key(|(_, (e, _))| e.timestamp_ns)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((_, b)) = self.procs.remove(&k) {
                self.proc_bytes -= b;
                self.shed += 1;
            }
        }
        self.proc_bytes += bytes;
        self.procs.insert(key, (event.clone(), bytes));
    }

    fn process_of(&self, ev: &Event) -> Option<&Event> {
        let (key, parts) = key_of(&self.cfg.process_key, ev);
        if parts.iter().any(serde_json::Value::is_null) {
            return None;
        }
        self.procs.get(&key).map(|(e, _)| e)
    }

    /// The flow event with the owning process's `process.*` fields filled in where absent.
    fn enrich(&self, ev: &Event) -> Event {
        let mut out = ev.clone();
        if let Some(p) = self.process_of(ev) {
            for (f, v) in p.fields() {
                if out.get(f).is_none() && f.name().starts_with("process.") {
                    out.set(f, v.clone());
                }
            }
        }
        out
    }

    fn fire(&self, st: &FlowState, closing: Option<&Event>, why: &str, out: &mut Vec<Alert>) {
        let last = closing.unwrap_or(&st.last);
        let enriched = self.enrich(last);
        let mut evidence: Vec<&Event> = Vec::new();
        let proc_ev = self.process_of(last);
        if let Some(p) = proc_ev {
            evidence.push(p);
        }
        evidence.push(&st.first);
        if closing.is_some() || st.last.timestamp_ns != st.first.timestamp_ns {
            evidence.push(last);
        }
        let (_, parts) = key_of(&self.cfg.flow_key, last);
        let reason = format!("{} ({why})", render_template(&self.cfg.reason, &enriched));
        let mut alert = draft_alert(&self.cfg.id, &evidence, parts, reason);
        if alert.process.is_none() {
            alert.process = enriched
                .get_path("process.executable")
                .or_else(|| enriched.get_path("process.name"))
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        out.push(alert);
    }

    fn check(&self, st: &FlowState, now_ns: i64, closing: Option<&Event>) -> Option<String> {
        if st.alerted {
            return None;
        }
        let dur = now_ns - st.start_ns;
        let state = if closing.is_some() {
            "closed"
        } else {
            "still open"
        };
        // The cheap limits first; the process join and the candidate filter only when one is exceeded.
        let why = if self.cfg.max_bytes_out > 0 && st.bytes_out > self.cfg.max_bytes_out {
            format!(
                "{} bytes out > {}, {state} after {}",
                st.bytes_out,
                self.cfg.max_bytes_out,
                format_duration(dur.max(0))
            )
        } else if self.cfg.max_duration_ns > 0 && dur > self.cfg.max_duration_ns {
            format!(
                "open {} > {}, {} bytes out, {state}",
                format_duration(dur),
                format_duration(self.cfg.max_duration_ns),
                st.bytes_out
            )
        } else {
            return None;
        };
        let enriched = self.enrich(closing.unwrap_or(&st.last));
        (self.cfg.candidate)(&enriched).then_some(why)
    }
}

impl Detector for FlowMonitor {
    fn id(&self) -> &str {
        &self.cfg.id
    }

    fn on_event(&mut self, event: &Event, out: &mut Vec<Alert>) {
        if (self.cfg.process_events)(event) {
            let (key, parts) = key_of(&self.cfg.process_key, event);
            if !parts.iter().any(serde_json::Value::is_null) {
                self.remember_process(key, event);
            }
        }
        if !(self.cfg.filter)(event) {
            return;
        }
        let (key, _) = key_of(&self.cfg.flow_key, event);
        let ts = event.timestamp_ns;
        let bytes = self
            .cfg
            .bytes_out
            .raw(event)
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let duration = self
            .cfg
            .duration
            .as_ref()
            .and_then(|d| d.raw(event))
            .and_then(Value::as_i64);
        let closing = (self.cfg.closing)(event);
        let mut st = match self.take_flow(&key) {
            Some(st) => st,
            None => {
                self.evict_flows(2 * event_bytes(event));
                FlowState {
                    start_ns: ts,
                    last_ns: ts,
                    bytes_out: 0,
                    first: event.clone(),
                    last: event.clone(),
                    alerted: false,
                }
            }
        };
        if let Some(d) = duration.filter(|d| *d > 0) {
            st.start_ns = st.start_ns.min(ts.saturating_sub(d));
        }
        st.start_ns = st.start_ns.min(ts);
        st.last_ns = st.last_ns.max(ts);
        st.bytes_out = st.bytes_out.max(bytes);
        st.last = event.clone();
        let closing_ev = closing.then_some(event);
        if let Some(why) = self.check(&st, ts, closing_ev) {
            self.fire(&st, closing_ev, &why, out);
            if !closing {
                self.put_flow(
                    key,
                    FlowState {
                        alerted: true,
                        ..st
                    },
                );
            }
        } else if !closing {
            self.put_flow(key, st);
        }
    }

    fn on_watermark(&mut self, now_ns: i64, out: &mut Vec<Alert>) {
        let keys: Vec<String> = self.flows.keys().cloned().collect();
        for key in keys {
            let Some(mut st) = self.take_flow(&key) else {
                continue;
            };
            if let Some(why) = self.check(&st, now_ns, None) {
                self.fire(&st, None, &why, out);
                st.alerted = true;
            }
            if now_ns.saturating_sub(st.last_ns) <= self.cfg.idle_timeout_ns {
                self.put_flow(key, st);
            }
        }
    }

    fn pending(&self) -> usize {
        self.flows.len()
    }

    fn shed(&self) -> u64 {
        self.shed
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::detect::filter;

    const S: i64 = 1_000_000_000;

    fn exec(t: i64, pid: i64, exe: &str, apple: bool) -> Event {
        let mut e = Event::new(t * S);
        e.insert("event.category", Value::Str("process".into()));
        e.insert("host.id", Value::Str("mac1".into()));
        e.insert("process.pid", Value::Int(pid));
        e.insert("process.executable", Value::Str(exe.into()));
        e.insert(
            "process.code_signature.signing_id",
            Value::Str(if apple { "com.apple.curl" } else { "evil" }.into()),
        );
        e
    }

    fn conn(t: i64, pid: i64, port: i64, kind: &str, bytes: i64) -> Event {
        let mut e = Event::new(t * S);
        e.insert("event.category", Value::Str("network".into()));
        e.insert("event.type", Value::Str(kind.into()));
        e.insert("host.id", Value::Str("mac1".into()));
        e.insert("process.pid", Value::Int(pid));
        e.insert("source.port", Value::Int(port));
        e.insert("source.bytes", Value::Int(bytes));
        e
    }

    fn det() -> FlowMonitor {
        let cat = |c: &'static str| {
            filter(move |e: &Event| e.get_path("event.category").and_then(Value::as_str) == Some(c))
        };
        FlowMonitor::new(FlowConfig {
            id: "f".into(),
            filter: cat("network"),
            flow_key: ["host.id", "process.pid", "source.port"]
                .iter()
                .map(|p| FieldSpec::parse(p).unwrap())
                .collect(),
            closing: filter(|e| e.get_path("event.type").and_then(Value::as_str) == Some("end")),
            bytes_out: FieldSpec::parse("source.bytes").unwrap(),
            duration: Some(FieldSpec::parse("event.duration").unwrap()),
            process_events: cat("process"),
            process_key: ["host.id", "process.pid"]
                .iter()
                .map(|p| FieldSpec::parse(p).unwrap())
                .collect(),
            candidate: filter(|e| {
                !e.get_path("process.code_signature.signing_id")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.starts_with("com.apple."))
            }),
            max_duration_ns: 3600 * S,
            max_bytes_out: 1_000_000,
            idle_timeout_ns: 86_400 * S,
            reason: "{process.executable} egress".into(),
        })
    }

    fn run(d: &mut FlowMonitor, evs: &[Event]) -> Vec<Alert> {
        let mut out = Vec::new();
        for e in evs {
            d.on_event(e, &mut out);
        }
        out
    }

    #[test]
    fn long_lived_open_flow_alerts_on_watermark_once() {
        let mut d = det();
        let mut out = run(
            &mut d,
            &[exec(0, 7, "/tmp/upl", false), conn(1, 7, 5000, "start", 10)],
        );
        assert!(out.is_empty());
        d.on_watermark(3000 * S, &mut out);
        assert!(out.is_empty());
        d.on_watermark(3602 * S, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].reason.contains("still open"), "{}", out[0].reason);
        assert_eq!(out[0].process.as_deref(), Some("/tmp/upl"));
        assert_eq!(out[0].evidence.len(), 2);
        d.on_watermark(7200 * S, &mut out);
        out.extend(run(&mut d, &[conn(7300, 7, 5000, "end", 10)]));
        assert_eq!(out.len(), 1, "a flow alerts once");
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn volume_alerts_while_open_and_apple_signed_is_silent() {
        let mut d = det();
        let out = run(
            &mut d,
            &[
                exec(0, 7, "/tmp/upl", false),
                conn(1, 7, 5000, "start", 0),
                conn(5, 7, 5000, "info", 2_000_000),
            ],
        );
        assert_eq!(out.len(), 1);
        assert!(out[0].reason.contains("bytes out"));
        let mut d = det();
        let out = run(
            &mut d,
            &[
                exec(0, 8, "/usr/bin/curl", true),
                conn(1, 8, 5001, "start", 0),
                conn(5, 8, 5001, "end", 2_000_000),
            ],
        );
        assert!(out.is_empty());
    }

    #[test]
    fn close_only_record_uses_duration() {
        let mut d = det();
        let mut end = conn(5000, 9, 5002, "end", 5);
        end.insert("event.duration", Value::Int(3700 * S));
        let out = run(&mut d, &[exec(0, 9, "/tmp/x", false), end]);
        assert_eq!(out.len(), 1);
        assert!(out[0].reason.contains("closed"));
        // Just under the limit stays silent.
        let mut d = det();
        let mut end = conn(5000, 9, 5003, "end", 5);
        end.insert("event.duration", Value::Int(3599 * S));
        assert!(run(&mut d, &[end]).is_empty());
    }

    proptest::proptest! {
        /// Whatever the record order, a flow never alerts more than once.
        #[test]
        fn at_most_one_alert_per_flow(recs in proptest::collection::vec((0i64..10_000, 0i64..3_000_000, proptest::bool::ANY), 1..30)) {
            let mut d = det();
            let mut out = Vec::new();
            for (t, b, wm) in recs {
                d.on_event(&conn(t, 1, 1, "info", b), &mut out);
                if wm { d.on_watermark(t, &mut out); }
            }
            proptest::prop_assert!(out.len() <= 1);
        }
    }

    #[test]
    fn both_tables_stay_within_their_byte_bound_under_big_events_and_count_what_they_shed() {
        let mut d = det();
        let big = "p".repeat(200_000);
        let mut out = Vec::new();
        for pid in 0..1_000 {
            let mut e = exec(pid, pid, "/tmp/x", false);
            e.insert("process.command_line", Value::Str(big.as_str().into()));
            d.on_event(&e, &mut out);
            let mut c = conn(pid, pid, 1000, "start", 1);
            c.insert("message", Value::Str(big.as_str().into()));
            d.on_event(&c, &mut out);
            assert!(
                d.proc_bytes <= MAX_TABLE_BYTES,
                "{} bytes of processes",
                d.proc_bytes
            );
            assert!(
                d.flow_bytes <= MAX_TABLE_BYTES,
                "{} bytes of flows",
                d.flow_bytes
            );
        }
        // 1,000 processes and 1,000 flows of 200+ kB each do not fit: the oldest went.
        assert!(d.procs.len() < 1_000 && d.flows.len() < 1_000);
        assert_eq!(
            d.shed(),
            (1_000 - d.procs.len() + 1_000 - d.flows.len()) as u64
        );
        // The accounting matches what is held.
        let procs: usize = d.procs.values().map(|(_, b)| b).sum();
        let flows: usize = d.flows.values().map(FlowState::held).sum();
        assert_eq!((procs, flows), (d.proc_bytes, d.flow_bytes));
        // The newest process still enriches its flow.
        assert!(d.process_of(&conn(999, 999, 1000, "start", 1)).is_some());
    }
}
