//! The image store of one data root (`DATA/images`): content store + snapshots + records,
//! and what the engine asks of them: find an image, resolve it to its config and chain of
//! snapshots, prepare a container's root filesystem as mounts, remove, collect garbage.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::content::ContentStore;
use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::oci::{self, ImageConfig, Manifest};
use crate::records::{ImageRecord, Lock, Records};
use crate::reference::Reference;
use crate::snapshot::{Mount, SnapshotInfo, Snapshotter};

/// The images of one data root.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    content: ContentStore,
    snapshots: Snapshotter,
    records: Records,
}

/// An image with everything a container needs from it.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The record it was found by.
    pub record: ImageRecord,
    /// Its manifest.
    pub manifest: Manifest,
    /// Its config (parsed view).
    pub config: ImageConfig,
    /// Its config exactly as stored (for `inspect` and commit).
    pub config_json: serde_json::Value,
    /// The ChainID of each layer, bottom first: the snapshots the rootfs stacks.
    pub chain: Vec<Digest>,
}

impl ResolvedImage {
    /// The image id Docker shows: the config's digest.
    pub fn id(&self) -> &Digest {
        &self.record.config
    }
}

/// What a garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Blobs removed.
    pub blobs: Vec<Digest>,
    /// Snapshots removed (ChainIDs).
    pub snapshots: Vec<Digest>,
    /// Bytes freed (blob sizes plus snapshot content).
    pub bytes: u64,
}

impl ImageStore {
    /// Opens (creating if needed) the image store under `data_root` (`/var/lib/skiff`).
    pub fn open(data_root: &Path) -> Result<ImageStore> {
        let root = data_root.join("images");
        std::fs::create_dir_all(&root).map_err(ImageError::io("create dir", &root))?;
        Ok(ImageStore {
            content: ContentStore::open(&root.join("content"))?,
            snapshots: Snapshotter::open(&root)?,
            records: Records::open(&root),
            root,
        })
    }

    /// The blobs.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// The snapshots.
    pub fn snapshots(&self) -> &Snapshotter {
        &self.snapshots
    }

    /// The records.
    pub fn records(&self) -> &Records {
        &self.records
    }

    /// `DATA/images`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Holds off garbage collection while content is added for a record not written yet.
    pub fn lock_for_writing(&self) -> Result<Lock> {
        Lock::shared(&self.root.join("lock"))
    }

    /// Every image, by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        self.records.list()
    }

    /// Finds an image by name (`busybox`, `host:5000/app:v1`, normalised as a reference), by
    /// id (the config digest, `sha256:` optional, any unique prefix of at least 4 digits), or
    /// by manifest digest.
    pub fn find(&self, name_or_id: &str) -> Result<ImageRecord> {
        if let Ok(reference) = Reference::parse(name_or_id) {
            if let Some(record) = self.records.get(&reference.to_string())? {
                return Ok(record);
            }
        }
        let hex = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hex = hex.to_ascii_lowercase();
            let all = self.records.list()?;
            let mut ids: Vec<&ImageRecord> = all
                .iter()
                .filter(|r| r.config.hex().starts_with(&hex) || r.manifest.digest.hex() == hex)
                .collect();
            ids.sort_by(|a, b| a.config.cmp(&b.config));
            ids.dedup_by(|a, b| a.config == b.config);
            return match ids.as_slice() {
                [one] => Ok((*one).clone()),
                [] => Err(ImageError::ImageNotFound(name_or_id.to_string())),
                _ => Err(ImageError::AmbiguousId(name_or_id.to_string())),
            };
        }
        Err(ImageError::ImageNotFound(name_or_id.to_string()))
    }

    /// Every record of the image with `config` (all its names).
    pub fn names_of(&self, config: &Digest) -> Result<Vec<String>> {
        Ok(self
            .records
            .list()?
            .into_iter()
            .filter(|r| &r.config == config)
            .map(|r| r.name)
            .collect())
    }

    /// Loads manifest and config of a record and computes its chain of snapshots.
    pub fn resolve_record(&self, record: &ImageRecord) -> Result<ResolvedImage> {
        let manifest_data = self.content.read(&record.manifest.digest)?;
        let manifest = oci::parse_manifest(
            &manifest_data,
            &format!("manifest {}", record.manifest.digest),
        )?;
        let config_data = self.content.read(&manifest.config.digest)?;
        let config = ImageConfig::parse(&config_data, &manifest.config.digest)?;
        let config_json = serde_json::from_slice(&config_data).map_err(ImageError::json(
            format!("image config {}", manifest.config.digest),
        ))?;
        let chain = Digest::chain_ids(&config.rootfs.diff_ids);
        Ok(ResolvedImage {
            record: record.clone(),
            manifest,
            config,
            config_json,
            chain,
        })
    }

    /// [`find`](Self::find) then [`resolve_record`](Self::resolve_record).
    pub fn resolve(&self, name_or_id: &str) -> Result<ResolvedImage> {
        self.resolve_record(&self.find(name_or_id)?)
    }

    /// Creates `container_dir/{upper,work}` and returns the mounts that make the container's
    /// root filesystem (an overlay of the image's snapshots; nothing is mounted here).
    pub fn prepare_rootfs(
        &self,
        image: &ResolvedImage,
        container_dir: &Path,
    ) -> Result<Vec<Mount>> {
        self.snapshots.prepare_rootfs(&image.chain, container_dir)
    }

    /// The image's unpacked size: the content of its snapshots.
    pub fn size(&self, image: &ResolvedImage) -> u64 {
        image
            .chain
            .iter()
            .filter_map(|c| self.snapshots.info(c).ok())
            .map(|i: SnapshotInfo| i.size)
            .sum()
    }

    /// Removes the record named by `name` (a name, not an id); its content stays until
    /// [`prune`](Self::prune).
    pub fn untag(&self, name: &str) -> Result<ImageRecord> {
        // A dangling image (a commit without a name) is recorded under its id.
        if name.starts_with("sha256:") {
            if let Some(record) = self.records.remove(name)? {
                return Ok(record);
            }
        }
        let reference = Reference::parse(name)?;
        self.records
            .remove(&reference.to_string())?
            .ok_or_else(|| ImageError::ImageNotFound(name.to_string()))
    }

    /// Removes every blob and snapshot no image record refers to, apart from the snapshots in
    /// `keep` (and their parents: pass the whole chain of a container's image), plus leftovers
    /// of interrupted writes. Waits for running pulls and imports.
    pub fn prune(&self, keep: &[Digest]) -> Result<PruneReport> {
        let _lock = Lock::exclusive(&self.root.join("lock"))?;
        let mut blobs = BTreeSet::new();
        let mut snapshots: BTreeSet<Digest> = keep.iter().cloned().collect();
        for record in self.records.list()? {
            blobs.insert(record.target.digest.clone());
            blobs.insert(record.manifest.digest.clone());
            blobs.insert(record.config.clone());
            if let Ok(image) = self.resolve_record(&record) {
                blobs.extend(image.manifest.layers.iter().map(|l| l.digest.clone()));
                snapshots.extend(image.chain);
            }
        }
        let mut report = PruneReport::default();
        for digest in self.content.list()? {
            if !blobs.contains(&digest) {
                report.bytes += self.content.remove(&digest)?;
                report.blobs.push(digest);
            }
        }
        for chain_id in self.snapshots.list()? {
            if !snapshots.contains(&chain_id) {
                report.bytes += self.snapshots.remove(&chain_id)?;
                report.snapshots.push(chain_id);
            }
        }
        self.content.clean_ingest()?;
        self.snapshots.clean_temp()?;
        Ok(report)
    }
}
