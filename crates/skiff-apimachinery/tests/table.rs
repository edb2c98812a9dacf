//! `kubectl get` columns of built-in kinds, row by row.
#![allow(clippy::unwrap_used)]

use std::time::SystemTime;

use serde_json::{Value, json};
use skiff_apimachinery::time::parse_rfc3339;
use skiff_apimachinery::{IncludeObject, Registry, to_table};

fn now() -> SystemTime {
    parse_rfc3339("2024-01-10T12:00:00Z").unwrap()
}

fn cells(plural: &str, group: &str, obj: Value) -> Vec<Value> {
    let registry = Registry::builtin();
    let info = registry
        .all()
        .iter()
        .find(|r| r.plural == plural && r.group == group)
        .unwrap();
    let t = to_table(info, &[obj], IncludeObject::None, now());
    t["rows"][0]["cells"].as_array().unwrap().clone()
}

fn header(plural: &str, group: &str) -> Vec<(String, i64)> {
    let registry = Registry::builtin();
    let info = registry
        .all()
        .iter()
        .find(|r| r.plural == plural && r.group == group)
        .unwrap();
    let t = to_table(info, &[], IncludeObject::None, now());
    t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_uppercase(),
                c["priority"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn pod(status: Value) -> Value {
    json!({
        "metadata": {"name": "web", "creationTimestamp": "2024-01-10T11:55:00Z"},
        "spec": {"containers": [{"name": "app", "image": "nginx"}]},
        "status": status,
    })
}

fn pod_status(status: Value) -> String {
    cells("pods", "", pod(status))[2]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn pod_columns_are_the_kubectl_ones_with_wide_columns_at_priority_one() {
    let names: Vec<_> = header("pods", "").into_iter().collect();
    assert_eq!(
        names,
        vec![
            ("NAME".into(), 0),
            ("READY".into(), 0),
            ("STATUS".into(), 0),
            ("RESTARTS".into(), 0),
            ("AGE".into(), 0),
            ("IP".into(), 1),
            ("NODE".into(), 1),
            ("NOMINATED NODE".into(), 1),
            ("READINESS GATES".into(), 1),
        ]
    );
}

#[test]
fn a_running_ready_pod_shows_running_and_one_of_one() {
    let c = cells(
        "pods",
        "",
        pod(json!({
            "phase": "Running",
            "podIPs": [{"ip": "10.42.0.7"}],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
                                   "state": {"running": {"startedAt": "2024-01-10T11:55:05Z"}}}]
        })),
    );
    assert_eq!(
        c,
        vec![
            json!("web"),
            json!("1/1"),
            json!("Running"),
            json!("0"),
            json!("5m"),
            json!("10.42.0.7"),
            json!("<none>"),
            json!("<none>"),
            json!("<none>")
        ]
    );
}

#[test]
fn a_pending_pod_without_statuses_shows_pending() {
    assert_eq!(pod_status(json!({"phase": "Pending"})), "Pending");
}

#[test]
fn waiting_reasons_replace_the_phase() {
    let waiting = |reason: &str| {
        pod_status(json!({
            "phase": "Pending",
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                                   "state": {"waiting": {"reason": reason}}}]
        }))
    };
    assert_eq!(waiting("ContainerCreating"), "ContainerCreating");
    assert_eq!(waiting("ImagePullBackOff"), "ImagePullBackOff");
}

#[test]
fn a_crash_looping_container_shows_crash_loop_back_off_and_its_restarts() {
    let c = cells(
        "pods",
        "",
        pod(json!({
            "phase": "Running",
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                             "finishedAt": "2024-01-10T11:58:00Z"}}}]
        })),
    );
    assert_eq!(c[1], json!("0/1"));
    assert_eq!(c[2], json!("CrashLoopBackOff"));
    assert_eq!(c[3], json!("4 (2m ago)"));
}

#[test]
fn terminated_containers_show_their_reason_or_exit_code() {
    let terminated = |t: Value| {
        pod_status(json!({
            "phase": "Succeeded",
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                                   "state": {"terminated": t}}]
        }))
    };
    assert_eq!(
        terminated(json!({"exitCode": 0, "reason": "Completed"})),
        "Completed"
    );
    assert_eq!(terminated(json!({"exitCode": 3})), "ExitCode:3");
    assert_eq!(
        terminated(json!({"exitCode": 137, "signal": 9})),
        "Signal:9"
    );
}

#[test]
fn a_deleted_pod_shows_terminating_unless_it_finished() {
    let mut p = pod(json!({"phase": "Running"}));
    p["metadata"]["deletionTimestamp"] = json!("2024-01-10T11:59:00Z");
    assert_eq!(cells("pods", "", p.clone())[2], json!("Terminating"));
    p["status"]["phase"] = json!("Succeeded");
    assert_eq!(cells("pods", "", p)[2], json!("Succeeded"));
}

#[test]
fn init_containers_show_their_progress() {
    let mut p = pod(json!({
        "phase": "Pending",
        "initContainerStatuses": [
            {"name": "one", "ready": true, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "two", "ready": false, "restartCount": 0, "state": {"running": {}}}
        ],
        "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                               "state": {"waiting": {"reason": "PodInitializing"}}}]
    }));
    p["spec"]["initContainers"] = json!([{"name": "one"}, {"name": "two"}]);
    assert_eq!(cells("pods", "", p.clone())[2], json!("Init:1/2"));

    p["status"]["initContainerStatuses"][1]["state"] =
        json!({"waiting": {"reason": "CrashLoopBackOff"}});
    assert_eq!(
        cells("pods", "", p.clone())[2],
        json!("Init:CrashLoopBackOff")
    );

    p["status"]["initContainerStatuses"][1]["state"] = json!({"terminated": {"exitCode": 2}});
    assert_eq!(cells("pods", "", p)[2], json!("Init:ExitCode:2"));
}

#[test]
fn sidecar_init_containers_count_towards_ready() {
    let mut p = pod(json!({
        "phase": "Running",
        "initContainerStatuses": [
            {"name": "proxy", "ready": true, "started": true, "restartCount": 1, "state": {"running": {}}}
        ],
        "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}}]
    }));
    p["spec"]["initContainers"] = json!([{"name": "proxy", "restartPolicy": "Always"}]);
    let c = cells("pods", "", p);
    assert_eq!(c[1], json!("2/2"));
    assert_eq!(c[2], json!("Running"));
    assert_eq!(c[3], json!("1"));
}

#[test]
fn a_completed_container_beside_a_running_one_shows_not_ready() {
    let mut p = pod(json!({
        "phase": "Running",
        "containerStatuses": [
            {"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}},
            {"name": "job", "ready": false, "restartCount": 0,
             "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
        ]
    }));
    p["spec"]["containers"] = json!([{"name": "app"}, {"name": "job"}]);
    assert_eq!(cells("pods", "", p)[2], json!("NotReady"));
}

#[test]
fn deployments_show_ready_up_to_date_available_and_wide_selector() {
    let d = json!({
        "metadata": {"name": "web", "creationTimestamp": "2024-01-08T08:00:00Z"},
        "spec": {"replicas": 3,
                 "selector": {"matchLabels": {"app": "web"},
                              "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]},
                 "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"},
                                                      {"name": "side", "image": "busybox"}]}}},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
    });
    assert_eq!(
        cells("deployments", "apps", d),
        vec![
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("2d4h"),
            json!("nginx,side"),
            json!("nginx:1.25,busybox"),
            json!("app=web,tier in (a,b)")
        ]
    );
}

#[test]
fn services_show_type_ips_and_ports() {
    let svc = json!({
        "metadata": {"name": "web", "creationTimestamp": "2024-01-10T11:00:00Z"},
        "spec": {"type": "NodePort", "clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
                 "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
                 "selector": {"app": "web"}}
    });
    assert_eq!(
        cells("services", "", svc),
        vec![
            json!("web"),
            json!("NodePort"),
            json!("10.43.0.10"),
            json!("<none>"),
            json!("80:30080/TCP,53/UDP"),
            json!("60m"),
            json!("app=web")
        ]
    );
    let lb =
        json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIP": "None"}});
    let c = cells("services", "", lb);
    assert_eq!(c[3], json!("<pending>"));
    assert_eq!(c[4], json!("<none>"));
    assert_eq!(c[5], json!("<unknown>"));
}

#[test]
fn nodes_show_readiness_roles_and_version() {
    let node = json!({
        "metadata": {"name": "n1", "creationTimestamp": "2024-01-10T11:59:30Z",
                     "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/master": ""}},
        "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "addresses": [{"type": "InternalIP", "address": "192.168.1.5"}],
                   "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian"}}
    });
    let c = cells("nodes", "", node);
    assert_eq!(
        &c[..6],
        &[
            json!("n1"),
            json!("Ready,SchedulingDisabled"),
            json!("control-plane,master"),
            json!("30s"),
            json!("v1.33.0"),
            json!("192.168.1.5")
        ]
    );
    assert_eq!(c[6], json!("<none>"));
    assert_eq!(c[8], json!("<unknown>"));
}

#[test]
fn jobs_show_status_completions_and_duration() {
    let job = json!({
        "metadata": {"name": "pi", "creationTimestamp": "2024-01-10T11:00:00Z"},
        "spec": {"completions": 1, "parallelism": 1},
        "status": {"succeeded": 1, "startTime": "2024-01-10T11:00:00Z", "completionTime": "2024-01-10T11:00:42Z",
                   "conditions": [{"type": "Complete", "status": "True"}]}
    });
    let c = cells("jobs", "batch", job);
    assert_eq!(
        &c[..5],
        &[
            json!("pi"),
            json!("Complete"),
            json!("1/1"),
            json!("42s"),
            json!("60m")
        ]
    );
    let running = json!({"metadata": {"name": "p"}, "spec": {"parallelism": 3}, "status": {}});
    let c = cells("jobs", "batch", running);
    assert_eq!(&c[1..4], &[json!("Running"), json!("0/1 of 3"), json!("")]);
}

#[test]
fn cronjobs_show_schedule_timezone_and_last_schedule() {
    let cj = json!({
        "metadata": {"name": "tick"},
        "spec": {"schedule": "*/5 * * * *", "suspend": false},
        "status": {"active": [{"name": "tick-1"}], "lastScheduleTime": "2024-01-10T11:55:00Z"}
    });
    assert_eq!(
        &cells("cronjobs", "batch", cj)[..6],
        &[
            json!("tick"),
            json!("*/5 * * * *"),
            json!("<none>"),
            json!("False"),
            json!(1),
            json!("5m")
        ]
    );
}

#[test]
fn events_show_last_seen_type_reason_object_and_message() {
    let ev = json!({
        "metadata": {"name": "web.17a"},
        "involvedObject": {"kind": "Pod", "name": "web"},
        "type": "Normal", "reason": "Scheduled", "message": "Successfully assigned default/web to n1\n",
        "firstTimestamp": "2024-01-10T11:50:00Z", "lastTimestamp": "2024-01-10T11:58:00Z", "count": 2,
        "source": {"component": "default-scheduler"}
    });
    assert_eq!(
        cells("events", "", ev),
        vec![
            json!("2m"),
            json!("Normal"),
            json!("Scheduled"),
            json!("pod/web"),
            json!(""),
            json!("default-scheduler"),
            json!("Successfully assigned default/web to n1"),
            json!("10m"),
            json!(2),
            json!("web.17a")
        ]
    );
}

#[test]
fn small_kinds_show_their_counts() {
    let secret = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "", "b": ""}});
    assert_eq!(
        &cells("secrets", "", secret)[..3],
        &[json!("s"), json!("Opaque"), json!(2)]
    );
    let sa = json!({"metadata": {"name": "default"}});
    assert_eq!(
        &cells("serviceaccounts", "", sa)[..2],
        &[json!("default"), json!(0)]
    );
    let ns = json!({"metadata": {"name": "kube-system"}, "status": {"phase": "Active"}});
    assert_eq!(
        &cells("namespaces", "", ns)[..2],
        &[json!("kube-system"), json!("Active")]
    );
    let ep = json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                     "ports": [{"port": 80}, {"port": 443}]}]});
    assert_eq!(
        cells("endpoints", "", ep)[1],
        json!("10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more...")
    );
    let rs = json!({"metadata": {"name": "web-1"}, "spec": {"replicas": 2}, "status": {"replicas": 2, "readyReplicas": 1}});
    assert_eq!(
        &cells("replicasets", "apps", rs)[..4],
        &[json!("web-1"), json!(2), json!(2), json!(1)]
    );
    let sts = json!({"metadata": {"name": "db"}, "spec": {"replicas": 3}, "status": {"readyReplicas": 3}});
    assert_eq!(
        &cells("statefulsets", "apps", sts)[..2],
        &[json!("db"), json!("3/3")]
    );
}

#[test]
fn headers_match_what_kubectl_users_know() {
    let visible = |plural: &str, group: &str| -> Vec<String> {
        header(plural, group)
            .into_iter()
            .filter(|(_, p)| *p == 0)
            .map(|(n, _)| n)
            .collect()
    };
    assert_eq!(
        visible("daemonsets", "apps"),
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE SELECTOR",
            "AGE"
        ]
    );
    assert_eq!(
        visible("jobs", "batch"),
        ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    );
    assert_eq!(
        visible("cronjobs", "batch"),
        [
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "SUSPEND",
            "ACTIVE",
            "LAST SCHEDULE",
            "AGE"
        ]
    );
    assert_eq!(
        visible("services", ""),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert_eq!(
        visible("events", ""),
        ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    );
    assert_eq!(
        visible("leases", "coordination.k8s.io"),
        ["NAME", "HOLDER", "AGE"]
    );
    assert_eq!(
        visible("clusterroles", "rbac.authorization.k8s.io"),
        ["NAME", "CREATED AT"]
    );
}
