//! Terminals for containers: a pty pair opened inside the container's `/dev/pts`, the master
//! handed to the engine over the console socket (runc's protocol: one `SCM_RIGHTS` message
//! carrying the master fd, the terminal's name as the data), the slave made the process's
//! controlling terminal and stdio.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::socket::{ControlMessage, MsgFlags};

use crate::error::{SysError, SysResult};

/// Connects to the console socket at `path` (done by the runtime before the container's root
/// replaces the host's, so the path still resolves).
pub fn connect_console_socket(path: &Path) -> SysResult<UnixStream> {
    UnixStream::connect(path)
        .map_err(|e| SysError::from_io("connect to console socket", path.display(), &e))
}

/// Opens a new pty through `/dev/ptmx` of the current mount namespace (inside the container:
/// its own devpts instance) and returns the master and the opened slave.
pub fn open_pty() -> SysResult<(OwnedFd, OwnedFd)> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(SysError::on("open", "/dev/ptmx"))?;
    nix::pty::grantpt(&master).map_err(SysError::on("grantpt", "/dev/ptmx"))?;
    nix::pty::unlockpt(&master).map_err(SysError::on("unlockpt", "/dev/ptmx"))?;
    let name = nix::pty::ptsname_r(&master).map_err(SysError::on("ptsname", "/dev/ptmx"))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(SysError::on("open", &name))?;
    // SAFETY: `into_raw_fd` hands over ownership of the master's descriptor, which nothing else
    // holds; wrapping it in an OwnedFd makes it owned exactly once again.
    let master = unsafe {
        <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(
            master,
        ))
    };
    Ok((master, slave))
}

/// Sends `fd` over `socket` in one `SCM_RIGHTS` message whose data is `name`.
pub fn send_fd(socket: &UnixStream, fd: &OwnedFd, name: &str) -> SysResult<()> {
    let data = [IoSlice::new(name.as_bytes())];
    let fds = [fd.as_raw_fd()];
    nix::sys::socket::sendmsg::<()>(
        socket.as_raw_fd(),
        &data,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(SysError::on("send terminal over console socket", name))?;
    Ok(())
}

/// Receives one descriptor sent over `socket` in an `SCM_RIGHTS` message (what
/// [`send_fd`] sends: the other end of a console socket); returns it with the message's data
/// (the terminal's name).
pub fn recv_fd(socket: &UnixStream) -> SysResult<(OwnedFd, String)> {
    let mut buf = [0u8; 256];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = nix::sys::socket::recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(SysError::on("receive terminal over", "console socket"))?;
    let len = msg.bytes;
    let mut received = None;
    for c in msg
        .cmsgs()
        .map_err(SysError::on("read control messages of", "console socket"))?
    {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed `fd` in this process for this message;
                // nothing else refers to it, so it is owned exactly once here (extra ones are
                // wrapped and dropped, closing them).
                let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                if received.is_none() {
                    received = Some(owned);
                }
            }
        }
    }
    let name = String::from_utf8_lossy(&buf[..len.min(buf.len())]).into_owned();
    received.map(|fd| (fd, name)).ok_or(SysError {
        op: "receive terminal over",
        target: "console socket (no descriptor in the message)".into(),
        errno: nix::errno::Errno::EBADMSG,
    })
}

/// Sets the window size of the terminal `fd` (a pty master or slave): `cols` x `rows`.
pub fn set_window_size<Fd: AsFd>(fd: Fd, cols: u16, rows: u16) -> SysResult<()> {
    let size = nix::libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a `winsize` through the pointer, which points to a live,
    // initialised struct for the whole call; the descriptor is borrowed and open.
    let rc = unsafe {
        nix::libc::ioctl(
            fd.as_fd().as_raw_fd(),
            nix::libc::TIOCSWINSZ,
            &size as *const nix::libc::winsize,
        )
    };
    nix::errno::Errno::result(rc)
        .map(drop)
        .map_err(SysError::on("ioctl TIOCSWINSZ", "terminal"))
}

/// The window size of the terminal `fd`: `(cols, rows)`.
pub fn window_size<Fd: AsFd>(fd: Fd) -> SysResult<(u16, u16)> {
    let mut size = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a `winsize` through the pointer, which points to a live,
    // writable struct for the whole call; the descriptor is borrowed and open.
    let rc = unsafe {
        nix::libc::ioctl(
            fd.as_fd().as_raw_fd(),
            nix::libc::TIOCGWINSZ,
            &mut size as *mut nix::libc::winsize,
        )
    };
    nix::errno::Errno::result(rc)
        .map(|_| (size.ws_col, size.ws_row))
        .map_err(SysError::on("ioctl TIOCGWINSZ", "terminal"))
}

/// Makes `slave` the calling process's stdin, stdout, stderr and controlling terminal (the
/// process must lead its session: call after `setsid`).
pub fn become_terminal(slave: &OwnedFd) -> SysResult<()> {
    nix::unistd::dup2_stdin(slave).map_err(SysError::on("dup2 terminal to", "stdin"))?;
    nix::unistd::dup2_stdout(slave).map_err(SysError::on("dup2 terminal to", "stdout"))?;
    nix::unistd::dup2_stderr(slave).map_err(SysError::on("dup2 terminal to", "stderr"))?;
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal); fd 0 is the slave just
    // installed above and stays open for the call.
    let rc = unsafe {
        nix::libc::ioctl(
            std::io::stdin().as_fd().as_raw_fd(),
            nix::libc::TIOCSCTTY,
            0,
        )
    };
    nix::errno::Errno::result(rc)
        .map(drop)
        .map_err(SysError::on("ioctl TIOCSCTTY", "stdin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pty_master_crosses_a_socket() {
        let (master, _slave) = open_pty().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        send_fd(&a, &master, "/dev/ptmx").unwrap();
        let mut buf = [0u8; 64];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<()>(
            b.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .unwrap();
        let got = msg.cmsgs().unwrap().any(|c| matches!(c, nix::sys::socket::ControlMessageOwned::ScmRights(fds) if fds.len() == 1));
        assert!(got);
        assert_eq!(&buf[..9], b"/dev/ptmx");
    }
    #[test]
    fn a_received_master_takes_a_window_size() {
        let (master, _slave) = open_pty().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        send_fd(&a, &master, "/dev/ptmx").unwrap();
        let (got, name) = recv_fd(&b).unwrap();
        assert_eq!(name, "/dev/ptmx");
        set_window_size(&got, 120, 40).unwrap();
        assert_eq!(window_size(&got).unwrap(), (120, 40));
    }
}
