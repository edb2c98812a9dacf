//! `pause` and `resume`: freeze and thaw a container's cgroup.

use skiff_cgroups::CgroupManager;

use super::{ContainerError, cgroup_of, load};
use crate::state::{ContainerStatus, StateStore};

/// Freezes every process of a running container.
pub fn pause(store: &StateStore, id: &str) -> Result<(), ContainerError> {
    let mut record = load(store, id)?;
    if !record.state.status.can_pause() {
        return Err(ContainerError::WrongStatus {
            verb: "pause",
            id: id.to_string(),
            status: record.state.status,
        });
    }
    cgroup_of(&record)?.freeze()?;
    record.state.status = ContainerStatus::Paused;
    store.save(&record)?;
    Ok(())
}

/// Thaws a paused container.
pub fn resume(store: &StateStore, id: &str) -> Result<(), ContainerError> {
    let mut record = load(store, id)?;
    if !record.state.status.can_resume() {
        return Err(ContainerError::WrongStatus {
            verb: "resume",
            id: id.to_string(),
            status: record.state.status,
        });
    }
    cgroup_of(&record)?.thaw()?;
    record.state.status = ContainerStatus::Running;
    store.save(&record)?;
    Ok(())
}

/// The pids of every process in a container's cgroup.
pub fn pids(store: &StateStore, id: &str) -> Result<Vec<i32>, ContainerError> {
    let record = load(store, id)?;
    Ok(cgroup_of(&record)?.pids()?)
}

/// Applies new resource limits to a running (or paused, or created) container.
pub fn update(
    store: &StateStore,
    id: &str,
    resources: &oci_spec::runtime::LinuxResources,
) -> Result<(), ContainerError> {
    let record = load(store, id)?;
    if record.state.status == ContainerStatus::Stopped {
        return Err(ContainerError::WrongStatus {
            verb: "update",
            id: id.to_string(),
            status: record.state.status,
        });
    }
    cgroup_of(&record)?.apply(resources)?;
    Ok(())
}
