//! The ingress proxy with real traffic on loopback: tiny hyper backends answering their name and
//! the forwarded headers, route tables built from JSON Ingresses, Services and EndpointSlices
//! pointing at them, and curl (or a raw TCP client for upgrades) as the client.

#![allow(clippy::unwrap_used)] // test code: a panic is how a test reports failure

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use serde_json::{Value, json};
use skiff_net::ingress::{IngressInput, IngressProxy, RouteTable, build};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------------
// Backends

type TestBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// A backend HTTP server on 127.0.0.1: GET answers one line naming it and the headers it got,
/// POST echoes the body, `Upgrade` requests switch to a raw echo.
struct TestBackend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(text: String) -> TestBody {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed_unsync()
}

async fn answer(name: &'static str, mut request: Request<Incoming>) -> Response<TestBody> {
    let get = |h: &str| {
        request
            .headers()
            .get(h)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_else(|| "-".into())
    };
    if request.headers().contains_key(header::UPGRADE) {
        let protocol = get("upgrade");
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let mut io = TokioIo::new(upgrade.await.unwrap());
            let mut buf = [0u8; 1024];
            loop {
                let n = io.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                let mut reply = format!("{name}:").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                io.write_all(&reply).await.unwrap();
            }
        });
        let mut response = Response::new(full(String::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response
            .headers_mut()
            .insert(header::UPGRADE, protocol.parse().unwrap());
        response
            .headers_mut()
            .insert(header::CONNECTION, "upgrade".parse().unwrap());
        return response;
    }
    if request.method() == hyper::Method::POST {
        let mut response = Response::new(request.into_body().boxed_unsync());
        response
            .headers_mut()
            .insert("x-backend", name.parse().unwrap());
        return response;
    }
    let line = format!(
        "backend={name} host={} xff={} proto={} xfhost={} path={}\n",
        get("host"),
        get("x-forwarded-for"),
        get("x-forwarded-proto"),
        get("x-forwarded-host"),
        request.uri(),
    );
    Response::new(full(line))
}

async fn backend(name: &'static str) -> TestBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| async move {
                    Ok::<_, Infallible>(answer(name, request).await)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    TestBackend {
        addr,
        connections,
        task,
    }
}

/// An address where nothing listens (connections are refused).
async fn dead_endpoint() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Objects

/// The objects a route table is built from.
#[derive(Default)]
struct Cluster {
    ingresses: Vec<Ingress>,
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
    secrets: Vec<Secret>,
}

impl Cluster {
    /// A Service `name` (port 80 named `http`, target port `web`) with one EndpointSlice per
    /// endpoint (each endpoint listens on its own port).
    fn service(&mut self, name: &str, endpoints: &[SocketAddr]) -> &mut Self {
        self.services.push(
            serde_json::from_value(json!({
                "metadata": {"namespace": "default", "name": name},
                "spec": {"clusterIP": "10.43.0.20",
                         "ports": [{"name": "http", "port": 80, "targetPort": "web"}]},
            }))
            .unwrap(),
        );
        for (i, endpoint) in endpoints.iter().enumerate() {
            self.slices.push(
                serde_json::from_value(json!({
                    "metadata": {"namespace": "default", "name": format!("{name}-{i}"),
                                 "labels": {"kubernetes.io/service-name": name}},
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": endpoint.port(), "protocol": "TCP"}],
                    "endpoints": [{"addresses": [endpoint.ip().to_string()],
                                   "conditions": {"ready": true}}],
                }))
                .unwrap(),
            );
        }
        self
    }

    fn ingress(&mut self, name: &str, spec: Value) -> &mut Self {
        let mut spec = spec;
        spec["ingressClassName"] = json!("skiff");
        self.ingresses.push(
            serde_json::from_value(json!({
                "metadata": {"namespace": "default", "name": name,
                             "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": spec,
            }))
            .unwrap(),
        );
        self
    }

    fn tls_secret(&mut self, name: &str, cert_pem: &str, key_pem: &str) -> &mut Self {
        let mut data = BTreeMap::new();
        data.insert("tls.crt".into(), ByteString(cert_pem.as_bytes().to_vec()));
        data.insert("tls.key".into(), ByteString(key_pem.as_bytes().to_vec()));
        let mut secret = Secret {
            type_: Some("kubernetes.io/tls".into()),
            data: Some(data),
            ..Secret::default()
        };
        secret.metadata.namespace = Some("default".into());
        secret.metadata.name = Some(name.into());
        self.secrets.push(secret);
        self
    }

    fn table(&self) -> RouteTable {
        let table = build(&IngressInput {
            ingresses: &self.ingresses,
            classes: &[],
            services: &self.services,
            slices: &self.slices,
            secrets: &self.secrets,
            class_name: "skiff",
        });
        assert!(table.warnings().is_empty(), "{:?}", table.warnings());
        table
    }
}

fn path(path: &str, kind: &str, service: &str) -> Value {
    json!({"path": path, "pathType": kind,
           "backend": {"service": {"name": service, "port": {"name": "http"}}}})
}

fn rule(host: &str, paths: Vec<Value>) -> Value {
    json!({"host": host, "http": {"paths": paths}})
}

// ---------------------------------------------------------------------------------------------
// Client

/// The result of one curl call.
#[derive(Debug)]
struct Reply {
    /// curl's exit code (0 on success, 60 for an untrusted certificate).
    exit: i32,
    status: u16,
    http_version: String,
    body: String,
}

/// Runs curl with `args` (`-sS`, the status and HTTP version appended to the output).
async fn curl(args: &[&str]) -> Reply {
    let output = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(args)
        .output()
        .await
        .expect("curl (Debian package curl) is needed");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, trailer) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let mut trailer = trailer.split(' ');
    Reply {
        exit: output.status.code().unwrap_or(-1),
        status: trailer.next().unwrap_or("0").parse().unwrap_or(0),
        http_version: trailer.next().unwrap_or("").to_string(),
        body: body.trim_end_matches('\n').to_string(),
    }
}

/// GET `http://host:port/path` through the proxy's HTTP listener.
async fn get(proxy: &IngressProxy, host: &str, path: &str) -> Reply {
    let port = proxy.http_addr().port();
    let resolve = format!("{host}:{port}:127.0.0.1");
    let url = format!("http://{host}:{port}{path}");
    curl(&["--resolve", &resolve, &url]).await
}

/// The name of the backend that answered (`backend=NAME ...`).
fn backend_of(reply: &Reply) -> &str {
    reply
        .body
        .strip_prefix("backend=")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or("")
}

async fn start(table: RouteTable) -> (Arc<IngressProxy>, JoinHandle<()>) {
    let proxy = IngressProxy::bind(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    proxy.update(table);
    let proxy = Arc::new(proxy);
    let running = proxy.clone();
    let task = tokio::spawn(async move { running.run().await });
    (proxy, task)
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn routes_by_host_and_path_keeping_host_and_setting_forwarded_headers() {
    let a = backend("a").await;
    let b = backend("b").await;
    let mut cluster = Cluster::default();
    cluster
        .service("svc-a", &[a.addr])
        .service("svc-b", &[b.addr])
        .ingress(
            "web",
            json!({"rules": [
                rule("a.test", vec![path("/", "Prefix", "svc-a")]),
                rule("b.test", vec![path("/b", "Prefix", "svc-b"),
                                    path("/exact", "Exact", "svc-a")]),
                rule("*.wild.test", vec![path("/", "Prefix", "svc-b")]),
            ]}),
        );
    let (proxy, _task) = start(cluster.table()).await;
    let port = proxy.http_addr().port();

    let reply = get(&proxy, "a.test", "/some/path?q=1").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.body,
        format!(
            "backend=a host=a.test:{port} xff=127.0.0.1 proto=http xfhost=a.test:{port} \
             path=/some/path?q=1"
        )
    );
    let reply = get(&proxy, "b.test", "/b/c").await;
    assert_eq!(backend_of(&reply), "b", "{reply:?}");
    assert_eq!(backend_of(&get(&proxy, "b.test", "/exact").await), "a");
    assert_eq!(get(&proxy, "b.test", "/exact/x").await.status, 404);
    assert_eq!(get(&proxy, "b.test", "/bc").await.status, 404);
    assert_eq!(backend_of(&get(&proxy, "x.wild.test", "/").await), "b");
    let reply = get(&proxy, "y.x.wild.test", "/").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (404, "404 page not found")
    );

    // An earlier X-Forwarded-For is kept and the client appended.
    let resolve = format!("a.test:{port}:127.0.0.1");
    let url = format!("http://a.test:{port}/");
    let reply = curl(&[
        "--resolve",
        &resolve,
        "-H",
        "X-Forwarded-For: 192.0.2.7",
        &url,
    ])
    .await;
    assert!(
        reply.body.contains("xff=192.0.2.7, 127.0.0.1 "),
        "{reply:?}"
    );
}

#[tokio::test]
async fn default_backend_404_and_503_without_endpoints() {
    let a = backend("a").await;
    let fallback = backend("fallback").await;
    let mut cluster = Cluster::default();
    cluster
        .service("svc-a", &[a.addr])
        .service("empty", &[])
        .ingress(
            "web",
            json!({"rules": [rule("a.test", vec![path("/", "Prefix", "svc-a"),
                                                  path("/down", "Prefix", "empty")])]}),
        );
    let (proxy, _task) = start(cluster.table()).await;
    let reply = get(&proxy, "other.test", "/").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (404, "404 page not found")
    );
    let reply = get(&proxy, "a.test", "/down/x").await;
    assert_eq!(reply.status, 503, "{reply:?}");

    cluster.service("svc-fallback", &[fallback.addr]).ingress(
        "fallback",
        json!({"defaultBackend": {"service": {"name": "svc-fallback", "port": {"number": 80}}}}),
    );
    proxy.update(cluster.table());
    assert_eq!(
        backend_of(&get(&proxy, "other.test", "/").await),
        "fallback"
    );
    assert_eq!(backend_of(&get(&proxy, "a.test", "/").await), "a");
    // A rule whose service has no endpoints still answers 503, not the default backend.
    assert_eq!(get(&proxy, "a.test", "/down").await.status, 503);
}

/// A CA and a leaf certificate for `host` signed by it: (CA PEM, leaf PEM, leaf key PEM).
fn issue(host: &str) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("CA for {host}"));
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![host.to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

#[tokio::test]
async fn tls_sni_chooses_the_certificate_of_the_host() {
    let a = backend("a").await;
    let b = backend("b").await;
    let (ca_a, cert_a, key_a) = issue("a.test");
    let (ca_b, cert_b, key_b) = issue("*.b.test");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, pem).unwrap();
        file.to_str().unwrap().to_string()
    };
    let ca_a = write("ca-a.pem", &ca_a);
    let ca_b = write("ca-b.pem", &ca_b);
    let mut cluster = Cluster::default();
    cluster
        .service("svc-a", &[a.addr])
        .service("svc-b", &[b.addr])
        .tls_secret("cert-a", &cert_a, &key_a)
        .tls_secret("cert-b", &cert_b, &key_b)
        .ingress(
            "a",
            json!({"tls": [{"hosts": ["a.test"], "secretName": "cert-a"}],
                   "rules": [rule("a.test", vec![path("/", "Prefix", "svc-a")])]}),
        )
        .ingress(
            "b",
            json!({"tls": [{"hosts": ["*.b.test"], "secretName": "cert-b"}],
                   "rules": [rule("*.b.test", vec![path("/", "Prefix", "svc-b")])],
                   "defaultBackend": {"service": {"name": "svc-a", "port": {"number": 80}}}}),
        );
    let (proxy, _task) = start(cluster.table()).await;
    let port = proxy.https_addr().port();
    let https = |host: &str, ca: &str, extra: &[&str]| {
        let resolve = format!("{host}:{port}:127.0.0.1");
        let url = format!("https://{host}:{port}/tls");
        let mut args: Vec<String> = vec!["--resolve".into(), resolve, "--cacert".into(), ca.into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(url);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            curl(&args).await
        }
    };

    let reply = https("a.test", &ca_a, &["--http1.1"]).await;
    assert_eq!((reply.exit, reply.status), (0, 200), "{reply:?}");
    assert_eq!(
        reply.body,
        format!(
            "backend=a host=a.test:{port} xff=127.0.0.1 proto=https xfhost=a.test:{port} path=/tls"
        )
    );
    assert_eq!(reply.http_version, "1.1");
    let reply = https("x.b.test", &ca_b, &[]).await;
    assert_eq!((reply.exit, backend_of(&reply)), (0, "b"), "{reply:?}");
    // HTTP/2 through ALPN (curl prefers it over TLS).
    assert_eq!(reply.http_version, "2", "{reply:?}");
    assert!(
        reply.body.contains(&format!("host=x.b.test:{port} ")),
        "{reply:?}"
    );
    // The wrong CA for the name: curl rejects the certificate (exit 60).
    assert_eq!(https("x.b.test", &ca_a, &[]).await.exit, 60);
    assert_eq!(https("a.test", &ca_b, &[]).await.exit, 60);

    // An unknown name gets the self-signed default certificate (and the default backend).
    let default_ca = write("default.pem", &proxy.default_certificate().cert_pem);
    let reply = https("skiff-ingress-default", &default_ca, &[]).await;
    assert_eq!((reply.exit, backend_of(&reply)), (0, "a"), "{reply:?}");
    assert_eq!(https("unknown.test", &ca_a, &[]).await.exit, 60);

    // Certificates follow table updates.
    proxy.update(RouteTable::empty());
    assert_eq!(https("a.test", &ca_a, &[]).await.exit, 60);
    let reply = https("skiff-ingress-default", &default_ca, &[]).await;
    assert_eq!((reply.exit, reply.status), (0, 404), "{reply:?}");
    drop(dir);
}

/// Sends an `Upgrade` request over a raw connection and returns the connection after the
/// response head, and the head.
async fn upgrade(addr: SocketAddr, host: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.unwrap();
        assert_eq!(n, 1, "connection closed in the response head: {head:?}");
        head.push(byte[0]);
    }
    (stream, String::from_utf8(head).unwrap())
}

#[tokio::test]
async fn upgrade_requests_are_spliced_to_the_backend() {
    let a = backend("a").await;
    let mut cluster = Cluster::default();
    cluster.service("svc-a", &[a.addr]).ingress(
        "ws",
        json!({"rules": [rule("ws.test", vec![path("/", "Prefix", "svc-a")])]}),
    );
    let (proxy, task) = start(cluster.table()).await;

    let (mut stream, head) = upgrade(proxy.http_addr(), "ws.test").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for message in ["hello", "second message"] {
        stream.write_all(message.as_bytes()).await.unwrap();
        let expected = format!("a:{message}");
        let mut got = vec![0u8; expected.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), expected);
    }

    // Stopping the proxy ends spliced connections too.
    task.abort();
    let _ = task.await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the spliced connection stays open after the proxy stopped"
    );
}

#[tokio::test]
async fn spreads_over_endpoints_retries_refused_ones_and_answers_502() {
    let a = backend("a").await;
    let b = backend("b").await;
    let dead = dead_endpoint().await;
    let dead2 = dead_endpoint().await;
    let mut cluster = Cluster::default();
    cluster
        .service("both", &[a.addr, b.addr])
        .service("half", &[dead, a.addr])
        .service("none", &[dead, dead2])
        .ingress(
            "lb",
            json!({"rules": [rule("lb.test", vec![
                path("/both", "Prefix", "both"),
                path("/half", "Prefix", "half"),
                path("/none", "Prefix", "none"),
            ])]}),
        );
    let (proxy, _task) = start(cluster.table()).await;

    let mut seen = BTreeMap::new();
    for _ in 0..10 {
        let reply = get(&proxy, "lb.test", "/both").await;
        *seen.entry(backend_of(&reply).to_string()).or_insert(0) += 1;
    }
    assert_eq!(seen, BTreeMap::from([("a".into(), 5), ("b".into(), 5)]));

    for _ in 0..6 {
        let reply = get(&proxy, "lb.test", "/half").await;
        assert_eq!((reply.status, backend_of(&reply)), (200, "a"), "{reply:?}");
    }
    let reply = get(&proxy, "lb.test", "/none").await;
    assert_eq!(reply.status, 502, "{reply:?}");
}

#[tokio::test]
async fn live_updates_switch_routes() {
    let a = backend("a").await;
    let b = backend("b").await;
    let mut first = Cluster::default();
    first.service("svc-a", &[a.addr]).ingress(
        "web",
        json!({"rules": [rule("live.test", vec![path("/", "Prefix", "svc-a")])]}),
    );
    let (proxy, _task) = start(first.table()).await;
    let handle = proxy.handle();
    assert_eq!(backend_of(&get(&proxy, "live.test", "/").await), "a");

    let mut second = Cluster::default();
    second.service("svc-b", &[b.addr]).ingress(
        "web",
        json!({"rules": [rule("live.test", vec![path("/", "Prefix", "svc-b")])]}),
    );
    handle.update(second.table());
    assert_eq!(backend_of(&get(&proxy, "live.test", "/").await), "b");
    assert!(handle.table().route("live.test", "/").is_some());

    handle.update(RouteTable::empty());
    assert_eq!(get(&proxy, "live.test", "/").await.status, 404);
}

#[tokio::test]
async fn streams_bodies_and_reuses_backend_connections() {
    let a = backend("a").await;
    let mut cluster = Cluster::default();
    cluster.service("svc-a", &[a.addr]).ingress(
        "web",
        json!({"rules": [rule("s.test", vec![path("/", "Prefix", "svc-a")])]}),
    );
    let (proxy, _task) = start(cluster.table()).await;

    for _ in 0..5 {
        assert_eq!(get(&proxy, "s.test", "/").await.status, 200);
    }
    assert_eq!(
        a.connections.load(Ordering::SeqCst),
        1,
        "sequential requests share one backend connection"
    );

    // 4 MiB up and back, chunked both ways through the proxy.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    let output = dir.path().join("output");
    let data: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&input, &data).unwrap();
    let port = proxy.http_addr().port();
    let resolve = format!("s.test:{port}:127.0.0.1");
    let url = format!("http://s.test:{port}/upload");
    let upload = format!("@{}", input.display());
    let reply = curl(&[
        "--resolve",
        &resolve,
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &upload,
        "-o",
        output.to_str().unwrap(),
        &url,
    ])
    .await;
    assert_eq!((reply.exit, reply.status), (0, 200), "{reply:?}");
    assert!(
        std::fs::read(&output).unwrap() == data,
        "the echoed body differs"
    );
    assert!(Path::new(&output).exists());
}

/// A raw backend answering each connection's first request with `200 ok` (keep-alive implied by
/// HTTP/1.1) and then closing it: a pooled connection to it is always stale.
async fn closing_backend() -> (SocketAddr, Arc<AtomicUsize>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let task = tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    (addr, connections, task)
}

#[tokio::test]
async fn stale_pooled_connections_are_replaced() {
    let (addr, connections, task) = closing_backend().await;
    let mut cluster = Cluster::default();
    cluster.service("closing", &[addr]).ingress(
        "c",
        json!({"rules": [rule("c.test", vec![path("/", "Prefix", "closing")])]}),
    );
    let (proxy, _task) = start(cluster.table()).await;
    for i in 0..10 {
        let reply = get(&proxy, "c.test", "/").await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "ok"),
            "request {i}"
        );
    }
    assert!(connections.load(Ordering::SeqCst) >= 10);
    task.abort();
}
