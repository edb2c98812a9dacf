//! Layer unpacking: a tar (plain, gzip or zstd; sniffed) applied to an empty directory in the
//! overlayfs form of whiteouts, with modes, owners, times, xattrs, hard links, symlinks and
//! device nodes preserved.
//!
//! `.wh.NAME` becomes a 0/0 character device `NAME`; `.wh..wh..opq` becomes the xattr
//! `trusted.overlay.opaque=y` on its directory; other `.wh..wh.*` entries (AUFS metadata) are
//! skipped. Entries that would land outside the directory are refused: absolute paths, `..`
//! components, hard links whose target leaves it, and writes through a symlink that leads out
//! (absolute symlinks resolve inside the directory, as they would inside the container).
//!
//! Each layer is unpacked on its own, as Docker's overlay2 driver does, so a path in a layer
//! never follows a symlink that lives in a lower layer.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, XattrFlags};
use skiff_sys::mount::DeviceKind;

use crate::digest::{Digest, HashingReader};
use crate::error::{ImageError, Result};

/// The name prefix marking a whiteout.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The name of the opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to treat a directory as opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// How many symlinks one path may pass through before it counts as a loop.
const MAX_SYMLINKS: usize = 40;
/// The buffer file contents are copied through (`std::io::copy`'s 8 KiB made a large layer
/// cost thousands of small reads from the decompressor and writes to the file).
const COPY_BUFFER: usize = 256 * 1024;

/// What unpacking a layer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// sha256 of the uncompressed tar stream (the layer's DiffID).
    pub diff_id: Digest,
    /// Bytes of file content written.
    pub size: u64,
}

/// Wraps `reader` in the decompressor its first bytes call for (gzip, zstd, or none).
pub fn decompress<'a>(reader: impl Read + Send + 'a) -> Result<Box<dyn Read + Send + 'a>> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = buffered
        .fill_buf()
        .map_err(ImageError::io("read layer", "stream"))?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(ImageError::io("start zstd decoder for", "layer"))?,
        )
    } else {
        Box::new(buffered)
    })
}

/// Unpacks the (possibly compressed) layer `blob` into the existing, empty directory `dest`
/// and returns its DiffID, which the caller compares with the config's.
pub fn unpack_layer(blob: impl Read + Send, dest: &Path) -> Result<Unpacked> {
    let hashing = HashingReader::new(decompress(blob)?);
    let mut archive = tar::Archive::new(hashing);
    let mut state = Unpacker {
        root: dest.to_path_buf(),
        dirs: Vec::new(),
        size: 0,
        buffer: vec![0; COPY_BUFFER],
    };
    let entries = archive
        .entries()
        .map_err(ImageError::io("read layer for", dest))?;
    for entry in entries {
        let mut entry = entry.map_err(ImageError::io("read layer entry for", dest))?;
        state.apply(&mut entry)?;
    }
    state.finish_dirs()?;
    let (diff_id, _) = archive
        .into_inner()
        .finish()
        .map_err(ImageError::io("read layer for", dest))?;
    Ok(Unpacked {
        diff_id,
        size: state.size,
    })
}

struct Unpacker {
    root: PathBuf,
    /// Directories whose mode and times are applied at the end (children change mtimes, and
    /// a read-only mode must not stop their children from being written).
    dirs: Vec<(PathBuf, u32, i64)>,
    size: u64,
    /// What file contents are copied through.
    buffer: Vec<u8>,
}

fn unsafe_entry(entry: &Path, reason: impl Into<String>) -> ImageError {
    ImageError::UnsafeEntry {
        entry: entry.display().to_string(),
        reason: reason.into(),
    }
}

/// The normal components of an entry's path; refuses absolute paths and `..`.
fn clean_components(path: &Path, what: &str) -> Result<Vec<OsString>> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_os_string()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_entry(path, format!("{what} is an absolute path")));
            }
            Component::ParentDir => {
                return Err(unsafe_entry(
                    path,
                    format!("{what} contains '..' and could escape the snapshot"),
                ));
            }
        }
    }
    Ok(parts)
}

impl Unpacker {
    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName
        ) {
            return Ok(());
        }
        let raw = entry
            .path()
            .map_err(ImageError::io("read entry name in", &self.root))?
            .into_owned();
        let mut parts = clean_components(&raw, "the path")?;
        let Some(name) = parts.pop() else {
            // The layer's root itself: only its metadata counts.
            if kind.is_dir() {
                let root = self.root.clone();
                self.set_owner_xattrs(entry, &root)?;
                self.dirs
                    .push((root, header_mode(entry), header_mtime(entry)));
            }
            return Ok(());
        };
        let parent = self.resolve_dir(&parts, &raw)?;
        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE_MARKER.as_bytes() {
            return set_xattr(&parent, OPAQUE_XATTR, b"y");
        }
        if name_bytes.starts_with(b".wh..wh.") {
            return Ok(());
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let target = parent.join(OsStr::from_bytes(hidden));
            remove_existing(&target)?;
            skiff_sys::mount::make_device(&target, DeviceKind::Char, 0, 0, 0)?;
            return Ok(());
        }
        let target = parent.join(&name);
        match kind {
            tar::EntryType::Directory => {
                if !target.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                    remove_existing(&target)?;
                    std::fs::create_dir(&target).map_err(ImageError::io("create dir", &target))?;
                }
                self.set_owner_xattrs(entry, &target)?;
                self.dirs
                    .push((target, header_mode(entry), header_mtime(entry)));
                return Ok(());
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                remove_existing(&target)?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(ImageError::io("create", &target))?;
                self.size += copy_through(entry, &mut file, &mut self.buffer)
                    .map_err(ImageError::io("write", &target))?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(ImageError::io("read link name in", &self.root))?
                    .ok_or_else(|| unsafe_entry(&raw, "a symlink without a target"))?;
                remove_existing(&target)?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(ImageError::io("create symlink", &target))?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(ImageError::io("read link name in", &self.root))?
                    .ok_or_else(|| unsafe_entry(&raw, "a hard link without a target"))?
                    .into_owned();
                let mut source_parts = clean_components(&link, "the hard link's target")?;
                let source_name = source_parts
                    .pop()
                    .ok_or_else(|| unsafe_entry(&raw, "a hard link to the layer's root"))?;
                let source = self
                    .resolve_existing_dir(&source_parts, &raw)?
                    .join(source_name);
                if source.symlink_metadata().is_err() {
                    return Err(unsafe_entry(
                        &raw,
                        format!("hard link to {} which is not in this layer", link.display()),
                    ));
                }
                remove_existing(&target)?;
                std::fs::hard_link(&source, &target)
                    .map_err(ImageError::io("hard link", &target))?;
                // A hard link shares its inode: the first entry's metadata already holds.
                return Ok(());
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let header = entry.header();
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let device = match kind {
                    tar::EntryType::Char => DeviceKind::Char,
                    tar::EntryType::Block => DeviceKind::Block,
                    _ => DeviceKind::Fifo,
                };
                remove_existing(&target)?;
                skiff_sys::mount::make_device(
                    &target,
                    device,
                    major.into(),
                    minor.into(),
                    header_mode(entry),
                )?;
            }
            other => {
                tracing::debug!(entry = %raw.display(), kind = ?other, "skipping layer entry of unhandled type");
                return Ok(());
            }
        }
        self.set_owner_xattrs(entry, &target)?;
        if kind != tar::EntryType::Symlink {
            skiff_sys::mount::chmod(&target, header_mode(entry))?;
        }
        set_mtime(&target, header_mtime(entry))
    }

    /// Sets owner and xattrs (owner first: chown clears set-id bits, the mode comes after).
    fn set_owner_xattrs<R: Read>(&self, entry: &mut tar::Entry<'_, R>, path: &Path) -> Result<()> {
        let header = entry.header();
        // An empty owner field (some tar writers leave it blank) means root.
        let (uid, gid) = (header.uid().unwrap_or(0), header.gid().unwrap_or(0));
        let (uid, gid) = (
            u32::try_from(uid).unwrap_or(u32::MAX),
            u32::try_from(gid).unwrap_or(u32::MAX),
        );
        match skiff_sys::mount::lchown(path, uid, gid) {
            Ok(()) => {}
            // Without privilege the unpack still works, as the current user's files.
            Err(e) if e.errno == skiff_sys::Errno::EPERM => {}
            Err(e) => return Err(e.into()),
        }
        if let Ok(Some(extensions)) = entry.pax_extensions() {
            for extension in extensions.flatten() {
                let Ok(key) = extension.key() else { continue };
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    set_xattr(path, name, extension.value_bytes())?;
                }
            }
        }
        Ok(())
    }

    /// Resolves a directory path inside the root, creating missing directories and following
    /// symlinks as the container would; refuses a path that leaves the root.
    fn resolve_dir(&self, parts: &[OsString], raw: &Path) -> Result<PathBuf> {
        self.walk(parts, raw, true)
    }

    fn resolve_existing_dir(&self, parts: &[OsString], raw: &Path) -> Result<PathBuf> {
        self.walk(parts, raw, false)
    }

    fn walk(&self, parts: &[OsString], raw: &Path, create: bool) -> Result<PathBuf> {
        let mut queue: VecDeque<OsString> = parts.iter().cloned().collect();
        let mut resolved: Vec<OsString> = Vec::new();
        let mut hops = 0;
        while let Some(part) = queue.pop_front() {
            if part == ".." {
                if resolved.pop().is_none() {
                    return Err(unsafe_entry(
                        raw,
                        "its path goes through a symlink that leads outside the snapshot",
                    ));
                }
                continue;
            }
            if part.is_empty() || part == "." {
                continue;
            }
            let path = self
                .root
                .join(resolved.iter().collect::<PathBuf>())
                .join(&part);
            match path.symlink_metadata() {
                Ok(meta) if meta.is_dir() => resolved.push(part),
                Ok(meta) if meta.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return Err(unsafe_entry(raw, "too many levels of symlinks in its path"));
                    }
                    let target =
                        std::fs::read_link(&path).map_err(ImageError::io("read link", &path))?;
                    if target.is_absolute() {
                        resolved.clear();
                    }
                    let expanded: Vec<OsString> = target
                        .components()
                        .filter_map(|c| match c {
                            Component::Normal(p) => Some(p.to_os_string()),
                            Component::ParentDir => Some(OsString::from("..")),
                            _ => None,
                        })
                        .collect();
                    for piece in expanded.into_iter().rev() {
                        queue.push_front(piece);
                    }
                }
                Ok(_) => {
                    return Err(unsafe_entry(
                        raw,
                        format!("{} is not a directory", path.display()),
                    ));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                    std::fs::create_dir(&path).map_err(ImageError::io("create dir", &path))?;
                    resolved.push(part);
                }
                Err(e) => return Err(ImageError::io("look up", path)(e)),
            }
        }
        Ok(self.root.join(resolved.iter().collect::<PathBuf>()))
    }

    /// Applies the deferred directory modes and times, deepest first.
    fn finish_dirs(&mut self) -> Result<()> {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|(path, _, _)| std::cmp::Reverse(path.components().count()));
        for (path, mode, mtime) in dirs {
            skiff_sys::mount::chmod(&path, mode)?;
            set_mtime(&path, mtime)?;
        }
        Ok(())
    }
}

fn header_mode<R: Read>(entry: &tar::Entry<'_, R>) -> u32 {
    entry.header().mode().unwrap_or(0o644) & 0o7777
}

fn header_mtime<R: Read>(entry: &tar::Entry<'_, R>) -> i64 {
    entry
        .header()
        .mtime()
        .ok()
        .and_then(|t| i64::try_from(t).ok())
        .unwrap_or(0)
}

/// Copies all of `from` into `to` through `buffer`; returns the bytes copied.
fn copy_through(
    from: &mut impl Read,
    to: &mut impl Write,
    buffer: &mut [u8],
) -> std::io::Result<u64> {
    let mut total = 0;
    loop {
        let n = match from.read(buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buffer[..n])?;
        total += n as u64;
    }
}

/// Removes whatever is at `path` (a file, a link, or a whole directory); fine if nothing is.
fn remove_existing(path: &Path) -> Result<()> {
    match path.symlink_metadata() {
        Ok(meta) if meta.is_dir() => {
            std::fs::remove_dir_all(path).map_err(ImageError::io("remove", path))
        }
        Ok(_) => std::fs::remove_file(path).map_err(ImageError::io("remove", path)),
        Err(_) => Ok(()),
    }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<()> {
    match rustix::fs::lsetxattr(path, name, value, XattrFlags::empty()) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::NOTSUP) => {
            tracing::warn!(path = %path.display(), xattr = name, "file system does not support this xattr");
            Ok(())
        }
        Err(e) => Err(ImageError::io("set xattr", path)(e.into())),
    }
}

fn set_mtime(path: &Path, mtime: i64) -> Result<()> {
    let time = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: time,
        last_modification: time,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| ImageError::io("set times of", path)(e.into()))
}
