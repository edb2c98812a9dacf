//! `GET pods/{name}/log`, proxied to the node agent of the pod's node, as kube-apiserver
//! proxies it to the kubelet: the node's `InternalIP` and
//! `status.daemonEndpoints.kubeletEndpoint.Port` name the agent's node API; the request goes
//! over HTTPS with the server's client certificate (`kube-apiserver-kubelet-client` in
//! `system:masters`, [`crate::state::ServerOptions::kubelet_client`], as kube-apiserver's
//! `--kubelet-client-certificate`) and the agent's plain-text answer streams back. Like kube-apiserver without
//! `--kubelet-certificate-authority`, the agent's certificate is not verified yet.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::Ctx;
use crate::status::ApiError;
use crate::storage;

/// The query parameters passed on to the agent.
const PASSED: &[&str] = &[
    "follow",
    "tailLines",
    "timestamps",
    "previous",
    "limitBytes",
    "sinceSeconds",
    "sinceTime",
];

/// Serves `pods/{name}/log` from the pod's node agent.
pub async fn pod_log(ctx: &Ctx) -> Result<Response, ApiError> {
    let (pod, _) = storage::get(ctx.state.store.as_ref(), &ctx.info, ctx.ns(), ctx.name()).await?;
    let name = ctx.name();
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {name} does not have a host assigned"))
        })?;
    let names: Vec<&str> = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod.pointer(&format!("/spec/{k}")).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let apps: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let container = match ctx.query.get("container") {
        Some(c) if names.contains(&c) => c.to_string(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None if apps.len() == 1 => apps[0].to_string(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                apps.join(" ")
            )));
        }
    };
    let authority = node_authority(&ctx.state, node_name, name).await?;
    let mut query = Vec::new();
    for key in PASSED {
        if let Some(v) = ctx.query.get(key) {
            query.push(format!("{key}={}", encode(v)));
        }
    }
    let path = format!(
        "/containerLogs/{}/{}/{}?{}",
        encode(ctx.ns().unwrap_or("default")),
        encode(name),
        encode(&container),
        query.join("&")
    );
    let client = ctx
        .state
        .options
        .kubelet_client
        .clone()
        .ok_or_else(|| ApiError::unavailable("no node agent is reachable from this server"))?;
    fetch(&authority, &path, client).await.map_err(|e| {
        ApiError::unavailable(format!(
            "cannot reach the node agent of {node_name} at {authority}: {e}"
        ))
    })?
}

/// `host:port` of the node agent of `node_name` (where pod `pod` runs): the node's
/// `InternalIP` and `status.daemonEndpoints.kubeletEndpoint.Port`.
pub(super) async fn node_authority(
    state: &crate::state::AppState,
    node_name: &str,
    pod: &str,
) -> Result<String, ApiError> {
    let node_info = state
        .find("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not served"))?;
    let (node, _) = storage::get(state.store.as_ref(), &node_info, None, node_name)
        .await
        .map_err(|_| {
            ApiError::unavailable(format!("node {node_name} of pod {pod} is not registered"))
        })?;
    let address = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .find(|x| x.get("type").and_then(Value::as_str) == Some("InternalIP"))
                .and_then(|x| x.get("address").and_then(Value::as_str))
        })
        .ok_or_else(|| ApiError::unavailable(format!("node {node_name} has no InternalIP")))?
        .to_string();
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            ApiError::unavailable(format!("node {node_name} publishes no agent port"))
        })?;
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address
    };
    Ok(format!("{host}:{port}"))
}

/// The TLS client configuration (HTTP/1.1) of connections to node agents: the client
/// certificate `cert_pem` with its key `key_pem` presented on each.
pub fn client_config(
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| rustls::Error::General(format!("the kubelet client certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| rustls::Error::General(format!("the kubelet client key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_client_auth_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Opens a TLS connection (HTTP/1.1) to the node agent at `authority` with `config`.
pub(super) async fn connect(
    authority: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let server_name =
        rustls::pki_types::ServerName::try_from("node-agent").map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|e| e.to_string())
}

/// `%`-encodes a path segment or query value.
pub(super) fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// GETs `path` from the agent at `authority`; the outer error is a transport failure, the
/// inner one the agent's refusal as an API error.
async fn fetch(
    authority: &str,
    path: &str,
    client: Arc<rustls::ClientConfig>,
) -> Result<Result<Response, ApiError>, String> {
    let tls = connect(authority, client).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = Request::get(path)
        .header(header::HOST, authority)
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    if status == StatusCode::OK {
        let body = Body::new(response.into_body());
        return Ok(Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(body)
            .map_err(|e| e.to_string())?));
    }
    let bytes = axum::body::to_bytes(Body::new(response.into_body()), 64 * 1024)
        .await
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&bytes).trim().to_string();
    Ok(Err(match status {
        StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => ApiError::bad_request(message),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ApiError::unavailable(format!(
            "the node agent refused this server's credentials ({status}): {message}"
        )),
        _ => ApiError::unavailable(format!("node agent answered {status}: {message}")),
    }))
}

/// Accepts the agent's certificate whatever it is (see the module's note); signatures are
/// still checked, so the handshake proves possession of the presented key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode("web-1.a"), "web-1.a");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
