//! Shared by the API benchmarks (`scheduler_bench`, `apiserver_bench`): a namespace ready
//! for pods.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

/// Creates namespace `name` and waits for its `default` ServiceAccount (pods need it).
pub async fn create(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    let start = Instant::now();
    while accounts.get_opt("default").await.unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "namespace {name} got no default ServiceAccount"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
