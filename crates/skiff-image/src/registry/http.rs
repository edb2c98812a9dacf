//! The HTTP client under the registry client: hyper 1 with hyper-util's pooled client and
//! rustls (ring) for HTTPS, trusting the system CA bundle. Follows redirects (blob downloads
//! are often redirected to a CDN), dropping `Authorization` when the host changes.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderMap, LOCATION};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::RegistryError;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to send response headers.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a response body may stall between two chunks.
pub(crate) const BODY_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How many redirects one request follows.
const MAX_REDIRECTS: usize = 5;
/// Where Debian, Fedora and Alpine keep the system CA bundle.
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// A pooled HTTP/1.1 client for `http` and `https` URLs.
#[derive(Debug, Clone)]
pub(crate) struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl HttpClient {
    /// A client trusting the system CA bundle (or `SSL_CERT_FILE`).
    pub(crate) fn new() -> Result<HttpClient, RegistryError> {
        let mut roots = rustls::RootCertStore::empty();
        let mut bundles: Vec<String> = CA_BUNDLES.iter().map(|s| s.to_string()).collect();
        if let Ok(file) = std::env::var("SSL_CERT_FILE") {
            bundles.insert(0, file);
        }
        for bundle in &bundles {
            if let Ok(certs) = CertificateDer::pem_file_iter(bundle) {
                for cert in certs.flatten() {
                    let _ = roots.add(cert);
                }
                if !roots.is_empty() {
                    break;
                }
            }
        }
        if roots.is_empty() {
            tracing::warn!(
                "no CA certificates found (looked in {bundles:?}): HTTPS registries will fail"
            );
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| RegistryError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(HttpClient { client })
    }

    /// `GET url` with `headers`, following redirects.
    pub(crate) async fn get(
        &self,
        url: &str,
        headers: &HeaderMap,
    ) -> Result<Response<Incoming>, RegistryError> {
        let mut uri: Uri = url.parse().map_err(|e| RegistryError::BadResponse {
            url: url.to_string(),
            detail: format!("invalid URL: {e}"),
        })?;
        let original_authority = uri.authority().cloned();
        for _ in 0..=MAX_REDIRECTS {
            let mut request = Request::get(uri.clone());
            for (name, value) in headers {
                let cross_host = uri.authority() != original_authority.as_ref();
                if name == AUTHORIZATION && cross_host {
                    continue;
                }
                request = request.header(name, value);
            }
            let request = request
                .header(
                    hyper::header::USER_AGENT,
                    concat!("skiff/", env!("CARGO_PKG_VERSION")),
                )
                .body(Empty::new())
                .map_err(|e| RegistryError::BadResponse {
                    url: uri.to_string(),
                    detail: e.to_string(),
                })?;
            let response = tokio::time::timeout(RESPONSE_TIMEOUT, self.client.request(request))
                .await
                .map_err(|_| RegistryError::Timeout {
                    url: uri.to_string(),
                })?
                .map_err(|e| connect_error(&uri, &e))?;
            if !response.status().is_redirection() || response.status() == StatusCode::NOT_MODIFIED
            {
                return Ok(response);
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| RegistryError::BadResponse {
                    url: uri.to_string(),
                    detail: format!("{} without a Location header", response.status()),
                })?;
            uri = resolve_location(&uri, location)?;
        }
        Err(RegistryError::BadResponse {
            url: url.to_string(),
            detail: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }
}

/// Resolves a `Location` header (absolute, or a path) against the URL that sent it.
fn resolve_location(base: &Uri, location: &str) -> Result<Uri, RegistryError> {
    let text = if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        let scheme = base.scheme_str().unwrap_or("https");
        let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
        format!("{scheme}://{authority}{location}")
    };
    text.parse().map_err(|e| RegistryError::BadResponse {
        url: base.to_string(),
        detail: format!("invalid redirect {location:?}: {e}"),
    })
}

fn connect_error(uri: &Uri, error: &hyper_util::client::legacy::Error) -> RegistryError {
    // The innermost cause says it best ("Connection refused", "invalid peer certificate").
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let detail = cause.to_string();
    if error.is_connect() {
        RegistryError::Unreachable {
            registry: uri.authority().map(|a| a.to_string()).unwrap_or_default(),
            detail,
        }
    } else {
        RegistryError::Transport {
            url: uri.to_string(),
            detail,
        }
    }
}

/// Reads a whole (small) body, refusing one over `limit` bytes.
pub(crate) async fn read_body(
    response: Response<Incoming>,
    url: &str,
    limit: usize,
) -> Result<Vec<u8>, RegistryError> {
    let mut body = response.into_body();
    let mut out = Vec::new();
    loop {
        let frame = tokio::time::timeout(BODY_STALL_TIMEOUT, body.frame())
            .await
            .map_err(|_| RegistryError::Timeout {
                url: url.to_string(),
            })?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| RegistryError::Transport {
            url: url.to_string(),
            detail: e.to_string(),
        })?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(RegistryError::BadResponse {
                    url: url.to_string(),
                    detail: format!("response larger than {limit} bytes"),
                });
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}
