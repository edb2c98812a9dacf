//! File descriptors a container must not inherit.

use std::os::fd::{BorrowedFd, RawFd};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};

use crate::error::{SysError, SysResult};

/// Marks every open descriptor `>= 3` close-on-exec, except those in `keep`, so nothing of the
/// runtime's (a host directory, a socket, the state dir) leaks into the container's program
/// (the CVE-2024-21626 pattern). Reads `/proc/self/fd`.
pub fn cloexec_all_except(keep: &[RawFd]) -> SysResult<()> {
    let entries = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| SysError::from_io("read", "/proc/self/fd", &e))?;
    let fds: Vec<RawFd> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse().ok())
        })
        .filter(|fd| *fd >= 3 && !keep.contains(fd))
        .collect();
    for fd in fds {
        // SAFETY: `fd` was listed in /proc/self/fd a moment ago; the borrow lives only for this
        // fcntl call, and a descriptor closed in between (the read_dir's own) fails with EBADF,
        // which is ignored below.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        match fcntl(borrowed, FcntlArg::F_GETFD) {
            Ok(bits) => {
                let flags = FdFlag::from_bits_truncate(bits) | FdFlag::FD_CLOEXEC;
                fcntl(borrowed, FcntlArg::F_SETFD(flags))
                    .map_err(SysError::on("set close-on-exec on fd", fd))?;
            }
            Err(nix::errno::Errno::EBADF) => {}
            Err(errno) => {
                return Err(SysError {
                    op: "get flags of fd",
                    target: fd.to_string(),
                    errno,
                });
            }
        }
    }
    Ok(())
}

/// Clears close-on-exec on `fd` so a program we exec inherits it (`--preserve-fds`, the
/// console, the sync socket of a re-exec).
pub fn keep_on_exec(fd: RawFd) -> SysResult<()> {
    // SAFETY: the caller names a descriptor it owns and keeps open across this call.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let bits = fcntl(borrowed, FcntlArg::F_GETFD).map_err(SysError::on("get flags of fd", fd))?;
    let flags = FdFlag::from_bits_truncate(bits) - FdFlag::FD_CLOEXEC;
    fcntl(borrowed, FcntlArg::F_SETFD(flags))
        .map_err(SysError::on("clear close-on-exec on fd", fd))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn every_fd_but_the_kept_ones_becomes_close_on_exec() {
        let a = std::fs::File::open("/dev/null").unwrap();
        let b = std::fs::File::open("/dev/null").unwrap();
        keep_on_exec(a.as_raw_fd()).unwrap();
        keep_on_exec(b.as_raw_fd()).unwrap();
        cloexec_all_except(&[b.as_raw_fd()]).unwrap();
        let flags =
            |f: &std::fs::File| FdFlag::from_bits_truncate(fcntl(f, FcntlArg::F_GETFD).unwrap());
        assert!(flags(&a).contains(FdFlag::FD_CLOEXEC));
        assert!(!flags(&b).contains(FdFlag::FD_CLOEXEC));
    }
}
