//! The container commands as users run them (root; CI runs as root): `run` exit codes, the
//! detached life cycle through separate CLI processes, the monitor recording exits and
//! applying restart policies, `--rm`, env/workdir/user, bind volumes, memory limits, names,
//! `inspect --format`. Every test removes its containers (and so their mounts and cgroups)
//! on drop, also when it fails.
#![allow(clippy::unwrap_used)]

mod engine_support;

use std::process::Command;
use std::time::Duration;

use engine_support::{IMAGE, Skiff, text};
use skiff_testkit::wait::wait_for;

#[test]
fn run_exits_with_the_containers_code_and_125_for_engine_errors() {
    let skiff = Skiff::new();
    let out = skiff.run(&[
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "echo hi; echo oops >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stdout), "hi\n");
    assert_eq!(text(&out.stderr), "oops\n");
    assert_eq!(
        skiff.run(&["run", "--rm", IMAGE, "true"]).status.code(),
        Some(0)
    );
    let missing = skiff.run(&["run", "--rm", IMAGE, "no-such-program"]);
    assert_eq!(
        missing.status.code(),
        Some(127),
        "{}",
        text(&missing.stderr)
    );
    assert!(text(&missing.stderr).contains("not found"));
    let bad = skiff.run(&["run", "--rm", "--network", "bridge", IMAGE, "true"]);
    assert_eq!(bad.status.code(), Some(125));
    // --rm removed every one of them.
    assert_eq!(skiff.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn a_detached_container_is_found_again_by_every_new_cli() {
    let skiff = Skiff::new();
    let id = skiff.ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        IMAGE,
        "sh",
        "-c",
        "trap 'echo bye; exit 0' TERM; echo started; while true; do sleep 0.1; done",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64);
    wait_for("the first line", Duration::from_secs(10), || {
        skiff
            .ok(&["logs", "ticker"])
            .contains("started")
            .then_some(())
    })
    .unwrap();
    let ps = skiff.ok(&["ps"]);
    let lines: Vec<&str> = ps.lines().collect();
    assert!(lines[0].starts_with("CONTAINER ID   IMAGE"), "{ps}");
    assert!(
        lines[1].starts_with(&id[..12]) && lines[1].contains("Up ") && lines[1].ends_with("ticker"),
        "{ps}"
    );
    assert_eq!(skiff.format("ticker", "{{.State.Status}}"), "running");
    let pid: i32 = skiff.format(&id[..8], "{{.State.Pid}}").parse().unwrap();
    assert!(pid > 0);
    let exec = skiff.run(&["exec", "ticker", "sh", "-c", "cat /etc/hostname; exit 4"]);
    assert_eq!(exec.status.code(), Some(4));
    assert_eq!(text(&exec.stdout), format!("{}\n", &id[..12]));
    assert_eq!(skiff.ok(&["stop", "-t", "5", "ticker"]), "ticker\n");
    assert_eq!(
        skiff.format(
            "ticker",
            "{{.State.Status}} {{.State.ExitCode}} {{.State.Pid}}"
        ),
        "exited 0 0"
    );
    assert_eq!(skiff.ok(&["logs", "ticker"]), "started\nbye\n");
    let ps = skiff.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (0)"), "{ps}");
    assert_eq!(skiff.ok(&["ps", "-q"]), "");
    assert_eq!(skiff.ok(&["rm", "ticker"]), "ticker\n");
    assert_eq!(skiff.ok(&["ps", "-a", "-q"]), "");
    assert!(!skiff.data.path().join("containers").join(id).exists());
    let gone = skiff.run(&["logs", "ticker"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(text(&gone.stderr).contains("No such container: ticker"));
}

#[test]
fn a_container_whose_monitor_died_shows_as_exited_and_can_be_removed() {
    let skiff = Skiff::new();
    let id = skiff.ok(&["run", "-d", IMAGE, "sleep", "1000"]);
    let id = id.trim();
    let state: skiff_engine::State = serde_json::from_slice(
        &std::fs::read(
            skiff
                .data
                .path()
                .join("containers")
                .join(id)
                .join("state.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(state.shim_pid > 0);
    Command::new("kill")
        .args(["-9", &state.shim_pid.to_string()])
        .status()
        .unwrap();
    wait_for("the monitor to die", Duration::from_secs(10), || {
        (skiff.format(id, "{{.State.Status}}") == "exited").then_some(())
    })
    .unwrap();
    assert!(skiff.ok(&["ps", "-a"]).contains("Exited (255)"));
    let running = skiff.run(&["rm", id]);
    assert_eq!(running.status.code(), Some(0), "{}", text(&running.stderr));
    assert_eq!(skiff.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn on_failure_restarts_count_and_stop_at_the_limit() {
    let skiff = Skiff::new();
    skiff.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        IMAGE,
        "sh",
        "-c",
        "echo try; exit 2",
    ]);
    skiff.wait_exited("flaky");
    assert_eq!(
        skiff.format("flaky", "{{.RestartCount}} {{.State.ExitCode}}"),
        "2 2"
    );
    assert_eq!(skiff.ok(&["logs", "flaky"]), "try\ntry\ntry\n");
    assert_eq!(
        skiff.format("flaky", "{{json .HostConfig.RestartPolicy}}"),
        r#"{"MaximumRetryCount":2,"Name":"on-failure"}"#
    );
}

#[test]
fn env_workdir_user_and_volumes_apply() {
    let skiff = Skiff::new();
    let out = skiff.ok(&[
        "run",
        "--rm",
        "-e",
        "GREETING=hello",
        "-w",
        "/work/dir",
        "-u",
        "65534:65534",
        IMAGE,
        "sh",
        "-c",
        "echo $GREETING; pwd; id -u; id -g; echo $HOSTNAME | wc -c",
    ]);
    assert_eq!(out, "hello\n/work/dir\n65534\n65534\n13\n");
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("f"), "from host\n").unwrap();
    let volume_ro = format!("{}:/data:ro", host.path().display());
    let ro = skiff.run(&[
        "run",
        "--rm",
        "-v",
        &volume_ro,
        IMAGE,
        "sh",
        "-c",
        "cat /data/f; touch /data/new",
    ]);
    assert_eq!(text(&ro.stdout), "from host\n");
    assert_ne!(ro.status.code(), Some(0));
    assert!(!host.path().join("new").exists());
    let volume_rw = format!("{}:/data", host.path().display());
    skiff.ok(&["run", "--rm", "-v", &volume_rw, IMAGE, "touch", "/data/new"]);
    assert!(host.path().join("new").exists());
    let read_only = skiff.run(&["run", "--rm", "--read-only", IMAGE, "touch", "/x"]);
    assert_ne!(read_only.status.code(), Some(0));
    // The writable layer keeps what the container wrote; the init layer files are not in it.
    let id = skiff.ok(&["run", "-d", IMAGE, "sh", "-c", "echo data > /file"]);
    skiff.wait_exited(id.trim());
    let upper = skiff
        .data
        .path()
        .join("containers")
        .join(id.trim())
        .join("upper");
    assert_eq!(
        std::fs::read_to_string(upper.join("file")).unwrap(),
        "data\n"
    );
    assert!(!upper.join("etc/hostname").exists());
}

#[test]
fn the_memory_limit_is_enforced() {
    let skiff = Skiff::new();
    let out = skiff.run(&[
        "run",
        "--name",
        "hog",
        "-m",
        "16m",
        IMAGE,
        "sh",
        "-c",
        "a=xxxxxxxx; while true; do a=$a$a; done",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    skiff.wait_exited("hog");
    assert_eq!(
        skiff.format("hog", "{{.State.OOMKilled}} {{.HostConfig.Memory}}"),
        "true 16777216"
    );
}

#[test]
fn names_are_unique_until_removed() {
    let skiff = Skiff::new();
    skiff.ok(&["run", "-d", "--name", "one", IMAGE, "sleep", "100"]);
    let again = skiff.run(&["run", "--name", "one", IMAGE, "true"]);
    assert_eq!(again.status.code(), Some(125));
    assert!(text(&again.stderr).contains("The container name \"/one\" is already in use"));
    let busy = skiff.run(&["rm", "one"]);
    assert_eq!(busy.status.code(), Some(1));
    assert!(text(&busy.stderr).contains("container is running"));
    assert_eq!(skiff.ok(&["rm", "-f", "one"]), "one\n");
    skiff.ok(&["run", "--rm", "--name", "one", IMAGE, "true"]);
}

#[test]
fn inspect_formats_the_docker_fields() {
    let skiff = Skiff::new();
    let out = skiff.run(&[
        "run", "--name", "probe", "-e", "A=1", IMAGE, "sh", "-c", "exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5));
    let full = skiff.format("probe", "{{.Id}}");
    assert_eq!(full.len(), 64);
    assert_eq!(
        skiff.format(
            "probe",
            "{{.Name}} {{.Config.Image}} {{.State.ExitCode}} {{.State.Status}}"
        ),
        format!("/probe {IMAGE} 5 exited")
    );
    let env = skiff.format("probe", "{{.Config.Env}}");
    assert!(env.starts_with("[PATH=") && env.ends_with(" A=1]"), "{env}");
    let config: serde_json::Value =
        serde_json::from_str(&skiff.format("probe", "{{json .Config}}")).unwrap();
    assert_eq!(config["Cmd"], serde_json::json!(["sh", "-c", "exit 5"]));
    let all: serde_json::Value =
        serde_json::from_str(&skiff.format("probe", "{{json .}}")).unwrap();
    assert_eq!(all["Id"], serde_json::json!(full));
    let plain: serde_json::Value = serde_json::from_str(&skiff.ok(&["inspect", "probe"])).unwrap();
    assert_eq!(plain[0]["State"]["ExitCode"], 5);
    let missing = skiff.run(&["inspect", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(text(&missing.stdout), "[]\n");
}

#[test]
fn logs_follow_ends_with_the_container_and_stop_beats_restart_always() {
    let skiff = Skiff::new();
    skiff.ok(&[
        "run",
        "-d",
        "--name",
        "talk",
        IMAGE,
        "sh",
        "-c",
        "echo a; sleep 0.3; echo b",
    ]);
    assert_eq!(skiff.ok(&["logs", "-f", "talk"]), "a\nb\n");
    skiff.ok(&[
        "run",
        "-d",
        "--name",
        "loop",
        "--restart",
        "always",
        IMAGE,
        "sh",
        "-c",
        "exit 1",
    ]);
    wait_for("a restart", Duration::from_secs(10), || {
        (skiff.format("loop", "{{.RestartCount}}") != "0").then_some(())
    })
    .unwrap();
    skiff.ok(&["stop", "-t", "2", "loop"]);
    skiff.wait_exited("loop");
    let count = skiff.format("loop", "{{.RestartCount}}");
    // Its monitor is gone: nothing can start it again.
    assert_eq!(
        skiff.format("loop", "{{.State.Status}} {{.RestartCount}}"),
        format!("exited {count}")
    );
}
