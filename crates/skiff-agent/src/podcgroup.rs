//! Pod cgroups laid out as the kubelet's cgroupfs driver does, under Skiff's own cgroup:
//!
//! ```text
//! /skiff/kubepods/                      Guaranteed pods' parent
//! /skiff/kubepods/pod<uid>/             a Guaranteed pod
//! /skiff/kubepods/burstable/            cpu.shares: the sum of its pods' (kubelet's QoS manager)
//! /skiff/kubepods/burstable/pod<uid>/   a Burstable pod
//! /skiff/kubepods/besteffort/           cpu.shares 2 (cpu.weight 1)
//! /skiff/kubepods/besteffort/pod<uid>/  a BestEffort pod
//! /skiff/kubepods/.../pod<uid>/<id>/    each of its containers, the sandbox too
//! ```
//!
//! The pod cgroup gets the figures of [`crate::qos::pod_figures`]; the containers keep their
//! own limits. It goes when the pod's containers are gone, and at start-up the agent removes
//! the empty pod cgroups of pods that no longer exist.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder};
use skiff_cgroups::{CgroupError, CgroupManager, LayoutError, Manager, Mounts};

use crate::qos::{CPU_PERIOD, MIN_SHARES, PodFigures, QosClass};

/// The node-level parent of every pod cgroup.
pub const KUBEPODS: &str = "/skiff/kubepods";

/// How long removing a pod cgroup may wait for it to empty.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a pod cgroup could not be set up or removed.
#[derive(Debug, thiserror::Error)]
pub enum PodCgroupError {
    /// The record of a pod cgroup this agent made could not be written or removed.
    #[error("{path}: {source}")]
    Marker {
        /// The marker file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The host's cgroup mounts could not be read.
    #[error("reading the cgroup mounts: {0}")]
    Mounts(#[from] LayoutError),
    /// A cgroup operation failed.
    #[error("{action} cgroup {path}: {source}")]
    Cgroup {
        /// What was done.
        action: &'static str,
        /// The cgroup.
        path: String,
        /// The library's error.
        source: CgroupError,
    },
    /// The resources could not be expressed.
    #[error("the resources of cgroup {path}: {detail}")]
    Resources {
        /// The cgroup.
        path: String,
        /// The builder's error.
        detail: String,
    },
    /// A QoS parent could not be listed.
    #[error("listing {}: {source}", path.display())]
    List {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The cgroup of a QoS class's pods.
pub fn qos_parent(qos: QosClass) -> String {
    match qos {
        QosClass::Guaranteed => KUBEPODS.to_string(),
        QosClass::Burstable => format!("{KUBEPODS}/burstable"),
        QosClass::BestEffort => format!("{KUBEPODS}/besteffort"),
    }
}

/// The pod cgroup of pod `uid` in class `qos` (its containers' cgroup parent).
pub fn pod_path(qos: QosClass, uid: &str) -> String {
    format!("{}/pod{uid}", qos_parent(qos))
}

fn manager(mounts: &Mounts, path: &str) -> Result<Manager, PodCgroupError> {
    Manager::new(mounts, path).map_err(|source| PodCgroupError::Cgroup {
        action: "name",
        path: path.to_string(),
        source,
    })
}

fn create(mounts: &Mounts, path: &str) -> Result<Manager, PodCgroupError> {
    let m = manager(mounts, path)?;
    m.create().map_err(|source| PodCgroupError::Cgroup {
        action: "create",
        path: path.to_string(),
        source,
    })?;
    Ok(m)
}

fn apply(
    m: &Manager,
    path: &str,
    shares: u64,
    quota: Option<i64>,
    memory: Option<i64>,
) -> Result<(), PodCgroupError> {
    let bad = |e: oci_spec::OciSpecError| PodCgroupError::Resources {
        path: path.to_string(),
        detail: e.to_string(),
    };
    let mut cpu = LinuxCpuBuilder::default().shares(shares);
    if let Some(quota) = quota {
        cpu = cpu.quota(quota).period(CPU_PERIOD);
    }
    let mut resources = LinuxResourcesBuilder::default().cpu(cpu.build().map_err(bad)?);
    if let Some(limit) = memory {
        let memory = LinuxMemoryBuilder::default()
            .limit(limit)
            .build()
            .map_err(bad)?;
        resources = resources.memory(memory);
    }
    let resources = resources.build().map_err(bad)?;
    m.apply(&resources)
        .map_err(|source| PodCgroupError::Cgroup {
            action: "set the limits of",
            path: path.to_string(),
            source,
        })
}

/// Creates the QoS parents and the pod cgroup with its figures; returns the pod cgroup's path.
///
/// A marker `DATA/agent/pod-cgroups/<uid>` is written first: [`remove_except`] only ever
/// removes pod cgroups this agent made (agents of other data dirs share the host's tree). It
/// holds the pod's class and cpu shares, from which the Burstable parent's shares are summed.
pub fn ensure(uid: &str, figures: &PodFigures, data_dir: &Path) -> Result<String, PodCgroupError> {
    let marker = markers(data_dir).join(uid);
    let record = format!("{} {}\n", figures.qos.as_str(), figures.cpu_shares);
    std::fs::create_dir_all(markers(data_dir))
        .and_then(|()| std::fs::write(&marker, record))
        .map_err(|source| PodCgroupError::Marker {
            path: marker.clone(),
            source,
        })?;
    let mounts = Mounts::of_this_process()?;
    create(&mounts, KUBEPODS)?;
    create(&mounts, &qos_parent(QosClass::Burstable))?;
    let besteffort = qos_parent(QosClass::BestEffort);
    let m = create(&mounts, &besteffort)?;
    apply(&m, &besteffort, MIN_SHARES, None, None)?;
    let path = pod_path(figures.qos, uid);
    let m = create(&mounts, &path)?;
    apply(
        &m,
        &path,
        figures.cpu_shares,
        figures.cpu_quota,
        figures.memory_limit,
    )?;
    if figures.qos == QosClass::Burstable {
        update_burstable(&mounts, data_dir)?;
    }
    Ok(path)
}

/// The Burstable parent's cpu shares: the sum of its pods' (pods without a cpu request count
/// nothing), at least [`MIN_SHARES`], as the kubelet's QoS container manager sets them, so
/// that Burstable pods together weigh what they asked for against Guaranteed ones.
pub fn burstable_shares(records: &[String]) -> u64 {
    let sum: u64 = records
        .iter()
        .filter_map(|r| {
            let (class, shares) = r.trim().split_once(' ')?;
            (class == QosClass::Burstable.as_str()).then(|| shares.parse::<u64>().ok())?
        })
        .filter(|&shares| shares > MIN_SHARES)
        .sum();
    sum.max(MIN_SHARES)
}

/// Sets the Burstable parent's shares from this agent's pod records.
fn update_burstable(mounts: &Mounts, data_dir: &Path) -> Result<(), PodCgroupError> {
    let dir = markers(data_dir);
    let records: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect(),
        Err(source) => return Err(PodCgroupError::List { path: dir, source }),
    };
    let parent = qos_parent(QosClass::Burstable);
    let m = create(mounts, &parent)?;
    apply(&m, &parent, burstable_shares(&records), None, None)
}

fn destroy(mounts: &Mounts, path: &str) -> Result<(), PodCgroupError> {
    manager(mounts, path)?
        .with_timeout(REMOVE_TIMEOUT)
        .destroy()
        .map_err(|source| PodCgroupError::Cgroup {
            action: "remove",
            path: path.to_string(),
            source,
        })
}

/// Removes pod `uid`'s cgroup (whatever its class was); its containers must be gone.
pub fn remove(uid: &str, data_dir: &Path) -> Result<(), PodCgroupError> {
    let mounts = Mounts::of_this_process()?;
    for qos in [
        QosClass::Guaranteed,
        QosClass::Burstable,
        QosClass::BestEffort,
    ] {
        destroy(&mounts, &pod_path(qos, uid))?;
    }
    let marker = markers(data_dir).join(uid);
    let was_burstable =
        std::fs::read_to_string(&marker).is_ok_and(|r| r.starts_with(QosClass::Burstable.as_str()));
    match std::fs::remove_file(&marker) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(PodCgroupError::Marker {
                path: marker,
                source: e,
            });
        }
        _ => {}
    }
    if was_burstable {
        update_burstable(&mounts, data_dir)?;
    }
    Ok(())
}

/// Where the agent of `data_dir` records the pod cgroups it made.
fn markers(data_dir: &Path) -> PathBuf {
    data_dir.join("agent").join("pod-cgroups")
}

/// Removes the pod cgroups of pods not in `keep` that hold no process; returns their uids.
/// (A cgroup with processes stays: it belongs to a pod this agent does not know about.)
pub fn remove_except(
    keep: &HashSet<String>,
    data_dir: &Path,
) -> Result<Vec<String>, PodCgroupError> {
    let dir = markers(data_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(PodCgroupError::List { path: dir, source }),
    };
    let mounts = Mounts::of_this_process()?;
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let uid = entry.file_name().to_string_lossy().into_owned();
        if keep.contains(&uid) {
            continue;
        }
        let mut busy = false;
        for qos in [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ] {
            let m = manager(&mounts, &pod_path(qos, &uid))?;
            busy |= m.pids().map(|p| !p.is_empty()).unwrap_or(false);
        }
        if busy {
            continue;
        }
        remove(&uid, data_dir)?;
        removed.push(uid);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burstable_parent_weighs_the_sum_of_its_pods() {
        let records = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(burstable_shares(&[]), MIN_SHARES);
        assert_eq!(
            burstable_shares(&records(&["Burstable 512\n", "Burstable 102\n"])),
            614
        );
        // Guaranteed and BestEffort pods, pods without a cpu request and old empty markers
        // add nothing.
        assert_eq!(
            burstable_shares(&records(&[
                "Guaranteed 1024",
                "BestEffort 2",
                "Burstable 2",
                ""
            ])),
            MIN_SHARES
        );
    }

    #[test]
    fn pods_go_under_their_class() {
        assert_eq!(
            pod_path(QosClass::Guaranteed, "u1"),
            "/skiff/kubepods/podu1"
        );
        assert_eq!(
            pod_path(QosClass::Burstable, "u1"),
            "/skiff/kubepods/burstable/podu1"
        );
        assert_eq!(
            pod_path(QosClass::BestEffort, "u1"),
            "/skiff/kubepods/besteffort/podu1"
        );
    }
}
