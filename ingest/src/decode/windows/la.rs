//! Windows events as Azure Monitor / Microsoft Sentinel keep them: Log Analytics rows of the
//! `WindowsEvent` table (Azure Monitor Agent: `Provider`, `EventData` as JSON), the `Event` table
//! (`EventSourceName`, `EventLog`, `EventData` as an `<EventData>` XML string) and the
//! `SecurityEvent` table (the data fields as columns of their own), as a workspace's data export
//! or a query's result writes them.

use serde_json::Value as JsonValue;

use super::super::util;
use super::json::{event_id, json_str};
use super::xml::parse_xml;
use super::{parse_time, Record};

/// Log Analytics' own columns: never event data.
const LA_COLUMNS: &[&str] = &[
    "TenantId",
    "SourceSystem",
    "TimeGenerated",
    "Computer",
    "Type",
    "_ResourceId",
    "_ItemId",
    "_Internal_WorkspaceResourceId",
    "MG",
    "ManagementGroupName",
    "EventOriginId",
    "Task",
    "EventLevel",
    "EventLevelName",
    "Level",
    "Activity",
    "EventSourceName",
    "Provider",
    "Channel",
    "EventLog",
    "EventID",
    "EventCategory",
    "EventRecordId",
    "RenderedDescription",
    "ParameterXml",
    "EventData",
    "AzureDeploymentID",
    "Role",
    "UserName",
    "SystemUserId",
    "SystemProcessId",
    "SystemThreadId",
    "Keywords",
    "Opcode",
    "Version",
    "Correlation",
    "Data",
    "SourceComputerId",
    "TimeCollected",
];

/// A Log Analytics row of a Windows event table: `TimeGenerated`, `Computer`, `EventID`, and
/// the table's name in `Type` or an `EventData` / `Provider` / `EventSourceName` of its own.
pub(super) fn is_log_analytics(obj: &serde_json::Map<String, JsonValue>) -> bool {
    let table = obj.get("Type").and_then(JsonValue::as_str);
    obj.contains_key("TimeGenerated")
        && obj.contains_key("EventID")
        && (matches!(table, Some("WindowsEvent" | "Event" | "SecurityEvent"))
            || obj.contains_key("EventSourceName")
            || (obj.contains_key("Provider") && obj.contains_key("EventData")))
}

pub(super) fn parse_log_analytics(
    obj: &serde_json::Map<String, JsonValue>,
) -> Result<Record, String> {
    let get = |k: &str| obj.get(k).and_then(json_str).filter(|v| !v.is_empty());
    let event_id = event_id(obj)?;
    let mut rec = Record {
        event_id,
        provider: get("Provider").or_else(|| get("EventSourceName")),
        channel: get("Channel").or_else(|| get("EventLog")),
        computer: get("Computer"),
        record_id: obj.get("EventRecordId").and_then(util::as_int),
        exec_pid: obj.get("SystemProcessId").and_then(util::as_int),
        exec_tid: obj.get("SystemThreadId").and_then(util::as_int),
        user_sid: get("SystemUserId"),
        task: get("Task"),
        level: get("EventLevelName").or_else(|| get("Level")),
        message: get("RenderedDescription"),
        ..Record::default()
    };
    // `TimeGenerated` is the event's time (UTC) in these tables.
    let t = get("TimeGenerated").unwrap_or_default();
    rec.system_time = Some(
        parse_time(&t)
            .map(|p| p.0)
            .ok_or_else(|| format!("bad `TimeGenerated` `{t}`"))?,
    );
    match obj.get("EventData") {
        Some(JsonValue::Object(m)) => push_object(&mut rec, m),
        Some(JsonValue::String(s)) => {
            let s = s.trim();
            if s.starts_with('{') {
                let m = util::parse_object(s).map_err(|e| format!("`EventData`: {e}"))?;
                push_object(&mut rec, &m);
            } else if s.starts_with('<') {
                // `<EventData xmlns=...><Data Name=...>` (or `<UserData>`): the XML decoder's own
                // reading, inside an event of its own.
                let (_, inner) = parse_xml(&format!("<Event>{s}</Event>"))
                    .map_err(|e| format!("`EventData`: {e}"))?
                    .into_iter()
                    .next()
                    .ok_or("`EventData` holds no data")?;
                rec.data = inner.data;
            }
        }
        _ => {}
    }
    // The SecurityEvent table: the data fields are columns.
    for (k, v) in obj {
        if LA_COLUMNS.contains(&k.as_str()) || rec.data.iter().any(|(d, _)| d == k) {
            continue;
        }
        if let Some(v) = json_str(v) {
            rec.data.push((k.clone(), v));
        }
    }
    Ok(rec)
}

fn push_object(rec: &mut Record, m: &serde_json::Map<String, JsonValue>) {
    for (k, v) in m {
        if let Some(v) = json_str(v) {
            rec.data.push((k.clone(), v));
        }
    }
}
