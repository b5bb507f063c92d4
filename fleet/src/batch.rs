//! The message format of the events and alerts streams: a batch of events in one JetStream message.
//!
//! One JetStream message per event cost the edge 3.5-7 µs of CPU per event (header, `Nats-Msg-Id`,
//! reply inbox, acknowledgement) and the central as much again (metadata parse, header map, ack).
//! A batch carries up to [`MAX_EVENTS`] events of one source for one partition:
//!
//! - headers: `Sensor-Batch-Version: 1` ([`VERSION_HEADER`]); `Sensor-Source: <source>`
//!   ([`SOURCE_HEADER`]) when the frames' ids are the increasing sequence numbers of one ordered
//!   source (an edge's journal); `Nats-Msg-Id` (JetStream's duplicate window, see below);
//! - payload: one frame per line, `<id> <ECS JSON>\n`. The JSON is compact (no raw newline: a
//!   newline inside a JSON string is escaped). With `Sensor-Source`, `<id>` is the decimal journal
//!   sequence and the event's fleet identity (`sensor.fleet_id`) is `<source>:<seq>`; without it,
//!   `<id>` is the fleet identity itself.
//!
//! Exactly once: a batch republished after an edge crash may have other boundaries than the first
//! time, so JetStream's message-id dedup no longer suffices. The central keeps, per partition, the
//! highest sequence fed of every source (its high-water mark, checkpointed with the detector state)
//! and skips frames at or below it. That needs each source's frames of one partition to reach the
//! stream in sequence order, which the edge keeps by having at most one unacknowledged batch per
//! partition (see [`crate::edge`]). Frames without a source (the gateway decoder's, whose events
//! are not produced in an order) keep one event per message and rely on `Nats-Msg-Id`.
//!
//! Untrusted input: a frame that does not parse is reported ([`FrameError`]) and the next line is
//! read; nothing after a bad frame is lost.

use std::fmt::Write as _;

/// The header naming the format version of a batch.
pub const VERSION_HEADER: &str = "Sensor-Batch-Version";
/// The version this build writes and reads.
pub const VERSION: &str = "1";
/// The header naming the ordered source (edge id) whose journal sequences the frame ids are.
pub const SOURCE_HEADER: &str = "Sensor-Source";
/// Events per batch at most.
pub const MAX_EVENTS: usize = 256;
/// Payload bytes per batch at most (a frame larger than this travels alone; nats-server's default
/// `max_payload` is 1 MiB).
pub const MAX_BYTES: usize = 256 * 1024;

/// Builds a batch payload.
#[derive(Debug, Default)]
pub struct BatchWriter {
    buf: Vec<u8>,
    events: usize,
}

impl BatchWriter {
    pub fn new() -> BatchWriter {
        BatchWriter::default()
    }

    /// True when one more frame of `len` bytes of JSON would pass the limits.
    pub fn full_for(&self, len: usize) -> bool {
        self.events > 0 && (self.events >= MAX_EVENTS || self.buf.len() + len + 22 > MAX_BYTES)
    }

    /// Appends a frame with a numeric id. `json` must be compact JSON without a raw newline
    /// ([`compact`] makes it so).
    pub fn push_seq(&mut self, seq: u64, json: &[u8]) {
        let mut b = itoa_u64(seq);
        b.push(b' ');
        self.buf.extend_from_slice(&b);
        self.push_json(json);
    }

    /// Appends a frame with a textual id (no space, no newline in it).
    pub fn push_id(&mut self, id: &str, json: &[u8]) {
        self.buf.extend_from_slice(id.as_bytes());
        self.buf.push(b' ');
        self.push_json(json);
    }

    fn push_json(&mut self, json: &[u8]) {
        self.buf.extend_from_slice(json);
        self.buf.push(b'\n');
        self.events += 1;
    }

    pub fn len(&self) -> usize {
        self.events
    }

    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    pub fn into_payload(self) -> Vec<u8> {
        self.buf
    }
}

fn itoa_u64(n: u64) -> Vec<u8> {
    let mut s = String::with_capacity(20);
    let _ = write!(s, "{n}");
    s.into_bytes()
}

/// `json` with no raw newline: as is when it has none (the usual case, compact serde output),
/// else re-serialised compactly; `None` when it is not JSON at all.
pub fn compact(json: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    if memchr::memchr(b'\n', json).is_none() {
        return Some(std::borrow::Cow::Borrowed(json));
    }
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    serde_json::to_vec(&v).ok().map(std::borrow::Cow::Owned)
}

/// One frame of a batch.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The frame's id as written.
    pub id: &'a str,
    /// The id as a sequence number (frames of an ordered source), else `None`.
    pub seq: Option<u64>,
    /// The event's JSON text.
    pub json: &'a str,
}

/// A frame that could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame {index} (byte {offset}) is not UTF-8")]
    NotUtf8 { index: usize, offset: usize },
    #[error("frame {index} (byte {offset}) has no space between its id and its JSON")]
    NoId { index: usize, offset: usize },
    #[error(
        "frame {index} (byte {offset}): id {id:?} is not a sequence number of source {source_id}"
    )]
    BadSeq {
        index: usize,
        offset: usize,
        id: String,
        source_id: String,
    },
}

/// The frames of a batch payload, in order; `ordered` when the message named a source (ids must
/// then be sequence numbers). Empty lines are skipped.
pub fn frames<'a>(
    payload: &'a [u8],
    source: Option<&'a str>,
) -> impl Iterator<Item = Result<Frame<'a>, FrameError>> + 'a {
    let mut offset = 0usize;
    let mut index = 0usize;
    std::iter::from_fn(move || loop {
        if offset >= payload.len() {
            return None;
        }
        let rest = &payload[offset..];
        let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        let line = &rest[..end];
        let at = offset;
        offset += end + 1;
        if line.is_empty() {
            continue;
        }
        let i = index;
        index += 1;
        return Some(frame(line, source, i, at));
    })
}

fn frame<'a>(
    line: &'a [u8],
    source: Option<&str>,
    index: usize,
    offset: usize,
) -> Result<Frame<'a>, FrameError> {
    let text = std::str::from_utf8(line).map_err(|_| FrameError::NotUtf8 { index, offset })?;
    let (id, json) = text
        .split_once(' ')
        .filter(|(id, _)| !id.is_empty())
        .ok_or(FrameError::NoId { index, offset })?;
    let seq = match source {
        None => None,
        Some(src) => Some(id.parse::<u64>().map_err(|_| FrameError::BadSeq {
            index,
            offset,
            id: id.chars().take(40).collect(),
            source_id: src.to_string(),
        })?),
    };
    Ok(Frame { id, seq, json })
}

/// The headers of a batch (`source` for an ordered source).
pub fn headers(msg_id: &str, source: Option<&str>) -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    h.insert(VERSION_HEADER, VERSION);
    h.insert("Nats-Msg-Id", msg_id);
    if let Some(s) = source {
        h.insert(SOURCE_HEADER, s);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_frames_do_not_stop_the_rest() {
        let mut w = BatchWriter::new();
        w.push_seq(7, br#"{"a":1}"#);
        w.push_seq(9, br#"{"a":2}"#);
        let mut p = w.into_payload();
        p.extend_from_slice(b"x {\"a\":3}\nnospace\n\xff\xfe 1\n11 {\"a\":4}\n");
        let got: Vec<_> = frames(&p, Some("e1")).collect();
        assert_eq!(got.len(), 6);
        assert_eq!(
            got[0],
            Ok(Frame {
                id: "7",
                seq: Some(7),
                json: r#"{"a":1}"#
            })
        );
        assert!(matches!(got[2], Err(FrameError::BadSeq { index: 2, .. })));
        assert!(matches!(got[3], Err(FrameError::NoId { index: 3, .. })));
        assert!(matches!(got[4], Err(FrameError::NotUtf8 { index: 4, .. })));
        assert_eq!(got[5].as_ref().map(|f| f.seq), Ok(Some(11)));
        // Without a source, ids are taken as they are.
        let got: Vec<_> = frames(b"rec:1:2:0 {}\n", None).collect();
        assert_eq!(
            got,
            vec![Ok(Frame {
                id: "rec:1:2:0",
                seq: None,
                json: "{}"
            })]
        );
    }

    #[test]
    fn limits_and_newlines() {
        let mut w = BatchWriter::new();
        assert!(!w.full_for(MAX_BYTES * 2), "an empty batch takes any frame");
        for i in 0..MAX_EVENTS as u64 {
            w.push_seq(i, b"{}");
        }
        assert!(w.full_for(2));
        assert_eq!(compact(b"{\"a\":\n1}").as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(compact(b"{\n"), None);
        assert_eq!(compact(b"{}").as_deref(), Some(&b"{}"[..]));
    }
}
