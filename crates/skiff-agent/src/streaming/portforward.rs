//! Port-forward (`portforward.k8s.io` over SPDY, directly or tunnelled in a WebSocket): for
//! every local connection the client opens a pair of streams with the same `requestID` and
//! `port` headers, `streamType` `error` and `data`. The agent connects to `127.0.0.1:PORT`
//! inside the pod's network namespace (a socket made by a thread that joined it) and copies
//! bytes both ways on the data stream; a failure is written on the error stream.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::spdy::{self, IncomingStream};

/// How long connecting inside the pod may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why one forwarded connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The streams' headers are wrong.
    #[error("{0}")]
    BadStream(String),
    /// Nothing listens on the port, or the namespace cannot be joined.
    #[error("{0}")]
    Dial(String),
}

/// Where the forwarded connections go.
#[derive(Debug, Clone)]
pub struct Target {
    /// The pod's network namespace file (`/proc/PID/ns/net`).
    pub netns: String,
    /// `namespace/name`, for messages.
    pub pod: String,
}

#[derive(Default)]
struct Pair {
    error: Option<IncomingStream>,
    data: Option<IncomingStream>,
}

/// Serves one port-forward connection until the client closes it.
pub async fn serve<T>(io: T, target: Target)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut incoming, _writer) = spdy::serve(io);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    while let Some(stream) = incoming.recv().await {
        let request = spdy::header(&stream.headers, "requestid")
            .unwrap_or_default()
            .to_string();
        let kind = spdy::header(&stream.headers, "streamtype").unwrap_or_default();
        let pair = pairs.entry(request.clone()).or_default();
        match kind {
            "error" => pair.error = Some(stream),
            "data" => pair.data = Some(stream),
            _ => {
                let _ = stream.writer.reset(stream.id).await;
                continue;
            }
        }
        if pair.error.is_some()
            && pair.data.is_some()
            && let Some(Pair {
                error: Some(error),
                data: Some(data),
            }) = pairs.remove(&request)
        {
            tokio::spawn(forward(error, data, target.clone()));
        }
    }
}

/// Dials `port` inside the pod's network namespace.
async fn dial(target: &Target, port: u16) -> Result<tokio::net::TcpStream, ForwardError> {
    let netns = target.netns.clone();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("skiff-portfwd".into())
        .spawn(move || {
            let _ = tx.send(crate::probes::dial_in_netns(&netns, addr, DIAL_TIMEOUT));
        })
        .map_err(|e| ForwardError::Dial(format!("cannot start a thread: {e}")))?;
    let stream = rx
        .await
        .map_err(|_| ForwardError::Dial("the dialing thread ended".into()))?
        .map_err(ForwardError::Dial)?;
    stream
        .set_nonblocking(true)
        .map_err(|e| ForwardError::Dial(e.to_string()))?;
    tokio::net::TcpStream::from_std(stream).map_err(|e| ForwardError::Dial(e.to_string()))
}

async fn forward(error: IncomingStream, mut data: IncomingStream, target: Target) {
    let writer = data.writer.clone();
    let port = spdy::header(&data.headers, "port")
        .unwrap_or_default()
        .to_string();
    let connected = match port.parse::<u16>() {
        Ok(p) if p > 0 => dial(&target, p).await,
        _ => Err(ForwardError::BadStream(format!(
            "invalid port header {port:?}"
        ))),
    };
    let tcp = match connected {
        Ok(tcp) => tcp,
        Err(err) => {
            let message = format!("error forwarding port {port} to pod {}: {err}", target.pod);
            tracing::debug!(%message, "port-forward failed");
            let _ = writer.data(error.id, Bytes::from(message)).await;
            let _ = writer.finish(error.id).await;
            let _ = writer.finish(data.id).await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let data_id = data.id;
    let (mut tcp_read, mut tcp_write) = tcp.into_split();
    let to_pod = tokio::spawn(async move {
        while let Some(chunk) = data.data.recv().await {
            if tcp_write.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = tcp_write.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match tcp_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if writer
                    .data(data_id, Bytes::copy_from_slice(&buf[..n]))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    let _ = writer.finish(data_id).await;
    let _ = writer.finish(error.id).await;
    // The client's side ends with its FIN (or the connection).
    let _ = tokio::time::timeout(Duration::from_secs(30), to_pod).await;
}
