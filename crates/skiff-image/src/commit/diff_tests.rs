//! The tar conversion of an upper directory (root: device nodes and `trusted.*` xattrs; CI
//! runs as root): whiteout devices and opaque xattrs become their layer forms, and unpacking
//! the layer gives back the same overlay form.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::XattrFlags;
use skiff_sys::mount::DeviceKind;

use super::*;
use crate::unpack::unpack_layer;

const LONG_DIR: &str =
    "a-directory-name-that-is-long-enough-to-need-the-ustar-prefix-field-0123456789";

fn long_file() -> String {
    format!("{}-file", "x".repeat(120))
}

fn xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, XattrFlags::empty()).unwrap();
}

/// An upper directory as overlayfs leaves it after: `etc/group` deleted, `data` replaced
/// (opaque) by a directory holding `new.txt`, files, links, a FIFO, long names, xattrs, and a
/// volume mount point `vol` with content that must not be committed.
fn upper() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    skiff_sys::mount::make_device(&root.join("etc/group"), DeviceKind::Char, 0, 0, 0).unwrap();
    std::fs::create_dir(root.join("data")).unwrap();
    xattr(&root.join("data"), OPAQUE_XATTR, b"y");
    std::fs::write(root.join("data/new.txt"), b"new").unwrap();
    std::fs::write(root.join("added.txt"), b"hello").unwrap();
    xattr(&root.join("added.txt"), "user.note", b"kept");
    xattr(
        &root.join("added.txt"),
        "trusted.overlay.origin",
        b"dropped",
    );
    std::fs::hard_link(root.join("added.txt"), root.join("hard")).unwrap();
    std::os::unix::fs::symlink("added.txt", root.join("link")).unwrap();
    skiff_sys::mount::make_device(&root.join("pipe"), DeviceKind::Fifo, 0, 0, 0o640).unwrap();
    skiff_sys::mount::make_device(&root.join("null"), DeviceKind::Char, 1, 3, 0o666).unwrap();
    let deep = root.join(LONG_DIR).join(LONG_DIR).join(LONG_DIR);
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join(long_file()), b"deep").unwrap();
    std::os::unix::fs::symlink(deep.join(long_file()), root.join("far")).unwrap();
    std::fs::create_dir(root.join("vol")).unwrap();
    std::fs::write(root.join("vol/secret"), b"volume data").unwrap();
    std::fs::set_permissions(
        root.join("added.txt"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    dir
}

fn diff_of(upper: &Path) -> Vec<u8> {
    write_diff(upper, &[PathBuf::from("/vol")], Vec::new())
        .unwrap()
        .0
}

#[test]
fn whiteout_devices_and_opaque_xattrs_become_wh_entries() {
    let upper = upper();
    let tar_bytes = diff_of(upper.path());
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let header = entry.header();
        match name.as_str() {
            "etc/.wh.group" => {
                assert_eq!(header.entry_type(), tar::EntryType::Regular);
                assert_eq!(header.mode().unwrap(), 0o600);
                assert_eq!(header.size().unwrap(), 0);
            }
            "data/.wh..wh..opq" => {
                assert_eq!(header.entry_type(), tar::EntryType::Regular);
                assert_eq!(header.size().unwrap(), 0);
            }
            "hard" => {
                assert_eq!(header.entry_type(), tar::EntryType::Link);
                assert_eq!(entry.link_name().unwrap().unwrap(), Path::new("added.txt"));
            }
            "added.txt" => {
                assert_eq!(header.mode().unwrap(), 0o4755);
                let xattrs: Vec<(String, Vec<u8>)> = entry
                    .pax_extensions()
                    .unwrap()
                    .unwrap()
                    .map(|e| {
                        let e = e.unwrap();
                        (e.key().unwrap().to_string(), e.value_bytes().to_vec())
                    })
                    .collect();
                assert_eq!(
                    xattrs,
                    [("SCHILY.xattr.user.note".to_string(), b"kept".to_vec())]
                );
                let mut content = String::new();
                entry.read_to_string(&mut content).unwrap();
                assert_eq!(content, "hello");
            }
            "null" => {
                assert_eq!(header.entry_type(), tar::EntryType::Char);
                assert_eq!(header.device_major().unwrap(), Some(1));
                assert_eq!(header.device_minor().unwrap(), Some(3));
            }
            _ => {}
        }
        names.push(name);
    }
    let deep = format!("{LONG_DIR}/{LONG_DIR}/{LONG_DIR}");
    let long = format!("{deep}/{}", long_file());
    let expected = [
        LONG_DIR.to_string() + "/",
        format!("{LONG_DIR}/{LONG_DIR}/"),
        format!("{deep}/"),
        long.clone(),
        "added.txt".into(),
        "data/".into(),
        "data/.wh..wh..opq".into(),
        "data/new.txt".into(),
        "etc/".into(),
        "etc/.wh.group".into(),
        "far".into(),
        "hard".into(),
        "link".into(),
        "null".into(),
        "pipe".into(),
    ];
    let names: Vec<String> = names
        .into_iter()
        .map(|n| {
            // The tar crate drops a directory's trailing slash when it reads a name.
            let is_dir = expected.iter().any(|e| e == &format!("{n}/"));
            if is_dir { format!("{n}/") } else { n }
        })
        .collect();
    assert_eq!(names, expected, "deterministic order, volume left out");
    assert!(
        long.len() > NAME_LEN + PREFIX_LEN,
        "the long name needs PAX"
    );
}

#[test]
fn the_same_upper_gives_the_same_bytes() {
    let upper = upper();
    assert_eq!(diff_of(upper.path()), diff_of(upper.path()));
}

#[test]
fn unpacking_the_diff_gives_back_the_same_overlay_form() {
    let upper = upper();
    let tar_bytes = diff_of(upper.path());
    let out = tempfile::tempdir().unwrap();
    let unpacked = unpack_layer(&tar_bytes[..], out.path()).unwrap();
    assert_eq!(unpacked.diff_id, crate::Digest::of(&tar_bytes));
    std::fs::remove_dir_all(upper.path().join("vol")).unwrap();
    assert_eq!(tree(upper.path()), tree(out.path()));
    let a = std::fs::metadata(out.path().join("added.txt")).unwrap();
    let b = std::fs::metadata(out.path().join("hard")).unwrap();
    assert_eq!(a.ino(), b.ino(), "the hard link is one inode again");
}

/// Everything overlayfs reads of a tree, path by path (not the root's own metadata).
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(root, Path::new(""), &mut out);
    out
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) {
    let mut names: Vec<_> = std::fs::read_dir(root.join(rel))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let rel = rel.join(name);
        let path = root.join(&rel);
        let meta = path.symlink_metadata().unwrap();
        let kind = meta.file_type();
        let body = if kind.is_file() {
            String::from_utf8(std::fs::read(&path).unwrap()).unwrap()
        } else if kind.is_symlink() {
            std::fs::read_link(&path).unwrap().display().to_string()
        } else if kind.is_char_device() {
            format!("char {:x}", meta.rdev())
        } else {
            String::new()
        };
        let xattrs: Vec<String> = read_xattrs(&path)
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k == OPAQUE_XATTR || !k.starts_with("trusted.overlay."))
            .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(&v)))
            .collect();
        // A symlink's mode and mtime mean nothing; a whiteout's mtime is not carried.
        let (mode, mtime) = if kind.is_symlink() {
            (0, 0)
        } else if kind.is_char_device() && meta.rdev() == 0 {
            (meta.mode(), 0)
        } else {
            (meta.mode(), meta.mtime())
        };
        out.push(format!(
            "{} mode={mode:o} owner={}:{} mtime={mtime} {body:?} {xattrs:?}",
            rel.display(),
            meta.uid(),
            meta.gid(),
        ));
        if kind.is_dir() {
            walk(root, &rel, out);
        }
    }
}
