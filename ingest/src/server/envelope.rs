//! The spool envelope: how a record is framed in the spool with its format and agent id.

use crate::decode::Format;
#[cfg(doc)]
use crate::spool::Spool;

/// A spooled record: `format code | agent id length | agent id | record bytes`.
pub fn encode_record(format: Format, agent_id: &str, line: &[u8]) -> Vec<u8> {
    let mut v = record_header(format, agent_id);
    v.extend_from_slice(line);
    v
}

/// The part of a spooled record before the record bytes (see [`encode_record`]); with
/// [`Spool::append_with_header`] a request's lines are spooled from the body as they are.
pub fn record_header(format: Format, agent_id: &str) -> Vec<u8> {
    let id = &agent_id.as_bytes()[..agent_id.len().min(255)];
    let mut v = Vec::with_capacity(2 + id.len());
    v.push(format.code());
    v.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    v.extend_from_slice(id);
    v
}

/// Splits a spooled record back into format, agent id and record bytes.
pub fn decode_record(rec: &[u8]) -> Option<(Format, &str, &[u8])> {
    let format = Format::from_code(*rec.first()?)?;
    let n = usize::from(*rec.get(1)?);
    let id = std::str::from_utf8(rec.get(2..2 + n)?).ok()?;
    Some((format, id, rec.get(2 + n..)?))
}
