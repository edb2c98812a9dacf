//! Fixtures shared by the integration tests: temp-dir cgroupfs stand-ins for v1 and v2, a tiny
//! "kernel" thread for the v2 freezer, and a guard that owns a real cgroup on this host.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use skiff_cgroups::{CgroupManager, Manager, Mounts, Signal};
use tempfile::TempDir;

/// The v1 controllers the stand-in mounts, each in its own hierarchy (as on this host).
pub const V1_CONTROLLERS: [&str; 8] = [
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
];

/// A temp dir laid out like the roots of v1 hierarchies: `<tmp>/<controller>/...`.
pub fn fake_v1() -> (TempDir, Mounts) {
    let tmp = tempfile::tempdir().unwrap();
    let mut mounts = Mounts::default();
    for controller in V1_CONTROLLERS {
        let root = tmp.path().join(controller);
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("cgroup.procs"), "").unwrap();
        mounts.v1.insert(controller.to_string(), root);
    }
    std::fs::write(tmp.path().join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
    std::fs::write(tmp.path().join("cpuset/cpuset.mems"), "0\n").unwrap();
    (tmp, mounts)
}

/// Writes the files the v1 kernel puts into a new cgroup that the tests rely on.
pub fn v1_kernel_files(mounts: &Mounts, path: &str) {
    let dir = |c: &str| mounts.v1[c].join(path.trim_start_matches('/'));
    let unlimited = "9223372036854771712\n";
    std::fs::write(dir("memory").join("memory.limit_in_bytes"), unlimited).unwrap();
    std::fs::write(dir("memory").join("memory.memsw.limit_in_bytes"), unlimited).unwrap();
    std::fs::write(dir("blkio").join("blkio.bfq.weight"), "100\n").unwrap();
    std::fs::write(dir("freezer").join("freezer.state"), "THAWED\n").unwrap();
}

/// The controllers a v2 stand-in root offers.
pub const V2_CONTROLLERS: &str = "cpuset cpu io memory hugetlb pids";

/// A temp dir laid out like a cgroup2 root with `controllers` available.
pub fn fake_v2_with(controllers: &str) -> (TempDir, Mounts) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::write(root.join("cgroup.controllers"), format!("{controllers}\n")).unwrap();
    std::fs::write(root.join("cgroup.subtree_control"), "").unwrap();
    std::fs::write(root.join("cgroup.procs"), "1\n").unwrap();
    let mounts = Mounts {
        v1: Default::default(),
        v2: Some(root.to_path_buf()),
    };
    (tmp, mounts)
}

/// A cgroup2 stand-in with the usual controllers.
pub fn fake_v2() -> (TempDir, Mounts) {
    fake_v2_with(V2_CONTROLLERS)
}

/// Plays the kernel's part of the v2 freezer: mirrors each `cgroup.freeze` into the
/// `frozen` line of `cgroup.events`, a little later, until dropped.
pub struct FakeFreezer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeFreezer {
    pub fn start(root: &Path) -> FakeFreezer {
        let stop = Arc::new(AtomicBool::new(false));
        let root = root.to_path_buf();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                mirror_freeze(&root);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        FakeFreezer {
            stop,
            thread: Some(thread),
        }
    }
}

fn mirror_freeze(dir: &Path) {
    if let Ok(asked) = std::fs::read_to_string(dir.join("cgroup.freeze")) {
        let events = format!("populated 0\nfrozen {}\n", asked.trim());
        if std::fs::read_to_string(dir.join("cgroup.events"))
            .ok()
            .as_deref()
            != Some(&events)
        {
            let _ = std::fs::write(dir.join("cgroup.events"), events);
        }
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            mirror_freeze(&entry.path());
        }
    }
}

impl Drop for FakeFreezer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Empties every `cgroup.procs` below `root`, as if all processes had exited.
pub fn clear_procs(root: &Path) {
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            clear_procs(&path);
        } else if path.file_name().is_some_and(|n| n == "cgroup.procs") {
            std::fs::write(&path, "").unwrap();
        }
    }
}

/// The trimmed content of a file.
pub fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Polls `check` every few milliseconds until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A real cgroup on this host, named `skiff-test-<pid>-<n>`, with the processes the test started
/// in it. Dropping it (also when the test panics) kills them and removes the cgroup.
pub struct TestCgroup {
    pub manager: Manager,
    pub name: String,
    children: Vec<Child>,
}

impl TestCgroup {
    /// Creates the cgroup; panics, saying why, on a host without v1 hierarchies.
    pub fn v1() -> Option<TestCgroup> {
        let mounts = Mounts::of_this_process().unwrap();
        if !mounts.v1.contains_key("cpu") {
            panic!(
                "these tests enforce real limits through cgroup v1, and this host mounts no v1 \
                 hierarchies; run them on a v1 or hybrid host (the v2 manager is covered by fake_v2.rs)"
            );
        }
        let name = format!(
            "skiff-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let manager = Manager::new(&mounts, &name)
            .unwrap()
            .with_timeout(Duration::from_secs(5));
        let cgroup = TestCgroup {
            manager,
            name,
            children: Vec::new(),
        };
        cgroup.manager.create().unwrap();
        Some(cgroup)
    }

    /// The directory of this cgroup in a v1 hierarchy.
    pub fn dir(&self, controller: &str) -> PathBuf {
        match &self.manager {
            Manager::V1(m) => m.dir(controller).unwrap(),
            Manager::V2(_) => panic!("not a v1 cgroup"),
        }
    }

    /// Starts `sh -c script` inside the cgroup: the shell waits on stdin until it has been
    /// moved in, so the script never runs outside. Returns the index of the child. Background
    /// jobs of the script should redirect stderr, or [`TestCgroup::wait`] waits for them too.
    pub fn spawn(&mut self, script: &str) -> usize {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("read _; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mut stdin = child.stdin.take().unwrap();
        self.children.push(child); // owned by the guard before anything can fail
        self.manager.add_process(pid).unwrap();
        use std::io::Write;
        stdin.write_all(b"go\n").unwrap();
        self.children.len() - 1
    }

    /// The pid of a child started with [`TestCgroup::spawn`].
    pub fn pid(&self, child: usize) -> i32 {
        self.children[child].id() as i32
    }

    /// Waits for a child to exit; panics after `timeout`. Returns its status and stderr.
    pub fn wait(&mut self, child: usize, timeout: Duration) -> (ExitStatus, String) {
        let process = &mut self.children[child];
        let mut status = None;
        let exited = wait_until(timeout, || {
            status = process.try_wait().unwrap();
            status.is_some()
        });
        assert!(
            exited,
            "child {} still runs after {timeout:?}",
            process.id()
        );
        let mut stderr = String::new();
        use std::io::Read;
        if let Some(mut pipe) = process.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        (status.unwrap(), stderr)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = self.manager.kill_all(Signal::SIGKILL);
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Err(err) = self.manager.destroy() {
            eprintln!("cleaning up {}: {err}", self.name);
        }
    }
}
