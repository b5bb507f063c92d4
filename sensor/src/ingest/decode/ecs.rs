//! `ecs`: ECS JSON documents, including the Winlogbeat/Sysmon shape.
//!
//! An ECS document is taken as it is (nested objects flattened). The authenticated agent replaces
//! `agent.id` (a different id found in the document is kept in `labels.reported_agent_id`); the
//! document's own `event.module`/`event.dataset` are kept so that Elastic's rules match unchanged,
//! and set to `ecs`/`ecs.event` only when absent. Winlogbeat documents that did not go through an
//! ingest pipeline carry Sysmon's fields only under `winlog.event_data`; the ECS fields a rule needs
//! are filled from them when absent (see docs/formats/ecs.md).

use correlator::{Event, Field, Value};
use serde_json::Value as J;

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

fn decode(ctx: &Ctx, line: &str) -> Result<Event, String> {
    let doc: J = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
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
        let id = util::get(&doc, "winlog.event_id")
            .and_then(util::as_int)
            .or_else(|| util::get(&doc, "event.code").and_then(util::as_int));
        sysmon(&mut ev, id, data);
    }
    Ok(ev)
}

fn set_absent(ev: &mut Event, path: &str, v: Option<Value>) {
    let field = Field::intern(path);
    if let Some(v) = v {
        if ev.get(field).is_none() {
            ev.set(field, v);
        }
    }
}

fn sysmon(ev: &mut Event, event_id: Option<i64>, data: &J) {
    let st = |k: &str| util::get_str(data, k).map(s);
    let int = |k: &str| util::get(data, k).and_then(util::as_int).map(Value::Int);
    let base = |k: &str| util::get_str(data, k).map(|p| s(util::basename(p)));
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
    if let Some(user) = util::get_str(data, "User") {
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
            util::get_str(data, "TargetFilename").map(|p| s(util::basename(p))),
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
