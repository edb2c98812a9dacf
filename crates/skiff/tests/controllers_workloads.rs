//! Endpoints/EndpointSlices, StatefulSet, DaemonSet and CronJob controllers end to end: a
//! real `skiff server` running them, fake nodes, the fake kubelet, real kubectl.
#![allow(clippy::unwrap_used)]

mod controllers_support;

use std::time::Duration;

use controllers_support::{Cluster, ok};
use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Endpoints, PersistentVolumeClaim, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams};

const DEADLINE: Duration = Duration::from_secs(60);

fn ready_ips(ep: &Endpoints) -> usize {
    ep.subsets
        .iter()
        .flatten()
        .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
        .sum()
}

#[test]
fn services_get_endpoints_and_slices_that_follow_their_pods() {
    let cluster = Cluster::start();
    cluster.add_node("n1", "8", "8Gi");
    cluster.apply(
        r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
---
apiVersion: v1
kind: Pod
metadata: {name: web-a, labels: {app: web}}
spec:
  containers:
  - {name: c, image: nginx, ports: [{name: http, containerPort: 8080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-b, labels: {app: web}}
spec:
  containers:
  - {name: c, image: nginx, ports: [{name: http, containerPort: 8080}]}
"#,
    );
    let ep = cluster.wait("two ready addresses", DEADLINE, |client| async move {
        let ep = Api::<Endpoints>::namespaced(client, "default")
            .get_opt("web")
            .await
            .ok()??;
        (ready_ips(&ep) == 2).then_some(ep)
    });
    let port = &ep.subsets.unwrap()[0].ports.clone().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));
    // The slices follow the Endpoints (written after them, in the same pass).
    let slices = cluster.wait("a slice with both pods", DEADLINE, |client| async move {
        let slices = Api::<EndpointSlice>::namespaced(client, "default")
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await
            .ok()?
            .items;
        (slices.len() == 1 && slices[0].endpoints.len() == 2).then_some(slices)
    });
    assert_eq!(
        slices[0].metadata.owner_references.clone().unwrap()[0].kind,
        "Service"
    );
    let out = ok(cluster.kubectl().args(["get", "endpoints", "web"]));
    assert!(out.contains("10.42.0.10:8080"), "{out}");

    // A pod goes: the endpoints follow.
    cluster.block_on(async {
        Api::<Pod>::namespaced(cluster.client.clone(), "default")
            .delete("web-b", &DeleteParams::default())
            .await
            .unwrap();
    });
    cluster.wait("one address left", DEADLINE, |client| async move {
        let ep = Api::<Endpoints>::namespaced(client.clone(), "default")
            .get_opt("web")
            .await
            .ok()??;
        let slices = Api::<EndpointSlice>::namespaced(client, "default")
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await
            .ok()?
            .items;
        (ready_ips(&ep) == 1 && slices.iter().map(|s| s.endpoints.len()).sum::<usize>() == 1)
            .then_some(())
    });
}

#[test]
fn a_statefulset_runs_ordinal_pods_with_claims_and_scales_down_from_the_top() {
    let cluster = Cluster::start();
    cluster.add_node("n1", "8", "8Gi");
    cluster.apply(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: nginx}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"#,
    );
    cluster.wait("three ready replicas", DEADLINE, |client| async move {
        let set = Api::<StatefulSet>::namespaced(client, "default")
            .get("web")
            .await
            .ok()?;
        (set.status?.ready_replicas == Some(3)).then_some(())
    });
    let pods = cluster.pods("default");
    let mut names: Vec<String> = pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["web-0", "web-1", "web-2"]);
    let created = |n: &str| {
        pods.iter()
            .find(|p| p.metadata.name.as_deref() == Some(n))
            .and_then(|p| p.metadata.creation_timestamp.clone())
            .unwrap()
            .0
    };
    assert!(created("web-0") <= created("web-1") && created("web-1") <= created("web-2"));
    let web1 = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("web-1"))
        .unwrap();
    let spec = web1.spec.clone().unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("web-1"));
    assert_eq!(spec.subdomain.as_deref(), Some("web"));
    let claims = cluster.block_on(async {
        Api::<PersistentVolumeClaim>::namespaced(cluster.client.clone(), "default")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    });
    let mut claim_names: Vec<String> = claims
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    claim_names.sort();
    assert_eq!(claim_names, vec!["data-web-0", "data-web-1", "data-web-2"]);

    ok(cluster
        .kubectl()
        .args(["scale", "statefulset", "web", "--replicas=1"]));
    cluster.wait("one replica left", DEADLINE, |client| async move {
        let pods = Api::<Pod>::namespaced(client, "default")
            .list(&ListParams::default())
            .await
            .ok()?
            .items;
        let names: Vec<String> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        (names == vec!["web-0".to_string()]).then_some(())
    });
    let status =
        ok(cluster
            .kubectl()
            .args(["rollout", "status", "statefulset/web", "--timeout=30s"]));
    assert!(status.contains("roll"), "{status}");

    // A new template rolls the remaining pod; the revisions converge.
    ok(cluster
        .kubectl()
        .args(["set", "image", "statefulset/web", "c=nginx:2"]));
    cluster.wait("web-0 updated", DEADLINE, |client| async move {
        let set = Api::<StatefulSet>::namespaced(client.clone(), "default")
            .get("web")
            .await
            .ok()?;
        let st = set.status?;
        let pod = Api::<Pod>::namespaced(client, "default")
            .get_opt("web-0")
            .await
            .ok()??;
        let image = pod.spec?.containers[0].image.clone()?;
        (image == "nginx:2"
            && st.ready_replicas == Some(1)
            && st.current_revision.is_some()
            && st.current_revision == st.update_revision)
            .then_some(())
    });
}

async fn daemon_pod_nodes(client: kube::Client) -> Vec<String> {
    let pods = Api::<Pod>::namespaced(client, "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let mut nodes: Vec<String> = pods
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.spec?.node_name)
        .collect();
    nodes.sort();
    nodes
}

#[test]
fn a_daemonset_follows_eligible_nodes() {
    let cluster = Cluster::start();
    cluster.add_node("a", "4", "4Gi");
    cluster.add_node_with(
        "tainted",
        "4",
        "4Gi",
        serde_json::json!({"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}),
    );
    cluster.apply(
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: c, image: busybox}]
"#,
    );
    cluster.wait("one ready daemon pod", DEADLINE, |client| async move {
        let ds = Api::<DaemonSet>::namespaced(client, "default")
            .get("agent")
            .await
            .ok()?;
        let st = ds.status?;
        (st.desired_number_scheduled == 1 && st.number_ready == 1).then_some(())
    });
    assert_eq!(
        cluster.block_on(daemon_pod_nodes(cluster.client.clone())),
        vec!["a"]
    );

    cluster.add_node("b", "4", "4Gi");
    cluster.wait("a pod on the new node", DEADLINE, |client| async move {
        let ds = Api::<DaemonSet>::namespaced(client, "default")
            .get("agent")
            .await
            .ok()?;
        let st = ds.status?;
        (st.number_ready == 2 && st.updated_number_scheduled == Some(2)).then_some(())
    });
    assert_eq!(
        cluster.block_on(daemon_pod_nodes(cluster.client.clone())),
        vec!["a", "b"]
    );

    ok(cluster.kubectl().args(["delete", "node", "a"]));
    let nodes = cluster.wait(
        "the removed node's pod collected",
        DEADLINE,
        |client| async move {
            let nodes = daemon_pod_nodes(client).await;
            (nodes == vec!["b".to_string()]).then_some(nodes)
        },
    );
    assert_eq!(nodes, vec!["b"]);
}

#[test]
fn a_cronjob_starts_a_job_on_schedule() {
    let cluster = Cluster::start();
    cluster.add_node("n1", "4", "4Gi");
    cluster.apply(
        r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: "* * * * *"
  timeZone: Etc/UTC
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: c, image: busybox}]
"#,
    );
    let job = cluster.wait(
        "a scheduled job",
        Duration::from_secs(90),
        |client| async move {
            let jobs = Api::<Job>::namespaced(client, "default")
                .list(&ListParams::default())
                .await
                .ok()?
                .items;
            jobs.into_iter().next()
        },
    );
    let name = job.metadata.name.clone().unwrap();
    assert!(name.starts_with("tick-"), "{name}");
    let owner = &job.metadata.owner_references.unwrap()[0];
    assert_eq!(owner.kind, "CronJob");
    cluster.wait(
        "status active and last schedule time",
        DEADLINE,
        |client| async move {
            let cj = Api::<CronJob>::namespaced(client, "default")
                .get("tick")
                .await
                .ok()?;
            let st = cj.status?;
            (st.last_schedule_time.is_some() && st.active?.len() == 1).then_some(())
        },
    );
    let out = ok(cluster.kubectl().args(["get", "cronjob", "tick"]));
    assert!(out.contains("tick"), "{out}");
}
