//! `zeek`: Zeek logs, JSON (one object per line, `_path` naming the log when present) or TSV with
//! the `#separator`/`#fields`/`#types` header. conn and ssl logs are mapped to ECS; other logs are
//! kept under `zeek.<path>.*`. The mapping is in docs/formats/zeek.md.

use std::sync::Arc;

use correlator::{Event, Value};
use serde_json::Map;

use super::util::{self, fields, s, strs};
use super::zeek_x509::X509Join;
use super::{Ctx, DecodeError, Decoder, Sink};

/// Longest header line (`#fields ...`) kept; a real `#fields` line is a few KiB at most.
const MAX_HEADER_LINE_BYTES: usize = 64 << 10;

pub(crate) struct ZeekDecoder {
    ctx: Ctx,
    tsv: Option<Tsv>,
    /// The header lines of the current TSV log, as received (one per directive, the latest).
    header_lines: Vec<String>,
    /// x509.log certificates joined to ssl.log sessions (Zeek 4+ keeps the issuer in x509.log).
    x509: X509Join,
}

struct Tsv {
    separator: String,
    set_separator: String,
    empty: String,
    unset: String,
    path: Option<String>,
    fields: Vec<String>,
    types: Vec<String>,
}

impl Default for Tsv {
    fn default() -> Tsv {
        Tsv {
            separator: "\t".into(),
            set_separator: ",".into(),
            empty: "(empty)".into(),
            unset: "-".into(),
            path: None,
            fields: Vec::new(),
            types: Vec::new(),
        }
    }
}

impl ZeekDecoder {
    pub(crate) fn new(ctx: Ctx) -> ZeekDecoder {
        ZeekDecoder {
            ctx,
            tsv: None,
            header_lines: Vec::new(),
            x509: X509Join::default(),
        }
    }

    fn header(&mut self, line: &str) {
        let tsv = self.tsv.get_or_insert_with(Tsv::default);
        if let Some(sep) = line.strip_prefix("#separator ") {
            // A new log starts with its separator: the old header no longer applies.
            tsv.separator = unescape(sep.trim());
            self.header_lines.clear();
            self.header_lines.push(line.to_string());
            return;
        }
        let sep = tsv.separator.clone();
        let mut parts = line.splitn(2, sep.as_str());
        let key = parts.next().unwrap_or("");
        let rest = parts.next().unwrap_or("");
        if matches!(
            key,
            "#set_separator" | "#empty_field" | "#unset_field" | "#path" | "#fields" | "#types"
        ) {
            self.header_lines
                .retain(|l| l.split(sep.as_str()).next() != Some(key));
            self.header_lines.push(line.to_string());
        }
        match key {
            "#set_separator" => tsv.set_separator = rest.to_string(),
            "#empty_field" => tsv.empty = rest.to_string(),
            "#unset_field" => tsv.unset = rest.to_string(),
            "#path" => tsv.path = Some(rest.to_string()),
            "#fields" => tsv.fields = rest.split(sep.as_str()).map(str::to_string).collect(),
            "#types" => tsv.types = rest.split(sep.as_str()).map(str::to_string).collect(),
            _ => {}
        }
    }

    fn tsv_row(
        &self,
        line: &str,
    ) -> Result<(Map<String, serde_json::Value>, Option<String>), String> {
        let Some(tsv) = self.tsv.as_ref().filter(|t| !t.fields.is_empty()) else {
            return Err("a TSV row before any `#fields` header (and not JSON)".into());
        };
        let values: Vec<&str> = line.split(tsv.separator.as_str()).collect();
        if values.len() != tsv.fields.len() {
            return Err(format!(
                "{} columns where `#fields` names {}",
                values.len(),
                tsv.fields.len()
            ));
        }
        let mut m = Map::new();
        for (i, (name, v)) in tsv.fields.iter().zip(values).enumerate() {
            if v == tsv.unset {
                continue;
            }
            let ty = tsv.types.get(i).map_or("string", String::as_str);
            let jv = if v == tsv.empty {
                if ty.starts_with("set[") || ty.starts_with("vector[") {
                    serde_json::Value::Array(Vec::new())
                } else {
                    serde_json::Value::String(String::new())
                }
            } else if ty.starts_with("set[") || ty.starts_with("vector[") {
                serde_json::Value::Array(
                    v.split(tsv.set_separator.as_str())
                        .map(|x| serde_json::Value::String(x.to_string()))
                        .collect(),
                )
            } else {
                match ty {
                    "count" | "port" | "int" => v.parse::<i64>().map_or_else(
                        |_| serde_json::Value::String(v.to_string()),
                        serde_json::Value::from,
                    ),
                    "time" | "interval" | "double" => v
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map_or_else(
                            || serde_json::Value::String(v.to_string()),
                            serde_json::Value::Number,
                        ),
                    "bool" => serde_json::Value::Bool(v == "T"),
                    _ => serde_json::Value::String(v.to_string()),
                }
            };
            m.insert(name.clone(), jv);
        }
        Ok((m, tsv.path.clone()))
    }
}

fn unescape(s: &str) -> String {
    if let Some(h) = s.strip_prefix("\\x") {
        if let Ok(b) = u8::from_str_radix(h, 16) {
            return (b as char).to_string();
        }
    }
    s.to_string()
}

impl Decoder for ZeekDecoder {
    fn context(&self) -> Vec<String> {
        self.header_lines.clone()
    }

    fn line(&mut self, line_no: u64, line: &str, sink: &mut Sink<'_>) {
        if line.starts_with('#') {
            // Header lines are kept per agent (here and as the agent's context, see
            // `Decoder::context`): bounded, at most one per directive and this long each.
            if line.len() > MAX_HEADER_LINE_BYTES {
                return sink(Err(DecodeError::new(
                    line_no,
                    format!(
                        "Zeek header line of {} bytes is longer than the {MAX_HEADER_LINE_BYTES} bytes a header may have",
                        line.len()
                    ),
                )));
            }
            self.header(line);
            return;
        }
        let (map, path) = if line.trim_start().starts_with('{') {
            match util::parse_object(line) {
                Ok(m) => match m
                    .get("result")
                    .and_then(|r| r.get("_raw"))
                    .and_then(serde_json::Value::as_str)
                {
                    // A Splunk export wrapper around a Zeek JSON record.
                    Some(raw) => match util::parse_object(raw) {
                        Ok(inner) => (inner, None),
                        Err(e) => {
                            return sink(Err(DecodeError::new(
                                line_no,
                                format!("in `result._raw`: {e}"),
                            )))
                        }
                    },
                    None => (m, None),
                },
                Err(e) => return sink(Err(DecodeError::new(line_no, e))),
            }
        } else {
            match self.tsv_row(line) {
                Ok(r) => r,
                Err(e) => return sink(Err(DecodeError::new(line_no, e))),
            }
        };
        let doc = serde_json::Value::Object(map);
        match decode(&self.ctx, line, &doc, path) {
            Ok((mut ev, path)) => {
                let joined = match path.as_str() {
                    "ssl" => {
                        self.x509.ssl(&doc, &mut ev);
                        Vec::new()
                    }
                    "x509" => self.x509.x509(&doc, &mut ev),
                    _ => Vec::new(),
                };
                sink(Ok(ev));
                for j in joined {
                    sink(Ok(j));
                }
            }
            Err(m) => sink(Err(DecodeError::new(line_no, m))),
        }
    }
}

fn guess_path(doc: &serde_json::Value) -> &'static str {
    let has = |k: &str| doc.get(k).is_some();
    if has("conn_state") || (has("proto") && has("history")) || has("orig_bytes") {
        "conn"
    } else if has("cipher")
        || has("server_name")
        || has("ssl_history")
        || (has("version") && has("established"))
    {
        "ssl"
    } else if has("certificate.issuer") || has("certificate.serial") {
        "x509"
    } else if has("query") && has("qtype_name") {
        "dns"
    } else if has("method") && has("host") && has("uri") {
        "http"
    } else {
        "unknown"
    }
}

fn tls_version(v: &str) -> Option<(&'static str, String)> {
    let rest = v
        .strip_prefix("TLSv")
        .map(|r| ("tls", r))
        .or_else(|| v.strip_prefix("SSLv").map(|r| ("ssl", r)))?;
    let digits = rest.1;
    let ver = match digits {
        "10" => "1.0".to_string(),
        "11" => "1.1".to_string(),
        "12" => "1.2".to_string(),
        "13" => "1.3".to_string(),
        d if d.len() == 1 => format!("{d}.0"),
        d => d.to_string(),
    };
    Some((rest.0, ver))
}

// Over 100 lines on purpose: the conn and ssl mapping tables of docs/formats/zeek.md, kept as one table.
fn decode(
    ctx: &Ctx,
    line: &str,
    doc: &serde_json::Value,
    path: Option<String>,
) -> Result<(Event, String), String> {
    let path = doc
        .get("_path")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .or(path)
        .unwrap_or_else(|| guess_path(doc).to_string());
    let ts = doc.get("ts").ok_or("missing `ts`")?;
    let ts = util::epoch_secs_ns(ts).ok_or_else(|| format!("bad `ts` {ts}"))?;
    let dataset = match path.as_str() {
        "conn" => "zeek.connection".to_string(),
        p => format!("zeek.{p}"),
    };
    let f = fields();
    let mut ev = ctx.event(&dataset, line);
    util::set_time(&mut ev, ts);
    ev.set(f.event_kind, s("event"));
    util::copy(&mut ev, doc, "uid", "zeek.session_id");
    util::copy(&mut ev, doc, "uid", "event.id");
    let flat = |k: &str| doc.get(k).or_else(|| util::get(doc, k));
    if let Some(v) = flat("id.orig_h").and_then(serde_json::Value::as_str) {
        ev.insert("source.address", s(v));
        ev.insert("source.ip", v.parse().map_or_else(|_| s(v), Value::Ip));
    }
    if let Some(v) = flat("id.orig_p").and_then(util::as_int) {
        ev.insert("source.port", Value::Int(v));
    }
    if let Some(v) = flat("id.resp_h").and_then(serde_json::Value::as_str) {
        ev.insert("destination.address", s(v));
        ev.insert("destination.ip", v.parse().map_or_else(|_| s(v), Value::Ip));
    }
    if let Some(v) = flat("id.resp_p").and_then(util::as_int) {
        ev.insert("destination.port", Value::Int(v));
    }
    match path.as_str() {
        "conn" => {
            util::copy(&mut ev, doc, "proto", "network.transport");
            util::copy(&mut ev, doc, "service", "network.protocol");
            if let Some(d) = doc.get("duration").and_then(serde_json::Value::as_f64) {
                #[allow(clippy::cast_possible_truncation)]
                ev.insert("event.duration", Value::Int((d * 1e9) as i64));
            }
            util::copy_int(&mut ev, doc, "orig_bytes", "source.bytes");
            util::copy_int(&mut ev, doc, "resp_bytes", "destination.bytes");
            util::copy_int(&mut ev, doc, "orig_pkts", "source.packets");
            util::copy_int(&mut ev, doc, "resp_pkts", "destination.packets");
            let ob = doc.get("orig_bytes").and_then(util::as_int);
            let rb = doc.get("resp_bytes").and_then(util::as_int);
            if let (Some(a), Some(b)) = (ob, rb) {
                ev.insert("network.bytes", Value::Int(a.saturating_add(b)));
            }
            let op = doc.get("orig_pkts").and_then(util::as_int);
            let rp = doc.get("resp_pkts").and_then(util::as_int);
            if let (Some(a), Some(b)) = (op, rp) {
                ev.insert("network.packets", Value::Int(a.saturating_add(b)));
            }
            util::copy(&mut ev, doc, "conn_state", "zeek.connection.state");
            util::copy(&mut ev, doc, "history", "zeek.connection.history");
            util::copy(&mut ev, doc, "local_orig", "zeek.connection.local_orig");
            util::copy(&mut ev, doc, "local_resp", "zeek.connection.local_resp");
            util::copy(&mut ev, doc, "missed_bytes", "zeek.connection.missed_bytes");
            util::copy(&mut ev, doc, "label", "zeek.connection.label");
            util::copy(
                &mut ev,
                doc,
                "detailedlabel",
                "zeek.connection.detailed_label",
            );
            ev.set(f.event_category, strs(&["network"]));
            ev.set(f.event_type, strs(&["connection"]));
            ev.set(f.event_action, s("connection"));
        }
        "ssl" => {
            if let Some(v) = doc.get("version").and_then(serde_json::Value::as_str) {
                if let Some((proto, ver)) = tls_version(v) {
                    ev.insert("tls.version_protocol", s(proto));
                    ev.insert("tls.version", s(&ver));
                }
                ev.insert("zeek.ssl.version", s(v));
            }
            util::copy(&mut ev, doc, "cipher", "tls.cipher");
            util::copy(&mut ev, doc, "curve", "tls.curve");
            util::copy(&mut ev, doc, "server_name", "tls.client.server_name");
            util::copy(&mut ev, doc, "server_name", "destination.domain");
            util::copy(&mut ev, doc, "resumed", "tls.resumed");
            util::copy(&mut ev, doc, "established", "tls.established");
            util::copy(&mut ev, doc, "next_protocol", "tls.next_protocol");
            util::copy(&mut ev, doc, "ja3", "tls.client.ja3");
            util::copy(&mut ev, doc, "ja3s", "tls.server.ja3s");
            util::copy(&mut ev, doc, "subject", "tls.server.subject");
            util::copy(&mut ev, doc, "issuer", "tls.server.issuer");
            util::copy(&mut ev, doc, "client_subject", "tls.client.subject");
            util::copy(&mut ev, doc, "client_issuer", "tls.client.issuer");
            util::copy(
                &mut ev,
                doc,
                "validation_status",
                "zeek.ssl.validation_status",
            );
            util::copy(&mut ev, doc, "ssl_history", "zeek.ssl.history");
            util::copy(
                &mut ev,
                doc,
                "sni_matches_cert",
                "zeek.ssl.sni_matches_cert",
            );
            util::copy(&mut ev, doc, "last_alert", "zeek.ssl.last_alert");
            util::copy(
                &mut ev,
                doc,
                "cert_chain_fuids",
                "zeek.ssl.cert_chain_fuids",
            );
            util::copy(&mut ev, doc, "cert_chain_fps", "zeek.ssl.cert_chain_fps");
            util::copy(&mut ev, doc, "label", "zeek.ssl.label");
            ev.insert("network.protocol", s("tls"));
            ev.set(f.event_category, strs(&["network"]));
            ev.set(f.event_type, strs(&["connection", "protocol"]));
            ev.set(f.event_action, s("tls"));
            let established = doc.get("established").and_then(serde_json::Value::as_bool);
            if let Some(e) = established {
                ev.set(f.event_outcome, s(if e { "success" } else { "failure" }));
            }
        }
        other => {
            if let serde_json::Value::Object(m) = doc {
                for (k, v) in m {
                    if let Some(v) = util::scalar(v) {
                        ev.insert(&format!("zeek.{other}.{k}"), v);
                    }
                }
            }
            ev.set(f.event_category, Value::Array(Arc::from([s("network")])));
            match other {
                "dns" => super::zeek_app::dns(&mut ev, doc),
                "http" => super::zeek_app::http(&mut ev, doc),
                _ => {}
            }
        }
    }
    Ok((ev, path))
}
