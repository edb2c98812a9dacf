//! The container lifecycle verbs, one file each, over the state records of a runtime root.
//!
//! Every verb loads the record, refreshes the status from the system (is the init alive, is it
//! the same process, is it still waiting on the exec FIFO, is its cgroup frozen), checks the
//! status guard, acts, and saves the record.

mod create;
pub(crate) use create::hook_state;
mod delete;
mod exec;
mod kill;
mod pause;
mod start;

use std::path::PathBuf;

pub use create::{CreateOptions, create};
pub use delete::delete;
pub use exec::{ExecOptions, ExecOutcome, exec};
pub use kill::{kill, parse_signal};
pub use pause::{pause, pids, resume, update};
pub use start::start;

use skiff_cgroups::{CgroupManager, FreezerState, Manager, Mounts};

use crate::state::{ContainerStatus, Record, StateError, StateStore};

/// Why a lifecycle verb failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// Reading or writing the state record failed, or the container does not exist.
    #[error(transparent)]
    State(#[from] StateError),
    /// A container with this id already exists.
    #[error("container {id} already exists")]
    Exists {
        /// The id.
        id: String,
    },
    /// `config.json` could not be read or parsed.
    #[error("read {path}: {detail}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What was wrong (serde names the field and position).
        detail: String,
    },
    /// The spec is valid JSON but cannot be run.
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    /// The verb is not allowed in the container's current status.
    #[error("cannot {verb} container {id}: it is {status:?}")]
    WrongStatus {
        /// The verb.
        verb: &'static str,
        /// The id.
        id: String,
        /// The status it is in.
        status: ContainerStatus,
    },
    /// The init failed while setting up the container.
    #[error("container init failed: {0}")]
    Init(String),
    /// A system call failed.
    #[error(transparent)]
    Sys(#[from] skiff_sys::SysError),
    /// A cgroup operation failed.
    #[error(transparent)]
    Cgroup(#[from] skiff_cgroups::CgroupError),
    /// The host's cgroup mounts could not be read.
    #[error(transparent)]
    CgroupLayout(#[from] skiff_cgroups::LayoutError),
    /// The channel to the init failed.
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
    /// A file of the runtime could not be written.
    #[error("write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A lifecycle hook failed.
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    /// The seccomp listener did not reach the agent.
    #[error(transparent)]
    Listener(#[from] crate::listener::ListenerError),
    /// A signal name or number is not known.
    #[error("unknown signal {0:?}: use a name like TERM or SIGKILL, or a number")]
    BadSignal(String),
    /// The init did not exit in time.
    #[error("container {id}: processes still running after {seconds} s")]
    Timeout {
        /// The id.
        id: String,
        /// How long was waited.
        seconds: u64,
    },
}

/// The hooks of a record's bundle (re-read from its config.json; none if it is gone).
pub(crate) fn hooks_of(record: &Record) -> crate::hooks::Hooks {
    let path = record.state.bundle.join("config.json");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<oci_spec::runtime::Spec>(&text).ok())
        .map(|spec| crate::hooks::Hooks::from_spec(spec.hooks().as_ref()))
        .unwrap_or_default()
}

/// The cgroup manager of a record.
pub(crate) fn cgroup_of(record: &Record) -> Result<Manager, ContainerError> {
    let mounts = Mounts::of_this_process()?;
    Ok(Manager::new(&mounts, &record.cgroup_path)?)
}

/// The status of a record's container as the system shows it now.
pub(crate) fn current_status(store: &StateStore, record: &Record) -> ContainerStatus {
    let pid = record.state.pid;
    let alive = pid > 0
        && skiff_sys::fifo::process_start_time(pid) == Some(record.init_start_time)
        && skiff_sys::fifo::process_state(pid) != Some('Z');
    if !alive {
        return ContainerStatus::Stopped;
    }
    let fifo = store.dir_of(&record.state.id).map(|d| d.join("exec.fifo"));
    if fifo.is_ok_and(|f| f.exists()) {
        return ContainerStatus::Created;
    }
    if let Ok(cgroup) = cgroup_of(record) {
        if matches!(
            cgroup.freezer_state(),
            Ok(FreezerState::Frozen | FreezerState::Freezing)
        ) {
            return ContainerStatus::Paused;
        }
    }
    ContainerStatus::Running
}

/// Loads the record of `id` with its status refreshed (and saved when it changed).
pub fn load(store: &StateStore, id: &str) -> Result<Record, ContainerError> {
    let mut record = store.load(id)?;
    let status = current_status(store, &record);
    if status != record.state.status {
        record.state.status = status;
        if status == ContainerStatus::Stopped {
            record.state.pid = 0;
        }
        store.save(&record)?;
    }
    Ok(record)
}

/// Every container under the root, with fresh statuses.
pub fn list(store: &StateStore) -> Result<Vec<Record>, ContainerError> {
    store.ids()?.iter().map(|id| load(store, id)).collect()
}
