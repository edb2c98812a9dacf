//! Objects in the store: keys, encoding (JSON without `resourceVersion`, which is the store's
//! modification revision and set on every read) and the typed reads the handlers share.

use bytes::Bytes;
use serde_json::Value;
use skiff_apimachinery::ResourceInfo;
use skiff_store::{KeyValue, ResourceKey, Revision, Store};

use crate::object;
use crate::state::AppState;
use crate::status::ApiError;

/// The store key of one object.
pub fn key(info: &ResourceInfo, namespace: Option<&str>, name: &str) -> Result<String, ApiError> {
    let ns = if info.namespaced { namespace } else { None };
    if info.namespaced && ns.is_none() {
        return Err(ApiError::bad_request(format!(
            "{} is namespaced: a namespace is required",
            info.plural
        )));
    }
    ResourceKey::new(&info.storage_resource(), ns, name)
        .map(|k| k.path())
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The store prefix of a collection, in one namespace or all.
pub fn prefix(info: &ResourceInfo, namespace: Option<&str>) -> Result<String, ApiError> {
    let ns = if info.namespaced { namespace } else { None };
    ResourceKey::list_prefix(&info.storage_resource(), ns)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Decodes a stored object, with its `resourceVersion` and the type of the version served.
pub fn decode(info: &ResourceInfo, kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::internal(format!("stored object {} does not decode: {e}", kv.key))
    })?;
    present(info, &mut obj);
    object::set_resource_version(&mut obj, kv.mod_revision);
    Ok(obj)
}

/// Sets the type of the version served on an object (custom resources of several versions
/// share one storage; their objects differ only in `apiVersion`).
/// Custom objects get their schema's defaults, as kube-apiserver defaults on read.
pub fn present(info: &ResourceInfo, obj: &mut Value) {
    object::set_type(obj, &info.api_version(), &info.kind);
    crate::custom_resource::default_on_read(info, obj);
}

/// Encodes an object for the store.
pub fn encode(obj: &Value) -> Result<Bytes, ApiError> {
    let stored = object::without_resource_version(obj);
    serde_json::to_vec(&stored)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(format!("cannot encode object: {e}")))
}

/// Reads one object and its modification revision.
pub async fn get(
    store: &dyn Store,
    info: &ResourceInfo,
    namespace: Option<&str>,
    name: &str,
) -> Result<(Value, Revision), ApiError> {
    let key = key(info, namespace, name)?;
    match store.get(&key).await {
        Ok(Some(kv)) => Ok((decode(info, &kv)?, kv.mod_revision)),
        Ok(None) => Err(ApiError::not_found(info, name)),
        Err(err) => Err(ApiError::from_store(err, info, name)),
    }
}

/// Whether a namespace exists; `Err` with kube's NotFound for `namespaces "x"` when it does
/// not, Forbidden when it is being deleted and `creating` is true.
pub async fn check_namespace(
    state: &AppState,
    namespace: &str,
    creating: bool,
) -> Result<(), ApiError> {
    // The common case from memory; a miss or a terminating namespace is the store's word.
    if state.namespaces.is_active(namespace) {
        return Ok(());
    }
    let store = state.store.as_ref();
    let key = ResourceKey::new("namespaces", None, namespace)
        .map_err(|e| ApiError::bad_request(e.to_string()))?
        .path();
    let kv = store
        .get(&key)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let Some(kv) = kv else {
        return Err(ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("namespaces \"{namespace}\" not found"),
            details: Some(serde_json::json!({"name": namespace, "kind": "namespaces"})),
        });
    };
    if creating {
        let ns: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        if object::is_deleting(&ns) {
            return Err(ApiError::forbidden(format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            )));
        }
    }
    Ok(())
}
