//! The node API's streaming endpoints, as the kubelet serves them to the API server:
//!
//! - `/exec/{namespace}/{pod}/{container}?command=..&command=..&stdin=1&stdout=1&stderr=1&tty=1`
//! - `/attach/{namespace}/{pod}/{container}?stdin=..&stdout=..&stderr=..&tty=..`
//! - `/portForward/{namespace}/{pod}`
//!
//! each over either protocol kubectl speaks: WebSocket (`v5.channel.k8s.io`,
//! `v4.channel.k8s.io` for exec and attach; `SPDY/3.1+portforward.k8s.io`, SPDY tunnelled in
//! WebSocket messages, for port-forward) or SPDY/3.1 (`Upgrade: SPDY/3.1` with
//! `X-Stream-Protocol-Version: v4.channel.k8s.io` or `portforward.k8s.io`). An exec runs
//! `skiff exec` as a child ([`exec`]); attach connects to the container monitor's attach
//! socket ([`exec::attach`]: stdin for containers with `stdin`, resizes for `tty` ones, the
//! live output, the end when the container exits), or follows the log of a container started
//! before monitors had one; port-forward connects to `127.0.0.1:PORT` inside the pod's
//! network namespace ([`portforward`]).

pub mod exec;
pub mod portforward;
pub mod spdy;
pub mod websocket;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use skiff_engine::{Container, Status};
use tokio::sync::mpsc;

use crate::Context;
use crate::logs::{self, LogOptions};
use crate::runtime::{self, LABEL_POD_NAME, LABEL_POD_NAMESPACE, SANDBOX};
use exec::{ExecSpec, Output, SessionIo};
use websocket::Streams;

/// The SPDY channel protocol served (the one kubectl's SPDY executor prefers).
const SPDY_CHANNEL_PROTOCOL: &str = "v4.channel.k8s.io";
/// The SPDY port-forward protocol.
const SPDY_PORTFORWARD_PROTOCOL: &str = "portforward.k8s.io";
/// How long a SPDY client has to open the streams it asked for.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a streaming request is refused (the message is what kubectl prints).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// No such pod or container running on this node.
    #[error("{0}")]
    NotFound(String),
    /// A malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// No common protocol.
    #[error("unable to upgrade: {0}")]
    Protocol(String),
    /// The engine could not be read.
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for StreamError {
    fn into_response(self) -> Response {
        let code = match &self {
            StreamError::NotFound(_) => StatusCode::NOT_FOUND,
            StreamError::BadRequest(_) => StatusCode::BAD_REQUEST,
            StreamError::Protocol(_) => StatusCode::FORBIDDEN,
            StreamError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (code, self.to_string()).into_response()
    }
}

/// What an exec or attach asks for, from the query string.
#[derive(Debug, Clone, Default)]
struct StreamQuery {
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

fn truthy(value: &str) -> bool {
    matches!(value, "1" | "true" | "True" | "TRUE")
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(raw: Option<&str>) -> StreamQuery {
    let mut q = StreamQuery::default();
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode(v);
        match decode(k).as_str() {
            "command" => q.command.push(value),
            "input" | "stdin" => q.stdin = truthy(&value),
            "output" | "stdout" => q.stdout = truthy(&value),
            "error" | "stderr" => q.stderr = truthy(&value),
            "tty" => q.tty = truthy(&value),
            _ => {}
        }
    }
    if q.tty {
        // A terminal merges stderr into its output.
        q.stderr = false;
    }
    q
}

/// The containers of the newest pod `namespace/name` on this node.
fn pod_containers(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Vec<Container>, StreamError> {
    let all = ctx
        .engine
        .list()
        .map_err(|e| StreamError::Internal(e.to_string()))?;
    let mine: Vec<Container> = all
        .into_iter()
        .filter(|c| {
            c.config.labels.get(LABEL_POD_NAMESPACE).map(String::as_str) == Some(namespace)
                && c.config.labels.get(LABEL_POD_NAME).map(String::as_str) == Some(name)
        })
        .collect();
    let newest = mine
        .iter()
        .max_by(|a, b| a.config.created.cmp(&b.config.created))
        .and_then(|c| runtime::pod_uid(c).map(str::to_string))
        .ok_or_else(|| {
            StreamError::NotFound(format!(
                "pod {namespace}/{name} not found on node {}",
                ctx.config.node_name
            ))
        })?;
    Ok(mine
        .into_iter()
        .filter(|c| runtime::pod_uid(c) == Some(newest.as_str()))
        .collect())
}

/// The running engine container of `container` in pod `namespace/pod`.
async fn running_container(
    ctx: &Arc<Context>,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<Container, StreamError> {
    let (ctx, ns, p, c) = (
        Arc::clone(ctx),
        namespace.to_string(),
        pod.to_string(),
        container.to_string(),
    );
    tokio::task::spawn_blocking(move || {
        let containers = pod_containers(&ctx, &ns, &p)?;
        let (latest, _) = runtime::latest(&containers, &c);
        latest
            .filter(|found| found.status() == Status::Running)
            .cloned()
            .ok_or_else(|| StreamError::NotFound(format!("container not found (\"{c}\")")))
    })
    .await
    .map_err(|e| StreamError::Internal(e.to_string()))?
}

/// The network namespace of pod `namespace/pod` (its sandbox's).
async fn pod_netns(ctx: &Arc<Context>, namespace: &str, pod: &str) -> Result<String, StreamError> {
    let sandbox = running_container(ctx, namespace, pod, SANDBOX)
        .await
        .map_err(|_| {
            StreamError::NotFound(format!(
                "pod {namespace}/{pod} has no running sandbox on this node"
            ))
        })?;
    Ok(format!("/proc/{}/ns/net", sandbox.state.pid))
}

fn is_upgrade_to(headers: &HeaderMap, protocol: &str) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case(protocol))
        })
}

/// The SPDY sub-protocol the client offers that is `wanted`, if any.
fn offered(headers: &HeaderMap, wanted: &str) -> bool {
    headers
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == wanted)
}

/// Answers a SPDY upgrade with 101 and runs `then` on the upgraded connection.
fn spdy_upgrade<F, Fut>(request: &mut Request, protocol: &'static str, then: F) -> Response
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return StreamError::BadRequest("the connection cannot be upgraded".into()).into_response();
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => then(TokioIo::new(upgraded)).await,
            Err(err) => tracing::debug!(error = %err, "SPDY upgrade failed"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    headers.insert(
        "x-stream-protocol-version",
        HeaderValue::from_static(protocol),
    );
    response
}

/// The node API's streaming routes.
pub fn routes(router: axum::Router<Arc<Context>>) -> axum::Router<Arc<Context>> {
    use axum::routing::any;
    router
        .route("/exec/{namespace}/{pod}/{container}", any(exec_handler))
        .route("/attach/{namespace}/{pod}/{container}", any(attach_handler))
        .route("/portForward/{namespace}/{pod}", any(portforward_handler))
}

/// What a channel session runs.
enum Action {
    Exec(ExecSpec),
    Attach {
        ctx: Arc<Context>,
        namespace: String,
        pod: String,
        container: String,
    },
    /// Attach through the container monitor's socket.
    AttachSocket {
        socket: std::path::PathBuf,
        stdin: bool,
    },
}

impl Action {
    /// Runs the session; returns the final status for the error channel.
    async fn run(self, io: SessionIo) -> serde_json::Value {
        match self {
            Action::Exec(spec) => {
                let command = spec.command.clone();
                match exec::run(spec, io).await {
                    Ok(code) => exec::exit_status(&command, code),
                    Err(err) => exec::error_status(&err.to_string()),
                }
            }
            Action::AttachSocket { socket, stdin } => match exec::attach(socket, stdin, io).await {
                // The kubelet's attach ends with success whatever the exit code: kubectl
                // reads that from the pod's status.
                Ok(_) => exec::exit_status(&[], 0),
                Err(err) => exec::error_status(&err.to_string()),
            },
            Action::Attach {
                ctx,
                namespace,
                pod,
                container,
            } => {
                let options = LogOptions {
                    follow: true,
                    tail_lines: Some(0),
                    ..LogOptions::default()
                };
                // Stdin, when sent, goes nowhere: containers run without one.
                let drain = io
                    .stdin
                    .map(|mut rx| tokio::spawn(async move { while rx.recv().await.is_some() {} }));
                match logs::stream(ctx, namespace, pod, container, options).await {
                    Ok(mut rx) => {
                        while let Some(Ok(chunk)) = rx.recv().await {
                            if io.output.send((Output::Stdout, chunk)).await.is_err() {
                                break;
                            }
                        }
                    }
                    Err(err) => return exec::error_status(&err.to_string()),
                }
                if let Some(d) = drain {
                    d.abort();
                }
                exec::exit_status(&[], 0)
            }
        }
    }
}

async fn exec_handler(
    State(ctx): State<Arc<Context>>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    request: Request,
) -> Response {
    let query = parse_query(request.uri().query());
    if query.command.is_empty() {
        return StreamError::BadRequest("you must specify at least 1 command".into())
            .into_response();
    }
    channel_session(ctx, namespace, pod, container, query, request, true).await
}

async fn attach_handler(
    State(ctx): State<Arc<Context>>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    request: Request,
) -> Response {
    let query = parse_query(request.uri().query());
    channel_session(ctx, namespace, pod, container, query, request, false).await
}

async fn channel_session(
    ctx: Arc<Context>,
    namespace: String,
    pod: String,
    container: String,
    query: StreamQuery,
    mut request: Request,
    is_exec: bool,
) -> Response {
    if !query.stdin && !query.stdout && !query.stderr {
        return StreamError::BadRequest(
            "you must specify at least 1 of stdin, stdout, stderr".into(),
        )
        .into_response();
    }
    let found = match running_container(&ctx, &namespace, &pod, &container).await {
        Ok(found) => found,
        Err(err) => return err.into_response(),
    };
    if !is_exec && query.tty && !found.config.tty {
        return StreamError::BadRequest(format!(
            "container {container} has no terminal to attach to: it runs without tty"
        ))
        .into_response();
    }
    let attach_socket = ctx.engine.dir(found.id()).attach_socket();
    let namespace_pod = format!("{namespace}/{pod}");
    let kind = if is_exec { "exec" } else { "attach" };
    let action = if is_exec {
        Action::Exec(ExecSpec {
            program: ctx.config.program.clone(),
            data_dir: ctx.config.data_dir.clone(),
            container_id: found.id().to_string(),
            command: query.command.clone(),
            stdin: query.stdin,
            tty: query.tty,
        })
    } else if attach_socket.exists() {
        Action::AttachSocket {
            socket: attach_socket,
            stdin: query.stdin && found.config.stdin,
        }
    } else {
        Action::Attach {
            ctx: Arc::clone(&ctx),
            namespace,
            pod,
            container: container.clone(),
        }
    };
    let streams = Streams {
        stdin: query.stdin,
        stdout: query.stdout,
        stderr: query.stderr,
        tty: query.tty,
    };
    if is_upgrade_to(request.headers(), "websocket") {
        let (mut parts, _) = request.into_parts();
        let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &ctx).await {
            Ok(ws) => ws,
            Err(rejection) => return rejection.into_response(),
        };
        let Some(protocol) = websocket::CHANNEL_PROTOCOLS.iter().find(|p| {
            ws.requested_protocols()
                .any(|r| r.to_str().is_ok_and(|r| r.trim() == **p))
        }) else {
            return StreamError::Protocol(format!(
                "none of the offered protocols is supported: this server speaks {}",
                websocket::CHANNEL_PROTOCOLS.join(", ")
            ))
            .into_response();
        };
        tracing::info!(%namespace_pod, container = %container, protocol, transport = "websocket", kind, "streaming session");
        return ws
            .protocols([*protocol])
            .on_upgrade(move |socket| async move {
                websocket::serve_channels(socket, streams, move |io| action.run(io)).await;
            });
    }
    if is_upgrade_to(request.headers(), "SPDY/3.1") {
        if !offered(request.headers(), SPDY_CHANNEL_PROTOCOL) {
            return StreamError::Protocol(format!(
                "unable to negotiate protocol: the client does not speak {SPDY_CHANNEL_PROTOCOL}"
            ))
            .into_response();
        }
        tracing::info!(%namespace_pod, container = %container, protocol = SPDY_CHANNEL_PROTOCOL, transport = "spdy", kind, "streaming session");
        return spdy_upgrade(&mut request, SPDY_CHANNEL_PROTOCOL, move |io| {
            spdy_channels(io, streams, action)
        });
    }
    StreamError::BadRequest("Upgrade request required".into()).into_response()
}

/// Runs a channel session over SPDY: the client opens one stream per channel (header
/// `streamtype`: error, stdin, stdout, stderr, resize).
async fn spdy_channels(io: TokioIo<hyper::upgrade::Upgraded>, streams: Streams, action: Action) {
    let (mut incoming, writer) = spdy::serve(io);
    let mut error = None;
    let mut stdin = None;
    let mut stdout = None;
    let mut stderr = None;
    let mut resize = None;
    let complete = |e: &Option<_>, i: &Option<_>, o: &Option<_>, r: &Option<_>, z: &Option<_>| {
        e.is_some()
            && (i.is_some() || !streams.stdin)
            && (o.is_some() || !streams.stdout)
            && (r.is_some() || !streams.stderr)
            && (z.is_some() || !streams.tty)
    };
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while !complete(&error, &stdin, &stdout, &stderr, &resize) {
        let next = tokio::time::timeout_at(deadline, incoming.recv()).await;
        let Ok(Some(stream)) = next else {
            tracing::debug!("SPDY exec: the client did not open its streams");
            return;
        };
        let slot = match spdy::header(&stream.headers, "streamtype") {
            Some("error") => &mut error,
            Some("stdin") => &mut stdin,
            Some("stdout") => &mut stdout,
            Some("stderr") => &mut stderr,
            Some("resize") => &mut resize,
            _ => {
                let _ = writer.reset(stream.id).await;
                continue;
            }
        };
        *slot = Some(stream);
    }
    let Some(error) = error else { return };
    let (resize_tx, resize_rx) = mpsc::channel(4);
    let resizer = resize.map(|mut stream| {
        tokio::spawn(async move {
            let mut pending = Vec::new();
            while let Some(chunk) = stream.data.recv().await {
                pending.extend_from_slice(&chunk);
                let mut de =
                    serde_json::Deserializer::from_slice(&pending).into_iter::<exec::TermSize>();
                let mut used = 0;
                while let Some(Ok(size)) = de.next() {
                    used = de.byte_offset();
                    let _ = resize_tx.send(size).await;
                }
                pending.drain(..used);
            }
        })
    });
    let (out_tx, mut out_rx) = mpsc::channel::<(Output, Bytes)>(16);
    let session_io = SessionIo {
        stdin: stdin.map(|s| s.data),
        resize: streams.tty.then_some(resize_rx),
        output: out_tx,
    };
    let stdout_id = stdout.as_ref().map(|s| s.id);
    let stderr_id = stderr.as_ref().map(|s| s.id);
    let mut done = tokio::spawn(action.run(session_io));
    let mut output_open = true;
    let status = loop {
        tokio::select! {
            out = out_rx.recv(), if output_open => {
                let Some((which, chunk)) = out else {
                    output_open = false;
                    continue;
                };
                let id = match which {
                    Output::Stdout => stdout_id.or(stderr_id),
                    Output::Stderr => stderr_id.or(stdout_id),
                };
                if let Some(id) = id
                    && writer.data(id, chunk).await.is_err()
                {
                    done.abort();
                    return;
                }
            }
            result = &mut done => {
                break result.unwrap_or_else(|e| exec::error_status(&e.to_string()));
            }
            next = incoming.recv() => {
                if next.is_none() {
                    // The client is gone: end the session (its child is killed on drop).
                    done.abort();
                    return;
                }
            }
        }
    };
    while let Ok((which, chunk)) = out_rx.try_recv() {
        let id = match which {
            Output::Stdout => stdout_id.or(stderr_id),
            Output::Stderr => stderr_id.or(stdout_id),
        };
        if let Some(id) = id {
            let _ = writer.data(id, chunk).await;
        }
    }
    for id in [stdout_id, stderr_id].into_iter().flatten() {
        let _ = writer.finish(id).await;
    }
    let _ = writer
        .data(error.id, Bytes::from(status.to_string().into_bytes()))
        .await;
    let _ = writer.finish(error.id).await;
    if let Some(r) = resizer {
        r.abort();
    }
    // The client closes the connection once it read everything.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while incoming.recv().await.is_some() {}
    })
    .await;
}

async fn portforward_handler(
    State(ctx): State<Arc<Context>>,
    UrlPath((namespace, pod)): UrlPath<(String, String)>,
    mut request: Request,
) -> Response {
    let netns = match pod_netns(&ctx, &namespace, &pod).await {
        Ok(netns) => netns,
        Err(err) => return err.into_response(),
    };
    let target = portforward::Target {
        netns,
        pod: format!("{namespace}/{pod}"),
    };
    if is_upgrade_to(request.headers(), "websocket") {
        let (mut parts, _) = request.into_parts();
        let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &ctx).await {
            Ok(ws) => ws,
            Err(rejection) => return rejection.into_response(),
        };
        if !ws.requested_protocols().any(|r| {
            r.to_str()
                .is_ok_and(|r| r.trim() == websocket::TUNNEL_PROTOCOL)
        }) {
            return StreamError::Protocol(format!(
                "port-forward over WebSocket needs the {} protocol",
                websocket::TUNNEL_PROTOCOL
            ))
            .into_response();
        }
        tracing::info!(pod = %target.pod, protocol = websocket::TUNNEL_PROTOCOL, transport = "websocket", "port-forward session");
        return ws
            .protocols([websocket::TUNNEL_PROTOCOL])
            .on_upgrade(move |socket| async move {
                portforward::serve(websocket::tunnel(socket), target).await;
            });
    }
    if is_upgrade_to(request.headers(), "SPDY/3.1") {
        if !offered(request.headers(), SPDY_PORTFORWARD_PROTOCOL) {
            return StreamError::Protocol(format!(
                "unable to negotiate protocol: the client does not speak {SPDY_PORTFORWARD_PROTOCOL}"
            ))
            .into_response();
        }
        tracing::info!(pod = %target.pod, protocol = SPDY_PORTFORWARD_PROTOCOL, transport = "spdy", "port-forward session");
        return spdy_upgrade(&mut request, SPDY_PORTFORWARD_PROTOCOL, move |io| {
            portforward::serve(io, target)
        });
    }
    StreamError::BadRequest("Upgrade request required".into()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_like_the_kubelet() {
        let q = parse_query(Some(
            "command=sh&command=-c&command=echo%20a+b&stdin=1&stdout=true&stderr=1&tty=1",
        ));
        assert_eq!(q.command, vec!["sh", "-c", "echo a b"]);
        assert!(q.stdin && q.stdout && q.tty);
        assert!(!q.stderr, "a tty has no separate stderr");
        let q = parse_query(Some("command=ls&output=1&error=1"));
        assert!(q.stdout && q.stderr && !q.stdin);
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%2Fa%zz"), "/a%zz");
    }

    #[test]
    fn upgrades_are_recognised() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        headers.append(
            "x-stream-protocol-version",
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        headers.append(
            "x-stream-protocol-version",
            HeaderValue::from_static("v3.channel.k8s.io"),
        );
        assert!(is_upgrade_to(&headers, "spdy/3.1"));
        assert!(!is_upgrade_to(&headers, "websocket"));
        assert!(offered(&headers, "v4.channel.k8s.io"));
        assert!(!offered(&headers, "portforward.k8s.io"));
    }
}
