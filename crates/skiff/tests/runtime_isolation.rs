//! The OCI runtime's isolation and hardening for real, as root: namespaces, read-only root
//! and masks, cgroup limits, capabilities, seccomp (with `SCMP_ACT_NOTIFY` and a
//! `listenerPath` agent), and the known escapes (leaked fds, symlinked mount targets,
//! CVE-2019-5736, CVE-2024-21626).

#![allow(clippy::unwrap_used)] // test code: a panic is how a test reports failure

mod runtime_support;

use std::process::Command;

use runtime_support::{Bundle, skiff, text};
use serde_json::{Value, json};

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

/// A seccomp agent for one container: accepts the runtime's connection on `socket`, keeps
/// the state JSON, answers every notified `getppid` with 4242 (anything else continues)
/// until no process uses the filter. Returns the state.
fn getppid_agent(socket: std::os::unix::net::UnixListener) -> Value {
    use skiff_sys::seccomp::{self, Response};
    use std::os::fd::AsFd;
    let (stream, _) = socket.accept().unwrap();
    let (data, listener) = seccomp::recv_with_fd(&stream, 65536).unwrap();
    let state: Value = serde_json::from_slice(&data).unwrap();
    let listener = listener.expect("the message carries the listener");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        match seccomp::wait_listener(listener.as_fd(), 200) {
            None => break,
            Some(false) => continue,
            Some(true) => {}
        }
        let Ok(n) = seccomp::receive(listener.as_fd()) else {
            continue;
        };
        let answer = if i64::from(n.nr) == nix::libc::SYS_getppid {
            Response::Value(4242)
        } else {
            Response::Continue
        };
        let _ = seccomp::respond(listener.as_fd(), n.id, answer);
    }
    state
}

#[test]
fn a_notify_rule_sends_the_listener_and_the_state_to_the_listener_path() {
    let agent_dir = tempfile::tempdir().unwrap();
    let socket_path = agent_dir.path().join("agent.sock");
    let socket = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();
    // ash sets $PPID from getppid(): the agent's answer shows in the output.
    let bundle = Bundle::new(&["sh", "-c", "echo ppid=$PPID"], |c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": socket_path,
            "listenerMetadata": "made-by-the-test",
            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}]
        });
    });
    let agent = std::thread::spawn(move || getppid_agent(socket));
    let out = bundle.run("notify");
    assert_eq!(text(&out.stdout), "ppid=4242\n", "{}", text(&out.stderr));
    let state = agent.join().unwrap();
    assert_eq!(state["fds"], json!(["seccompFd"]), "{state}");
    assert_eq!(state["metadata"], "made-by-the-test", "{state}");
    assert!(state["pid"].as_i64().unwrap() > 0, "{state}");
    assert_eq!(
        state["state"]["id"],
        format!("notify-{}", std::process::id())
    );
    assert_eq!(state["state"]["status"], "creating", "{state}");
    assert_eq!(state["state"]["pid"], state["pid"], "{state}");
    assert!(state["ociVersion"].is_string(), "{state}");
}

#[test]
fn notify_rules_without_a_listener_path_or_on_write_are_refused_at_create() {
    for (rule, expected) in [
        (
            json!({"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}),
            "listenerPath",
        ),
        (
            json!({"names": ["write"], "action": "SCMP_ACT_NOTIFY"}),
            "cannot be used for the write syscall",
        ),
    ] {
        let bundle = Bundle::new(&["true"], |c| {
            c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]});
            if expected != "listenerPath" {
                c["linux"]["seccomp"]["listenerPath"] = json!("/nonexistent/agent.sock");
            }
        });
        let out = bundle.run("notify-refused");
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains(expected),
            "{}",
            text(&out.stderr)
        );
    }
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
