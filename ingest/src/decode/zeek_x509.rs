//! Zeek `x509.log` joined to `ssl.log`. Since Zeek 4 an ssl.log record names its certificates only by
//! fingerprint (`cert_chain_fps`; Zeek 3: by file id, `cert_chain_fuids`) and the issuer and subject
//! are in x509.log (`fingerprint`; Zeek 3: `id`). The decoder keeps the certificates it has seen and
//! the ssl sessions still waiting for theirs, both bounded, so the join works in either order:
//! - x509 first (what Zeek writes: the certificate is logged when the handshake carries it): the
//!   ssl event is emitted at once with `tls.server.issuer`/`subject` and `tls.server.x509.*`;
//! - ssl first (two files sent one after the other): the ssl event is emitted at once without the
//!   issuer (nothing is held back), and when its certificate arrives the decoder emits the session
//!   again, joined (`zeek.ssl.x509_join: "late"`), beside the x509 event.
//!
//! Only the leaf (the first fingerprint of the chain) is joined: it is the certificate the server
//! presented, whose issuer tells who signed it.

use std::collections::{HashMap, VecDeque};

use correlator::{Event, Value};

use super::util::{self, s};

/// Certificates kept at most (Zeek 4 logs a known certificate once a day, so keep many).
pub(crate) const CERTS_MAX: usize = 16_384;
/// ssl sessions waiting for their certificate at most (the oldest are dropped: already emitted).
pub(crate) const WAITING_MAX: usize = 1_024;

/// What the join takes from an x509 record.
#[derive(Clone, Debug, Default)]
struct Cert {
    issuer: Option<String>,
    subject: Option<String>,
    serial: Option<String>,
    not_before: Option<serde_json::Value>,
    not_after: Option<serde_json::Value>,
    sha256: Option<String>,
}

/// A map with a bound: inserting beyond it drops the entry inserted (or refreshed) longest ago.
struct Bounded<V> {
    map: HashMap<String, (V, u64)>,
    order: VecDeque<(String, u64)>,
    stamp: u64,
    max: usize,
}

impl<V> Bounded<V> {
    fn new(max: usize) -> Bounded<V> {
        Bounded {
            map: HashMap::new(),
            order: VecDeque::new(),
            stamp: 0,
            max,
        }
    }

    fn touch(&mut self, key: &str) {
        self.stamp += 1;
        if let Some(e) = self.map.get_mut(key) {
            e.1 = self.stamp;
            self.order.push_back((key.to_string(), self.stamp));
        }
        self.compact();
    }

    /// Inserts `v`; returns what the bound evicted.
    fn insert(&mut self, key: String, v: V) -> Vec<V> {
        self.stamp += 1;
        self.order.push_back((key.clone(), self.stamp));
        self.map.insert(key, (v, self.stamp));
        let mut evicted = Vec::new();
        while self.map.len() > self.max {
            match self.pop_oldest() {
                Some(v) => evicted.push(v),
                None => break,
            }
        }
        self.compact();
        evicted
    }

    /// Removes the entry inserted (or refreshed) longest ago.
    fn pop_oldest(&mut self) -> Option<V> {
        while let Some((k, st)) = self.order.pop_front() {
            if self.map.get(&k).is_some_and(|e| e.1 == st) {
                return self.map.remove(&k).map(|e| e.0);
            }
        }
        None
    }

    /// Drops the order entries of keys refreshed since (they stand again further back).
    fn compact(&mut self) {
        if self.order.len() > self.max.saturating_mul(2).max(16) {
            let map = &self.map;
            self.order
                .retain(|(k, st)| map.get(k).is_some_and(|e| e.1 == *st));
        }
    }

    fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key).map(|e| &e.0)
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.map.get_mut(key).map(|e| &mut e.0)
    }

    fn remove(&mut self, key: &str) -> Option<V> {
        self.map.remove(key).map(|e| e.0)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// The join's state: certificates by fingerprint and by file id, ssl sessions waiting by either.
pub(crate) struct X509Join {
    certs: Bounded<Cert>,
    waiting: Bounded<Vec<Event>>,
    waiting_sessions: usize,
}

impl Default for X509Join {
    fn default() -> X509Join {
        X509Join {
            certs: Bounded::new(CERTS_MAX),
            waiting: Bounded::new(WAITING_MAX),
            waiting_sessions: 0,
        }
    }
}

/// The leaf certificate's key of an ssl record: the first of `cert_chain_fps`, else of
/// `cert_chain_fuids`.
fn leaf_key(doc: &serde_json::Value) -> Option<String> {
    ["cert_chain_fps", "cert_chain_fuids"].iter().find_map(|k| {
        doc.get(*k)
            .and_then(serde_json::Value::as_array)
            .and_then(|a| a.first())
            .and_then(serde_json::Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    })
}

fn text(doc: &serde_json::Value, k: &str) -> Option<String> {
    doc.get(k)
        .and_then(serde_json::Value::as_str)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// The certificate's names, serial and validity under `prefix` (`x509`, `tls.server.x509`).
fn cert_fields(ev: &mut Event, cert: &Cert, prefix: &str) {
    for (v, k) in [
        (&cert.issuer, "issuer.distinguished_name"),
        (&cert.subject, "subject.distinguished_name"),
        (&cert.serial, "serial_number"),
    ] {
        if let Some(v) = v {
            ev.insert(&format!("{prefix}.{k}"), s(v));
        }
    }
    for (src, k) in [
        (&cert.not_before, "not_before"),
        (&cert.not_after, "not_after"),
    ] {
        if let Some(ns) = src.as_ref().and_then(util::epoch_secs_ns) {
            ev.insert(&format!("{prefix}.{k}"), util::rfc3339_value(ns));
        }
    }
}

/// Writes the certificate's fields into an ssl event (the issuer and subject where ssl.log had none).
fn apply(ev: &mut Event, cert: &Cert, how: &str) {
    for (v, k) in [
        (&cert.issuer, "tls.server.issuer"),
        (&cert.subject, "tls.server.subject"),
    ] {
        if let Some(v) = v.as_deref().filter(|_| ev.get_path(k).is_none()) {
            ev.insert(k, s(v));
        }
    }
    cert_fields(ev, cert, "tls.server.x509");
    if let Some(v) = &cert.sha256 {
        ev.insert("tls.server.hash.sha256", s(&v.to_ascii_uppercase()));
    }
    ev.insert("zeek.ssl.x509_join", s(how));
}

impl X509Join {
    /// An ssl event: joined now if its leaf certificate is known, else remembered (when it has no
    /// issuer of its own) for a certificate that may come later.
    pub(crate) fn ssl(&mut self, doc: &serde_json::Value, ev: &mut Event) {
        let Some(key) = leaf_key(doc) else {
            return;
        };
        if let Some(cert) = self.certs.get(&key).cloned() {
            self.certs.touch(&key);
            apply(ev, &cert, "cached");
            return;
        }
        if ev.get_path("tls.server.issuer").is_some() {
            return;
        }
        // Make room: the oldest waiting sessions were emitted already; only their late join is lost.
        while self.waiting_sessions >= WAITING_MAX {
            match self.waiting.pop_oldest() {
                Some(v) => self.waiting_sessions -= v.len(),
                None => break,
            }
        }
        if let Some(list) = self.waiting.get_mut(&key) {
            list.push(ev.clone());
        } else {
            for v in self.waiting.insert(key, vec![ev.clone()]) {
                self.waiting_sessions -= v.len();
            }
        }
        self.waiting_sessions += 1;
    }

    /// An x509 record: maps it onto `ev` (`x509.*`), remembers the certificate, and returns the
    /// waiting ssl sessions it completes, joined.
    pub(crate) fn x509(&mut self, doc: &serde_json::Value, ev: &mut Event) -> Vec<Event> {
        let fp = text(doc, "fingerprint");
        let cert = Cert {
            issuer: text(doc, "certificate.issuer"),
            subject: text(doc, "certificate.subject"),
            serial: text(doc, "certificate.serial"),
            not_before: doc.get("certificate.not_valid_before").cloned(),
            not_after: doc.get("certificate.not_valid_after").cloned(),
            sha256: fp
                .clone()
                .filter(|f| f.len() == 64 && f.bytes().all(|b| b.is_ascii_hexdigit())),
        };
        map_x509(doc, &cert, ev);
        let keys: Vec<String> = [fp, text(doc, "id")].into_iter().flatten().collect();
        let mut out = Vec::new();
        for k in keys {
            if let Some(list) = self.waiting.remove(&k) {
                self.waiting_sessions = self.waiting_sessions.saturating_sub(list.len());
                for mut ssl in list {
                    apply(&mut ssl, &cert, "late");
                    out.push(ssl);
                }
            }
            // An evicted certificate only means a later session of it goes unjoined.
            let _ = self.certs.insert(k, cert.clone());
        }
        out
    }

    /// Certificates and waiting sessions held (for tests).
    #[cfg(test)]
    pub(crate) fn sizes(&self) -> (usize, usize) {
        (self.certs.len(), self.waiting_sessions)
    }
}

/// ECS `x509.*` of an x509 record (every field also stays under `zeek.x509.*`).
fn map_x509(doc: &serde_json::Value, cert: &Cert, ev: &mut Event) {
    cert_fields(ev, cert, "x509");
    util::copy_int(ev, doc, "certificate.version", "x509.version_number");
    util::copy(ev, doc, "certificate.key_alg", "x509.public_key_algorithm");
    util::copy(ev, doc, "certificate.sig_alg", "x509.signature_algorithm");
    util::copy_int(ev, doc, "certificate.key_length", "x509.public_key_size");
    util::copy(ev, doc, "certificate.curve", "x509.public_key_curve");
    if let Some(names) = doc.get("san.dns").and_then(serde_json::Value::as_array) {
        let v: Vec<Value> = names
            .iter()
            .filter_map(serde_json::Value::as_str)
            .map(s)
            .collect();
        if !v.is_empty() {
            ev.insert("x509.alternative_names", Value::Array(v.into()));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::decode::{decode_readers, Format};

    const X509: &str = r#"{"_path":"x509","ts":"2018-03-24T17:15:20.624556Z","fingerprint":"FP1","certificate.serial":"01","certificate.subject":"CN=shop.example","certificate.issuer":"CN=Inspect CA,O=Corp","certificate.not_valid_before":"2011-09-10T12:15:02.000000Z","san.dns":["shop.example"]}"#;
    const SSL: &str = r#"{"_path":"ssl","ts":"2018-03-24T17:15:21.000000Z","uid":"C1","id.orig_h":"10.0.0.2","id.orig_p":5000,"id.resp_h":"93.184.216.34","id.resp_p":443,"version":"TLSv12","established":true,"cert_chain_fps":["FP1","FP0"]}"#;

    fn run(inputs: &[&str]) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let readers: Vec<Box<dyn std::io::BufRead>> = inputs
            .iter()
            .map(|s| Box::new(s.as_bytes()) as Box<dyn std::io::BufRead>)
            .collect();
        decode_readers(Format::Zeek, "t", readers, &mut |_, r| {
            out.push(r.unwrap().to_json());
        });
        out
    }

    fn issuer(v: &serde_json::Value) -> Option<&str> {
        util::get_str(v, "tls.server.issuer")
    }

    #[test]
    fn x509_first_joins_the_session_at_once() {
        let out = run(&[X509, SSL]);
        assert_eq!(out.len(), 2);
        assert_eq!(issuer(&out[1]), Some("CN=Inspect CA,O=Corp"));
        assert_eq!(
            util::get_str(&out[1], "tls.server.subject"),
            Some("CN=shop.example")
        );
        assert_eq!(util::get_str(&out[1], "zeek.ssl.x509_join"), Some("cached"));
        assert_eq!(
            util::get_str(&out[0], "x509.issuer.distinguished_name"),
            Some("CN=Inspect CA,O=Corp")
        );
    }

    #[test]
    fn ssl_first_is_emitted_at_once_and_again_joined_when_the_certificate_comes() {
        let out = run(&[SSL, X509]);
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(issuer(&out[0]), None);
        assert_eq!(util::get_str(&out[1], "event.dataset"), Some("zeek.x509"));
        assert_eq!(issuer(&out[2]), Some("CN=Inspect CA,O=Corp"));
        assert_eq!(util::get_str(&out[2], "zeek.ssl.x509_join"), Some("late"));
        assert_eq!(util::get_str(&out[2], "event.id"), Some("C1"));
    }

    #[test]
    fn an_issuer_in_ssl_log_is_kept() {
        let ssl = SSL.replace(
            r#""established":true"#,
            r#""established":true,"issuer":"CN=Own""#,
        );
        let out = run(&[X509, &ssl]);
        assert_eq!(issuer(&out[1]), Some("CN=Own"));
        // Waiting is only for sessions without an issuer.
        let mut j = X509Join::default();
        let doc: serde_json::Value = serde_json::from_str(&ssl).unwrap();
        let mut ev = correlator::Event::default();
        ev.insert("tls.server.issuer", s("CN=Own"));
        j.ssl(&doc, &mut ev);
        assert_eq!(j.sizes(), (0, 0));
    }

    #[test]
    fn the_caches_are_bounded() {
        let mut j = X509Join::default();
        for i in 0..(WAITING_MAX + 10) {
            let doc = serde_json::json!({"cert_chain_fps": [format!("fp{i}")]});
            let mut ev = correlator::Event::default();
            j.ssl(&doc, &mut ev);
        }
        assert_eq!(j.sizes().1, WAITING_MAX);
        for i in 0..(CERTS_MAX + 10) {
            let doc =
                serde_json::json!({"fingerprint": format!("c{i}"), "certificate.issuer": "CN=x"});
            let mut ev = correlator::Event::default();
            let _ = j.x509(&doc, &mut ev);
        }
        assert_eq!(j.sizes().0, CERTS_MAX);
        // The newest sessions still wait; the oldest were dropped.
        let doc = serde_json::json!({"fingerprint": format!("fp{}", WAITING_MAX + 9)});
        let mut ev = correlator::Event::default();
        assert_eq!(j.x509(&doc, &mut ev).len(), 1);
        let doc = serde_json::json!({"fingerprint": "fp0"});
        assert!(j.x509(&doc, &mut ev).is_empty());
    }

    proptest::proptest! {
        /// Any interleaving of ssl sessions and certificates: every record gives its own event once,
        /// and every session whose certificate comes at all carries that certificate's issuer
        /// exactly once (at once if it came first, late otherwise).
        #[test]
        fn every_order_joins_each_session_once(
            order in proptest::collection::vec((proptest::bool::ANY, 0u8..4), 0..40)
        ) {
            let mut lines = Vec::new();
            let mut certs_seen = std::collections::BTreeSet::new();
            for (i, (is_cert, fp)) in order.iter().enumerate() {
                if *is_cert {
                    certs_seen.insert(*fp);
                    lines.push(format!(r#"{{"_path":"x509","ts":1,"fingerprint":"f{fp}","certificate.issuer":"CN=I{fp}"}}"#));
                } else {
                    lines.push(format!(r#"{{"_path":"ssl","ts":2,"uid":"C{i}","cert_chain_fps":["f{fp}"]}}"#));
                }
            }
            let text = lines.join("\n");
            let out = run(&[&text]);
            let joined: Vec<&serde_json::Value> = out
                .iter()
                .filter(|e| util::get_str(e, "zeek.ssl.x509_join").is_some())
                .collect();
            proptest::prop_assert_eq!(out.len() - joined.iter().filter(|e| util::get_str(e, "zeek.ssl.x509_join") == Some("late")).count(), lines.len());
            for (i, (is_cert, fp)) in order.iter().enumerate() {
                if *is_cert {
                    continue;
                }
                let uid = format!("C{i}");
                let with_issuer: Vec<_> = out
                    .iter()
                    .filter(|e| util::get_str(e, "event.id") == Some(uid.as_str()) && issuer(e).is_some())
                    .collect();
                if certs_seen.contains(fp) {
                    proptest::prop_assert_eq!(with_issuer.len(), 1);
                    let want = format!("CN=I{fp}");
                    proptest::prop_assert_eq!(issuer(with_issuer[0]), Some(want.as_str()));
                } else {
                    proptest::prop_assert_eq!(with_issuer.len(), 0);
                }
            }
        }
    }
}
