//! Mounts, pivot_root and device nodes: the privileged half of setting up a container's root
//! filesystem. Paths are plain; resolving them safely inside a rootfs is the caller's job
//! (`skiff-runtime` does it before calling here).

use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};

use crate::error::{SysError, SysResult};

pub use nix::mount::MsFlags as MountFlags;

/// `mount(2)`.
pub fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> SysResult<()> {
    nix::mount::mount(source, target, fstype, flags, data)
        .map_err(SysError::on("mount", target.display()))
}

/// Changes the propagation of `target` (e.g. `MS_SLAVE | MS_REC`).
pub fn set_propagation(target: &Path, flags: MsFlags) -> SysResult<()> {
    nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .map_err(SysError::on("change propagation of", target.display()))
}

/// Bind-mounts `source` on `target` (recursively if `recursive`).
pub fn bind(source: &Path, target: &Path, recursive: bool) -> SysResult<()> {
    let flags = if recursive {
        MsFlags::MS_BIND | MsFlags::MS_REC
    } else {
        MsFlags::MS_BIND
    };
    nix::mount::mount(Some(source), target, None::<&str>, flags, None::<&str>)
        .map_err(SysError::on("bind mount onto", target.display()))
}

/// Remounts the bind mount at `target` with `flags` (MS_RDONLY, MS_NOSUID ...), keeping the
/// flags it already has that an unprivileged remount may not drop.
pub fn remount_bind(target: &Path, flags: MsFlags) -> SysResult<()> {
    let current =
        nix::sys::statvfs::statvfs(target).map_err(SysError::on("statvfs", target.display()))?;
    let mut keep = MsFlags::empty();
    use nix::sys::statvfs::FsFlags;
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if current.flags().contains(fs) {
            keep |= ms;
        }
    }
    nix::mount::mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | keep,
        None::<&str>,
    )
    .map_err(SysError::on("remount", target.display()))
}

/// Lazily unmounts `target` (`MNT_DETACH`).
pub fn unmount_detach(target: &Path) -> SysResult<()> {
    nix::mount::umount2(target, MntFlags::MNT_DETACH)
        .map_err(SysError::on("unmount", target.display()))
}

/// Makes `new_root` the root of the calling process's mount namespace and drops the old root:
/// `pivot_root(".", ".")` from inside `new_root`, then a detached unmount of the old root
/// stacked beneath (no directory for the old root is needed inside the container).
pub fn pivot_root_into(new_root: &Path) -> SysResult<()> {
    nix::unistd::chdir(new_root).map_err(SysError::on("chdir", new_root.display()))?;
    nix::unistd::pivot_root(".", ".").map_err(SysError::on("pivot_root", new_root.display()))?;
    // The old root is now mounted over ".": keep its unmount from propagating to the host.
    set_propagation(Path::new("."), MsFlags::MS_SLAVE | MsFlags::MS_REC)?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH)
        .map_err(SysError::on("unmount old root", "/"))?;
    nix::unistd::chdir("/").map_err(SysError::on("chdir", "/"))
}

/// Moves `new_root` over `/` and chroots into it (`--no-pivot`, for ramdisk roots where
/// pivot_root is impossible; weaker: the old root stays reachable to a privileged process).
pub fn move_root_and_chroot(new_root: &Path) -> SysResult<()> {
    nix::unistd::chdir(new_root).map_err(SysError::on("chdir", new_root.display()))?;
    nix::mount::mount(
        Some(new_root),
        "/",
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(SysError::on("move mount to /", new_root.display()))?;
    nix::unistd::chroot(".").map_err(SysError::on("chroot", new_root.display()))?;
    nix::unistd::chdir("/").map_err(SysError::on("chdir", "/"))
}

/// The kind of device node to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A FIFO.
    Fifo,
}

/// Creates a device node at `path` with `mode` permissions and the given numbers.
pub fn make_device(
    path: &Path,
    kind: DeviceKind,
    major: u64,
    minor: u64,
    mode: u32,
) -> SysResult<()> {
    let kind_flag = match kind {
        DeviceKind::Char => SFlag::S_IFCHR,
        DeviceKind::Block => SFlag::S_IFBLK,
        DeviceKind::Fifo => SFlag::S_IFIFO,
    };
    nix::sys::stat::mknod(
        path,
        kind_flag,
        Mode::from_bits_truncate(mode),
        nix::sys::stat::makedev(major, minor),
    )
    .map_err(SysError::on("mknod", path.display()))
}

/// Sets the permissions of `path` exactly (`chmod`, ignoring the umask).
pub fn chmod(path: &Path, mode: u32) -> SysResult<()> {
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        path,
        Mode::from_bits_truncate(mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(SysError::on("chmod", path.display()))
}

/// Changes the owner of `path` without following a final symlink.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> SysResult<()> {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(SysError::on("chown", path.display()))
}
