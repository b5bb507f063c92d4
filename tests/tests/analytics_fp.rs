//! False-positive check: the benign third-party corpora (Elastic beats and integrations auditd logs, the
//! WRCCDC 2018 Zeek ssl log, the Jamf Protect macOS telemetry sample raw and as ECS) decoded by `sensor ingest` and replayed through every shipped detection with
//! default settings. Alert counts are printed per analytic and must match the counts explained in the
//! rules' notes (all zero).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;

fn replay_corpus(
    name: &str,
    format: &str,
    files: &[std::path::PathBuf],
) -> (usize, BTreeMap<String, usize>) {
    let dir = tests::scratch(&format!("analytics-fp-{name}"));
    let mut all = String::new();
    for f in files {
        let out = Command::new(tests::sensor_bin())
            .args(["ingest", "--format", format, "--input"])
            .arg(f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ingest {}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        all.push_str(&String::from_utf8(out.stdout).unwrap());
    }
    let events = all.lines().count();
    assert!(events > 0, "{name}: nothing decoded");
    let input = dir.join("events.ndjson");
    std::fs::write(&input, all).unwrap();
    let out = Command::new(tests::sensor_bin())
        .args(["replay", "--analytics", "--input"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replay {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut counts = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let a: serde_json::Value = serde_json::from_str(line).unwrap();
        *counts
            .entry(a["rule_id"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
        println!("  alert: {} {}", a["rule_id"], a["reason"]);
    }
    (events, counts)
}

#[test]
fn benign_corpora_raise_no_alerts() {
    let shared = tests::shared_dir();
    let corpora = shared.join("corpora");
    let beats: Vec<_> = [
        "test.log",
        "audit-cent7-node.log",
        "execve-hex-arg.log",
        "useradd.log",
        "audit-rhel6.log",
    ]
    .iter()
    .map(|f| corpora.join("auditd/beats").join(f))
    .collect();
    let integrations: Vec<_> = [
        "test-auditd-raw.log",
        "test-enhanced-syscall.log",
        "test-oversized-execve.log",
    ]
    .iter()
    .map(|f| corpora.join("auditd/integrations").join(f))
    .collect();
    let zeek = vec![corpora.join("zeek/wrccdc2018-ssl.json.gz")];
    // Jamf Protect telemetry (Apple Endpoint Security layout) as sent, and Elastic's ECS rendering of the
    // same 32 records (the integration's expected output, one document per line).
    let jamf = vec![corpora.join("macos/jamf-protect-telemetry.log")];
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(corpora.join("macos/jamf-protect-telemetry-expected.json"))
            .unwrap(),
    )
    .unwrap();
    let jamf_ecs_file = tests::scratch("analytics-fp").join("jamf-ecs.ndjson");
    std::fs::write(
        &jamf_ecs_file,
        expected["expected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| format!("{d}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let jamf_ecs = vec![jamf_ecs_file];
    let analytics = [
        "AN1358",
        "AN1357",
        "AN1359",
        "AN0948",
        "AN0082",
        "AN1726",
        "99239e7d-b0d4-46e3-8609-acafcf99f68c",
    ];
    let mut total = 0;
    for (name, format, files) in [
        ("beats-auditd", "auditd", beats),
        ("integrations-auditd", "auditd", integrations),
        ("wrccdc-zeek-ssl", "zeek", zeek),
        ("jamf-protect-eslogger", "eslogger", jamf),
        ("jamf-protect-ecs", "ecs", jamf_ecs),
    ] {
        let (events, counts) = replay_corpus(name, format, &files);
        println!(
            "{name}: {events} events through {} analytics",
            analytics.len()
        );
        for id in analytics {
            println!("  {id:<38} {} alerts", counts.get(id).copied().unwrap_or(0));
        }
        total += counts.values().sum::<usize>();
    }
    // The rules' notes explain 0 alerts on each of these corpora.
    assert_eq!(
        total, 0,
        "benign corpora raised alerts (see the lines above)"
    );
}
