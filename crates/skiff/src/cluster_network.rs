//! The cluster's network settings, published by the server as the ConfigMap
//! `kube-system/skiff-cluster-network` so every agent (embedded or joined) networks its pods
//! the same way: pod and service ranges, the cluster DNS address and domain, the backend; and
//! the default IngressClass `skiff` the nodes' Ingress proxies serve.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::IngressClass;
use kube::Api;
use kube::api::{Patch, PatchParams};

/// The ConfigMap's namespace and name (what `skiff_agent::network` reads).
pub use skiff_agent::network::CONFIG_MAP;

/// The IngressClass the nodes' Ingress proxies serve.
pub const INGRESS_CLASS: &str = "skiff";
/// Its `spec.controller`.
pub const INGRESS_CONTROLLER: &str = "skiff.io/ingress";

/// The settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Every pod address of the cluster.
    pub cluster_cidr: String,
    /// Every service address.
    pub service_cidr: String,
    /// The cluster DNS service address.
    pub cluster_dns: String,
    /// The cluster domain.
    pub cluster_domain: String,
    /// `vxlan` or `host-gw`.
    pub backend: String,
}

impl Settings {
    /// The ConfigMap's data.
    pub fn data(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("clusterCIDR".to_string(), self.cluster_cidr.clone()),
            ("serviceCIDR".to_string(), self.service_cidr.clone()),
            ("clusterDNS".to_string(), self.cluster_dns.clone()),
            ("clusterDomain".to_string(), self.cluster_domain.clone()),
            ("backend".to_string(), self.backend.clone()),
        ])
    }
}

/// Writes the ConfigMap (server-side apply, so a restart with other flags updates it),
/// retrying until the API answers.
pub async fn publish(client: kube::Client, settings: Settings) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), CONFIG_MAP.0);
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIG_MAP.1, "namespace": CONFIG_MAP.0},
        "data": settings.data(),
    });
    let params = PatchParams::apply("skiff-server").force();
    let mut delay = Duration::from_millis(50);
    loop {
        match api.patch(CONFIG_MAP.1, &params, &Patch::Apply(&body)).await {
            Ok(_) => break,
            Err(err) => {
                tracing::debug!(error = %err, "publishing the cluster network settings; retrying")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
    ensure_ingress_class(&client).await;
}

/// The IngressClass of the nodes' built-in Ingress proxy, the cluster's default class, created
/// when missing (an administrator may change its default-class annotation afterwards).
async fn ensure_ingress_class(client: &kube::Client) {
    let api: Api<IngressClass> = Api::all(client.clone());
    let class: IngressClass = match serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {
            "name": INGRESS_CLASS,
            "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"},
        },
        "spec": {"controller": INGRESS_CONTROLLER},
    })) {
        Ok(class) => class,
        Err(err) => {
            tracing::error!(error = %err, "cannot build the IngressClass");
            return;
        }
    };
    crate::builtin::create_if_missing(&api, &class, "the IngressClass").await;
}
