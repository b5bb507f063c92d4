//! TLS for the HTTP listener: rustls with the ring provider, client certificates when `client_ca`.

use std::path::Path;
use std::sync::Arc;

use super::{IngestError, TlsConfig};

fn read_pem(path: &Path) -> Result<Vec<u8>, IngestError> {
    std::fs::read(path).map_err(|source| IngestError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Builds the rustls acceptor (ring provider; client certificates required when `client_ca`).
pub fn tls_acceptor(t: &TlsConfig) -> Result<tokio_rustls::TlsAcceptor, IngestError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<_> = rustls_pemfile::certs(&mut read_pem(&t.cert)?.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| IngestError::Tls(format!("{}: {e}", t.cert.display())))?;
    if certs.is_empty() {
        return Err(IngestError::Tls(format!(
            "{}: no certificate found",
            t.cert.display()
        )));
    }
    let key_pem = crate::secret::read_secret("ingest TLS key", &t.key)
        .map_err(|e| IngestError::Tls(e.to_string()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| IngestError::Tls(format!("{}: {e}", t.key.display())))?
        .ok_or_else(|| IngestError::Tls(format!("{}: no private key found", t.key.display())))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| IngestError::Tls(e.to_string()))?;
    let builder = match &t.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut read_pem(ca)?.as_slice()) {
                let c = c.map_err(|e| IngestError::Tls(format!("{}: {e}", ca.display())))?;
                roots
                    .add(c)
                    .map_err(|e| IngestError::Tls(format!("{}: {e}", ca.display())))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| IngestError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| IngestError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
