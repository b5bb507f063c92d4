//! `sensor query`, `sensor rules check` and `sensor replay` driven as a user would, on real files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

fn tmp(name: &str, text: &str) -> PathBuf {
    let p = tests::scratch("eql-cli").join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const EVENTS: &str = r#"{"@timestamp":"2024-01-01T00:00:00Z","event":{"category":["process"],"type":["start"]},"host":{"id":"h1"},"user":{"id":"u1","name":"alice"},"process":{"name":"installer","parent":{"name":"launchd"},"executable":"/usr/sbin/installer"}}
{"@timestamp":"2024-01-01T00:00:01Z","event":{"category":["process"],"type":["start"]},"host":{"id":"h1"},"user":{"id":"u1"},"process":{"name":"bash","parent":{"name":"installer"}}}
{"@timestamp":"2024-01-01T00:00:05Z","event":{"category":["network"],"type":["start"]},"host":{"id":"h1"},"user":{"id":"u1"},"process":{"name":"curl"}}
{"@timestamp":"2024-01-01T00:10:00Z","event":{"category":["network"],"type":["start"]},"host":{"id":"h1"},"user":{"id":"u1"},"process":{"name":"curl"}}
"#;

fn sensor(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(tests::sensor_bin())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn query_prints_events_and_sequences() {
    let input = tmp("events.ndjson", EVENTS);
    let input = input.to_str().unwrap();
    let (code, out, err) = sensor(&[
        "query",
        "--eql",
        r#"process where process.name : "BASH""#,
        "--input",
        input,
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["process"]["name"], "bash");

    let q = r#"sequence by host.id, user.id with maxspan=30s
      [process where event.type == "start" and process.parent.name == "installer"]
      [network where process.name in ("curl", "wget")]"#;
    let (code, out, err) = sensor(&["query", "--eql", q, "--input", input]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(lines[0]["join_keys"], serde_json::json!(["h1", "u1"]));
    assert_eq!(lines[0]["events"].as_array().unwrap().len(), 2);

    let (code, _, err) = sensor(&[
        "query",
        "--eql",
        "process where process.name ==",
        "--input",
        input,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("line 1:") && err.contains("expected"), "{err}");
}

#[test]
fn rules_check_and_replay() {
    let good = tmp(
        "rules.toml",
        r#"
[[rule]]
id = "seq-1"
name = "Installer shell then network"
severity = "high"
risk_score = 73
techniques = ["T1059.004"]
query = '''
sequence by host.id with maxspan=30s
  [process where process.parent.name == "installer"]
  [network where true]
'''
"#,
    );
    let bad = tmp(
        "bad.toml",
        "[[rule]]\nid = \"b\"\nname = \"Broken\"\nquery = \"process where process.name == \"\n",
    );
    let (code, out, _) = sensor(&["rules", "check", "--format", "json", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["name"], "Installer shell then network");

    let (code, out, _) = sensor(&[
        "rules",
        "check",
        "--format",
        "json",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert_ne!(code, 0, "a failing rule must fail the check");
    let bad_line: serde_json::Value = serde_json::from_str(out.lines().nth(1).unwrap()).unwrap();
    assert_eq!(bad_line["ok"], false);
    assert!(
        bad_line["error"].as_str().unwrap().contains("line 1:"),
        "{bad_line}"
    );

    let input = tmp("events2.ndjson", EVENTS);
    let (code, out, err) = sensor(&[
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--rules",
        good.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let alerts: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(alerts.len(), 1, "{out}");
    assert_eq!(alerts[0]["rule_id"], "seq-1");
    assert_eq!(alerts[0]["severity"], "high");
    assert_eq!(
        alerts[0]["attack"]["techniques"],
        serde_json::json!(["T1059.004"])
    );
    assert_eq!(alerts[0]["evidence"].as_array().unwrap().len(), 2);
}

#[test]
fn rules_check_elastic_corpus() {
    let dir = tests::shared_dir().join("corpora/elastic-rules");
    let (code, out, err) = sensor(&["rules", "check", "--format", "json", dir.to_str().unwrap()]);
    let total = out.lines().count();
    let ok = out.lines().filter(|l| l.contains("\"ok\":true")).count();
    assert!(total > 200, "{err}");
    assert_eq!(code, 0, "{err}");
    assert_eq!(ok, total);
}
