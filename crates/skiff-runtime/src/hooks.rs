//! OCI lifecycle hooks: programs run at fixed points with the container's state on stdin.
//!
//! prestart and createRuntime run in the runtime's namespaces (by `create`), createContainer in
//! the container's namespaces before `pivot_root` and startContainer just before the user
//! program (both by the init), poststart by `start` and poststop by `delete`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The program could not be started.
    #[error("{stage} hook {path}: {source}")]
    Spawn {
        /// The lifecycle point.
        stage: &'static str,
        /// The program.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The program exited non-zero.
    #[error("{stage} hook {path} failed with {status}: {stderr}")]
    Failed {
        /// The lifecycle point.
        stage: &'static str,
        /// The program.
        path: PathBuf,
        /// Its exit status.
        status: String,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// The program ran past its timeout and was killed.
    #[error("{stage} hook {path} timed out after {seconds} s")]
    Timeout {
        /// The lifecycle point.
        stage: &'static str,
        /// The program.
        path: PathBuf,
        /// The timeout.
        seconds: u64,
    },
}

/// One hook of `config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// Absolute path of the program.
    pub path: PathBuf,
    /// argv (argv[0] included), as the spec gives it.
    pub args: Vec<String>,
    /// Environment.
    pub env: Vec<String>,
    /// Seconds before the hook is killed.
    pub timeout: Option<u64>,
}

/// The hooks of every lifecycle point.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    /// Deprecated; run with createRuntime.
    pub prestart: Vec<Hook>,
    /// After the container's namespaces exist, in the runtime's namespaces.
    pub create_runtime: Vec<Hook>,
    /// In the container's namespaces, before pivot_root.
    pub create_container: Vec<Hook>,
    /// In the container, just before the user program.
    pub start_container: Vec<Hook>,
    /// After the user program started.
    pub poststart: Vec<Hook>,
    /// After the container is deleted.
    pub poststop: Vec<Hook>,
}

impl Hooks {
    /// Reads the hooks of a spec.
    pub fn from_spec(hooks: Option<&oci_spec::runtime::Hooks>) -> Hooks {
        let Some(hooks) = hooks else {
            return Hooks::default();
        };
        let convert = |list: &Option<Vec<oci_spec::runtime::Hook>>| -> Vec<Hook> {
            list.clone()
                .unwrap_or_default()
                .iter()
                .map(|h| Hook {
                    path: h.path().clone(),
                    args: h.args().clone().unwrap_or_default(),
                    env: h.env().clone().unwrap_or_default(),
                    timeout: h.timeout().and_then(|t| u64::try_from(t).ok()),
                })
                .collect()
        };
        #[allow(deprecated)]
        let prestart = convert(hooks.prestart());
        Hooks {
            prestart,
            create_runtime: convert(hooks.create_runtime()),
            create_container: convert(hooks.create_container()),
            start_container: convert(hooks.start_container()),
            poststart: convert(hooks.poststart()),
            poststop: convert(hooks.poststop()),
        }
    }

    /// Whether any hook runs between the init's set-up steps (so the init must pause for them).
    pub fn needs_create_round_trip(&self) -> bool {
        !self.prestart.is_empty() || !self.create_runtime.is_empty()
    }
}

/// Runs `hooks` one after the other, each with `state` (the state JSON) on stdin; the first
/// failure stops the rest.
pub fn run(stage: &'static str, hooks: &[Hook], state: &str) -> Result<(), HookError> {
    for hook in hooks {
        run_one(stage, hook, state)?;
    }
    Ok(())
}

fn run_one(stage: &'static str, hook: &Hook, state: &str) -> Result<(), HookError> {
    let spawn_err = |source| HookError::Spawn {
        stage,
        path: hook.path.clone(),
        source,
    };
    let mut command = Command::new(&hook.path);
    if hook.args.len() > 1 {
        command.args(&hook.args[1..]);
    }
    if let Some(argv0) = hook.args.first() {
        std::os::unix::process::CommandExt::arg0(&mut command, argv0);
    }
    command.env_clear();
    for pair in &hook.env {
        if let Some((key, value)) = pair.split_once('=') {
            command.env(key, value);
        }
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: ignore EPIPE.
        let _ = stdin.write_all(state.as_bytes());
    }
    let deadline = hook
        .timeout
        .map(|s| Instant::now() + Duration::from_secs(s));
    loop {
        match child.try_wait().map_err(spawn_err)? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                return Err(HookError::Failed {
                    stage,
                    path: hook.path.clone(),
                    status: status.to_string(),
                    stderr: stderr.trim().to_string(),
                });
            }
            None => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::Timeout {
                stage,
                path: hook.path.clone(),
                seconds: hook.timeout.unwrap_or(0),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(script: &str, timeout: Option<u64>) -> Hook {
        Hook {
            path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["X=1".into()],
            timeout,
        }
    }

    #[test]
    fn a_hook_reads_the_state_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("state");
        let script = format!("cat > {} && test \"$X\" = 1", out.display());
        run("poststart", &[hook(&script, None)], r#"{"id":"c1"}"#).unwrap();
        assert_eq!(std::fs::read_to_string(out).unwrap(), r#"{"id":"c1"}"#);
    }

    #[test]
    fn a_failing_hook_stops_the_rest_and_says_why() {
        let err = run(
            "createRuntime",
            &[hook("echo nope >&2; exit 4", None), hook("exit 0", None)],
            "{}",
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("createRuntime") && message.contains("nope"),
            "{message}"
        );
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed() {
        let err = run("prestart", &[hook("sleep 30", Some(1))], "{}").unwrap_err();
        assert!(matches!(err, HookError::Timeout { .. }), "{err}");
    }
}
