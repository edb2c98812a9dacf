//! Throw-away etcd: a single member ([`EtcdMember`]) or an N-member cluster ([`EtcdCluster`])
//! on free 127.0.0.1 ports.
//!
//! Each member runs `etcd` as a child process with its data directory and log file in a temp
//! dir owned by the fixture. Starting waits until every member answers `GET /health` with
//! `"health":"true"`; a member that exits or stays unhealthy fails the start with the tail of
//! its log. If a member could not bind its ports (another test grabbed one between
//! [`free_port`] and etcd's own bind), the whole start is retried with new ports. Dropping the
//! fixture kills every member and deletes the temp dir, also when the test panics.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tempfile::TempDir;

use crate::ports::free_port;
use crate::process::ChildGuard;
use crate::require::require_program;
use crate::wait::wait_for;
use crate::{Result, TestkitError};

/// The etcd server program.
const PROGRAM: &str = "etcd";
/// The Debian package that provides [`PROGRAM`].
const PACKAGE: &str = "etcd-server";
/// How long a start (or restart) may take until every member is healthy.
const HEALTH_DEADLINE: Duration = Duration::from_secs(20);
/// How many times a start is tried when a member fails to bind its ports.
const START_ATTEMPTS: usize = 3;
/// How many log lines an error shows per member.
const LOG_TAIL_LINES: usize = 25;
/// What etcd logs when a port is taken.
const BIND_FAILURE: &str = "address already in use";

/// Makes cluster and member names unique within this process (the pid makes them unique
/// across processes).
static NEXT_CLUSTER: AtomicU32 = AtomicU32::new(0);

/// A throw-away single etcd member on free loopback ports.
///
/// Killed, and its temp dir (data dir and log) deleted, on drop.
#[derive(Debug)]
pub struct EtcdMember {
    cluster: EtcdCluster,
}

impl EtcdMember {
    /// Starts a member on free 127.0.0.1 client and peer ports and waits until it is healthy.
    ///
    /// Fails with [`TestkitError::MissingProgram`] if `etcd` is not installed.
    pub fn start() -> Result<EtcdMember> {
        Ok(EtcdMember {
            cluster: EtcdCluster::start(1)?,
        })
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        self.cluster.endpoint(0)
    }

    /// The member's (unique) name.
    pub fn name(&self) -> &str {
        self.cluster.member_name(0)
    }

    /// The member's data directory (inside the fixture's temp dir).
    pub fn data_dir(&self) -> &Path {
        self.cluster.member_data_dir(0)
    }

    /// The file etcd's stdout and stderr go to.
    pub fn log_path(&self) -> &Path {
        self.cluster.member_log_path(0)
    }

    /// The process id of the running etcd, or `None` once it has been killed.
    pub fn pid(&self) -> Option<u32> {
        self.cluster.pid(0)
    }

    /// Whether the etcd process is still running.
    pub fn is_running(&mut self) -> bool {
        self.cluster.is_running(0)
    }

    /// Kills (SIGKILL) and reaps the etcd process now; its data dir stays until drop.
    pub fn kill(&mut self) {
        self.cluster.kill_member(0);
    }

    /// Starts the member again on the same ports and data dir and waits until it is healthy.
    pub fn restart(&mut self) -> Result<()> {
        self.cluster.restart_member(0)
    }
}

/// A throw-away etcd cluster of N members on loopback, formed with `--initial-cluster`.
///
/// Members are numbered `0..len()`. Every member is killed, and the temp dir holding their
/// data dirs and logs deleted, on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: TempDir,
}

impl EtcdCluster {
    /// Starts `n` members (n ≥ 1) on free 127.0.0.1 ports and waits until all are healthy.
    ///
    /// Fails with [`TestkitError::MissingProgram`] if `etcd` is not installed.
    pub fn start(n: usize) -> Result<EtcdCluster> {
        if n == 0 {
            return Err(TestkitError::Invalid {
                fixture: "etcd",
                detail: "a cluster needs at least one member".to_string(),
            });
        }
        let program = require_program(PROGRAM, PACKAGE)?;
        let mut attempt = 1;
        loop {
            let ports = distinct_free_ports(2 * n)?;
            match EtcdCluster::try_start(&program, &ports) {
                Ok(cluster) => return Ok(cluster),
                Err(failure) if failure.port_taken && attempt < START_ATTEMPTS => attempt += 1,
                Err(failure) => return Err(failure.error),
            }
        }
    }

    /// One start attempt in a new temp dir; member `i` gets client port `ports[2i]` and peer
    /// port `ports[2i + 1]`.
    fn try_start(program: &Path, ports: &[u16]) -> std::result::Result<EtcdCluster, StartFailure> {
        let n = ports.len() / 2;
        let dir = tempfile::Builder::new()
            .prefix("skiff-etcd-")
            .tempdir()
            .map_err(TestkitError::io("create temp dir in", std::env::temp_dir()))
            .map_err(StartFailure::setup)?;
        let prefix = format!(
            "skiff-{}-{}",
            std::process::id(),
            NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("{prefix}-m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                data_dir: dir.path().join(format!("m{i}.etcd")),
                log_path: dir.path().join(format!("m{i}.log")),
                program: program.to_path_buf(),
                initial_cluster: String::new(),
                token: format!("{prefix}-token"),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|member| format!("{}={}", member.name, member.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for member in &mut members {
            member.initial_cluster.clone_from(&initial_cluster);
        }
        let mut cluster = EtcdCluster { members, dir };
        for member in &mut cluster.members {
            member.spawn().map_err(StartFailure::setup)?;
        }
        let all: Vec<usize> = (0..n).collect();
        match cluster.wait_healthy(&all) {
            Ok(()) => Ok(cluster),
            Err(error) => {
                let port_taken = cluster
                    .members
                    .iter()
                    .any(|member| member.log_contains(BIND_FAILURE));
                Err(StartFailure { error, port_taken })
            }
        }
    }

    /// Waits until the members at `indices` are healthy, failing early (with their log tails)
    /// if one of them exits.
    fn wait_healthy(&mut self, indices: &[usize]) -> Result<()> {
        let names: Vec<&str> = indices
            .iter()
            .map(|&i| self.members[i].name.as_str())
            .collect();
        let what = format!("etcd member(s) {} to report healthy", names.join(", "));
        let members = &mut self.members;
        let outcome = wait_for(&what, HEALTH_DEADLINE, || {
            for &i in indices {
                if !members[i].is_running() {
                    return Some(Err(format!(
                        "etcd member {} exited before becoming healthy",
                        members[i].name
                    )));
                }
            }
            indices
                .iter()
                .all(|&i| members[i].is_healthy())
                .then_some(Ok(()))
        });
        let cause = match outcome {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(exited)) => exited,
            Err(timeout) => timeout.to_string(),
        };
        let mut detail = cause;
        for &i in indices {
            let member = &self.members[i];
            detail.push_str(&format!(
                "\n--- last lines of {} ({}):\n{}",
                member.name,
                member.log_path.display(),
                member.log_tail(LOG_TAIL_LINES)
            ));
        }
        Err(TestkitError::Invalid {
            fixture: "etcd",
            detail,
        })
    }

    /// The number of members (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members (never true for a started cluster).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The client URLs of all members, killed ones included, e.g. `http://127.0.0.1:40123`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// The client URLs of the members that are running now.
    pub fn live_endpoints(&mut self) -> Vec<String> {
        self.members
            .iter_mut()
            .filter_map(|member| member.is_running().then(|| member.client_url()))
            .collect()
    }

    /// The client URL of member `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client_url()
    }

    /// The (unique) name of member `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn member_name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// The data directory of member `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn member_data_dir(&self, i: usize) -> &Path {
        &self.members[i].data_dir
    }

    /// The log file of member `i` (its stdout and stderr).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn member_log_path(&self, i: usize) -> &Path {
        &self.members[i].log_path
    }

    /// The temp dir that holds every member's data dir and log; deleted on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id of member `i`, or `None` if it has been killed.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(ChildGuard::pid)
    }

    /// Whether member `i` is running.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.members[i].is_running()
    }

    /// Kills (SIGKILL) and reaps member `i` now; its data dir stays so it can be restarted.
    ///
    /// Nothing is awaited: if `i` was the leader, requests fail until the others have elected
    /// a new one (one to two election timeouts, about 1–2 s). Call
    /// [`wait_until_healthy`](Self::wait_until_healthy) to wait for that.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn kill_member(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Waits until every running member reports healthy, which needs a quorum of members
    /// running and an elected leader; fails with the members' log tails otherwise.
    pub fn wait_until_healthy(&mut self) -> Result<()> {
        let running: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].is_running())
            .collect();
        if running.is_empty() {
            return Err(TestkitError::Invalid {
                fixture: "etcd",
                detail: "no member is running".to_string(),
            });
        }
        self.wait_healthy(&running)
    }

    /// The index of the current leader as the running members report it, or `None` while
    /// there is none (or they disagree, during an election).
    pub fn leader(&mut self) -> Option<usize> {
        let mut ids = Vec::with_capacity(self.members.len());
        let mut leaders = Vec::new();
        for member in &mut self.members {
            let status = if member.is_running() {
                member.status()
            } else {
                None
            };
            ids.push(status.as_ref().map(|(id, _)| id.clone()));
            leaders.extend(status.map(|(_, leader)| leader));
        }
        let leader = leaders.first()?;
        if leaders.iter().any(|other| other != leader) {
            return None;
        }
        ids.iter().position(|id| id.as_ref() == Some(leader))
    }

    /// Starts member `i` again (killing it first if it runs) on its old ports and data dir,
    /// and waits until it is healthy, which needs a quorum of members running.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn restart_member(&mut self, i: usize) -> Result<()> {
        self.members[i].kill();
        self.members[i].spawn()?;
        self.wait_healthy(&[i])
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        // Kill before the temp dir (a field, dropped after this) is deleted.
        for member in &mut self.members {
            member.kill();
        }
    }
}

/// Why a start attempt failed, and whether a retry on new ports may help.
struct StartFailure {
    error: TestkitError,
    port_taken: bool,
}

impl StartFailure {
    /// A failure that a retry would not fix.
    fn setup(error: TestkitError) -> Self {
        StartFailure {
            error,
            port_taken: false,
        }
    }
}

/// One etcd process of a cluster and everything needed to (re)start it.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    program: PathBuf,
    initial_cluster: String,
    token: String,
    child: Option<ChildGuard>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// Starts etcd, appending its output to the log file (so a restart keeps the earlier run).
    fn spawn(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(TestkitError::io("open", &self.log_path))?;
        let log_err = log
            .try_clone()
            .map_err(TestkitError::io("duplicate handle of", &self.log_path))?;
        let client_url = self.client_url();
        let peer_url = self.peer_url();
        let mut command = Command::new(&self.program);
        command
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdout(log)
            .stderr(log_err);
        // etcd reads its flags from ETCD_* variables too; the test's environment must not leak in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(key);
            }
        }
        self.child = Some(ChildGuard::spawn(&self.name, &mut command)?);
        Ok(())
    }

    fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(ChildGuard::is_running)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Whether `GET /health` on the client port answers `"health":"true"`.
    fn is_healthy(&self) -> bool {
        http_request(self.client_port, "GET", "/health", None)
            .is_some_and(|body| body.contains(r#""health":"true""#))
    }

    /// This member's raft id and the id of the leader it follows, from the v3 JSON gateway's
    /// `POST /v3/maintenance/status`.
    fn status(&self) -> Option<(String, String)> {
        let body = http_request(
            self.client_port,
            "POST",
            "/v3/maintenance/status",
            Some("{}"),
        )?;
        let status: serde_json::Value = serde_json::from_str(&body).ok()?;
        let id = status
            .get("header")?
            .get("member_id")?
            .as_str()?
            .to_string();
        let leader = status.get("leader")?.as_str()?.to_string();
        Some((id, leader))
    }

    fn log_text(&self) -> String {
        let mut text = Vec::new();
        if let Ok(mut file) = File::open(&self.log_path) {
            let _ = file.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    fn log_contains(&self, needle: &str) -> bool {
        self.log_text().contains(needle)
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// A tiny HTTP/1.0 request to 127.0.0.1 (`body` sent as JSON when given); returns the
/// response body of a 200 answer, or `None` on any failure.
fn http_request(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    // etcd's own health check gives up after a second while it cannot reach the leader; a
    // short bound also keeps a foreign server on a taken port from stalling the wait.
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .ok()?;
    let mut request =
        format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or_default());
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.lines().next()?;
    status
        .split_whitespace()
        .nth(1)
        .filter(|code| *code == "200")?;
    Some(body.to_string())
}

/// `count` distinct free ports (the kernel may hand out the same port twice in a row).
fn distinct_free_ports(count: usize) -> Result<Vec<u16>> {
    let mut ports: Vec<u16> = Vec::with_capacity(count);
    let mut tries = 0;
    while ports.len() < count {
        let port = free_port()?;
        if !ports.contains(&port) {
            ports.push(port);
        }
        tries += 1;
        if tries > count * 10 {
            return Err(TestkitError::Invalid {
                fixture: "etcd",
                detail: format!("could not find {count} distinct free ports"),
            });
        }
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_fails_the_start_with_the_log_tail_and_asks_for_a_retry() {
        let program = require_program(PROGRAM, PACKAGE).unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client_port = taken.local_addr().unwrap().port();
        let peer_port = distinct_free_ports(2)
            .unwrap()
            .into_iter()
            .find(|&port| port != client_port)
            .unwrap();

        let failure = EtcdCluster::try_start(&program, &[client_port, peer_port]).unwrap_err();

        assert!(failure.port_taken);
        let message = failure.error.to_string();
        assert!(
            message.contains("exited before becoming healthy"),
            "{message}"
        );
        assert!(message.contains(BIND_FAILURE), "{message}");
    }

    #[test]
    fn a_cluster_needs_a_member() {
        let err = EtcdCluster::start(0).unwrap_err();
        assert!(err.to_string().contains("at least one member"), "{err}");
    }
}
