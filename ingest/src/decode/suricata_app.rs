//! ECS fields of Suricata's `dns` and `http` eve.json records, as Elastic's Suricata integration
//! names them. Every scalar also stays under `suricata.eve.<type>.<field>`.

use std::sync::Arc;

use correlator::{Event, Value};
use serde_json::Value as JsonValue;

use super::util::{self, fields, s, strs};

/// `dns`: eve v2 (`rrname`, `rrtype`, `answers` or `grouped`) and v3 (Suricata 8: `queries[]`,
/// `answers[]`, `type` request / response).
pub(super) fn dns(ev: &mut Event, d: &JsonValue) {
    let f = fields();
    let q = d
        .get("queries")
        .and_then(JsonValue::as_array)
        .and_then(|a| a.first())
        .unwrap_or(d);
    util::copy(ev, q, "rrname", "dns.question.name");
    util::copy(ev, q, "rrtype", "dns.question.type");
    if let Some(id) = d.get("id").and_then(util::as_int) {
        ev.insert("dns.id", s(&id.to_string()));
    }
    util::copy(ev, d, "rcode", "dns.response_code");
    if let Some(t) = util::get_str(d, "type") {
        let t = match t {
            "query" | "request" => "query",
            "answer" | "response" => "answer",
            other => other,
        };
        ev.insert("dns.type", s(t));
    }
    let mut ips: Vec<Value> = Vec::new();
    let mut push = |v: &str| {
        if let Ok(ip) = v.parse::<std::net::IpAddr>() {
            ips.push(Value::Ip(ip));
        }
    };
    for a in d
        .get("answers")
        .and_then(JsonValue::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(r) = util::get_str(a, "rdata") {
            push(r);
        }
    }
    for t in ["A", "AAAA"] {
        for v in util::get(d, &format!("grouped.{t}"))
            .and_then(JsonValue::as_array)
            .into_iter()
            .flatten()
            .filter_map(JsonValue::as_str)
        {
            push(v);
        }
    }
    if !ips.is_empty() {
        ev.insert("dns.resolved_ip", Value::Array(Arc::from(ips)));
    }
    ev.set(f.event_type, strs(&["connection", "protocol", "info"]));
}

pub(super) fn http(ev: &mut Event, h: &JsonValue) {
    let f = fields();
    if let Some(host) = util::get_str(h, "hostname").filter(|v| !v.is_empty()) {
        ev.insert("url.domain", s(host));
        if ev.get_path("destination.domain").is_none() && host.parse::<std::net::IpAddr>().is_err()
        {
            ev.insert("destination.domain", s(host));
        }
    }
    if let Some(u) = util::get_str(h, "url").filter(|v| !v.is_empty()) {
        ev.insert("url.original", s(u));
        let (path, query) = u.split_once('?').unwrap_or((u, ""));
        ev.insert("url.path", s(path));
        if !query.is_empty() {
            ev.insert("url.query", s(query));
        }
    }
    util::copy(ev, h, "http_method", "http.request.method");
    util::copy(ev, h, "http_user_agent", "user_agent.original");
    util::copy(ev, h, "http_refer", "http.request.referrer");
    util::copy(ev, h, "http_content_type", "http.response.mime_type");
    util::copy_int(ev, h, "status", "http.response.status_code");
    util::copy_int(ev, h, "length", "http.response.body.bytes");
    if let Some(p) = util::get_str(h, "protocol") {
        ev.insert("http.version", s(p.strip_prefix("HTTP/").unwrap_or(p)));
    }
    ev.set(f.event_type, strs(&["connection", "protocol", "info"]));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::testing::{decode_all, text as get};
    use super::super::Format;
    use correlator::{Event, Value};

    fn decode(t: &str) -> Vec<Event> {
        let (ok, bad) = decode_all(Format::Suricata, t);
        assert!(bad.is_empty(), "{bad:?}");
        ok
    }

    /// eve.json `dns` (v2 query, v2 answer with `grouped`, v3 response) and `http` records, with
    /// Suricata's own `-0500` zone.
    #[test]
    fn dns_and_http_fields() {
        let text = [
            r#"{"timestamp":"2024-12-17T19:17:54.565494-0500","event_type":"dns","src_ip":"192.168.37.130","src_port":55551,"dest_ip":"192.168.37.1","dest_port":53,"proto":"UDP","dns":{"version":2,"type":"query","id":3304,"rrname":"www.example.org","rrtype":"A","tx_id":0}}"#,
            r#"{"timestamp":"2024-12-17T19:17:54.600000-0500","event_type":"dns","src_ip":"192.168.37.1","dest_ip":"192.168.37.130","proto":"UDP","dns":{"version":2,"type":"answer","id":3304,"rrname":"www.example.org","rrtype":"A","rcode":"NOERROR","grouped":{"A":["93.184.216.34"],"CNAME":["e.example.net"]}}}"#,
            r#"{"timestamp":"2025-01-01T00:00:00.000000+0000","event_type":"dns","src_ip":"10.0.0.1","dest_ip":"10.0.0.2","proto":"UDP","dns":{"version":3,"type":"response","id":7,"rcode":"NOERROR","queries":[{"rrname":"c2.example","rrtype":"AAAA"}],"answers":[{"rrname":"c2.example","rrtype":"AAAA","ttl":60,"rdata":"2001:db8::1"}]}}"#,
            r#"{"timestamp":"2025-01-01T00:00:01.000000+0000","event_type":"http","src_ip":"10.0.0.2","src_port":49152,"dest_ip":"10.0.0.9","dest_port":80,"proto":"TCP","http":{"hostname":"dl.example","url":"/p.sh?x=1","http_user_agent":"curl/8.0","http_method":"GET","protocol":"HTTP/1.1","status":200,"length":512}}"#,
        ]
        .join("\n");
        let evs = decode(&text);
        assert_eq!(evs.len(), 4);
        assert_eq!(get(&evs[0], "dns.question.name"), Some("www.example.org"));
        assert_eq!(get(&evs[0], "dns.type"), Some("query"));
        assert_eq!(get(&evs[0], "dns.id"), Some("3304"));
        assert_eq!(
            get(&evs[0], "@timestamp"),
            Some("2024-12-18T00:17:54.565494Z")
        );
        let ip = |v: &str| Value::Array(vec![Value::Ip(v.parse().unwrap())].into());
        assert_eq!(
            evs[1].get_path("dns.resolved_ip"),
            Some(&ip("93.184.216.34"))
        );
        assert_eq!(get(&evs[1], "dns.response_code"), Some("NOERROR"));
        assert_eq!(get(&evs[2], "dns.question.name"), Some("c2.example"));
        assert_eq!(get(&evs[2], "dns.type"), Some("answer"));
        assert_eq!(evs[2].get_path("dns.resolved_ip"), Some(&ip("2001:db8::1")));
        assert_eq!(get(&evs[3], "url.domain"), Some("dl.example"));
        assert_eq!(get(&evs[3], "url.path"), Some("/p.sh"));
        assert_eq!(get(&evs[3], "http.request.method"), Some("GET"));
        assert_eq!(get(&evs[3], "http.version"), Some("1.1"));
        assert_eq!(
            evs[3].get_path("http.response.status_code"),
            Some(&Value::Int(200))
        );
        assert_eq!(
            get(&evs[3], "suricata.eve.http.hostname"),
            Some("dl.example")
        );
    }
}
