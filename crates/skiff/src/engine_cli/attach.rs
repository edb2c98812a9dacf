//! `skiff attach` and the terminal side of `run -i`/`-t`: this terminal's input goes to the
//! container's attach socket, its output comes back (stdout and stderr apart without a tty),
//! with a tty the local terminal is in raw mode, resizes follow SIGWINCH, and the detach keys
//! (ctrl-p ctrl-q unless `--detach-keys` or the docker config's `detachKeys` say otherwise)
//! detach, leaving the container running.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use clap::Args;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{SetArg, Termios, cfmakeraw, tcgetattr, tcsetattr};
use skiff_engine::{AttachConn, EngineError, Frame};

use super::detach_keys::{self, Scanner};
use super::{EngineRoot, exit_code, report};

/// Options of `skiff attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    #[command(flatten)]
    root: EngineRoot,
    /// Do not attach stdin.
    #[arg(long)]
    no_stdin: bool,
    /// The key sequence that detaches: comma-separated keys, each a character or
    /// ctrl-<a-z|@|[|\|]|^|_> (default ctrl-p,ctrl-q).
    #[arg(long, value_name = "KEYS")]
    detach_keys: Option<String>,
    /// The container (name or id prefix).
    container: String,
}

impl AttachArgs {
    /// Attaches until the container exits or the user detaches.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let keys = match detach_keys::resolve(self.detach_keys.as_deref()) {
            Ok(keys) => keys,
            Err(err) => {
                eprintln!("Error response from daemon: {err}");
                return Ok(ExitCode::FAILURE);
            }
        };
        let attached = (|| -> Result<Relayed, EngineError> {
            let engine = self.root.open()?;
            let container = engine.find(&self.container)?;
            let stdin = container.config.stdin && !self.no_stdin;
            let tty = container.config.tty;
            // Docker refuses a stopped container first.
            let running = container.status() == skiff_engine::Status::Running;
            if running && stdin && tty && !std::io::stdin().is_terminal() {
                return Err(EngineError::InvalidArgument(NOT_A_TTY.into()));
            }
            let mut conn = engine.attach(&container, stdin, terminal_size(tty))?;
            relay(&mut conn, stdin, tty, &keys)
        })();
        match attached {
            Ok(Relayed::Exited(code)) => Ok(exit_code(code)),
            Ok(Relayed::Detached | Relayed::Closed) => Ok(ExitCode::SUCCESS),
            Err(EngineError::InvalidArgument(message)) if message == NOT_A_TTY => Ok(not_a_tty()),
            Err(err) => Ok(report(&err, 1)),
        }
    }
}

/// Docker's refusal to relay a terminal from input that is not one.
pub const NOT_A_TTY: &str = "the input device is not a TTY";

/// Says [`NOT_A_TTY`] as Docker's CLI does (the message alone) and returns its exit code, 1.
pub fn not_a_tty() -> ExitCode {
    eprintln!("{NOT_A_TTY}");
    ExitCode::FAILURE
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    /// The container exited with this code.
    Exited(i32),
    /// The user typed the detach keys.
    Detached,
    /// The monitor closed the connection without an exit code.
    Closed,
}

/// This terminal's size `(cols, rows)` when `tty` and it has one.
pub fn terminal_size(tty: bool) -> Option<(u16, u16)> {
    if !tty {
        return None;
    }
    [
        std::io::stdin().as_fd().try_clone_to_owned(),
        std::io::stdout().as_fd().try_clone_to_owned(),
    ]
    .into_iter()
    .flatten()
    .find_map(|fd| skiff_sys::pty::window_size(&fd).ok())
    .filter(|(cols, rows)| *cols > 0 && *rows > 0)
}

/// The local terminal in raw mode while this lives (restored on drop, also on error).
struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    fn enable(on: bool) -> RawMode {
        let stdin = std::io::stdin();
        if !on || !stdin.is_terminal() {
            return RawMode { saved: None };
        }
        let Ok(saved) = tcgetattr(stdin.as_fd()) else {
            return RawMode { saved: None };
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        if tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).is_err() {
            return RawMode { saved: None };
        }
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, saved);
        }
    }
}

fn write_all(file: &mut File, data: &[u8]) {
    let _ = file.write_all(data);
    let _ = file.flush();
}

fn dup_stdio(fd: std::os::fd::BorrowedFd<'_>, what: &'static str) -> Result<File, EngineError> {
    fd.try_clone_to_owned()
        .map(File::from)
        .map_err(EngineError::io("duplicate", what))
}

/// Relays this process's stdin (when `stdin`) and output over `conn` until the container
/// exits, the connection closes, or (with `tty`) the user types `detach_keys`.
pub fn relay(
    conn: &mut AttachConn,
    stdin: bool,
    tty: bool,
    detach_keys: &[u8],
) -> Result<Relayed, EngineError> {
    let mut input = dup_stdio(std::io::stdin().as_fd(), "stdin")?;
    let mut out = dup_stdio(std::io::stdout().as_fd(), "stdout")?;
    let mut err = dup_stdio(std::io::stderr().as_fd(), "stderr")?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGWINCH);
    let winch = if tty {
        mask.thread_block()
            .map_err(|e| EngineError::Shim(format!("block SIGWINCH: {e}")))?;
        Some(
            SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
                .map_err(|e| EngineError::Shim(format!("signalfd: {e}")))?,
        )
    } else {
        None
    };
    let _raw = RawMode::enable(tty && stdin);
    // Docker looks for the detach keys only in a terminal's input.
    let mut scanner = (tty && stdin).then(|| Scanner::new(detach_keys.to_vec()));
    let mut stdin_open = stdin;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        while let Some(frame) = conn.next_frame()? {
            match frame {
                Frame::Stdout(data) => write_all(&mut out, &data),
                Frame::Stderr(data) => write_all(&mut err, &data),
                Frame::Exit(code) => return Ok(Relayed::Exited(code)),
                _ => {}
            }
        }
        let mut fds = vec![PollFd::new(conn.socket().as_fd(), PollFlags::POLLIN)];
        let input_at = stdin_open.then(|| {
            fds.push(PollFd::new(input.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let winch_at = winch.as_ref().map(|w| {
            fds.push(PollFd::new(w.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(EngineError::Shim(format!("poll: {e}"))),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] && !conn.fill()? {
            return Ok(Relayed::Closed);
        }
        if input_at.is_some_and(|at| ready[at]) {
            match input.read(&mut buf) {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    // The peer may be gone already; its exit frame still comes.
                    let _ = conn.send(&Frame::CloseStdin);
                }
                Ok(n) => {
                    let (data, detached) = if let Some(scanner) = &mut scanner {
                        scanner.scan(&buf[..n])
                    } else {
                        (buf[..n].to_vec(), false)
                    };
                    if !data.is_empty() {
                        let _ = conn.send(&Frame::Stdin(data));
                    }
                    if detached {
                        return Ok(Relayed::Detached);
                    }
                }
            }
        }
        if let (Some(at), Some(signals)) = (winch_at, &winch)
            && ready[at]
        {
            while let Ok(Some(_)) = signals.read_signal() {}
            if let Some((cols, rows)) = terminal_size(true) {
                let _ = conn.send(&Frame::Resize { cols, rows });
            }
        }
    }
}
