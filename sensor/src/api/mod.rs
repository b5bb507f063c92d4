//! The control API: HTTP+JSON on a root-only Unix socket, optionally on TCP with TLS and a bearer token.
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /v1/alerts?status=&severity=&rule=&host=&source=&container=&namespace=&since=&after_id=&limit=` | list alerts (newest first) |
//! | `GET /v1/alerts/{id}` | one alert with evidence and history |
//! | `POST /v1/alerts/{id}/status` `{"status","reason","user"}` | ack, close, suppress, reopen |
//! | `GET /v1/alerts/stream` | new alerts as NDJSON, as they are stored |
//! | `GET /v1/status` | sources, rates, losses, pending state, rules, store; on a central node the fleet (partitions, owners, lag, bus) |
//! | `POST /v1/reload` | reload rules and settings (as SIGHUP) |
//! | `GET /metrics`, `/healthz`, `/readyz` | Prometheus text, probes |
//!
//! Architecture Invariant: every connection is authenticated before any handler runs: on the Unix socket
//! by the peer's uid (SO_PEERCRED: root or `api.allow_uids`), on TCP by TLS plus a bearer token. Handlers
//! see only an authenticated [`Peer`].
//!
//! The handlers serve any [`AlertStore`]: the daemon's SQLite store ([`crate::store::LocalAlerts`]) or,
//! on a central node of a fleet ([`serve_central`]), the fleet's PostgreSQL store.

mod central;
mod state;

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use alert_store::AccessError;

use crate::config::Config;
use crate::store::{AlertFilter, Status};
pub use central::{serve_central, CentralApi};
pub(crate) use state::{
    accepts_released, hold_accepts, release_accepts, Control, DaemonInfo, Shared,
};
pub use state::{ReloadReport, SourceInfo};

/// Who is calling (already authenticated).
#[derive(Clone, Debug)]
pub struct Peer {
    pub actor: String,
}

/// An error answer: `{"error": "..."}` with a status code.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> ApiError {
        let code = match e {
            AccessError::NotFound(_) => StatusCode::NOT_FOUND,
            AccessError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AccessError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.to_string())
    }
}

fn gone() -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "the daemon is shutting down".into(),
    )
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// The routes (shared by the Unix socket and TCP listeners).
pub(crate) fn router(shared: Shared) -> Router {
    Router::new()
        .route("/v1/alerts", get(list_alerts))
        .route("/v1/alerts/stream", get(stream_alerts))
        .route("/v1/alerts/:id", get(get_alert))
        .route("/v1/alerts/:id/status", post(set_status))
        .route("/v1/status", get(status))
        .route("/v1/reload", post(reload))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(shared)
}

/// Parses `since`: RFC 3339, epoch nanoseconds, or a span back from now (`15m`, `2h`, `7d`).
pub fn parse_since(s: &str, now_ns: i64) -> Result<i64, String> {
    if let Some(t) = correlator::event::parse_rfc3339_ns(s) {
        return Ok(t);
    }
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let d = crate::config::Duration::parse(s).map_err(|_| {
        format!("`since` value `{s}` is neither a time (2026-01-02T03:04:05Z), epoch ns, nor a span like 15m, 2h, 7d")
    })?;
    Ok(now_ns.saturating_sub(d.as_nanos_i64()))
}

fn filter_from(q: &HashMap<String, String>) -> Result<AlertFilter, ApiError> {
    let mut f = AlertFilter::default();
    for (k, v) in q {
        match k.as_str() {
            "status" => f.status = Some(v.parse::<Status>().map_err(bad)?),
            "severity" => {
                f.severity = Some(correlator::Severity::parse(v).ok_or_else(|| {
                    bad(format!(
                        "unknown severity `{v}` (low, medium, high, critical)"
                    ))
                })?);
            }
            "rule" => f.rule = Some(v.clone()),
            "host" => f.host = Some(v.clone()),
            "source" => f.source = Some(v.clone()),
            "container" => f.container = Some(v.clone()),
            "namespace" => f.namespace = Some(v.clone()),
            "since" => f.since_ns = Some(parse_since(v, crate::clock::wall_ns()).map_err(bad)?),
            "after_id" => {
                f.after_id = Some(
                    v.parse()
                        .map_err(|_| bad(format!("after_id `{v}` is not a number")))?,
                )
            }
            "limit" => {
                f.limit = Some(
                    v.parse()
                        .map_err(|_| bad(format!("limit `{v}` is not a number")))?,
                )
            }
            other => return Err(bad(format!("unknown query parameter `{other}`"))),
        }
    }
    Ok(f)
}

async fn list_alerts(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let f = filter_from(&q)?;
    let alerts = s.store.list(f).await?;
    Ok(Json(json!({ "alerts": alerts })).into_response())
}

async fn get_alert(
    State(s): State<Shared>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| bad(format!("alert id `{id}` is not a number")))?;
    let detail = s.store.get(id).await?;
    Ok(Json(detail).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusChange {
    status: String,
    #[serde(default)]
    reason: String,
    /// The person behind the call, as the CLI knows it (recorded beside the authenticated identity).
    #[serde(default)]
    user: Option<String>,
}

async fn set_status(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    UrlPath(id): UrlPath<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| bad(format!("alert id `{id}` is not a number")))?;
    let change: StatusChange =
        serde_json::from_slice(&body).map_err(|e| bad(format!("bad request body: {e}")))?;
    let status: Status = change.status.parse().map_err(bad)?;
    if change.reason.trim().is_empty() {
        return Err(bad("a reason is required to change an alert's status"));
    }
    let actor = match change.user.filter(|u| !u.is_empty()) {
        Some(u) => format!("{u} ({})", peer.actor),
        None => peer.actor,
    };
    let change = alert_store::StatusChange {
        status,
        actor,
        reason: change.reason,
        now_ns: crate::clock::wall_ns(),
    };
    let alert = s.store.set_status(id, change).await?;
    Ok(Json(alert).into_response())
}

async fn stream_alerts(State(s): State<Shared>) -> Result<Response, ApiError> {
    use futures_util::StreamExt;
    let stream = s.store.tail().await?.map(|a| {
        let mut line = serde_json::to_vec(&a).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, Infallible>(line)
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

async fn status(State(s): State<Shared>) -> Result<Response, ApiError> {
    let store = s.store.stats().await?;
    let rates = s.info.rates();
    let mut sources = Vec::new();
    for src in &s.info.sources {
        let c = s.metrics.source(&src.name);
        let mut v = json!({
            "name": src.name,
            "detail": src.detail,
            "events_in": c.events_in.load(Relaxed),
            "events_out": c.events_out.load(Relaxed),
            "events_per_sec": rates.get(&src.name).copied().unwrap_or(0.0),
            "lost": c.lost.load(Relaxed),
            "rejected": c.rejected.load(Relaxed),
        });
        if let Some(f) = s.info.source_status.get(&src.name) {
            v["status"] = f();
        }
        sources.push(v);
    }
    let m = &s.metrics;
    let mut answer = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_secs": s.info.started.elapsed().as_secs(),
        "config": s.info.config_path.as_ref().map(|p| p.display().to_string()),
        "privileges": s.info.privileges.lock().map_or(serde_json::Value::Null, |p| p.clone()),
        "sources": sources,
        "refused": s.info.refused,
        "rules_loaded": m.rules_loaded.load(Relaxed),
        "rules": s.info.rules(),
        "pending": m.pending.load(Relaxed),
        "pending_shed": m.pending_shed.load(Relaxed),
        "ingest_clients": ingest::agents::activity().connected_count(),
        "ingest_agents": ingest::agents::activity().snapshot(),
        "ingest_rejects": m.ingest_rejects.load(Relaxed),
        "ingest_ecs_uncategorized": m.ingest_ecs_uncategorized.load(Relaxed),
        "alerts_new": m.alerts_new.load(Relaxed),
        "alerts_repeated": m.alerts_repeated.load(Relaxed),
        "store": store,
    });
    if let Some(fleet) = &s.fleet {
        answer["fleet"] = fleet.status().await;
    }
    Ok(Json(answer).into_response())
}

async fn reload(State(s): State<Shared>) -> Result<Response, ApiError> {
    let (tx, rx) = oneshot::channel();
    s.control
        .send(Control::Reload(tx))
        .await
        .map_err(|_| gone())?;
    match rx.await.map_err(|_| gone())? {
        Ok(report) => Ok(Json(report).into_response()),
        Err(e) => Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, e)),
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn ready(State(s): State<Shared>) -> Result<&'static str, ApiError> {
    s.store.ready().await?;
    Ok("ready\n")
}

/// How a connection is let in.
#[derive(Clone)]
enum Gate {
    Allow(Peer),
    Deny(StatusCode, String),
    Token { token: Arc<str>, peer: Peer },
}

async fn serve_conn<IO>(io: IO, router: Router, gate: Gate)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let router = router.clone();
        let gate = gate.clone();
        async move {
            let peer = match gate {
                Gate::Allow(p) => p,
                Gate::Deny(code, msg) => {
                    return Ok::<_, Infallible>(ApiError(code, msg).into_response())
                }
                Gate::Token { token, peer } => {
                    let given = req
                        .headers()
                        .get(axum::http::header::AUTHORIZATION)
                        .and_then(|h| h.to_str().ok())
                        .and_then(|h| h.strip_prefix("Bearer "))
                        .unwrap_or("");
                    if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
                        return Ok(ApiError(
                            StatusCode::UNAUTHORIZED,
                            "missing or wrong API token".into(),
                        )
                        .into_response());
                    }
                    peer
                }
            };
            req.extensions_mut().insert(peer);
            use tower::ServiceExt;
            router.oneshot(req.map(axum::body::Body::new)).await
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder.serve_connection(TokioIo::new(io), svc).await {
        tracing::debug!(error = %e, "control API connection ended with an error");
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(
            || format!("uid {uid}"),
            |u| format!("{} (uid {uid})", u.name),
        )
}

/// Removes the control socket file (at shutdown).
pub fn remove_socket(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// An `accept` error (EMFILE, ENFILE, ENOBUFS...) persists until something is freed: say so and
/// wait a little rather than retry at once, which would spin a core.
async fn accept_failed(listener: &str, e: &std::io::Error) {
    tracing::warn!(listener, error = %e, "accept failed; pausing 100 ms");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

/// Binds the control socket (and the TCP and metrics listeners when configured) and serves them until
/// shutdown. Fails when the socket is held by a running daemon or cannot be created.
pub(crate) async fn serve(
    cfg: &Config,
    shared: Shared,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinSet<()>, String> {
    let mut set = JoinSet::new();
    let router = router(shared.clone());
    let path = cfg.api.socket.clone();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(format!(
                "{} is in use: another `sensor run` is running",
                path.display()
            ));
        }
        std::fs::remove_file(&path)
            .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| format!("cannot bind control socket {}: {e}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(cfg.socket_mode()))
            .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
    }
    let allowed: Vec<u32> = std::iter::once(0)
        .chain(cfg.api.allow_uids.iter().copied())
        .collect();
    tracing::info!(socket = %path.display(), mode = %cfg.api.socket_mode, "control API listening");
    let r = router.clone();
    let mut sd = shutdown.clone();
    set.spawn(async move {
        state::accepts_released().await;
        loop {
            let (stream, _) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(x) => x,
                    Err(e) => { accept_failed("control socket", &e).await; continue; }
                },
                _ = sd.changed() => return,
            };
            let gate = match stream.peer_cred() {
                Ok(c) if allowed.contains(&c.uid()) => Gate::Allow(Peer { actor: user_name(c.uid()) }),
                Ok(c) => {
                    tracing::warn!(uid = c.uid(), pid = ?c.pid(), "control socket: caller refused (not root)");
                    Gate::Deny(
                        StatusCode::FORBIDDEN,
                        format!("the control API accepts only root (and api.allow_uids); you are {}", user_name(c.uid())),
                    )
                }
                Err(e) => Gate::Deny(StatusCode::FORBIDDEN, format!("cannot identify the caller: {e}")),
            };
            tokio::spawn(serve_conn(stream, r.clone(), gate));
        }
    });

    if let Some(tcp) = &cfg.api.tcp {
        let token: Arc<str> = crate::secret::read_token("[api.tcp] token_file", &tcp.token_file)
            .map_err(|e| e.to_string())?
            .into();
        let acceptor = tls_acceptor(&tcp.cert, &tcp.key)?;
        let listener = tokio::net::TcpListener::bind(&tcp.listen)
            .await
            .map_err(|e| format!("cannot listen on {} ([api.tcp] listen): {e}", tcp.listen))?;
        tracing::info!(listen = %tcp.listen, "control API listening on TCP with TLS and a token");
        let r = router.clone();
        let mut sd = shutdown.clone();
        set.spawn(async move {
            state::accepts_released().await;
            loop {
                let (stream, addr) = tokio::select! {
                    a = listener.accept() => match a { Ok(x) => x, Err(e) => { accept_failed("control API (TCP)", &e).await; continue } },
                    _ = sd.changed() => return,
                };
                let acceptor = acceptor.clone();
                let r = r.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    match acceptor.accept(stream).await {
                        Ok(tls) => {
                            let gate = Gate::Token {
                                token,
                                peer: Peer {
                                    actor: format!("token holder at {addr}"),
                                },
                            };
                            serve_conn(tls, r, gate).await;
                        }
                        Err(e) => {
                            tracing::debug!(%addr, error = %e, "control API TLS handshake failed")
                        }
                    }
                });
            }
        });
    }

    if cfg.metrics.enabled {
        let listener = tokio::net::TcpListener::bind(&cfg.metrics.listen)
            .await
            .map_err(|e| {
                format!(
                    "cannot listen on {} ([metrics] listen): {e}",
                    cfg.metrics.listen
                )
            })?;
        tracing::info!(listen = %cfg.metrics.listen, "metrics listening (/metrics, /healthz, /readyz)");
        let r = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(ready))
            .with_state(shared);
        let mut sd = shutdown;
        set.spawn(async move {
            state::accepts_released().await;
            loop {
                let (stream, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(x) => x, Err(e) => { accept_failed("metrics", &e).await; continue } },
                    _ = sd.changed() => return,
                };
                tokio::spawn(serve_conn(
                    stream,
                    r.clone(),
                    Gate::Allow(Peer {
                        actor: "metrics".into(),
                    }),
                ));
            }
        });
    }
    Ok(set)
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    let cert_pem =
        std::fs::read(cert).map_err(|e| format!("[api.tcp] cert {}: {e}", cert.display()))?;
    let key_pem = crate::secret::read_secret("[api.tcp] key", key).map_err(|e| e.to_string())?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("[api.tcp] cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "[api.tcp] cert {}: no certificate in the file",
            cert.display()
        ));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("[api.tcp] key {}: {e}", key.display()))?
        .ok_or_else(|| {
            format!(
                "[api.tcp] key {}: no private key in the file",
                key.display()
            )
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("[api.tcp] cert/key: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Convenience for tests and tools: the JSON `{"error": ...}` message of an answer, or its text.
pub fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}
