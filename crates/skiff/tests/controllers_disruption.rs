//! PodDisruptionBudgets end to end: a real `skiff server` (scheduler, controllers and the
//! disruption controller), fake nodes and kubelet, real kubectl: `kubectl get pdb`, evictions
//! refused with 429 while a budget allows none, and `kubectl drain` waiting on a budget.
#![allow(clippy::unwrap_used)]

mod controllers_support;

use std::time::Duration;

use controllers_support::{Cluster, ok};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, EvictParams, PostParams};

const DEADLINE: Duration = Duration::from_secs(60);

/// A Deployment of `replicas` pods labelled `app=NAME`, all on node `node`.
fn deployment(name: &str, replicas: u32, node: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      containers: [{{name: c, image: busybox}}]
"#
    )
}

/// Waits until budget `name` reports (currentHealthy, desiredHealthy, disruptionsAllowed,
/// expectedPods) = `want`.
fn wait_status(cluster: &Cluster, name: &str, want: (i32, i32, i32, i32)) {
    cluster.wait(&format!("pdb {name} status {want:?}"), DEADLINE, |c| {
        let name = name.to_string();
        async move {
            let pdb = Api::<PodDisruptionBudget>::namespaced(c, "default")
                .get(&name)
                .await
                .ok()?;
            let s = pdb.status?;
            let got = (
                s.current_healthy,
                s.desired_healthy,
                s.disruptions_allowed,
                s.expected_pods,
            );
            (got == want && s.observed_generation == pdb.metadata.generation).then_some(())
        }
    });
}

/// Names of the running (not terminating) pods of `app`.
fn live_pods(cluster: &Cluster, app: &str) -> Vec<String> {
    cluster
        .pods("default")
        .into_iter()
        .filter(|p| p.labels().get("app").map(String::as_str) == Some(app))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some()
        })
        .map(|p| p.name_any())
        .collect()
}

#[test]
fn kubectl_drain_waits_on_the_budget_and_get_pdb_shows_it() {
    let cluster = Cluster::start();
    cluster.add_node("n1", "4", "8Gi");
    cluster.add_node("n2", "4", "8Gi");
    cluster.apply(&deployment("web", 2, "n1"));
    cluster.apply(
        r#"
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: web}}
"#,
    );
    wait_status(&cluster, "web", (2, 1, 1, 2));
    let table = ok(cluster.kubectl().args(["get", "pdb", "web"]));
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["web", "1", "N/A", "1"], "{table}");

    // One pod may go; its replacement cannot be scheduled (n1 is cordoned), so the second
    // eviction is refused and drain gives up at its timeout.
    let before = live_pods(&cluster, "web");
    assert_eq!(before.len(), 2, "{before:?}");
    let out = cluster
        .kubectl()
        .args(["drain", "n1", "--ignore-daemonsets", "--timeout=8s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "drain should time out: {stderr}");
    assert!(
        stderr.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{stderr}"
    );
    let survivors: Vec<String> = live_pods(&cluster, "web")
        .into_iter()
        .filter(|p| before.contains(p))
        .collect();
    assert_eq!(survivors.len(), 1, "exactly one pod evicted: {survivors:?}");
    wait_status(&cluster, "web", (1, 1, 0, 2));

    // Relaxing the budget lets drain finish.
    ok(cluster.kubectl().args([
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":0}}"#,
    ]));
    ok(cluster
        .kubectl()
        .args(["drain", "n1", "--ignore-daemonsets", "--timeout=30s"]));
    assert!(
        live_pods(&cluster, "web")
            .iter()
            .all(|p| !before.contains(p)),
        "both original pods are gone"
    );
}

#[test]
fn evictions_take_disruptions_one_at_a_time_and_refuse_with_429() {
    let cluster = Cluster::start();
    cluster.add_node("n1", "4", "8Gi");
    cluster.apply(&deployment("api", 3, "n1"));
    cluster.apply(
        r#"
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: api}
spec:
  maxUnavailable: "34%"
  selector: {matchLabels: {app: api}}
"#,
    );
    // 34% of 3 rounds up to 2 unavailable: 1 must stay healthy.
    wait_status(&cluster, "api", (3, 1, 2, 3));
    // A client that reports a 429 instead of retrying it for minutes (kube's default).
    let client = cluster.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(cluster.server.kubeconfig()).unwrap();
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        config.default_retry = false;
        kube::Client::try_from(config).unwrap()
    });
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client, "default");
    let names = live_pods(&cluster, "api");
    assert_eq!(names.len(), 3);
    // Replacements must not come up meanwhile (they would make the budget healthy again).
    ok(cluster.kubectl().args(["cordon", "n1"]));
    cluster.block_on(async {
        // A dry run takes nothing.
        let dry = EvictParams {
            post_options: PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            ..EvictParams::default()
        };
        pods.evict(&names[0], &dry).await.unwrap();
        let pdb = budgets.get("api").await.unwrap();
        assert_eq!(pdb.status.unwrap().disruptions_allowed, 2);
        assert!(pods.get(&names[0]).await.is_ok());

        pods.evict(&names[0], &EvictParams::default())
            .await
            .unwrap();
        pods.evict(&names[1], &EvictParams::default())
            .await
            .unwrap();
        let status = budgets.get("api").await.unwrap().status.unwrap();
        assert_eq!(status.disruptions_allowed, 0);
        // Each evicted pod is in disruptedPods until the disruption controller sees it being
        // deleted, which may already have happened: one or the other, never neither.
        let disrupted = status.disrupted_pods.unwrap_or_default();
        for name in &names[..2] {
            let deleting = match pods.get(name).await {
                Ok(pod) => pod.metadata.deletion_timestamp.is_some(),
                Err(_) => true,
            };
            assert!(
                disrupted.contains_key(name) || deleting,
                "{name} is neither in disruptedPods ({disrupted:?}) nor being deleted"
            );
        }
        match pods.evict(&names[2], &EvictParams::default()).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 429, "{s:?}");
                assert_eq!(
                    s.message,
                    "Cannot evict pod as it would violate the pod's disruption budget."
                );
            }
            other => panic!("the third eviction must be refused: {other:?}"),
        }
        assert!(pods.get(&names[2]).await.is_ok());
    });
    // Replacements come up once the node takes pods again, and the budget recovers.
    ok(cluster.kubectl().args(["uncordon", "n1"]));
    wait_status(&cluster, "api", (3, 1, 2, 3));

    // Two budgets over one pod: the eviction subresource cannot choose.
    cluster.apply(
        r#"
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: api-too}
spec:
  minAvailable: 0
  selector: {matchLabels: {app: api}}
"#,
    );
    let victim = live_pods(&cluster, "api").remove(0);
    cluster.block_on(async {
        match pods.evict(&victim, &EvictParams::default()).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 500, "{s:?}");
                assert!(
                    s.message.contains("more than one PodDisruptionBudget"),
                    "{s:?}"
                );
            }
            other => panic!("two budgets must refuse: {other:?}"),
        }
    });

    // Invalid budgets are refused with field paths.
    let out = cluster
        .kubectl()
        .args([
            "create",
            "pdb",
            "bad",
            "--selector=app=x",
            "--min-available=150%",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr
            .contains("spec.minAvailable: Invalid value: \"150%\": must not be greater than 100%"),
        "{stderr}"
    );
}
