//! Directory trees on the host: their size (what `volume prune` and `system prune` report as
//! reclaimed) and a faithful copy (an image directory into an empty volume, as Docker fills a
//! volume on its first use): owners, modes and times kept, symbolic links copied as links
//! (never followed), FIFOs and device nodes re-created, sockets skipped.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::EngineError;

/// The apparent size of every regular file under `path` (0 if it is missing).
pub fn size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return if meta.is_file() { meta.len() } else { 0 };
    }
    let mut total = 0;
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

/// Whether `dir` has no entries (a missing directory counts as empty).
pub fn is_empty_dir(dir: &Path) -> Result<bool, EngineError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(EngineError::io("list", dir)(e)),
    }
}

/// Copies the content of directory `from` into the existing directory `to`, and gives `to`
/// the owner and mode of `from`.
pub fn copy_contents(from: &Path, to: &Path) -> Result<(), EngineError> {
    let meta = std::fs::symlink_metadata(from).map_err(EngineError::io("stat", from))?;
    copy_attributes(&meta, to)?;
    let entries = std::fs::read_dir(from).map_err(EngineError::io("list", from))?;
    for entry in entries {
        let entry = entry.map_err(EngineError::io("list", from))?;
        copy_entry(&entry.path(), &to.join(entry.file_name()))?;
    }
    Ok(())
}

/// Copies one entry (recursively for a directory).
fn copy_entry(from: &Path, to: &Path) -> Result<(), EngineError> {
    let meta = std::fs::symlink_metadata(from).map_err(EngineError::io("stat", from))?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = std::fs::read_link(from).map_err(EngineError::io("read link", from))?;
        std::os::unix::fs::symlink(&target, to).map_err(EngineError::io("create link", to))?;
        std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
            .map_err(EngineError::io("chown", to))?;
        return Ok(());
    }
    if kind.is_dir() {
        std::fs::create_dir(to).map_err(EngineError::io("create dir", to))?;
        copy_contents(from, to)?;
        return Ok(());
    }
    if kind.is_file() {
        std::fs::copy(from, to).map_err(EngineError::io("copy to", to))?;
    } else if kind.is_fifo() || kind.is_char_device() || kind.is_block_device() {
        use nix::sys::stat::{Mode, SFlag, mknod};
        let flag = if kind.is_fifo() {
            SFlag::S_IFIFO
        } else if kind.is_char_device() {
            SFlag::S_IFCHR
        } else {
            SFlag::S_IFBLK
        };
        mknod(to, flag, Mode::from_bits_truncate(meta.mode()), meta.rdev())
            .map_err(|errno| EngineError::io("create node", to)(errno.into()))?;
    } else {
        // A socket means nothing without its server.
        return Ok(());
    }
    copy_attributes(&meta, to)
}

/// Gives `to` the owner, mode and modification time of `meta`.
fn copy_attributes(meta: &std::fs::Metadata, to: &Path) -> Result<(), EngineError> {
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
        .map_err(EngineError::io("chown", to))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(EngineError::io("chmod", to))?;
    if let Ok(modified) = meta.modified() {
        if let Ok(file) = std::fs::File::open(to) {
            let _ = file.set_modified(modified);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_is_copied_with_links_and_modes_and_measured() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        std::fs::create_dir(from.path().join("sub")).unwrap();
        std::fs::write(from.path().join("sub/a"), b"hello").unwrap();
        std::fs::set_permissions(
            from.path().join("sub/a"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", from.path().join("link")).unwrap();
        std::fs::set_permissions(from.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
        assert!(is_empty_dir(to.path()).unwrap());
        copy_contents(from.path(), to.path()).unwrap();
        assert_eq!(std::fs::read(to.path().join("sub/a")).unwrap(), b"hello");
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&to.path().join("sub/a")), 0o640);
        assert_eq!(mode(to.path()), 0o750);
        assert_eq!(
            std::fs::read_link(to.path().join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(size(to.path()), 5);
        assert!(!is_empty_dir(to.path()).unwrap());
        assert_eq!(size(&to.path().join("missing")), 0);
    }
}
