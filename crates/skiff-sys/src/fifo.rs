//! The exec FIFO that holds a created container's init until `start`, runc-style.
//!
//! `create` makes the FIFO; the init opens a path-only handle to it before it pivots into the
//! container, and once everything is ready opens that handle for writing, which blocks until
//! `start` opens the FIFO for reading. One byte then crosses, and the init execs the user
//! program.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::error::{SysError, SysResult};

/// Creates the FIFO at `path` (mode 0622, as runc's `exec.fifo`).
pub fn create(path: &Path) -> SysResult<()> {
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o622))
        .map_err(SysError::on("mkfifo", path.display()))?;
    crate::mount::chmod(path, 0o622)
}

/// Opens a path-only, close-on-exec handle to `path` that survives a `pivot_root`.
pub fn open_handle(path: &Path) -> SysResult<OwnedFd> {
    nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(SysError::on("open", path.display()))
}

/// Opens the FIFO behind `handle` for writing through `/proc/self/fd` (blocks until a reader
/// comes) and writes one byte.
pub fn signal_through_handle(handle: &OwnedFd) -> SysResult<()> {
    let proc_path = format!("/proc/self/fd/{}", handle.as_raw_fd());
    let fd = nix::fcntl::open(
        proc_path.as_str(),
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(SysError::on("open exec fifo for writing", &proc_path))?;
    nix::unistd::write(&fd, b"0").map_err(SysError::on("write exec fifo", &proc_path))?;
    Ok(())
}

/// Opens the FIFO at `path` for reading and waits for the init's byte, checking `alive`
/// between polls so a dead init is noticed. Returns `Ok(false)` when the init died first.
pub fn wait_for_signal(path: &Path, mut alive: impl FnMut() -> bool) -> SysResult<bool> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(SysError::on("open exec fifo", path.display()))?;
    let mut buf = [0u8; 1];
    loop {
        match nix::unistd::read(&fd, &mut buf) {
            Ok(1) => return Ok(true),
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => {}
            Err(errno) => {
                return Err(SysError {
                    op: "read exec fifo",
                    target: path.display().to_string(),
                    errno,
                });
            }
        }
        if !alive() {
            return Ok(false);
        }
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&fd),
            nix::poll::PollFlags::POLLIN,
        )];
        let timeout = nix::poll::PollTimeout::try_from(Duration::from_millis(50))
            .unwrap_or(nix::poll::PollTimeout::NONE);
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => {
                return Err(SysError {
                    op: "poll exec fifo",
                    target: path.display().to_string(),
                    errno,
                });
            }
        }
    }
}

/// Reads field 22 (start time in clock ticks since boot) of `/proc/PID/stat`, which tells a
/// process apart from a later one that reuses its pid; `None` if the process is gone.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split(' ').nth(19).and_then(|f| f.parse().ok())
}

/// The one-letter state of `/proc/PID/stat` (`R`, `S`, `Z` ...), if the process exists.
pub fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_written_through_a_handle_reaches_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exec.fifo");
        create(&path).unwrap();
        let handle = open_handle(&path).unwrap();
        let writer = std::thread::spawn(move || signal_through_handle(&handle).unwrap());
        assert!(wait_for_signal(&path, || true).unwrap());
        writer.join().unwrap();
    }

    #[test]
    fn a_dead_writer_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exec.fifo");
        create(&path).unwrap();
        assert!(!wait_for_signal(&path, || false).unwrap());
    }

    #[test]
    fn this_process_has_a_start_time_and_a_state() {
        let pid = std::process::id() as i32;
        assert!(process_start_time(pid).unwrap() > 0);
        assert!(matches!(process_state(pid), Some('R' | 'S')));
        assert_eq!(process_start_time(-5), None);
    }
}
