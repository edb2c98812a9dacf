//! A small OCI distribution client: ping, anonymous / Basic / bearer-token authentication,
//! manifests with `Accept` negotiation, and blobs streamed into the content store, verified by
//! digest, retried with a bounded back-off.
//!
//! Plain HTTP is used only for registries configured insecure and for loopback addresses (as
//! Docker does), and only after HTTPS failed to connect.

pub mod auth;
mod http;
mod login;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use hyper::body::Incoming;
use hyper::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, WWW_AUTHENTICATE,
};
use tokio::sync::Mutex;

pub use self::auth::{Challenge, Credentials};
use self::http::{BODY_STALL_TIMEOUT, HttpClient, read_body};
use crate::content::ContentStore;
use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::oci::{MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST};

/// The manifest media types a pull accepts, best first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
/// The largest manifest or token response read.
const MAX_DOCUMENT: usize = 8 * 1024 * 1024;
/// How many times a request is tried when the failure may be transient.
pub(crate) const ATTEMPTS: u32 = 4;
/// The first back-off; it doubles per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// Why talking to a registry failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The registry has no manifest under that tag or digest.
    #[error("manifest unknown")]
    ManifestUnknown {
        /// The tag or digest asked for.
        reference: String,
    },
    /// The registry has no such blob.
    #[error("blob unknown: {digest}")]
    BlobUnknown {
        /// The blob's digest.
        digest: String,
    },
    /// The registry refused the (missing or wrong) credentials.
    #[error("unauthorized: {detail}")]
    Unauthorized {
        /// The registry.
        registry: String,
        /// What to do about it.
        detail: String,
    },
    /// The registry refused access to the repository.
    #[error("access denied to {repository}: {detail}")]
    Denied {
        /// The repository.
        repository: String,
        /// The registry's message.
        detail: String,
    },
    /// The registry could not be reached at all.
    #[error("registry {registry} unreachable: {detail}")]
    Unreachable {
        /// `host[:port]`.
        registry: String,
        /// The connection error.
        detail: String,
    },
    /// A connection broke mid-request.
    #[error("transport error on {url}: {detail}")]
    Transport {
        /// The URL.
        url: String,
        /// The error.
        detail: String,
    },
    /// A request took too long.
    #[error("timed out waiting for {url}")]
    Timeout {
        /// The URL.
        url: String,
    },
    /// An unexpected HTTP status.
    #[error("{url}: HTTP {status}: {message}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The registry's error message, if it sent one.
        message: String,
    },
    /// A response that makes no sense.
    #[error("bad response from {url}: {detail}")]
    BadResponse {
        /// The URL.
        url: String,
        /// What is wrong.
        detail: String,
    },
    /// TLS could not be set up.
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

impl RegistryError {
    /// Whether trying again may help.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. }
            | RegistryError::Transport { .. }
            | RegistryError::Timeout { .. } => true,
            RegistryError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// `host[:port]` of registries that may be reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Credentials to use instead of those in the docker config file.
    pub credentials: Option<Credentials>,
    /// The docker-style config file to read credentials from (default: see
    /// [`auth::docker_config_path`]).
    pub docker_config: Option<std::path::PathBuf>,
}

impl RegistryOptions {
    /// Whether `registry` may be reached over plain HTTP: listed insecure, or a loopback
    /// address (`localhost`, `127.0.0.0/8`, `::1`).
    pub fn allows_plain_http(&self, registry: &str) -> bool {
        let host = host_of(registry);
        let loopback =
            host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        loopback
            || self
                .insecure_registries
                .iter()
                .any(|r| r == registry || r == host)
    }
}

/// The host of `host[:port]` (IPv6 literals in brackets lose them).
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.rsplit_once(':').map_or(registry, |(host, _)| host)
}

/// A manifest (or index) as the registry served it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The bytes, exactly as served (their digest is the manifest's).
    pub data: Vec<u8>,
    /// The media type from `Content-Type` (or sniffed from the document).
    pub media_type: String,
    /// The digest of `data`.
    pub digest: Digest,
}

/// A client for one repository of one registry.
#[derive(Debug)]
pub struct RegistryClient {
    http: HttpClient,
    /// `host[:port]` as in the reference.
    registry: String,
    /// `scheme://host[:port]` the registry answered on.
    base: String,
    repository: String,
    credentials: Option<Credentials>,
    authorization: Mutex<Option<String>>,
}

/// Called with the bytes received so far while a blob downloads.
pub type BlobProgress = Arc<dyn Fn(u64) + Send + Sync>;

impl RegistryClient {
    /// Connects to `registry` (as in a reference: `docker.io`, `host:port`) for `repository`:
    /// pings `/v2/` and answers its authentication challenge.
    pub async fn connect(
        registry: &str,
        repository: &str,
        options: &RegistryOptions,
    ) -> Result<RegistryClient> {
        let host = if registry == crate::reference::DEFAULT_REGISTRY {
            "registry-1.docker.io"
        } else {
            registry
        };
        let credentials = options.credentials.clone().or_else(|| {
            let path = options
                .docker_config
                .clone()
                .or_else(auth::docker_config_path)?;
            auth::credentials_from_docker_config(&path, registry)
        });
        let http = HttpClient::new()?;
        let schemes: &[&str] = if options.allows_plain_http(registry) {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut last_error = None;
        for (i, scheme) in schemes.iter().enumerate() {
            let base = format!("{scheme}://{host}");
            let url = format!("{base}/v2/");
            let has_fallback = i + 1 < schemes.len();
            let no_headers = HeaderMap::new();
            let ping = if has_fallback {
                http.get(&url, &no_headers).await
            } else {
                retry(&url, || http.get(&url, &no_headers)).await
            };
            match ping {
                Ok(response) => {
                    let client = RegistryClient {
                        http,
                        registry: registry.to_string(),
                        base,
                        repository: repository.to_string(),
                        credentials,
                        authorization: Mutex::new(None),
                    };
                    client.answer_ping(response).await?;
                    return Ok(client);
                }
                Err(e @ RegistryError::Unreachable { .. }) if has_fallback => {
                    tracing::debug!(%url, error = %e, "HTTPS failed, trying plain HTTP");
                    last_error = Some(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last_error
            .unwrap_or_else(|| RegistryError::Unreachable {
                registry: registry.to_string(),
                detail: "no scheme to try".to_string(),
            })
            .into())
    }

    async fn answer_ping(&self, response: hyper::Response<Incoming>) -> Result<()> {
        match response.status() {
            status if status.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED => self.authenticate(response.headers()).await,
            status => {
                let url = format!("{}/v2/", self.base);
                let body = read_body(response, &url, MAX_DOCUMENT)
                    .await
                    .unwrap_or_default();
                Err(RegistryError::Status {
                    url,
                    status: status.as_u16(),
                    message: error_message(&body),
                }
                .into())
            }
        }
    }

    /// Answers a 401's challenge: Basic credentials, or a bearer token from the realm.
    async fn authenticate(&self, headers: &HeaderMap) -> Result<()> {
        let challenge = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(auth::parse_challenge)
            .min_by_key(|c| matches!(c, Challenge::Basic));
        let needs_login = || RegistryError::Unauthorized {
            registry: self.registry.clone(),
            detail: format!(
                "authentication required: log in to {} (credentials in the docker config.json `auths`)",
                self.registry
            ),
        };
        let header = match challenge {
            None => return Err(needs_login().into()),
            Some(Challenge::Basic) => match &self.credentials {
                Some(credentials) => credentials.basic_header(),
                None => return Err(needs_login().into()),
            },
            Some(Challenge::Bearer { realm, service, .. }) => {
                format!(
                    "Bearer {}",
                    self.fetch_token(&realm, service.as_deref()).await?
                )
            }
        };
        *self.authorization.lock().await = Some(header);
        Ok(())
    }

    async fn fetch_token(&self, realm: &str, service: Option<&str>) -> Result<String> {
        let mut params = Vec::new();
        if let Some(service) = service {
            params.push(format!("service={}", query_escape(service)));
        }
        // A login asks for no repository: a token that says who the user is.
        if !self.repository.is_empty() {
            params.push(format!(
                "scope={}",
                query_escape(&format!("repository:{}:pull", self.repository))
            ));
        }
        let mut url = String::from(realm);
        if !params.is_empty() {
            url.push(if realm.contains('?') { '&' } else { '?' });
            url.push_str(&params.join("&"));
        }
        let mut headers = HeaderMap::new();
        if let Some(credentials) = &self.credentials {
            headers.insert(AUTHORIZATION, header_value(&credentials.basic_header())?);
        }
        let response = retry(&url, || self.http.get(&url, &headers)).await?;
        let status = response.status();
        let body = read_body(response, &url, MAX_DOCUMENT).await?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let detail = if self.credentials.is_some() {
                format!(
                    "the token server {realm} refused the credentials for {}: wrong user name or password",
                    self.registry
                )
            } else {
                format!(
                    "the token server {realm} refused an anonymous token: log in to {}",
                    self.registry
                )
            };
            return Err(RegistryError::Unauthorized {
                registry: self.registry.clone(),
                detail,
            }
            .into());
        }
        if !status.is_success() {
            return Err(RegistryError::Status {
                url,
                status: status.as_u16(),
                message: error_message(&body),
            }
            .into());
        }
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| RegistryError::BadResponse {
                url: url.clone(),
                detail: format!("token response is not JSON: {e}"),
            })?;
        value
            .get("token")
            .or_else(|| value.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                RegistryError::BadResponse {
                    url,
                    detail: "token response has no token".to_string(),
                }
                .into()
            })
    }

    /// `GET` a path under `/v2/<repository>/` with authorization, retrying transient errors
    /// and answering one fresh 401 challenge (an expired token, a Basic challenge).
    async fn get(
        &self,
        path: &str,
        accept: Option<&str>,
    ) -> Result<(String, hyper::Response<Incoming>)> {
        let url = format!("{}/v2/{}/{path}", self.base, self.repository);
        let mut reauthenticated = false;
        loop {
            let mut headers = HeaderMap::new();
            if let Some(accept) = accept {
                headers.insert(ACCEPT, header_value(accept)?);
            }
            if let Some(auth) = self.authorization.lock().await.clone() {
                headers.insert(AUTHORIZATION, header_value(&auth)?);
            }
            let response = retry(&url, || async {
                let response = self.http.get(&url, &headers).await?;
                if response.status().is_server_error()
                    || response.status() == StatusCode::TOO_MANY_REQUESTS
                {
                    return Err(RegistryError::Status {
                        url: url.clone(),
                        status: response.status().as_u16(),
                        message: String::new(),
                    });
                }
                Ok(response)
            })
            .await?;
            if response.status() == StatusCode::UNAUTHORIZED {
                if reauthenticated {
                    return Err(RegistryError::Unauthorized {
                        registry: self.registry.clone(),
                        detail: if self.credentials.is_some() {
                            format!(
                                "{} refused the credentials: wrong user name or password",
                                self.registry
                            )
                        } else {
                            format!("authentication required: log in to {}", self.registry)
                        },
                    }
                    .into());
                }
                self.authenticate(response.headers()).await?;
                reauthenticated = true;
                continue;
            }
            return Ok((url, response));
        }
    }

    /// Fetches the manifest or index under `reference` (a tag or a digest), verifying it
    /// against the digest when `reference` is one.
    pub async fn fetch_manifest(&self, reference: &str) -> Result<FetchedManifest> {
        let (url, response) = self
            .get(&format!("manifests/{reference}"), Some(MANIFEST_ACCEPT))
            .await?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let body = read_body(response, &url, MAX_DOCUMENT).await?;
        if !status.is_success() {
            return Err(self
                .status_error(&url, status, &body, reference, true)
                .into());
        }
        let digest = Digest::of(&body);
        if reference.starts_with("sha256:") && digest.as_str() != reference {
            return Err(ImageError::DigestMismatch {
                what: format!("manifest {reference} of {}", self.repository),
                expected: reference.to_string(),
                actual: digest.to_string(),
            });
        }
        let known = [
            MEDIA_OCI_INDEX,
            MEDIA_OCI_MANIFEST,
            MEDIA_DOCKER_LIST,
            MEDIA_DOCKER_MANIFEST,
        ];
        let media_type = match content_type {
            Some(t) if known.contains(&t.as_str()) => t,
            _ => crate::oci::sniff_media_type(&body).ok_or_else(|| {
                ImageError::UnsupportedMediaType {
                    media_type: "unknown".to_string(),
                    what: format!("manifest {reference} of {}", self.repository),
                }
            })?,
        };
        Ok(FetchedManifest {
            data: body,
            media_type,
            digest,
        })
    }

    /// Downloads the blob `digest` (of `size` bytes) into `store`, verified, retrying a
    /// broken download from the start. `progress` hears the bytes received so far.
    pub async fn fetch_blob(
        &self,
        store: &ContentStore,
        digest: &Digest,
        size: u64,
        progress: &BlobProgress,
    ) -> Result<()> {
        retry_download(digest, || {
            self.fetch_blob_once(store, digest, size, progress)
        })
        .await
    }

    async fn fetch_blob_once(
        &self,
        store: &ContentStore,
        digest: &Digest,
        size: u64,
        progress: &BlobProgress,
    ) -> Result<()> {
        let mut body = self.open_blob(digest).await?;
        let mut writer = store.writer(Some((digest.clone(), Some(size))))?;
        progress(0);
        while let Some(chunk) = body.chunk().await? {
            std::io::Write::write_all(&mut writer, &chunk)
                .map_err(ImageError::io("write", store.ingest_dir()))?;
            if writer.written() > size {
                break;
            }
            progress(writer.written());
        }
        writer.commit().map(drop)
    }

    /// Starts downloading the blob `digest`: the response body, once the registry answered
    /// with success (other answers are errors). No retry: the caller decides.
    pub(crate) async fn open_blob(&self, digest: &Digest) -> Result<BlobBody> {
        let (url, response) = self.get(&format!("blobs/{digest}"), None).await?;
        let status = response.status();
        if !status.is_success() {
            let body = read_body(response, &url, MAX_DOCUMENT)
                .await
                .unwrap_or_default();
            return Err(self
                .status_error(&url, status, &body, digest.as_str(), false)
                .into());
        }
        Ok(BlobBody {
            url,
            body: response.into_body(),
        })
    }

    fn status_error(
        &self,
        url: &str,
        status: StatusCode,
        body: &[u8],
        reference: &str,
        manifest: bool,
    ) -> RegistryError {
        let message = error_message(body);
        match status {
            StatusCode::NOT_FOUND if manifest => RegistryError::ManifestUnknown {
                reference: reference.to_string(),
            },
            StatusCode::NOT_FOUND => RegistryError::BlobUnknown {
                digest: reference.to_string(),
            },
            StatusCode::FORBIDDEN => RegistryError::Denied {
                repository: self.repository.clone(),
                detail: message,
            },
            _ => RegistryError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                message,
            },
        }
    }
}

/// A blob's response body, read chunk by chunk as it arrives.
#[derive(Debug)]
pub(crate) struct BlobBody {
    url: String,
    body: Incoming,
}

impl BlobBody {
    /// The next chunk of data, `None` at the end; a stall longer than
    /// [`BODY_STALL_TIMEOUT`] or a broken connection is a (transient) error.
    pub(crate) async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, RegistryError> {
        use http_body_util::BodyExt;
        loop {
            let frame = tokio::time::timeout(BODY_STALL_TIMEOUT, self.body.frame())
                .await
                .map_err(|_| RegistryError::Timeout {
                    url: self.url.clone(),
                })?;
            let Some(frame) = frame else { return Ok(None) };
            let frame = frame.map_err(|e| RegistryError::Transport {
                url: self.url.clone(),
                detail: e.to_string(),
            })?;
            if let Ok(data) = frame.into_data() {
                return Ok(Some(data));
            }
        }
    }
}

/// The `message` of the first entry of a registry's `{"errors": [...]}` body.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let first = v.get("errors")?.get(0)?.clone();
            let message = first
                .get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string);
            let code = first
                .get("code")
                .and_then(|c| c.as_str())
                .map(|c| c.to_ascii_lowercase().replace('_', " "));
            message.or(code)
        })
        .unwrap_or_else(|| {
            String::from_utf8_lossy(body)
                .chars()
                .take(200)
                .collect::<String>()
                .trim()
                .to_string()
        })
}

/// How long to wait before attempt `attempt + 1`.
pub(crate) fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(8))
        .min(MAX_BACKOFF)
}

/// Runs the download of blob `digest` (`download` makes one attempt from the start) up to
/// [`ATTEMPTS`] times while it fails with a transient registry error, with back-off.
pub(crate) async fn retry_download<T, F, Fut>(digest: &Digest, mut download: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match download().await {
            Err(ImageError::Registry(e)) if e.is_transient() && attempt < ATTEMPTS => {
                tracing::warn!(%digest, attempt, error = %e, "blob download failed, retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
            other => return other,
        }
    }
}

/// Runs `request` up to [`ATTEMPTS`] times while it fails transiently.
async fn retry<T, F, Fut>(url: &str, mut request: F) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RegistryError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match request().await {
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                tracing::debug!(%url, attempt, error = %e, "retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
            other => return other,
        }
    }
}

fn header_value(text: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(text).map_err(|_| ImageError::Invalid {
        what: "HTTP header".to_string(),
        detail: "credentials or token contain characters a header may not".to_string(),
    })
}

/// Percent-encodes a query parameter value.
fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_registries_may_use_plain_http() {
        let options = RegistryOptions {
            insecure_registries: vec!["reg.lan:5000".to_string(), "other.lan".to_string()],
            ..RegistryOptions::default()
        };
        for ok in [
            "127.0.0.1:5000",
            "localhost:5000",
            "[::1]:5000",
            "reg.lan:5000",
            "other.lan:443",
        ] {
            assert!(options.allows_plain_http(ok), "{ok}");
        }
        for no in ["docker.io", "reg.lan:5001", "10.0.0.1:5000"] {
            assert!(!options.allows_plain_http(no), "{no}");
        }
    }

    #[test]
    fn back_off_is_bounded() {
        assert_eq!(backoff(1), FIRST_BACKOFF);
        assert_eq!(backoff(2), FIRST_BACKOFF * 2);
        assert_eq!(backoff(30), MAX_BACKOFF);
    }

    #[test]
    fn registry_error_bodies_give_their_message() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(error_message(body), "manifest unknown");
        assert_eq!(
            query_escape("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }
}
