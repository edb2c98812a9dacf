//! TLS for the ingress proxy: certificates from `kubernetes.io/tls` Secrets, a self-signed
//! default certificate, and the SNI resolver that picks one per handshake from the current
//! route table.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::ingress::SharedTable;

/// The name (subject and only SAN) of the self-signed certificate served for unknown server
/// names and clients without SNI.
pub const DEFAULT_CERT_NAME: &str = "skiff-ingress-default";

/// Why a certificate or the TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate PEM could not be parsed.
    #[error("parsing the certificate chain (tls.crt): {0}")]
    CertificatePem(rustls::pki_types::pem::Error),
    /// The PEM held no certificate.
    #[error("the certificate chain (tls.crt) holds no certificate")]
    NoCertificate,
    /// The key PEM could not be parsed.
    #[error("parsing the private key (tls.key): {0}")]
    KeyPem(rustls::pki_types::pem::Error),
    /// The key is of an unsupported type or does not match the certificate.
    #[error("loading the private key (tls.key): {0}")]
    Key(rustls::Error),
    /// Generating the default certificate failed.
    #[error("generating the default certificate: {0}")]
    Generate(rcgen::Error),
    /// The rustls server configuration could not be made.
    #[error("making the TLS server configuration: {0}")]
    Config(rustls::Error),
}

/// The ring crypto provider every configuration here uses.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1), both PEM, as
/// rustls serves them. The key must match the leaf certificate.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(TlsError::CertificatePem)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(TlsError::KeyPem)?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(TlsError::Key)
}

/// The self-signed certificate served when no Ingress has one for the server name.
#[derive(Clone)]
pub struct DefaultCertificate {
    /// The certificate and key as rustls serves them.
    pub key: Arc<CertifiedKey>,
    /// The certificate, PEM (e.g. for a client that wants to trust it).
    pub cert_pem: String,
}

impl fmt::Debug for DefaultCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultCertificate")
            .field("name", &DEFAULT_CERT_NAME)
            .finish_non_exhaustive()
    }
}

impl DefaultCertificate {
    /// Generates a fresh self-signed certificate for [`DEFAULT_CERT_NAME`] (ECDSA P-256).
    pub fn generate() -> Result<DefaultCertificate, TlsError> {
        let made = rcgen::generate_simple_self_signed(vec![DEFAULT_CERT_NAME.to_string()])
            .map_err(TlsError::Generate)?;
        let cert_pem = made.cert.pem();
        let key = certified_key(
            cert_pem.as_bytes(),
            made.signing_key.serialize_pem().as_bytes(),
        )?;
        Ok(DefaultCertificate {
            key: Arc::new(key),
            cert_pem,
        })
    }
}

/// Chooses the certificate for each TLS handshake: the route table's for the SNI name, else the
/// default certificate (also for clients that send no SNI).
pub struct SniResolver {
    table: SharedTable,
    default: DefaultCertificate,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver").finish_non_exhaustive()
    }
}

impl SniResolver {
    /// A resolver reading the table that `table` holds at each handshake.
    pub(crate) fn new(table: SharedTable, default: DefaultCertificate) -> SniResolver {
        SniResolver { table, default }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = client_hello
            .server_name()
            .and_then(|name| self.table.load().certificate(name));
        Some(chosen.unwrap_or_else(|| self.default.key.clone()))
    }
}

/// The server configuration of the HTTPS listener: certificates from `resolver`, ALPN `h2`
/// and `http/1.1`, TLS 1.2 and 1.3.
pub(crate) fn server_config(resolver: SniResolver) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
