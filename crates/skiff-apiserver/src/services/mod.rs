//! Service addresses, as kube-apiserver's service REST storage hands them out: a cluster IP
//! from the service CIDR (`--service-cidr`) and node ports from `--service-node-port-range`
//! for every Service that needs them, each reserved in the store with a create-if-absent key
//! ([`reservations`]) before the Service is written and released when the Service goes or
//! stops needing it; the rules of updates (allocated values kept, cluster IPs immutable,
//! type changes); a [`repair`] pass that reconciles reservations with the stored Services;
//! and the [`bootstrap`] Services every cluster has (`default/kubernetes`,
//! `kube-system/kube-dns`).
//!
//! `spec.healthCheckNodePort` (LoadBalancer with `externalTrafficPolicy: Local`) is not
//! allocated.

pub mod allocator;
pub mod bootstrap;
pub mod repair;
pub mod reservations;

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};
use skiff_apimachinery::{FieldError, ResourceInfo};
use skiff_store::Store;

pub use bootstrap::DefaultServices;
pub use reservations::{Owner, Reservation};
pub use skiff_apimachinery::cidr::{Ipv4Cidr, PortRange, RangeError};

use crate::object;
use crate::state::AppState;
use crate::status::{ApiError, Cause};

/// The address ranges Services get their cluster IPs and node ports from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceRanges {
    /// `--service-cidr` (default `10.43.0.0/16`).
    pub cidr: Ipv4Cidr,
    /// `--service-node-port-range` (default `30000-32767`).
    pub node_ports: PortRange,
}

/// The default service CIDR: 10.43.0.0/16 (k3s's).
pub const DEFAULT_SERVICE_CIDR: &str = "10.43.0.0/16";
/// The default node port range: 30000-32767.
pub const DEFAULT_NODE_PORT_RANGE: &str = "30000-32767";

impl Default for ServiceRanges {
    fn default() -> Self {
        ServiceRanges {
            cidr: Ipv4Cidr::masked(Ipv4Addr::new(10, 43, 0, 0), 16),
            node_ports: PortRange::between(30000, 32767),
        }
    }
}

impl ServiceRanges {
    /// The `kubernetes` Service's cluster IP: the first address after the network's.
    pub fn kubernetes_ip(&self) -> Option<Ipv4Addr> {
        self.cidr.nth(1)
    }

    /// The conventional cluster DNS address: the tenth address.
    pub fn dns_ip(&self) -> Option<Ipv4Addr> {
        self.cidr.nth(10)
    }
}

/// An allocation failed for a reason of the server's, not of the request.
#[derive(Debug, thiserror::Error)]
pub enum AllocationError {
    /// Every cluster IP is taken.
    #[error("failed to allocate a serviceIP: range is full ({cidr})")]
    IpRangeFull {
        /// The service CIDR.
        cidr: Ipv4Cidr,
    },
    /// Every node port is taken.
    #[error("failed to allocate a nodePort: range is full ({range})")]
    PortRangeFull {
        /// The node port range.
        range: PortRange,
    },
    /// The store failed.
    #[error("cannot {action} the reservation {key}: {source}")]
    Store {
        /// What was being done.
        action: &'static str,
        /// The key (or prefix).
        key: String,
        /// The store's error.
        #[source]
        source: skiff_store::StoreError,
    },
}

impl From<AllocationError> for ApiError {
    fn from(err: AllocationError) -> ApiError {
        ApiError::internal(err.to_string())
    }
}

/// Whether `info` is the core `services` resource.
pub fn is_services(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.plural == "services"
}

fn spec_str<'a>(svc: &'a Value, field: &str) -> &'a str {
    svc.get("spec")
        .and_then(|s| s.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn service_type(svc: &Value) -> &str {
    match spec_str(svc, "type") {
        "" => "ClusterIP",
        other => other,
    }
}

/// Whether a Service gets a cluster IP (every type but ExternalName).
pub fn needs_cluster_ip(svc: &Value) -> bool {
    service_type(svc) != "ExternalName"
}

/// Whether a Service gets node ports (NodePort, and LoadBalancer unless
/// `allocateLoadBalancerNodePorts` is false).
pub fn needs_node_ports(svc: &Value) -> bool {
    match service_type(svc) {
        "NodePort" => true,
        "LoadBalancer" => svc.pointer("/spec/allocateLoadBalancerNodePorts") != Some(&json!(false)),
        _ => false,
    }
}

fn cluster_ips(svc: &Value) -> Vec<String> {
    svc.pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn ports_mut(svc: &mut Value) -> Vec<&mut Value> {
    svc.pointer_mut("/spec/ports")
        .and_then(Value::as_array_mut)
        .map(|a| a.iter_mut().collect())
        .unwrap_or_default()
}

fn node_port(port: &Value) -> i64 {
    port.get("nodePort").and_then(Value::as_i64).unwrap_or(0)
}

/// The node ports a Service holds (none unless it needs them).
pub fn node_ports(svc: &Value) -> Vec<i64> {
    if !needs_node_ports(svc) {
        return Vec::new();
    }
    let mut ports: Vec<i64> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(node_port)
        .filter(|p| *p != 0)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The cluster IP a Service holds, if it needs and has one (not headless).
pub fn held_ip(svc: &Value) -> Option<Ipv4Addr> {
    if !needs_cluster_ip(svc) {
        return None;
    }
    spec_str(svc, "clusterIP").parse().ok()
}

/// The reservation keys a Service's addresses occupy.
pub fn held_keys(svc: &Value) -> Vec<String> {
    let mut keys: Vec<String> = held_ip(svc).map(reservations::ip_key).into_iter().collect();
    keys.extend(node_ports(svc).into_iter().map(reservations::port_key));
    keys
}

fn invalid(svc: &Value, info: &ResourceInfo, error: FieldError) -> ApiError {
    ApiError::invalid(
        info,
        object::name(svc),
        vec![Cause {
            reason: error.reason,
            message: error.message,
            field: error.field,
        }],
    )
}

fn ensure_spec(svc: &mut Value) {
    if !svc.get("spec").is_some_and(Value::is_object) {
        svc["spec"] = json!({});
    }
}

/// Makes `clusterIP` and `clusterIPs` agree on a new Service (an old client sets only the
/// singular field).
fn normalize_new(svc: &mut Value) {
    ensure_spec(svc);
    let ip = spec_str(svc, "clusterIP").to_string();
    let ips = cluster_ips(svc);
    if !ip.is_empty() && ips.is_empty() {
        svc["spec"]["clusterIPs"] = json!([ip]);
    } else if ip.is_empty()
        && let Some(first) = ips.first()
    {
        svc["spec"]["clusterIP"] = json!(first);
    }
}

/// Fills in the addresses a new Service needs (create) and reserves them; `dry_run` only
/// checks and picks. The reservation must be released if the Service is not written.
pub async fn admit_create(
    state: &AppState,
    info: &ResourceInfo,
    svc: &mut Value,
    dry_run: bool,
) -> Result<Reservation, ApiError> {
    if !is_services(info) {
        return Ok(Reservation::default());
    }
    normalize_new(svc);
    allocate(state, info, None, svc, dry_run).await
}

/// Reserves what an update newly needs (a cluster IP when leaving ExternalName, node ports
/// when becoming NodePort or adding ports). Values the old object held stay its own.
pub async fn admit_update(
    state: &AppState,
    info: &ResourceInfo,
    old: &Value,
    svc: &mut Value,
    dry_run: bool,
) -> Result<Reservation, ApiError> {
    if !is_services(info) {
        return Ok(Reservation::default());
    }
    allocate(state, info, Some(old), svc, dry_run).await
}

/// Releases what `old` held and `new` no longer does (after an update was written).
pub async fn release_unused(state: &AppState, info: &ResourceInfo, old: &Value, new: &Value) {
    if !is_services(info) {
        return;
    }
    let kept: HashSet<String> = held_keys(new).into_iter().collect();
    let uid = object::meta_str(old, "uid");
    for key in held_keys(old).into_iter().filter(|k| !kept.contains(k)) {
        if let Err(err) = reservations::release_if_owned(state.store.as_ref(), &key, uid).await {
            tracing::warn!(error = %err, "cannot release a service address");
        }
    }
}

/// Releases everything a deleted Service held, and wakes the default Services' keeper when
/// one of those went.
pub async fn after_delete(state: &AppState, info: &ResourceInfo, svc: &Value) {
    if !is_services(info) {
        return;
    }
    let uid = object::meta_str(svc, "uid");
    for key in held_keys(svc) {
        if let Err(err) = reservations::release_if_owned(state.store.as_ref(), &key, uid).await {
            tracing::warn!(error = %err, "cannot release a service address");
        }
    }
    if bootstrap::is_default_service(object::namespace(svc), object::name(svc)) {
        state.services_wakeup.notify_one();
    }
}

async fn allocate(
    state: &AppState,
    info: &ResourceInfo,
    old: Option<&Value>,
    svc: &mut Value,
    dry_run: bool,
) -> Result<Reservation, ApiError> {
    let store = state.store.as_ref();
    let mut reservation = Reservation::default();
    let result = allocate_into(
        store,
        &state.options.service_ranges,
        info,
        old,
        svc,
        dry_run,
        &mut reservation,
    )
    .await;
    match result {
        Ok(()) => Ok(reservation),
        Err(err) => {
            reservation.release(store).await;
            Err(err)
        }
    }
}

async fn allocate_into(
    store: &dyn Store,
    ranges: &ServiceRanges,
    info: &ResourceInfo,
    old: Option<&Value>,
    svc: &mut Value,
    dry_run: bool,
    reservation: &mut Reservation,
) -> Result<(), ApiError> {
    ensure_spec(svc);
    // `nodePort: 0` means unset (kube-apiserver omits it).
    for port in ports_mut(svc) {
        if port.get("nodePort").and_then(Value::as_i64) == Some(0)
            && let Some(map) = port.as_object_mut()
        {
            map.remove("nodePort");
        }
    }
    let owner = Owner::of(svc);
    let kind = service_type(svc).to_string();
    let wanted = spec_str(svc, "clusterIP").to_string();
    if kind == "ExternalName" {
        if !wanted.is_empty() && old.is_none() {
            return Err(invalid(
                svc,
                info,
                FieldError::forbidden("spec.clusterIP", "may not be set for ExternalName services"),
            ));
        }
    } else {
        let old_ip = old
            .filter(|o| needs_cluster_ip(o))
            .map(|o| spec_str(o, "clusterIP").to_string())
            .unwrap_or_default();
        let ip = if !old_ip.is_empty() && old_ip == wanted {
            wanted
        } else if wanted == "None" {
            if needs_node_ports(svc) || kind == "LoadBalancer" {
                return Err(invalid(
                    svc,
                    info,
                    FieldError::invalid(
                        "spec.clusterIPs[0]",
                        &json!("None"),
                        "may not be set to 'None' for LoadBalancer or NodePort services",
                    ),
                ));
            }
            wanted
        } else if wanted.is_empty() {
            dynamic_ip(store, ranges, &owner, dry_run, reservation)
                .await?
                .to_string()
        } else {
            chosen_ip(
                store,
                ranges,
                info,
                svc,
                &wanted,
                &owner,
                dry_run,
                reservation,
            )
            .await?;
            wanted
        };
        svc["spec"]["clusterIP"] = json!(ip);
        svc["spec"]["clusterIPs"] = json!([ip]);
        svc["spec"]["ipFamilies"] = json!(["IPv4"]);
        svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
    }
    if needs_node_ports(svc) {
        let held: HashSet<i64> = old
            .map(node_ports)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut mine: HashSet<i64> = HashSet::new();
        let chosen: Vec<(usize, i64)> = ports_mut(svc)
            .iter()
            .enumerate()
            .map(|(i, p)| (i, node_port(p)))
            .filter(|(_, p)| *p != 0)
            .collect();
        for (i, port) in chosen {
            if held.contains(&port) || mine.contains(&port) {
                mine.insert(port);
                continue;
            }
            let field = format!("spec.ports[{i}].nodePort");
            let refuse = |detail: String| {
                invalid(
                    svc,
                    info,
                    FieldError::invalid(&field, &json!(port), &detail),
                )
            };
            if !ranges.node_ports.contains(port) {
                return Err(refuse(format!(
                    "provided port is not in the valid range. The range of valid ports is {}",
                    ranges.node_ports
                )));
            }
            let key = reservations::port_key(port);
            let free = if dry_run {
                !reservations::is_reserved(store, &key).await?
            } else {
                reservations::reserve(store, &key, &owner).await?
            };
            if !free {
                return Err(refuse("provided port is already allocated".into()));
            }
            if !dry_run {
                reservation.push(key);
            }
            mine.insert(port);
        }
        let missing = ports_mut(svc).iter().filter(|p| node_port(p) == 0).count();
        if missing > 0 {
            let mut picked = Vec::new();
            for _ in 0..missing {
                picked
                    .push(dynamic_port(store, ranges, &owner, dry_run, &mine, reservation).await?);
                mine.insert(i64::from(*picked.last().unwrap_or(&0)));
            }
            let mut picked = picked.into_iter();
            for port in ports_mut(svc) {
                if node_port(port) == 0
                    && let Some(p) = picked.next()
                {
                    port["nodePort"] = json!(p);
                }
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn chosen_ip(
    store: &dyn Store,
    ranges: &ServiceRanges,
    info: &ResourceInfo,
    svc: &Value,
    wanted: &str,
    owner: &Owner,
    dry_run: bool,
    reservation: &mut Reservation,
) -> Result<(), ApiError> {
    // kube-apiserver: `spec.clusterIPs: Invalid value: []string{"IP"}: failed to allocate IP
    // IP: REASON` (the value printed as Go prints a string slice).
    let refuse = |detail: String| {
        invalid(
            svc,
            info,
            FieldError {
                field: "spec.clusterIPs".into(),
                reason: "FieldValueInvalid".into(),
                message: format!(
                    "Invalid value: {}: failed to allocate IP {wanted}: {detail}",
                    go_strings(&[wanted])
                ),
            },
        )
    };
    let Ok(ip) = wanted.parse::<Ipv4Addr>() else {
        return Err(refuse(
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".into(),
        ));
    };
    if !allocator::ip_in_range(&ranges.cidr, ip) {
        return Err(refuse(format!(
            "the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
            ranges.cidr
        )));
    }
    let key = reservations::ip_key(ip);
    let free = if dry_run {
        !reservations::is_reserved(store, &key).await?
    } else {
        reservations::reserve(store, &key, owner).await?
    };
    if !free {
        return Err(refuse("provided IP is already allocated".into()));
    }
    if !dry_run {
        reservation.push(key);
    }
    Ok(())
}

async fn dynamic_ip(
    store: &dyn Store,
    ranges: &ServiceRanges,
    owner: &Owner,
    dry_run: bool,
    reservation: &mut Reservation,
) -> Result<Ipv4Addr, AllocationError> {
    let mut used: HashSet<Ipv4Addr> = reservations::list(store, reservations::IP_PREFIX)
        .await?
        .keys()
        .filter_map(|k| k.parse().ok())
        .collect();
    // Each round either reserves or learns one more taken address (a concurrent request
    // won it); the bound only stops a store that refuses every create.
    for _ in 0..64 {
        let ip = allocator::next_free_ip(&ranges.cidr, &used, allocator::seed())
            .ok_or(AllocationError::IpRangeFull { cidr: ranges.cidr })?;
        if dry_run {
            return Ok(ip);
        }
        let key = reservations::ip_key(ip);
        if reservations::reserve(store, &key, owner).await? {
            reservation.push(key);
            return Ok(ip);
        }
        used.insert(ip);
    }
    Err(AllocationError::IpRangeFull { cidr: ranges.cidr })
}

async fn dynamic_port(
    store: &dyn Store,
    ranges: &ServiceRanges,
    owner: &Owner,
    dry_run: bool,
    mine: &HashSet<i64>,
    reservation: &mut Reservation,
) -> Result<u16, AllocationError> {
    let mut used: HashSet<u16> = reservations::list(store, reservations::PORT_PREFIX)
        .await?
        .keys()
        .filter_map(|k| k.parse().ok())
        .collect();
    used.extend(mine.iter().filter_map(|p| u16::try_from(*p).ok()));
    for _ in 0..64 {
        let port = allocator::next_free_port(&ranges.node_ports, &used, allocator::seed()).ok_or(
            AllocationError::PortRangeFull {
                range: ranges.node_ports,
            },
        )?;
        if dry_run {
            return Ok(port);
        }
        let key = reservations::port_key(port);
        if reservations::reserve(store, &key, owner).await? {
            reservation.push(key);
            return Ok(port);
        }
        used.insert(port);
    }
    Err(AllocationError::PortRangeFull {
        range: ranges.node_ports,
    })
}

/// The update rules of Services, before validation (kube-apiserver's `patchAllocatedValues`,
/// `NormalizeClusterIPs`, `dropTypeDependentFields` and the immutable cluster IP): values the
/// client left out are kept from `old`, values a type change makes useless are dropped, and a
/// changed cluster IP is refused.
pub fn prepare_update(info: &ResourceInfo, old: &Value, new: &mut Value) -> Result<(), ApiError> {
    if !is_services(info) {
        return Ok(());
    }
    ensure_spec(new);
    patch_allocated_values(old, new);
    normalize_update(old, new);
    drop_type_dependent_fields(old, new);
    check_immutable(info, old, new)
}

fn patch_allocated_values(old: &Value, new: &mut Value) {
    if needs_cluster_ip(old) && needs_cluster_ip(new) {
        if spec_str(new, "clusterIP").is_empty() && !spec_str(old, "clusterIP").is_empty() {
            new["spec"]["clusterIP"] = json!(spec_str(old, "clusterIP"));
        }
        if cluster_ips(new).is_empty() && !cluster_ips(old).is_empty() {
            new["spec"]["clusterIPs"] = json!(cluster_ips(old));
        }
    }
    if needs_node_ports(old) && needs_node_ports(new) {
        let new_used: HashSet<i64> = node_ports(new).into_iter().collect();
        let by_name: Vec<(String, i64)> = old
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| {
                let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
                (name.to_string(), node_port(p))
            })
            .collect();
        for port in ports_mut(new) {
            if node_port(port) != 0 {
                continue;
            }
            let name = port.get("name").and_then(Value::as_str).unwrap_or_default();
            if let Some((_, old_port)) = by_name.iter().find(|(n, _)| n == name)
                && *old_port != 0
                && !new_used.contains(old_port)
            {
                port["nodePort"] = json!(old_port);
            }
        }
    }
}

fn normalize_update(old: &Value, new: &mut Value) {
    let old_ips = cluster_ips(old);
    let old_ip = spec_str(old, "clusterIP").to_string();
    let new_ip = spec_str(new, "clusterIP").to_string();
    if !old_ips.is_empty() && cluster_ips(new).is_empty() && old_ip == new_ip {
        new["spec"]["clusterIPs"] = json!(old_ips);
    }
    if old_ip != new_ip && cluster_ips(new) == old_ips {
        if new_ip.is_empty() {
            if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("clusterIPs");
            }
        } else {
            new["spec"]["clusterIPs"] = json!([new_ip]);
        }
    }
}

fn drop_type_dependent_fields(old: &Value, new: &mut Value) {
    if needs_cluster_ip(old)
        && !needs_cluster_ip(new)
        && spec_str(new, "clusterIP") == spec_str(old, "clusterIP")
        && cluster_ips(new) == cluster_ips(old)
        && let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut)
    {
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            spec.remove(field);
        }
    }
    if needs_node_ports(old) && !needs_node_ports(new) {
        let old_ports = old
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, port) in ports_mut(new).into_iter().enumerate() {
            let same = old_ports
                .get(i)
                .is_some_and(|o| node_port(o) == node_port(port));
            if same && let Some(map) = port.as_object_mut() {
                map.remove("nodePort");
            }
        }
    }
}

fn check_immutable(info: &ResourceInfo, old: &Value, new: &Value) -> Result<(), ApiError> {
    if !needs_cluster_ip(old) || !needs_cluster_ip(new) {
        return Ok(());
    }
    let old_ip = spec_str(old, "clusterIP");
    let new_ip = spec_str(new, "clusterIP");
    if old_ip.is_empty() || old_ip == new_ip {
        return Ok(());
    }
    Err(invalid(
        new,
        info,
        FieldError {
            field: "spec.clusterIPs[0]".into(),
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: {}: may not change once set",
                go_strings(&[new_ip])
            ),
        },
    ))
}

/// A string slice as Go's `%#v` prints it in kube-apiserver's messages: `[]string{"a", "b"}`.
fn go_strings(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::state::ServerOptions;
    use skiff_apimachinery::Registry;

    fn services() -> ResourceInfo {
        Registry::builtin()
            .find("", "v1", "services")
            .unwrap()
            .clone()
    }

    fn state() -> AppState {
        let (_tx, rx) = tokio::sync::watch::channel(false);
        AppState::new(
            Arc::new(skiff_store::MemoryStore::new()),
            Registry::builtin(),
            ServerOptions::default(),
            rx,
        )
    }

    fn svc(name: &str, spec: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")}, "spec": spec})
    }

    #[tokio::test]
    async fn services_get_a_cluster_ip_and_node_ports() {
        let state = state();
        let info = services();
        let mut web = svc("web", json!({"type": "NodePort", "ports": [{"port": 80}]}));
        admit_create(&state, &info, &mut web, false)
            .await
            .unwrap()
            .commit();
        let ip: Ipv4Addr = web["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        assert_eq!(ip.octets()[..2], [10, 43]);
        assert_eq!(web["spec"]["clusterIPs"], json!([ip.to_string()]));
        assert_eq!(web["spec"]["ipFamilyPolicy"], "SingleStack");
        let port = web["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
        assert!((30000..=32767).contains(&port));
        let store = state.store.as_ref();
        assert!(
            reservations::is_reserved(store, &reservations::ip_key(ip))
                .await
                .unwrap()
        );
        assert!(
            reservations::is_reserved(store, &reservations::port_key(port))
                .await
                .unwrap()
        );

        let mut headless = svc("h", json!({"clusterIP": "None"}));
        admit_create(&state, &info, &mut headless, false)
            .await
            .unwrap()
            .commit();
        assert_eq!(headless["spec"]["clusterIP"], "None");
        let mut plain = svc("p", json!({"ports": [{"port": 80, "nodePort": 0}]}));
        admit_create(&state, &info, &mut plain, false)
            .await
            .unwrap()
            .commit();
        assert!(
            plain["spec"]["ports"][0].get("nodePort").is_none(),
            "{plain}"
        );
        let mut external = svc("e", json!({"type": "ExternalName", "externalName": "a.b"}));
        admit_create(&state, &info, &mut external, false)
            .await
            .unwrap()
            .commit();
        assert!(external["spec"].get("clusterIP").is_none());

        after_delete(&state, &info, &web).await;
        assert!(
            !reservations::is_reserved(store, &reservations::ip_key(ip))
                .await
                .unwrap()
        );
        assert!(
            !reservations::is_reserved(store, &reservations::port_key(port))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn chosen_addresses_are_honoured_or_refused() {
        let state = state();
        let info = services();
        let mut a = svc(
            "a",
            json!({"clusterIP": "10.43.0.5", "type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
        );
        admit_create(&state, &info, &mut a, false)
            .await
            .unwrap()
            .commit();
        assert_eq!(a["spec"]["clusterIPs"], json!(["10.43.0.5"]));
        let mut b = svc("b", json!({"clusterIP": "10.43.0.5"}));
        let err = admit_create(&state, &info, &mut b, false)
            .await
            .unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(
            err.message,
            "Service \"b\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.43.0.5\"}: failed to allocate IP 10.43.0.5: provided IP is already allocated"
        );
        let mut c = svc("c", json!({"clusterIP": "10.44.0.5"}));
        let err = admit_create(&state, &info, &mut c, false)
            .await
            .unwrap_err();
        assert!(
            err.message.ends_with(
                "the provided IP (10.44.0.5) is not in the valid range. The range of valid IPs is 10.43.0.0/16"
            ),
            "{}",
            err.message
        );
        let mut d = svc(
            "d",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
        );
        let err = admit_create(&state, &info, &mut d, false)
            .await
            .unwrap_err();
        assert_eq!(
            err.message,
            "Service \"d\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
        );
        // The failed request's cluster IP was given back: only a's two keys remain.
        let ips = reservations::list(state.store.as_ref(), reservations::IP_PREFIX)
            .await
            .unwrap();
        assert_eq!(ips.len(), 1);
        let mut e = svc(
            "e",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}),
        );
        let err = admit_create(&state, &info, &mut e, false)
            .await
            .unwrap_err();
        assert!(
            err.message
                .ends_with("The range of valid ports is 30000-32767"),
            "{}",
            err.message
        );
        // A dry run checks without reserving.
        let mut f = svc("f", json!({"clusterIP": "10.43.0.6"}));
        admit_create(&state, &info, &mut f, true)
            .await
            .unwrap()
            .commit();
        assert!(
            !reservations::is_reserved(state.store.as_ref(), &reservations::ip_key("10.43.0.6"))
                .await
                .unwrap()
        );
    }

    #[test]
    fn updates_keep_allocated_values_and_refuse_a_new_cluster_ip() {
        let info = services();
        let old = svc(
            "web",
            json!({"type": "NodePort", "clusterIP": "10.43.1.2", "clusterIPs": ["10.43.1.2"], "ports": [{"name": "http", "port": 80, "nodePort": 30001}]}),
        );
        let mut new = svc(
            "web",
            json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}]}),
        );
        prepare_update(&info, &old, &mut new).unwrap();
        assert_eq!(new["spec"]["clusterIP"], "10.43.1.2");
        assert_eq!(new["spec"]["clusterIPs"], json!(["10.43.1.2"]));
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30001);

        let mut changed = old.clone();
        changed["spec"]["clusterIP"] = json!("10.43.1.3");
        let err = prepare_update(&info, &old, &mut changed).unwrap_err();
        assert_eq!(
            err.message,
            "Service \"web\" is invalid: spec.clusterIPs[0]: Invalid value: []string{\"10.43.1.3\"}: may not change once set"
        );

        let mut back = old.clone();
        back["spec"]["type"] = json!("ClusterIP");
        prepare_update(&info, &old, &mut back).unwrap();
        assert!(back["spec"]["ports"][0].get("nodePort").is_none());
        assert_eq!(back["spec"]["clusterIP"], "10.43.1.2");

        let mut external = old.clone();
        external["spec"]["type"] = json!("ExternalName");
        external["spec"]["externalName"] = json!("a.example");
        prepare_update(&info, &old, &mut external).unwrap();
        assert!(external["spec"].get("clusterIP").is_none());
        assert!(external["spec"].get("clusterIPs").is_none());
    }

    #[tokio::test]
    async fn type_changes_allocate_and_release() {
        let state = state();
        let info = services();
        let mut old = svc("web", json!({"ports": [{"port": 80}]}));
        admit_create(&state, &info, &mut old, false)
            .await
            .unwrap()
            .commit();
        let mut new = old.clone();
        new["spec"]["type"] = json!("NodePort");
        prepare_update(&info, &old, &mut new).unwrap();
        admit_update(&state, &info, &old, &mut new, false)
            .await
            .unwrap()
            .commit();
        let port = new["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
        assert_eq!(new["spec"]["clusterIP"], old["spec"]["clusterIP"]);
        let store = state.store.as_ref();
        assert!(
            reservations::is_reserved(store, &reservations::port_key(port))
                .await
                .unwrap()
        );
        let mut back = new.clone();
        back["spec"]["type"] = json!("ClusterIP");
        prepare_update(&info, &new, &mut back).unwrap();
        admit_update(&state, &info, &new, &mut back, false)
            .await
            .unwrap()
            .commit();
        release_unused(&state, &info, &new, &back).await;
        assert!(
            !reservations::is_reserved(store, &reservations::port_key(port))
                .await
                .unwrap()
        );
        let ip = held_ip(&back).unwrap();
        assert!(
            reservations::is_reserved(store, &reservations::ip_key(ip))
                .await
                .unwrap()
        );
    }
}
