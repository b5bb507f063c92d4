//! The seven seed detections, end to end: scenario event files run through `sensor replay` with the shipped
//! analytics. Each positive fires exactly once with the right ids, settings and evidence; each negative
//! (an allow-listed case, a just-outside-window / under-threshold / still-learning case) stays silent, and
//! for the allow-listed negatives a control run with the allowlist emptied proves the case would fire.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn data(rel: &str) -> PathBuf {
    tests::workspace_root()
        .join("tests/data/analytics")
        .join(rel)
}

fn scratch(name: &str) -> PathBuf {
    tests::scratch(&format!("analytics-{name}"))
}

/// Runs `sensor replay` with the shipped analytics; `config` is daemon-config TOML text.
fn replay(input: &Path, config: Option<&str>, extra: &[&str]) -> Vec<Value> {
    let mut cmd = Command::new(tests::sensor_bin());
    cmd.arg("replay")
        .arg("--analytics")
        .arg("--input")
        .arg(input)
        .args(extra);
    if let Some(cfg) = config {
        let dir = scratch(input.file_stem().unwrap().to_str().unwrap());
        let p = dir.join("config.toml");
        std::fs::write(&p, cfg).unwrap();
        cmd.arg("--config").arg(p);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "replay of {} failed: {}",
        input.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect()
}

/// Asserts exactly one alert, with the analytic's ids, and returns it.
fn one_alert<'a>(
    alerts: &'a [Value],
    rule_id: &str,
    analytic: Option<&str>,
    strategy: Option<&str>,
    technique: &str,
) -> &'a Value {
    assert_eq!(
        alerts.len(),
        1,
        "expected one alert, got {}: {alerts:#?}",
        alerts.len()
    );
    let a = &alerts[0];
    assert_eq!(a["rule_id"], rule_id);
    assert_eq!(a["attack"]["analytic"].as_str(), analytic);
    assert_eq!(a["attack"]["strategy"].as_str(), strategy);
    assert!(
        a["attack"]["techniques"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == technique),
        "{a:#?}"
    );
    assert!(!a["evidence"].as_array().unwrap().is_empty());
    // Every evidence event keeps its original record.
    for e in a["evidence"].as_array().unwrap() {
        assert!(
            e["event"]["original"].is_string(),
            "evidence without event.original: {e}"
        );
    }
    a
}

fn silent(rel: &str, config: Option<&str>) {
    let alerts = replay(&data(rel), config, &[]);
    assert!(alerts.is_empty(), "{rel} should be silent, got {alerts:#?}");
}

fn evidence_has(a: &Value, path: &[&str], want: &str) -> bool {
    a["evidence"].as_array().unwrap().iter().any(|e| {
        let mut v = e;
        for p in path {
            v = &v[*p];
        }
        v.as_str() == Some(want)
    })
}

#[test]
fn an1358_kernel_fifo_reverse_shell() {
    let alerts = replay(&data("AN1358/kernel-positive-fifo.ndjson"), None, &[]);
    let a = one_alert(&alerts, "AN1358", Some("AN1358"), Some("DET0493"), "T1559");
    assert!(a["reason"].as_str().unwrap().contains("/tmp/f"), "{a}");
    assert!(evidence_has(a, &["file", "path"], "/tmp/f"));
    assert_eq!(
        a["settings"]["SharedDirs"],
        serde_json::json!(["/tmp/*", "/dev/shm/*", "/var/tmp/*"])
    );
    assert_eq!(a["severity"], "high");
    let reason = a["reason"].as_str().unwrap();
    for want in [
        "lets a network peer drive a shell",
        "`sh -i` [902] sits in one pipeline with `cat /tmp/f` [901], which reads it",
        "`nc 10.0.0.9 4444` [903] writes it and connected to 10.0.0.9:4444",
        "created by `mkfifo /tmp/f` [900]",
    ] {
        assert!(reason.contains(want), "{want:?} not in {reason}");
    }
}

#[test]
fn an1358_kernel_script_fifo_is_low() {
    let alerts = replay(
        &data("AN1358/kernel-negative-script-fifo.ndjson"),
        None,
        &[],
    );
    let a = one_alert(&alerts, "AN1358", Some("AN1358"), Some("DET0493"), "T1559");
    assert_eq!(a["severity"], "low", "{a}");
    assert!(
        a["reason"]
            .as_str()
            .unwrap()
            .contains("FIFO /tmp/build-log passes data between local processes"),
        "{a}"
    );
}

#[test]
fn an1358_kernel_new_socket_after_learning() {
    let alerts = replay(&data("AN1358/kernel-positive-socket.ndjson"), None, &[]);
    let a = one_alert(&alerts, "AN1358", Some("AN1358"), Some("DET0493"), "T1559");
    assert_eq!(a["process"], "/dev/shm/.x/implant");
    assert!(evidence_has(a, &["socket", "path"], "/dev/shm/.x/ctl.sock"));
    assert_eq!(a["settings"]["SocketPathBaseline"]["learning_period"], "1d");
}

#[test]
fn an1358_negatives() {
    silent("AN1358/kernel-negative-allowlisted.ndjson", None);
    silent("AN1358/kernel-negative-learning.ndjson", None);
    // Control: without the allowlists, the allow-listed case fires (tmux FIFO and tmux socket).
    let cfg = "[analytics.AN1358.settings]\nFIFOAccessPatterns = []\nSocketPathBaseline = { allow = [] }\nDecisionDelay = \"0s\"\n";
    let alerts = replay(
        &data("AN1358/kernel-negative-allowlisted.ndjson"),
        Some(cfg),
        &[],
    );
    assert_eq!(alerts.len(), 3, "{alerts:#?}");
}

#[test]
fn an1357_office_spawns_cmd() {
    let alerts = replay(&data("AN1357/sysmon-positive-office-cmd.ndjson"), None, &[]);
    let a = one_alert(&alerts, "AN1357", Some("AN1357"), Some("DET0493"), "T1559");
    assert!(
        a["reason"]
            .as_str()
            .unwrap()
            .contains("WINWORD.EXE spawned cmd.exe"),
        "{a}"
    );
    assert!(evidence_has(a, &["process", "name"], "cmd.exe"));
}

#[test]
fn an1357_suspicious_pipe() {
    let alerts = replay(&data("AN1357/sysmon-positive-pipe.ndjson"), None, &[]);
    let a = one_alert(&alerts, "AN1357", Some("AN1357"), Some("DET0493"), "T1559");
    assert!(evidence_has(a, &["file", "name"], "\\msagent_4a"));
}

#[test]
fn an1357_negatives() {
    silent("AN1357/sysmon-negative-allowlisted.ndjson", None);
    let learning = std::fs::read_to_string(data("AN1357/learning-1h.toml")).unwrap();
    silent("AN1357/sysmon-negative-learning.ndjson", Some(&learning));
    // Controls: with no allowed pairs, WINWORD -> splwow64 fires; without learning, EXCEL -> cmd fires once.
    let cfg = "[analytics.AN1357.settings]\nAllowedParentChildPairs = { allow = [] }\n";
    assert_eq!(
        replay(
            &data("AN1357/sysmon-negative-allowlisted.ndjson"),
            Some(cfg),
            &[]
        )
        .len(),
        1
    );
    assert_eq!(
        replay(&data("AN1357/sysmon-negative-learning.ndjson"), None, &[]).len(),
        1
    );
}

#[test]
fn an1359_osascript_targets_keychain() {
    let alerts = replay(
        &data("AN1359/positive-osascript-keychain.ndjson"),
        None,
        &[],
    );
    let a = one_alert(&alerts, "AN1359", Some("AN1359"), Some("DET0493"), "T1559");
    assert!(
        a["reason"].as_str().unwrap().contains("Keychain Access"),
        "{a}"
    );
    assert_eq!(
        a["join_keys"],
        serde_json::json!(["bash", "Keychain Access"])
    );
}

#[test]
fn an1359_new_mach_service_after_learning() {
    let alerts = replay(&data("AN1359/positive-machport.ndjson"), None, &[]);
    let a = one_alert(&alerts, "AN1359", Some("AN1359"), Some("DET0493"), "T1559");
    assert!(
        a["reason"]
            .as_str()
            .unwrap()
            .contains("com.apple.securityd.xpc"),
        "{a}"
    );
}

#[test]
fn an1359_negatives() {
    silent("AN1359/negative-allowlisted.ndjson", None);
    silent("AN1359/negative-learning.ndjson", None);
    let cfg = "[analytics.AN1359.settings]\nAllowedAppleEventTargets = { allow = [] }\n";
    let alerts = replay(&data("AN1359/negative-allowlisted.ndjson"), Some(cfg), &[]);
    assert_eq!(
        alerts.len(),
        1,
        "Script Editor -> Finder fires once the pair is not allowed: {alerts:#?}"
    );
}

#[test]
fn an0948_xpc_request_then_unsigned_exec() {
    let alerts = replay(
        &data("AN0948/positive-xpc-then-unsigned-exec.ndjson"),
        None,
        &[],
    );
    let a = one_alert(
        &alerts,
        "AN0948",
        Some("AN0948"),
        Some("DET0335"),
        "T1559.003",
    );
    // UnsignedBinaryAlertLevel: the executed payload is unsigned.
    assert_eq!(a["severity"], "critical");
    assert!(evidence_has(
        a,
        &["process", "executable"],
        "/Users/carol/Downloads/Updater"
    ));
    assert!(evidence_has(
        a,
        &["process", "executable"],
        "/private/tmp/payload"
    ));
    // The level is a setting: lowering it lowers the alert.
    let cfg = "[analytics.AN0948.settings]\nUnsignedBinaryAlertLevel = \"low\"\n";
    let alerts = replay(
        &data("AN0948/positive-xpc-then-unsigned-exec.ndjson"),
        Some(cfg),
        &[],
    );
    assert_eq!(alerts[0]["severity"], "low");
}

#[test]
fn an0948_negatives() {
    silent("AN0948/negative-allowlisted.ndjson", None);
    silent("AN0948/negative-outside-window.ndjson", None);
    let cfg = "[analytics.AN0948.settings]\nTimeWindow = \"2m\"\n";
    assert_eq!(
        replay(
            &data("AN0948/negative-outside-window.ndjson"),
            Some(cfg),
            &[]
        )
        .len(),
        1
    );
}

#[test]
fn an0082_long_lived_egress_while_open() {
    let alerts = replay(&data("AN0082/positive-long-lived.ndjson"), None, &[]);
    let a = one_alert(
        &alerts,
        "AN0082",
        Some("AN0082"),
        Some("DET0028"),
        "T1496.002",
    );
    let reason = a["reason"].as_str().unwrap();
    assert!(reason.contains("still open"), "{reason}");
    // Joined to the owning process and its code signature.
    assert_eq!(
        a["process"],
        "/Users/carol/Library/Application Support/syncr/agent"
    );
    assert!(evidence_has(
        a,
        &["process", "code_signature", "team_id"],
        "Q7X9ABCDEF"
    ));
}

#[test]
fn an0082_negatives() {
    silent("AN0082/negative-allowlisted.ndjson", None);
    silent("AN0082/negative-under-threshold.ndjson", None);
    let cfg = "[analytics.AN0082.settings]\nAllowedUploaders = []\nProcessSignedStatus = [\"unsigned\", \"non-apple\"]\n";
    assert_eq!(
        replay(&data("AN0082/negative-allowlisted.ndjson"), Some(cfg), &[]).len(),
        1,
        "Dropbox fires once not allowed; curl (Apple) never"
    );
}

#[test]
fn an1726_pinning_under_inspection() {
    let alerts = replay(&data("AN1726/positive-pinning.ndjson"), None, &[]);
    let a = one_alert(
        &alerts,
        "AN1726",
        Some("AN1726"),
        Some("DET0646"),
        "T1521.003",
    );
    let ev = a["evidence"].as_array().unwrap();
    // MDM, background app state and three inspection failures, from two sources.
    assert_eq!(ev.len(), 5, "{a:#?}");
    assert!(evidence_has(a, &["event", "dataset"], "mdm.log"));
    assert!(evidence_has(
        a,
        &["event", "dataset"],
        "mobile_edr.telemetry"
    ));
    assert_eq!(a["settings"]["InspectionFailureThreshold"], 3);
}

#[test]
fn an1726_negatives() {
    silent("AN1726/negative-allowlisted.ndjson", None);
    silent("AN1726/negative-under-threshold.ndjson", None);
    let cfg = "[analytics.AN1726.settings]\nAllowedDestinationList = []\n";
    assert_eq!(
        replay(&data("AN1726/negative-allowlisted.ndjson"), Some(cfg), &[]).len(),
        1
    );
    let cfg = "[analytics.AN1726.settings]\nInspectionFailureThreshold = 2\n";
    assert_eq!(
        replay(
            &data("AN1726/negative-under-threshold.ndjson"),
            Some(cfg),
            &[]
        )
        .len(),
        1
    );
}

#[test]
fn elastic_installer_spawns_network_event() {
    let alerts = replay(&data("elastic-installer/positive.ndjson"), None, &[]);
    let a = one_alert(
        &alerts,
        "99239e7d-b0d4-46e3-8609-acafcf99f68c",
        None,
        None,
        "T1071.001",
    );
    assert_eq!(a["join_keys"], serde_json::json!(["mac-a1b2", "501"]));
    assert_eq!(a["evidence"].as_array().unwrap().len(), 2);
    silent("elastic-installer/negative-outside-window.ndjson", None);
    silent("elastic-installer/negative-benign.ndjson", None);
}
