//! The runc-compatible OCI runtime command line: `skiff runtime ...` and `skiff-runc ...`.
//!
//! Global flags match runc's so engines can pass them unchanged. The runtime issue adds
//! create/start/kill/delete/exec and the rest; `state` reads the state records today.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use skiff_runtime::StateStore;

/// The runtime-spec version this runtime implements.
pub const OCI_SPEC_VERSION: &str = "1.2.0";

/// `skiff-runc`: the OCI runtime of Skiff, runc-compatible.
#[derive(Debug, Parser)]
#[command(name = "skiff-runc", disable_version_flag = true)]
pub struct RuntimeCli {
    #[command(flatten)]
    args: RuntimeArgs,
}

impl RuntimeCli {
    /// Runs the chosen runtime command.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        self.args.run()
    }
}

/// Global runtime flags (as runc has them) and the runtime command.
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// Root directory for the containers' state records.
    #[arg(long, global = true, default_value = "/run/skiff-runc")]
    root: PathBuf,
    /// Log file (accepted for runc compatibility; errors also go to stderr).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format, text or json (accepted for runc compatibility).
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: String,
    /// Use systemd for cgroups: refused, these hosts run no systemd.
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// Debug logging (accepted for runc compatibility).
    #[arg(long, global = true)]
    debug: bool,
    /// Print the runtime and runtime-spec versions.
    #[arg(short = 'v', long)]
    version: bool,
    #[command(subcommand)]
    command: Option<RuntimeCommand>,
}

#[derive(Debug, Subcommand)]
enum RuntimeCommand {
    /// Print the state of a container as JSON.
    State {
        /// The container id.
        id: String,
    },
}

impl RuntimeArgs {
    /// Runs the chosen runtime command.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        if self.systemd_cgroup {
            anyhow::bail!(
                "--systemd-cgroup is not supported: this runtime manages cgroupfs directly; drop the flag"
            );
        }
        if self.version {
            println!(
                "skiff-runc version {}\nspec: {OCI_SPEC_VERSION}",
                env!("CARGO_PKG_VERSION")
            );
            return Ok(ExitCode::SUCCESS);
        }
        let store = StateStore::new(&self.root);
        match self.command {
            Some(RuntimeCommand::State { id }) => {
                let state = store.load(&id)?;
                println!("{}", serde_json::to_string_pretty(&state)?);
                Ok(ExitCode::SUCCESS)
            }
            None => anyhow::bail!("no runtime command given: see `skiff-runc --help`"),
        }
    }
}
