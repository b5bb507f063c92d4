//! The edge's publisher: drains a durable local journal (the ingest spool) into JetStream.
//!
//! The daemon appends each normalised event (and each alert it raises) to the journal as a record
//! `tag: u8 ('E' event, 'A' alert) | partition: u32 LE | ECS JSON`; the partition is computed at
//! append time from the event's host ([`crate::partition`]). The publisher reads up to
//! `publish_window` records after the journal's checkpoint (lingering [`DEFAULT_LINGER`] for more
//! when it found fewer), packs them per kind and partition into batches ([`crate::batch`]: up to
//! 256 events or 256 KiB, frame id = journal sequence, header `Sensor-Source` = the edge id,
//! message id `<edge id>:<tag><partition>:<first>-<last>`), publishes them in rounds of at most one
//! batch per partition, waits for every acknowledgement of a round before the next, and commits the
//! checkpoint only once all of them are acknowledged.
//!
//! - Bus unreachable (or the stream missing): the acknowledgements fail or time out, nothing is
//!   committed, records stay in the journal (which keeps taking new ones) and the publisher retries
//!   from the checkpoint with backoff. Nothing is lost.
//! - A batch published whose acknowledgement was lost (or the edge dying between publish and
//!   commit) is published again, from the checkpoint. With the same boundaries JetStream drops it as
//!   a duplicate; with other boundaries (more records in the journal by then) its events reach the
//!   stream twice and the central skips those at or below the edge's high-water mark in the
//!   partition (see [`crate::central`]). Nothing is doubled.
//! - One unacknowledged batch per partition at a time keeps an edge's frames of a partition in
//!   sequence order in the stream: a batch that failed is never followed by a later one of the same
//!   partition before it is republished, so the high-water mark never passes an event not stored.
//!
//! Architecture Invariant: a journal record is committed only after JetStream acknowledged the
//! batch holding it (or reported it a duplicate, i.e. already stored); the fleet identity of a
//! record (`<edge id>:<sequence>`) never changes.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;

use std::collections::{BTreeMap, VecDeque};

use crate::batch::{self, compact, BatchWriter};
use crate::bus::{Bus, Kind};
use crate::FleetError;

/// A durable, ordered log of records with a commit point: what the edge publishes from. The ingest
/// spool is one (implemented below).
pub trait Journal: Sync {
    type Reader<'a>: JournalReader + Send
    where
        Self: 'a;
    /// A reader of the records after sequence number `after`.
    fn reader(&self, after: u64) -> Self::Reader<'_>;
    /// The highest sequence number committed (published and acknowledged).
    fn committed(&self) -> u64;
    /// Marks every record up to `seq` as done; the journal may delete them.
    fn commit(&self, seq: u64) -> Result<(), FleetError>;
    /// Resolves once a record after `seq` is durable.
    fn wait_beyond(&self, seq: u64) -> impl Future<Output = ()> + Send;
}

/// Reads a [`Journal`] in order.
pub trait JournalReader {
    /// Up to `max` durable records (sequence number, record), in order; empty when none is ready.
    fn next_batch(&mut self, max: usize) -> Result<Vec<(u64, Vec<u8>)>, FleetError>;
}

/// The ingest spool is the edge's journal: dense sequence numbers from 1, `fdatasync`ed batches, a
/// checkpoint file, whole segments deleted at or below it.
impl Journal for ingest::Spool {
    type Reader<'a> = ingest::SpoolReader<'a>;
    fn reader(&self, after: u64) -> ingest::SpoolReader<'_> {
        ingest::Spool::reader(self, after)
    }
    fn committed(&self) -> u64 {
        ingest::Spool::committed(self)
    }
    fn commit(&self, seq: u64) -> Result<(), FleetError> {
        ingest::Spool::commit(self, seq).map_err(|e| FleetError::Spool(e.to_string()))
    }
    fn wait_beyond(&self, seq: u64) -> impl Future<Output = ()> + Send {
        ingest::Spool::wait_beyond(self, seq)
    }
}

impl JournalReader for ingest::SpoolReader<'_> {
    fn next_batch(&mut self, max: usize) -> Result<Vec<(u64, Vec<u8>)>, FleetError> {
        ingest::SpoolReader::next_batch(self, max).map_err(|e| FleetError::Spool(e.to_string()))
    }
}

/// Builds a journal record for `json` of `kind` in `partition`.
pub fn encode_record(kind: Kind, partition: u32, json: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(5 + json.len());
    r.push(kind.tag());
    r.extend_from_slice(&partition.to_le_bytes());
    r.extend_from_slice(json);
    r
}

/// Splits a journal record into its kind, partition and JSON.
pub fn decode_record(r: &[u8]) -> Option<(Kind, u32, &[u8])> {
    let (&tag, rest) = r.split_first()?;
    let kind = Kind::from_tag(tag)?;
    let (p, json) = rest.split_at_checked(4)?;
    let partition = u32::from_le_bytes(p.try_into().ok()?);
    Some((kind, partition, json))
}

/// The edge's identity on the bus: read from `<dir>/edge-id`, created (random, 128 bits) on first
/// use. It must outlive restarts: message ids are `<edge id>:<sequence>`.
pub fn edge_id(dir: &Path) -> Result<String, FleetError> {
    let path = dir.join("edge-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(FleetError::ReadFile {
                what: "edge id file",
                path,
                source,
            })
        }
    }
    let mut b = [0u8; 16];
    let io = |source| FleetError::ReadFile {
        what: "edge id file",
        path: path.clone(),
        source,
    };
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").map_err(io)?,
        &mut b,
    )
    .map_err(io)?;
    let id = hex::encode(b);
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join("edge-id.tmp");
    std::fs::write(&tmp, format!("{id}\n")).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(id)
}

/// Counters of a publisher.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishStats {
    /// Records acknowledged as newly stored.
    pub published: u64,
    /// Batches (JetStream messages) acknowledged as newly stored.
    pub messages: u64,
    /// Records of batches JetStream reported as already stored (a batch republished with the same
    /// boundaries after a lost acknowledgement).
    pub duplicates: u64,
    /// Records that are not journal records of ours (skipped, with an error logged).
    pub malformed: u64,
    /// Batches that failed (bus unreachable, timed out) and were retried.
    pub retries: u64,
}

/// The default [`EdgePublisher::with_linger`] (`fleet.nats.publish_linger_ms`).
pub const DEFAULT_LINGER: Duration = Duration::from_millis(10);

/// Publishes a journal to the bus.
#[derive(Debug)]
pub struct EdgePublisher {
    bus: Bus,
    edge_id: String,
    window: usize,
    linger: Duration,
}

impl EdgePublisher {
    pub fn new(bus: Bus, edge_id: String, window: usize) -> EdgePublisher {
        EdgePublisher {
            bus,
            edge_id,
            window: window.max(1),
            linger: DEFAULT_LINGER,
        }
    }

    /// How long a round that found fewer than `window` records waits for more before publishing
    /// (fewer, larger batches at moderate rates; at most this much latency added).
    pub fn with_linger(mut self, linger: Duration) -> EdgePublisher {
        self.linger = linger;
        self
    }

    /// The fleet identity of journal record `seq` (`sensor.fleet_id` of its event centrally).
    pub fn event_id(&self, seq: u64) -> String {
        format!("{}:{seq}", self.edge_id)
    }

    /// Publishes until `stop` turns true, then returns what it did. Journal errors (its files) end it
    /// with an error; bus errors are retried.
    pub async fn run<J: Journal>(
        &self,
        journal: &J,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<PublishStats, FleetError> {
        let mut stats = PublishStats::default();
        let mut backoff = Duration::from_millis(100);
        let mut failing = false;
        'resume: loop {
            let mut read_upto = journal.committed();
            let mut reader = journal.reader(read_upto);
            loop {
                if *stop.borrow() {
                    return Ok(stats);
                }
                let mut batch = reader.next_batch(self.window)?;
                if !batch.is_empty() && batch.len() < self.window && !self.linger.is_zero() {
                    // A partial round: linger for more so that batches are fuller.
                    tokio::time::sleep(self.linger).await;
                    batch.extend(reader.next_batch(self.window - batch.len())?);
                }
                let Some(&(last, _)) = batch.last() else {
                    tokio::select! {
                        () = journal.wait_beyond(read_upto) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                };
                read_upto = last;
                match self.publish_batch(&batch, &mut stats).await {
                    Ok(()) => {
                        journal.commit(last)?;
                        if failing {
                            tracing::info!(
                                through = last,
                                "bus reachable again: edge journal catching up"
                            );
                            failing = false;
                        }
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => {
                        stats.retries += 1;
                        if !failing {
                            tracing::warn!(error = %e, committed = journal.committed(), "publishing to the bus failed; events stay in the edge journal and are retried");
                            failing = true;
                        }
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            _ = stop.changed() => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue 'resume;
                    }
                }
            }
        }
    }

    /// Packs `records` into batches (per kind and partition, in journal order) and publishes them
    /// in rounds: each round sends at most one batch per partition and waits for every
    /// acknowledgement before the next, so that a source's frames of one partition reach the stream
    /// in sequence order even when a publish fails (the central's high-water mark relies on it).
    async fn publish_batch(
        &self,
        records: &[(u64, Vec<u8>)],
        stats: &mut PublishStats,
    ) -> Result<(), FleetError> {
        let mut groups: BTreeMap<(u8, u32), VecDeque<Pending>> = BTreeMap::new();
        for (seq, rec) in records {
            let Some((kind, partition, json)) =
                decode_record(rec).and_then(|(k, p, j)| Some((k, p, compact(j)?)))
            else {
                stats.malformed += 1;
                tracing::error!(
                    seq,
                    len = rec.len(),
                    "edge journal record is not a fleet record; skipped"
                );
                continue;
            };
            let q = groups.entry((kind.tag(), partition)).or_default();
            let fresh = q.back().is_none_or(|b| b.writer.full_for(json.len()));
            if fresh {
                q.push_back(Pending {
                    kind,
                    partition,
                    first: *seq,
                    last: *seq,
                    writer: BatchWriter::new(),
                });
            }
            if let Some(b) = q.back_mut() {
                b.writer.push_seq(*seq, &json);
                b.last = *seq;
            }
        }
        loop {
            let round: Vec<Pending> = groups
                .values_mut()
                .filter_map(VecDeque::pop_front)
                .collect();
            if round.is_empty() {
                return Ok(());
            }
            self.publish_round(round, stats).await?;
        }
    }

    /// Publishes one batch per partition and waits for all their acknowledgements.
    async fn publish_round(
        &self,
        round: Vec<Pending>,
        stats: &mut PublishStats,
    ) -> Result<(), FleetError> {
        let mut acks: Vec<(u64, PublishAckFuture)> = Vec::with_capacity(round.len());
        for b in round {
            let subject = self.bus.names.subject(b.kind, b.partition);
            let id = format!(
                "{}:{}{}:{}-{}",
                self.edge_id,
                char::from(b.kind.tag()),
                b.partition,
                b.first,
                b.last
            );
            let n = b.writer.len() as u64;
            let msg = PublishMessage::build()
                .payload(bytes::Bytes::from(b.writer.into_payload()))
                .header(batch::VERSION_HEADER, batch::VERSION)
                .header(batch::SOURCE_HEADER, self.edge_id.as_str())
                .message_id(id);
            let ack = self
                .bus
                .js
                .send_publish(subject, msg)
                .await
                .map_err(FleetError::nats(format!(
                    "publishing records {}-{}",
                    b.first, b.last
                )))?;
            acks.push((n, ack));
        }
        let mut first_err = None;
        for (n, ack) in acks {
            match ack.await {
                Ok(a) if a.duplicate => stats.duplicates += n,
                Ok(_) => {
                    stats.published += n;
                    stats.messages += 1;
                }
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) => Err(FleetError::Nats {
                context: "waiting for publish acknowledgements".to_string(),
                message: e.to_string(),
            }),
        }
    }
}

/// One batch being built: the records of one kind and partition, in journal order.
struct Pending {
    kind: Kind,
    partition: u32,
    first: u64,
    last: u64,
    writer: BatchWriter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = encode_record(Kind::Event, 7, br#"{"a":1}"#);
        assert_eq!(
            decode_record(&r),
            Some((Kind::Event, 7, &br#"{"a":1}"#[..]))
        );
        assert_eq!(decode_record(b"E12"), None);
        assert_eq!(decode_record(b"X1234{}"), None);
        assert_eq!(decode_record(b""), None);
    }

    #[test]
    fn edge_id_is_kept() {
        let dir = std::env::temp_dir().join(format!("fleet-edge-id-{}", std::process::id()));
        let a = edge_id(&dir).ok();
        let b = edge_id(&dir).ok();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(a.as_ref().is_some_and(|s| s.len() == 32));
        assert_eq!(a, b);
    }
}
