//! `suricata`: Suricata eve.json records. `flow` and `tls` (and `alert`) map to ECS; other event
//! types are kept under `suricata.eve.<type>.*`. The mapping is in docs/formats/suricata.md.

use correlator::{Event, Value};

use super::unifiedlog::parse_log_time;
use super::util::{self, fields, s, strs};
use super::{Ctx, DecodeError, Decoder, Sink};

pub(crate) struct SuricataDecoder {
    pub(crate) ctx: Ctx,
}

impl Decoder for SuricataDecoder {
    fn line(&mut self, line_no: u64, line: &str, sink: &mut Sink<'_>) {
        sink(decode(&self.ctx, line).map_err(|m| DecodeError::new(line_no, m)));
    }
}

// Over 100 lines on purpose: the eve.json mapping table of docs/formats/suricata.md, kept as one table.
fn decode(ctx: &Ctx, line: &str) -> Result<Event, String> {
    let doc = serde_json::Value::Object(util::parse_object(line)?);
    let etype =
        util::get_str(&doc, "event_type").ok_or("missing `event_type`: not an eve.json record")?;
    let ts = util::get_str(&doc, "timestamp").ok_or("missing `timestamp`")?;
    let ts = parse_log_time(ts).ok_or_else(|| format!("bad `timestamp` `{ts}`"))?;
    let f = fields();
    let mut ev = ctx.event(&format!("suricata.{etype}"), line);
    util::set_time(&mut ev, ts);
    ev.set(
        f.event_kind,
        s(if etype == "alert" { "alert" } else { "event" }),
    );
    ev.set(f.event_action, s(etype));
    util::copy_ip(&mut ev, &doc, "src_ip", "source.ip");
    util::copy_int(&mut ev, &doc, "src_port", "source.port");
    util::copy_ip(&mut ev, &doc, "dest_ip", "destination.ip");
    util::copy_int(&mut ev, &doc, "dest_port", "destination.port");
    util::copy(&mut ev, &doc, "src_ip", "source.address");
    util::copy(&mut ev, &doc, "dest_ip", "destination.address");
    if let Some(p) = util::get_str(&doc, "proto") {
        ev.insert("network.transport", s(&p.to_ascii_lowercase()));
    }
    if let Some(p) = util::get_str(&doc, "app_proto") {
        ev.insert("network.protocol", s(&p.to_ascii_lowercase()));
    }
    util::copy(&mut ev, &doc, "flow_id", "suricata.eve.flow_id");
    util::copy(&mut ev, &doc, "in_iface", "observer.ingress.interface.name");
    util::copy(&mut ev, &doc, "community_id", "network.community_id");
    match etype {
        "flow" => {
            let flow = doc
                .get("flow")
                .ok_or("`flow` record without a `flow` object")?;
            util::copy_int(&mut ev, flow, "bytes_toserver", "source.bytes");
            util::copy_int(&mut ev, flow, "bytes_toclient", "destination.bytes");
            util::copy_int(&mut ev, flow, "pkts_toserver", "source.packets");
            util::copy_int(&mut ev, flow, "pkts_toclient", "destination.packets");
            let b = (
                flow.get("bytes_toserver").and_then(util::as_int),
                flow.get("bytes_toclient").and_then(util::as_int),
            );
            if let (Some(a), Some(c)) = b {
                ev.insert("network.bytes", Value::Int(a.saturating_add(c)));
            }
            let start = util::get_str(flow, "start").and_then(parse_log_time);
            let end = util::get_str(flow, "end").and_then(parse_log_time);
            if let Some(st) = start {
                ev.insert("event.start", s(&util::format_rfc3339(st)));
            }
            if let Some(en) = end {
                ev.insert("event.end", s(&util::format_rfc3339(en)));
            }
            if let (Some(st), Some(en)) = (start, end) {
                ev.insert("event.duration", Value::Int(en.saturating_sub(st)));
            }
            util::copy(&mut ev, flow, "state", "suricata.eve.flow.state");
            util::copy(&mut ev, flow, "reason", "suricata.eve.flow.reason");
            util::copy(&mut ev, flow, "alerted", "suricata.eve.flow.alerted");
            util::copy_int(&mut ev, flow, "age", "suricata.eve.flow.age");
            ev.set(f.event_category, strs(&["network"]));
            ev.set(f.event_type, strs(&["connection"]));
        }
        "tls" => {
            let tls = doc
                .get("tls")
                .ok_or("`tls` record without a `tls` object")?;
            util::copy(&mut ev, tls, "sni", "tls.client.server_name");
            util::copy(&mut ev, tls, "sni", "destination.domain");
            util::copy(&mut ev, tls, "subject", "tls.server.subject");
            util::copy(&mut ev, tls, "issuerdn", "tls.server.issuer");
            util::copy(&mut ev, tls, "serial", "tls.server.x509.serial_number");
            util::copy(&mut ev, tls, "notbefore", "tls.server.not_before");
            util::copy(&mut ev, tls, "notafter", "tls.server.not_after");
            util::copy(&mut ev, tls, "ja3.hash", "tls.client.ja3");
            util::copy(&mut ev, tls, "ja3s.hash", "tls.server.ja3s");
            if let Some(fp) = util::get_str(tls, "fingerprint") {
                ev.insert(
                    "tls.server.hash.sha1",
                    s(&fp.replace(':', "").to_ascii_uppercase()),
                );
            }
            if let Some(v) = util::get_str(tls, "version") {
                ev.insert("suricata.eve.tls.version", s(v));
                if let Some(rest) = v.strip_prefix("TLS ").or_else(|| v.strip_prefix("TLSv")) {
                    ev.insert("tls.version_protocol", s("tls"));
                    ev.insert("tls.version", s(rest));
                }
            }
            ev.insert("network.protocol", s("tls"));
            ev.set(f.event_category, strs(&["network"]));
            ev.set(f.event_type, strs(&["protocol"]));
        }
        "alert" => {
            if let Some(a) = doc.get("alert") {
                util::copy(&mut ev, a, "signature", "rule.name");
                util::copy(&mut ev, a, "signature_id", "rule.id");
                util::copy(&mut ev, a, "category", "rule.category");
                util::copy_int(&mut ev, a, "severity", "event.severity");
                util::copy(&mut ev, a, "action", "suricata.eve.alert.action");
            }
            ev.set(f.event_category, strs(&["network", "intrusion_detection"]));
        }
        other => {
            if let Some(serde_json::Value::Object(m)) = doc.get(other) {
                for (k, v) in m {
                    if let Some(v) = util::scalar(v) {
                        ev.insert(&format!("suricata.eve.{other}.{k}"), v);
                    }
                }
            }
            ev.set(f.event_category, strs(&["network"]));
            match (other, doc.get(other)) {
                ("dns", Some(d)) => super::suricata_app::dns(&mut ev, d),
                ("http", Some(h)) => super::suricata_app::http(&mut ev, h),
                _ => {}
            }
        }
    }
    Ok(ev)
}
