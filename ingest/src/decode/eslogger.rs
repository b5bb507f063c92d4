//! `eslogger`: macOS Endpoint Security events as JSON, in the layout `eslogger` prints (also Jamf
//! Protect's telemetry stream, which uses the same layout): `event_type`, `event.<name>`, `process`
//! with `audit_token`, `executable`, code signing, `time`. The event name is the single key of
//! `event`. The mapping is in docs/formats/eslogger.md.

use correlator::{ecs, Event, Value};
use serde_json::Value as JsonValue;

use super::util::{self, fields, s, strs};
use super::{Ctx, DecodeError, Decoder, Sink};

pub(crate) struct EsloggerDecoder {
    pub(crate) ctx: Ctx,
}

impl Decoder for EsloggerDecoder {
    fn line(&mut self, line_no: u64, line: &str, sink: &mut Sink<'_>) {
        sink(decode(&self.ctx, line).map_err(|m| DecodeError::new(line_no, m)));
    }
}

/// CS_VALID from <kern/cs_blobs.h>.
const CS_VALID: i64 = 0x1;

/// Maps an ES `es_process_t` (as JSON) to `prefix` (`process`, `process.parent`, ...).
fn process(ev: &mut Event, p: &JsonValue, prefix: &str) {
    let key = |k: &str| format!("{prefix}.{k}");
    if let Some(tok) = p.get("audit_token") {
        util::copy_int(ev, tok, "pid", &key("pid"));
        if let Some(v) = util::get(tok, "euid").and_then(util::as_int) {
            ev.insert(&key("user.id"), s(&v.to_string()));
        }
        if let Some(v) = util::get(tok, "ruid").and_then(util::as_int) {
            ev.insert(&key("real_user.id"), s(&v.to_string()));
        }
        if let Some(v) = util::get(tok, "egid").and_then(util::as_int) {
            ev.insert(&key("group.id"), s(&v.to_string()));
        }
        if let Some(v) = util::get(tok, "rgid").and_then(util::as_int) {
            ev.insert(&key("real_group.id"), s(&v.to_string()));
        }
        set_entity(ev, tok, &key("entity_id"));
    }
    if let Some(path) = util::get_str(p, "executable.path") {
        ev.insert(&key("executable"), s(path));
        ev.insert(&key("name"), s(util::basename(path)));
    }
    util::copy_int(ev, p, "ppid", &key("parent.pid"));
    if let Some(t) = p.get("parent_audit_token") {
        set_entity(ev, t, &key("parent.entity_id"));
        util::copy_int(ev, t, "pid", &key("parent.pid"));
    }
    util::copy(ev, p, "start_time", &key("start"));
    util::copy_int(ev, p, "group_id", &key("group_leader.pid"));
    util::copy_int(ev, p, "session_id", &key("session_leader.pid"));
    let signing_id = util::get_str(p, "signing_id").filter(|v| !v.is_empty());
    let team_id = util::get_str(p, "team_id").filter(|v| !v.is_empty());
    if let Some(v) = signing_id {
        ev.insert(&key("code_signature.signing_id"), s(v));
    }
    if let Some(v) = team_id {
        ev.insert(&key("code_signature.team_id"), s(v));
    }
    if let Some(v) = util::get_str(p, "cdhash").filter(|v| !v.is_empty()) {
        ev.insert(&key("code_signature.cdhash"), s(v));
    }
    if let Some(b) = p.get("is_platform_binary").and_then(JsonValue::as_bool) {
        ev.insert(&key("code_signature.platform_binary"), Value::Bool(b));
    }
    let flags = p.get("codesigning_flags").and_then(util::as_int);
    if let Some(fl) = flags {
        ev.insert(&key("code_signature.flags"), Value::Int(fl));
        ev.insert(
            &key("code_signature.valid"),
            Value::Bool(fl & CS_VALID != 0),
        );
    }
    let exists = signing_id.is_some() || flags.is_some_and(|fl| fl & CS_VALID != 0);
    if signing_id.is_some() || flags.is_some() {
        ev.insert(&key("code_signature.exists"), Value::Bool(exists));
    }
    if let Some(tty) = util::get_str(p, "tty.path") {
        ev.insert(&key("tty.path"), s(tty));
    }
}

fn set_entity(ev: &mut Event, tok: &JsonValue, dst: &str) {
    if let Some(uuid) = util::get_str(tok, "uuid") {
        ev.insert(dst, s(uuid));
    } else if let (Some(pid), Some(ver)) = (
        util::get(tok, "pid").and_then(util::as_int),
        util::get(tok, "pidversion").and_then(util::as_int),
    ) {
        ev.insert(dst, s(&format!("{pid}-{ver}")));
    }
}

/// `file.*` of an ES file object; returns its `file.type`.
fn file(ev: &mut Event, f: &JsonValue) -> Option<&'static str> {
    let mut ftype = None;
    if let Some(path) = util::get_str(f, "path") {
        ev.insert("file.path", s(path));
        ev.insert("file.name", s(util::basename(path)));
    }
    if let Some(mode) = util::get(f, "stat.st_mode").and_then(util::as_int) {
        ftype = u64::try_from(mode).ok().and_then(ecs::file_type);
        if let Some(t) = ftype {
            ev.insert("file.type", s(t));
        }
        ev.insert("file.mode", s(&format!("{:04o}", mode & 0o7777)));
    }
    util::copy_int(ev, f, "stat.st_size", "file.size");
    if let Some(ino) = util::get(f, "stat.st_ino").and_then(util::as_int) {
        ev.insert("file.inode", s(&ino.to_string()));
    }
    ftype
}

fn decode(ctx: &Ctx, line: &str) -> Result<Event, String> {
    let doc = JsonValue::Object(util::parse_object(line)?);
    let event = doc
        .get("event")
        .and_then(JsonValue::as_object)
        .ok_or("missing `event` object (not an Endpoint Security record)")?;
    let (name, body) = event
        .iter()
        .next()
        .ok_or("`event` object is empty: no event name")?;
    let f = fields();
    let mut ev = ctx.event(&format!("eslogger.{name}"), line);
    let ts = doc
        .get("time")
        .and_then(util::epoch_secs_ns)
        .ok_or("missing or bad `time` (RFC 3339 expected)")?;
    util::set_time(&mut ev, ts);
    ev.set(f.event_kind, s("event"));
    ev.set(f.event_action, s(name));
    ev.insert("host.os.type", s("macos"));
    if let Some(code) = doc.get("event_type").and_then(util::as_int) {
        ev.insert("event.code", s(&code.to_string()));
    }
    util::copy_int(&mut ev, &doc, "global_seq_num", "event.sequence");
    util::copy_int(&mut ev, &doc, "glob_seq_num", "event.sequence");
    util::copy(&mut ev, &doc, "uuid", "event.id");
    util::copy(&mut ev, &doc, "host.hostname", "host.hostname");
    util::copy(&mut ev, &doc, "host.provisioningUDID", "host.id");
    util::copy(&mut ev, &doc, "host.ips", "host.ip");
    util::copy(&mut ev, &doc, "host.serial", "device.id");
    util::copy_int(&mut ev, &doc, "thread.thread_id", "process.thread.id");
    // Events about an action done on behalf of another process (od_*, authentication, btm_*) name
    // it `instigator`; that process is the actor, not the daemon that reported it.
    let actor = body
        .get("instigator")
        .filter(|p| p.is_object())
        .or_else(|| doc.get("process"));
    if let Some(p) = actor.filter(|p| p.is_object()) {
        process(&mut ev, p, "process");
        if let Some(euid) = util::get(p, "audit_token.euid").and_then(util::as_int) {
            ev.insert("user.id", s(&euid.to_string()));
        }
        if let Some(egid) = util::get(p, "audit_token.egid").and_then(util::as_int) {
            ev.insert("group.id", s(&egid.to_string()));
        }
    }
    // A behaviour the one vocabulary names (correlator::ecs) takes its action, category and type.
    let (category, etype, vocab) = body_fields(&mut ev, &doc, name, body);
    let (category, etype) = match vocab {
        Some(a) => {
            ev.set(f.event_action, s(a.name));
            (a.category, a.kind)
        }
        None => (category, etype),
    };
    if !category.is_empty() {
        ev.set(f.event_category, strs(category));
        ev.set(f.event_type, strs(etype));
    }
    if !matches!(
        name.as_str(),
        "exec" | "fork" | "exit" | "open" | "create" | "xpc_connect" | "signal" | "mmap"
    ) {
        // Keep the other events' bodies reachable, one level deep.
        if let JsonValue::Object(m) = body {
            for (k, v) in m {
                if let Some(v) = util::scalar(v) {
                    ev.insert(&format!("macos.es.{name}.{k}"), v);
                }
            }
        }
    }
    Ok(ev)
}

/// The fields of one event type's body (`event.<name>`), and its ECS category and type; a behaviour
/// the one vocabulary names (correlator::ecs) also returns its action.
// Over 100 lines on purpose: one match arm per Endpoint Security event type: the mapping table of docs/formats/eslogger.md.
fn body_fields(
    ev: &mut Event,
    doc: &JsonValue,
    name: &str,
    body: &JsonValue,
) -> (
    &'static [&'static str],
    &'static [&'static str],
    Option<ecs::Action>,
) {
    let mut vocab: Option<ecs::Action> = None;
    let (category, etype): (&'static [&'static str], &'static [&'static str]) = match name {
        "exec" => {
            if let Some(target) = body.get("target") {
                // The new image becomes `process`; the caller's parent stays the parent.
                process(ev, target, "process");
            }
            if let Some(args) = body.get("args").and_then(JsonValue::as_array) {
                let list: Vec<Value> = args.iter().filter_map(JsonValue::as_str).map(s).collect();
                let cmd = args
                    .iter()
                    .filter_map(JsonValue::as_str)
                    .collect::<Vec<_>>()
                    .join(" ");
                ev.insert(
                    "process.args_count",
                    Value::Int(i64::try_from(list.len()).unwrap_or(0)),
                );
                ev.insert("process.args", Value::Array(list.into()));
                ev.insert("process.command_line", s(&cmd));
            }
            util::copy(ev, body, "cwd.path", "process.working_directory");
            (ecs::EXEC.category, ecs::EXEC.kind)
        }
        "fork" => {
            if let Some(child) = body.get("child") {
                if let Some(p) = doc.get("process") {
                    process(ev, p, "process.parent");
                }
                process(ev, child, "process");
            }
            (ecs::FORK.category, ecs::FORK.kind)
        }
        "exit" => {
            util::copy_int(ev, body, "stat", "process.exit_code");
            (ecs::EXIT.category, ecs::EXIT.kind)
        }
        "open" => {
            if let Some(fl) = body.get("file") {
                if file(ev, fl) == Some("fifo") {
                    vocab = Some(ecs::FIFO_OPEN);
                }
            }
            util::copy_int(ev, body, "fflag", "file.open_flags");
            (&["file"], &["access"])
        }
        "create" => {
            if let Some(dest) = body.get("destination") {
                if let Some(existing) = dest.get("existing_file") {
                    if file(ev, existing) == Some("fifo") {
                        vocab = Some(ecs::FIFO_CREATE);
                    }
                } else if let Some(np) = dest.get("new_path") {
                    let dir = util::get_str(np, "dir.path").unwrap_or("");
                    let fname = util::get_str(np, "filename").unwrap_or("");
                    let path = format!("{}/{}", dir.trim_end_matches('/'), fname);
                    ev.insert("file.path", s(&path));
                    ev.insert("file.name", s(fname));
                    if let Some(t) = np
                        .get("mode")
                        .and_then(util::as_int)
                        .and_then(|m| u64::try_from(m).ok())
                        .and_then(ecs::file_type)
                    {
                        ev.insert("file.type", s(t));
                        if t == "fifo" {
                            vocab = Some(ecs::FIFO_CREATE);
                        }
                    }
                }
            }
            (&["file"], &["creation"])
        }
        "xpc_connect" => {
            util::copy(ev, body, "service_name", "xpc.service.name");
            util::copy(ev, body, "service_domain_type", "xpc.service.domain_type");
            (&["process"], &["connection"])
        }
        "signal" => {
            util::copy_int(ev, body, "sig", "signal.number");
            if let Some(t) = body.get("target") {
                process(ev, t, "target.process");
            }
            (&["process"], &["info"])
        }
        "mmap" => {
            if let Some(src) = body.get("source") {
                file(ev, src);
            }
            util::copy_int(ev, body, "protection", "mmap.protection");
            util::copy_int(ev, body, "flags", "mmap.flags");
            (&["process"], &["change"])
        }
        "authentication"
        | "openssh_login"
        | "login_login"
        | "login_logout"
        | "lw_session_lock"
        | "lw_session_unlock"
        | "lw_session_login"
        | "lw_session_logout"
        | "sudo"
        | "su"
        | "screensharing_attach" => {
            for k in ["username", "user_name", "to_username"] {
                if let Some(u) = body.get(k).and_then(JsonValue::as_str) {
                    ev.insert("user.name", s(u));
                }
            }
            (&["authentication"], &["info"])
        }
        _ => (&[], &[]),
    };
    (category, etype, vocab)
}
