//! The scheduler, garbage collector, namespace, ServiceAccount and Job controllers end to
//! end: a real `skiff server`, the components in this process, fake nodes, real kubectl.
#![allow(clippy::unwrap_used)]

mod controllers_support;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use controllers_support::{Cluster, Components, ok};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

fn apply(cluster: &Cluster, yaml: &str) {
    let mut child = cluster
        .kubectl()
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_unschedulable_pod_says_why_and_is_bound_once_a_node_fits() {
    let cluster = Cluster::start();
    cluster.add_node("small", "1", "1Gi");
    cluster.add_node_with(
        "tainted",
        "8",
        "8Gi",
        json!({"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}),
    );
    apply(
        &cluster,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: big}
spec:
  containers:
  - name: c
    image: busybox
    resources: {requests: {cpu: "2"}}
"#,
    );
    let message = cluster.wait("PodScheduled=False", DEADLINE, |client| async move {
        let pod = Api::<Pod>::namespaced(client, "default")
            .get("big")
            .await
            .ok()?;
        let cond = pod
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
        assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
        cond.message
    });
    assert_eq!(
        message,
        "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: db}. preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling.."
    );
    let described = ok(cluster.kubectl().args(["describe", "pod", "big"]));
    assert!(described.contains("FailedScheduling"), "{described}");

    // A node that fits arrives: the pod is bound to it.
    cluster.add_node("large", "4", "8Gi");
    let node = cluster.wait("the pod bound", DEADLINE, |client| async move {
        let pod = Api::<Pod>::namespaced(client, "default")
            .get("big")
            .await
            .ok()?;
        pod.spec?.node_name
    });
    assert_eq!(node, "large");
}

#[test]
fn the_scheduler_binds_many_pods_quickly() {
    let cluster = Cluster::start_with(Components {
        scheduler: true,
        controllers: false,
        kubelet: false,
    });
    for i in 0..5 {
        cluster.add_node(&format!("node-{i}"), "64", "256Gi");
    }
    const PODS: usize = 200;
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let start = Instant::now();
    cluster.block_on(async {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"generateName": "load-"},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
        }))
        .unwrap();
        let pp = PostParams::default();
        let creates = (0..PODS).map(|_| api.create(&pp, &pod));
        for r in futures::future::join_all(creates).await {
            r.unwrap();
        }
    });
    let per_node = cluster.wait(
        "every pod bound",
        Duration::from_secs(120),
        |client| async move {
            let pods = Api::<Pod>::namespaced(client, "default")
                .list(&Default::default())
                .await
                .ok()?;
            let bound: Vec<String> = pods
                .items
                .into_iter()
                .filter_map(|p| p.spec?.node_name)
                .collect();
            (bound.len() == PODS).then_some(bound)
        },
    );
    let elapsed = start.elapsed();
    eprintln!(
        "scheduler: {PODS} pods created and bound in {:.2}s ({:.0} pods/s)",
        elapsed.as_secs_f64(),
        PODS as f64 / elapsed.as_secs_f64()
    );
    for i in 0..5 {
        let n = per_node
            .iter()
            .filter(|x| **x == format!("node-{i}"))
            .count();
        assert!(
            (30..=50).contains(&n),
            "node-{i} got {n} of {PODS}: not spread"
        );
    }
}

fn config_map(name: &str, owner: Option<&ConfigMap>, finalizers: &[&str]) -> ConfigMap {
    let mut v = json!({"metadata": {"name": name, "finalizers": finalizers}, "data": {"k": "v"}});
    if let Some(o) = owner {
        v["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "v1", "kind": "ConfigMap", "name": o.metadata.name,
            "uid": o.metadata.uid, "blockOwnerDeletion": true,
        }]);
    }
    serde_json::from_value(v).unwrap()
}

#[test]
fn the_garbage_collector_cascades_in_background_foreground_and_orphans() {
    let cluster = Cluster::start_with(Components {
        scheduler: false,
        controllers: true,
        kubelet: false,
    });
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let gone = |name: &'static str| {
        let api = api.clone();
        move |_| {
            let api = api.clone();
            async move { api.get_opt(name).await.ok()?.is_none().then_some(()) }
        }
    };
    cluster.block_on(async {
        let pp = PostParams::default();
        // Background: the owner goes, then its dependent.
        let owner = api
            .create(&pp, &config_map("bg-owner", None, &[]))
            .await
            .unwrap();
        api.create(&pp, &config_map("bg-dep", Some(&owner), &[]))
            .await
            .unwrap();
        // Foreground: the owner waits for its dependent.
        let owner = api
            .create(&pp, &config_map("fg-owner", None, &["foregroundDeletion"]))
            .await
            .unwrap();
        api.create(&pp, &config_map("fg-dep", Some(&owner), &[]))
            .await
            .unwrap();
        // Orphan: the dependent stays, released.
        let owner = api
            .create(&pp, &config_map("or-owner", None, &["orphan"]))
            .await
            .unwrap();
        api.create(&pp, &config_map("or-dep", Some(&owner), &[]))
            .await
            .unwrap();
        for name in ["bg-owner", "fg-owner", "or-owner"] {
            api.delete(name, &DeleteParams::default()).await.unwrap();
        }
    });
    cluster.wait("background dependent collected", DEADLINE, gone("bg-dep"));
    cluster.wait("foreground dependent collected", DEADLINE, gone("fg-dep"));
    cluster.wait("foreground owner released", DEADLINE, gone("fg-owner"));
    cluster.wait("orphaning owner released", DEADLINE, gone("or-owner"));
    let orphan = cluster.block_on(api.get("or-dep")).unwrap();
    assert!(
        orphan
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty(),
        "the orphan keeps no reference to its deleted owner"
    );
}

#[test]
fn namespaces_get_a_default_service_account_and_are_emptied_when_deleted() {
    let cluster = Cluster::start_with(Components {
        scheduler: false,
        controllers: true,
        kubelet: false,
    });
    ok(cluster.kubectl().args(["create", "namespace", "team"]));
    cluster.wait("default service account", DEADLINE, |client| async move {
        Api::<ServiceAccount>::namespaced(client, "team")
            .get_opt("default")
            .await
            .ok()?
    });
    // Deleted, it comes back.
    cluster.block_on(async {
        Api::<ServiceAccount>::namespaced(cluster.client.clone(), "team")
            .delete("default", &DeleteParams::default())
            .await
            .unwrap();
    });
    cluster.wait(
        "default service account again",
        DEADLINE,
        |client| async move {
            Api::<ServiceAccount>::namespaced(client, "team")
                .get_opt("default")
                .await
                .ok()?
                .filter(|sa| sa.metadata.deletion_timestamp.is_none())
        },
    );
    ok(cluster.kubectl().args([
        "-n",
        "team",
        "create",
        "configmap",
        "c",
        "--from-literal=a=b",
    ]));
    ok(cluster
        .kubectl()
        .args(["delete", "namespace", "team", "--wait=false"]));
    cluster.wait("namespace gone", DEADLINE, |client| async move {
        Api::<Namespace>::all(client)
            .get_opt("team")
            .await
            .ok()?
            .is_none()
            .then_some(())
    });
}

#[test]
fn a_job_runs_its_completions_and_kubectl_wait_sees_it_complete() {
    let cluster = Cluster::start();
    cluster.add_node("node-a", "4", "8Gi");
    apply(
        &cluster,
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: batch}
spec:
  completions: 3
  parallelism: 2
  template:
    metadata:
      annotations: {test.skiff.dev/phase: Succeeded}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox, command: ["true"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: failing}
spec:
  backoffLimit: 1
  template:
    metadata:
      annotations: {test.skiff.dev/phase: Failed}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox, command: ["false"]}]
"#,
    );
    ok(cluster.kubectl().args([
        "wait",
        "--for=condition=complete",
        "job/batch",
        "--timeout=60s",
    ]));
    let job: Job = cluster.block_on(async {
        Api::<Job>::namespaced(cluster.client.clone(), "default")
            .get("batch")
            .await
            .unwrap()
    });
    let status = job.status.unwrap();
    assert_eq!(status.succeeded, Some(3));
    assert!(status.completion_time.is_some());
    ok(cluster.kubectl().args([
        "wait",
        "--for=condition=failed",
        "job/failing",
        "--timeout=60s",
    ]));
    let pods = cluster
        .pods("default")
        .into_iter()
        .filter(|p| p.metadata.labels.as_ref().unwrap()["job-name"] == "failing")
        .count();
    assert_eq!(pods, 2, "one try and one retry (backoffLimit 1)");
}
