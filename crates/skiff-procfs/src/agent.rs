//! The seccomp agent: answers `sysinfo(2)` for containers, which no file can change (busybox
//! `free` asks the kernel rather than `/proc/meminfo`), and `sched_getaffinity(2)` for those
//! whose spec notifies it too (`nproc` under a CPU limit that does not pin: pods).
//!
//! The engine gives each container a seccomp rule that notifies `sysinfo` and names
//! `DATA/procfs/seccomp.sock` as `linux.seccomp.listenerPath`; the runtime connects there and
//! sends the container's listener with the OCI `ContainerProcessState` JSON. One thread
//! accepts those; each listener gets a thread of its own that waits for notifications (never
//! the FUSE threads), renders the caller's `/proc/meminfo`, `uptime` and `loadavg` exactly as
//! the FUSE side does, and writes the `struct sysinfo` into the caller's memory through
//! `/proc/PID/mem` — after checking that the notification is still pending, so a reused pid
//! never gets it. Any other notified syscall continues as if unfiltered; a failed write
//! answers EFAULT. A listener's thread ends once no process uses its filter.
//!
//! If the server goes away, the kernel answers the notified `sysinfo` of running containers
//! with ENOSYS; the server only leaves once no registered container is alive.

use std::io::ErrorKind;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use skiff_cgroups::Mounts;
use skiff_sys::seccomp::{self, Notification, Response};

use crate::figures::Figures;
use crate::fs::{Loads, render};
use crate::sysinfo::SysInfo;
use crate::{FILES, ProcfsDir, ProcfsError, Result};

/// `AUDIT_ARCH_X86_64`.
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;

/// How long a wait lasts before the stop flag is checked again, in milliseconds.
const POLL_MS: u16 = 500;

/// The largest state message taken from the runtime.
const MAX_STATE: usize = 64 * 1024;

/// Binds the agent's socket (root only) and starts the thread that accepts listeners.
pub(crate) fn start(
    dir: &ProcfsDir,
    mounts: Mounts,
    loads: Loads,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    let path = dir.agent_socket();
    let _ = std::fs::remove_file(&path);
    let socket = UnixListener::bind(&path).map_err(ProcfsError::io("bind", &path))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(ProcfsError::io("chmod", &path))?;
    socket
        .set_nonblocking(true)
        .map_err(ProcfsError::io("set non-blocking", &path))?;
    std::thread::Builder::new()
        .name("seccomp-agent".into())
        .spawn(move || accept_loop(&socket, &mounts, &loads, &stop))
        .map_err(ProcfsError::io(
            "start the seccomp agent for",
            dir.agent_socket(),
        ))
}

fn accept_loop(socket: &UnixListener, mounts: &Mounts, loads: &Loads, stop: &Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let stream = match socket.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                wait_readable(socket.as_fd());
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "seccomp agent: accept");
                wait_readable(socket.as_fd());
                continue;
            }
        };
        match take_listener(&stream) {
            Ok((listener, container)) => {
                let (mounts, loads, stop) = (mounts.clone(), loads.clone(), stop.clone());
                let spawned = std::thread::Builder::new()
                    .name("seccomp-listener".into())
                    .spawn(move || serve_listener(&listener, &mounts, &loads, &stop));
                match spawned {
                    Ok(_) => tracing::info!(%container, "seccomp agent: serving sysinfo"),
                    Err(e) => tracing::warn!(%container, error = %e, "seccomp agent: no thread"),
                }
            }
            Err(detail) => tracing::warn!(%detail, "seccomp agent: refused a connection"),
        }
    }
}

/// Waits up to [`POLL_MS`] for the socket to have a connection.
fn wait_readable(fd: std::os::fd::BorrowedFd<'_>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::from(POLL_MS));
}

/// Reads the runtime's one message: the `ContainerProcessState` JSON with the listener.
/// Returns the listener and the container's id (for the log).
fn take_listener(stream: &UnixStream) -> std::result::Result<(OwnedFd, String), String> {
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(Duration::from_secs(5))))
        .map_err(|e| e.to_string())?;
    let (data, fd) = seccomp::recv_with_fd(stream, MAX_STATE).map_err(|e| e.to_string())?;
    let state: serde_json::Value =
        serde_json::from_slice(&data).map_err(|e| format!("the state is not JSON: {e}"))?;
    let names = state["fds"].as_array().cloned().unwrap_or_default();
    if !names.iter().any(|n| n == "seccompFd") {
        return Err("the state names no seccompFd".into());
    }
    let listener = fd.ok_or("the message carried no descriptor")?;
    let container = state["state"]["id"].as_str().unwrap_or("?").to_string();
    Ok((listener, container))
}

/// Answers the notifications of one listener until no process uses its filter or the
/// server stops.
fn serve_listener(listener: &OwnedFd, mounts: &Mounts, loads: &Loads, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match seccomp::wait_listener(listener.as_fd(), POLL_MS) {
            None => return,
            Some(false) => continue,
            Some(true) => {}
        }
        let notification = match seccomp::receive(listener.as_fd()) {
            Ok(n) => n,
            // The caller went away between the poll and the receive.
            Err(e) if e.errno == nix::errno::Errno::ENOENT => continue,
            Err(e) => {
                tracing::warn!(error = %e, "seccomp agent: listener failed");
                return;
            }
        };
        let Some(response) = answer(listener, &notification, mounts, loads) else {
            continue;
        };
        // ENOENT: the caller was interrupted meanwhile; nothing to do.
        let _ = seccomp::respond(listener.as_fd(), notification.id, response);
    }
}

/// The answer to one notification; `None` when its caller is no longer waiting.
fn answer(
    listener: &OwnedFd,
    n: &Notification,
    mounts: &Mounts,
    loads: &Loads,
) -> Option<Response> {
    if n.arch != AUDIT_ARCH_X86_64 {
        return Some(Response::Continue);
    }
    match i64::from(n.nr) {
        nix::libc::SYS_sysinfo => answer_sysinfo(listener, n, mounts, loads),
        nix::libc::SYS_sched_getaffinity => answer_affinity(listener, n, mounts),
        _ => Some(Response::Continue),
    }
}

/// `sysinfo(2)`: the caller's memory, uptime and loads as its `/proc` files show them.
fn answer_sysinfo(
    listener: &OwnedFd,
    n: &Notification,
    mounts: &Mounts,
    loads: &Loads,
) -> Option<Response> {
    let file = |name: &str| {
        FILES
            .iter()
            .position(|f| *f == name)
            .map(|i| render(mounts, loads, i, n.pid))
            .unwrap_or_default()
    };
    let info = SysInfo::from_files(&file("meminfo"), &file("uptime"), &file("loadavg"));
    write_answer(listener, n, &info.to_bytes(), n.args[0], 0)
}

/// Writes `bytes` at `address` in the caller's memory and answers `value`; EFAULT when the
/// write fails; `None` when the caller no longer waits.
fn write_answer(
    listener: &OwnedFd,
    n: &Notification,
    bytes: &[u8],
    address: u64,
    value: i64,
) -> Option<Response> {
    let memory = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{}/mem", n.pid));
    // The pid named in the notification may have been reused by now: only once the kernel
    // says the notification is still pending is the open file the caller's memory.
    if !seccomp::id_valid(listener.as_fd(), n.id) {
        return None;
    }
    let written = memory.and_then(|m| m.write_all_at(bytes, address));
    Some(match written {
        Ok(()) => Response::Value(value),
        Err(_) => Response::Errno(nix::libc::EFAULT),
    })
}

/// `sched_getaffinity(0, len, mask)`: the caller's own mask cut to its cgroup's CPU quota
/// ([`crate::affinity`]). Another thread's mask (a pid other than 0), a caller without a
/// quota or with no more CPUs than it, and any failure leave the call to the kernel, which
/// then gives the caller its own answer (EINVAL for a short buffer, say).
fn answer_affinity(listener: &OwnedFd, n: &Notification, mounts: &Mounts) -> Option<Response> {
    if n.args[0] != 0 {
        return Some(Response::Continue);
    }
    let Some((quota, period)) = Figures::cpu_of_process(n.pid, mounts).quota else {
        return Some(Response::Continue);
    };
    let len = usize::try_from(n.args[1]).unwrap_or(usize::MAX);
    let Ok(tid) = i32::try_from(n.pid) else {
        return Some(Response::Continue);
    };
    let Ok(mask) = skiff_sys::process::affinity_bytes(tid, len) else {
        return Some(Response::Continue);
    };
    let Some(cut) = crate::affinity::cut_mask(&mask, crate::cpu::quota_cpus(quota, period)) else {
        return Some(Response::Continue);
    };
    let size = i64::try_from(cut.len()).unwrap_or(0);
    write_answer(listener, n, &cut, n.args[2], size)
}
