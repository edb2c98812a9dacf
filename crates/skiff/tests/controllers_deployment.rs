//! Deployments end to end with real kubectl: a real `skiff server`, the scheduler and the
//! controllers in this process, three fake nodes and a stand-in kubelet.
#![allow(clippy::unwrap_used)]

mod controllers_support;

use std::time::Duration;

use controllers_support::{Cluster, ok};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

const DEADLINE: Duration = Duration::from_secs(60);

async fn running_pods(client: kube::Client, image: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client, "default")
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some(image))
        .collect()
}

#[test]
fn kubectl_create_scale_set_image_rollout_status_and_delete_a_deployment() {
    let cluster = Cluster::start();
    for n in ["node-a", "node-b", "node-c"] {
        cluster.add_node(n, "4", "8Gi");
    }
    ok(cluster.kubectl().args([
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=3",
    ]));

    // Three pods, bound to the fake nodes, one per node (spread).
    let pods = cluster.wait("3 bound pods", DEADLINE, |client| async move {
        let pods: Vec<Pod> = Api::<Pod>::namespaced(client, "default")
            .list(&Default::default())
            .await
            .ok()?
            .items;
        let bound: Vec<Pod> = pods
            .into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()).is_some())
            .collect();
        (bound.len() == 3).then_some(bound)
    });
    let mut nodes: Vec<String> = pods
        .iter()
        .map(|p| p.spec.as_ref().unwrap().node_name.clone().unwrap())
        .collect();
    nodes.sort();
    assert_eq!(
        nodes,
        ["node-a", "node-b", "node-c"],
        "replicas spread over nodes"
    );

    let status =
        ok(cluster
            .kubectl()
            .args(["rollout", "status", "deployment/web", "--timeout=60s"]));
    assert!(status.contains("successfully rolled out"), "{status}");

    // Scale to 5.
    ok(cluster
        .kubectl()
        .args(["scale", "deployment/web", "--replicas=5"]));
    cluster.wait("5 pods", DEADLINE, |client| async move {
        (running_pods(client, "busybox").await.len() == 5).then_some(())
    });
    ok(cluster
        .kubectl()
        .args(["rollout", "status", "deployment/web", "--timeout=60s"]));

    // A new image rolls out: new ReplicaSet, revision 2, old one scaled to zero.
    ok(cluster
        .kubectl()
        .args(["set", "image", "deployment/web", "busybox=busybox:1.36"]));
    let status =
        ok(cluster
            .kubectl()
            .args(["rollout", "status", "deployment/web", "--timeout=60s"]));
    assert!(status.contains("successfully rolled out"), "{status}");
    cluster.wait("old pods gone", DEADLINE, |client| async move {
        (running_pods(client.clone(), "busybox").await.is_empty()
            && running_pods(client, "busybox:1.36").await.len() == 5)
            .then_some(())
    });
    let rss: Vec<ReplicaSet> = cluster.block_on(async {
        Api::<ReplicaSet>::namespaced(cluster.client.clone(), "default")
            .list(&Default::default())
            .await
            .unwrap()
            .items
    });
    let mut revisions: Vec<(String, i32)> = rss
        .iter()
        .map(|rs| {
            (
                rs.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"]
                    .clone(),
                rs.spec.as_ref().unwrap().replicas.unwrap(),
            )
        })
        .collect();
    revisions.sort();
    assert_eq!(revisions, [("1".to_string(), 0), ("2".to_string(), 5)]);
    let history = ok(cluster
        .kubectl()
        .args(["rollout", "history", "deployment/web"]));
    assert!(history.contains('1') && history.contains('2'), "{history}");
    let d: Deployment = cluster.block_on(async {
        Api::<Deployment>::namespaced(cluster.client.clone(), "default")
            .get("web")
            .await
            .unwrap()
    });
    let st = d.status.unwrap();
    assert_eq!(st.updated_replicas, Some(5));
    assert_eq!(st.available_replicas, Some(5));

    // Deleting the Deployment cascades to its ReplicaSets and pods.
    ok(cluster.kubectl().args(["delete", "deployment", "web"]));
    cluster.wait("everything gone", DEADLINE, |client| async move {
        let rs = Api::<ReplicaSet>::namespaced(client.clone(), "default")
            .list(&Default::default())
            .await
            .ok()?;
        let pods = Api::<Pod>::namespaced(client, "default")
            .list(&Default::default())
            .await
            .ok()?;
        (rs.items.is_empty() && pods.items.is_empty()).then_some(())
    });
}
