//! `delete`: remove a stopped container (or, forced, any container) and all it left.

use std::time::{Duration, Instant};

use skiff_cgroups::CgroupManager;

use super::{ContainerError, cgroup_of, current_status, load};
use crate::state::{ContainerStatus, StateStore};

const KILL_DEADLINE: Duration = Duration::from_secs(10);

/// Deletes container `id`. A created container (never started) is killed first, as runc does;
/// a running or paused one only with `force`.
pub fn delete(store: &StateStore, id: &str, force: bool) -> Result<(), ContainerError> {
    let record = load(store, id)?;
    let status = record.state.status;
    let must_kill = match status {
        ContainerStatus::Stopped => false,
        ContainerStatus::Created | ContainerStatus::Creating => true,
        ContainerStatus::Running | ContainerStatus::Paused if force => true,
        _ => {
            return Err(ContainerError::WrongStatus {
                verb: "delete (use --force)",
                id: id.to_string(),
                status,
            });
        }
    };
    let cgroup = cgroup_of(&record)?;
    if must_kill {
        cgroup.kill_all(skiff_cgroups::Signal::SIGKILL)?;
        if record.state.pid > 0 {
            let _ = skiff_sys::process::send_signal(record.state.pid, 9);
        }
        let start = Instant::now();
        while current_status(store, &record) != ContainerStatus::Stopped
            || !cgroup.pids().unwrap_or_default().is_empty()
        {
            if start.elapsed() > KILL_DEADLINE {
                return Err(ContainerError::Timeout {
                    id: id.to_string(),
                    seconds: KILL_DEADLINE.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    cgroup.destroy()?;
    let hooks = super::hooks_of(&record);
    store.remove(id)?;
    // poststop failures are warnings: the container is gone either way.
    if let Err(err) = crate::hooks::run(
        "poststop",
        &hooks.poststop,
        &super::hook_state(&record, 0, "stopped"),
    ) {
        eprintln!("warning: {err}");
    }
    Ok(())
}
