//! Checkpointed takeovers against real nats-server and PostgreSQL:
//! - a sequence whose first event node A processed, A killed outright (runtime dropped, nothing
//!   released), the rest processed by node B after it took the partitions over: the alert is in
//!   PostgreSQL exactly once, once with A's state restored from its checkpoint, once with no
//!   checkpoint at all (B replays from the stream, and the alerts A already recorded are
//!   recognised);
//! - a node stalled past its lease (its runtime's only thread blocked): the other node takes over
//!   and raises the partitions' epochs; the stalled node's writes are refused when it wakes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Result};
use correlator::{parse_rule_file, Detector, RuleSet, RunnerConfig};
use fleet::bus::{Bus, Kind};
use fleet::central::{self, CentralConfig, CentralStats, DetectorFactory};
use fleet::partition::{partition_key, partition_of};
use fleet::pg::checkpoint::PartitionCheckpoint;
use fleet::pg::{AlertFilter, FleetStore};
use fleet::{FleetConfig, FleetError};

mod common;

const PARTITIONS: u32 = 2;
const LATENESS_NS: i64 = 2_000_000_000;
const TTL: Duration = Duration::from_secs(2);
const RULES: &str = r#"
[[rule]]
id = "curl-then-c2"
name = "curl then C2 port"
query = 'sequence by host.name with maxspan=60s [process where process.name == "curl"] [process where process.name == "sh"] [network where destination.port == 4444]'
[[rule]]
id = "evil"
name = "evil process"
query = 'process where process.name == "evil"'
"#;

fn detectors() -> DetectorFactory {
    Arc::new(|| {
        let mut set = RuleSet::new(RunnerConfig {
            lateness_ns: LATENESS_NS,
            ..RunnerConfig::default()
        });
        let rep = set.reload(parse_rule_file(RULES, "test").unwrap_or_default());
        assert!(rep.failed.is_empty(), "{:?}", rep.failed);
        vec![Box::new(set) as Box<dyn Detector>]
    })
}

fn event(host: &str, t: u32, name: &str, port: Option<u16>) -> serde_json::Value {
    let ts = format!("2026-12-07T01:00:{t:02}Z");
    match port {
        Some(p) => serde_json::json!({"@timestamp": ts, "host": {"name": host},
            "event": {"category": ["network"]}, "destination": {"port": p}, "process": {"name": name}}),
        None => serde_json::json!({"@timestamp": ts, "host": {"name": host},
            "event": {"category": ["process"], "type": ["start"]}, "process": {"name": name}}),
    }
}

/// Publishes events as an edge would: partition subject, a batch message ([`fleet::batch`]) per
/// event, source `id`, sequence = index, publish acknowledgement.
async fn publish(bus: &Bus, id: &str, evs: &[serde_json::Value]) -> Result<()> {
    for (i, e) in evs.iter().enumerate() {
        let p = partition_of(partition_key(e), PARTITIONS);
        let mut w = fleet::batch::BatchWriter::new();
        w.push_seq(i as u64, e.to_string().as_bytes());
        let h = fleet::batch::headers(&format!("{id}:{i}"), Some(id));
        bus.js
            .publish_with_headers(
                bus.names.subject(Kind::Event, p),
                h,
                w.into_payload().into(),
            )
            .await?
            .await?;
    }
    Ok(())
}

/// A central node on its own single-threaded runtime: killing drops every task at once (as kill -9
/// would); stalling blocks that one thread (every task of the node stops, as in a long GC pause or
/// a frozen VM).
struct Node {
    ctl: Option<std::sync::mpsc::Sender<Option<Duration>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<CentralStats>,
}

impl Node {
    fn start(cfg: FleetConfig, id: &str, checkpoint_every_event: bool) -> Node {
        let stats = Arc::new(CentralStats::default());
        let (ctl, ctl_rx) = std::sync::mpsc::channel::<Option<Duration>>();
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
                c.lease_ttl = TTL;
                c.ack_wait = Duration::from_secs(4);
                c.lateness_ns = LATENESS_NS;
                if checkpoint_every_event {
                    c.checkpoint_events = 1;
                } else {
                    // Never due: the node records alerts but no checkpoint.
                    c.checkpoint_interval = Duration::from_secs(3600);
                    c.checkpoint_events = u64::MAX / 8;
                }
                let pg = cfg.postgres.clone();
                if let Err(e) = central::run_node(bus, c, pg, detectors(), s, stop_rx).await {
                    panic!("node {id}: {e}");
                }
            });
            while let Ok(Some(stall)) = ctl_rx.recv() {
                rt.spawn(async move { std::thread::sleep(stall) });
            }
            rt.shutdown_background();
        });
        Node {
            ctl: Some(ctl),
            thread: Some(thread),
            stats,
        }
    }

    fn stall(&self, d: Duration) {
        if let Some(c) = &self.ctl {
            let _ = c.send(Some(d));
        }
    }

    fn kill(&mut self) {
        if let Some(k) = self.ctl.take() {
            let _ = k.send(None);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn owned(&self) -> usize {
        self.stats.owned.lock().map(|o| o.len()).unwrap_or(0)
    }

    fn events(&self) -> u64 {
        self.stats.events.load(Ordering::Relaxed)
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// (sequence alerts, evil alerts), each required to have count 1.
async fn alerts(store: &mut FleetStore) -> Result<(usize, usize)> {
    let all = store.list(&AlertFilter::default()).await?;
    ensure!(
        all.iter().all(|a| a.count == 1),
        "an alert was counted twice: {all:?}"
    );
    Ok((
        all.iter().filter(|a| a.rule_id == "curl-then-c2").count(),
        all.iter().filter(|a| a.rule_id == "evil").count(),
    ))
}

async fn wait_alerts(store: &mut FleetStore, want: (usize, usize), within: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got = alerts(store).await?;
        if got == want {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "alerts {got:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sequence curl -> sh -> 4444 on host `h1`, split by a kill of node A after `curl` (and an
/// `evil` event A alerts on before the kill).
async fn a_sequence_split_by_a_kill(checkpointed: bool) -> Result<()> {
    let (_nats, _pg, cfg, bus, mut store) = common::servers(PARTITIONS).await?;
    let mut a = Node::start(cfg.clone(), "central-a", checkpointed);
    wait_for("A to own every partition", Duration::from_secs(20), || {
        a.owned() == PARTITIONS as usize
    })
    .await?;
    publish(
        &bus,
        "e1",
        &[event("h1", 1, "curl", None), event("h1", 2, "evil", None)],
    )
    .await?;
    wait_alerts(&mut store, (0, 1), Duration::from_secs(20)).await?;
    wait_for("A to feed both events", Duration::from_secs(10), || {
        a.events() == 2
    })
    .await?;
    if checkpointed {
        wait_for("A's checkpoint", Duration::from_secs(10), || {
            a.stats.checkpoints.load(Ordering::Relaxed) > 0
        })
        .await?;
        // Its state holds the pending `curl` (still in the reorder buffer or a partial match).
        ensure!(a.stats.checkpoint_bytes.load(Ordering::Relaxed) > 100);
    }
    a.kill();
    let b = Node::start(cfg.clone(), "central-b", checkpointed);
    wait_for("B to own every partition", Duration::from_secs(20), || {
        b.owned() == PARTITIONS as usize
    })
    .await?;
    publish(
        &bus,
        "e2",
        &[
            event("h1", 3, "sh", None),
            event("h1", 4, "curl", Some(4444)),
        ],
    )
    .await?;
    wait_alerts(&mut store, (1, 1), Duration::from_secs(30)).await?;
    // Settled: no second alert from a redelivery or a replay.
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(alerts(&mut store).await? == (1, 1));
    let seq = store
        .list(&AlertFilter {
            rule: Some("curl-then-c2".into()),
            ..AlertFilter::default()
        })
        .await?;
    let detail = store.get(seq[0].id).await?;
    ensure!(detail.evidence.len() == 3, "{detail:?}");
    let fleet_ids: Vec<String> = detail
        .evidence
        .iter()
        .map(|e| {
            e["sensor"]["fleet_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    ensure!(fleet_ids == ["e1:0", "e2:0", "e2:1"], "{fleet_ids:?}");
    if checkpointed {
        // B restored A's state: it was given only the two new events.
        ensure!(b.events() == 2, "B fed {} events", b.events());
    } else {
        // No checkpoint: B replayed A's events too, and A's `evil` alert was recognised.
        ensure!(b.events() == 4, "B fed {} events", b.events());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_across_a_kill_alerts_once_from_the_checkpoint() -> Result<()> {
    a_sequence_split_by_a_kill(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_across_a_kill_alerts_once_by_replay() -> Result<()> {
    a_sequence_split_by_a_kill(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_node_is_fenced() -> Result<()> {
    let (_nats, _pg, cfg, bus, mut store) = common::servers(PARTITIONS).await?;
    let stream = bus.names.stream(Kind::Event);
    // A checkpoints rarely: when it wakes it still has an event fed and not checkpointed to write.
    let a = Node::start(cfg.clone(), "central-a", false);
    wait_for("A to own every partition", Duration::from_secs(20), || {
        a.owned() == PARTITIONS as usize
    })
    .await?;
    publish(&bus, "r", &[event("h0", 1, "evil", None)]).await?;
    wait_alerts(&mut store, (0, 1), Duration::from_secs(20)).await?;
    let before = store.partition_rows(&stream).await?;
    ensure!(
        before.len() == PARTITIONS as usize && before.iter().all(|r| r.owner == "central-a"),
        "{before:?}"
    );

    // A freezes for three lease TTLs; B starts and takes everything over meanwhile.
    a.stall(TTL * 4);
    let b = Node::start(cfg.clone(), "central-b", true);
    wait_for("B to own every partition", Duration::from_secs(20), || {
        b.owned() == PARTITIONS as usize
    })
    .await?;
    // Its workers claim the partitions in the store (raising the epochs) as they start.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        let rows = store.partition_rows(&stream).await?;
        if rows.iter().all(|r| r.owner == "central-b") {
            break rows;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "B did not claim: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (x, y) in before.iter().zip(&after) {
        ensure!(
            y.owner == "central-b" && y.epoch > x.epoch,
            "{before:?} -> {after:?}"
        );
    }
    // A write with A's epoch (what A's worker holds when it wakes) is refused and changes nothing.
    let a_epoch = before[0].epoch;
    let alert = correlator::runner::make_alert(
        &correlator::RuleMeta {
            id: "stale".into(),
            name: "stale".into(),
            ..Default::default()
        },
        &[&correlator::Event::from_json(&event("h9", 1, "x", None))?],
        Vec::new(),
    );
    let ck = PartitionCheckpoint {
        stream_seq: 999,
        max_event_ns: None,
        state: b"{}".to_vec(),
    };
    match store
        .record_checkpointed(&stream, 0, a_epoch, &[alert], Some(&ck), 1)
        .await
    {
        Err(FleetError::Fenced {
            partition: 0,
            ours,
            current,
        }) => {
            ensure!(ours == a_epoch && current == after[0].epoch)
        }
        other => bail!("a stale epoch was not fenced: {other:?}"),
    }
    ensure!(alerts(&mut store).await? == (0, 1));
    ensure!(store.partition_rows(&stream).await?[0].stream_seq != 999);

    // Events during and after A's stall are B's alone; when A wakes it loses its partitions and
    // nothing is alerted twice.
    publish(
        &bus,
        "s",
        &[event("h1", 1, "evil", None), event("h2", 1, "evil", None)],
    )
    .await?;
    wait_alerts(&mut store, (0, 3), Duration::from_secs(20)).await?;
    wait_for(
        "A to wake and give up its partitions",
        Duration::from_secs(30),
        || a.owned() == 0,
    )
    .await?;
    // Waking, A tried to checkpoint what it had fed: refused by the epoch.
    wait_for(
        "A's stale checkpoint to be fenced",
        Duration::from_secs(10),
        || a.stats.fenced.load(Ordering::Relaxed) >= 1,
    )
    .await?;
    publish(
        &bus,
        "t",
        &[event("h3", 1, "evil", None), event("h4", 1, "evil", None)],
    )
    .await?;
    wait_alerts(&mut store, (0, 5), Duration::from_secs(20)).await?;
    eprintln!("the stalled node fed {} events in all", a.events());
    // Awake again, A is a live node: the two split the partitions (B hands one back).
    wait_for(
        "the two nodes to split the partitions",
        Duration::from_secs(20),
        || a.owned() == 1 && b.owned() == 1,
    )
    .await?;
    publish(
        &bus,
        "u",
        &[event("h5", 1, "evil", None), event("h6", 1, "evil", None)],
    )
    .await?;
    wait_alerts(&mut store, (0, 7), Duration::from_secs(20)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(alerts(&mut store).await? == (0, 7));
    Ok(())
}
