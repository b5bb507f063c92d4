//! The spool consumer's decoding half: spooled records in, events out, each event tagged with a
//! stable identity so that a replay after a crash can be de-duplicated.
//!
//! One decoder per (agent, format) keeps state across records (auditd groups). An event's
//! identity is `(seq, index)`: `seq` is the spool sequence number of the first record the event
//! was built from, `index` its position among the events of that record. Replaying the spool from
//! the checkpoint reproduces the same identities, because decoders are deterministic and
//! [`Consumer::safe_commit`] never commits past the first record of a group still open.
//! Records of a group that was already emitted before the crash (its `last` record is known from
//! the sink, see [`Consumer::resume`]) are skipped, so a replay never builds a partial duplicate.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use correlator::Event;

use super::decode::{decoder, feed_line, DecodeError, Decoder, Format};
use super::server::decode_record;

struct Slot {
    dec: Box<dyn Decoder>,
    last_fed: u64,
    /// The first record of the group the decoder holds, if any.
    pending_since: Option<u64>,
    fed_at: Instant,
}

/// What the consumer hands out: an event or a reject, with its identity.
pub struct Emitted {
    /// First spool record of the event.
    pub seq: u64,
    /// Position among the events with the same `seq`.
    pub index: u32,
    /// Last spool record of the event.
    pub last: u64,
    pub format: Format,
    pub result: Result<Event, DecodeError>,
}

/// What a sink already holds from before a restart, per event.
pub struct Known {
    pub format: Format,
    pub agent: String,
    pub seq: u64,
    pub index: u32,
    pub last: u64,
}

/// Decodes spooled records.
#[derive(Default)]
pub struct Consumer {
    slots: HashMap<(Format, String), Slot>,
    last_seq: u64,
    skip_below: HashMap<(Format, String), u64>,
    seen: HashSet<(u64, u32)>,
}

impl Consumer {
    pub fn new() -> Consumer {
        Consumer::default()
    }

    /// Tells the consumer which events its sink already holds (read back after a restart).
    pub fn resume(&mut self, known: impl IntoIterator<Item = Known>) {
        for k in known {
            let e = self.skip_below.entry((k.format, k.agent)).or_insert(0);
            *e = (*e).max(k.last);
            self.seen.insert((k.seq, k.index));
        }
    }

    /// Feeds the spooled record `seq`. A record that is not a spool record is reported as a reject.
    pub fn feed(&mut self, seq: u64, record: &[u8], now: Instant, emit: &mut dyn FnMut(Emitted)) {
        self.last_seq = self.last_seq.max(seq);
        let Some((format, agent, line)) = decode_record(record) else {
            emit(Emitted {
                seq,
                index: 0,
                last: seq,
                format: Format::Ecs,
                result: Err(DecodeError::new(seq, "spool record has a bad header")),
            });
            return;
        };
        let key = (format, agent.to_string());
        if self.skip_below.get(&key).is_some_and(|&b| seq < b) {
            return; // part of an event the sink already holds
        }
        let seen = &self.seen;
        let slot = self.slots.entry(key).or_insert_with(|| Slot {
            dec: decoder(format, agent),
            last_fed: 0,
            pending_since: None,
            fed_at: now,
        });
        let before = slot.pending_since;
        let prev_fed = slot.last_fed;
        let identity = before.unwrap_or(seq);
        let mut out = Vec::new();
        feed_line(slot.dec.as_mut(), seq, line, &mut |r| out.push(r));
        slot.fed_at = now;
        slot.last_fed = seq;
        let pending = slot.dec.pending();
        // An event emitted while a new group starts at `seq` ended with the previous record.
        let new_group_here = pending && !out.is_empty();
        let last = if new_group_here && before.is_some() {
            prev_fed
        } else {
            seq
        };
        slot.pending_since = if pending {
            if new_group_here || before.is_none() {
                Some(seq)
            } else {
                before
            }
        } else {
            None
        };
        for (index, r) in out.into_iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            if !seen.contains(&(identity, index)) {
                emit(Emitted {
                    seq: identity,
                    index,
                    last,
                    format,
                    result: r,
                });
            }
        }
    }

    /// Flushes decoders that have held a group for longer than `idle` (a group whose closing
    /// record never came).
    pub fn flush_idle(&mut self, idle: Duration, now: Instant, emit: &mut dyn FnMut(Emitted)) {
        for (key, slot) in &mut self.slots {
            if let Some(p) = slot.pending_since {
                if now.duration_since(slot.fed_at) >= idle {
                    let mut out = Vec::new();
                    slot.dec.finish(&mut |r| out.push(r));
                    slot.pending_since = None;
                    for (index, r) in out.into_iter().enumerate() {
                        let index = u32::try_from(index).unwrap_or(u32::MAX);
                        if !self.seen.contains(&(p, index)) {
                            emit(Emitted {
                                seq: p,
                                index,
                                last: slot.last_fed,
                                format: key.0,
                                result: r,
                            });
                        }
                    }
                }
            }
        }
    }

    /// Flushes every decoder (end of input).
    pub fn finish(&mut self, emit: &mut dyn FnMut(Emitted)) {
        self.flush_idle(
            Duration::ZERO,
            Instant::now() + Duration::from_secs(1),
            emit,
        );
    }

    /// The highest sequence number that may be committed: everything fed, except from the first
    /// record of any group still open.
    pub fn safe_commit(&self) -> u64 {
        self.slots
            .values()
            .filter_map(|s| s.pending_since)
            .map(|p| p - 1)
            .min()
            .unwrap_or(self.last_seq)
            .min(self.last_seq)
    }
}

/// Where a driven consumer puts what it decodes.
pub trait Sink {
    /// Takes one decoded event or reject.
    fn emit(&mut self, e: Emitted);
    /// Makes everything emitted so far durable (or hands it on); called after each batch and before
    /// the spool checkpoint moves past it.
    fn flush(&mut self) -> std::io::Result<()>;
}

/// Why [`drive`] stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("reading or committing the spool: {0}")]
    Spool(#[from] super::spool::SpoolError),
    #[error("writing the consumer's sink: {0}")]
    Sink(#[from] std::io::Error),
}

/// Reads `spool` from its checkpoint until `stop` turns true and nothing is left: every batch is fed to
/// `consumer`, idle record groups are flushed after `idle`, the sink is flushed, and only then is the
/// checkpoint committed up to [`Consumer::safe_commit`]. Groups still open at stop stay uncommitted, so a
/// restart decodes them whole (never a partial duplicate).
pub fn drive(
    consumer: &mut Consumer,
    spool: &super::Spool,
    idle: Duration,
    stop: &tokio::sync::watch::Receiver<bool>,
    sink: &mut dyn Sink,
) -> Result<(), DriveError> {
    let mut reader = spool.reader(spool.committed());
    loop {
        let batch = reader.next_batch(8192)?;
        let now = Instant::now();
        for (seq, rec) in &batch {
            consumer.feed(*seq, rec, now, &mut |e| sink.emit(e));
        }
        consumer.flush_idle(idle, now, &mut |e| sink.emit(e));
        sink.flush()?;
        let safe = consumer.safe_commit();
        if safe > spool.committed() {
            spool.commit(safe)?;
        }
        if batch.is_empty() {
            if *stop.borrow() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
