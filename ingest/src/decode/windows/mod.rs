//! `windows`: Windows event log records (Sysmon, Security, System, PowerShell...) as shippers send
//! them, mapped to ECS the way Elastic's Windows/Sysmon integration maps them.
//!
//! Three shapes are read, told apart by the record itself:
//! - NXLog `im_msvistalog` JSON: System fields (`EventID`, `SourceName`, `Hostname`, `EventTime`...)
//!   and the event's data fields (`Image`, `PipeName`, `UtcTime`...) side by side at the top level,
//!   with or without Logstash's envelope (`@timestamp`, `@version`, `host`, `tags`, `port`; or the
//!   record as a string in `message` / `event.original`);
//! - Winlogbeat / Elastic Agent documents that keep the raw data in `winlog.event_data`;
//! - rendered event XML (`<Event xmlns=...><System>...<EventData><Data Name=...>`), as Windows Event
//!   Forwarding, `wevtutil qe /f:xml` and `Get-WinEvent ... ToXml()` print it: one or more `<Event>`
//!   elements per record, optionally inside `<Events>` and after an XML prolog. The format's framing
//!   (`Framing::Xml`, end tag `</Event>`) hands the decoder each event, over however many lines.
//!
//! Event time is the event's own UTC time: Sysmon's `UtcTime`, else `System/TimeCreated@SystemTime`
//! (or Winlogbeat's `@timestamp`, which is that time). NXLog's `EventTime` is the host's local time
//! without a zone: it is used only shifted by the host's UTC offset, learnt from that host's records
//! that carry both `UtcTime` and `EventTime`; before one is seen, Logstash's `@timestamp` (arrival
//! time, UTC) is used. The mapping is in docs/formats/windows.md.

use std::collections::HashMap;

use correlator::{Event, Value};
use serde_json::Value as J;

use super::util::{self, fields, s, strs};
use super::{Ctx, DecodeError, Decoder, Sink};

/// A decoded Windows event before its ECS mapping: the System part and the data fields.
#[derive(Debug, Default)]
struct Record {
    event_id: Option<i64>,
    provider: Option<String>,
    channel: Option<String>,
    computer: Option<String>,
    record_id: Option<i64>,
    /// `System/Execution@ProcessID` (the process that logged the event).
    exec_pid: Option<i64>,
    exec_tid: Option<i64>,
    user_sid: Option<String>,
    /// `System/TimeCreated@SystemTime` or an equivalent UTC time of the event.
    system_time: Option<i64>,
    /// The shipper's own stamp (NXLog `EventTime`, or a flat `TimeCreated`), parsed as if UTC.
    local_time: Option<i64>,
    /// Whether that stamp carried a zone.
    local_zoned: bool,
    /// Logstash's `@timestamp` (the record's arrival, UTC).
    envelope_time: Option<i64>,
    task: Option<String>,
    opcode: Option<String>,
    level: Option<String>,
    keywords: Option<String>,
    message: Option<String>,
    /// `EventData` / `UserData` fields, in record order.
    data: Vec<(String, String)>,
}

impl Record {
    fn get(&self, name: &str) -> Option<&str> {
        self.data
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty() && *v != "-")
    }
}

pub(crate) struct WindowsDecoder {
    pub(crate) ctx: Ctx,
    /// Per host (normalised name): UTC minus local time, in seconds, learnt from Sysmon records.
    offsets: HashMap<String, i64>,
    /// The last offset learnt, for records that name no host.
    last_offset: Option<i64>,
}

impl WindowsDecoder {
    pub(crate) fn new(ctx: Ctx) -> WindowsDecoder {
        WindowsDecoder {
            ctx,
            offsets: HashMap::new(),
            last_offset: None,
        }
    }

    fn emit(&mut self, line_no: u64, text: &str, sink: &mut Sink<'_>) {
        let t = text.trim_start_matches('\u{feff}').trim_start();
        if t.starts_with('<') {
            match parse_xml(t) {
                Ok(records) => {
                    for (raw, rec) in records {
                        let r = self.build(&raw, rec);
                        sink(r.map_err(|m| DecodeError::new(line_no, m)));
                    }
                }
                Err(m) => sink(Err(DecodeError::new(line_no, m))),
            }
        } else {
            let r = parse_json(t).and_then(|rec| self.build(t, rec));
            sink(r.map_err(|m| DecodeError::new(line_no, m)));
        }
    }

    fn build(&mut self, raw: &str, rec: Record) -> Result<Event, String> {
        let host = rec.computer.as_deref().map(HostName::new);
        let utc = rec
            .get("UtcTime")
            .and_then(|t| parse_time(t).map(|(ns, _)| ns));
        if let (Some(u), Some(l)) = (utc, rec.local_time) {
            // Whole quarter hours: time zones are, the two stamps' seconds are not.
            #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
            let off = ((u - l) as f64 / 1e9 / 900.0).round() as i64 * 900;
            if let Some(h) = &host {
                self.offsets.insert(h.short.clone(), off);
            }
            self.last_offset = Some(off);
        }
        let learnt = match &host {
            Some(h) => self.offsets.get(&h.short).copied(),
            None => self.last_offset,
        };
        let ts = utc
            .or(rec.system_time)
            .or_else(|| Some(rec.local_time? + learnt? * 1_000_000_000))
            .or(rec.local_time.filter(|_| rec.local_zoned))
            .or(rec.envelope_time)
            .or(rec.local_time)
            .ok_or("no event time (UtcTime, System/TimeCreated, EventTime or @timestamp)")?;
        let event_id = rec
            .event_id
            .ok_or("no event id (EventID, winlog.event_id or System/EventID)")?;
        let dataset = dataset(rec.provider.as_deref(), rec.channel.as_deref());
        let mut ev = self.ctx.event(dataset, raw);
        util::set_time(&mut ev, ts);
        map(&mut ev, &rec, event_id, host.as_ref());
        Ok(ev)
    }
}

impl Decoder for WindowsDecoder {
    /// One record: a JSON line, or an XML document as the format's framing cuts it
    /// ([`super::Format::framing`]: one `<Event>`, possibly over several lines).
    fn line(&mut self, line_no: u64, line: &str, sink: &mut Sink<'_>) {
        self.emit(line_no, line, sink);
    }
}

// ---------------------------------------------------------------------------------------------
// Time and names
// ---------------------------------------------------------------------------------------------

/// A Windows time stamp: `2020-09-18 19:00:21.120` (Sysmon's UtcTime, NXLog's EventTime) or RFC
/// 3339 (`2020-09-18T19:00:21.1203456Z`). The flag says whether it carried a zone.
fn parse_time(t: &str) -> Option<(i64, bool)> {
    let t = t.trim();
    let ns = correlator::event::parse_rfc3339_ns(t)?;
    let tail = t.get(19..).unwrap_or("");
    let zoned = tail.ends_with(['Z', 'z']) || tail.contains(['+', '-']);
    Some((ns, zoned))
}

/// One host, one name: `host.name` is the lower-case short name, `host.hostname` the lower-case
/// name as the record gave it (FQDN when it was one), `host.domain` the DNS domain.
struct HostName {
    short: String,
    full: String,
    domain: Option<String>,
}

impl HostName {
    fn new(raw: &str) -> HostName {
        let full = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        let (short, domain) = match full.split_once('.') {
            // An IP address is no FQDN.
            Some(_) if full.parse::<std::net::IpAddr>().is_ok() => (full.clone(), None),
            Some((a, b)) => (a.to_string(), Some(b.to_string())),
            None => (full.clone(), None),
        };
        HostName {
            short,
            full,
            domain,
        }
    }
}

fn dataset(provider: Option<&str>, channel: Option<&str>) -> &'static str {
    let p = provider.unwrap_or("").to_ascii_lowercase();
    let c = channel.unwrap_or("").to_ascii_lowercase();
    if p == "microsoft-windows-sysmon" || c.starts_with("microsoft-windows-sysmon") {
        "windows.sysmon_operational"
    } else if c == "security" || p == "microsoft-windows-security-auditing" {
        "windows.security"
    } else if c == "microsoft-windows-powershell/operational" {
        "windows.powershell_operational"
    } else if c == "windows powershell" || p == "powershell" {
        "windows.powershell"
    } else if c == "system" {
        "windows.system"
    } else {
        "windows.eventlog"
    }
}

/// Undoes the XML escapes that some shippers leave in values (`&lt;Anonymous Pipe&gt;`).
fn unescape(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains('&') {
        return v.into();
    }
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail.find(';').filter(|&e| e <= 10);
        let ent = end.map(|e| &tail[1..e]);
        let ch = match ent {
            Some("lt") => Some('<'),
            Some("gt") => Some('>'),
            Some("amp") => Some('&'),
            Some("quot") => Some('"'),
            Some("apos") => Some('\''),
            Some(n) if n.starts_with("#x") || n.starts_with("#X") => {
                u32::from_str_radix(&n[2..], 16)
                    .ok()
                    .and_then(char::from_u32)
            }
            Some(n) if n.starts_with('#') => n[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match (ch, end) {
            (Some(c), Some(e)) => {
                out.push(c);
                rest = &tail[e + 1..];
            }
            _ => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out.into()
}

/// A decimal or `0x` hexadecimal integer (Security events give process ids in hex).
fn parse_int(v: &str) -> Option<i64> {
    let v = v.trim();
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => i64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

// ---------------------------------------------------------------------------------------------
// JSON shapes
// ---------------------------------------------------------------------------------------------

/// NXLog `im_msvistalog` System fields (everything else at the top level is event data).
const NXLOG_SYSTEM: &[&str] = &[
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
const ENVELOPE: &[&str] = &[
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

fn parse_json(line: &str) -> Result<Record, String> {
    let doc = J::Object(util::parse_object(line)?);
    parse_doc(&doc, 0)
}

fn json_str(v: &J) -> Option<String> {
    match v {
        J::String(s) => Some(unescape(s).into_owned()),
        J::Number(n) => Some(n.to_string()),
        J::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_doc(doc: &J, depth: u8) -> Result<Record, String> {
    let obj = doc.as_object().ok_or("expected a JSON object")?;
    if let Some(winlog) = obj.get("winlog").filter(|w| w.is_object()) {
        return Ok(parse_winlogbeat(doc, winlog));
    }
    if let Some(ev) = obj.get("Event").filter(|e| e.get("System").is_some()) {
        return parse_evtx_json(ev);
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
            let inner: J = serde_json::from_str(inner)
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

fn parse_nxlog(doc: &J) -> Result<Record, String> {
    let obj = doc.as_object().ok_or("expected a JSON object")?;
    let get = |k: &str| obj.get(k).and_then(json_str).filter(|v| !v.is_empty());
    let event_id = match obj.get("EventID") {
        Some(v) => {
            Some(util::as_int(v).ok_or_else(|| format!("`EventID` is not an integer: {v}"))?)
        }
        None => None,
    };
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
    Ok(rec)
}

fn parse_winlogbeat(doc: &J, w: &J) -> Record {
    let st = |v: &J, k: &str| util::get(v, k).and_then(json_str).filter(|v| !v.is_empty());
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
            J::Array(a) => Some(a.iter().filter_map(json_str).collect::<Vec<_>>().join(", ")),
            other => json_str(other),
        }),
        message: st(doc, "message"),
        // Winlogbeat's @timestamp is the event's TimeCreated.
        system_time: util::get_str(doc, "@timestamp").and_then(|t| parse_time(t).map(|p| p.0)),
        ..Record::default()
    };
    for part in ["event_data", "user_data"] {
        if let Some(J::Object(m)) = w.get(part) {
            for (k, v) in m {
                match v {
                    J::Array(a) => {
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
fn parse_evtx_json(ev: &J) -> Result<Record, String> {
    let sys = ev.get("System").ok_or("`Event` without `System`")?;
    let attr = |v: &J, node: &str, a: &str| -> Option<String> {
        let n = v.get(node)?;
        n.get("#attributes")
            .and_then(|x| x.get(a))
            .or_else(|| n.get(format!("@{a}")))
            .or_else(|| n.get(a))
            .and_then(json_str)
    };
    let text = |v: &J, node: &str| -> Option<String> {
        let n = v.get(node)?;
        match n {
            J::Object(o) => o.get("#text").or_else(|| o.get("$")).and_then(json_str),
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
            Some(J::Array(items)) => {
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
                if let J::Object(m) = data {
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

// ---------------------------------------------------------------------------------------------
// XML
// ---------------------------------------------------------------------------------------------

/// Parses a record holding one or more `<Event>` elements (optionally inside `<Events>`, after an
/// XML prolog). Each event comes with its own text as the original record.
fn parse_xml(text: &str) -> Result<Vec<(String, Record)>, String> {
    // Drop the prolog and wrap, so that several events on one line form one document.
    let mut body = text.trim();
    while let Some(rest) = body.strip_prefix("<?") {
        let end = rest.find("?>").ok_or("XML prolog without `?>`")?;
        body = rest[end + 2..].trim_start();
    }
    if body.starts_with("<!") {
        return Err("XML with a DOCTYPE or comment before the first event is not accepted".into());
    }
    let wrapped = format!("<r>{body}</r>");
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: 1 << 20,
    };
    let doc = roxmltree::Document::parse_with_options(&wrapped, opts)
        .map_err(|e| format!("invalid XML: {e}"))?;
    let mut out = Vec::new();
    for node in doc.root_element().descendants() {
        if !node.is_element() || node.tag_name().name() != "Event" {
            continue;
        }
        if node
            .ancestors()
            .skip(1)
            .any(|a| a.is_element() && a.tag_name().name() == "Event")
        {
            continue;
        }
        let raw = wrapped[node.range()].to_string();
        out.push((raw, xml_event(node)));
    }
    if out.is_empty() {
        return Err("XML record holds no <Event> element".into());
    }
    Ok(out)
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn node_text(n: roxmltree::Node<'_, '_>) -> String {
    n.descendants()
        .filter(|d| d.is_text())
        .filter_map(|d| d.text())
        .collect::<String>()
}

fn xml_event(ev: roxmltree::Node<'_, '_>) -> Record {
    let mut rec = Record::default();
    if let Some(sys) = child(ev, "System") {
        let text = |name: &str| {
            child(sys, name)
                .map(node_text)
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        };
        let attr = |name: &str, a: &str| {
            child(sys, name)
                .and_then(|n| n.attribute(a))
                .map(str::to_string)
        };
        rec.event_id = text("EventID").and_then(|v| parse_int(&v));
        rec.provider = attr("Provider", "Name").or_else(|| attr("Provider", "EventSourceName"));
        rec.channel = text("Channel");
        rec.computer = text("Computer");
        rec.record_id = text("EventRecordID").and_then(|v| parse_int(&v));
        rec.exec_pid = attr("Execution", "ProcessID").and_then(|v| parse_int(&v));
        rec.exec_tid = attr("Execution", "ThreadID").and_then(|v| parse_int(&v));
        rec.user_sid = attr("Security", "UserID");
        rec.system_time =
            attr("TimeCreated", "SystemTime").and_then(|t| parse_time(&t).map(|p| p.0));
        rec.level = text("Level");
        rec.task = text("Task");
        rec.opcode = text("Opcode");
        rec.keywords = text("Keywords");
    }
    if let Some(data) = child(ev, "EventData") {
        for (i, d) in data.children().filter(|c| c.is_element()).enumerate() {
            let i = i + 1;
            let name = d.attribute("Name").map(str::to_string).unwrap_or_else(|| {
                if d.tag_name().name() == "Data" {
                    format!("param{i}")
                } else {
                    d.tag_name().name().to_string()
                }
            });
            rec.data.push((name, node_text(d)));
        }
    }
    if let Some(ud) = child(ev, "UserData") {
        // One element (the provider's) whose children are the fields.
        for holder in ud.children().filter(|c| c.is_element()) {
            for f in holder.children().filter(|c| c.is_element()) {
                rec.data
                    .push((f.tag_name().name().to_string(), node_text(f)));
            }
        }
    }
    if let Some(ri) = child(ev, "RenderingInfo") {
        rec.message = child(ri, "Message")
            .map(node_text)
            .filter(|m| !m.is_empty());
        if let Some(l) = child(ri, "Level").map(node_text).filter(|l| !l.is_empty()) {
            rec.level = Some(l);
        }
        if let Some(t) = child(ri, "Task").map(node_text).filter(|l| !l.is_empty()) {
            rec.task = Some(t);
        }
    }
    rec
}

// ---------------------------------------------------------------------------------------------
// ECS mapping
// ---------------------------------------------------------------------------------------------

struct Kind {
    category: &'static [&'static str],
    kind: &'static [&'static str],
    action: &'static str,
}

const fn k(
    category: &'static [&'static str],
    kind: &'static [&'static str],
    action: &'static str,
) -> Option<Kind> {
    Some(Kind {
        category,
        kind,
        action,
    })
}

fn sysmon_kind(id: i64) -> Option<Kind> {
    match id {
        1 => k(&["process"], &["start"], "Process Create"),
        2 => k(&["file"], &["change"], "File creation time changed"),
        3 => k(
            &["network"],
            &["connection", "start"],
            "Network connection detected",
        ),
        4 => k(&["process"], &["change"], "Sysmon service state changed"),
        5 => k(&["process"], &["end"], "Process terminated"),
        6 => k(&["driver"], &["start"], "Driver loaded"),
        7 => k(&["process"], &["change"], "Image loaded"),
        8 => k(&["process"], &["change"], "CreateRemoteThread detected"),
        9 => k(&["file"], &["access"], "RawAccessRead detected"),
        10 => k(&["process"], &["access"], "Process accessed"),
        11 => k(&["file"], &["creation"], "File created"),
        12 => k(
            &["configuration", "registry"],
            &["change"],
            "Registry object added or deleted",
        ),
        13 => k(
            &["configuration", "registry"],
            &["change"],
            "Registry value set",
        ),
        14 => k(
            &["configuration", "registry"],
            &["change"],
            "Registry object renamed",
        ),
        15 => k(&["file"], &["access"], "File stream created"),
        16 => k(
            &["configuration"],
            &["change"],
            "Sysmon config state changed",
        ),
        17 => k(&["file"], &["creation"], "Pipe Created"),
        18 => k(&["file"], &["access"], "Pipe Connected"),
        19..=21 => k(&["configuration"], &["change"], "WMI event"),
        22 => k(
            &["network"],
            &["connection", "protocol", "info"],
            "Dns query",
        ),
        23 => k(&["file"], &["deletion"], "File Delete archived"),
        24 => k(&["host"], &["change"], "Clipboard changed"),
        25 => k(&["process"], &["change"], "Process Tampering"),
        26 => k(&["file"], &["deletion"], "File Delete logged"),
        27..=29 => k(&["file"], &["info"], "File executable detected"),
        _ => None,
    }
}

fn security_kind(id: i64) -> Option<Kind> {
    match id {
        4688 => k(&["process"], &["start"], "created-process"),
        4689 => k(&["process"], &["end"], "exited-process"),
        4624 => k(&["authentication"], &["start"], "logged-in"),
        4625 => k(&["authentication"], &["start"], "logon-failed"),
        4634 | 4647 => k(&["authentication"], &["end"], "logged-out"),
        4648 => k(&["authentication"], &["start"], "logged-in-explicit"),
        4672 => k(&["iam"], &["admin"], "logged-in-special"),
        4697 => k(
            &["iam", "configuration"],
            &["admin", "change"],
            "service-installed",
        ),
        4698 => k(
            &["iam", "configuration"],
            &["creation", "admin"],
            "scheduled-task-created",
        ),
        4702 => k(
            &["iam", "configuration"],
            &["change", "admin"],
            "scheduled-task-updated",
        ),
        4720 => k(&["iam"], &["user", "creation"], "added-user-account"),
        4726 => k(&["iam"], &["user", "deletion"], "deleted-user-account"),
        4728 | 4732 | 4756 => k(&["iam"], &["group", "change"], "added-member-to-group"),
        4768 | 4769 | 4771 | 4776 => k(&["authentication"], &["start"], "credential-validated"),
        4663 => k(&["file"], &["access"], "object-access-attempt"),
        5140 => k(
            &["network", "file"],
            &["info", "access"],
            "network-share-object-accessed",
        ),
        5145 => k(
            &["network", "file"],
            &["info", "access"],
            "network-share-object-access-checked",
        ),
        5156 => k(
            &["network"],
            &["connection", "allowed"],
            "windows-firewall-connection-allowed",
        ),
        5157 => k(
            &["network"],
            &["connection", "denied"],
            "windows-firewall-connection-blocked",
        ),
        1102 => k(&["iam"], &["admin", "change"], "audit-log-cleared"),
        _ => None,
    }
}

fn system_kind(provider: &str, id: i64) -> Option<Kind> {
    match (provider, id) {
        ("service control manager", 7045) => k(
            &["iam", "configuration"],
            &["admin", "change"],
            "service-installed",
        ),
        ("service control manager", 7036) => k(&["process"], &["change"], "service-state-changed"),
        ("service control manager", 7040) => k(
            &["configuration"],
            &["change"],
            "service-start-type-changed",
        ),
        ("microsoft-windows-eventlog", 104) => {
            k(&["iam"], &["admin", "change"], "audit-log-cleared")
        }
        _ => None,
    }
}

fn powershell_kind(id: i64) -> Option<Kind> {
    match id {
        4103 => k(&["process"], &["info"], "Executing Pipeline"),
        4104 => k(&["process"], &["info"], "Execute a Remote Command"),
        400 => k(
            &["process"],
            &["start"],
            "Engine state is changed from None to Available",
        ),
        403 => k(
            &["process"],
            &["end"],
            "Engine state is changed from Available to Stopped",
        ),
        800 => k(&["process"], &["info"], "Pipeline execution details"),
        _ => None,
    }
}

fn put(ev: &mut Event, path: &str, v: Option<&str>) {
    if let Some(v) = v {
        ev.insert(path, s(v));
    }
}

fn put_int(ev: &mut Event, path: &str, v: Option<&str>) {
    if let Some(i) = v.and_then(parse_int) {
        ev.insert(path, Value::Int(i));
    }
}

fn put_ip(ev: &mut Event, path: &str, v: Option<&str>) {
    if let Some(v) = v {
        let v = v.trim().trim_start_matches("::ffff:");
        match v.parse::<std::net::IpAddr>() {
            Ok(ip) => ev.insert(path, Value::Ip(ip)),
            Err(_) => ev.insert(path, s(v)),
        }
    }
}

/// `process.*` (or `process.parent.*` with `prefix`) from an image path, pid, guid and command line.
fn put_process(
    ev: &mut Event,
    prefix: &str,
    image: Option<&str>,
    pid: Option<&str>,
    guid: Option<&str>,
    cmd: Option<&str>,
) {
    if let Some(img) = image {
        ev.insert(&format!("{prefix}.executable"), s(img));
        ev.insert(&format!("{prefix}.name"), s(util::basename(img)));
    }
    put_int(ev, &format!("{prefix}.pid"), pid);
    put(ev, &format!("{prefix}.entity_id"), guid);
    if let Some(c) = cmd.map(str::trim).filter(|c| !c.is_empty()) {
        ev.insert(&format!("{prefix}.command_line"), s(c));
        let args = split_command_line(c);
        if !args.is_empty() {
            ev.insert(
                &format!("{prefix}.args"),
                Value::Array(args.iter().map(|a| s(a)).collect()),
            );
            ev.insert(
                &format!("{prefix}.args_count"),
                Value::Int(args.len() as i64),
            );
        }
    }
}

/// `DOMAIN\name` to `user.domain`/`user.name`.
fn put_user(ev: &mut Event, prefix: &str, v: Option<&str>) {
    if let Some(u) = v {
        match u.split_once('\\') {
            Some((d, n)) => {
                ev.insert(&format!("{prefix}.domain"), s(d));
                ev.insert(&format!("{prefix}.name"), s(n));
            }
            None => ev.insert(&format!("{prefix}.name"), s(u)),
        }
    }
}

fn put_file(ev: &mut Event, path: Option<&str>) {
    if let Some(p) = path {
        ev.insert("file.path", s(p));
        let name = util::basename(p);
        ev.insert("file.name", s(name));
        if let Some(dir) = p.len().checked_sub(name.len() + 1).and_then(|i| p.get(..i)) {
            if !dir.is_empty() {
                ev.insert("file.directory", s(dir));
            }
        }
        if let Some((_, ext)) = name.rsplit_once('.') {
            if !ext.is_empty() && ext.len() <= 8 {
                ev.insert("file.extension", s(&ext.to_ascii_lowercase()));
            }
        }
    }
}

/// Sysmon's `Hashes` (`SHA1=..,MD5=..,SHA256=..,IMPHASH=..`) to `<prefix>.hash.*` / `.pe.imphash`.
fn put_hashes(ev: &mut Event, prefix: &str, v: Option<&str>) {
    for part in v.unwrap_or("").split(',') {
        if let Some((alg, h)) = part.split_once('=') {
            let alg = alg.trim().to_ascii_lowercase();
            let h = h.trim().to_ascii_lowercase();
            if h.is_empty() || h.bytes().all(|b| b == b'0') {
                continue;
            }
            if alg == "imphash" {
                ev.insert(&format!("{prefix}.pe.imphash"), s(&h));
            } else if matches!(
                alg.as_str(),
                "md5" | "sha1" | "sha256" | "sha384" | "sha512"
            ) {
                ev.insert(&format!("{prefix}.hash.{alg}"), s(&h));
            }
        }
    }
}

/// Registry paths as Sysmon writes them (`HKLM\System\...`, `HKU\S-1-...\...`).
fn put_registry(ev: &mut Event, rec: &Record, event_id: i64) {
    let Some(path) = rec.get("TargetObject") else {
        return;
    };
    ev.insert("registry.path", s(path));
    let (hive, key) = path.split_once('\\').unwrap_or((path, ""));
    let hive = match hive.to_ascii_uppercase().as_str() {
        "HKLM" | "HKEY_LOCAL_MACHINE" => "HKLM",
        "HKU" | "HKEY_USERS" => "HKU",
        "HKCU" | "HKEY_CURRENT_USER" => "HKCU",
        "HKCR" | "HKEY_CLASSES_ROOT" => "HKCR",
        "HKCC" | "HKEY_CURRENT_CONFIG" => "HKCC",
        _ => "",
    };
    if !hive.is_empty() {
        ev.insert("registry.hive", s(hive));
        if event_id == 13 {
            if let Some((k, v)) = key.rsplit_once('\\') {
                ev.insert("registry.key", s(k));
                ev.insert("registry.value", s(v));
            }
        } else {
            ev.insert("registry.key", s(key));
        }
    }
    if event_id == 13 {
        if let Some(d) = rec.get("Details") {
            ev.insert("registry.data.strings", strs(&[d]));
            let ty = if d.starts_with("DWORD") {
                "SZ_DWORD"
            } else if d.starts_with("QWORD") {
                "SZ_QWORD"
            } else if d.starts_with("Binary Data") {
                "REG_BINARY"
            } else {
                "REG_SZ"
            };
            ev.insert("registry.data.type", s(ty));
        }
    }
}

/// Windows logon types (Security 4624/4625) by number.
fn logon_type(v: &str) -> Option<&'static str> {
    Some(match v.trim() {
        "0" => "System",
        "2" => "Interactive",
        "3" => "Network",
        "4" => "Batch",
        "5" => "Service",
        "7" => "Unlock",
        "8" => "NetworkCleartext",
        "9" => "NewCredentials",
        "10" => "RemoteInteractive",
        "11" => "CachedInteractive",
        "12" => "CachedRemoteInteractive",
        "13" => "CachedUnlock",
        _ => return None,
    })
}

fn transport(v: &str) -> String {
    match v.trim() {
        "6" => "tcp".into(),
        "17" => "udp".into(),
        "1" => "icmp".into(),
        "58" => "ipv6-icmp".into(),
        other => other.to_ascii_lowercase(),
    }
}

fn map(ev: &mut Event, rec: &Record, event_id: i64, host: Option<&HostName>) {
    let f = fields();
    let provider = rec.provider.as_deref().unwrap_or("").to_ascii_lowercase();
    let channel = rec.channel.as_deref().unwrap_or("").to_ascii_lowercase();
    ev.insert("event.code", s(&event_id.to_string()));
    ev.insert("winlog.event_id", Value::Int(event_id));
    ev.set(f.event_kind, s("event"));
    put(ev, "event.provider", rec.provider.as_deref());
    put(ev, "winlog.provider_name", rec.provider.as_deref());
    put(ev, "winlog.channel", rec.channel.as_deref());
    put(ev, "winlog.computer_name", rec.computer.as_deref());
    if let Some(r) = rec.record_id {
        ev.insert("winlog.record_id", Value::Int(r));
    }
    if let Some(p) = rec.exec_pid {
        ev.insert("winlog.process.pid", Value::Int(p));
    }
    if let Some(t) = rec.exec_tid {
        ev.insert("winlog.process.thread.id", Value::Int(t));
    }
    put(ev, "winlog.user.identifier", rec.user_sid.as_deref());
    put(ev, "winlog.task", rec.task.as_deref());
    put(ev, "winlog.opcode", rec.opcode.as_deref());
    put(ev, "winlog.keywords", rec.keywords.as_deref());
    put(
        ev,
        "log.level",
        rec.level.as_deref().map(str::to_ascii_lowercase).as_deref(),
    );
    put(ev, "message", rec.message.as_deref());
    if let Some(h) = host {
        ev.insert("host.name", s(&h.short));
        ev.insert("host.hostname", s(&h.full));
        put(ev, "host.domain", h.domain.as_deref());
    }
    ev.insert("host.os.type", s("windows"));
    ev.insert("host.os.family", s("windows"));
    for (k, v) in &rec.data {
        ev.insert(&format!("winlog.event_data.{k}"), s(v));
    }
    if let Some(r) = rec.get("RuleName") {
        ev.insert("rule.name", s(r));
    }
    let d = |k: &str| rec.get(k);
    let kind = if provider == "microsoft-windows-sysmon"
        || channel.starts_with("microsoft-windows-sysmon")
    {
        map_sysmon(ev, rec, event_id);
        sysmon_kind(event_id)
    } else if provider == "microsoft-windows-security-auditing" || channel == "security" {
        map_security(ev, rec, event_id);
        security_kind(event_id)
    } else if channel == "system" || provider == "service control manager" {
        if event_id == 7045 {
            put(ev, "service.name", d("ServiceName"));
            put(ev, "service.type", d("ServiceType"));
        }
        system_kind(&provider, event_id)
    } else if provider.contains("powershell") || channel.contains("powershell") {
        put(
            ev,
            "powershell.file.script_block_text",
            d("ScriptBlockText"),
        );
        put(ev, "powershell.file.script_block_id", d("ScriptBlockId"));
        powershell_kind(event_id)
    } else {
        None
    };
    if let Some(kd) = kind {
        ev.set(f.event_category, strs(kd.category));
        ev.set(f.event_type, strs(kd.kind));
        ev.set(f.event_action, s(kd.action));
    }
}

fn map_sysmon(ev: &mut Event, rec: &Record, event_id: i64) {
    let d = |k: &str| rec.get(k);
    match event_id {
        8 | 10 => {
            put_process(
                ev,
                "process",
                d("SourceImage"),
                d("SourceProcessId"),
                d("SourceProcessGuid").or(d("SourceProcessGUID")),
                None,
            );
            put_int(ev, "process.thread.id", d("SourceThreadId"));
            put_user(ev, "user", d("SourceUser"));
            put_user(ev, "user.target", d("TargetUser"));
        }
        _ => {
            put_process(
                ev,
                "process",
                d("Image"),
                d("ProcessId"),
                d("ProcessGuid"),
                d("CommandLine"),
            );
            put_user(ev, "user", d("User"));
        }
    }
    match event_id {
        1 => {
            put_process(
                ev,
                "process.parent",
                d("ParentImage"),
                d("ParentProcessId"),
                d("ParentProcessGuid"),
                d("ParentCommandLine"),
            );
            put_user(ev, "process.parent.user", d("ParentUser"));
            put(ev, "process.working_directory", d("CurrentDirectory"));
            put(ev, "process.pe.original_file_name", d("OriginalFileName"));
            put(ev, "process.pe.description", d("Description"));
            put(ev, "process.pe.product", d("Product"));
            put(ev, "process.pe.company", d("Company"));
            put(ev, "process.pe.file_version", d("FileVersion"));
            put(ev, "winlog.event_data.IntegrityLevel", d("IntegrityLevel"));
            put_hashes(ev, "process", d("Hashes"));
        }
        3 => {
            put_ip(ev, "source.ip", d("SourceIp"));
            put_int(ev, "source.port", d("SourcePort"));
            put(ev, "source.domain", d("SourceHostname"));
            put_ip(ev, "destination.ip", d("DestinationIp"));
            put_int(ev, "destination.port", d("DestinationPort"));
            put(ev, "destination.domain", d("DestinationHostname"));
            if let Some(p) = d("Protocol") {
                ev.insert("network.transport", s(&transport(p)));
            }
            match d("Initiated") {
                Some("true") => ev.insert("network.direction", s("egress")),
                Some("false") => ev.insert("network.direction", s("ingress")),
                _ => {}
            }
            match d("SourceIsIpv6") {
                Some("true") => ev.insert("network.type", s("ipv6")),
                Some("false") => ev.insert("network.type", s("ipv4")),
                _ => {}
            }
        }
        6 | 7 => {
            put_file(ev, d("ImageLoaded"));
            if event_id == 7 {
                put(ev, "dll.path", d("ImageLoaded"));
                put(ev, "dll.name", d("ImageLoaded").map(util::basename));
            }
            put(ev, "file.code_signature.subject_name", d("Signature"));
            put(ev, "file.code_signature.status", d("SignatureStatus"));
            if let Some(sg) = d("Signed") {
                ev.insert(
                    "file.code_signature.signed",
                    Value::Bool(sg.eq_ignore_ascii_case("true")),
                );
            }
            put(ev, "file.pe.original_file_name", d("OriginalFileName"));
            put_hashes(ev, "file", d("Hashes"));
        }
        2 | 11 | 15 | 23 | 26..=29 => put_file(ev, d("TargetFilename")),
        9 => put(ev, "file.path", d("Device")),
        12..=14 => put_registry(ev, rec, event_id),
        17 | 18 => {
            if let Some(p) = d("PipeName") {
                ev.insert("file.name", s(p));
                if !p.starts_with('<') {
                    let name = p.trim_start_matches('\\');
                    ev.insert("file.path", s(&format!(r"\\.\pipe\{name}")));
                }
            }
        }
        22 => {
            put(ev, "dns.question.name", d("QueryName"));
            if let Some(st) = d("QueryStatus") {
                ev.insert(
                    "dns.response_code",
                    s(if st == "0" { "NOERROR" } else { st }),
                );
            }
            if let Some(res) = d("QueryResults") {
                let ips: Vec<Value> = res
                    .split(';')
                    .map(|a| a.trim().trim_start_matches("::ffff:"))
                    .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
                    .map(Value::Ip)
                    .collect();
                if !ips.is_empty() {
                    ev.insert("dns.resolved_ip", Value::Array(ips.into()));
                }
            }
        }
        _ => {}
    }
}

fn map_security(ev: &mut Event, rec: &Record, event_id: i64) {
    let d = |k: &str| rec.get(k);
    let subject = |ev: &mut Event| {
        put(ev, "user.name", d("SubjectUserName"));
        put(ev, "user.domain", d("SubjectDomainName"));
        put(ev, "user.id", d("SubjectUserSid"));
    };
    let target = |ev: &mut Event| {
        put(ev, "user.name", d("TargetUserName"));
        put(ev, "user.domain", d("TargetDomainName"));
        put(ev, "user.id", d("TargetUserSid"));
    };
    match event_id {
        4688 => {
            put_process(
                ev,
                "process",
                d("NewProcessName"),
                d("NewProcessId"),
                None,
                d("CommandLine"),
            );
            put_int(ev, "process.parent.pid", d("ProcessId"));
            if let Some(p) = d("ParentProcessName") {
                ev.insert("process.parent.executable", s(p));
                ev.insert("process.parent.name", s(util::basename(p)));
            }
            subject(ev);
        }
        4689 => {
            put_process(ev, "process", d("ProcessName"), d("ProcessId"), None, None);
            subject(ev);
        }
        4624 | 4625 | 4634 | 4647 | 4648 => {
            target(ev);
            put_ip(ev, "source.ip", d("IpAddress"));
            put_int(ev, "source.port", d("IpPort"));
            put(ev, "source.domain", d("WorkstationName"));
            if let Some(t) = d("LogonType").and_then(logon_type) {
                ev.insert("winlog.logon.type", s(t));
            }
            put(ev, "winlog.logon.id", d("TargetLogonId"));
            if d("ProcessName").is_some() {
                put_process(ev, "process", d("ProcessName"), d("ProcessId"), None, None);
            }
            let outcome = if event_id == 4625 {
                "failure"
            } else {
                "success"
            };
            ev.set(fields().event_outcome, s(outcome));
        }
        4697 => {
            subject(ev);
            put(ev, "service.name", d("ServiceName"));
            put(ev, "service.type", d("ServiceType"));
        }
        5140 | 5145 => {
            subject(ev);
            put_ip(ev, "source.ip", d("IpAddress"));
            put_int(ev, "source.port", d("IpPort"));
            if let Some(t) = d("RelativeTargetName") {
                ev.insert("file.name", s(util::basename(t)));
                ev.insert("file.path", s(t));
            }
            put(ev, "file.directory", d("ShareName"));
        }
        5156 | 5157 => {
            put_ip(ev, "source.ip", d("SourceAddress"));
            put_int(ev, "source.port", d("SourcePort"));
            put_ip(ev, "destination.ip", d("DestAddress"));
            put_int(ev, "destination.port", d("DestPort"));
            if let Some(p) = d("Protocol") {
                ev.insert("network.transport", s(&transport(p)));
            }
            if let Some(a) = d("Application") {
                ev.insert("process.executable", s(a));
                ev.insert("process.name", s(util::basename(a)));
            }
            put_int(ev, "process.pid", d("ProcessID").or(d("ProcessId")));
        }
        4663 | 4656 | 4658 => {
            subject(ev);
            if d("ObjectType") == Some("File") {
                put_file(ev, d("ObjectName"));
            }
            put_process(ev, "process", d("ProcessName"), d("ProcessId"), None, None);
        }
        _ => subject(ev),
    }
}

/// Splits a Windows command line as `CommandLineToArgvW` does: the program name ends at the first
/// white space outside quotes (no escapes in it); in the arguments, quotes group, `\"` is a quote,
/// `2n` backslashes before a quote are `n` backslashes, other backslashes are literal.
pub(crate) fn split_command_line(cmd: &str) -> Vec<String> {
    let mut args = Vec::new();
    let chars: Vec<char> = cmd.chars().collect();
    let mut i = 0;
    // Program name.
    let mut prog = String::new();
    let mut inq = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            inq = !inq;
        } else if !inq && (c == ' ' || c == '\t') {
            break;
        } else {
            prog.push(c);
        }
        i += 1;
    }
    args.push(prog);
    loop {
        while i < chars.len() && (chars[i] == ' ' || chars[i] == '\t') {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        let mut arg = String::new();
        let mut inq = false;
        while i < chars.len() {
            let c = chars[i];
            if c == '\\' {
                let start = i;
                while i < chars.len() && chars[i] == '\\' {
                    i += 1;
                }
                let n = i - start;
                if i < chars.len() && chars[i] == '"' {
                    arg.extend(std::iter::repeat_n('\\', n / 2));
                    if n % 2 == 1 {
                        arg.push('"');
                        i += 1;
                    }
                } else {
                    arg.extend(std::iter::repeat_n('\\', n));
                }
                continue;
            }
            if c == '"' {
                if inq && chars.get(i + 1) == Some(&'"') {
                    arg.push('"');
                    i += 2;
                    continue;
                }
                inq = !inq;
                i += 1;
                continue;
            }
            if !inq && (c == ' ' || c == '\t') {
                break;
            }
            arg.push(c);
            i += 1;
        }
        args.push(arg);
    }
    if args.first().is_some_and(String::is_empty) && args.len() == 1 {
        args.clear();
    }
    args
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::{decode_reader, Format};
    use super::*;

    fn decode(text: &str) -> (Vec<Event>, Vec<DecodeError>) {
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        decode_reader(Format::Windows, "w", text.as_bytes(), &mut |r| match r {
            Ok(e) => ok.push(e),
            Err(e) => bad.push(e),
        });
        (ok, bad)
    }

    fn get<'a>(ev: &'a Event, p: &str) -> Option<&'a str> {
        ev.get_path(p).and_then(Value::as_str)
    }

    const NXLOG_PIPE: &str = r#"{"EventID":17,"SourceName":"Microsoft-Windows-Sysmon","Channel":"Microsoft-Windows-Sysmon/Operational","Hostname":"WORKSTATION5.theshire.local","host":"wec.internal.cloudapp.net","EventTime":"2020-09-18 15:00:21","@timestamp":"2020-09-18T19:00:21.633Z","@version":"1","tags":["mordorDataset"],"UtcTime":"2020-09-18 19:00:21.120","PipeName":"&lt;Anonymous Pipe&gt;","Image":"C:\\Users\\p\\GruntHTTP.exe","ProcessId":"5780","ProcessGuid":"{a}","RuleName":"-","RecordNumber":7}"#;

    #[test]
    fn nxlog_sysmon_pipe() {
        let (ok, bad) = decode(NXLOG_PIPE);
        assert!(bad.is_empty(), "{bad:?}");
        let ev = &ok[0];
        assert_eq!(get(ev, "file.name"), Some("<Anonymous Pipe>"));
        assert_eq!(get(ev, "file.path"), None);
        assert_eq!(get(ev, "host.name"), Some("workstation5"));
        assert_eq!(
            get(ev, "host.hostname"),
            Some("workstation5.theshire.local")
        );
        assert_eq!(get(ev, "host.domain"), Some("theshire.local"));
        assert_eq!(get(ev, "event.code"), Some("17"));
        assert_eq!(get(ev, "event.action"), Some("Pipe Created"));
        assert_eq!(get(ev, "process.name"), Some("GruntHTTP.exe"));
        assert_eq!(ev.get_path("process.pid"), Some(&Value::Int(5780)));
        assert_eq!(get(ev, "@timestamp"), Some("2020-09-18T19:00:21.120Z"));
        assert!(ev.get_path("winlog.event_data.host").is_none());
        assert!(ev.get_path("rule.name").is_none());
    }

    #[test]
    fn local_event_time_is_shifted_by_the_learnt_offset() {
        let sec = r#"{"EventID":4688,"SourceName":"Microsoft-Windows-Security-Auditing","Channel":"Security","Hostname":"WORKSTATION5.theshire.local","EventTime":"2020-09-18 15:00:30","@timestamp":"2020-09-18T19:00:33.000Z","NewProcessName":"C:\\Windows\\System32\\cmd.exe","NewProcessId":"0x1a2c","ProcessId":"0x10","CommandLine":"cmd.exe /c \"a b\" c","SubjectUserName":"pgustavo","SubjectDomainName":"THESHIRE"}"#;
        // Before any Sysmon record: Logstash's arrival time.
        let (ok, _) = decode(sec);
        assert_eq!(get(&ok[0], "@timestamp"), Some("2020-09-18T19:00:33.000Z"));
        // After one: EventTime + 4 h.
        let (ok, bad) = decode(&format!("{NXLOG_PIPE}\n{sec}"));
        assert!(bad.is_empty());
        let ev = &ok[1];
        assert_eq!(get(ev, "@timestamp"), Some("2020-09-18T19:00:30.000Z"));
        assert_eq!(ev.get_path("process.pid"), Some(&Value::Int(0x1a2c)));
        assert_eq!(ev.get_path("process.parent.pid"), Some(&Value::Int(16)));
        assert_eq!(get(ev, "event.action"), Some("created-process"));
        let args: Vec<&str> = match ev.get_path("process.args") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        assert_eq!(args, ["cmd.exe", "/c", "a b", "c"]);
    }

    const XML: &str = r#"<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='Microsoft-Windows-Sysmon' Guid='{5770385f-c22a-43e0-bf4c-06f5698ffbd9}'/><EventID>18</EventID><Version>1</Version><Level>4</Level><Task>18</Task><Opcode>0</Opcode><Keywords>0x8000000000000000</Keywords><TimeCreated SystemTime='2020-09-20T06:57:49.5837000Z'/><EventRecordID>12</EventRecordID><Correlation/><Execution ProcessID='3012' ThreadID='4000'/><Channel>Microsoft-Windows-Sysmon/Operational</Channel><Computer>WORKSTATION6.theshire.local</Computer><Security UserID='S-1-5-18'/></System><EventData><Data Name='RuleName'>-</Data><Data Name='EventType'>ConnectPipe</Data><Data Name='UtcTime'>2020-09-20 06:57:49.583</Data><Data Name='ProcessGuid'>{b}</Data><Data Name='ProcessId'>4</Data><Data Name='PipeName'>\PSEXESVC</Data><Data Name='Image'>C:\Windows\PSEXESVC.exe &amp; co</Data></EventData></Event>"#;

    #[test]
    fn xml_one_line_several_events_and_multi_line() {
        let two = format!("<?xml version='1.0'?><Events>{XML}{XML}</Events>");
        let (ok, bad) = decode(&two);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(ok.len(), 2);
        assert_eq!(get(&ok[0], "file.name"), Some(r"\PSEXESVC"));
        assert_eq!(get(&ok[0], "file.path"), Some(r"\\.\pipe\PSEXESVC"));
        assert_eq!(
            get(&ok[0], "process.executable"),
            Some(r"C:\Windows\PSEXESVC.exe & co")
        );
        assert_eq!(get(&ok[0], "host.name"), Some("workstation6"));
        assert_eq!(get(&ok[0], "@timestamp"), Some("2020-09-20T06:57:49.583Z"));
        assert_eq!(get(&ok[0], "event.original"), Some(XML));
        let multi = XML.replace("><", ">\n  <");
        let (ok, bad) = decode(&format!("{multi}\n{NXLOG_PIPE}\n"));
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(ok.len(), 2);
        assert_eq!(get(&ok[0], "file.name"), Some(r"\PSEXESVC"));
    }

    #[test]
    fn winlogbeat_raw_event_data() {
        let doc = r#"{"@timestamp":"2024-05-01T10:00:01.5Z","winlog":{"event_id":"1","provider_name":"Microsoft-Windows-Sysmon","channel":"Microsoft-Windows-Sysmon/Operational","computer_name":"HOST1","event_data":{"Image":"C:\\Windows\\System32\\cmd.exe","ParentImage":"C:\\Windows\\System32\\services.exe","CommandLine":"cmd.exe /c echo a > \\\\.\\pipe\\a","User":"NT AUTHORITY\\SYSTEM","ProcessId":"42"}}}"#;
        let (ok, bad) = decode(doc);
        assert!(bad.is_empty(), "{bad:?}");
        let ev = &ok[0];
        assert_eq!(get(ev, "process.parent.name"), Some("services.exe"));
        assert_eq!(get(ev, "user.name"), Some("SYSTEM"));
        assert_eq!(get(ev, "host.name"), Some("host1"));
        assert_eq!(get(ev, "event.category").or(None), None); // an array
        assert_eq!(ev.get_path("event.category"), Some(&strs(&["process"])));
    }

    #[test]
    fn rejects_name_the_problem() {
        let (ok, bad) = decode("{\"a\":1}\n<Event><System></Event>\nnot json\n<Event>\n");
        assert!(ok.is_empty());
        assert_eq!(bad.len(), 4, "{bad:?}");
        assert_eq!(bad[0].line, 1);
        assert!(bad[0].message.contains("not a Windows event record"));
        assert!(bad[1].message.contains("invalid XML"), "{}", bad[1].message);
        assert_eq!(bad[2].line, 3);
        assert_eq!(bad[3].line, 4);
        assert!(!bad[3].message.is_empty());
    }

    #[test]
    fn command_lines_split_like_windows() {
        assert_eq!(
            split_command_line(r#""C:\a b\x.exe" /c "q\"r" s\\"t u""#),
            [r"C:\a b\x.exe", "/c", "q\"r", r"s\t u"]
        );
        assert_eq!(
            split_command_line(r"cmd.exe /c echo x > \\.\pipe\x"),
            ["cmd.exe", "/c", "echo", "x", ">", r"\\.\pipe\x"]
        );
        assert!(split_command_line("").is_empty());
    }

    #[test]
    fn unescapes_entities() {
        assert_eq!(
            unescape("&lt;a&gt; &amp;amp; &#65;&#x42; &bogus; &"),
            "<a> &amp; AB &bogus; &"
        );
    }

    proptest::proptest! {
        /// A value survives either shape: XML-escaped in `<Data>`, or a JSON string in an NXLog
        /// record (values with `&` aside: NXLog's escapes are undone there by design).
        #[test]
        fn values_survive_xml_and_json(v in "[ -~\u{e9}\u{4e2d}]{1,40}", id in 1u32..30) {
            proptest::prop_assume!(v.trim() != "-" && !v.trim().is_empty());
            let esc = v.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
            let xml = format!("<Event><System><Provider Name='Microsoft-Windows-Sysmon'/><EventID>{id}</EventID><TimeCreated SystemTime='2024-01-01T00:00:00Z'/><Computer>h</Computer></System><EventData><Data Name='Image'>{esc}</Data></EventData></Event>");
            let (ok, bad) = decode(&xml);
            proptest::prop_assert!(bad.is_empty(), "{:?}", bad);
            proptest::prop_assert_eq!(get(&ok[0], "winlog.event_data.Image"), Some(v.as_str()));
            if !v.contains('&') && !matches!(id, 8 | 10) {
                let json = serde_json::json!({"EventID": id, "SourceName": "Microsoft-Windows-Sysmon", "UtcTime": "2024-01-01 00:00:00", "Image": v}).to_string();
                let (ok, bad) = decode(&json);
                proptest::prop_assert!(bad.is_empty(), "{:?}", bad);
                proptest::prop_assert_eq!(get(&ok[0], "process.executable"), Some(v.as_str()));
            }
        }
    }
}
