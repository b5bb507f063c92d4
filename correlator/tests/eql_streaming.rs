//! Streaming behaviour: the sequence engine against a brute-force reference on random streams (in
//! order and shuffled within the lateness window), rule-set dispatch, hot reload, memory bounds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use correlator::eql::sequence::SeqLimits;
use correlator::eql::{compile, Options, QueryKind};
use correlator::rules::parse_rule_file;
use correlator::{Alert, Detector, Event, RuleRunner, RuleSet, RunnerConfig, Value};
use proptest::prelude::*;

const MS: i64 = 1_000_000;

fn event(id: i64, ts_ms: i64, cat: &str, k: i64, v: i64) -> Event {
    let mut e = Event::new(ts_ms * MS);
    e.insert("event.category", Value::Str(cat.into()));
    e.insert("k", Value::Int(k));
    e.insert("v", Value::Int(v));
    e.insert("id", Value::Int(id));
    e
}

fn id_of(e: &serde_json::Value) -> i64 {
    e["id"].as_i64().unwrap()
}

/// Reference semantics, written as plainly as possible: per key and stage at most one partial (the
/// newest); an event is tried against the stages from last to first; a partial moves on only within
/// maxspan of its first event; an `until` event for a key drops all its partials.
fn reference(query: &str, events: &[Event]) -> Vec<Vec<i64>> {
    let q = compile(query, &Options::elastic()).unwrap();
    let QueryKind::Sequence {
        steps,
        maxspan_ns,
        until,
    } = q.kind()
    else {
        panic!()
    };
    let keyed = query.contains(" by k");
    let key = |e: &Event| {
        if keyed {
            e.get_path("k").cloned().unwrap()
        } else {
            Value::Null
        }
    };
    let n = steps.len();
    // partials: (key, stage, start ts, ids)
    let mut partials: Vec<(Value, usize, i64, Vec<i64>)> = Vec::new();
    let mut out = Vec::new();
    for e in events {
        let id = e.get_path("id").and_then(Value::as_i64).unwrap();
        if let Some(u) = until {
            if u.filter.matches(e) {
                partials.retain(|p| p.0 != key(e));
            }
        }
        for s in (0..n).rev() {
            if !steps[s].filter.matches(e) {
                continue;
            }
            if s == 0 {
                partials.retain(|p| !(p.0 == key(e) && p.1 == 0));
                if n == 1 {
                    out.push(vec![id]);
                } else {
                    partials.push((key(e), 0, e.timestamp_ns, vec![id]));
                }
                continue;
            }
            let Some(pos) = partials.iter().position(|p| p.0 == key(e) && p.1 == s - 1) else {
                continue;
            };
            let mut p = partials.remove(pos);
            if maxspan_ns.is_some_and(|m| e.timestamp_ns - p.2 > m) {
                continue;
            }
            p.3.push(id);
            if s + 1 == n {
                out.push(p.3);
            } else {
                partials.retain(|x| !(x.0 == key(e) && x.1 == s));
                p.1 = s;
                partials.push(p);
            }
        }
    }
    out
}

fn engine(query: &str, arrival: &[Event], lateness_ms: i64) -> (Vec<Vec<i64>>, u64) {
    let q = compile(query, &Options::elastic()).unwrap();
    let cfg = RunnerConfig {
        lateness_ns: lateness_ms * MS,
        limits: SeqLimits {
            max_pending: 1_000_000,
            ..SeqLimits::default()
        },
    };
    let mut r = RuleRunner::new(
        correlator::RuleMeta {
            id: "p".into(),
            ..Default::default()
        },
        q,
        cfg,
    );
    let mut alerts: Vec<Alert> = Vec::new();
    for e in arrival {
        r.on_event(e, &mut alerts);
    }
    r.flush(&mut alerts);
    (
        alerts
            .iter()
            .map(|a| a.evidence.iter().map(id_of).collect())
            .collect(),
        r.stats.late,
    )
}

const QUERIES: &[&str] = &[
    "sequence by k [a where v == 1] [b where v == 2]",
    "sequence by k with maxspan=40ms [a where v <= 1] [any where v == 2] [a where true]",
    "sequence by k [a where true] [b where v != 0] until [c where v == 3]",
    "sequence [a where true] by k [b where true] by k [c where true] by k",
    "sequence by k with maxspan=25ms [a where v == 1] with runs=2 [b where true]",
    "sequence with maxspan=30ms [any where v == 0] [any where v == 1]",
];

fn stream() -> impl Strategy<Value = Vec<(u8, i64, i64, i64)>> {
    // (category, key, value, gap ms)
    prop::collection::vec((0u8..3, 0i64..3, 0i64..4, 1i64..15), 0..60)
}

fn build(raw: &[(u8, i64, i64, i64)]) -> Vec<Event> {
    let mut ts = 0;
    raw.iter()
        .enumerate()
        .map(|(i, (c, k, v, gap))| {
            ts += gap;
            event(i as i64, ts, ["a", "b", "c"][*c as usize], *k, *v)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn sequences_match_reference_in_order(raw in stream(), qi in 0..QUERIES.len()) {
        let events = build(&raw);
        let (got, late) = engine(QUERIES[qi], &events, 0);
        prop_assert_eq!(late, 0);
        prop_assert_eq!(got, reference(QUERIES[qi], &events));
    }

    #[test]
    fn sequences_match_reference_out_of_order(raw in stream(), delays in prop::collection::vec(0i64..=20, 60), qi in 0..QUERIES.len()) {
        let events = build(&raw);
        // Arrival order: by time plus a delay of at most the lateness window (20 ms).
        let mut arrival: Vec<(i64, usize)> = events.iter().enumerate().map(|(i, e)| (e.timestamp_ns / MS + delays[i], i)).collect();
        arrival.sort();
        let shuffled: Vec<Event> = arrival.iter().map(|(_, i)| events[*i].clone()).collect();
        let (got, late) = engine(QUERIES[qi], &shuffled, 20);
        prop_assert_eq!(late, 0);
        prop_assert_eq!(got, reference(QUERIES[qi], &events));
    }
}

#[test]
fn late_events_beyond_the_window_are_counted() {
    let q = "sequence by k [a where true] [b where true]";
    let evs = vec![
        event(0, 100, "a", 1, 0),
        event(1, 200, "a", 1, 0),
        event(2, 50, "b", 1, 0),
        event(3, 210, "b", 1, 0),
    ];
    let (got, late) = engine(q, &evs, 10);
    assert_eq!(late, 1, "event 2 is 150 ms late with a 10 ms window");
    assert_eq!(got, vec![vec![1, 3]]);
}

#[test]
fn pending_state_is_bounded_and_evictions_counted() {
    let q = compile(
        "sequence by k [a where true] [b where true]",
        &Options::elastic(),
    )
    .unwrap();
    let cfg = RunnerConfig {
        lateness_ns: 0,
        limits: SeqLimits {
            max_pending: 1000,
            ..SeqLimits::default()
        },
    };
    let mut r = RuleRunner::new(Default::default(), q, cfg);
    let mut out = Vec::new();
    for i in 0..10_000 {
        r.on_event(&event(i, i, "a", i, 0), &mut out);
        assert!(r.pending() <= 1000);
    }
    assert!(r.stats.seq.evicted >= 9000, "{:?}", r.stats);
    // The newest keys are still pending and complete.
    r.on_event(&event(10_001, 20_000, "b", 9_999, 0), &mut out);
    assert_eq!(out.len(), 1);
    // The oldest were evicted, so they do not.
    r.on_event(&event(10_002, 20_001, "b", 0, 0), &mut out);
    assert_eq!(out.len(), 1);
}

#[test]
fn pending_bytes_are_bounded_per_rule_and_what_is_shed_is_counted() {
    // A sequence flood: every event opens a partial for a new key and carries a 100 kB record.
    let q = compile(
        "sequence by k [a where true] [b where true]",
        &Options::elastic(),
    )
    .unwrap();
    let budget = 4 << 20;
    let cfg = RunnerConfig {
        lateness_ns: 0,
        limits: SeqLimits {
            max_pending: 1_000_000,
            max_pending_bytes: budget,
        },
    };
    let mut r = RuleRunner::new(Default::default(), q, cfg);
    let raw: std::sync::Arc<str> = "x".repeat(100_000).into();
    let mut out = Vec::new();
    let mut peak = 0;
    for i in 0..2_000 {
        let mut e = event(i, i, "a", i, 0);
        e.raw = Some(raw.clone());
        r.on_event(&e, &mut out);
        peak = peak.max(r.pending_event_bytes());
        assert!(
            r.pending_event_bytes() <= budget,
            "at {i}: {}",
            r.pending_event_bytes()
        );
    }
    assert!(peak > budget / 2, "the budget was never approached: {peak}");
    assert!(
        r.pending() < 45,
        "{} partials of 100 kB in 4 MiB",
        r.pending()
    );
    assert!(
        r.stats.seq.evicted_bytes >= 1_900 && r.stats.seq.evicted == r.stats.seq.evicted_bytes,
        "{:?}",
        r.stats.seq
    );
    // The newest keys still complete; completing gives their bytes back.
    r.on_event(&event(5_000, 5_000, "b", 1_999, 0), &mut out);
    assert_eq!(out.len(), 1);
    let left = r.pending();
    for k in 0..2_000 {
        r.on_event(&event(6_000 + k, 6_000 + k, "b", k, 0), &mut out);
    }
    assert_eq!(out.len(), 1 + left);
    assert_eq!(r.pending(), 0);
    assert_eq!(r.pending_event_bytes(), 0, "bytes not given back");
}

#[test]
fn missing_events_and_trailing_windows() {
    // A missing step between two steps cancels; a trailing one waits for the window to close.
    let q = "sequence by k with maxspan=100ms [a where true] ![c where true] [b where true]";
    let (got, _) = engine(
        q,
        &[
            event(0, 0, "a", 1, 0),
            event(1, 10, "c", 1, 0),
            event(2, 20, "b", 1, 0),
        ],
        0,
    );
    assert!(got.is_empty());
    let (got, _) = engine(
        q,
        &[
            event(0, 0, "a", 1, 0),
            event(1, 10, "c", 2, 0),
            event(2, 20, "b", 1, 0),
        ],
        0,
    );
    assert_eq!(got, vec![vec![0, 2]]);
    let q = "sequence by k with maxspan=100ms [a where true] [b where true] ![c where true]";
    let (got, _) = engine(
        q,
        &[
            event(0, 0, "a", 1, 0),
            event(1, 10, "b", 1, 0),
            event(2, 50, "c", 1, 0),
        ],
        0,
    );
    assert!(got.is_empty(), "c inside the window cancels");
    let (got, _) = engine(
        q,
        &[
            event(0, 0, "a", 1, 0),
            event(1, 10, "b", 1, 0),
            event(2, 150, "c", 1, 0),
        ],
        0,
    );
    assert_eq!(got, vec![vec![0, 1]], "c after the window does not");
}

fn rules_text(q2: &str) -> String {
    format!(
        r#"
[[rule]]
id = "seq"
name = "a then b"
query = "sequence by k [a where true] [b where true]"

[[rule]]
id = "single"
name = "c event"
severity = "high"
query = '{q2}'
"#
    )
}

#[test]
fn ruleset_dispatches_by_category_and_reload_keeps_pending() {
    let mut set = RuleSet::new(RunnerConfig::default());
    let defs = parse_rule_file(&rules_text("c where v == 1"), "mem").unwrap();
    let rep = set.reload(defs);
    assert_eq!(rep.added.len(), 2);
    let mut out = Vec::new();
    set.on_event(&event(0, 0, "a", 7, 0), &mut out);
    set.on_event(&event(1, 1, "c", 7, 1), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].rule_id, "single");
    assert_eq!(set.pending(), 1);
    let stats = set.rule_stats();
    let seen = |id: &str| stats.iter().find(|(i, _)| *i == id).unwrap().1.events;
    assert_eq!(seen("seq"), 1, "the sequence rule only saw its category");
    assert_eq!(seen("single"), 1);

    // Reload: change the single rule, keep the sequence rule; its pending partial survives.
    let rep = set.reload(parse_rule_file(&rules_text("c where v == 2"), "mem").unwrap());
    assert_eq!(rep.kept, vec!["seq".to_string()]);
    assert_eq!(rep.changed, vec!["single".to_string()]);
    assert_eq!(set.pending(), 1);
    set.on_event(&event(2, 2, "b", 7, 0), &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].rule_id, "seq");
    assert_eq!(out[1].join_keys, vec![serde_json::json!(7)]);

    // A broken rule in a reload is reported and the old version keeps running.
    let rep = set.reload(parse_rule_file(&rules_text("c where v =="), "mem").unwrap());
    assert_eq!(rep.failed.len(), 1);
    assert_eq!(set.len(), 2);
}

#[test]
fn ruleset_orders_events_within_lateness() {
    let mut set = RuleSet::new(RunnerConfig {
        lateness_ns: 50 * MS,
        ..Default::default()
    });
    set.reload(parse_rule_file(&rules_text("c where v == 1"), "mem").unwrap());
    let mut out = Vec::new();
    // b arrives before a but is newer: still a match.
    set.on_event(&event(1, 20, "b", 1, 0), &mut out);
    set.on_event(&event(0, 10, "a", 1, 0), &mut out);
    set.on_event(&event(2, 500, "c", 1, 1), &mut out);
    assert_eq!(out.iter().filter(|a| a.rule_id == "single").count(), 1);
    assert_eq!(out.iter().filter(|a| a.rule_id == "seq").count(), 1);
    set.on_event(&event(3, 5, "a", 1, 0), &mut out);
    assert_eq!(set.stats().late, 1);
    let a = out.iter().find(|a| a.rule_id == "seq").unwrap();
    assert_eq!(a.evidence.iter().map(id_of).collect::<Vec<_>>(), vec![0, 1]);
}

#[test]
fn null_join_keys_only_join_when_optional() {
    let mk = |id: i64, ts: i64, cat: &str| {
        let mut e = Event::new(ts * MS);
        e.insert("event.category", Value::Str(cat.into()));
        e.insert("id", Value::Int(id));
        e
    };
    let evs = [mk(0, 0, "a"), mk(1, 1, "b")];
    let (got, _) = engine("sequence by k [a where true] [b where true]", &evs, 0);
    assert!(got.is_empty(), "a null non-optional key joins nothing");
    let (got, _) = engine("sequence by ?k [a where true] [b where true]", &evs, 0);
    assert_eq!(got, vec![vec![0, 1]], "an optional key may be null");
}
