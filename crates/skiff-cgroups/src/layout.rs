//! Which cgroup layout a host has, read from mountinfo.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Why the cgroup layout could not be found.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The mountinfo file could not be read.
    #[error("read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// No cgroup filesystem is mounted at all.
    #[error("no cgroup filesystem is mounted: mount cgroup2 on /sys/fs/cgroup")]
    NoCgroupFs,
}

/// The three layouts a Linux host can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupLayout {
    /// Only v1 hierarchies.
    Legacy,
    /// v1 hierarchies for the controllers plus a cgroup2 mount (usually `/sys/fs/cgroup/unified`).
    Hybrid,
    /// One cgroup2 hierarchy holds every controller.
    Unified,
}

/// The cgroup mounts of a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounts {
    /// Each v1 controller and where its hierarchy is mounted.
    pub v1: BTreeMap<String, PathBuf>,
    /// Where cgroup2 is mounted, if anywhere.
    pub v2: Option<PathBuf>,
}

impl Mounts {
    /// Reads `/proc/self/mountinfo`.
    pub fn of_this_process() -> Result<Mounts, LayoutError> {
        let path = PathBuf::from("/proc/self/mountinfo");
        let text =
            std::fs::read_to_string(&path).map_err(|source| LayoutError::Read { path, source })?;
        Ok(Mounts::parse(&text))
    }

    /// Parses mountinfo text (proc(5): fields, then ` - `, fstype, source, super options).
    pub fn parse(mountinfo: &str) -> Mounts {
        let mut mounts = Mounts::default();
        for line in mountinfo.lines() {
            let Some((before, after)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = before.split(' ').nth(4) else {
                continue;
            };
            let mut after = after.split(' ');
            let (Some(fstype), Some(_source), Some(options)) =
                (after.next(), after.next(), after.next())
            else {
                continue;
            };
            let mount_point = PathBuf::from(unescape(mount_point));
            match fstype {
                "cgroup2" => {
                    mounts.v2.get_or_insert(mount_point);
                }
                "cgroup" => {
                    for option in options.split(',') {
                        let controller = option.strip_prefix("name=").unwrap_or(option);
                        if is_v1_controller(option) {
                            mounts
                                .v1
                                .entry(controller.to_string())
                                .or_insert_with(|| mount_point.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        mounts
    }

    /// The layout these mounts make.
    pub fn layout(&self) -> Result<CgroupLayout, LayoutError> {
        match (self.v1.is_empty(), &self.v2) {
            (true, None) => Err(LayoutError::NoCgroupFs),
            (true, Some(_)) => Ok(CgroupLayout::Unified),
            (false, None) => Ok(CgroupLayout::Legacy),
            (false, Some(_)) => Ok(CgroupLayout::Hybrid),
        }
    }
}

fn is_v1_controller(option: &str) -> bool {
    matches!(
        option,
        "cpu"
            | "cpuacct"
            | "cpuset"
            | "memory"
            | "devices"
            | "freezer"
            | "blkio"
            | "pids"
            | "net_cls"
            | "net_prio"
            | "perf_event"
            | "hugetlb"
            | "rdma"
            | "misc"
    ) || option == "name=systemd"
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..=i + 3].iter().all(u8::is_ascii_digit)
        {
            let code =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(code as char);
            i += 4;
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 23 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,pids
";

    const UNIFIED: &str = "\
25 30 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn a_hybrid_host_has_v1_controllers_and_a_cgroup2_mount() {
        let mounts = Mounts::parse(HYBRID);
        assert_eq!(mounts.layout().unwrap(), CgroupLayout::Hybrid);
        assert_eq!(
            mounts.v1["cpu"],
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(
            mounts.v1["cpuacct"],
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(mounts.v1["memory"], PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(mounts.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn a_unified_host_has_only_cgroup2() {
        let mounts = Mounts::parse(UNIFIED);
        assert_eq!(mounts.layout().unwrap(), CgroupLayout::Unified);
        assert!(mounts.v1.is_empty());
    }

    #[test]
    fn no_cgroup_mount_is_an_error_that_says_what_to_mount() {
        let err = Mounts::parse("").layout().unwrap_err();
        assert!(err.to_string().contains("mount cgroup2"));
    }

    #[test]
    fn escaped_mount_points_are_decoded() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
    }

    #[test]
    fn this_host_has_a_cgroup_layout() {
        let mounts = Mounts::of_this_process().unwrap();
        let layout = mounts.layout().unwrap();
        if layout != CgroupLayout::Unified {
            assert!(mounts.v1.contains_key("memory"), "{mounts:?}");
        }
    }
}
