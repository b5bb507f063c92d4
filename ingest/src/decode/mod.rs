//! Decoders from source formats to [`correlator::Event`] (ECS field names).
//!
//! Every decoder is line oriented: it is fed one record (one line) at a time with its 1-based line
//! number, and emits zero or more events or errors. Stateful decoders (auditd coalesces the records
//! of one event) emit on [`Decoder::finish`] whatever they still hold.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use correlator::{Event, Field, Value};

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
    /// The header lines this decoder's later lines depend on (Zeek TSV: `#separator`, `#fields`,
    /// `#types`, ...), in order: fed to a fresh decoder they put it in the same state for the lines
    /// that follow. Empty for formats whose lines stand alone. A consumer that resumes after a
    /// restart, past the header, restores the decoder from these.
    fn context(&self) -> Vec<String> {
        Vec::new()
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

/// A fresh decoder put in the state its header lines describe ([`Decoder::context`]).
pub fn decoder_with_context(
    format: Format,
    agent_id: &str,
    context: &[String],
) -> Box<dyn Decoder> {
    let mut dec = decoder(format, agent_id);
    for l in context {
        // Header lines emit nothing.
        dec.line(0, l, &mut |_| {});
    }
    dec
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

/// Judges one raw line (terminator optional, not blank) as [`feed_line`] and the format's decoder
/// would, without building an event, for the formats that have such a check (ECS: the JSON is
/// scanned, not built). The same verdict and the same reject message as decoding; `None` for the
/// other formats, whose lines must be fed to a decoder.
pub fn validate_line(format: Format, raw: &[u8]) -> Option<Result<(), String>> {
    if format != Format::Ecs {
        return None;
    }
    let mut raw = raw;
    while let [rest @ .., b'\n' | b'\r'] = raw {
        raw = rest;
    }
    Some(match std::str::from_utf8(raw) {
        Ok(s) => ecs::validate(s),
        Err(e) => Err(format!("not valid UTF-8 (byte {})", e.valid_up_to())),
    })
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
            agent_id: Value::Str(agent_id.into()),
            module: Value::Str(format.as_str().into()),
        }
    }

    /// A new event carrying the agent, module, dataset and the original record.
    pub(crate) fn event(&self, dataset: &str, raw: &str) -> Event {
        let (fields, raw) = self.base_fields(dataset, raw);
        let mut ev = Event::from_fields(0, fields);
        ev.raw = Some(raw);
        ev
    }

    /// The fields of [`Ctx::event`] (unsorted) and the shared original record, for decoders that
    /// collect an event's fields before building it.
    pub(crate) fn base_fields(&self, dataset: &str, raw: &str) -> (Vec<(Field, Value)>, Arc<str>) {
        let f = util::fields();
        let raw: Arc<str> = Arc::from(raw);
        let mut fields = Vec::with_capacity(64);
        fields.push((f.agent_id, self.agent_id.clone()));
        fields.push((f.event_module, self.module.clone()));
        fields.push((f.event_dataset, util::s(dataset)));
        fields.push((f.event_original, Value::Str((&raw).into())));
        (fields, raw)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn run(format: Format, data: &[u8]) -> (usize, Vec<DecodeError>) {
        let mut ok = 0;
        let mut bad = Vec::new();
        decode_reader(format, "t", data, &mut |r| match r {
            Ok(_) => ok += 1,
            Err(e) => bad.push(e),
        });
        (ok, bad)
    }

    /// Lines that look like each format, with bytes mutated: the decoders never panic and every
    /// reject names a line within the input.
    fn seeds() -> Vec<(Format, &'static str)> {
        vec![
            (Format::Ecs, r#"{"@timestamp":"2024-01-01T00:00:00Z","winlog":{"event_id":1,"event_data":{"Image":"C:\\a.exe","User":"D\\u"}}}"#),
            (Format::Auditd, "type=SYSCALL msg=audit(1.5:7): arch=c000003e syscall=42 a0=1 exe=2F62696E comm=\"x\"\ntype=SOCKADDR msg=audit(1.5:7): saddr=01002F746D702F73\ntype=EXECVE msg=audit(1.5:7): argc=2 a0=\"a\" a1_len=4 a1[0]=6162 a1[1]=6364\ntype=EOE msg=audit(1.5:7):"),
            (Format::Eslogger, r#"{"time":"2024-01-01T00:00:00Z","event_type":9,"event":{"exec":{"target":{"audit_token":{"pid":5},"executable":{"path":"/bin/sh"}},"args":["sh"]}},"process":{"audit_token":{"pid":4,"pidversion":1},"signing_id":"x","codesigning_flags":1}}"#),
            (Format::Unifiedlog, r#"{"timestamp":"2024-01-01 00:00:00.000000-0700","eventMessage":"m","subsystem":"com.apple.xpc","processID":1}"#),
            (Format::Osquery, r#"{"name":"q","unixTime":1,"snapshot":[{"pid":"1","path":"/x","cmdline":"x"}],"action":"snapshot"}"#),
            (Format::Zeek, "#separator \\x09\n#fields\tts\tid.orig_h\tproto\n#types\ttime\taddr\tenum\n1.0\t1.2.3.4\ttcp"),
            (Format::Suricata, r#"{"timestamp":"2024-01-01T00:00:00.000000+0000","event_type":"tls","src_ip":"1.2.3.4","tls":{"sni":"a","version":"TLS 1.2"}}"#),
            (Format::Mdm, r#"{"timestamp":"2024-01-01T00:00:00Z","device":{"id":"d","platform":"ios"},"kind":"policy_state","policy":{"state":"compliant"}}"#),
            (Format::MobileEdr, r#"{"timestamp":"2024-01-01T00:00:00Z","device":{"id":"d"},"kind":"tls","tls":{"outcome":"rejected","failure_reason":"certificate_pinning"}}"#),
        ]
    }

    #[test]
    fn seeds_decode() {
        for (f, s) in seeds() {
            let (ok, bad) = run(f, s.as_bytes());
            assert!(
                ok >= 1 && bad.is_empty(),
                "{f}: {ok} events, rejects {bad:?}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn never_panics_on_mutations(which in 0usize..9, edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8), cut in any::<usize>()) {
            let (f, s) = seeds()[which];
            let mut data = s.as_bytes().to_vec();
            for (pos, b) in edits {
                let i = pos % data.len();
                data[i] = b;
            }
            data.truncate(cut % (data.len() + 1));
            let lines = data.split(|&b| b == b'\n').count() as u64;
            let (_, bad) = run(f, &data);
            for e in bad {
                prop_assert!(e.line >= 1 && e.line <= lines && !e.message.is_empty());
            }
        }

        #[test]
        fn never_panics_on_bytes(which in 0usize..9, data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = run(Format::ALL[which], &data);
        }
    }
}
