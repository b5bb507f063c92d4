//! The gateway role: the ingest listeners with the bus in place of the local spool, and the
//! central-side decoder of what gateways publish.
//!
//! A gateway keeps nothing: [`BusSink`] is the listeners' [`RecordSink`]; each accepted record (the
//! spool envelope, `format | agent id | record bytes`) is published to
//! `<prefix>.records.<partition of the agent id>` (stream `<PREFIX>_RECORDS`), with the agent's host
//! name in the header `Sensor-Agent-Host` and the message id `g:<SHA-256 of the record, 128 bits>`,
//! and `append_with_header` returns only once JetStream acknowledged every record of the batch.
//! The content id makes an agent's resend of records that did reach the stream (their
//! acknowledgement lost) a duplicate JetStream drops; the price: two byte-identical records (same
//! agent, same format, same bytes) within the duplicate window are stored once. Records carry their
//! time and serials (auditd `audit(time:serial)`, ECS `@timestamp`), so that is a true repeat. Only then does the listener acknowledge the agent (HTTP
//! 200, auditd ACK). Bus down: the agent gets 503 (HTTP) or its connection closed without an ACK
//! (auditd), and resends. All records of one agent go to one record partition, in order.
//!
//! Raw records need a decoder that may hold state (an auditd event spans several records), so they
//! are decoded centrally: [`decode_partition`] runs on the central node that owns partition `p`
//! (the same lease as the event partition `p`), feeds the records of `<prefix>.records.<p>` to the
//! ingest [`Consumer`], publishes each decoded event to `<prefix>.events.<partition>` as a batch of
//! one frame ([`crate::batch`], no `Sensor-Source`) whose id and message id are
//! `rec:<p>:<stream seq>:<index>`, and acknowledges the records (ack policy "all") only
//! up to [`Consumer::safe_commit`] once every event before it is acknowledged by the bus. A record
//! redelivered after a takeover decodes to the same events with the same ids, which JetStream
//! drops as duplicates within the events stream's duplicate window.

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;
use ingest::agents::AgentNames;
use ingest::consumer::{Consumer, Emitted};
use ingest::{RecordSink, SinkError};
use sha2::{Digest, Sha256};

use crate::bus::{Bus, Kind};
use crate::partition::{partition_key_by, partition_of};
use crate::{FleetError, NatsConfig};

/// The header that carries the agent's host name (its configured `host_name`).
pub const AGENT_HOST_HEADER: &str = "Sensor-Agent-Host";

/// The subject of raw records of partition `p`.
pub fn record_subject(bus: &Bus, p: u32) -> String {
    format!("{}.records.{p}", bus.names.prefix)
}

/// The stream of raw records.
pub fn record_stream(bus: &Bus) -> String {
    format!("{}_RECORDS", bus.names.prefix.to_ascii_uppercase())
}

/// Creates the raw records stream when missing (central nodes, tests).
pub async fn ensure_record_stream(bus: &Bus, cfg: &NatsConfig) -> Result<(), FleetError> {
    let name = record_stream(bus);
    bus.js
        .get_or_create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{}.records.*", bus.names.prefix)],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(cfg.dedup_window_secs),
            retention: stream::RetentionPolicy::Limits,
            ..stream::Config::default()
        })
        .await
        .map_err(FleetError::nats(format!("creating stream {name}")))?;
    Ok(())
}

/// The gateway's [`RecordSink`]: JetStream instead of the spool.
pub struct BusSink {
    bus: Bus,
    names: AgentNames,
    handle: tokio::runtime::Handle,
    timeout: Duration,
    acked: std::sync::atomic::AtomicU64,
}

impl BusSink {
    /// Made inside the runtime the listeners run on (its handle is kept to publish from the
    /// listeners' blocking threads).
    pub fn new(bus: Bus, names: AgentNames) -> BusSink {
        BusSink {
            bus,
            names,
            handle: tokio::runtime::Handle::current(),
            timeout: Duration::from_secs(5),
            acked: std::sync::atomic::AtomicU64::new(0),
        }
    }

    async fn publish(&self, header: &[u8], records: &[&[u8]]) -> Result<u64, FleetError> {
        // Disconnected: refuse at once. The client would otherwise queue the records and send them
        // after reconnecting, while the agent, refused, sends them again.
        if self.bus.client.connection_state() != async_nats::connection::State::Connected {
            return Err(FleetError::Nats {
                context: "publishing records".into(),
                message: "not connected to the bus".into(),
            });
        }
        let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(records.len());
        for r in records {
            let mut rec = Vec::with_capacity(header.len() + r.len());
            rec.extend_from_slice(header);
            rec.extend_from_slice(r);
            let agent = ingest::server::decode_record(&rec)
                .map(|(_, a, _)| a.to_string())
                .unwrap_or_default();
            let p = partition_of(&agent, self.bus.names.partitions);
            // The id is the record's content: a batch resent after a refusal whose records did
            // reach the stream (a disconnect between publish and acknowledgement) is stored once.
            let id = format!("g:{}", hex::encode(&Sha256::digest(&rec)[..16]));
            let msg = PublishMessage::build()
                .message_id(id)
                .payload(bytes::Bytes::from(rec))
                .header(AGENT_HOST_HEADER, self.names.host_name(&agent));
            let ack = self
                .bus
                .js
                .send_publish(record_subject(&self.bus, p), msg)
                .await
                .map_err(FleetError::nats("publishing a record"))?;
            acks.push(ack);
        }
        let mut last = 0;
        for a in acks {
            let ack = a
                .await
                .map_err(FleetError::nats("waiting for a record's acknowledgement"))?;
            last = last.max(ack.sequence);
        }
        Ok(last)
    }
}

impl RecordSink for BusSink {
    fn append_with_header(&self, header: &[u8], records: &[&[u8]]) -> Result<u64, SinkError> {
        let r = self.handle.block_on(async {
            tokio::time::timeout(self.timeout, self.publish(header, records)).await
        });
        match r {
            Ok(Ok(seq)) => {
                self.acked
                    .fetch_max(seq, std::sync::atomic::Ordering::AcqRel);
                Ok(seq)
            }
            Ok(Err(e)) => Err(SinkError::Unavailable(e.to_string())),
            Err(_) => Err(SinkError::Unavailable(format!(
                "JetStream did not acknowledge within {:?}",
                self.timeout
            ))),
        }
    }

    fn durable(&self) -> u64 {
        self.acked.load(std::sync::atomic::Ordering::Acquire)
    }

    fn state_dir(&self) -> Option<&Path> {
        None
    }
}

/// The durable consumer name of a record partition's decoder.
pub fn decoder_name(p: u32) -> String {
    format!("decode-p{p}")
}

/// Decodes record partition `p` into events until `stop` turns true (see the module doc).
/// `partition_by` is `fleet.partition_by`; `idle` closes an auditd group left open that long.
pub async fn decode_partition(
    bus: Bus,
    p: u32,
    partition_by: Vec<String>,
    idle: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), FleetError> {
    let stream = bus
        .js
        .get_stream(record_stream(&bus))
        .await
        .map_err(FleetError::nats("opening the records stream"))?;
    let name = decoder_name(p);
    let cons: consumer::PullConsumer = stream
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: record_subject(&bus, p),
                ack_policy: consumer::AckPolicy::All,
                ack_wait: Duration::from_secs(30),
                deliver_policy: consumer::DeliverPolicy::All,
                ..consumer::pull::Config::default()
            },
        )
        .await
        .map_err(FleetError::nats(format!("creating consumer {name}")))?;
    let mut dec = Consumer::new();
    let mut names = AgentNames::default();
    // Delivered, not yet acknowledged: (stream sequence, message).
    let mut unacked: VecDeque<(u64, jetstream::Message)> = VecDeque::new();
    let mut fed_upto = 0u64;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let batch = cons
            .fetch()
            .max_messages(256)
            .expires(Duration::from_millis(500))
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "gateway decoder: fetch failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        let mut events: Vec<(String, Vec<u8>)> = Vec::new();
        let mut emit = |e: Emitted| match e.result {
            Ok(ev) => {
                let doc = ev.to_json();
                let key = partition_key_by(&doc, &partition_by);
                let ep = partition_of(&key, bus.names.partitions);
                let id = format!("rec:{p}:{}:{}", e.seq, e.index);
                // Compact serde output: no raw newline, as a batch frame needs.
                events.push((
                    format!("{ep}\u{0}{id}"),
                    serde_json::to_vec(&doc).unwrap_or_default(),
                ));
            }
            Err(err) => {
                tracing::warn!(partition = p, seq = e.seq, format = e.format.as_str(), error = %err, "gateway record rejected by its decoder");
            }
        };
        while let Some(m) = batch.next().await {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "gateway decoder: message error");
                    break;
                }
            };
            let Ok(seq) = m.info().map(|i| i.stream_sequence) else {
                continue;
            };
            if seq <= fed_upto {
                // Redelivered while this worker still holds it: already fed.
                continue;
            }
            fed_upto = seq;
            if let Some(host) = m.headers.as_ref().and_then(|h| h.get(AGENT_HOST_HEADER)) {
                if let Some((_, agent, _)) = ingest::server::decode_record(&m.payload) {
                    if names.insert(agent, host.as_str()) {
                        dec.set_agent_names(names.clone());
                    }
                }
            }
            dec.feed(seq, &m.payload, Instant::now(), &mut emit);
            unacked.push_back((seq, m));
        }
        dec.flush_idle(idle, Instant::now(), &mut emit);
        if !events.is_empty() {
            publish_events(&bus, &events).await?;
        }
        // Everything up to the safe point has its events on the bus: acknowledge it (ack "all").
        let safe = dec.safe_commit();
        let mut last = None;
        while unacked.front().is_some_and(|(s, _)| *s <= safe) {
            last = unacked.pop_front();
        }
        if let Some((_, m)) = last {
            if let Err(e) = m.ack().await {
                tracing::warn!(partition = p, error = %e, "gateway decoder: ack failed; the records will be redelivered and their events dropped as duplicates");
            }
        }
    }
}

/// Publishes decoded events (`"<partition>\0<message id>"`, JSON) and waits for every
/// acknowledgement; retried until the bus takes them (the records stay unacknowledged meanwhile).
async fn publish_events(bus: &Bus, events: &[(String, Vec<u8>)]) -> Result<(), FleetError> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut acks = Vec::with_capacity(events.len());
        let mut failed = None;
        for (key, json) in events {
            let (ep, id) = key.split_once('\0').unwrap_or(("0", key));
            let ep: u32 = ep.parse().unwrap_or(0);
            // One event per message, its id the frame id and the message id (no ordered source:
            // the decoder emits events out of record order, so JetStream's duplicate window, not a
            // high-water mark, drops a redelivered record's events).
            let mut frame = crate::batch::BatchWriter::new();
            frame.push_id(id, json);
            let msg = PublishMessage::build()
                .payload(bytes::Bytes::from(frame.into_payload()))
                .header(crate::batch::VERSION_HEADER, crate::batch::VERSION)
                .message_id(id);
            match bus
                .js
                .send_publish(bus.names.subject(Kind::Event, ep), msg)
                .await
            {
                Ok(a) => acks.push(a),
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        for a in acks {
            if let Err(e) = a.await {
                failed.get_or_insert(e.to_string());
            }
        }
        match failed {
            None => return Ok(()),
            Some(e) => {
                tracing::warn!(error = %e, "gateway decoder: publishing events failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}
