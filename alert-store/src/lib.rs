//! The alert store's model and interface, shared by both stores: the SQLite store of one host
//! (`sensor::store`) and the fleet's PostgreSQL store (`fleet::pg`).
//!
//! - the model: [`StoredAlert`], [`Status`], [`HistoryEntry`], [`AlertDetail`], [`AlertFilter`],
//!   [`StoreStats`], [`Recorded`];
//! - the fold rule both stores apply: [`dedup_key`] (repeats of one rule and key within the dedup
//!   window become one alert), and what an alert is about, read from its evidence: its container
//!   ([`container_of`]) and its source ([`source_of`]);
//! - [`AlertStore`]: what the control API asks of a store (list, show, change a status, follow new
//!   alerts, counts), so that one API serves either.
//!
//! Architecture Invariant: the model is defined once, here; neither store defines alert, status, filter
//! or dedup types of its own. A column added to one store is added to the other in the same change
//! (each store has its own migration list).

mod container;
mod source;
mod store;

use std::fmt;
use std::str::FromStr;

use correlator::{Alert, AttackRef, Severity};
use serde::{Deserialize, Serialize};

pub use container::{container_of, ContainerSummary};
pub use source::source_of;
pub use store::{AccessError, AlertStore, AlertStream, StatusChange};

/// Where an alert stands in triage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Open,
    Acknowledged,
    Closed,
    Suppressed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Acknowledged => "acknowledged",
            Status::Closed => "closed",
            Status::Suppressed => "suppressed",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Status, String> {
        match s.to_ascii_lowercase().as_str() {
            "open" | "reopen" => Ok(Status::Open),
            "acknowledged" | "ack" | "acked" => Ok(Status::Acknowledged),
            "closed" | "close" => Ok(Status::Closed),
            "suppressed" | "suppress" => Ok(Status::Suppressed),
            other => Err(format!("unknown alert status `{other}` (expected open, acknowledged, closed or suppressed)")),
        }
    }
}

/// One alert as stored (without evidence and history, see [`AlertDetail`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredAlert {
    pub id: i64,
    pub rule_id: String,
    pub rule_name: String,
    pub severity: Severity,
    pub risk_score: u32,
    pub status: Status,
    pub first_seen_ns: i64,
    pub last_seen_ns: i64,
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// What reported the evidence: its `event.module` (`sensor` for the kernel sensor, the format
    /// for network ingest: `auditd`, `windows`, `zeek`...), else its `agent.type` ([`source_of`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default)]
    pub attack: AttackRef,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub settings: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub join_keys: Vec<serde_json::Value>,
    /// The container (and Kubernetes pod) the evidence names, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSummary>,
    pub created_ns: i64,
    pub updated_ns: i64,
}

/// One status change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at_ns: i64,
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Status>,
    pub to: Status,
    pub reason: String,
}

/// An alert with its evidence events and status history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertDetail {
    #[serde(flatten)]
    pub alert: StoredAlert,
    pub evidence: Vec<serde_json::Value>,
    pub history: Vec<HistoryEntry>,
}

/// What recording an alert did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    pub id: i64,
    /// A new row (false: folded into an existing alert as a repeat, or already recorded).
    pub new: bool,
    /// This very alert (same rule, same evidence) was recorded before and nothing changed: the
    /// fleet store's uniqueness key recognised a redelivery. Always false in the SQLite store, whose
    /// one writer never sees an alert twice.
    #[serde(default)]
    pub duplicate: bool,
    pub count: u64,
    pub status: Status,
}

/// Filters of a listing; `None` means any. Both stores apply every one of them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Minimum severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Only alerts whose evidence came from this source (`StoredAlert::source`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Only alerts in this container: its id (or a prefix of 12 or more characters) or its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Only alerts in this Kubernetes namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only alerts seen at or after this event time (ns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ns: Option<i64>,
    /// Only alerts with an id above this (for following), oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl AlertFilter {
    /// The number of rows a listing returns at most when no limit is given.
    pub const DEFAULT_LIMIT: u32 = 1000;

    /// Whether `c` is matched as a container id prefix (12 or more hex digits) rather than exactly.
    pub fn container_is_prefix(c: &str) -> bool {
        c.len() >= 12 && c.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

/// Counts and sizes, for `sensor status` and metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Where the store is: the SQLite file, or the PostgreSQL URL (which never holds the password).
    pub path: String,
    /// `sqlite` or `postgresql`.
    #[serde(default)]
    pub engine: String,
    pub alerts: u64,
    pub open: u64,
    pub acknowledged: u64,
    pub closed: u64,
    pub suppressed: u64,
    /// Bytes on disk: the SQLite file plus its WAL; PostgreSQL: the store's tables and indexes.
    pub file_bytes: u64,
    /// Bytes in use (what SQLite's size retention compares against).
    pub used_bytes: u64,
    pub schema_version: i64,
}

impl StoreStats {
    /// Adds `n` alerts of `status` (a `GROUP BY status` row) to the counts.
    pub fn count(&mut self, status: &str, n: u64) {
        self.alerts += n;
        match status {
            "open" => self.open = n,
            "acknowledged" => self.acknowledged = n,
            "closed" => self.closed = n,
            "suppressed" => self.suppressed = n,
            _ => {}
        }
    }
}

/// Severity as both stores keep it in a column (ordered, so `severity >= ?` is a minimum).
pub fn severity_code(s: Severity) -> i16 {
    match s {
        Severity::Low => 1,
        Severity::Medium => 2,
        Severity::High => 3,
        Severity::Critical => 4,
    }
}

/// The severity of a stored code.
pub fn severity_from_code(c: i64) -> Option<Severity> {
    match c {
        1 => Some(Severity::Low),
        2 => Some(Severity::Medium),
        3 => Some(Severity::High),
        4 => Some(Severity::Critical),
        _ => None,
    }
}

/// The key repeats are folded on: the match's join keys when it has them, else who and where; in
/// a container, its id too (the same thing in two containers is two alerts).
pub fn dedup_key(alert: &Alert) -> String {
    let mut v = if alert.join_keys.is_empty() {
        serde_json::json!([alert.host, alert.user, alert.process])
    } else {
        serde_json::json!([alert.host, alert.join_keys])
    };
    if let (Some(c), serde_json::Value::Array(a)) = (container_of(alert), &mut v) {
        a.push(serde_json::Value::String(c.id));
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn status_names_round_trip_and_bad_ones_are_named() {
        for s in [
            Status::Open,
            Status::Acknowledged,
            Status::Closed,
            Status::Suppressed,
        ] {
            assert_eq!(s.as_str().parse::<Status>().unwrap(), s);
        }
        assert_eq!("ack".parse::<Status>().unwrap(), Status::Acknowledged);
        let e = "maybe".parse::<Status>().unwrap_err();
        assert!(e.contains("`maybe`"), "{e}");
    }

    #[test]
    fn severity_codes_are_ordered_and_reversible() {
        let all = [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ];
        for w in all.windows(2) {
            assert!(severity_code(w[0]) < severity_code(w[1]));
        }
        for s in all {
            assert_eq!(severity_from_code(i64::from(severity_code(s))), Some(s));
        }
        assert_eq!(severity_from_code(9), None);
    }

    #[test]
    fn a_stored_alert_without_source_serialises_as_before() {
        let a = StoredAlert {
            id: 1,
            rule_id: "r".into(),
            rule_name: "r".into(),
            severity: Severity::Low,
            risk_score: 1,
            status: Status::Open,
            first_seen_ns: 0,
            last_seen_ns: 0,
            count: 1,
            host: None,
            user: None,
            process: None,
            source: None,
            attack: AttackRef::default(),
            reason: String::new(),
            settings: serde_json::Map::new(),
            join_keys: vec![],
            container: None,
            created_ns: 0,
            updated_ns: 0,
        };
        let text = serde_json::to_string(&a).unwrap();
        assert!(!text.contains("source"), "{text}");
        let back: StoredAlert = serde_json::from_str(&text).unwrap();
        assert_eq!(back, a);
    }
}
