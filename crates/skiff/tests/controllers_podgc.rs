//! The pod garbage collector end to end: a real `skiff server` (its controllers with a short
//! pod GC period and a small finished-pod threshold), fake nodes and kubelet.
#![allow(clippy::unwrap_used)]

mod controllers_support;

use std::time::Duration;

use controllers_support::{Cluster, Components, ok};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;

const DEADLINE: Duration = Duration::from_secs(60);

fn cluster() -> Cluster {
    Cluster::start_with_args(
        Components {
            scheduler: true,
            controllers: true,
            kubelet: true,
        },
        &["--pod-gc-period=1s", "--terminated-pod-gc-threshold=2"],
    )
}

fn pod_names(cluster: &Cluster) -> Vec<String> {
    let mut names: Vec<String> = cluster
        .pods("default")
        .iter()
        .map(|p| p.name_any())
        .collect();
    names.sort();
    names
}

#[test]
fn pods_of_a_deleted_node_are_collected_and_replaced() {
    let cluster = cluster();
    cluster.add_node("n1", "4", "8Gi");
    cluster.add_node("n2", "4", "8Gi");
    cluster.apply(
        r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      affinity:
        nodeAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            preference: {matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [n1]}]}
      containers: [{name: c, image: busybox}]
"#,
    );
    let first = cluster.wait("a web pod on n1", DEADLINE, |c| async move {
        let pods = Api::<Pod>::namespaced(c, "default")
            .list(&Default::default())
            .await
            .ok()?;
        pods.items.into_iter().find(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("n1")
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
    });
    ok(cluster.kubectl().args(["delete", "node", "n1"]));
    let old = first.name_any();
    cluster.wait("the orphan collected and replaced on n2", DEADLINE, |c| {
        let old = old.clone();
        async move {
            let pods = Api::<Pod>::namespaced(c, "default")
                .list(&Default::default())
                .await
                .ok()?;
            let gone = pods.items.iter().all(|p| p.name_any() != old);
            let replaced = pods
                .items
                .iter()
                .any(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("n2"));
            (gone && replaced).then_some(())
        }
    });
}

#[test]
fn finished_pods_beyond_the_threshold_are_collected_oldest_first() {
    let cluster = cluster();
    cluster.add_node("n1", "4", "8Gi");
    for i in 0..4 {
        cluster.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: done-{i}
  annotations: {{test.skiff.dev/phase: Succeeded}}
spec:
  nodeName: n1
  restartPolicy: Never
  containers: [{{name: c, image: busybox}}]
"#
        ));
        // Distinct creation times (seconds) order them.
        std::thread::sleep(Duration::from_millis(1100));
    }
    cluster.wait("two finished pods left", DEADLINE, |c| async move {
        let pods = Api::<Pod>::namespaced(c, "default")
            .list(&Default::default())
            .await
            .ok()?;
        let mut finished: Vec<String> = pods
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
            .map(|p| p.name_any())
            .collect();
        finished.sort();
        (pods.items.len() == 2 && finished == ["done-2", "done-3"]).then_some(())
    });
    // A pod bound to a node that never existed goes too.
    cluster.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: lost}
spec:
  nodeName: ghost
  containers: [{name: c, image: busybox}]
"#,
    );
    cluster.wait(
        "the pod of a missing node collected",
        DEADLINE,
        |c| async move {
            let api = Api::<Pod>::namespaced(c, "default");
            api.get_opt("lost").await.ok()?.is_none().then_some(())
        },
    );
    assert_eq!(pod_names(&cluster), ["done-2", "done-3"]);
}
