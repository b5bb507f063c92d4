//! Central correlation: each partition of the event stream consumed by exactly one correlator at a
//! time, leases in a JetStream key-value bucket, alerts recorded in the fleet alert store before the
//! events that produced them are acknowledged.
//!
//! Leases (bucket `<prefix>_leases`, history 1, `max_age` = the lease TTL):
//! - `node.<node id>`: a heartbeat every TTL/3; a node that stops heartbeating disappears within a TTL;
//! - `p.<partition>`: the owner of a partition. Taken with `create` (fails when held), kept with
//!   `update` at the revision last written (fails when someone else wrote it), given back with
//!   `delete`. A dead owner's key expires within a TTL and another node creates it.
//!
//! Each node aims at its fair share, `ceil(partitions / live nodes)`: it takes free partitions up to
//! it and gives back what it holds beyond it, so two nodes split the partitions evenly and a joining
//! node gets work.
//!
//! A partition's worker binds to the partition's durable pull consumer (`central-p<n>`, shared by
//! whoever owns the partition), reads each message as a batch of events ([`crate::batch`]), skips
//! the frames of an ordered source (an edge) at or below that source's high-water mark in the
//! partition (a batch republished with other boundaries after an edge restart), stamps each event
//! with its fleet identity (`sensor.fleet_id` = `<edge id>:<journal seq>`, which the store's
//! uniqueness key reads), runs the detectors, records their alerts with
//! [`FleetStore::record_batch_durable`], and only then acknowledges the messages. A worker that dies
//! between recording and acknowledging gets the messages redelivered to the next owner, whose alerts
//! from them are recognised as duplicates.
//!
//! Detector state is checkpointed per partition in the fleet store, in the same transaction as the
//! alerts, and the consumer is acknowledged only up to the checkpoint; a new owner restores the state
//! and replays what follows it, fenced against a stalled previous owner by the partition's epoch
//! (see [`worker`] and docs/fleet.md).

mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use correlator::Detector;
use futures_util::StreamExt;

use crate::bus::Bus;
use crate::{FleetError, PostgresConfig};

/// The lease bucket (a JetStream key-value store), as [`lease_bucket`] opens it.
pub type Leases = kv::Store;

/// Makes the detectors of one partition (a fresh set per partition and per takeover).
pub type DetectorFactory = Arc<dyn Fn() -> Vec<Box<dyn Detector>> + Send + Sync>;

/// Settings of a central node.
#[derive(Clone, Debug)]
pub struct CentralConfig {
    pub node_id: String,
    pub lease_ttl: Duration,
    /// How long a delivered, unacknowledged message waits before it is redelivered (to whoever owns
    /// the partition then).
    pub ack_wait: Duration,
    /// Events taken from the bus per batch.
    pub batch: usize,
    /// How far behind the newest event time the watermark trails.
    pub lateness_ns: i64,
    /// How often a partition's detector state is checkpointed (and the stream acknowledged up to
    /// it); what a takeover replays is at most this much of the stream.
    pub checkpoint_interval: Duration,
    /// Checkpoint at the latest after this many events (bounds the unacknowledged messages too).
    pub checkpoint_events: u64,
}

impl CentralConfig {
    pub fn new(node_id: impl Into<String>) -> CentralConfig {
        CentralConfig {
            node_id: node_id.into(),
            lease_ttl: Duration::from_secs(6),
            ack_wait: Duration::from_secs(10),
            batch: 256,
            lateness_ns: 2_000_000_000,
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_events: 50_000,
        }
    }
}

/// What a central node has done so far (shared with its caller while it runs).
#[derive(Debug, Default)]
pub struct CentralStats {
    pub events: std::sync::atomic::AtomicU64,
    pub alerts: std::sync::atomic::AtomicU64,
    pub bad_events: std::sync::atomic::AtomicU64,
    /// Partitions owned now.
    pub owned: std::sync::Mutex<BTreeSet<u32>>,
    /// Checkpoints written.
    pub checkpoints: std::sync::atomic::AtomicU64,
    /// Size of the last checkpoint's state, bytes.
    pub checkpoint_bytes: std::sync::atomic::AtomicU64,
    /// Writes or acknowledgements refused because another node had taken the partition over.
    pub fenced: std::sync::atomic::AtomicU64,
    /// Messages delivered again that the state already covered (skipped).
    pub redelivered_skipped: std::sync::atomic::AtomicU64,
    /// Events of a batch republished after an edge restart, at or below the edge's high-water mark
    /// in the partition (skipped: already fed).
    pub replayed_skipped: std::sync::atomic::AtomicU64,
    /// Messages that are not a batch this build reads (no or another `Sensor-Batch-Version`).
    pub bad_messages: std::sync::atomic::AtomicU64,
}

fn lease_key(p: u32) -> String {
    format!("p.{p}")
}

/// Opens (creating) the lease bucket.
///
/// The bucket's stream is created here with the key-value conventions (`KV_<bucket>`, subjects
/// `$KV.<bucket>.>`, one value per key, rollups allowed, direct get), not through the client's
/// `create_key_value`: that first asks for the account's JetStream limits, whose reply from
/// nats-server 2.9 the client (0.52) cannot parse.
pub async fn lease_bucket(bus: &Bus, ttl: Duration) -> Result<kv::Store, FleetError> {
    let name = bus.names.lease_bucket();
    if let Ok(s) = bus.js.get_key_value(&name).await {
        return Ok(s);
    }
    let cfg = jetstream::stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age: ttl,
        storage: jetstream::stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        num_replicas: 1,
        ..jetstream::stream::Config::default()
    };
    if let Err(e) = bus.js.get_or_create_stream(cfg).await {
        // Two nodes starting together: the other one created it first ("subjects overlap").
        if let Ok(s) = bus.js.get_key_value(&name).await {
            return Ok(s);
        }
        return Err(FleetError::nats(format!("creating lease bucket {name}"))(e));
    }
    bus.js
        .get_key_value(&name)
        .await
        .map_err(FleetError::nats(format!("opening lease bucket {name}")))
}

/// The owners of the partitions, as the lease bucket says now.
pub async fn owners(kv: &kv::Store, partitions: u32) -> Result<BTreeMap<u32, String>, FleetError> {
    let mut out = BTreeMap::new();
    for p in 0..partitions {
        if let Some(v) = kv
            .get(lease_key(p))
            .await
            .map_err(FleetError::nats("reading a lease"))?
        {
            out.insert(p, String::from_utf8_lossy(&v).into_owned());
        }
    }
    Ok(out)
}

struct Worker {
    revision: u64,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), FleetError>>,
}

/// Runs a central node until `stop` turns true.
pub async fn run_node(
    bus: Bus,
    cfg: CentralConfig,
    store_cfg: PostgresConfig,
    detectors: DetectorFactory,
    stats: Arc<CentralStats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), FleetError> {
    let kv = lease_bucket(&bus, cfg.lease_ttl).await?;
    let partitions = bus.names.partitions;
    let mut workers: BTreeMap<u32, Worker> = BTreeMap::new();
    let ctx = worker::NodeCtx {
        bus: bus.clone(),
        cfg: cfg.clone(),
        store_cfg,
        detectors,
        stats: stats.clone(),
    };
    let tick = cfg.lease_ttl / 3;
    let me = cfg.node_id.clone();
    loop {
        if *stop.borrow() {
            break;
        }
        // Heartbeat, then look at who is alive and what is held.
        if let Err(e) = kv.put(format!("node.{me}"), me.clone().into()).await {
            tracing::warn!(error = %e, "central: heartbeat failed");
        }
        let mut nodes = 0u32;
        let mut held: BTreeMap<u32, String> = BTreeMap::new();
        match kv.keys().await {
            Ok(mut keys) => {
                while let Some(k) = keys.next().await {
                    let Ok(k) = k else { break };
                    if k.starts_with("node.") {
                        nodes += 1;
                    } else if let Some(p) = k.strip_prefix("p.").and_then(|p| p.parse::<u32>().ok())
                    {
                        held.insert(p, String::new());
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "central: listing leases failed"),
        }
        let fair = partitions.div_ceil(nodes.max(1));
        // Keep what we hold; a failed renewal means someone else has it now: stop that worker.
        let mine: Vec<u32> = workers.keys().copied().collect();
        for p in mine {
            let Some(w) = workers.get_mut(&p) else {
                continue;
            };
            let finished = w.task.is_finished();
            let renewed = if finished {
                None
            } else {
                kv.update(lease_key(p), me.clone().into(), w.revision)
                    .await
                    .ok()
            };
            match renewed {
                Some(rev) => w.revision = rev,
                None => {
                    if let Some(w) = workers.remove(&p) {
                        let _ = w.stop.send(true);
                        match w.task.await {
                            Ok(Err(e)) => {
                                tracing::warn!(partition = p, error = %e, "central: partition worker failed")
                            }
                            Err(e) => {
                                tracing::warn!(partition = p, error = %e, "central: partition worker panicked")
                            }
                            Ok(Ok(())) => {}
                        }
                    }
                    tracing::info!(partition = p, node = %me, "central: lease lost or worker ended; partition released");
                }
            }
        }
        // Beyond the fair share: give the highest partitions back (the worker stops first, so that
        // everything it took is acknowledged or left for redelivery).
        while workers.len() > usize::try_from(fair).unwrap_or(usize::MAX) {
            let Some((p, w)) = workers.pop_last() else {
                break;
            };
            let _ = w.stop.send(true);
            let _ = w.task.await;
            let _ = kv
                .delete_expect_revision(lease_key(p), Some(w.revision))
                .await;
            tracing::info!(partition = p, node = %me, fair, "central: partition handed back for balance");
        }
        // Below it: take free partitions.
        for p in 0..partitions {
            if workers.len() >= usize::try_from(fair).unwrap_or(usize::MAX) {
                break;
            }
            if held.contains_key(&p) || workers.contains_key(&p) {
                continue;
            }
            if let Ok(revision) = kv.create(lease_key(p), me.clone().into()).await {
                let (tx, rx) = tokio::sync::watch::channel(false);
                let lease = worker::Lease {
                    kv: kv.clone(),
                    node: me.clone(),
                    created: revision,
                };
                let task = tokio::spawn(worker::partition_worker(ctx.clone(), p, lease, rx));
                workers.insert(
                    p,
                    Worker {
                        revision,
                        stop: tx,
                        task,
                    },
                );
                tracing::info!(partition = p, node = %me, "central: partition taken");
            }
        }
        if let Ok(mut o) = stats.owned.lock() {
            *o = workers.keys().copied().collect();
        }
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            _ = stop.changed() => {}
        }
    }
    for (p, w) in std::mem::take(&mut workers) {
        let _ = w.stop.send(true);
        let _ = w.task.await;
        let _ = kv
            .delete_expect_revision(lease_key(p), Some(w.revision))
            .await;
    }
    let _ = kv.delete(format!("node.{me}")).await;
    Ok(())
}

/// The prefix of the durable consumer names of a partition (`central-p<n>`; the first cut of central
/// used it as the name).
/// What every partition consumer's name starts with.
pub(crate) const CONSUMER_PREFIX: &str = "central-p";

pub fn consumer_name(p: u32) -> String {
    format!("{CONSUMER_PREFIX}{p}")
}

/// The durable consumer of partition `p` under owner epoch `epoch` (`central-p<n>-e<epoch>`). Each
/// owner has its own: a stalled previous owner cannot pull from the new owner's consumer, and the
/// new owner deletes the previous ones when it starts.
pub fn consumer_name_for(p: u32, epoch: i64) -> String {
    format!("{}-e{epoch}", consumer_name(p))
}
