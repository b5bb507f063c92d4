//! `unifiedlog`: macOS unified log lines from `log stream --style ndjson` (also `log show --style
//! ndjson`). The mapping is in docs/formats/unifiedlog.md.

use correlator::{Event, Value};

use super::util::{self, fields, s};
use super::{Ctx, DecodeError, Decoder, Sink};

pub(crate) struct UnifiedLogDecoder {
    pub(crate) ctx: Ctx,
}

impl Decoder for UnifiedLogDecoder {
    fn line(&mut self, line_no: u64, line: &str, sink: &mut Sink<'_>) {
        // `log stream` prints one banner line before the records.
        if line.starts_with("Filtering the log data") {
            return;
        }
        sink(decode(&self.ctx, line).map_err(|m| DecodeError::new(line_no, m)));
    }
}

/// `2023-09-15 10:11:12.123456-0700` (the unified log's own form) as epoch nanoseconds.
pub(crate) fn parse_log_time(t: &str) -> Option<i64> {
    let t = t.trim();
    if let Some(ns) = correlator::event::parse_rfc3339_ns(t) {
        return Some(ns);
    }
    // Insert the colon into a `+HHMM` offset.
    let b = t.as_bytes();
    if b.len() > 5 {
        let sign = b[b.len() - 5];
        if (sign == b'+' || sign == b'-') && b[b.len() - 4..].iter().all(u8::is_ascii_digit) {
            let fixed = format!("{}:{}", &t[..t.len() - 2], &t[t.len() - 2..]);
            return correlator::event::parse_rfc3339_ns(&fixed);
        }
    }
    None
}

fn decode(ctx: &Ctx, line: &str) -> Result<Event, String> {
    let doc = serde_json::Value::Object(util::parse_object(line)?);
    let f = fields();
    let ts = util::get_str(&doc, "timestamp").ok_or("missing `timestamp`")?;
    let ts = parse_log_time(ts).ok_or_else(|| format!("bad `timestamp` `{ts}`"))?;
    if doc.get("eventMessage").is_none() && doc.get("eventType").is_none() {
        return Err("neither `eventMessage` nor `eventType`: not a unified log record".into());
    }
    let mut ev = ctx.event("unifiedlog.log", line);
    util::set_time(&mut ev, ts);
    ev.set(f.event_kind, s("event"));
    util::copy(&mut ev, &doc, "eventMessage", "message");
    util::copy(&mut ev, &doc, "eventType", "event.action");
    util::copy(&mut ev, &doc, "messageType", "log.level");
    util::copy(&mut ev, &doc, "subsystem", "macos.unified_log.subsystem");
    util::copy(&mut ev, &doc, "category", "macos.unified_log.category");
    util::copy(
        &mut ev,
        &doc,
        "formatString",
        "macos.unified_log.format_string",
    );
    util::copy(
        &mut ev,
        &doc,
        "senderImagePath",
        "macos.unified_log.sender_image_path",
    );
    util::copy(
        &mut ev,
        &doc,
        "activityIdentifier",
        "macos.unified_log.activity_id",
    );
    util::copy(&mut ev, &doc, "traceID", "macos.unified_log.trace_id");
    util::copy_int(&mut ev, &doc, "processID", "process.pid");
    util::copy_int(&mut ev, &doc, "threadID", "process.thread.id");
    util::copy_int(&mut ev, &doc, "userID", "user.id");
    if let Some(p) = util::get_str(&doc, "processImagePath") {
        ev.insert("process.executable", s(p));
        ev.insert("process.name", s(util::basename(p)));
    }
    if let Some(sub) = util::get_str(&doc, "subsystem") {
        ev.insert("log.logger", s(sub));
    }
    ev.insert("host.os.type", s("macos"));
    ev.insert(
        "event.category",
        Value::Array(std::sync::Arc::from([s("process")])),
    );
    Ok(ev)
}
