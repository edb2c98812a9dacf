//! The engine's side: register a container as a user of the server, make sure the server
//! runs (starting it as a process of its own if not), and unregister at the end.
//!
//! A user is a file `users/<id>` holding the pid and start time of the process that keeps
//! the container (its monitor): a user whose process is gone does not count, so a killed
//! monitor does not keep the server alive for ever. Registering and the server's idle
//! decision are serialised by `users.lock`, so a container never gets the files of a
//! server that is unmounting.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::{ProcfsDir, ProcfsError, Result};

/// How long [`ensure`] waits for a new server's mount.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);

/// Records `id` as a user of the server of `data_root`: this process, while it lives.
pub fn register(data_root: &Path, id: &str) -> Result<()> {
    let dir = ProcfsDir::new(data_root);
    let users = dir.users();
    std::fs::create_dir_all(&users).map_err(ProcfsError::io("create dir", &users))?;
    let _shared = lock(&dir.users_lock(), FlockArg::LockShared)?;
    let me = std::process::id();
    let start = start_time(me).unwrap_or(0);
    let path = users.join(id);
    std::fs::write(&path, format!("{me} {start}\n")).map_err(ProcfsError::io("write", &path))
}

/// Removes the user `id`.
pub fn unregister(data_root: &Path, id: &str) {
    let _ = std::fs::remove_file(ProcfsDir::new(data_root).users().join(id));
}

/// Whether the server of `data_root` is up: its mount answers.
pub fn is_served(data_root: &Path) -> bool {
    is_mounted(data_root) && std::fs::metadata(ProcfsDir::new(data_root).file("meminfo")).is_ok()
}

/// Makes sure the server of `data_root` runs, starting `program procfs serve --data-root
/// DATA` (`program` is the `skiff` binary) if it does not, and returns the (absolute) mount
/// point.
/// Call [`register`] first, so that the server does not leave before the container uses it.
/// The new server is a process of its own (it makes its own session); it outlives the
/// caller, whose child it stays until the caller exits (a caller that reaps every child, like
/// the monitor, reaps it if it leaves first).
pub fn ensure(data_root: &Path, program: &Path) -> Result<PathBuf> {
    // Absolute, for the bundle's bind mounts and for the server, which leaves its directory.
    let data_root =
        &std::path::absolute(data_root).map_err(ProcfsError::io("resolve", data_root))?;
    let dir = ProcfsDir::new(data_root);
    if is_served(data_root) {
        return Ok(dir.mount_point());
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(ProcfsError::NoFuse);
    }
    std::fs::create_dir_all(dir.path()).map_err(ProcfsError::io("create dir", dir.path()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.log())
        .map_err(ProcfsError::io("open", dir.log()))?;
    let mut child = Command::new(program)
        .arg("procfs")
        .arg("serve")
        .arg("--data-root")
        .arg(data_root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(ProcfsError::io("start the /proc server", program))?;
    let not_started = |detail: String| ProcfsError::NotStarted {
        data_root: data_root.to_path_buf(),
        detail,
        log: dir.log(),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    let mut exited_ok = false;
    while Instant::now() < deadline {
        if is_served(data_root) {
            return Ok(dir.mount_point());
        }
        if !exited_ok {
            match child.try_wait() {
                // Another server got the lock first: wait for its mount.
                Ok(Some(status)) if status.success() => exited_ok = true,
                Ok(Some(status)) => return Err(not_started(format!("it exited with {status}"))),
                Ok(None) => {}
                Err(err) => return Err(not_started(format!("cannot wait for it: {err}"))),
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(not_started(format!(
        "no mount after {} s",
        START_TIMEOUT.as_secs()
    )))
}

/// Stops the server of `data_root`, if one runs, and waits up to `timeout` for it to leave
/// (SIGTERM: it unmounts and exits). A mount left behind (a server killed outright) is
/// detached. For tests and tools that remove a data root; the engine never needs it.
pub fn stop(data_root: &Path, timeout: Duration) -> Result<()> {
    let dir = ProcfsDir::new(data_root);
    let pid = std::fs::read_to_string(dir.pid_file())
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok());
    if let Some(pid) = pid {
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        // The server removes its pid file as it leaves; a pid whose process is gone is done.
        while dir.pid_file().exists()
            && nix::sys::signal::kill(pid, None).is_ok()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if is_mounted(data_root) {
        nix::mount::umount2(&dir.mount_point(), nix::mount::MntFlags::MNT_DETACH).map_err(
            |source| ProcfsError::Sys {
                op: "unmount the /proc server's mount",
                source,
            },
        )?;
    }
    Ok(())
}

/// Whether a FUSE filesystem (live or dead) is mounted at the server's mount point.
pub fn is_mounted(data_root: &Path) -> bool {
    nix::sys::statfs::statfs(&ProcfsDir::new(data_root).mount_point())
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC)
}

/// Takes `flock` on `path` (created if missing), blocking.
pub(crate) fn lock(path: &Path, arg: FlockArg) -> Result<Flock<File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(ProcfsError::io("open", path))?;
    Flock::lock(file, arg).map_err(|(_, source)| ProcfsError::Sys {
        op: "flock",
        source,
    })
}

/// The start time of `pid` in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 1..)?;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// How many registered users are alive; files of dead users are removed.
pub(crate) fn live_users(dir: &ProcfsDir) -> usize {
    let Ok(entries) = std::fs::read_dir(dir.users()) else {
        return 0;
    };
    let mut live = 0;
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let mut parts = text.split_whitespace();
        let pid: Option<u32> = parts.next().and_then(|p| p.parse().ok());
        let start: Option<u64> = parts.next().and_then(|s| s.parse().ok());
        let alive = match (pid, start) {
            (Some(pid), Some(start)) => start_time(pid).is_some_and(|s| s == start || start == 0),
            _ => false,
        };
        if alive {
            live += 1;
        } else if !text.is_empty() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_user_counts_while_its_process_lives() {
        let data = tempfile::tempdir().unwrap();
        let dir = ProcfsDir::new(data.path());
        assert_eq!(live_users(&dir), 0);
        register(data.path(), "abc").unwrap();
        assert_eq!(live_users(&dir), 1);
        // A user whose process is gone (wrong start time) is dropped.
        std::fs::write(
            dir.users().join("dead"),
            format!("{} 1\n", std::process::id()),
        )
        .unwrap();
        assert_eq!(live_users(&dir), 1);
        assert!(!dir.users().join("dead").exists());
        unregister(data.path(), "abc");
        assert_eq!(live_users(&dir), 0);
    }

    #[test]
    fn a_server_that_exits_at_once_is_an_error_naming_its_log() {
        if !Path::new("/dev/fuse").exists() {
            return; // ensure stops earlier, with NoFuse
        }
        let data = tempfile::tempdir().unwrap();
        let err = ensure(data.path(), Path::new("/bin/false")).unwrap_err();
        assert!(matches!(err, ProcfsError::NotStarted { .. }), "{err}");
        assert!(err.to_string().contains("server.log"), "{err}");
    }

    #[test]
    fn nothing_is_served_on_a_fresh_data_root() {
        let data = tempfile::tempdir().unwrap();
        assert!(!is_served(data.path()));
    }
}
