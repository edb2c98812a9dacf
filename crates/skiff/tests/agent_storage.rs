//! Persistent volumes end to end through the embedded node agent, for real (root) with
//! kubectl 1.33: a pre-created hostPath PersistentVolume binds to a claim and a pod writes
//! through it; a pod of a missing claim is unschedulable with kube-scheduler's message; a pod
//! of an unbound claim waits in ContainerCreating with `FailedMount`; `Retain` keeps a
//! Released volume; the default `local-path` class waits for the first consumer, provisions
//! on its node, keeps data across pods and deletes volume and directory with the claim; a
//! StatefulSet's `volumeClaimTemplates` get one Bound claim per pod.
#![allow(clippy::unwrap_used)]

mod agent_support;

use std::path::Path;
use std::time::Duration;

use agent_support::{Cluster, run};

const LONG: Duration = Duration::from_secs(120);

fn describe_has(c: &Cluster, what: &[&str], text: &str) -> bool {
    let out = run(c.kubectl().arg("describe").args(what));
    String::from_utf8_lossy(&out.stdout).contains(text)
}

fn phase(c: &Cluster, what: &[&str]) -> String {
    c.field(&[&["get"], what].concat(), "{.status.phase}")
}

fn logs(c: &Cluster, pod: &str) -> String {
    String::from_utf8_lossy(&run(c.kubectl().args(["logs", pod])).stdout).into_owned()
}

fn pod(image: &str, name: &str, claim: &str, script: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  {extra}
  containers:
  - name: main
    image: {image}
    command: [sh, -c, "{script}"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - {{name: data, persistentVolumeClaim: {{claimName: {claim}}}}}
"#
    )
}

fn host_pv(name: &str, path: &Path, policy: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata: {{name: {name}, labels: {{disk: {name}}}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  persistentVolumeReclaimPolicy: {policy}
  hostPath: {{path: {path}, type: DirectoryOrCreate}}
"#,
        path = path.display()
    )
}

fn claim(name: &str, class: Option<&str>, size: &str) -> String {
    let class = class
        .map(|c| format!("\n  storageClassName: {c}"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: {size}}}}}{class}
"#
    )
}

#[test]
fn host_path_volumes_bind_mount_and_are_retained() {
    let c = Cluster::start();
    let dir_a = c.path().join("pv-a");
    // A smaller volume that does not fit, and the one that does.
    c.apply(&format!(
        "{}---\n{}",
        host_pv("pv-a", &dir_a, "Retain"),
        host_pv("pv-small", &c.path().join("pv-small"), "Retain")
            .replace("storage: 1Gi", "storage: 100Mi")
    ));
    c.wait("the volumes to be Available", LONG, || {
        phase(&c, &["pv", "pv-a"]) == "Available" && phase(&c, &["pv", "pv-small"]) == "Available"
    });
    c.apply(&claim("claim-a", Some("manual"), "500Mi"));
    c.wait("claim-a to be Bound", LONG, || {
        phase(&c, &["pvc", "claim-a"]) == "Bound"
    });
    let get = c.k(&["get", "pvc", "claim-a"]);
    assert!(
        get.contains("Bound") && get.contains("pv-a") && get.contains("1Gi"),
        "{get}"
    );
    assert_eq!(phase(&c, &["pv", "pv-a"]), "Bound");
    assert_eq!(phase(&c, &["pv", "pv-small"]), "Available");
    assert_eq!(
        c.field(&["get", "pv", "pv-a"], "{.spec.claimRef.name}"),
        "claim-a"
    );
    let annotations = c.field(&["get", "pvc", "claim-a"], "{.metadata.annotations}");
    assert!(
        annotations.contains(r#""pv.kubernetes.io/bind-completed":"yes""#)
            && annotations.contains(r#""pv.kubernetes.io/bound-by-controller":"yes""#),
        "{annotations}"
    );
    assert_eq!(
        c.field(&["get", "pvc", "claim-a"], "{.metadata.finalizers[0]}"),
        "kubernetes.io/pvc-protection"
    );
    c.wait("the volume's protection finalizer", LONG, || {
        c.field(&["get", "pv", "pv-a"], "{.metadata.finalizers[0]}")
            == "kubernetes.io/pv-protection"
    });

    // The claim mounted whole, through a subPath, and read-only (the claim source's flag).
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: writer}}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: main
    image: {image}
    command: [sh, -c, "echo hello > /data/hello; echo n > /sub/f; touch /ro/x 2>/dev/null || echo ro=ok"]
    volumeMounts:
    - {{name: data, mountPath: /data}}
    - {{name: data, mountPath: /sub, subPath: nested}}
    - {{name: ro, mountPath: /ro}}
  volumes:
  - {{name: data, persistentVolumeClaim: {{claimName: claim-a}}}}
  - {{name: ro, persistentVolumeClaim: {{claimName: claim-a, readOnly: true}}}}
"#,
        image = c.image
    ));
    c.wait("the writer to finish", LONG, || {
        phase(&c, &["pod", "writer"]) == "Succeeded"
    });
    assert_eq!(
        std::fs::read_to_string(dir_a.join("hello")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir_a.join("nested/f")).unwrap(),
        "n\n"
    );
    assert!(!dir_a.join("x").exists());
    assert_eq!(logs(&c, "writer"), "ro=ok\n");

    // A claim that does not exist: unschedulable, in kube-scheduler's words.
    c.apply(&pod(&c.image, "orphan", "nope", "true", ""));
    c.wait("FailedScheduling for the missing claim", LONG, || {
        describe_has(
            &c,
            &["pod", "orphan"],
            "persistentvolumeclaim \"nope\" not found",
        )
    });
    assert_eq!(c.field(&["get", "pod", "orphan"], "{.spec.nodeName}"), "");

    // A volume pinned to another node: the pod fits no node.
    c.apply(&format!(
        r#"{}  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [elsewhere]}}]
  claimRef: {{namespace: default, name: far}}
---
{}"#,
        host_pv("pv-far", &c.path().join("pv-far"), "Retain"),
        claim("far", Some("manual"), "1Gi")
    ));
    c.wait("far to be Bound to pv-far", LONG, || {
        phase(&c, &["pvc", "far"]) == "Bound"
            && c.field(&["get", "pvc", "far"], "{.spec.volumeName}") == "pv-far"
    });
    c.apply(&pod(&c.image, "stranded", "far", "true", ""));
    c.wait("the volume node affinity conflict", LONG, || {
        describe_has(
            &c,
            &["pod", "stranded"],
            "0/1 nodes are available: 1 node(s) had volume node affinity conflict.",
        )
    });

    // A pod placed by hand on the node with an unbound claim waits for it to bind.
    c.apply(&claim("late", Some("manual"), "1Gi"));
    c.apply(&pod(
        &c.image,
        "pinned",
        "late",
        "cat /data/seed",
        "nodeName: node-1",
    ));
    c.wait("FailedMount naming the unbound claim", LONG, || {
        describe_has(&c, &["pod", "pinned"], "FailedMount")
            && describe_has(
                &c,
                &["pod", "pinned"],
                "error processing PVC default/late: PVC is not bound",
            )
    });
    assert!(c.k(&["get", "pod", "pinned"]).contains("ContainerCreating"));
    assert_eq!(phase(&c, &["pvc", "late"]), "Pending");
    let dir_late = c.path().join("pv-late");
    std::fs::create_dir_all(&dir_late).unwrap();
    std::fs::write(dir_late.join("seed"), "seeded\n").unwrap();
    c.apply(&host_pv("pv-late", &dir_late, "Retain"));
    c.wait("the pinned pod to read the late volume", LONG, || {
        phase(&c, &["pod", "pinned"]) == "Succeeded"
    });
    assert_eq!(logs(&c, "pinned"), "seeded\n");

    // Retain: the claim goes, the volume stays Released with its data.
    c.k(&[
        "delete",
        "pod",
        "writer",
        "orphan",
        "pinned",
        "stranded",
        "--wait=true",
        "--timeout=60s",
    ]);
    c.k(&["delete", "pvc", "claim-a", "--wait=true", "--timeout=60s"]);
    c.wait("pv-a to be Released", LONG, || {
        phase(&c, &["pv", "pv-a"]) == "Released"
    });
    let get = c.k(&["get", "pv", "pv-a"]);
    assert!(
        get.contains("Released") && get.contains("Retain") && get.contains("default/claim-a"),
        "{get}"
    );
    assert!(dir_a.join("hello").is_file());
    // A new claim does not take a Released volume: it gets nothing (pv-small is too small).
    c.apply(&claim("again", Some("manual"), "500Mi"));
    c.wait("the binder to report no volume for again", LONG, || {
        describe_has(&c, &["pvc", "again"], "ProvisioningFailed")
    });
    assert_eq!(phase(&c, &["pvc", "again"]), "Pending");
    assert_eq!(phase(&c, &["pv", "pv-a"]), "Released");
}

#[test]
fn local_path_claims_wait_for_a_consumer_and_are_deleted_with_their_volume() {
    let c = Cluster::start();
    c.wait("the local-path class", LONG, || {
        let out = run(c.kubectl().args(["get", "storageclass"]));
        String::from_utf8_lossy(&out.stdout).contains("local-path (default)")
    });
    let get = c.k(&["get", "storageclass", "local-path"]);
    for want in ["rancher.io/local-path", "Delete", "WaitForFirstConsumer"] {
        assert!(get.contains(want), "{get}");
    }
    c.apply(&claim("data", None, "64Mi"));
    assert_eq!(
        c.field(&["get", "pvc", "data"], "{.spec.storageClassName}"),
        "local-path"
    );
    c.wait("the WaitForFirstConsumer event", LONG, || {
        describe_has(
            &c,
            &["pvc", "data"],
            "waiting for first consumer to be created before binding",
        )
    });
    assert_eq!(phase(&c, &["pvc", "data"]), "Pending");

    c.apply(&pod(
        &c.image,
        "one",
        "data",
        "echo persisted > /data/f",
        "",
    ));
    c.wait("data to be Bound", LONG, || {
        phase(&c, &["pvc", "data"]) == "Bound"
    });
    let uid = c.field(&["get", "pvc", "data"], "{.metadata.uid}");
    let volume = format!("pvc-{uid}");
    assert_eq!(
        c.field(&["get", "pvc", "data"], "{.spec.volumeName}"),
        volume
    );
    assert_eq!(
        c.field(
            &["get", "pvc", "data"],
            "{.metadata.annotations.volume\\.kubernetes\\.io/selected-node}"
        ),
        "node-1"
    );
    let dir = c
        .path()
        .join("storage")
        .join(format!("{volume}_default_data"));
    assert_eq!(
        c.field(&["get", "pv", &volume], "{.spec.hostPath.path}"),
        dir.display().to_string()
    );
    assert_eq!(
        c.field(
            &["get", "pv", &volume],
            "{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}"
        ),
        "node-1"
    );
    assert_eq!(
        c.field(&["get", "pv", &volume], "{.spec.capacity.storage}"),
        "64Mi"
    );
    c.wait("the first pod to write", LONG, || {
        phase(&c, &["pod", "one"]) == "Succeeded"
    });
    assert_eq!(
        std::fs::read_to_string(dir.join("f")).unwrap(),
        "persisted\n"
    );
    assert!(describe_has(&c, &["pvc", "data"], "ProvisioningSucceeded"));

    c.k(&["delete", "pod", "one", "--wait=true", "--timeout=60s"]);
    c.apply(&pod(&c.image, "two", "data", "cat /data/f", ""));
    c.wait("the second pod to read", LONG, || {
        phase(&c, &["pod", "two"]) == "Succeeded"
    });
    assert_eq!(logs(&c, "two"), "persisted\n");

    c.k(&["delete", "pod", "two", "--wait=true", "--timeout=60s"]);
    c.k(&["delete", "pvc", "data", "--wait=true", "--timeout=60s"]);
    c.wait("the volume and its directory to go", LONG, || {
        let pvs = run(c.kubectl().args(["get", "pv", "-o", "name"]));
        !String::from_utf8_lossy(&pvs.stdout).contains(&volume) && !dir.exists()
    });
}

#[test]
fn stateful_set_claims_are_provisioned_per_pod_in_order() {
    let c = Cluster::start();
    c.apply(&format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  clusterIP: None
  selector: {{app: web}}
  ports: [{{port: 80}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web}}
spec:
  serviceName: web
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        command: [sh, -c, "hostname > /data/name; sleep 3600"]
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 16Mi}}}}
"#,
        image = c.image
    ));
    c.wait("the three pods to run", Duration::from_secs(240), || {
        (0..3).all(|i| phase(&c, &["pod", &format!("web-{i}")]) == "Running")
    });
    let mut started = Vec::new();
    for i in 0..3 {
        let claim = format!("data-web-{i}");
        c.wait(&format!("{claim} to be Bound"), LONG, || {
            phase(&c, &["pvc", &claim]) == "Bound"
        });
        let uid = c.field(&["get", "pvc", &claim], "{.metadata.uid}");
        let file = c
            .path()
            .join("storage")
            .join(format!("pvc-{uid}_default_{claim}"))
            .join("name");
        c.wait(&format!("web-{i} to write its name"), LONG, || {
            file.is_file()
        });
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!("web-{i}\n")
        );
        started.push(c.field(
            &["get", "pod", &format!("web-{i}")],
            "{.metadata.creationTimestamp}",
        ));
    }
    let mut sorted = started.clone();
    sorted.sort();
    assert_eq!(started, sorted, "pods are created in ordinal order");
    let claims = c.k(&["get", "pvc"]);
    assert_eq!(claims.matches("Bound").count(), 3, "{claims}");
    c.k(&[
        "delete",
        "statefulset",
        "web",
        "--wait=true",
        "--timeout=60s",
    ]);
}
