//! Layer unpacking on its own: whiteouts in overlay form, metadata preserved, compression
//! sniffed, and every way out of the snapshot refused. Needs root (device nodes, owners,
//! `trusted.*` xattrs), which CI has.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use skiff_image::ImageError;
use skiff_image::unpack::unpack_layer;

/// Builds a layer tar entry by entry.
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Self {
        Layer(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_mtime(1_704_067_200);
        header.set_size(0);
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, mode);
        self.0.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    fn file(mut self, path: &str, mode: u32, uid: u64, data: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode);
        h.set_size(data.len() as u64);
        h.set_uid(uid);
        h.set_gid(uid);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }

    fn link(mut self, kind: tar::EntryType, path: &str, target: &str) -> Self {
        let mut h = Self::header(kind, 0o777);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    /// A raw entry whose name is written as is (tar-rs refuses `..` in `append_data`).
    fn raw(mut self, kind: tar::EntryType, name: &str, link: Option<&str>) -> Self {
        let mut h = Self::header(kind, 0o644);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        self.0.append(&h, &[][..]).unwrap();
        self
    }

    fn device(mut self, path: &str, major: u32, minor: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Char, 0o666);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.0.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    fn xattr_file(mut self, path: &str, key: &str, value: &[u8]) -> Self {
        self.0
            .append_pax_extensions([(format!("SCHILY.xattr.{key}").as_str(), value)])
            .unwrap();
        self.file(path, 0o644, 0, b"x")
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn unpack(
    tar: &[u8],
) -> (
    tempfile::TempDir,
    Result<skiff_image::unpack::Unpacked, ImageError>,
) {
    let dir = tempfile::tempdir().unwrap();
    let result = unpack_layer(tar, dir.path());
    (dir, result)
}

fn refused(tar: Vec<u8>, needle: &str) {
    let (dir, result) = unpack(&tar);
    let err = result.expect_err("the layer must be refused");
    assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{err}");
    assert!(err.to_string().contains(needle), "{err}");
    assert!(!Path::new("/tmp/skiff-escaped").exists());
    drop(dir);
}

#[test]
fn whiteouts_become_overlay_devices_and_opaque_xattrs() {
    let tar = Layer::new()
        .dir("data/", 0o755)
        .file("data/.wh.victim", 0o644, 0, b"")
        .dir("data/old/", 0o755)
        .file("data/old/.wh..wh..opq", 0o644, 0, b"")
        .file("data/old/c", 0o644, 0, b"c")
        .file(".wh..wh.plnk", 0o644, 0, b"")
        .bytes();
    let (dir, result) = unpack(&tar);
    result.unwrap();
    let victim = dir.path().join("data/victim").symlink_metadata().unwrap();
    assert!(victim.file_type().is_char_device());
    assert_eq!(victim.rdev(), 0);
    assert!(!dir.path().join("data/.wh.victim").exists());
    let opaque = rustix::fs::lgetxattr(
        dir.path().join("data/old"),
        "trusted.overlay.opaque",
        &mut [0u8; 8],
    )
    .unwrap();
    assert_eq!(opaque, 1);
    assert!(!dir.path().join("data/old/.wh..wh..opq").exists());
    assert!(dir.path().join("data/old/c").is_file());
    assert!(!dir.path().join(".wh..wh.plnk").exists());
}

#[test]
fn modes_owners_links_devices_and_xattrs_are_preserved() {
    let tar = Layer::new()
        .dir("ro/", 0o555)
        .file("ro/suid", 0o4755, 1000, b"#!/bin/sh\n")
        .link(tar::EntryType::Link, "ro/hard", "ro/suid")
        .link(tar::EntryType::Symlink, "abs", "/bin/busybox")
        .device("null", 1, 3)
        .xattr_file("tagged", "user.skiff", b"yes")
        .bytes();
    let (dir, result) = unpack(&tar);
    let unpacked = result.unwrap();
    assert_eq!(unpacked.diff_id, skiff_image::Digest::of(&tar));
    let root = dir.path();
    let suid = root.join("ro/suid").metadata().unwrap();
    assert_eq!(suid.permissions().mode() & 0o7777, 0o4755);
    assert_eq!((suid.uid(), suid.gid()), (1000, 1000));
    assert_eq!(suid.mtime(), 1_704_067_200);
    assert_eq!(root.join("ro/hard").metadata().unwrap().ino(), suid.ino());
    assert_eq!(
        root.join("ro").metadata().unwrap().permissions().mode() & 0o7777,
        0o555
    );
    assert_eq!(
        std::fs::read_link(root.join("abs")).unwrap(),
        Path::new("/bin/busybox")
    );
    let null = root.join("null").symlink_metadata().unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    let mut value = [0u8; 8];
    let n = rustix::fs::lgetxattr(root.join("tagged"), "user.skiff", &mut value).unwrap();
    assert_eq!(&value[..n], b"yes");
}

#[test]
fn gzip_and_zstd_layers_are_sniffed() {
    let tar = Layer::new().file("a", 0o644, 0, b"hello").bytes();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    for blob in [gz.finish().unwrap(), zst] {
        let (dir, result) = unpack(&blob);
        assert_eq!(result.unwrap().diff_id, skiff_image::Digest::of(&tar));
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"hello");
    }
}

#[test]
fn parent_components_and_absolute_paths_are_refused() {
    refused(
        Layer::new()
            .raw(tar::EntryType::Regular, "../../../tmp/skiff-escaped", None)
            .bytes(),
        "'..'",
    );
    refused(
        Layer::new()
            .raw(tar::EntryType::Regular, "/tmp/skiff-escaped", None)
            .bytes(),
        "absolute",
    );
}

#[test]
fn hard_links_out_of_the_snapshot_are_refused() {
    refused(
        Layer::new()
            .raw(tar::EntryType::Link, "passwd", Some("../../../etc/passwd"))
            .bytes(),
        "'..'",
    );
    refused(
        Layer::new()
            .raw(tar::EntryType::Link, "passwd", Some("/etc/passwd"))
            .bytes(),
        "absolute",
    );
    refused(
        Layer::new()
            .raw(tar::EntryType::Link, "x", Some("missing"))
            .bytes(),
        "not in this layer",
    );
}

#[test]
fn writing_through_a_symlink_that_leads_out_is_refused() {
    let tar = Layer::new()
        .link(tar::EntryType::Symlink, "evil", "../../../../tmp")
        .file("evil/skiff-escaped", 0o644, 0, b"x")
        .bytes();
    refused(tar, "symlink that leads outside");
}

#[test]
fn absolute_symlinks_resolve_inside_the_snapshot() {
    let tar = Layer::new()
        .dir("etc/", 0o755)
        .link(tar::EntryType::Symlink, "conf", "/etc")
        .file("conf/skiff-inside", 0o644, 0, b"x")
        .bytes();
    let (dir, result) = unpack(&tar);
    result.unwrap();
    assert!(dir.path().join("etc/skiff-inside").is_file());
    assert!(!Path::new("/etc/skiff-inside").exists());
}
