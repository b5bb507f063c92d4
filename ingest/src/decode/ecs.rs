//! `ecs`: ECS JSON documents, including the Winlogbeat/Sysmon shape.
//!
//! An ECS document is taken as it is (nested objects flattened). The authenticated agent replaces
//! `agent.id` (a different id found in the document is kept in `labels.reported_agent_id`); the
//! document's own `event.module`/`event.dataset` are kept so that Elastic's rules match unchanged,
//! and set to `ecs`/`ecs.event` only when absent. Winlogbeat documents that did not go through an
//! ingest pipeline carry Sysmon's fields only under `winlog.event_data`; the ECS fields a rule needs
//! are filled from them when absent (see docs/formats/ecs.md).

use std::sync::Arc;

use correlator::{Event, Field, Value};

use super::util::{self, fields, s};
use super::{Ctx, DecodeError, Decoder, Sink};

pub(crate) struct EcsDecoder {
    pub(crate) ctx: Ctx,
}

impl Decoder for EcsDecoder {
    fn line(&mut self, line_no: u64, line: &str, sink: &mut Sink<'_>) {
        sink(decode(&self.ctx, line).map_err(|m| DecodeError::new(line_no, m)));
    }
}

/// The verdict [`EcsDecoder`] gives on `line` (same rejects, same messages), without building
/// the event: what the HTTP listener checks before spooling a line.
pub(crate) fn validate(line: &str) -> Result<(), String> {
    Event::check_json_str(line).map_err(|e| e.to_string())
}

fn decode(ctx: &Ctx, line: &str) -> Result<Event, String> {
    // The streaming parser gives the event `serde_json` + `Event::from_json` would give, and its
    // errors (`invalid JSON: ...`, not an object, bad `@timestamp`) with the same messages.
    let (mut ev, nested) = Event::from_json_str_nested(line).map_err(|e| e.to_string())?;
    let f = fields();
    if let Some(Value::Str(reported)) = ev.get(f.agent_id).cloned() {
        if Some(&*reported) != ctx.agent_id.as_str() {
            ev.insert("labels.reported_agent_id", Value::Str(reported));
        }
    }
    ev.set(f.agent_id, ctx.agent_id.clone());
    if ev.get(f.event_module).is_none() {
        ev.set(f.event_module, ctx.module.clone());
    }
    if ev.get(f.event_dataset).is_none() {
        ev.set(f.event_dataset, s("ecs.event"));
    }
    let raw: Arc<str> = Arc::from(line);
    if ev.get(f.event_original).is_none() {
        ev.set(f.event_original, Value::Str((&raw).into()));
    }
    ev.raw = Some(raw);
    // Winlogbeat's Sysmon data. When the fast path decided, no key had escapes, so a document
    // with `winlog.event_data` has this text.
    let maybe_winlog =
        nested.is_none() || memchr::memmem::find(line.as_bytes(), b"event_data").is_some();
    if maybe_winlog {
        let input = if nested == Some(true) {
            // Field paths are the document's nesting: read the data from the event.
            ev.has_path_under("winlog.event_data")
                .then(|| SysmonInput::from_event(&ev))
        } else {
            let doc: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
            util::get(&doc, "winlog.event_data").map(|data| SysmonInput::from_doc(&doc, data))
        };
        if let Some(input) = input {
            sysmon(&mut ev, &input);
        }
    }
    Ok(ev)
}

/// What the Sysmon mapping reads from `winlog.event_data` (and the event id).
struct SysmonInput {
    event_id: Option<i64>,
    strs: [Option<Arc<str>>; SYSMON_STRS.len()],
    ints: [Option<i64>; SYSMON_INTS.len()],
}

const SYSMON_STRS: [&str; 13] = [
    "Image",
    "ProcessGuid",
    "CommandLine",
    "CurrentDirectory",
    "ParentImage",
    "ParentProcessGuid",
    "ParentCommandLine",
    "User",
    "PipeName",
    "TargetFilename",
    "SourceIp",
    "DestinationIp",
    "Protocol",
];
const SYSMON_INTS: [&str; 4] = [
    "ProcessId",
    "ParentProcessId",
    "SourcePort",
    "DestinationPort",
];

/// `util::as_int` on the value the serde path would have had.
fn value_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl SysmonInput {
    fn from_doc(doc: &serde_json::Value, data: &serde_json::Value) -> SysmonInput {
        let event_id = util::get(doc, "winlog.event_id")
            .and_then(util::as_int)
            .or_else(|| util::get(doc, "event.code").and_then(util::as_int));
        SysmonInput {
            event_id,
            strs: SYSMON_STRS.map(|k| util::get_str(data, k).map(Arc::from)),
            ints: SYSMON_INTS.map(|k| util::get(data, k).and_then(util::as_int)),
        }
    }

    /// From an event whose field paths are exactly the document's nesting.
    fn from_event(ev: &Event) -> SysmonInput {
        let get = |k: &str| ev.get_path(&format!("winlog.event_data.{k}"));
        let event_id = ev
            .get_path("winlog.event_id")
            .and_then(value_int)
            .or_else(|| ev.get_path("event.code").and_then(value_int));
        SysmonInput {
            event_id,
            strs: SYSMON_STRS.map(|k| match get(k) {
                Some(Value::Str(s)) => Some(s.to_arc()),
                _ => None,
            }),
            ints: SYSMON_INTS.map(|k| get(k).and_then(value_int)),
        }
    }

    fn str(&self, key: &str) -> Option<&str> {
        let i = SYSMON_STRS.iter().position(|k| *k == key)?;
        self.strs[i].as_deref()
    }

    fn int(&self, key: &str) -> Option<i64> {
        let i = SYSMON_INTS.iter().position(|k| *k == key)?;
        self.ints[i]
    }
}

fn set_absent(ev: &mut Event, path: &str, v: Option<Value>) {
    let field = Field::intern(path);
    if let Some(v) = v {
        if ev.get(field).is_none() {
            ev.set(field, v);
        }
    }
}

fn sysmon(ev: &mut Event, data: &SysmonInput) {
    let event_id = data.event_id;
    let st = |k: &str| data.str(k).map(s);
    let int = |k: &str| data.int(k).map(Value::Int);
    let base = |k: &str| data.str(k).map(|p| s(util::basename(p)));
    set_absent(ev, "process.executable", st("Image"));
    set_absent(ev, "process.name", base("Image"));
    set_absent(ev, "process.pid", int("ProcessId"));
    set_absent(ev, "process.entity_id", st("ProcessGuid"));
    set_absent(ev, "process.command_line", st("CommandLine"));
    set_absent(ev, "process.working_directory", st("CurrentDirectory"));
    set_absent(ev, "process.parent.executable", st("ParentImage"));
    set_absent(ev, "process.parent.name", base("ParentImage"));
    set_absent(ev, "process.parent.pid", int("ParentProcessId"));
    set_absent(ev, "process.parent.entity_id", st("ParentProcessGuid"));
    set_absent(ev, "process.parent.command_line", st("ParentCommandLine"));
    if let Some(user) = data.str("User") {
        match user.split_once('\\') {
            Some((domain, name)) => {
                set_absent(ev, "user.domain", Some(s(domain)));
                set_absent(ev, "user.name", Some(s(name)));
            }
            None => set_absent(ev, "user.name", Some(s(user))),
        }
    }
    let (category, kind, action): (&[&str], &[&str], Option<&str>) = match event_id {
        Some(1) => (&["process"], &["start"], Some("Process Create")),
        Some(3) => (
            &["network"],
            &["connection", "start"],
            Some("Network connection detected"),
        ),
        Some(5) => (&["process"], &["end"], Some("Process terminated")),
        Some(11) => (&["file"], &["creation"], Some("File created")),
        Some(17) => (&["file"], &["creation"], Some("Pipe Created")),
        Some(18) => (&["file"], &["access"], Some("Pipe Connected")),
        _ => (&[], &[], None),
    };
    if !category.is_empty() {
        set_absent(ev, "event.category", Some(util::strs(category)));
        set_absent(ev, "event.type", Some(util::strs(kind)));
    }
    set_absent(ev, "event.action", action.map(s));
    if matches!(event_id, Some(17 | 18)) {
        set_absent(ev, "file.name", st("PipeName"));
        set_absent(ev, "file.path", st("PipeName"));
    }
    if event_id == Some(11) {
        set_absent(ev, "file.path", st("TargetFilename"));
        set_absent(
            ev,
            "file.name",
            data.str("TargetFilename").map(|p| s(util::basename(p))),
        );
    }
    if event_id == Some(3) {
        set_absent(ev, "source.ip", st("SourceIp"));
        set_absent(ev, "source.port", int("SourcePort"));
        set_absent(ev, "destination.ip", st("DestinationIp"));
        set_absent(ev, "destination.port", int("DestinationPort"));
        set_absent(ev, "network.transport", st("Protocol"));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// The decoder as it was before the streaming parser: serde's tree, `Event::from_json`, and
    /// the Sysmon mapping read from the tree.
    fn reference(ctx: &Ctx, line: &str) -> Result<Event, String> {
        let doc: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
        let mut ev = Event::from_json(&doc).map_err(|e| e.to_string())?;
        let f = fields();
        if let Some(Value::Str(reported)) = ev.get(f.agent_id).cloned() {
            if Some(&*reported) != ctx.agent_id.as_str() {
                ev.insert("labels.reported_agent_id", Value::Str(reported));
            }
        }
        ev.set(f.agent_id, ctx.agent_id.clone());
        if ev.get(f.event_module).is_none() {
            ev.set(f.event_module, ctx.module.clone());
        }
        if ev.get(f.event_dataset).is_none() {
            ev.set(f.event_dataset, s("ecs.event"));
        }
        if ev.get(f.event_original).is_none() {
            ev.set(f.event_original, s(line));
        }
        ev.raw = Some(line.into());
        if let Some(data) = util::get(&doc, "winlog.event_data") {
            sysmon(&mut ev, &SysmonInput::from_doc(&doc, data));
        }
        Ok(ev)
    }

    /// Fields by name, timestamp, raw record.
    type View = (Vec<(String, Value)>, i64, Option<String>);

    fn view(r: Result<Event, String>) -> Result<View, String> {
        r.map(|ev| {
            let mut f: Vec<(String, Value)> = ev
                .fields()
                .map(|(f, v)| (f.name().to_string(), v.clone()))
                .collect();
            f.sort_by(|a, b| a.0.cmp(&b.0));
            (f, ev.timestamp_ns, ev.raw.as_deref().map(str::to_string))
        })
    }

    fn data_member() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(r#""Image":"C:\\Windows\\cmd.exe""#.to_string()),
            Just(r#""ProcessId":"42""#.to_string()),
            Just(r#""ProcessId":42"#.to_string()),
            Just(r#""ParentProcessId":4.5"#.to_string()),
            Just(r#""User":"CORP\\alice""#.to_string()),
            Just(r#""User":"bob""#.to_string()),
            Just(r#""TargetFilename":"C:\\x\\y.txt""#.to_string()),
            Just(r#""PipeName":"\\pipe\\p""#.to_string()),
            Just(r#""SourceIp":"10.0.0.1","SourcePort":" 443 ","DestinationPort":[1]"#.to_string()),
            Just(r#""CommandLine":{"nested":1}"#.to_string()),
            Just(r#""Image.x":"dotted""#.to_string()),
        ]
    }

    fn winlog_doc() -> impl Strategy<Value = String> {
        let id = prop_oneof![
            Just(String::new()),
            Just(r#","event_id":1"#.to_string()),
            Just(r#","event_id":"3""#.to_string()),
            Just(r#","event_id":11.0"#.to_string()),
            Just(r#","event_id":17"#.to_string()),
        ];
        let data = prop_oneof![
            proptest::collection::vec(data_member(), 0..5)
                .prop_map(|m| format!(r#"{{"winlog":{{"event_data":{{{}}}"#, m.join(","))),
            Just(r#"{"winlog":{"event_data":null"#.to_string()),
            Just(r#"{"winlog":{"event_data":"text""#.to_string()),
            Just(r#"{"winlog":{"event_data":{}"#.to_string()),
            Just(r#"{"winlog":{"other":{"a":1}"#.to_string()),
        ];
        let extra = prop_oneof![
            Just(String::new()),
            Just(r#","event":{"code":"5"}"#.to_string()),
            Just(r#","winlog.event_data":{"Image":"/dotted/top"}"#.to_string()),
            Just(r#","":{"winlog":{"event_data":{"Image":"/empty/key"}}}"#.to_string()),
            Just(r#","agent":{"id":"other"},"event":{"module":"sysmon"}"#.to_string()),
            Just(r#","w\u0069nlog":{"event_data":{"Image":"/escaped/key"}}"#.to_string()),
            Just(r#","process":{"name":"kept"}"#.to_string()),
        ];
        (data, id, extra).prop_map(|(d, id, x)| format!("{d}{id}}}{x}}}"))
    }

    proptest! {
        /// The decoder built on the streaming parser gives the events (and errors) the serde
        /// decoder gave, Sysmon mapping included.
        #[test]
        fn matches_the_serde_decoder(doc in winlog_doc()) {
            let ctx = Ctx::new(super::super::Format::Ecs, "agent-1");
            prop_assert_eq!(view(decode(&ctx, &doc)), view(reference(&ctx, &doc)), "{}", doc);
        }
    }

    #[test]
    fn plain_and_broken_documents_match_the_serde_decoder() {
        let ctx = Ctx::new(super::super::Format::Ecs, "agent-1");
        for doc in [
            r#"{"@timestamp":"2024-05-01T10:00:01Z","process":{"pid":1},"event":{"original":"o"}}"#,
            r#"{"agent":{"id":"agent-1"}}"#,
            r#"{"a":1"#,
            r#"[{"a":1}]"#,
            r#"{"@timestamp":true}"#,
        ] {
            assert_eq!(view(decode(&ctx, doc)), view(reference(&ctx, doc)), "{doc}");
        }
    }
}
