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
    for max_pending in [100_000usize, 10_000] {
        let mut set = RuleSet::new(RunnerConfig {
            lateness_ns: 0,
            limits: SeqLimits { max_pending },
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
    }
}

fn all(c: &mut Criterion) {
    pending_memory();
    single_event(c);
    sequences(c);
}

criterion_group!(benches, all);
criterion_main!(benches);
