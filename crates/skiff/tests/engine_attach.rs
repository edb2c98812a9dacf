//! Containers with an open stdin and a terminal, as users run them: `run -i` with piped
//! input, `run -it` on a terminal (util-linux `script` gives the CLI a pty), `run -dit` then
//! `attach` (typing, detaching with ctrl-p ctrl-q, attaching again). Every container is
//! removed on drop, also when a test fails.
#![allow(clippy::unwrap_used)]

mod engine_support;

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use engine_support::{IMAGE, Skiff, text};

/// How long one command may take.
const DEADLINE: Duration = Duration::from_secs(60);

fn skiff_bin() -> &'static str {
    env!("CARGO_BIN_EXE_skiff")
}

/// Runs `command` with `input` on its stdin (written in `pieces`, the next once `ready`
/// says the output so far allows it), killing it after the deadline.
fn run_with(command: &mut Command, pieces: &[(&str, &[u8])]) -> Output {
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
            let left = DEADLINE.saturating_sub(start.elapsed());
            match rx.recv_timeout(left) {
                Ok(all) => seen = all,
                Err(_) => {
                    let _ = child.kill();
                    panic!("never saw {wait_for:?} in {:?}", text(&seen));
                }
            }
        }
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }
    drop(stdin);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
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

/// `skiff ARGS` on a terminal of its own (`script`), against the test's data root.
fn on_a_terminal(skiff: &Skiff, args: &str) -> Command {
    let line = format!("stty rows 33 cols 101; {} {args}", skiff_bin());
    let mut command = Command::new("script");
    command
        .args(["-qefc", &line, "/dev/null"])
        .env("SKIFF_DATA_ROOT", skiff.data.path())
        .env("TERM", "xterm");
    command
}

#[test]
fn run_i_pipes_stdin_and_closes_it_at_its_end() {
    let skiff = Skiff::new();
    let out = run_with(
        Command::new(skiff_bin())
            .args(["run", "-i", "--rm", IMAGE, "sh", "-c"])
            .arg("read x; echo got:$x; cat; echo done >&2")
            .env("SKIFF_DATA_ROOT", skiff.data.path()),
        &[("", b"hello\nmore\n")],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // `cat` ends: the stdin closed with the client's.
    assert_eq!(text(&out.stdout), "got:hello\nmore\n");
    assert_eq!(text(&out.stderr), "done\n");
    assert_eq!(skiff.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn run_it_gives_an_interactive_shell_on_this_terminal() {
    let skiff = Skiff::new();
    let out = run_with(
        &mut on_a_terminal(&skiff, &format!("run -it --rm {IMAGE} sh")),
        &[
            ("", b"tty; stty size; echo hi-$((40+2))\n"),
            ("hi-42", b"exit 3\n"),
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout:?} {out:?}");
    assert!(stdout.contains("/dev/pts/"), "{stdout:?}");
    // The CLI's terminal size reached the container's terminal.
    assert!(stdout.contains("33 101"), "{stdout:?}");
    assert_eq!(skiff.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn run_dit_then_attach_detach_and_attach_again() {
    let skiff = Skiff::new();
    let id = skiff.ok(&["run", "-dit", "--name", "box", IMAGE, "sh"]);
    assert_eq!(id.trim().len(), 64, "{id:?}");
    // ctrl-p ctrl-q leaves the shell running.
    let out = run_with(
        &mut on_a_terminal(&skiff, "attach box"),
        &[("", b"echo one-$((0+1))\n"), ("one-1", b"\x10\x11")],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(skiff.format("box", "{{.State.Status}}"), "running");
    let out = run_with(
        &mut on_a_terminal(&skiff, "attach box"),
        &[("", b"echo two-$((1+1)); exit 5\n")],
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("two-2"), "{stdout:?}");
    assert_eq!(out.status.code(), Some(5), "{stdout:?}");
    skiff.wait_exited("box");
    assert_eq!(skiff.format("box", "{{.State.ExitCode}}"), "5");
    // The terminal's output is the log's stdout.
    let logs = skiff.ok(&["logs", "box"]);
    assert!(logs.contains("two-2"), "{logs:?}");
    let refused = skiff.run(&["attach", "box"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("start it first"));
}

#[test]
fn attach_pipes_stdin_to_a_detached_container() {
    let skiff = Skiff::new();
    skiff.ok(&[
        "run",
        "-di",
        "--name",
        "reader",
        IMAGE,
        "sh",
        "-c",
        "read x; echo got:$x; exit 2",
    ]);
    let out = run_with(
        Command::new(skiff_bin())
            .args(["attach", "reader"])
            .env("SKIFF_DATA_ROOT", skiff.data.path()),
        &[("", b"hello\n")],
    );
    assert_eq!(text(&out.stdout), "got:hello\n", "{out:?}");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn create_then_start_a_streams_the_output_and_exits_with_its_code() {
    let skiff = Skiff::new();
    let id = skiff.ok(&[
        "create",
        "--name",
        "job",
        IMAGE,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(id.trim().len(), 64, "{id:?}");
    assert_eq!(skiff.format("job", "{{.State.Status}}"), "created");
    for _ in 0..2 {
        let out = skiff.run(&["start", "-a", "job"]);
        assert_eq!(out.status.code(), Some(7), "{out:?}");
        assert_eq!(text(&out.stdout), "out\n");
        assert_eq!(text(&out.stderr), "err\n");
    }
    skiff.wait_exited("job");
    skiff.ok(&["create", "--name", "other", IMAGE, "true"]);
    let both = skiff.run(&["start", "-a", "job", "other"]);
    assert_eq!(both.status.code(), Some(1));
    assert_eq!(
        text(&both.stderr),
        "you cannot start and attach multiple containers at once\n"
    );
    assert_eq!(skiff.format("other", "{{.State.Status}}"), "created");
    // A bad create makes nothing and exits 125.
    let bad = skiff.run(&["create", "--memory", "lots", IMAGE, "true"]);
    assert_eq!(bad.status.code(), Some(125), "{bad:?}");
}

#[test]
fn create_i_then_start_ai_pipes_stdin_and_closes_it_at_its_end() {
    let skiff = Skiff::new();
    skiff.ok(&[
        "create",
        "-i",
        "--name",
        "reader",
        IMAGE,
        "sh",
        "-c",
        "read x; echo got:$x; cat; exit 3",
    ]);
    let out = run_with(
        Command::new(skiff_bin())
            .args(["start", "-ai", "reader"])
            .env("SKIFF_DATA_ROOT", skiff.data.path()),
        &[("", b"hello\nmore\n")],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(text(&out.stdout), "got:hello\nmore\n");
}

#[test]
fn create_it_then_start_ai_gets_its_terminal_and_detaches_with_custom_keys() {
    let skiff = Skiff::new();
    skiff.ok(&[
        "create",
        "-it",
        "--name",
        "shell",
        IMAGE,
        "sh",
        "-c",
        "tty; read x; printf %s \"$x\" | od -An -tx1; while read l; do echo \"got-$l\"; done",
    ]);
    let out = run_with(
        &mut on_a_terminal(&skiff, "start -ai --detach-keys ctrl-x,x shell"),
        &[
            // ctrl-x then another key reaches the container as typed.
            ("/dev/pts/", b"\x18ab\n"),
            ("18 61 62", b"\x18x"),
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout:?} {out:?}");
    assert_eq!(skiff.format("shell", "{{.State.Status}}"), "running");
    // A running container is attached to as it is; ctrl-p ctrl-q is the default again.
    let out = run_with(
        &mut on_a_terminal(&skiff, "start -ai shell"),
        &[("", b"ping1\n"), ("got-ping1", b"\x10\x11")],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = run_with(
        &mut on_a_terminal(&skiff, "attach --detach-keys ctrl-@,ctrl-_ shell"),
        &[("", b"ping2\n"), ("got-ping2", b"\x00\x1f")],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(skiff.format("shell", "{{.State.Status}}"), "running");
}

#[test]
fn bad_detach_keys_are_refused_in_one_line() {
    let skiff = Skiff::new();
    skiff.ok(&["run", "-dit", "--name", "box", IMAGE, "sh"]);
    let run = skiff.run(&["run", "-i", "--detach-keys", "ctrl-1", IMAGE, "true"]);
    assert_eq!(run.status.code(), Some(125), "{run:?}");
    assert!(
        text(&run.stderr).starts_with("skiff: Invalid detach keys (ctrl-1) provided\n"),
        "{run:?}"
    );
    for args in [
        &["attach", "--detach-keys", "ctrl-,x", "box"][..],
        &["start", "-a", "--detach-keys", "ctrl-,x", "box"][..],
    ] {
        let out = skiff.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?} {out:?}");
        assert_eq!(
            text(&out.stderr),
            "Error response from daemon: Invalid detach keys (ctrl-,x) provided\n",
            "{args:?}"
        );
    }
    let exec = skiff.run(&["exec", "--detach-keys", "xy", "box", "true"]);
    assert_eq!(exec.status.code(), Some(1), "{exec:?}");
    assert_eq!(
        text(&exec.stderr),
        "Error response from daemon: Invalid escape keys (xy) provided\n"
    );
    // Only the CLI runs one container: nothing was made.
    assert_eq!(skiff.ok(&["ps", "-a", "-q"]).lines().count(), 1);
}

#[test]
fn a_terminal_from_input_that_is_not_one_is_refused_as_docker_does() {
    let skiff = Skiff::new();
    skiff.ok(&["run", "-dit", "--name", "box", IMAGE, "sh"]);
    // Skiff::run gives the CLI /dev/null as stdin.
    for args in [
        &["run", "-it", "--rm", IMAGE, "sh"][..],
        &["exec", "-it", "box", "sh"][..],
        &["attach", "box"][..],
    ] {
        let out = skiff.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?} {out:?}");
        assert_eq!(
            text(&out.stderr),
            "the input device is not a TTY\n",
            "{args:?}"
        );
    }
    assert_eq!(skiff.ok(&["ps", "-a", "-q"]).lines().count(), 1);
    // A terminal without stdin needs none.
    let out = skiff.run(&["run", "-t", "--rm", IMAGE, "echo", "hi"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout).trim_end(), "hi");
}
