//! Another engine drives the runtime: podman with `--runtime PATH/skiff-runc`, on the test kit's
//! busybox image, with storage of the test's own (flags for this machine from
//! runtime-contract.md: cgroupfs, lowered ulimits, no network).

#![allow(clippy::unwrap_used)] // test code: a panic is how a test reports failure

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use skiff_testkit::image::ImageSet;
use skiff_testkit::require::require_program;

/// podman with private storage and skiff-runc as its runtime; removes every container and its
/// storage on drop.
struct Podman {
    dir: tempfile::TempDir,
    runtime: PathBuf,
}

impl Podman {
    fn new() -> Podman {
        require_program("podman", "podman").unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("skiff-runc");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_skiff"), &runtime).unwrap();
        Podman { dir, runtime }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(self.dir.path().join("storage"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
            ])
            .arg("--runtime")
            .arg(&self.runtime)
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("podman runs")
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--force", "--all", "--time", "0"]);
        let _ = self.run(&["rmi", "--all", "--force"]);
    }
}

const RUN_FLAGS: &[&str] = &[
    "--network",
    "none",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=32768:32768",
];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn load_busybox(podman: &Podman, images: &ImageSet) -> String {
    let archive: &Path = &images.busybox.docker_archive;
    let out = podman.run(&["load", "--input", archive.to_str().unwrap()]);
    assert!(out.status.success(), "podman load: {}", text(&out.stderr));
    images.busybox.archive_tag()
}

#[test]
fn podman_runs_containers_through_skiff_runc() {
    let images = ImageSet::build().unwrap();
    let podman = Podman::new();
    let image = load_busybox(&podman, &images);

    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(RUN_FLAGS);
    args.extend_from_slice(&[
        &image,
        "sh",
        "-c",
        "echo hello from $(hostname | cut -c1-3)...; exit 42",
    ]);
    let out = podman.run(&args);
    assert_eq!(out.status.code(), Some(42), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("hello from "),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn podman_detaches_execs_and_stops_through_skiff_runc() {
    let images = ImageSet::build().unwrap();
    let podman = Podman::new();
    let image = load_busybox(&podman, &images);

    let mut args = vec!["run", "--detach", "--name", "long"];
    args.extend_from_slice(RUN_FLAGS);
    args.extend_from_slice(&[&image, "sleep", "300"]);
    let out = podman.run(&args);
    assert!(out.status.success(), "run -d: {}", text(&out.stderr));

    let out = podman.run(&[
        "exec",
        "long",
        "sh",
        "-c",
        "echo exec-ok; cat /proc/1/cmdline",
    ]);
    assert!(out.status.success(), "exec: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("exec-ok\nsleep"),
        "{}",
        text(&out.stdout)
    );

    let out = podman.run(&["exec", "--tty", "long", "tty"]);
    assert_eq!(
        text(&out.stdout).trim(),
        "/dev/pts/0",
        "exec -t: {}",
        text(&out.stderr)
    );

    let out = podman.run(&["inspect", "--format", "{{.Name}} {{.State.Status}}", "long"]);
    assert_eq!(
        text(&out.stdout).trim(),
        "long running",
        "{}",
        text(&out.stderr)
    );

    let out = podman.run(&["stop", "--time", "1", "long"]);
    assert!(out.status.success(), "stop: {}", text(&out.stderr));
    let out = podman.run(&["rm", "long"]);
    assert!(out.status.success(), "rm: {}", text(&out.stderr));
}
