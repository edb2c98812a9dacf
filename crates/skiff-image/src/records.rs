//! Image records: which name points at which manifest, in `DATA/images/images.json`, always
//! replaced whole (written to a temp file, synced, renamed), and the data root's locks.
//!
//! Locking (`flock`): pulls and imports hold `DATA/images/lock` shared for their whole run,
//! garbage collection holds it exclusive, so a blob or snapshot written for an image that is
//! not recorded yet is never collected. Updates of the record file take
//! `DATA/images/images.lock` exclusive around their read-modify-write.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::oci::Descriptor;

/// One named image: a name and the manifest it resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The full, normalised name (`docker.io/library/busybox:latest`).
    pub name: String,
    /// What the name resolved to in the registry or archive: an index or a manifest.
    pub target: Descriptor,
    /// The image manifest for this host's platform (the same as `target` unless that is an
    /// index).
    pub manifest: Descriptor,
    /// The image config's digest (the image id, as Docker shows it).
    pub config: Digest,
    /// When the record was written (seconds since the epoch).
    pub recorded: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RecordFile {
    version: u32,
    images: BTreeMap<String, ImageRecord>,
}

/// The record file of one data root.
#[derive(Debug, Clone)]
pub struct Records {
    path: PathBuf,
    lock_path: PathBuf,
}

impl Records {
    /// The records in `images_root` (`DATA/images`).
    pub fn open(images_root: &Path) -> Records {
        Records {
            path: images_root.join("images.json"),
            lock_path: images_root.join("images.lock"),
        }
    }

    /// Every record, by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        Ok(self.load()?.images.into_values().collect())
    }

    /// The record named `name`, if any.
    pub fn get(&self, name: &str) -> Result<Option<ImageRecord>> {
        Ok(self.load()?.images.remove(name))
    }

    /// Adds or replaces a record.
    pub fn put(&self, record: ImageRecord) -> Result<()> {
        self.update(|file| {
            file.images.insert(record.name.clone(), record);
        })
        .map(drop)
    }

    /// Removes the record named `name`; returns it if there was one.
    pub fn remove(&self, name: &str) -> Result<Option<ImageRecord>> {
        let mut removed = None;
        self.update(|file| removed = file.images.remove(name))?;
        Ok(removed)
    }

    fn load(&self) -> Result<RecordFile> {
        match std::fs::read(&self.path) {
            Ok(data) => serde_json::from_slice(&data)
                .map_err(ImageError::json(self.path.display().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RecordFile::default()),
            Err(e) => Err(ImageError::io("read", &self.path)(e)),
        }
    }

    fn update(&self, change: impl FnOnce(&mut RecordFile)) -> Result<()> {
        let _lock = Lock::exclusive(&self.lock_path)?;
        let mut file = self.load()?;
        file.version = 1;
        change(&mut file);
        let json = serde_json::to_vec_pretty(&file).map_err(ImageError::json("image records"))?;
        write_atomically(&self.path, &json)
    }
}

/// Writes `data` to a temp file beside `path`, syncs it and renames it over `path`.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp =
        tempfile::NamedTempFile::new_in(dir).map_err(ImageError::io("create temp file in", dir))?;
    temp.write_all(data)
        .map_err(ImageError::io("write", temp.path()))?;
    temp.as_file()
        .sync_all()
        .map_err(ImageError::io("sync", temp.path()))?;
    temp.persist(path)
        .map_err(|e| ImageError::io("rename to", path)(e.error))?;
    Ok(())
}

/// An advisory lock (`flock`) held until dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Waits for and takes the lock on `path` exclusively.
    pub fn exclusive(path: &Path) -> Result<Lock> {
        Lock::take(path, FlockOperation::LockExclusive)
    }

    /// Waits for and takes the lock on `path` shared.
    pub fn shared(path: &Path) -> Result<Lock> {
        Lock::take(path, FlockOperation::LockShared)
    }

    fn take(path: &Path, operation: FlockOperation) -> Result<Lock> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(ImageError::io("open lock", path))?;
        rustix::fs::flock(&file, operation).map_err(|e| ImageError::io("lock", path)(e.into()))?;
        Ok(Lock { _file: file })
    }
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
