//! Zeek 4+ keeps a session's certificate issuer in x509.log: `sensor ingest --format zeek` joins the
//! x509 records to the ssl records (by `cert_chain_fps` = `fingerprint`) in either order of arrival,
//! on the real WRCCDC 2018 logs of one Zeek 6.2 run (ssl.log in ../shared, x509.log in tests/data/real).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn x509() -> PathBuf {
    tests::workspace_root().join("tests/data/real/brimdata-zed-sample-data/x509.json.gz")
}

fn ssl() -> PathBuf {
    tests::shared_dir().join("corpora/zeek/wrccdc2018-ssl.json.gz")
}

/// (events, rejected lines, joined sessions by how: "cached" / "late").
fn ingest(inputs: &[&Path]) -> (Vec<Value>, usize) {
    let mut cmd = Command::new(tests::sensor_bin());
    cmd.args(["ingest", "--format", "zeek"]);
    for i in inputs {
        cmd.arg("--input").arg(i);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rejected = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("rejected: "))
        .count();
    let events = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (events, rejected)
}

fn joined<'a>(events: &'a [Value], how: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["zeek"]["ssl"]["x509_join"].as_str() == Some(how))
        .collect()
}

#[test]
fn x509_log_before_ssl_log_gives_every_session_with_a_logged_certificate_its_issuer() {
    let (events, rejected) = ingest(&[&x509(), &ssl()]);
    assert_eq!(rejected, 0);
    // 348 x509 + 49,474 ssl records, each one event.
    assert_eq!(events.len(), 348 + 49_474);
    let j = joined(&events, "cached");
    // Sessions whose leaf fingerprint is among the 348 certificates (counted from the files).
    assert_eq!(j.len(), 9_974);
    let vmca = j
        .iter()
        .find(|e| e["destination"]["ip"] == "134.71.3.17")
        .expect("a session to the vSphere appliance");
    assert_eq!(
        vmca["tls"]["server"]["issuer"],
        "OU=VMware,O=donbot,ST=California,C=US,DC=local,DC=vsphere,CN=donbot"
    );
    // A certificate for the vSphere web client, not for the name the clients asked for.
    assert!(
        vmca["tls"]["server"]["x509"]["subject"]["distinguished_name"]
            .as_str()
            .unwrap()
            .ends_with("CN=vsphere-webclient-c7610565-f475-4fd0-9df8-5a55aa68eef2")
    );
    assert_eq!(
        vmca["tls"]["client"]["server_name"],
        "arena1.wrccdc.cpp.edu"
    );
    assert_eq!(vmca["zeek"]["ssl"]["sni_matches_cert"], false);
    let x = events
        .iter()
        .find(|e| e["event"]["dataset"] == "zeek.x509")
        .unwrap();
    assert!(x["x509"]["issuer"]["distinguished_name"].is_string(), "{x}");
}

#[test]
fn ssl_log_before_x509_log_emits_sessions_at_once_and_joined_when_the_certificate_comes() {
    let (events, rejected) = ingest(&[&ssl(), &x509()]);
    assert_eq!(rejected, 0);
    // Every record once, plus the waiting sessions again, joined: the decoder holds at most 1,024
    // (bounded memory), the latest ones, so a large ssl.log sent before its x509.log joins partly.
    let late = joined(&events, "late");
    assert_eq!(events.len(), 348 + 49_474 + late.len());
    assert_eq!(late.len(), 1_012, "sessions joined late");
    assert!(late
        .iter()
        .all(|e| e["tls"]["server"]["issuer"].is_string() && e["event"]["id"].is_string()));
}
