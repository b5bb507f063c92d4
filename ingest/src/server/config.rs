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
/// their source address.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditdConfig {
    pub listen: SocketAddr,
    /// Peers allowed to connect, each with the agent id its records are stamped with.
    pub peers: Vec<AuditdPeer>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditdPeer {
    pub addr: IpAddr,
    pub agent_id: String,
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
