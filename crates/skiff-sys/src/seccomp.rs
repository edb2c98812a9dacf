//! Loading a classic-BPF seccomp filter into the calling process.

use crate::error::{SysError, SysResult};

/// One BPF instruction: (code, jump-if-true, jump-if-false, operand).
pub type BpfInstruction = (u16, u8, u8, u32);

/// Installs `program` as a seccomp filter on the calling thread (`PR_SET_SECCOMP`,
/// `SECCOMP_MODE_FILTER`). Needs `no_new_privs` or `CAP_SYS_ADMIN`. It cannot be removed.
pub fn load(program: &[BpfInstruction]) -> SysResult<()> {
    let mut filters: Vec<nix::libc::sock_filter> = program
        .iter()
        .map(|&(code, jt, jf, k)| nix::libc::sock_filter { code, jt, jf, k })
        .collect();
    let len = u16::try_from(filters.len()).map_err(|_| SysError {
        op: "load seccomp filter",
        target: format!("{} instructions", filters.len()),
        errno: nix::errno::Errno::E2BIG,
    })?;
    let prog = nix::libc::sock_fprog {
        len,
        filter: filters.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `filters`, which outlives the call; the kernel copies the
    // program during prctl and keeps no pointer into our memory.
    let rc = unsafe {
        nix::libc::prctl(
            nix::libc::PR_SET_SECCOMP,
            nix::libc::SECCOMP_MODE_FILTER,
            &prog as *const nix::libc::sock_fprog,
        )
    };
    nix::errno::Errno::result(rc)
        .map(drop)
        .map_err(SysError::on(
            "load seccomp filter",
            format!("{len} instructions"),
        ))
}
