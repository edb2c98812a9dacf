//! PriorityClasses and preemption end to end: a real `skiff server` (scheduler and
//! controllers), fake nodes and kubelet, real kubectl.
#![allow(clippy::unwrap_used)]

mod controllers_support;

use std::io::Write;
use std::process::{Output, Stdio};
use std::time::Duration;

use controllers_support::{Cluster, ok};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};

const DEADLINE: Duration = Duration::from_secs(90);

/// `kubectl <args> -f -` with `yaml` on stdin.
fn kubectl_stdin(cluster: &Cluster, args: &[&str], yaml: &str) -> Output {
    let mut child = cluster
        .kubectl()
        .args(args)
        .args(["-f", "-"])
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
    child.wait_with_output().unwrap()
}

fn kubectl(cluster: &Cluster, args: &[&str]) -> Output {
    cluster.kubectl().args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pod_yaml(name: &str, class: &str, cpu: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  priorityClassName: {class}
  containers:
  - name: c
    image: busybox
    resources: {{requests: {{cpu: "{cpu}"}}}}
"#
    )
}

/// The `PodScheduled=False` message of a pod, once it has one containing `part`.
fn unschedulable_message(cluster: &Cluster, name: &str, part: &str) -> String {
    let part = part.to_string();
    cluster.wait(
        &format!("{name} unschedulable with {part:?}"),
        DEADLINE,
        |c| {
            let part = part.clone();
            let name = name.to_string();
            async move {
                let pod = Api::<Pod>::namespaced(c, "default").get(&name).await.ok()?;
                let cond = pod
                    .status?
                    .conditions?
                    .into_iter()
                    .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
                cond.message.filter(|m| m.contains(&part))
            }
        },
    )
}

async fn low_pods(client: kube::Client) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client, "default");
    let Ok(list) = api.list(&ListParams::default()).await else {
        return Vec::new();
    };
    list.items
        .into_iter()
        .filter(|p| p.metadata.labels.as_ref().and_then(|l| l.get("app")) == Some(&"low".into()))
        .collect()
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

#[test]
fn a_high_priority_pod_preempts_lower_priority_pods() {
    let cluster = Cluster::start();
    cluster.add_node("n1", "2", "4Gi");
    cluster.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: low}
spec:
  replicas: 4
  selector: {matchLabels: {app: low}}
  template:
    metadata: {labels: {app: low}}
    spec:
      containers:
      - name: c
        image: busybox
        resources: {requests: {cpu: 500m}}
"#,
    );
    let first = cluster.wait("4 low pods Running", DEADLINE, |c| async {
        let pods = low_pods(c).await;
        (pods.len() == 4 && pods.iter().all(|p| phase(p) == "Running")).then_some(pods)
    });
    assert!(
        first
            .iter()
            .all(|p| p.spec.as_ref().unwrap().priority == Some(0))
    );
    let created = ok(cluster
        .kubectl()
        .args(["create", "priorityclass", "high", "--value=1000"]));
    assert!(created.contains("priorityclass.scheduling.k8s.io/high created"));
    let out = kubectl_stdin(&cluster, &["create"], &pod_yaml("urgent", "high", "1500m"));
    stdout(&out);

    let line = cluster.wait("urgent Running on n1", DEADLINE, |_| async {
        let out = kubectl(
            &cluster,
            &["get", "pod", "urgent", "-o", "wide", "--no-headers"],
        );
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        (line.contains("Running") && line.split_whitespace().any(|w| w == "n1")).then_some(line)
    });
    assert!(line.starts_with("urgent"), "{line}");
    let urgent: Pod = cluster.block_on(async {
        Api::<Pod>::namespaced(cluster.client.clone(), "default")
            .get("urgent")
            .await
            .unwrap()
    });
    let spec = urgent.spec.as_ref().unwrap();
    assert_eq!(spec.priority, Some(1000));
    assert_eq!(
        spec.preemption_policy.as_deref(),
        Some("PreemptLowerPriority")
    );
    let uid = urgent.metadata.uid.clone().unwrap();
    assert_eq!(
        urgent
            .status
            .as_ref()
            .unwrap()
            .nominated_node_name
            .as_deref(),
        Some("n1")
    );

    // 1.5 CPU freed by the fewest victims: three of the four; one original pod stays.
    let first_names: Vec<String> = first
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    let pods = cluster.block_on(low_pods(cluster.client.clone()));
    let survivors: Vec<&Pod> = pods
        .iter()
        .filter(|p| first_names.contains(p.metadata.name.as_ref().unwrap()))
        .collect();
    assert_eq!(
        survivors.len(),
        1,
        "{:?}",
        pods.iter().map(|p| &p.metadata.name).collect::<Vec<_>>()
    );
    // The events are written just after each deletion.
    let events: Vec<Event> = cluster.wait("3 Preempted events", DEADLINE, |c| async move {
        let events = Api::<Event>::namespaced(c, "default")
            .list(&ListParams::default())
            .await
            .ok()?
            .items;
        let n = events
            .iter()
            .filter(|e| e.reason.as_deref() == Some("Preempted"))
            .count();
        (n >= 3).then_some(events)
    });
    let preempted: Vec<&Event> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Preempted"))
        .collect();
    assert_eq!(preempted.len(), 3, "{preempted:?}");
    for e in &preempted {
        assert_eq!(
            e.message.as_deref(),
            Some(format!("Preempted by pod {uid} on node n1").as_str())
        );
        assert!(first_names.contains(e.involved_object.name.as_ref().unwrap()));
    }

    // The ReplicaSet's replacements wait: the freed room is the preemptor's, and they cannot
    // preempt anyone.
    let replacements = cluster.wait("3 replacements Pending", DEADLINE, |c| async {
        let pods = low_pods(c).await;
        let fresh: Vec<Pod> = pods
            .into_iter()
            .filter(|p| !first_names.contains(p.metadata.name.as_ref().unwrap()))
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none())
            .collect();
        (fresh.len() == 3).then_some(fresh)
    });
    for p in &replacements {
        let message =
            unschedulable_message(&cluster, p.metadata.name.as_ref().unwrap(), "preemption:");
        assert_eq!(
            message,
            "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.."
        );
    }
    let failed = cluster.wait("FailedScheduling events", DEADLINE, |c| async move {
        let events = Api::<Event>::namespaced(c, "default")
            .list(&ListParams::default())
            .await
            .ok()?;
        let n = events
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("FailedScheduling"))
            .filter(|e| {
                e.message
                    .as_deref()
                    .is_some_and(|m| m.contains("preemption: "))
            })
            .count();
        (n >= 3).then_some(n)
    });
    assert!(failed >= 3);
    assert_eq!(
        phase(
            &cluster
                .pods("default")
                .into_iter()
                .find(|p| p.metadata.name.as_deref() == Some("urgent"))
                .unwrap()
        ),
        "Running"
    );
}

#[test]
fn priority_classes_are_resolved_checked_and_built_in() {
    let cluster = Cluster::start();
    cluster.add_node("n1", "1", "4Gi");
    let listed = cluster.wait("the built-in classes", DEADLINE, |_| async {
        let out = kubectl(&cluster, &["get", "priorityclasses"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.contains("system-node-critical") && text.contains("system-cluster-critical"))
            .then_some(text)
    });
    let row = |name: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("system-node-critical")[1], "2000001000");
    assert_eq!(row("system-cluster-critical")[1], "2000000000");

    // A missing class is refused as kube-apiserver does.
    let out = kubectl_stdin(&cluster, &["create"], &pod_yaml("bad", "foo", "100m"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "Error from server (Forbidden): error when creating \"STDIN\": pods \"bad\" is forbidden: no PriorityClass with name foo was found"
        ),
        "{stderr}"
    );

    // User classes are bounded and `system-` is reserved; one global default at most.
    let out = kubectl(
        &cluster,
        &["create", "priorityclass", "huge", "--value=1000000001"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("maximum allowed value of a user defined priority is 1000000000"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(
        &cluster,
        &["create", "priorityclass", "system-mine", "--value=1"],
    );
    assert!(!out.status.success());
    stdout(&kubectl(
        &cluster,
        &[
            "create",
            "priorityclass",
            "base",
            "--value=10",
            "--global-default",
        ],
    ));
    let out = kubectl(
        &cluster,
        &[
            "create",
            "priorityclass",
            "other",
            "--value=20",
            "--global-default",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("PriorityClass base is already marked as default"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // No class: the global default. An explicit different priority is refused.
    let out = kubectl_stdin(
        &cluster,
        &["create"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: plain}\nspec:\n  containers: [{name: c, image: busybox}]\n",
    );
    stdout(&out);
    let out = kubectl(
        &cluster,
        &[
            "get",
            "pod",
            "plain",
            "-o",
            "jsonpath={.spec.priorityClassName} {.spec.priority}",
        ],
    );
    assert_eq!(stdout(&out), "base 10");
    let out = kubectl_stdin(
        &cluster,
        &["create"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: liar}\nspec:\n  priority: 5\n  containers: [{name: c, image: busybox}]\n",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "pods \"liar\" is forbidden: the integer value of priority (5) must not be provided in pod spec"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A `preemptionPolicy: Never` pod waits rather than evicting the lower-priority pod.
    cluster.apply(&pod_yaml("filler", "base", "1"));
    cluster.wait("filler Running", DEADLINE, |_| async {
        let out = kubectl(
            &cluster,
            &["get", "pod", "filler", "-o", "jsonpath={.status.phase}"],
        );
        (String::from_utf8_lossy(&out.stdout) == "Running").then_some(())
    });
    cluster.apply(
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: polite}\nvalue: 1000\npreemptionPolicy: Never\n",
    );
    stdout(&kubectl_stdin(
        &cluster,
        &["create"],
        &pod_yaml("waiter", "polite", "1"),
    ));
    let message = unschedulable_message(&cluster, "waiter", "preemption:");
    assert_eq!(
        message,
        "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never.."
    );
    let pods = cluster.pods("default");
    let get = |n: &str| {
        pods.iter()
            .find(|p| p.metadata.name.as_deref() == Some(n))
            .unwrap()
    };
    assert!(get("filler").metadata.deletion_timestamp.is_none());
    assert_eq!(phase(get("filler")), "Running");
    assert!(get("waiter").spec.as_ref().unwrap().node_name.is_none());
    assert_eq!(get("waiter").spec.as_ref().unwrap().priority, Some(1000));
}
