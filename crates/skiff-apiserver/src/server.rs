//! The API server: building the state (registry, watch caches, CRDs, bootstrap namespaces),
//! the HTTP router (health, version, metrics, discovery, resources, with bearer-token
//! authentication), and serving it over TLS (HTTP/2 and HTTP/1.1) until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use skiff_apimachinery::Registry;
use skiff_store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::discovery;
use crate::handlers;
use crate::response;
use crate::route::{self, ApiPath, Query};
use crate::state::{AppState, Identity, ServerOptions};
use crate::status::ApiError;
use crate::version::VersionInfo;

/// The largest request body accepted (kube-apiserver's limit): 3 MiB.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Namespaces every cluster has.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Why the server could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store failed while the server was starting.
    #[error("store failed while starting the API server: {0}")]
    Store(#[from] skiff_store::StoreError),
    /// Creating a system object failed.
    #[error("cannot create {what}: {source}")]
    Bootstrap {
        /// What was being created.
        what: String,
        /// The API error.
        #[source]
        source: ApiError,
    },
    /// Accepting connections failed.
    #[error("cannot accept connections: {0}")]
    Accept(#[source] std::io::Error),
}

/// The API server.
pub struct ApiServer {
    state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
}

impl ApiServer {
    /// Prepares a server over `store`: registers the built-in resources and the stored CRDs,
    /// starts one watch cache per resource, accepts `admin_token` for the cluster admin, and
    /// creates the system namespaces that are missing.
    pub async fn new(
        store: Arc<dyn Store>,
        options: ServerOptions,
        admin_token: &str,
    ) -> Result<ApiServer, ServerError> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut registry = Registry::builtin();
        let virtual_infos = handlers::virtual_infos();
        for info in &virtual_infos {
            registry.add(info.clone());
        }
        let revision = store.current_revision().await?;
        let state = Arc::new(AppState::new(
            Arc::clone(&store),
            registry.clone(),
            options,
            shutdown_rx,
        ));
        state.add_token(
            admin_token,
            Identity {
                username: "system:admin".into(),
                groups: vec!["system:masters".into(), "system:authenticated".into()],
            },
        );
        for info in registry.all() {
            if !virtual_infos.contains(info) {
                state.ensure_cache(info, revision);
            }
        }
        crate::crd::load_all(&state)
            .await
            .map_err(|source| ServerError::Bootstrap {
                what: "custom resource definitions".into(),
                source,
            })?;
        bootstrap_namespaces(&state).await?;
        match crate::authz::bootstrap::ensure(&state).await {
            Ok(0) => {}
            Ok(created) => tracing::info!(created, "created the default RBAC roles and bindings"),
            Err(source) => {
                return Err(ServerError::Bootstrap {
                    what: "the default RBAC roles".into(),
                    source,
                });
            }
        }
        crate::authz::cache::follow(&state);
        crate::authz::graph::follow(&state);
        crate::namespaces::follow(&state);
        crate::authz::aggregation::spawn(&state);
        match crate::services::repair::repair(&state).await {
            Ok(report) if report != Default::default() => {
                tracing::info!(?report, "repaired the service address reservations");
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %err, "cannot repair the service address reservations")
            }
        }
        if let Some(defaults) = state.options.default_services.clone()
            && let Err(err) = crate::services::bootstrap::ensure(&state, &defaults).await
        {
            tracing::warn!(error = %err, "cannot create the default services yet");
        }
        crate::services::bootstrap::spawn(Arc::clone(&state));
        Ok(ApiServer { state, shutdown })
    }

    /// The shared state (for embedding and tests).
    pub fn state(&self) -> Arc<AppState> {
        Arc::clone(&self.state)
    }

    /// The HTTP routes, without TLS (tests drive it directly).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(health))
            .route("/livez", get(health))
            .route("/readyz", get(health))
            .route("/version", get(version))
            .fallback(api)
            .with_state(Arc::clone(&self.state))
    }

    /// Serves HTTPS on `listener` until `shutdown` completes, then stops accepting, ends the
    /// watches and waits (at most 5 seconds) for requests in flight.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let acceptor = TlsAcceptor::from(tls);
        let router = self.router();
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, error = %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                // A client certificate the CA signed names the connection's user.
                let client = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(|leaf| crate::certificates::signer::identity_of(leaf))
                    .map(ClientCertificate);
                let service = TowerToHyperService::new(tower::ServiceExt::map_request(
                    router,
                    move |mut request: axum::http::Request<hyper::body::Incoming>| {
                        if let Some(client) = &client {
                            request.extensions_mut().insert(client.clone());
                        }
                        request
                    },
                ));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                    .into_owned();
                if let Err(err) = watcher.watch(conn).await {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                }
            });
        }
        tracing::info!("shutting down: no new connections, ending watches");
        let _ = self.shutdown.send(true);
        if let Some(defaults) = &self.state.options.default_services {
            crate::services::bootstrap::remove_lease(&self.state, defaults).await;
        }
        self.state.stop_caches();
        if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("requests still in flight after 5s; closing anyway");
        }
        Ok(())
    }
}

/// Creates the system namespaces that do not exist.
async fn bootstrap_namespaces(state: &Arc<AppState>) -> Result<(), ServerError> {
    let Some(info) = state.find("", "v1", "namespaces") else {
        return Ok(());
    };
    for name in SYSTEM_NAMESPACES {
        let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        let bootstrap = |source| ServerError::Bootstrap {
            what: format!("namespace {name}"),
            source,
        };
        crate::strategy::prepare_create(&info, &mut obj).map_err(bootstrap)?;
        match handlers::create_object(state, &info, obj).await {
            Ok(_) => tracing::info!(namespace = name, "created system namespace"),
            Err(err) if err.reason == "AlreadyExists" => {}
            Err(err) => return Err(bootstrap(err)),
        }
    }
    Ok(())
}

/// The user a connection's client certificate names.
#[derive(Debug, Clone)]
struct ClientCertificate(Identity);

async fn health() -> Response {
    response::text(StatusCode::OK, "ok".into(), "text/plain; charset=utf-8")
}

async fn version(State(state): State<Arc<AppState>>) -> Response {
    let info = VersionInfo::current(&state.options.skiff_version);
    let mut response = response::text(StatusCode::OK, info.to_json(), "application/json");
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, private"),
    );
    response
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// What metrics call a request that is not a resource request.
fn other_resource(path: &str) -> &'static str {
    if path.starts_with("/api") {
        "discovery"
    } else if path.starts_with("/openapi") {
        "openapi"
    } else if path == "/metrics" {
        "metrics"
    } else {
        "other"
    }
}

async fn api(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let start = Instant::now();
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let query = Query::parse(parts.uri.query());
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    // As kube-apiserver: a verified client certificate first, then a bearer token.
    let authenticated = match (
        parts.extensions.get::<ClientCertificate>(),
        bearer_token(&parts.headers),
    ) {
        (Some(ClientCertificate(identity)), _) => Some(identity.clone()),
        (None, Some(token)) => crate::serviceaccount::authenticate(&state, token).await,
        (None, None) => None,
    };
    let authenticated = match authenticated {
        Some(requester) => {
            let authorized = authorize_request(
                &state,
                requester,
                &parts.method,
                &path,
                &query,
                &parts.headers,
            )
            .await;
            match authorized {
                Ok(identity) => Some(identity),
                Err((verb, resource, err)) => {
                    tracing::debug!(method = %parts.method, %path, error = %err, "request refused");
                    let response = err.into_response();
                    state.metrics.observe(
                        verb,
                        &resource,
                        response.status().as_u16(),
                        start.elapsed(),
                    );
                    return response;
                }
            }
        }
        None => None,
    };
    let streaming = match authenticated {
        Some(_) => {
            handlers::stream_proxy::route(
                &state,
                &parts.method,
                &path,
                parts.uri.query(),
                &parts.headers,
                upgrade,
            )
            .await
        }
        None => None,
    };
    let (verb, resource, result) = match (streaming, authenticated) {
        (Some(outcome), _) => outcome,
        (None, authenticated) => match authenticated {
            None => (
                "unknown",
                "unauthenticated".to_string(),
                Err(ApiError::unauthorized()),
            ),
            Some(identity) => {
                route_request(
                    &state,
                    &parts.method,
                    &path,
                    query,
                    parts.headers,
                    identity,
                    body,
                )
                .await
            }
        },
    };
    if parts.method != Method::GET && path.starts_with("/apis/rbac.authorization.k8s.io/") {
        // The RoleBinding just written is in force for the client's next request.
        state.rbac.invalidate();
    }
    let response = match result {
        Ok(response) => response,
        Err(err) => {
            if err.code >= 500 {
                tracing::warn!(method = %parts.method, %path, error = %err, "request failed");
            } else {
                tracing::debug!(method = %parts.method, %path, error = %err, "request refused");
            }
            err.into_response()
        }
    };
    state
        .metrics
        .observe(verb, &resource, response.status().as_u16(), start.elapsed());
    response
}

/// Acts as the impersonated user when the request asks to (and may), then authorizes the
/// request as that user. A refusal comes with the metrics verb and resource.
async fn authorize_request(
    state: &Arc<AppState>,
    requester: Identity,
    method: &Method,
    path: &str,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Identity, (&'static str, String, ApiError)> {
    let refused = |attrs: &crate::authz::Attributes, err| {
        let resource = match attrs.resource_attributes() {
            Some(r) if r.group.is_empty() => r.resource.clone(),
            Some(r) => format!("{}.{}", r.resource, r.group),
            None => other_resource(path).to_string(),
        };
        (
            crate::authz::attributes::metrics_verb(&attrs.verb),
            resource,
            err,
        )
    };
    let identity =
        match crate::authz::impersonation::acting_as(state, requester.clone(), headers).await {
            Ok(identity) => identity,
            Err(err) => {
                let attrs =
                    crate::authz::Attributes::of_request(&requester, method, path, query, headers);
                return Err(refused(&attrs, err));
            }
        };
    let attrs = crate::authz::Attributes::of_request(&identity, method, path, query, headers);
    match crate::authz::authorize(state, &attrs).await {
        Ok(()) => Ok(identity),
        Err(err) => Err(refused(&attrs, err)),
    }
}

async fn route_request(
    state: &Arc<AppState>,
    method: &Method,
    path: &str,
    query: Query,
    headers: HeaderMap,
    identity: Identity,
    body: Body,
) -> (&'static str, String, Result<Response, ApiError>) {
    let resource = other_resource(path).to_string();
    if path == "/metrics" {
        let text = state.metrics.encode();
        return (
            "get",
            resource,
            Ok(response::text(
                StatusCode::OK,
                text,
                "text/plain; version=0.0.4; charset=utf-8",
            )),
        );
    }
    if let Some(result) = crate::serviceaccount::discovery_document(state, path) {
        return ("get", resource, result);
    }
    if let Some(rest) = path.strip_prefix("/openapi") {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("*/*");
        let json_ok = accept.is_empty()
            || discovery::parse_accept(accept).iter().any(|r| {
                matches!(
                    r.essence.as_str(),
                    "application/json" | "*/*" | "application/*"
                )
            });
        let result = if *method != Method::GET {
            Err(ApiError::method_not_allowed())
        } else if !json_ok && rest.trim_end_matches('/') == "/v2" {
            // kubectl <= 1.28 asks for the OpenAPI v2 document in protobuf only (to check
            // that the server validates fields) and fails without one. Skiff serves v2 as JSON
            // only; in protobuf it answers an empty document (no paths), with which kubectl
            // validates on its side as it does against servers without field validation.
            let mut response = Response::new(Body::empty());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                ),
            );
            Ok(response)
        } else if !json_ok {
            Err(ApiError::not_acceptable(
                "only application/json is served for OpenAPI documents",
            ))
        } else if *method == Method::GET {
            openapi(state, rest)
        } else {
            Err(ApiError::method_not_allowed())
        };
        return ("get", resource, result);
    }
    let Some(api_path) = route::parse(path) else {
        return ("get", resource, Err(ApiError::no_such_path()));
    };
    let target = match api_path {
        ApiPath::Target(target) => target,
        discovery_path => {
            if *method != Method::GET {
                return ("get", resource, Err(ApiError::method_not_allowed()));
            }
            return (
                "get",
                resource,
                discovery_response(state, &headers, discovery_path),
            );
        }
    };
    let verb = handlers::verb(method, &target, &query);
    let resource = if target.group.is_empty() {
        target.plural.clone()
    } else {
        format!("{}.{}", target.plural, target.group)
    };
    let body = match read_body(&headers, body).await {
        Ok(body) => body,
        Err(err) => return (verb, resource, Err(err)),
    };
    if let Err(err) =
        crate::authz::escalation::check_write(state, &identity, method, &target, &headers, &body)
            .await
    {
        return (verb, resource, Err(err));
    }
    let result = handlers::handle(
        Arc::clone(state),
        method.clone(),
        target,
        query,
        headers,
        identity,
        body,
    )
    .await;
    (verb, resource, result)
}

async fn read_body(headers: &HeaderMap, body: Body) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::too_large(format!(
            "the request body is larger than the limit of {MAX_BODY} bytes"
        ))
    };
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && length > MAX_BODY
    {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|err| {
        if err.to_string().contains("length limit") {
            too_large()
        } else {
            ApiError::bad_request(format!("cannot read the request body: {err}"))
        }
    })
}

fn discovery_response(
    state: &AppState,
    headers: &HeaderMap,
    path: ApiPath,
) -> Result<Response, ApiError> {
    let registry = state.registry();
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match path {
        ApiPath::CoreVersions | ApiPath::Groups => {
            let core = path == ApiPath::CoreVersions;
            if let Some(version) = discovery::wants_aggregated(accept) {
                return Ok(response::json_as(
                    StatusCode::OK,
                    &discovery::aggregated(&registry, core, version),
                    &version.content_type(),
                ));
            }
            let doc = if core {
                discovery::core_versions(&state.options.server_address)
            } else {
                discovery::group_list(&registry)
            };
            Ok(response::json(StatusCode::OK, &doc))
        }
        ApiPath::Group(group) => discovery::group(&registry, &group)
            .map(|doc| response::json(StatusCode::OK, &doc))
            .ok_or_else(ApiError::no_such_path),
        ApiPath::Resources { group, version } => {
            discovery::resource_list(&registry, &group, &version)
                .map(|doc| response::json(StatusCode::OK, &doc))
                .ok_or_else(ApiError::no_such_path)
        }
        ApiPath::Target(_) => Err(ApiError::no_such_path()),
    }
}

/// `/openapi/v2`, `/openapi/v3` and `/openapi/v3/{api/v1 | apis/G/V}` (JSON only).
fn openapi(state: &AppState, rest: &str) -> Result<Response, ApiError> {
    use skiff_apimachinery::openapi;
    let rest = rest.trim_end_matches('/');
    let doc = match rest {
        "/v2" => state.document("v2", |r| Some(openapi::openapi_v2(r))),
        "/v3" => state.document("v3", |r| Some(openapi::openapi_v3_index(r))),
        other => {
            let path = other
                .strip_prefix("/v3/")
                .ok_or_else(ApiError::no_such_path)?;
            let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
                ["api", version] => (String::new(), version.to_string()),
                ["apis", group, version] => (group.to_string(), version.to_string()),
                _ => return Err(ApiError::no_such_path()),
            };
            state.document(path, |r| {
                r.in_group_version(&group, &version)
                    .next()
                    .is_some()
                    .then(|| openapi::openapi_v3_for_group_version(r, &group, &version))
            })
        }
    };
    let bytes = doc.ok_or_else(ApiError::no_such_path)?;
    let mut response = Response::new(Body::from(bytes));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
