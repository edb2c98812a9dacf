//! The columns and cells of each built-in kind, following kube-apiserver's printers
//! (`pkg/printers/internalversion/printers.go`) in wide mode.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::certificates::{CSR, csr};
use super::cluster::*;
use super::pod::{POD, has_condition, pod};
use super::{Column, NAME_DESCRIPTION, name_of};
use crate::time::{age_since, human_duration, parse_rfc3339, seconds_between};

/// Computes the cells of one row.
pub(crate) type CellsFn = fn(&Value, SystemTime) -> Vec<Value>;

pub(super) const fn col(name: &'static str, type_: &'static str, priority: i64) -> Column {
    Column {
        name,
        type_,
        format: "",
        description: "",
        priority,
    }
}

pub(super) const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: NAME_DESCRIPTION,
    priority: 0,
};
pub(super) const AGE: Column = Column {
    name: "Age",
    type_: "string",
    format: "",
    description: "CreationTimestamp is a timestamp representing the server time when this object was created.",
    priority: 0,
};
pub(super) const CONTAINERS: Column = col("Containers", "string", 1);
pub(super) const IMAGES: Column = col("Images", "string", 1);
pub(super) const SELECTOR: Column = col("Selector", "string", 1);

/// The printer of a built-in kind, if kube-apiserver has one.
pub(crate) fn printer_for(group: &str, kind: &str) -> Option<(&'static [Column], CellsFn)> {
    let printer: (&'static [Column], CellsFn) = match (group, kind) {
        ("", "Pod") => (POD, pod),
        ("apps", "Deployment") => (DEPLOYMENT, deployment),
        ("apps", "ReplicaSet") | ("", "ReplicationController") => (REPLICASET, replicaset),
        ("apps", "StatefulSet") => (STATEFULSET, statefulset),
        ("apps", "DaemonSet") => (DAEMONSET, daemonset),
        ("apps", "ControllerRevision") => (CONTROLLER_REVISION, controller_revision),
        ("batch", "Job") => (JOB, job),
        ("batch", "CronJob") => (CRONJOB, cronjob),
        ("", "Service") => (SERVICE, service),
        ("", "Endpoints") => (ENDPOINTS, endpoints),
        ("", "Node") => (NODE, node),
        ("", "Namespace") => (NAMESPACE, namespace),
        ("", "ConfigMap") => (CONFIGMAP, configmap),
        ("", "Secret") => (SECRET, secret),
        ("", "ServiceAccount") => (SERVICEACCOUNT, serviceaccount),
        ("", "Event") | ("events.k8s.io", "Event") => (EVENT, event),
        ("", "PersistentVolumeClaim") => (PVC, pvc),
        ("", "PersistentVolume") => (PV, pv),
        ("networking.k8s.io", "Ingress") => (INGRESS, ingress),
        ("networking.k8s.io", "IngressClass") => (INGRESS_CLASS, ingress_class),
        ("networking.k8s.io", "NetworkPolicy") => (NETWORK_POLICY, network_policy),
        ("coordination.k8s.io", "Lease") => (LEASE, lease),
        ("certificates.k8s.io", "CertificateSigningRequest") => (CSR, csr),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            (ROLE_BINDING, role_binding)
        }
        ("scheduling.k8s.io", "PriorityClass") => (PRIORITY_CLASS, priority_class),
        ("policy", "PodDisruptionBudget") => (PDB, pdb),
        ("storage.k8s.io", "StorageClass") => (STORAGE_CLASS, storage_class),
        _ => return None,
    };
    Some(printer)
}

/// Row conditions kube-apiserver attaches: `Completed` for pods that ran to an end.
pub(crate) fn row_conditions(kind: &str, obj: &Value) -> Option<Value> {
    if kind != "Pod" {
        return None;
    }
    match text(obj, "/status/phase") {
        "Succeeded" | "Failed" => Some(json!([{
            "type": "Completed",
            "status": "True",
            "reason": text(obj, "/status/phase"),
            "message": "The pod has completed successfully.",
        }])),
        _ => None,
    }
}

// ---- JSON accessors ----

pub(super) fn text<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub(super) fn int(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

pub(super) fn list<'a>(obj: &'a Value, pointer: &str) -> &'a [Value] {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

pub(super) fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".to_string()
    } else {
        s.to_string()
    }
}

pub(super) fn age(obj: &Value, now: SystemTime) -> Value {
    json!(age_since(
        obj.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str),
        now
    ))
}

/// `labels.FormatLabels`: `k=v,k2=v2` sorted by key, or `<none>`.
pub(super) fn format_labels(map: Option<&Value>) -> String {
    let Some(map) = map.and_then(Value::as_object) else {
        return "<none>".to_string();
    };
    let mut pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        "<none>".to_string()
    } else {
        pairs.join(",")
    }
}

/// The string form of a `LabelSelector` (`metav1.LabelSelectorAsSelector(...).String()`):
/// requirements sorted by key; empty for a selector that selects everything.
pub(crate) fn selector_string(selector: Option<&Value>) -> String {
    let Some(selector) = selector else {
        return String::new();
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or_default())));
        }
    }
    for expr in list(selector, "/matchExpressions") {
        let key = text(expr, "/key").to_string();
        let mut values: Vec<&str> = list(expr, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let s = match text(expr, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.clone(),
            "DoesNotExist" => format!("!{key}"),
            _ => continue,
        };
        reqs.push((key, s));
    }
    reqs.sort();
    reqs.into_iter()
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join(",")
}

/// Names and images of a pod template's containers (`layoutContainerCells`).
pub(super) fn containers_and_images(spec: &Value) -> (String, String) {
    let containers = list(spec, "/containers");
    let names: Vec<&str> = containers.iter().map(|c| text(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(c, "/image")).collect();
    (names.join(","), images.join(","))
}

pub(super) fn template_cells(obj: &Value) -> (Value, Value) {
    let spec = obj.pointer("/spec/template/spec").unwrap_or(&Value::Null);
    let (c, i) = containers_and_images(spec);
    (json!(c), json!(i))
}

// ---- workloads ----

const DEPLOYMENT: &[Column] = &[
    NAME,
    col("Ready", "string", 0),
    col("Up-to-date", "integer", 0),
    col("Available", "integer", 0),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn deployment(obj: &Value, now: SystemTime) -> Vec<Value> {
    let (containers, images) = template_cells(obj);
    vec![
        json!(name_of(obj)),
        json!(format!(
            "{}/{}",
            int(obj, "/status/readyReplicas"),
            int(obj, "/spec/replicas")
        )),
        json!(int(obj, "/status/updatedReplicas")),
        json!(int(obj, "/status/availableReplicas")),
        age(obj, now),
        containers,
        images,
        json!(selector_string(obj.pointer("/spec/selector"))),
    ]
}

const REPLICASET: &[Column] = &[
    NAME,
    col("Desired", "integer", 0),
    col("Current", "integer", 0),
    col("Ready", "integer", 0),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn replicaset(obj: &Value, now: SystemTime) -> Vec<Value> {
    let (containers, images) = template_cells(obj);
    let selector = match obj.pointer("/spec/selector") {
        // A ReplicationController's selector is a plain map.
        Some(s) if s.get("matchLabels").is_none() && s.get("matchExpressions").is_none() => {
            selector_string(Some(&json!({ "matchLabels": s })))
        }
        s => selector_string(s),
    };
    vec![
        json!(name_of(obj)),
        json!(int(obj, "/spec/replicas")),
        json!(int(obj, "/status/replicas")),
        json!(int(obj, "/status/readyReplicas")),
        age(obj, now),
        containers,
        images,
        json!(selector),
    ]
}

const STATEFULSET: &[Column] = &[NAME, col("Ready", "string", 0), AGE, CONTAINERS, IMAGES];

fn statefulset(obj: &Value, now: SystemTime) -> Vec<Value> {
    let (containers, images) = template_cells(obj);
    vec![
        json!(name_of(obj)),
        json!(format!(
            "{}/{}",
            int(obj, "/status/readyReplicas"),
            int(obj, "/spec/replicas")
        )),
        age(obj, now),
        containers,
        images,
    ]
}

const DAEMONSET: &[Column] = &[
    NAME,
    col("Desired", "integer", 0),
    col("Current", "integer", 0),
    col("Ready", "integer", 0),
    col("Up-to-date", "integer", 0),
    col("Available", "integer", 0),
    col("Node Selector", "string", 0),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn daemonset(obj: &Value, now: SystemTime) -> Vec<Value> {
    let (containers, images) = template_cells(obj);
    vec![
        json!(name_of(obj)),
        json!(int(obj, "/status/desiredNumberScheduled")),
        json!(int(obj, "/status/currentNumberScheduled")),
        json!(int(obj, "/status/numberReady")),
        json!(int(obj, "/status/updatedNumberScheduled")),
        json!(int(obj, "/status/numberAvailable")),
        json!(format_labels(
            obj.pointer("/spec/template/spec/nodeSelector")
        )),
        age(obj, now),
        containers,
        images,
        json!(selector_string(obj.pointer("/spec/selector"))),
    ]
}

const CONTROLLER_REVISION: &[Column] = &[
    NAME,
    col("Controller", "string", 0),
    col("Revision", "integer", 0),
    AGE,
];

fn controller_revision(obj: &Value, now: SystemTime) -> Vec<Value> {
    let controller = list(obj, "/metadata/ownerReferences")
        .iter()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
        .map(|o| {
            let api_version = text(o, "/apiVersion");
            let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
            let kind = text(o, "/kind").to_ascii_lowercase();
            let resource = if group.is_empty() {
                kind
            } else {
                format!("{kind}.{group}")
            };
            format!("{resource}/{}", text(o, "/name"))
        })
        .unwrap_or_else(|| "<none>".to_string());
    vec![
        json!(name_of(obj)),
        json!(controller),
        json!(int(obj, "/revision")),
        age(obj, now),
    ]
}

const JOB: &[Column] = &[
    NAME,
    col("Status", "string", 0),
    col("Completions", "string", 0),
    col("Duration", "string", 0),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn job(obj: &Value, now: SystemTime) -> Vec<Value> {
    let succeeded = int(obj, "/status/succeeded");
    let completions = match (
        obj.pointer("/spec/completions").and_then(Value::as_i64),
        obj.pointer("/spec/parallelism").and_then(Value::as_i64),
    ) {
        (Some(c), _) => format!("{succeeded}/{c}"),
        (None, Some(p)) if p > 1 => format!("{succeeded}/1 of {p}"),
        _ => format!("{succeeded}/1"),
    };
    let time = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .and_then(parse_rfc3339)
    };
    let duration = match (time("/status/startTime"), time("/status/completionTime")) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(seconds_between(start, now)),
        (Some(start), Some(end)) => human_duration(seconds_between(start, end)),
    };
    let status = if has_condition(obj, "Complete") {
        "Complete"
    } else if has_condition(obj, "Failed") {
        "Failed"
    } else if obj.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if has_condition(obj, "Suspended") {
        "Suspended"
    } else if has_condition(obj, "FailureTarget") {
        "FailureTarget"
    } else if has_condition(obj, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    let (containers, images) = template_cells(obj);
    vec![
        json!(name_of(obj)),
        json!(status),
        json!(completions),
        json!(duration),
        age(obj, now),
        containers,
        images,
        json!(selector_string(obj.pointer("/spec/selector"))),
    ]
}

const CRONJOB: &[Column] = &[
    NAME,
    col("Schedule", "string", 0),
    col("Timezone", "string", 0),
    col("Suspend", "boolean", 0),
    col("Active", "integer", 0),
    col("Last Schedule", "string", 0),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn cronjob(obj: &Value, now: SystemTime) -> Vec<Value> {
    let last = match obj
        .pointer("/status/lastScheduleTime")
        .and_then(Value::as_str)
    {
        Some(t) => age_since(Some(t), now),
        None => "<none>".to_string(),
    };
    let suspend = match obj.pointer("/spec/suspend").and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let spec = obj
        .pointer("/spec/jobTemplate/spec/template/spec")
        .unwrap_or(&Value::Null);
    let (containers, images) = containers_and_images(spec);
    vec![
        json!(name_of(obj)),
        json!(text(obj, "/spec/schedule")),
        json!(or_none(text(obj, "/spec/timeZone"))),
        json!(suspend),
        json!(list(obj, "/status/active").len()),
        json!(last),
        age(obj, now),
        json!(containers),
        json!(images),
        json!(selector_string(
            obj.pointer("/spec/jobTemplate/spec/selector")
        )),
    ]
}
