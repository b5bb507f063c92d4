//! The ingest listeners: HTTPS (`POST /v1/ingest/{format}`) and the auditd remote protocol
//! (what Debian's `audisp-remote` speaks), both feeding a [`RecordSink`]: the durable [`Spool`], or
//! a fleet gateway's bus.
//!
//! Architecture Invariant: a record is acknowledged (HTTP 200 listing it as accepted, or an
//! auditd ACK) only after [`RecordSink::append_with_header`] returned, i.e. after it is on disk
//! (or, on a gateway, acknowledged by JetStream). Memory is
//! bounded by `max_inflight_requests * max_request_bytes` (a request beyond the in-flight limit
//! gets 503 with Retry-After, never a queue).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::decode::Format;
use super::spool::{Spool, SpoolError};

mod auditd;
mod body;
mod bucket;
mod config;
mod envelope;
mod sink;
mod tls;

use crate::edge::{ConnLimit, Refusal};
pub use auditd::{
    parse_auditd_frames, rmw_header, AuditdFrame, AuditdFraming, RMW_HEADER, RMW_MAGIC,
    RMW_TYPE_ACK, RMW_TYPE_DISKERROR, RMW_TYPE_DISKFULL, RMW_TYPE_HEARTBEAT, RMW_TYPE_MESSAGE,
};
use body::read_body;
pub use body::{decompress, process_body, BodyOutcome};
use bucket::Bucket;
pub use config::{
    AgentConfig, AuditdConfig, AuditdPeer, HttpConfig, IngestConfig, IngestError, IngestLimits,
    PeerAddr, TlsConfig,
};
pub use envelope::{decode_record, encode_record, record_header};
pub use sink::{RecordSink, SinkError};
pub use tls::tls_acceptor;

struct Agent {
    id: String,
    formats: Option<Vec<Format>>,
    bucket: Mutex<Bucket>,
    /// This agent's share of the in-flight requests (`max_inflight_per_agent`).
    inflight: Semaphore,
    /// Per format, the header lines this agent's next records depend on (Zeek TSV), see
    /// [`process_body`].
    contexts: Mutex<HashMap<Format, Vec<String>>>,
}

/// Where the agents' header contexts are kept across restarts, in the spool directory.
const CONTEXTS_FILE: &str = "http-contexts.json";

type SavedContexts = HashMap<String, HashMap<String, Vec<String>>>;

fn load_contexts(dir: &Path) -> SavedContexts {
    let path = dir.join(CONTEXTS_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(message = "ingest: unreadable header contexts; starting without them", path = %path.display(), error = %e);
            SavedContexts::new()
        }),
        Err(_) => SavedContexts::new(),
    }
}

/// Writes every agent's contexts, atomically and durably.
fn save_contexts(state: &State) -> std::io::Result<()> {
    let mut all = SavedContexts::new();
    for a in state.agents.values() {
        let c = a
            .contexts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !c.is_empty() {
            all.insert(
                a.id.clone(),
                c.iter()
                    .map(|(f, l)| (f.as_str().to_string(), l.clone()))
                    .collect(),
            );
        }
    }
    let data = serde_json::to_vec(&all).map_err(std::io::Error::other)?;
    match state.spool.state_dir() {
        Some(dir) => super::spool::write_atomic(&dir.join(CONTEXTS_FILE), &data),
        None => Ok(()),
    }
}

struct State {
    /// Where accepted records go: the local spool, or a gateway's bus ([`RecordSink`]).
    spool: Arc<dyn RecordSink>,
    agents: HashMap<[u8; 32], Arc<Agent>>,
    limits: IngestLimits,
    inflight: Semaphore,
}

impl State {
    /// Largest record as spooled (envelope plus line): `[ingest.limits] max_record_bytes`, or the
    /// spool's own limit if that is smaller (the daemon's config makes them one setting).
    fn record_limit(&self) -> usize {
        self.limits
            .max_record_bytes
            .min(self.spool.max_record_bytes().unwrap_or(usize::MAX))
    }
}

/// Runs the configured listeners until `shutdown` turns true (or its sender is dropped).
pub async fn serve(
    cfg: IngestConfig,
    spool: Arc<Spool>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), IngestError> {
    bind(cfg, spool).await?.serve(shutdown).await;
    Ok(())
}

/// Listeners bound (and TLS keys read) but not yet accepting: the daemon binds while it is still
/// privileged (ports below 1024, root-only key files), drops its privileges, then calls
/// [`Bound::serve`], so no connection is ever parsed with privileges.
pub struct Bound {
    state: Arc<State>,
    http: Option<(TcpListener, Option<tokio_rustls::TlsAcceptor>)>,
    auditd: Option<(TcpListener, Arc<auditd::Peers>)>,
}

impl Bound {
    /// Accepts and serves until `shutdown` turns true (or its sender is dropped).
    pub async fn serve(self, shutdown: watch::Receiver<bool>) {
        let mut tasks = tokio::task::JoinSet::new();
        if let Some((listener, tls)) = self.http {
            tasks.spawn(http_loop(
                listener,
                tls,
                self.state.clone(),
                shutdown.clone(),
            ));
        }
        if let Some((listener, peers)) = self.auditd {
            tasks.spawn(auditd::auditd_loop(
                listener,
                peers,
                self.state.clone(),
                shutdown.clone(),
            ));
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// Reads the agents and TLS material and binds the configured listeners (see [`Bound`]).
pub async fn bind(cfg: IngestConfig, spool: Arc<Spool>) -> Result<Bound, IngestError> {
    bind_sink(cfg, spool).await
}

/// As [`bind`], with accepted records going to any [`RecordSink`] (a fleet gateway's bus).
pub async fn bind_sink(
    cfg: IngestConfig,
    spool: Arc<dyn RecordSink>,
) -> Result<Bound, IngestError> {
    let mut agents = HashMap::new();
    let mut saved = spool.state_dir().map(load_contexts).unwrap_or_default();
    for a in &cfg.agents {
        let mut h = [0u8; 32];
        hex::decode_to_slice(a.token_sha256.trim(), &mut h).map_err(|_| {
            IngestError::Config(format!(
                "agent `{}`: token_sha256 must be 64 hex digits (a SHA-256)",
                a.id
            ))
        })?;
        let rate = f64::from(a.rate_per_sec.unwrap_or(cfg.limits.rate_per_sec));
        let bucket = Mutex::new(Bucket {
            tokens: rate,
            rate,
            last: Instant::now(),
        });
        agents.insert(
            h,
            Arc::new(Agent {
                id: a.id.clone(),
                formats: a.formats.clone(),
                bucket,
                inflight: Semaphore::new(cfg.limits.max_inflight_per_agent.max(1)),
                contexts: Mutex::new(
                    saved
                        .remove(&a.id)
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|(f, l)| Some((f.parse::<Format>().ok()?, l)))
                        .collect(),
                ),
            }),
        );
    }
    let state = Arc::new(State {
        spool,
        agents,
        limits: cfg.limits.clone(),
        inflight: Semaphore::new(cfg.limits.max_inflight_requests.max(1)),
    });
    let mut bound = Bound {
        state,
        http: None,
        auditd: None,
    };
    if let Some(http) = &cfg.http {
        let tls = match (&http.tls, http.plaintext_loopback) {
            (Some(t), _) => Some(tls_acceptor(t)?),
            (None, true) if http.listen.ip().is_loopback() => None,
            (None, true) => {
                return Err(IngestError::Config(format!(
                    "plain HTTP is only allowed on a loopback address, not {}",
                    http.listen
                )))
            }
            (None, false) => {
                return Err(IngestError::Config(
                    "the HTTP listener needs `tls` (or `plaintext_loopback = true` on a loopback address)".into(),
                ))
            }
        };
        let listener =
            TcpListener::bind(http.listen)
                .await
                .map_err(|source| IngestError::Bind {
                    addr: http.listen,
                    source,
                })?;
        tracing::info!(message = "ingest: HTTP listener up", addr = %listener.local_addr().map_or(http.listen, |a| a), tls = tls.is_some());
        bound.http = Some((listener, tls));
    }
    if let Some(a) = &cfg.auditd {
        let listener = TcpListener::bind(a.listen)
            .await
            .map_err(|source| IngestError::Bind {
                addr: a.listen,
                source,
            })?;
        tracing::info!(message = "ingest: auditd listener up", addr = %a.listen);
        bound.auditd = Some((listener, Arc::new(auditd::Peers::new(a))));
    }
    Ok(bound)
}

async fn http_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limit = ConnLimit::new(
        "ingest-http",
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
        // Beyond the cap the connection is dropped (closed) before anything of it is read.
        let Some(permit) = limit.admit(Some(peer.ip())) else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        let limit = limit.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let hs = Duration::from_secs(state.limits.handshake_timeout_secs);
            let timed_out = match tls {
                Some(acc) => match tokio::time::timeout(hs, acc.accept(tcp)).await {
                    Ok(Ok(stream)) => serve_http_conn(TokioIo::new(stream), state, shutdown).await,
                    Ok(Err(e)) => {
                        tracing::debug!(message = "ingest: TLS handshake failed", %peer, error = %e);
                        limit.refuse(Refusal::HandshakeFailed, Some(peer.ip()));
                        false
                    }
                    Err(_) => {
                        limit.refuse(Refusal::HandshakeTimeout, Some(peer.ip()));
                        false
                    }
                },
                None => serve_http_conn(TokioIo::new(tcp), state, shutdown).await,
            };
            if timed_out {
                limit.refuse(Refusal::HeaderTimeout, Some(peer.ip()));
            }
        });
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Serves one connection's requests; true when it was closed because a request's headers did not
/// arrive within the header timeout (which also closes a keep-alive connection left idle).
async fn serve_http_conn<I>(
    io: TokioIo<I>,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) -> bool
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = Duration::from_secs(state.limits.header_timeout_secs);
    let svc = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(state, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => match r {
            Err(e) if e.is_timeout() => true,
            Err(e) => {
                tracing::debug!(message = "ingest: HTTP connection ended with an error", error = %e);
                false
            }
            Ok(()) => false,
        },
        _ = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
            false
        }
    }
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Whether a spool failure is the disk (or the user's quota) being full: a condition that passes,
/// told to agents as 507 / auditd `DISKFULL` rather than as an internal error.
fn disk_full(e: &SpoolError) -> bool {
    matches!(e, SpoolError::Io { source, .. }
        if matches!(source.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
            || source.raw_os_error() == Some(libc::ENOSPC)
            || source.raw_os_error() == Some(libc::EDQUOT))
}

/// What an agent is told when the spool could not keep its records: 507 when the disk is full
/// (retry later), else 500; neither names a file of this host. Nothing of the request was kept.
fn spool_failure_response(e: &SpoolError) -> Response<Full<Bytes>> {
    if disk_full(e) {
        retry_after(
            error_response(
                StatusCode::INSUFFICIENT_STORAGE,
                "the collector's disk is full: nothing of this request was kept; retry later",
            ),
            Duration::from_secs(30),
        )
    } else {
        error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the collector could not store the records (its log says why): nothing of this request was kept; retry later",
        )
    }
}

fn error_response(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    json_response(status, &serde_json::json!({ "error": msg }))
}

fn retry_after(mut r: Response<Full<Bytes>>, after: Duration) -> Response<Full<Bytes>> {
    let secs = after.as_secs_f64().ceil().max(1.0);
    if let Ok(v) = hyper::header::HeaderValue::from_str(&format!("{secs:.0}")) {
        r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
    }
    r
}

fn authenticate<'a>(state: &'a State, req: &Request<Incoming>) -> Option<&'a Arc<Agent>> {
    let h = req
        .headers()
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = h
        .strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))?
        .trim();
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    state.agents.get(&digest)
}

// Over 100 lines on purpose: the request's checks in the order the protocol answers them (route, auth, size, format, rate, spool), read top to bottom.
async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if path == "/v1/health" {
        return json_response(
            StatusCode::OK,
            &serde_json::json!({"status": "ok", "durable": state.spool.durable()}),
        );
    }
    let Some(fmt_name) = path.strip_prefix("/v1/ingest/") else {
        return error_response(
            StatusCode::NOT_FOUND,
            "no such endpoint (POST /v1/ingest/{format})",
        );
    };
    if req.method() != hyper::Method::POST {
        let mut r = error_response(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("POST"),
        );
        return r;
    }
    let Some(agent) = authenticate(&state, &req).cloned() else {
        let mut r = error_response(StatusCode::UNAUTHORIZED, "missing or unknown bearer token");
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        return r;
    };
    let format: Format = match fmt_name.parse() {
        Ok(f) => f,
        Err(e) => return error_response(StatusCode::NOT_FOUND, &e.to_string()),
    };
    if agent.formats.as_ref().is_some_and(|f| !f.contains(&format)) {
        return error_response(
            StatusCode::FORBIDDEN,
            &format!("agent `{}` may not post format `{format}`", agent.id),
        );
    }
    // The agent's own share first: one agent cannot take every slot of the global limit.
    let Ok(_agent_permit) = agent.inflight.try_acquire() else {
        return retry_after(
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "agent `{}` has {} requests in flight already (max_inflight_per_agent)",
                    agent.id, state.limits.max_inflight_per_agent
                ),
            ),
            Duration::from_secs(1),
        );
    };
    let Ok(_permit) = state.inflight.try_acquire() else {
        return retry_after(
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many requests in flight",
            ),
            Duration::from_secs(1),
        );
    };
    let body = match read_body(&state, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // One record limit at the edge, for the record as spooled: envelope (format, agent id) plus
    // line, so that a line the edge accepts never makes the spool refuse the whole batch.
    let header = record_header(format, &agent.id);
    let max_record = state.record_limit().saturating_sub(header.len());
    // Checking the lines, taking the rate tokens and the durable append run in one blocking task;
    // the accepted lines go to the spool straight from the body.
    let st = state.clone();
    let ag = agent.clone();
    let outcome = match tokio::task::spawn_blocking(move || {
        let context = ag
            .contexts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&format)
            .cloned()
            .unwrap_or_default();
        let outcome = process_body(format, &ag.id, &body, max_record, &context);
        let accepted = outcome.accepted.len();
        // Every record costs a token, rejected ones too: checking them is the work an agent
        // sending junk makes the daemon do.
        let charged = accepted + outcome.rejected.len();
        if charged == 0 {
            return Ingested::Done(outcome);
        }
        let taken = ag
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take(charged);
        if let Err(wait) = taken {
            return Ingested::RateLimited(wait);
        }
        if accepted == 0 {
            return Ingested::Done(outcome);
        }
        let prefix = outcome.needs_context.then_some(context.as_slice());
        let lines: Vec<&[u8]> = prefix
            .into_iter()
            .flatten()
            .map(String::as_bytes)
            .chain(outcome.lines(&body))
            .collect();
        match st.spool.append_with_header(&header, &lines) {
            Ok(_) => {
                if outcome.context != context {
                    ag.contexts
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(format, outcome.context.clone());
                    if let Err(e) = save_contexts(&st) {
                        tracing::warn!(message = "ingest: could not save the agents' header contexts", error = %e);
                    }
                }
                Ingested::Done(outcome)
            }
            Err(SinkError::Spool(e)) => Ingested::SpoolFailed(e),
            Err(SinkError::Unavailable(e)) => Ingested::Unavailable(e),
        }
    })
    .await
    {
        Ok(Ingested::Done(o)) => o,
        Ok(Ingested::RateLimited(wait)) => {
            return retry_after(
                error_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!("agent `{}` is over its rate limit", agent.id),
                ),
                wait,
            );
        }
        Ok(Ingested::SpoolFailed(SpoolError::Full { .. })) => {
            return retry_after(
                error_response(StatusCode::SERVICE_UNAVAILABLE, "spool is full"),
                Duration::from_secs(5),
            )
        }
        Ok(Ingested::Unavailable(e)) => {
            tracing::warn!(message = "ingest: records not acknowledged downstream; the agent is told to retry", error = %e);
            return retry_after(
                error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "records could not be made durable downstream; retry",
                ),
                Duration::from_secs(2),
            );
        }
        Ok(Ingested::SpoolFailed(e)) => {
            // The details (file, errno) go to the daemon's log; the agent hears what failed,
            // never a path on this host.
            tracing::error!(message = "ingest: spool append failed", error = %e);
            return spool_failure_response(&e);
        }
        Err(e) => {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("ingest task failed: {e}"),
            )
        }
    };
    let accepted = outcome.accepted.len();
    crate::agents::activity().records(
        &agent.id,
        &format!("http/{format}"),
        accepted as u64,
        outcome.rejected.len() as u64,
    );
    let rejected: Vec<serde_json::Value> = outcome
        .rejected
        .iter()
        .map(|(line, error)| serde_json::json!({"line": line, "error": error}))
        .collect();
    let status = if accepted == 0 && !rejected.is_empty() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    json_response(
        status,
        &serde_json::json!({"accepted": accepted, "rejected": rejected}),
    )
}

/// How the blocking half of a request ended.
enum Ingested {
    /// Checked, and the accepted lines (if any) are durable.
    Done(BodyOutcome),
    RateLimited(Duration),
    SpoolFailed(SpoolError),
    /// A gateway's bus did not acknowledge: nothing kept, the agent retries.
    Unavailable(String),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::decode::feed_line;
    use proptest::prelude::*;

    #[test]
    fn spool_failures_say_what_failed_without_a_path() {
        let full = SpoolError::Io {
            path: "/var/lib/sensor/spool/00000001.seg".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        let r = spool_failure_response(&full);
        assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert!(r.headers().contains_key(hyper::header::RETRY_AFTER));
        let other = SpoolError::Io {
            path: "/var/lib/sensor/spool/00000001.seg".into(),
            source: std::io::Error::from_raw_os_error(libc::EIO),
        };
        let r = spool_failure_response(&other);
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        for r in [
            spool_failure_response(&full),
            spool_failure_response(&other),
        ] {
            let body = format!("{:?}", r.body());
            assert!(!body.contains("/var/lib"), "{body}");
        }
    }

    #[test]
    fn decompression_and_its_limit() {
        let body = b"{\"a\":1}\n".repeat(1000);
        let z = zstd::encode_all(&body[..], 3).unwrap();
        assert_eq!(
            decompress("zstd", Bytes::from(z.clone()), 1 << 20)
                .unwrap()
                .len(),
            body.len()
        );
        // A small compressed body that expands past the limit is refused, not inflated.
        let err = decompress("zstd", Bytes::from(z), 100).unwrap_err();
        assert_eq!(err.0, StatusCode::PAYLOAD_TOO_LARGE);
        // A frame that declares a 128 MiB window is refused before the window is allocated.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.include_contentsize(false).unwrap();
        enc.window_log(27).unwrap();
        enc.long_distance_matching(true).unwrap();
        std::io::Write::write_all(&mut enc, &body).unwrap();
        let big_window = enc.finish().unwrap();
        let err = decompress("zstd", Bytes::from(big_window), 1 << 20).unwrap_err();
        assert_eq!(err.0, StatusCode::PAYLOAD_TOO_LARGE, "{}", err.1);
        assert!(
            err.1.contains("window larger than 8388608 bytes"),
            "{}",
            err.1
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &body).unwrap();
        assert_eq!(
            decompress("gzip", Bytes::from(gz.finish().unwrap()), 1 << 20)
                .unwrap()
                .len(),
            body.len()
        );
        assert_eq!(
            decompress("br", Bytes::new(), 10).unwrap_err().0,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            decompress("gzip", Bytes::from_static(b"nope"), 10)
                .unwrap_err()
                .0,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn record_roundtrip() {
        let r = encode_record(Format::Zeek, "agent-1", b"{}");
        assert_eq!(
            decode_record(&r),
            Some((Format::Zeek, "agent-1", &b"{}"[..]))
        );
        assert_eq!(decode_record(&[]), None);
    }

    /// The judgement of a body as the listener made it before ECS lines were only checked:
    /// every line fed to the format's decoder.
    fn reference_outcome(format: Format, body: &[u8], max: usize) -> Vec<(u64, String)> {
        let mut dec = crate::decode::decoder(format, "x");
        let mut out = Vec::new();
        for (i, line) in body.split(|&b| b == b'\n').enumerate() {
            let n = i as u64 + 1;
            let mut l = line;
            while let [rest @ .., b'\r'] = l {
                l = rest;
            }
            if l.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if l.len() > max {
                out.push((
                    n,
                    format!("record of {} bytes exceeds the limit of {max}", l.len()),
                ));
                continue;
            }
            feed_line(dec.as_mut(), n, l, &mut |r| match r {
                Err(e) if e.line == n => out.push((n, e.message)),
                _ => {}
            });
        }
        out
    }

    proptest! {
        /// ECS bodies: the checked path accepts and rejects exactly the lines that decoding
        /// does, with the same line numbers and messages.
        #[test]
        fn ecs_check_matches_decoding(lines in proptest::collection::vec(prop_oneof![
            Just(r#"{"@timestamp":"2024-05-01T10:00:00Z","process":{"pid":1,"args":["a","b"]}}"#.as_bytes().to_vec()),
            Just(br#"{"a":1}"#.to_vec()),
            Just(b"not json".to_vec()),
            Just(b"[1,2]".to_vec()),
            Just(br#"{"@timestamp":"yesterday"}"#.to_vec()),
            Just(br#"{"@timestamp":{"a":1}}"#.to_vec()),
            Just(br#"{"a":1e400}"#.to_vec()),
            Just(br#"{"s":"\ud800"}"#.to_vec()),
            Just(b"{\"a\":\"\xff\"}".to_vec()),
            Just(b"   ".to_vec()),
            Just(b"{\"a\":1}\r".to_vec()),
            Just(format!("{{\"a\":\"{}\"}}", "x".repeat(80)).into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..24),
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| {
                let mut l = br#"{"@timestamp":1700000000000,"e":{"c":["x"]},"n":-1.5}"#.to_vec();
                let k = i % l.len();
                l[k] = b;
                l
            }),
        ], 0..12)) {
            let mut body = Vec::new();
            for l in &lines {
                // A line's own newlines split it, as they would in a real body.
                body.extend_from_slice(l);
                body.push(b'\n');
            }
            let o = process_body(Format::Ecs, "x", &body, 64, &[]);
            prop_assert_eq!(&o.rejected, &reference_outcome(Format::Ecs, &body, 64));
            // Every non-blank line is either accepted or rejected, once, in order.
            let mut seen: Vec<u64> = o.rejected.iter().map(|(n, _)| *n).collect();
            for r in &o.accepted {
                let n = body[..r.start].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
                seen.push(n);
                prop_assert!(!body[r.clone()].contains(&b'\n'));
            }
            seen.sort_unstable();
            let expected: Vec<u64> = body
                .split(|&b| b == b'\n')
                .enumerate()
                .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
                .map(|(i, _)| i as u64 + 1)
                .collect();
            prop_assert_eq!(seen, expected);
        }
    }

    #[test]
    fn body_rejects_bad_lines_with_numbers() {
        let body = b"{\"a\":1}\nnot json\n\n{\"b\":2}\n";
        let o = process_body(Format::Ecs, "x", body, 1024, &[]);
        assert_eq!(o.accepted.len(), 2);
        assert_eq!(
            o.lines(body).collect::<Vec<_>>(),
            vec![&b"{\"a\":1}"[..], &b"{\"b\":2}"[..]]
        );
        assert_eq!(o.rejected.len(), 1);
        assert_eq!(o.rejected[0].0, 2);
    }

    #[test]
    fn zeek_rows_in_a_later_body_are_judged_with_the_earlier_header() {
        let first = b"#separator \\x09\n#fields\tts\tuid\n#types\ttime\tstring\n1.5\tC1\n";
        let o = process_body(Format::Zeek, "z", first, 1024, &[]);
        assert_eq!(
            (o.accepted.len(), o.rejected.len()),
            (4, 0),
            "{:?}",
            o.rejected
        );
        assert!(!o.needs_context);
        assert_eq!(o.context.len(), 3, "{:?}", o.context);
        let rows = b"2.5\tC2\n3.5\tC3\n";
        let alone = process_body(Format::Zeek, "z", rows, 1024, &[]);
        assert_eq!(alone.rejected.len(), 2, "no header, no rows");
        let with = process_body(Format::Zeek, "z", rows, 1024, &o.context);
        assert_eq!((with.accepted.len(), with.rejected.len()), (2, 0));
        assert!(
            with.needs_context,
            "the spool must get the header before these rows"
        );
        assert_eq!(with.context, o.context);
    }

    #[test]
    fn a_zeek_header_line_over_64_kib_is_rejected_and_never_kept_as_context() {
        let long = format!("#fields\tts\t{}\n", "f\t".repeat(40_000));
        let body = format!("#separator \\x09\n{long}");
        let o = process_body(Format::Zeek, "z", body.as_bytes(), 1 << 20, &[]);
        assert_eq!(o.rejected.len(), 1, "{:?}", o.rejected);
        assert!(
            o.rejected[0].1.contains("header line of"),
            "{:?}",
            o.rejected
        );
        assert!(
            o.context.iter().map(String::len).sum::<usize>() < 1024,
            "{:?}",
            o.context.iter().map(String::len).collect::<Vec<_>>()
        );
    }
}
