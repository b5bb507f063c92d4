//! Counters, gauges and the event-time-to-alert latency histogram, exported in the Prometheus text format.
//!
//! Architecture Invariant: hot paths only touch atomics (no locks, no allocation); the registry of
//! per-source and per-rule series is locked only when a source or rule is added and when `/metrics`
//! is scraped.

mod listeners;
pub mod progress;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

/// Per-source counters.
#[derive(Debug, Default)]
pub struct SourceCounters {
    /// Events read from the source.
    pub events_in: AtomicU64,
    /// Events handed to the detectors.
    pub events_out: AtomicU64,
    /// Events the source reports as lost (kernel ring buffer overflow, queue full).
    pub lost: AtomicU64,
    /// Records rejected as malformed.
    pub rejected: AtomicU64,
}

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A fixed-bucket histogram of seconds.
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            buckets: LATENCY_BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe_ns(&self, ns: i64) {
        let ns = u64::try_from(ns).unwrap_or(0);
        #[allow(clippy::cast_precision_loss)]
        let secs = ns as f64 / 1e9;
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    // Long by design: one block per exported metric family, in exposition order.
    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, n) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cum += n.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        #[allow(clippy::cast_precision_loss)]
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Every metric of the daemon. Shared as `Arc<Metrics>`.
#[derive(Debug, Default)]
pub struct Metrics {
    sources: Mutex<BTreeMap<String, Arc<SourceCounters>>>,
    rules: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    /// Partial matches held by all detectors.
    pub pending: AtomicI64,
    /// Partial matches the loaded detectors dropped to stay within their bounds.
    pub pending_shed: AtomicU64,
    pub rules_loaded: AtomicI64,
    /// Alerts written as new rows / folded into an existing alert.
    pub alerts_new: AtomicU64,
    pub alerts_repeated: AtomicU64,
    pub store_bytes: AtomicU64,
    pub store_errors: AtomicU64,
    pub output_errors: AtomicU64,
    /// Alerts an output could not keep up with.
    pub output_dropped: AtomicU64,
    pub ingest_rejects: AtomicU64,
    pub ingest_clients: AtomicI64,
    /// Records accepted as `ecs` that carry no `event.category` nor `event.kind`.
    pub ingest_ecs_uncategorized: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// Event time of the closing event -> alert committed to the store.
    pub latency: Histogram,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// The counters of source `name` (created on first use).
    pub fn source(&self, name: &str) -> Arc<SourceCounters> {
        let mut m = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        m.entry(name.to_string()).or_default().clone()
    }

    pub fn sources(&self) -> Vec<(String, Arc<SourceCounters>)> {
        let m = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The match counter of rule `id` (created on first use).
    pub fn rule(&self, id: &str) -> Arc<AtomicU64> {
        let mut m = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        m.entry(id.to_string()).or_default().clone()
    }

    /// Renders the Prometheus text exposition format (version 0.0.4).
    // Over 100 lines on purpose: the exposition text of every metric family, one after another.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let sources = self.sources();
        let per_source = |f: &dyn Fn(&SourceCounters) -> u64| {
            sources
                .iter()
                .map(|(n, c)| (format!("{{source=\"{}\"}}", escape(n)), f(c).to_string()))
                .collect()
        };
        family(
            "sensor_events_in_total",
            "counter",
            "Events read from each source.",
            per_source(&|c| c.events_in.load(Relaxed)),
        );
        family(
            "sensor_events_out_total",
            "counter",
            "Events handed to the detectors, per source.",
            per_source(&|c| c.events_out.load(Relaxed)),
        );
        family(
            "sensor_events_lost_total",
            "counter",
            "Events lost by each source (ring buffer overflow, full queues).",
            per_source(&|c| c.lost.load(Relaxed)),
        );
        family(
            "sensor_events_rejected_total",
            "counter",
            "Malformed records rejected, per source.",
            per_source(&|c| c.rejected.load(Relaxed)),
        );
        let rules: Vec<(String, String)> = {
            let m = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
            m.iter()
                .map(|(k, v)| {
                    (
                        format!("{{rule=\"{}\"}}", escape(k)),
                        v.load(Relaxed).to_string(),
                    )
                })
                .collect()
        };
        family(
            "sensor_rule_matches_total",
            "counter",
            "Alerts emitted by each rule (before dedup).",
            rules,
        );
        let one = |v: String| vec![(String::new(), v)];
        family(
            "sensor_pending_matches",
            "gauge",
            "Partial matches held by the detectors (pending sequences, open windows).",
            one(self.pending.load(Relaxed).to_string()),
        );
        family(
            "sensor_pending_shed",
            "gauge",
            "Partial matches the loaded detectors dropped to stay within [rules] max_pending / max_pending_bytes (since each was loaded).",
            one(self.pending_shed.load(Relaxed).to_string()),
        );
        family(
            "sensor_field_overflow_total",
            "counter",
            "New field names turned into `_overflow` because the field table is full (correlator::MAX_FIELDS).",
            one(correlator::Field::overflowed().to_string()),
        );
        family(
            "sensor_rules_loaded",
            "gauge",
            "Detectors loaded.",
            one(self.rules_loaded.load(Relaxed).to_string()),
        );
        family(
            "sensor_alerts_new_total",
            "counter",
            "Alerts stored as new rows.",
            one(self.alerts_new.load(Relaxed).to_string()),
        );
        family(
            "sensor_alerts_repeated_total",
            "counter",
            "Alerts folded into an existing alert by dedup.",
            one(self.alerts_repeated.load(Relaxed).to_string()),
        );
        family(
            "sensor_store_bytes",
            "gauge",
            "Size of the alert store (database and WAL).",
            one(self.store_bytes.load(Relaxed).to_string()),
        );
        family(
            "sensor_store_errors_total",
            "counter",
            "Failed store writes.",
            one(self.store_errors.load(Relaxed).to_string()),
        );
        family(
            "sensor_output_errors_total",
            "counter",
            "Failed output deliveries (after retries).",
            one(self.output_errors.load(Relaxed).to_string()),
        );
        family(
            "sensor_output_dropped_total",
            "counter",
            "Alerts an output fell too far behind to deliver.",
            one(self.output_dropped.load(Relaxed).to_string()),
        );
        family(
            "sensor_ingest_rejects_total",
            "counter",
            "Records rejected by network ingest.",
            one(self.ingest_rejects.load(Relaxed).to_string()),
        );
        family(
            "sensor_ingest_ecs_uncategorized_total",
            "counter",
            "Records accepted as ECS that carry no event.category nor event.kind (wrong format?).",
            one(self.ingest_ecs_uncategorized.load(Relaxed).to_string()),
        );
        family(
            "sensor_ingest_clients",
            "gauge",
            "Connected network ingest clients.",
            one(ingest::agents::activity().connected_count().to_string()),
        );
        family(
            "sensor_reloads_total",
            "counter",
            "Successful rule/setting reloads.",
            one(self.reloads.load(Relaxed).to_string()),
        );
        family(
            "sensor_reload_failures_total",
            "counter",
            "Rejected reloads (the previous rules stay).",
            one(self.reload_failures.load(Relaxed).to_string()),
        );
        listeners::render(&mut out);
        self.latency.render(
            &mut out,
            "sensor_alert_latency_seconds",
            "Event time of the closing event to the alert committed in the store.",
        );
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Histogram {
    /// The upper bound (seconds) of the bucket holding quantile `q` (0..=1); `None` when empty or beyond
    /// the last bucket.
    pub fn quantile_upper_bound(&self, q: f64) -> Option<f64> {
        let count = self.count.load(Relaxed);
        if count == 0 {
            return None;
        }
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let rank = ((count as f64) * q).ceil().max(1.0) as u64;
        let mut cum = 0;
        for (b, n) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cum += n.load(Relaxed);
            if cum >= rank {
                return Some(*b);
            }
        }
        None
    }
}
