//! Cross-source join: several kinds of evidence, each from its own source with its own field names, on
//! one identity (host, user, process, app) within a window of event time.
//!
//! Each stage has its own filter and its own key fields (e.g. `host.ip` on a mobile EDR record and
//! `source.ip` on a Zeek record name the same device) and a count (N events of that stage are needed, e.g.
//! repeated TLS inspection failures). The join fires once when every required stage has its count within
//! `window` for one key; optional stages add their events as evidence when present. With `ordered`, a
//! required stage only accepts events once the required stages before it are satisfied (XPC request, then
//! exec).

use std::collections::{BTreeMap, VecDeque};

use crate::eql::sequence::event_bytes;

use super::{draft_alert, key_of, render_template, FieldSpec, Filter};
use crate::{Alert, Detector, Event};

const MAX_KEYS: usize = 100_000;
const MAX_PER_STAGE: usize = 64;

pub struct Stage {
    pub name: String,
    pub filter: Filter,
    pub key: Vec<FieldSpec>,
    pub count: usize,
    pub required: bool,
}

pub struct JoinConfig {
    pub id: String,
    pub window_ns: i64,
    pub ordered: bool,
    pub stages: Vec<Stage>,
    pub reason: String,
}

pub struct Join {
    cfg: JoinConfig,
    keys: BTreeMap<String, KeyState>,
    /// Sum of the keys' `bytes`.
    bytes: usize,
    /// Keys dropped to stay within the bounds.
    shed: u64,
}

struct KeyState {
    stages: Vec<VecDeque<Event>>,
    last_ns: i64,
    /// [`event_bytes`] of the events held.
    bytes: usize,
}

/// Most bytes of events one join holds (remote agents choose keys and event sizes); past it the
/// key seen longest ago goes, counted in [`Detector::shed`].
pub const MAX_JOIN_BYTES: usize = 64 << 20;

impl Join {
    pub fn new(cfg: JoinConfig) -> Join {
        Join {
            cfg,
            keys: BTreeMap::new(),
            bytes: 0,
            shed: 0,
        }
    }

    fn take(&mut self, key: &str) -> Option<KeyState> {
        let st = self.keys.remove(key)?;
        self.bytes -= st.bytes;
        Some(st)
    }

    /// Puts `st` back, first dropping the stalest keys while it would not fit.
    fn put(&mut self, key: String, mut st: KeyState) {
        st.bytes = st.stages.iter().flatten().map(event_bytes).sum();
        while !self.keys.is_empty()
            && (self.keys.len() >= MAX_KEYS || self.bytes + st.bytes > MAX_JOIN_BYTES)
        {
            let Some(k) = self
                .keys
                .iter()
                .min_by_key(|(_, s)| s.last_ns)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.take(&k);
            self.shed += 1;
        }
        self.bytes += st.bytes;
        self.keys.insert(key, st);
    }

    fn satisfied(&self, st: &KeyState, i: usize) -> bool {
        st.stages[i].len() >= self.cfg.stages[i].count.max(1)
    }
}

impl Detector for Join {
    fn id(&self) -> &str {
        &self.cfg.id
    }

    fn on_event(&mut self, event: &Event, out: &mut Vec<Alert>) {
        let ts = event.timestamp_ns;
        for i in 0..self.cfg.stages.len() {
            let stage = &self.cfg.stages[i];
            if !(stage.filter)(event) {
                continue;
            }
            let (key, parts) = key_of(&stage.key, event);
            if parts.iter().any(serde_json::Value::is_null) {
                continue;
            }
            let n = self.cfg.stages.len();
            let mut st = match self.keys.remove(&key) {
                Some(st) => {
                    self.bytes -= st.bytes;
                    st
                }
                None => KeyState {
                    stages: vec![VecDeque::new(); n],
                    last_ns: ts,
                    bytes: 0,
                },
            };
            st.last_ns = st.last_ns.max(ts);
            let horizon = ts.saturating_sub(self.cfg.window_ns);
            for q in &mut st.stages {
                q.retain(|e| {
                    e.timestamp_ns >= horizon
                        && e.timestamp_ns <= ts.saturating_add(self.cfg.window_ns)
                });
            }
            let blocked = self.cfg.ordered
                && stage.required
                && (0..i).any(|j| self.cfg.stages[j].required && !self.satisfied(&st, j));
            if !blocked {
                st.stages[i].push_back(event.clone());
                if st.stages[i].len() > MAX_PER_STAGE.max(stage.count) {
                    st.stages[i].pop_front();
                }
            }
            let complete = (0..n).all(|j| !self.cfg.stages[j].required || self.satisfied(&st, j));
            if complete && !blocked {
                let mut evidence: Vec<&Event> = st.stages.iter().flatten().collect();
                evidence.sort_by_key(|e| e.timestamp_ns);
                let counts: Vec<String> = self
                    .cfg
                    .stages
                    .iter()
                    .zip(&st.stages)
                    .filter(|(_, q)| !q.is_empty())
                    .map(|(s, q)| format!("{}={}", s.name, q.len()))
                    .collect();
                let reason = format!(
                    "{} [{}]",
                    render_template(&self.cfg.reason, event),
                    counts.join(", ")
                );
                out.push(draft_alert(&self.cfg.id, &evidence, parts, reason));
                // The key starts over: one alert per completed join.
                continue;
            }
            self.put(key, st);
        }
    }

    fn on_watermark(&mut self, now_ns: i64, _out: &mut Vec<Alert>) {
        let horizon = now_ns.saturating_sub(self.cfg.window_ns);
        let mut freed = 0;
        self.keys.retain(|_, st| {
            let keep = st.last_ns >= horizon;
            if !keep {
                freed += st.bytes;
            }
            keep
        });
        self.bytes -= freed;
    }

    fn pending(&self) -> usize {
        self.keys.len()
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
    use crate::Value;

    const S: i64 = 1_000_000_000;

    fn ev(t: i64, kind: &str, key_field: &str, key: &str) -> Event {
        let mut e = Event::new(t * S);
        e.insert("kind", Value::Str(kind.into()));
        e.insert(key_field, Value::Str(key.into()));
        e
    }

    fn stage(name: &str, kind: &'static str, key: &str, count: usize, required: bool) -> Stage {
        Stage {
            name: name.into(),
            filter: filter(move |e| e.get_path("kind").and_then(Value::as_str) == Some(kind)),
            key: vec![FieldSpec::parse(key).unwrap()],
            count,
            required,
        }
    }

    fn det(ordered: bool) -> Join {
        Join::new(JoinConfig {
            id: "j".into(),
            window_ns: 60 * S,
            ordered,
            stages: vec![
                stage("edr", "edr", "host.ip", 1, true),
                stage("tls_fail", "fail", "source.ip", 3, true),
                stage("mdm", "mdm", "host.ip", 1, false),
            ],
            reason: "device joined".into(),
        })
    }

    fn run(d: &mut Join, evs: &[Event]) -> Vec<Alert> {
        let mut out = Vec::new();
        for e in evs {
            d.on_event(e, &mut out);
        }
        out
    }

    #[test]
    fn joins_across_field_names() {
        let mut d = det(false);
        let out = run(
            &mut d,
            &[
                ev(0, "mdm", "host.ip", "10.0.0.5"),
                ev(1, "fail", "source.ip", "10.0.0.5"),
                ev(2, "edr", "host.ip", "10.0.0.5"),
                ev(3, "fail", "source.ip", "10.0.0.5"),
                ev(4, "fail", "source.ip", "10.0.0.9"),
                ev(5, "fail", "source.ip", "10.0.0.5"),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].evidence.len(), 5);
        assert!(out[0].reason.contains("tls_fail=3"), "{}", out[0].reason);
        assert_eq!(out[0].join_keys, vec![serde_json::json!("10.0.0.5")]);
    }

    #[test]
    fn under_count_or_outside_window_is_silent() {
        let mut d = det(false);
        assert!(run(
            &mut d,
            &[
                ev(0, "edr", "host.ip", "a"),
                ev(1, "fail", "source.ip", "a"),
                ev(2, "fail", "source.ip", "a")
            ]
        )
        .is_empty());
        let mut d = det(false);
        assert!(run(
            &mut d,
            &[
                ev(0, "edr", "host.ip", "a"),
                ev(30, "fail", "source.ip", "a"),
                ev(40, "fail", "source.ip", "a"),
                ev(61, "fail", "source.ip", "a")
            ]
        )
        .is_empty());
    }

    #[test]
    fn ordered_requires_order() {
        let mut d = det(true);
        // Failures before the EDR event are not accepted in ordered mode.
        assert!(run(
            &mut d,
            &[
                ev(0, "fail", "source.ip", "a"),
                ev(1, "fail", "source.ip", "a"),
                ev(2, "fail", "source.ip", "a"),
                ev(3, "edr", "host.ip", "a")
            ]
        )
        .is_empty());
        assert_eq!(
            run(
                &mut d,
                &[
                    ev(4, "fail", "source.ip", "a"),
                    ev(5, "fail", "source.ip", "a"),
                    ev(6, "fail", "source.ip", "a")
                ]
            )
            .len(),
            1
        );
    }

    proptest::proptest! {
        /// Every alert's evidence spans at most the window and contains every required stage.
        #[test]
        fn alerts_respect_window(evs in proptest::collection::vec((0i64..300, 0u8..3), 0..40)) {
            let mut evs = evs;
            evs.sort_unstable();
            let kinds = ["edr", "fail", "mdm"];
            let events: Vec<Event> = evs.iter().map(|(t, k)| {
                let kind = kinds[usize::from(*k)];
                ev(*t, kind, if kind == "fail" { "source.ip" } else { "host.ip" }, "d")
            }).collect();
            let mut d = det(false);
            for a in run(&mut d, &events) {
                proptest::prop_assert!(a.timestamp_ns - a.first_event_ns <= 60 * S);
                let fails = a.evidence.iter().filter(|e| e["kind"] == "fail").count();
                proptest::prop_assert!(fails >= 3);
                proptest::prop_assert!(a.evidence.iter().any(|e| e["kind"] == "edr"));
            }
        }
    }
}
