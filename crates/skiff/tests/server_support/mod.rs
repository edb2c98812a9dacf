//! A throw-away `skiff server` for end-to-end tests: its own data dir and free port, killed
//! on drop; plus helpers to run real kubectl against it.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use skiff_testkit::ports::free_port;
use skiff_testkit::process::ChildGuard;

/// The directory holding `kubectl.1.27` ... `kubectl.1.33`.
pub const KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";

/// A running server.
pub struct Server {
    child: ChildGuard,
    /// The data directory (removed on drop).
    pub dir: tempfile::TempDir,
    /// Its HTTPS port.
    pub port: u16,
}

fn skiff() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skiff"))
}

impl Server {
    /// Starts a server with a fresh data dir and waits until it answers `/readyz`.
    pub fn start() -> Server {
        Server::start_in(tempfile::tempdir().unwrap(), &[])
    }

    /// Starts a server over `dir` (which may hold a previous server's state).
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port().unwrap();
            let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
            let mut command = Command::new(skiff());
            command
                .args(["server", "--data-dir"])
                .arg(dir.path())
                .args(["--https-port", &port.to_string(), "--disable-agent"])
                .args(extra)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log);
            let mut child = ChildGuard::spawn("skiff server", &mut command).unwrap();
            let start = Instant::now();
            let mut up = false;
            while start.elapsed() < Duration::from_secs(30) && child.is_running() {
                if ready(dir.path(), port) {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if up {
                return Server { child, dir, port };
            }
            drop(child);
            last_log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
            if !last_log.contains("in use") {
                panic!("skiff server did not become ready:\n{last_log}");
            }
        }
        panic!("skiff server found no free port:\n{last_log}");
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("server/admin.kubeconfig")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Kills the server (SIGKILL) and gives back its data dir.
    pub fn kill(mut self) -> tempfile::TempDir {
        self.child.kill();
        self.dir
    }

    /// A kubectl command of `version` (`1.27` ... `1.33`) against this server.
    pub fn kubectl(&self, version: &str) -> Command {
        let mut command = Command::new(format!("{KUBECTL_DIR}/kubectl.{version}"));
        command
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .env_remove("KUBECTL_EXTERNAL_DIFF");
        command
    }
}

/// Whether the server at `port` answers `/readyz` (its kubeconfig written, TLS up).
fn ready(dir: &Path, port: u16) -> bool {
    let kubeconfig = dir.join("server/admin.kubeconfig");
    let Ok(text) = std::fs::read_to_string(&kubeconfig) else {
        return false;
    };
    if !text.contains(&format!(":{port}\n")) {
        return false;
    }
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Runs a command and returns its output; panics with stderr when it fails.
pub fn ok(command: &mut Command) -> String {
    let out = run(command);
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command to completion.
pub fn run(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().unwrap()
}

/// Runs a command with `input` on its stdin and returns its output.
pub fn run_with_stdin(command: &mut Command, input: &str) -> Output {
    use std::io::Write as _;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Polls `check` until it holds or `deadline` passes.
pub fn wait_until(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
