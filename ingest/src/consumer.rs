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
//!
//! A sink that cannot list what it holds (the daemon: alerts, not events) keeps a [`Position`]
//! instead, committed atomically with what the events before it produced: the global safe point
//! plus, per decoder that is further, the last record whose events are all out. Resuming from a
//! position ([`Consumer::resume_at`]) skips exactly the records whose events were handed over.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use correlator::Event;

use super::agents::{stamp_host, AgentNames};
use super::decode::{decoder, decoder_with_context, feed_line, DecodeError, Decoder, Format};
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

/// How far a consumer has handed events over, in a form a sink can store and resume from.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Every record up to this sequence number is fully processed.
    pub seq: u64,
    /// Decoders that are further than `seq`: every record of theirs up to `upto` is processed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decoders: Vec<DecoderPosition>,
    /// Header lines decoders need for their next records ([`Decoder::context`]): restored on
    /// resume, since the records that carried them may lie before the resume point.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contexts: Vec<DecoderContext>,
}

/// One decoder's [`Decoder::context`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DecoderContext {
    pub format: Format,
    pub agent: String,
    pub lines: Vec<String>,
}

/// One decoder's progress beyond [`Position::seq`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DecoderPosition {
    pub format: Format,
    pub agent: String,
    pub upto: u64,
}

/// Decodes spooled records.
#[derive(Default)]
pub struct Consumer {
    slots: HashMap<(Format, String), Slot>,
    last_seq: u64,
    skip_below: HashMap<(Format, String), u64>,
    seen: HashSet<(u64, u32)>,
    /// The host name of each agent's events whose records name none.
    names: AgentNames,
}

impl Consumer {
    pub fn new() -> Consumer {
        Consumer::default()
    }

    /// Sets the agents' host names (see [`super::agents::stamp_host`]); without it an agent's id
    /// names the host of its events whose records name none.
    pub fn set_agent_names(&mut self, names: AgentNames) {
        self.names = names;
    }

    /// Tells the consumer which events its sink already holds (read back after a restart).
    pub fn resume(&mut self, known: impl IntoIterator<Item = Known>) {
        for k in known {
            let e = self.skip_below.entry((k.format, k.agent)).or_insert(0);
            // `last` itself belongs to the held event: fed again, it would open a group of one
            // record that the next group's first record closes into a partial duplicate.
            *e = (*e).max(k.last.saturating_add(1));
            self.seen.insert((k.seq, k.index));
        }
    }

    /// Resumes from a [`Position`] a sink stored: records up to `pos.seq` are not read again (the
    /// caller starts its spool reader there), and the records of each listed decoder up to its
    /// `upto` are skipped.
    pub fn resume_at(&mut self, pos: &Position) {
        self.restore_contexts(&pos.contexts);
        self.last_seq = self.last_seq.max(pos.seq);
        for d in &pos.decoders {
            let e = self
                .skip_below
                .entry((d.format, d.agent.clone()))
                .or_insert(0);
            *e = (*e).max(d.upto.saturating_add(1));
        }
    }

    /// Puts decoders back in the state their header lines described (see [`Position::contexts`]).
    /// Decoders that already exist are left alone.
    pub fn restore_contexts(&mut self, contexts: &[DecoderContext]) {
        for c in contexts {
            let key = (c.format, c.agent.clone());
            if self.slots.contains_key(&key) {
                continue;
            }
            self.slots.insert(
                key,
                Slot {
                    dec: decoder_with_context(c.format, &c.agent, &c.lines),
                    last_fed: 0,
                    pending_since: None,
                    fed_at: Instant::now(),
                },
            );
        }
    }

    /// The decoders' header lines ([`Decoder::context`]), for a sink that keeps them apart from a
    /// [`Position`].
    pub fn contexts(&self) -> Vec<DecoderContext> {
        let mut out: Vec<DecoderContext> = self
            .slots
            .iter()
            .filter_map(|((format, agent), slot)| {
                let lines = slot.dec.context();
                (!lines.is_empty()).then(|| DecoderContext {
                    format: *format,
                    agent: agent.clone(),
                    lines,
                })
            })
            .collect();
        out.sort_by(|a, b| (a.format.as_str(), &a.agent).cmp(&(b.format.as_str(), &b.agent)));
        out
    }

    /// Where this consumer stands: everything emitted so far, nothing more. Valid between two
    /// calls of [`Consumer::feed`] (or the flushes), never in the middle of one.
    pub fn position(&self) -> Position {
        let seq = self.safe_commit();
        let mut by_key: HashMap<&(Format, String), u64> = HashMap::new();
        for (k, b) in &self.skip_below {
            by_key.insert(k, b.saturating_sub(1));
        }
        for (k, slot) in &self.slots {
            let done = slot
                .pending_since
                .map_or(slot.last_fed, |p| p.saturating_sub(1));
            let e = by_key.entry(k).or_insert(0);
            *e = (*e).max(done);
        }
        let mut decoders: Vec<DecoderPosition> = by_key
            .into_iter()
            .filter(|(_, upto)| *upto > seq)
            .map(|((format, agent), upto)| DecoderPosition {
                format: *format,
                agent: agent.clone(),
                upto,
            })
            .collect();
        decoders.sort_by(|a, b| (a.format.as_str(), &a.agent).cmp(&(b.format.as_str(), &b.agent)));
        Position {
            seq,
            decoders,
            contexts: self.contexts(),
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
        let host = self.names.host_name(agent);
        for (index, mut r) in out.into_iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            if let Ok(ev) = &mut r {
                stamp_host(format, ev, host);
            }
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
                    let host = self.names.host_name(&key.1);
                    for (index, mut r) in out.into_iter().enumerate() {
                        let index = u32::try_from(index).unwrap_or(u32::MAX);
                        if let Ok(ev) = &mut r {
                            stamp_host(key.0, ev, host);
                        }
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
    /// Makes everything emitted so far durable (or hands it on, followed by `at`, the position
    /// that covers it); called after each batch and before the spool checkpoint moves past it.
    fn flush(&mut self, at: &Position) -> std::io::Result<()>;
    /// How far the spool may be committed (its segments deleted), given that everything up to
    /// `safe` has been flushed. A sink that is durable once flushed answers `safe`; one that hands
    /// events on answers what its downstream has acknowledged as durable.
    fn durable_upto(&mut self, safe: u64) -> u64 {
        safe
    }

    /// Whether [`drive`] reads the spool to its end once `stop` turns true (a sink that writes a
    /// file, and is cheap per record) or stops after the record it is feeding (a sink whose
    /// downstream may be slow: what is left stays in the spool, uncommitted, for the next start).
    fn drain_on_stop(&self) -> bool {
        true
    }
}

/// Why [`drive`] stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("reading or committing the spool: {0}")]
    Spool(#[from] super::spool::SpoolError),
    #[error("writing the consumer's sink: {0}")]
    Sink(#[from] std::io::Error),
}

/// Reads `spool` after record `from` (its checkpoint, or where the sink says it stopped) until `stop`
/// turns true and nothing is left (or, for a sink that does not [`Sink::drain_on_stop`], until
/// `stop` turns true: the record being fed is finished, the sink is flushed with the position after
/// it, and the rest is left in the spool for the next start): every batch is fed to `consumer`, idle record groups are flushed
/// after `idle`, the sink is flushed, and only then is the checkpoint committed up to
/// [`Consumer::safe_commit`], or less if the sink says so ([`Sink::durable_upto`]). Groups still open
/// at stop stay uncommitted, so a restart decodes them whole (never a partial duplicate).
pub fn drive(
    consumer: &mut Consumer,
    spool: &super::Spool,
    from: u64,
    idle: Duration,
    stop: &tokio::sync::watch::Receiver<bool>,
    sink: &mut dyn Sink,
) -> Result<(), DriveError> {
    let mut reader = spool.reader(from);
    consumer.last_seq = consumer.last_seq.max(from);
    loop {
        let batch = reader.next_batch(8192)?;
        let now = Instant::now();
        let mut stopped = false;
        for (seq, rec) in &batch {
            if !sink.drain_on_stop() && *stop.borrow() {
                stopped = true;
                break;
            }
            consumer.feed(*seq, rec, now, &mut |e| sink.emit(e));
        }
        if !stopped {
            consumer.flush_idle(idle, now, &mut |e| sink.emit(e));
        }
        sink.flush(&consumer.position())?;
        let commit = sink
            .durable_upto(consumer.safe_commit())
            .min(spool.durable());
        if commit > spool.committed() {
            spool.commit(commit)?;
        }
        if stopped || !sink.drain_on_stop() && *stop.borrow() {
            let fed = consumer.last_seq;
            tracing::info!(
                fed_upto = fed,
                resume_after = consumer.safe_commit(),
                left_in_spool = spool.durable().saturating_sub(fed),
                "network ingest consumer stopped; the records left in the spool are decoded at the next start"
            );
            return Ok(());
        }
        if batch.is_empty() {
            if *stop.borrow() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::server::encode_record;

    /// auditd groups of three records from one agent, interleaved with ECS records of another.
    fn records() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for n in 0..10u64 {
            let ts = 1_700_000_000 + n;
            for (i, t) in ["SYSCALL", "EXECVE", "PATH"].iter().enumerate() {
                let line = format!("type={t} msg=audit({ts}.000:{n}): item={i} pid={n}");
                out.push(encode_record(Format::Auditd, "host-a", line.as_bytes()));
                if i == 1 {
                    let doc = format!(r#"{{"event":{{"action":"x"}},"labels":{{"n":"{n}"}}}}"#);
                    out.push(encode_record(Format::Ecs, "host-b", doc.as_bytes()));
                }
            }
        }
        out
    }

    fn describe(e: Emitted) -> String {
        match e.result {
            Ok(ev) => ev.to_json().to_string(),
            Err(err) => format!("reject {err}"),
        }
    }

    /// Feeds records `from+1..=upto` (1-based sequence numbers).
    fn feed(c: &mut Consumer, recs: &[Vec<u8>], from: u64, upto: u64, out: &mut Vec<String>) {
        let now = Instant::now();
        for (seq, r) in (1u64..).zip(recs) {
            if seq > from && seq <= upto {
                c.feed(seq, r, now, &mut |e| out.push(describe(e)));
            }
        }
    }

    /// Everything one uninterrupted consumer emits from `recs`, sorted.
    fn uninterrupted(recs: &[Vec<u8>]) -> Vec<String> {
        let mut whole = Vec::new();
        let mut c = Consumer::new();
        feed(&mut c, recs, 0, recs.len() as u64, &mut whole);
        c.finish(&mut |e| whole.push(describe(e)));
        whole.sort();
        whole
    }

    /// For a crash after every record: the first consumer's position (through its JSON form, as
    /// the daemon stores it) resumes a second one, and together they must emit exactly `whole`.
    /// Returns how many decoder positions ahead of the safe point the cuts produced.
    fn check_every_cut(recs: &[Vec<u8>], whole: &[String]) -> usize {
        let n = recs.len() as u64;
        let mut ahead = 0;
        for cut in 0..=n {
            let mut got = Vec::new();
            let mut first = Consumer::new();
            feed(&mut first, recs, 0, cut, &mut got);
            let pos = first.position();
            assert!(pos.seq <= cut);
            ahead += pos.decoders.len();
            let pos: Position =
                serde_json::from_value(serde_json::to_value(&pos).unwrap()).unwrap();
            let mut second = Consumer::new();
            second.resume_at(&pos);
            feed(&mut second, recs, pos.seq, n, &mut got);
            second.finish(&mut |e| got.push(describe(e)));
            got.sort();
            assert_eq!(got, whole, "crash after record {cut}, resumed at {pos:?}");
        }
        ahead
    }

    #[test]
    fn resuming_from_any_position_emits_every_event_exactly_once() {
        let recs = records();
        let whole = uninterrupted(&recs);
        assert_eq!(whole.len(), 20, "10 auditd groups and 10 ECS events");
        // Cuts inside an auditd group leave the ECS decoder ahead of the safe point.
        assert!(check_every_cut(&recs, &whole) > 0);
    }

    #[test]
    fn resuming_from_what_a_sink_holds_never_emits_a_partial_duplicate() {
        let recs = records();
        let n = recs.len() as u64;
        let mut whole = Vec::new();
        let mut c = Consumer::new();
        feed(&mut c, &recs, 0, n, &mut whole);
        c.finish(&mut |e| whole.push(describe(e)));
        whole.sort();
        for cut in 1..=n {
            // The sink wrote every event up to record `cut`, but the spool checkpoint is still
            // at 0 (a crash between the sink's fsync and the checkpoint).
            let mut held = Vec::new();
            let mut known = Vec::new();
            let mut first = Consumer::new();
            let now = Instant::now();
            for (seq, r) in (1u64..).zip(&recs).take_while(|(s, _)| *s <= cut) {
                first.feed(seq, r, now, &mut |e| {
                    if let Ok(ev) = &e.result {
                        let agent = ev
                            .get_path("agent.id")
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                            .to_string();
                        known.push(Known {
                            format: e.format,
                            agent,
                            seq: e.seq,
                            index: e.index,
                            last: e.last,
                        });
                    }
                    held.push(describe(e));
                });
            }
            let mut second = Consumer::new();
            second.resume(known);
            let mut got = held;
            feed(&mut second, &recs, 0, n, &mut got);
            second.finish(&mut |e| got.push(describe(e)));
            got.sort();
            assert_eq!(
                got, whole,
                "crash after record {cut}, replay from the start"
            );
        }
    }

    /// Two Zeek TSV logs in a row (each with its own header, the second with other columns),
    /// with ECS records of another agent between them.
    fn zeek_records() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut zeek = |l: String| out.push(encode_record(Format::Zeek, "sensor-z", l.as_bytes()));
        for (log, fields, types) in [
            (
                "conn",
                "ts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto",
                "time\tstring\taddr\tport\taddr\tport\tenum",
            ),
            (
                "conn",
                "uid\tts\tid.resp_h\tid.resp_p\tid.orig_h\tid.orig_p\tproto",
                "string\ttime\taddr\tport\taddr\tport\tenum",
            ),
        ] {
            zeek("#separator \\x09".to_string());
            zeek("#set_separator\t,".to_string());
            zeek(format!("#path\t{log}"));
            zeek(format!("#fields\t{fields}"));
            zeek(format!("#types\t{types}"));
            for n in 0..4 {
                let row = if fields.starts_with("ts") {
                    format!("1700000{n}.5\tC{n}a\t10.0.0.{n}\t4{n}000\t10.9.9.9\t443\ttcp")
                } else {
                    format!("C{n}b\t1700001{n}.5\t10.9.9.8\t80\t10.0.1.{n}\t5{n}000\ttcp")
                };
                zeek(row);
            }
        }
        let mut all = Vec::new();
        for (i, r) in out.into_iter().enumerate() {
            all.push(r);
            if i % 3 == 0 {
                let doc = format!(r#"{{"event":{{"action":"x"}},"labels":{{"n":"{i}"}}}}"#);
                all.push(encode_record(Format::Ecs, "host-b", doc.as_bytes()));
            }
        }
        all
    }

    #[test]
    fn a_zeek_tsv_header_before_the_resume_point_still_applies_after_it() {
        let recs = zeek_records();
        let whole = uninterrupted(&recs);
        assert!(
            whole.iter().all(|e| !e.starts_with("reject")),
            "an uninterrupted run decodes every row: {whole:?}"
        );
        assert_eq!(whole.iter().filter(|e| e.contains("zeek")).count(), 8);
        check_every_cut(&recs, &whole);
    }

    /// A sink whose downstream may be slow stops the drive after the record it is feeding when
    /// `stop` turns true (mid-batch), flushed with the position after it; the rest stays in the
    /// spool. A sink that drains (the default) reads everything first.
    #[test]
    fn a_sink_that_does_not_drain_stops_after_the_record_it_is_feeding() {
        struct Counting {
            emitted: usize,
            stop_after: usize,
            stop: tokio::sync::watch::Sender<bool>,
            drain: bool,
            last: Option<u64>,
        }
        impl Sink for Counting {
            fn emit(&mut self, _e: Emitted) {
                self.emitted += 1;
                if self.emitted == self.stop_after {
                    let _ = self.stop.send(true);
                }
            }
            fn flush(&mut self, at: &Position) -> std::io::Result<()> {
                self.last = Some(at.seq);
                Ok(())
            }
            fn drain_on_stop(&self) -> bool {
                self.drain
            }
        }
        for drain in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let spool = super::super::Spool::open(dir.path(), Default::default()).unwrap();
            let recs: Vec<Vec<u8>> = (0..100)
                .map(|n| encode_record(Format::Ecs, "a", format!(r#"{{"n":{n}}}"#).as_bytes()))
                .collect();
            spool.append_batch(&recs).unwrap();
            let (tx, rx) = tokio::sync::watch::channel(false);
            let mut sink = Counting {
                emitted: 0,
                stop_after: 10,
                stop: tx,
                drain,
                last: None,
            };
            drive(
                &mut Consumer::new(),
                &spool,
                0,
                Duration::from_secs(1),
                &rx,
                &mut sink,
            )
            .unwrap();
            let want = if drain { 100 } else { 10 };
            assert_eq!(sink.emitted, want, "drain {drain}");
            assert_eq!(sink.last, Some(want as u64), "drain {drain}");
            assert_eq!(spool.durable(), 100);
        }
    }
}
