//! Container probes (startup, liveness, readiness) with the kubelet's timing fields
//! (`initialDelaySeconds`, `periodSeconds`, `timeoutSeconds`, `failureThreshold`,
//! `successThreshold`).
//!
//! - `exec` runs `skiff exec --data-root DATA <id> CMD...` as a child process (the runtime's
//!   exec forks, which it refuses in the agent's multi-threaded process);
//! - `tcpSocket` and `httpGet` connect from a fresh thread that has joined the pod's network
//!   namespace (`setns` on `/proc/<sandbox pid>/ns/net` changes only that thread): pods have
//!   their own network namespace with loopback only, so the probe targets `127.0.0.1` there
//!   (or `host` when it is an IP). `httpGet` speaks plain HTTP/1.1; 200-399 is success.
//!
//! A startup probe holds the others back until it succeeds; a failing startup or liveness
//! probe stops the container (the restart policy then restarts it); readiness decides the
//! container's `ready`, and so the pod's `Ready` and `ContainersReady` conditions.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{Container as SpecContainer, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_engine::Container;

/// The probe results of one pod's containers.
#[derive(Debug, Default)]
pub struct Probes {
    trackers: HashMap<(String, &'static str), Tracker>,
}

#[derive(Debug, Default)]
struct Tracker {
    /// The engine container the counts are about (a new attempt starts over).
    id: String,
    last: Option<Instant>,
    successes: i32,
    failures: i32,
    passed: bool,
}

/// What probing one container decided.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Whether the container counts as ready.
    pub ready: bool,
    /// `Unhealthy` messages to record.
    pub unhealthy: Vec<String>,
    /// Why the container must be killed (a failed startup or liveness probe).
    pub kill: Option<String>,
}

/// Where probes reach the container.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The `skiff` binary.
    pub program: &'a Path,
    /// The engine's data root.
    pub data_dir: &'a Path,
    /// The sandbox's init pid (its network namespace).
    pub sandbox_pid: i32,
}

impl Probes {
    /// Runs the probes of `spec` that are due against the running `running`.
    pub async fn check(
        &mut self,
        spec: &SpecContainer,
        running: &Container,
        target: Target<'_>,
    ) -> Verdict {
        let id = running.config.id.clone();
        let started = skiff_engine::time::parse_rfc3339(&running.state.started_at)
            .and_then(|s| SystemTime::now().duration_since(s).ok())
            .unwrap_or_default();
        let mut verdict = Verdict {
            ready: true,
            ..Verdict::default()
        };
        if let Some(probe) = &spec.startup_probe {
            let t = self.tracker(&spec.name, "startup", &id);
            if !t.passed {
                verdict.ready = false;
                if let Some(ok) = run_due(t, probe, started, spec, running, target).await {
                    match ok {
                        Ok(()) => t.passed = true,
                        Err(msg) => {
                            verdict
                                .unhealthy
                                .push(format!("Startup probe failed: {msg}"));
                            if t.failures >= threshold(probe.failure_threshold, 3) {
                                verdict.kill = Some(format!(
                                    "Container {} failed startup probe, will be restarted",
                                    spec.name
                                ));
                            }
                        }
                    }
                }
                return verdict;
            }
        }
        if let Some(probe) = &spec.liveness_probe {
            let t = self.tracker(&spec.name, "liveness", &id);
            if let Some(Err(msg)) = run_due(t, probe, started, spec, running, target).await {
                verdict
                    .unhealthy
                    .push(format!("Liveness probe failed: {msg}"));
                if t.failures >= threshold(probe.failure_threshold, 3) {
                    verdict.kill = Some(format!(
                        "Container {} failed liveness probe, will be restarted",
                        spec.name
                    ));
                }
            }
        }
        if let Some(probe) = &spec.readiness_probe {
            let t = self.tracker(&spec.name, "readiness", &id);
            match run_due(t, probe, started, spec, running, target).await {
                Some(Ok(())) if t.successes >= threshold(probe.success_threshold, 1) => {
                    t.passed = true;
                }
                Some(Err(msg)) => {
                    verdict
                        .unhealthy
                        .push(format!("Readiness probe failed: {msg}"));
                    if t.failures >= threshold(probe.failure_threshold, 3) {
                        t.passed = false;
                    }
                }
                _ => {}
            }
            verdict.ready = t.passed;
        }
        verdict
    }

    fn tracker(&mut self, name: &str, kind: &'static str, id: &str) -> &mut Tracker {
        let t = self.trackers.entry((name.to_string(), kind)).or_default();
        if t.id != id {
            *t = Tracker {
                id: id.to_string(),
                ..Tracker::default()
            };
        }
        t
    }
}

fn threshold(value: Option<i32>, default: i32) -> i32 {
    value.filter(|v| *v > 0).unwrap_or(default)
}

fn seconds(value: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(u64::try_from(value.unwrap_or(default).max(0)).unwrap_or(0))
}

/// Runs `probe` if it is due and counts the result; `None` when not due.
async fn run_due(
    t: &mut Tracker,
    probe: &Probe,
    started: Duration,
    spec: &SpecContainer,
    running: &Container,
    target: Target<'_>,
) -> Option<Result<(), String>> {
    if started < seconds(probe.initial_delay_seconds, 0) {
        return None;
    }
    let period = seconds(probe.period_seconds, 10).max(Duration::from_secs(1));
    if t.last.is_some_and(|l| l.elapsed() < period) {
        return None;
    }
    t.last = Some(Instant::now());
    let timeout = seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1));
    let result = run(probe, spec, running, target, timeout).await;
    match &result {
        Ok(()) => {
            t.successes += 1;
            t.failures = 0;
        }
        Err(_) => {
            t.failures += 1;
            t.successes = 0;
        }
    }
    Some(result)
}

/// Runs one probe handler (`exec`, `tcpSocket` or `httpGet`) against `running` within
/// `timeout`; lifecycle hooks run their handlers through it too.
pub(crate) async fn run(
    probe: &Probe,
    spec: &SpecContainer,
    running: &Container,
    target: Target<'_>,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(exec) = &probe.exec {
        let mut command = tokio::process::Command::new(target.program);
        command
            .arg("exec")
            .arg("--data-root")
            .arg(target.data_dir)
            .arg(&running.config.id)
            .args(exec.command.iter().flatten())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        return match tokio::time::timeout(timeout, command.output()).await {
            Err(_) => Err(format!("command timed out after {}s", timeout.as_secs())),
            Ok(Err(e)) => Err(format!("cannot run the probe: {e}")),
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => {
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                Err(format!(
                    "command exited with {}: {}",
                    out.status.code().unwrap_or(-1),
                    text.trim()
                ))
            }
        };
    }
    let (host, port, http) = if let Some(tcp) = &probe.tcp_socket {
        (tcp.host.clone(), port_of(&tcp.port, spec)?, None)
    } else if let Some(h) = &probe.http_get {
        if h.scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"))
        {
            return Err("HTTPS probes are not supported".into());
        }
        let mut request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kube-probe/1.33\r\nConnection: close\r\n",
            h.path
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".into()),
            h.host.clone().unwrap_or_else(|| "127.0.0.1".into()),
        );
        for header in h.http_headers.iter().flatten() {
            request.push_str(&format!("{}: {}\r\n", header.name, header.value));
        }
        request.push_str("\r\n");
        (h.host.clone(), port_of(&h.port, spec)?, Some(request))
    } else {
        return Err("no probe handler".into());
    };
    let ip = host
        .and_then(|h| h.parse::<IpAddr>().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let addr = SocketAddr::new(ip, port);
    let netns = format!("/proc/{}/ns/net", target.sandbox_pid);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("skiff-probe".into())
        .spawn(move || {
            let _ = tx.send(connect_in(&netns, addr, http.as_deref(), timeout));
        })
        .map_err(|e| format!("cannot start a probe thread: {e}"))?;
    rx.await
        .unwrap_or_else(|_| Err("the probe thread ended".into()))
}

fn port_of(port: &IntOrString, spec: &SpecContainer) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => spec
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no port named {name:?}")),
    }
}

/// In the calling (fresh, throw-away) thread: joins the network namespace `netns` and connects
/// to `addr` there (the socket stays in that namespace whatever thread uses it later).
pub fn dial_in_netns(
    netns: &str,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, String> {
    let ns = std::fs::File::open(netns).map_err(|e| format!("open {netns}: {e}"))?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("join {netns}: {e}"))?;
    TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("dial tcp {addr}: connect: {e}"))
}

/// In the calling (fresh, throw-away) thread: joins the network namespace `netns`, connects to
/// `addr` and, for HTTP, sends `request` and checks the status code.
fn connect_in(
    netns: &str,
    addr: SocketAddr,
    request: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
    let mut stream = dial_in_netns(netns, addr, timeout)?;
    let Some(request) = request else {
        return Ok(());
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("Get \"http://{addr}\": {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 4096 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("Get \"http://{addr}\": {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("Get \"http://{addr}\": malformed HTTP response"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_ports_default_like_the_api() {
        assert_eq!(threshold(None, 3), 3);
        assert_eq!(threshold(Some(0), 1), 1);
        assert_eq!(seconds(Some(5), 10), Duration::from_secs(5));
        let spec: SpecContainer = serde_json::from_value(serde_json::json!({
            "name": "c", "ports": [{"name": "http", "containerPort": 8080}]
        }))
        .unwrap();
        assert_eq!(
            port_of(&IntOrString::String("http".into()), &spec),
            Ok(8080)
        );
        assert_eq!(port_of(&IntOrString::Int(80), &spec), Ok(80));
        assert!(port_of(&IntOrString::String("x".into()), &spec).is_err());
    }
}
