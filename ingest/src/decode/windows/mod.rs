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

mod ecs;
mod json;
mod la;
mod security;
mod sysmon;
#[cfg(test)]
mod tests;
mod xml;

use std::collections::HashMap;

use correlator::Event;

use super::util;
use super::{Ctx, DecodeError, Decoder, Sink};

use ecs::map;
use json::parse_json;
use xml::parse_xml;

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

/// The all-zero GUID Sysmon writes for a process it does not know (`ParentProcessGuid` of a process
/// whose parent it never saw, `ProcessGuid` of some early or kernel processes): no identity, so
/// no `entity_id` (mapped, every such process would be one entity).
const NULL_GUID: &str = "{00000000-0000-0000-0000-000000000000}";

impl Record {
    /// A data field's value for the mapping: empty, `-` and the null GUID are no value (the
    /// record's own text stays in `winlog.event_data.*`).
    fn get(&self, name: &str) -> Option<&str> {
        self.data
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty() && *v != "-" && *v != NULL_GUID)
    }
}

/// The farthest a host's clock zone is from UTC (UTC-12 to UTC+14), with a margin.
const MAX_UTC_OFFSET_NS: u64 = 26 * 3600 * 1_000_000_000;

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
        // The local stamp's offset from UTC, when both stamps are there and differ by no more than a
        // time zone can (a record with absurd stamps teaches nothing, and its difference may not
        // even fit in an i64).
        let offset = utc
            .zip(rec.local_time)
            .and_then(|(u, l)| u.checked_sub(l))
            .filter(|d| d.unsigned_abs() <= MAX_UTC_OFFSET_NS);
        if let Some(d) = offset {
            // Whole quarter hours: time zones are, the two stamps' seconds are not.
            #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
            let off = (d as f64 / 1e9 / 900.0).round() as i64 * 900;
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
            .or_else(|| {
                rec.local_time?
                    .checked_add(learnt?.checked_mul(1_000_000_000)?)
            })
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
