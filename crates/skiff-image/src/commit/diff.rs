//! The inverse of [`unpack_layer`](crate::unpack::unpack_layer): an overlayfs upper directory
//! written as a layer tar.
//!
//! Entries come in a deterministic order (a directory, then its children sorted by name
//! bytes), with modes, numeric owners, mtimes (whole seconds), xattrs (all but overlayfs's
//! own), hard links, symlinks, devices and FIFOs; names and link targets too long for a ustar
//! header go in a PAX extended header. A 0/0 character device becomes the whiteout `.wh.NAME`
//! (an empty regular file, mode 0600, as Docker writes it) and a directory with
//! `trusted.overlay.opaque=y` is followed by its `.wh..wh..opq` marker before any child.
//! Sockets are skipped; so are the paths given as excluded (mount points such as volumes).

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use crate::error::{ImageError, Result};
use crate::unpack::{OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX};

/// The xattr prefixes that belong to overlayfs and never go into a layer.
const OVERLAY_XATTR_PREFIXES: [&str; 2] = ["trusted.overlay.", "user.overlay."];
/// Overlay xattrs whose meaning a plain walk of the upper directory cannot reproduce.
const UNSUPPORTED_OVERLAY_XATTRS: [&str; 2] =
    ["trusted.overlay.redirect", "trusted.overlay.metacopy"];
/// ustar's `name` field.
const NAME_LEN: usize = 100;
/// ustar's `prefix` field.
const PREFIX_LEN: usize = 155;

/// What writing a diff found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffStats {
    /// Entries written (whiteouts and opaque markers included).
    pub entries: u64,
    /// Whiteouts written (`.wh.NAME`).
    pub whiteouts: u64,
    /// Opaque markers written (`.wh..wh..opq`).
    pub opaque_dirs: u64,
    /// Bytes of file content written.
    pub content_bytes: u64,
}

/// Writes the upper directory `upper` as an uncompressed layer tar to `out` and returns `out`
/// (after the end-of-archive blocks) with what was written. `exclude` lists paths inside the
/// container (`/data`, or `data`) left out with everything below them.
pub fn write_diff<W: Write>(upper: &Path, exclude: &[PathBuf], out: W) -> Result<(W, DiffStats)> {
    let mut writer = DiffWriter {
        upper: upper.to_path_buf(),
        exclude: exclude.iter().map(|p| relative(p)).collect(),
        builder: tar::Builder::new(out),
        links: HashMap::new(),
        stats: DiffStats::default(),
    };
    writer.directory_children(Path::new(""))?;
    let out = writer
        .builder
        .into_inner()
        .map_err(ImageError::io("finish layer tar of", upper))?;
    Ok((out, writer.stats))
}

/// A container path as a relative path of normal components (`/a/./b/` -> `a/b`).
fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part),
            _ => None,
        })
        .collect()
}

struct DiffWriter<W: Write> {
    upper: PathBuf,
    exclude: BTreeSet<PathBuf>,
    builder: tar::Builder<W>,
    /// (device, inode) of files with several links -> the path first written for them.
    links: HashMap<(u64, u64), PathBuf>,
    stats: DiffStats,
}

/// What a header describes besides its metadata.
enum Body<'a> {
    Empty,
    File(&'a Path, u64),
}

impl<W: Write> DiffWriter<W> {
    /// Writes the children of `rel` (a directory inside the upper directory), sorted.
    fn directory_children(&mut self, rel: &Path) -> Result<()> {
        let dir = self.upper.join(rel);
        let mut names: Vec<OsString> = std::fs::read_dir(&dir)
            .map_err(ImageError::io("list", &dir))?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(ImageError::io("list", &dir))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let child = rel.join(&name);
            if self.exclude.contains(&child) {
                continue;
            }
            self.entry(&child, &name)?;
        }
        Ok(())
    }

    fn entry(&mut self, rel: &Path, name: &OsStr) -> Result<()> {
        let path = self.upper.join(rel);
        let meta = path
            .symlink_metadata()
            .map_err(ImageError::io("stat", &path))?;
        let kind = meta.file_type();
        if kind.is_char_device() && meta.rdev() == 0 {
            let hidden = rel.with_file_name(whiteout_name(name));
            let mut header = self.header(&meta, tar::EntryType::Regular, 0o600);
            self.append(&mut header, &hidden, None, &[], Body::Empty)?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        let xattrs = read_xattrs(&path)?;
        let opaque = xattrs.iter().any(|(k, v)| k == OPAQUE_XATTR && v == b"y");
        if let Some((key, _)) = xattrs
            .iter()
            .find(|(k, _)| UNSUPPORTED_OVERLAY_XATTRS.contains(&k.as_str()))
        {
            return Err(ImageError::Invalid {
                what: format!("upper directory entry {}", path.display()),
                detail: format!(
                    "it carries the overlay xattr {key} (redirect_dir or metacopy is on): mount overlays without them to commit"
                ),
            });
        }
        let kept: Vec<(String, Vec<u8>)> = xattrs
            .into_iter()
            .filter(|(k, _)| !OVERLAY_XATTR_PREFIXES.iter().any(|p| k.starts_with(p)))
            .collect();
        let mode = meta.mode() & 0o7777;
        if kind.is_dir() {
            let mut header = self.header(&meta, tar::EntryType::Directory, mode);
            self.append(&mut header, rel, None, &kept, Body::Empty)?;
            if opaque {
                let marker = rel.join(OPAQUE_MARKER);
                let mut header = self.header(&meta, tar::EntryType::Regular, mode & 0o777);
                self.append(&mut header, &marker, None, &[], Body::Empty)?;
                self.stats.opaque_dirs += 1;
            }
            return self.directory_children(rel);
        }
        if kind.is_socket() {
            tracing::debug!(path = %path.display(), "not committing a socket");
            return Ok(());
        }
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key).cloned() {
                let mut header = self.header(&meta, tar::EntryType::Link, mode);
                return self.append(&mut header, rel, Some(first.as_os_str()), &[], Body::Empty);
            }
            self.links.insert(key, rel.to_path_buf());
        }
        if kind.is_symlink() {
            let target = std::fs::read_link(&path).map_err(ImageError::io("read link", &path))?;
            let mut header = self.header(&meta, tar::EntryType::Symlink, mode);
            return self.append(
                &mut header,
                rel,
                Some(target.as_os_str()),
                &kept,
                Body::Empty,
            );
        }
        if kind.is_file() {
            let mut header = self.header(&meta, tar::EntryType::Regular, mode);
            return self.append(&mut header, rel, None, &kept, Body::File(&path, meta.len()));
        }
        let entry_type = if kind.is_char_device() {
            tar::EntryType::Char
        } else if kind.is_block_device() {
            tar::EntryType::Block
        } else {
            tar::EntryType::Fifo
        };
        let mut header = self.header(&meta, entry_type, mode);
        if entry_type != tar::EntryType::Fifo {
            let dev = meta.rdev();
            header
                .set_device_major(rustix::fs::major(dev))
                .and_then(|()| header.set_device_minor(rustix::fs::minor(dev)))
                .map_err(ImageError::io("write device numbers of", &path))?;
        }
        self.append(&mut header, rel, None, &kept, Body::Empty)
    }

    /// A ustar header with the metadata every entry carries.
    fn header(&self, meta: &Metadata, kind: tar::EntryType, mode: u32) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(meta.uid().into());
        header.set_gid(meta.gid().into());
        header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        header.set_size(0);
        header
    }

    /// Sets name and link name (through a PAX header when they do not fit), then writes the
    /// entry with its content.
    fn append(
        &mut self,
        header: &mut tar::Header,
        rel: &Path,
        link: Option<&OsStr>,
        xattrs: &[(String, Vec<u8>)],
        body: Body<'_>,
    ) -> Result<()> {
        let mut name = rel.as_os_str().as_bytes().to_vec();
        if header.entry_type() == tar::EntryType::Directory {
            name.push(b'/');
        }
        let mut pax: Vec<(&str, &[u8])> = Vec::new();
        let ustar = header.as_ustar_mut().ok_or_else(|| ImageError::Invalid {
            what: "layer tar header".to_string(),
            detail: "not a ustar header".to_string(),
        })?;
        if !split_name(&name, &mut ustar.name, &mut ustar.prefix) {
            pax.push(("path", &name));
            let keep = NAME_LEN.min(name.len());
            ustar.name[..keep].copy_from_slice(&name[..keep]);
        }
        if let Some(link) = link {
            let bytes = link.as_bytes();
            if bytes.len() > NAME_LEN {
                pax.push(("linkpath", bytes));
            }
            let keep = NAME_LEN.min(bytes.len());
            ustar.linkname[..keep].copy_from_slice(&bytes[..keep]);
        }
        let xattr_keys: Vec<String> = xattrs
            .iter()
            .map(|(k, _)| format!("SCHILY.xattr.{k}"))
            .collect();
        for ((_, value), key) in xattrs.iter().zip(&xattr_keys) {
            pax.push((key.as_str(), value));
        }
        if !pax.is_empty() {
            self.append_pax(&name, &pax)?;
        }
        match body {
            Body::Empty => {
                header.set_cksum();
                self.builder
                    .append(header, std::io::empty())
                    .map_err(ImageError::io("write layer entry for", rel))?;
            }
            Body::File(path, size) => {
                header.set_size(size);
                header.set_cksum();
                let file = std::fs::File::open(path).map_err(ImageError::io("open", path))?;
                let reader = ExactReader {
                    inner: file.take(size),
                    left: size,
                };
                self.builder
                    .append(header, reader)
                    .map_err(ImageError::io("write layer content of", path))?;
                self.stats.content_bytes += size;
            }
        }
        self.stats.entries += 1;
        Ok(())
    }

    /// Writes a PAX extended header (`x`) for the entry named `name`.
    fn append_pax(&mut self, name: &[u8], records: &[(&str, &[u8])]) -> Result<()> {
        let mut data = Vec::new();
        for (key, value) in records {
            data.extend(pax_record(key, value));
        }
        let base = name
            .rsplit(|b| *b == b'/')
            .find(|part| !part.is_empty())
            .unwrap_or(b"entry");
        let mut pax_name = b"PaxHeaders.0/".to_vec();
        pax_name.extend_from_slice(base);
        pax_name.truncate(NAME_LEN);
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::XHeader);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        if let Some(ustar) = header.as_ustar_mut() {
            ustar.name[..pax_name.len()].copy_from_slice(&pax_name);
        }
        header.set_cksum();
        self.builder
            .append(&header, &data[..])
            .map_err(ImageError::io("write PAX header into", &self.upper))
    }
}

/// `.wh.NAME`.
fn whiteout_name(name: &OsStr) -> OsString {
    let mut out = OsString::from(WHITEOUT_PREFIX);
    out.push(name);
    out
}

/// Puts `name` into ustar's name and prefix fields; false when it does not fit.
fn split_name(name: &[u8], field: &mut [u8; NAME_LEN], prefix: &mut [u8; PREFIX_LEN]) -> bool {
    if name.len() <= NAME_LEN {
        field[..name.len()].copy_from_slice(name);
        return true;
    }
    // Split at a '/' so that the prefix fits and the rest (non-empty) fits the name field.
    let split = name
        .iter()
        .enumerate()
        .filter(|(i, b)| **b == b'/' && *i <= PREFIX_LEN && name.len() - i - 1 <= NAME_LEN)
        .map(|(i, _)| i)
        .find(|i| name.len() - i - 1 > 0);
    match split {
        Some(i) => {
            prefix[..i].copy_from_slice(&name[..i]);
            field[..name.len() - i - 1].copy_from_slice(&name[i + 1..]);
            true
        }
        None => false,
    }
}

/// One PAX record: `"<length> <key>=<value>\n"`, the length counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

/// Every xattr of `path` (not following a symlink), sorted by name.
fn read_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let size = match rustix::fs::llistxattr_query(path) {
        Ok(size) => size,
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(ImageError::io("list xattrs of", path)(e.into())),
    };
    if size == 0 {
        return Ok(Vec::new());
    }
    let mut list = vec![0u8; size];
    let len = rustix::fs::llistxattr(path, &mut list[..])
        .map_err(|e| ImageError::io("list xattrs of", path)(e.into()))?;
    list.truncate(len);
    let mut out = Vec::new();
    for raw in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        let size = match rustix::fs::lgetxattr_query(path, name) {
            Ok(size) => size,
            // Removed meanwhile.
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(ImageError::io("read xattr of", path)(e.into())),
        };
        let mut value = vec![0u8; size];
        let len = rustix::fs::lgetxattr(path, name, &mut value[..])
            .map_err(|e| ImageError::io("read xattr of", path)(e.into()))?;
        value.truncate(len);
        out.push((name.to_string(), value));
    }
    out.sort();
    Ok(out)
}

/// Yields exactly the size a header announced, failing if the file shrank meanwhile (a file
/// that grew is cut by `take`).
struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file shrank while it was committed: pause the container while committing",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
