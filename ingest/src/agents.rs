//! Remote agents: who they are (the host name their events carry when the records name none) and
//! what they are doing (connected now, records accepted and rejected, when the last one came), for
//! every protocol (HTTP formats and the auditd remote protocol alike).
//!
//! The activity table is process-wide ([`activity`]): the listeners note into it, `sensor status`
//! (through the daemon's API) reads it. It holds one row per (agent, protocol), so its size is bounded
//! by the configured agents and peers.

use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use correlator::{Event, Value};

use super::decode::Format;
use super::server::IngestConfig;

/// The host name each agent's events carry when their records name no host: the agent's configured
/// `host_name`, or its id.
#[derive(Clone, Debug, Default)]
pub struct AgentNames {
    names: HashMap<String, String>,
}

impl AgentNames {
    /// From the `[[ingest.agents]]` and `[ingest.auditd] peers` of a config.
    pub fn from_config(cfg: &IngestConfig) -> AgentNames {
        let mut names = HashMap::new();
        for a in &cfg.agents {
            if let Some(h) = a.host_name.as_ref().filter(|h| !h.is_empty()) {
                names.insert(a.id.clone(), h.clone());
            }
        }
        for p in cfg.auditd.iter().flat_map(|a| &a.peers) {
            if let Some(h) = p.host_name.as_ref().filter(|h| !h.is_empty()) {
                names.insert(p.agent_id.clone(), h.clone());
            }
        }
        AgentNames { names }
    }

    /// Names `agent`'s host (a fleet's central decoder learns the names the gateways were given).
    /// Returns whether that changed anything.
    pub fn insert(&mut self, agent: &str, host_name: &str) -> bool {
        if host_name.is_empty() || self.names.get(agent).is_some_and(|h| h == host_name) {
            return false;
        }
        self.names.insert(agent.to_string(), host_name.to_string());
        true
    }

    /// The host name for `agent` (its configured one, else the id itself).
    pub fn host_name<'a>(&'a self, agent: &'a str) -> &'a str {
        self.names.get(agent).map_or(agent, String::as_str)
    }
}

/// Whether a format's records describe the agent's own host (auditd, ECS, eslogger...) rather than
/// other machines the agent watches or relays for (a network sensor's flows, an MDM server's or an
/// MTD service's devices).
pub fn describes_agent_host(format: Format) -> bool {
    !matches!(
        format,
        Format::Zeek
            | Format::Suricata
            | Format::Mdm
            | Format::MobileEdr
            | Format::AppleMdm
            | Format::Mtd
    )
}

/// Names the host of an event whose record named none: `host.name` for formats that describe the
/// agent's own host, `observer.name` (the sensor or server that saw it) for the others. An event
/// that has any of `host.name`, `host.hostname`, `host.id` keeps them.
pub fn stamp_host(format: Format, ev: &mut Event, host_name: &str) {
    if describes_agent_host(format) {
        let named = ["host.name", "host.hostname", "host.id"].iter().any(|k| {
            ev.get_path(k)
                .is_some_and(|v| !v.is_null() && v.as_str() != Some(""))
        });
        if !named {
            ev.insert("host.name", Value::Str(host_name.into()));
        }
    } else if ev.get_path("observer.name").is_none() {
        ev.insert("observer.name", Value::Str(host_name.into()));
    }
}

/// An HTTP agent counts as connected this long after its last request.
pub const ACTIVE_WINDOW_MS: u64 = 300_000;

/// One agent's activity over one protocol.
#[derive(Clone, Debug, Default, serde::Serialize, PartialEq, Eq)]
pub struct AgentActivity {
    /// Open connections now (auditd); HTTP agents are "connected" while a request is in flight.
    pub connections: u64,
    /// Peer address of the latest connection or request.
    pub peer: Option<String>,
    pub records_accepted: u64,
    pub records_rejected: u64,
    /// Epoch milliseconds of the last accepted record, if any.
    pub last_record_ms: Option<u64>,
    /// Epoch milliseconds of the last connection or request.
    pub last_seen_ms: Option<u64>,
}

/// The process-wide table of agent activity, keyed by (agent id, protocol).
#[derive(Default)]
pub struct Activity {
    rows: Mutex<BTreeMap<(String, String), AgentActivity>>,
}

/// The table the listeners write and `sensor status` reads.
pub fn activity() -> &'static Activity {
    static ACTIVITY: LazyLock<Activity> = LazyLock::new(Activity::default);
    &ACTIVITY
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Activity {
    fn with(&self, agent: &str, protocol: &str, f: impl FnOnce(&mut AgentActivity)) {
        let mut rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        let row = rows
            .entry((agent.to_string(), protocol.to_string()))
            .or_default();
        f(row);
    }

    /// A connection (auditd) or request (HTTP) from `peer` began.
    pub fn connected(&self, agent: &str, protocol: &str, peer: &str) {
        self.with(agent, protocol, |r| {
            r.connections += 1;
            r.peer = Some(peer.to_string());
            r.last_seen_ms = Some(now_ms());
        });
    }

    /// That connection or request ended.
    pub fn disconnected(&self, agent: &str, protocol: &str) {
        self.with(agent, protocol, |r| {
            r.connections = r.connections.saturating_sub(1)
        });
    }

    /// Records made durable (`accepted`) and refused (`rejected`).
    pub fn records(&self, agent: &str, protocol: &str, accepted: u64, rejected: u64) {
        self.with(agent, protocol, |r| {
            r.records_accepted += accepted;
            r.records_rejected += rejected;
            let now = now_ms();
            r.last_seen_ms = Some(now);
            if accepted > 0 {
                r.last_record_ms = Some(now);
            }
        });
    }

    /// Agents connected now: an open connection (auditd), or a request within the last
    /// [`ACTIVE_WINDOW_MS`] (HTTP posts are short requests, not connections).
    pub fn connected_count(&self) -> usize {
        let now = now_ms();
        let rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        let mut agents: Vec<&str> = rows
            .iter()
            .filter(|(_, r)| {
                r.connections > 0
                    || r.last_seen_ms
                        .is_some_and(|t| now.saturating_sub(t) <= ACTIVE_WINDOW_MS)
            })
            .map(|((a, _), _)| a.as_str())
            .collect();
        agents.dedup();
        agents.len()
    }

    /// Every row, as JSON for the status API: `[{agent, protocol, connections, ...}]`.
    pub fn snapshot(&self) -> serde_json::Value {
        let rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        serde_json::Value::Array(
            rows.iter()
                .map(|((agent, protocol), r)| {
                    let mut v = serde_json::to_value(r).unwrap_or(serde_json::Value::Null);
                    if let Some(o) = v.as_object_mut() {
                        o.insert("agent".into(), agent.clone().into());
                        o.insert("protocol".into(), protocol.clone().into());
                    }
                    v
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn host_named_only_when_the_record_names_none() {
        let mut ev = Event::from_fields(0, Vec::new());
        stamp_host(Format::Auditd, &mut ev, "db-01");
        assert_eq!(ev.get_path("host.name").unwrap().as_str(), Some("db-01"));
        let mut ev = Event::from_fields(0, Vec::new());
        ev.insert("host.name", Value::Str("web".into()));
        stamp_host(Format::Auditd, &mut ev, "db-01");
        assert_eq!(ev.get_path("host.name").unwrap().as_str(), Some("web"));
        // A relay's records: the device stays the host, the relay is the observer.
        let mut ev = Event::from_fields(0, Vec::new());
        ev.insert("host.id", Value::Str("UDID".into()));
        stamp_host(Format::AppleMdm, &mut ev, "mdm-server");
        assert!(ev.get_path("host.name").is_none());
        assert_eq!(
            ev.get_path("observer.name").unwrap().as_str(),
            Some("mdm-server")
        );
    }

    #[test]
    fn activity_counts_per_agent_and_protocol() {
        let a = Activity::default();
        a.connected("db-01", "auditd", "10.0.0.5:4000");
        a.records("db-01", "auditd", 3, 1);
        assert_eq!(a.connected_count(), 1);
        a.records("web", "http/ecs", 5, 0);
        assert_eq!(
            a.connected_count(),
            2,
            "an HTTP agent that just posted counts"
        );
        let s = a.snapshot();
        let row = &s.as_array().unwrap()[0];
        assert_eq!(row["agent"], "db-01");
        assert_eq!(row["records_accepted"], 3);
        assert_eq!(row["records_rejected"], 1);
        assert!(row["last_record_ms"].as_u64().unwrap() > 0);
    }
}
