//! Alerts: what a rule or detector emits, with the evidence that made it fire.
//!
//! The shape is shared by every producer (EQL rules, stateful detectors) and every consumer (the store,
//! outputs, the CLI), so it is plain serialisable data.

use serde::{Deserialize, Serialize};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s.to_ascii_lowercase().as_str() {
            "low" | "informational" | "info" => Some(Severity::Low),
            "medium" => Some(Severity::Medium),
            "high" => Some(Severity::High),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// Where a rule stands in MITRE ATT&CK.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttackRef {
    /// Technique ids, e.g. `T1559`, `T1059.004`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub techniques: Vec<String>,
    /// Tactic ids or short names, e.g. `TA0002`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tactics: Vec<String>,
    /// Analytic id, e.g. `AN1358`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analytic: Option<String>,
    /// Detection strategy id, e.g. `DET0493`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
}

/// One alert, as produced by the engine (before the store deduplicates and tracks status).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub rule_id: String,
    pub rule_name: String,
    pub severity: Severity,
    pub risk_score: u32,
    #[serde(default)]
    pub attack: AttackRef,
    /// Event time (ns since epoch) of the event that completed the match.
    pub timestamp_ns: i64,
    /// Event time of the first evidence event.
    pub first_event_ns: i64,
    /// Values of the `by` keys (or the detector's key) that the match was joined on.
    #[serde(default)]
    pub join_keys: Vec<serde_json::Value>,
    /// `host.name`/`host.id`, `user.name`, `process.executable` of the closing event, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// The settings (mutable elements) in force when the alert fired.
    #[serde(default)]
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// A short human explanation of why it fired.
    #[serde(default)]
    pub reason: String,
    /// The evidence events, as ECS JSON (each keeps its original record under `event.original`).
    pub evidence: Vec<serde_json::Value>,
}
