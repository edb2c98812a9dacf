#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::json;

fn service(extra: serde_json::Value) -> Service {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid", "labels": {"tier": "f"}},
        "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "metrics", "port": 9090}
        ]}
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn pod(name: &str, ip: &str, ready: bool, extra: serde_json::Value) -> Arc<Pod> {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "ns", "uid": format!("{name}-uid"),
            "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
            "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": ip, "conditions": [
            {"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    });
    merge(&mut v, extra);
    Arc::new(serde_json::from_value(v).unwrap())
}

fn ips(list: &Option<Vec<EndpointAddress>>) -> Vec<String> {
    list.iter().flatten().map(|a| a.ip.clone()).collect()
}

#[test]
fn ready_and_not_ready_pods_split_and_named_target_ports_resolve() {
    let pods = vec![
        pod("a", "10.0.0.1", true, json!({})),
        pod("b", "10.0.0.2", false, json!({})),
        pod(
            "other",
            "10.0.0.3",
            true,
            json!({"metadata": {"labels": {"app": "db"}}}),
        ),
        pod("noip", "", true, json!({})),
    ];
    let ep = desired_endpoints(&service(json!({})), &pods);
    let subsets = ep.subsets.unwrap();
    assert_eq!(subsets.len(), 1);
    assert_eq!(ips(&subsets[0].addresses), vec!["10.0.0.1"]);
    assert_eq!(ips(&subsets[0].not_ready_addresses), vec!["10.0.0.2"]);
    let ports: Vec<_> = subsets[0]
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap(), p.port))
        .collect();
    assert_eq!(
        ports,
        vec![("http".into(), 8080), ("metrics".into(), 9090)],
        "named targetPort resolved, unset targetPort is the port"
    );
    let target = subsets[0].addresses.as_ref().unwrap()[0]
        .target_ref
        .clone()
        .unwrap();
    assert_eq!(target.name.as_deref(), Some("a"));
    assert_eq!(ep.metadata.owner_references.unwrap()[0].uid, "svc-uid");
}

#[test]
fn pods_lacking_a_named_port_form_their_own_subset() {
    let pods = vec![
        pod("a", "10.0.0.1", true, json!({})),
        pod(
            "b",
            "10.0.0.2",
            true,
            json!({"spec": {"containers": [{"name": "c", "image": "i"}]}}),
        ),
    ];
    let ep = desired_endpoints(&service(json!({})), &pods);
    assert_eq!(ep.subsets.unwrap().len(), 2);
    let slices = desired_slices(&service(json!({})), &pods);
    assert_eq!(slices.len(), 2, "one slice per port set");
}

#[test]
fn terminating_pods_leave_endpoints_but_stay_in_slices_marked_terminating() {
    let pods = vec![pod(
        "a",
        "10.0.0.1",
        true,
        json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}}),
    )];
    let ep = desired_endpoints(&service(json!({})), &pods);
    assert!(ep.subsets.is_none());
    let slices = desired_slices(&service(json!({})), &pods);
    let c = slices[0].endpoints[0].conditions.clone().unwrap();
    assert_eq!(
        (c.ready, c.serving, c.terminating),
        (Some(false), Some(true), Some(true))
    );
}

#[test]
fn finished_pods_are_left_out_and_publish_not_ready_counts_all_as_ready() {
    let pods = vec![
        pod(
            "done",
            "10.0.0.9",
            false,
            json!({"status": {"phase": "Succeeded"}}),
        ),
        pod("b", "10.0.0.2", false, json!({})),
    ];
    let svc = service(json!({"spec": {"publishNotReadyAddresses": true}}));
    let ep = desired_endpoints(&svc, &pods);
    let subsets = ep.subsets.unwrap();
    assert_eq!(ips(&subsets[0].addresses), vec!["10.0.0.2"]);
    assert!(subsets[0].not_ready_addresses.is_none());
    let slices = desired_slices(&svc, &pods);
    assert_eq!(slices[0].endpoints.len(), 1);
    assert_eq!(
        slices[0].endpoints[0].conditions.clone().unwrap().ready,
        Some(true)
    );
}

#[test]
fn slices_carry_the_service_label_owner_ports_and_hostnames() {
    let pods = vec![pod(
        "web-0",
        "10.0.0.1",
        true,
        json!({"spec": {"hostname": "web-0", "subdomain": "web"}}),
    )];
    let slices = desired_slices(&service(json!({})), &pods);
    assert_eq!(slices.len(), 1);
    let s = &slices[0];
    assert_eq!(s.metadata.name.as_deref(), Some("web-0"));
    let labels = s.metadata.labels.clone().unwrap();
    assert_eq!(labels[SERVICE_NAME_LABEL], "web");
    assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
    assert_eq!(labels["tier"], "f");
    let o = &s.metadata.owner_references.clone().unwrap()[0];
    assert_eq!((o.kind.as_str(), o.controller), ("Service", Some(true)));
    assert_eq!(s.address_type, "IPv4");
    assert_eq!(s.endpoints[0].hostname.as_deref(), Some("web-0"));
    assert_eq!(s.endpoints[0].node_name.as_deref(), Some("n1"));
    let ports: Vec<_> = s.ports.iter().flatten().map(|p| p.port).collect();
    assert_eq!(ports, vec![Some(8080), Some(9090)]);
    let ep = desired_endpoints(&service(json!({})), &pods);
    assert_eq!(
        ep.subsets.unwrap()[0].addresses.as_ref().unwrap()[0]
            .hostname
            .as_deref(),
        Some("web-0")
    );
}

#[test]
fn no_pods_give_empty_endpoints_and_one_empty_slice_and_selectorless_services_are_skipped() {
    let ep = desired_endpoints(&service(json!({})), &[]);
    assert!(ep.subsets.is_none());
    let slices = desired_slices(&service(json!({})), &[]);
    assert_eq!(slices.len(), 1);
    assert!(slices[0].endpoints.is_empty());
    assert!(!has_selector(&service(json!({"spec": {"selector": null}}))));
}

#[test]
fn numeric_and_numeric_string_target_ports() {
    let p = pod("a", "10.0.0.1", true, json!({}));
    assert_eq!(
        resolve_target_port(&p, Some(&IntOrString::Int(81)), 80),
        Some(81)
    );
    assert_eq!(
        resolve_target_port(&p, Some(&IntOrString::String("82".into())), 80),
        Some(82)
    );
    assert_eq!(
        resolve_target_port(&p, Some(&IntOrString::String("nope".into())), 80),
        None
    );
}
