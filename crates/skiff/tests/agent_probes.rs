//! Container probes through the embedded node agent, for real (root) with kubectl 1.33: an
//! exec liveness probe that starts failing restarts the container (`Unhealthy` and `Killing`
//! events, a growing restart count); httpGet readiness flips the pod's `Ready` and
//! `ContainersReady` conditions both ways; tcpSocket startup and readiness probes reach a
//! listener inside the pod's network namespace.
#![allow(clippy::unwrap_used)]

mod agent_support;

use std::time::Duration;

use agent_support::{Cluster, run};

const LONG: Duration = Duration::from_secs(90);

fn apply(c: &Cluster, name: &str, yaml: &str) {
    let file = c.path().join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    c.k(&["apply", "-f", file.to_str().unwrap()]);
}

fn condition(c: &Cluster, pod: &str, kind: &str) -> String {
    c.field(
        &["get", "pod", pod],
        &format!("{{.status.conditions[?(@.type==\"{kind}\")].status}}"),
    )
}

fn events(c: &Cluster, pod: &str) -> String {
    let out = run(c.kubectl().args([
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
    ]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn probes_restart_unhealthy_containers_and_gate_readiness() {
    let c = Cluster::start();
    apply(
        &c,
        "probes",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: liveness}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: [sh, -c, "touch /tmp/healthy; sleep 3; rm /tmp/healthy; sleep 3600"]
    livenessProbe:
      exec: {{command: [cat, /tmp/healthy]}}
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata: {{name: ready}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {image}
    command: [sh, -c, "mkdir /www; echo ok > /www/index.html; sleep 2; httpd -p 8080 -h /www; sleep 12; rm /www/index.html; sleep 3600"]
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe:
      httpGet: {{path: /index.html, port: http}}
      periodSeconds: 1
      failureThreshold: 1
  - name: tcp
    image: {image}
    command: [sh, -c, "sleep 1; exec httpd -f -p 9000 -h /tmp"]
    startupProbe:
      tcpSocket: {{port: 9000}}
      periodSeconds: 1
      failureThreshold: 30
    readinessProbe:
      tcpSocket: {{port: 9000}}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: crash}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: [sh, -c, "exit 1"]
"#,
            image = c.image,
        ),
    );
    // Readiness: not ready until httpd answers, ready, then not ready once the page is gone.
    c.wait("ready to run", LONG, || {
        c.field(&["get", "pod", "ready"], "{.status.phase}") == "Running"
    });
    c.wait("ready to be Ready", LONG, || {
        condition(&c, "ready", "Ready") == "True"
    });
    assert_eq!(condition(&c, "ready", "ContainersReady"), "True");
    let get = c.k(&["get", "pod", "ready"]);
    assert!(get.contains("2/2"), "{get}");
    c.wait("ready to turn unready", LONG, || {
        condition(&c, "ready", "Ready") == "False"
    });
    assert_eq!(condition(&c, "ready", "ContainersReady"), "False");
    let web_ready = c.field(
        &["get", "pod", "ready"],
        "{.status.containerStatuses[?(@.name==\"web\")].ready}",
    );
    assert_eq!(web_ready, "false");
    let tcp_ready = c.field(
        &["get", "pod", "ready"],
        "{.status.containerStatuses[?(@.name==\"tcp\")].ready}",
    );
    assert_eq!(tcp_ready, "true");
    assert!(
        events(&c, "ready")
            .contains("Readiness probe failed: HTTP probe failed with statuscode: 404")
    );

    // Liveness: the probe fails after 3 s, the container is killed and started again.
    c.wait("liveness to restart", LONG, || {
        c.field(
            &["get", "pod", "liveness"],
            "{.status.containerStatuses[0].restartCount}",
        )
        .parse::<u32>()
        .unwrap_or(0)
            >= 1
    });
    let ev = events(&c, "liveness");
    assert!(ev.contains("Liveness probe failed"), "{ev}");
    assert!(
        ev.contains("Container main failed liveness probe, will be restarted"),
        "{ev}"
    );
    let describe = c.k(&["describe", "pod", "liveness"]);
    for reason in ["Unhealthy", "Killing", "Started", "Created"] {
        assert!(describe.contains(reason), "no {reason} in:\n{describe}");
    }
    c.k(&[
        "delete",
        "pod",
        "liveness",
        "ready",
        "--wait=true",
        "--timeout=60s",
    ]);
}
