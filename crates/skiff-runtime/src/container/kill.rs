//! `kill`: signal a container's init, or every process in its cgroup.

use skiff_cgroups::CgroupManager;

use super::{ContainerError, cgroup_of, load};
use crate::state::StateStore;

/// Parses a signal as runc accepts it: `9`, `KILL` or `SIGKILL`.
pub fn parse_signal(text: &str) -> Result<i32, ContainerError> {
    if let Ok(n) = text.parse::<i32>() {
        return skiff_cgroups::Signal::try_from(n)
            .map(|s| s as i32)
            .map_err(|_| ContainerError::BadSignal(text.to_string()));
    }
    let name = text.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<skiff_cgroups::Signal>()
        .map(|s| s as i32)
        .map_err(|_| ContainerError::BadSignal(text.to_string()))
}

/// Sends `signal` to the init of `id`, or with `all` to every process in its cgroup.
pub fn kill(store: &StateStore, id: &str, signal: i32, all: bool) -> Result<(), ContainerError> {
    let record = load(store, id)?;
    if !record.state.status.can_kill() {
        return Err(ContainerError::WrongStatus {
            verb: "kill",
            id: id.to_string(),
            status: record.state.status,
        });
    }
    if all {
        let sig = skiff_cgroups::Signal::try_from(signal)
            .map_err(|_| ContainerError::BadSignal(signal.to_string()))?;
        cgroup_of(&record)?.kill_all(sig)?;
    } else {
        skiff_sys::process::send_signal(record.state.pid, signal)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_number_and_name() {
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("sigterm").unwrap(), 15);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}
