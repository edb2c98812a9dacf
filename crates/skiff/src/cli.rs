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
    /// Run a command in a new container.
    Run(crate::engine_cli::RunArgs),
    /// Create a new container (start it with `skiff start`).
    Create(crate::engine_cli::CreateArgs),
    /// List containers.
    Ps(crate::engine_cli::PsArgs),
    /// Run a command in a running container.
    Exec(crate::engine_cli::ExecArgs),
    /// Attach to a running container's input, output and terminal.
    Attach(crate::engine_cli::AttachArgs),
    /// Print a container's output.
    Logs(crate::engine_cli::LogsArgs),
    /// Stop containers (SIGTERM, then SIGKILL).
    Stop(crate::engine_cli::StopArgs),
    /// Send a signal to containers.
    Kill(crate::engine_cli::KillArgs),
    /// Start stopped containers (one attached with -a/-i).
    Start(crate::engine_cli::StartArgs),
    /// Restart containers.
    Restart(crate::engine_cli::RestartArgs),
    /// Remove containers.
    Rm(crate::engine_cli::RmArgs),
    /// Show containers' details as JSON or through a Go template.
    Inspect(crate::engine_cli::InspectArgs),
    /// Create a new image from a container's changes.
    Commit(crate::engine_cli::CommitArgs),
    /// Show the processes of a running container.
    Top(crate::engine_cli::TopArgs),
    /// Show containers' resource use (CPU, memory, network, block I/O, processes).
    Stats(crate::engine_cli::StatsArgs),
    /// Manage the engine's data: prune, df.
    System(crate::engine_cli::SystemArgs),
    /// Manage volumes: create, ls, inspect, rm, prune.
    Volume(crate::engine_cli::VolumeArgs),
    /// The per-container monitor (internal).
    #[command(hide = true)]
    Shim(crate::engine_cli::ShimArgs),
    /// The server of container-sized /proc files (internal).
    #[command(hide = true)]
    Procfs(crate::procfs_cli::ProcfsArgs),
    /// Start a single-node cluster: the Kubernetes API server over its store.
    Server(crate::server::ServerArgs),
    /// Join a cluster as a node: register the Node and run its pods.
    Agent(crate::agent::AgentArgs),
    /// The pod sandbox's infra process (internal).
    #[command(hide = true)]
    Pause(crate::agent::PauseArgs),
    /// Pull an image from a registry.
    Pull(crate::image_cli::PullArgs),
    /// Log in to a registry (credentials checked, then kept in the docker config.json).
    Login(crate::image_cli::LoginArgs),
    /// Log out from a registry.
    Logout(crate::image_cli::LogoutArgs),
    /// List images.
    Images(crate::image_cli::ImagesArgs),
    /// Remove images (and the content only they used).
    Rmi(crate::image_cli::RmiArgs),
    /// Manage images: inspect, import, export, prune, ls, rm.
    Image(crate::image_cli::ImageArgs),
    /// Load images from a docker archive (`docker save` format) or OCI layout tar.
    Load(crate::image_cli::LoadArgs),
    /// Save images to a docker archive (`docker save` format).
    Save(crate::image_cli::SaveArgs),
}

impl Cli {
    /// Runs the chosen command.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Runtime(args) => args.run(),
            Command::Info(args) => args.run(),
            Command::Run(args) => args.run(),
            Command::Create(args) => args.run(),
            Command::Ps(args) => args.run(),
            Command::Exec(args) => args.run(),
            Command::Attach(args) => args.run(),
            Command::Logs(args) => args.run(),
            Command::Stop(args) => args.run(),
            Command::Kill(args) => args.run(),
            Command::Start(args) => args.run(),
            Command::Restart(args) => args.run(),
            Command::Rm(args) => args.run(),
            Command::Inspect(args) => args.run(),
            Command::Commit(args) => args.run(),
            Command::Top(args) => args.run(),
            Command::Stats(args) => args.run(),
            Command::System(args) => args.run(),
            Command::Volume(args) => args.run(),
            Command::Shim(args) => args.run(),
            Command::Procfs(args) => args.run(),
            Command::Server(args) => args.run(),
            Command::Agent(args) => args.run(),
            Command::Pause(args) => args.run(),
            Command::Pull(args) => args.run(),
            Command::Login(args) => args.run(),
            Command::Logout(args) => args.run(),
            Command::Images(args) => args.run(),
            Command::Rmi(args) => args.run(),
            Command::Image(args) => args.run(),
            Command::Load(args) => args.run(),
            Command::Save(args) => args.run(),
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
