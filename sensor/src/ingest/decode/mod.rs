//! Decoders from source formats to [`correlator::Event`] (ECS field names).
//!
//! Every decoder is line oriented: it is fed one record (one line) at a time with its 1-based line
//! number, and emits zero or more events or errors. Stateful decoders (auditd coalesces the records
//! of one event) emit on [`Decoder::finish`] whatever they still hold.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use correlator::{Event, Value};

mod auditd;
mod ecs;
mod eslogger;
mod mobile;
mod osquery;
mod suricata;
mod unifiedlog;
mod util;
mod zeek;

pub use auditd::{syscall_name, AuditdDecoder};

/// A source format that the ingest understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// ECS JSON (Elastic Agent, Winlogbeat, Sysmon shape).
    Ecs,
    /// Raw auditd records (`type=... msg=audit(...): ...`).
    Auditd,
    /// macOS Endpoint Security JSON as `eslogger` prints it.
    Eslogger,
    /// macOS `log stream --style ndjson`.
    Unifiedlog,
    /// osquery result logs (differential and snapshot).
    Osquery,
    /// Zeek JSON logs, or TSV with a `#fields` header.
    Zeek,
    /// Suricata eve.json.
    Suricata,
    /// The product's own MDM log entry JSON (schemas/mdm.schema.json).
    Mdm,
    /// The product's own mobile EDR telemetry JSON (schemas/mobile-edr.schema.json).
    MobileEdr,
}

impl Format {
    /// Every format, in documentation order.
    pub const ALL: [Format; 9] = [
        Format::Ecs,
        Format::Auditd,
        Format::Eslogger,
        Format::Unifiedlog,
        Format::Osquery,
        Format::Zeek,
        Format::Suricata,
        Format::Mdm,
        Format::MobileEdr,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Ecs => "ecs",
            Format::Auditd => "auditd",
            Format::Eslogger => "eslogger",
            Format::Unifiedlog => "unifiedlog",
            Format::Osquery => "osquery",
            Format::Zeek => "zeek",
            Format::Suricata => "suricata",
            Format::Mdm => "mdm",
            Format::MobileEdr => "mobile-edr",
        }
    }

    /// A stable one-byte code, used in the spool's record header.
    pub fn code(self) -> u8 {
        match self {
            Format::Ecs => 1,
            Format::Auditd => 2,
            Format::Eslogger => 3,
            Format::Unifiedlog => 4,
            Format::Osquery => 5,
            Format::Zeek => 6,
            Format::Suricata => 7,
            Format::Mdm => 8,
            Format::MobileEdr => 9,
        }
    }

    pub fn from_code(c: u8) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.code() == c)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown format name.
#[derive(Debug, thiserror::Error)]
#[error("unknown format `{0}` (expected one of: ecs, auditd, eslogger, unifiedlog, osquery, zeek, suricata, mdm, mobile-edr)")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Format, UnknownFormat> {
        match s.to_ascii_lowercase().as_str() {
            "ecs" | "winlogbeat" | "sysmon" => Ok(Format::Ecs),
            "auditd" | "audit" => Ok(Format::Auditd),
            "eslogger" | "endpoint-security" => Ok(Format::Eslogger),
            "unifiedlog" | "unified-log" => Ok(Format::Unifiedlog),
            "osquery" => Ok(Format::Osquery),
            "zeek" => Ok(Format::Zeek),
            "suricata" | "eve" => Ok(Format::Suricata),
            "mdm" => Ok(Format::Mdm),
            "mobile-edr" | "mobile_edr" | "mobileedr" => Ok(Format::MobileEdr),
            _ => Err(UnknownFormat(s.to_string())),
        }
    }
}

/// A record that could not be decoded: its 1-based line number and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct DecodeError {
    pub line: u64,
    pub message: String,
}

impl DecodeError {
    pub fn new(line: u64, message: impl Into<String>) -> DecodeError {
        DecodeError {
            line,
            message: message.into(),
        }
    }
}

/// The sink a decoder emits into.
pub type Sink<'a> = dyn FnMut(Result<Event, DecodeError>) + 'a;

/// A per-format decoder. Feed it lines in order; call [`Decoder::finish`] at the end of input.
pub trait Decoder: Send {
    /// Decodes one line (without its line terminator). Blank lines are ignored by the caller.
    fn line(&mut self, line_no: u64, line: &str, sink: &mut Sink<'_>);
    /// Flushes any state held across lines (auditd groups).
    fn finish(&mut self, _sink: &mut Sink<'_>) {}
    /// True when the decoder holds records not yet emitted.
    fn pending(&self) -> bool {
        false
    }
}

/// A fresh decoder for `format`, stamping events with `agent_id`.
pub fn decoder(format: Format, agent_id: &str) -> Box<dyn Decoder> {
    let ctx = Ctx::new(format, agent_id);
    match format {
        Format::Ecs => Box::new(ecs::EcsDecoder { ctx }),
        Format::Auditd => Box::new(AuditdDecoder::new(ctx)),
        Format::Eslogger => Box::new(eslogger::EsloggerDecoder { ctx }),
        Format::Unifiedlog => Box::new(unifiedlog::UnifiedLogDecoder { ctx }),
        Format::Osquery => Box::new(osquery::OsqueryDecoder { ctx }),
        Format::Zeek => Box::new(zeek::ZeekDecoder::new(ctx)),
        Format::Suricata => Box::new(suricata::SuricataDecoder { ctx }),
        Format::Mdm => Box::new(mobile::MdmDecoder { ctx }),
        Format::MobileEdr => Box::new(mobile::MobileEdrDecoder { ctx }),
    }
}

/// Decodes every line of `reader` in `format` and hands each event, or each rejected record, to `sink`.
/// A line that is not valid UTF-8 is rejected (with its number); reading stops only at end of input
/// or on an I/O error (reported as a [`DecodeError`] on the line where it happened).
pub fn decode_reader<R: std::io::BufRead>(
    format: Format,
    agent_id: &str,
    mut reader: R,
    sink: &mut dyn FnMut(Result<Event, DecodeError>),
) {
    let mut dec = decoder(format, agent_id);
    let mut buf = Vec::with_capacity(4096);
    let mut line_no = 0u64;
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                sink(Err(DecodeError::new(
                    line_no + 1,
                    format!("read error: {e}"),
                )));
                break;
            }
        }
        line_no += 1;
        feed_line(dec.as_mut(), line_no, &buf, sink);
    }
    dec.finish(sink);
}

/// Feeds one raw line (terminator optional) to `dec`: strips `\r\n`, skips blank lines, rejects
/// invalid UTF-8.
pub fn feed_line(dec: &mut dyn Decoder, line_no: u64, raw: &[u8], sink: &mut Sink<'_>) {
    let mut raw = raw;
    while let [rest @ .., b'\n' | b'\r'] = raw {
        raw = rest;
    }
    if raw.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    match std::str::from_utf8(raw) {
        Ok(s) => dec.line(line_no, s, sink),
        Err(e) => sink(Err(DecodeError::new(
            line_no,
            format!("not valid UTF-8 (byte {})", e.valid_up_to()),
        ))),
    }
}

/// What every decoder stamps on its events.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) agent_id: Value,
    pub(crate) module: Value,
}

impl Ctx {
    pub(crate) fn new(format: Format, agent_id: &str) -> Ctx {
        Ctx {
            agent_id: Value::Str(Arc::from(agent_id)),
            module: Value::Str(Arc::from(format.as_str())),
        }
    }

    /// A new event carrying the agent, module, dataset and the original record.
    pub(crate) fn event(&self, dataset: &str, raw: &str) -> Event {
        let f = util::fields();
        let mut ev = Event::new(0);
        let raw: Arc<str> = Arc::from(raw);
        ev.set(f.agent_id, self.agent_id.clone());
        ev.set(f.event_module, self.module.clone());
        ev.set(f.event_dataset, util::s(dataset));
        ev.set(f.event_original, Value::Str(raw.clone()));
        ev.raw = Some(raw);
        ev
    }
}
