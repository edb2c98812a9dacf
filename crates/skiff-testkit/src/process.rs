//! Child processes that are killed and reaped when their guard drops.

use std::process::{Child, Command, Output, Stdio};

use crate::{Result, TestkitError};

/// A running child process, killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
}

impl ChildGuard {
    /// Spawns `command` with stdin closed; `name` is used in errors.
    pub fn spawn(name: &str, command: &mut Command) -> Result<Self> {
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .map_err(|source| TestkitError::Spawn {
                program: name.to_string(),
                source,
            })?;
        Ok(ChildGuard {
            name: name.to_string(),
            child: Some(child),
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Whether the child is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Fails with the child's name if it has already exited; used while waiting for readiness.
    pub fn check_running(&mut self) -> Result<()> {
        if self.is_running() {
            Ok(())
        } else {
            Err(TestkitError::Invalid {
                fixture: "process",
                detail: format!("{} exited early", self.name),
            })
        }
    }

    /// Kills and reaps the child now.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `command` to completion and returns its output, failing with its stderr when it fails.
pub fn run(command: &mut Command) -> Result<Output> {
    let line = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| TestkitError::Spawn {
            program: command.get_program().to_string_lossy().into_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(TestkitError::CommandFailed {
            command: line,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_the_guard_kills_the_child() {
        let mut guard = ChildGuard::spawn("sleep", Command::new("sleep").arg("600")).unwrap();
        let pid = guard.pid();
        assert!(guard.is_running());
        drop(guard);
        // Killed and reaped: the process is gone, not a zombie.
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn a_failing_command_reports_its_stderr() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("boom"), "{message}");
    }
}
