//! The thin executor: reading and writing cgroup files, making and removing cgroup directories,
//! and waiting for a condition with a deadline. Every error names the file and the value.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{CgroupError, Result};
use crate::plan::Write;

/// Writes `value` to a cgroup file in one `write(2)`, as the kernel expects.
pub(crate) fn write_file(path: &Path, value: &str) -> Result<()> {
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .and_then(|mut file| file.write_all(value.as_bytes()));
    result.map_err(|source| {
        // cgroupfs answers EACCES when asked to create a file it does not have.
        if !path.exists() {
            CgroupError::MissingFile {
                path: path.to_path_buf(),
                value: value.to_string(),
            }
        } else {
            CgroupError::Write {
                path: path.to_path_buf(),
                value: value.to_string(),
                source,
            }
        }
    })
}

/// Writes a plan's entries into `dir_of(controller)` in order.
pub(crate) fn execute(
    writes: &[Write],
    mut dir_of: impl FnMut(&Write) -> Result<PathBuf>,
) -> Result<()> {
    for write in writes {
        let dir = dir_of(write)?;
        write_file(&dir.join(&write.file), &write.value)?;
    }
    Ok(())
}

/// Reads a whole cgroup file.
pub(crate) fn read_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a cgroup file that may legitimately be absent (an optional controller or feature).
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Creates one directory; an existing one is fine (creation is idempotent).
pub(crate) fn create_dir(path: &Path) -> Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::CreateDir {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The pids in `dir/cgroup.procs` and in every cgroup below it, sorted, without duplicates.
pub(crate) fn pids_recursive(dir: &Path) -> Result<Vec<i32>> {
    let mut pids = BTreeSet::new();
    collect_pids(dir, &mut pids)?;
    Ok(pids.into_iter().collect())
}

fn collect_pids(dir: &Path, pids: &mut BTreeSet<i32>) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    let Some(text) = read_optional(&procs)? else {
        return Ok(());
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let pid = line.parse().map_err(|_| CgroupError::Parse {
            path: procs.clone(),
            content: line.to_string(),
            expected: "one process id per line",
        })?;
        pids.insert(pid);
    }
    for child in child_dirs(dir)? {
        collect_pids(&child, pids)?;
    }
    Ok(())
}

/// The sub-directories (child cgroups) of a cgroup directory.
fn child_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| CgroupError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

/// Removes a cgroup directory and the cgroups below it, retrying until `deadline` while their
/// processes exit. A missing directory is already removed.
pub(crate) fn remove_cgroup(dir: &Path, deadline: Instant, timeout: Duration) -> Result<()> {
    let mut backoff = Backoff::new();
    loop {
        match try_remove(dir) {
            Ok(()) => return Ok(()),
            Err(source) => {
                if Instant::now() >= deadline {
                    let pids = pids_recursive(dir)?;
                    return Err(if pids.is_empty() {
                        CgroupError::Remove {
                            path: dir.to_path_buf(),
                            source,
                        }
                    } else {
                        CgroupError::StillHasProcesses {
                            path: dir.to_path_buf(),
                            pids,
                            timeout,
                        }
                    });
                }
                backoff.sleep();
            }
        }
    }
}

/// One attempt: children first, then the directory itself.
fn try_remove(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for child in child_dirs(dir).map_err(|_| std::io::Error::from(ErrorKind::Other))? {
        try_remove(&child)?;
    }
    // A cgroup with processes cannot go; say "busy" without asking the kernel.
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    if !procs.trim().is_empty() {
        return Err(std::io::Error::from(ErrorKind::ResourceBusy));
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        // Only a plain directory standing in for cgroupfs (a test's temp dir) holds removable
        // files; on cgroupfs rmdir never says ENOTEMPTY and its files cannot be unlinked.
        Err(err) if err.kind() == ErrorKind::DirectoryNotEmpty => {
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                if entry.file_type()?.is_file() {
                    std::fs::remove_file(entry.path())?;
                }
            }
            std::fs::remove_dir(dir)
        }
        Err(err) => Err(err),
    }
}

/// Polls `check` until it says yes or `timeout` passes; returns whether it said yes.
pub(crate) fn wait_for(timeout: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    let mut backoff = Backoff::new();
    loop {
        if check()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        backoff.sleep();
    }
}

/// Polling intervals growing from 1 ms to 20 ms.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_millis(1))
    }

    fn sleep(&mut self) {
        std::thread::sleep(self.0);
        self.0 = (self.0 * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_are_collected_from_the_cgroup_and_its_children() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.procs"), "12\n7\n").unwrap();
        std::fs::create_dir(dir.path().join("child")).unwrap();
        std::fs::write(dir.path().join("child/cgroup.procs"), "7\n99\n").unwrap();
        assert_eq!(pids_recursive(dir.path()).unwrap(), [7, 12, 99]);
    }

    #[test]
    fn a_garbled_procs_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.procs"), "12\nabc\n").unwrap();
        let err = pids_recursive(dir.path()).unwrap_err();
        assert!(err.to_string().contains("cgroup.procs"), "{err}");
        assert!(err.to_string().contains("abc"), "{err}");
    }

    #[test]
    fn removing_a_cgroup_with_processes_fails_after_the_deadline_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let cgroup = dir.path().join("busy");
        std::fs::create_dir(&cgroup).unwrap();
        std::fs::write(cgroup.join("cgroup.procs"), "4242\n").unwrap();
        let timeout = Duration::from_millis(50);
        let err = remove_cgroup(&cgroup, Instant::now() + timeout, timeout).unwrap_err();
        assert!(
            matches!(&err, CgroupError::StillHasProcesses { pids, .. } if pids == &[4242]),
            "{err}"
        );
        assert!(err.to_string().contains("kill them first"), "{err}");
        assert!(cgroup.exists());
    }

    #[test]
    fn removing_a_missing_cgroup_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        assert!(remove_cgroup(&gone, Instant::now(), Duration::ZERO).is_ok());
    }

    #[test]
    fn writing_into_a_missing_directory_names_file_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_file(&dir.path().join("nope/pids.max"), "8").unwrap_err();
        assert!(matches!(err, CgroupError::MissingFile { .. }));
        let text = err.to_string();
        assert!(
            text.contains("nope/pids.max") && text.contains("\"8\""),
            "{text}"
        );
    }

    #[test]
    fn waiting_gives_up_at_the_deadline() {
        let start = Instant::now();
        assert!(!wait_for(Duration::from_millis(30), || Ok(false)).unwrap());
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert!(wait_for(Duration::ZERO, || Ok(true)).unwrap());
    }
}
