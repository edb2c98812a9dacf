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

/// A container restarted by its restart policy joins the namespaces of the container it names
/// as they are now: after `owner` restarted (a new init, a new network namespace), the guest's
/// next run is in the new one, not in the namespace of an init that has gone.
#[test]
fn a_restarted_container_joins_the_current_namespaces_of_the_one_it_names() {
    let skiff = Skiff::new();
    skiff.ok(&["run", "-d", "--name", "owner", IMAGE, "sleep", "1000"]);
    let owner_net = || {
        let pid = skiff.format("owner", "{{.State.Pid}}");
        std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .unwrap()
            .display()
            .to_string()
    };
    let first = owner_net();
    skiff.ok(&[
        "run",
        "-d",
        "--name",
        "guest",
        "--network",
        "container:owner",
        "--restart",
        "always",
        IMAGE,
        "sh",
        "-c",
        "readlink /proc/self/ns/net; exec sleep 1000",
    ]);
    let logged = |lines: usize| {
        skiff_testkit::wait::wait_for(
            "the guest's log lines",
            std::time::Duration::from_secs(30),
            || {
                let out = skiff.ok(&["logs", "guest"]);
                (out.lines().count() >= lines).then_some(out)
            },
        )
        .unwrap()
    };
    assert_eq!(logged(1), format!("{first}\n"));

    skiff.ok(&["restart", "owner"]);
    let second = owner_net();
    assert_ne!(
        second, first,
        "a restarted container gets a new network namespace"
    );
    // End the guest's run from outside; its restart policy starts it again.
    let guest_pid: i32 = skiff.format("guest", "{{.State.Pid}}").parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(guest_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(logged(2), format!("{first}\n{second}\n"));
    assert_eq!(
        skiff.format("guest", "{{.State.Status}} {{.RestartCount}}"),
        "running 1"
    );
}
