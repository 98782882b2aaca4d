//! TLS for the Kafka and HTTP listeners: a rustls server configuration
//! loaded from PEM files.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// A server configuration from a PEM certificate chain (leaf first) and
/// its PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert_chain: &Path, private_key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_chain)
        .with_context(|| format!("reading certificates from {}", cert_chain.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificates in {}", cert_chain.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate found in {}", cert_chain.display());
    }
    let key = PrivateKeyDer::from_pem_file(private_key)
        .with_context(|| format!("reading the private key from {}", private_key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    Ok(Arc::new(config))
}
