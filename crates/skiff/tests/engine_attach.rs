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
