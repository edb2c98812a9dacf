//! The container commands other than `run`: `ps`, `exec`, `logs`, `stop`, `kill`,
//! `restart`, `rm`, `inspect`. Each takes names or id prefixes, goes on past a missing one
//! and exits 1 if any failed, printing what it acted on as Docker does.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use skiff_engine::logs::{self, LogPrinter, LogReader};
use skiff_engine::template::Template;
use skiff_engine::{Engine, EngineError, ExecRequest};

use super::format::ListFormat;
use super::table;
use super::{EngineRoot, exit_code, report};

/// Runs `act` on each container, printing each name on success and each error on stderr.
pub(super) fn each(
    root: &EngineRoot,
    containers: &[String],
    mut act: impl FnMut(&Engine, &skiff_engine::Container) -> Result<(), EngineError>,
) -> anyhow::Result<ExitCode> {
    let engine = root.open()?;
    let mut failed = false;
    for name in containers {
        match engine.find(name).and_then(|c| act(&engine, &c)) {
            Ok(()) => println!("{name}"),
            Err(err) => {
                report(&err, 1);
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Options of `skiff ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    #[command(flatten)]
    root: EngineRoot,
    /// Show every container (default: running ones).
    #[arg(short, long)]
    all: bool,
    /// Print only ids.
    #[arg(short, long)]
    quiet: bool,
    /// Do not truncate ids and commands.
    #[arg(long)]
    no_trunc: bool,
    /// A Go template per container ({{.ID}} {{.Names}} ...), `table TEMPLATE` for aligned
    /// columns under a header, `json`, or `table` (the default).
    #[arg(long)]
    format: Option<String>,
}

impl PsArgs {
    /// Lists containers.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let engine = self.root.open()?;
        let containers: Vec<_> = engine
            .list()?
            .into_iter()
            .filter(|c| self.all || c.is_active())
            .collect();
        if self.quiet {
            for c in &containers {
                let id = c.id();
                println!("{}", if self.no_trunc { id } else { &id[..12] });
            }
            return Ok(ExitCode::SUCCESS);
        }
        let format = match ListFormat::parse(self.format.as_deref(), table::PS_FORMAT) {
            Ok(format) => format,
            Err(err) => {
                eprintln!("{err}");
                return Ok(ExitCode::FAILURE);
            }
        };
        let docs: Vec<_> = containers
            .iter()
            .map(|c| table::ps_document(c, self.no_trunc))
            .collect();
        print!("{}", format.render(table::PS_HEADERS, &docs)?);
        Ok(ExitCode::SUCCESS)
    }
}

/// Options of `skiff exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    root: EngineRoot,
    /// Set an environment variable.
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// User: name|uid[:group|gid].
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory.
    #[arg(short, long = "workdir")]
    workdir: Option<String>,
    /// Keep stdin attached (it always is).
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a terminal (needs --console-socket: its master is sent there).
    #[arg(short, long)]
    tty: bool,
    /// Unix socket to send the terminal's master to (runc's protocol); implies --tty.
    #[arg(long = "console-socket")]
    console_socket: Option<std::path::PathBuf>,
    /// The terminal's initial size, WIDTHxHEIGHT (columns x rows).
    #[arg(long = "console-size", value_parser = parse_console_size)]
    console_size: Option<(u16, u16)>,
    /// The key sequence that detaches (checked as Docker does; the terminal is the console
    /// socket's, so this command has none to watch).
    #[arg(long, value_name = "KEYS")]
    detach_keys: Option<String>,
    /// The container.
    container: String,
    /// The command.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

impl ExecArgs {
    /// Runs the command in the container; exits with its code.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        if let Some(spec) = self.detach_keys.as_deref().filter(|s| !s.is_empty())
            && super::detach_keys::parse(spec).is_err()
        {
            // The daemon's wording for exec.
            eprintln!("Error response from daemon: Invalid escape keys ({spec}) provided");
            return Ok(ExitCode::FAILURE);
        }
        let engine = self.root.open()?;
        let container = match engine.find(&self.container) {
            Ok(c) => c,
            Err(err) => return Ok(report(&err, 1)),
        };
        // Docker looks the container up first.
        if self.interactive && self.tty && !std::io::stdin().is_terminal() {
            return Ok(super::attach::not_a_tty());
        }
        let request = ExecRequest {
            cmd: self.command,
            env: self.env,
            user: self.user,
            working_dir: self.workdir,
            console_socket: self.console_socket,
            console_size: self.console_size,
        };
        if self.tty && request.console_socket.is_none() {
            eprintln!("Error: a terminal needs --console-socket");
            return Ok(ExitCode::from(125));
        }
        match engine.exec(&container, &request) {
            Ok(code) => Ok(exit_code(code)),
            Err(err @ EngineError::StartFailed { .. }) => {
                let code = err.run_exit_code();
                Ok(report(&err, u8::try_from(code).unwrap_or(126)))
            }
            Err(err) => Ok(report(&err, 1)),
        }
    }
}

/// Parses `WIDTHxHEIGHT`.
fn parse_console_size(text: &str) -> Result<(u16, u16), String> {
    let (w, h) = text
        .split_once('x')
        .ok_or_else(|| format!("{text:?} is not WIDTHxHEIGHT"))?;
    let number = |n: &str| n.parse::<u16>().map_err(|e| format!("{text:?}: {e}"));
    Ok((number(w)?, number(h)?))
}

/// Options of `skiff logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    root: EngineRoot,
    /// Keep printing new output until the container stops.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines ("all" for every line).
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Prefix each line with its timestamp.
    #[arg(short, long)]
    timestamps: bool,
    /// The container.
    container: String,
}

impl LogsArgs {
    /// Prints the container's output.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let engine = self.root.open()?;
        let container = match engine.find(&self.container) {
            Ok(c) => c,
            Err(err) => return Ok(report(&err, 1)),
        };
        let tail = match self.tail.as_str() {
            "all" | "-1" => None,
            n => Some(
                n.parse::<usize>()
                    .map_err(|_| anyhow::anyhow!("invalid --tail {n:?}: a number or all"))?,
            ),
        };
        let id = container.id().to_string();
        let mut reader = LogReader::open(&engine.dir(&id).log())?;
        let mut printer = LogPrinter::new(self.timestamps);
        let mut records = reader.read_new()?;
        if let Some(n) = tail {
            records = logs::tail(records, n);
        }
        let print = |printer: &mut LogPrinter, records: &[logs::LogRecord]| {
            let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
            let (mut out, mut err) = (stdout.lock(), stderr.lock());
            for record in records {
                if printer.print(record, &mut out, &mut err).is_err() {
                    return false;
                }
            }
            out.flush().is_ok()
        };
        if !print(&mut printer, &records) || !self.follow {
            return Ok(ExitCode::SUCCESS);
        }
        loop {
            let active = engine.load(&id).map(|c| c.is_active()).unwrap_or(false);
            let records = reader.read_new()?;
            if !print(&mut printer, &records) {
                break;
            }
            if !active && records.is_empty() {
                // Read once more: output written just before the end.
                let last = reader.read_new()?;
                print(&mut printer, &last);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Options of `skiff stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    root: EngineRoot,
    /// Seconds to wait before killing.
    #[arg(short = 't', long = "time", alias = "timeout", default_value_t = 10)]
    time: u64,
    /// The containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

impl StopArgs {
    /// Stops containers (SIGTERM, then SIGKILL after the timeout).
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let timeout = Duration::from_secs(self.time);
        each(&self.root, &self.containers, |engine, c| {
            engine.stop(c, timeout)
        })
    }
}

/// Options of `skiff kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    #[command(flatten)]
    root: EngineRoot,
    /// The signal (name or number).
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    /// The containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

impl KillArgs {
    /// Signals containers' init processes.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let signal = skiff_runtime::container::parse_signal(&self.signal)?;
        each(&self.root, &self.containers, |engine, c| {
            engine.kill(c, signal)
        })
    }
}

/// Starts a stopped container in the background (nothing for a running one).
pub(super) fn start(
    engine: &Engine,
    container: &skiff_engine::Container,
) -> Result<(), EngineError> {
    if container.is_active() {
        return Ok(());
    }
    let program = std::env::current_exe().map_err(EngineError::io("locate", "skiff"))?;
    engine.start(container.id(), &program)?.detach();
    Ok(())
}

/// Options of `skiff restart`.
#[derive(Debug, Args)]
pub struct RestartArgs {
    #[command(flatten)]
    root: EngineRoot,
    /// Seconds to wait before killing.
    #[arg(short = 't', long = "time", alias = "timeout", default_value_t = 10)]
    time: u64,
    /// The containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

impl RestartArgs {
    /// Stops then starts containers.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let timeout = Duration::from_secs(self.time);
        each(&self.root, &self.containers, |engine, c| {
            engine.stop(c, timeout)?;
            start(engine, &engine.load(c.id())?)
        })
    }
}

/// Options of `skiff rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    #[command(flatten)]
    root: EngineRoot,
    /// Kill and remove running containers.
    #[arg(short, long)]
    force: bool,
    /// Remove the containers' anonymous volumes too.
    #[arg(short, long)]
    volumes: bool,
    /// The containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

impl RmArgs {
    /// Removes containers.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let force = self.force;
        let volumes = self.volumes;
        each(&self.root, &self.containers, |engine, c| {
            if volumes {
                engine.remove_with_volumes(c, force)
            } else {
                engine.remove(c, force)
            }
        })
    }
}

/// Options of `skiff inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    root: EngineRoot,
    /// A Go template ({{.State.Status}}, {{json .Config}} ...).
    #[arg(short, long)]
    format: Option<String>,
    /// The containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

impl InspectArgs {
    /// Prints containers' documents.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let engine = self.root.open()?;
        let template = self.format.as_deref().map(Template::parse).transpose()?;
        let mut documents = Vec::new();
        let mut failed = false;
        let mut printed = false;
        for name in &self.containers {
            match engine.find(name) {
                Ok(c) => {
                    let doc = skiff_engine::inspect::document(&engine, &c);
                    match &template {
                        Some(t) => {
                            println!("{}", t.render(&doc)?);
                            printed = true;
                        }
                        None => documents.push(doc),
                    }
                }
                Err(EngineError::NoSuchContainer(_)) => {
                    eprintln!("Error: No such object: {name}");
                    failed = true;
                }
                Err(err) => {
                    report(&err, 1);
                    failed = true;
                }
            }
        }
        match &template {
            None => println!("{}", skiff_engine::inspect::to_pretty_json(&documents)),
            // Docker prints one empty line when a template found nothing at all.
            Some(_) if !printed => println!(),
            Some(_) => {}
        }
        Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}
