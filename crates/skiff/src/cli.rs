//! The top-level command line of `skiff`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{info, runtime_cli};

/// Skiff: a container engine and a Kubernetes-compatible orchestrator in one binary.
#[derive(Debug, Parser)]
#[command(name = "skiff", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; boxing the large variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// The OCI runtime (runc-compatible); also what a link named `skiff-runc` runs.
    #[command(disable_version_flag = true)]
    Runtime(runtime_cli::RuntimeArgs),
    /// Show what this host offers Skiff: kernel, cgroup layout and controllers, namespaces.
    Info(info::InfoArgs),
}

impl Cli {
    /// Runs the chosen command.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Runtime(args) => args.run(),
            Command::Info(args) => args.run(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definitions_are_consistent() {
        super::Cli::command().debug_assert();
        crate::runtime_cli::RuntimeCli::command().debug_assert();
    }
}
