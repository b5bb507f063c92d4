//! A learned baseline survives a restart: `sensor replay --state FILE` saves the analytics' state at the
//! end and loads it at the start, so a second run neither starts learning again nor re-alerts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

const H: i64 = 3600;

fn bind(sec: i64, exe: &str, path: &str) -> String {
    let ts = 1_772_359_200 + sec; // 2026-03-01T10:00:00Z
    serde_json::json!({
        "@timestamp": ts * 1000,
        "event": {"category": "network", "action": "unix_bind", "type": "connection"},
        "host": {"id": "lnx-01"}, "network": {"transport": "unix"}, "socket": {"family": "unix"},
        "file": {"path": path}, "process": {"executable": exe, "pid": 4000}
    })
    .to_string()
}

fn replay(input: &Path, state: Option<&Path>) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(tests::sensor_bin());
    cmd.args(["replay", "--input"]).arg(input);
    if let Some(s) = state {
        cmd.arg("--state").arg(s);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn baseline_survives_restart() {
    let dir = tests::scratch("analytics-baseline");
    let state = dir.join("analytics-state.json");
    let _ = std::fs::remove_file(&state);
    // Day 1: the learning period (24h by default) sees the agent's socket.
    let day1 = dir.join("day1.ndjson");
    std::fs::write(
        &day1,
        [
            bind(0, "/usr/bin/dbus-daemon", "/run/dbus/system_bus_socket"),
            bind(H, "/opt/agent/bin/agent", "/tmp/agent.sock"),
        ]
        .join("\n"),
    )
    .unwrap();
    assert!(replay(&day1, Some(&state)).is_empty());
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let b = &saved["AN1358/socket-path"];
    assert_eq!(b["started_ns"], 1_772_359_200_000_000_000i64, "{saved:#}");
    assert!(b["learned"]["/opt/agent/bin/agent"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v == "/tmp/agent.sock"));

    // Day 2, a new process (restart): the known socket is silent, the new one alerts once.
    let day2 = dir.join("day2.ndjson");
    std::fs::write(
        &day2,
        [
            bind(25 * H, "/opt/agent/bin/agent", "/tmp/agent.sock"),
            bind(25 * H + 5, "/tmp/.cache/implant", "/tmp/.cache/ctl"),
        ]
        .join("\n"),
    )
    .unwrap();
    let alerts = replay(&day2, Some(&state));
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["process"], "/tmp/.cache/implant");
    // Third start: the alerted value is in the saved baseline now, no re-alert.
    assert!(replay(&day2, Some(&state)).is_empty());
    // Control: without the saved state, day 2 would start a new learning period and miss the implant.
    assert!(replay(&day2, None).is_empty());
    // A corrupt state file is a clear error, not silently ignored.
    std::fs::write(&state, "{\"AN1358/socket-path\": {\"learned\": 7}}").unwrap();
    let out = Command::new(tests::sensor_bin())
        .args(["replay", "--input"])
        .arg(&day2)
        .arg("--state")
        .arg(&state)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("AN1358/socket-path") && err.contains("not valid"),
        "{err}"
    );
}

#[test]
fn daemon_rule_loader_versions_follow_settings() {
    use sensor::config::RulesConfig;
    let ids = |rules: &[sensor::rules::LoadedRule]| {
        rules
            .iter()
            .map(|r| (r.detector.id().to_string(), r.version))
            .collect::<Vec<_>>()
    };
    let base = sensor::rules::shipped_analytics(&RulesConfig::default()).unwrap();
    assert_eq!(base.len(), 25);
    assert_eq!(
        ids(&base),
        ids(&sensor::rules::shipped_analytics(&RulesConfig::default()).unwrap()),
        "stable versions"
    );
    let mut cfg = RulesConfig {
        disabled: vec!["AN1357".into()],
        ..RulesConfig::default()
    };
    let mut t = toml::Table::new();
    t.insert("InspectionFailureThreshold".into(), toml::Value::Integer(5));
    cfg.settings.insert("AN1726".into(), toml::Value::Table(t));
    let changed = sensor::rules::shipped_analytics(&cfg).unwrap();
    let an1357 = base
        .iter()
        .filter(|r| r.detector.id().starts_with("AN1357/"))
        .count();
    assert!(an1357 >= 2, "AN1357 has detectors: {an1357}");
    assert_eq!(
        changed.len(),
        base.len() - an1357,
        "AN1357's detectors disabled, the others kept"
    );
    let v = |rules: &[sensor::rules::LoadedRule], id: &str| {
        rules
            .iter()
            .find(|r| r.detector.id() == id)
            .unwrap()
            .version
    };
    assert_ne!(
        v(&base, "AN1726/pinning-under-inspection"),
        v(&changed, "AN1726/pinning-under-inspection")
    );
    assert_eq!(
        v(&base, "AN1358/socket-path"),
        v(&changed, "AN1358/socket-path")
    );
    cfg.settings.insert(
        "AN1726".into(),
        toml::Value::Table(toml::from_str("InspectionFailureThreshold = \"x\"").unwrap()),
    );
    let err = sensor::rules::shipped_analytics(&cfg)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("InspectionFailureThreshold"), "{err}");
}
