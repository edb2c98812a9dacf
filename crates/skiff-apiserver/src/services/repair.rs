//! Reconciles the address reservations with the stored Services (kube-apiserver's
//! ClusterIP and NodePort repair controllers): a Service holding an address without a
//! reservation gets one (data written before reservations existed, a lost write), and a
//! reservation no Service holds is released once it is older than [`LEAK_GRACE`] (younger
//! ones may belong to a create still in flight, also on another API server).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use skiff_store::ResourceKey;

use super::reservations::{self, IP_PREFIX, Owner, PORT_PREFIX};
use super::{AllocationError, held_keys};
use crate::state::AppState;

/// How old an unused reservation must be before the repair releases it.
pub const LEAK_GRACE: Duration = Duration::from_secs(60);

/// What one repair pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Reservations created for addresses Services held without one.
    pub restored: usize,
    /// Reservations released because no Service held them.
    pub released: usize,
    /// Addresses held by more than one Service (logged; left as they are).
    pub duplicates: usize,
}

/// One repair pass over every Service and reservation.
pub async fn repair(state: &AppState) -> Result<RepairReport, AllocationError> {
    let store = state.store.as_ref();
    let prefix = ResourceKey::list_prefix("services", None).unwrap_or_default();
    let page = store
        .list(&prefix, None, None, None)
        .await
        .map_err(|source| AllocationError::Store {
            action: "list",
            key: prefix.clone(),
            source,
        })?;
    let mut held: HashMap<String, Owner> = HashMap::new();
    let mut report = RepairReport::default();
    for kv in page.items {
        let Ok(svc) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        let owner = Owner::of(&svc);
        for key in held_keys(&svc) {
            if let Some(other) = held.get(&key) {
                tracing::warn!(
                    %key,
                    first = %format!("{}/{}", other.namespace, other.name),
                    second = %format!("{}/{}", owner.namespace, owner.name),
                    "a service address is held by two services"
                );
                report.duplicates += 1;
                continue;
            }
            held.insert(key, owner.clone());
        }
    }
    let mut reserved = HashMap::new();
    for prefix in [IP_PREFIX, PORT_PREFIX] {
        for (suffix, entry) in reservations::list(store, prefix).await? {
            reserved.insert(format!("{prefix}{suffix}"), entry);
        }
    }
    for (key, owner) in &held {
        if !reserved.contains_key(key) && reservations::reserve(store, key, owner).await? {
            tracing::info!(%key, service = %format!("{}/{}", owner.namespace, owner.name), "restored a service address reservation");
            report.restored += 1;
        }
    }
    let now = reservations::unix_now();
    for (key, (owner, revision)) in reserved {
        if held.contains_key(&key) {
            continue;
        }
        let age = owner
            .as_ref()
            .map_or(u64::MAX, |o| now.saturating_sub(o.at));
        if age < LEAK_GRACE.as_secs() {
            continue;
        }
        reservations::release_at(store, &key, revision).await?;
        tracing::info!(%key, "released a service address no service holds");
        report.released += 1;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use skiff_apimachinery::Registry;

    use super::*;
    use crate::state::ServerOptions;

    #[tokio::test]
    async fn repair_restores_missing_and_releases_old_leaks() {
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let state = AppState::new(
            Arc::new(skiff_store::MemoryStore::new()),
            Registry::builtin(),
            ServerOptions::default(),
            rx,
        );
        let store = state.store.as_ref();
        let svc = json!({"metadata": {"name": "old", "namespace": "default", "uid": "u1"}, "spec": {"type": "NodePort", "clusterIP": "10.43.2.3", "ports": [{"port": 80, "nodePort": 30500}]}});
        store
            .create(
                "/registry/services/default/old",
                serde_json::to_vec(&svc).unwrap().into(),
            )
            .await
            .unwrap();
        let stale = Owner {
            namespace: "default".into(),
            name: "gone".into(),
            uid: "u2".into(),
            at: 0,
        };
        let fresh = Owner {
            at: reservations::unix_now(),
            ..stale.clone()
        };
        reservations::reserve(store, &reservations::ip_key("10.43.9.9"), &stale)
            .await
            .unwrap();
        reservations::reserve(store, &reservations::ip_key("10.43.9.10"), &fresh)
            .await
            .unwrap();
        let report = repair(&state).await.unwrap();
        assert_eq!(
            report,
            RepairReport {
                restored: 2,
                released: 1,
                duplicates: 0
            }
        );
        let ips = reservations::list(store, IP_PREFIX).await.unwrap();
        let mut keys: Vec<_> = ips.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["10.43.2.3", "10.43.9.10"]);
        assert_eq!(ips["10.43.2.3"].0.as_ref().unwrap().uid, "u1");
        assert_eq!(repair(&state).await.unwrap(), RepairReport::default());
    }
}
