//! The OCI runtime for real, as root, through the command line engines use
//! (`skiff runtime ...`, the same code as `skiff-runc`), on bundles made from the test kit's
//! busybox image.

#![allow(clippy::unwrap_used)] // test code: a panic is how a test reports failure

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};
use skiff_testkit::image::ImageSet;

fn skiff() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skiff"))
}

/// A bundle (busybox rootfs + config.json), a private runtime root, and the ids it created;
/// every container is force-deleted on drop, also when the test panics.
struct Bundle {
    dir: tempfile::TempDir,
    root: tempfile::TempDir,
    ids: std::cell::RefCell<Vec<String>>,
}

impl Bundle {
    fn new(args: &[&str], edit: impl FnOnce(&mut Value)) -> Bundle {
        let images = ImageSet::build().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap();
        images
            .busybox
            .unpack_into(&dir.path().join("rootfs"))
            .unwrap_or_else(|e| panic!("{e}"));
        let root = tempfile::tempdir().unwrap();
        let bundle = Bundle {
            dir,
            root,
            ids: Default::default(),
        };
        let out = bundle.runtime(&["spec", "--bundle", bundle.path().to_str().unwrap()]);
        assert!(out.status.success(), "spec: {}", text(&out.stderr));
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(bundle.config_path()).unwrap()).unwrap();
        config["process"]["args"] = json!(args);
        edit(&mut config);
        std::fs::write(bundle.config_path(), config.to_string()).unwrap();
        bundle
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    fn runtime(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(skiff());
        cmd.arg("runtime")
            .arg("--root")
            .arg(self.root.path())
            .args(args);
        cmd.output().expect("skiff runs")
    }

    /// Runs a runtime command whose container outlives it (`create`, `run --detach`): the
    /// container inherits stdio, so it gets files rather than the test's pipes (which would
    /// keep `output()` waiting until the container exits). Returns success and stderr.
    fn runtime_detached(&self, args: &[&str]) -> (bool, String) {
        let stderr_path = self
            .path()
            .join(format!("stderr-{}", self.ids.borrow().len()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let status = Command::new(skiff())
            .arg("runtime")
            .arg("--root")
            .arg(self.root.path())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .status()
            .expect("skiff runs");
        (
            status.success(),
            std::fs::read_to_string(&stderr_path).unwrap_or_default(),
        )
    }

    /// A unique id for this test process, remembered for cleanup.
    fn id(&self, name: &str) -> String {
        let id = format!("{name}-{}", std::process::id());
        self.ids.borrow_mut().push(id.clone());
        id
    }

    fn run(&self, name: &str) -> Output {
        let id = self.id(name);
        self.runtime(&["run", "--bundle", self.path().to_str().unwrap(), &id])
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        for id in self.ids.borrow().iter() {
            let _ = self.runtime(&["delete", "--force", id]);
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn status_of(bundle: &Bundle, id: &str) -> String {
    let out = bundle.runtime(&["state", id]);
    assert!(out.status.success(), "state: {}", text(&out.stderr));
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    state["status"].as_str().unwrap().to_string()
}

#[test]
fn run_gives_pid_1_a_hostname_and_the_exit_code() {
    let bundle = Bundle::new(&["sh", "-c", "echo pid=$$ host=$(hostname); exit 3"], |c| {
        c["hostname"] = json!("box")
    });
    let out = bundle.run("exitcode");
    assert_eq!(
        text(&out.stdout).trim(),
        "pid=1 host=box",
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn the_lifecycle_goes_created_running_paused_stopped_deleted() {
    let bundle = Bundle::new(&["sleep", "60"], |_| {});
    let id = bundle.id("life");
    let pid_file = bundle.path().join("init.pid");
    let (ok, stderr) = bundle.runtime_detached(&[
        "create",
        "--bundle",
        bundle.path().to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);
    assert!(ok, "create: {stderr}");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(status_of(&bundle, &id), "created");
    // The process waits for start: it is still the runtime's init, not sleep.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!text(&cmdline).contains("sleep"), "{}", text(&cmdline));

    assert!(bundle.runtime(&["start", &id]).status.success());
    assert_eq!(status_of(&bundle, &id), "running");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(text(&cmdline).starts_with("sleep"), "{}", text(&cmdline));

    assert!(bundle.runtime(&["pause", &id]).status.success());
    assert_eq!(status_of(&bundle, &id), "paused");
    assert!(bundle.runtime(&["resume", &id]).status.success());
    assert_eq!(status_of(&bundle, &id), "running");

    let refused = bundle.runtime(&["delete", &id]);
    assert!(
        !refused.status.success(),
        "deleting a running container needs --force"
    );

    assert!(bundle.runtime(&["kill", &id, "KILL"]).status.success());
    skiff_testkit::wait::wait_for(
        "the container to stop",
        std::time::Duration::from_secs(10),
        || (status_of(&bundle, &id) == "stopped").then_some(()),
    )
    .unwrap();
    let out = bundle.runtime(&["delete", &id]);
    assert!(out.status.success(), "delete: {}", text(&out.stderr));
    let out = bundle.runtime(&["state", &id]);
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn list_shows_containers_as_json_and_table() {
    let bundle = Bundle::new(&["sleep", "60"], |_| {});
    let id = bundle.id("listed");
    let (ok, stderr) = bundle.runtime_detached(&[
        "run",
        "--detach",
        "--bundle",
        bundle.path().to_str().unwrap(),
        &id,
    ]);
    assert!(ok, "run --detach: {stderr}");
    let out = bundle.runtime(&["list", "--format", "json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["status"], "running");
    let table = text(&bundle.runtime(&["list"]).stdout);
    assert!(table.contains(&id) && table.contains("running"), "{table}");
    assert!(bundle.runtime(&["delete", "--force", &id]).status.success());
}

#[test]
fn bad_input_gets_a_clear_error_and_leaves_nothing_behind() {
    let bundle = Bundle::new(&["no-such-program"], |_| {});
    let id = bundle.id("broken");
    let out = bundle.runtime(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("executable file not found"),
        "{}",
        text(&out.stderr)
    );
    assert!(!bundle.root.path().join(&id).exists(), "state left behind");
    assert!(
        !Path::new(&format!("/sys/fs/cgroup/pids/skiff/{id}")).exists(),
        "cgroup left behind"
    );

    let mut config: Value =
        serde_json::from_slice(&std::fs::read(bundle.config_path()).unwrap()).unwrap();
    config["process"]["args"] = json!(5);
    std::fs::write(bundle.config_path(), config.to_string()).unwrap();
    let log = bundle.path().join("runtime.log");
    let out = bundle.runtime(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "create",
        "--bundle",
        bundle.path().to_str().unwrap(),
        &id,
    ]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("config.json: process.args: invalid type"),
        "{stderr}"
    );
    // Engines read the reason from the log: one JSON line per error.
    let logged = std::fs::read_to_string(&log).unwrap();
    let line: Value = serde_json::from_str(logged.lines().last().unwrap()).unwrap();
    assert_eq!(line["level"], "error");
    assert!(
        line["msg"].as_str().unwrap().contains("process.args"),
        "{line}"
    );

    config["process"]["args"] = json!(["sh"]);
    config["root"]["path"] = json!("missing-rootfs");
    std::fs::write(bundle.config_path(), config.to_string()).unwrap();
    let out = bundle.runtime(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(
        text(&out.stderr).contains("missing-rootfs does not exist"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_root_is_read_only_and_sensitive_proc_files_are_masked() {
    let script = "touch /x 2>/dev/null && echo root-writable; \
                  echo interrupts=$(wc -c < /proc/interrupts); \
                  echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo sys-writable; \
                  touch /tmp/ok 2>/dev/null || echo tmp-readonly; echo done";
    let bundle = Bundle::new(&["sh", "-c", script], |_| {});
    let out = bundle.run("readonly");
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("root-writable"), "{stdout}");
    assert!(stdout.contains("interrupts=0"), "{stdout}");
    assert!(!stdout.contains("sys-writable"), "{stdout}");
    assert!(stdout.contains("done"), "{stdout} {}", text(&out.stderr));
}

#[test]
fn a_new_network_namespace_has_only_loopback() {
    let bundle = Bundle::new(&["sh", "-c", "cat /proc/net/dev"], |_| {});
    let out = bundle.run("netns");
    let devices = text(&out.stdout);
    assert!(devices.contains("lo:"), "{devices}");
    assert_eq!(
        devices.lines().count(),
        3,
        "only the two header lines and lo: {devices}"
    );
}

#[test]
fn a_container_joins_an_existing_network_namespace_by_path() {
    let name = format!("skiff-rt-{}", std::process::id());
    let ip = |args: &[&str]| Command::new("ip").args(args).output().unwrap();
    assert!(ip(&["netns", "add", &name]).status.success());
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
        }
    }
    let _gone = Gone(name.clone());
    let out = ip(&[
        "-n", &name, "link", "add", "skiffv0", "type", "veth", "peer", "name", "skiffv1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let path = format!("/run/netns/{name}");
    let bundle = Bundle::new(&["sh", "-c", "cat /proc/net/dev"], |c| {
        let namespaces = c["linux"]["namespaces"].as_array_mut().unwrap();
        for ns in namespaces.iter_mut() {
            if ns["type"] == "network" {
                ns["path"] = json!(path);
            }
        }
    });
    let out = bundle.run("joinnet");
    assert!(
        text(&out.stdout).contains("skiffv0"),
        "{} {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn a_user_namespace_maps_root_to_an_unprivileged_host_range() {
    let bundle = Bundle::new(&["sh", "-c", "cat /proc/self/uid_map; id -u"], |c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        // cgroupfs cannot be mounted from a user namespace of one's own on a v1 host.
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["type"] != "cgroup");
    });
    let out = bundle.run("userns");
    let stdout = text(&out.stdout);
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(
        fields,
        ["0", "100000", "65536", "0"],
        "{stdout} {}",
        text(&out.stderr)
    );
}

#[test]
fn no_descriptor_of_the_runtime_leaks_into_the_container() {
    let bundle = Bundle::new(&["sh", "-c", "ls /proc/self/fd"], |_| {});
    let id = bundle.id("fds");
    // fd 7 is open (and inheritable) in the runtime process that creates the container.
    let script = format!(
        "exec 7</etc/hostname; exec {} runtime --root {} run --bundle {} {id}",
        skiff().display(),
        bundle.root.path().display(),
        bundle.path().display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    let fds: Vec<&str> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .split_whitespace()
        .collect();
    // 0-2 are stdio and 3 is the directory ls reads; nothing else.
    assert_eq!(fds, ["0", "1", "2", "3"], "stderr: {}", text(&out.stderr));
}

#[test]
fn a_symlink_in_the_rootfs_cannot_redirect_a_mount_onto_a_host_path() {
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("secret"), "host data").unwrap();
    let host_path = host_dir.path().to_str().unwrap().to_string();
    let bundle = Bundle::new(&["sh", "-c", "ls /escape; echo listed"], |c| {
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/escape", "type": "tmpfs", "source": "tmpfs"}));
    });
    // The image says /escape is the host directory.
    std::os::unix::fs::symlink(&host_path, bundle.path().join("rootfs/escape")).unwrap();
    let out = bundle.run("symlink");
    assert!(
        text(&out.stdout).contains("listed"),
        "{} {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        !text(&out.stdout).contains("secret"),
        "the host directory was reachable"
    );
    // The mount landed inside the rootfs, at the link's target resolved there.
    assert!(
        bundle
            .path()
            .join("rootfs")
            .join(host_path.trim_start_matches('/'))
            .is_dir()
    );
}

#[test]
fn cgroup_limits_from_config_are_applied_and_enforced() {
    let script = "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/memory/memory.limit_in_bytes";
    let bundle = Bundle::new(&["sh", "-c", script], |c| {
        c["linux"]["resources"]["pids"] = json!({"limit": 32});
        c["linux"]["resources"]["memory"] = json!({"limit": 64 * 1024 * 1024});
    });
    let out = bundle.run("limits");
    let values: Vec<&str> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(values, ["32", "67108864"], "stderr: {}", text(&out.stderr));

    // Growing past the memory limit gets the process OOM-killed (SIGKILL: 128 + 9).
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(bundle.config_path()).unwrap()).unwrap();
    config["process"]["args"] = json!(["sh", "-c", "x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done"]);
    std::fs::write(bundle.config_path(), config.to_string()).unwrap();
    let out = bundle.run("oom");
    assert_eq!(
        out.status.code(),
        Some(137),
        "stderr: {}",
        text(&out.stderr)
    );
}

#[test]
fn no_pivot_uses_chroot_and_still_runs() {
    let bundle = Bundle::new(&["sh", "-c", "echo chrooted"], |_| {});
    let id = bundle.id("nopivot");
    let out = bundle.runtime(&[
        "run",
        "--no-pivot",
        "--bundle",
        bundle.path().to_str().unwrap(),
        &id,
    ]);
    assert_eq!(
        text(&out.stdout).trim(),
        "chrooted",
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_default_capabilities_are_the_docker_set() {
    let bundle = Bundle::new(
        &[
            "sh",
            "-c",
            "grep -E '^Cap(Eff|Bnd|Prm|Amb)' /proc/self/status",
        ],
        |_| {},
    );
    let out = bundle.run("caps");
    let stdout = text(&out.stdout);
    // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW
    // SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP
    for set in ["CapEff", "CapBnd", "CapPrm"] {
        assert!(
            stdout.contains(&format!("{set}:\t00000000a80425fb")),
            "{set}: {stdout} {}",
            text(&out.stderr)
        );
    }
    assert!(stdout.contains("CapAmb:\t0000000000000000"), "{stdout}");
}

#[test]
fn effective_capabilities_outside_permitted_are_refused_at_create() {
    let bundle = Bundle::new(&["true"], |c| {
        c["process"]["capabilities"]["effective"]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_SYS_ADMIN"));
    });
    let out = bundle.run("badcaps");
    assert!(
        text(&out.stderr).contains("process.capabilities.effective"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn exec_joins_the_running_container() {
    let bundle = Bundle::new(&["sleep", "60"], |c| c["hostname"] = json!("execbox"));
    let id = bundle.id("exec");
    let (ok, stderr) = bundle.runtime_detached(&[
        "run",
        "--detach",
        "--bundle",
        bundle.path().to_str().unwrap(),
        &id,
    ]);
    assert!(ok, "{stderr}");
    let out = bundle.runtime(&[
        "exec",
        &id,
        "sh",
        "-c",
        "hostname; cat /proc/1/cmdline; echo; exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("execbox\nsleep"), "{stdout}");

    let out = bundle.runtime(&[
        "exec",
        "--user",
        "1000:1000",
        "--env",
        "GREETING=hi",
        &id,
        "sh",
        "-c",
        "echo $(id -u):$(id -g) $GREETING",
    ]);
    assert_eq!(
        text(&out.stdout).trim(),
        "1000:1000 hi",
        "{}",
        text(&out.stderr)
    );

    let out = bundle.runtime(&["exec", &id, "no-such-program"]);
    assert!(
        text(&out.stderr).contains("executable file not found"),
        "{}",
        text(&out.stderr)
    );

    // ps sees the init; update changes a limit of the running container.
    let out = bundle.runtime(&["ps", "--format", "json", &id]);
    let pids: Vec<i32> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pids.len(), 1, "{pids:?}");
    let resources = bundle.path().join("resources.json");
    std::fs::write(&resources, r#"{"pids": {"limit": 77}}"#).unwrap();
    assert!(
        bundle
            .runtime(&["update", "--resources", resources.to_str().unwrap(), &id])
            .status
            .success()
    );
    let out = bundle.runtime(&["exec", &id, "cat", "/sys/fs/cgroup/pids/pids.max"]);
    assert_eq!(text(&out.stdout).trim(), "77");

    assert!(
        bundle
            .runtime(&["kill", "--all", &id, "KILL"])
            .status
            .success()
    );
    skiff_testkit::wait::wait_for(
        "the container to stop",
        std::time::Duration::from_secs(10),
        || (status_of(&bundle, &id) == "stopped").then_some(()),
    )
    .unwrap();
}

#[test]
fn hooks_run_at_their_lifecycle_points_with_the_state() {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("hooks.log");
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("read -r state; echo {name} \"$state\" >> {}", log.display())]});
    let bundle = Bundle::new(&["true"], |c| {
        c["hooks"] = json!({
            "createRuntime": [hook("createRuntime")],
            "poststart": [hook("poststart")],
            "poststop": [hook("poststop")],
        });
    });
    let out = bundle.run("hooks");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let names: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        names,
        ["createRuntime", "poststart", "poststop"],
        "{lines:?}"
    );
    let state: Value = serde_json::from_str(lines[0].split_once(' ').unwrap().1).unwrap();
    assert_eq!(state["status"], "creating");
    assert!(state["pid"].as_i64().unwrap() > 0);

    // A failing createRuntime hook fails create and leaves nothing behind.
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(bundle.config_path()).unwrap()).unwrap();
    config["hooks"] = json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo no >&2; exit 3"]}]});
    std::fs::write(bundle.config_path(), config.to_string()).unwrap();
    let id = bundle.id("hookfail");
    let out = bundle.runtime(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("createRuntime hook"),
        "{}",
        text(&out.stderr)
    );
    assert!(!bundle.root.path().join(&id).exists());
}

#[test]
fn the_runtime_binary_cannot_be_executed_inside_the_container() {
    // CVE-2019-5736: an image whose entrypoint is `#!/proc/self/exe` would make the runtime
    // execute itself as a container process, whose /proc/PID/exe the container could then
    // reopen for writing and overwrite the host binary.
    let bundle = Bundle::new(&["/evil"], |_| {});
    let evil = bundle.path().join("rootfs/evil");
    std::fs::write(&evil, "#!/proc/self/exe\n").unwrap();
    std::fs::set_permissions(&evil, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = bundle.run("cve");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("CVE-2019-5736"),
        "{}",
        text(&out.stderr)
    );

    let mut config: Value =
        serde_json::from_slice(&std::fs::read(bundle.config_path()).unwrap()).unwrap();
    config["process"]["args"] = json!(["sleep", "60"]);
    std::fs::write(bundle.config_path(), config.to_string()).unwrap();
    let id = bundle.id("cve-exec");
    let (ok, stderr) = bundle.runtime_detached(&[
        "run",
        "--detach",
        "--bundle",
        bundle.path().to_str().unwrap(),
        &id,
    ]);
    assert!(ok, "{stderr}");
    let out = bundle.runtime(&["exec", &id, "/evil"]);
    assert!(
        text(&out.stderr).contains("CVE-2019-5736"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn features_describe_what_the_runtime_supports() {
    let bundle = Bundle::new(&["true"], |_| {});
    let out = bundle.runtime(&["features"]);
    let features: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(features["ociVersionMax"], "1.2.0");
    assert!(
        features["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .contains(&json!("user"))
    );
    assert!(
        features["linux"]["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("CAP_SYS_ADMIN"))
    );
    assert_eq!(features["linux"]["cgroup"]["systemd"], false);
}

#[test]
fn a_terminal_is_handed_over_the_console_socket() {
    let bundle = Bundle::new(&["sh"], |c| c["process"]["terminal"] = json!(true));
    let socket = bundle.path().join("console.sock");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console_socket.py");
    let mut server = Command::new("python3")
        .arg(&script)
        .arg(&socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (installed by make deps)");
    skiff_testkit::wait::wait_for(
        "the console socket",
        std::time::Duration::from_secs(10),
        || socket.exists().then_some(()),
    )
    .unwrap();
    let id = bundle.id("tty");
    let (ok, stderr) = bundle.runtime_detached(&[
        "create",
        "--bundle",
        bundle.path().to_str().unwrap(),
        "--console-socket",
        socket.to_str().unwrap(),
        &id,
    ]);
    assert!(ok, "create: {stderr}");
    assert!(bundle.runtime(&["start", &id]).status.success());
    let mut output = String::new();
    std::io::Read::read_to_string(server.stdout.as_mut().unwrap(), &mut output).unwrap();
    let _ = server.wait();
    assert!(output.contains("name=/dev/ptmx"), "{output}");
    assert!(
        output.contains("/dev/pts/0"),
        "the shell's stdin is the terminal: {output}"
    );
    assert!(output.contains("hello-42"), "{output}");
}

#[test]
fn preserved_descriptors_reach_the_process() {
    let bundle = Bundle::new(&["sh", "-c", "cat <&3"], |_| {});
    let id = bundle.id("preserve");
    let script = format!(
        "exec 3</etc/hostname; exec {} runtime --root {} run --preserve-fds 1 --bundle {} {id}",
        skiff().display(),
        bundle.root.path().display(),
        bundle.path().display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    let host = std::fs::read_to_string("/etc/hostname").unwrap();
    assert_eq!(text(&out.stdout), host, "stderr: {}", text(&out.stderr));
}

#[test]
fn a_working_directory_through_a_leaked_host_descriptor_is_refused() {
    // CVE-2024-21626: cwd set to /proc/self/fd/N, N a host directory the runtime had open,
    // would start the process outside the container's root.
    let bundle = Bundle::new(&["pwd"], |c| c["process"]["cwd"] = json!("/proc/self/fd/7"));
    let id = bundle.id("leakcwd");
    let script = format!(
        "exec 7</tmp; exec {} runtime --root {} run --bundle {} {id}",
        skiff().display(),
        bundle.root.path().display(),
        bundle.path().display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(!out.status.success(), "ran with cwd {}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("outside the container's root"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_seccomp_profile_from_config_is_enforced() {
    // Refuse mkdir and mkdirat with EACCES, allow everything else.
    let bundle = Bundle::new(
        &[
            "sh",
            "-c",
            "grep Seccomp: /proc/self/status; mkdir /dev/shm/x && echo made",
        ],
        |c| {
            c["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
            });
        },
    );
    let out = bundle.run("seccomp");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("Seccomp:\t2"),
        "{stdout} {}",
        text(&out.stderr)
    );
    assert!(!stdout.contains("made"), "{stdout}");
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_default_seccomp_profile_refuses_namespaces_and_keeps_ordinary_work() {
    let profile = skiff_runtime::seccomp::default_profile();
    let script = "echo ok > /dev/shm/f && cat /dev/shm/f; unshare -U true 2>&1 || echo unshare-refused; \
                  sh -c 'echo child' ; grep Seccomp: /proc/self/status";
    // Control: without the profile the same container may make a user namespace.
    let control = Bundle::new(&["sh", "-c", script], |_| {});
    let out = control.run("seccomp-control");
    assert!(
        !text(&out.stdout).contains("unshare-refused"),
        "{}",
        text(&out.stdout)
    );
    let bundle = Bundle::new(&["sh", "-c", script], |c| {
        c["linux"]["seccomp"] = profile.clone()
    });
    let out = bundle.run("seccomp-default");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("ok\n"), "{stdout} {}", text(&out.stderr));
    assert!(stdout.contains("unshare-refused"), "{stdout}");
    assert!(stdout.contains("child"), "{stdout}");
    assert!(stdout.contains("Seccomp:\t2"), "{stdout}");

    // An exec'd process gets the same filter.
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(bundle.config_path()).unwrap()).unwrap();
    config["process"]["args"] = json!(["sleep", "60"]);
    std::fs::write(bundle.config_path(), config.to_string()).unwrap();
    let id = bundle.id("seccomp-exec");
    let (ok, stderr) = bundle.runtime_detached(&[
        "run",
        "--detach",
        "--bundle",
        bundle.path().to_str().unwrap(),
        &id,
    ]);
    assert!(ok, "{stderr}");
    let out = bundle.runtime(&["exec", &id, "sh", "-c", "unshare -U true || echo refused"]);
    assert!(
        text(&out.stdout).contains("refused"),
        "{} {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn process_settings_from_config_reach_the_process() {
    let script = "cat /proc/sys/net/ipv4/ip_forward; ulimit -n; umask; cat /proc/self/oom_score_adj; \
                  cat /proc/sys/kernel/domainname; id -G; pwd";
    let bundle = Bundle::new(&["sh", "-c", script], |c| {
        c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
        c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654}]);
        c["process"]["user"] =
            json!({"uid": 1000, "gid": 1000, "umask": 63, "additionalGids": [1000, 65534]});
        c["process"]["oomScoreAdj"] = json!(500);
        c["process"]["cwd"] = json!("/tmp");
        c["domainname"] = json!("example.test");
    });
    let out = bundle.run("settings");
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(
        lines,
        [
            "1",
            "321",
            "0077",
            "500",
            "example.test",
            "1000 65534",
            "/tmp"
        ],
        "stderr: {}",
        text(&out.stderr)
    );
}

#[test]
fn create_container_and_start_container_hooks_run_inside_the_container() {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("net.log");
    let bundle = Bundle::new(&["cat", "/dev/shm/started"], |c| {
        c["hooks"] = json!({
            // Runs in the container's namespaces before pivot_root: its network is the
            // container's (loopback only) while the host's paths still resolve.
            "createContainer": [{"path": "/bin/sh", "args": ["sh", "-c", format!("cat /proc/net/dev > {}", log.display())]}],
            // Runs inside the container just before the process: its paths are the container's.
            "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "read -r state; echo started > /dev/shm/started"]}],
        });
    });
    let out = bundle.run("inner-hooks");
    assert_eq!(
        text(&out.stdout).trim(),
        "started",
        "stderr: {}",
        text(&out.stderr)
    );
    let devices = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        devices.lines().count(),
        3,
        "only loopback in the container's namespace: {devices}"
    );
}
