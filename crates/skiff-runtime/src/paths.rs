//! Resolving a path inside a container's root filesystem without ever leaving it.
//!
//! A rootfs comes from an image, and an image may hold symlinks such as `/dev -> /` or
//! `/etc/target -> ../../../host/etc`. Every mount target is resolved here first: symlinks are
//! followed as the container would see them (an absolute target starts again at the rootfs,
//! `..` stops at the rootfs), so a mount never lands on a host path.

use std::path::{Component, Path, PathBuf};

/// Why a path could not be resolved inside the rootfs.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// More than 255 symlinks were followed (a loop).
    #[error("too many levels of symbolic links resolving {path} inside {root}")]
    SymlinkLoop {
        /// The rootfs.
        root: PathBuf,
        /// The path being resolved.
        path: PathBuf,
    },
    /// Reading a symlink failed.
    #[error("read symlink {path}: {source}")]
    ReadLink {
        /// The link.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

const MAX_SYMLINKS: usize = 255;

/// Joins `unsafe_path` (as the container sees it) onto `root`, resolving symlinks inside
/// `root`. The result always starts with `root`. Components that do not exist yet are kept as
/// they are (the caller creates them).
pub fn secure_join(root: &Path, unsafe_path: &Path) -> Result<PathBuf, PathError> {
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut pending: Vec<std::ffi::OsString> = components(unsafe_path);
    pending.reverse();
    let mut followed = 0usize;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(resolved.iter());
        candidate.push(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return Err(PathError::SymlinkLoop {
                        root: root.to_path_buf(),
                        path: unsafe_path.to_path_buf(),
                    });
                }
                let target =
                    std::fs::read_link(&candidate).map_err(|source| PathError::ReadLink {
                        path: candidate.clone(),
                        source,
                    })?;
                if target.is_absolute() {
                    resolved.clear();
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
            }
            _ => resolved.push(part),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(resolved.iter());
    Ok(out)
}

/// The normal and `..` components of a path; `/` and `.` drop out.
fn components(path: &Path) -> Vec<std::ffi::OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_os_string()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn plain_paths_join_under_the_root() {
        let root = tempfile::tempdir().unwrap();
        let got = secure_join(root.path(), Path::new("/a/b/../c")).unwrap();
        assert_eq!(got, root.path().join("a/c"));
    }

    #[test]
    fn dot_dot_cannot_climb_above_the_root() {
        let root = tempfile::tempdir().unwrap();
        let got = secure_join(root.path(), Path::new("../../../etc/passwd")).unwrap();
        assert_eq!(got, root.path().join("etc/passwd"));
    }

    #[test]
    fn absolute_symlinks_restart_at_the_root_not_the_host() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("real")).unwrap();
        symlink("/", root.path().join("dev")).unwrap();
        symlink("/real", root.path().join("link")).unwrap();
        assert_eq!(
            secure_join(root.path(), Path::new("/dev/null")).unwrap(),
            root.path().join("null")
        );
        assert_eq!(
            secure_join(root.path(), Path::new("/link/x")).unwrap(),
            root.path().join("real/x")
        );
    }

    #[test]
    fn relative_symlinks_that_climb_out_stay_inside() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        symlink("../../../../host", root.path().join("etc/escape")).unwrap();
        assert_eq!(
            secure_join(root.path(), Path::new("/etc/escape/file")).unwrap(),
            root.path().join("host/file")
        );
    }

    #[test]
    fn symlink_loops_are_an_error() {
        let root = tempfile::tempdir().unwrap();
        symlink("/b", root.path().join("a")).unwrap();
        symlink("/a", root.path().join("b")).unwrap();
        assert!(matches!(
            secure_join(root.path(), Path::new("/a")),
            Err(PathError::SymlinkLoop { .. })
        ));
    }
}
