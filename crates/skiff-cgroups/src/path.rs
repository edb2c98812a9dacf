//! A cgroup's name inside a hierarchy, checked so it can never escape the hierarchy's root.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{CgroupError, Result};

/// Where a cgroup lives inside every hierarchy, relative to the hierarchy's root.
///
/// Built from a path such as `/skiff/<container-id>` or an OCI `linux.cgroupsPath`. Absolute and
/// relative paths both mean "below the hierarchy root" (the mount point): `/skiff/abc` and
/// `skiff/abc` are the same cgroup. `..` is refused, `.` and empty components are dropped, and a
/// systemd-style `slice:prefix:name` is refused because there is no systemd driver.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CgroupPath(PathBuf);

impl CgroupPath {
    /// Checks and normalises a cgroup path.
    ///
    /// ```
    /// use skiff_cgroups::CgroupPath;
    /// let path = CgroupPath::parse("/skiff/abc").unwrap();
    /// assert_eq!(path.to_string(), "/skiff/abc");
    /// assert!(CgroupPath::parse("/skiff/../etc").is_err());
    /// ```
    pub fn parse(path: &str) -> Result<CgroupPath> {
        let invalid = |reason| CgroupError::InvalidPath {
            path: path.to_string(),
            reason,
        };
        if !path.contains('/') && path.matches(':').count() == 2 {
            return Err(CgroupError::SystemdPath {
                path: path.to_string(),
            });
        }
        if path.contains('\0') || path.contains('\n') {
            return Err(invalid("it contains a NUL or newline character"));
        }
        let mut normal = PathBuf::new();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(invalid("`..` could escape the cgroup root")),
                name => normal.push(name),
            }
        }
        if normal.as_os_str().is_empty() {
            return Err(invalid(
                "the root cgroup cannot be managed; name a cgroup below it",
            ));
        }
        Ok(CgroupPath(normal))
    }

    /// The path relative to a hierarchy root (no leading `/`).
    pub fn relative(&self) -> &Path {
        &self.0
    }

    /// This cgroup's directory in a hierarchy mounted at `root`.
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }

    /// A cgroup below this one, e.g. a container's cgroup below its pod's.
    pub fn join(&self, name: &str) -> Result<CgroupPath> {
        CgroupPath::parse(&format!("{}/{name}", self.0.display()))
    }
}

impl FromStr for CgroupPath {
    type Err = CgroupError;

    fn from_str(s: &str) -> Result<CgroupPath> {
        CgroupPath::parse(s)
    }
}

impl fmt::Display for CgroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_and_relative_paths_name_the_same_cgroup() {
        assert_eq!(
            CgroupPath::parse("/skiff/abc").unwrap(),
            CgroupPath::parse("skiff/abc").unwrap()
        );
        assert_eq!(
            CgroupPath::parse("//skiff/./abc/").unwrap().relative(),
            Path::new("skiff/abc")
        );
    }

    #[test]
    fn dot_dot_is_refused_so_a_path_cannot_escape_the_root() {
        let err = CgroupPath::parse("/skiff/../../etc").unwrap_err();
        assert!(err.to_string().contains(".."), "{err}");
    }

    #[test]
    fn the_root_itself_is_refused() {
        assert!(CgroupPath::parse("/").is_err());
        assert!(CgroupPath::parse("").is_err());
    }

    #[test]
    fn a_systemd_path_is_refused_with_a_hint() {
        let err = CgroupPath::parse("system.slice:skiff:abc").unwrap_err();
        assert!(matches!(err, CgroupError::SystemdPath { .. }));
        assert!(err.to_string().contains("/skiff/<container-id>"), "{err}");
    }

    #[test]
    fn under_places_the_cgroup_below_a_mount_point() {
        let path = CgroupPath::parse("/skiff/abc").unwrap();
        assert_eq!(
            path.under(Path::new("/sys/fs/cgroup/memory")),
            PathBuf::from("/sys/fs/cgroup/memory/skiff/abc")
        );
        assert_eq!(path.join("inner").unwrap().to_string(), "/skiff/abc/inner");
    }
}
