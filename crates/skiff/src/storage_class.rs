//! The built-in StorageClass `local-path` (k3s's: provisioner `rancher.io/local-path`,
//! `WaitForFirstConsumer`, reclaim `Delete`, the cluster's default class), created by the
//! server at start when missing; an administrator may change or delete it afterwards (a
//! deleted one comes back at the next start, as with k3s's manifests).

use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use skiff_controllers::volume::binder::ANN_DEFAULT_CLASS;
use skiff_controllers::volume::provisioner::{CLASS, PROVISIONER};

/// Creates the `local-path` StorageClass when missing, retrying until the API answers.
pub async fn ensure(client: kube::Client) {
    let api: Api<StorageClass> = Api::all(client);
    let class: StorageClass = match serde_json::from_value(serde_json::json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": CLASS,
            "annotations": {ANN_DEFAULT_CLASS: "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    })) {
        Ok(class) => class,
        Err(err) => {
            tracing::error!(error = %err, "cannot build the local-path StorageClass");
            return;
        }
    };
    crate::builtin::create_if_missing(&api, &class, "the local-path StorageClass").await;
}
