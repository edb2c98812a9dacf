//! The ingress reverse proxy: an HTTP and an HTTPS listener serving the current [`RouteTable`]
//! with hyper (HTTP/1.1, and HTTP/2 over TLS through ALPN or with prior knowledge), forwarding
//! to backend endpoints over HTTP/1.1.
//!
//! Per request: the route table picks a backend (404 without one, 503 when it has no ready
//! endpoint), the backend's endpoints are tried in round-robin order until a connection is made
//! (502 when none answers). Request and response bodies are streamed. `Host` is kept;
//! `X-Forwarded-For` (appended), `X-Forwarded-Proto`, `X-Forwarded-Host`, `X-Forwarded-Port`
//! and `X-Real-Ip` are set; hop-by-hop headers are dropped. `Upgrade` requests (WebSocket and
//! others) are forwarded on a connection of their own and, on `101 Switching Protocols`, the
//! client and backend connections are spliced. Backend connections are kept alive and reused
//! (per endpoint, idle at most [`POOL_IDLE_TIMEOUT`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::ingress::SharedTable;
use crate::ingress::routes::RouteTable;
use crate::ingress::tls::{self, DefaultCertificate, SniResolver, TlsError};

/// How long connecting to one endpoint may take before the next is tried (default).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an idle backend connection is kept for reuse.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle backend connections kept per endpoint.
const POOL_MAX_IDLE: usize = 16;
/// How long a client has for the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a pooled connection to be ready for the next request.
const POOL_READY_TIMEOUT: Duration = Duration::from_millis(500);

/// The body type of every response the proxy sends and request it forwards.
type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// What went wrong in the ingress proxy.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// A listener could not be bound.
    #[error("binding the ingress {scheme} listener on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// `HTTP` or `HTTPS`.
        scheme: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// A socket operation failed.
    #[error("ingress socket {addr}: {context}: {source}")]
    Socket {
        /// The socket's address.
        addr: SocketAddr,
        /// What was being done.
        context: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// The TLS setup failed.
    #[error("ingress TLS: {0}")]
    Tls(#[from] TlsError),
    /// Connecting to a backend endpoint failed.
    #[error("connecting to backend endpoint {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// Connecting to a backend endpoint took too long.
    #[error("connecting to backend endpoint {endpoint}: timed out after {timeout:?}")]
    ConnectTimeout {
        /// The endpoint.
        endpoint: SocketAddr,
        /// The limit.
        timeout: Duration,
    },
    /// The HTTP exchange with a backend endpoint failed.
    #[error("backend endpoint {endpoint}: {source}")]
    Upstream {
        /// The endpoint.
        endpoint: SocketAddr,
        /// The cause.
        source: hyper::Error,
    },
}

/// Idle connections to one endpoint, each with the time it was last used, newest last.
type IdleList = Vec<(Instant, SendRequest<ProxyBody>)>;

/// Idle HTTP/1.1 connections to backend endpoints.
#[derive(Default)]
struct Pool {
    idle: Mutex<HashMap<SocketAddr, IdleList>>,
}

impl Pool {
    /// The most recently used live connection to `endpoint`, if any.
    fn take(&self, endpoint: SocketAddr) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.get_mut(&endpoint)?;
        while let Some((since, sender)) = list.pop() {
            if since.elapsed() < POOL_IDLE_TIMEOUT && !sender.is_closed() {
                return Some(sender);
            }
        }
        idle.remove(&endpoint);
        None
    }

    /// Keeps a connection whose last response is complete for the next request.
    fn put(&self, endpoint: SocketAddr, sender: SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.entry(endpoint).or_default();
        list.retain(|(since, s)| since.elapsed() < POOL_IDLE_TIMEOUT && !s.is_closed());
        if list.len() < POOL_MAX_IDLE {
            list.push((Instant::now(), sender));
        }
    }

    /// Drops expired and closed connections, also those of endpoints no longer routed to.
    fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|_, list| {
            list.retain(|(since, s)| since.elapsed() < POOL_IDLE_TIMEOUT && !s.is_closed());
            !list.is_empty()
        });
    }
}

/// State shared by the listeners' connections.
struct Shared {
    table: SharedTable,
    pool: Arc<Pool>,
    connect_timeout_ms: AtomicU64,
    /// `true` once [`IngressProxy::run`] stops: ends spliced (upgraded) connections.
    stop: watch::Sender<bool>,
}

impl Shared {
    fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.load(Ordering::Relaxed))
    }

    /// A pooled connection to `endpoint` ready for a request, if there is one.
    async fn checkout(&self, endpoint: SocketAddr) -> Option<SendRequest<ProxyBody>> {
        while let Some(mut sender) = self.pool.take(endpoint) {
            if let Ok(Ok(())) = tokio::time::timeout(POOL_READY_TIMEOUT, sender.ready()).await {
                return Some(sender);
            }
        }
        None
    }

    /// A new HTTP/1.1 connection to `endpoint` (upgrades allowed).
    async fn connect(&self, endpoint: SocketAddr) -> Result<SendRequest<ProxyBody>, IngressError> {
        let timeout = self.connect_timeout();
        let stream = tokio::time::timeout(timeout, TcpStream::connect(endpoint))
            .await
            .map_err(|_| IngressError::ConnectTimeout { endpoint, timeout })?
            .map_err(|source| IngressError::Connect { endpoint, source })?;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%endpoint, %error, "ingress: TCP_NODELAY");
        }
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| IngressError::Upstream { endpoint, source })?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%endpoint, %error, "ingress: backend connection");
            }
        });
        Ok(sender)
    }
}

/// A cloneable handle that replaces a running proxy's route table.
#[derive(Clone)]
pub struct IngressHandle {
    table: SharedTable,
}

impl std::fmt::Debug for IngressHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngressHandle").finish_non_exhaustive()
    }
}

impl IngressHandle {
    /// Replaces the route table (and certificates), atomically: each request and TLS handshake
    /// sees the old or the new table. Connections in flight are not interrupted.
    pub fn update(&self, table: RouteTable) {
        self.table.store(table);
    }

    /// The table being served.
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load()
    }
}

/// A bound ingress proxy: [`IngressProxy::run`] (on `&self`, so an `Arc<IngressProxy>` can be
/// served and updated at once) or [`IngressProxy::spawn`] serve it. Starts with an empty table
/// (everything 404) until [`IngressProxy::update`].
pub struct IngressProxy {
    http: TcpListener,
    https: TcpListener,
    http_addr: SocketAddr,
    https_addr: SocketAddr,
    tls: TlsAcceptor,
    default_certificate: DefaultCertificate,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for IngressProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngressProxy")
            .field("http", &self.http_addr)
            .field("https", &self.https_addr)
            .finish_non_exhaustive()
    }
}

impl IngressProxy {
    /// Binds the HTTP and HTTPS listeners (port 0 picks a free port each) and generates the
    /// self-signed default certificate. Must run inside a tokio runtime.
    pub async fn bind(http: SocketAddr, https: SocketAddr) -> Result<IngressProxy, IngressError> {
        let bind = |addr: SocketAddr, scheme: &'static str| async move {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| IngressError::Bind {
                    addr,
                    scheme,
                    source,
                })?;
            let local = listener
                .local_addr()
                .map_err(|source| IngressError::Socket {
                    addr,
                    context: "reading the local address",
                    source,
                })?;
            Ok::<_, IngressError>((listener, local))
        };
        let (http, http_addr) = bind(http, "HTTP").await?;
        let (https, https_addr) = bind(https, "HTTPS").await?;
        let default_certificate = DefaultCertificate::generate()?;
        let table = SharedTable::default();
        let config =
            tls::server_config(SniResolver::new(table.clone(), default_certificate.clone()))?;
        let (stop, _) = watch::channel(false);
        Ok(IngressProxy {
            http,
            https,
            http_addr,
            https_addr,
            tls: TlsAcceptor::from(config),
            default_certificate,
            shared: Arc::new(Shared {
                table,
                pool: Arc::new(Pool::default()),
                connect_timeout_ms: AtomicU64::new(millis(DEFAULT_CONNECT_TIMEOUT)),
                stop,
            }),
        })
    }

    /// The HTTP listener's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The HTTPS listener's address.
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    /// The certificate served for unknown server names and clients without SNI.
    pub fn default_certificate(&self) -> &DefaultCertificate {
        &self.default_certificate
    }

    /// Sets how long connecting to one endpoint may take before the next one is tried
    /// (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn with_connect_timeout(self, timeout: Duration) -> IngressProxy {
        self.shared
            .connect_timeout_ms
            .store(millis(timeout), Ordering::Relaxed);
        self
    }

    /// A handle to replace the route table while the proxy runs.
    pub fn handle(&self) -> IngressHandle {
        IngressHandle {
            table: self.shared.table.clone(),
        }
    }

    /// Replaces the route table (see [`IngressHandle::update`]).
    pub fn update(&self, table: RouteTable) {
        self.shared.table.store(table);
    }

    /// The table being served.
    pub fn table(&self) -> Arc<RouteTable> {
        self.shared.table.load()
    }

    /// Serves both listeners until the future is dropped (or its task aborted); the
    /// connections it serves, spliced upgrades included, end with it. Never returns otherwise.
    pub async fn run(&self) {
        struct StopOnDrop<'a>(&'a watch::Sender<bool>);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.send_replace(true);
            }
        }
        self.shared.stop.send_replace(false);
        let _stop = StopOnDrop(&self.shared.stop);
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut sweep = tokio::time::interval(POOL_IDLE_TIMEOUT);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sweep.tick() => self.shared.pool.sweep(),
                accepted = self.http.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let info = ConnInfo { peer, local: self.http_addr, scheme: Scheme::Http };
                        tasks.spawn(serve_connection(stream, self.shared.clone(), info));
                    }
                    Err(error) => accept_failed("HTTP", &error).await,
                },
                accepted = self.https.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let info = ConnInfo { peer, local: self.https_addr, scheme: Scheme::Https };
                        tasks.spawn(serve_tls(self.tls.clone(), stream, self.shared.clone(), info));
                    }
                    Err(error) => accept_failed("HTTPS", &error).await,
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
    }

    /// Runs the proxy on a new tokio task (see [`IngressProxy::run`]); aborting the task stops
    /// it. Must be called inside a tokio runtime.
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(async move { self.run().await })
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Logs a failed accept and pauses briefly (e.g. out of file descriptors).
async fn accept_failed(scheme: &str, error: &io::Error) {
    tracing::warn!(%error, "ingress: accepting an {scheme} connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Where a client connection comes from and arrived.
#[derive(Debug, Clone, Copy)]
struct ConnInfo {
    peer: SocketAddr,
    local: SocketAddr,
    scheme: Scheme,
}

/// Serves one client connection (HTTP/1.1 with upgrades, or HTTP/2).
async fn serve_connection<I>(io: I, shared: Arc<Shared>, info: ConnInfo)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(forward(&shared, info, request).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    if let Err(error) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(peer = %info.peer, %error, "ingress: client connection");
    }
}

/// Completes the TLS handshake (SNI picks the certificate), then serves the connection.
async fn serve_tls(acceptor: TlsAcceptor, stream: TcpStream, shared: Arc<Shared>, info: ConnInfo) {
    let peer = info.peer;
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => serve_connection(stream, shared, info).await,
        Ok(Err(error)) => tracing::debug!(%peer, %error, "ingress: TLS handshake"),
        Err(_) => tracing::debug!(%peer, "ingress: TLS handshake timed out"),
    }
}

/// A short plain-text response of the proxy's own.
fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn empty_body() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The host a request is for: the authority of an absolute URI (HTTP/2, or an absolute-form
/// HTTP/1.1 request), else the `Host` header.
fn request_host(request: &Request<Incoming>) -> Option<String> {
    if let Some(authority) = request.uri().authority() {
        return Some(authority.as_str().to_string());
    }
    request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
}

/// Whether the request asks for a protocol upgrade (HTTP/1.1 `Connection: upgrade` +
/// `Upgrade`).
fn is_upgrade(request: &Request<Incoming>) -> bool {
    request.version() == Version::HTTP_11
        && request.headers().contains_key(header::UPGRADE)
        && connection_tokens(request.headers()).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// The tokens of all `Connection` headers.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers: the standard ones and those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// The headers sent to the backend.
fn forward_headers(
    original: &HeaderMap,
    host: Option<&str>,
    info: &ConnInfo,
    upgrade: bool,
) -> HeaderMap {
    let mut headers = original.clone();
    let upgrade_value = headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut headers);
    // hyper already answered `Expect: 100-continue` by reading the body.
    headers.remove(header::EXPECT);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(value) = upgrade_value {
            headers.insert(header::UPGRADE, value);
        }
    }
    let client = info.peer.ip().to_canonical().to_string();
    let forwarded_for = {
        let earlier: Vec<&str> = original
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if earlier.is_empty() {
            client.clone()
        } else {
            format!("{}, {client}", earlier.join(", "))
        }
    };
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set("x-forwarded-for", &forwarded_for);
    set("x-forwarded-proto", info.scheme.as_str());
    set("x-forwarded-port", &info.local.port().to_string());
    set("x-real-ip", &client);
    if let Some(host) = host {
        set("x-forwarded-host", host);
    }
    if let Some(host) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.entry(header::HOST).or_insert(host);
    }
    headers
}

/// Answers one request: routes it and forwards it to an endpoint of its backend.
async fn forward(
    shared: &Arc<Shared>,
    info: ConnInfo,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    let host = request_host(&request);
    let backend = {
        let table = shared.table.load();
        table
            .route(host.as_deref().unwrap_or(""), request.uri().path())
            .cloned()
    };
    let Some(backend) = backend else {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    let endpoints = backend.pick();
    if endpoints.is_empty() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "no available server\n");
    }
    let upgrade = is_upgrade(&request);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();
    let headers = forward_headers(&parts.headers, host.as_deref(), &info, upgrade);
    let uri: Uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"));
    let resendable = body.is_end_stream()
        && matches!(
            parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
    let make = |body: ProxyBody| {
        let mut outgoing = Request::new(body);
        *outgoing.method_mut() = parts.method.clone();
        *outgoing.uri_mut() = uri.clone();
        *outgoing.version_mut() = Version::HTTP_11;
        *outgoing.headers_mut() = headers.clone();
        outgoing
    };
    let mut body = Some(body.boxed_unsync());

    for endpoint in endpoints {
        // A kept-alive connection first (never for upgrades: they take the connection over).
        if !upgrade {
            if let Some(mut sender) = shared.checkout(endpoint).await {
                let Some(current) = body.take() else { break };
                match sender.try_send_request(make(current)).await {
                    Ok(response) => {
                        return respond(shared, endpoint, response, Some(sender), None);
                    }
                    Err(mut error) => {
                        let cause = error.error();
                        tracing::debug!(%endpoint, error = %cause, "ingress: reused connection");
                        match error.take_message() {
                            Some(unsent) => body = Some(unsent.into_body()),
                            None if resendable => body = Some(empty_body()),
                            None => {
                                return text(StatusCode::BAD_GATEWAY, "Bad Gateway\n");
                            }
                        }
                    }
                }
            }
        }
        let mut sender = match shared.connect(endpoint).await {
            Ok(sender) => sender,
            Err(error) => {
                tracing::debug!(%error, "ingress: trying the next endpoint");
                continue;
            }
        };
        let Some(current) = body.take() else { break };
        match sender.try_send_request(make(current)).await {
            Ok(response) => {
                let keep = (!upgrade).then_some(sender);
                return respond(shared, endpoint, response, keep, client_upgrade);
            }
            Err(mut error) => {
                let cause = error.error();
                tracing::debug!(%endpoint, error = %cause, "ingress: backend request failed");
                match error.take_message() {
                    Some(unsent) => body = Some(unsent.into_body()),
                    None => return text(StatusCode::BAD_GATEWAY, "Bad Gateway\n"),
                }
            }
        }
    }
    tracing::debug!(%backend, "ingress: no endpoint answered");
    text(StatusCode::BAD_GATEWAY, "Bad Gateway\n")
}

/// The backend's response as sent to the client: hop-by-hop headers dropped, the body streamed
/// (its connection pooled again once complete), or for `101` the connections spliced.
fn respond(
    shared: &Arc<Shared>,
    endpoint: SocketAddr,
    mut response: Response<Incoming>,
    sender: Option<SendRequest<ProxyBody>>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<ProxyBody> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let backend_upgrade = hyper::upgrade::on(&mut response);
            let stop = shared.stop.subscribe();
            tokio::spawn(splice(client_upgrade, backend_upgrade, stop, endpoint));
            return response.map(|body| body.boxed_unsync());
        }
        // A 101 nobody asked for cannot be relayed.
        return text(StatusCode::BAD_GATEWAY, "Bad Gateway\n");
    }
    strip_hop_by_hop(response.headers_mut());
    let release = sender.map(|sender| Release {
        pool: shared.pool.clone(),
        endpoint,
        sender,
    });
    response.map(|inner| UpstreamBody::new(inner, release).boxed_unsync())
}

/// Copies bytes both ways between an upgraded client and backend connection until either side
/// closes or the proxy stops.
async fn splice(
    client: hyper::upgrade::OnUpgrade,
    backend: hyper::upgrade::OnUpgrade,
    mut stop: watch::Receiver<bool>,
    endpoint: SocketAddr,
) {
    let work = async {
        let (client, backend) = tokio::join!(client, backend);
        let (client, backend) = match (client, backend) {
            (Ok(c), Ok(b)) => (c, b),
            (Err(error), _) | (_, Err(error)) => {
                tracing::debug!(%endpoint, %error, "ingress: upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut backend = TokioIo::new(backend);
        if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            tracing::debug!(%endpoint, %error, "ingress: upgraded connection");
        }
    };
    tokio::select! {
        () = work => {}
        _ = stop.wait_for(|stopped| *stopped) => {}
    }
}

/// Returns a backend connection to the pool once its response body is complete.
struct Release {
    pool: Arc<Pool>,
    endpoint: SocketAddr,
    sender: SendRequest<ProxyBody>,
}

/// A backend's response body, streamed through; completing it makes the connection reusable.
struct UpstreamBody {
    inner: Incoming,
    release: Option<Release>,
}

impl UpstreamBody {
    fn new(inner: Incoming, release: Option<Release>) -> UpstreamBody {
        let mut body = UpstreamBody { inner, release };
        if body.inner.is_end_stream() {
            body.release_now();
        }
        body
    }

    fn release_now(&mut self) {
        if let Some(release) = self.release.take() {
            release.pool.put(release.endpoint, release.sender);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release_now(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release_now(),
            Poll::Ready(Some(Err(_))) => this.release = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_dropped_and_forwarded_headers_set() {
        let mut original = HeaderMap::new();
        original.insert(header::HOST, HeaderValue::from_static("a.test:8080"));
        original.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        original.insert("x-secret", HeaderValue::from_static("1"));
        original.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        original.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        original.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        original.insert("x-forwarded-proto", HeaderValue::from_static("gopher"));
        let info = ConnInfo {
            peer: "[::ffff:10.0.0.9]:5555".parse().unwrap(),
            local: "0.0.0.0:443".parse().unwrap(),
            scheme: Scheme::Https,
        };
        let headers = forward_headers(&original, Some("a.test:8080"), &info, false);
        assert_eq!(headers[header::HOST], "a.test:8080");
        assert!(!headers.contains_key("x-secret"));
        assert!(!headers.contains_key("keep-alive"));
        assert!(!headers.contains_key(header::CONNECTION));
        assert!(!headers.contains_key(header::TRANSFER_ENCODING));
        assert_eq!(headers["x-forwarded-for"], "192.0.2.1, 10.0.0.9");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-host"], "a.test:8080");
        assert_eq!(headers["x-forwarded-port"], "443");
        assert_eq!(headers["x-real-ip"], "10.0.0.9");

        let mut upgrade = HeaderMap::new();
        upgrade.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        upgrade.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let headers = forward_headers(&upgrade, None, &info, true);
        assert_eq!(headers[header::CONNECTION], "upgrade");
        assert_eq!(headers[header::UPGRADE], "websocket");
        assert!(!headers.contains_key("x-forwarded-host"));
    }
}
