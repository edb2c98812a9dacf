//! The hidden `skiff procfs serve`: the FUSE server of container-sized `/proc` files for one
//! data root (see `skiff-procfs`). The engine starts it on demand; it leaves by itself once
//! no container has used it for `--idle` seconds.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

/// Options of the hidden `skiff procfs`.
#[derive(Debug, Args)]
pub struct ProcfsArgs {
    #[command(subcommand)]
    command: ProcfsCommand,
}

#[derive(Debug, Subcommand)]
enum ProcfsCommand {
    /// Serve DATA_ROOT/procfs/mnt until idle or signalled (internal).
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Root of Skiff's persistent state.
    #[arg(long, env = "SKIFF_DATA_ROOT", default_value = "/var/lib/skiff")]
    data_root: PathBuf,
    /// Seconds without a running container before the server unmounts and exits.
    #[arg(long, env = "SKIFF_PROCFS_IDLE", default_value_t = skiff_procfs::server::DEFAULT_IDLE.as_secs())]
    idle: u64,
}

impl ProcfsArgs {
    /// Runs the chosen subcommand.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            ProcfsCommand::Serve(args) => {
                // To its log file: no colours; fuser's notes on operations it leaves
                // unimplemented (xattrs) are noise.
                let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fuser=error"));
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(filter)
                    .with_ansi(false)
                    .with_writer(std::io::stderr)
                    .try_init();
                skiff_procfs::server::serve(&args.data_root, Duration::from_secs(args.idle))?;
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}
