//! The container's init: the forked child of `create` that enters or creates the namespaces,
//! sets up the root filesystem, reports ready, waits for `start` and execs the user program.
//!
//! Stage one joins and creates namespaces; when the container has a PID namespace it forks
//! stage two, which is pid 1 inside, and exits. Everything runs in a freshly forked,
//! single-threaded child; failures before `Ready` go back to `create` as a message.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use skiff_sys::process::{self as sysproc, Forked};
use skiff_sys::{NamespaceKind, SysError, namespace};

use crate::plan::Plan;
use crate::rootfs::{self, RootfsError};
use crate::sync::{Channel, Message, SyncError};

/// Why the init could not get the container ready.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A system call failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// Setting up the root filesystem failed.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// Talking to `create` failed.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The program to run is not in the container.
    #[error("exec: {program:?}: executable file not found in $PATH")]
    NotFound {
        /// `process.args[0]`.
        program: String,
    },
    /// The working directory is missing or not a directory.
    #[error("chdir to cwd {cwd:?} set in config.json: {source}")]
    Cwd {
        /// `process.cwd`.
        cwd: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Writing a sysctl or oom_score_adj failed.
    #[error("write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// What the init needs besides the plan.
#[derive(Debug)]
pub struct InitContext {
    /// The init's end of the channel to `create`.
    pub channel: Channel,
    /// A path handle on the exec FIFO.
    pub fifo: OwnedFd,
    /// chroot instead of pivot_root.
    pub no_pivot: bool,
}

/// Runs the init in the freshly forked child. Never returns: it execs the user program or
/// exits non-zero.
pub fn run(plan: &Plan, mut ctx: InitContext) -> ! {
    let result = stage_one(plan, &mut ctx);
    match result {
        Ok(never) => match never {},
        Err(err) => {
            let _ = ctx.channel.send(&Message::Failed {
                message: err.to_string(),
            });
            sysproc::exit_now(1)
        }
    }
}

enum Never {}

fn stage_one(plan: &Plan, ctx: &mut InitContext) -> Result<Never, InitError> {
    ctx.channel.expect(&Message::Go, "go")?;
    for (kind, path) in &plan.join_namespaces {
        namespace::join(*kind, path)?;
    }
    let mut new = plan.new_namespaces.clone();
    if new.contains(&NamespaceKind::User) {
        namespace::unshare(&[NamespaceKind::User])?;
        ctx.channel.send(&Message::NeedIdMaps)?;
        ctx.channel
            .expect(&Message::IdMapsWritten, "id maps written")?;
        sysproc::set_identity(0, 0, &[])?;
        new.retain(|k| *k != NamespaceKind::User);
    }
    if !new.is_empty() {
        namespace::unshare(&new)?;
    }
    if plan.needs_pid_fork() {
        match sysproc::fork_single_threaded()? {
            Forked::Parent(child) => {
                ctx.channel.send(&Message::InitPid { pid: child })?;
                sysproc::exit_now(0);
            }
            Forked::Child => {}
        }
    } else {
        ctx.channel.send(&Message::InitPid {
            pid: std::process::id() as i32,
        })?;
    }
    stage_two(plan, ctx)
}

fn stage_two(plan: &Plan, ctx: &mut InitContext) -> Result<Never, InitError> {
    sysproc::new_session()?;
    if plan.has_own_mount_namespace() {
        rootfs::prepare(plan, ctx.no_pivot)?;
    }
    if let Some(hostname) = &plan.hostname {
        sysproc::set_hostname(hostname)?;
    }
    if let Some(domainname) = &plan.domainname {
        sysproc::set_domainname(domainname)?;
    }
    for (key, value) in &plan.sysctls {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|source| InitError::Write { path, source })?;
    }
    if let Some(adj) = plan.process.oom_score_adj {
        let path = PathBuf::from("/proc/self/oom_score_adj");
        std::fs::write(&path, adj.to_string())
            .map_err(|source| InitError::Write { path, source })?;
    }
    if plan.has_own_mount_namespace() {
        rootfs::finish(plan)?;
    }
    let program = resolve_program(&plan.process.args[0], &plan.process.env)?;
    let cwd = &plan.process.cwd;
    std::env::set_current_dir(cwd).map_err(|source| InitError::Cwd {
        cwd: cwd.clone(),
        source,
    })?;
    // A cwd reached through a leaked host descriptor would read as "(unreachable)/...".
    match std::env::current_dir() {
        Ok(now) if now.is_absolute() => {}
        _ => {
            return Err(InitError::Cwd {
                cwd: cwd.clone(),
                source: std::io::Error::other(
                    "the working directory is outside the container's root",
                ),
            });
        }
    }
    // Nothing of the runtime's may reach the user program: every descriptor above stdio
    // (the channel and the FIFO handle included) closes on exec.
    skiff_sys::fd::cloexec_all_except(&[])?;

    ctx.channel.send(&Message::Ready)?;
    skiff_sys::fifo::signal_through_handle(&ctx.fifo)?;

    if let Some(mask) = plan.process.umask {
        sysproc::set_umask(mask);
    }
    for (name, soft, hard) in &plan.process.rlimits {
        sysproc::set_rlimit(name, *soft, *hard)?;
    }
    let p = &plan.process;
    sysproc::set_identity(p.uid, p.gid, &p.additional_gids)?;
    if p.no_new_privileges {
        sysproc::set_no_new_privileges()?;
    }
    Err(sysproc::exec(&program, &p.args, &p.env).into())
}

/// Finds `program` the way `execvp` would, on the `PATH` of the container's environment.
fn resolve_program(program: &str, env: &[String]) -> Result<String, InitError> {
    if program.contains('/') {
        return if is_executable(Path::new(program)) {
            Ok(program.to_string())
        } else {
            Err(InitError::NotFound {
                program: program.to_string(),
            })
        };
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| is_executable(candidate))
        .map(|found| found.to_string_lossy().into_owned())
        .ok_or_else(|| InitError::NotFound {
            program: program.to_string(),
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_the_container_path() {
        let env = vec!["PATH=/nonexistent:/bin".to_string()];
        assert_eq!(resolve_program("sh", &env).unwrap(), "/bin/sh");
        assert!(matches!(
            resolve_program("no-such-program", &env),
            Err(InitError::NotFound { .. })
        ));
        assert_eq!(resolve_program("/bin/sh", &[]).unwrap(), "/bin/sh");
    }
}
