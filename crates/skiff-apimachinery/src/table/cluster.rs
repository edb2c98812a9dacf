//! Printers of services, networking, nodes, namespaces, configuration, events and storage.

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::printers::*;
use super::{Column, name_of};
use crate::time::age_since;

// ---- services and networking ----

pub(super) const SERVICE: &[Column] = &[
    NAME,
    col("Type", "string", 0),
    col("Cluster-IP", "string", 0),
    col("External-IP", "string", 0),
    col("Port(s)", "string", 0),
    AGE,
    SELECTOR,
];

pub(super) fn load_balancer_ingress(obj: &Value) -> Vec<String> {
    list(obj, "/status/loadBalancer/ingress")
        .iter()
        .filter_map(|i| {
            let ip = text(i, "/ip");
            let host = text(i, "/hostname");
            if !ip.is_empty() {
                Some(ip.to_string())
            } else if !host.is_empty() {
                Some(host.to_string())
            } else {
                None
            }
        })
        .collect()
}

pub(super) fn service(obj: &Value, now: SystemTime) -> Vec<Value> {
    let type_ = match text(obj, "/spec/type") {
        "" => "ClusterIP",
        t => t,
    };
    let cluster_ip = list(obj, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| text(obj, "/spec/clusterIP"));
    let external: Vec<String> = list(obj, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let external_ip = match type_ {
        "ClusterIP" | "NodePort" if !external.is_empty() => external.join(","),
        "ClusterIP" | "NodePort" => "<none>".to_string(),
        "LoadBalancer" => {
            let mut all = load_balancer_ingress(obj);
            all.extend(external);
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => text(obj, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    };
    let ports: Vec<String> = list(obj, "/spec/ports")
        .iter()
        .map(|p| {
            let node_port = match int(p, "/nodePort") {
                0 => String::new(),
                n => format!(":{n}"),
            };
            let protocol = match text(p, "/protocol") {
                "" => "TCP",
                proto => proto,
            };
            format!("{}{node_port}/{protocol}", int(p, "/port"))
        })
        .collect();
    vec![
        json!(name_of(obj)),
        json!(type_),
        json!(or_none(cluster_ip)),
        json!(external_ip),
        json!(or_none(&ports.join(","))),
        age(obj, now),
        json!(format_labels(obj.pointer("/spec/selector"))),
    ]
}

pub(super) const ENDPOINTS: &[Column] = &[NAME, col("Endpoints", "string", 0), AGE];

pub(super) fn endpoints(obj: &Value, now: SystemTime) -> Vec<Value> {
    let subsets = list(obj, "/subsets");
    let cell = if subsets.is_empty() {
        "<none>".to_string()
    } else {
        const MAX: usize = 3;
        let mut shown = Vec::new();
        let mut count = 0;
        for subset in subsets {
            let addresses = list(subset, "/addresses");
            let ports = list(subset, "/ports");
            if ports.is_empty() {
                count += addresses.len();
                for a in addresses {
                    if shown.len() < MAX {
                        shown.push(text(a, "/ip").to_string());
                    }
                }
                continue;
            }
            for port in ports {
                count += addresses.len();
                for a in addresses {
                    if shown.len() < MAX {
                        let ip = text(a, "/ip");
                        let p = int(port, "/port");
                        shown.push(if ip.contains(':') {
                            format!("[{ip}]:{p}")
                        } else {
                            format!("{ip}:{p}")
                        });
                    }
                }
            }
        }
        if count > MAX {
            format!("{} + {} more...", shown.join(","), count - MAX)
        } else {
            shown.join(",")
        }
    };
    vec![json!(name_of(obj)), json!(cell), age(obj, now)]
}

pub(super) const INGRESS: &[Column] = &[
    NAME,
    col("Class", "string", 0),
    col("Hosts", "string", 0),
    col("Address", "string", 0),
    col("Ports", "string", 0),
    AGE,
];

pub(super) fn ingress(obj: &Value, now: SystemTime) -> Vec<Value> {
    let hosts: Vec<&str> = list(obj, "/spec/rules")
        .iter()
        .map(|r| text(r, "/host"))
        .filter(|h| !h.is_empty())
        .collect();
    let hosts = match hosts.len() {
        0 => "*".to_string(),
        n if n > 3 => format!("{} + {} more...", hosts[..3].join(","), n - 3),
        _ => hosts.join(","),
    };
    let ports = if list(obj, "/spec/tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        json!(name_of(obj)),
        json!(or_none(text(obj, "/spec/ingressClassName"))),
        json!(hosts),
        json!(load_balancer_ingress(obj).join(",")),
        json!(ports),
        age(obj, now),
    ]
}

pub(super) const INGRESS_CLASS: &[Column] = &[
    NAME,
    col("Controller", "string", 0),
    col("Parameters", "string", 0),
    AGE,
];

pub(super) fn ingress_class(obj: &Value, now: SystemTime) -> Vec<Value> {
    let parameters = match obj.pointer("/spec/parameters") {
        Some(p) => {
            let group = text(p, "/apiGroup");
            let kind = if group.is_empty() {
                text(p, "/kind").to_string()
            } else {
                format!("{}.{group}", text(p, "/kind"))
            };
            format!("{kind}/{}", text(p, "/name"))
        }
        None => "<none>".to_string(),
    };
    vec![
        json!(name_of(obj)),
        json!(text(obj, "/spec/controller")),
        json!(parameters),
        age(obj, now),
    ]
}

pub(super) const NETWORK_POLICY: &[Column] = &[NAME, col("Pod-Selector", "string", 0), AGE];

pub(super) fn network_policy(obj: &Value, now: SystemTime) -> Vec<Value> {
    let selector = selector_string(obj.pointer("/spec/podSelector"));
    vec![
        json!(name_of(obj)),
        json!(or_none(&selector)),
        age(obj, now),
    ]
}

pub(super) const PDB: &[Column] = &[
    NAME,
    col("Min Available", "string", 0),
    col("Max Unavailable", "string", 0),
    col("Allowed Disruptions", "integer", 0),
    AGE,
];

pub(super) fn pdb(obj: &Value, now: SystemTime) -> Vec<Value> {
    let shown = |pointer: &str| match obj.pointer(pointer) {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "N/A".to_string(),
    };
    vec![
        json!(name_of(obj)),
        json!(shown("/spec/minAvailable")),
        json!(shown("/spec/maxUnavailable")),
        json!(int(obj, "/status/disruptionsAllowed")),
        age(obj, now),
    ]
}

// ---- cluster and configuration ----

pub(super) const NODE: &[Column] = &[
    NAME,
    col("Status", "string", 0),
    col("Roles", "string", 0),
    AGE,
    col("Version", "string", 0),
    col("Internal-IP", "string", 1),
    col("External-IP", "string", 1),
    col("OS-Image", "string", 1),
    col("Kernel-Version", "string", 1),
    col("Container-Runtime", "string", 1),
];

pub(super) fn node(obj: &Value, now: SystemTime) -> Vec<Value> {
    let mut status = Vec::new();
    if let Some(ready) = list(obj, "/status/conditions")
        .iter()
        .find(|c| text(c, "/type") == "Ready")
    {
        status.push(if text(ready, "/status") == "True" {
            "Ready"
        } else {
            "NotReady"
        });
    }
    if status.is_empty() {
        status.push("Unknown");
    }
    if obj.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }
    let mut roles = BTreeSet::new();
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role" {
                if let Some(v) = v.as_str().filter(|v| !v.is_empty()) {
                    roles.insert(v.to_string());
                }
            }
        }
    }
    let roles: Vec<String> = roles.into_iter().collect();
    let address = |type_: &str| {
        list(obj, "/status/addresses")
            .iter()
            .find(|a| text(a, "/type") == type_)
            .map(|a| text(a, "/address").to_string())
            .unwrap_or_else(|| "<none>".to_string())
    };
    let info = |field: &str| match text(obj, &format!("/status/nodeInfo/{field}")) {
        "" => "<unknown>".to_string(),
        v => v.to_string(),
    };
    vec![
        json!(name_of(obj)),
        json!(status.join(",")),
        json!(or_none(&roles.join(","))),
        age(obj, now),
        json!(text(obj, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

pub(super) const NAMESPACE: &[Column] = &[NAME, col("Status", "string", 0), AGE];

pub(super) fn namespace(obj: &Value, now: SystemTime) -> Vec<Value> {
    vec![
        json!(name_of(obj)),
        json!(text(obj, "/status/phase")),
        age(obj, now),
    ]
}

pub(super) fn map_len(obj: &Value, pointer: &str) -> usize {
    obj.pointer(pointer)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
}

pub(super) const CONFIGMAP: &[Column] = &[NAME, col("Data", "integer", 0), AGE];

pub(super) fn configmap(obj: &Value, now: SystemTime) -> Vec<Value> {
    let n = map_len(obj, "/data") + map_len(obj, "/binaryData");
    vec![json!(name_of(obj)), json!(n), age(obj, now)]
}

pub(super) const SECRET: &[Column] = &[
    NAME,
    col("Type", "string", 0),
    col("Data", "integer", 0),
    AGE,
];

pub(super) fn secret(obj: &Value, now: SystemTime) -> Vec<Value> {
    vec![
        json!(name_of(obj)),
        json!(text(obj, "/type")),
        json!(map_len(obj, "/data")),
        age(obj, now),
    ]
}

pub(super) const SERVICEACCOUNT: &[Column] = &[NAME, col("Secrets", "integer", 0), AGE];

pub(super) fn serviceaccount(obj: &Value, now: SystemTime) -> Vec<Value> {
    vec![
        json!(name_of(obj)),
        json!(list(obj, "/secrets").len()),
        age(obj, now),
    ]
}

pub(super) const EVENT: &[Column] = &[
    col("Last Seen", "string", 0),
    col("Type", "string", 0),
    col("Reason", "string", 0),
    col("Object", "string", 0),
    col("Subobject", "string", 1),
    col("Source", "string", 1),
    col("Message", "string", 0),
    col("First Seen", "string", 1),
    col("Count", "integer", 1),
    col("Name", "string", 1),
];

/// Core `v1` events and `events.k8s.io/v1` events (whose fields have other names).
pub(super) fn event(obj: &Value, now: SystemTime) -> Vec<Value> {
    let first_of = |pointers: &[&str]| -> Option<String> {
        pointers
            .iter()
            .filter_map(|p| obj.pointer(p).and_then(Value::as_str))
            .find(|s| !s.is_empty())
            .map(str::to_string)
    };
    let first = first_of(&["/firstTimestamp", "/deprecatedFirstTimestamp", "/eventTime"]);
    let first_seen = age_since(first.as_deref(), now);
    let mut last_seen = match first_of(&["/lastTimestamp", "/deprecatedLastTimestamp"]) {
        Some(t) => age_since(Some(&t), now),
        None => first_seen.clone(),
    };
    let mut count = obj
        .get("count")
        .or_else(|| obj.get("deprecatedCount"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if let Some(series) = obj.get("series") {
        last_seen = age_since(series.get("lastObservedTime").and_then(Value::as_str), now);
        count = int(series, "/count");
    } else if count == 0 {
        count = 1;
    }
    let involved = obj
        .get("involvedObject")
        .or_else(|| obj.get("regarding"))
        .unwrap_or(&Value::Null);
    let kind = text(involved, "/kind").to_ascii_lowercase();
    let target = match text(involved, "/name") {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let component = first_of(&[
        "/source/component",
        "/deprecatedSource/component",
        "/reportingComponent",
        "/reportingController",
    ])
    .unwrap_or_default();
    let instance = first_of(&[
        "/source/host",
        "/deprecatedSource/host",
        "/reportingInstance",
    ])
    .unwrap_or_default();
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    let message = first_of(&["/message", "/note"]).unwrap_or_default();
    vec![
        json!(last_seen),
        json!(text(obj, "/type")),
        json!(text(obj, "/reason")),
        json!(target),
        json!(text(involved, "/fieldPath")),
        json!(source),
        json!(message.trim()),
        json!(first_seen),
        json!(count),
        json!(name_of(obj)),
    ]
}

pub(super) fn access_modes(obj: &Value, pointer: &str) -> String {
    let modes: Vec<&str> = list(obj, pointer)
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut out = Vec::new();
    for (mode, short) in [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ] {
        if modes.contains(&mode) {
            out.push(short);
        }
    }
    out.join(",")
}

pub(super) fn storage_class_of(obj: &Value) -> String {
    match obj
        .pointer("/spec/storageClassName")
        .and_then(Value::as_str)
    {
        Some(c) => c.to_string(),
        None => text(
            obj,
            "/metadata/annotations/volume.beta.kubernetes.io~1storage-class",
        )
        .to_string(),
    }
}

pub(super) fn phase_or_terminating(obj: &Value) -> String {
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating".to_string()
    } else {
        text(obj, "/status/phase").to_string()
    }
}

pub(super) fn volume_mode(obj: &Value) -> String {
    match text(obj, "/spec/volumeMode") {
        "" => "<unset>".to_string(),
        m => m.to_string(),
    }
}

pub(super) fn unset_or(obj: &Value, pointer: &str) -> String {
    match obj.pointer(pointer).and_then(Value::as_str) {
        Some(v) => v.to_string(),
        None => "<unset>".to_string(),
    }
}

pub(super) const PVC: &[Column] = &[
    NAME,
    col("Status", "string", 0),
    col("Volume", "string", 0),
    col("Capacity", "string", 0),
    col("Access Modes", "string", 0),
    col("StorageClass", "string", 0),
    col("VolumeAttributesClass", "string", 0),
    AGE,
    col("VolumeMode", "string", 1),
];

pub(super) fn pvc(obj: &Value, now: SystemTime) -> Vec<Value> {
    let bound = !text(obj, "/spec/volumeName").is_empty();
    let (capacity, modes) = if bound {
        (
            text(obj, "/status/capacity/storage").to_string(),
            access_modes(obj, "/status/accessModes"),
        )
    } else {
        (String::new(), String::new())
    };
    vec![
        json!(name_of(obj)),
        json!(phase_or_terminating(obj)),
        json!(text(obj, "/spec/volumeName")),
        json!(capacity),
        json!(modes),
        json!(storage_class_of(obj)),
        json!(unset_or(obj, "/spec/volumeAttributesClassName")),
        age(obj, now),
        json!(volume_mode(obj)),
    ]
}

pub(super) const PV: &[Column] = &[
    NAME,
    col("Capacity", "string", 0),
    col("Access Modes", "string", 0),
    col("Reclaim Policy", "string", 0),
    col("Status", "string", 0),
    col("Claim", "string", 0),
    col("StorageClass", "string", 0),
    col("VolumeAttributesClass", "string", 0),
    col("Reason", "string", 0),
    AGE,
    col("VolumeMode", "string", 1),
];

pub(super) fn pv(obj: &Value, now: SystemTime) -> Vec<Value> {
    let claim = match obj.pointer("/spec/claimRef") {
        Some(c) => format!("{}/{}", text(c, "/namespace"), text(c, "/name")),
        None => String::new(),
    };
    vec![
        json!(name_of(obj)),
        json!(text(obj, "/spec/capacity/storage")),
        json!(access_modes(obj, "/spec/accessModes")),
        json!(text(obj, "/spec/persistentVolumeReclaimPolicy")),
        json!(phase_or_terminating(obj)),
        json!(claim),
        json!(storage_class_of(obj)),
        json!(unset_or(obj, "/spec/volumeAttributesClassName")),
        json!(text(obj, "/status/reason")),
        age(obj, now),
        json!(volume_mode(obj)),
    ]
}

pub(super) const LEASE: &[Column] = &[NAME, col("Holder", "string", 0), AGE];

pub(super) fn lease(obj: &Value, now: SystemTime) -> Vec<Value> {
    vec![
        json!(name_of(obj)),
        json!(text(obj, "/spec/holderIdentity")),
        age(obj, now),
    ]
}

pub(super) const ROLE_BINDING: &[Column] = &[
    NAME,
    col("Role", "string", 0),
    AGE,
    col("Users", "string", 1),
    col("Groups", "string", 1),
    col("ServiceAccounts", "string", 1),
];

pub(super) fn role_binding(obj: &Value, now: SystemTime) -> Vec<Value> {
    let subjects = list(obj, "/subjects");
    let names = |kind: &str| {
        subjects
            .iter()
            .filter(|s| text(s, "/kind") == kind)
            .map(|s| {
                if kind == "ServiceAccount" {
                    format!("{}/{}", text(s, "/namespace"), text(s, "/name"))
                } else {
                    text(s, "/name").to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        json!(name_of(obj)),
        json!(format!(
            "{}/{}",
            text(obj, "/roleRef/kind"),
            text(obj, "/roleRef/name")
        )),
        age(obj, now),
        json!(names("User")),
        json!(names("Group")),
        json!(names("ServiceAccount")),
    ]
}

pub(super) const PRIORITY_CLASS: &[Column] = &[
    NAME,
    col("Value", "integer", 0),
    col("Global-Default", "boolean", 0),
    AGE,
    col("PreemptionPolicy", "string", 0),
];

pub(super) fn priority_class(obj: &Value, now: SystemTime) -> Vec<Value> {
    vec![
        json!(name_of(obj)),
        json!(int(obj, "/value")),
        json!(
            obj.get("globalDefault")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        ),
        age(obj, now),
        json!(text(obj, "/preemptionPolicy")),
    ]
}

pub(super) const STORAGE_CLASS: &[Column] = &[
    NAME,
    col("Provisioner", "string", 0),
    col("ReclaimPolicy", "string", 0),
    col("VolumeBindingMode", "string", 0),
    col("AllowVolumeExpansion", "string", 0),
    AGE,
];

pub(super) fn storage_class(obj: &Value, now: SystemTime) -> Vec<Value> {
    let mut name = name_of(obj).to_string();
    let annotation = |key: &str| text(obj, &format!("/metadata/annotations/{key}")) == "true";
    if annotation("storageclass.kubernetes.io~1is-default-class")
        || annotation("storageclass.beta.kubernetes.io~1is-default-class")
    {
        name.push_str(" (default)");
    }
    let reclaim = match text(obj, "/reclaimPolicy") {
        "" => "Delete",
        r => r,
    };
    let binding = match text(obj, "/volumeBindingMode") {
        "" => "Immediate",
        b => b,
    };
    let expansion = obj
        .get("allowVolumeExpansion")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    vec![
        json!(name),
        json!(text(obj, "/provisioner")),
        json!(reclaim),
        json!(binding),
        json!(expansion.to_string()),
        age(obj, now),
    ]
}
