//! Runs iproute2 (`ip`, `bridge`) and other small programs inside a network namespace.
//!
//! With a namespace path the program runs under `nsenter --net=PATH` (only the network namespace
//! changes); without one it runs in the caller's namespace. Several changes go to one process
//! through `-batch -` so an operation costs one or two spawns.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// A program that could not be run or exited non-zero.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// The command line (and the batch it was fed), for the reader.
    pub command: String,
    /// What it wrote to stderr, trimmed, or why it could not start.
    pub stderr: String,
    /// Its exit status, or "not run".
    pub status: String,
}

impl Failure {
    /// Whether the failure says the object to create already exists.
    pub fn already_exists(&self) -> bool {
        self.stderr.contains("File exists") || self.stderr.contains("already exists")
    }

    /// Stderr and exit status, for an error message.
    pub fn detail(&self) -> String {
        if self.stderr.is_empty() {
            self.status.clone()
        } else {
            format!("{} ({})", self.stderr, self.status)
        }
    }

    /// Whether the failure says a device is missing.
    pub fn no_device(&self) -> bool {
        self.stderr.contains("Cannot find device") || self.stderr.contains("does not exist")
    }
}

/// Runs `program args` in `netns` (if given), feeding `stdin`, and returns its stdout.
pub(crate) async fn run(
    netns: Option<&Path>,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, Failure> {
    let mut command = match netns {
        Some(path) => {
            let mut net = std::ffi::OsString::from("--net=");
            net.push(path);
            let mut command = Command::new("nsenter");
            command.arg(net).arg("--").arg(program);
            command
        }
        None => Command::new(program),
    };
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let describe = || {
        let mut line = match netns {
            Some(path) => format!("nsenter --net={} -- {program}", path.display()),
            None => program.to_string(),
        };
        for arg in args {
            line.push(' ');
            line.push_str(arg);
        }
        if let Some(batch) = stdin {
            line.push_str(" <<< ");
            line.push_str(&batch.trim_end().replace('\n', "; "));
        }
        line
    };
    let fail = |stderr: String| Failure {
        command: describe(),
        stderr,
        status: "not run".to_string(),
    };
    let mut child = command
        .spawn()
        .map_err(|error| fail(format!("could not start: {error}")))?;
    if let (Some(batch), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(batch.as_bytes())
            .await
            .map_err(|error| fail(format!("could not write the batch: {error}")))?;
        drop(pipe);
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|error| fail(format!("could not wait: {error}")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Failure {
            command: describe(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            status: output.status.to_string(),
        })
    }
}

/// Runs `ip -batch -` with `lines` in `netns`.
pub(crate) async fn ip_batch(netns: Option<&Path>, lines: &[String]) -> Result<(), Failure> {
    let mut batch = lines.join("\n");
    batch.push('\n');
    run(netns, "ip", &["-batch", "-"], Some(&batch))
        .await
        .map(drop)
}

/// Runs `program args` with `-j` output in `netns` and parses the JSON it prints (an empty
/// output reads as an empty array).
pub(crate) async fn json(
    netns: Option<&Path>,
    program: &str,
    args: &[&str],
) -> Result<Vec<serde_json::Value>, Failure> {
    let stdout = run(netns, program, args, None).await?;
    if stdout.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(&stdout).map_err(|error| Failure {
        command: format!("{program} {}", args.join(" ")),
        stderr: format!("unreadable JSON output ({error}): {}", stdout.trim()),
        status: "exit status: 0".to_string(),
    })
}
