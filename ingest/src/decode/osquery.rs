//! `osquery`: osquery result logs: differential (`"action":"added"|"removed"`, one row in
//! `columns`), batched differential (`diffResults`), and snapshot (`"action":"snapshot"`, rows in
//! `snapshot`). One event per row. The mapping is in docs/formats/osquery.md.

use correlator::{Event, Value};

use super::util::{self, fields, s};
use super::{Ctx, DecodeError, Decoder, Sink};

pub(crate) struct OsqueryDecoder {
    pub(crate) ctx: Ctx,
}

impl Decoder for OsqueryDecoder {
    fn line(&mut self, line_no: u64, line: &str, sink: &mut Sink<'_>) {
        let doc = match util::parse_object(line) {
            Ok(m) => serde_json::Value::Object(m),
            Err(e) => return sink(Err(DecodeError::new(line_no, e))),
        };
        let name = util::get_str(&doc, "name");
        let Some(name) = name else {
            return sink(Err(DecodeError::new(
                line_no,
                "missing `name` (the query name): not an osquery result",
            )));
        };
        let ts = doc
            .get("unixTime")
            .and_then(util::epoch_secs_ns)
            .or_else(|| doc.get("epoch_time").and_then(util::epoch_secs_ns));
        let Some(ts) = ts else {
            return sink(Err(DecodeError::new(line_no, "missing or bad `unixTime`")));
        };
        let mut rows: Vec<(&str, &serde_json::Value)> = Vec::new();
        if let Some(cols) = doc.get("columns").filter(|c| c.is_object()) {
            rows.push((util::get_str(&doc, "action").unwrap_or("added"), cols));
        } else if let Some(snap) = doc.get("snapshot").and_then(serde_json::Value::as_array) {
            rows.extend(snap.iter().map(|r| ("snapshot", r)));
        } else if let Some(diff) = doc.get("diffResults") {
            for action in ["added", "removed"] {
                if let Some(list) = diff.get(action).and_then(serde_json::Value::as_array) {
                    rows.extend(list.iter().map(|r| (action, r)));
                }
            }
        } else {
            return sink(Err(DecodeError::new(
                line_no,
                "no `columns`, `snapshot` or `diffResults`: no result rows",
            )));
        }
        for (action, row) in rows {
            if !row.is_object() {
                sink(Err(DecodeError::new(
                    line_no,
                    format!("result row is {}, not an object", util::kind(row)),
                )));
                continue;
            }
            sink(Ok(event(&self.ctx, line, &doc, name, ts, action, row)));
        }
    }
}

fn event(
    ctx: &Ctx,
    line: &str,
    doc: &serde_json::Value,
    name: &str,
    ts: i64,
    action: &str,
    row: &serde_json::Value,
) -> Event {
    let f = fields();
    let mut ev = ctx.event("osquery.result", line);
    util::set_time(&mut ev, ts);
    ev.set(f.event_kind, s("event"));
    ev.set(f.event_action, s(action));
    ev.insert("osquery.result.name", s(name));
    ev.insert("rule.name", s(name));
    ev.insert("osquery.result.action", s(action));
    util::copy(&mut ev, doc, "hostIdentifier", "host.hostname");
    util::copy(
        &mut ev,
        doc,
        "hostIdentifier",
        "osquery.result.host_identifier",
    );
    util::copy(&mut ev, doc, "calendarTime", "osquery.result.calendar_time");
    util::copy(&mut ev, doc, "decorations.host_uuid", "host.id");
    util::copy(&mut ev, doc, "decorations.username", "user.name");
    if let Some(serde_json::Value::Object(dec)) = doc.get("decorations") {
        for (k, v) in dec {
            if let Some(v) = util::scalar(v) {
                ev.insert(&format!("osquery.result.decorations.{k}"), v);
            }
        }
    }
    if let serde_json::Value::Object(cols) = row {
        for (k, v) in cols {
            if let Some(v) = util::scalar(v) {
                ev.insert(&format!("osquery.result.columns.{k}"), v);
            }
        }
        // ECS fields for the common process / socket / file tables.
        let has = |k: &str| cols.contains_key(k);
        if has("pid") && (has("cmdline") || has("parent") || has("path")) {
            util::copy_int(&mut ev, row, "pid", "process.pid");
            util::copy_int(&mut ev, row, "parent", "process.parent.pid");
            util::copy(&mut ev, row, "cmdline", "process.command_line");
            util::copy(&mut ev, row, "cwd", "process.working_directory");
            if let Some(p) = util::get_str(row, "path").filter(|p| p.starts_with('/')) {
                ev.insert("process.executable", s(p));
                ev.insert("process.name", s(util::basename(p)));
            }
            if has("remote_address") {
                util::copy_ip(&mut ev, row, "remote_address", "destination.ip");
                util::copy_int(&mut ev, row, "remote_port", "destination.port");
                util::copy_ip(&mut ev, row, "local_address", "source.ip");
                util::copy_int(&mut ev, row, "local_port", "source.port");
            }
        }
        if has("uid") {
            if let Some(u) = util::get(row, "uid").and_then(util::as_int) {
                ev.insert("user.id", s(&u.to_string()));
            }
        }
        if has("sha256") {
            util::copy(&mut ev, row, "sha256", "file.hash.sha256");
        }
    }
    ev.insert(
        "event.category",
        Value::Array(std::sync::Arc::from([s("host")])),
    );
    ev
}
