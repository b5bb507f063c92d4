//! What reported an alert's evidence: the `source` column of both stores (`alerts list --source`).

use correlator::Alert;

use crate::container::text;

/// The source of the last evidence event that names one: its `event.module` (every event the
/// sensor makes carries one: `sensor` for the kernel sensor, the format's module for network ingest
/// and files), else its `agent.type` (a sender's own ECS documents without a module).
pub fn source_of(alert: &Alert) -> Option<String> {
    alert
        .evidence
        .iter()
        .rev()
        .find_map(|d| text(d, "event.module").or_else(|| text(d, "agent.type")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn alert(evidence: Vec<serde_json::Value>) -> Alert {
        serde_json::from_value(serde_json::json!({
            "rule_id": "r", "rule_name": "r", "severity": "low", "risk_score": 1,
            "timestamp_ns": 0, "first_event_ns": 0, "evidence": evidence
        }))
        .unwrap()
    }

    #[test]
    fn module_then_agent_type_of_the_last_event_naming_one() {
        let a = alert(vec![
            serde_json::json!({"event": {"module": "auditd"}}),
            serde_json::json!({"event": {"module": "sensor"}, "agent": {"type": "x"}}),
            serde_json::json!({"process": {"pid": 1}}),
        ]);
        assert_eq!(source_of(&a).as_deref(), Some("sensor"));
        let a = alert(vec![serde_json::json!({"agent": {"type": "filebeat"}})]);
        assert_eq!(source_of(&a).as_deref(), Some("filebeat"));
        let a = alert(vec![serde_json::json!({"event.module": "zeek"})]);
        assert_eq!(source_of(&a).as_deref(), Some("zeek"));
        let a = alert(vec![serde_json::json!({"host": {"name": "h"}})]);
        assert_eq!(source_of(&a), None);
        assert_eq!(source_of(&alert(vec![])), None);
    }
}
