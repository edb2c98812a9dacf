//! Setting up the container's root filesystem inside its new mount namespace: the executor of
//! the plan's mounts, devices, pivot and masks. Runs in the container's init only.

use std::path::{Path, PathBuf};

use skiff_cgroups::Mounts;
use skiff_sys::SysError;
use skiff_sys::mount::{self as sysmount, MountFlags};

use crate::paths::{PathError, secure_join};
use crate::plan::{MountKind, MountStep, Plan};

/// Why the root filesystem could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A system call failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// A path could not be resolved inside the rootfs.
    #[error(transparent)]
    Path(#[from] PathError),
    /// Creating a mount point failed.
    #[error("create mount point {path}: {source}")]
    MountPoint {
        /// The mount point.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The host's cgroup mounts could not be read.
    #[error("read the host's cgroup mounts: {0}")]
    Cgroups(String),
}

/// Sets up the mounts and devices inside the rootfs (the host's paths are still visible).
pub fn prepare(plan: &Plan) -> Result<(), RootfsError> {
    sysmount::set_propagation(Path::new("/"), plan.rootfs_propagation)?;
    // pivot_root needs the new root to be a mount point.
    sysmount::bind(&plan.rootfs, &plan.rootfs, true)?;
    let in_user_namespace = plan
        .new_namespaces
        .contains(&skiff_sys::NamespaceKind::User);
    for step in &plan.mounts {
        mount_one(&plan.rootfs, step)?;
    }
    make_devices(plan, in_user_namespace)?;
    Ok(())
}

/// Makes the rootfs the process's root: `pivot_root`, or move + chroot with `no_pivot`.
pub fn enter(plan: &Plan, no_pivot: bool) -> Result<(), RootfsError> {
    if no_pivot {
        sysmount::move_root_and_chroot(&plan.rootfs)?;
    } else {
        sysmount::pivot_root_into(&plan.rootfs)?;
    }
    Ok(())
}

/// Masks, read-only paths and the read-only root: done after the pivot, inside the container.
pub fn finish(plan: &Plan) -> Result<(), RootfsError> {
    for path in &plan.masked_paths {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                sysmount::mount(
                    Some("tmpfs"),
                    path,
                    Some("tmpfs"),
                    MountFlags::MS_RDONLY,
                    Some("size=0k"),
                )?;
            }
            Ok(_) => sysmount::bind(Path::new("/dev/null"), path, false)?,
            Err(_) => {} // nothing to hide
        }
    }
    for path in &plan.readonly_paths {
        if path.exists() {
            sysmount::bind(path, path, true)?;
            sysmount::remount_bind(
                path,
                MountFlags::MS_RDONLY
                    | MountFlags::MS_NOSUID
                    | MountFlags::MS_NODEV
                    | MountFlags::MS_NOEXEC,
            )?;
        }
    }
    if plan.readonly_root {
        sysmount::remount_bind(Path::new("/"), MountFlags::MS_RDONLY)?;
    }
    Ok(())
}

fn create_dir(path: &Path) -> Result<(), RootfsError> {
    std::fs::create_dir_all(path).map_err(|source| RootfsError::MountPoint {
        path: path.to_path_buf(),
        source,
    })
}

fn create_file(path: &Path) -> Result<(), RootfsError> {
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    if path.symlink_metadata().is_err() {
        std::fs::File::create(path).map_err(|source| RootfsError::MountPoint {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

fn mount_one(rootfs: &Path, step: &MountStep) -> Result<(), RootfsError> {
    let target = secure_join(rootfs, &step.destination)?;
    match &step.kind {
        MountKind::Bind { recursive } => {
            let source = step.source.clone().unwrap_or_default();
            if source.is_dir() {
                create_dir(&target)?;
            } else {
                create_file(&target)?;
            }
            sysmount::bind(&source, &target, *recursive)?;
            let extra = step.flags - MountFlags::MS_REMOUNT;
            if !extra.is_empty() {
                sysmount::remount_bind(&target, extra)?;
            }
        }
        MountKind::Filesystem(fstype) => {
            create_dir(&target)?;
            let source = step
                .source
                .as_ref()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| fstype.clone());
            let data = (!step.data.is_empty()).then_some(step.data.as_str());
            let result = sysmount::mount(Some(&source), &target, Some(fstype), step.flags, data);
            match result {
                Ok(()) => {}
                // Without a network namespace of its own a container may not mount sysfs (and
                // without an IPC one, mqueue): bind the host's, read-only, as runc does.
                Err(err)
                    if err.errno == skiff_sys::Errno::EPERM
                        && (fstype == "sysfs" || fstype == "mqueue") =>
                {
                    let host = if fstype == "sysfs" {
                        "/sys"
                    } else {
                        "/dev/mqueue"
                    };
                    sysmount::bind(Path::new(host), &target, true)?;
                    sysmount::remount_bind(&target, step.flags | MountFlags::MS_RDONLY)?;
                }
                Err(err) => return Err(err.into()),
            }
        }
        MountKind::Cgroup => mount_cgroups(&target, step.flags)?,
    }
    if let Some(propagation) = step.propagation {
        sysmount::set_propagation(&target, propagation)?;
    }
    Ok(())
}

/// Mounts the container's view of the cgroup hierarchies at `target`: cgroup2 on a unified
/// host; on v1 and hybrid hosts a tmpfs holding one cgroup mount per hierarchy (inside the
/// container's cgroup namespace each shows the container's own cgroup as its root).
fn mount_cgroups(target: &Path, flags: MountFlags) -> Result<(), RootfsError> {
    create_dir(target)?;
    let mounts = Mounts::of_this_process().map_err(|e| RootfsError::Cgroups(e.to_string()))?;
    let fs_flags = flags - MountFlags::MS_RDONLY;
    if mounts.v1.is_empty() {
        sysmount::mount(Some("cgroup2"), target, Some("cgroup2"), flags, None)?;
        return Ok(());
    }
    sysmount::mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        fs_flags | MountFlags::MS_NOSUID | MountFlags::MS_NODEV | MountFlags::MS_NOEXEC,
        Some("mode=755"),
    )?;
    let mut hierarchies: Vec<PathBuf> = mounts.v1.values().cloned().collect();
    hierarchies.sort();
    hierarchies.dedup();
    for host_dir in hierarchies {
        let Some(name) = host_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
        else {
            continue;
        };
        if name.starts_with("name=") || name == "systemd" {
            continue;
        }
        let dir = target.join(&name);
        create_dir(&dir)?;
        sysmount::mount(
            Some("cgroup"),
            &dir,
            Some("cgroup"),
            flags | MountFlags::MS_NOSUID | MountFlags::MS_NODEV | MountFlags::MS_NOEXEC,
            Some(&name),
        )?;
        // Combined hierarchies get a link per controller, as on the host (cpu -> cpu,cpuacct).
        if name.contains(',') {
            for controller in name.split(',') {
                let link = target.join(controller);
                if link.symlink_metadata().is_err() {
                    std::os::unix::fs::symlink(&name, &link).map_err(|source| {
                        RootfsError::MountPoint {
                            path: link.clone(),
                            source,
                        }
                    })?;
                }
            }
        }
    }
    if flags.contains(MountFlags::MS_RDONLY) {
        sysmount::remount_bind(target, MountFlags::MS_RDONLY)?;
    }
    Ok(())
}

/// Creates the device nodes (or, inside a user namespace where mknod is refused, binds the
/// host's), and the standard `/dev` links.
fn make_devices(plan: &Plan, in_user_namespace: bool) -> Result<(), RootfsError> {
    let dev_is_mounted = plan
        .mounts
        .iter()
        .any(|m| m.destination == Path::new("/dev"));
    if !dev_is_mounted {
        return Ok(());
    }
    for device in &plan.devices {
        let target = secure_join(&plan.rootfs, &device.path)?;
        if let Some(parent) = target.parent() {
            create_dir(parent)?;
        }
        if in_user_namespace {
            create_file(&target)?;
            sysmount::bind(&device.path, &target, false)?;
        } else {
            let _ = std::fs::remove_file(&target);
            sysmount::make_device(
                &target,
                device.kind,
                device.major,
                device.minor,
                device.mode,
            )?;
            sysmount::chmod(&target, device.mode)?;
            sysmount::lchown(&target, device.uid, device.gid)?;
        }
    }
    let dev = secure_join(&plan.rootfs, Path::new("/dev"))?;
    let mut links = vec![
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    if dev.join("pts").is_dir() {
        links.push(("ptmx", "pts/ptmx"));
    }
    if Path::new("/proc/kcore").exists() {
        links.push(("core", "/proc/kcore"));
    }
    for (name, target) in links {
        let link = dev.join(name);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(target, &link).map_err(|source| {
                RootfsError::MountPoint {
                    path: link.clone(),
                    source,
                }
            })?;
        }
    }
    Ok(())
}
