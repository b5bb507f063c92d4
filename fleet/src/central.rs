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
//! whoever owns the partition), stamps each event with its message id (`sensor.fleet_id`, which the
//! store's uniqueness key reads), runs the detectors, records their alerts with
//! [`FleetStore::record_batch_durable`], and only then acknowledges the messages. A worker that dies
//! between recording and acknowledging gets the messages redelivered to the next owner, whose alerts
//! from them are recognised as duplicates.
//!
//! Not yet: detector state (pending sequences, thresholds, baselines) is not checkpointed, so a match
//! spanning a takeover is lost (see docs/fleet.md).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv};
use correlator::{Alert, Detector, Event};
use futures_util::StreamExt;

use crate::bus::{Bus, Kind};
use crate::pg::FleetStore;
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
}

impl CentralConfig {
    pub fn new(node_id: impl Into<String>) -> CentralConfig {
        CentralConfig {
            node_id: node_id.into(),
            lease_ttl: Duration::from_secs(6),
            ack_wait: Duration::from_secs(10),
            batch: 256,
            lateness_ns: 2_000_000_000,
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
    bus.js
        .get_or_create_stream(cfg)
        .await
        .map_err(FleetError::nats(format!("creating lease bucket {name}")))?;
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
                let task = tokio::spawn(partition_worker(
                    bus.clone(),
                    cfg.clone(),
                    store_cfg.clone(),
                    p,
                    detectors.clone(),
                    stats.clone(),
                    rx,
                ));
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

/// The durable consumer name of a partition.
pub fn consumer_name(p: u32) -> String {
    format!("central-p{p}")
}

async fn partition_worker(
    bus: Bus,
    cfg: CentralConfig,
    store_cfg: PostgresConfig,
    p: u32,
    detectors: DetectorFactory,
    stats: Arc<CentralStats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), FleetError> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut store = FleetStore::connect(&store_cfg).await?;
    let stream = bus
        .js
        .get_stream(bus.names.stream(Kind::Event))
        .await
        .map_err(FleetError::nats("opening the events stream"))?;
    let name = consumer_name(p);
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: bus.names.subject(Kind::Event, p),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: cfg.ack_wait,
                deliver_policy: consumer::DeliverPolicy::All,
                ..consumer::pull::Config::default()
            },
        )
        .await
        .map_err(FleetError::nats(format!("creating consumer {name}")))?;
    let mut dets = detectors();
    let mut max_ts = i64::MIN;
    let mut last_arrival = tokio::time::Instant::now();
    let mut alerts: Vec<Alert> = Vec::new();
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let batch = consumer
            .fetch()
            .max_messages(cfg.batch)
            .expires(Duration::from_millis(500))
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "central: fetch failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        let mut msgs = Vec::new();
        while let Some(m) = batch.next().await {
            match m {
                Ok(m) => msgs.push(m),
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "central: message error");
                    break;
                }
            }
        }
        if msgs.is_empty() {
            // Idle: event time is taken to advance with the wall clock since the last event (as
            // in the daemon), so that windows close and held events are released on a quiet
            // partition. These alerts come from events already acknowledged: until detector
            // state is checkpointed, a crash right here loses them (docs/fleet.md).
            if max_ts != i64::MIN {
                let idle = i64::try_from(last_arrival.elapsed().as_nanos()).unwrap_or(i64::MAX);
                let wm = max_ts.saturating_sub(cfg.lateness_ns).saturating_add(idle);
                for d in &mut dets {
                    d.on_watermark(wm, &mut alerts);
                }
                if !alerts.is_empty() {
                    store
                        .record_batch_durable(&alerts, crate::wall_ns, None)
                        .await?;
                    stats.alerts.fetch_add(alerts.len() as u64, Relaxed);
                    alerts.clear();
                }
            }
            continue;
        }
        last_arrival = tokio::time::Instant::now();
        for m in &msgs {
            stats.events.fetch_add(1, Relaxed);
            let mut doc: serde_json::Value = match serde_json::from_slice(&m.payload) {
                Ok(d) => d,
                Err(e) => {
                    stats.bad_events.fetch_add(1, Relaxed);
                    tracing::error!(partition = p, subject = %m.subject, error = %e, "central: event is not JSON; dropped");
                    continue;
                }
            };
            if let (Some(id), Some(obj)) = (
                m.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")),
                doc.as_object_mut(),
            ) {
                let sensor = obj
                    .entry("sensor")
                    .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
                if let Some(s) = sensor.as_object_mut() {
                    s.insert(
                        "fleet_id".into(),
                        serde_json::Value::String(id.as_str().to_string()),
                    );
                }
            }
            let ev = match Event::from_json(&doc) {
                Ok(ev) => ev,
                Err(e) => {
                    stats.bad_events.fetch_add(1, Relaxed);
                    tracing::error!(partition = p, error = %e, "central: event does not decode; dropped");
                    continue;
                }
            };
            max_ts = max_ts.max(ev.timestamp_ns);
            for d in &mut dets {
                d.on_event(&ev, &mut alerts);
            }
        }
        let wm = max_ts.saturating_sub(cfg.lateness_ns);
        for d in &mut dets {
            d.on_watermark(wm, &mut alerts);
        }
        if !alerts.is_empty() {
            store
                .record_batch_durable(&alerts, crate::wall_ns, None)
                .await?;
            stats.alerts.fetch_add(alerts.len() as u64, Relaxed);
            alerts.clear();
        }
        for m in &msgs {
            if let Err(e) = m.ack().await {
                tracing::warn!(partition = p, error = %e, "central: ack failed; the message will be redelivered");
            }
        }
    }
}
