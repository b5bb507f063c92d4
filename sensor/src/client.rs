//! A small HTTP/1.1 client over a Unix socket, TCP, or TCP with TLS: used by the CLI to reach the
//! control API and by the webhook output.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the sensor control socket {path}: {source}{hint}")]
    ConnectUnix {
        path: PathBuf,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("cannot connect to {addr}: {source}")]
    ConnectTcp {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS with {addr}: {detail}")]
    Tls { addr: String, detail: String },
    #[error("bad URL `{0}` (expected http://HOST:PORT/... or https://HOST:PORT/...)")]
    Url(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the server is.
#[derive(Clone, Debug)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port`, plain HTTP.
    Http {
        authority: String,
    },
    /// `host:port`, HTTPS checked against `ca` (PEM bundle).
    Https {
        authority: String,
        ca: PathBuf,
    },
}

impl Endpoint {
    /// Splits `http(s)://host:port/path` into an endpoint and the path.
    pub fn from_url(url: &str, ca: Option<&Path>) -> Result<(Endpoint, String), ClientError> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(ClientError::Url(url.to_string()));
        };
        let (authority, path) = rest
            .find('/')
            .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
        if authority.is_empty() {
            return Err(ClientError::Url(url.to_string()));
        }
        let authority = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_string()
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };
        let ep = if tls {
            let ca = ca.map_or_else(
                || PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
                Path::to_path_buf,
            );
            Endpoint::Https { authority, ca }
        } else {
            Endpoint::Http { authority }
        };
        Ok((ep, path.to_string()))
    }

    fn host_header(&self) -> String {
        match self {
            Endpoint::Unix(_) => "localhost".into(),
            Endpoint::Http { authority } | Endpoint::Https { authority, .. } => authority.clone(),
        }
    }
}

/// One request: method, path (with query), optional JSON body, optional bearer token.
pub async fn send(
    ep: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    token: Option<&str>,
) -> Result<Response<Incoming>, ClientError> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, ep.host_header())
        .header(
            hyper::header::USER_AGENT,
            concat!("sensor/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(t) = token {
        b = b.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let bytes = match body {
        Some(v) => {
            b = b.header(hyper::header::CONTENT_TYPE, "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    let req = b
        .body(Full::new(bytes))
        .map_err(|e| ClientError::Http(e.to_string()))?;
    match ep {
        Endpoint::Unix(path) => {
            let s = tokio::net::UnixStream::connect(path)
                .await
                .map_err(|source| {
                    let hint = match source.kind() {
                        std::io::ErrorKind::PermissionDenied => {
                            " (the control socket is for root only: run with sudo)"
                        }
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                            " (is `sensor run` running? pass --socket if it uses another path)"
                        }
                        _ => "",
                    };
                    ClientError::ConnectUnix {
                        path: path.clone(),
                        source,
                        hint,
                    }
                })?;
            on(s, req).await
        }
        Endpoint::Http { authority } => {
            let s = tokio::net::TcpStream::connect(authority)
                .await
                .map_err(|source| ClientError::ConnectTcp {
                    addr: authority.clone(),
                    source,
                })?;
            on(s, req).await
        }
        Endpoint::Https { authority, ca } => {
            let s = tokio::net::TcpStream::connect(authority)
                .await
                .map_err(|source| ClientError::ConnectTcp {
                    addr: authority.clone(),
                    source,
                })?;
            let connector = tls_connector(ca)?;
            let host = authority
                .rsplit_once(':')
                .map_or(authority.as_str(), |(h, _)| h)
                .trim_matches(['[', ']']);
            let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
                ClientError::Tls {
                    addr: authority.clone(),
                    detail: e.to_string(),
                }
            })?;
            let s = connector
                .connect(name, s)
                .await
                .map_err(|e| ClientError::Tls {
                    addr: authority.clone(),
                    detail: e.to_string(),
                })?;
            on(s, req).await
        }
    }
}

/// The most of an answer [`call`] reads: a control API answer (an alert list with its evidence)
/// stays far below it; a server that sends more gets an error rather than the client's memory.
pub const MAX_ANSWER_BYTES: usize = 256 << 20;

/// Sends a request and reads the whole answer (at most [`MAX_ANSWER_BYTES`]): status and body.
pub async fn call(
    ep: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    token: Option<&str>,
) -> Result<(u16, Bytes), ClientError> {
    call_limited(ep, method, path, body, token, MAX_ANSWER_BYTES).await
}

/// [`call`] reading at most `max` bytes of the answer.
pub async fn call_limited(
    ep: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    token: Option<&str>,
    max: usize,
) -> Result<(u16, Bytes), ClientError> {
    let resp = send(ep, method, path, body, token).await?;
    let status = resp.status().as_u16();
    let body = http_body_util::Limited::new(resp.into_body(), max)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ClientError::Http(format!("the answer is larger than {max} bytes"))
            } else {
                ClientError::Http(e.to_string())
            }
        })?
        .to_bytes();
    Ok((status, body))
}

async fn on<S>(io: S, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Http(e.to_string()))
}

fn tls_connector(ca: &Path) -> Result<tokio_rustls::TlsConnector, ClientError> {
    let pem = std::fs::read(ca).map_err(|source| ClientError::File {
        path: ca.to_path_buf(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|source| ClientError::File {
            path: ca.to_path_buf(),
            source,
        })?;
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(ClientError::Tls {
            addr: ca.display().to_string(),
            detail: "no CA certificate in the file".into(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls {
            addr: ca.display().to_string(),
            detail: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}
