//! A detector exported mid-stream and imported into a fresh one (through JSON text, as a checkpoint
//! travels) must say exactly what the uninterrupted detector says, whatever the cut point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;

use crate::detect::threshold::Threshold;
use crate::detect::{filter, FieldSpec};
use crate::{parse_rule_file, Alert, Detector, Event, RuleSet, RunnerConfig, Value};

const S: i64 = 1_000_000_000;
const LATENESS: i64 = 3 * S;

const RULES: &str = r#"
[[rule]]
id = "seq-runs-until"
name = "a, b twice, then 4444, unless stop"
query = '''sequence by host.name with maxspan=40s
  [process where process.name == "a"]
  [process where process.name == "b"] with runs=2
  [network where destination.port == 4444]
  until [process where process.name == "stop"]'''
[[rule]]
id = "seq-missing"
name = "a not followed by dns within 5s"
query = '''sequence by host.name with maxspan=5s
  [process where process.name == "a"]
  ![network where destination.port == 53]'''
[[rule]]
id = "sample"
name = "sample a and any network"
query = 'sample by host.name [process where process.name == "a"] [network where true]'
[[rule]]
id = "single"
name = "evil"
query = 'process where process.name == "evil"'
"#;

fn ruleset() -> RuleSet {
    let mut set = RuleSet::new(RunnerConfig {
        lateness_ns: LATENESS,
        ..RunnerConfig::default()
    });
    let rep = set.reload(parse_rule_file(RULES, "test").unwrap());
    assert!(rep.failed.is_empty(), "{:?}", rep.failed);
    set
}

fn ev(ts: i64, host: &str, cat: &str, name: &str, port: i64, id: u64) -> Event {
    let mut e = Event::from_json(&json!({
        "event": {"category": [cat], "id": id.to_string()},
        "host": {"name": host},
        "process": {"name": name},
        "destination": {"port": port},
    }))
    .unwrap();
    e.timestamp_ns = ts;
    e.insert("source.ip", Value::Ip("192.0.2.7".parse().unwrap()));
    e.raw = Some(format!("raw {id}").into());
    e
}

/// A stream of many hosts' events, slightly out of order (within the lateness window).
fn stream(n: usize) -> Vec<Event> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let names = ["a", "b", "b", "stop", "evil", "x", "a", "b"];
    (0..n)
        .map(|i| {
            let r = next();
            let host = format!("h{}", r % 5);
            let jitter = i64::try_from((r >> 8) % 2_000).unwrap() * 1_000_000;
            let ts = 1_000 * S + i64::try_from(i).unwrap() * (S / 2) + jitter;
            let id = u64::try_from(i).unwrap();
            if (r >> 20) % 3 == 0 {
                let port = [4444, 53, 80][usize::try_from((r >> 24) % 3).unwrap()];
                ev(ts, &host, "network", "x", port, id)
            } else {
                let name = names[usize::try_from((r >> 24) % 8).unwrap()];
                ev(ts, &host, "process", name, 0, id)
            }
        })
        .collect()
}

/// Feeds `events` as the central worker does: each event, then a watermark every 16 events.
fn feed(
    d: &mut dyn Detector,
    events: &[Event],
    from: usize,
    max_ts: &mut i64,
    out: &mut Vec<Alert>,
) {
    for (i, e) in events.iter().enumerate() {
        d.on_event(e, out);
        *max_ts = (*max_ts).max(e.timestamp_ns);
        if (from + i) % 16 == 15 {
            d.on_watermark(max_ts.saturating_sub(LATENESS), out);
        }
    }
}

fn fingerprint(alerts: &[Alert]) -> Vec<String> {
    let mut v: Vec<String> = alerts
        .iter()
        .map(|a| {
            json!({"rule": a.rule_id, "ts": a.timestamp_ns, "first": a.first_event_ns,
                   "keys": a.join_keys, "evidence": a.evidence, "reason": a.reason})
            .to_string()
        })
        .collect();
    v.sort();
    v
}

/// Runs `events` uninterrupted and cut at `cut` (export, JSON text, import into a fresh detector).
fn both(
    make: &dyn Fn() -> Box<dyn Detector>,
    events: &[Event],
    cut: usize,
) -> (Vec<String>, Vec<String>) {
    let mut whole = make();
    let mut out = Vec::new();
    let mut m = i64::MIN;
    feed(whole.as_mut(), events, 0, &mut m, &mut out);
    whole.on_watermark(i64::MAX, &mut out);

    let mut first = make();
    let mut out2 = Vec::new();
    let mut m2 = i64::MIN;
    feed(first.as_mut(), &events[..cut], 0, &mut m2, &mut out2);
    let text = serde_json::to_string(&first.export_state().unwrap()).unwrap();
    drop(first);
    let mut second = make();
    second
        .import_state(&serde_json::from_str(&text).unwrap())
        .unwrap();
    feed(second.as_mut(), &events[cut..], cut, &mut m2, &mut out2);
    second.on_watermark(i64::MAX, &mut out2);
    (fingerprint(&out), fingerprint(&out2))
}

#[test]
fn a_sequence_restored_mid_match_completes_it() {
    let make = || Box::new(ruleset()) as Box<dyn Detector>;
    let evs = vec![
        ev(10 * S, "h", "process", "a", 0, 1),
        ev(11 * S, "h", "process", "b", 0, 2),
        ev(12 * S, "h", "process", "b", 0, 3),
        ev(13 * S, "h", "network", "x", 4444, 4),
        ev(30 * S, "h", "process", "zzz", 0, 5),
    ];
    for cut in 0..=evs.len() {
        let (whole, resumed) = both(&make, &evs, cut);
        assert!(
            whole.iter().any(|a| a.contains("seq-runs-until")),
            "{whole:?}"
        );
        assert_eq!(whole, resumed, "cut after {cut} events");
    }
}

#[test]
fn until_and_maxspan_hold_across_a_restore() {
    let make = || Box::new(ruleset()) as Box<dyn Detector>;
    // `stop` between the halves cancels; a too-slow match expires.
    let evs = vec![
        ev(10 * S, "h", "process", "a", 0, 1),
        ev(11 * S, "h", "process", "b", 0, 2),
        ev(12 * S, "h", "process", "stop", 0, 3),
        ev(13 * S, "h", "process", "b", 0, 4),
        ev(14 * S, "h", "network", "x", 4444, 5),
        ev(20 * S, "g", "process", "a", 0, 6),
        ev(21 * S, "g", "process", "b", 0, 7),
        ev(22 * S, "g", "process", "b", 0, 8),
        ev(90 * S, "g", "network", "x", 4444, 9),
    ];
    for cut in 0..=evs.len() {
        let (whole, resumed) = both(&make, &evs, cut);
        assert!(
            !whole.iter().any(|a| a.contains("seq-runs-until")),
            "{whole:?}"
        );
        assert_eq!(whole, resumed, "cut after {cut} events");
    }
}

#[test]
fn any_cut_of_a_busy_stream_gives_the_same_alerts() {
    let make = || Box::new(ruleset()) as Box<dyn Detector>;
    let evs = stream(600);
    let mut rules = std::collections::BTreeSet::new();
    for cut in (0..=evs.len()).step_by(37) {
        let (whole, resumed) = both(&make, &evs, cut);
        for a in &whole {
            let v: serde_json::Value = serde_json::from_str(a).unwrap();
            rules.insert(v["rule"].as_str().unwrap().to_string());
        }
        assert_eq!(whole.len(), resumed.len(), "cut after {cut} events");
        assert_eq!(whole, resumed, "cut after {cut} events");
    }
    // The stream exercises every rule, so the comparison is not vacuous.
    assert_eq!(rules.len(), 4, "{rules:?}");
}

#[test]
fn a_threshold_window_survives_a_restore() {
    let make = || {
        Box::new(Threshold::new(
            "thr",
            filter(|e| e.get_path("process.name") == Some(&Value::Str("b".into()))),
            vec![FieldSpec::parse("host.name").unwrap()],
            3,
            20 * S,
            "b on {host.name}",
        )) as Box<dyn Detector>
    };
    let evs = stream(400);
    let mut fired = 0;
    for cut in (0..=evs.len()).step_by(23) {
        let (whole, resumed) = both(&make, &evs, cut);
        fired = whole.len();
        assert_eq!(whole, resumed, "cut after {cut} events");
    }
    assert!(fired > 3, "{fired}");
}

#[test]
fn another_version_or_a_broken_state_is_refused_by_name() {
    let mut set = ruleset();
    let mut st = set.export_state().unwrap();
    st["v"] = json!(2);
    let err = set.import_state(&st).unwrap_err().to_string();
    assert!(
        err.contains("eql-ruleset") && err.contains("version 2"),
        "{err}"
    );
    let mut st = ruleset().export_state().unwrap();
    st["reorder"] = json!({"e": [5]});
    let err = set.import_state(&st).unwrap_err().to_string();
    assert!(
        err.contains("reorder") && err.contains("event table"),
        "{err}"
    );
}

#[test]
fn a_changed_rule_starts_empty_the_others_keep_their_state() {
    let mut set = ruleset();
    let mut out = Vec::new();
    set.on_event(&ev(10 * S, "h", "process", "a", 0, 1), &mut out);
    set.on_watermark(20 * S, &mut out);
    assert!(set.pending() > 0);
    let st = set.export_state().unwrap();
    let text = RULES.replace("maxspan=40s", "maxspan=41s");
    let mut changed = RuleSet::new(RunnerConfig {
        lateness_ns: LATENESS,
        ..RunnerConfig::default()
    });
    changed.reload(parse_rule_file(&text, "t").unwrap());
    changed.import_state(&st).unwrap();
    let mut same = ruleset();
    same.import_state(&st).unwrap();
    assert!(
        same.pending() > changed.pending(),
        "{} {}",
        same.pending(),
        changed.pending()
    );
}
