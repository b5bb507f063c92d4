//! The auditd remote protocol (what Debian's `audisp-remote` speaks): managed 16-byte headers or
//! ascii lines, each record validated and appended to the spool before the ACK.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::sink::SinkError;
use super::{encode_record, process_body, stopped, State};
use crate::decode::Format;
use crate::spool::SpoolError;

// ---- auditd remote protocol ----------------------------------------------------------------

/// The 16-byte header of audit-userspace's remote protocol (all fields little-endian):
/// `magic u32 = 0xff0000fe | header version u8 | message version u8 | type u32 | length u16 | sequence u32`.
pub const RMW_HEADER: usize = 16;
pub const RMW_MAGIC: u32 = 0xff00_00fe;
pub const RMW_TYPE_MESSAGE: u32 = 0x0000_0000;
pub const RMW_TYPE_HEARTBEAT: u32 = 0x0000_0001;
pub const RMW_TYPE_ACK: u32 = 0x4000_0000;
pub const RMW_TYPE_DISKFULL: u32 = 0x6000_0001;
pub const RMW_TYPE_DISKERROR: u32 = 0x6000_0002;

/// Builds a protocol header.
pub fn rmw_header(kind: u32, len: u16, seq: u32) -> [u8; RMW_HEADER] {
    let mut h = [0u8; RMW_HEADER];
    h[0..4].copy_from_slice(&RMW_MAGIC.to_le_bytes());
    h[4] = 0;
    h[5] = 0;
    h[6..10].copy_from_slice(&kind.to_le_bytes());
    h[10..12].copy_from_slice(&len.to_le_bytes());
    h[12..16].copy_from_slice(&seq.to_le_bytes());
    h
}

/// One unit parsed off an auditd connection's byte stream.
#[derive(Debug, PartialEq, Eq)]
pub enum AuditdFrame {
    /// A managed-mode message: its type, sequence id and record text.
    Managed { kind: u32, seq: u32, text: Vec<u8> },
    /// An ascii-mode line.
    Line(Vec<u8>),
    /// An ascii line beyond the record limit (dropped; its size).
    TooLong(usize),
}

/// Parses as many complete frames as `buf` holds, removing them from it. Pure; the fuzz entry
/// point for the auditd framing. A managed frame starts with the magic; anything else is ascii
/// text up to a newline.
pub fn parse_auditd_frames(buf: &mut Vec<u8>, max_record: usize, out: &mut Vec<AuditdFrame>) {
    let magic = RMW_MAGIC.to_le_bytes();
    let mut start = 0;
    loop {
        let rest = &buf[start..];
        if rest.is_empty() {
            break;
        }
        if rest.len() >= 4 && rest[..4] == magic {
            if rest.len() < RMW_HEADER {
                break;
            }
            let kind = u32::from_le_bytes([rest[6], rest[7], rest[8], rest[9]]);
            let len = usize::from(u16::from_le_bytes([rest[10], rest[11]]));
            let seq = u32::from_le_bytes([rest[12], rest[13], rest[14], rest[15]]);
            if rest.len() < RMW_HEADER + len {
                break;
            }
            let mut text = rest[RMW_HEADER..RMW_HEADER + len].to_vec();
            while let Some(&(b'\n' | 0 | b'\r')) = text.last() {
                text.pop();
            }
            out.push(AuditdFrame::Managed { kind, seq, text });
            start += RMW_HEADER + len;
        } else if rest.len() < 4 && magic.starts_with(rest) {
            break; // maybe the start of a header
        } else {
            match memchr::memchr(b'\n', rest) {
                Some(nl) => {
                    let mut line = rest[..nl].to_vec();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if line.len() > max_record {
                        out.push(AuditdFrame::TooLong(line.len()));
                    } else if !line.is_empty() {
                        out.push(AuditdFrame::Line(line));
                    }
                    start += nl + 1;
                }
                None => {
                    if rest.len() > max_record {
                        out.push(AuditdFrame::TooLong(rest.len()));
                        start = buf.len();
                    }
                    break;
                }
            }
        }
    }
    buf.drain(..start);
}

pub(super) async fn auditd_loop(
    listener: TcpListener,
    peers: Arc<HashMap<IpAddr, String>>,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(message = "ingest: auditd accept failed", error = %e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        let Some(agent) = peers.get(&peer.ip()).cloned() else {
            tracing::warn!(message = "ingest: auditd connection from an unknown peer refused", %peer);
            drop(tcp);
            continue;
        };
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let activity = crate::agents::activity();
            activity.connected(&agent, "auditd", &peer.to_string());
            let id = agent.clone();
            if let Err(e) = auditd_conn(tcp, agent, state, shutdown).await {
                tracing::info!(message = "ingest: auditd connection closed", %peer, error = %e);
            }
            activity.disconnected(&id, "auditd");
        });
    }
}

async fn auditd_conn(
    mut tcp: TcpStream,
    agent: String,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let _ = tcp.set_nodelay(true);
    let idle = Duration::from_secs(state.limits.auditd_idle_secs);
    let max_record = state.limits.max_record_bytes.min(1 << 20);
    let mut buf = Vec::with_capacity(64 << 10);
    let mut chunk = vec![0u8; 64 << 10];
    let mut frames = Vec::new();
    let mut line_no = 0u64;
    loop {
        let n = tokio::select! {
            r = tokio::time::timeout(idle, tcp.read(&mut chunk)) => match r {
                Ok(r) => r?,
                Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "idle timeout")),
            },
            _ = stopped(&mut shutdown) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        frames.clear();
        parse_auditd_frames(&mut buf, max_record, &mut frames);
        // Spool every record of this read as one batch, then acknowledge the managed ones.
        let mut records = Vec::new();
        let mut acks: Vec<(u32, u32)> = Vec::new();
        for f in frames.drain(..) {
            line_no += 1;
            match f {
                AuditdFrame::Managed {
                    kind: RMW_TYPE_HEARTBEAT,
                    seq,
                    ..
                } => acks.push((RMW_TYPE_ACK, seq)),
                AuditdFrame::Managed {
                    kind: RMW_TYPE_MESSAGE,
                    seq,
                    text,
                } => {
                    if let Some(r) = check_audit_line(&agent, line_no, &text) {
                        records.push(r);
                    }
                    acks.push((RMW_TYPE_ACK, seq));
                }
                AuditdFrame::Managed { kind, seq, .. } => {
                    tracing::warn!(message = "ingest: auditd message of an unknown type ignored", kind, seq, agent = %agent);
                }
                AuditdFrame::Line(text) => {
                    if let Some(r) = check_audit_line(&agent, line_no, &text) {
                        records.push(r);
                    }
                }
                AuditdFrame::TooLong(size) => {
                    tracing::warn!(message = "ingest: auditd record over the size limit dropped", size, limit = max_record, agent = %agent);
                }
            }
        }
        if !records.is_empty() {
            let mut attempt = 0;
            loop {
                let spool = state.spool.clone();
                let batch = records.clone();
                match tokio::task::spawn_blocking(move || {
                    let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                    spool.append_with_header(&[], &refs)
                })
                .await
                {
                    Ok(Ok(_)) => {
                        crate::agents::activity().records(
                            &agent,
                            "auditd",
                            records.len() as u64,
                            0,
                        );
                        break;
                    }
                    Ok(Err(SinkError::Spool(SpoolError::Full { .. }))) if attempt < 20 => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Ok(Err(SinkError::Unavailable(e))) => {
                        // A gateway whose bus did not acknowledge: no ACK is sent; the connection
                        // is closed and the client resends what it has not had acknowledged.
                        tracing::warn!(message = "ingest: auditd records not acknowledged downstream; closing so the client resends", error = %e, agent = %agent);
                        return Err(std::io::Error::other(e));
                    }
                    Ok(Err(SinkError::Spool(e))) => {
                        tracing::error!(message = "ingest: spool append failed for auditd records", error = %e);
                        let kind = if matches!(e, SpoolError::Full { .. }) {
                            RMW_TYPE_DISKFULL
                        } else {
                            RMW_TYPE_DISKERROR
                        };
                        for a in &mut acks {
                            if a.0 == RMW_TYPE_ACK {
                                a.0 = kind;
                            }
                        }
                        break;
                    }
                    Err(e) => return Err(std::io::Error::other(e.to_string())),
                }
            }
        }
        if !acks.is_empty() {
            let mut out = Vec::with_capacity(acks.len() * RMW_HEADER);
            for (kind, seq) in acks {
                out.extend_from_slice(&rmw_header(kind, 0, seq));
            }
            tcp.write_all(&out).await?;
        }
    }
}

/// Validates one auditd record (header syntax) and frames it for the spool; a bad record is
/// logged with its position on the connection and dropped.
fn check_audit_line(agent: &str, line_no: u64, text: &[u8]) -> Option<Vec<u8>> {
    let outcome = process_body(Format::Auditd, agent, text, usize::MAX, &[]);
    if let Some((_, err)) = outcome.rejected.first() {
        tracing::warn!(message = "ingest: auditd record rejected", agent, record = line_no, error = %err);
        return None;
    }
    let record = outcome
        .lines(text)
        .next()
        .map(|l| encode_record(Format::Auditd, agent, l));
    record
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn frames_managed_and_ascii() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&rmw_header(RMW_TYPE_MESSAGE, 5, 7));
        buf.extend_from_slice(b"abcd\n");
        buf.extend_from_slice(b"type=X line\n");
        buf.extend_from_slice(&rmw_header(RMW_TYPE_HEARTBEAT, 0, 8)[..10]);
        let mut out = Vec::new();
        parse_auditd_frames(&mut buf, 1024, &mut out);
        assert_eq!(
            out,
            vec![
                AuditdFrame::Managed {
                    kind: RMW_TYPE_MESSAGE,
                    seq: 7,
                    text: b"abcd".to_vec()
                },
                AuditdFrame::Line(b"type=X line".to_vec())
            ]
        );
        assert_eq!(buf.len(), 10);
        buf.extend_from_slice(&rmw_header(RMW_TYPE_HEARTBEAT, 0, 8)[10..]);
        out.clear();
        parse_auditd_frames(&mut buf, 1024, &mut out);
        assert_eq!(
            out,
            vec![AuditdFrame::Managed {
                kind: RMW_TYPE_HEARTBEAT,
                seq: 8,
                text: vec![]
            }]
        );
        assert!(buf.is_empty());
    }
}
