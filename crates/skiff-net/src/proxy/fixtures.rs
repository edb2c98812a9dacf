//! Test objects: Services and EndpointSlices built from JSON, and a standard input.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::model::{ProxyInput, ProxyModel, build};
use crate::Ipv4Cidr;

pub const NODE: &str = "node-a";

pub fn cidr(text: &str) -> Ipv4Cidr {
    text.parse().expect("valid CIDR")
}

/// A ClusterIP service `ns/name` at `ip` with `spec` merged over the defaults.
pub fn service(ns: &str, name: &str, ip: &str, ports: Value, extra: Value) -> Service {
    let mut spec =
        json!({ "clusterIP": ip, "clusterIPs": [ip], "ports": ports, "type": "ClusterIP" });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "metadata": { "namespace": ns, "name": name },
        "spec": spec,
    }))
    .expect("valid Service")
}

/// An endpoint for [`slice`]: address, node, and conditions (ready, serving, terminating).
pub fn ep(
    ip: &str,
    node: &str,
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
) -> Value {
    json!({
        "addresses": [ip],
        "nodeName": node,
        "conditions": { "ready": ready, "serving": serving, "terminating": terminating },
    })
}

/// A ready endpoint on `node`.
pub fn ready(ip: &str, node: &str) -> Value {
    ep(ip, node, Some(true), Some(true), Some(false))
}

/// An IPv4 EndpointSlice of service `ns/svc`.
pub fn slice(
    ns: &str,
    svc: &str,
    name: &str,
    ports: Value,
    endpoints: Vec<Value>,
) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {
            "namespace": ns,
            "name": name,
            "labels": { "kubernetes.io/service-name": svc },
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }))
    .expect("valid EndpointSlice")
}

pub fn node_ips() -> Vec<Ipv4Addr> {
    vec![Ipv4Addr::new(192, 168, 1, 10)]
}

/// Builds the model of node [`NODE`] (pod CIDR 10.42.0.0/24 of 10.42.0.0/16, services in
/// 10.43.0.0/16).
pub fn model(services: &[Service], slices: &[EndpointSlice]) -> ProxyModel {
    let ips = node_ips();
    build(&ProxyInput {
        services,
        slices,
        node_name: NODE,
        node_ips: &ips,
        pod_cidr: Some(cidr("10.42.0.0/24")),
        cluster_cidr: cidr("10.42.0.0/16"),
        service_cidr: cidr("10.43.0.0/16"),
        dns: None,
    })
}
