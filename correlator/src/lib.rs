//! The shared correlation core.
//!
//! Architecture invariant: nothing in this crate does I/O or reads the clock. Every decision is made on
//! event time, so replaying a file gives the same alerts as the live run.

pub mod alert;
pub mod analytics;
pub mod attack;
pub mod checkpoint;
pub mod detect;
pub mod ecs;
pub mod eql;
pub mod event;
pub mod rules;
pub mod ruleset;
pub mod runner;

pub use alert::{Alert, AttackRef, Severity};
pub use event::{
    Event, EventError, Field, Str, Value, MAX_FIELDS, MAX_FIELD_BYTES, MAX_FIELD_PATH_BYTES,
};
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
    /// Partial matches this detector dropped to stay within its bounds (count or bytes) since it
    /// was made: what it shed under pressure.
    fn shed(&self) -> u64 {
        0
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
    /// Everything this detector holds that changes what it will say later (pending sequences and
    /// samples, buffered events, open windows, baselines), as versioned JSON ([`checkpoint`]), so
    /// that a detector built from the same rules in another process continues exactly where this
    /// one stopped. The default is [`Detector::save_state`] (a detector whose only state is learned).
    fn export_state(&self) -> Option<serde_json::Value> {
        self.save_state()
    }
    /// Puts back what [`Detector::export_state`] returned, into a detector built from the same
    /// rules and not yet fed. A state of another format version is refused, naming the detector.
    fn import_state(&mut self, state: &serde_json::Value) -> Result<(), detect::StateError> {
        self.restore_state(state)
    }
}
