//! Loading a classic-BPF seccomp filter into the calling process, and seccomp user
//! notification: a filter that hands back a listener descriptor (`SCMP_ACT_NOTIFY` rules),
//! taking that descriptor from another process (`pidfd_getfd`), passing it with a message
//! (`SCM_RIGHTS`), and the listener's side (receive a notification, check that it is still
//! pending, answer it).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;

use crate::error::{SysError, SysResult};

/// One BPF instruction: (code, jump-if-true, jump-if-false, operand).
pub type BpfInstruction = (u16, u8, u8, u32);

/// `SECCOMP_IOCTL_NOTIF_RECV`: `_IOWR('!', 0, struct seccomp_notif)` (80 bytes).
const IOCTL_NOTIF_RECV: u64 = 0xc050_2100;
/// `SECCOMP_IOCTL_NOTIF_SEND`: `_IOWR('!', 1, struct seccomp_notif_resp)` (24 bytes).
const IOCTL_NOTIF_SEND: u64 = 0xc018_2101;
/// `SECCOMP_IOCTL_NOTIF_ID_VALID`: `_IOW('!', 2, __u64)`.
const IOCTL_NOTIF_ID_VALID: u64 = 0x4008_2102;

/// Runs `f` with the program as the kernel's `sock_fprog`.
fn with_fprog<T>(
    program: &[BpfInstruction],
    f: impl FnOnce(&nix::libc::sock_fprog) -> SysResult<T>,
) -> SysResult<T> {
    let mut filters: Vec<nix::libc::sock_filter> = program
        .iter()
        .map(|&(code, jt, jf, k)| nix::libc::sock_filter { code, jt, jf, k })
        .collect();
    let len = u16::try_from(filters.len()).map_err(|_| SysError {
        op: "load seccomp filter",
        target: format!("{} instructions", filters.len()),
        errno: Errno::E2BIG,
    })?;
    let prog = nix::libc::sock_fprog {
        len,
        filter: filters.as_mut_ptr(),
    };
    f(&prog)
}

/// Installs `program` as a seccomp filter on the calling thread (`PR_SET_SECCOMP`,
/// `SECCOMP_MODE_FILTER`). Needs `no_new_privs` or `CAP_SYS_ADMIN`. It cannot be removed.
pub fn load(program: &[BpfInstruction]) -> SysResult<()> {
    with_fprog(program, |prog| {
        // SAFETY: `prog` points at the caller's instruction copy, which outlives the call;
        // the kernel copies the program during prctl and keeps no pointer into our memory.
        let rc = unsafe {
            nix::libc::prctl(
                nix::libc::PR_SET_SECCOMP,
                nix::libc::SECCOMP_MODE_FILTER,
                prog as *const nix::libc::sock_fprog,
            )
        };
        Errno::result(rc).map(drop).map_err(SysError::on(
            "load seccomp filter",
            format!("{} instructions", prog.len),
        ))
    })
}

/// Installs `program` like [`load`] with `SECCOMP_FILTER_FLAG_NEW_LISTENER`: returns the
/// listener descriptor (close-on-exec) through which the `SECCOMP_RET_USER_NOTIF` syscalls of
/// this process and its children are answered. The kernel refuses (EBUSY) when a filter of
/// this process already has a listener.
pub fn load_with_listener(program: &[BpfInstruction]) -> SysResult<OwnedFd> {
    with_fprog(program, |prog| {
        // SAFETY: as in `load`: the kernel copies the program during the call.
        let rc = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_seccomp,
                nix::libc::SECCOMP_SET_MODE_FILTER,
                nix::libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                prog as *const nix::libc::sock_fprog,
            )
        };
        let fd = Errno::result(rc).map_err(SysError::on(
            "load seccomp filter with a listener",
            format!("{} instructions", prog.len),
        ))?;
        let fd = i32::try_from(fd).map_err(|_| SysError {
            op: "load seccomp filter with a listener",
            target: format!("descriptor {fd}"),
            errno: Errno::EBADF,
        })?;
        // SAFETY: the kernel just returned `fd` as a new descriptor of this process; nothing
        // else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
}

/// A copy of descriptor `fd` of process `pid` (`pidfd_open` + `pidfd_getfd`, Linux 5.6+;
/// needs ptrace access to the process). Close-on-exec.
pub fn take_fd(pid: i32, fd: i32) -> SysResult<OwnedFd> {
    let target = format!("descriptor {fd} of pid {pid}");
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let pidfd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    let pidfd = Errno::result(pidfd).map_err(SysError::on("pidfd_open", &target))?;
    // SAFETY: a new descriptor of this process, owned here only.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number and flags; it returns a new
    // descriptor of this process or -1.
    let copy = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    let copy = Errno::result(copy).map_err(SysError::on("pidfd_getfd", &target))?;
    // SAFETY: as above: a new descriptor owned here only.
    Ok(unsafe { OwnedFd::from_raw_fd(copy as i32) })
}

/// Sends `data` with descriptor `fd` in one `SCM_RIGHTS` message over `socket`.
pub fn send_with_fd(socket: &UnixStream, data: &[u8], fd: BorrowedFd<'_>) -> SysResult<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let iov = [std::io::IoSlice::new(data)];
    let fds = [fd.as_raw_fd()];
    let sent = sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(SysError::on("send a descriptor over", "a unix socket"))?;
    if sent < data.len() {
        // The rest goes without the descriptor, which went with the first part.
        let mut rest = &data[sent..];
        while !rest.is_empty() {
            let n = nix::sys::socket::send(socket.as_raw_fd(), rest, MsgFlags::MSG_NOSIGNAL)
                .map_err(SysError::on("send over", "a unix socket"))?;
            rest = &rest[n..];
        }
    }
    Ok(())
}

/// Receives one message of at most `max` bytes from `socket`, with the first descriptor it
/// carried (extra ones are closed). Received descriptors are close-on-exec.
pub fn recv_with_fd(socket: &UnixStream, max: usize) -> SysResult<(Vec<u8>, Option<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut buf = vec![0u8; max];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(SysError::on("receive a descriptor over", "a unix socket"))?;
    let len = msg.bytes;
    let mut received = None;
    for c in msg
        .cmsgs()
        .map_err(SysError::on("read control messages of", "a unix socket"))?
    {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed `fd` in this process for this message;
                // it is owned exactly once here (extra ones are dropped, closing them).
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if received.is_none() {
                    received = Some(owned);
                }
            }
        }
    }
    buf.truncate(len);
    Ok((buf, received))
}

/// `struct seccomp_data`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct SeccompData {
    nr: i32,
    arch: u32,
    instruction_pointer: u64,
    args: [u64; 6],
}

/// `struct seccomp_notif`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct SeccompNotif {
    id: u64,
    pid: u32,
    flags: u32,
    data: SeccompData,
}

/// `struct seccomp_notif_resp`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct SeccompNotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

/// A syscall waiting for the listener's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notification {
    /// The notification's cookie, for [`id_valid`] and [`respond`].
    pub id: u64,
    /// The calling thread, in the PID namespace of the process that received it.
    pub pid: u32,
    /// The syscall number.
    pub nr: i32,
    /// The `AUDIT_ARCH_*` of the call.
    pub arch: u32,
    /// The arguments.
    pub args: [u64; 6],
}

/// How a notified syscall ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// The call returns this value.
    Value(i64),
    /// The call fails with this errno.
    Errno(i32),
    /// The kernel runs the call as if there were no notify rule
    /// (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`).
    Continue,
}

/// Receives the next notification from `listener` (blocks until one is pending; poll the
/// descriptor for `POLLIN` first to wait with a timeout, `POLLHUP` means no process uses the
/// filter any more). ENOENT: the caller went away between the poll and the receive.
pub fn receive(listener: BorrowedFd<'_>) -> SysResult<Notification> {
    // The kernel wants the buffer zeroed.
    let mut notif = SeccompNotif::default();
    // SAFETY: `notif` is a zeroed `struct seccomp_notif` of the kernel's layout and size
    // (80 bytes, encoded in the request number); the kernel writes only into it.
    let rc = unsafe {
        nix::libc::ioctl(
            listener.as_raw_fd(),
            IOCTL_NOTIF_RECV as _,
            &mut notif as *mut SeccompNotif,
        )
    };
    Errno::result(rc).map_err(SysError::on("receive a seccomp notification", "listener"))?;
    Ok(Notification {
        id: notif.id,
        pid: notif.pid,
        nr: notif.data.nr,
        arch: notif.data.arch,
        args: notif.data.args,
    })
}

/// Whether notification `id` is still pending (its caller still waits). Check it after
/// opening the caller's memory and before writing into it: the pid may have been reused.
pub fn id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    // SAFETY: the request reads one u64 from the pointer, which points at `id`.
    let rc = unsafe {
        nix::libc::ioctl(
            listener.as_raw_fd(),
            IOCTL_NOTIF_ID_VALID as _,
            &id as *const u64,
        )
    };
    rc == 0
}

/// Answers notification `id`. ENOENT: its caller is gone (not an error for the listener).
pub fn respond(listener: BorrowedFd<'_>, id: u64, response: Response) -> SysResult<()> {
    let mut resp = SeccompNotifResp {
        id,
        ..SeccompNotifResp::default()
    };
    match response {
        Response::Value(v) => resp.val = v,
        Response::Errno(e) => resp.error = -e.abs(),
        Response::Continue => resp.flags = nix::libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
    }
    // SAFETY: `resp` is a `struct seccomp_notif_resp` of the kernel's layout and size (24
    // bytes, encoded in the request number); the kernel only reads it.
    let rc = unsafe {
        nix::libc::ioctl(
            listener.as_raw_fd(),
            IOCTL_NOTIF_SEND as _,
            &mut resp as *mut SeccompNotifResp,
        )
    };
    Errno::result(rc)
        .map(drop)
        .map_err(SysError::on("answer a seccomp notification", id))
}

/// Waits up to `timeout_ms` for `listener` to have a notification: `Some(true)` one is
/// pending, `Some(false)` none yet, `None` no process uses the filter any more (or the
/// descriptor failed).
pub fn wait_listener(listener: BorrowedFd<'_>, timeout_ms: u16) -> Option<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(timeout_ms)) {
        Ok(0) | Err(Errno::EINTR) => Some(false),
        Ok(_) => {
            let events = fds[0].revents().unwrap_or(PollFlags::empty());
            if events.contains(PollFlags::POLLIN) {
                Some(true)
            } else if events
                .intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
            {
                None
            } else {
                Some(false)
            }
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_structs_have_the_kernels_sizes() {
        assert_eq!(std::mem::size_of::<SeccompData>(), 64);
        assert_eq!(std::mem::size_of::<SeccompNotif>(), 80);
        assert_eq!(std::mem::size_of::<SeccompNotifResp>(), 24);
        assert_eq!((IOCTL_NOTIF_RECV >> 16) & 0x3fff, 80);
        assert_eq!((IOCTL_NOTIF_SEND >> 16) & 0x3fff, 24);
    }

    #[test]
    fn a_descriptor_and_its_message_cross_a_socket_pair() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        send_with_fd(&a, b"{\"fds\":[\"x\"]}", file.as_fd()).unwrap();
        let (data, fd) = recv_with_fd(&b, 4096).unwrap();
        assert_eq!(data, b"{\"fds\":[\"x\"]}");
        assert!(fd.is_some());
        let copy = take_fd(std::process::id() as i32, file.as_raw_fd()).unwrap();
        assert_ne!(copy.as_raw_fd(), file.as_raw_fd());
    }
}
