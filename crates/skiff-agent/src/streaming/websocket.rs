//! The WebSocket side of streaming: the channel protocols `v4.channel.k8s.io` and
//! `v5.channel.k8s.io` for exec and attach (every binary message is one channel byte and
//! data: 0 stdin, 1 stdout, 2 stderr, 3 error (a `metav1.Status`), 4 resize (`{"Width",
//! "Height"}`); v5 adds 255, `[255, channel]` closing the client's side of a channel), and the
//! byte tunnel that `SPDY/3.1+portforward.k8s.io` runs SPDY through.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

use super::exec::{Output, SessionIo, TermSize};

/// The channel protocols served, preferred first.
pub const CHANNEL_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// The port-forward tunnel protocol (SPDY inside WebSocket binary messages).
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// How long after the session is set up output waits. client-go before 1.33 starts reading
/// the socket before it has registered its streams and drops what arrives for a stream not
/// yet registered (kubernetes/kubernetes#131189): a command that prints at once lost its
/// output and status, and kubectl 1.27-1.32 failed with "closed all streams".
const HEAD_START: std::time::Duration = std::time::Duration::from_millis(50);

/// Which streams the client asked for.
#[derive(Debug, Clone, Copy)]
pub struct Streams {
    /// stdin is attached.
    pub stdin: bool,
    /// stdout is wanted.
    pub stdout: bool,
    /// stderr is wanted (never with a tty).
    pub stderr: bool,
    /// A terminal (resize events come).
    pub tty: bool,
}

/// Runs a channel-protocol session over `socket`: `session` gets the wire side and returns
/// the final status, which is written on the error channel before a normal close.
pub async fn serve_channels<F, Fut>(socket: WebSocket, streams: Streams, session: F)
where
    F: FnOnce(SessionIo) -> Fut,
    Fut: std::future::Future<Output = serde_json::Value> + Send + 'static,
{
    let (mut sink, mut incoming) = socket.split();
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(16);
    let (resize_tx, resize_rx) = mpsc::channel::<TermSize>(4);
    let (out_tx, mut out_rx) = mpsc::channel::<(Output, Bytes)>(16);
    let io = SessionIo {
        stdin: streams.stdin.then_some(stdin_rx),
        resize: streams.tty.then_some(resize_rx),
        output: out_tx,
    };
    let mut done = tokio::spawn(session(io));
    let output_from = tokio::time::Instant::now() + HEAD_START;
    // An empty message on the lowest writable channel tells the client the session is set up.
    let first = if streams.stdout {
        STDOUT
    } else if streams.stderr {
        STDERR
    } else {
        ERROR
    };
    if sink
        .send(Message::Binary(Bytes::from(vec![first])))
        .await
        .is_err()
    {
        done.abort();
        return;
    }
    let mut reader = tokio::spawn(async move {
        let mut stdin_tx = Some(stdin_tx);
        while let Some(Ok(message)) = incoming.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&channel, payload)) = data.split_first() else {
                continue;
            };
            match channel {
                STDIN => {
                    if let Some(tx) = &stdin_tx
                        && !payload.is_empty()
                        && tx.send(data.slice(1..)).await.is_err()
                    {
                        stdin_tx = None;
                    }
                }
                RESIZE => {
                    if let Ok(size) = serde_json::from_slice::<TermSize>(payload) {
                        let _ = resize_tx.send(size).await;
                    }
                }
                CLOSE if payload.first() == Some(&STDIN) => stdin_tx = None,
                _ => {}
            }
        }
    });
    let mut output_open = true;
    let status = loop {
        tokio::select! {
            out = out_rx.recv(), if output_open => {
                let Some((which, chunk)) = out else {
                    output_open = false;
                    continue;
                };
                tokio::time::sleep_until(output_from).await;
                let channel = match which {
                    Output::Stdout => STDOUT,
                    Output::Stderr if streams.stderr => STDERR,
                    Output::Stderr => STDOUT,
                };
                let mut message = Vec::with_capacity(chunk.len() + 1);
                message.push(channel);
                message.extend_from_slice(&chunk);
                if sink.send(Message::Binary(Bytes::from(message))).await.is_err() {
                    done.abort();
                    reader.abort();
                    return;
                }
            }
            result = &mut done => {
                break result.unwrap_or_else(|e| super::exec::error_status(&e.to_string()));
            }
            _ = &mut reader => {
                // The client is gone: end the session (its child is killed on drop).
                done.abort();
                return;
            }
        }
    };
    tokio::time::sleep_until(output_from).await;
    // Whatever output is still queued goes before the status.
    while let Ok((which, chunk)) = out_rx.try_recv() {
        let channel = match which {
            Output::Stderr if streams.stderr => STDERR,
            _ => STDOUT,
        };
        let mut message = vec![channel];
        message.extend_from_slice(&chunk);
        let _ = sink.send(Message::Binary(Bytes::from(message))).await;
    }
    let mut message = vec![ERROR];
    message.extend_from_slice(status.to_string().as_bytes());
    let _ = sink.send(Message::Binary(Bytes::from(message))).await;
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "".into(),
        })))
        .await;
    reader.abort();
}

/// Turns a WebSocket carrying a byte stream in binary messages (the port-forward tunnel) into
/// a byte stream.
pub fn tunnel(socket: WebSocket) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut read_half, mut write_half) = tokio::io::split(ours);
    let (mut sink, mut incoming) = socket.split();
    tokio::spawn(async move {
        while let Some(Ok(message)) = incoming.next().await {
            match message {
                Message::Binary(data) if write_half.write_all(&data).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = write_half.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match read_half.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: 1000,
                reason: "".into(),
            })))
            .await;
    });
    theirs
}
