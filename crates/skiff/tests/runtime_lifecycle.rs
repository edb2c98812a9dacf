//! The OCI runtime's lifecycle for real, as root, through the command line engines use
//! (`skiff runtime ...`, the same code as `skiff-runc`): create, start, state, exec, kill,
//! delete, hooks, terminals, errors.

#![allow(clippy::unwrap_used)] // test code: a panic is how a test reports failure

mod runtime_support;

use std::path::Path;
use std::process::Command;

use runtime_support::{Bundle, skiff, status_of, text};
use serde_json::{Value, json};

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

#[test]
fn exec_takes_a_process_file_as_engines_pass_it() {
    let bundle = Bundle::new(&["sleep", "60"], |_| {});
    let id = bundle.id("execfile");
    let (ok, stderr) = bundle.runtime_detached(&[
        "run",
        "--detach",
        "--bundle",
        bundle.path().to_str().unwrap(),
        &id,
    ]);
    assert!(ok, "{stderr}");
    let process = bundle.path().join("process.json");
    let spec = json!({
        "args": ["sh", "-c", "echo $FROM $(pwd) $(id -u)"],
        "env": ["PATH=/bin", "FROM=file"],
        "cwd": "/tmp",
        "user": {"uid": 1000, "gid": 1000}
    });
    std::fs::write(&process, spec.to_string()).unwrap();
    let pid_file = bundle.path().join("exec.pid");
    let out = bundle.runtime(&[
        "exec",
        "--process",
        process.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);
    assert_eq!(
        text(&out.stdout).trim(),
        "file /tmp 1000",
        "{}",
        text(&out.stderr)
    );
    assert!(
        std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse::<i32>()
            .unwrap()
            > 0
    );
}
