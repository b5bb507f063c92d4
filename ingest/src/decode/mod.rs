//! Decoders from source formats to [`correlator::Event`] (ECS field names).
//!
//! Every decoder is line oriented: it is fed one record (one line) at a time with its 1-based line
//! number, and emits zero or more events or errors. Stateful decoders (auditd coalesces the records
//! of one event) emit on [`Decoder::finish`] whatever they still hold.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use correlator::{Event, Field, Value};

mod apple_mdm;
mod auditd;
mod ecs;
mod eslogger;
mod framing;
mod mobile;
mod mtd;
mod osquery;
mod suricata;
mod suricata_app;
mod unifiedlog;
mod util;
mod windows;
mod zeek;
mod zeek_app;
mod zeek_x509;

pub use auditd::{syscall_name, AuditdDecoder};
pub use framing::{split as split_records, Framer, Framing, Span};

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
    /// Windows event log records (Sysmon, Security...) as NXLog, Winlogbeat or event XML ship them.
    Windows,
    /// Apple MDM protocol messages: XML plists, NanoMDM/MicroMDM webhook JSON, DEP device records.
    AppleMdm,
    /// Mobile-threat-defence vendor events (Zimperium, Lookout, Jamf, Intune, Harmony Mobile), vendor recognised per record.
    Mtd,
}

impl Format {
    /// Every format, in documentation order.
    pub const ALL: [Format; 12] = [
        Format::Ecs,
        Format::Auditd,
        Format::Eslogger,
        Format::Unifiedlog,
        Format::Osquery,
        Format::Zeek,
        Format::Suricata,
        Format::Mdm,
        Format::MobileEdr,
        Format::Windows,
        Format::AppleMdm,
        Format::Mtd,
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
            Format::Windows => "windows",
            Format::AppleMdm => "apple-mdm",
            Format::Mtd => "mtd",
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
            Format::Windows => 10,
            Format::AppleMdm => 12,
            Format::Mtd => 13,
        }
    }

    pub fn from_code(c: u8) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.code() == c)
    }

    /// How this format's input divides into records: lines, or XML documents that may span lines
    /// ([`Framing`]). Files, HTTP bodies and fuzz inputs are all divided by it.
    pub fn framing(self) -> Framing {
        match self {
            Format::Ecs
            | Format::Auditd
            | Format::Eslogger
            | Format::Unifiedlog
            | Format::Osquery
            | Format::Zeek
            | Format::Suricata
            | Format::Mdm
            | Format::MobileEdr => Framing::Lines,
            // Rendered event XML (WEF, `wevtutil qe /f:xml` with or without `/e:Events`,
            // `Get-WinEvent ... ToXml()`), beside NXLog/Winlogbeat JSON lines.
            Format::Windows => Framing::Xml {
                end: "</Event>",
                wrappers: &["Events"],
            },
            // Plists span lines; DEP and MTD API responses are often indented JSON.
            Format::AppleMdm => Framing::XmlAndJson {
                end: "</plist>",
                wrappers: &[],
            },
            Format::Mtd => Framing::Json,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown format name.
#[derive(Debug, thiserror::Error)]
#[error("unknown format `{0}` (expected one of: ecs, auditd, eslogger, unifiedlog, osquery, zeek, suricata, mdm, mobile-edr, windows, apple-mdm, mtd)")]
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
            "windows" | "winevent" | "nxlog" | "evtx-xml" => Ok(Format::Windows),
            "apple-mdm" | "apple_mdm" | "applemdm" => Ok(Format::AppleMdm),
            "mtd" => Ok(Format::Mtd),
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

/// A per-format decoder. Feed it records in order; call [`Decoder::finish`] at the end of input.
pub trait Decoder: Send {
    /// Decodes one record (without its line terminator): a line, or for XML-framed formats a whole
    /// document that may span lines ([`Format::framing`]), numbered by the line it starts on.
    /// Blank records are ignored by the caller.
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
        Format::Windows => Box::new(windows::WindowsDecoder::new(ctx)),
        Format::AppleMdm => Box::new(apple_mdm::AppleMdmDecoder { ctx }),
        Format::Mtd => Box::new(mtd::MtdDecoder { ctx }),
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

/// Decodes every record of `reader` in `format` and hands each event, or each rejected record, to
/// `sink`. Records are lines, or documents for XML-framed formats ([`Format::framing`]). A record
/// that is not valid UTF-8 is rejected (with its line number); reading stops only at end of input or
/// on an I/O error (reported as a [`DecodeError`] on the line where it happened).
pub fn decode_reader<R: std::io::BufRead>(
    format: Format,
    agent_id: &str,
    mut reader: R,
    sink: &mut dyn FnMut(Result<Event, DecodeError>),
) {
    let mut dec = decoder(format, agent_id);
    decode_records(dec.as_mut(), format.framing(), &mut reader, sink);
    dec.finish(sink);
}

/// [`decode_reader`] over several inputs in order with one decoder, so that state a format keeps
/// across records (Zeek's x509.log certificates joined to ssl.log sessions) carries from one input to
/// the next. `sink` is given the index of the input each result comes from (the flush at the end is
/// counted to the last input). Line numbers restart at 1 in every input.
pub fn decode_readers(
    format: Format,
    agent_id: &str,
    readers: Vec<Box<dyn std::io::BufRead + '_>>,
    sink: &mut dyn FnMut(usize, Result<Event, DecodeError>),
) {
    let mut dec = decoder(format, agent_id);
    let last = readers.len().saturating_sub(1);
    for (i, mut reader) in readers.into_iter().enumerate() {
        decode_records(dec.as_mut(), format.framing(), &mut reader, &mut |r| {
            sink(i, r)
        });
    }
    dec.finish(&mut |r| sink(last, r));
}

/// The loop of [`decode_reader`], for any decoder and framing (the caller calls [`Decoder::finish`]).
fn decode_records(
    dec: &mut dyn Decoder,
    framing: Framing,
    reader: &mut dyn std::io::BufRead,
    sink: &mut dyn FnMut(Result<Event, DecodeError>),
) {
    let mut buf = Vec::with_capacity(4096);
    let mut line_no = 0u64;
    // XML framing: the bytes from `base` on (every line since the open document began), and the
    // records the framer completes.
    let mut framer = Framer::new(framing);
    let mut window: Vec<u8> = Vec::new();
    let mut base = 0u64;
    let mut offset = 0u64;
    let mut spans = Vec::new();
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
        if framing == Framing::Lines {
            feed_line(dec, line_no, &buf, sink);
            continue;
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        framer.line(line_no, offset, line, &mut spans);
        window.extend_from_slice(&buf);
        offset += buf.len() as u64;
        feed_spans(dec, &window, base, &mut spans, sink);
        // Keep only what the open document still needs.
        let keep_from = framer.open_start().unwrap_or(offset);
        let drop = usize::try_from(keep_from - base).unwrap_or(window.len());
        window.drain(..drop.min(window.len()));
        base = keep_from;
    }
    framer.finish(&mut spans);
    feed_spans(dec, &window, base, &mut spans, sink);
}

/// Feeds the records `spans` names, held in `window` (whose first byte is at input offset `base`).
fn feed_spans(
    dec: &mut dyn Decoder,
    window: &[u8],
    base: u64,
    spans: &mut Vec<Span>,
    sink: &mut Sink<'_>,
) {
    for s in spans.drain(..) {
        let (Ok(a), Ok(b)) = (
            usize::try_from(s.start - base),
            usize::try_from(s.end - base),
        ) else {
            continue;
        };
        if let Some(rec) = window.get(a..b) {
            feed_line(dec, s.line, rec, sink);
        }
    }
}

/// Feeds one raw record (terminator optional) to `dec`: strips `\r\n`, skips blank records, rejects
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

/// True when an ECS event carries neither `event.category` nor `event.kind`: what a record sent as
/// `ecs` looks like when it is not ECS at all (raw Sysmon or NXLog fields such as `EventID`,
/// `Image`), which the `ecs` format accepts as it is but no analytic reads.
pub fn lacks_ecs_category(ev: &Event) -> bool {
    let f = util::fields();
    ev.get(f.event_category).is_none_or(Value::is_null)
        && ev.get(f.event_kind).is_none_or(Value::is_null)
}

/// The warning shown for `n` such records ([`lacks_ecs_category`]), the same in the CLI and the
/// daemon's status.
pub fn uncategorized_warning(n: u64) -> String {
    format!(
        "{n} records carry no ECS event.category; wrong format? (raw Windows event log records, \
         Sysmon or Security as NXLog, Winlogbeat or event XML ship them, go in as `windows`)"
    )
}

/// Hands a record's events to `sink`, or its one rejection (named by the line it starts on), for
/// decoders that turn one record into several events or none.
pub(crate) fn emit_all(line_no: u64, decoded: Result<Vec<Event>, String>, sink: &mut Sink<'_>) {
    match decoded {
        Ok(evs) => evs.into_iter().for_each(|ev| sink(Ok(ev))),
        Err(m) => sink(Err(DecodeError::new(line_no, m))),
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

/// What the decoders' unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    use super::{decode_reader, DecodeError, Event, Format};

    /// The events and the rejections of `text` decoded as `format`, in order.
    pub(crate) fn decode_all(format: Format, text: &str) -> (Vec<Event>, Vec<DecodeError>) {
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        decode_reader(format, "t", text.as_bytes(), &mut |r| match r {
            Ok(e) => ok.push(e),
            Err(e) => bad.push(e),
        });
        (ok, bad)
    }

    /// The string at `path`, if it is one.
    pub(crate) fn text<'a>(ev: &'a Event, path: &str) -> Option<&'a str> {
        ev.get_path(path).and_then(correlator::Value::as_str)
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

    /// An auditd event with a CONTAINER_ID record names its container; one without names none.
    #[test]
    fn auditd_container_id_record() {
        let mut evs = Vec::new();
        let data = "type=SYSCALL msg=audit(1.5:7): arch=c000003e syscall=133 a0=1 exe=\"/usr/bin/mkfifo\" comm=\"mkfifo\"\ntype=CONTAINER_ID msg=audit(1.5:7): contid=4242\ntype=EOE msg=audit(1.5:7):\ntype=SYSCALL msg=audit(1.6:8): arch=c000003e syscall=133 a0=1 exe=\"/usr/bin/mkfifo\"\ntype=EOE msg=audit(1.6:8):\n";
        decode_reader(Format::Auditd, "t", data.as_bytes(), &mut |r| {
            evs.push(r.unwrap())
        });
        assert_eq!(evs.len(), 2);
        assert_eq!(
            evs[0]
                .get_path("container.id")
                .and_then(correlator::Value::as_str),
            Some("4242")
        );
        assert!(evs[1].get_path("container.id").is_none());
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
            (Format::Windows, "{\"EventID\":1,\"SourceName\":\"Microsoft-Windows-Sysmon\",\"Hostname\":\"H.corp\",\"UtcTime\":\"2020-01-01 00:00:00.1\",\"Image\":\"C:\\\\a.exe\",\"CommandLine\":\"a \\\"b c\\\"\"}\n<Event xmlns='x'><System><Provider Name='Microsoft-Windows-Sysmon'/><EventID>17</EventID><TimeCreated SystemTime='2020-01-01T00:00:00Z'/><Computer>H</Computer></System>\n<EventData><Data Name='PipeName'>\\\\p&amp;</Data></EventData></Event>"),
            (Format::AppleMdm, "<?xml version=\"1.0\"?>\n<plist version=\"1.0\">\n<dict>\n<key>CommandUUID</key><string>c</string>\n<key>ProfileList</key><array><dict><key>IsManaged</key><false/><key>PayloadIdentifier</key><string>p</string><key>PayloadContent</key><array><dict><key>PayloadType</key><string>com.apple.security.root</string></dict></array></dict></array>\n<key>Status</key><string>Acknowledged</string><key>UDID</key><string>U</string>\n</dict>\n</plist>\n{\"topic\":\"mdm.Authenticate\",\"checkin_event\":{\"udid\":\"U\",\"raw_payload\":\"PHBsaXN0PjxkaWN0PjxrZXk+TWVzc2FnZVR5cGU8L2tleT48c3RyaW5nPkNoZWNrT3V0PC9zdHJpbmc+PGtleT5VRElEPC9rZXk+PHN0cmluZz5VPC9zdHJpbmc+PC9kaWN0PjwvcGxpc3Q+\"}}\n{\n  \"devices\": [{\"serial_number\": \"C02\", \"os\": \"OSX\"}]\n}"),
            (Format::Mtd, "{\n \"content\": [{\"threatTypeName\":\"SYSTEM TAMPERING\",\"timestamp\":1702393165000,\"severity\":3,\"device\":{\"zdeviceId\":\"59\",\"os\":{\"name\":\"ANDROID\"}}}]\n}\n{\"events\":[{\"id\":\"2\",\"created_time\":\"2025-03-24T11:13:28.375+00:00\",\"type\":\"THREAT\",\"change_type\":\"CREATED\",\"threat\":{\"severity\":\"LOW\",\"classifications\":[\"X\"]},\"actor\":{\"guid\":\"g\",\"type\":\"DEVICE\"}}]}\n{\"event\":{\"metadata\":{\"vendor\":\"Jamf\"},\"timestamp\":\"2024-01-10T12:20:37.059Z\",\"alertId\":\"a\",\"eventType\":{\"name\":\"ACCESS_BAD_HOST\"},\"device\":{\"deviceId\":\"d\"},\"severity\":8}}"),
        ]
    }

    /// A decoder that records what it is fed.
    struct Recorder(Vec<(u64, String)>);
    impl Decoder for Recorder {
        fn line(&mut self, line_no: u64, line: &str, _sink: &mut Sink<'_>) {
            self.0.push((line_no, line.to_string()));
        }
    }

    #[test]
    fn reader_feeds_xml_documents_whole() {
        let framing = Framing::Xml {
            end: "</Event>",
            wrappers: &["Events"],
        };
        let input =
            "<Events>\r\n<Event>\r\n a\r\n</Event><Event>b</Event>\n{\"j\":1}\n<Event>\nopen";
        let mut rec = Recorder(Vec::new());
        // A tiny buffer: documents must be kept whole across the reader's refills.
        let mut reader = std::io::BufReader::with_capacity(3, input.as_bytes());
        decode_records(&mut rec, framing, &mut reader, &mut |_| {});
        assert_eq!(
            rec.0,
            vec![
                (2, "<Event>\r\n a\r\n</Event>".to_string()),
                (4, "<Event>b</Event>".to_string()),
                (5, "{\"j\":1}".to_string()),
                (6, "<Event>\nopen".to_string()),
            ]
        );
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
        fn never_panics_on_mutations(which in 0usize..12, edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8), cut in any::<usize>()) {
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
        fn never_panics_on_bytes(which in 0usize..12, data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = run(Format::ALL[which], &data);
        }
    }
}
