//! The listeners' configuration (`[ingest]`), its limits, and the errors `serve` can refuse with.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::decode::Format;

/// Ingest configuration (the `[ingest]` table of the daemon's config file). The default has
/// every listener off.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// The HTTPS listener; off when absent.
    pub http: Option<HttpConfig>,
    /// The auditd remote-protocol listener; off when absent.
    pub auditd: Option<AuditdConfig>,
    /// Agents allowed to post over HTTP, each with the SHA-256 of its bearer token.
    pub agents: Vec<AgentConfig>,
    pub limits: IngestLimits,
}

/// The HTTP(S) listener.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// TLS; required unless `plaintext_loopback` is set and `listen` is a loopback address.
    pub tls: Option<TlsConfig>,
    /// Serve plain HTTP. Only accepted for a loopback `listen` address.
    #[serde(default)]
    pub plaintext_loopback: bool,
}

/// Server certificate and key (PEM), and optionally a CA whose client certificates are required
/// (mutual TLS).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// The auditd remote-protocol listener. audisp-remote has no token, so agents are known by
/// their source address, and (as auditd's own `tcp_client_ports`) only connections from a
/// privileged source port (below 1024, which only root can bind) are accepted.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditdConfig {
    pub listen: SocketAddr,
    /// Peers allowed to connect, each with the agent id its records are stamped with.
    pub peers: Vec<AuditdPeer>,
    /// Accept connections from source ports >= 1024 too (tests, or clients that cannot bind a
    /// privileged port). Off: audisp-remote must set `local_port` to a port below 1024.
    #[serde(default)]
    pub allow_unprivileged_ports: bool,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditdPeer {
    /// An address (`10.0.0.5`) or a network (`10.0.0.0/24`); a connection takes the most specific
    /// peer that contains its source address.
    pub addr: PeerAddr,
    pub agent_id: String,
    /// `host.name` of this peer's events whose records name no host (audisp-remote without
    /// `name_format`); the agent id when absent.
    #[serde(default)]
    pub host_name: Option<String>,
}

/// A peer's address or network, written `10.0.0.5`, `fd00::1`, `10.0.0.0/24` or `fd00::/64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub ipnet::IpNet);

impl PeerAddr {
    /// True when `ip` (an IPv4-mapped IPv6 address counts as IPv4) is in this address or network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }

    /// The prefix length: the more specific peer wins.
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }
}

impl std::str::FromStr for PeerAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<PeerAddr, String> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(PeerAddr(ipnet::IpNet::from(ip.to_canonical())));
        }
        s.parse::<ipnet::IpNet>()
            .map(|n| PeerAddr(n.trunc()))
            .map_err(|_| {
                format!("auditd peer addr `{s}` is neither an IP address nor a network like 10.0.0.0/24")
            })
    }
}

impl From<IpAddr> for PeerAddr {
    fn from(ip: IpAddr) -> PeerAddr {
        PeerAddr(ipnet::IpNet::from(ip.to_canonical()))
    }
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl serde::Serialize for PeerAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PeerAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PeerAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One HTTP agent.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub id: String,
    /// Lower-case hex SHA-256 of the bearer token (`printf %s "$TOKEN" | sha256sum`).
    pub token_sha256: String,
    /// Formats this agent may post; all when absent.
    #[serde(default)]
    pub formats: Option<Vec<Format>>,
    /// Records per second for this agent (overrides the default limit).
    #[serde(default)]
    pub rate_per_sec: Option<u32>,
    /// `host.name` of this agent's events whose records name no host; the agent id when absent.
    #[serde(default)]
    pub host_name: Option<String>,
}

/// Protection limits.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestLimits {
    /// Largest request body, after decompression.
    pub max_request_bytes: usize,
    /// Largest single record (line).
    pub max_record_bytes: usize,
    /// Default per-agent rate, records per second (the bucket holds one second's worth).
    pub rate_per_sec: u32,
    /// Requests being processed at once across all agents; beyond, 503.
    pub max_inflight_requests: usize,
    /// Requests of one agent being processed at once; beyond, 503 (so one agent cannot take
    /// every in-flight slot).
    pub max_inflight_per_agent: usize,
    /// Connections open at once on each listener (HTTP, auditd); beyond, closed at once.
    pub max_connections: usize,
    /// Connections open at once from one peer address on each listener; beyond, closed at once.
    /// 0: no per-peer cap.
    pub max_connections_per_peer: usize,
    /// Time allowed for a client to send the request headers.
    pub header_timeout_secs: u64,
    /// Time allowed for a client to send a whole request body.
    pub body_timeout_secs: u64,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout_secs: u64,
    /// An auditd connection idle for this long is closed.
    pub auditd_idle_secs: u64,
}

impl Default for IngestLimits {
    fn default() -> IngestLimits {
        IngestLimits {
            max_request_bytes: 16 << 20,
            max_record_bytes: 1 << 20,
            rate_per_sec: 200_000,
            max_inflight_requests: 32,
            max_inflight_per_agent: 8,
            max_connections: 4096,
            max_connections_per_peer: 256,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            handshake_timeout_secs: 10,
            auditd_idle_secs: 3600,
        }
    }
}

/// Errors that stop the listeners.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("ingest configuration: {0}")]
    Config(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
}
