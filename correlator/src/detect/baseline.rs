//! Baseline / first seen: learn the values seen per key during a learning period, then alert on new ones.
//!
//! The learning period starts at the event time of the first matching event and lasts `learning_ns`.
//! Seed entries (`key pattern`, `value pattern`, globs) are always allowed: they are the analytic's shipped
//! allowlist (SocketPathBaseline, AllowedParentChildPairs...). After learning, a value neither seeded nor
//! learned for its key raises one alert and is then added to the baseline, so it alerts once.
//!
//! The learned state is plain JSON ([`Detector::save_state`]) so the daemon persists it and a restart does
//! not start learning again.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{draft_alert, glob_match, key_of, render_template_with, FieldSpec, Filter, StateError};
use crate::{Alert, Detector, Event};

const MAX_KEYS: usize = 50_000;
const MAX_VALUES_PER_KEY: usize = 2_000;

/// One always-allowed (key, value) pair of globs. A multi-field key is matched as its parts joined by `|`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedEntry {
    #[serde(default = "star")]
    pub key: String,
    pub value: String,
}

fn star() -> String {
    "*".to_string()
}

/// Everything the baseline has learned; serialisable so it survives restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineState {
    /// Event time the learning period started at (first matching event).
    pub started_ns: Option<i64>,
    /// Learning period in force when the state was written (informational).
    #[serde(default)]
    pub learning_ns: i64,
    /// Values seen per key.
    pub learned: BTreeMap<String, BTreeSet<String>>,
}

pub struct BaselineConfig {
    pub id: String,
    pub filter: Filter,
    pub key: Vec<FieldSpec>,
    pub value: Vec<FieldSpec>,
    pub learning_ns: i64,
    pub seed: Vec<SeedEntry>,
    /// When set, only values matching one of these globs are considered at all.
    pub only_values: Option<Vec<String>>,
    pub case_insensitive: bool,
    /// Reason template with `{field}` placeholders; `{key}` and `{value}` are the baseline's own.
    pub reason: String,
}

pub struct Baseline {
    cfg: BaselineConfig,
    state: BaselineState,
}

impl Baseline {
    pub fn new(cfg: BaselineConfig) -> Baseline {
        let state = BaselineState {
            learning_ns: cfg.learning_ns,
            ..BaselineState::default()
        };
        Baseline { cfg, state }
    }

    pub fn state(&self) -> &BaselineState {
        &self.state
    }

    fn seeded(&self, key: &str, value: &str) -> bool {
        let ci = self.cfg.case_insensitive;
        self.cfg
            .seed
            .iter()
            .any(|s| glob_match(&s.key, key, ci) && glob_match(&s.value, value, ci))
    }

    fn norm(&self, s: String) -> String {
        if self.cfg.case_insensitive {
            s.to_lowercase()
        } else {
            s
        }
    }

    fn learning(&self, ts: i64) -> bool {
        match self.state.started_ns {
            None => self.cfg.learning_ns > 0,
            Some(start) => ts < start.saturating_add(self.cfg.learning_ns),
        }
    }
}

impl Detector for Baseline {
    fn id(&self) -> &str {
        &self.cfg.id
    }

    fn on_event(&mut self, event: &Event, out: &mut Vec<Alert>) {
        if !(self.cfg.filter)(event) {
            return;
        }
        let mut values = Vec::with_capacity(self.cfg.value.len());
        for v in &self.cfg.value {
            match v.text(event) {
                Some(t) => values.push(t),
                None => return,
            }
        }
        let value = values.join("|");
        if let Some(only) = &self.cfg.only_values {
            if !only
                .iter()
                .any(|p| glob_match(p, &value, self.cfg.case_insensitive))
            {
                return;
            }
        }
        let (_, parts) = key_of(&self.cfg.key, event);
        let key_text = parts
            .iter()
            .map(|p| p.as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
            .join("|");
        let ts = event.timestamp_ns;
        if self.state.started_ns.is_none() {
            self.state.started_ns = Some(ts);
        }
        let learning = self.learning(ts);
        let (nkey, nvalue) = (self.norm(key_text.clone()), self.norm(value.clone()));
        let known = self
            .state
            .learned
            .get(&nkey)
            .is_some_and(|s| s.contains(&nvalue));
        if known {
            return;
        }
        if !learning && !self.seeded(&key_text, &value) {
            let reason = render_template_with(
                &self.cfg.reason,
                event,
                &[("key", &key_text), ("value", &value)],
            );
            let mut alert = draft_alert(&self.cfg.id, &[event], parts, reason);
            alert.join_keys.push(serde_json::Value::String(value));
            out.push(alert);
        } else if !learning {
            // Seeded values are allowed without being stored.
            return;
        }
        if !self.state.learned.contains_key(&nkey) && self.state.learned.len() >= MAX_KEYS {
            return;
        }
        let set = self.state.learned.entry(nkey).or_default();
        if set.len() < MAX_VALUES_PER_KEY {
            set.insert(nvalue);
        }
    }

    fn pending(&self) -> usize {
        self.state.learned.len()
    }

    fn save_state(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.state).ok()
    }

    fn restore_state(&mut self, state: &serde_json::Value) -> Result<(), StateError> {
        let st: BaselineState =
            serde_json::from_value(state.clone()).map_err(|e| StateError::Invalid {
                id: self.cfg.id.clone(),
                reason: e.to_string(),
            })?;
        self.state = BaselineState {
            learning_ns: self.cfg.learning_ns,
            ..st
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::detect::any;
    use crate::Value;

    const S: i64 = 1_000_000_000;

    fn ev(t: i64, exe: &str, path: &str) -> Event {
        let mut e = Event::new(t * S);
        e.insert("process.executable", Value::Str(exe.into()));
        e.insert("unix.path", Value::Str(path.into()));
        e
    }

    fn det(learning_s: i64) -> Baseline {
        Baseline::new(BaselineConfig {
            id: "b".into(),
            filter: any(),
            key: vec![FieldSpec::parse("process.executable").unwrap()],
            value: vec![FieldSpec::parse("unix.path|file.path").unwrap()],
            learning_ns: learning_s * S,
            seed: vec![
                SeedEntry {
                    key: "*".into(),
                    value: "/run/*".into(),
                },
                SeedEntry {
                    key: "/usr/bin/tmux".into(),
                    value: "/tmp/tmux-*".into(),
                },
            ],
            only_values: None,
            case_insensitive: false,
            reason: "{key} used new socket {value}".into(),
        })
    }

    fn run(d: &mut Baseline, evs: &[Event]) -> Vec<Alert> {
        let mut out = Vec::new();
        for e in evs {
            d.on_event(e, &mut out);
        }
        out
    }

    #[test]
    fn learns_then_alerts_once_on_new() {
        let mut d = det(100);
        let out = run(
            &mut d,
            &[
                ev(0, "/bin/a", "/tmp/x"),
                ev(50, "/bin/a", "/tmp/y"),
                ev(150, "/bin/a", "/tmp/x"),
                ev(160, "/bin/a", "/tmp/z"),
                ev(170, "/bin/a", "/tmp/z"),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].reason, "/bin/a used new socket /tmp/z");
        assert_eq!(
            out[0].join_keys,
            vec![serde_json::json!("/bin/a"), serde_json::json!("/tmp/z")]
        );
    }

    #[test]
    fn seeds_allow_without_learning() {
        let mut d = det(0);
        let out = run(
            &mut d,
            &[
                ev(0, "/usr/sbin/x", "/run/x.sock"),
                ev(1, "/usr/bin/tmux", "/tmp/tmux-1000/default"),
                ev(2, "/usr/bin/nc", "/tmp/tmux-1000/default"),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].process.as_deref(), Some("/usr/bin/nc"));
    }

    #[test]
    fn state_survives_restart() {
        let mut d = det(100);
        run(&mut d, &[ev(0, "/bin/a", "/tmp/x")]);
        let saved = serde_json::to_string(&d.save_state().unwrap()).unwrap();
        let mut d2 = det(100);
        d2.restore_state(&serde_json::from_str(&saved).unwrap())
            .unwrap();
        // Learning period started at t=0 in the first life: at t=200 it is over, /tmp/x is known.
        assert!(run(&mut d2, &[ev(200, "/bin/a", "/tmp/x")]).is_empty());
        assert_eq!(run(&mut d2, &[ev(201, "/bin/a", "/tmp/new")]).len(), 1);
        // Without the saved state, the same event would just start a new learning period.
        let mut fresh = det(100);
        assert!(run(&mut fresh, &[ev(201, "/bin/a", "/tmp/new")]).is_empty());
        assert!(d2
            .restore_state(&serde_json::json!({"learned": 3}))
            .is_err());
    }

    proptest::proptest! {
        /// No value alerts twice, and nothing alerts during learning.
        #[test]
        fn each_new_value_alerts_at_most_once(vals in proptest::collection::vec(0u8..8, 0..50)) {
            let mut d = det(10);
            let evs: Vec<Event> = vals.iter().enumerate().map(|(i, v)| ev(i64::try_from(i).unwrap(), "/bin/a", &format!("/tmp/{v}"))).collect();
            let out = run(&mut d, &evs);
            let mut seen = BTreeSet::new();
            for a in &out {
                proptest::prop_assert!(a.timestamp_ns >= 10 * S);
                proptest::prop_assert!(seen.insert(a.join_keys[1].to_string()));
            }
        }
    }
}
