//! The Services every cluster has, kept by the API server itself as kube-apiserver's
//! bootstrap controller keeps them: `default/kubernetes` (the first address of the service
//! CIDR, port `https` 443 to the API server's port, no selector) with its Endpoints and
//! EndpointSlice naming the API servers, and `kube-system/kube-dns` (the cluster DNS address,
//! `dns` 53/UDP and `dns-tcp` 53/TCP, no selector: every node answers DNS itself).
//!
//! Each API server renews a lease in the store (`/registry/masterleases/<ip:port>`, kube's
//! lease endpoint reconciler) every [`RESYNC`]; the `kubernetes` Endpoints list the servers
//! whose lease has not expired. The pass runs at start, every [`RESYNC`], and at once when a
//! default Service is deleted on this server; the address [`repair`](super::repair) runs at
//! start and every [`REPAIR_EVERY`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff_apimachinery::ResourceInfo;
use skiff_store::StoreError;

use super::reservations::unix_now;
use crate::handlers::{Change, create_object, guaranteed_update};
use crate::state::AppState;
use crate::status::ApiError;
use crate::{storage, strategy};

/// How often the default Services and the lease are checked.
pub const RESYNC: Duration = Duration::from_secs(10);
/// How long an API server's lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(35);
/// How often the address repair runs.
pub const REPAIR_EVERY: Duration = Duration::from_secs(180);
/// The store prefix of the API servers' leases.
pub const LEASE_PREFIX: &str = "/registry/masterleases/";
/// The `endpointslice.kubernetes.io/managed-by` value of the `kubernetes` EndpointSlice.
pub const MANAGED_BY: &str = "skiff";

/// What the default Services point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultServices {
    /// Where this API server is reached (the `kubernetes` Endpoints' address and port).
    pub advertise: SocketAddr,
    /// The `kube-dns` cluster IP (`--cluster-dns`); `None`: no `kube-dns` Service.
    pub cluster_dns: Option<Ipv4Addr>,
}

/// Why a pass over the default Services failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// An object could not be read or written.
    #[error("cannot {action} {what}: {source}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// The object (`services default/kubernetes`).
        what: String,
        /// The API error.
        #[source]
        source: ApiError,
    },
    /// The lease could not be read or written.
    #[error("cannot {action} the API server lease {key}: {source}")]
    Lease {
        /// What was being done.
        action: &'static str,
        /// The lease key.
        key: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The service CIDR has no first address.
    #[error("the service CIDR has no address for the kubernetes service")]
    NoKubernetesIp,
}

/// Whether `namespace/name` is one of the default Services.
pub fn is_default_service(namespace: &str, name: &str) -> bool {
    matches!(
        (namespace, name),
        ("default", "kubernetes") | ("kube-system", "kube-dns")
    )
}

fn find(state: &AppState, group: &str, version: &str, plural: &str) -> Option<ResourceInfo> {
    state.find(group, version, plural)
}

/// One pass: renews this server's lease, creates the default Services that are missing
/// (or fixes their ports), and writes the `kubernetes` Endpoints and EndpointSlice.
pub async fn ensure(
    state: &Arc<AppState>,
    defaults: &DefaultServices,
) -> Result<(), BootstrapError> {
    renew_lease(state, defaults.advertise).await?;
    let servers = live_servers(state, defaults.advertise).await?;
    let ip = state
        .options
        .service_ranges
        .kubernetes_ip()
        .ok_or(BootstrapError::NoKubernetesIp)?;
    ensure_service(state, kubernetes_service(ip, defaults.advertise.port())).await?;
    ensure_endpoints(state, &servers).await?;
    ensure_slice(state, &servers).await?;
    if let Some(dns) = defaults.cluster_dns {
        ensure_service(state, kube_dns_service(dns)).await?;
    }
    Ok(())
}

/// Runs [`ensure`] (when the server keeps default Services) every [`RESYNC`] or when woken,
/// and the address repair every [`REPAIR_EVERY`], until the server shuts down.
pub fn spawn(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut shutdown = state.shutdown.clone();
        let mut last_repair = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(RESYNC) => {}
                () = state.services_wakeup.notified() => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
            if let Some(defaults) = &state.options.default_services
                && let Err(err) = ensure(&state, defaults).await
            {
                tracing::warn!(error = %err, "cannot keep the default services");
            }
            if last_repair.elapsed() >= REPAIR_EVERY {
                last_repair = Instant::now();
                if let Err(err) = super::repair::repair(&state).await {
                    tracing::warn!(error = %err, "cannot repair the service address reservations");
                }
            }
        }
    })
}

/// The `default/kubernetes` Service.
pub fn kubernetes_service(ip: Ipv4Addr, target_port: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip.to_string(),
            "sessionAffinity": "None",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": target_port}],
        },
    })
}

/// The `kube-system/kube-dns` Service.
pub fn kube_dns_service(ip: Ipv4Addr) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kube-dns",
            "namespace": "kube-system",
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip.to_string(),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    })
}

fn lease_key(address: SocketAddr) -> String {
    format!("{LEASE_PREFIX}{address}")
}

async fn renew_lease(state: &AppState, address: SocketAddr) -> Result<(), BootstrapError> {
    let key = lease_key(address);
    let lease = |action| {
        let key = key.clone();
        move |source| BootstrapError::Lease {
            action,
            key,
            source,
        }
    };
    let value =
        json!({"address": address.to_string(), "expires": unix_now() + LEASE_TTL.as_secs()});
    let bytes: bytes::Bytes = serde_json::to_vec(&value).unwrap_or_default().into();
    let store = state.store.as_ref();
    match store.get(&key).await.map_err(lease("read"))? {
        Some(kv) => match store.update(&key, bytes, kv.mod_revision).await {
            Ok(_) | Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(err) => Err(lease("renew")(err)),
        },
        None => match store.create(&key, bytes).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
            Err(err) => Err(lease("create")(err)),
        },
    }
}

/// Drops this server's lease (at a graceful shutdown), so the `kubernetes` Endpoints stop
/// naming it at the next pass of any server rather than when the lease expires.
pub async fn remove_lease(state: &AppState, defaults: &DefaultServices) {
    let key = lease_key(defaults.advertise);
    match state.store.delete(&key, None).await {
        Ok(_) | Err(StoreError::NotFound { .. }) => {}
        Err(err) => tracing::warn!(%key, error = %err, "cannot drop the API server lease"),
    }
}

/// The API servers whose lease is live (always including `own`), sorted; expired leases
/// are deleted.
async fn live_servers(
    state: &AppState,
    own: SocketAddr,
) -> Result<Vec<SocketAddr>, BootstrapError> {
    let store = state.store.as_ref();
    let page = store
        .list(LEASE_PREFIX, None, None, None)
        .await
        .map_err(|source| BootstrapError::Lease {
            action: "list",
            key: LEASE_PREFIX.into(),
            source,
        })?;
    let now = unix_now();
    let mut servers = vec![own];
    for kv in page.items {
        let lease: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        let expires = lease.get("expires").and_then(Value::as_u64).unwrap_or(0);
        let address = lease
            .get("address")
            .and_then(Value::as_str)
            .and_then(|a| a.parse::<SocketAddr>().ok());
        match address {
            Some(address) if expires > now => servers.push(address),
            _ => {
                let _ = store.delete(&kv.key, Some(kv.mod_revision)).await;
            }
        }
    }
    servers.sort();
    servers.dedup();
    Ok(servers)
}

/// Creates `desired` when missing, or makes `fix` agree with it.
async fn upsert(
    state: &Arc<AppState>,
    info: &ResourceInfo,
    desired: Value,
    fields: &[&str],
) -> Result<(), BootstrapError> {
    let namespace = desired["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = desired["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let what = format!("{} {namespace}/{name}", info.plural);
    let api = |action: &'static str| {
        let what = what.clone();
        move |source| BootstrapError::Api {
            action,
            what,
            source,
        }
    };
    let current = match storage::get(state.store.as_ref(), info, Some(&namespace), &name).await {
        Ok((current, _)) => Some(current),
        Err(err) if err.code == 404 => None,
        Err(err) => return Err(api("read")(err)),
    };
    let Some(current) = current else {
        let mut obj = desired;
        strategy::prepare_create(info, &mut obj).map_err(api("prepare"))?;
        return match create_object(state, info, obj).await {
            Ok(_) => {
                tracing::info!(object = %what, "created");
                Ok(())
            }
            Err(err) if err.reason == "AlreadyExists" => Ok(()),
            Err(err) => Err(api("create")(err)),
        };
    };
    let differs = |current: &Value| {
        fields
            .iter()
            .any(|f| comparable(pointer(current, f)) != comparable(pointer(&desired, f)))
    };
    if !differs(&current) {
        return Ok(());
    }
    guaranteed_update(state, info, Some(&namespace), &name, false, |current, _| {
        let mut new = current.clone();
        for field in fields {
            set_pointer(&mut new, field, pointer(&desired, field).cloned());
        }
        strategy::prepare_update(info, current, new, false).map(Change::Update)
    })
    .await
    .map_err(api("update"))?;
    tracing::info!(object = %what, "updated");
    Ok(())
}

/// A field as [`upsert`] compares it: a Service port without its `targetPort` (the
/// `kubernetes` Service's is this server's port, which several servers over one store need
/// not share: the Endpoints carry each one's real port).
fn comparable(value: Option<&Value>) -> Option<Value> {
    let mut value = value.cloned()?;
    if let Value::Array(items) = &mut value {
        for item in items {
            if let Some(map) = item.as_object_mut()
                && map.contains_key("port")
            {
                map.remove("targetPort");
            }
        }
    }
    Some(value)
}

fn pointer<'a>(obj: &'a Value, field: &str) -> Option<&'a Value> {
    obj.pointer(field).filter(|v| !v.is_null())
}

fn set_pointer(obj: &mut Value, field: &str, value: Option<Value>) {
    let Some((parent, key)) = field.rsplit_once('/') else {
        return;
    };
    let parent = if parent.is_empty() {
        Some(obj)
    } else {
        obj.pointer_mut(parent)
    };
    if let Some(Value::Object(map)) = parent {
        match value {
            Some(value) => {
                map.insert(key.to_string(), value);
            }
            None => {
                map.remove(key);
            }
        }
    }
}

async fn ensure_service(state: &Arc<AppState>, desired: Value) -> Result<(), BootstrapError> {
    let Some(info) = find(state, "", "v1", "services") else {
        return Ok(());
    };
    upsert(state, &info, desired, &["/spec/ports"]).await
}

/// The API servers grouped by port: the Endpoints' subsets.
fn by_port(servers: &[SocketAddr]) -> BTreeMap<u16, Vec<IpAddr>> {
    let mut groups: BTreeMap<u16, Vec<IpAddr>> = BTreeMap::new();
    for server in servers {
        groups.entry(server.port()).or_default().push(server.ip());
    }
    groups
}

/// The `default/kubernetes` Endpoints naming `servers`.
pub fn kubernetes_endpoints(servers: &[SocketAddr]) -> Value {
    let subsets: Vec<Value> = by_port(servers)
        .into_iter()
        .map(|(port, ips)| {
            json!({
                "addresses": ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(),
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            })
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
        },
        "subsets": subsets,
    })
}

/// The `default/kubernetes` EndpointSlice: the servers of the lowest port (a slice has one
/// port set; all API servers of a cluster normally share the port).
pub fn kubernetes_slice(servers: &[SocketAddr]) -> Value {
    let groups = by_port(servers);
    let (port, ips) = groups.into_iter().next().unwrap_or((0, Vec::new()));
    let family = if ips.first().is_some_and(IpAddr::is_ipv6) {
        "IPv6"
    } else {
        "IPv4"
    };
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {
                "kubernetes.io/service-name": "kubernetes",
                "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
            },
        },
        "addressType": family,
        "endpoints": ips
            .iter()
            .map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
            .collect::<Vec<_>>(),
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    })
}

async fn ensure_endpoints(
    state: &Arc<AppState>,
    servers: &[SocketAddr],
) -> Result<(), BootstrapError> {
    let Some(info) = find(state, "", "v1", "endpoints") else {
        return Ok(());
    };
    upsert(
        state,
        &info,
        kubernetes_endpoints(servers),
        &["/subsets", "/metadata/labels"],
    )
    .await
}

async fn ensure_slice(state: &Arc<AppState>, servers: &[SocketAddr]) -> Result<(), BootstrapError> {
    let Some(info) = find(state, "discovery.k8s.io", "v1", "endpointslices") else {
        return Ok(());
    };
    upsert(
        state,
        &info,
        kubernetes_slice(servers),
        &["/endpoints", "/ports", "/addressType", "/metadata/labels"],
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_group_servers_by_port() {
        let servers: Vec<SocketAddr> = ["10.0.0.2:6443", "10.0.0.1:6443", "10.0.0.3:7443"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let mut sorted = servers.clone();
        sorted.sort();
        let endpoints = kubernetes_endpoints(&sorted);
        assert_eq!(
            endpoints["subsets"][0]["addresses"],
            json!([{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}])
        );
        assert_eq!(endpoints["subsets"][0]["ports"][0]["port"], 6443);
        assert_eq!(endpoints["subsets"][1]["ports"][0]["port"], 7443);
        let slice = kubernetes_slice(&sorted);
        assert_eq!(slice["endpoints"].as_array().unwrap().len(), 2);
        assert_eq!(slice["addressType"], "IPv4");
        assert_eq!(
            slice["metadata"]["labels"]["kubernetes.io/service-name"],
            "kubernetes"
        );
    }
}
