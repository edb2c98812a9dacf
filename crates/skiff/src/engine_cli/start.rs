//! `skiff start`: start stopped containers in the background, or, with `-a` and/or `-i`, one
//! container attached as `docker start -a` does: its output here (stdout and stderr apart
//! without a tty), this terminal's input too with `-i` when the container keeps stdin open,
//! the container's terminal when it was created with `-t`, and the container's exit code as
//! this command's. The detach keys leave it running and exit 0; a running container is
//! attached to as it is.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Args;
use skiff_engine::{EngineError, Frame};

use super::attach::{NOT_A_TTY, Relayed, not_a_tty, relay, terminal_size};
use super::ops::{each, start};
use super::{EngineRoot, detach_keys, exit_code, report};

/// Options of `skiff start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    #[command(flatten)]
    root: EngineRoot,
    /// Attach the container's output (stdout and stderr) and exit with its exit code.
    #[arg(short, long)]
    attach: bool,
    /// Attach this terminal's input to the container's stdin too (implies --attach).
    #[arg(short, long)]
    interactive: bool,
    /// The key sequence that detaches from a terminal: comma-separated keys, each a character
    /// or ctrl-<a-z|@|[|\|]|^|_> (default ctrl-p,ctrl-q).
    #[arg(long, value_name = "KEYS")]
    detach_keys: Option<String>,
    /// The containers (one with --attach or --interactive).
    #[arg(required = true)]
    containers: Vec<String>,
}

impl StartArgs {
    /// Starts the containers, or one attached.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        if !(self.attach || self.interactive) {
            return each(&self.root, &self.containers, start);
        }
        if self.containers.len() > 1 {
            eprintln!("you cannot start and attach multiple containers at once");
            return Ok(ExitCode::FAILURE);
        }
        let keys = match detach_keys::resolve(self.detach_keys.as_deref()) {
            Ok(keys) => keys,
            Err(err) => {
                eprintln!("Error response from daemon: {err}");
                return Ok(ExitCode::FAILURE);
            }
        };
        match self.attached(&keys) {
            Ok(Relayed::Exited(code)) => Ok(exit_code(code)),
            Ok(Relayed::Detached | Relayed::Closed) => Ok(ExitCode::SUCCESS),
            Err(EngineError::InvalidArgument(message)) if message == NOT_A_TTY => Ok(not_a_tty()),
            Err(err) => Ok(report(&err, 1)),
        }
    }

    /// Starts (or joins) the container with this process attached until it ends.
    fn attached(&self, keys: &[u8]) -> Result<Relayed, EngineError> {
        let engine = self.root.open()?;
        let container = engine.find(&self.containers[0])?;
        let stdin = self.interactive && container.config.stdin;
        let tty = container.config.tty;
        if stdin && tty && !std::io::stdin().is_terminal() {
            return Err(EngineError::InvalidArgument(NOT_A_TTY.into()));
        }
        if container.is_active() {
            let mut conn = engine.attach(&container, stdin, terminal_size(tty))?;
            return relay(&mut conn, stdin, tty, keys);
        }
        let program = std::env::current_exe().map_err(EngineError::io("locate", "skiff"))?;
        let hello = Frame::Hello {
            stdin,
            size: terminal_size(tty),
        };
        let (mut handle, mut conn) = engine.start_attached(container.id(), &program, &hello)?;
        let relayed = relay(&mut conn, stdin, tty, keys);
        drop(conn);
        if let Ok(Relayed::Detached) = relayed {
            handle.detach();
            return Ok(Relayed::Detached);
        }
        let code = handle.wait_exited()?;
        handle.finish();
        relayed?;
        Ok(Relayed::Exited(code))
    }
}
