//! The endgame EQL conformance suite (`../shared/corpora/eql/`), run in the endgame dialect.
//!
//! Each `[[queries]]` entry runs in the case modes it flags (`case_sensitive`, `case_insensitive`, or
//! both when it flags neither); a run passes when the serial ids of the output events equal
//! `expected_event_ids` exactly, in order. The pass rate must be at least 95%.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use correlator::eql::{batch, compile, Options};
use correlator::{Event, Value};

fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("SENSOR_SHARED_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
        PathBuf::from,
    );
    assert!(
        dir.join("corpora").is_dir(),
        "shared data not found at {} (set SENSOR_SHARED_DIR)",
        dir.display()
    );
    dir
}

fn eql_dir() -> PathBuf {
    shared_dir().join("corpora/eql")
}

fn load_events() -> Vec<Arc<Event>> {
    let text = std::fs::read_to_string(eql_dir().join("test_data.json")).unwrap();
    let docs: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    docs.iter()
        .map(|d| {
            let mut e = Event::from_json(d).unwrap();
            // Windows FILETIME (100 ns since 1601) to Unix nanoseconds.
            if let Some(t) = d.get("timestamp").and_then(serde_json::Value::as_i64) {
                e.timestamp_ns = (t - 116_444_736_000_000_000).saturating_mul(100);
            }
            Arc::new(e)
        })
        .collect()
}

fn serial(e: &Event) -> i64 {
    match e.get_path("serial_event_id") {
        Some(Value::Int(i)) => *i,
        _ => -1,
    }
}

#[test]
fn endgame_conformance_suite() {
    let events = load_events();
    let text = std::fs::read_to_string(eql_dir().join("test_queries.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let queries = doc["queries"].as_array().unwrap();
    let (mut pass, mut total) = (0usize, 0usize);
    let mut failures = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        let q = q.as_table().unwrap();
        let src = q["query"].as_str().unwrap();
        let expected: Vec<i64> = q["expected_event_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_integer().unwrap())
            .collect();
        let cs = q.get("case_sensitive").and_then(toml::Value::as_bool) == Some(true);
        let ci = q.get("case_insensitive").and_then(toml::Value::as_bool) == Some(true);
        let modes: Vec<bool> = match (cs, ci) {
            (true, false) => vec![false],
            (false, true) => vec![true],
            _ => vec![false, true],
        };
        for insensitive in modes {
            total += 1;
            let name = format!(
                "#{} ({})",
                i + 1,
                if insensitive {
                    "case-insensitive"
                } else {
                    "case-sensitive"
                }
            );
            let short: String = src.split_whitespace().collect::<Vec<_>>().join(" ");
            match compile(src, &Options::endgame(insensitive)) {
                Err(e) => failures.push(format!("{name} `{short}`: does not compile: {e}")),
                Ok(query) => {
                    let got: Vec<i64> = batch::run(&query, &events)
                        .iter()
                        .flat_map(|o| o.events.iter().map(|e| serial(e)))
                        .collect();
                    if got == expected {
                        pass += 1;
                    } else {
                        failures.push(format!(
                            "{name} `{short}`: expected {expected:?}, got {got:?}"
                        ));
                    }
                }
            }
        }
    }
    let rate = pass as f64 * 100.0 / total as f64;
    println!("endgame conformance: {pass}/{total} runs pass ({rate:.1}%)");
    for f in &failures {
        println!("FAIL {f}");
    }
    assert!(
        rate >= 95.0,
        "conformance {rate:.1}% < 95%; {} failures listed above",
        failures.len()
    );
}
