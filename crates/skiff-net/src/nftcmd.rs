//! Running `nft` for the executors of the service proxy and the network policies: in the
//! caller's network namespace or, for tests and tools, under `nsenter --net=PATH`, with the
//! script fed on a separate thread so that a large script and a large error output cannot
//! block each other.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// How an `nft` run failed (the executors add what they were doing).
#[derive(Debug)]
pub(crate) enum NftFailure {
    /// `nft` (or `nsenter`) could not be started or waited for.
    Spawn {
        /// The program.
        program: String,
        /// The error.
        source: std::io::Error,
    },
    /// `nft` ran and refused.
    Refused {
        /// Its exit status.
        status: String,
        /// Its stderr, trimmed.
        stderr: String,
    },
}

/// ` in network namespace PATH`, or nothing for the caller's own namespace (for messages).
pub(crate) fn netns_suffix(netns: Option<&Path>) -> String {
    netns
        .map(|p| format!(" in network namespace {}", p.display()))
        .unwrap_or_default()
}

/// Runs `nft ARGS` with `stdin` (if any) and returns its stdout.
pub(crate) fn run(
    netns: Option<&Path>,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, NftFailure> {
    let mut command = match netns {
        Some(path) => {
            let mut net = std::ffi::OsString::from("--net=");
            net.push(path);
            let mut c = Command::new("nsenter");
            c.arg(net).arg("--").arg("nft");
            c
        }
        None => Command::new("nft"),
    };
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let program = format!("{:?}", command.get_program());
    let spawn_error = |source| NftFailure::Spawn {
        program: program.clone(),
        source,
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    let (output, written) = std::thread::scope(|scope| {
        let writer = child.stdin.take().map(|mut pipe| {
            let text = stdin.unwrap_or_default();
            scope.spawn(move || pipe.write_all(text.as_bytes()))
        });
        let output = child.wait_with_output();
        let written = match writer {
            Some(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("stdin writer panicked"))),
            None => Ok(()),
        };
        (output, written)
    });
    let output = output.map_err(spawn_error)?;
    if !output.status.success() {
        return Err(NftFailure::Refused {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    // nft succeeded, so it read the whole script; a write error would be a broken pipe after
    // that, which cannot matter.
    let _ = written;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
