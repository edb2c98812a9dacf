//! `skiff run`: create a container from an image, start its monitor, and either print its id
//! (`-d`) or stream its output and exit with its exit code. With `-i` and/or `-t` in the
//! foreground the output and input go through the container's attach socket (attached before
//! the container starts), on this terminal in raw mode with `-it`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use skiff_engine::logs::{LogPrinter, LogReader};
use skiff_engine::{EngineError, Frame};

use super::attach::{NOT_A_TTY, Relayed, not_a_tty, relay, terminal_size};
use super::container_options::{ContainerOptions, ensure_image};
use super::detach_keys;
use super::exit_code;

/// Options of `skiff run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short, long)]
    detach: bool,
    /// The key sequence that detaches from a terminal: comma-separated keys, each a character
    /// or ctrl-<a-z|@|[|\|]|^|_> (default ctrl-p,ctrl-q).
    #[arg(long, value_name = "KEYS")]
    detach_keys: Option<String>,
    #[command(flatten)]
    options: ContainerOptions,
}

impl RunArgs {
    /// Runs the container.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.run_inner() {
            Ok(code) => Ok(code),
            Err(EngineError::InvalidArgument(message)) if message == NOT_A_TTY => Ok(not_a_tty()),
            Err(err) => {
                eprintln!("skiff: {err}");
                eprintln!("See 'skiff run --help'.");
                Ok(exit_code(err.run_exit_code()))
            }
        }
    }

    fn run_inner(&self) -> Result<ExitCode, EngineError> {
        let o = &self.options;
        let request = o.request(self.detach)?;
        let attached = (o.interactive || o.tty) && !self.detach;
        // Docker checks the keys only when it attaches.
        let keys = if attached {
            detach_keys::resolve(self.detach_keys.as_deref())
                .map_err(|e| EngineError::InvalidArgument(e.to_string()))?
        } else {
            Vec::new()
        };
        if attached && o.interactive && o.tty && !std::io::stdin().is_terminal() {
            return Err(EngineError::InvalidArgument(NOT_A_TTY.into()));
        }
        let engine = o.root.open()?;
        ensure_image(&engine, &o.image)?;
        let config = engine.create(&request)?;
        let program = std::env::current_exe().map_err(EngineError::io("locate", "skiff"))?;
        let started = if attached {
            let hello = Frame::Hello {
                stdin: o.interactive,
                size: terminal_size(o.tty),
            };
            engine
                .start_attached(&config.id, &program, &hello)
                .map(|(handle, conn)| (handle, Some(conn)))
        } else {
            engine.start(&config.id, &program).map(|h| (h, None))
        };
        let (mut handle, conn) = match started {
            Ok(handle) => handle,
            Err(err) => {
                if o.rm {
                    if let Ok(container) = engine.load(&config.id) {
                        let _ = engine.remove_with_volumes(&container, true);
                    }
                }
                return Err(err);
            }
        };
        if self.detach {
            println!("{}", config.id);
            handle.detach();
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(mut conn) = conn {
            let relayed = relay(&mut conn, o.interactive, o.tty, &keys);
            drop(conn);
            if let Ok(Relayed::Detached) = relayed {
                handle.detach();
                return Ok(ExitCode::SUCCESS);
            }
            let code = handle.wait_exited()?;
            handle.finish();
            relayed?;
            return Ok(exit_code(code));
        }
        let mut reader = LogReader::open(&engine.dir(&config.id).log())?;
        let mut printer = LogPrinter::new(false);
        let stdout = std::io::stdout();
        let stderr = std::io::stderr();
        let code = loop {
            let ended = handle.poll_exited(Duration::from_millis(20))?;
            let records = reader.read_new().unwrap_or_default();
            let (mut out, mut err) = (stdout.lock(), stderr.lock());
            for record in &records {
                let _ = printer.print(record, &mut out, &mut err);
            }
            let _ = out.flush();
            if let Some(code) = ended {
                break code;
            }
        };
        handle.finish();
        Ok(exit_code(code))
    }
}
