//! `--network|--pid|--ipc container:NAME` as users run them (root; CI runs as root): the new
//! container enters the namespaces of another running container's init (the same namespace
//! inodes, its hostname, its processes), and a missing or stopped container is a one-line
//! error with exit code 125. Every container is removed on drop, also when the test fails.
#![allow(clippy::unwrap_used)]

mod engine_support;

use engine_support::{IMAGE, Skiff, text};

#[test]
fn a_container_joins_another_running_containers_namespaces() {
    let skiff = Skiff::new();
    skiff.ok(&[
        "run",
        "-d",
        "--name",
        "owner",
        "--hostname",
        "owner-host",
        IMAGE,
        "sleep",
        "1000",
    ]);
    let owner_ns = |kind: &str| {
        skiff
            .ok(&[
                "exec",
                "owner",
                "readlink",
                &format!("/proc/self/ns/{kind}"),
            ])
            .trim_end()
            .to_string()
    };
    let (net, ipc, pid) = (owner_ns("net"), owner_ns("ipc"), owner_ns("pid"));
    assert_eq!(
        skiff.ok(&[
            "run",
            "--rm",
            "--network",
            "container:owner",
            IMAGE,
            "sh",
            "-c",
            "readlink /proc/self/ns/net; hostname",
        ]),
        format!("{net}\nowner-host\n")
    );
    assert_eq!(
        skiff.ok(&[
            "run",
            "--rm",
            "--ipc",
            "container:owner",
            IMAGE,
            "readlink",
            "/proc/self/ns/ipc",
        ]),
        format!("{ipc}\n")
    );
    // In the owner's PID namespace its init is pid 1, and it is not ours.
    let seen = skiff.ok(&[
        "run",
        "--rm",
        "--pid",
        "container:owner",
        IMAGE,
        "sh",
        "-c",
        "readlink /proc/self/ns/pid; cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    assert_eq!(seen, format!("{pid}\nsleep 1000 "));
    // Its own namespaces otherwise.
    let own = skiff.ok(&["run", "--rm", IMAGE, "readlink", "/proc/self/ns/net"]);
    assert_ne!(own.trim_end(), net);
    assert_eq!(
        skiff.format("owner", "{{.Id}}").len(),
        64,
        "the owner is still there"
    );
    let id = skiff.format("owner", "{{.Id}}");
    skiff.ok(&[
        "run",
        "-d",
        "--name",
        "guest",
        "--network",
        "container:owner",
        "--pid",
        "container:owner",
        IMAGE,
        "sleep",
        "1000",
    ]);
    assert_eq!(
        skiff.format(
            "guest",
            "{{.HostConfig.NetworkMode}} {{.HostConfig.PidMode}}"
        ),
        format!("container:{id} container:{id}")
    );
}

#[test]
fn joining_a_missing_or_stopped_container_is_a_clear_error() {
    let skiff = Skiff::new();
    for flag in ["--network", "--pid", "--ipc"] {
        let out = skiff.run(&["run", "--rm", flag, "container:nope", IMAGE, "true"]);
        assert_eq!(out.status.code(), Some(125), "{flag}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("No such container: nope"),
            "{flag}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 2, "{stderr}"); // the error, then the usage hint
    }
    skiff.ok(&["run", "--name", "done", IMAGE, "true"]);
    let out = skiff.run(&["run", "--rm", "--pid", "container:done", IMAGE, "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("cannot join PID of a non running container: done"),
        "{}",
        text(&out.stderr)
    );
    let out = skiff.run(&[
        "run",
        "--rm",
        "--network",
        "container:done",
        "--hostname",
        "h",
        IMAGE,
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("conflicting options: hostname and the network mode"));
    let out = skiff.run(&["run", "--rm", "--ipc", "host", IMAGE, "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("only container:NAME"));
    let out = skiff.run(&["run", "--rm", "--network", "container:", IMAGE, "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("name the container"));
    // A container whose namespace owner stopped cannot start again.
    skiff.ok(&["run", "-d", "--name", "owner", IMAGE, "sleep", "1000"]);
    skiff.ok(&[
        "run",
        "--name",
        "guest",
        "--network",
        "container:owner",
        IMAGE,
        "true",
    ]);
    skiff.ok(&["stop", "-t", "1", "owner"]);
    let out = skiff.run(&["start", "guest"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("non running container: owner"),
        "{}",
        text(&out.stderr)
    );
}
