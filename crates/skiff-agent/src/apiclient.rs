//! The agent's API client: kube's client stack (base URI, credentials, extra headers, retries
//! of 429/503/504, rustls) over a connection pool that gives idle connections back.
//!
//! kube's own client pools HTTP/1.1 connections without an idle timer and without a cap, so
//! every connection a burst of pod syncs opens (a status patch and a few events per pod, each
//! on a connection of its own while others are busy) stays open for good, each holding its
//! TLS session and buffers: an agent that started and deleted 30 pods kept 50 idle
//! connections (about 1.2 MiB) after they were gone. Here at most [`POOL_MAX_IDLE`] idle connections stay,
//! each for at most [`POOL_IDLE_TIMEOUT`] (longer than the heartbeat, so the node's own
//! periodic requests keep reusing one). Unlike kube's stack: no proxy (`proxy_url` is ignored),
//! no write timeout, no per-request tracing spans.

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use tower::{BoxError, ServiceBuilder};

/// How many idle connections to the API server the pool keeps.
pub const POOL_MAX_IDLE: usize = 4;

/// How long an idle connection stays in the pool.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the API client: {0}")]
pub struct ClientError(#[from] kube::Error);

/// Names the client in its `User-Agent` (`kubelet/v0.1.0`) unless the config already has
/// one: kube-apiserver derives the field manager of a write from it (the part before `/`).
pub fn set_user_agent(config: &mut kube::Config, component: &str) {
    use axum::http::{HeaderValue, header::USER_AGENT};
    if config.headers.iter().any(|(name, _)| *name == USER_AGENT) {
        return;
    }
    let agent = format!("{component}/v{}", env!("CARGO_PKG_VERSION"));
    if let Ok(value) = HeaderValue::from_str(&agent) {
        config.headers.push((USER_AGENT, value));
    }
}

/// The agent's client for `config` (as `kube::Client::try_from` builds it, with the pool
/// above), named `kubelet` in its `User-Agent` unless it already has a name. Must be called
/// inside a tokio runtime.
pub fn build(mut config: kube::Config) -> Result<kube::Client, ClientError> {
    set_user_agent(&mut config, "kubelet");
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    let https = config.rustls_https_connector_with_connector(http)?;
    let pool = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE)
        .build(https);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| tower::retry::RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(pool);
    Ok(kube::Client::new(service, config.default_namespace))
}
