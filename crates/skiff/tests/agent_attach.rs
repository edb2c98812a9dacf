//! Pods whose containers keep stdin open and have terminals, through real kubectl: `kubectl
//! run -i --rm` with piped input (1.27 over SPDY, 1.33 over WebSocket), `kubectl attach -it`
//! to a `stdin`/`tty` container and `kubectl run -it --rm` on a terminal (util-linux `script`
//! gives kubectl a pty). Every container is removed when a test ends.
#![allow(clippy::unwrap_used)]

mod agent_support;

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use agent_support::{Cluster, KUBECTL_DIR};

const LONG: Duration = Duration::from_secs(90);
/// How long one kubectl command may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(90);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// kubectl of `version` against the cluster.
fn kubectl(c: &Cluster, version: &str) -> Command {
    let mut command = Command::new(format!("{KUBECTL_DIR}/kubectl.{version}"));
    command
        .env("KUBECONFIG", c.path().join("server/admin.kubeconfig"))
        .env("HOME", c.path())
        .env_remove("KUBECTL_EXTERNAL_DIFF");
    command
}

/// kubectl of `version` with `args` on a terminal of its own (33 rows, 101 columns).
fn kubectl_on_a_terminal(c: &Cluster, version: &str, args: &str) -> Command {
    let line = format!(
        "stty rows 33 cols 101; {KUBECTL_DIR}/kubectl.{version} --kubeconfig {} {args}",
        c.path().join("server/admin.kubeconfig").display()
    );
    let mut command = Command::new("script");
    command
        .args(["-qefc", &line, "/dev/null"])
        .env("HOME", c.path())
        .env("TERM", "xterm");
    command
}

/// Runs `command`, writing each piece of input once its output shows the text paired with
/// it; then waits for it to end (or, with `kill`, kills it), within the deadline.
fn run_with(command: &mut Command, pieces: &[(&str, &[u8])], kill: bool) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let out_reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    all.extend_from_slice(&buf[..n]);
                    let _ = tx.send(all.clone());
                }
            }
        }
        all
    });
    let err_reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stderr.read_to_end(&mut all);
        all
    });
    let start = Instant::now();
    let mut seen = Vec::new();
    for (wait_for, bytes) in pieces {
        while !text(&seen).contains(wait_for) {
            let left = COMMAND_DEADLINE.saturating_sub(start.elapsed());
            match rx.recv_timeout(left) {
                Ok(all) => seen = all,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "never saw {wait_for:?} in {:?}; stderr: {}",
                        text(&seen),
                        text(&err_reader.join().unwrap())
                    );
                }
            }
        }
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }
    if kill {
        let _ = child.kill();
    }
    drop(stdin);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > COMMAND_DEADLINE {
            let _ = child.kill();
            let status = child.wait().unwrap();
            panic!(
                "{command:?} timed out ({status}); output: {:?}",
                text(&seen)
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

/// Waits until pod `name` is gone.
fn wait_deleted(c: &Cluster, name: &str) {
    c.wait(&format!("pod {name} to be deleted"), LONG, || {
        !text(
            &kubectl(c, "1.33")
                .args(["get", "pods", "-o", "name"])
                .output()
                .unwrap()
                .stdout,
        )
        .contains(&format!("pod/{name}\n"))
    });
}

#[test]
fn kubectl_run_i_and_it_reach_the_containers_stdin() {
    let c = cluster();
    for version in ["1.33", "1.27"] {
        let name = format!("pipe-{}", version.replace('.', "-"));
        let out = run_with(
            kubectl(&c, version).args([
                "run",
                "-i",
                "--rm",
                "--restart=Never",
                &format!("--image={}", c.image),
                &name,
                "--",
                "sh",
                "-c",
                "read x; echo got:$x",
            ]),
            &[("", b"hello\n")],
            false,
        );
        assert!(
            text(&out.stdout).contains("got:hello"),
            "kubectl {version}: {out:?}\n{}",
            c.log()
        );
        assert_eq!(out.status.code(), Some(0), "kubectl {version}: {out:?}");
        wait_deleted(&c, &name);
    }
    // A shell on kubectl's terminal: typed input, its output, its exit code; --rm deletes it.
    for version in ["1.33", "1.27"] {
        let name = format!("shell-{}", version.replace('.', "-"));
        let image = &c.image;
        let out = run_with(
            &mut kubectl_on_a_terminal(
                &c,
                version,
                &format!("run -it --rm --restart=Never --image={image} {name} -- sh"),
            ),
            // kubectl sends a size one larger first (to force a redraw), then its own: the
            // size is asked for once a first command went through.
            &[
                ("", b"echo hi-$((40+2))\n"),
                ("hi-42", b"stty size; exit 3\n"),
            ],
            false,
        );
        let stdout = text(&out.stdout);
        assert!(stdout.contains("33 101"), "kubectl {version}: {stdout:?}");
        assert_eq!(out.status.code(), Some(3), "kubectl {version}: {out:?}");
        wait_deleted(&c, &name);
    }
    assert!(c.log().contains("\"v5.channel.k8s.io\""), "{}", c.log());
    assert!(c.log().contains("\"v4.channel.k8s.io\""), "{}", c.log());
}

#[test]
fn kubectl_attach_it_reaches_a_terminal() {
    let c = cluster();
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: term
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: main
    image: {image}
    command: ["sh"]
    stdin: true
    tty: true
"#,
        image = c.image
    );
    c.apply(&yaml);
    c.wait("term to run", LONG, || {
        c.field(&["get", "pod", "term"], "{.status.phase}") == "Running"
    });
    // Leaving (the client killed) keeps the shell; the next attach finds it.
    let out = run_with(
        &mut kubectl_on_a_terminal(&c, "1.33", "attach -it term -c main"),
        &[
            ("", b"tty; echo one-$((0+1))\n"),
            ("one-1", b"stty size; echo two-$((1+1))\n"),
            ("two-2", b""),
        ],
        true,
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("/dev/pts/"), "{stdout:?}");
    assert!(stdout.contains("33 101"), "{stdout:?}");
    assert_eq!(
        c.field(&["get", "pod", "term"], "{.status.phase}"),
        "Running"
    );
    let out = run_with(
        &mut kubectl_on_a_terminal(&c, "1.27", "attach -it term -c main"),
        &[
            ("", b"echo three-$((1+2))\n"),
            ("three-3", b"stty size; exit 4\n"),
        ],
        false,
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("33 101"), "{stdout:?}");
    c.wait("term to fail with 4", LONG, || {
        c.field(
            &["get", "pod", "term"],
            "{.status.containerStatuses[0].state.terminated.exitCode}",
        ) == "4"
    });
}
