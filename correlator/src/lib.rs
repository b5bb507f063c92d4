//! The shared correlation core.
//!
//! Architecture invariant: nothing in this crate does I/O or reads the clock. Every decision is made on
//! event time, so replaying a file gives the same alerts as the live run.

pub mod alert;
pub mod analytics;
pub mod attack;
pub mod detect;
pub mod ecs;
pub mod eql;
pub mod event;
pub mod rules;
pub mod ruleset;
pub mod runner;

pub use alert::{Alert, AttackRef, Severity};
pub use event::{Event, EventError, Field, Str, Value, MAX_FIELDS};
pub use rules::{parse_rule_file, RuleDef, RuleError};
pub use ruleset::{ReloadReport, RuleSet};
pub use runner::{RuleMeta, RuleRunner, RunnerConfig};

/// Anything that turns a stream of events into alerts: a compiled EQL rule, a stateful detector.
///
/// Implementations are deterministic functions of the events they are given (event time only).
pub trait Detector: Send {
    /// A stable id, unique within a rule set (used for dedup and hot reload).
    fn id(&self) -> &str;
    /// Feeds one event; any alerts it completes are pushed to `out`.
    fn on_event(&mut self, event: &Event, out: &mut Vec<Alert>);
    /// Event time has advanced to `now_ns` (no event older than the lateness window will follow):
    /// expire state, and emit alerts that fire on the absence or duration of something.
    fn on_watermark(&mut self, now_ns: i64, out: &mut Vec<Alert>) {
        let _ = (now_ns, out);
    }
    /// How many partial matches (pending sequences, open windows) this detector holds.
    fn pending(&self) -> usize {
        0
    }
    /// True when the detector decides each alert's severity and risk score itself (the analytic then
    /// keeps them instead of stamping its own; escalations still apply).
    fn sets_severity(&self) -> bool {
        false
    }
    /// Learned state worth keeping across restarts (baselines), as JSON; `None` when there is none.
    /// The daemon stores it per detector id and hands it back to [`Detector::restore_state`] on start.
    fn save_state(&self) -> Option<serde_json::Value> {
        None
    }
    /// Restores what [`Detector::save_state`] returned in an earlier run.
    fn restore_state(&mut self, state: &serde_json::Value) -> Result<(), detect::StateError> {
        let _ = state;
        Ok(())
    }
}
