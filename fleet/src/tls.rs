//! rustls client configurations for the bus and PostgreSQL.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{FleetError, TlsConfig};

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, FleetError> {
    let data = std::fs::read(path).map_err(|source| FleetError::ReadFile {
        what: "certificate file",
        path: path.to_path_buf(),
        source,
    })?;
    let certs = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| FleetError::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(FleetError::Tls(format!(
            "{}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, FleetError> {
    let data = std::fs::read(path).map_err(|source| FleetError::ReadFile {
        what: "private key file",
        path: path.to_path_buf(),
        source,
    })?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| FleetError::Tls(format!("{}: {e}", path.display())))?
        .ok_or_else(|| FleetError::Tls(format!("{}: no PEM private key in it", path.display())))
}

/// A client configuration trusting `tls.ca` only, with the client certificate when one is given.
pub(crate) fn client_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, FleetError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(&tls.ca)? {
        roots
            .add(c)
            .map_err(|e| FleetError::Tls(format!("{}: {e}", tls.ca.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FleetError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    match (&tls.cert, &tls.key) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(read_certs(c)?, read_key(k)?)
            .map_err(|e| FleetError::Tls(format!("client certificate {}: {e}", c.display()))),
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(FleetError::Tls(
            "a client certificate needs both `cert` and `key`".to_string(),
        )),
    }
}
