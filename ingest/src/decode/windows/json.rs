//! The JSON shapes: NXLog `im_msvistalog` (with or without Logstash's envelope), Winlogbeat /
//! Elastic Agent documents, and event XML rendered as JSON.

use serde_json::Value as JsonValue;

use super::super::util;
use super::{parse_int, parse_time, unescape, Record};

/// NXLog `im_msvistalog` System fields (everything else at the top level is event data).
pub(super) const NXLOG_SYSTEM: &[&str] = &[
    "EventTime",
    "EventReceivedTime",
    "SourceModuleName",
    "SourceModuleType",
    "Hostname",
    "Keywords",
    "EventType",
    "EventTypeOrignal",
    "SeverityValue",
    "Severity",
    "EventID",
    "SourceName",
    "ProviderGuid",
    "Version",
    "Task",
    "OpcodeValue",
    "Opcode",
    "RecordNumber",
    "ActivityID",
    "RelatedActivityID",
    "ExecutionProcessID",
    "ThreadID",
    "Channel",
    "Category",
    "Message",
    "UserID",
    "AccountName",
    "AccountType",
    "Domain",
    "ERROR_EVT_UNRESOLVED",
    "TimeCreated",
    "Level",
];

/// Logstash's envelope fields.
pub(super) const ENVELOPE: &[&str] = &[
    "@timestamp",
    "@version",
    "host",
    "tags",
    "port",
    "type",
    "path",
    "log",
    "event",
    "agent",
    "ecs",
    "input",
    "fields",
    "message",
];

pub(super) fn parse_json(line: &str) -> Result<Record, String> {
    let doc = JsonValue::Object(util::parse_object(line)?);
    parse_doc(&doc, 0)
}

pub(super) fn json_str(v: &JsonValue) -> Option<String> {
    match v {
        JsonValue::String(s) => Some(unescape(s).into_owned()),
        JsonValue::Number(n) => Some(n.to_string()),
        JsonValue::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(super) fn parse_doc(doc: &JsonValue, depth: u8) -> Result<Record, String> {
    let obj = doc.as_object().ok_or("expected a JSON object")?;
    if let Some(winlog) = obj.get("winlog").filter(|w| w.is_object()) {
        return Ok(parse_winlogbeat(doc, winlog));
    }
    if let Some(ev) = obj.get("Event").filter(|e| e.get("System").is_some()) {
        return parse_evtx_json(ev);
    }
    if super::la::is_log_analytics(obj) {
        return super::la::parse_log_analytics(obj);
    }
    if obj.contains_key("EventID") {
        return parse_nxlog(doc);
    }
    // Logstash without a json codec: the shipped record is a string.
    if depth == 0 {
        let inner = util::get_str(doc, "message")
            .or_else(|| util::get_str(doc, "event.original"))
            .map(str::trim)
            .filter(|m| m.starts_with('{'));
        if let Some(inner) = inner {
            let inner: JsonValue = serde_json::from_str(inner)
                .map_err(|e| format!("invalid JSON in `message`: {e}"))?;
            let mut rec = parse_doc(&inner, 1)?;
            if rec.envelope_time.is_none() {
                rec.envelope_time =
                    util::get_str(doc, "@timestamp").and_then(|t| parse_time(t).map(|p| p.0));
            }
            return Ok(rec);
        }
    }
    Err(
        "not a Windows event record: no `EventID` (NXLog), `winlog` (Winlogbeat) or `Event.System`"
            .into(),
    )
}

/// A flat record's `EventID` (NXLog, Log Analytics rows): none, or an integer (a number or a
/// numeric string); anything else is an error naming it.
pub(super) fn event_id(obj: &serde_json::Map<String, JsonValue>) -> Result<Option<i64>, String> {
    obj.get("EventID")
        .map(|v| util::as_int(v).ok_or_else(|| format!("`EventID` is not an integer: {v}")))
        .transpose()
}

pub(super) fn parse_nxlog(doc: &JsonValue) -> Result<Record, String> {
    let obj = doc.as_object().ok_or("expected a JSON object")?;
    let get = |k: &str| obj.get(k).and_then(json_str).filter(|v| !v.is_empty());
    let event_id = event_id(obj)?;
    let mut rec = Record {
        event_id,
        provider: get("SourceName"),
        channel: get("Channel"),
        computer: get("Hostname"),
        record_id: obj.get("RecordNumber").and_then(util::as_int),
        exec_pid: obj.get("ExecutionProcessID").and_then(util::as_int),
        exec_tid: obj.get("ThreadID").and_then(util::as_int),
        user_sid: get("UserID"),
        task: get("Category"),
        opcode: get("Opcode"),
        level: get("Severity").or_else(|| get("Level")),
        keywords: get("Keywords"),
        message: get("Message"),
        ..Record::default()
    };
    // The shipper's stamp of the event: the host's local time, with or without a zone (and some
    // pipelines label local time `Z`): trusted only through the learnt offset, see `build`.
    for key in ["EventTime", "TimeCreated"] {
        if let Some(t) = get(key) {
            match parse_time(&t) {
                Some((ns, zoned)) => {
                    rec.local_time = Some(ns);
                    rec.local_zoned = zoned;
                }
                None => return Err(format!("bad `{key}` `{t}`")),
            }
            break;
        }
    }
    rec.envelope_time = util::get_str(doc, "@timestamp").and_then(|t| match parse_time(t) {
        Some((ns, true)) => Some(ns),
        _ => None,
    });
    for (k, v) in obj {
        if NXLOG_SYSTEM.contains(&k.as_str()) || ENVELOPE.contains(&k.as_str()) {
            continue;
        }
        if let Some(v) = json_str(v) {
            rec.data.push((k.clone(), v));
        }
    }
    if is_sysmon(&rec) {
        undo_name_collisions(&mut rec, obj);
    }
    Ok(rec)
}

fn is_sysmon(rec: &Record) -> bool {
    rec.provider
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case("Microsoft-Windows-Sysmon"))
        || rec.channel.as_deref().is_some_and(|c| {
            c.to_ascii_lowercase()
                .starts_with("microsoft-windows-sysmon")
        })
}

/// NXLog's field names are case-insensitive, so an event's data field that has the name of one of
/// its own System fields is lost: Sysmon's `ProcessId` under NXLog's `ProcessID` (the logging
/// process, in NXLog versions without `ExecutionProcessID`), Sysmon's `EventType` (`CreateKey`,
/// `SetValue`, `CreatePipe`...) under NXLog's (`INFO`). Both are still in the rendered `Message`
/// (`ProcessId: 716` on a line of its own): every `Name: value` line of a Sysmon message whose
/// name the record's data lacks is taken from there. Values already in the data are never replaced.
fn undo_name_collisions(rec: &mut Record, obj: &serde_json::Map<String, JsonValue>) {
    if !obj.contains_key("ExecutionProcessID") {
        if let Some(pid) = obj.get("ProcessID").and_then(util::as_int) {
            rec.exec_pid = Some(pid);
            rec.data.retain(|(k, _)| k != "ProcessID");
        }
    }
    let Some(msg) = rec.message.clone() else {
        return;
    };
    // The first line is the event's title (`Process Create:`).
    for line in msg.lines().skip(1) {
        let Some((name, value)) = line
            .split_once(": ")
            .or_else(|| line.trim_end().strip_suffix(':').map(|n| (n, "")))
        else {
            continue;
        };
        let named = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric());
        if !named || rec.data.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
            continue;
        }
        rec.data
            .push((name.to_string(), unescape(value.trim_end()).into_owned()));
    }
}

pub(super) fn parse_winlogbeat(doc: &JsonValue, w: &JsonValue) -> Record {
    let st = |v: &JsonValue, k: &str| util::get(v, k).and_then(json_str).filter(|v| !v.is_empty());
    let mut rec = Record {
        event_id: util::get(w, "event_id")
            .and_then(util::as_int)
            .or_else(|| util::get(doc, "event.code").and_then(util::as_int)),
        provider: st(w, "provider_name"),
        channel: st(w, "channel"),
        computer: st(w, "computer_name")
            .or_else(|| st(doc, "host.hostname"))
            .or_else(|| st(doc, "host.name")),
        record_id: util::get(w, "record_id").and_then(util::as_int),
        exec_pid: util::get(w, "process.pid").and_then(util::as_int),
        exec_tid: util::get(w, "process.thread.id").and_then(util::as_int),
        user_sid: st(w, "user.identifier"),
        task: st(w, "task"),
        opcode: st(w, "opcode"),
        level: st(doc, "log.level"),
        keywords: util::get(w, "keywords").and_then(|k| match k {
            JsonValue::Array(a) => {
                Some(a.iter().filter_map(json_str).collect::<Vec<_>>().join(", "))
            }
            other => json_str(other),
        }),
        message: st(doc, "message"),
        // `winlog.time_created` (Elastic Agent, some Winlogbeat versions) is the event's
        // TimeCreated; else Winlogbeat's @timestamp is.
        system_time: util::get_str(w, "time_created")
            .or_else(|| util::get_str(doc, "@timestamp"))
            .and_then(|t| parse_time(t).map(|p| p.0)),
        ..Record::default()
    };
    for part in ["event_data", "user_data"] {
        if let Some(JsonValue::Object(m)) = w.get(part) {
            for (k, v) in m {
                match v {
                    JsonValue::Array(a) => {
                        let vals: Vec<String> = a.iter().filter_map(json_str).collect();
                        rec.data.push((k.clone(), vals.join(", ")));
                    }
                    other => {
                        if let Some(v) = json_str(other) {
                            rec.data.push((k.clone(), v));
                        }
                    }
                }
            }
        }
    }
    rec
}

/// `{"Event": {"System": {...}, "EventData": {...}}}`: the XML rendered as JSON (evtx_dump's
/// `#attributes` form, or `Data` as a list of `{"@Name", "#text"}`).
pub(super) fn parse_evtx_json(ev: &JsonValue) -> Result<Record, String> {
    let sys = ev.get("System").ok_or("`Event` without `System`")?;
    let attr = |v: &JsonValue, node: &str, a: &str| -> Option<String> {
        let n = v.get(node)?;
        n.get("#attributes")
            .and_then(|x| x.get(a))
            .or_else(|| n.get(format!("@{a}")))
            .or_else(|| n.get(a))
            .and_then(json_str)
    };
    let text = |v: &JsonValue, node: &str| -> Option<String> {
        let n = v.get(node)?;
        match n {
            JsonValue::Object(o) => o.get("#text").or_else(|| o.get("$")).and_then(json_str),
            other => json_str(other),
        }
    };
    let mut rec = Record {
        event_id: text(sys, "EventID").and_then(|v| parse_int(&v)),
        provider: attr(sys, "Provider", "Name"),
        channel: text(sys, "Channel"),
        computer: text(sys, "Computer"),
        record_id: text(sys, "EventRecordID").and_then(|v| parse_int(&v)),
        exec_pid: attr(sys, "Execution", "ProcessID").and_then(|v| parse_int(&v)),
        exec_tid: attr(sys, "Execution", "ThreadID").and_then(|v| parse_int(&v)),
        user_sid: attr(sys, "Security", "UserID"),
        system_time: attr(sys, "TimeCreated", "SystemTime")
            .and_then(|t| parse_time(&t).map(|p| p.0)),
        ..Record::default()
    };
    if let Some(data) = ev.get("EventData").or_else(|| ev.get("UserData")) {
        match data.get("Data") {
            Some(JsonValue::Array(items)) => {
                for (i, it) in items.iter().enumerate() {
                    let name = it
                        .get("@Name")
                        .or_else(|| it.get("Name"))
                        .and_then(json_str)
                        .unwrap_or_else(|| format!("param{}", i + 1));
                    if let Some(v) = it.get("#text").and_then(json_str).or_else(|| json_str(it)) {
                        rec.data.push((name, v));
                    }
                }
            }
            _ => {
                if let JsonValue::Object(m) = data {
                    for (k, v) in m {
                        if k.starts_with('#') || k.starts_with('@') {
                            continue;
                        }
                        if let Some(v) = json_str(v) {
                            rec.data.push((k.clone(), v));
                        }
                    }
                }
            }
        }
    }
    Ok(rec)
}
