//! Volumes (`skiff volume`, `run -v NAME:/ctr`, `run -v /ctr`): Docker's `local` driver
//! without options, a directory per volume under the data root:
//!
//! ```text
//! DATA/volumes/<name>/volume.json   the record (name, creation time, labels, anonymous)
//!                     _data/        the content, bind-mounted into containers
//! ```
//!
//! A volume is made whole in a temporary directory and renamed into place, so a listed
//! volume always has its record. Which containers use a volume is read from the containers'
//! records (every container, running or not, holds its volumes as Docker's do), so a volume in
//! use is never removed, not even with `--force`. An empty volume is filled from the image's
//! directory at its mount point when a container starts ([`crate::tree::copy_contents`]).
//!
//! `DATA/volumes/.lock` (`flock`) closes the window between a new container finding its
//! volumes and its record naming them: `create` holds it shared from the first until the
//! second, `volume rm` and `volume prune` hold it exclusive while they look for users and
//! remove, so a volume a concurrent `run` is about to use is either gone before that `run`
//! looks (and made again) or refused as in use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::record::{self, ContainerConfig, VolumeMount, VolumeRequest};
use crate::{EngineError, Result};

/// The label Docker puts on the volumes it makes for `-v /ctr`.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// Why a volume operation failed (the messages are Docker's).
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The name does not match `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
    #[error(
        "create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
    )]
    BadName {
        /// The name.
        name: String,
    },
    /// The name has fewer than two characters.
    #[error(
        "create {name}: volume name is too short, names should be at least two alphanumeric characters"
    )]
    TooShort {
        /// The name.
        name: String,
    },
    /// No volume has this name.
    #[error("get {name}: no such volume")]
    NoSuchVolume {
        /// The name.
        name: String,
    },
    /// Containers use the volume.
    #[error("remove {name}: volume is in use - [{}]", containers.join(", "))]
    InUse {
        /// The name.
        name: String,
        /// The full ids of the containers using it.
        containers: Vec<String>,
    },
    /// Only the `local` driver exists.
    #[error(
        "error looking up volume plugin {driver}: plugin \"{driver}\" not found (only the local driver exists)"
    )]
    UnknownDriver {
        /// The driver asked for.
        driver: String,
    },
}

/// What `volume.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeRecord {
    /// The name.
    pub name: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Labels (`--label`; anonymous volumes carry [`ANONYMOUS_LABEL`]).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl VolumeRecord {
    /// Whether the engine made it for one container (`-v /ctr`).
    pub fn is_anonymous(&self) -> bool {
        self.labels.contains_key(ANONYMOUS_LABEL)
    }
}

/// A volume as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Its record.
    pub record: VolumeRecord,
    /// Its data directory (`DATA/volumes/<name>/_data`).
    pub mountpoint: PathBuf,
}

impl Volume {
    /// The document `docker volume inspect` prints.
    pub fn inspect(&self) -> serde_json::Value {
        let labels = if self.record.labels.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::json!(self.record.labels)
        };
        serde_json::json!({
            "CreatedAt": self.record.created_at,
            "Driver": "local",
            "Labels": labels,
            "Mountpoint": self.mountpoint,
            "Name": self.record.name,
            "Options": null,
            "Scope": "local",
        })
    }
}

/// An RFC 3339 time without its fraction (`CreatedAt` as Docker prints it).
fn seconds_only(time: &str) -> String {
    match time.split_once('.') {
        Some((seconds, _)) => format!("{seconds}Z"),
        None => time.to_string(),
    }
}

/// Checks a volume name as Docker does: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn validate_name(name: &str) -> std::result::Result<(), VolumeError> {
    if name.chars().count() < 2 && !name.contains('/') {
        return Err(VolumeError::TooShort {
            name: name.to_string(),
        });
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest: Vec<char> = chars.collect();
    let rest_ok = !rest.is_empty()
        && rest
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(VolumeError::BadName {
            name: name.to_string(),
        })
    }
}

/// The volumes of one data root.
#[derive(Debug, Clone)]
pub struct Volumes {
    root: PathBuf,
}

impl Volumes {
    /// The volumes under `data_root` (`DATA/volumes`, created if missing).
    pub fn open(data_root: &Path) -> Result<Volumes> {
        let root = data_root.join("volumes");
        std::fs::create_dir_all(&root).map_err(EngineError::io("create dir", &root))?;
        Ok(Volumes { root })
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Waits for and takes the volumes' lock: shared while a container is made, exclusive
    /// while volumes are removed. Held until dropped.
    pub fn lock(&self, exclusive: bool) -> Result<VolumeLock> {
        let path = self.root.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(EngineError::io("open lock", &path))?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        let flock = Flock::lock(file, arg)
            .map_err(|(_, errno)| EngineError::io("lock", &path)(errno.into()))?;
        Ok(VolumeLock { _flock: flock })
    }

    /// Creates volume `name` (a random 64-hex-digit name if none) with `labels`; an existing
    /// volume of that name is returned as it is, as Docker does.
    pub fn create(&self, name: Option<&str>, labels: &BTreeMap<String, String>) -> Result<Volume> {
        let name = match name {
            Some(name) => {
                validate_name(name)?;
                name.to_string()
            }
            None => crate::naming::ContainerId::random()?.to_string(),
        };
        if let Ok(volume) = self.get(&name) {
            return Ok(volume);
        }
        let tmp = self
            .root
            .join(format!(".tmp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let made = (|| -> Result<()> {
            let data = tmp.join("_data");
            std::fs::create_dir_all(&data).map_err(EngineError::io("create dir", &data))?;
            let record = VolumeRecord {
                name: name.clone(),
                created_at: seconds_only(&crate::time::now_rfc3339()),
                labels: labels.clone(),
            };
            record::write_json(&tmp.join("volume.json"), &record)?;
            let target = self.dir(&name);
            match std::fs::rename(&tmp, &target) {
                Ok(()) => Ok(()),
                // Made meanwhile by another command: theirs stands.
                Err(_) if target.join("volume.json").exists() => Ok(()),
                Err(e) => Err(EngineError::io("rename to", &target)(e)),
            }
        })();
        let _ = std::fs::remove_dir_all(&tmp);
        made?;
        self.get(&name)
    }

    /// The volume named `name`.
    pub fn get(&self, name: &str) -> Result<Volume> {
        let missing = || VolumeError::NoSuchVolume {
            name: name.to_string(),
        };
        if validate_name(name).is_err() {
            return Err(missing().into());
        }
        let dir = self.dir(name);
        let path = dir.join("volume.json");
        if !path.exists() {
            return Err(missing().into());
        }
        Ok(Volume {
            record: record::read_json(&path)?,
            mountpoint: dir.join("_data"),
        })
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<Volume>> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.root).map_err(EngineError::io("list", &self.root))?;
        for entry in entries {
            let entry = entry.map_err(EngineError::io("list", &self.root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if let Ok(volume) = self.get(&name) {
                out.push(volume);
            }
        }
        out.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        Ok(out)
    }

    /// Removes volume `name` and its content (no check for users: see
    /// [`Engine::remove_volume`]); returns the bytes freed.
    fn remove(&self, name: &str) -> Result<u64> {
        let volume = self.get(name)?;
        let bytes = crate::tree::size(&volume.mountpoint);
        let dir = self.dir(name);
        // The record goes first, so a half-removed volume is never listed.
        let record = dir.join("volume.json");
        std::fs::remove_file(&record).map_err(EngineError::io("remove", &record))?;
        std::fs::remove_dir_all(&dir).map_err(EngineError::io("remove", &dir))?;
        Ok(bytes)
    }
}

/// The lock file under `DATA/volumes` (hidden from listings by its leading dot).
const LOCK_FILE: &str = ".lock";

/// The volumes' lock ([`Volumes::lock`]), released on drop.
#[derive(Debug)]
pub struct VolumeLock {
    _flock: Flock<std::fs::File>,
}

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumePrune {
    /// The names removed.
    pub removed: Vec<String>,
    /// The bytes freed.
    pub bytes: u64,
}

impl Engine {
    /// The volumes of this data root.
    pub fn volumes(&self) -> Result<Volumes> {
        Volumes::open(self.data_root())
    }

    /// The full ids of the containers (running or not) that use volume `name`.
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|c| c.config.volumes.iter().any(|v| v.name == name))
            .map(|c| c.config.id)
            .collect())
    }

    /// Removes volume `name` unless a container uses it (not even `force` removes a volume in
    /// use, as with Docker); `force` ignores a missing volume. Returns the bytes freed.
    pub fn remove_volume(&self, name: &str, force: bool) -> Result<u64> {
        let volumes = self.volumes()?;
        let _lock = volumes.lock(true)?;
        match volumes.get(name) {
            Ok(_) => {}
            Err(EngineError::Volume(VolumeError::NoSuchVolume { .. })) if force => return Ok(0),
            Err(err) => return Err(err),
        }
        let users = self.volume_users(name)?;
        if !users.is_empty() {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                containers: users,
            }
            .into());
        }
        volumes.remove(name)
    }

    /// Removes the volumes no container uses: anonymous ones only unless `all`.
    pub fn prune_volumes(&self, all: bool) -> Result<VolumePrune> {
        let _lock = self.volumes()?.lock(true)?;
        let used: std::collections::BTreeSet<String> = self
            .list()?
            .into_iter()
            .flat_map(|c| c.config.volumes.into_iter().map(|v| v.name))
            .collect();
        let volumes = self.volumes()?;
        let mut report = VolumePrune::default();
        for volume in volumes.list()? {
            let name = &volume.record.name;
            if used.contains(name) || !(all || volume.record.is_anonymous()) {
                continue;
            }
            report.bytes += volumes.remove(name)?;
            report.removed.push(name.clone());
        }
        Ok(report)
    }

    /// Finds or makes the volumes a new container asks for; returns the mounts and the
    /// volumes made here (to remove again if the container cannot be made).
    pub(crate) fn prepare_volumes(
        &self,
        requests: &[VolumeRequest],
    ) -> Result<(Vec<VolumeMount>, Vec<String>)> {
        let volumes = self.volumes()?;
        let mut mounts = Vec::new();
        let mut made = Vec::new();
        let result = (|| -> Result<()> {
            for request in requests {
                let mut labels = BTreeMap::new();
                let anonymous = request.name.is_none();
                if anonymous {
                    labels.insert(ANONYMOUS_LABEL.to_string(), String::new());
                }
                let existed = request
                    .name
                    .as_deref()
                    .is_some_and(|n| volumes.get(n).is_ok());
                let volume = volumes.create(request.name.as_deref(), &labels)?;
                if !existed {
                    made.push(volume.record.name.clone());
                }
                mounts.push(VolumeMount {
                    name: volume.record.name.clone(),
                    source: volume.mountpoint.display().to_string(),
                    destination: request.destination.clone(),
                    read_only: request.read_only,
                    anonymous,
                    no_copy: request.no_copy,
                });
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok((mounts, made)),
            Err(err) => {
                for name in &made {
                    let _ = volumes.remove(name);
                }
                Err(err)
            }
        }
    }

    /// Removes the volumes made for `config` alone (`rm -v`, `--rm`) that no other container
    /// uses; call it once the container's record is gone.
    pub fn remove_anonymous_volumes(&self, config: &ContainerConfig) -> Result<()> {
        for mount in config.volumes.iter().filter(|v| v.anonymous) {
            match self.remove_volume(&mount.name, true) {
                Ok(_) | Err(EngineError::Volume(VolumeError::InUse { .. })) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// Fills each empty volume of `config` (not `nocopy`) from what the image has at its mount
/// point in the mounted `rootfs`, as Docker does on a volume's first use.
pub fn fill_from_image(rootfs: &Path, config: &ContainerConfig) -> Result<()> {
    for mount in config.volumes.iter().filter(|v| !v.no_copy) {
        let source = Path::new(&mount.source);
        if !crate::tree::is_empty_dir(source)? {
            continue;
        }
        let inside = skiff_runtime::paths::secure_join(rootfs, Path::new(&mount.destination))
            .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
        let is_dir = std::fs::symlink_metadata(&inside).is_ok_and(|m| m.is_dir());
        if is_dir {
            crate::tree::copy_contents(&inside, source)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        assert!(validate_name("cache").is_ok());
        assert!(validate_name("a1_b.c-d").is_ok());
        assert!(validate_name("x").is_err());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("").is_err());
    }

    #[test]
    fn volumes_are_made_once_listed_and_removed() {
        let data = tempfile::tempdir().unwrap();
        let volumes = Volumes::open(data.path()).unwrap();
        let labels = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let made = volumes.create(Some("cache"), &labels).unwrap();
        assert!(made.mountpoint.is_dir());
        std::fs::write(made.mountpoint.join("f"), b"1234").unwrap();
        // A second create finds the first.
        assert_eq!(
            volumes.create(Some("cache"), &BTreeMap::new()).unwrap(),
            made
        );
        let random = volumes.create(None, &BTreeMap::new()).unwrap();
        assert_eq!(random.record.name.len(), 64);
        let names: Vec<_> = volumes
            .list()
            .unwrap()
            .into_iter()
            .map(|v| v.record.name)
            .collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"cache".to_string()));
        let doc = made.inspect();
        assert_eq!(doc["Driver"], "local");
        assert_eq!(doc["Labels"]["k"], "v");
        assert_eq!(volumes.remove("cache").unwrap(), 4);
        assert!(matches!(
            volumes.get("cache"),
            Err(EngineError::Volume(VolumeError::NoSuchVolume { .. }))
        ));
        assert!(volumes.create(Some("no/slash"), &BTreeMap::new()).is_err());
    }
}
