//! The content store: blobs addressed by digest under `DATA/images/content/blobs/sha256/<hex>`.
//!
//! Every write goes to a temp file under `content/ingest/`, is hashed as it is written,
//! checked against the digest (and size) it was announced with, synced, and only then renamed
//! into place: a blob that is visible is always complete and correct. Blobs are shared between
//! images; garbage collection removes the ones no image refers to.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::digest::{Digest, HashingWriter};
use crate::error::{ImageError, Result};

/// A digest-addressed blob store in one directory.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) the store rooted at `root` (`DATA/images/content`).
    pub fn open(root: &Path) -> Result<ContentStore> {
        for dir in [root.join("blobs").join("sha256"), root.join("ingest")] {
            std::fs::create_dir_all(&dir).map_err(ImageError::io("create dir", &dir))?;
        }
        Ok(ContentStore {
            root: root.to_path_buf(),
        })
    }

    /// Where the blob with `digest` lives (whether or not it is there).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    /// The directory temp files are written in.
    pub fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    /// Whether the blob is present.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// The size of a present blob.
    pub fn size(&self, digest: &Digest) -> Result<u64> {
        let path = self.path(digest);
        match std::fs::metadata(&path) {
            Ok(meta) => Ok(meta.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ImageError::BlobNotFound(digest.to_string()))
            }
            Err(e) => Err(ImageError::io("stat", path)(e)),
        }
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.path(digest);
        File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ImageError::BlobNotFound(digest.to_string())
            } else {
                ImageError::io("open", path)(e)
            }
        })
    }

    /// Reads a whole (small) blob and checks it still hashes to its digest.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut data)
            .map_err(ImageError::io("read", self.path(digest)))?;
        let actual = Digest::of(&data);
        if &actual != digest {
            return Err(ImageError::DigestMismatch {
                what: format!("stored blob {}", self.path(digest).display()),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(data)
    }

    /// Starts writing a blob. With `expected`, the commit checks digest (and size, if given).
    pub fn writer(&self, expected: Option<(Digest, Option<u64>)>) -> Result<BlobWriter> {
        let dir = self.ingest_dir();
        let file =
            NamedTempFile::new_in(&dir).map_err(ImageError::io("create temp file in", &dir))?;
        Ok(BlobWriter {
            store: self.clone(),
            out: HashingWriter::new(file),
            expected,
        })
    }

    /// Writes `data`, checked against `expected` when given; returns its digest.
    pub fn write(&self, data: &[u8], expected: Option<&Digest>) -> Result<Digest> {
        if let Some(digest) = expected {
            if self.contains(digest) {
                let actual = Digest::of(data);
                if &actual != digest {
                    return Err(mismatch(digest, &actual));
                }
                return Ok(actual);
            }
        }
        let mut writer = self.writer(expected.map(|d| (d.clone(), Some(data.len() as u64))))?;
        writer
            .write_all(data)
            .map_err(ImageError::io("write", self.ingest_dir()))?;
        Ok(writer.commit()?.0)
    }

    /// Copies everything `reader` yields into a blob, checked against `expected` when given.
    pub fn ingest(
        &self,
        reader: &mut dyn Read,
        expected: Option<(Digest, Option<u64>)>,
    ) -> Result<(Digest, u64)> {
        let mut writer = self.writer(expected)?;
        std::io::copy(reader, &mut writer)
            .map_err(ImageError::io("copy into", self.ingest_dir()))?;
        writer.commit()
    }

    /// Every blob in the store.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let dir = self.root.join("blobs").join("sha256");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(ImageError::io("list", &dir))? {
            let entry = entry.map_err(ImageError::io("list", &dir))?;
            if let Ok(digest) =
                Digest::parse(&format!("sha256:{}", entry.file_name().to_string_lossy()))
            {
                out.push(digest);
            }
        }
        Ok(out)
    }

    /// Removes a blob; returns the bytes freed (0 if it was not there).
    pub fn remove(&self, digest: &Digest) -> Result<u64> {
        let path = self.path(digest);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(ImageError::io("remove", path)(e)),
        }
    }

    /// Removes leftovers of interrupted writes (call only when no write is running).
    pub fn clean_ingest(&self) -> Result<()> {
        let dir = self.ingest_dir();
        for entry in std::fs::read_dir(&dir)
            .map_err(ImageError::io("list", &dir))?
            .flatten()
        {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(())
    }
}

fn mismatch(expected: &Digest, actual: &Digest) -> ImageError {
    ImageError::DigestMismatch {
        what: format!("blob {expected}"),
        expected: expected.to_string(),
        actual: actual.to_string(),
    }
}

/// A blob being written; invisible until [`commit`](BlobWriter::commit) succeeds, removed if
/// dropped before.
#[derive(Debug)]
pub struct BlobWriter {
    store: ContentStore,
    out: HashingWriter<NamedTempFile>,
    expected: Option<(Digest, Option<u64>)>,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.out.count()
    }

    /// Verifies, syncs and renames the blob into place; returns its digest and size.
    pub fn commit(self) -> Result<(Digest, u64)> {
        let (digest, size, file) = self.out.finish();
        if let Some((expected, expected_size)) = &self.expected {
            if let Some(expected_size) = expected_size {
                if *expected_size != size {
                    return Err(ImageError::SizeMismatch {
                        what: format!("blob {expected}"),
                        expected: *expected_size,
                        actual: size,
                    });
                }
            }
            if expected != &digest {
                return Err(mismatch(expected, &digest));
            }
        }
        let target = self.store.path(&digest);
        if target.is_file() {
            return Ok((digest, size));
        }
        file.as_file()
            .sync_all()
            .map_err(ImageError::io("sync", file.path()))?;
        file.persist(&target)
            .map_err(|e| ImageError::io("rename blob to", &target)(e.error))?;
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_before_they_become_visible() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let good = Digest::of(b"hello");
        let err = store.write(b"jello", Some(&good)).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(!store.contains(&good));
        assert_eq!(std::fs::read_dir(store.ingest_dir()).unwrap().count(), 0);
        assert_eq!(store.write(b"hello", Some(&good)).unwrap(), good);
        assert_eq!(store.read(&good).unwrap(), b"hello");
        assert_eq!(store.list().unwrap(), vec![good.clone()]);
        assert_eq!(store.remove(&good).unwrap(), 5);
        assert!(!store.contains(&good));
    }

    #[test]
    fn a_short_blob_fails_its_size_check() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let digest = Digest::of(b"abc");
        let err = store
            .ingest(&mut &b"abc"[..], Some((digest, Some(4))))
            .unwrap_err();
        assert!(matches!(err, ImageError::SizeMismatch { .. }), "{err}");
    }
}
