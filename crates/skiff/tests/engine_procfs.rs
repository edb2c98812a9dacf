//! The container's own `/proc` figures (root; CI runs as root; needs `/dev/fuse`): `free -m`
//! under `-m 256m` shows a total of 256 (procps, which reads `/proc/meminfo`, and busybox,
//! which asks `sysinfo(2)`: the server's seccomp agent answers), `--cpus 1` gives one
//! processor in `/proc/cpuinfo`, `/sys/devices/system/cpu/online` and `nproc`, `/proc/uptime`
//! and `uptime` start near 0, the cgroup namespace shows the container's own read-only
//! cgroup, `--no-procfs` keeps the host's files, and the data root's `/proc` server leaves by
//! itself once idle. Every test removes its
//! containers and stops the server and its mount on drop (the shared `Skiff` guard), also
//! when it fails.
#![allow(clippy::unwrap_used)]

mod engine_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use engine_support::{IMAGE, Skiff, text};
use skiff_testkit::wait::wait_for;

/// Fails, saying what is missing, where the view cannot work.
fn require_fuse() {
    assert!(
        std::path::Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: load the fuse module (modprobe fuse) to run these tests"
    );
}

/// The first number of the line starting with `label` in `free` output.
fn free_total(out: &str, label: &str) -> u64 {
    out.lines()
        .find(|l| l.starts_with(label))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {label} total in:\n{out}"))
}

fn host_cpus() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
}

/// Runs procps' `free -m` (the one Debian and Ubuntu images have, which reads
/// `/proc/meminfo`) from the host's `/usr`, bind-mounted read-only into the busybox image.
fn procps_free(skiff: &Skiff, extra: &[&str]) -> String {
    assert!(
        std::path::Path::new("/usr/bin/free").exists()
            && std::path::Path::new("/usr/lib64").exists(),
        "/usr/bin/free (Debian package procps) is missing: install it to run this test"
    );
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "-v",
        "/usr:/usr:ro",
        "-v",
        "/usr/lib:/lib:ro",
        "-v",
        "/usr/lib64:/lib64:ro",
        IMAGE,
        "/usr/bin/free",
        "-m",
    ]);
    skiff.ok(&args)
}

#[test]
fn free_shows_the_memory_limit_as_the_total() {
    require_fuse();
    let skiff = Skiff::new();
    let out = procps_free(&skiff, &["-m", "256m"]);
    assert_eq!(free_total(&out, "Mem:"), 256, "{out}");
    let used: u64 = out
        .lines()
        .find(|l| l.starts_with("Mem:"))
        .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
        .unwrap();
    assert!(used < 256, "{out}");
    // busybox reads the same file in `top`: used + free is the limit.
    let out = skiff.ok(&[
        "run",
        "--rm",
        "-m",
        "256m",
        IMAGE,
        "sh",
        "-c",
        "grep MemTotal /proc/meminfo; top -bn1 | head -n1",
    ]);
    assert!(out.starts_with("MemTotal:         262144 kB\n"), "{out}");
    let kib: Vec<u64> = out
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .filter_map(|w| w.strip_suffix('K')?.parse().ok())
        .collect();
    assert_eq!(kib[0] + kib[1], 262_144, "top's used + free: {out}");
    // Not only root reads them.
    let out = skiff.ok(&[
        "run",
        "--rm",
        "-u",
        "1000",
        "-m",
        "256m",
        IMAGE,
        "grep",
        "MemTotal",
        "/proc/meminfo",
    ]);
    assert_eq!(out, "MemTotal:         262144 kB\n");
    // The server is a process of its own, mounted under the data root.
    assert!(skiff_procfs::is_served(skiff.data.path()));
}

/// The host's memory in MiB as `sysinfo(2)` gives it (what busybox `free -m` shows).
fn host_total_mib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib / 1024
}

#[test]
fn busybox_free_asks_the_kernel_and_sees_the_limit_too() {
    require_fuse();
    let skiff = Skiff::new();
    // busybox `free` calls sysinfo(2): the notify rule sends it to the server's agent.
    let out = skiff.ok(&["run", "--rm", "-m", "256m", IMAGE, "free", "-m"]);
    assert_eq!(free_total(&out, "Mem:"), 256, "{out}");
    let free: u64 = out
        .lines()
        .find(|l| l.starts_with("Mem:"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap();
    assert!(free > 0 && free <= 256, "{out}");
    // Not only root, and not only under the default profile.
    for extra in [
        &["-u", "1000"][..],
        &["--security-opt", "seccomp=unconfined"],
    ] {
        let mut args = vec!["run", "--rm", "-m", "256m"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "free", "-m"]);
        let out = skiff.ok(&args);
        assert_eq!(free_total(&out, "Mem:"), 256, "{extra:?}: {out}");
    }
    // An exec'd process gets a listener of its own.
    let id = skiff.ok(&["run", "-d", "-m", "256m", IMAGE, "sleep", "1000"]);
    let out = skiff.ok(&["exec", id.trim(), "free", "-m"]);
    assert_eq!(free_total(&out, "Mem:"), 256, "exec: {out}");
    skiff.ok(&["rm", "-f", id.trim()]);
    // --no-procfs: the kernel's own answer, the host's memory.
    let out = skiff.ok(&[
        "run",
        "--rm",
        "--no-procfs",
        "-m",
        "256m",
        IMAGE,
        "free",
        "-m",
    ]);
    // busybox rounds to the nearest MiB, /proc/meminfo's kB truncate here: within one.
    assert!(
        free_total(&out, "Mem:").abs_diff(host_total_mib()) <= 1,
        "host total {} MiB: {out}",
        host_total_mib()
    );
}

#[test]
fn busybox_uptime_asks_the_kernel_and_sees_a_fresh_container() {
    require_fuse();
    let skiff = Skiff::new();
    let host_uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        host_uptime > 120.0,
        "the host booted {host_uptime} s ago: too recently to tell a container's uptime from it"
    );
    // busybox `uptime` takes the time and the loads from sysinfo(2).
    let out = skiff.ok(&["run", "--rm", IMAGE, "uptime"]);
    assert!(out.contains(" up 0 min"), "{out}");
    assert!(out.contains("load average: 0.00, 0.00, 0.00"), "{out}");
    let out = skiff.ok(&["run", "--rm", "--no-procfs", IMAGE, "uptime"]);
    assert!(!out.contains(" up 0 min"), "{out}");
}

#[test]
fn the_cgroup_namespace_shows_the_containers_own_read_only_cgroup() {
    require_fuse();
    let skiff = Skiff::new();
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let limit = if v2 {
        "/sys/fs/cgroup/memory.max"
    } else {
        "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    };
    let script = format!("cat /proc/self/cgroup; cat {limit}; echo 1 > {limit}; echo rc=$?");
    let out = skiff.run(&["run", "--rm", "-m", "256m", IMAGE, "sh", "-c", &script]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    let mut lines = stdout.lines().peekable();
    let mut cgroup_lines = 0;
    while let Some(line) = lines.next_if(|l| l.contains(':') && !l.starts_with("rc=")) {
        assert!(
            line.ends_with(":/"),
            "not the namespace's root: {line}\n{stdout}"
        );
        cgroup_lines += 1;
    }
    assert!(cgroup_lines > 0, "{stdout}");
    assert_eq!(lines.next(), Some("268435456"), "{stdout}");
    assert_eq!(lines.next(), Some("rc=1"), "{stdout}");
    assert!(stderr.contains("Read-only file system"), "{stderr}");
}

#[test]
fn one_cpu_of_quota_shows_one_processor_and_nproc_one() {
    require_fuse();
    let skiff = Skiff::new();
    let script = "grep -c ^processor /proc/cpuinfo; nproc; grep -c '^cpu[0-9]' /proc/stat; \
                  cat /sys/devices/system/cpu/online";
    let out = skiff.ok(&["run", "--rm", "--cpus", "1", IMAGE, "sh", "-c", script]);
    assert_eq!(out, "1\n1\n1\n0\n", "cpuinfo, nproc, stat, online");
    // Without a quota: the host's CPUs.
    let out = skiff.ok(&["run", "--rm", IMAGE, "sh", "-c", script]);
    let n = host_cpus();
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    assert_eq!(
        out,
        format!("{n}\n{n}\n{n}\n{online}"),
        "cpuinfo, nproc, stat, online"
    );
}

#[test]
fn uptime_and_load_are_the_containers() {
    require_fuse();
    let skiff = Skiff::new();
    let out = skiff.ok(&[
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "cat /proc/uptime /proc/loadavg; head -n1 /proc/stat",
    ]);
    let mut lines = out.lines();
    let uptime: f64 = lines
        .next()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no uptime in {out}"));
    assert!(uptime < 10.0, "a new container's uptime: {out}");
    let host_uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(host_uptime > uptime, "host {host_uptime}, container {out}");
    let load: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(load.len(), 5, "{out}");
    assert!(load[3].contains('/'), "{out}");
    assert!(lines.next().unwrap().starts_with("cpu "), "{out}");
}

#[test]
fn no_procfs_keeps_the_hosts_files() {
    require_fuse();
    let skiff = Skiff::new();
    let out = procps_free(&skiff, &["--no-procfs", "-m", "256m"]);
    let host = Command::new("/usr/bin/free").arg("-m").output().unwrap();
    assert_eq!(
        free_total(&out, "Mem:"),
        free_total(&text(&host.stdout), "Mem:")
    );
    // No container asked for the view: no server was started.
    assert!(!skiff_procfs::client::is_mounted(skiff.data.path()));
}

#[test]
fn the_server_unmounts_and_leaves_once_no_container_uses_it() {
    require_fuse();
    let skiff = Skiff::new();
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["run", "-d", "-m", "64m", IMAGE, "sleep", "1000"])
        .env("SKIFF_DATA_ROOT", skiff.data.path())
        .env("SKIFF_PROCFS_IDLE", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let data = skiff.data.path();
    let pid_file = skiff_procfs::ProcfsDir::new(data).pid_file();
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // While the container runs, the idle time passes and the server stays.
    let meminfo = skiff.ok(&["exec", &id, "cat", "/proc/meminfo"]);
    assert!(meminfo.contains("MemTotal:          65536 kB"), "{meminfo}");
    std::thread::sleep(Duration::from_secs(3)); // three idle periods, not a synchronisation
    assert!(
        skiff_procfs::is_served(data),
        "the server left under a running container"
    );
    skiff.ok(&["rm", "-f", &id]);
    wait_for("the idle server to leave", Duration::from_secs(20), || {
        let gone = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit(')')
                .next()
                .unwrap()
                .trim_start()
                .starts_with('Z')
        });
        (gone && !skiff_procfs::client::is_mounted(data)).then_some(())
    })
    .unwrap();
    assert!(!pid_file.exists());
}

#[test]
fn a_server_that_cannot_start_leaves_the_hosts_files_and_one_warning() {
    require_fuse();
    let skiff = Skiff::new();
    // A file where the mount point should be: the server fails to mount.
    let dir = skiff_procfs::ProcfsDir::new(skiff.data.path());
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(dir.mount_point(), "in the way").unwrap();
    let out = skiff.ok(&[
        "run",
        "--name",
        "first",
        "-m",
        "256m",
        IMAGE,
        "grep",
        "MemTotal",
        "/proc/meminfo",
    ]);
    let host = std::fs::read_to_string("/proc/meminfo").unwrap();
    assert_eq!(out.trim(), host.lines().next().unwrap().trim(), "{out}");
    let id = skiff.format("first", "{{.Id}}");
    let log = std::fs::read_to_string(
        skiff
            .data
            .path()
            .join("containers")
            .join(&id)
            .join("shim.log"),
    )
    .unwrap();
    assert!(log.contains("see the host's /proc files"), "{log}");
    assert!(dir.path().join("unavailable").exists());
    // The next container does not try again (no second warning) and starts as well.
    skiff.ok(&["run", "--name", "second", IMAGE, "true"]);
    let id = skiff.format("second", "{{.Id}}");
    let log = std::fs::read_to_string(
        skiff
            .data
            .path()
            .join("containers")
            .join(&id)
            .join("shim.log"),
    )
    .unwrap_or_default();
    assert!(!log.contains("/proc files"), "{log}");
}
