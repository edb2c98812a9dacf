//! The container's own view of `/proc` (on unless `--no-procfs`): `/proc/meminfo`,
//! `cpuinfo`, `stat`, `uptime` and `loadavg`, and `/sys/devices/system/cpu/online`, are
//! bind-mounted (read-only) from the data root's FUSE server (`skiff-procfs`), which renders
//! them from the reading process's cgroup, so `free`, `top` and `uptime` show the
//! container's limit, quota and age.
//!
//! `sysinfo(2)` (busybox `free`) is answered by the server's seccomp agent: the spec gets a
//! `sysinfo` → `SCMP_ACT_NOTIFY` rule first in its profile and the agent's socket as
//! `listenerPath` ([`ProcView::notify_agent`]); under `seccomp=unconfined` the profile
//! allows everything and notifies only the agent's calls. Privileged containers get none (they have
//! no filter, and a nested runtime in them may want a listener of its own: the kernel allows
//! one per filter chain), nor do `--no-procfs` containers or any container when the server
//! is not up. If the server dies while containers run, their `sysinfo` fails with ENOSYS
//! (the kernel's answer when a listener is gone); it does not leave while a registered
//! container is alive.
//!
//! `nproc` (coreutils and busybox) counts the CPUs of `sched_getaffinity`, which no file
//! can change: a `skiff run` container with a CPU quota (`--cpus`) of fewer CPUs than the
//! host offers gets a cpuset of `ceil(quota)` CPUs, chosen from the monitor's own affinity
//! starting at a place derived from the container id, so that containers spread over the
//! host's CPUs rather than all piling onto CPU 0. Pods never are (`quota_cpuset` off): a CPU
//! limit does not pin a pod under the kubelet, and two busy pods on one CPU would halve each
//! other. The quota still limits the time. Their `sched_getaffinity` is notified to the
//! agent instead, which answers with the caller's mask cut to `ceil(quota)` CPUs, so
//! `nproc`, Go's `GOMAXPROCS` and the JVM count the limit without the pod being pinned.
//! Docker does not do this; it is what makes `nproc` agree with `/proc/cpuinfo`, and
//! `--no-procfs` turns it off with the files.
//!
//! The monitor registers its container as a user of the server and starts the server if it
//! is not running (a process of its own, by fork+exec: the monitor has no threads). When the
//! server cannot start (no `/dev/fuse`), the container runs with the host's files and the
//! reason is written once to the monitor's log and kept in `DATA/procfs/unavailable`, which
//! stops further attempts for [`RETRY_AFTER`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::record::ContainerConfig;

/// How long after a failed start no container tries to start the server again.
pub const RETRY_AFTER: Duration = Duration::from_secs(600);

/// What a container's spec needs to give it its own `/proc` view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcView {
    /// Where the server's files are mounted; `None`: the host's files stay.
    pub mount_point: Option<PathBuf>,
    /// The CPUs a container may be given (the monitor's affinity); empty: no cpuset.
    pub host_cpus: Vec<u32>,
    /// The server's seccomp agent (`DATA/procfs/seccomp.sock`), which answers `sysinfo(2)`;
    /// `None`: no server, and no notify rule (a notified syscall without an agent fails
    /// with ENOSYS).
    pub seccomp_agent: Option<PathBuf>,
}

impl ProcView {
    /// Nothing: the host's files and no cpuset.
    pub fn none() -> ProcView {
        ProcView::default()
    }

    /// Adds the notify rule for the agent's system calls to the spec's `linux` object when
    /// the agent is up: `sysinfo`, and `sched_getaffinity` too when `affinity` (a CPU quota
    /// smaller than the CPUs the container may use, without a cpuset: a pod's limit);
    /// first in the confined profile's rules (the first match wins), with the agent as
    /// `listenerPath`; without a profile (`seccomp=unconfined`) a profile that allows
    /// everything and only notifies those. A profile that already has a listener of its
    /// own (a user's `seccomp=PATH`) is left alone, as is a privileged container's absent
    /// one (the caller does not call this then).
    pub fn notify_agent(&self, linux: &mut Value, affinity: bool) {
        let Some(agent) = &self.seccomp_agent else {
            return;
        };
        let names = if affinity {
            json!(["sysinfo", "sched_getaffinity"])
        } else {
            json!(["sysinfo"])
        };
        let rule = json!({"names": names, "action": "SCMP_ACT_NOTIFY"});
        let seccomp = &mut linux["seccomp"];
        if seccomp.is_null() {
            *seccomp = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64"],
                "listenerPath": agent,
                "syscalls": [rule],
            });
            return;
        }
        if seccomp.get("listenerPath").is_some_and(|p| !p.is_null()) {
            return;
        }
        seccomp["listenerPath"] = json!(agent);
        match seccomp["syscalls"].as_array_mut() {
            Some(rules) => rules.insert(0, rule),
            None => seccomp["syscalls"] = json!([rule]),
        }
    }

    /// The bind mounts of the served files over `/proc` (and
    /// `/sys/devices/system/cpu/online`), read-only.
    pub fn mounts(&self) -> Vec<Value> {
        let Some(mount_point) = &self.mount_point else {
            return vec![];
        };
        skiff_procfs::FILES
            .iter()
            .map(|name| {
                json!({
                    "destination": skiff_procfs::destination(name), "type": "bind",
                    "source": mount_point.join(name),
                    "options": ["bind", "ro", "nosuid", "nodev", "noexec"],
                })
            })
            .collect()
    }

    /// The cpuset (`linux.resources.cpu.cpus`) for a quota of `nano_cpus` billionths of a
    /// CPU: `ceil` of it CPUs from `host_cpus`, starting at a place derived from `id` and
    /// wrapping around. `None` when there is no quota or it covers every CPU.
    pub fn cpuset(&self, id: &str, nano_cpus: i64) -> Option<String> {
        let cpus = &self.host_cpus;
        let wanted =
            usize::try_from(nano_cpus.max(0).unsigned_abs().div_ceil(1_000_000_000)).ok()?;
        if wanted == 0 || wanted >= cpus.len() {
            return None;
        }
        let seed = id
            .get(..8)
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        let start = seed % cpus.len();
        let mut chosen: Vec<u32> = (0..wanted)
            .map(|i| cpus[(start + i) % cpus.len()])
            .collect();
        chosen.sort_unstable();
        Some(
            chosen
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        )
    }
}

/// Prepares the view of container `config` (called by its monitor before it writes the
/// bundle): registers the monitor as a user of the server and starts the server if need be.
/// Never fails: without a server the container keeps the host's files.
pub fn prepare(data_root: &Path, config: &ContainerConfig) -> ProcView {
    if config.no_procfs {
        return ProcView::none();
    }
    let host_cpus = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| {
            (0..nix::sched::CpuSet::count())
                .filter(|&c| set.is_set(c).unwrap_or(false))
                .filter_map(|c| u32::try_from(c).ok())
                .collect()
        })
        .unwrap_or_default();
    let dir = skiff_procfs::ProcfsDir::new(data_root);
    let marker = dir.path().join("unavailable");
    let recent_failure = std::fs::metadata(&marker)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < RETRY_AFTER);
    if recent_failure {
        return ProcView {
            host_cpus,
            ..ProcView::none()
        };
    }
    let served = skiff_procfs::register(data_root, &config.id).and_then(|()| {
        let program = std::env::current_exe()
            .map_err(skiff_procfs::ProcfsError::io("find", "/proc/self/exe"))?;
        skiff_procfs::ensure(data_root, &program)
    });
    match served {
        Ok(mount_point) => {
            let _ = std::fs::remove_file(&marker);
            // A server started by an older binary has no agent: then no notify rule.
            let agent = dir.agent_socket();
            ProcView {
                mount_point: Some(mount_point),
                host_cpus,
                seccomp_agent: agent.exists().then_some(agent),
            }
        }
        Err(err) => {
            eprintln!(
                "warning: containers on {} see the host's /proc files: {err}",
                data_root.display()
            );
            let _ = std::fs::write(&marker, format!("{err}\n"));
            skiff_procfs::unregister(data_root, &config.id);
            ProcView {
                host_cpus,
                ..ProcView::none()
            }
        }
    }
}

/// Unregisters container `id` from the server when its monitor ends.
#[derive(Debug)]
pub struct Registration<'a> {
    /// The data root.
    pub data_root: &'a Path,
    /// The container.
    pub id: &'a str,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        skiff_procfs::unregister(self.data_root, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(cpus: &[u32]) -> ProcView {
        ProcView {
            mount_point: Some(PathBuf::from("/data/procfs/mnt")),
            host_cpus: cpus.to_vec(),
            seccomp_agent: Some(PathBuf::from("/data/procfs/seccomp.sock")),
        }
    }

    #[test]
    fn sysinfo_is_notified_first_with_the_agent_as_listener() {
        let v = view(&[0]);
        let mut linux = json!({"seccomp": skiff_runtime::seccomp::default_profile()});
        v.notify_agent(&mut linux, false);
        assert_eq!(
            linux["seccomp"]["listenerPath"],
            "/data/procfs/seccomp.sock"
        );
        assert_eq!(linux["seccomp"]["syscalls"][0]["names"], json!(["sysinfo"]));
        assert_eq!(linux["seccomp"]["syscalls"][0]["action"], "SCMP_ACT_NOTIFY");
        let profile = serde_json::from_value(linux["seccomp"].clone()).unwrap();
        assert!(skiff_runtime::seccomp::compile(&profile).unwrap().notify);
        // Unconfined: allow everything, notify sysinfo only.
        let mut linux = json!({});
        v.notify_agent(&mut linux, false);
        assert_eq!(linux["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        assert_eq!(linux["seccomp"]["syscalls"].as_array().unwrap().len(), 1);
        // A listener of the user's own stays; no agent, no rule.
        let mut linux =
            json!({"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/mine"}});
        v.notify_agent(&mut linux, false);
        assert_eq!(linux["seccomp"]["listenerPath"], "/mine");
        let mut linux = json!({});
        ProcView::none().notify_agent(&mut linux, true);
        assert!(linux["seccomp"].is_null());
    }

    #[test]
    fn the_six_files_are_bound_read_only_from_the_mount() {
        let mounts = view(&[0]).mounts();
        assert_eq!(mounts.len(), 6);
        assert_eq!(mounts[5]["destination"], "/sys/devices/system/cpu/online");
        assert_eq!(mounts[0]["destination"], "/proc/meminfo");
        assert_eq!(mounts[0]["source"], "/data/procfs/mnt/meminfo");
        assert!(
            mounts[0]["options"]
                .as_array()
                .unwrap()
                .contains(&json!("ro"))
        );
        assert!(ProcView::none().mounts().is_empty());
    }

    #[test]
    fn a_quota_below_the_hosts_cpus_gets_that_many_cpus_spread_by_id() {
        let v = view(&[0, 1, 2, 3]);
        assert_eq!(
            v.cpuset(&"0".repeat(64), 1_000_000_000).as_deref(),
            Some("0")
        );
        assert_eq!(
            v.cpuset(&format!("00000003{}", "0".repeat(56)), 1_500_000_000)
                .as_deref(),
            Some("0,3")
        );
        assert_eq!(
            v.cpuset(&format!("00000001{}", "0".repeat(56)), 500_000_000)
                .as_deref(),
            Some("1")
        );
        assert_eq!(v.cpuset(&"0".repeat(64), 4_000_000_000), None);
        assert_eq!(v.cpuset(&"0".repeat(64), 0), None);
        assert_eq!(view(&[]).cpuset("abc", 1_000_000_000), None);
    }
}
