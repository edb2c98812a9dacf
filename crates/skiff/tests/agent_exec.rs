//! `kubectl exec`, `attach`, `cp` and `port-forward` through the API server to the node
//! agent, with real kubectl of several versions: 1.30+ speak WebSocket (`v5.channel.k8s.io`,
//! and from 1.31 the `SPDY/3.1+portforward.k8s.io` tunnel), 1.27-1.29 SPDY/3.1. Real pods
//! (root); every container is removed when a test ends.
#![allow(clippy::unwrap_used)]

mod agent_support;

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use agent_support::{Cluster, KUBECTL_DIR};

const LONG: Duration = Duration::from_secs(90);
/// How long one kubectl command may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// kubectl of `version` against the cluster.
fn kubectl(c: &Cluster, version: &str) -> Command {
    let mut command = Command::new(format!("{KUBECTL_DIR}/kubectl.{version}"));
    command
        .env("KUBECONFIG", c.path().join("server/admin.kubeconfig"))
        .env("HOME", c.path())
        .env_remove("KUBECTL_EXTERNAL_DIFF");
    command
}

/// Runs `command` with `input` on its stdin, killing it after the deadline.
fn run_with_input(command: &mut Command, input: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = wait_output(child);
    let _ = feeder.join();
    output
}

/// Waits for `child` with the command deadline, collecting its output.
fn wait_output(mut child: std::process::Child) -> Output {
    let out = child.stdout.take();
    let err = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut out) = out {
            let _ = out.read_to_end(&mut buf);
        }
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut err) = err {
            let _ = err.read_to_end(&mut buf);
        }
        buf
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > COMMAND_DEADLINE {
            let _ = child.kill();
            let status = child.wait().unwrap();
            let stderr = err_reader.join().unwrap();
            panic!(
                "command timed out ({status}); stderr: {}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Runs `command` without stdin, with the deadline.
fn run(command: &mut Command) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn succeed(command: &mut Command) -> String {
    let out = run(command);
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A cluster whose node is Ready.
fn cluster() -> Cluster {
    let c = Cluster::start();
    c.wait("the node to be Ready", LONG, || {
        c.field(
            &["get", "node", "node-1"],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True"
    });
    c
}

/// Creates a pod from YAML and waits until it runs.
fn run_pod(c: &Cluster, yaml: &str, name: &str) {
    c.apply(yaml);
    c.wait(&format!("{name} to run"), LONG, || {
        c.field(&["get", "pod", name], "{.status.phase}") == "Running"
    });
}

/// A pod with two long-running containers, `main` and `side`.
fn two_containers(c: &Cluster, name: &str, command: &str) {
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", {command:?}]
  - name: side
    image: {image}
    command: ["sh", "-c", "echo side > /tmp/who; sleep 3600"]
"#,
        image = c.image
    );
    run_pod(c, &yaml, name);
}

#[test]
fn exec_runs_commands_with_exit_codes_stdin_and_container_choice() {
    let c = cluster();
    two_containers(&c, "box", "echo main > /tmp/who; sleep 3600");
    // 1.30 and later speak WebSocket (v5), 1.27-1.29 SPDY (v4).
    for version in ["1.33", "1.31", "1.30", "1.29", "1.27"] {
        let hi =
            succeed(kubectl(&c, version).args(["exec", "box", "-c", "main", "--", "echo", "hi"]));
        assert_eq!(hi, "hi\n", "kubectl {version}");

        let out = run(kubectl(&c, version).args([
            "exec",
            "box",
            "-c",
            "main",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ]));
        assert_eq!(out.status.code(), Some(3), "kubectl {version}: {out:?}");
        assert_eq!(text(&out.stdout), "out\n", "kubectl {version}");
        assert!(
            text(&out.stderr).contains("err\n"),
            "kubectl {version}: {out:?}"
        );

        let data: Vec<u8> = (0..200_000u32)
            .map(|i| b"abcdefgh\n"[(i % 9) as usize])
            .collect();
        let out = run_with_input(
            kubectl(&c, version).args(["exec", "-i", "box", "-c", "main", "--", "cat"]),
            &data,
        );
        assert!(
            out.status.success(),
            "kubectl {version}: {}",
            text(&out.stderr)
        );
        assert_eq!(out.stdout.len(), data.len(), "kubectl {version}");
        assert!(
            out.stdout == data,
            "kubectl {version}: stdin came back changed"
        );

        let who = succeed(
            kubectl(&c, version).args(["exec", "box", "-c", "side", "--", "cat", "/tmp/who"]),
        );
        assert_eq!(who, "side\n", "kubectl {version}");
        // Without -c kubectl picks the first container.
        let who = succeed(kubectl(&c, version).args(["exec", "box", "--", "cat", "/tmp/who"]));
        assert_eq!(who, "main\n", "kubectl {version}");

        let out = run(kubectl(&c, version).args(["exec", "box", "-c", "nosuch", "--", "true"]));
        assert!(!out.status.success(), "kubectl {version}");
        assert!(
            text(&out.stderr).contains("container nosuch is not valid for pod box"),
            "kubectl {version}: {}",
            text(&out.stderr)
        );
    }
    // 1.33 and 1.30 took the WebSocket path, 1.27 SPDY (no silent fallback).
    assert!(session_over(&c, "v5.channel.k8s.io"), "{}", c.log());
    assert!(session_over(&c, "v4.channel.k8s.io"), "{}", c.log());
}

/// Whether the agent logged a session over `protocol`.
fn session_over(c: &Cluster, protocol: &str) -> bool {
    // The value quoted, so `"portforward.k8s.io"` is not found in the tunnel protocol's name
    // (the log may color field names).
    c.log().contains(&format!("\"{protocol}\""))
}

#[test]
fn exec_with_a_terminal_gets_a_pty() {
    let c = cluster();
    two_containers(&c, "term", "sleep 3600");
    for version in ["1.33", "1.27"] {
        // `script` gives kubectl a terminal; the remote side gets one of its own.
        let kubeconfig = c.path().join("server/admin.kubeconfig");
        let line = format!(
            "stty rows 33 cols 101; {KUBECTL_DIR}/kubectl.{version} --kubeconfig {} exec -it term -c main -- sh -c 'tty; stty size; exit 4'",
            kubeconfig.display()
        );
        let out = run_with_input(
            Command::new("script")
                .args(["-qefc", &line, "/dev/null"])
                .env("HOME", c.path())
                .env("TERM", "xterm")
                .env("COLUMNS", "100")
                .env("LINES", "30"),
            b"",
        );
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("/dev/pts/"),
            "kubectl {version}: {stdout:?} {out:?}"
        );
        // kubectl's terminal size reached the remote terminal (resize channel / stream).
        assert!(stdout.contains("33 101"), "kubectl {version}: {stdout:?}");
        assert_eq!(out.status.code(), Some(4), "kubectl {version}: {stdout:?}");
    }
    // Input typed at the terminal reaches the shell.
    let kubeconfig = c.path().join("server/admin.kubeconfig");
    let line = format!(
        "{KUBECTL_DIR}/kubectl.1.33 --kubeconfig {} exec -it term -c main -- sh",
        kubeconfig.display()
    );
    let out = run_with_input(
        Command::new("script")
            .args(["-qefc", &line, "/dev/null"])
            .env("HOME", c.path())
            .env("TERM", "xterm"),
        b"echo typed-$((40+2))\nexit 0\n",
    );
    assert!(text(&out.stdout).contains("typed-42"), "{out:?}");
}

#[test]
fn cp_copies_files_into_and_out_of_a_pod() {
    let c = cluster();
    two_containers(&c, "files", "sleep 3600");
    let local = c.path().join("local.txt");
    let content: String = (0..5000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&local, &content).unwrap();
    for version in ["1.33", "1.27"] {
        let target = format!("files:/tmp/in-{version}.txt");
        succeed(
            kubectl(&c, version)
                .args(["cp", "-c", "main"])
                .arg(&local)
                .arg(&target),
        );
        let inside = succeed(kubectl(&c, version).args([
            "exec",
            "files",
            "-c",
            "main",
            "--",
            "cat",
            &format!("/tmp/in-{version}.txt"),
        ]));
        assert_eq!(inside, content, "kubectl {version}");
        let back = c.path().join(format!("back-{version}.txt"));
        succeed(
            kubectl(&c, version)
                .args(["cp", "-c", "main", &target])
                .arg(&back),
        );
        assert_eq!(
            std::fs::read_to_string(&back).unwrap(),
            content,
            "kubectl {version}"
        );
    }
}

/// Starts `kubectl port-forward` and returns it with the local port it forwards.
fn port_forward(
    c: &Cluster,
    version: &str,
    websockets: bool,
    remote: u16,
) -> (std::process::Child, u16) {
    let local = skiff_testkit::ports::free_port().unwrap();
    let mut child = kubectl(c, version)
        .args(["port-forward", "web", &format!("{local}:{remote}")])
        .env(
            "PORT_FORWARD_WEBSOCKETS",
            if websockets { "true" } else { "false" },
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // kubectl prints "Forwarding from 127.0.0.1:PORT -> 8080" once it listens.
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    if seen.windows(10).any(|w| w == b"Forwarding") {
                        let _ = tx.send(());
                    }
                }
            }
        }
    });
    if rx.recv_timeout(COMMAND_DEADLINE).is_err() {
        let _ = child.kill();
        let out = wait_output(child);
        panic!("kubectl {version} port-forward did not start: {out:?}");
    }
    (child, local)
}

fn curl(port: u16, path: &str) -> Output {
    run(Command::new("curl").args([
        "-sS",
        "--max-time",
        "20",
        &format!("http://127.0.0.1:{port}{path}"),
    ]))
}

#[test]
fn port_forward_reaches_a_port_inside_the_pod() {
    let c = cluster();
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: {image}
    command: ["sh", "-c", "mkdir -p /www && echo served-from-pod > /www/index.html && head -c 300000 /dev/zero | tr '\\0' x > /www/big && httpd -f -p 127.0.0.1:8080 -h /www"]
"#,
        image = c.image
    );
    run_pod(&c, &yaml, "web");
    c.wait("httpd to listen", LONG, || {
        run(c.kubectl().args([
            "exec",
            "web",
            "--",
            "wget",
            "-q",
            "-O",
            "/dev/null",
            "http://127.0.0.1:8080/",
        ]))
        .status
        .success()
    });
    // 1.31+: the WebSocket tunnel, and SPDY when asked; 1.30 and 1.27: SPDY.
    for (version, websockets) in [
        ("1.33", true),
        ("1.33", false),
        ("1.31", true),
        ("1.30", false),
        ("1.27", false),
    ] {
        let (mut child, local) = port_forward(&c, version, websockets, 8080);
        for _ in 0..2 {
            let out = curl(local, "/");
            assert_eq!(
                text(&out.stdout),
                "served-from-pod\n",
                "kubectl {version} (websockets {websockets}): {out:?}"
            );
        }
        let big = curl(local, "/big");
        assert_eq!(
            big.stdout.len(),
            300_000,
            "kubectl {version}: {}",
            text(&big.stderr)
        );
        let _ = child.kill();
        let _ = child.wait();
    }
    // Nothing listens on 9999: the connection fails and kubectl reports the agent's error.
    for (version, websockets) in [("1.33", true), ("1.27", false)] {
        let (child, local) = port_forward(&c, version, websockets, 9999);
        let out = curl(local, "/");
        assert!(out.stdout.is_empty(), "kubectl {version}: {out:?}");
        let mut child = child;
        let _ = child.kill();
        let out = wait_output(child);
        assert!(
            text(&out.stderr).contains("error forwarding port 9999 to pod default/web"),
            "kubectl {version}: {}",
            text(&out.stderr)
        );
    }
    assert!(
        session_over(&c, "SPDY/3.1+portforward.k8s.io"),
        "{}",
        c.log()
    );
    assert!(session_over(&c, "portforward.k8s.io"), "{}", c.log());
}

#[test]
fn attach_streams_a_containers_output() {
    let c = cluster();
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: ticker
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: tick
    image: {image}
    command: ["sh", "-c", "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done"]
"#,
        image = c.image
    );
    run_pod(&c, &yaml, "ticker");
    for version in ["1.33", "1.27"] {
        let mut child = kubectl(&c, version)
            .args(["attach", "ticker", "-c", "tick"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 256];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        seen.extend_from_slice(&buf[..n]);
                        let ticks = String::from_utf8_lossy(&seen).matches("tick-").count();
                        if ticks >= 3 {
                            let _ = tx.send(());
                        }
                    }
                }
            }
        });
        let got = rx.recv_timeout(COMMAND_DEADLINE);
        let _ = child.kill();
        let out = wait_output(child);
        assert!(
            got.is_ok(),
            "kubectl {version} attach showed no output: {out:?}"
        );
    }
}

#[test]
fn exec_is_refused_for_pods_that_do_not_run() {
    let c = cluster();
    // Never scheduled: no node.
    let yaml = r#"apiVersion: v1
kind: Pod
metadata:
  name: nowhere
spec:
  nodeSelector:
    no-such-label: "true"
  containers:
  - name: c
    image: busybox
"#;
    c.apply(yaml);
    for version in ["1.33", "1.27"] {
        let out = run(kubectl(&c, version).args(["exec", "nowhere", "--", "true"]));
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("pod nowhere does not have a host assigned"),
            "kubectl {version}: {}",
            text(&out.stderr)
        );
    }
    // Completed: kubectl refuses itself, from the pod's phase.
    let done = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: done
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: {image}
    command: ["true"]
"#,
        image = c.image
    );
    let mut child = c
        .kubectl()
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(done.as_bytes())
        .unwrap();
    assert!(wait_output(child).status.success());
    c.wait("done to succeed", LONG, || {
        c.field(&["get", "pod", "done"], "{.status.phase}") == "Succeeded"
    });
    let out = run(kubectl(&c, "1.33").args(["exec", "done", "--", "true"]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot exec into a container in a completed pod"),
        "{}",
        text(&out.stderr)
    );
    // Scheduled, but its container never starts (the image cannot be pulled): the agent has
    // no such container running.
    let stuck = r#"apiVersion: v1
kind: Pod
metadata:
  name: stuck
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: 127.0.0.1:1/nothing:latest
"#;
    let mut child = c
        .kubectl()
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stuck.as_bytes())
        .unwrap();
    assert!(wait_output(child).status.success());
    c.wait("stuck to be scheduled", LONG, || {
        !c.field(&["get", "pod", "stuck"], "{.spec.nodeName}")
            .is_empty()
    });
    for version in ["1.33", "1.27"] {
        let out = run(kubectl(&c, version).args(["exec", "stuck", "--", "true"]));
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("container not found (\"c\")"),
            "kubectl {version}: {}",
            text(&out.stderr)
        );
    }
    // Not found.
    let out = run(kubectl(&c, "1.33").args(["exec", "ghost", "--", "true"]));
    assert!(
        text(&out.stderr).contains("pods \"ghost\" not found"),
        "{}",
        text(&out.stderr)
    );
}
