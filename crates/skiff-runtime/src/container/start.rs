//! `start`: let a created container's init exec the user program.

use super::{ContainerError, current_status, load};
use crate::state::{ContainerStatus, Record, StateStore};

/// Starts container `id`.
pub fn start(store: &StateStore, id: &str) -> Result<Record, ContainerError> {
    let mut record = load(store, id)?;
    if !record.state.status.can_start() {
        return Err(ContainerError::WrongStatus {
            verb: "start",
            id: id.to_string(),
            status: record.state.status,
        });
    }
    let fifo = store.dir_of(id)?.join("exec.fifo");
    let snapshot = record.clone();
    let released = skiff_sys::fifo::wait_for_signal(&fifo, || {
        current_status(store, &snapshot) != ContainerStatus::Stopped
    })?;
    let _ = std::fs::remove_file(&fifo);
    if !released {
        record.state.status = ContainerStatus::Stopped;
        store.save(&record)?;
        return Err(ContainerError::Init(format!(
            "container {id} exited before it could start"
        )));
    }
    record.state.status = ContainerStatus::Running;
    store.save(&record)?;
    // poststart failures are warnings: the container runs (runtime spec, "Lifecycle").
    let hooks = super::hooks_of(&record);
    if let Err(err) = crate::hooks::run(
        "poststart",
        &hooks.poststart,
        &super::hook_state(&record, record.state.pid, "running"),
    ) {
        eprintln!("warning: {err}");
    }
    Ok(record)
}
