//! The Node object and the node Lease: registration at start, then every
//! [`HEARTBEAT`] a status with fresh conditions (Ready, MemoryPressure, DiskPressure,
//! PIDPressure) and a renewed Lease in `kube-node-lease`, as the kubelet does.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::machine::{self, Capacity};
use crate::{AgentError, Context};

/// How often the node status and the lease are renewed.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long a lease holds without renewal (the kubelet's default).
pub const LEASE_SECONDS: i32 = 40;
/// Memory below this is pressure (the kubelet's default hard eviction threshold).
const MEMORY_PRESSURE_BYTES: u64 = 100 << 20;
/// Less free disk than this share is pressure (the kubelet's `nodefs.available<10%`).
const DISK_PRESSURE_PERCENT: u64 = 10;

/// The time now as Kubernetes writes it (`2026-01-01T00:00:00Z`).
pub fn now() -> String {
    trim_time(&skiff_engine::time::now_rfc3339())
}

/// An RFC 3339 time cut to whole seconds in UTC form; empty for the engine's zero time.
pub fn trim_time(text: &str) -> String {
    if text.is_empty() || text.starts_with("0001-") {
        return String::new();
    }
    match text.split_once('.') {
        Some((head, _)) => format!("{head}Z"),
        None => text.to_string(),
    }
}

/// The same instant with microseconds (a Lease's `MicroTime`).
fn now_micro() -> String {
    let full = skiff_engine::time::now_rfc3339();
    match full.split_once('.') {
        Some((head, frac)) => {
            let digits: String = frac.chars().take_while(char::is_ascii_digit).collect();
            format!("{head}.{:0<6}Z", &digits[..digits.len().min(6)])
        }
        None => full,
    }
}

/// The Node the agent registers.
fn node_object(ctx: &Context, capacity: &Capacity) -> Value {
    let name = &ctx.config.node_name;
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                crate::volumes::claims::ANN_NODE_ROOT:
                    crate::volumes::claims::root(&ctx.config.data_dir).display().to_string(),
            },
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": machine::architecture(),
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": machine::architecture(),
            },
        },
        "spec": {},
        "status": node_status(ctx, capacity, None),
    })
}

/// The node's status: capacity, addresses, the node API's port, nodeInfo and conditions.
/// `previous` keeps each condition's `lastTransitionTime` while its status holds.
fn node_status(ctx: &Context, capacity: &Capacity, previous: Option<&Node>) -> Value {
    let now = now();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let available = machine::meminfo_field(&meminfo, "MemAvailable").unwrap_or(u64::MAX);
    let (disk_total, disk_free) = machine::disk(&ctx.config.data_dir).unwrap_or((1, 1));
    let memory_pressure = available < MEMORY_PRESSURE_BYTES;
    let disk_pressure = disk_free.saturating_mul(100) < disk_total * DISK_PRESSURE_PERCENT;
    let old_transition = |kind: &str, status: &str| -> Option<String> {
        let conditions = previous?.status.as_ref()?.conditions.as_ref()?;
        let c = conditions.iter().find(|c| c.type_ == kind)?;
        (c.status == status)
            .then(|| c.last_transition_time.as_ref().map(|t| t.0.to_string()))
            .flatten()
    };
    let condition = |kind: &str, pressure: bool, reason_ok: &str, reason_bad: &str, msg: &str| {
        let status = if pressure { "True" } else { "False" };
        json!({
            "type": kind,
            "status": status,
            "lastHeartbeatTime": now,
            "lastTransitionTime": old_transition(kind, status).unwrap_or_else(|| now.clone()),
            "reason": if pressure { reason_bad } else { reason_ok },
            "message": msg,
        })
    };
    let ready = json!({
        "type": "Ready",
        "status": "True",
        "lastHeartbeatTime": now,
        "lastTransitionTime": old_transition("Ready", "True").unwrap_or_else(|| now.clone()),
        "reason": "KubeletReady",
        "message": "skiff agent is posting ready status",
    });
    json!({
        "capacity": capacity.to_json(),
        "allocatable": capacity.to_json(),
        "addresses": [
            {"type": "InternalIP", "address": ctx.config.node_ip.to_string()},
            {"type": "Hostname", "address": ctx.config.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": ctx.api_port()}},
        "nodeInfo": {
            "machineID": machine::read_trimmed("/etc/machine-id"),
            "systemUUID": machine::read_trimmed("/sys/class/dmi/id/product_uuid"),
            "bootID": machine::read_trimmed("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": machine::kernel_version(),
            "osImage": machine::os_image(),
            "containerRuntimeVersion": format!("skiff://{}", crate::VERSION),
            "kubeletVersion": format!("v1.33.0-skiff.{}", crate::VERSION),
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": machine::architecture(),
        },
        "conditions": [
            condition("MemoryPressure", memory_pressure, "KubeletHasSufficientMemory",
                "KubeletHasInsufficientMemory", "available memory as the agent measures it"),
            condition("DiskPressure", disk_pressure, "KubeletHasNoDiskPressure",
                "KubeletHasDiskPressure", "free space of the agent's data directory"),
            condition("PIDPressure", false, "KubeletHasSufficientPID",
                "KubeletHasInsufficientPID", "process ids are not counted yet"),
            ready,
        ],
    })
}

/// Creates the Node (or takes over an existing one of this name) and posts its status.
pub async fn register(ctx: &Context) -> Result<(), AgentError> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let capacity = Capacity::measure(&ctx.config.data_dir);
    let node: Node = serde_json::from_value(node_object(ctx, &capacity))
        .map_err(|e| AgentError::Invalid(format!("node object: {e}")))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = %ctx.config.node_name, "registered the node"),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            tracing::info!(node = %ctx.config.node_name, "the node exists: taking it over")
        }
        Err(e) => return Err(AgentError::api("register the node")(e)),
    }
    post_status(ctx, &capacity).await
}

async fn post_status(ctx: &Context, capacity: &Capacity) -> Result<(), AgentError> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let current = nodes
        .get_opt(&ctx.config.node_name)
        .await
        .map_err(AgentError::api("read the node"))?;
    let status = node_status(ctx, capacity, current.as_ref());
    nodes
        .patch_status(
            &ctx.config.node_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .map_err(AgentError::api("post the node status"))?;
    Ok(())
}

/// Renews the node's Lease (creating it the first time).
async fn renew_lease(ctx: &Context) -> Result<(), AgentError> {
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), "kube-node-lease");
    let name = &ctx.config.node_name;
    let spec = json!({
        "holderIdentity": name,
        "leaseDurationSeconds": LEASE_SECONDS,
        "renewTime": now_micro(),
    });
    match leases
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let nodes: Api<Node> = Api::all(ctx.client.clone());
            let owner = nodes.get_opt(name).await.ok().flatten();
            let mut lease = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": spec,
            });
            if let Some(uid) = owner.and_then(|n| n.metadata.uid) {
                lease["metadata"]["ownerReferences"] = json!([{
                    "apiVersion": "v1", "kind": "Node", "name": name, "uid": uid,
                }]);
            }
            let lease: Lease = serde_json::from_value(lease)
                .map_err(|e| AgentError::Invalid(format!("lease object: {e}")))?;
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map_err(AgentError::api("create the node lease"))?;
            Ok(())
        }
        Err(e) => Err(AgentError::api("renew the node lease")(e)),
    }
}

/// Posts the node status and renews the lease every [`HEARTBEAT`] until dropped.
pub async fn heartbeat(ctx: std::sync::Arc<Context>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tick.tick().await;
        if let Err(err) = renew_lease(&ctx).await {
            tracing::warn!(error = %err, "lease renewal failed");
        }
        let capacity = Capacity::measure(&ctx.config.data_dir);
        if let Err(err) = post_status(&ctx, &capacity).await {
            tracing::warn!(error = %err, "node status update failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_cut_to_seconds_and_zero_is_empty() {
        assert_eq!(
            trim_time("2026-01-02T03:04:05.123456789Z"),
            "2026-01-02T03:04:05Z"
        );
        assert_eq!(trim_time("2026-01-02T03:04:05Z"), "2026-01-02T03:04:05Z");
        assert_eq!(trim_time("0001-01-01T00:00:00Z"), "");
        let micro = now_micro();
        assert!(micro.ends_with('Z') && micro.contains('.'), "{micro}");
    }
}
