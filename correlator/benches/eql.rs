//! EQL engine throughput on a realistic event mix.
//!
//! - `single_event_rules/100`: 100 real Elastic single-event rules from the corpus, one core.
//! - `sequence_rules/50`: 50 sequence rules keyed by `process.entity_id` / `host.id`, 100k keys.
//! - pending memory: printed once before the timings, for two `max_pending` bounds.
//!
//! `cargo bench -p correlator --bench eql`
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;

use correlator::eql::sequence::SeqLimits;
use correlator::{Detector, RuleSet, RunnerConfig};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn single_event(c: &mut Criterion) {
    let events = common::events(100_000, 100_000);
    let rules = common::elastic_single_event_rules(100);
    assert_eq!(rules.len(), 100);
    let mut set = RuleSet::new(RunnerConfig::default());
    let rep = set.reload(rules);
    assert!(rep.failed.is_empty());
    println!(
        "single-event rule set: {} rules, {} reached through the value index",
        set.len(),
        set.indexed_rules()
    );
    let mut g = c.benchmark_group("single_event_rules");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.sample_size(10);
    g.bench_function("100", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            for e in &events {
                set.on_event(black_box(e), &mut out);
            }
            out.clear();
        })
    });
    g.finish();
}

fn sequences(c: &mut Criterion) {
    let events = common::events(200_000, 100_000);
    let rules = common::sequence_rules(50);
    let mut g = c.benchmark_group("sequence_rules");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.sample_size(10);
    g.bench_function("50", |b| {
        b.iter_batched(
            || {
                let mut set = RuleSet::new(RunnerConfig::default());
                set.reload(rules.clone());
                set
            },
            |mut set| {
                let mut out = Vec::new();
                for e in &events {
                    set.on_event(black_box(e), &mut out);
                }
                (set, out.len())
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn pending_memory() {
    let events = common::events(200_000, 100_000);
    for max_pending in [100_000usize, 1_000] {
        let mut set = RuleSet::new(RunnerConfig {
            lateness_ns: 0,
            limits: SeqLimits {
                max_pending,
                ..SeqLimits::default()
            },
        });
        set.reload(common::sequence_rules(50));
        let mut out = Vec::new();
        for e in &events {
            set.on_event(e, &mut out);
        }
        let st = set.stats();
        println!(
            "pending state, 50 sequence rules, 200k events, 100k keys, max_pending={max_pending}/rule: {} partials, ~{:.1} MiB, {} alerts, {} evicted, {} expired",
            set.pending(),
            set.pending_bytes() as f64 / (1024.0 * 1024.0),
            out.len(),
            st.evicted,
            st.expired
        );
        let want = if max_pending == 1_000 {
            SEQ_ALERTS_BOUNDED
        } else {
            SEQ_ALERTS
        };
        assert_eq!(out.len(), want, "pending-memory pass: alert count changed");
    }
}

/// Same file and queries as `pyeql_compare.py` (endgame dialect: categories in `event_type`).
fn compare_with_python(path: &str) {
    use correlator::eql::{batch, compile, Options};
    use std::sync::Arc;
    use std::time::Instant;
    let queries = [
        (
            "single",
            r#"process where process.name in ("curl", "wget") and process.parent.name == "bash""#,
        ),
        (
            "sequence",
            r#"sequence by host.id [process where process.name == "bash"] [network where destination.port == 4444]"#,
        ),
    ];
    for (name, text) in queries {
        let (t0, c0) = (Instant::now(), thread_cpu_s());
        let data = std::fs::read_to_string(path).unwrap();
        let events: Vec<Arc<correlator::Event>> = data
            .lines()
            .map(|l| {
                Arc::new(correlator::Event::from_json(&serde_json::from_str(l).unwrap()).unwrap())
            })
            .collect();
        let (t1, c1) = (Instant::now(), thread_cpu_s());
        let q = compile(text, &Options::endgame(false)).unwrap();
        let n = batch::run(&q, &events).len();
        let (t2, c2) = (Instant::now(), thread_cpu_s());
        let len = events.len() as f64;
        println!(
            "rust {name}: {n} results; wall: parse {:.3}s, eval {:.4}s; CPU: parse {:.3}s, eval {:.4}s ({:.0} events per CPU-second eval, {:.0} parse+eval)",
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            c1 - c0,
            c2 - c1,
            len / (c2 - c1),
            len / (c2 - c0)
        );
    }
}

fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass; CLOCK_THREAD_CPUTIME_ID is always valid.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// One pass over the events, timed by wall clock and by this thread's CPU time: on a shared, loaded
/// machine the CPU figure is what one core really does.
#[inline(never)]
fn cpu_pass(label: &str, mut set: RuleSet, events: &[correlator::Event], want_alerts: usize) {
    let mut out = Vec::new();
    let (w0, c0) = (std::time::Instant::now(), thread_cpu_s());
    for e in events {
        set.on_event(black_box(e), &mut out);
    }
    let (wall, cpu) = (w0.elapsed().as_secs_f64(), thread_cpu_s() - c0);
    let n = events.len() as f64;
    println!(
        "{label}: {} events, wall {wall:.3}s ({:.0} events/s), thread CPU {cpu:.3}s ({:.0} events per CPU-second), {} alerts",
        events.len(),
        n / wall,
        n / cpu,
        out.len()
    );
    assert_eq!(out.len(), want_alerts, "{label}: alert count changed");
}

/// Events per batch in the hot-event passes (about 0.5 MB of events: they stay in cache).
const HOT_BATCH: u64 = 256;

/// Like [`cpu_pass`], but each batch of [`HOT_BATCH`] events is built just before it is evaluated
/// (as events arrive from a decoder) and only the evaluation is timed. The cold pass above reads
/// 100k-200k pre-built events (hundreds of MB) that are no longer in any cache, which a pipeline
/// fed by a decoder does not; this pass measures the engine without that cost. Same events, same
/// order, same alerts.
#[inline(never)]
fn cpu_pass_hot(label: &str, mut set: RuleSet, n: u64, keys: u64, want_alerts: usize) {
    let mut out = Vec::new();
    let mut cpu = 0.0;
    common::event_batches(n, keys, HOT_BATCH, |batch| {
        let c0 = thread_cpu_s();
        for e in batch {
            set.on_event(black_box(e), &mut out);
        }
        cpu += thread_cpu_s() - c0;
    });
    println!(
        "{label}: {n} events (hot: built in batches of {HOT_BATCH} just before evaluation), thread CPU {cpu:.3}s ({:.0} events per CPU-second), {} alerts",
        n as f64 / cpu,
        out.len()
    );
    assert_eq!(out.len(), want_alerts, "{label}: alert count changed");
}

/// Alert counts of the workload: any engine change must keep them exactly.
const SINGLE_ALERTS: usize = 106;
const SEQ_ALERTS: usize = 2101;
const SEQ_ALERTS_BOUNDED: usize = 1400;

/// `EQL_BENCH_ONLY=single|seq|hot` runs those CPU passes and nothing else (for
/// `valgrind --tool=callgrind --toggle-collect='*cpu_pass*'`).
fn cpu_figures(only: Option<&str>) {
    if only.is_none_or(|o| o == "single") {
        let events = common::events(100_000, 100_000);
        let mut set = RuleSet::new(RunnerConfig::default());
        set.reload(common::elastic_single_event_rules(100));
        cpu_pass("cpu single_event_rules/100", set, &events, SINGLE_ALERTS);
    }
    if only.is_none_or(|o| o == "seq") {
        let events = common::events(200_000, 100_000);
        let mut set = RuleSet::new(RunnerConfig::default());
        set.reload(common::sequence_rules(50));
        cpu_pass("cpu sequence_rules/50", set, &events, SEQ_ALERTS);
    }
    if only.is_none_or(|o| o == "hot") {
        let mut set = RuleSet::new(RunnerConfig::default());
        set.reload(common::elastic_single_event_rules(100));
        cpu_pass_hot(
            "cpu hot single_event_rules/100",
            set,
            100_000,
            100_000,
            SINGLE_ALERTS,
        );
        let mut set = RuleSet::new(RunnerConfig::default());
        set.reload(common::sequence_rules(50));
        cpu_pass_hot(
            "cpu hot sequence_rules/50",
            set,
            200_000,
            100_000,
            SEQ_ALERTS,
        );
    }
}

fn all(c: &mut Criterion) {
    if let Some(path) = std::env::var_os("EQL_COMPARE_FILE") {
        compare_with_python(&path.to_string_lossy());
        return;
    }
    if let Ok(only) = std::env::var("EQL_BENCH_ONLY") {
        cpu_figures(Some(&only));
        return;
    }
    pending_memory();
    cpu_figures(None);
    single_event(c);
    sequences(c);
}

criterion_group!(benches, all);
criterion_main!(benches);
