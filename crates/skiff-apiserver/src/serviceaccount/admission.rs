//! The ServiceAccount admission of new pods, as kube-apiserver's `ServiceAccount` plugin:
//! `spec.serviceAccountName` defaults to `default`, a pod naming a missing ServiceAccount is
//! refused, and unless `automountServiceAccountToken` is false (on the pod, else on the
//! ServiceAccount) every container and init container mounts the projected volume
//! `kube-api-access-<5 random>` (token, cluster CA, namespace) read-only at
//! [`TOKEN_MOUNT_PATH`].

use serde_json::{Value, json};

use crate::state::AppState;
use crate::status::ApiError;
use crate::{object, storage};

/// Where containers find their service account credentials.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The prefix of the generated volume's name.
pub const VOLUME_PREFIX: &str = "kube-api-access";
/// The token lifetime the kubelet is asked for (kube's `WarnOnlyBoundTokenExpirationSeconds`).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// The ConfigMap holding the cluster CA in every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

/// The projected volume source kube-apiserver adds (`TokenVolumeSource`).
pub fn token_volume_source() -> Value {
    json!({
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_EXPIRATION_SECONDS}},
            {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ],
    })
}

/// Admits a new pod in `namespace` (mutates `pod`); a missing ServiceAccount is Forbidden
/// (`default` is waited for up to about two seconds first, as kube-apiserver does).
pub async fn admit_pod(state: &AppState, namespace: &str, pod: &mut Value) -> Result<(), ApiError> {
    if !pod.is_object() {
        return Ok(());
    }
    if pod
        .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some()
    {
        return Ok(());
    }
    if !pod.get("spec").is_some_and(Value::is_object) {
        pod["spec"] = json!({});
    }
    let named = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            pod.pointer("/spec/serviceAccount")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("default")
        .to_string();
    pod["spec"]["serviceAccountName"] = json!(named);
    pod["spec"]["serviceAccount"] = json!(named);
    let Some(sa_info) = state.find("", "v1", "serviceaccounts") else {
        return Ok(());
    };
    // As kube-apiserver: the `default` account is looked up a few more times, since the
    // ServiceAccount controller creates it just after its namespace.
    let attempts = if named == "default" { 10 } else { 1 };
    let mut found = storage::get(state.store.as_ref(), &sa_info, Some(namespace), &named).await;
    for _ in 1..attempts {
        if !matches!(&found, Err(err) if err.code == 404) {
            break;
        }
        let mut jitter = [0u8; 1];
        object::random_bytes(&mut jitter);
        let wait = 100 + u64::from(jitter[0]) * 100 / 255;
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        found = storage::get(state.store.as_ref(), &sa_info, Some(namespace), &named).await;
    }
    let sa = match found {
        Ok((sa, _)) => sa,
        Err(err) if err.code == 404 => {
            return Err(ApiError {
                details: Some(json!({"name": object::name(pod), "kind": "pods"})),
                ..ApiError::forbidden(format!(
                    "pods \"{}\" is forbidden: error looking up service account {namespace}/{named}: serviceaccount \"{named}\" not found",
                    object::name(pod)
                ))
            });
        }
        Err(err) => return Err(err),
    };
    let automount = pod
        .pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            sa.get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true);
    if automount {
        mount_token(pod);
    }
    Ok(())
}

/// Adds the token volume and its mounts (`mountServiceAccountToken` of the plugin): an
/// existing `kube-api-access-*` volume is reused, containers already mounting something at
/// [`TOKEN_MOUNT_PATH`] are left alone.
fn mount_token(pod: &mut Value) {
    let existing = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .and_then(|vols| {
            vols.iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str))
                .find(|n| n.starts_with(&format!("{VOLUME_PREFIX}-")))
                .map(String::from)
        });
    let has_volume = existing.is_some();
    let volume_name =
        existing.unwrap_or_else(|| format!("{VOLUME_PREFIX}-{}", object::random_suffix()));
    let mount = json!({"name": volume_name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needs_volume = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = pod["spec"].get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers.iter_mut() {
            if !c.is_object() {
                continue;
            }
            let mounted = c
                .get("volumeMounts")
                .and_then(Value::as_array)
                .is_some_and(|ms| {
                    ms.iter().any(|m| {
                        m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH)
                    })
                });
            if mounted {
                continue;
            }
            if !c.get("volumeMounts").is_some_and(Value::is_array) {
                c["volumeMounts"] = json!([]);
            }
            if let Some(ms) = c["volumeMounts"].as_array_mut() {
                ms.push(mount.clone());
            }
            needs_volume = true;
        }
    }
    if !has_volume && needs_volume {
        if !pod["spec"].get("volumes").is_some_and(Value::is_array) {
            pod["spec"]["volumes"] = json!([]);
        }
        if let Some(vols) = pod["spec"]["volumes"].as_array_mut() {
            vols.push(json!({"name": volume_name, "projected": token_volume_source()}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_mounts_one_generated_volume() {
        let mut pod = json!({"spec": {
            "initContainers": [{"name": "i", "image": "b"}],
            "containers": [
                {"name": "a", "image": "b"},
                {"name": "c", "image": "b", "volumeMounts": [{"name": "x", "mountPath": TOKEN_MOUNT_PATH}]},
            ],
        }});
        mount_token(&mut pod);
        let vols = pod["spec"]["volumes"].as_array().unwrap();
        assert_eq!(vols.len(), 1);
        let name = vols[0]["name"].as_str().unwrap();
        assert!(name.starts_with("kube-api-access-") && name.len() == 21);
        assert_eq!(
            pod["spec"]["initContainers"][0]["volumeMounts"][0]["name"],
            name
        );
        assert_eq!(
            pod["spec"]["containers"][0]["volumeMounts"][0]["readOnly"],
            true
        );
        assert_eq!(
            pod["spec"]["containers"][1]["volumeMounts"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            vols[0]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            3607
        );
    }
}
