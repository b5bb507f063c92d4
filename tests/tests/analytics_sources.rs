//! The seed detections on the formats the sources really send: raw auditd records, eslogger JSON,
//! unified log NDJSON, MDM and mobile EDR JSON (the product's schemas), Elastic Defend-shaped ECS. Each
//! scenario's files are decoded by `sensor ingest --format <f>`, merged in event-time order (one stream, as
//! the daemon sees it) and run through `sensor replay` with the shipped analytics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn data(rel: &str) -> PathBuf {
    tests::workspace_root()
        .join("tests/data/analytics")
        .join(rel)
}

/// Decodes each (format, file) with `sensor ingest` as agent `agent`, merges by @timestamp, replays.
fn run(name: &str, inputs: &[(&str, &str)], config: Option<&str>) -> Vec<Value> {
    let dir = tests::scratch(&format!("analytics-src-{name}"));
    let mut events: Vec<(i64, usize, String)> = Vec::new();
    for (format, rel) in inputs {
        let out = Command::new(tests::sensor_bin())
            .args([
                "ingest",
                "--strict",
                "--agent-id",
                "mbp-01",
                "--format",
                format,
                "--input",
            ])
            .arg(data(rel))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ingest {rel}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let doc: Value = serde_json::from_str(line).unwrap();
            let ts = correlator::event::parse_timestamp(&doc["@timestamp"])
                .unwrap_or_else(|| panic!("no @timestamp: {line}"));
            events.push((ts, events.len(), line.to_string()));
        }
    }
    events.sort();
    let merged = dir.join("events.ndjson");
    std::fs::write(
        &merged,
        events
            .iter()
            .map(|(_, _, l)| format!("{l}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let mut cmd = Command::new(tests::sensor_bin());
    cmd.args(["replay", "--analytics", "--input"]).arg(&merged);
    if let Some(cfg) = config {
        let p = dir.join("config.toml");
        std::fs::write(&p, cfg).unwrap();
        cmd.arg("--config").arg(p);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "replay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn one<'a>(alerts: &'a [Value], rule: &str) -> &'a Value {
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["rule_id"], rule);
    &alerts[0]
}

/// The raw source record is kept as evidence (`event.original`) for each evidence event.
fn originals(a: &Value) -> Vec<String> {
    a["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["event"]["original"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[test]
fn an1358_on_raw_auditd() {
    let alerts = run(
        "1358f",
        &[("auditd", "AN1358/auditd-positive-fifo.log")],
        None,
    );
    let a = one(&alerts, "AN1358");
    assert!(a["reason"].as_str().unwrap().contains("FIFO /tmp/f"), "{a}");
    // The same wiring as the kernel sensor shows, from clone/execve/openat flags/connect records.
    assert_eq!(a["severity"], "high", "{a}");
    for want in [
        "`bash -i` [902] sits in one pipeline with `cat /tmp/f` [901], which reads it",
        "`nc 10.0.0.9 4444` [903] writes it and connected to 10.0.0.9:4444",
        "created by `mkfifo /tmp/f` [900]",
    ] {
        assert!(
            a["reason"].as_str().unwrap().contains(want),
            "{want:?}: {a}"
        );
    }
    assert!(
        originals(a)[0].contains("syscall=259"),
        "the raw mknodat record is the evidence: {:?}",
        originals(a)
    );
    let alerts = run(
        "1358s",
        &[("auditd", "AN1358/auditd-positive-socket.log")],
        None,
    );
    let a = one(&alerts, "AN1358");
    assert!(
        a["reason"]
            .as_str()
            .unwrap()
            .contains("/dev/shm/.x/implant used AF_UNIX socket /dev/shm/.x/ctl.sock"),
        "{a}"
    );
    assert!(
        originals(a)[0].contains("type=SOCKADDR"),
        "{:?}",
        originals(a)
    );
    assert!(run(
        "1358n1",
        &[("auditd", "AN1358/auditd-negative-allowlisted.log")],
        None
    )
    .is_empty());
    assert!(run(
        "1358n2",
        &[("auditd", "AN1358/auditd-negative-learning.log")],
        None
    )
    .is_empty());
}

#[test]
fn an1358_on_execve_only_auditd() {
    // The commonest audit setup records execve alone: the FIFO is known from `mkfifo /tmp/f` and
    // `cat /tmp/f` command lines, the pipeline from parent pids and start times, nc by name.
    let alerts = run(
        "1358x",
        &[("auditd", "AN1358/auditd-positive-fifo-execve-only.log")],
        None,
    );
    let a = one(&alerts, "AN1358");
    assert_eq!(a["severity"], "high", "{a}");
    let reason = a["reason"].as_str().unwrap();
    for want in [
        "FIFO /tmp/f lets a network tool drive a shell",
        "`bash -i` [902] sits in one pipeline with `cat /tmp/f` [901], which names it on its command line",
        "is the network tool nc.openbsd (its connection was not seen)",
        "created by `mkfifo /tmp/f` [900]",
    ] {
        assert!(reason.contains(want), "{want:?}: {reason}");
    }
}

#[test]
fn an1358_kernel_and_auditd_meet_one_rule() {
    // The same behaviour from both sources, on one stream: two FIFOs, two alerts, one per source.
    let alerts = run(
        "1358both",
        &[
            ("auditd", "AN1358/auditd-positive-fifo.log"),
            ("ecs", "AN1358/kernel-positive-fifo.ndjson"),
        ],
        None,
    );
    assert_eq!(alerts.len(), 2, "one per host identity: {alerts:#?}");
    let ds: Vec<&str> = alerts
        .iter()
        .map(|a| {
            a["evidence"][0]["event"]["dataset"]
                .as_str()
                .unwrap_or("kernel")
        })
        .collect();
    assert!(ds.contains(&"auditd.log"), "{ds:?}");
}

#[test]
fn an1359_on_eslogger_and_unified_log() {
    let alerts = run(
        "1359p",
        &[("eslogger", "AN1359/eslogger-positive-osascript.json")],
        None,
    );
    let a = one(&alerts, "AN1359");
    // The parent name comes from the process table (eslogger names the parent by pid only).
    assert_eq!(
        a["join_keys"],
        serde_json::json!(["bash", "Keychain Access"])
    );
    assert!(originals(a)[0].contains("\"exec\""));
    let alerts = run(
        "1359m",
        &[("unifiedlog", "AN1359/unifiedlog-positive-machport.ndjson")],
        None,
    );
    let a = one(&alerts, "AN1359");
    assert!(a["reason"]
        .as_str()
        .unwrap()
        .contains("com.apple.securityd.xpc"));
    assert!(originals(a)[0].contains("eventMessage"));
    assert!(run(
        "1359n1",
        &[("eslogger", "AN1359/eslogger-negative-allowlisted.json")],
        None
    )
    .is_empty());
    assert!(run(
        "1359n2",
        &[("unifiedlog", "AN1359/unifiedlog-negative-learning.ndjson")],
        None
    )
    .is_empty());
}

#[test]
fn an0948_joins_unified_log_and_eslogger() {
    let alerts = run(
        "0948p",
        &[
            ("unifiedlog", "AN0948/unifiedlog-positive.ndjson"),
            ("eslogger", "AN0948/eslogger-positive.json"),
        ],
        None,
    );
    let a = one(&alerts, "AN0948");
    assert_eq!(
        a["severity"], "critical",
        "the executed payload is unsigned"
    );
    let orig = originals(a);
    assert!(
        orig.iter().any(|o| o.contains("eventMessage"))
            && orig.iter().any(|o| o.contains("\"exec\"")),
        "evidence from both sources: {orig:?}"
    );
    assert!(run(
        "0948n1",
        &[
            (
                "unifiedlog",
                "AN0948/unifiedlog-negative-allowlisted.ndjson"
            ),
            ("eslogger", "AN0948/eslogger-positive.json")
        ],
        None
    )
    .is_empty());
    assert!(run(
        "0948n2",
        &[
            ("unifiedlog", "AN0948/unifiedlog-positive.ndjson"),
            ("eslogger", "AN0948/eslogger-negative-outside-window.json")
        ],
        None
    )
    .is_empty());
}

#[test]
fn an0082_joins_flows_to_eslogger_code_signing() {
    let alerts = run(
        "0082p",
        &[
            ("eslogger", "AN0082/eslogger-positive.json"),
            ("ecs", "AN0082/ecs-flows-positive.ndjson"),
        ],
        None,
    );
    let a = one(&alerts, "AN0082");
    assert!(a["reason"].as_str().unwrap().contains("still open"));
    assert!(
        a["reason"].as_str().unwrap().contains("com.syncr.agent"),
        "signing id joined from eslogger: {a}"
    );
    assert!(run(
        "0082n",
        &[
            ("eslogger", "AN0082/eslogger-negative.json"),
            ("ecs", "AN0082/ecs-flows-negative.ndjson")
        ],
        None
    )
    .is_empty());
    // Control: without the uploader allowlist Dropbox fires; curl (Apple platform binary) still does not.
    let cfg = "[analytics.AN0082.settings]\nAllowedUploaders = []\n";
    let alerts = run(
        "0082c",
        &[
            ("eslogger", "AN0082/eslogger-negative.json"),
            ("ecs", "AN0082/ecs-flows-negative.ndjson"),
        ],
        Some(cfg),
    );
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(
        alerts[0]["process"],
        "/Applications/Dropbox.app/Contents/MacOS/Dropbox"
    );
}

/// The pinning detector's alerts only: these records also show the enterprise inspection CA, which
/// AN1726's network branch reports until it is listed in AllowedInspectionIssuers (checked below).
fn pinning(alerts: Vec<Value>) -> Vec<Value> {
    alerts
        .into_iter()
        .filter(|a| {
            a["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("[pinning-under-inspection]"))
        })
        .collect()
}

#[test]
fn an1726_joins_mdm_and_mobile_edr() {
    let all = run(
        "1726p",
        &[
            ("mdm", "AN1726/mdm.json"),
            ("mobile-edr", "AN1726/mobile-edr-positive.json"),
        ],
        None,
    );
    assert!(
        all.iter().any(|a| a["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("[tls-inspection-network]"))),
        "the unlisted inspection CA is reported: {all:#?}"
    );
    let sanctioned =
        "[analytics.AN1726.settings]\nAllowedInspectionIssuers = [\"CN=ACME Inspection CA*\"]\n";
    let listed = run(
        "1726s",
        &[
            ("mdm", "AN1726/mdm.json"),
            ("mobile-edr", "AN1726/mobile-edr-positive.json"),
        ],
        Some(sanctioned),
    );
    assert_eq!(pinning(listed.clone()).len(), listed.len(), "{listed:#?}");
    let alerts = pinning(all);
    let a = one(&alerts, "AN1726");
    let ds: Vec<&str> = a["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["dataset"].as_str().unwrap())
        .collect();
    assert!(
        ds.contains(&"mdm.log") && ds.contains(&"mobile_edr.telemetry"),
        "{ds:?}"
    );
    assert!(pinning(run(
        "1726n1",
        &[
            ("mdm", "AN1726/mdm.json"),
            ("mobile-edr", "AN1726/mobile-edr-negative-allowlisted.json")
        ],
        None
    ))
    .is_empty());
    assert!(pinning(run(
        "1726n2",
        &[
            ("mdm", "AN1726/mdm.json"),
            (
                "mobile-edr",
                "AN1726/mobile-edr-negative-outside-window.json"
            )
        ],
        None
    ))
    .is_empty());
    // ForegroundStateRequired = false: the background state is no longer needed, failures alone suffice.
    let cfg = "[analytics.AN1726.settings]\nForegroundStateRequired = false\n";
    let only_failures = pinning(run(
        "1726f",
        &[("mobile-edr", "AN1726/mobile-edr-positive.json")],
        Some(cfg),
    ));
    assert_eq!(only_failures.len(), 1);
}

#[test]
fn elastic_installer_rule_on_eslogger_and_ecs() {
    let alerts = run(
        "004p",
        &[
            ("eslogger", "elastic-installer/eslogger-positive.json"),
            ("ecs", "elastic-installer/ecs-network-positive.ndjson"),
        ],
        None,
    );
    let a = one(&alerts, "99239e7d-b0d4-46e3-8609-acafcf99f68c");
    assert_eq!(a["join_keys"], serde_json::json!(["mac-a1b2", "501"]));
    assert!(run(
        "004n",
        &[
            ("eslogger", "elastic-installer/eslogger-positive.json"),
            ("ecs", "elastic-installer/ecs-network-late.ndjson")
        ],
        None
    )
    .is_empty());
}
