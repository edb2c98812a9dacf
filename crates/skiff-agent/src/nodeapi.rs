//! The node API (the kubelet's port 10250): HTTPS with a self-signed certificate kept under
//! `DATA/agent/tls/`, asking callers for a client certificate the cluster CA signed (the API
//! server presents one); every request but `/healthz` is authenticated (that certificate, or
//! a bearer token the API server's TokenReview accepts) and authorized (a
//! SubjectAccessReview on `nodes/proxy` of this node) by [`crate::nodeauth`]. It serves `GET /containerLogs/{namespace}/{pod}/{container}` (what the
//! API server's `pods/{name}/log` proxies to), the streaming endpoints `/exec/...`,
//! `/attach/...` and `/portForward/...` ([`crate::streaming`]) and `/healthz`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::logs::{self, LogError, LogOptions};
use crate::{AgentConfig, AgentError, Context};

/// The TLS configuration of the node API: the certificate and key under `agent_dir/tls/`,
/// made (self-signed, for the node's address and name) when missing; client certificates are
/// asked for (not required) and verified against [`AgentConfig::client_ca_pem`] (without it
/// none is asked for, and only bearer tokens authenticate).
pub fn tls_config(
    agent_dir: &Path,
    config: &AgentConfig,
) -> Result<Arc<rustls::ServerConfig>, AgentError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = agent_dir.join("tls");
    let cert_path = dir.join("node-api.crt");
    let key_path = dir.join("node-api.key");
    if !cert_path.exists() || !key_path.exists() {
        std::fs::create_dir_all(&dir).map_err(AgentError::io("create dir", &dir))?;
        let names = vec![
            config.node_name.clone(),
            config.node_ip.to_string(),
            "localhost".to_string(),
        ];
        let made = rcgen::generate_simple_self_signed(names)
            .map_err(|e| AgentError::Tls(e.to_string()))?;
        std::fs::write(&cert_path, made.cert.pem()).map_err(AgentError::io("write", &cert_path))?;
        std::fs::write(&key_path, made.signing_key.serialize_pem())
            .map_err(AgentError::io("write", &key_path))?;
    }
    let cert_pem = std::fs::read(&cert_path).map_err(AgentError::io("read", &cert_path))?;
    let key_pem = std::fs::read(&key_path).map_err(AgentError::io("read", &key_path))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| AgentError::Tls(format!("{}: {e}", cert_path.display())))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| AgentError::Tls(format!("{}: {e}", key_path.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| AgentError::Tls(e.to_string()))?;
    let builder = match &config.client_ca_pem {
        Some(ca_pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
                let ca = ca.map_err(|e| AgentError::Tls(format!("the cluster CA: {e}")))?;
                roots
                    .add(ca)
                    .map_err(|e| AgentError::Tls(format!("the cluster CA: {e}")))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| AgentError::Tls(format!("the cluster CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut tls = builder
        .with_single_cert(certs, key)
        .map_err(|e| AgentError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// The node API's routes: every one but `/healthz` behind [`crate::nodeauth::check`].
pub fn router(ctx: Arc<Context>) -> Router {
    let checked = Router::new().route(
        "/containerLogs/{namespace}/{pod}/{container}",
        get(container_logs),
    );
    crate::streaming::routes(checked)
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&ctx),
            crate::nodeauth::check,
        ))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(ctx)
}

async fn container_logs(
    State(ctx): State<Arc<Context>>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    Query(options): Query<LogOptions>,
) -> Response {
    match logs::stream(Arc::clone(&ctx), namespace, pod, container, options).await {
        Ok(rx) => {
            let body = Body::from_stream(tokio_stream(rx));
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(body)
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Err(LogError::NotFound(m)) => (StatusCode::NOT_FOUND, m).into_response(),
        Err(LogError::BadRequest(m)) => (StatusCode::BAD_REQUEST, m).into_response(),
    }
}

fn tokio_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Serves the node API on `listener` until the task is aborted.
pub async fn serve(ctx: Arc<Context>, listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
    let acceptor = TlsAcceptor::from(tls);
    let router = router(ctx);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(error = %err, "node API accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    _ => {
                        tracing::debug!(%peer, "node API TLS handshake failed");
                        return;
                    }
                };
            // A client certificate the cluster CA signed names the connection's user.
            let user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|leaf| crate::nodeauth::user_of_certificate(leaf))
                .map(crate::nodeauth::CertificateUser);
            let service = TowerToHyperService::new(tower::ServiceExt::map_request(
                router,
                move |mut request: axum::http::Request<hyper::body::Incoming>| {
                    if let Some(user) = &user {
                        request.extensions_mut().insert(user.clone());
                    }
                    request
                },
            ));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(err) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %err, "node API connection ended with an error");
            }
        });
    }
}
