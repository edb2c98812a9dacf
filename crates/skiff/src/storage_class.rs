//! The built-in StorageClass `local-path` (k3s's: provisioner `rancher.io/local-path`,
//! `WaitForFirstConsumer`, reclaim `Delete`, the cluster's default class), created by the
//! server at start when missing; an administrator may change or delete it afterwards (a
//! deleted one comes back at the next start, as with k3s's manifests).

use std::time::Duration;

use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::PostParams;
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
    let mut delay = Duration::from_millis(50);
    loop {
        match api.create(&PostParams::default(), &class).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => return,
            Err(err) => tracing::debug!(error = %err, "creating the StorageClass; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
