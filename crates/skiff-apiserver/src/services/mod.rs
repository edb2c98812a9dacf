//! Service address allocation on create: a cluster IP from the service range and node ports
//! from 30000-32767, picked at random among the ones no stored Service uses.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};
use skiff_store::{ResourceKey, Store};

use crate::status::ApiError;

/// The service address range (k3s's default): 10.43.0.0/16.
pub const SERVICE_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 43, 0, 0), 16);

const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

fn random_u32() -> u32 {
    let mut bytes = [0u8; 4];
    crate::object::random_bytes(&mut bytes);
    u32::from_le_bytes(bytes)
}

async fn used(store: &dyn Store) -> Result<(HashSet<String>, HashSet<i64>), ApiError> {
    let prefix = ResourceKey::list_prefix("services", None)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let page = store
        .list(&prefix, None, None, None)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for kv in page.items {
        let Ok(svc) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
            ips.insert(ip.to_string());
        }
        for port in svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(p) = port.get("nodePort").and_then(Value::as_i64) {
                ports.insert(p);
            }
        }
    }
    Ok((ips, ports))
}

/// Fills in `spec.clusterIP(s)` and the node ports a new Service needs.
pub async fn allocate(store: &dyn Store, svc: &mut Value) -> Result<(), ApiError> {
    let kind = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if kind == "ExternalName" {
        return Ok(());
    }
    let (ips, ports) = used(store).await?;
    if !svc.get("spec").is_some_and(Value::is_object) {
        svc["spec"] = json!({});
    }
    let wanted = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let ip = if wanted.is_empty() {
        let (base, bits) = SERVICE_CIDR;
        let size = 1u32 << (32 - bits);
        let base = u32::from(base);
        let mut chosen = None;
        for _ in 0..64 {
            // .0 is the network, .1 the `kubernetes` service.
            let candidate = Ipv4Addr::from(base + 2 + random_u32() % (size - 3)).to_string();
            if !ips.contains(&candidate) {
                chosen = Some(candidate);
                break;
            }
        }
        chosen.ok_or_else(|| ApiError::internal("no free cluster IP in 10.43.0.0/16"))?
    } else {
        if wanted != "None" && ips.contains(&wanted) {
            return Err(ApiError {
                code: 422,
                reason: "Invalid",
                message: format!(
                    "Service is invalid: spec.clusterIPs: Invalid value: [\"{wanted}\"]: failed to allocate IP {wanted}: provided IP is already allocated"
                ),
                details: None,
            });
        }
        wanted
    };
    svc["spec"]["clusterIP"] = json!(ip);
    svc["spec"]["clusterIPs"] = json!([ip]);
    if ip != "None" {
        svc["spec"]["ipFamilies"] = json!(["IPv4"]);
        svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        let mut taken = ports;
        if let Some(list) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for port in list {
                if port.get("nodePort").and_then(Value::as_i64).is_some() {
                    continue;
                }
                let span = u32::from(NODE_PORTS.end() - NODE_PORTS.start() + 1);
                let free = (0..256)
                    .map(|_| i64::from(*NODE_PORTS.start()) + i64::from(random_u32() % span))
                    .find(|p| !taken.contains(p))
                    .ok_or_else(|| ApiError::internal("no free node port"))?;
                taken.insert(free);
                port["nodePort"] = json!(free);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn services_get_a_cluster_ip_and_node_ports() {
        let store = skiff_store::MemoryStore::new();
        let mut svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        allocate(&store, &mut svc).await.unwrap();
        let ip: Ipv4Addr = svc["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        assert_eq!(ip.octets()[..2], [10, 43]);
        let port = svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
        assert!((30000..=32767).contains(&port));
        let mut headless = json!({"spec": {"clusterIP": "None"}});
        allocate(&store, &mut headless).await.unwrap();
        assert_eq!(headless["spec"]["clusterIP"], "None");
    }
}
