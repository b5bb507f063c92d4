//! The auditd remote protocol (what Debian's `audisp-remote` speaks): managed 16-byte headers or
//! ascii lines, each record validated and appended to the spool before the ACK.
//!
//! Who may connect: a listed peer (an address or a network), from a privileged source port unless
//! `allow_unprivileged_ports` (as auditd's own `tcp_client_ports`: only root on the peer can bind
//! one), and within the listener's connection caps. Anything else is closed before a byte is read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::sink::SinkError;
use super::{disk_full, encode_record, process_body, stopped, AuditdConfig, PeerAddr, State};
use crate::decode::Format;
use crate::edge::{ConnLimit, Refusal};
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
    /// An ascii line beyond the record limit: its first `usize` bytes (all that had arrived when
    /// it passed the limit) are dropped, and so is the rest of it, up to its newline.
    TooLong(usize),
}

/// The framing state of one connection: the bytes not yet framed, and whether the rest of an
/// over-long line is being skipped.
#[derive(Debug, Default)]
pub struct AuditdFraming {
    /// Bytes received but not yet framed (at most one frame).
    pub buf: Vec<u8>,
    /// True while the rest of an over-long line is skipped, up to its newline: its tail must not
    /// be read as a record of its own.
    pub discarding: bool,
}

impl AuditdFraming {
    /// Appends `data` and parses every complete frame (see [`parse_auditd_frames`]).
    pub fn push(&mut self, data: &[u8], max_record: usize, out: &mut Vec<AuditdFrame>) {
        let data = if self.discarding {
            match memchr::memchr(b'\n', data) {
                Some(nl) => {
                    self.discarding = false;
                    &data[nl + 1..]
                }
                None => return,
            }
        } else {
            data
        };
        self.buf.extend_from_slice(data);
        self.discarding = parse_auditd_frames(&mut self.buf, max_record, out);
    }
}

/// Parses as many complete frames as `buf` holds, removing them from it. Pure; the fuzz entry
/// point for the auditd framing. A managed frame starts with the magic; anything else is ascii
/// text up to a newline. Returns true when `buf` ended in the middle of an over-long line (after
/// a [`AuditdFrame::TooLong`]): the caller must skip what follows up to the next newline
/// ([`AuditdFraming`] does).
pub fn parse_auditd_frames(
    buf: &mut Vec<u8>,
    max_record: usize,
    out: &mut Vec<AuditdFrame>,
) -> bool {
    let magic = RMW_MAGIC.to_le_bytes();
    let mut start = 0;
    let mut discarding = false;
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
                        discarding = true;
                    }
                    break;
                }
            }
        }
    }
    buf.drain(..start);
    discarding
}

/// The listed peers, most specific network first.
pub(super) struct Peers {
    nets: Vec<(PeerAddr, String)>,
    allow_unprivileged_ports: bool,
}

impl Peers {
    pub(super) fn new(cfg: &AuditdConfig) -> Peers {
        let mut nets: Vec<(PeerAddr, String)> = cfg
            .peers
            .iter()
            .map(|p| (p.addr, p.agent_id.clone()))
            .collect();
        nets.sort_by_key(|(a, _)| std::cmp::Reverse(a.prefix_len()));
        Peers {
            nets,
            allow_unprivileged_ports: cfg.allow_unprivileged_ports,
        }
    }

    /// The agent id of a connection from `peer`, or why it is refused.
    fn admit(&self, peer: SocketAddr) -> Result<&str, Refusal> {
        let Some((_, agent)) = self.nets.iter().find(|(a, _)| a.contains(peer.ip())) else {
            return Err(Refusal::UnknownPeer);
        };
        if peer.port() >= 1024 && !self.allow_unprivileged_ports {
            return Err(Refusal::UnprivilegedPort);
        }
        Ok(agent)
    }
}

pub(super) async fn auditd_loop(
    listener: TcpListener,
    peers: Arc<Peers>,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limit = ConnLimit::new(
        "ingest-auditd",
        state.limits.max_connections,
        state.limits.max_connections_per_peer,
    );
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    limit.accept_failed(&e, Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        // Dropping `tcp` closes it: nothing of a refused connection is read.
        let agent = match peers.admit(peer) {
            Ok(a) => a.to_string(),
            Err(why) => {
                limit.refuse(why, Some(peer.ip()));
                continue;
            }
        };
        let Some(permit) = limit.admit(Some(peer.ip())) else {
            continue;
        };
        let state = state.clone();
        let shutdown = shutdown.clone();
        let stats = limit.stats().clone();
        tokio::spawn(async move {
            let _permit = permit;
            let activity = crate::agents::activity();
            activity.connected(&agent, "auditd", &peer.to_string());
            let id = agent.clone();
            if let Err(e) = auditd_conn(tcp, agent, state, shutdown, &stats).await {
                tracing::info!(message = "ingest: auditd connection closed", %peer, error = %e);
            }
            activity.disconnected(&id, "auditd");
        });
    }
}

// Over 100 lines on purpose: one connection's read, frame and acknowledge loop of the audisp-remote protocol.
async fn auditd_conn(
    mut tcp: TcpStream,
    agent: String,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
    stats: &crate::edge::ListenerStats,
) -> std::io::Result<()> {
    let _ = tcp.set_nodelay(true);
    let idle = Duration::from_secs(state.limits.auditd_idle_secs);
    // The one record limit counts the spool envelope too (see `State::record_limit`).
    let max_record = state
        .record_limit()
        .min(1 << 20)
        .saturating_sub(super::record_header(Format::Auditd, &agent).len());
    let mut framing = AuditdFraming::default();
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
        frames.clear();
        framing.push(&chunk[..n], max_record, &mut frames);
        // Spool every record of this read as one batch, then acknowledge the managed ones.
        let mut records = Vec::new();
        let mut acks: Vec<(u32, u32)> = Vec::new();
        let mut rejected = 0u64;
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
                    if text.len() > max_record {
                        // Acknowledged (as a rejected line is): resending it cannot help.
                        tracing::warn!(message = "ingest: auditd record over the size limit dropped", size = text.len(), limit = max_record, agent = %agent);
                        rejected += 1;
                    } else if let Some(r) = check_audit_line(&agent, line_no, &text) {
                        records.push(r);
                    } else {
                        rejected += 1;
                    }
                    acks.push((RMW_TYPE_ACK, seq));
                }
                AuditdFrame::Managed { kind, seq, .. } => {
                    tracing::warn!(message = "ingest: auditd message of an unknown type ignored", kind, seq, agent = %agent);
                }
                AuditdFrame::Line(text) => match check_audit_line(&agent, line_no, &text) {
                    Some(r) => records.push(r),
                    None => rejected += 1,
                },
                AuditdFrame::TooLong(size) => {
                    rejected += 1;
                    let total = stats
                        .lines_discarded
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        + 1;
                    tracing::warn!(
                        message = "ingest: auditd line over the record limit discarded up to its end; the next line is read",
                        record = line_no,
                        seen_bytes = size,
                        limit = max_record,
                        agent = %agent,
                        discarded_lines_total = total,
                    );
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
                            rejected,
                        );
                        rejected = 0;
                        break;
                    }
                    Ok(Err(SinkError::Spool(e)))
                        if attempt < 20
                            && (matches!(e, SpoolError::Full { .. }) || disk_full(&e)) =>
                    {
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
                        // Not acknowledged: the peer keeps the records (audisp-remote applies its
                        // `disk_full_action` / `disk_error_action`) and sends them again.
                        let kind = if matches!(e, SpoolError::Full { .. }) || disk_full(&e) {
                            tracing::error!(message = "ingest: DISKFULL: the spool cannot take auditd records; told the peer DISKFULL, nothing of them was kept", agent = %agent, records = records.len(), error = %e);
                            RMW_TYPE_DISKFULL
                        } else {
                            tracing::error!(message = "ingest: DISKERROR: spool append failed for auditd records; told the peer DISKERROR, nothing of them was kept", agent = %agent, records = records.len(), error = %e);
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
        if rejected > 0 {
            crate::agents::activity().records(&agent, "auditd", 0, rejected);
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
        assert!(!parse_auditd_frames(&mut buf, 1024, &mut out));
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

    #[test]
    fn the_rest_of_an_over_long_line_is_discarded_and_the_next_line_read() {
        let mut f = AuditdFraming::default();
        let mut out = Vec::new();
        f.push(b"type=A msg=ok\n", 32, &mut out);
        // 40 bytes with no newline yet: over the limit of 32.
        f.push(&[b'x'; 40], 32, &mut out);
        assert!(f.discarding && f.buf.is_empty());
        // Its tail, which alone would look like a record, then the next line in the same read.
        f.push(b"type=INJECTED msg=tail\ntype=B msg=next\n", 32, &mut out);
        assert_eq!(
            out,
            vec![
                AuditdFrame::Line(b"type=A msg=ok".to_vec()),
                AuditdFrame::TooLong(40),
                AuditdFrame::Line(b"type=B msg=next".to_vec()),
            ]
        );
        assert!(!f.discarding);
        // A line whose newline is in the same read is dropped whole, and nothing is skipped after.
        out.clear();
        let mut long = vec![b'y'; 50];
        long.extend_from_slice(b"\ntype=C msg=c\n");
        f.push(&long, 32, &mut out);
        assert_eq!(
            out,
            vec![
                AuditdFrame::TooLong(50),
                AuditdFrame::Line(b"type=C msg=c".to_vec())
            ]
        );
        assert!(!f.discarding);
    }

    #[test]
    fn peers_by_network_and_source_port() {
        let cfg: AuditdConfig = toml_like(false);
        let p = Peers::new(&cfg);
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(p.admit(at("10.0.0.7:60")), Ok("net"));
        assert_eq!(
            p.admit(at("10.0.0.5:60")),
            Ok("host"),
            "the most specific peer"
        );
        assert_eq!(p.admit(at("[::ffff:10.0.0.5]:60")), Ok("host"));
        assert_eq!(p.admit(at("10.0.1.1:60")), Err(Refusal::UnknownPeer));
        assert_eq!(
            p.admit(at("10.0.0.5:40000")),
            Err(Refusal::UnprivilegedPort)
        );
        let open = Peers::new(&toml_like(true));
        assert_eq!(open.admit(at("10.0.0.5:40000")), Ok("host"));
    }

    fn toml_like(allow: bool) -> AuditdConfig {
        AuditdConfig {
            listen: "127.0.0.1:60".parse().unwrap(),
            peers: vec![
                super::super::AuditdPeer {
                    addr: "10.0.0.0/24".parse().unwrap(),
                    agent_id: "net".into(),
                    host_name: None,
                },
                super::super::AuditdPeer {
                    addr: "10.0.0.5".parse().unwrap(),
                    agent_id: "host".into(),
                    host_name: None,
                },
            ],
            allow_unprivileged_ports: allow,
        }
    }
}
