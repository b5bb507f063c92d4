//! Threshold: N matching events per key within a sliding window of event time.
//!
//! Fires once when the count for a key reaches N within `window`; the key then stays silent until `window`
//! after the firing event, so one burst gives one alert. `count = 1` makes it a deduplicating single-event
//! match (one alert per key per window).

use std::collections::{BTreeMap, VecDeque};

use super::{draft_alert, key_of, render_template, FieldSpec, Filter};
use crate::{Alert, Detector, Event};

/// Evidence kept per alert at most (the reason still states the full count).
const MAX_EVIDENCE: usize = 32;
/// Keys tracked at most; beyond it the stalest key is dropped (counted in `dropped_keys`).
const MAX_KEYS: usize = 100_000;

pub struct Threshold {
    id: String,
    filter: Filter,
    key: Vec<FieldSpec>,
    count: usize,
    window_ns: i64,
    reason: String,
    keys: BTreeMap<String, KeyState>,
    /// Keys evicted because of the key cap.
    pub dropped_keys: u64,
}

#[derive(Default)]
struct KeyState {
    events: VecDeque<Event>,
    muted_until: i64,
    last_ns: i64,
}

impl Threshold {
    /// `count` is clamped to at least 1; `reason` is a template with `{field}` placeholders.
    pub fn new(
        id: impl Into<String>,
        filter: Filter,
        key: Vec<FieldSpec>,
        count: usize,
        window_ns: i64,
        reason: impl Into<String>,
    ) -> Threshold {
        Threshold {
            id: id.into(),
            filter,
            key,
            count: count.max(1),
            window_ns: window_ns.max(0),
            reason: reason.into(),
            keys: BTreeMap::new(),
            dropped_keys: 0,
        }
    }
}

impl Detector for Threshold {
    fn id(&self) -> &str {
        &self.id
    }

    fn on_event(&mut self, event: &Event, out: &mut Vec<Alert>) {
        if !(self.filter)(event) {
            return;
        }
        let (key, parts) = key_of(&self.key, event);
        let ts = event.timestamp_ns;
        if !self.keys.contains_key(&key) && self.keys.len() >= MAX_KEYS {
            if let Some(stalest) = self
                .keys
                .iter()
                .min_by_key(|(_, s)| s.last_ns)
                .map(|(k, _)| k.clone())
            {
                self.keys.remove(&stalest);
                self.dropped_keys += 1;
            }
        }
        let st = self.keys.entry(key).or_default();
        st.last_ns = st.last_ns.max(ts);
        if ts < st.muted_until {
            return;
        }
        let horizon = ts.saturating_sub(self.window_ns);
        st.events.retain(|e| e.timestamp_ns >= horizon);
        st.events.push_back(event.clone());
        if st.events.len() >= self.count {
            let evidence: Vec<&Event> = st.events.iter().rev().take(MAX_EVIDENCE).rev().collect();
            let mut reason = render_template(&self.reason, event);
            if self.count > 1 {
                reason.push_str(&format!(
                    " ({} events within {})",
                    st.events.len(),
                    super::format_duration(self.window_ns)
                ));
            }
            out.push(draft_alert(&self.id, &evidence, parts, reason));
            st.events.clear();
            st.muted_until = ts.saturating_add(self.window_ns.max(1));
        }
    }

    fn on_watermark(&mut self, now_ns: i64, _out: &mut Vec<Alert>) {
        let horizon = now_ns.saturating_sub(self.window_ns);
        self.keys
            .retain(|_, st| st.last_ns >= horizon || st.muted_until > now_ns);
    }

    fn pending(&self) -> usize {
        self.keys.values().filter(|s| !s.events.is_empty()).count()
    }

    /// The open window of every key (its events, mute and last time).
    fn export_state(&self) -> Option<serde_json::Value> {
        let mut tab = crate::checkpoint::EventTable::default();
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .map(|(k, st)| {
                let evs: Vec<usize> = st.events.iter().map(|e| tab.add_owned(e)).collect();
                serde_json::json!([k, evs, st.muted_until, st.last_ns])
            })
            .collect();
        Some(serde_json::json!({
            "v": crate::checkpoint::STATE_VERSION,
            "events": tab.into_json(),
            "keys": keys,
        }))
    }

    fn import_state(&mut self, state: &serde_json::Value) -> Result<(), super::StateError> {
        use crate::checkpoint::{check_version, invalid, Events};
        let st = check_version(&self.id, state)?;
        let evs = Events::decode(st.get("events")).map_err(|e| invalid(&self.id, e))?;
        self.keys.clear();
        for k in st
            .get("keys")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let bad = || {
                invalid(
                    &self.id,
                    format!("window {k} is not [key, events, muted, last]"),
                )
            };
            let key = k.get(0).and_then(|v| v.as_str()).ok_or_else(bad)?;
            let mut events = VecDeque::new();
            for i in k.get(1).and_then(|v| v.as_array()).ok_or_else(bad)? {
                let ev = evs.get(i).map_err(|e| invalid(&self.id, e))?;
                events.push_back(Event::clone(&ev));
            }
            let muted_until = k.get(2).and_then(|v| v.as_i64()).ok_or_else(bad)?;
            let last_ns = k.get(3).and_then(|v| v.as_i64()).ok_or_else(bad)?;
            if self.keys.len() >= MAX_KEYS {
                self.dropped_keys += 1;
                continue;
            }
            self.keys.insert(
                key.to_string(),
                KeyState {
                    events,
                    muted_until,
                    last_ns,
                },
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::detect::filter;
    use crate::Value;

    const S: i64 = 1_000_000_000;

    fn ev(t: i64, host: &str, ok: bool) -> Event {
        let mut e = Event::new(t * S);
        e.insert("host.id", Value::Str(host.into()));
        e.insert("ok", Value::Bool(ok));
        e
    }

    fn det(n: usize, window_s: i64) -> Threshold {
        Threshold::new(
            "t",
            filter(|e| e.get_path("ok") == Some(&Value::Bool(true))),
            vec![FieldSpec::parse("host.id").unwrap()],
            n,
            window_s * S,
            "failures on {host.id}",
        )
    }

    fn run(d: &mut Threshold, evs: &[Event]) -> Vec<Alert> {
        let mut out = Vec::new();
        for e in evs {
            d.on_event(e, &mut out);
        }
        out
    }

    #[test]
    fn fires_once_at_n_within_window() {
        let mut d = det(3, 60);
        let out = run(
            &mut d,
            &[
                ev(0, "a", true),
                ev(10, "a", true),
                ev(20, "b", true),
                ev(30, "a", true),
                ev(40, "a", true),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].evidence.len(), 3);
        assert_eq!(out[0].join_keys, vec![serde_json::json!("a")]);
        assert!(
            out[0].reason.starts_with("failures on a"),
            "{}",
            out[0].reason
        );
        assert_eq!(out[0].first_event_ns, 0);
        assert_eq!(out[0].timestamp_ns, 30 * S);
    }

    #[test]
    fn just_outside_window_is_silent() {
        let mut d = det(3, 60);
        let out = run(
            &mut d,
            &[ev(0, "a", true), ev(30, "a", true), ev(61, "a", true)],
        );
        assert!(out.is_empty());
        let mut d = det(3, 60);
        assert_eq!(
            run(
                &mut d,
                &[ev(0, "a", true), ev(30, "a", true), ev(60, "a", true)]
            )
            .len(),
            1
        );
    }

    #[test]
    fn under_threshold_and_filtered_are_silent() {
        let mut d = det(3, 60);
        assert!(run(
            &mut d,
            &[
                ev(0, "a", true),
                ev(1, "a", true),
                ev(2, "a", false),
                ev(3, "b", true)
            ]
        )
        .is_empty());
    }

    #[test]
    fn watermark_expires_keys() {
        let mut d = det(2, 10);
        run(&mut d, &[ev(0, "a", true)]);
        assert_eq!(d.pending(), 1);
        d.on_watermark(100 * S, &mut Vec::new());
        assert_eq!(d.pending(), 0);
    }

    proptest::proptest! {
        /// Alerts never exceed events / N, and every alert's evidence spans at most the window.
        #[test]
        fn alert_bounds(times in proptest::collection::vec(0i64..500, 0..60), n in 1usize..5, w in 1i64..100) {
            let mut times = times;
            times.sort_unstable();
            let mut d = det(n, w);
            let evs: Vec<Event> = times.iter().map(|t| ev(*t, "h", true)).collect();
            let out = run(&mut d, &evs);
            proptest::prop_assert!(out.len() <= evs.len() / n);
            for a in &out {
                proptest::prop_assert!(a.timestamp_ns - a.first_event_ns <= w * S);
                proptest::prop_assert_eq!(a.evidence.len(), n);
            }
            // Determinism: the same input gives the same alerts.
            let mut d2 = det(n, w);
            proptest::prop_assert_eq!(run(&mut d2, &evs), out);
        }
    }
}
