//! A container's root filesystem: the image's snapshots plus an *init layer* (placeholders for
//! `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf` and the kernel filesystems) as overlay
//! lower directories, the container's own upper and work directories, mounted by the monitor
//! at `bundle/rootfs`. The real hostname/hosts/resolv.conf files live in the container's
//! directory and are bind-mounted over the placeholders by the runtime, so a commit of the
//! upper directory never captures them.

use std::path::Path;

use skiff_image::Mount;

use crate::EngineError;
use crate::layout::ContainerDir;
use crate::record::{ContainerConfig, NetworkMode};

/// The `/etc/hosts` Docker writes for a container without a network address.
pub fn hosts_file(hostname: &str, network: NetworkMode) -> String {
    if network == NetworkMode::Host {
        return std::fs::read_to_string("/etc/hosts")
            .unwrap_or_else(|_| "127.0.0.1\tlocalhost\n".to_string());
    }
    let _ = hostname;
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n".to_string()
}

/// The host's `resolv.conf` without loopback name servers (unreachable from the container).
pub fn resolv_conf(host: &str, network: NetworkMode) -> String {
    if network == NetworkMode::Host {
        return host.to_string();
    }
    let kept: Vec<&str> = host
        .lines()
        .filter(|line| {
            let mut words = line.split_whitespace();
            !(words.next() == Some("nameserver")
                && words
                    .next()
                    .is_some_and(|ip| ip.starts_with("127.") || ip == "::1"))
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// Writes the init layer and the host files of a new container.
pub fn prepare_init_layer(dir: &ContainerDir, config: &ContainerConfig) -> Result<(), EngineError> {
    let init = dir.init_layer();
    for sub in ["etc", "proc", "sys", "dev/pts", "dev/shm"] {
        let path = init.join(sub);
        std::fs::create_dir_all(&path).map_err(EngineError::io("create dir", &path))?;
    }
    for file in [
        "etc/hostname",
        "etc/hosts",
        "etc/resolv.conf",
        "dev/console",
    ] {
        let path = init.join(file);
        std::fs::write(&path, b"").map_err(EngineError::io("write", &path))?;
    }
    let hostname = if config.network == NetworkMode::Host {
        std::fs::read_to_string("/etc/hostname").unwrap_or_default()
    } else {
        format!("{}\n", config.hostname)
    };
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    for (path, content) in [
        (dir.hostname_file(), hostname),
        (
            dir.hosts_file(),
            hosts_file(&config.hostname, config.network),
        ),
        (
            dir.resolv_conf_file(),
            resolv_conf(&host_resolv, config.network),
        ),
    ] {
        std::fs::write(&path, content).map_err(EngineError::io("write", &path))?;
    }
    Ok(())
}

/// Adds the init layer on top of the image's lower directories of `mounts` (from
/// `skiff_image::ImageStore::prepare_rootfs`).
pub fn with_init_layer(mut mounts: Vec<Mount>, init: &Path) -> Vec<Mount> {
    for mount in &mut mounts {
        if mount.kind != "overlay" {
            continue;
        }
        for option in &mut mount.options {
            if let Some(lower) = option.strip_prefix("lowerdir=") {
                *option = format!("lowerdir={}:{lower}", init.display());
            }
        }
    }
    mounts
}

/// Whether `target` is a mount point: listed in `/proc/self/mountinfo` (which also sees a
/// bind mount from the same file system), or on another device than its parent.
pub fn is_mounted(target: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        let wanted = target.to_string_lossy();
        if mount_points(&info).any(|point| point == wanted) {
            return true;
        }
    }
    let (Ok(here), Some(parent)) = (std::fs::metadata(target), target.parent()) else {
        return false;
    };
    std::fs::metadata(parent).is_ok_and(|p| p.dev() != here.dev())
}

/// The mount points of a `mountinfo` text (field 5, with `\NNN` octal escapes decoded).
fn mount_points(info: &str) -> impl Iterator<Item = String> + '_ {
    info.lines().filter_map(|line| {
        let raw = line.split(' ').nth(4)?;
        let bytes = raw.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'\\'
                && i + 3 < bytes.len()
                && let Ok(code) = u8::from_str_radix(&raw[i + 1..i + 4], 8)
            {
                out.push(code);
                i += 4;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        Some(String::from_utf8_lossy(&out).into_owned())
    })
}

/// Performs `mounts` at `target` (unless something is mounted there already).
pub fn mount(mounts: &[Mount], target: &Path) -> Result<(), EngineError> {
    use skiff_sys::mount::MountFlags;
    std::fs::create_dir_all(target).map_err(EngineError::io("create dir", target))?;
    if is_mounted(target) {
        return Ok(());
    }
    for m in mounts {
        match m.kind.as_str() {
            "overlay" => {
                let data = m.options.join(",");
                skiff_sys::mount::mount(
                    Some("overlay"),
                    target,
                    Some("overlay"),
                    MountFlags::empty(),
                    Some(&data),
                )?;
            }
            "bind" => skiff_sys::mount::bind(Path::new(&m.source), target, true)?,
            other => {
                return Err(EngineError::InvalidArgument(format!(
                    "unsupported rootfs mount type {other}"
                )));
            }
        }
    }
    Ok(())
}

/// Unmounts whatever is mounted at `target` (all stacked mounts).
pub fn unmount(target: &Path) -> Result<(), EngineError> {
    for _ in 0..8 {
        if !is_mounted(target) {
            return Ok(());
        }
        skiff_sys::mount::unmount_detach(target)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_name_servers_are_dropped() {
        let host = "search example.com\nnameserver 127.0.0.53\nnameserver 10.0.0.2\n";
        assert_eq!(
            resolv_conf(host, NetworkMode::None),
            "search example.com\nnameserver 10.0.0.2\n"
        );
        assert_eq!(resolv_conf(host, NetworkMode::Host), host);
    }

    #[test]
    fn the_init_layer_goes_on_top_of_the_image() {
        let mounts = vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec!["lowerdir=/l2:/l1".into(), "upperdir=/u".into()],
        }];
        let out = with_init_layer(mounts, Path::new("/c/init"));
        assert_eq!(out[0].options[0], "lowerdir=/c/init:/l2:/l1");
        assert_eq!(out[0].options[1], "upperdir=/u");
    }

    #[test]
    fn mountinfo_points_are_decoded() {
        let info = "36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw\n";
        assert_eq!(mount_points(info).collect::<Vec<_>>(), vec!["/mnt/a b"]);
        assert!(is_mounted(Path::new("/proc")));
        assert!(!is_mounted(Path::new("/proc/self")));
    }
}
