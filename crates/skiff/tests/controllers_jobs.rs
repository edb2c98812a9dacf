//! Jobs end to end: `completionMode: Indexed`, `backoffLimitPerIndex`/`maxFailedIndexes`,
//! `successPolicy`, `podFailurePolicy` and `ttlSecondsAfterFinished`, on a real `skiff server`
//! with fake nodes and the fake kubelet (pods finish in the phase their `test.skiff.dev/phase`
//! annotation asks for; where one pod's end matters, the test patches that pod's status as its
//! kubelet would), and an Indexed Job whose busybox pods really run on the server's node agent
//! and print their index.
// Both harnesses include server_support; each gets its own copy.
#![allow(clippy::unwrap_used, clippy::duplicate_mod)]

mod agent_support;
mod controllers_support;

use std::time::Duration;

use controllers_support::Cluster;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

const DEADLINE: Duration = Duration::from_secs(60);
const INDEX: &str = "batch.kubernetes.io/job-completion-index";

fn job_condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

fn job_pods(cluster: &Cluster, job: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let params = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    cluster.block_on(async { api.list(&params).await.unwrap().items })
}

/// Waits until `check` finds what it wants among job `job`'s pods.
fn wait_job_pods<T>(
    cluster: &Cluster,
    job: &'static str,
    what: &str,
    check: impl Fn(Vec<Pod>) -> Option<T> + Copy,
) -> T {
    cluster.wait(what, DEADLINE, move |client| async move {
        let params = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
        let pods = Api::<Pod>::namespaced(client, "default")
            .list(&params)
            .await
            .ok()?
            .items;
        check(pods)
    })
}

fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Merge-patches pod `name`'s status, as its kubelet would.
fn set_pod_status(cluster: &Cluster, name: &str, status: serde_json::Value) {
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    cluster.block_on(async {
        api.patch_status(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(status),
        )
        .await
        .unwrap()
    });
}

#[test]
fn an_indexed_job_runs_each_index_once_and_reports_completed_indexes() {
    let cluster = Cluster::start();
    cluster.add_node("n1", "8", "8Gi");
    cluster.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: idx}
spec:
  completionMode: Indexed
  completions: 3
  parallelism: 2
  template:
    metadata:
      annotations: {test.skiff.dev/phase: Succeeded}
    spec:
      restartPolicy: Never
      containers:
      - {name: c, image: busybox, command: [sh, -c, 'echo $JOB_COMPLETION_INDEX']}
"#,
    );
    let job = cluster.wait(
        "the Indexed Job to complete",
        DEADLINE,
        |client| async move {
            let job = Api::<Job>::namespaced(client, "default")
                .get("idx")
                .await
                .ok()?;
            job_condition(&job, "Complete").then_some(job)
        },
    );
    let status = job.status.unwrap();
    assert_eq!(status.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(status.succeeded, Some(3));
    assert!(status.completion_time.is_some());
    let out = controllers_support::ok(cluster.kubectl().args([
        "get",
        "job",
        "idx",
        "-o",
        "jsonpath={.status.completedIndexes}",
    ]));
    assert_eq!(out, "0-2");

    let mut pods = job_pods(&cluster, "idx");
    pods.sort_by_key(|p| p.metadata.annotations.as_ref().unwrap()[INDEX].clone());
    assert_eq!(pods.len(), 3, "one pod per index, each completed once");
    for (i, pod) in pods.iter().enumerate() {
        let name = pod.metadata.name.as_deref().unwrap();
        assert!(name.starts_with(&format!("idx-{i}-")), "{name}");
        assert_eq!(pod.metadata.labels.as_ref().unwrap()[INDEX], i.to_string());
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(format!("idx-{i}").as_str()));
        let env = spec.containers[0].env.as_ref().unwrap();
        let var = env
            .iter()
            .find(|e| e.name == "JOB_COMPLETION_INDEX")
            .unwrap();
        let field = &var.value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
        assert_eq!(field.field_path, format!("metadata.annotations['{INDEX}']"));
    }
    let events = controllers_support::ok(cluster.kubectl().args(["describe", "job", "idx"]));
    assert!(events.contains("Completed"), "{events}");
}

#[test]
fn a_finished_job_with_a_ttl_is_deleted_with_its_pods() {
    let cluster = Cluster::start();
    cluster.add_node("n1", "8", "8Gi");
    cluster.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: short}
spec:
  ttlSecondsAfterFinished: 1
  template:
    metadata:
      annotations: {test.skiff.dev/phase: Succeeded}
    spec:
      restartPolicy: Never
      containers:
      - {name: c, image: busybox}
---
apiVersion: batch/v1
kind: Job
metadata: {name: doomed}
spec:
  ttlSecondsAfterFinished: 0
  backoffLimit: 0
  template:
    metadata:
      annotations: {test.skiff.dev/phase: Failed}
    spec:
      restartPolicy: Never
      containers:
      - {name: c, image: busybox}
"#,
    );
    // `short` is seen Complete, with its pod, before the TTL runs out.
    cluster.wait("short to complete", DEADLINE, |client| async move {
        let job = Api::<Job>::namespaced(client, "default")
            .get("short")
            .await
            .ok()?;
        job_condition(&job, "Complete").then_some(())
    });
    for job in ["short", "doomed"] {
        cluster.wait(
            &format!("{job} and its pods to be deleted"),
            DEADLINE,
            |client| async move {
                let gone = Api::<Job>::namespaced(client.clone(), "default")
                    .get_opt(job)
                    .await
                    .ok()?
                    .is_none();
                let pods = Api::<Pod>::namespaced(client, "default")
                    .list(&ListParams::default().labels(&format!("job-name={job}")))
                    .await
                    .ok()?;
                (gone && pods.items.is_empty()).then_some(())
            },
        );
    }
}

#[test]
fn indexed_job_pods_on_the_node_agent_print_their_index_and_hostname() {
    let c = agent_support::Cluster::start();
    let long = Duration::from_secs(120);
    c.wait("the node to be Ready", long, || {
        c.field(
            &["get", "node", "node-1"],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True"
    });
    let image = &c.image;
    c.apply(&format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: echo}}
spec:
  completionMode: Indexed
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: c
        image: {image}
        command: [sh, -c, 'echo "$JOB_COMPLETION_INDEX $(hostname)"']
"#
    ));
    c.wait("the Job to complete", long, || {
        c.field(
            &["get", "job", "echo"],
            "{.status.conditions[?(@.type==\"Complete\")].status}",
        ) == "True"
    });
    assert_eq!(
        c.field(&["get", "job", "echo"], "{.status.completedIndexes}"),
        "0-2"
    );
    for i in 0..3 {
        let pod = c.k(&[
            "get",
            "pods",
            "-l",
            &format!("{INDEX}={i}"),
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ]);
        assert!(pod.starts_with(&format!("echo-{i}-")), "{pod}");
        assert_eq!(c.k(&["logs", &pod]), format!("{i} echo-{i}\n"));
    }
}

fn condition_reason(job: &Job, type_: &str) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")?
        .reason
        .clone()
}

fn wait_for_condition(cluster: &Cluster, name: &'static str, type_: &'static str) -> Job {
    cluster.wait(
        &format!("{name} to get condition {type_}"),
        DEADLINE,
        |client| async move {
            let job = Api::<Job>::namespaced(client, "default")
                .get(name)
                .await
                .ok()?;
            job_condition(&job, type_).then_some(job)
        },
    )
}

#[test]
fn backoff_limit_per_index_fails_indexes_and_max_failed_indexes_stops_the_job() {
    let cluster = Cluster::start();
    cluster.add_node("n1", "8", "8Gi");
    cluster.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: per-index}
spec:
  completionMode: Indexed
  completions: 2
  parallelism: 2
  backoffLimitPerIndex: 1
  template:
    metadata:
      annotations: {test.skiff.dev/phase: Failed}
    spec:
      restartPolicy: Never
      containers:
      - {name: c, image: busybox}
---
apiVersion: batch/v1
kind: Job
metadata: {name: max-failed}
spec:
  completionMode: Indexed
  completions: 3
  parallelism: 1
  backoffLimitPerIndex: 0
  maxFailedIndexes: 0
  template:
    metadata:
      annotations: {test.skiff.dev/phase: Failed}
    spec:
      restartPolicy: Never
      containers:
      - {name: c, image: busybox}
"#,
    );
    let job = wait_for_condition(&cluster, "per-index", "Failed");
    assert_eq!(
        condition_reason(&job, "Failed").as_deref(),
        Some("FailedIndexes")
    );
    assert_eq!(
        condition_reason(&job, "FailureTarget").as_deref(),
        Some("FailedIndexes")
    );
    let status = job.status.unwrap();
    assert_eq!(status.failed_indexes.as_deref(), Some("0-1"));
    assert_eq!(status.failed, Some(4), "each index ran twice");
    let mut counts: Vec<(String, String)> = job_pods(&cluster, "per-index")
        .iter()
        .map(|p| {
            let a = p.metadata.annotations.as_ref().unwrap();
            (
                a[INDEX].clone(),
                a["batch.kubernetes.io/job-index-failure-count"].clone(),
            )
        })
        .collect();
    counts.sort();
    let expected: Vec<(String, String)> = [("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
        .iter()
        .map(|(i, c)| (i.to_string(), c.to_string()))
        .collect();
    assert_eq!(counts, expected);

    let job = wait_for_condition(&cluster, "max-failed", "Failed");
    assert_eq!(
        condition_reason(&job, "Failed").as_deref(),
        Some("MaxFailedIndexesExceeded")
    );
    assert_eq!(job.status.unwrap().failed_indexes.as_deref(), Some("0"));
    assert_eq!(
        job_pods(&cluster, "max-failed").len(),
        1,
        "no index after 0"
    );
}

#[test]
fn a_met_success_policy_completes_the_job_and_ends_the_other_pods() {
    let cluster = Cluster::start();
    cluster.add_node("n1", "8", "8Gi");
    cluster.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: leader}
spec:
  completionMode: Indexed
  completions: 3
  parallelism: 3
  successPolicy:
    rules:
    - {succeededIndexes: "0"}
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: c, image: busybox}
"#,
    );
    // The fake kubelet runs the pods; the test finishes index 0 as its kubelet would.
    let leader = wait_job_pods(&cluster, "leader", "three running pods", |pods| {
        (pods.iter().filter(|p| is_running(p)).count() == 3).then(|| {
            pods.into_iter()
                .find(|p| p.metadata.labels.as_ref().unwrap()[INDEX] == "0")
                .unwrap()
        })
    });
    let name = leader.metadata.name.clone().unwrap();
    set_pod_status(
        &cluster,
        &name,
        serde_json::json!({"status": {"phase": "Succeeded"}}),
    );
    let job = wait_for_condition(&cluster, "leader", "Complete");
    assert_eq!(
        condition_reason(&job, "Complete").as_deref(),
        Some("SuccessPolicy")
    );
    assert_eq!(
        condition_reason(&job, "SuccessCriteriaMet").as_deref(),
        Some("SuccessPolicy")
    );
    let status = job.status.unwrap();
    let types: Vec<&str> = status
        .conditions
        .iter()
        .flatten()
        .map(|c| c.type_.as_str())
        .collect();
    assert_eq!(types, ["SuccessCriteriaMet", "Complete"]);
    assert_eq!(status.completed_indexes.as_deref(), Some("0"));
    wait_job_pods(&cluster, "leader", "the other pods to be deleted", |pods| {
        (pods.len() == 1).then_some(())
    });
}

#[test]
fn a_pod_failure_policy_fails_the_job_on_an_exit_code() {
    let cluster = Cluster::start();
    cluster.add_node("n1", "8", "8Gi");
    cluster.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: exits}
spec:
  completions: 2
  parallelism: 1
  backoffLimit: 6
  podFailurePolicy:
    rules:
    - action: FailJob
      onExitCodes: {containerName: c, operator: In, values: [42]}
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: c, image: busybox}
"#,
    );
    // The fake kubelet runs the pod; the test ends it with exit code 42 as its kubelet would.
    let pod = wait_job_pods(&cluster, "exits", "a running pod", |pods| {
        pods.into_iter().find(is_running)
    });
    let name = pod.metadata.name.clone().unwrap();
    let status = serde_json::json!({"status": {"phase": "Failed", "containerStatuses": [
        {"name": "c", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
         "state": {"terminated": {"exitCode": 42, "reason": "Error"}}}]}});
    set_pod_status(&cluster, &name, status);
    let job = wait_for_condition(&cluster, "exits", "Failed");
    assert_eq!(
        condition_reason(&job, "Failed").as_deref(),
        Some("PodFailurePolicy")
    );
    let message = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Failed"))
        .and_then(|c| c.message.clone())
        .unwrap();
    assert_eq!(
        message,
        format!(
            "Container c for pod default/{name} failed with exit code 42 matching FailJob rule at index 0"
        )
    );
    assert_eq!(job_pods(&cluster, "exits").len(), 1, "not retried");
}

const TRACKING: &str = "batch.kubernetes.io/job-tracking";

fn tracked(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == TRACKING))
}

fn get_job(cluster: &Cluster, name: &str) -> Job {
    let api: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    cluster.block_on(async { api.get(name).await.unwrap() })
}

/// Waits until job `name`'s status passes `check`.
fn wait_job_status(
    cluster: &Cluster,
    name: &'static str,
    what: &str,
    check: impl Fn(&k8s_openapi::api::batch::v1::JobStatus) -> bool + Copy,
) -> Job {
    cluster.wait(what, DEADLINE, move |client| async move {
        let job = Api::<Job>::namespaced(client, "default")
            .get(name)
            .await
            .ok()?;
        check(job.status.as_ref()?).then_some(job)
    })
}

fn delete_pod(cluster: &Cluster, name: &str) {
    controllers_support::ok(
        cluster
            .kubectl()
            .args(["delete", "pod", name, "--wait=false"]),
    );
}

#[test]
fn finished_pods_are_counted_once_through_the_tracking_finalizer_even_when_deleted() {
    let cluster = Cluster::start();
    cluster.add_node("n1", "8", "8Gi");
    cluster.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: tracked}
spec:
  completions: 2
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: c, image: busybox}
"#,
    );
    let running: Vec<String> = wait_job_pods(&cluster, "tracked", "2 running pods", |pods| {
        (pods.len() == 2 && pods.iter().all(is_running)).then(|| {
            assert!(pods.iter().all(tracked), "running pods carry {TRACKING}");
            pods.iter()
                .map(|p| p.metadata.name.clone().unwrap())
                .collect()
        })
    });
    // The first succeeds: counted, and its finalizer goes (the pod stays).
    set_pod_status(
        &cluster,
        &running[0],
        serde_json::json!({"status": {"phase": "Succeeded"}}),
    );
    wait_job_status(&cluster, "tracked", "succeeded=1", |s| {
        s.succeeded == Some(1)
    });
    let first = running[0].clone();
    wait_job_pods(
        &cluster,
        "tracked",
        "the counted pod to lose the finalizer",
        |pods| {
            pods.iter()
                .find(|p| p.metadata.name.as_deref() == Some(first.as_str()))
                .filter(|p| !tracked(p))
                .map(|_| ())
        },
    );
    // The second succeeds and is deleted at once: still counted, exactly once.
    set_pod_status(
        &cluster,
        &running[1],
        serde_json::json!({"status": {"phase": "Succeeded"}}),
    );
    delete_pod(&cluster, &running[1]);
    let job = wait_for_condition(&cluster, "tracked", "Complete");
    let status = job.status.unwrap();
    assert_eq!((status.succeeded, status.failed), (Some(2), Some(0)));
    let uncounted = status.uncounted_terminated_pods.unwrap_or_default();
    assert!(uncounted.succeeded.unwrap_or_default().is_empty());
    assert!(uncounted.failed.unwrap_or_default().is_empty());
    // The first pod is deleted too after the fact (as the pod GC would): nothing changes.
    delete_pod(&cluster, &running[0]);
    wait_job_pods(&cluster, "tracked", "both pods to be gone", |pods| {
        pods.is_empty().then_some(())
    });
    let status = get_job(&cluster, "tracked").status.unwrap();
    assert_eq!((status.succeeded, status.failed), (Some(2), Some(0)));
    let out = controllers_support::ok(cluster.kubectl().args([
        "get",
        "job",
        "tracked",
        "-o",
        "jsonpath={.status.succeeded}/{.status.conditions[?(@.type==\"Complete\")].status}",
    ]));
    assert_eq!(out, "2/True");
}

#[test]
fn a_pod_deleted_while_running_counts_as_failed_and_is_replaced_at_once() {
    let cluster = Cluster::start();
    cluster.add_node("n1", "8", "8Gi");
    cluster.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: eager}
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: c, image: busybox}
"#,
    );
    let first = wait_job_pods(&cluster, "eager", "a running pod", |pods| {
        pods.iter().find(|p| is_running(p))?.metadata.name.clone()
    });
    delete_pod(&cluster, &first);
    // TerminatingOrFailed (the default): counted failed and replaced without waiting.
    wait_job_status(&cluster, "eager", "failed=1 and a new active pod", |s| {
        s.failed == Some(1) && s.active == Some(1)
    });
    wait_job_pods(
        &cluster,
        "eager",
        "the deleted pod gone, one new pod",
        |pods| {
            (pods.len() == 1 && pods[0].metadata.name.as_deref() != Some(first.as_str()))
                .then_some(())
        },
    );
}

#[test]
fn replacement_policy_failed_waits_for_the_terminating_pod_to_fail() {
    let cluster = Cluster::start();
    cluster.add_node("n1", "8", "8Gi");
    cluster.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: patient}
spec:
  podReplacementPolicy: Failed
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: c, image: busybox}
"#,
    );
    let spec_policy = controllers_support::ok(cluster.kubectl().args([
        "get",
        "job",
        "patient",
        "-o",
        "jsonpath={.spec.podReplacementPolicy}",
    ]));
    assert_eq!(spec_policy, "Failed");
    let first = wait_job_pods(&cluster, "patient", "a running pod", |pods| {
        pods.iter().find(|p| is_running(p))?.metadata.name.clone()
    });
    // Deleted: the fake kubelet ends it at once, but its phase stays Running, so it is
    // terminating, and no replacement comes while it is.
    delete_pod(&cluster, &first);
    wait_job_status(&cluster, "patient", "terminating=1", |s| {
        s.terminating == Some(1) && s.active == Some(0)
    });
    let pods = job_pods(&cluster, "patient");
    assert_eq!(pods.len(), 1, "no replacement while the pod terminates");
    assert!(tracked(&pods[0]), "a terminating pod is not counted yet");
    let out = controllers_support::ok(cluster.kubectl().args([
        "get",
        "job",
        "patient",
        "-o",
        "jsonpath={.status.terminating}/{.status.failed}",
    ]));
    assert_eq!(out, "1/0");
    // Its kubelet reports it Failed: counted, released, replaced.
    set_pod_status(
        &cluster,
        &first,
        serde_json::json!({"status": {"phase": "Failed"}}),
    );
    wait_job_status(
        &cluster,
        "patient",
        "failed=1, terminating=0, active=1",
        |s| s.failed == Some(1) && s.terminating == Some(0) && s.active == Some(1),
    );
    wait_job_pods(&cluster, "patient", "only the replacement left", |pods| {
        (pods.len() == 1 && pods[0].metadata.name.as_deref() != Some(first.as_str())).then_some(())
    });
}

#[test]
fn deleting_a_job_releases_its_pods_from_the_tracking_finalizer() {
    let cluster = Cluster::start();
    cluster.add_node("n1", "8", "8Gi");
    let job = |name: &str| {
        format!(
            r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
  parallelism: 2
  completions: 4
  template:
    spec:
      restartPolicy: Never
      containers:
      - {{name: c, image: busybox}}
"#
        )
    };
    cluster.apply(&job("cascade"));
    cluster.apply(&job("orphaned"));
    for name in ["cascade", "orphaned"] {
        wait_job_pods(&cluster, name, "2 tracked running pods", |pods| {
            (pods.len() == 2 && pods.iter().all(|p| is_running(p) && tracked(p))).then_some(())
        });
    }
    // Background cascading: the collector deletes the pods, which then lose the finalizer.
    controllers_support::ok(cluster.kubectl().args(["delete", "job", "cascade"]));
    wait_job_pods(&cluster, "cascade", "the job's pods to be gone", |pods| {
        pods.is_empty().then_some(())
    });
    // Orphaned: the pods stay, without owner and without the finalizer.
    controllers_support::ok(cluster.kubectl().args([
        "delete",
        "job",
        "orphaned",
        "--cascade=orphan",
    ]));
    wait_job_pods(&cluster, "orphaned", "2 released orphans", |pods| {
        (pods.len() == 2
            && pods.iter().all(|p| {
                !tracked(p)
                    && p.metadata
                        .owner_references
                        .as_deref()
                        .unwrap_or_default()
                        .is_empty()
            }))
        .then_some(())
    });
}
