//! ECS fields of Zeek's application logs, as Elastic's Zeek integration names them: `dns.log`
//! (`dns.question.*`, `dns.response_code`, `dns.resolved_ip`) and `http.log` (`url.*`,
//! `http.*`, `user_agent.original`). Every field also stays under `zeek.<log>.<field>`.

use std::sync::Arc;

use correlator::{Event, Value};
use serde_json::Value as JsonValue;

use super::util::{self, fields, s, strs};

fn text<'a>(doc: &'a JsonValue, k: &str) -> Option<&'a str> {
    doc.get(k)
        .and_then(JsonValue::as_str)
        .filter(|v| !v.is_empty() && *v != "-")
}

pub(super) fn dns(ev: &mut Event, doc: &JsonValue) {
    let f = fields();
    if let Some(q) = text(doc, "query") {
        ev.insert("dns.question.name", s(q));
    }
    util::copy(ev, doc, "qtype_name", "dns.question.type");
    util::copy(ev, doc, "qclass_name", "dns.question.class");
    util::copy(ev, doc, "rcode_name", "dns.response_code");
    if let Some(id) = doc.get("trans_id").and_then(util::as_int) {
        ev.insert("dns.id", s(&id.to_string()));
    }
    util::copy(ev, doc, "proto", "network.transport");
    ev.insert("network.protocol", s("dns"));
    let answered = doc.get("rcode_name").is_some() || doc.get("answers").is_some();
    ev.insert("dns.type", s(if answered { "answer" } else { "query" }));
    // `answers` holds names and addresses alike (a JSON array, or the TSV set already split).
    let answers: Vec<&str> = match doc.get("answers") {
        Some(JsonValue::Array(a)) => a.iter().filter_map(JsonValue::as_str).collect(),
        Some(JsonValue::String(v)) => v.split(',').collect(),
        _ => Vec::new(),
    };
    let ips: Vec<Value> = answers
        .iter()
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(Value::Ip)
        .collect();
    if !ips.is_empty() {
        ev.insert("dns.resolved_ip", Value::Array(Arc::from(ips)));
    }
    ev.set(f.event_type, strs(&["connection", "protocol", "info"]));
    ev.set(f.event_action, s("dns"));
}

pub(super) fn http(ev: &mut Event, doc: &JsonValue) {
    let f = fields();
    util::copy(ev, doc, "method", "http.request.method");
    if let Some(h) = text(doc, "host") {
        ev.insert("url.domain", s(h));
        if ev.get_path("destination.domain").is_none() && h.parse::<std::net::IpAddr>().is_err() {
            ev.insert("destination.domain", s(h));
        }
    }
    if let Some(u) = text(doc, "uri") {
        ev.insert("url.original", s(u));
        let (path, query) = u.split_once('?').unwrap_or((u, ""));
        ev.insert("url.path", s(path));
        if !query.is_empty() {
            ev.insert("url.query", s(query));
        }
    }
    util::copy_int(ev, doc, "status_code", "http.response.status_code");
    util::copy(ev, doc, "version", "http.version");
    util::copy(ev, doc, "referrer", "http.request.referrer");
    util::copy(ev, doc, "user_agent", "user_agent.original");
    util::copy_int(ev, doc, "request_body_len", "http.request.body.bytes");
    util::copy_int(ev, doc, "response_body_len", "http.response.body.bytes");
    util::copy(ev, doc, "username", "url.username");
    ev.insert("network.protocol", s("http"));
    ev.set(f.event_type, strs(&["connection", "protocol", "info"]));
    ev.set(f.event_action, s("http"));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::testing::{decode_all, text as get};
    use super::super::Format;
    use correlator::{Event, Value};

    fn decode(t: &str) -> Vec<Event> {
        let (ok, bad) = decode_all(Format::Zeek, t);
        assert!(bad.is_empty(), "{bad:?}");
        ok
    }

    /// dns.log and http.log rows in Zeek's TSV and JSON layouts (fields as Zeek writes them; the
    /// unset `-` maps to nothing).
    #[test]
    fn dns_and_http_fields() {
        let tsv = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tdns\n\
                   #fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\ttrans_id\tquery\tqtype_name\trcode_name\tanswers\n\
                   #types\ttime\tstring\taddr\tport\taddr\tport\tenum\tcount\tstring\tstring\tstring\tvector[string]\n\
                   1692161622.036086\tC1\t10.0.0.2\t52605\t10.0.0.1\t53\tudp\t58519\tevil.example\tA\tNOERROR\tcdn.example,93.184.216.34\n\
                   1692161622.036086\tC2\t10.0.0.2\t52606\t10.0.0.1\t53\tudp\t58520\t-\t-\tSERVFAIL\t-\n";
        let evs = decode(tsv);
        assert_eq!(get(&evs[0], "dns.question.name"), Some("evil.example"));
        assert_eq!(get(&evs[0], "dns.question.type"), Some("A"));
        assert_eq!(get(&evs[0], "dns.response_code"), Some("NOERROR"));
        assert_eq!(get(&evs[0], "dns.id"), Some("58519"));
        assert_eq!(
            evs[0].get_path("dns.resolved_ip"),
            Some(&Value::Array(
                vec![Value::Ip("93.184.216.34".parse().unwrap())].into()
            ))
        );
        assert_eq!(get(&evs[0], "zeek.dns.query"), Some("evil.example"));
        assert!(evs[1].get_path("dns.question.name").is_none());
        let json = r#"{"_path":"http","ts":1692161644.001072,"uid":"C3","id.orig_h":"10.0.0.2","id.orig_p":55213,"id.resp_h":"10.0.5.13","id.resp_p":80,"method":"GET","host":"updates.example","uri":"/a/b.ps1?x=1","version":"1.1","user_agent":"curl/8.0","request_body_len":0,"response_body_len":248,"status_code":200}"#;
        let ev = &decode(json)[0];
        assert_eq!(get(ev, "http.request.method"), Some("GET"));
        assert_eq!(get(ev, "url.domain"), Some("updates.example"));
        assert_eq!(get(ev, "destination.domain"), Some("updates.example"));
        assert_eq!(get(ev, "url.path"), Some("/a/b.ps1"));
        assert_eq!(get(ev, "url.query"), Some("x=1"));
        assert_eq!(
            ev.get_path("http.response.status_code"),
            Some(&Value::Int(200))
        );
        assert_eq!(get(ev, "user_agent.original"), Some("curl/8.0"));
        assert_eq!(get(ev, "event.action"), Some("http"));
    }
}
