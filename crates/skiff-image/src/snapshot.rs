//! Snapshots: one directory per layer, keyed by ChainID, under
//! `DATA/images/snapshots/<chainid hex>/fs`, and root filesystems returned as overlay mounts
//! (data: the snapshotter never mounts, containerd style).
//!
//! A snapshot is unpacked into `snapshots/.tmp-*` and renamed into place only when complete
//! and its DiffID checked, so a snapshot directory that exists is always whole.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::unpack::unpack_layer;

/// The longest mount option string the kernel takes (one page, less the terminating NUL).
const MOUNT_OPTIONS_LIMIT: usize = 4095;
/// How many hex digits the short link names under `DATA/images/l/` use.
const SHORT_LINK_DIGITS: usize = 16;

/// What a committed snapshot records beside its `fs` directory (`meta.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The snapshot's ChainID.
    pub chain_id: Digest,
    /// The DiffID of the layer it holds.
    pub diff_id: Digest,
    /// The parent snapshot's ChainID (none for a base layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Digest>,
    /// Bytes of file content in the layer.
    pub size: u64,
}

/// A mount described as data, for the runtime to perform (containerd's `mount.Mount`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// File system type: `overlay`, or `bind` for an image without layers.
    #[serde(rename = "type")]
    pub kind: String,
    /// Mount source (`overlay`, or the directory to bind).
    pub source: String,
    /// Mount options (`lowerdir=..`, `upperdir=..`, `workdir=..`, or `rbind`, `ro`).
    pub options: Vec<String>,
}

/// The per-layer snapshot directories of one data root.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    root: PathBuf,
    links: PathBuf,
}

/// An unpacked layer whose DiffID is checked, in a temp directory beside the snapshots: not a
/// snapshot until [`commit`](PendingSnapshot::commit)ted; its files go when it is dropped.
#[derive(Debug)]
pub struct PendingSnapshot {
    snapshots: Snapshotter,
    temp: tempfile::TempDir,
    info: SnapshotInfo,
}

impl PendingSnapshot {
    /// Records the metadata and renames the directory into place; returns the metadata. If
    /// another unpack of the same layer got there first, its snapshot is kept.
    pub fn commit(self) -> Result<SnapshotInfo> {
        let PendingSnapshot {
            snapshots,
            temp,
            info,
        } = self;
        let meta = temp.path().join("meta.json");
        let json =
            serde_json::to_vec_pretty(&info).map_err(ImageError::json("snapshot metadata"))?;
        std::fs::write(&meta, json).map_err(ImageError::io("write", &meta))?;
        let target = snapshots.dir(&info.chain_id);
        let temp_path = temp.keep();
        if let Err(e) = std::fs::rename(&temp_path, &target) {
            let _ = std::fs::remove_dir_all(&temp_path);
            // Another unpack of the same layer won the race: its snapshot is as good.
            if !snapshots.exists(&info.chain_id) {
                return Err(ImageError::io("rename snapshot to", target)(e));
            }
        }
        Ok(info)
    }
}

impl Snapshotter {
    /// Opens (creating if needed) the snapshots under `images_root` (`DATA/images`).
    pub fn open(images_root: &Path) -> Result<Snapshotter> {
        let root = images_root.join("snapshots");
        let links = images_root.join("l");
        for dir in [&root, &links] {
            std::fs::create_dir_all(dir).map_err(ImageError::io("create dir", dir))?;
        }
        Ok(Snapshotter { root, links })
    }

    /// The directory of the snapshot with `chain_id` (it holds `fs/` and `meta.json`).
    pub fn dir(&self, chain_id: &Digest) -> PathBuf {
        self.root.join(chain_id.hex())
    }

    /// The root of the snapshot's files (an overlay lower directory).
    pub fn fs_path(&self, chain_id: &Digest) -> PathBuf {
        self.dir(chain_id).join("fs")
    }

    /// Whether the snapshot exists (and is therefore complete).
    pub fn exists(&self, chain_id: &Digest) -> bool {
        self.dir(chain_id).join("meta.json").is_file()
    }

    /// The snapshot's recorded metadata.
    pub fn info(&self, chain_id: &Digest) -> Result<SnapshotInfo> {
        let path = self.dir(chain_id).join("meta.json");
        let data = std::fs::read(&path).map_err(ImageError::io("read", &path))?;
        serde_json::from_slice(&data).map_err(ImageError::json(path.display().to_string()))
    }

    /// Unpacks the layer `blob` as the snapshot `chain_id` unless it exists already, checking
    /// that its uncompressed stream hashes to `diff_id`. Returns the snapshot's metadata.
    pub fn unpack(
        &self,
        chain_id: &Digest,
        parent: Option<&Digest>,
        diff_id: &Digest,
        blob: impl Read + Send,
    ) -> Result<SnapshotInfo> {
        if self.exists(chain_id) {
            return self.info(chain_id);
        }
        self.unpack_pending(chain_id, parent, diff_id, blob)?
            .commit()
    }

    /// Unpacks the layer `blob` into a temp directory and checks its DiffID, without making
    /// the snapshot visible: [`PendingSnapshot::commit`] does that (a pull commits only once
    /// the layer's blob is verified too); dropping it removes the files.
    pub fn unpack_pending(
        &self,
        chain_id: &Digest,
        parent: Option<&Digest>,
        diff_id: &Digest,
        blob: impl Read + Send,
    ) -> Result<PendingSnapshot> {
        let temp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&self.root)
            .map_err(ImageError::io("create temp dir in", &self.root))?;
        let fs = temp.path().join("fs");
        std::fs::create_dir(&fs).map_err(ImageError::io("create dir", &fs))?;
        let unpacked = unpack_layer(blob, &fs)?;
        if &unpacked.diff_id != diff_id {
            return Err(ImageError::DigestMismatch {
                what: format!("uncompressed layer (diff id) of snapshot {chain_id}"),
                expected: diff_id.to_string(),
                actual: unpacked.diff_id.to_string(),
            });
        }
        Ok(PendingSnapshot {
            snapshots: self.clone(),
            temp,
            info: SnapshotInfo {
                chain_id: chain_id.clone(),
                diff_id: diff_id.clone(),
                parent: parent.cloned(),
                size: unpacked.size,
            },
        })
    }

    /// Every committed snapshot's ChainID.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(ImageError::io("list", &self.root))? {
            let entry = entry.map_err(ImageError::io("list", &self.root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Ok(digest) = Digest::parse(&format!("sha256:{name}")) {
                out.push(digest);
            }
        }
        Ok(out)
    }

    /// Removes a snapshot (and its short link); returns the bytes of content it held.
    pub fn remove(&self, chain_id: &Digest) -> Result<u64> {
        let size = self.info(chain_id).map(|i| i.size).unwrap_or(0);
        let _ = std::fs::remove_file(self.short_link(chain_id));
        let dir = self.dir(chain_id);
        // Rename first so a half-removed snapshot is never seen under its name.
        let doomed = self.root.join(format!(".rm-{}", chain_id.hex()));
        match std::fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(ImageError::io("rename", dir)(e)),
        }
        std::fs::remove_dir_all(&doomed).map_err(ImageError::io("remove", &doomed))?;
        Ok(size)
    }

    /// Removes leftovers of interrupted unpacks and removals (call when none is running).
    pub fn clean_temp(&self) -> Result<()> {
        for entry in std::fs::read_dir(&self.root)
            .map_err(ImageError::io("list", &self.root))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") || name.starts_with(".rm-") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }

    fn short_link(&self, chain_id: &Digest) -> PathBuf {
        self.links.join(&chain_id.hex()[..SHORT_LINK_DIGITS])
    }

    /// A short path (`DATA/images/l/<16 hex>`, a symlink to the snapshot's `fs`) for mount
    /// options that would not fit with the full paths.
    fn ensure_short_link(&self, chain_id: &Digest) -> Result<PathBuf> {
        let link = self.short_link(chain_id);
        let target = self.fs_path(chain_id);
        match std::fs::read_link(&link) {
            Ok(existing) if existing == target => return Ok(link),
            Ok(existing) => {
                return Err(ImageError::Invalid {
                    what: format!("snapshot link {}", link.display()),
                    detail: format!(
                        "points at {} instead of {}",
                        existing.display(),
                        target.display()
                    ),
                });
            }
            Err(_) => {}
        }
        let temp = self
            .links
            .join(format!(".tmp-{}-{}", std::process::id(), chain_id.hex()));
        let _ = std::fs::remove_file(&temp);
        std::os::unix::fs::symlink(&target, &temp)
            .map_err(ImageError::io("create symlink", &temp))?;
        std::fs::rename(&temp, &link).map_err(ImageError::io("rename symlink to", &link))?;
        Ok(link)
    }

    /// The root filesystem of a container over the snapshots `chain` (bottom first): creates
    /// `container_dir/upper` and `container_dir/work` and returns the overlay mount to make at
    /// the container's rootfs (lowerdir lists the snapshots top first). Nothing is mounted.
    pub fn prepare_rootfs(&self, chain: &[Digest], container_dir: &Path) -> Result<Vec<Mount>> {
        for chain_id in chain {
            if !self.exists(chain_id) {
                return Err(ImageError::Invalid {
                    what: format!("snapshot {chain_id}"),
                    detail: "missing: pull or import the image again".to_string(),
                });
            }
        }
        let upper = container_dir.join("upper");
        let work = container_dir.join("work");
        for dir in [&upper, &work] {
            std::fs::create_dir_all(dir).map_err(ImageError::io("create dir", dir))?;
        }
        if chain.is_empty() {
            return Ok(vec![Mount {
                kind: "bind".to_string(),
                source: upper.display().to_string(),
                options: vec!["rbind".to_string(), "rw".to_string()],
            }]);
        }
        let tail = [
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
        ];
        let lowers: Vec<PathBuf> = chain.iter().rev().map(|c| self.fs_path(c)).collect();
        let mut options = overlay_options(&lowers, &tail);
        if options.join(",").len() > MOUNT_OPTIONS_LIMIT {
            let short: Vec<PathBuf> = chain
                .iter()
                .rev()
                .map(|c| self.ensure_short_link(c))
                .collect::<Result<_>>()?;
            options = overlay_options(&short, &tail);
            if options.join(",").len() > MOUNT_OPTIONS_LIMIT {
                return Err(ImageError::TooManyLayers {
                    layers: chain.len(),
                });
            }
        }
        Ok(vec![Mount {
            kind: "overlay".to_string(),
            source: "overlay".to_string(),
            options,
        }])
    }
}

fn overlay_options(lowers: &[PathBuf], tail: &[String]) -> Vec<String> {
    let lowerdir = lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let mut options = vec![format!("lowerdir={lowerdir}")];
    options.extend(tail.iter().cloned());
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn a_snapshot_with_the_wrong_diff_id_never_appears() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = Snapshotter::open(dir.path()).unwrap();
        let tar = tar_with(&[("a", b"a")]);
        let wrong = Digest::of(b"not this");
        let err = snapshots
            .unpack(&wrong, None, &wrong, &tar[..])
            .unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(snapshots.list().unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("snapshots"))
                .unwrap()
                .count(),
            0
        );
        let diff = Digest::of(&tar);
        let info = snapshots.unpack(&diff, None, &diff, &tar[..]).unwrap();
        assert_eq!(info.size, 1);
        assert_eq!(
            std::fs::read(snapshots.fs_path(&diff).join("a")).unwrap(),
            b"a"
        );
    }

    #[test]
    fn long_lower_lists_switch_to_short_links() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = Snapshotter::open(dir.path()).unwrap();
        let mut diffs = Vec::new();
        for i in 0..60 {
            let tar = tar_with(&[(&format!("f{i}"), b"x")]);
            diffs.push(Digest::of(&tar));
        }
        let chain = Digest::chain_ids(&diffs);
        for (i, chain_id) in chain.iter().enumerate() {
            let tar = tar_with(&[(&format!("f{i}"), b"x")]);
            snapshots
                .unpack(chain_id, None, &diffs[i], &tar[..])
                .unwrap();
        }
        let mounts = snapshots
            .prepare_rootfs(&chain, &dir.path().join("c1"))
            .unwrap();
        let lowerdir = &mounts[0].options[0];
        assert!(lowerdir.contains("/l/"), "{lowerdir}");
        assert!(mounts[0].options.join(",").len() <= MOUNT_OPTIONS_LIMIT);
        let first = lowerdir
            .trim_start_matches("lowerdir=")
            .split(':')
            .next()
            .unwrap();
        assert_eq!(
            std::fs::canonicalize(first).unwrap(),
            std::fs::canonicalize(snapshots.fs_path(&chain[59])).unwrap(),
            "the top layer comes first"
        );
    }
}
