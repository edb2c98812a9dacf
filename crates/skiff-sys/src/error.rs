//! The error of a failed system call, with the operation and its target.

use nix::errno::Errno;

/// A system call failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} {target}: {errno}")]
pub struct SysError {
    /// The operation, e.g. "mount", "pivot_root", "setns".
    pub op: &'static str,
    /// What it acted on (a path, a pid, a namespace), for the reader.
    pub target: String,
    /// The errno.
    pub errno: Errno,
}

impl SysError {
    /// Builds a mapper from `Errno` for `op` on `target`.
    pub fn on(op: &'static str, target: impl std::fmt::Display) -> impl FnOnce(Errno) -> SysError {
        let target = target.to_string();
        move |errno| SysError { op, target, errno }
    }

    /// Wraps an `io::Error` (its raw OS error, or EIO).
    pub fn from_io(
        op: &'static str,
        target: impl std::fmt::Display,
        err: &std::io::Error,
    ) -> SysError {
        SysError {
            op,
            target: target.to_string(),
            errno: Errno::from_raw(err.raw_os_error().unwrap_or(libc_eio())),
        }
    }
}

const fn libc_eio() -> i32 {
    5
}

/// Result of the calls in this crate.
pub type SysResult<T> = Result<T, SysError>;
