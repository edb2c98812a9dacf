//! The embedded node agent runs pods for real (root): a server with its agent and a loopback
//! registry; real kubectl. Every container is removed when a test ends.
#![allow(clippy::unwrap_used)]

mod agent_support;

use std::time::{Duration, Instant};

use agent_support::Cluster;

const LONG: Duration = Duration::from_secs(90);

fn phase(c: &Cluster, pod: &str) -> String {
    c.field(&["get", "pod", pod], "{.status.phase}")
}

#[test]
fn a_pod_runs_shows_its_logs_survives_an_agent_restart_and_is_deleted() {
    let mut c = Cluster::start();
    c.wait("the node to be Ready", LONG, || {
        c.field(
            &["get", "node", "node-1"],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True"
    });
    let nodes = c.k(&["get", "nodes"]);
    assert!(
        nodes.contains("node-1") && nodes.contains("Ready"),
        "{nodes}"
    );
    let capacity = c.field(&["get", "node", "node-1"], "{.status.capacity.pods}");
    assert_eq!(capacity, "110");
    c.wait("the node lease", LONG, || {
        !c.field(
            &["get", "lease", "-n", "kube-node-lease", "node-1"],
            "{.spec.renewTime}",
        )
        .is_empty()
    });

    let created = Instant::now();
    c.k(&[
        "run",
        "web",
        &format!("--image={}", c.image),
        "--",
        "sh",
        "-c",
        "echo hello; hostname; sleep 300",
    ]);
    c.wait("web to run", LONG, || phase(&c, "web") == "Running");
    eprintln!("pod create -> Running: {:?}", created.elapsed());
    c.wait("web's output", LONG, || {
        run_ok(&c, &["logs", "web"]).contains("hello")
    });
    let logs = c.k(&["logs", "web"]);
    assert_eq!(logs, "hello\nweb\n", "the pod's hostname is its name");
    assert_eq!(c.k(&["logs", "web", "--tail", "1"]), "web\n");
    let ready = c.field(
        &["get", "pod", "web"],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
    );
    assert_eq!(ready, "True");
    assert_eq!(
        c.field(&["get", "pod", "web"], "{.status.podIP}"),
        "127.0.0.1"
    );
    let id = c.field(
        &["get", "pod", "web"],
        "{.status.containerStatuses[0].containerID}",
    );
    assert!(id.starts_with("skiff://"), "{id}");
    let engine = c.containers();
    assert_eq!(
        engine
            .iter()
            .filter(|n| n.starts_with("k8s_web_web_"))
            .count(),
        1,
        "{engine:?}"
    );
    assert_eq!(
        engine
            .iter()
            .filter(|n| n.starts_with("k8s_POD_web_"))
            .count(),
        1,
        "{engine:?}"
    );

    // The agent restarts (with its server): it adopts the running containers.
    c.kill_server();
    c.boot();
    c.wait("the restarted server to answer", LONG, || {
        phase(&c, "web") == "Running"
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(phase(&c, "web"), "Running");
    assert_eq!(
        c.field(
            &["get", "pod", "web"],
            "{.status.containerStatuses[0].containerID}"
        ),
        id
    );
    assert_eq!(
        c.field(
            &["get", "pod", "web"],
            "{.status.containerStatuses[0].restartCount}"
        ),
        "0"
    );
    let engine = c.containers();
    assert_eq!(
        engine.len(),
        2,
        "no duplicates after the restart: {engine:?}"
    );
    assert!(c.k(&["logs", "web"]).contains("hello"));

    // sh as PID 1 ignores SIGTERM: the grace period ends with SIGKILL.
    let deleting = Instant::now();
    c.k(&["delete", "pod", "web", "--grace-period=2"]);
    assert!(deleting.elapsed() < Duration::from_secs(30));
    c.wait("web's containers to go", LONG, || c.containers().is_empty());
    let left = run_ok(&c, &["get", "pods", "-o", "name"]);
    assert!(left.trim().is_empty(), "{left}");
}

fn run_ok(c: &Cluster, args: &[&str]) -> String {
    let out = agent_support::run(c.kubectl().args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn restart_policies_init_containers_and_environment_from_a_config_map() {
    let c = Cluster::start();
    let image = &c.image;
    c.k(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=GREETING=bonjour",
    ]);
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: fails}}
spec:
  restartPolicy: Never
  containers:
  - {{name: main, image: "{image}", command: ["sh", "-c", "echo bye; exit 3"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: crashes}}
spec:
  restartPolicy: OnFailure
  containers:
  - {{name: main, image: "{image}", command: ["sh", "-c", "exit 1"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: ordered, labels: {{tier: demo}}}}
spec:
  restartPolicy: Never
  initContainers:
  - {{name: first, image: "{image}", command: ["sh", "-c", "echo init-ran"]}}
  containers:
  - name: main
    image: "{image}"
    command: ["sh", "-c", "echo $GREETING $(POD) $TIER; pwd; id -u"]
    workingDir: /tmp
    securityContext: {{runAsUser: 1234}}
    env:
    - name: GREETING
      valueFrom: {{configMapKeyRef: {{name: settings, key: GREETING}}}}
    - name: POD
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    - name: TIER
      valueFrom: {{fieldRef: {{fieldPath: "metadata.labels['tier']"}}}}
"#
    );
    let path = c.path().join("pods.yaml");
    std::fs::write(&path, manifest).unwrap();
    c.k(&["apply", "-f", path.to_str().unwrap()]);

    c.wait("fails to fail", LONG, || phase(&c, "fails") == "Failed");
    assert_eq!(
        c.field(
            &["get", "pod", "fails"],
            "{.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "3"
    );
    assert_eq!(
        c.field(
            &["get", "pod", "fails"],
            "{.status.containerStatuses[0].state.terminated.reason}"
        ),
        "Error"
    );
    assert_eq!(c.k(&["logs", "fails"]), "bye\n");
    // Following a container that ended returns its log and ends.
    assert_eq!(c.k(&["logs", "-f", "fails"]), "bye\n");

    c.wait("ordered to succeed", LONG, || {
        phase(&c, "ordered") == "Succeeded"
    });
    assert_eq!(c.k(&["logs", "ordered", "-c", "first"]), "init-ran\n");
    assert_eq!(
        c.k(&["logs", "ordered"]),
        "bonjour ordered demo\n/tmp\n1234\n"
    );
    let init_end = c.field(
        &["get", "pod", "ordered"],
        "{.status.initContainerStatuses[0].state.terminated.finishedAt}",
    );
    let main_start = c.field(
        &["get", "pod", "ordered"],
        "{.status.containerStatuses[0].state.terminated.startedAt}",
    );
    assert!(
        !init_end.is_empty() && init_end <= main_start,
        "{init_end} then {main_start}"
    );

    // OnFailure: the first restart is immediate, the next waits out the back-off.
    c.wait("crashes to restart twice", LONG, || {
        c.field(
            &["get", "pod", "crashes"],
            "{.status.containerStatuses[0].restartCount}",
        )
        .parse::<u32>()
        .is_ok_and(|n| n >= 2)
    });
    c.wait("the CrashLoopBackOff reason", LONG, || {
        c.field(
            &["get", "pod", "crashes"],
            "{.status.containerStatuses[0].state.waiting.reason}",
        ) == "CrashLoopBackOff"
    });
    assert_eq!(phase(&c, "crashes"), "Running");
    assert_eq!(
        c.field(
            &["get", "pod", "crashes"],
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "1"
    );
    c.k(&["delete", "pod", "--all", "--grace-period=1"]);
    c.wait("every container to go", LONG, || c.containers().is_empty());
}

#[test]
fn a_deployment_gets_its_pods_running_through_the_scheduler_and_the_agent() {
    let c = Cluster::start();
    c.k(&[
        "create",
        "deployment",
        "web",
        &format!("--image={}", c.image),
        "--replicas=2",
        "--",
        "sleep",
        "300",
    ]);
    c.wait("two running pods", LONG, || {
        let phases = c.field(
            &["get", "pods", "-l", "app=web"],
            "{.items[*].status.phase}",
        );
        phases == "Running Running"
    });
    c.wait("the deployment to be available", LONG, || {
        c.field(&["get", "deployment", "web"], "{.status.availableReplicas}") == "2"
    });
    let engine = c.containers();
    assert_eq!(
        engine.len(),
        4,
        "two sandboxes and two containers: {engine:?}"
    );
    c.k(&["delete", "deployment", "web"]);
    c.wait("the pods and their containers to go", LONG, || {
        c.containers().is_empty()
    });
}
