//! Which servers the agent trusts. By default the platform's roots (a public certificate on the control plane);
//! with `server_ca_file` only that CA bundle, so a private control-plane CA needs no change to the node's trust
//! store and no public CA can impersonate the control plane.

use std::path::Path;

/// Reads and checks a PEM CA bundle: at least one certificate, all parseable.
pub fn read_ca(path: &Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in the file", path.display()));
    }
    Ok(pem)
}

/// A client from `builder` that trusts only `ca_pem` when given. If that cannot be built the client trusts
/// nothing (every HTTPS request fails, loudly) rather than falling back to the platform's roots.
pub fn client(builder: reqwest::ClientBuilder, ca_pem: Option<&[u8]>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(pem) = ca_pem else {
        return builder.build().unwrap_or_default();
    };
    match reqwest::Certificate::from_pem_bundle(pem).and_then(|certs| builder.tls_certs_only(certs).build()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot use the configured server CA; HTTPS to the server will fail");
            reqwest::Client::builder().tls_certs_only(Vec::new()).build().unwrap_or_default()
        }
    }
}
