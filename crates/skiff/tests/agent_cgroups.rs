//! Pod cgroups through the embedded node agent, for real (root) with kubectl 1.33: a
//! Guaranteed, a Burstable and a BestEffort pod get `status.qosClass`, a `pod<uid>` cgroup
//! under `/skiff/kubepods` (Guaranteed), `.../burstable` or `.../besteffort` with the
//! kubelet's figures (cpu shares or weight from the requests, quota and memory limit from the
//! limits), their containers' processes run in cgroups below it with their own limits, and the
//! pod cgroup goes with the pod. A leftover pod cgroup of a pod that does not exist is removed
//! when the agent starts. Works on cgroup v1 (legacy or hybrid) and v2 hosts.
#![allow(clippy::unwrap_used)]

mod agent_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_support::Cluster;
use skiff_cgroups::{CgroupLayout, Mounts};

const LONG: Duration = Duration::from_secs(90);

/// Where the test reads cgroup files: per controller on v1, the one tree on v2.
struct Host {
    mounts: Mounts,
    v2: bool,
}

impl Host {
    fn new() -> Host {
        let mounts = Mounts::of_this_process().unwrap();
        let v2 = mounts.layout().unwrap() == CgroupLayout::Unified;
        Host { mounts, v2 }
    }

    /// The directory of cgroup `path` in the hierarchy of `controller`.
    fn dir(&self, controller: &str, path: &str) -> PathBuf {
        let root = if self.v2 {
            self.mounts.v2.clone().unwrap()
        } else {
            self.mounts.v1.get(controller).cloned().unwrap()
        };
        root.join(path.trim_start_matches('/'))
    }

    fn read(&self, controller: &str, path: &str, file: &str) -> String {
        let f = self.dir(controller, path).join(file);
        std::fs::read_to_string(&f)
            .unwrap_or_else(|e| panic!("read {}: {e}", f.display()))
            .trim()
            .to_string()
    }

    /// Every directory cgroup `path` has (all v1 hierarchies and the cgroup2 mount).
    fn all_dirs(&self, path: &str) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = self.mounts.v1.values().cloned().collect();
        roots.extend(self.mounts.v2.clone());
        roots.sort();
        roots.dedup();
        roots
            .iter()
            .map(|r| r.join(path.trim_start_matches('/')))
            .collect()
    }

    fn exists(&self, path: &str) -> bool {
        self.dir("cpu", path).is_dir()
    }

    /// (cpu shares or weight, cpu quota, memory limit) as the files say.
    fn figures(&self, path: &str) -> (String, String, String) {
        if self.v2 {
            (
                self.read("cpu", path, "cpu.weight"),
                self.read("cpu", path, "cpu.max"),
                self.read("memory", path, "memory.max"),
            )
        } else {
            (
                self.read("cpu", path, "cpu.shares"),
                self.read("cpu", path, "cpu.cfs_quota_us"),
                self.read("memory", path, "memory.limit_in_bytes"),
            )
        }
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Removes the pod cgroups it was told about, also when the test panicked (after the cluster,
/// declared later, removed the containers).
struct CgroupGuard {
    host: Host,
    paths: std::cell::RefCell<Vec<String>>,
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        for path in self.paths.borrow().iter() {
            for dir in self.host.all_dirs(path) {
                remove_tree(&dir);
            }
        }
    }
}

/// The host pids in cgroup `path` and below.
fn pids_below(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            pids.extend(pids_below(&e.path()));
        }
    }
    pids
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn pod(name: &str, image: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n{resources}"
    )
}

fn running(c: &Cluster, name: &str) {
    c.wait(&format!("{name} to run"), LONG, || {
        c.field(&["get", "pod", name], "{.status.phase}") == "Running"
    });
}

#[test]
fn pods_get_cgroups_under_their_qos_class() {
    let guard = CgroupGuard {
        host: Host::new(),
        paths: Default::default(),
    };
    let host = &guard.host;
    let c = Cluster::start();
    c.apply(&pod(
        "guaranteed",
        &c.image,
        "    resources:\n      limits: {cpu: 500m, memory: 64Mi}\n",
    ));
    c.apply(&pod(
        "burstable",
        &c.image,
        "    resources:\n      requests: {cpu: 250m, memory: 32Mi}\n      limits: {memory: 64Mi}\n",
    ));
    c.apply(&pod("besteffort", &c.image, ""));
    let mut paths = Vec::new();
    for (name, class, parent) in [
        ("guaranteed", "Guaranteed", "/skiff/kubepods"),
        ("burstable", "Burstable", "/skiff/kubepods/burstable"),
        ("besteffort", "BestEffort", "/skiff/kubepods/besteffort"),
    ] {
        running(&c, name);
        assert_eq!(
            c.field(&["get", "pod", name], "{.status.qosClass}"),
            class,
            "{name}"
        );
        let uid = c.field(&["get", "pod", name], "{.metadata.uid}");
        let path = format!("{parent}/pod{uid}");
        guard.paths.borrow_mut().push(path.clone());
        assert!(host.exists(&path), "{name}: no cgroup {path}");
        paths.push(path);
    }

    // Every process of the pod (the sandbox's pause and the app's sleep) is below the pod
    // cgroup, in its own container cgroup, in every hierarchy.
    for path in &paths {
        let pids = pids_below(&host.dir("cpu", path));
        assert!(
            pids.iter().any(|p| cmdline(*p).contains("sleep 3600")),
            "no sleep in {path}: {pids:?}"
        );
        assert!(
            pids.iter().any(|p| cmdline(*p).contains("pause")),
            "no sandbox in {path}: {pids:?}"
        );
        for pid in pids {
            let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
            for line in own.lines() {
                let (_, hierarchy) = line.split_once(':').unwrap();
                let (controllers, cgroup) = hierarchy.split_once(':').unwrap();
                if controllers.split(',').any(|c| c == "cpu" || c == "memory")
                    || (host.v2 && controllers.is_empty())
                {
                    assert!(
                        cgroup.starts_with(&format!("{path}/")),
                        "pid {pid} is in {cgroup}, not below {path}: {own}"
                    );
                }
            }
        }
    }

    // The kubelet's figures.
    let unlimited_memory = |s: &str| {
        if host.v2 {
            s == "max"
        } else {
            s.parse::<u64>().unwrap() >= 1 << 62
        }
    };
    let (weight, quota, memory) = host.figures(&paths[0]);
    if host.v2 {
        assert_eq!(weight, (1 + (512 - 2) * 9999 / 262_142).to_string());
        assert_eq!(quota, "50000 100000");
    } else {
        assert_eq!(weight, "512");
        assert_eq!(quota, "50000");
    }
    assert_eq!(memory, (64u64 << 20).to_string());

    let (weight, quota, memory) = host.figures(&paths[1]);
    if host.v2 {
        assert_eq!(weight, (1 + (256 - 2) * 9999 / 262_142).to_string());
        assert_eq!(quota, "max 100000");
    } else {
        assert_eq!(weight, "256");
        assert_eq!(quota, "-1");
    }
    assert_eq!(memory, (64u64 << 20).to_string());

    let (weight, quota, memory) = host.figures(&paths[2]);
    if host.v2 {
        assert_eq!(weight, "1");
        assert_eq!(quota, "max 100000");
    } else {
        assert_eq!(weight, "2");
        assert_eq!(quota, "-1");
    }
    assert!(unlimited_memory(&memory), "besteffort memory {memory}");
    let besteffort_parent = host.figures("/skiff/kubepods/besteffort").0;
    assert_eq!(besteffort_parent, if host.v2 { "1" } else { "2" });

    // The containers keep their own limits: the guaranteed app's cgroup has 64Mi too, the
    // burstable app's its 64Mi and a cpu share of its 250m request.
    let sleeper_cgroup = |path: &str| {
        let dir = host.dir("memory", path);
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .find(|p| {
                pids_below(p)
                    .iter()
                    .any(|pid| cmdline(*pid).contains("sleep 3600"))
            })
            .unwrap()
    };
    let memory_file = if host.v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    for path in &paths[..2] {
        let own = std::fs::read_to_string(sleeper_cgroup(path).join(memory_file)).unwrap();
        assert_eq!(own.trim(), (64u64 << 20).to_string(), "{path}");
    }
    // Inside, the pod's limit is the memory: busybox `free` asks sysinfo(2), which the data
    // root's /proc server answers (the pod's container gets the same view as `skiff run`).
    let free = c.k(&["exec", "guaranteed", "--", "free", "-m"]);
    let total = free
        .lines()
        .find(|l| l.starts_with("Mem:"))
        .and_then(|l| l.split_whitespace().nth(1));
    assert_eq!(total, Some("64"), "{free}");
    // `nproc` under the guaranteed app's 500m limit is one CPU, though the pod is not pinned
    // (its thread may run on every CPU, as under the kubelet): the agent answers
    // sched_getaffinity from the quota. The burstable app has no limit: the host's count.
    let host_allowed = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list:"))
        .unwrap()
        .to_string();
    let host_cpus = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| {
            (0..nix::sched::CpuSet::count())
                .filter(|&c| set.is_set(c).unwrap_or(false))
                .count()
        })
        .unwrap();
    let script = "nproc; grep Cpus_allowed_list: /proc/self/status";
    let guaranteed = c.k(&["exec", "guaranteed", "--", "sh", "-c", script]);
    assert_eq!(guaranteed, format!("1\n{host_allowed}\n"), "nproc, allowed");
    let burstable = c.k(&["exec", "burstable", "--", "sh", "-c", script]);
    assert_eq!(
        burstable,
        format!("{host_cpus}\n{host_allowed}\n"),
        "nproc, allowed"
    );

    // Deleting a pod removes its cgroup, in every hierarchy.
    for (name, path) in ["guaranteed", "burstable", "besteffort"].iter().zip(&paths) {
        c.k(&["delete", "pod", name, "--wait=false"]);
        c.wait(&format!("{path} to go"), LONG, || {
            host.all_dirs(path).iter().all(|d| !d.exists())
        });
    }
}

#[test]
fn the_agent_removes_cgroups_of_pods_that_are_gone() {
    let guard = CgroupGuard {
        host: Host::new(),
        paths: Default::default(),
    };
    let host = &guard.host;
    let mut c = Cluster::start();
    // A pod cgroup left behind by a pod deleted while the agent was down.
    let uid = format!("{:08x}-dead-4bad-8bad-{:012x}", std::process::id(), 42);
    let path = format!("/skiff/kubepods/besteffort/pod{uid}");
    guard.paths.borrow_mut().push(path.clone());
    c.kill_server();
    for dir in host.all_dirs(&path) {
        std::fs::create_dir_all(&dir).unwrap();
    }
    // The agent's record that it made it (it removes only pod cgroups of its own).
    let markers = c.dir.as_ref().unwrap().path().join("agent/pod-cgroups");
    std::fs::create_dir_all(&markers).unwrap();
    std::fs::write(markers.join(&uid), b"").unwrap();
    assert!(host.exists(&path));
    c.boot();
    c.wait(&format!("{path} to go"), LONG, || {
        host.all_dirs(&path).iter().all(|d| !d.exists())
    });
}
