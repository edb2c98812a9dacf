//! Container status, the guards on it, and the state record on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a state record could not be read, written or changed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// No container with this id exists under the root (runc says "does not exist" too, and
    /// engines match on it).
    #[error("container {id} does not exist")]
    NotFound {
        /// The container id.
        id: String,
    },
    /// The id is empty or has characters that cannot name a directory safely.
    #[error(
        "invalid container id {id:?}: use letters, digits, '_', '-' and '.', not starting with '.'"
    )]
    InvalidId {
        /// The offending id.
        id: String,
    },
    /// Reading or writing the record failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The record is not valid JSON of the expected shape.
    #[error("corrupt state record {path}: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// The status of a container, as the OCI runtime spec names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerStatus {
    /// Being created: the runtime has not finished `create`.
    Creating,
    /// Created: the process waits for `start`.
    Created,
    /// The user program runs.
    Running,
    /// The process has exited.
    Stopped,
    /// Frozen by `pause`.
    Paused,
}

impl ContainerStatus {
    /// `start` runs the user program of a created container only.
    pub fn can_start(self) -> bool {
        self == ContainerStatus::Created
    }

    /// `kill` signals a container whose process exists.
    pub fn can_kill(self) -> bool {
        matches!(
            self,
            ContainerStatus::Created | ContainerStatus::Running | ContainerStatus::Paused
        )
    }

    /// `delete` (without `--force`) removes stopped containers only.
    pub fn can_delete(self) -> bool {
        self == ContainerStatus::Stopped
    }

    /// `pause` freezes a running container.
    pub fn can_pause(self) -> bool {
        self == ContainerStatus::Running
    }

    /// `resume` thaws a paused one.
    pub fn can_resume(self) -> bool {
        self == ContainerStatus::Paused
    }

    /// `exec` joins a running container.
    pub fn can_exec(self) -> bool {
        self == ContainerStatus::Running
    }
}

/// The state of one container, in the JSON shape `runc state` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    /// The runtime-spec version of the bundle.
    pub oci_version: String,
    /// The container id.
    pub id: String,
    /// The container's init process id on the host (0 once stopped).
    pub pid: i32,
    /// The status.
    pub status: ContainerStatus,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The root filesystem path.
    pub rootfs: PathBuf,
    /// When the container was created (RFC 3339).
    pub created: String,
    /// The owner (empty for root).
    #[serde(default)]
    pub owner: String,
    /// The annotations of `config.json`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What the runtime keeps about one container: the public state plus what it needs to manage
/// the container later (how to recognise its init, where its cgroup is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The state `skiff runtime state` prints.
    pub state: ContainerState,
    /// The init's start time (field 22 of `/proc/PID/stat`), so a reused pid is not mistaken
    /// for the container.
    #[serde(default)]
    pub init_start_time: u64,
    /// The container's cgroup path (relative to the cgroup roots).
    #[serde(default)]
    pub cgroup_path: String,
}

/// The state records under one runtime root (`ROOT/ID/state.json`).
#[derive(Debug, Clone)]
pub struct StateStore {
    root: PathBuf,
}

impl StateStore {
    /// A store under `root` (runc's default is `/run/runc`; ours is `/run/skiff-runc`).
    pub fn new(root: impl Into<PathBuf>) -> StateStore {
        StateStore { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, id: &str) -> Result<PathBuf, StateError> {
        let valid = !id.is_empty()
            && !id.starts_with('.')
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            return Err(StateError::InvalidId { id: id.to_string() });
        }
        Ok(self.root.join(id).join("state.json"))
    }

    /// The directory of container `id` (state record, exec fifo).
    pub fn dir_of(&self, id: &str) -> Result<PathBuf, StateError> {
        Ok(self
            .path_of(id)?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.join(id)))
    }

    /// Whether a record for `id` exists.
    pub fn exists(&self, id: &str) -> bool {
        self.path_of(id).map(|p| p.exists()).unwrap_or(false)
    }

    /// The ids of every container under the root, sorted.
    pub fn ids(&self) -> Result<Vec<String>, StateError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StateError::Io {
                    action: "read",
                    path: self.root.clone(),
                    source,
                });
            }
        };
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join("state.json").exists())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Removes the directory of `id` and everything in it.
    pub fn remove(&self, id: &str) -> Result<(), StateError> {
        let dir = self.dir_of(id)?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io {
                action: "remove",
                path: dir,
                source,
            }),
        }
    }

    /// Reads the record of `id`.
    pub fn load(&self, id: &str) -> Result<Record, StateError> {
        let path = self.path_of(id)?;
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound { id: id.to_string() });
            }
            Err(source) => {
                return Err(StateError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt { path, source })
    }

    /// Writes the record atomically (write a temp file, then rename over the old one).
    pub fn save(&self, record: &Record) -> Result<(), StateError> {
        let path = self.path_of(&record.state.id)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| StateError::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        let tmp = dir.join("state.json.tmp");
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| StateError::Corrupt {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, bytes).map_err(|source| StateError::Io {
            action: "write",
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| StateError::Io {
            action: "rename",
            path: path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str) -> ContainerState {
        ContainerState {
            oci_version: "1.2.0".into(),
            id: id.into(),
            pid: 42,
            status: ContainerStatus::Created,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: "2026-01-01T00:00:00Z".into(),
            owner: String::new(),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn guards_follow_the_runtime_spec_lifecycle() {
        use ContainerStatus::*;
        assert!(Created.can_start() && !Running.can_start() && !Stopped.can_start());
        assert!(
            Created.can_kill() && Running.can_kill() && Paused.can_kill() && !Stopped.can_kill()
        );
        assert!(Stopped.can_delete() && !Running.can_delete());
        assert!(Running.can_pause() && Paused.can_resume() && !Created.can_pause());
        assert!(Running.can_exec() && !Paused.can_exec());
    }

    #[test]
    fn state_json_has_runc_field_names() {
        let json = serde_json::to_value(sample("c1")).unwrap();
        assert_eq!(json["ociVersion"], "1.2.0");
        assert_eq!(json["status"], "created");
        assert!(json.get("annotations").is_none());
    }

    #[test]
    fn a_saved_record_loads_back_and_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let record = Record {
            state: sample("c1"),
            init_start_time: 9,
            cgroup_path: "skiff/c1".into(),
        };
        store.save(&record).unwrap();
        assert_eq!(store.load("c1").unwrap(), record);
        assert_eq!(store.ids().unwrap(), vec!["c1".to_string()]);
        store.remove("c1").unwrap();
        assert!(!store.exists("c1"));
    }

    #[test]
    fn a_missing_container_does_not_exist() {
        let dir = tempfile::tempdir().unwrap();
        let err = StateStore::new(dir.path()).load("nope").unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    }

    #[test]
    fn ids_that_escape_the_root_are_refused() {
        let store = StateStore::new("/tmp/x");
        for bad in ["", "../etc", "a/b", ".hidden"] {
            assert!(
                matches!(store.load(bad), Err(StateError::InvalidId { .. })),
                "{bad}"
            );
        }
    }
}
