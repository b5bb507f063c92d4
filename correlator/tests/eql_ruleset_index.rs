//! The rule set's category dispatch and value index must not change results: every rule run alone
//! over the same events raises exactly the alerts the rule set raises for it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/common/mod.rs"]
mod common;

use correlator::rules::{parse_rule_file, RuleDef};
use correlator::{Detector, Event, RuleRunner, RuleSet, RunnerConfig};

fn alone(defs: &[RuleDef], events: &[Event]) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for d in defs {
        let mut r = RuleRunner::new(
            d.meta.clone(),
            d.compile().unwrap(),
            RunnerConfig::default(),
        );
        let mut alerts = Vec::new();
        for e in events {
            r.on_event(e, &mut alerts);
        }
        r.flush(&mut alerts);
        out.extend(alerts.into_iter().map(|a| (a.rule_id, a.timestamp_ns)));
    }
    out.sort();
    out
}

fn together(defs: &[RuleDef], events: &[Event]) -> (Vec<(String, i64)>, usize) {
    let mut set = RuleSet::new(RunnerConfig::default());
    let rep = set.reload(defs.to_vec());
    assert!(rep.failed.is_empty(), "{:?}", rep.failed);
    let mut alerts = Vec::new();
    for e in events {
        set.on_event(e, &mut alerts);
    }
    set.flush(&mut alerts);
    let mut out: Vec<(String, i64)> = alerts
        .into_iter()
        .map(|a| (a.rule_id, a.timestamp_ns))
        .collect();
    out.sort();
    (out, set.indexed_rules())
}

#[test]
fn index_and_dispatch_do_not_change_results() {
    let rules = r#"
[[rule]]
id = "cs"
name = "cs"
query = 'process where process.name == "Bash"'
[[rule]]
id = "colon"
name = "colon"
query = 'process where process.name : "BASH" and event.type == "start"'
[[rule]]
id = "in-ci"
name = "in-ci"
query = 'process where process.name in~ ("CURL", "wget") and process.args : "-o"'
[[rule]]
id = "like"
name = "like"
query = 'process where process.name like "ba*"'
[[rule]]
id = "or"
name = "or"
query = 'any where process.name in ("sudo") or file.name == "passwd"'
[[rule]]
id = "args"
name = "args"
query = 'process where process.args == "install" and process.parent.name in ("dpkg", "apt")'
[[rule]]
id = "not"
name = "not"
query = 'network where not process.name in ("curl", "wget") and destination.port == 4444'
[[rule]]
id = "seq"
name = "seq"
query = 'sequence by process.entity_id [process where process.name == "sudo"] [network where true]'
[[rule]]
id = "seq-indexed"
name = "seq-indexed"
query = 'sequence by host.id with maxspan=1s [process where process.name == "bash"] [network where destination.port in (4444, 22)] until [file where file.name == "passwd"]'
[[rule]]
id = "any-cat"
name = "any-cat"
query = 'any where event.category in ("file") and file.path : ("/tmp/*", "/DEV/shm/*")'
[[rule]]
id = "suffix"
name = "suffix"
query = 'process where process.executable : ("*/bash", "*/Curl") and event.type == "start"'
[[rule]]
id = "port"
name = "port"
query = 'network where destination.port == 8080 and process.name : "java"'
"#;
    let mut defs = parse_rule_file(rules, "mem").unwrap();
    let events = common::events(2_000, 300);
    let (got, indexed) = together(&defs, &events);
    assert!(
        indexed >= 4,
        "most of these rules should be reached through the index, got {indexed}"
    );
    let want = alone(&defs, &events);
    assert!(
        want.len() > 100,
        "the mix should trigger these rules: {}",
        want.len()
    );
    assert_eq!(got, want);

    // And the real Elastic rules.
    defs = common::elastic_single_event_rules(200);
    let events = common::events(800, 300);
    assert_eq!(together(&defs, &events).0, alone(&defs, &events));
}

/// Events whose `event.category` is not one exact ECS name (another case, several names, a plain
/// string, a name outside ECS, none) take the path that reads the field; the results must still be
/// those of each rule alone.
#[test]
fn category_summary_does_not_change_results() {
    use correlator::Value;
    let rules = r#"
[[rule]]
id = "proc"
name = "proc"
query = 'process where process.name == "bash"'
[[rule]]
id = "net"
name = "net"
query = 'network where destination.port == 4444'
[[rule]]
id = "own"
name = "own"
query = 'my_category where true'
[[rule]]
id = "any-cat"
name = "any-cat"
query = 'any where event.category in ("process", "Network")'
"#;
    let defs = parse_rule_file(rules, "mem").unwrap();
    let mut events = common::events(2_000, 300);
    let arr = |xs: &[&str]| Value::Array(xs.iter().map(|x| Value::Str((*x).into())).collect());
    for (i, e) in events.iter_mut().enumerate() {
        match i % 7 {
            0 => e.insert("event.category", Value::Str("Process".into())),
            1 => e.insert("event.category", arr(&["network", "process"])),
            2 => e.insert("event.category", Value::Str("network".into())),
            3 => e.insert("event.category", arr(&["my_category"])),
            4 => e.insert("event.category", arr(&["NETWORK", "file"])),
            5 => e.insert("event.category", Value::Null),
            _ => {}
        }
    }
    let (got, _) = together(&defs, &events);
    let want = alone(&defs, &events);
    assert!(want.len() > 100, "{}", want.len());
    assert_eq!(got, want);
}
