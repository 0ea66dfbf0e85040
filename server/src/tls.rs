//! Native TLS for the server (rustls): the certificate and key come from configuration and are reloaded when
//! their files change, so a renewed certificate (cert-manager, an ACME client) takes effect without a restart.
//!
//! rustls offers the hook ([`ResolvesServerCert`]) but no file watching: [`ReloadingCert`] holds the current
//! certified key and a task polls the files' modification times every `reload_secs`. A renewal that cannot be
//! read or does not match its key is logged and the previous certificate stays in service.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use crate::config::TlsSettings;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is missing, unreadable or holds no PEM certificate.
    #[error("tls.cert_file {0}: {1}")]
    Cert(PathBuf, String),
    /// The key file is missing, unreadable, holds no PEM private key, or its kind is not supported.
    #[error("tls.key_file {0}: {1}")]
    Key(PathBuf, String),
    /// The key does not belong to the certificate.
    #[error("tls: the key in {0} does not match the certificate in {1}")]
    Mismatch(PathBuf, PathBuf),
}

/// Reads and checks a certificate chain and its key.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::Cert(cert.into(), e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert(cert.into(), e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::Cert(cert.into(), "no certificate in the file".into()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key(key.into(), e.to_string()))?;
    let signing = any_supported_type(&der).map_err(|e| TlsError::Key(key.into(), e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        // A key whose public half cannot be derived here cannot be checked; rustls then trusts the pair.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(_) => Err(TlsError::Mismatch(key.into(), cert.into())),
    }
}

/// The server's certificate, swapped in place when its files change.
#[derive(Debug)]
pub struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

impl ReloadingCert {
    fn set(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
    }
}

/// The TLS configuration for `settings` (HTTP/1.1 and HTTP/2), with its certificate resolver; the certificate
/// must load now (a server that cannot serve TLS must not start in plain text).
pub fn server_config(settings: &TlsSettings) -> Result<(rustls::ServerConfig, Arc<ReloadingCert>), TlsError> {
    let (cert, key) = paths(settings);
    let resolver = Arc::new(ReloadingCert { current: RwLock::new(Arc::new(load(cert, key)?)) });
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = rustls::ServerConfig::builder().with_no_client_auth().with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, resolver))
}

fn paths(settings: &TlsSettings) -> (&Path, &Path) {
    (settings.cert_file.as_deref().unwrap_or(Path::new("")), settings.key_file.as_deref().unwrap_or(Path::new("")))
}

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reloads the certificate whenever either file's modification time or size changes, until `shutdown` flips.
pub async fn reload_until_stopped(
    settings: TlsSettings,
    cert: Arc<ReloadingCert>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (cert_path, key_path) = paths(&settings);
    let period = Duration::from_secs_f64(settings.reload_secs.max(0.1));
    let mut seen = (stamp(cert_path), stamp(key_path));
    while !*shutdown.borrow() {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => break,
        }
        let now = (stamp(cert_path), stamp(key_path));
        if now == seen {
            continue;
        }
        // A renewal writes two files; one half-written pair fails to load and is retried at the next change
        // or poll (the stamps are only remembered once the pair loads).
        match load(cert_path, key_path) {
            Ok(k) => {
                cert.set(k);
                seen = now;
                tracing::info!(cert = %cert_path.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate changed but cannot be loaded; keeping the previous one")
            }
        }
    }
}
