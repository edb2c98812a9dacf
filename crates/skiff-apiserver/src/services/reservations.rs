//! Reservations in the store: one key per allocated cluster IP or node port, created with
//! create-if-absent before the Service that uses it is written, so two requests (also on two
//! API servers over one etcd) never get the same address.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use skiff_store::{Revision, Store, StoreError};

use super::AllocationError;
use crate::object;

/// The store prefix of cluster IP reservations: `/registry/ranges/serviceips/<ip>`.
pub const IP_PREFIX: &str = "/registry/ranges/serviceips/";
/// The store prefix of node port reservations: `/registry/ranges/servicenodeports/<port>`.
pub const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";

/// The key reserving a cluster IP.
pub fn ip_key(ip: impl std::fmt::Display) -> String {
    format!("{IP_PREFIX}{ip}")
}

/// The key reserving a node port.
pub fn port_key(port: impl std::fmt::Display) -> String {
    format!("{PORT_PREFIX}{port}")
}

/// Who holds a reservation (the value of its key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The Service's UID.
    pub uid: String,
    /// When the reservation was made (seconds since the epoch).
    pub at: u64,
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Owner {
    /// The owner record of a Service object.
    pub fn of(svc: &Value) -> Owner {
        Owner {
            namespace: object::namespace(svc).to_string(),
            name: object::name(svc).to_string(),
            uid: object::meta_str(svc, "uid").to_string(),
            at: unix_now(),
        }
    }
}

fn store_error(action: &'static str, key: &str) -> impl FnOnce(StoreError) -> AllocationError {
    let key = key.to_string();
    move |source| AllocationError::Store {
        action,
        key,
        source,
    }
}

/// Creates the reservation `key` for `owner`; `Ok(false)` when somebody holds it already.
pub async fn reserve(store: &dyn Store, key: &str, owner: &Owner) -> Result<bool, AllocationError> {
    let value = serde_json::to_vec(owner).unwrap_or_default();
    match store.create(key, value.into()).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists { .. }) => Ok(false),
        Err(err) => Err(store_error("create", key)(err)),
    }
}

/// Whether `key` is reserved.
pub async fn is_reserved(store: &dyn Store, key: &str) -> Result<bool, AllocationError> {
    store
        .get(key)
        .await
        .map(|kv| kv.is_some())
        .map_err(store_error("read", key))
}

/// Every reservation under `prefix`: key suffix -> (owner, modification revision). Values
/// that do not decode have no owner.
pub async fn list(
    store: &dyn Store,
    prefix: &str,
) -> Result<HashMap<String, (Option<Owner>, Revision)>, AllocationError> {
    let page = store
        .list(prefix, None, None, None)
        .await
        .map_err(store_error("list", prefix))?;
    Ok(page
        .items
        .into_iter()
        .filter_map(|kv| {
            let suffix = kv.key.strip_prefix(prefix)?.to_string();
            let owner = serde_json::from_slice::<Owner>(&kv.value).ok();
            Some((suffix, (owner, kv.mod_revision)))
        })
        .collect())
}

/// Deletes `key` if `uid` holds it (a reservation of another Service stays).
pub async fn release_if_owned(
    store: &dyn Store,
    key: &str,
    uid: &str,
) -> Result<(), AllocationError> {
    let Some(kv) = store.get(key).await.map_err(store_error("read", key))? else {
        return Ok(());
    };
    let owner = serde_json::from_slice::<Owner>(&kv.value).ok();
    if owner.is_some_and(|o| o.uid != uid) {
        return Ok(());
    }
    release_at(store, key, kv.mod_revision).await
}

/// Deletes `key` if it is still at `revision`.
pub async fn release_at(
    store: &dyn Store,
    key: &str,
    revision: Revision,
) -> Result<(), AllocationError> {
    match store.delete(key, Some(revision)).await {
        Ok(_) | Err(StoreError::NotFound { .. }) | Err(StoreError::Conflict { .. }) => Ok(()),
        Err(err) => Err(store_error("delete", key)(err)),
    }
}

/// The keys one request reserved: released again when the request fails.
#[derive(Debug, Default)]
#[must_use = "a reservation must be released when the write it was made for fails"]
pub struct Reservation {
    keys: Vec<String>,
}

impl Reservation {
    /// Records a key this request created.
    pub fn push(&mut self, key: String) {
        self.keys.push(key);
    }

    /// Whether nothing was reserved.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Deletes every key of the reservation (the write it was made for failed). Failures are
    /// logged: the periodic repair removes what is left.
    pub async fn release(self, store: &dyn Store) {
        for key in self.keys {
            if let Err(err) = store.delete(&key, None).await
                && !matches!(err, StoreError::NotFound { .. })
            {
                tracing::warn!(%key, error = %err, "cannot release a reservation");
            }
        }
    }

    /// Keeps the keys (the write succeeded).
    pub fn commit(self) {}
}
