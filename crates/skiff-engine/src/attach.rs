//! The attach socket: how clients (`skiff run -i/-t`, `skiff attach`, the node agent's
//! `kubectl attach`) reach a running container's stdin, live output and terminal.
//!
//! The monitor ([`crate::shim`]) listens on `DATA/containers/<id>/attach.sock` (mode 0600)
//! for as long as it lives. Every connection carries frames both ways:
//!
//! ```text
//! +------+----------------+-------------------+
//! | type | length (u32 BE)| payload (length)  |
//! +------+----------------+-------------------+
//! client -> monitor                       monitor -> client
//! 0x01 HELLO  flags(u8: 1 = attach stdin)  0x11 STDOUT  bytes (a terminal's output too)
//!             cols(u16 BE) rows(u16 BE)    0x12 STDERR  bytes
//!             (0x0 = size unknown)         0x13 EXIT    code (i32 BE); the monitor then
//! 0x02 STDIN  bytes                                     closes the connection
//! 0x03 STDIN_CLOSE (no payload)
//! 0x04 RESIZE cols(u16 BE) rows(u16 BE)
//! ```
//!
//! A client sends HELLO first. Output is copied to every client from the moment it
//! connected (the log has what came before). Stdin bytes go to the container's stdin (a pipe,
//! or the terminal) when it was created with one, and are dropped otherwise. With
//! `stdin_once` the container's stdin closes when the first client that attached stdin sends
//! STDIN_CLOSE or disconnects (a terminal gets an end-of-file character, ^D, instead). A
//! client that does not keep up loses its connection, never the container its output.
//!
//! Unix socket paths are limited to 108 bytes; a longer one is reached through
//! `/proc/self/fd/N/` of the directory opened with `O_PATH` ([`SocketPath`]).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::engine::{Container, Engine, ShimHandle};
use crate::record::Status;
use crate::{EngineError, Result};

/// Frame types.
const HELLO: u8 = 0x01;
const STDIN: u8 = 0x02;
const STDIN_CLOSE: u8 = 0x03;
const RESIZE: u8 = 0x04;
const STDOUT: u8 = 0x11;
const STDERR: u8 = 0x12;
const EXIT: u8 = 0x13;
/// Type and length.
const HEADER: usize = 5;
/// The largest payload accepted.
const MAX_PAYLOAD: usize = 1 << 20;
/// How much output may wait for a slow client before it is disconnected.
const MAX_BACKLOG: usize = 8 << 20;
/// The end-of-file character a terminal's stdin gets when it closes.
const EOT: u8 = 0x04;

/// Why an attach connection failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// A socket operation failed.
    #[error("attach socket {}: {op}: {source}", path.display())]
    Socket {
        /// What was done.
        op: &'static str,
        /// The socket.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The connection broke.
    #[error("attach connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not a frame.
    #[error("attach protocol: {0}")]
    Protocol(String),
}

/// One frame of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The client's first frame: whether it attaches stdin, and its terminal's size.
    Hello {
        /// Stdin is attached.
        stdin: bool,
        /// `(cols, rows)`, when known.
        size: Option<(u16, u16)>,
    },
    /// Input for the container's stdin.
    Stdin(Vec<u8>),
    /// The client's stdin ended.
    CloseStdin,
    /// The client's terminal changed size.
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// Container output (a terminal's output is all stdout).
    Stdout(Vec<u8>),
    /// Container error output.
    Stderr(Vec<u8>),
    /// The container exited with this code.
    Exit(i32),
}

fn size_bytes(cols: u16, rows: u16) -> [u8; 4] {
    let [c0, c1] = cols.to_be_bytes();
    let [r0, r1] = rows.to_be_bytes();
    [c0, c1, r0, r1]
}

impl Frame {
    /// The frame on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, Vec<u8>) = match self {
            Frame::Hello { stdin, size } => {
                let (cols, rows) = size.unwrap_or((0, 0));
                let mut p = vec![u8::from(*stdin)];
                p.extend_from_slice(&size_bytes(cols, rows));
                (HELLO, p)
            }
            Frame::Stdin(data) => (STDIN, data.clone()),
            Frame::CloseStdin => (STDIN_CLOSE, Vec::new()),
            Frame::Resize { cols, rows } => (RESIZE, size_bytes(*cols, *rows).to_vec()),
            Frame::Stdout(data) => (STDOUT, data.clone()),
            Frame::Stderr(data) => (STDERR, data.clone()),
            Frame::Exit(code) => (EXIT, code.to_be_bytes().to_vec()),
        };
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    fn decode(kind: u8, payload: &[u8]) -> std::result::Result<Frame, AttachError> {
        let size = |p: &[u8]| -> Option<(u16, u16)> {
            let cols = u16::from_be_bytes([*p.first()?, *p.get(1)?]);
            let rows = u16::from_be_bytes([*p.get(2)?, *p.get(3)?]);
            Some((cols, rows))
        };
        let bad = |what: &str| AttachError::Protocol(format!("malformed {what} frame"));
        Ok(match kind {
            HELLO => {
                let flags = *payload.first().ok_or_else(|| bad("hello"))?;
                let (cols, rows) = size(&payload[1..]).ok_or_else(|| bad("hello"))?;
                Frame::Hello {
                    stdin: flags & 1 != 0,
                    size: (cols > 0 && rows > 0).then_some((cols, rows)),
                }
            }
            STDIN => Frame::Stdin(payload.to_vec()),
            STDIN_CLOSE => Frame::CloseStdin,
            RESIZE => {
                let (cols, rows) = size(payload).ok_or_else(|| bad("resize"))?;
                Frame::Resize { cols, rows }
            }
            STDOUT => Frame::Stdout(payload.to_vec()),
            STDERR => Frame::Stderr(payload.to_vec()),
            EXIT => {
                let bytes: [u8; 4] = payload.try_into().map_err(|_| bad("exit"))?;
                Frame::Exit(i32::from_be_bytes(bytes))
            }
            other => {
                return Err(AttachError::Protocol(format!(
                    "unknown frame type {other:#04x}"
                )));
            }
        })
    }
}

/// Reassembles frames from bytes as they arrive.
#[derive(Debug, Default)]
pub struct Decoder {
    buffer: Vec<u8>,
}

impl Decoder {
    /// Adds bytes read from the connection.
    pub fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next complete frame, if one arrived.
    pub fn next_frame(&mut self) -> std::result::Result<Option<Frame>, AttachError> {
        if self.buffer.len() < HEADER {
            return Ok(None);
        }
        let kind = self.buffer[0];
        let len = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if len > MAX_PAYLOAD {
            return Err(AttachError::Protocol(format!(
                "frame of {len} bytes is too large"
            )));
        }
        if self.buffer.len() < HEADER + len {
            return Ok(None);
        }
        let frame = Frame::decode(kind, &self.buffer[HEADER..HEADER + len]);
        self.buffer.drain(..HEADER + len);
        frame.map(Some)
    }
}

/// A socket path short enough for `sockaddr_un`: the path itself, or
/// `/proc/self/fd/N/NAME` through the directory held open with `O_PATH`.
#[derive(Debug)]
pub struct SocketPath {
    path: PathBuf,
    _dir: Option<OwnedFd>,
}

impl SocketPath {
    /// A usable path for the socket at `full` (valid while this value lives).
    pub fn new(full: &Path) -> std::result::Result<SocketPath, AttachError> {
        if full.as_os_str().len() < 100 {
            return Ok(SocketPath {
                path: full.to_path_buf(),
                _dir: None,
            });
        }
        let (Some(parent), Some(name)) = (full.parent(), full.file_name()) else {
            return Err(AttachError::Protocol(format!(
                "{} is not a socket path",
                full.display()
            )));
        };
        let dir = nix::fcntl::open(
            parent,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|errno| AttachError::Socket {
            op: "open its directory",
            path: full.to_path_buf(),
            source: errno.into(),
        })?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
        Ok(SocketPath {
            path,
            _dir: Some(dir),
        })
    }

    /// The path to bind or connect to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Binds a listening unix socket at `full` (replacing a stale one), readable by root only.
pub fn listen(full: &Path) -> std::result::Result<UnixListener, AttachError> {
    let short = SocketPath::new(full)?;
    let err = |op| {
        let path = full.to_path_buf();
        move |source| AttachError::Socket { op, path, source }
    };
    match std::fs::remove_file(full) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("remove the stale socket")(e)),
    }
    let listener = UnixListener::bind(short.path()).map_err(err("bind"))?;
    std::fs::set_permissions(full, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(err("chmod"))?;
    Ok(listener)
}

/// A client's connection to a container's attach socket.
#[derive(Debug)]
pub struct AttachConn {
    stream: UnixStream,
    decoder: Decoder,
}

impl AttachConn {
    /// Connects to the attach socket at `socket` and says hello.
    pub fn connect(socket: &Path, hello: &Frame) -> std::result::Result<AttachConn, AttachError> {
        let short = SocketPath::new(socket)?;
        let stream = UnixStream::connect(short.path()).map_err(|source| AttachError::Socket {
            op: "connect",
            path: socket.to_path_buf(),
            source,
        })?;
        let mut conn = AttachConn {
            stream,
            decoder: Decoder::default(),
        };
        conn.send(hello)?;
        Ok(conn)
    }

    /// Sends one frame.
    pub fn send(&mut self, frame: &Frame) -> std::result::Result<(), AttachError> {
        self.stream.write_all(&frame.encode())?;
        Ok(())
    }

    /// The socket (to poll it).
    pub fn socket(&self) -> &UnixStream {
        &self.stream
    }

    /// The socket, for a caller that speaks the frames itself (with [`Decoder`]).
    pub fn into_socket(self) -> UnixStream {
        self.stream
    }

    /// Reads what arrived (one read; blocks if nothing did); false at end of connection.
    pub fn fill(&mut self) -> std::result::Result<bool, AttachError> {
        let mut buf = [0u8; 32 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.decoder.push(&buf[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next frame already read, if any.
    pub fn next_frame(&mut self) -> std::result::Result<Option<Frame>, AttachError> {
        self.decoder.next_frame()
    }

    /// The next frame, waiting for it; `None` once the monitor closed the connection.
    pub fn recv(&mut self) -> std::result::Result<Option<Frame>, AttachError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }
}

impl Engine {
    /// Attaches to a running container: `stdin` when its stdin is wanted, `size` the client's
    /// terminal size.
    pub fn attach(
        &self,
        container: &Container,
        stdin: bool,
        size: Option<(u16, u16)>,
    ) -> Result<AttachConn> {
        if container.status() != Status::Running {
            return Err(EngineError::InvalidArgument(
                "You cannot attach to a stopped container, start it first".into(),
            ));
        }
        let socket = self.dir(container.id()).attach_socket();
        Ok(AttachConn::connect(&socket, &Frame::Hello { stdin, size })?)
    }

    /// Starts the container with a client attached from its first byte of output on (what
    /// `run -i`/`-t` in the foreground does): the monitor waits for this connection before
    /// it starts the container.
    pub fn start_attached(
        &self,
        id: &str,
        program: &Path,
        hello: &Frame,
    ) -> Result<(ShimHandle, AttachConn)> {
        let mut handle = self.spawn_monitor(id, program, true)?;
        let line = handle.next_line();
        if line.as_deref() != Some("listening") {
            handle.started_from(line)?;
            return Err(EngineError::Shim("the monitor did not listen".into()));
        }
        let conn = AttachConn::connect(&self.dir(id).attach_socket(), hello)?;
        handle.wait_started()?;
        Ok((handle, conn))
    }
}

/// Sets `O_NONBLOCK` on `fd`.
fn set_nonblocking<Fd: AsFd>(fd: Fd) -> std::io::Result<()> {
    let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// What clients asked of the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Bytes for its stdin.
    Data(Vec<u8>),
    /// Close its stdin (`stdin_once`).
    Close,
    /// Resize its terminal.
    Resize(u16, u16),
}

/// One connected client, as the monitor sees it.
#[derive(Debug)]
struct Client {
    stream: UnixStream,
    decoder: Decoder,
    backlog: Vec<u8>,
    hello: bool,
    stdin: bool,
    stdin_closed: bool,
    /// The client shut its side down: it still gets output.
    eof: bool,
    dead: bool,
}

impl Client {
    fn write(&mut self, bytes: &[u8]) {
        if self.dead {
            return;
        }
        if !self.backlog.is_empty() {
            self.backlog.extend_from_slice(bytes);
        } else {
            match self.stream.write(bytes) {
                Ok(n) => self.backlog.extend_from_slice(&bytes[n..]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.backlog.extend_from_slice(bytes)
                }
                Err(_) => self.dead = true,
            }
        }
        if self.backlog.len() > MAX_BACKLOG {
            self.dead = true;
        }
    }

    fn flush(&mut self) {
        while !self.backlog.is_empty() && !self.dead {
            match self.stream.write(&self.backlog) {
                Ok(0) => self.dead = true,
                Ok(n) => {
                    self.backlog.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => self.dead = true,
            }
        }
    }
}

/// The monitor's side of the attach socket: the listener and its clients.
#[derive(Debug)]
pub struct Hub {
    listener: UnixListener,
    clients: Vec<Client>,
    size: Option<(u16, u16)>,
    stdin_once: bool,
    stdin_closed: bool,
}

impl Hub {
    /// Listens at `path`; `stdin_once` as the container was created with.
    pub fn bind(path: &Path, stdin_once: bool) -> Result<Hub> {
        let listener = listen(path)?;
        listener
            .set_nonblocking(true)
            .map_err(EngineError::io("set non-blocking", path))?;
        Ok(Hub {
            listener,
            clients: Vec::new(),
            size: None,
            stdin_once,
            stdin_closed: false,
        })
    }

    /// The last terminal size a client gave.
    pub fn size(&self) -> Option<(u16, u16)> {
        self.size
    }

    /// A new run of the container starts: its stdin is open again.
    pub fn new_run(&mut self) {
        self.stdin_closed = false;
    }

    /// The listener, to poll for connections.
    pub fn listener(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// The clients' sockets with the events to poll for, in client order.
    pub fn client_fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        self.clients
            .iter()
            .map(|c| {
                let mut flags = if c.eof {
                    PollFlags::empty()
                } else {
                    PollFlags::POLLIN
                };
                if !c.backlog.is_empty() {
                    flags |= PollFlags::POLLOUT;
                }
                (c.stream.as_fd(), flags)
            })
            .collect()
    }

    /// Accepts every waiting connection.
    pub fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            self.clients.push(Client {
                stream,
                decoder: Decoder::default(),
                backlog: Vec::new(),
                hello: false,
                stdin: false,
                stdin_closed: false,
                eof: false,
                dead: false,
            });
        }
    }

    /// Handles readiness `revents` of client `index` (as in [`Hub::client_fds`]); what the
    /// client asked for goes to `inputs`. Call [`Hub::reap`] after the last one.
    pub fn handle(&mut self, index: usize, revents: PollFlags, inputs: &mut Vec<Input>) {
        let Some(client) = self.clients.get_mut(index) else {
            return;
        };
        if revents.contains(PollFlags::POLLOUT) {
            client.flush();
        }
        if client.eof {
            // Only a hang-up or an error is polled for now: the client is gone.
            if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                client.dead = true;
            }
            return;
        }
        if !revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            return;
        }
        let mut buf = [0u8; 32 * 1024];
        match client.stream.read(&mut buf) {
            Ok(0) => {
                // Nothing more comes from this client; its stdin ends with it.
                client.eof = true;
                if client.stdin && !client.stdin_closed {
                    client.stdin_closed = true;
                    if self.stdin_once && !self.stdin_closed {
                        self.stdin_closed = true;
                        inputs.push(Input::Close);
                    }
                }
            }
            Ok(n) => client.decoder.push(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => client.dead = true,
        }
        loop {
            let frame = match client.decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => {
                    client.dead = true;
                    break;
                }
            };
            match frame {
                Frame::Hello { stdin, size } if !client.hello => {
                    client.hello = true;
                    client.stdin = stdin;
                    if let Some((cols, rows)) = size {
                        self.size = Some((cols, rows));
                        inputs.push(Input::Resize(cols, rows));
                    }
                }
                Frame::Stdin(data) if client.stdin && !client.stdin_closed => {
                    inputs.push(Input::Data(data))
                }
                Frame::CloseStdin if client.stdin && !client.stdin_closed => {
                    client.stdin_closed = true;
                    if self.stdin_once && !self.stdin_closed {
                        self.stdin_closed = true;
                        inputs.push(Input::Close);
                    }
                }
                Frame::Resize { cols, rows } => {
                    self.size = Some((cols, rows));
                    inputs.push(Input::Resize(cols, rows));
                }
                _ => {}
            }
        }
    }

    /// Drops the clients that are gone; a stdin client leaving closes `stdin_once` stdin.
    pub fn reap(&mut self, inputs: &mut Vec<Input>) {
        let mut i = 0;
        while i < self.clients.len() {
            if self.clients[i].dead {
                let client = self.clients.remove(i);
                if client.stdin && !client.stdin_closed && self.stdin_once && !self.stdin_closed {
                    self.stdin_closed = true;
                    inputs.push(Input::Close);
                }
            } else {
                i += 1;
            }
        }
    }

    /// Copies output to every client.
    pub fn broadcast(&mut self, frame: &Frame) {
        if self.clients.is_empty() {
            return;
        }
        let bytes = frame.encode();
        for client in &mut self.clients {
            client.write(&bytes);
        }
    }

    /// The container exited: every client gets its code (and up to a second to read what
    /// is still queued), then the connection closes.
    pub fn finish_run(&mut self, code: i32) {
        self.broadcast(&Frame::Exit(code));
        let deadline = Instant::now() + Duration::from_secs(1);
        for mut client in self.clients.drain(..) {
            while !client.backlog.is_empty() && !client.dead && Instant::now() < deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                let mut fds = [PollFd::new(client.stream.as_fd(), PollFlags::POLLOUT)];
                let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::ZERO);
                if poll(&mut fds, timeout).is_err() {
                    break;
                }
                client.flush();
            }
            let _ = client.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Waits up to `deadline` for a first client and its hello (the foreground `run -i/-t`
    /// that started the monitor); false if none came.
    pub fn wait_first(&mut self, deadline: Duration) -> bool {
        let until = Instant::now() + deadline;
        let mut ignored = Vec::new();
        loop {
            if self.clients.iter().any(|c| c.hello) {
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            let mut fds = vec![PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            for (fd, flags) in self.client_fds() {
                fds.push(PollFd::new(fd, flags));
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return false,
            }
            let ready: Vec<PollFlags> = fds
                .iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect();
            drop(fds);
            for (i, revents) in ready.iter().enumerate().skip(1) {
                self.handle(i - 1, *revents, &mut ignored);
            }
            self.reap(&mut ignored);
            if !ready[0].is_empty() {
                self.accept();
            }
        }
    }
}

/// The container's stdin as the monitor writes it: a pipe, or the terminal's master.
/// Writes never block the monitor: what the container does not read yet waits here.
#[derive(Debug)]
pub struct StdinSink {
    file: Option<File>,
    pending: Vec<u8>,
    closing: bool,
    tty: bool,
}

impl StdinSink {
    /// The sink over `file` (none: a container without stdin, input is dropped).
    pub fn new(file: Option<File>, tty: bool) -> StdinSink {
        let file = file.filter(|f| set_nonblocking(f).is_ok());
        StdinSink {
            file,
            pending: Vec::new(),
            closing: false,
            tty,
        }
    }

    /// Queues input and writes what the container takes.
    pub fn push(&mut self, data: &[u8]) {
        if self.file.is_none() || self.closing {
            return;
        }
        self.pending.extend_from_slice(data);
        if self.pending.len() > MAX_BACKLOG {
            // Nobody reads: drop the oldest input rather than grow without bound.
            let excess = self.pending.len() - MAX_BACKLOG;
            self.pending.drain(..excess);
        }
        self.flush();
    }

    /// Closes the stdin once what is queued was written (a terminal gets ^D).
    pub fn close(&mut self) {
        if self.tty {
            self.push(&[EOT]);
            return;
        }
        self.closing = true;
        self.flush();
    }

    /// The descriptor to poll for writability while input waits.
    pub fn waiting(&self) -> Option<BorrowedFd<'_>> {
        self.file
            .as_ref()
            .filter(|_| !self.pending.is_empty())
            .map(|f| f.as_fd())
    }

    /// Writes what the container takes now.
    pub fn flush(&mut self) {
        while let Some(file) = &mut self.file {
            if self.pending.is_empty() {
                break;
            }
            match file.write(&self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // The reader is gone.
                    self.file = None;
                    self.pending.clear();
                }
            }
        }
        if self.closing && self.pending.is_empty() {
            self.file = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_pieces() {
        let frames = [
            Frame::Hello {
                stdin: true,
                size: Some((80, 24)),
            },
            Frame::Hello {
                stdin: false,
                size: None,
            },
            Frame::Stdin(b"echo hi\n".to_vec()),
            Frame::CloseStdin,
            Frame::Resize {
                cols: 120,
                rows: 40,
            },
            Frame::Stdout(b"hi\n".to_vec()),
            Frame::Stderr(Vec::new()),
            Frame::Exit(-3),
        ];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut decoder = Decoder::default();
        let mut got = Vec::new();
        for byte in wire {
            decoder.push(&[byte]);
            while let Some(frame) = decoder.next_frame().unwrap() {
                got.push(frame);
            }
        }
        assert_eq!(got, frames);
        let mut bad = Decoder::default();
        bad.push(&[0x7f, 0, 0, 0, 0]);
        assert!(bad.next_frame().is_err());
    }

    #[test]
    fn a_hub_relays_input_output_and_stdin_once() {
        let dir = tempfile::tempdir().unwrap();
        // A long directory name takes the /proc/self/fd route.
        let long = dir.path().join("d".repeat(100));
        std::fs::create_dir(&long).unwrap();
        let path = long.join("attach.sock");
        let mut hub = Hub::bind(&path, true).unwrap();
        let mut conn = AttachConn::connect(
            &path,
            &Frame::Hello {
                stdin: true,
                size: Some((100, 30)),
            },
        )
        .unwrap();
        assert!(hub.wait_first(Duration::from_secs(5)));
        conn.send(&Frame::Stdin(b"abc".to_vec())).unwrap();
        conn.send(&Frame::CloseStdin).unwrap();
        let mut inputs = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !inputs.contains(&Input::Close) && Instant::now() < deadline {
            let flags: Vec<PollFlags> = hub.client_fds().iter().map(|(_, f)| *f).collect();
            for (i, f) in flags.into_iter().enumerate() {
                hub.handle(i, f, &mut inputs);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // The hello's size was taken while waiting for the first client.
        assert_eq!(hub.size(), Some((100, 30)));
        assert_eq!(inputs, vec![Input::Data(b"abc".to_vec()), Input::Close]);
        hub.broadcast(&Frame::Stdout(b"out".to_vec()));
        hub.finish_run(7);
        assert_eq!(conn.recv().unwrap(), Some(Frame::Stdout(b"out".to_vec())));
        assert_eq!(conn.recv().unwrap(), Some(Frame::Exit(7)));
        assert_eq!(conn.recv().unwrap(), None);
    }

    #[test]
    fn a_stdin_sink_closes_a_pipe_after_its_input() {
        let (read, write) = nix::unistd::pipe().unwrap();
        let mut sink = StdinSink::new(Some(File::from(write)), false);
        sink.push(b"line\n");
        sink.close();
        let mut got = String::new();
        File::from(read).read_to_string(&mut got).unwrap();
        assert_eq!(got, "line\n");
    }
}
