//! The docker-like container commands: `run`, `create`, `attach`, `ps`, `exec`, `logs`, `stop`, `kill`, `start`,
//! `restart`, `rm`, `inspect`, `commit`, `top`, `stats`, `volume`, `system`, and the hidden `shim` (the per-container monitor),
//! over the engine of `--data-root`. Exit codes are Docker's: `run` exits with the container's
//! code, 125 when the engine failed, 126/127 when the command could not be run.
//!
//! None of these start a tokio runtime before they fork (`exec` and `shim` call the runtime,
//! which refuses to fork a multi-threaded process); `run` may pull a missing image first,
//! on a runtime it drops before it starts the monitor.

mod attach;
mod commit;
mod container_options;
mod create;
mod detach_keys;
mod format;
mod ops;
mod run;
mod start;
mod stats;
mod system;
mod table;
mod top;
mod volume;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use skiff_engine::{Engine, EngineError};

pub use attach::AttachArgs;
pub use commit::CommitArgs;
pub use create::CreateArgs;
pub use ops::{ExecArgs, InspectArgs, KillArgs, LogsArgs, PsArgs, RestartArgs, RmArgs, StopArgs};
pub use run::RunArgs;
pub use start::StartArgs;
pub use stats::StatsArgs;
pub use system::SystemArgs;
pub use top::TopArgs;
pub use volume::VolumeArgs;

/// The data root every Skiff state lives under.
const DEFAULT_DATA_ROOT: &str = "/var/lib/skiff";

/// Where the engine's state lives.
#[derive(Debug, Clone, Args)]
pub struct EngineRoot {
    /// Root of Skiff's persistent state (containers under DATA_ROOT/containers).
    #[arg(long, env = "SKIFF_DATA_ROOT", default_value = DEFAULT_DATA_ROOT)]
    data_root: PathBuf,
}

impl EngineRoot {
    fn open(&self) -> Result<Engine, EngineError> {
        Engine::open(&self.data_root)
    }
}

/// Prints an engine error the way Docker's CLI does and returns `code`.
fn report(err: &EngineError, code: u8) -> ExitCode {
    eprintln!("Error response from daemon: {err}");
    ExitCode::from(code)
}

/// Asks `question` and "Are you sure you want to continue? [y/N]" on the terminal, as Docker's
/// prune commands do; true for a yes.
fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::Write;
    print!("{question}\nAre you sure you want to continue? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

/// The exit code for a container's exit status (0-255).
fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(255))
}

/// Options of the hidden `skiff shim`.
#[derive(Debug, Args)]
pub struct ShimArgs {
    #[command(flatten)]
    root: EngineRoot,
    /// Start the container only once a first client attached (foreground `run -i/-t`).
    #[arg(long)]
    wait_attach: bool,
    /// The container's full id.
    id: String,
}

impl ShimArgs {
    /// Runs the monitor of one container until it ended for good.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        skiff_engine::shim::run(&self.root.data_root, &self.id, self.wait_attach)?;
        Ok(ExitCode::SUCCESS)
    }
}
