//! The kubelet's atomic writer: a volume's files live in a timestamped directory
//! `..<time>`, `..data` is a symlink to it, and each top-level name is a symlink through
//! `..data`. An update writes a new directory, swaps `..data` with one `rename` (readers see
//! the old set or the new one, never a mix), fixes the top-level links and removes the old
//! directory.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The symlink to the current files.
pub const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

fn io(what: &str, p: &Path) -> impl FnOnce(std::io::Error) -> String {
    let what = what.to_string();
    let p = p.display().to_string();
    move |e| format!("{what} {p}: {e}")
}

/// The first component of a relative path.
fn top(rel: &str) -> String {
    rel.split('/')
        .find(|c| !c.is_empty() && *c != ".")
        .unwrap_or(rel)
        .to_string()
}

/// Whether the directory `current` holds exactly `files` (contents and modes).
fn same(current: &Path, files: &[(String, Vec<u8>, u32)]) -> bool {
    let mut wanted = BTreeSet::new();
    for (rel, content, mode) in files {
        let path = current.join(rel);
        match (std::fs::read(&path), std::fs::metadata(&path)) {
            (Ok(c), Ok(m)) if c == *content && m.permissions().mode() & 0o7777 == *mode => {}
            _ => return false,
        }
        wanted.insert(top(rel));
    }
    let present: BTreeSet<String> = std::fs::read_dir(current)
        .map(|it| {
            it.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    present == wanted
}

/// Writes `files` (relative path, content, mode) into `dir` atomically; returns whether
/// anything changed.
pub fn write(dir: &Path, files: &[(String, Vec<u8>, u32)]) -> Result<bool, String> {
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let data = dir.join(DATA);
    let old: Option<PathBuf> = std::fs::read_link(&data).ok().map(|t| dir.join(t));
    if let Some(old) = &old
        && same(old, files)
    {
        return Ok(false);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let name = format!("..{}_{:09}", now.as_secs(), now.subsec_nanos());
    let fresh = dir.join(&name);
    std::fs::create_dir(&fresh).map_err(io("create", &fresh))?;
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755))
        .map_err(io("chmod", &fresh))?;
    for (rel, content, mode) in files {
        let target = fresh.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        std::fs::write(&target, content).map_err(io("write", &target))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))
            .map_err(io("chmod", &target))?;
    }
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&name, &tmp).map_err(io("link", &tmp))?;
    std::fs::rename(&tmp, &data).map_err(io("rename", &data))?;

    let wanted: BTreeSet<String> = files.iter().map(|(rel, _, _)| top(rel)).collect();
    for t in &wanted {
        let link = dir.join(t);
        let target = Path::new(DATA).join(t);
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => {
                if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
                    continue;
                }
                std::fs::remove_file(&link).map_err(io("remove", &link))?;
            }
            // Left by an older layout (files written in place): replaced by the link.
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&link).map_err(io("remove", &link))?,
            Ok(_) => std::fs::remove_file(&link).map_err(io("remove", &link))?,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&target, &link).map_err(io("link", &link))?;
    }
    // Names no longer present, and anything else of an older layout or an older write.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n == DATA || n == name || wanted.contains(&n) {
                continue;
            }
            let path = e.path();
            let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
            let removed = if is_dir {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if let Err(err) = removed {
                tracing::warn!(path = %path.display(), error = %err, "cannot remove an old volume file");
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_swap_the_data_link_and_fix_the_names() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let v1 = vec![
            ("a".to_string(), b"1".to_vec(), 0o644),
            ("sub/b".to_string(), b"2".to_vec(), 0o600),
        ];
        assert!(write(d, &v1).unwrap());
        assert!(!write(d, &v1).unwrap());
        assert_eq!(std::fs::read(d.join("a")).unwrap(), b"1");
        assert_eq!(std::fs::read(d.join("sub/b")).unwrap(), b"2");
        let mode = std::fs::metadata(d.join("sub/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let first = std::fs::read_link(d.join(DATA)).unwrap();

        let v2 = vec![("a".to_string(), b"3".to_vec(), 0o644)];
        assert!(write(d, &v2).unwrap());
        assert_eq!(std::fs::read(d.join("a")).unwrap(), b"3");
        assert!(std::fs::symlink_metadata(d.join("sub")).is_err());
        assert!(!d.join(first).exists());
        let names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }
}
