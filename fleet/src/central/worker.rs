//! One partition's worker: claim, restore, consume, checkpoint.
//!
//! 1. Claim the partition in the fleet store ([`FleetStore::claim_partition`]): the epoch goes up
//!    (fencing out any previous owner's writes) and the last checkpoint comes back.
//! 2. Build the detectors and import the checkpoint's state into them.
//! 3. Recreate the partition's durable consumer to start right after the checkpoint's stream
//!    sequence (deleting the previous owner's: a stalled previous owner's fetches then fail). What
//!    the previous owner fed after its last checkpoint is delivered again and replayed; alerts it
//!    recorded from it come out again with the same uniqueness key and change nothing.
//! 4. Feed events in stream order; messages at or below the sequence already fed (a redelivery
//!    after `ack_wait`) are skipped. Alerts are recorded as they come; every `checkpoint_interval`
//!    (or `checkpoint_events` events, or when the idle watermark releases alerts, or on stop) the
//!    detector state and the sequence it covers are written in the same transaction as the alerts,
//!    and only then is the consumer acknowledged, up to that sequence (`AckPolicy::All`: one ack).
//! 5. Before acknowledging, the worker checks that the lease is still its own; a worker whose write
//!    is fenced by the store, or whose lease is gone, stops.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use async_nats::jetstream::{self, consumer, kv};
use correlator::{Alert, Detector, Event, Field, Value};
use futures_util::StreamExt;

use super::{
    consumer_name, consumer_name_for, lease_key, CentralConfig, CentralStats, DetectorFactory,
};
use crate::batch;
use crate::bus::{Bus, Kind};
use crate::pg::checkpoint::PartitionCheckpoint;
use crate::pg::FleetStore;
use crate::{FleetError, PostgresConfig};

/// The lease a worker runs under: its key's value must stay our node id, at a revision not older
/// than the one that created it.
pub(super) struct Lease {
    pub kv: kv::Store,
    pub node: String,
    pub created: u64,
}

impl Lease {
    async fn still_mine(&self, p: u32) -> Result<bool, FleetError> {
        let e = self
            .kv
            .entry(lease_key(p))
            .await
            .map_err(FleetError::nats("reading a lease"))?;
        Ok(e.is_some_and(|e| {
            e.operation == kv::Operation::Put
                && e.revision >= self.created
                && e.value.as_ref() == self.node.as_bytes()
        }))
    }
}

/// Detector states of a partition and the high-water marks of its sources as one JSON document:
/// `{"v": 1, "detectors": {id: state}, "hwm": {source: seq}}` (`hwm` since batch format 1; a
/// checkpoint without it restores no mark).
fn export(dets: &[Box<dyn Detector>], hwm: &HashMap<String, u64>) -> Vec<u8> {
    let mut m = serde_json::Map::new();
    for d in dets {
        if let Some(s) = d.export_state() {
            m.insert(d.id().to_string(), s);
        }
    }
    serde_json::to_vec(&serde_json::json!({"v": 1, "detectors": m, "hwm": hwm})).unwrap_or_default()
}

/// Restores what [`export`] wrote, returning the high-water marks. A state that does not parse or
/// import is logged and that detector starts empty: the partition keeps running rather than
/// stopping on it for good.
fn import(p: u32, dets: &mut [Box<dyn Detector>], state: &[u8]) -> HashMap<String, u64> {
    let mut hwm = HashMap::new();
    if state.is_empty() {
        return hwm;
    }
    let doc: serde_json::Value = match serde_json::from_slice(state) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(partition = p, error = %e, "central: checkpoint state is not JSON; detectors start empty");
            return hwm;
        }
    };
    if doc.get("v").and_then(serde_json::Value::as_u64) != Some(1) {
        tracing::error!(
            partition = p,
            version = %doc.get("v").unwrap_or(&serde_json::Value::Null),
            "central: checkpoint of an unknown format version; detectors start empty"
        );
        return hwm;
    }
    for d in dets.iter_mut() {
        let Some(s) = doc.get("detectors").and_then(|m| m.get(d.id())) else {
            continue;
        };
        if let Err(e) = d.import_state(s) {
            tracing::error!(partition = p, error = %e, "central: detector state not restored; it starts empty");
        }
    }
    if let Some(m) = doc.get("hwm").and_then(serde_json::Value::as_object) {
        for (src, seq) in m {
            match seq.as_u64() {
                Some(seq) => {
                    hwm.insert(src.clone(), seq);
                }
                None => {
                    tracing::error!(partition = p, source = %src, value = %seq, "central: checkpoint high-water mark is not a sequence number; ignored")
                }
            }
        }
    }
    hwm
}

/// Opens this owner's durable consumer of the partition, delivering from `start` (stream sequence),
/// after deleting the consumers of previous owners.
async fn open_consumer(
    bus: &Bus,
    cfg: &CentralConfig,
    p: u32,
    epoch: i64,
    start: u64,
) -> Result<consumer::PullConsumer, FleetError> {
    let stream = bus
        .js
        .get_stream(bus.names.stream(Kind::Event))
        .await
        .map_err(FleetError::nats("opening the events stream"))?;
    let name = consumer_name_for(p, epoch);
    // The previous owners' consumers (their positions and unacknowledged deliveries) go: the
    // checkpoint, not a consumer, says where this owner starts.
    let prefix = consumer_name(p);
    let mut names = stream.consumer_names();
    let mut old = Vec::new();
    while let Some(n) = names.next().await {
        match n {
            Ok(n) if n == prefix || n.strip_prefix(&format!("{prefix}-e")).is_some() => old.push(n),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "central: listing consumers failed");
                break;
            }
        }
    }
    for n in old.into_iter().filter(|n| *n != name) {
        if let Err(e) = stream.delete_consumer(&n).await {
            tracing::warn!(partition = p, consumer = %n, error = %e, "central: deleting a previous owner's consumer failed");
        }
    }
    let deliver_policy = if start <= 1 {
        consumer::DeliverPolicy::All
    } else {
        consumer::DeliverPolicy::ByStartSequence {
            start_sequence: start,
        }
    };
    stream
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: bus.names.subject(Kind::Event, p),
                ack_policy: consumer::AckPolicy::All,
                ack_wait: cfg.ack_wait,
                max_ack_pending: i64::try_from(cfg.checkpoint_events.saturating_mul(4))
                    .unwrap_or(i64::MAX),
                deliver_policy,
                ..consumer::pull::Config::default()
            },
        )
        .await
        .map_err(FleetError::nats(format!("creating consumer {name}")))
}

/// The field of an event's fleet identity, interned once.
fn fleet_id_field() -> Field {
    static F: std::sync::OnceLock<Field> = std::sync::OnceLock::new();
    *F.get_or_init(|| Field::intern(crate::pg::EVENT_ID_FIELD))
}

/// Decodes one frame's JSON into an event and stamps its fleet identity (`sensor.fleet_id`) on the
/// decoded event (not into the JSON text, which would cost a parse and a rewrite of the tree).
fn decode_frame(json: &str, fleet_id: String) -> Result<Event, String> {
    let mut ev = Event::from_json_str(json).map_err(|e| format!("does not decode: {e}"))?;
    ev.set(fleet_id_field(), Value::Str(fleet_id.into()));
    Ok(ev)
}

/// The batch header of a message: its source when it names one. `Err` when the message is not a
/// batch of a version this build reads.
fn batch_source(m: &jetstream::Message) -> Result<Option<&str>, String> {
    let h = m.headers.as_ref();
    match h
        .and_then(|h| h.get(batch::VERSION_HEADER))
        .map(|v| v.as_str())
    {
        Some(batch::VERSION) => {}
        Some(v) => {
            return Err(format!(
                "batch format version {v:?}; this build reads {:?}",
                batch::VERSION
            ))
        }
        None => {
            return Err(format!(
                "no {} header: not a batch (an older edge or another publisher?)",
                batch::VERSION_HEADER
            ))
        }
    }
    Ok(h.and_then(|h| h.get(batch::SOURCE_HEADER))
        .map(|v| v.as_str()))
}

/// The running state of one worker.
struct Run {
    p: u32,
    stream: String,
    epoch: i64,
    dets: Vec<Box<dyn Detector>>,
    store: FleetStore,
    lease: Lease,
    stats: Arc<CentralStats>,
    /// Stream sequence of the last message fed to the detectors.
    fed: u64,
    /// Stream sequence the last written checkpoint covers.
    checkpointed: u64,
    /// The message at `fed` (acknowledging it acknowledges everything before it).
    last_msg: Option<jetstream::Message>,
    max_ts: Option<i64>,
    /// Per ordered source (edge id), the highest journal sequence fed: frames at or below it are a
    /// republished batch's replay and are skipped. Checkpointed with the detector state.
    hwm: HashMap<String, u64>,
    alerts: Vec<Alert>,
    last_checkpoint: tokio::time::Instant,
}

impl Run {
    /// Records the pending alerts, with a checkpoint when `checkpoint`; then acknowledges up to it.
    async fn flush(&mut self, checkpoint: bool) -> Result<(), FleetError> {
        let checkpoint = checkpoint && (self.fed > self.checkpointed || !self.alerts.is_empty());
        if self.alerts.is_empty() && !checkpoint {
            return Ok(());
        }
        let ckpt = checkpoint.then(|| PartitionCheckpoint {
            stream_seq: self.fed,
            max_event_ns: self.max_ts,
            state: export(&self.dets, &self.hwm),
        });
        if let Some(c) = &ckpt {
            self.stats
                .checkpoint_bytes
                .store(c.state.len() as u64, Relaxed);
        }
        let r = self
            .store
            .record_checkpointed_durable(
                &self.stream,
                self.p,
                self.epoch,
                &self.alerts,
                ckpt.as_ref(),
                crate::wall_ns,
            )
            .await;
        if let Err(e @ FleetError::Fenced { .. }) = &r {
            self.stats.fenced.fetch_add(1, Relaxed);
            tracing::warn!(partition = self.p, error = %e, "central: fenced; worker stops");
        }
        r?;
        self.stats
            .alerts
            .fetch_add(self.alerts.len() as u64, Relaxed);
        self.alerts.clear();
        if ckpt.is_some() {
            self.stats.checkpoints.fetch_add(1, Relaxed);
            self.checkpointed = self.fed;
            self.last_checkpoint = tokio::time::Instant::now();
            if !self.lease.still_mine(self.p).await? {
                self.stats.fenced.fetch_add(1, Relaxed);
                return Err(FleetError::Fenced {
                    partition: self.p,
                    ours: self.epoch,
                    current: -1,
                });
            }
            if let Some(m) = self.last_msg.take() {
                if let Err(e) = m.ack().await {
                    tracing::warn!(partition = self.p, error = %e, "central: ack failed; the checkpoint still holds");
                }
            }
        }
        Ok(())
    }
}

impl Run {
    /// Feeds the frames of one batch message to the detectors: frames of an ordered source at or
    /// below its high-water mark are skipped (a replay); a bad frame, or a message that is not a
    /// batch, is counted and logged, and the frames after it are still fed.
    fn feed_message(&mut self, m: &jetstream::Message) {
        let p = self.p;
        let source = match batch_source(m) {
            Ok(s) => s,
            Err(e) => {
                self.stats.bad_messages.fetch_add(1, Relaxed);
                tracing::error!(partition = p, subject = %m.subject, error = %e, "central: message dropped");
                return;
            }
        };
        let mut mark = source.and_then(|s| self.hwm.get(s).copied());
        for f in batch::frames(&m.payload, source) {
            let f = match f {
                Ok(f) => f,
                Err(e) => {
                    self.stats.bad_events.fetch_add(1, Relaxed);
                    tracing::error!(partition = p, subject = %m.subject, source = source.unwrap_or("-"), error = %e, "central: bad frame dropped");
                    continue;
                }
            };
            let fleet_id = match (source, f.seq) {
                (Some(src), Some(seq)) => {
                    if mark.is_some_and(|h| seq <= h) {
                        self.stats.replayed_skipped.fetch_add(1, Relaxed);
                        continue;
                    }
                    mark = Some(seq);
                    format!("{src}:{seq}")
                }
                _ => f.id.to_string(),
            };
            self.stats.events.fetch_add(1, Relaxed);
            match decode_frame(f.json, fleet_id) {
                Ok(ev) => {
                    self.max_ts = Some(
                        self.max_ts
                            .map_or(ev.timestamp_ns, |t| t.max(ev.timestamp_ns)),
                    );
                    for d in &mut self.dets {
                        d.on_event(&ev, &mut self.alerts);
                    }
                }
                Err(e) => {
                    self.stats.bad_events.fetch_add(1, Relaxed);
                    tracing::error!(partition = p, subject = %m.subject, error = %e, "central: event dropped");
                }
            }
        }
        if let (Some(src), Some(h)) = (source, mark) {
            match self.hwm.get_mut(src) {
                Some(v) => *v = h,
                None => {
                    self.hwm.insert(src.to_string(), h);
                }
            }
        }
    }
}

/// What every worker of a node shares.
#[derive(Clone)]
pub(super) struct NodeCtx {
    pub bus: Bus,
    pub cfg: CentralConfig,
    pub store_cfg: PostgresConfig,
    pub detectors: DetectorFactory,
    pub stats: Arc<CentralStats>,
}

/// Claims partition `p`, restores its checkpoint and opens this owner's consumer.
async fn start(
    ctx: &NodeCtx,
    p: u32,
    lease: Lease,
) -> Result<(Run, consumer::PullConsumer), FleetError> {
    let mut store = FleetStore::connect(&ctx.store_cfg).await?;
    let stream = ctx.bus.names.stream(Kind::Event);
    let claim = store
        .claim_partition(&stream, p, &ctx.cfg.node_id, crate::wall_ns())
        .await?;
    let mut dets = (ctx.detectors)();
    let ckpt = claim.checkpoint.unwrap_or_default();
    let hwm = import(p, &mut dets, &ckpt.state);
    tracing::info!(
        partition = p,
        epoch = claim.epoch,
        from_seq = ckpt.stream_seq,
        state_bytes = ckpt.state.len(),
        "central: partition claimed; state restored"
    );
    let consumer = open_consumer(&ctx.bus, &ctx.cfg, p, claim.epoch, ckpt.stream_seq + 1).await?;
    let run = Run {
        p,
        stream,
        epoch: claim.epoch,
        dets,
        store,
        lease,
        stats: ctx.stats.clone(),
        fed: ckpt.stream_seq,
        checkpointed: ckpt.stream_seq,
        last_msg: None,
        max_ts: ckpt.max_event_ns,
        hwm,
        alerts: Vec::new(),
        last_checkpoint: tokio::time::Instant::now(),
    };
    Ok((run, consumer))
}

pub(super) async fn partition_worker(
    ctx: NodeCtx,
    p: u32,
    lease: Lease,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), FleetError> {
    let cfg = &ctx.cfg;
    let (mut run, consumer) = start(&ctx, p, lease).await?;
    let mut last_arrival = tokio::time::Instant::now();
    loop {
        if *stop.borrow() {
            return run.flush(true).await;
        }
        let asked = tokio::time::Instant::now();
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
        let due = run.last_checkpoint.elapsed() >= cfg.checkpoint_interval
            || run.fed - run.checkpointed >= cfg.checkpoint_events;
        if msgs.is_empty() {
            // Idle: event time advances with the wall clock since the last event (as in the
            // daemon), so that windows close on a quiet partition. What that releases is recorded
            // with a checkpoint of the state after it.
            if let Some(max_ts) = run.max_ts {
                let idle = i64::try_from(last_arrival.elapsed().as_nanos()).unwrap_or(i64::MAX);
                let wm = max_ts.saturating_sub(cfg.lateness_ns).saturating_add(idle);
                for d in &mut run.dets {
                    d.on_watermark(wm, &mut run.alerts);
                }
            }
            let release = !run.alerts.is_empty();
            run.flush(due || release).await?;
            if asked.elapsed() < Duration::from_millis(5) {
                // The server answered at once: do not spin on an empty partition.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = stop.changed() => {}
                }
            }
            continue;
        }
        last_arrival = tokio::time::Instant::now();
        for m in msgs {
            let seq = match m.info() {
                Ok(i) => i.stream_sequence,
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "central: message without JetStream metadata; skipped");
                    continue;
                }
            };
            if seq <= run.fed {
                // Delivered again (ack_wait passed before our checkpoint): already in the state.
                run.stats.redelivered_skipped.fetch_add(1, Relaxed);
                continue;
            }
            run.feed_message(&m);
            run.fed = seq;
            run.last_msg = Some(m);
            // A fetch can hold 256 batches of 256 events: yield after each batch so that the
            // node's lease renewals and the other partitions' workers are not starved (a node
            // that misses its renewals loses its partitions, and they move back and forth).
            tokio::task::yield_now().await;
        }
        if let Some(max_ts) = run.max_ts {
            let wm = max_ts.saturating_sub(cfg.lateness_ns);
            for d in &mut run.dets {
                d.on_watermark(wm, &mut run.alerts);
            }
        }
        let due = due
            || run.last_checkpoint.elapsed() >= cfg.checkpoint_interval
            || run.fed - run.checkpointed >= cfg.checkpoint_events;
        run.flush(due).await?;
    }
}
