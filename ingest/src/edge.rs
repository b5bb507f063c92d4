//! What every network listener of the daemon shares at its edge: a cap on open connections (over
//! all peers and per peer address), the pause after a failed `accept`, and the counters that say
//! what was refused and why (`sensor_listener_*` metrics).
//!
//! The ingest listeners (HTTP, auditd) and the control API's (Unix socket, TCP, metrics) each own
//! one [`ConnLimit`]; a connection beyond it is closed at once, before any byte of it is read, and
//! counted. The counters are process-wide ([`listeners`]), as the agents' activity table is, so the
//! daemon's `/metrics` reads them without wiring.
//!
//! Architecture Invariant: a listener's memory and file descriptors are bounded by its cap: every
//! accepted connection holds a [`ConnPermit`] for as long as it lives, and nothing is read from a
//! connection that did not get one.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Why a connection was closed at the edge, before or instead of being served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// The listener holds its `max_connections`.
    Cap,
    /// The peer address holds its `max_connections_per_peer`.
    PeerCap,
    /// The peer is not listed (auditd `peers`).
    UnknownPeer,
    /// The peer's source port is not privileged (auditd, as auditd's `tcp_client_ports`).
    UnprivilegedPort,
    /// The TLS handshake did not finish within the handshake timeout.
    HandshakeTimeout,
    /// The TLS handshake failed (bad client certificate, not TLS...).
    HandshakeFailed,
    /// The request headers did not arrive within the header timeout.
    HeaderTimeout,
}

impl Refusal {
    /// Every reason, in the order the metrics list them.
    pub const ALL: [Refusal; 7] = [
        Refusal::Cap,
        Refusal::PeerCap,
        Refusal::UnknownPeer,
        Refusal::UnprivilegedPort,
        Refusal::HandshakeTimeout,
        Refusal::HandshakeFailed,
        Refusal::HeaderTimeout,
    ];

    /// The `reason` label of the metric.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Cap => "max_connections",
            Refusal::PeerCap => "max_connections_per_peer",
            Refusal::UnknownPeer => "unknown_peer",
            Refusal::UnprivilegedPort => "unprivileged_port",
            Refusal::HandshakeTimeout => "handshake_timeout",
            Refusal::HandshakeFailed => "handshake_failed",
            Refusal::HeaderTimeout => "header_timeout",
        }
    }
}

/// The counters of one listener.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections open now.
    pub open: AtomicI64,
    /// Connections accepted since start (refused ones included).
    pub accepted: AtomicU64,
    /// `accept` calls that failed (EMFILE, ENFILE, ENOBUFS...).
    pub accept_errors: AtomicU64,
    /// auditd lines longer than the record limit, discarded up to their end.
    pub lines_discarded: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    /// When a refusal or accept error was last logged (logs are throttled, counters are not).
    last_log: Mutex<Option<Instant>>,
}

impl ListenerStats {
    /// Counts one refusal.
    pub fn refused(&self, why: Refusal) {
        if let Some(c) = self.refused.get(why as usize) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Refusals for `why` since start.
    pub fn refused_count(&self, why: Refusal) -> u64 {
        self.refused
            .get(why as usize)
            .map_or(0, |c| c.load(Relaxed))
    }

    /// True at most once per [`LOG_EVERY`]: a flood is logged as a line every few seconds with
    /// the counts, not as a line per connection.
    pub fn log_due(&self) -> bool {
        let mut last = self.last_log.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// How often a listener under a flood logs what it refuses.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

static LISTENERS: LazyLock<Mutex<BTreeMap<&'static str, Arc<ListenerStats>>>> =
    LazyLock::new(Mutex::default);

/// The counters of listener `name` (created on first use; one per name for the process).
pub fn listener_stats(name: &'static str) -> Arc<ListenerStats> {
    LISTENERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(name)
        .or_default()
        .clone()
}

/// Every listener's counters, by name.
pub fn listeners() -> Vec<(&'static str, Arc<ListenerStats>)> {
    LISTENERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(k, v)| (*k, v.clone()))
        .collect()
}

/// Every listener's counters as JSON (`sensor status`): per listener, connections open, accepted,
/// accept errors, auditd lines discarded, and the refusals by reason (those above zero).
pub fn snapshot() -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (name, s) in listeners() {
        let refused: serde_json::Map<String, serde_json::Value> = Refusal::ALL
            .iter()
            .filter_map(|r| {
                let n = s.refused_count(*r);
                (n > 0).then(|| (r.as_str().to_string(), n.into()))
            })
            .collect();
        out.insert(
            name.to_string(),
            serde_json::json!({
                "open": s.open.load(Relaxed),
                "accepted": s.accepted.load(Relaxed),
                "accept_errors": s.accept_errors.load(Relaxed),
                "lines_discarded": s.lines_discarded.load(Relaxed),
                "refused": refused,
            }),
        );
    }
    serde_json::Value::Object(out)
}

/// A listener's connection cap: at most `max` connections open, at most `per_peer` from one
/// address (0: no per-peer cap; the Unix socket has no peer address).
#[derive(Debug)]
pub struct ConnLimit {
    name: &'static str,
    max: usize,
    per_peer: usize,
    open: Mutex<Open>,
    stats: Arc<ListenerStats>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    /// Open connections per peer address; an address leaves the map with its last connection,
    /// so the map never holds more than `max` entries.
    by_peer: HashMap<IpAddr, usize>,
}

impl ConnLimit {
    pub fn new(name: &'static str, max: usize, per_peer: usize) -> Arc<ConnLimit> {
        Arc::new(ConnLimit {
            name,
            max: max.max(1),
            per_peer,
            open: Mutex::default(),
            stats: listener_stats(name),
        })
    }

    /// The listener's name (the `listener` label of the metrics).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The listener's counters.
    pub fn stats(&self) -> &Arc<ListenerStats> {
        &self.stats
    }

    /// Admits one just-accepted connection from `peer`, or counts and (throttled) logs why not:
    /// the caller then drops the connection, which closes it.
    pub fn admit(self: &Arc<Self>, peer: Option<IpAddr>) -> Option<ConnPermit> {
        self.stats.accepted.fetch_add(1, Relaxed);
        let peer = peer.map(|p| p.to_canonical());
        let refused = {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            let from_peer = peer.map_or(0, |p| open.by_peer.get(&p).copied().unwrap_or(0));
            if open.total >= self.max {
                Some(Refusal::Cap)
            } else if self.per_peer > 0 && from_peer >= self.per_peer {
                Some(Refusal::PeerCap)
            } else {
                open.total += 1;
                if let Some(p) = peer {
                    *open.by_peer.entry(p).or_default() += 1;
                }
                None
            }
        };
        if let Some(why) = refused {
            self.refuse(why, peer);
            return None;
        }
        self.stats.open.fetch_add(1, Relaxed);
        Some(ConnPermit {
            limit: self.clone(),
            peer,
        })
    }

    /// Counts a refusal (also for reasons decided by the listener: an unknown peer, a timeout)
    /// and logs it, throttled to a line every [`LOG_EVERY`] with the totals: a warning for a cap
    /// or a peer refused by policy, information for timeouts and failed handshakes (which load
    /// balancers' TCP checks and port scans cause all day).
    pub fn refuse(&self, why: Refusal, peer: Option<IpAddr>) {
        self.stats.refused(why);
        if !self.stats.log_due() {
            return;
        }
        let totals: Vec<String> = Refusal::ALL
            .iter()
            .filter_map(|r| {
                let n = self.stats.refused_count(*r);
                (n > 0).then(|| format!("{}={n}", r.as_str()))
            })
            .collect();
        let totals = totals.join(" ");
        let policy = matches!(
            why,
            Refusal::Cap | Refusal::PeerCap | Refusal::UnknownPeer | Refusal::UnprivilegedPort
        );
        if policy {
            tracing::warn!(
                message = "connection closed at the edge",
                listener = self.name,
                reason = why.as_str(),
                peer = ?peer,
                max_connections = self.max,
                max_connections_per_peer = self.per_peer,
                refused_so_far = %totals,
            );
        } else {
            tracing::info!(
                message = "connection closed at the edge",
                listener = self.name,
                reason = why.as_str(),
                peer = ?peer,
                refused_so_far = %totals,
            );
        }
    }

    /// Counts a failed `accept` and waits `pause` before the next one: the error (EMFILE,
    /// ENFILE...) lasts until something is freed, and retrying at once would spin a core.
    pub async fn accept_failed(&self, e: &std::io::Error, pause: Duration) {
        let n = self.stats.accept_errors.fetch_add(1, Relaxed) + 1;
        if self.stats.log_due() {
            tracing::warn!(
                message = "accept failed; pausing before the next one",
                listener = self.name,
                error = %e,
                pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                accept_errors_so_far = n,
            );
        }
        tokio::time::sleep(pause).await;
    }
}

/// One admitted connection's place under its listener's cap, given back when dropped.
#[derive(Debug)]
pub struct ConnPermit {
    limit: Arc<ConnLimit>,
    peer: Option<IpAddr>,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut open = self
            .limit
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(p) = self.peer {
            if let Some(n) = open.by_peer.get_mut(&p) {
                *n -= 1;
                if *n == 0 {
                    open.by_peer.remove(&p);
                }
            }
        }
        drop(open);
        self.limit.stats.open.fetch_sub(1, Relaxed);
    }
}

/// Raises the soft limit on open files to the hard limit (as systemd recommends for services that
/// do not use `select(2)`), so the connection caps, not the file table, bound the listeners.
/// Returns (soft, hard) after the change.
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own; raising the soft limit up to the hard one
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim = raised;
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_cap_and_the_per_peer_cap_refuse_and_count() {
        let l = ConnLimit::new("test-cap", 3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = l.admit(Some(a)).unwrap();
        let _a2 = l.admit(Some(a)).unwrap();
        assert!(l.admit(Some(a)).is_none(), "third from one peer");
        assert_eq!(l.stats().refused_count(Refusal::PeerCap), 1);
        let _b1 = l.admit(Some(b)).unwrap();
        assert!(l.admit(Some(b)).is_none(), "the listener is full");
        assert_eq!(l.stats().refused_count(Refusal::Cap), 1);
        assert_eq!(l.stats().open.load(Relaxed), 3);
        drop(a1);
        assert_eq!(l.stats().open.load(Relaxed), 2);
        // An IPv4-mapped IPv6 peer is the same peer.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let _a3 = l.admit(Some(mapped)).unwrap();
        assert!(l.admit(Some(a)).is_none());
        assert_eq!(l.stats().accepted.load(Relaxed), 7);
    }
}
