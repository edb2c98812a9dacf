//! `skiff`: one binary for a container engine and a Kubernetes-compatible orchestrator.
//!
//! This is the composition root: it parses the command line, picks concrete implementations
//! and reports errors as one line each. Run through a link named `skiff-runc` it is the OCI
//! runtime command line (`skiff runtime`), which is how podman and containerd drive it.

mod agent;
mod builtin;
mod cli;
mod cluster_network;
mod cluster_secrets;
mod engine_cli;
mod image_cli;
mod info;
mod node_credentials;
mod priority_classes;
mod procfs_cli;
mod runtime_cli;
mod server;
mod storage_class;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

/// The name under which the binary acts as a runc-compatible runtime.
const RUNTIME_LINK_NAME: &str = "skiff-runc";

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let invoked_as = args
        .first()
        .and_then(|arg0| Path::new(arg0).file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let result = if invoked_as == RUNTIME_LINK_NAME {
        runtime_cli::RuntimeCli::parse_from(args).run()
    } else {
        cli::Cli::parse_from(args).run()
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{invoked_as}: {err:#}");
            ExitCode::FAILURE
        }
    }
}
