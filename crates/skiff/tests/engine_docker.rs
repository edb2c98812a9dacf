//! Differential test against Docker, the reference engine (root; the machines run a Docker
//! daemon): the same `run`/`exec`/`inspect --format`/`logs`/`stop`/`rm` commands through
//! `docker` and through `skiff`, on the test kit's busybox image, must print the same stdout
//! and exit with the same codes. The Docker image and containers it made are removed on drop.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output, Stdio};

use skiff_testkit::image::ImageSet;

struct Peers {
    data: tempfile::TempDir,
    docker_image: String,
    docker_containers: Vec<String>,
    _images: ImageSet,
}

impl Peers {
    fn new() -> Peers {
        let images = ImageSet::build().unwrap();
        let data = tempfile::tempdir().unwrap();
        let store = skiff_image::ImageStore::open(data.path()).unwrap();
        let name = format!("skiff-engine-diff-{}:latest", std::process::id());
        store
            .import_path(
                &images.busybox.docker_archive,
                &skiff_image::archive::ImportOptions {
                    name: Some(skiff_image::Reference::parse(&name).unwrap()),
                    ..Default::default()
                },
            )
            .unwrap();
        let archive = std::fs::File::open(&images.busybox.docker_archive).unwrap();
        let load = Command::new("docker")
            .arg("load")
            .stdin(archive)
            .output()
            .unwrap();
        assert!(load.status.success(), "docker load: {}", text(&load.stderr));
        let tag = images.busybox.archive_tag();
        assert!(
            Command::new("docker")
                .args(["tag", &tag, &name])
                .status()
                .unwrap()
                .success()
        );
        let _ = Command::new("docker").args(["rmi", &tag]).output();
        Peers {
            data,
            docker_image: name,
            docker_containers: Vec::new(),
            _images: images,
        }
    }

    fn docker(&mut self, args: &[&str]) -> Output {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                if *a == "IMAGE" {
                    self.docker_image.clone()
                } else {
                    a.to_string()
                }
            })
            .collect();
        if let Some(i) = args.iter().position(|a| a == "--name") {
            self.docker_containers.push(args[i + 1].clone());
        }
        Command::new("docker")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn skiff(&self, args: &[&str]) -> Output {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                if *a == "IMAGE" {
                    self.docker_image.clone()
                } else {
                    a.to_string()
                }
            })
            .collect();
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(&args)
            .env("SKIFF_DATA_ROOT", self.data.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs `args` through both; asserts equal stdout, exit code, and (if `stderr`) stderr.
    fn same(&mut self, args: &[&str], stderr: bool) -> String {
        let theirs = self.docker(args);
        let ours = self.skiff(args);
        assert_eq!(
            (text(&ours.stdout), ours.status.code()),
            (text(&theirs.stdout), theirs.status.code()),
            "{args:?}: skiff (left) and docker (right) differ; stderr: {} | {}",
            text(&ours.stderr),
            text(&theirs.stderr)
        );
        if stderr {
            assert_eq!(text(&ours.stderr), text(&theirs.stderr), "{args:?}: stderr");
        }
        text(&ours.stdout)
    }
}

impl Peers {
    /// Like [`same`](Self::same) for output that differs by nature (ids): equal exit codes
    /// and stdout of the same length.
    fn same_shape(&mut self, args: &[&str]) {
        let theirs = self.docker(args);
        let ours = self.skiff(args);
        assert_eq!(ours.status.code(), theirs.status.code(), "{args:?}");
        assert_eq!(ours.stdout.len(), theirs.stdout.len(), "{args:?}");
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        for name in &self.docker_containers {
            let _ = Command::new("docker").args(["rm", "-f", name]).output();
        }
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.docker_image])
            .output();
        if let Ok(engine) = skiff_engine::Engine::open(self.data.path()) {
            for container in engine.list().unwrap_or_default() {
                let _ = engine.remove(&container, true);
            }
        }
        // The containers' /proc server of this data root, and its mount.
        let _ = skiff_procfs::stop(self.data.path(), std::time::Duration::from_secs(10));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn skiff_and_docker_agree_on_the_container_commands() {
    let mut peers = Peers::new();
    let name = format!("skiff-diff-{}", std::process::id());
    let n = name.as_str();
    peers.same(
        &[
            "run",
            "--rm",
            "IMAGE",
            "sh",
            "-c",
            "echo hi; echo err >&2; exit 3",
        ],
        true,
    );
    peers.same(&["run", "--rm", "--hostname", "box", "IMAGE", "env"], false);
    peers.same(
        &[
            "run",
            "--rm",
            "--hostname",
            "box",
            "IMAGE",
            "cat",
            "/etc/hostname",
        ],
        false,
    );
    peers.same(
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "IMAGE",
            "cat",
            "/etc/hosts",
        ],
        false,
    );
    peers.same(
        &[
            "run",
            "--rm",
            "-e",
            "A=1",
            "-e",
            "PATH=/bin",
            "-w",
            "/work",
            "-u",
            "65534:65534",
            "IMAGE",
            "sh",
            "-c",
            "echo $A $PATH; pwd; id -u; id -g; echo $HOME",
        ],
        false,
    );
    peers.same(&["run", "--rm", "IMAGE", "id"], false);
    peers.same(
        &["run", "--rm", "--entrypoint", "echo", "IMAGE", "a", "b"],
        false,
    );
    peers.same(
        &["run", "--rm", "--read-only", "IMAGE", "touch", "/x"],
        false,
    );
    peers.same(&["run", "--rm", "IMAGE", "no-such-program"], false);
    peers.same(
        &[
            "run",
            "--name",
            n,
            "IMAGE",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ],
        true,
    );
    peers.same(
        &["inspect", "--format",
          "{{.State.Status}} {{.State.ExitCode}} {{.Name}} {{.Config.Cmd}} {{json .Config.Cmd}} {{.RestartCount}} {{.State.Running}} {{.HostConfig.RestartPolicy.Name}}",
          n],
        false,
    );
    peers.same(&["logs", n], true);
    // (No --tail here: which of two streams' lines Docker logs last is a race.)
    peers.same(&["rm", n], false);
    peers.same(&["inspect", "--format", "{{.Name}}", n], false);
    peers.same_shape(&["run", "-d", "--name", n, "IMAGE", "sleep", "1000"]);
    peers.same(&["exec", n, "sh", "-c", "echo in; exit 4"], true);
    peers.same(
        &[
            "exec",
            "-e",
            "X=y",
            "-w",
            "/etc",
            n,
            "sh",
            "-c",
            "echo $X; pwd",
        ],
        true,
    );
    peers.same(
        &[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.Running}}",
            n,
        ],
        false,
    );
    peers.same(&["stop", "-t", "1", n], false);
    peers.same(
        &[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}} {{.State.Pid}}",
            n,
        ],
        false,
    );
    peers.same(&["start", n], false);
    peers.same(&["kill", n], false);
    peers.same(&["rm", n], false);
    peers.same(&["rm", n], false);
}
