//! Two `skiff server`s on one etcd elect one leader for the scheduler and one for the
//! controllers through `kube-system` Leases: a Deployment gets exactly its replicas (no second
//! ReplicaSet controller doubling them), when the leader is killed the other server takes both
//! Leases over and keeps reconciling and scheduling, and a server stopped by SIGTERM releases
//! its Leases to a new one at once.

#![allow(clippy::unwrap_used)] // test code: a panic is how a test reports failure

mod server_support;

use std::time::{Duration, Instant};

use server_support::{Server, ok, run, wait_until};
use skiff_testkit::etcd::EtcdMember;

const LOCKS: [&str; 2] = ["kube-scheduler", "kube-controller-manager"];
/// The test's `--leader-elect-lease-duration`.
const LEASE: Duration = Duration::from_secs(4);

/// The holder of `kube-system/<lock>` as `server` reports it (empty when none).
fn holder(server: &Server, lock: &str) -> String {
    let out = run(server.kubectl("1.33").args([
        "get",
        "lease",
        "-n",
        "kube-system",
        lock,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]));
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    } else {
        String::new()
    }
}

/// Which of `servers` logged acquiring the lease as `identity`.
fn server_of(servers: &[&Server], identity: &str) -> Option<usize> {
    servers.iter().position(|s| {
        s.log()
            .lines()
            .any(|l| l.contains("became leader") && l.contains(identity))
    })
}

/// The pods of app `web`: (name, nodeName).
fn pods(server: &Server) -> Vec<(String, String)> {
    let out = ok(server.kubectl("1.33").args([
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName}{"\n"}{end}"#,
    ]));
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.split_whitespace();
            (
                parts.next().unwrap_or_default().to_string(),
                parts.next().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Waits until exactly `n` pods of `web` exist and all are bound to a node.
fn wait_scheduled(server: &Server, n: usize, deadline: Duration) {
    wait_until(&format!("{n} scheduled pods"), deadline, || {
        let pods = pods(server);
        pods.len() == n && pods.iter().all(|(_, node)| !node.is_empty())
    });
}

/// Over a bounded window, the pod count never exceeds `n` (a second ReplicaSet controller
/// would create extra pods).
fn assert_stays(server: &Server, n: usize, window: Duration) {
    let start = Instant::now();
    while start.elapsed() < window {
        let pods = pods(server);
        assert!(pods.len() <= n, "more than {n} pods: {pods:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(pods(server).len(), n);
}

/// A Ready fake node (no agent runs with `--disable-agent`), as the controllers' tests make.
fn create_node(server: &Server, name: &str) {
    use std::io::Write;
    let manifest = format!(
        r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}","labels":{{"kubernetes.io/hostname":"{name}"}}}}}}"#
    );
    let mut child = server
        .kubectl("1.33")
        .args(["create", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = serde_json::json!({"status": {
        "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
        "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "fake node", "lastHeartbeatTime": now, "lastTransitionTime": now}],
    }});
    ok(server.kubectl("1.33").args([
        "patch",
        "node",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]));
}

#[test]
fn one_server_leads_and_another_takes_over_when_it_dies_or_stops() {
    let etcd = EtcdMember::start().unwrap_or_else(|e| panic!("{e}"));
    let endpoint = etcd.endpoint();
    let args = [
        "--store",
        "etcd",
        "--etcd-endpoints",
        endpoint.as_str(),
        "--leader-elect-lease-duration",
        "4s",
        "--leader-elect-renew-deadline",
        "3s",
        "--leader-elect-retry-period",
        "1s",
        // Fake nodes renew no Lease: keep them Ready for the test's length.
        "--node-monitor-grace-period",
        "10m",
    ];
    let a = Server::start_in(tempfile::tempdir().unwrap(), &args);
    let b = Server::start_in(tempfile::tempdir().unwrap(), &args);

    // Each Lease has exactly one holder, one of the two servers, and both agree on it.
    let mut holders = Vec::new();
    for lock in LOCKS {
        wait_until(
            &format!("a holder of {lock}"),
            Duration::from_secs(20),
            || {
                let h = holder(&a, lock);
                !h.is_empty() && h == holder(&b, lock) && server_of(&[&a, &b], &h).is_some()
            },
        );
        holders.push(holder(&a, lock));
    }
    // Only one server logged leading each lock (the other is waiting for it).
    for lock in LOCKS {
        let leading = [&a, &b]
            .iter()
            .filter(|s| {
                s.log().lines().any(|l| {
                    l.contains("became leader") && l.contains(&format!("kube-system/{lock}"))
                })
            })
            .count();
        assert_eq!(leading, 1, "servers leading {lock}");
    }
    let events = ok(a.kubectl("1.33").args([
        "get",
        "events",
        "-n",
        "kube-system",
        "--field-selector",
        "reason=LeaderElection",
        "-o",
        "jsonpath={.items[*].message}",
    ]));
    for h in &holders {
        assert!(events.contains(&format!("{h} became leader")), "{events}");
    }

    create_node(&a, "fake-1");
    create_node(&b, "fake-2");
    // Created through the server that does not run the controllers.
    let controllers = server_of(&[&a, &b], &holders[1]).unwrap();
    let (leader, other) = if controllers == 0 { (a, b) } else { (b, a) };
    ok(other.kubectl("1.33").args([
        "create",
        "deployment",
        "web",
        "--image=registry.k8s.io/pause:3.10",
        "--replicas=3",
    ]));
    wait_scheduled(&other, 3, Duration::from_secs(60));
    assert_stays(&other, 3, Duration::from_secs(5));

    // The controller-manager leader dies: the survivor takes both Leases within the lease
    // duration plus a margin, and reconciles and schedules from then on.
    let killed_at = Instant::now();
    let _dir = leader.kill();
    for lock in LOCKS {
        wait_until(
            &format!("the survivor to hold {lock}"),
            LEASE + Duration::from_secs(8),
            || {
                let h = holder(&other, lock);
                !h.is_empty() && server_of(&[&other], &h).is_some()
            },
        );
    }
    let took_over = killed_at.elapsed();
    assert!(
        took_over < LEASE + Duration::from_secs(8),
        "took {took_over:?}"
    );
    ok(other
        .kubectl("1.33")
        .args(["scale", "deployment", "web", "--replicas=5"]));
    wait_scheduled(&other, 5, Duration::from_secs(60));
    assert_stays(&other, 5, Duration::from_secs(3));
    eprintln!("survivor took both leases {took_over:?} after the kill");

    // A server stopped by SIGTERM releases its Leases: a new server takes them at its next
    // retry, well before they would expire.
    let c = Server::start_in(tempfile::tempdir().unwrap(), &args);
    wait_until(
        "the new server to campaign",
        Duration::from_secs(20),
        || c.log().matches("waiting for the leader lease").count() >= 2,
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(other.pid()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let terminated_at = Instant::now();
    for lock in LOCKS {
        wait_until(&format!("the new server to hold {lock}"), LEASE, || {
            let h = holder(&c, lock);
            !h.is_empty() && server_of(&[&c], &h).is_some()
        });
    }
    let handed_over = terminated_at.elapsed();
    wait_until("the stopped server's log", Duration::from_secs(10), || {
        other.log().matches("released the leader lease").count() == 2
    });
    eprintln!("a new server took both released leases {handed_over:?} after SIGTERM");
}

#[test]
fn a_leader_that_cannot_renew_stops_before_its_lease_expires_and_campaigns_again() {
    let etcd = EtcdMember::start().unwrap_or_else(|e| panic!("{e}"));
    let endpoint = etcd.endpoint();
    let server = Server::start_in(
        tempfile::tempdir().unwrap(),
        &[
            "--store",
            "etcd",
            "--etcd-endpoints",
            endpoint.as_str(),
            "--leader-elect-lease-duration",
            "4s",
            "--leader-elect-renew-deadline",
            "3s",
            "--leader-elect-retry-period",
            "1s",
        ],
    );
    let count = |what: &str| server.log().matches(what).count();
    wait_until("both leases", Duration::from_secs(20), || {
        count("became leader") == 2
    });

    // The store stops answering: no renewal can succeed, and the leader must stop acting
    // within the renew deadline, before any other candidate could take the Lease.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(etcd.pid().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let frozen_at = Instant::now();
    let mut lost = None;
    while frozen_at.elapsed() < LEASE + Duration::from_secs(4) {
        if count("within the renew deadline") == 2 {
            lost = Some(frozen_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // (Dropping the member kills it even when stopped, should an assertion below fail.)
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let lost = lost.unwrap_or_else(|| panic!("still leading:\n{}", server.log()));
    assert!(
        lost < LEASE,
        "gave up leading {lost:?} after the store froze"
    );
    wait_until("the components to stop", Duration::from_secs(10), || {
        count("stopped leading") == 2 && count("controllers stopped") == 1
    });

    // Once the store answers again the server campaigns and leads again.
    wait_until("leading again", Duration::from_secs(20), || {
        count("became leader") == 4
    });
    eprintln!("gave up leading {lost:?} after the store froze");
}
