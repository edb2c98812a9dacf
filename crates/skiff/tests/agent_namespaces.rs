//! The namespaces a pod shares: `shareProcessNamespace` (one PID namespace for the pod, held
//! by the sandbox), `hostPID` and `hostIPC` (the node's own). Real pods, real kubectl exec.
#![allow(clippy::unwrap_used)]

mod agent_support;

use std::time::Duration;

use agent_support::{Cluster, ok};

const LONG: Duration = Duration::from_secs(90);

fn pod(name: &str, image: &str, extra: &str, containers: &[&str]) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n{extra}  containers:\n"
    );
    for (i, c) in containers.iter().enumerate() {
        yaml.push_str(&format!(
            "  - name: {c}\n    image: {image}\n    command: [\"sleep\", \"36{i:02}\"]\n"
        ));
    }
    yaml
}

fn running(c: &Cluster, name: &str) {
    c.wait(&format!("{name} to run"), LONG, || {
        c.field(&["get", "pod", name], "{.status.phase}") == "Running"
    });
}

fn exec(c: &Cluster, pod: &str, container: &str, cmd: &[&str]) -> String {
    ok(c.kubectl()
        .args(["exec", pod, "-c", container, "--"])
        .args(cmd))
}

fn host_ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn pods_share_process_namespaces_and_the_nodes_when_asked() {
    let c = Cluster::start();
    c.apply(&pod(
        "shared",
        &c.image,
        "  shareProcessNamespace: true\n",
        &["a", "b"],
    ));
    c.apply(&pod("apart", &c.image, "", &["a", "b"]));
    c.apply(&pod("hostpid", &c.image, "  hostPID: true\n", &["a"]));
    c.apply(&pod("hostipc", &c.image, "  hostIPC: true\n", &["a"]));
    for name in ["shared", "apart", "hostpid", "hostipc"] {
        running(&c, name);
    }

    // One PID namespace for the pod: container a sees b's process and the sandbox's init.
    let ps = exec(&c, "shared", "a", &["ps", "-o", "pid,args"]);
    assert!(ps.contains("sleep 3601"), "{ps}");
    assert!(ps.contains("pause"), "{ps}");
    let ps = exec(&c, "apart", "a", &["ps", "-o", "pid,args"]);
    assert!(!ps.contains("sleep 3601"), "{ps}");

    // The node's namespaces.
    let pid_ns = exec(&c, "hostpid", "a", &["readlink", "/proc/self/ns/pid"]);
    assert_eq!(pid_ns.trim(), host_ns("pid"));
    let ipc_ns = exec(&c, "hostipc", "a", &["readlink", "/proc/self/ns/ipc"]);
    assert_eq!(ipc_ns.trim(), host_ns("ipc"));
    let own_ipc = exec(&c, "apart", "a", &["readlink", "/proc/self/ns/ipc"]);
    assert_ne!(own_ipc.trim(), host_ns("ipc"));
    let own_pid = exec(&c, "hostipc", "a", &["readlink", "/proc/self/ns/pid"]);
    assert_ne!(own_pid.trim(), host_ns("pid"));
}
