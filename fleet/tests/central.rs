//! Central correlation against real nats-server and PostgreSQL: two correlator nodes split the
//! partitions through leases in a JetStream KV bucket; one is killed outright (its runtime dropped,
//! nothing released); the other takes its partitions over; every expected alert is in PostgreSQL
//! exactly once. Events come from an edge publishing its real ingest spool.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Result};
use correlator::{parse_rule_file, Detector, RuleSet, RunnerConfig};
use fleet::bus::{Bus, Kind};
use fleet::central::{self, CentralConfig, CentralStats, DetectorFactory};
use fleet::edge::{encode_record, EdgePublisher, Journal};
use fleet::partition::{partition_key, partition_of};
use fleet::pg::{AlertFilter, FleetStore};
use fleet::FleetConfig;

mod common;
use common::SpoolJournal;

const PARTITIONS: u32 = 4;
const LATENESS_NS: i64 = 3_000_000_000;
const RULES: &str = r#"
[[rule]]
id = "curl-then-c2"
name = "curl then C2 port"
query = 'sequence by host.name with maxspan=30s [process where process.name == "curl"] [network where destination.port == 4444]'
[[rule]]
id = "evil"
name = "evil process"
query = 'process where process.name == "evil"'
"#;

fn detectors() -> DetectorFactory {
    Arc::new(|| {
        // Events of many hosts share a partition, so they are not in event-time order: the rules
        // reorder within a lateness window, as the daemon's do.
        let mut set = RuleSet::new(RunnerConfig {
            lateness_ns: LATENESS_NS,
            ..RunnerConfig::default()
        });
        let defs = parse_rule_file(RULES, "test").unwrap_or_default();
        let rep = set.reload(defs);
        assert!(rep.failed.is_empty(), "{:?}", rep.failed);
        vec![Box::new(set) as Box<dyn Detector>]
    })
}

/// Events of `host`: curl, then a connection to 4444 (the sequence), an evil process, and noise.
fn host_events(host: u32, base_s: i64) -> Vec<Vec<u8>> {
    let h = format!("host-{host}");
    let t = |s: i64| chrono_like(base_s + s);
    let evs = [
        serde_json::json!({"@timestamp": t(0), "host": {"name": h}, "event": {"category": ["process"], "type": ["start"]}, "process": {"name": "ls", "pid": 1}}),
        serde_json::json!({"@timestamp": t(1), "host": {"name": h}, "event": {"category": ["process"], "type": ["start"]}, "process": {"name": "curl", "pid": 2}}),
        serde_json::json!({"@timestamp": t(2), "host": {"name": h}, "event": {"category": ["network"]}, "destination": {"port": 4444}, "process": {"name": "curl", "pid": 2}}),
        serde_json::json!({"@timestamp": t(3), "host": {"name": h}, "event": {"category": ["process"], "type": ["start"]}, "process": {"name": "evil", "pid": 3}}),
    ];
    evs.iter()
        .map(|e| {
            encode_record(
                Kind::Event,
                partition_of(partition_key(e), PARTITIONS),
                e.to_string().as_bytes(),
            )
        })
        .collect()
}

fn chrono_like(s: i64) -> String {
    // 2026-12-07T00:00:00Z + s seconds, s < 86400.
    format!(
        "2026-12-07T{:02}:{:02}:{:02}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// A central node on its own runtime and thread, so that killing it drops every task at once with
/// no clean-up (as kill -9 would: leases stay until they expire, fetched messages stay unacknowledged).
struct Node {
    kill: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<CentralStats>,
}

impl Node {
    fn start(cfg: FleetConfig, pg: fleet::PostgresConfig, id: &str) -> Node {
        let stats = Arc::new(CentralStats::default());
        let (kill, kill_rx) = std::sync::mpsc::channel::<()>();
        let s = stats.clone();
        let id = id.to_string();
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            else {
                return;
            };
            let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            rt.spawn(async move {
                let bus = match Bus::connect(&cfg, &id).await {
                    Ok(b) => b,
                    Err(e) => panic!("node {id}: {e}"),
                };
                let mut c = CentralConfig::new(id.clone());
                c.lease_ttl = Duration::from_secs(3);
                c.ack_wait = Duration::from_secs(4);
                c.lateness_ns = LATENESS_NS;
                if let Err(e) = central::run_node(bus, c, pg, detectors(), s, stop_rx).await {
                    panic!("node {id}: {e}");
                }
            });
            let _ = kill_rx.recv();
            rt.shutdown_background();
        });
        Node {
            kill: Some(kill),
            thread: Some(thread),
            stats,
        }
    }

    fn kill(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn owned(&self) -> Vec<u32> {
        self.stats
            .owned
            .lock()
            .map(|o| o.iter().copied().collect())
            .unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_for<F: FnMut() -> bool>(what: &str, within: Duration, mut f: F) -> Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    while !f() {
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn count_alerts(store: &mut FleetStore) -> Result<(usize, usize)> {
    let all = store.list(&AlertFilter::default()).await?;
    let seq = all.iter().filter(|a| a.rule_id == "curl-then-c2").count();
    let evil = all.iter().filter(|a| a.rule_id == "evil").count();
    ensure!(
        all.iter().all(|a| a.count == 1),
        "an alert was counted twice: {all:?}"
    );
    Ok((seq, evil))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_correlators_split_partitions_and_survive_a_kill() -> Result<()> {
    let (_nats, _pg, cfg, bus, mut store) = common::servers(PARTITIONS).await?;

    let mut a = Node::start(cfg.clone(), cfg.postgres.clone(), "central-a");
    let b = Node::start(cfg.clone(), cfg.postgres.clone(), "central-b");
    wait_for(
        "the two nodes to split the partitions",
        Duration::from_secs(30),
        || {
            let (oa, ob) = (a.owned(), b.owned());
            oa.len() == 2 && ob.len() == 2 && oa.iter().all(|p| !ob.contains(p))
        },
    )
    .await?;
    let kv = central::lease_bucket(&bus, Duration::from_secs(3)).await?;
    let owners = central::owners(&kv, PARTITIONS).await?;
    ensure!(owners.len() == 4, "{owners:?}");

    // An edge publishes 10 hosts' events.
    let dir = tempfile::tempdir()?;
    let journal = Arc::new(SpoolJournal::open(&dir.path().join("spool"))?);
    let publisher = EdgePublisher::new(bus.clone(), fleet::edge::edge_id(dir.path())?, 64);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let j = journal.clone();
    let edge = tokio::spawn(async move { publisher.run(&*j, stop_rx).await });
    for h in 0..10 {
        journal.spool.append_batch(&host_events(h, 100))?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (seq, evil) = count_alerts(&mut store).await?;
        if seq == 10 && evil == 10 {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "phase 1: {seq} sequence and {evil} evil alerts of 10"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events_a = a.stats.events.load(Ordering::Relaxed);
    let events_b = b.stats.events.load(Ordering::Relaxed);
    eprintln!("phase 1 events: a {events_a}, b {events_b}; owners {owners:?}");
    ensure!(
        events_a + events_b == 40,
        "{events_a} + {events_b} events taken, expected 40"
    );

    // Kill node a outright; b takes its partitions once their leases expire.
    let a_had = a.owned();
    a.kill();
    wait_for(
        "node b to own every partition",
        Duration::from_secs(30),
        || b.owned().len() == 4,
    )
    .await?;
    for h in 10..20 {
        journal.spool.append_batch(&host_events(h, 200))?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (seq, evil) = count_alerts(&mut store).await?;
        if seq == 20 && evil == 20 {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "phase 2: {seq} sequence and {evil} evil alerts of 20"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing more arrives later (no duplicate from a redelivery).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (seq, evil) = count_alerts(&mut store).await?;
    ensure!(
        seq == 20 && evil == 20,
        "after settling: {seq} sequence, {evil} evil alerts"
    );
    let hosts: std::collections::BTreeSet<_> = store
        .list(&AlertFilter {
            rule: Some("curl-then-c2".into()),
            ..AlertFilter::default()
        })
        .await?
        .into_iter()
        .filter_map(|a| a.host)
        .collect();
    ensure!(hosts.len() == 20, "{hosts:?}");
    eprintln!("node a owned {a_had:?} before it was killed; b took over");
    stop_tx.send(true)?;
    edge.await??;
    Ok(())
}

/// An edge publishes, dies before its checkpoint moves, and on restart republishes its journal with
/// other batch boundaries (another window, more records by then): JetStream's message-id dedup
/// cannot drop those batches, and the central, after a takeover in between, must still feed each
/// event once, by the edge's high-water mark restored from the partition checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_republished_with_other_boundaries_is_fed_once() -> Result<()> {
    let (_nats, _pg, cfg, bus, mut store) = common::servers(PARTITIONS).await?;
    let mut a = Node::start(cfg.clone(), cfg.postgres.clone(), "central-a");

    let dir = tempfile::tempdir()?;
    let journal = Arc::new(SpoolJournal::open(&dir.path().join("spool"))?);
    journal.commit_enabled.store(false, Ordering::SeqCst);
    for h in 0..10 {
        journal.spool.append_batch(&host_events(h, 100))?;
    }
    let run = |window: usize| -> Result<_> {
        let publisher = EdgePublisher::new(bus.clone(), fleet::edge::edge_id(dir.path())?, window);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let j = journal.clone();
        Ok((
            stop_tx,
            tokio::spawn(async move { publisher.run(&*j, stop_rx).await }),
        ))
    };
    // First life: windows of 7 records, nothing committed.
    let (stop, task) = run(7)?;
    wait_for(
        "node a to feed the 40 events",
        Duration::from_secs(60),
        || a.stats.events.load(Ordering::Relaxed) >= 40,
    )
    .await?;
    stop.send(true)?;
    let first = task.await??;
    ensure!(
        journal.committed() == 0 && first.published == 40,
        "{first:?}"
    );
    // Node a records the alerts (the sequences once the idle watermark passes them) and
    // checkpoints what it fed (the edge's high-water marks with it), then dies.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count_alerts(&mut store).await? != (10, 10) {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "first life: alerts {:?}, expected 10 and 10",
            count_alerts(&mut store).await?
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Idle, a partition checkpoints within its interval (1 s) whatever it fed since.
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(a.stats.checkpoints.load(Ordering::Relaxed) > 0);
    a.kill();
    let b = Node::start(cfg.clone(), cfg.postgres.clone(), "central-b");
    // Second life: the whole journal again, windows of 64, and 40 new events.
    for h in 10..20 {
        journal.spool.append_batch(&host_events(h, 200))?;
    }
    journal.commit_enabled.store(true, Ordering::SeqCst);
    let (stop, task) = run(64)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count_alerts(&mut store).await? != (20, 20) {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "alerts {:?}, expected 20 and 20",
            count_alerts(&mut store).await?
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.send(true)?;
    let second = task.await??;
    ensure!(
        journal.committed() == 80,
        "committed {}",
        journal.committed()
    );
    let fed = b.stats.events.load(Ordering::Relaxed);
    let skipped = b.stats.replayed_skipped.load(Ordering::Relaxed);
    eprintln!("second life {second:?}; node b fed {fed}, skipped {skipped} replayed events");
    ensure!(
        second.published + second.duplicates == 80,
        "republished {second:?}"
    );
    ensure!(
        skipped > 0,
        "no republished batch got past JetStream's dedup: the boundaries did not change"
    );
    ensure!(
        fed == 40,
        "node b fed {fed} events, expected the 40 new ones"
    );
    ensure!(count_alerts(&mut store).await? == (20, 20));
    ensure!(b.stats.bad_events.load(Ordering::Relaxed) == 0);
    Ok(())
}
