//! One exec session: `skiff exec` of the same binary as a child process (the runtime forks,
//! which it refuses in the agent's multi-threaded process), with pipes for stdio, or with a
//! terminal: the child is given a console socket, the runtime sends the pty master opened in
//! the container's `/dev/pts` over it, and the agent relays the master and applies resizes.
//!
//! An attach session ([`attach`]) connects to the container monitor's attach socket instead
//! (see `skiff_engine::attach`): the client's stdin and resizes go there, the container's
//! live output comes back, and the session ends when the container exits.
//!
//! The session is independent of the wire protocol: it reads stdin and resize events from
//! channels and writes output chunks tagged with their stream to another.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// How long output may still arrive after the process ended (a background child holding the
/// pipes open must not hold the session forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// How long a terminal session waits for the client's terminal size before it starts.
const INITIAL_SIZE_WAIT: Duration = Duration::from_secs(1);

/// Why a session could not run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The `skiff exec` child did not start.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The binary.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The terminal could not be set up.
    #[error("cannot set up a terminal: {0}")]
    Terminal(String),
    /// Waiting for the child failed.
    #[error("exec session: {0}")]
    Io(#[from] std::io::Error),
    /// The container's attach socket failed.
    #[error("attach: {0}")]
    Attach(String),
}

/// Which stream an output chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Standard output (the terminal's output with a tty).
    Stdout,
    /// Standard error.
    Stderr,
}

/// A terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct TermSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    /// The `skiff` binary.
    pub program: PathBuf,
    /// The engine's data root.
    pub data_dir: PathBuf,
    /// The engine container.
    pub container_id: String,
    /// The command.
    pub command: Vec<String>,
    /// Whether stdin is attached.
    pub stdin: bool,
    /// Whether to allocate a terminal.
    pub tty: bool,
}

/// The session's side of the wire.
#[derive(Debug)]
pub struct SessionIo {
    /// The client's stdin (the channel ends when the client closes it).
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    /// Terminal resizes.
    pub resize: Option<mpsc::Receiver<TermSize>>,
    /// Output for the client.
    pub output: mpsc::Sender<(Output, Bytes)>,
}

/// Runs the session to its end; returns the process's exit code.
pub async fn run(spec: ExecSpec, io: SessionIo) -> Result<i32, ExecError> {
    if spec.tty {
        run_tty(spec, io).await
    } else {
        run_pipes(spec, io).await
    }
}

fn command(spec: &ExecSpec) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(&spec.program);
    command.arg("exec").arg("--data-root").arg(&spec.data_dir);
    command.kill_on_drop(true);
    command
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

async fn pump<R: AsyncRead + Unpin>(mut from: R, which: Output, to: mpsc::Sender<(Output, Bytes)>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to
                    .send((which, Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
}

async fn run_pipes(spec: ExecSpec, io: SessionIo) -> Result<i32, ExecError> {
    let mut cmd = command(&spec);
    cmd.arg(&spec.container_id)
        .args(&spec.command)
        .stdin(if spec.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
        program: spec.program.clone(),
        source,
    })?;
    let stdin_task = match (child.stdin.take(), io.stdin) {
        (Some(mut pipe), Some(mut rx)) => Some(tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if pipe.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            let _ = pipe.shutdown().await;
        })),
        _ => None,
    };
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(out, Output::Stdout, io.output.clone())));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(err, Output::Stderr, io.output.clone())));
    }
    let status = child.wait().await?;
    let drained = async {
        for p in pumps {
            let _ = p.await;
        }
    };
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, drained).await;
    if let Some(task) = stdin_task {
        task.abort();
    }
    Ok(exit_code(status))
}

/// A unique, short console socket path (unix socket paths are limited to 108 bytes).
fn console_path() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "skiff-console-{}-{}.sock",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Removes the socket file when the session ends, whatever happens.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn run_tty(spec: ExecSpec, io: SessionIo) -> Result<i32, ExecError> {
    let path = console_path();
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| ExecError::Terminal(format!("bind {}: {e}", path.display())))?;
    let _cleanup = RemoveOnDrop(path.clone());
    // The client sends its terminal's size first thing: the process starts with it (a
    // resize after the start would race with a program reading the size at once).
    let mut resize = io.resize;
    let initial = match resize.as_mut() {
        Some(rx) => tokio::time::timeout(INITIAL_SIZE_WAIT, rx.recv())
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let mut cmd = command(&spec);
    cmd.arg("--console-socket").arg(&path);
    if let Some(size) = initial {
        cmd.arg("--console-size")
            .arg(format!("{}x{}", size.width, size.height));
    }
    cmd.arg(&spec.container_id)
        .args(&spec.command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
        program: spec.program.clone(),
        source,
    })?;
    let errors = child
        .stderr
        .take()
        .map(|e| tokio::spawn(pump(e, Output::Stdout, io.output.clone())));
    // The master arrives once the process starts; a child that fails first just exits.
    let accepted = tokio::select! {
        accepted = tokio::time::timeout(Duration::from_secs(30), listener.accept()) => accepted,
        status = child.wait() => {
            let status = status?;
            if let Some(e) = errors {
                let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, e).await;
            }
            return Ok(exit_code(status));
        }
    };
    let (socket, _) = accepted
        .map_err(|_| ExecError::Terminal("no terminal was sent within 30s".into()))?
        .map_err(|e| ExecError::Terminal(format!("accept: {e}")))?;
    let socket = socket
        .into_std()
        .and_then(|s| s.set_nonblocking(false).map(|()| s))
        .map_err(|e| ExecError::Terminal(e.to_string()))?;
    let master = tokio::task::spawn_blocking(move || skiff_sys::pty::recv_fd(&socket))
        .await
        .map_err(|e| ExecError::Terminal(e.to_string()))?
        .map_err(|e| ExecError::Terminal(e.to_string()))?
        .0;
    let master = Arc::new(master);
    let resize_master = Arc::clone(&master);
    let resizer = tokio::spawn(async move {
        if let Some(rx) = resize.as_mut() {
            while let Some(size) = rx.recv().await {
                let _ = skiff_sys::pty::set_window_size(
                    resize_master.as_ref(),
                    size.width,
                    size.height,
                );
            }
        }
    });
    // Blocking reads and writes on the master from threads of their own (the pty is not a
    // socket tokio could poll without unsafe registration).
    if let Some(mut rx) = io.stdin {
        let mut file = std::fs::File::from(
            master
                .try_clone()
                .map_err(|e| ExecError::Terminal(format!("dup the terminal: {e}")))?,
        );
        std::thread::Builder::new()
            .name("skiff-tty-in".into())
            .spawn(move || {
                use std::io::Write;
                while let Some(chunk) = rx.blocking_recv() {
                    if file.write_all(&chunk).is_err() {
                        return;
                    }
                }
                // The client closed stdin: end of input for the terminal (^D).
                let _ = file.write_all(b"\x04");
            })
            .map_err(|e| ExecError::Terminal(e.to_string()))?;
    }
    let mut file = std::fs::File::from(
        master
            .try_clone()
            .map_err(|e| ExecError::Terminal(format!("dup the terminal: {e}")))?,
    );
    let output = io.output.clone();
    let (reader_done_tx, reader_done) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("skiff-tty-out".into())
        .spawn(move || {
            use std::io::Read;
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match file.read(&mut buf) {
                    // The slave closes with the process: the master then reads EIO.
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if output
                            .blocking_send((Output::Stdout, Bytes::copy_from_slice(&buf[..n])))
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
            let _ = reader_done_tx.send(());
        })
        .map_err(|e| ExecError::Terminal(e.to_string()))?;
    let status = child.wait().await?;
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, reader_done).await;
    if let Some(e) = errors {
        let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, e).await;
    }
    resizer.abort();
    Ok(exit_code(status))
}

/// Attaches to the container whose monitor listens on `socket`: `stdin` when the client
/// sends it. Returns the container's exit code (0 when the connection ended without one).
pub async fn attach(socket: PathBuf, stdin: bool, io: SessionIo) -> Result<i32, ExecError> {
    use skiff_engine::attach::{AttachConn, Decoder, Frame};
    let hello = Frame::Hello { stdin, size: None };
    let conn = tokio::task::spawn_blocking(move || AttachConn::connect(&socket, &hello))
        .await
        .map_err(|e| ExecError::Attach(e.to_string()))?
        .map_err(|e| ExecError::Attach(e.to_string()))?;
    let socket = conn.into_socket();
    socket.set_nonblocking(true)?;
    let (mut reader, mut writer) = tokio::net::UnixStream::from_std(socket)?.into_split();
    let (frames_tx, mut frames_rx) = mpsc::channel::<Frame>(16);
    let sender = tokio::spawn(async move {
        while let Some(frame) = frames_rx.recv().await {
            if writer.write_all(&frame.encode()).await.is_err() {
                break;
            }
        }
        // Dropping the write half would shut it down: keep it until the session ends.
        std::future::pending::<()>().await;
        drop(writer);
    });
    let stdin_task = io.stdin.map(|mut rx| {
        let tx = frames_tx.clone();
        tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if tx.send(Frame::Stdin(chunk.to_vec())).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Frame::CloseStdin).await;
        })
    });
    let resize_task = io.resize.map(|mut rx| {
        let tx = frames_tx.clone();
        tokio::spawn(async move {
            while let Some(size) = rx.recv().await {
                let frame = Frame::Resize {
                    cols: size.width,
                    rows: size.height,
                };
                if tx.send(frame).await.is_err() {
                    return;
                }
            }
        })
    });
    drop(frames_tx);
    let mut decoder = Decoder::default();
    let mut buf = vec![0u8; 32 * 1024];
    let code = 'read: loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break 0;
        }
        decoder.push(&buf[..n]);
        while let Some(frame) = decoder
            .next_frame()
            .map_err(|e| ExecError::Attach(e.to_string()))?
        {
            let (which, data) = match frame {
                Frame::Stdout(data) => (Output::Stdout, data),
                Frame::Stderr(data) => (Output::Stderr, data),
                Frame::Exit(code) => break 'read code,
                _ => continue,
            };
            if io.output.send((which, Bytes::from(data))).await.is_err() {
                break 'read 0;
            }
        }
    };
    for task in [stdin_task, resize_task].into_iter().flatten() {
        task.abort();
    }
    sender.abort();
    Ok(code)
}

/// The `metav1.Status` an exec ends with on the error stream (protocol v4 and later):
/// `Success`, or `NonZeroExitCode` with the code as an `ExitCode` cause.
pub fn exit_status(command: &[String], code: i32) -> serde_json::Value {
    if code == 0 {
        return serde_json::json!({"metadata": {}, "status": "Success"});
    }
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            command.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The `metav1.Status` of a session that could not run.
pub fn error_status(message: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_the_exit_code() {
        let ok = exit_status(&["true".into()], 0);
        assert_eq!(ok["status"], "Success");
        let failed = exit_status(&["sh".into(), "-c".into(), "exit 3".into()], 3);
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        let size: TermSize = serde_json::from_str(r#"{"Width":80,"Height":24}"#).unwrap();
        assert_eq!(
            size,
            TermSize {
                width: 80,
                height: 24
            }
        );
    }

    #[tokio::test]
    async fn a_session_runs_a_child_with_pipes() {
        // `sh` stands in for `skiff`: `sh exec --data-root D ID CMD...` is not meaningful, so
        // use a script that echoes stdin and its arguments.
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-skiff");
        std::fs::write(
            &script,
            "#!/bin/sh\necho \"$@\"\ncat\necho oops >&2\nexit 7\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let (stdin_tx, stdin_rx) = mpsc::channel(4);
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let spec = ExecSpec {
            program: script,
            data_dir: "/data".into(),
            container_id: "c1".into(),
            command: vec!["echo".into(), "hi".into()],
            stdin: true,
            tty: false,
        };
        stdin_tx.send(Bytes::from_static(b"input\n")).await.unwrap();
        drop(stdin_tx);
        let io = SessionIo {
            stdin: Some(stdin_rx),
            resize: None,
            output: out_tx,
        };
        let code = run(spec, io).await.unwrap();
        assert_eq!(code, 7);
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        while let Ok((which, chunk)) = out_rx.try_recv() {
            match which {
                Output::Stdout => stdout.extend_from_slice(&chunk),
                Output::Stderr => stderr.extend_from_slice(&chunk),
            }
        }
        assert_eq!(
            String::from_utf8_lossy(&stdout),
            "exec --data-root /data c1 echo hi\ninput\n"
        );
        assert_eq!(String::from_utf8_lossy(&stderr), "oops\n");
    }
}
