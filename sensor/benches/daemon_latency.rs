//! Event time -> alert in the store, through the whole daemon (source channel, correlator stage, store
//! thread, SQLite WAL commit), at a fixed event rate.
//!
//! `cargo bench -p sensor --bench daemon_latency` (env: RATE events/s, default 50000; SECS, default 10;
//! ALERT_EVERY, default 100: one event in this many raises an alert, each with its own key).
//! Prints p50/p99/p99.9/max measured per alert from the store (alert `created_ns` - event time) and the
//! p99 bucket of the daemon's own histogram (which is taken after the commit).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use correlator::{Alert, Detector, Event, Severity, Value};
use sensor::config::Config;
use sensor::daemon::{Seams, SourceStarter, StartedSource};
use sensor::metrics::Metrics;
use sensor::rules::LoadedRule;
use tokio::sync::mpsc;

struct EveryNth;

impl Detector for EveryNth {
    fn id(&self) -> &str {
        "bench"
    }
    fn on_event(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        if ev.get_path("event.action").and_then(Value::as_str) == Some("alert") {
            let key = ev
                .get_path("event.sequence")
                .map_or(serde_json::Value::Null, Value::to_json);
            out.push(Alert {
                rule_id: "bench".into(),
                rule_name: "bench".into(),
                severity: Severity::Medium,
                risk_score: 47,
                attack: correlator::AttackRef::default(),
                timestamp_ns: ev.timestamp_ns,
                first_event_ns: ev.timestamp_ns,
                join_keys: vec![key],
                host: Some("bench-host".into()),
                user: None,
                process: Some("/usr/bin/bench".into()),
                settings: serde_json::Map::new(),
                reason: "bench".into(),
                evidence: vec![ev.to_json()],
            });
        }
    }
}

struct Channel(std::sync::Mutex<Option<mpsc::Receiver<Event>>>);

impl SourceStarter for Channel {
    fn name(&self) -> String {
        "bench".into()
    }
    fn start(
        self: Box<Self>,
        _: &Config,
        _: &Arc<Metrics>,
    ) -> Result<Option<StartedSource>, String> {
        let events = self.0.lock().unwrap().take().unwrap();
        Ok(Some(StartedSource {
            name: "bench".into(),
            events: events.into(),
            detail: "generator".into(),
            status: None,
            stop: None,
            acked: None,
        }))
    }
}

fn wall_ns() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument (a filter) is ignored.
    let rate = env("RATE", 50_000);
    let secs = env("SECS", 10);
    let every = env("ALERT_EVERY", 100).max(1);
    let dir = tempfile::tempdir().unwrap();
    let mut kernel = toml::Table::new();
    kernel.insert("enabled".into(), toml::Value::Boolean(false));
    let cfg = Config {
        state_dir: dir.path().to_path_buf(),
        kernel,
        api: sensor::config::ApiConfig {
            socket: dir.path().join("control.sock"),
            ..Default::default()
        },
        ..Default::default()
    };

    let (tx, rx) = mpsc::channel(65_536);
    let metrics = Metrics::new();
    let seams = Seams {
        rules: Arc::new(|_: &sensor::config::RulesConfig| {
            Ok(vec![LoadedRule {
                detector: Box::new(EveryNth) as Box<dyn Detector>,
                version: 1,
            }])
        }),
        sources: vec![Box::new(Channel(std::sync::Mutex::new(Some(rx))))],
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let m = metrics.clone();
    let daemon = rt.spawn(sensor::daemon::run_with_metrics(cfg, None, seams, m));
    let total = rate * secs;
    let sent = rt.block_on(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Bursts every millisecond (the kernel sensor's reader also delivers in batches).
        let per_tick = (rate / 1000).max(1);
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let start = Instant::now();
        let mut n: u64 = 0;
        while n < total {
            tick.tick().await;
            for _ in 0..per_tick {
                let mut ev = Event::new(wall_ns());
                let action = if n.is_multiple_of(every) {
                    "alert"
                } else {
                    "noise"
                };
                ev.insert("event.action", Value::Str(action.into()));
                ev.insert("event.sequence", Value::Int(i64::try_from(n).unwrap()));
                ev.insert("process.executable", Value::Str("/usr/bin/bench".into()));
                ev.insert("host.name", Value::Str("bench-host".into()));
                tx.send(ev).await.unwrap();
                n += 1;
            }
        }
        let took = start.elapsed();
        drop(tx);
        tokio::time::sleep(Duration::from_secs(1)).await;
        (n, took)
    });
    // SIGTERM to ourselves: the daemon's own clean shutdown.
    // SAFETY: raise has no preconditions.
    unsafe { libc::raise(libc::SIGTERM) };
    let summary = rt.block_on(daemon).unwrap().unwrap();

    let store = sensor::store::Store::open(&sensor::store::StoreConfig::new(
        dir.path().join("alerts.db"),
    ))
    .unwrap();
    let alerts = store
        .list(&sensor::store::AlertFilter {
            limit: Some(u32::MAX),
            ..Default::default()
        })
        .unwrap();
    let mut lat: Vec<i64> = alerts
        .iter()
        .map(|a| a.created_ns - a.last_seen_ns)
        .collect();
    lat.sort_unstable();
    let pct = |q: f64| {
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let i = (((lat.len() as f64) * q).ceil() as usize).clamp(1, lat.len()) - 1;
        #[allow(clippy::cast_precision_loss)]
        let ms = lat[i] as f64 / 1e6;
        ms
    };
    #[allow(clippy::cast_precision_loss)]
    let achieved = sent.0 as f64 / sent.1.as_secs_f64();
    println!("daemon_latency: {} events in {:.2}s ({achieved:.0} events/s offered, target {rate}/s), {} alerts stored", sent.0, sent.1.as_secs_f64(), alerts.len());
    println!("  events handed to detectors: {}", summary.events_out);
    println!(
        "  event time -> alert written to store: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        pct(0.50),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
    println!(
        "  daemon histogram (after commit): p99 <= {} s",
        metrics
            .latency
            .quantile_upper_bound(0.99)
            .map_or_else(|| "overflow".to_string(), |b| b.to_string())
    );
}
