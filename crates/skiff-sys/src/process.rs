//! Process-level calls: fork, exec, identity, session, limits, `prctl` flags and CPU affinity.

use std::ffi::CString;
use std::os::fd::AsFd;

use nix::unistd::{ForkResult, Gid, Pid, Uid};

use crate::error::{SysError, SysResult};

/// A `prctl` call failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// `PR_SET_CHILD_SUBREAPER` or `PR_GET_CHILD_SUBREAPER` failed.
    #[error("{operation} child subreaper: {source}")]
    Subreaper {
        /// "set" or "get".
        operation: &'static str,
        /// The errno.
        source: nix::Error,
    },
}

/// Makes the calling process a child subreaper: orphaned descendants are re-parented to it
/// rather than to init, so a container monitor can reap the container's processes.
pub fn set_child_subreaper(enable: bool) -> Result<(), ProcessError> {
    nix::sys::prctl::set_child_subreaper(enable).map_err(|source| ProcessError::Subreaper {
        operation: "set",
        source,
    })
}

/// Whether the calling process is a child subreaper.
pub fn is_child_subreaper() -> Result<bool, ProcessError> {
    nix::sys::prctl::get_child_subreaper().map_err(|source| ProcessError::Subreaper {
        operation: "get",
        source,
    })
}

/// Which side of a fork this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// The parent, with the child's pid.
    Parent(i32),
    /// The child.
    Child,
}

/// The number of threads of the calling process, from `/proc/self/status`.
pub fn thread_count() -> SysResult<usize> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| SysError::from_io("read", "/proc/self/status", &e))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or(SysError {
            op: "parse thread count of",
            target: "/proc/self/status".into(),
            errno: nix::errno::Errno::EINVAL,
        })
}

/// `fork(2)`, refused unless the calling process has exactly one thread: after a fork only the
/// calling thread exists in the child, so locks held by other threads (the allocator's among
/// them) would never be released. The runtime's command line is single-threaded by design.
pub fn fork_single_threaded() -> SysResult<Forked> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(SysError {
            op: "fork",
            target: format!("a process with {threads} threads"),
            errno: nix::errno::Errno::EDEADLK,
        });
    }
    // SAFETY: the process has a single thread (checked just above), so the child starts with a
    // consistent heap and no lock held by a thread that does not exist in it.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { child }) => Ok(Forked::Parent(child.as_raw())),
        Ok(ForkResult::Child) => Ok(Forked::Child),
        Err(errno) => Err(SysError {
            op: "fork",
            target: "runtime".into(),
            errno,
        }),
    }
}

/// Replaces the process image: `execve(path, args, env)`. Returns only on failure.
pub fn exec(path: &str, args: &[String], env: &[String]) -> SysError {
    let to_c = |s: &str| CString::new(s.replace('\0', ""));
    let (Ok(cpath), Ok(cargs), Ok(cenv)) = (
        to_c(path),
        args.iter().map(|a| to_c(a)).collect::<Result<Vec<_>, _>>(),
        env.iter().map(|e| to_c(e)).collect::<Result<Vec<_>, _>>(),
    ) else {
        return SysError {
            op: "execve",
            target: path.to_string(),
            errno: nix::errno::Errno::EINVAL,
        };
    };
    match nix::unistd::execve(&cpath, &cargs, &cenv) {
        Err(errno) => SysError {
            op: "execve",
            target: path.to_string(),
            errno,
        },
        Ok(never) => match never {},
    }
}

/// Replaces the process image with the program open at `fd` (`fexecve`), e.g. a sealed copy.
pub fn exec_fd<Fd: AsFd>(fd: Fd, args: &[String], env: &[String]) -> SysError {
    let to_c = |s: &str| CString::new(s.replace('\0', ""));
    let (Ok(cargs), Ok(cenv)) = (
        args.iter().map(|a| to_c(a)).collect::<Result<Vec<_>, _>>(),
        env.iter().map(|e| to_c(e)).collect::<Result<Vec<_>, _>>(),
    ) else {
        return SysError {
            op: "fexecve",
            target: "fd".into(),
            errno: nix::errno::Errno::EINVAL,
        };
    };
    match nix::unistd::fexecve(fd, &cargs, &cenv) {
        Err(errno) => SysError {
            op: "fexecve",
            target: "fd".into(),
            errno,
        },
        Ok(never) => match never {},
    }
}

/// Sets the hostname (needs a UTS namespace of the container's own).
pub fn set_hostname(name: &str) -> SysResult<()> {
    nix::unistd::sethostname(name).map_err(SysError::on("sethostname", name))
}

/// Sets the NIS domain name (needs a UTS namespace of the container's own).
pub fn set_domainname(name: &str) -> SysResult<()> {
    let bytes = name.as_bytes();
    // SAFETY: `bytes` is valid for `bytes.len()` bytes for the duration of the call, which
    // only reads them.
    let rc = unsafe { nix::libc::setdomainname(bytes.as_ptr().cast(), bytes.len()) };
    nix::errno::Errno::result(rc)
        .map(drop)
        .map_err(SysError::on("setdomainname", name))
}

/// Sets supplementary groups, then gid, then uid (in that order: changing the uid first would
/// drop the right to change the others).
pub fn set_identity(uid: u32, gid: u32, additional_gids: &[u32]) -> SysResult<()> {
    let groups: Vec<Gid> = additional_gids.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups)
        .map_err(SysError::on("setgroups", format!("{additional_gids:?}")))?;
    let gid = Gid::from_raw(gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(SysError::on("setresgid", gid))?;
    let uid = Uid::from_raw(uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(SysError::on("setresuid", uid))
}

/// Keeps permitted capabilities across the uid change of [`set_identity`].
pub fn set_keep_capabilities(keep: bool) -> SysResult<()> {
    nix::sys::prctl::set_keepcaps(keep).map_err(SysError::on("prctl PR_SET_KEEPCAPS", keep))
}

/// Sets `no_new_privs`: exec can never grant privileges again (setuid bits, file caps).
pub fn set_no_new_privileges() -> SysResult<()> {
    nix::sys::prctl::set_no_new_privs().map_err(SysError::on("prctl PR_SET_NO_NEW_PRIVS", "self"))
}

/// Marks the process non-dumpable: no other process of the same uid (a container's root, say)
/// may ptrace it or open its `/proc/PID` files such as `exe` while it runs. `execve` resets it.
pub fn set_non_dumpable() -> SysResult<()> {
    nix::sys::prctl::set_dumpable(false).map_err(SysError::on("prctl PR_SET_DUMPABLE", 0))
}

/// Gives the process a clean signal state for the program it is about to exec: an empty
/// blocked mask and default dispositions for every catchable signal (a caller such as the
/// engine's monitor may block signals for its signalfd; the container must not inherit that).
pub fn reset_signals() -> SysResult<()> {
    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, sigprocmask};
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(SysError::on("sigprocmask", "empty"))?;
    for signal in Signal::iterator() {
        if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: SIG_DFL installs no handler code of ours, so no async-signal-safety
        // question arises; the previous disposition is dropped.
        let _ = unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) };
    }
    Ok(())
}

/// Starts a new session (the container's init leads its own).
pub fn new_session() -> SysResult<()> {
    nix::unistd::setsid()
        .map(drop)
        .map_err(SysError::on("setsid", "self"))
}

/// Sets the file mode creation mask.
pub fn set_umask(mask: u32) {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
}

/// Sets a resource limit by its `RLIMIT_*` name (as in config.json, e.g. `RLIMIT_NOFILE`).
pub fn set_rlimit(name: &str, soft: u64, hard: u64) -> SysResult<()> {
    use nix::sys::resource::Resource;
    let resource = match name {
        "RLIMIT_AS" => Resource::RLIMIT_AS,
        "RLIMIT_CORE" => Resource::RLIMIT_CORE,
        "RLIMIT_CPU" => Resource::RLIMIT_CPU,
        "RLIMIT_DATA" => Resource::RLIMIT_DATA,
        "RLIMIT_FSIZE" => Resource::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => Resource::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => Resource::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => Resource::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => Resource::RLIMIT_NICE,
        "RLIMIT_NOFILE" => Resource::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => Resource::RLIMIT_NPROC,
        "RLIMIT_RSS" => Resource::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => Resource::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => Resource::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => Resource::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => Resource::RLIMIT_STACK,
        _ => {
            return Err(SysError {
                op: "setrlimit",
                target: name.to_string(),
                errno: nix::errno::Errno::EINVAL,
            });
        }
    };
    nix::sys::resource::setrlimit(resource, soft, hard).map_err(SysError::on("setrlimit", name))
}

/// Sends `signal` (a number) to `pid`.
pub fn send_signal(pid: i32, signal: i32) -> SysResult<()> {
    let sig =
        nix::sys::signal::Signal::try_from(signal).map_err(SysError::on("parse signal", signal))?;
    nix::sys::signal::kill(Pid::from_raw(pid), sig).map_err(SysError::on("kill", pid))
}

/// The CPU affinity mask of thread `tid` as the `sched_getaffinity` system call gives it to a
/// caller passing a buffer of `len` bytes: the bytes the kernel copied (its return value is
/// their count: `min(len, the kernel's cpumask size)`). The kernel's checks apply (EINVAL
/// when `len` is too small for the machine's CPUs or not a multiple of a `long`). `len` is
/// capped at 64 KiB (half a million CPUs).
pub fn affinity_bytes(tid: i32, len: usize) -> SysResult<Vec<u8>> {
    let mut mask = vec![0u8; len.min(64 * 1024)];
    // SAFETY: the kernel writes at most `mask.len()` bytes into `mask`, a live buffer of
    // that size, and returns how many it wrote (or -1 with errno).
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_sched_getaffinity,
            tid,
            mask.len(),
            mask.as_mut_ptr(),
        )
    };
    let copied = nix::errno::Errno::result(rc).map_err(SysError::on("sched_getaffinity", tid))?;
    mask.truncate(usize::try_from(copied).unwrap_or(0));
    Ok(mask)
}

/// Whether a process with this pid exists (signal 0).
pub fn process_exists(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
}

/// How a waited-for child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
}

impl ExitStatus {
    /// The shell's convention: the code, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(signal) => 128 + signal,
        }
    }
}

/// Waits for child `pid` to end (retrying on EINTR).
pub fn wait_for_exit(pid: i32) -> SysResult<ExitStatus> {
    use nix::sys::wait::{WaitStatus, waitpid};
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(ExitStatus::Exited(code)),
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                return Ok(ExitStatus::Signaled(signal as i32));
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => {
                return Err(SysError {
                    op: "waitpid",
                    target: pid.to_string(),
                    errno,
                });
            }
        }
    }
}

/// Exits the process at once, without running destructors or flushing stdio buffers: what a
/// forked child does when it must not touch the parent's state.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` ends the process immediately; it has no preconditions.
    unsafe { nix::libc::_exit(code) }
}

/// Caps the number of glibc malloc arenas. glibc gives busy threads arenas of their own (up to
/// eight per core), each keeping freed memory for itself; a daemon whose blocking pool comes
/// and goes (the agent, the server) holds several MiB of idle heap that way. Call it early,
/// before threads start. A no-op with other C libraries.
pub fn limit_malloc_arenas(arenas: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX takes any positive count
    // and it is called before the process starts threads.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, arenas);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

/// Hands the heap's free memory back to the kernel (glibc's `malloc_trim(0)`), which glibc
/// otherwise keeps for later: a daemon that was busy (a hundred pods started) and went idle
/// again stays at its peak. A no-op with other C libraries.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused pages of the allocator's own heaps; it takes
    // the allocator's locks itself and may be called from any thread at any time.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subreaper_flag_can_be_set_and_read_back() {
        // The flag is per process; this test restores what it found.
        let before = is_child_subreaper().unwrap();
        set_child_subreaper(true).unwrap();
        assert!(is_child_subreaper().unwrap());
        set_child_subreaper(before).unwrap();
        assert_eq!(is_child_subreaper().unwrap(), before);
    }

    #[test]
    fn fork_is_refused_in_a_multithreaded_process() {
        // The test harness runs this test on a thread of its own beside the main thread.
        let blocker =
            std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
        let err = fork_single_threaded().unwrap_err();
        assert_eq!(err.op, "fork");
        blocker.join().unwrap();
    }

    #[test]
    fn signal_state_is_reset() {
        use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
        let mut blocked = SigSet::empty();
        blocked.add(Signal::SIGUSR1);
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None).unwrap();
        reset_signals().unwrap();
        let mut now = SigSet::empty();
        sigprocmask(SigmaskHow::SIG_BLOCK, None, Some(&mut now)).unwrap();
        assert!(!now.contains(Signal::SIGUSR1));
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(ExitStatus::Exited(3).code(), 3);
        assert_eq!(ExitStatus::Signaled(9).code(), 137);
    }

    #[test]
    fn the_current_process_exists() {
        assert!(process_exists(std::process::id() as i32));
        assert!(!process_exists(0));
    }
}
