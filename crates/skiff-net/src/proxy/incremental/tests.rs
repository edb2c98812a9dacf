use serde_json::json;

use super::*;
use crate::proxy::fixtures::*;
use crate::proxy::nft::chain_name;

fn web(endpoints: &[&str], extra: serde_json::Value) -> ProxyModel {
    let services = vec![
        service(
            "default",
            "web",
            "10.43.0.10",
            json!([{ "name": "http", "port": 80 }]),
            extra,
        ),
        service(
            "default",
            "other",
            "10.43.0.11",
            json!([{ "name": "http", "port": 80 }]),
            json!({}),
        ),
    ];
    let slices = vec![
        slice(
            "default",
            "web",
            "web-1",
            json!([{ "name": "http", "port": 8080 }]),
            endpoints.iter().map(|ip| ready(ip, NODE)).collect(),
        ),
        slice(
            "default",
            "other",
            "other-1",
            json!([{ "name": "http", "port": 8080 }]),
            vec![ready("10.42.0.9", NODE)],
        ),
    ];
    model(&services, &slices)
}

/// A state that believes `model` is applied.
fn applied(model: &ProxyModel) -> ProxyState {
    ProxyState {
        applied: Some(Snapshot::of(model, None)),
        udp_flows: None,
    }
}

#[test]
fn the_first_plan_is_the_full_script() {
    let model = web(&["10.42.0.5"], json!({}));
    assert_eq!(ProxyState::new().plan(&model), render(&model));
}

#[test]
fn the_same_rules_need_no_script() {
    let model = web(&["10.42.0.5", "10.42.0.6"], json!({}));
    let mut same = model.clone();
    same.warnings.push(crate::proxy::ModelWarning::BadAddress {
        service: "x/y".into(),
        address: "z".into(),
    });
    assert_eq!(applied(&model).plan(&same), "");
}

#[test]
fn one_more_endpoint_replaces_the_rules_of_one_chain_only() {
    let before = web(&["10.42.0.5", "10.42.0.6"], json!({}));
    let after = web(&["10.42.0.5", "10.42.0.6", "10.42.0.7"], json!({}));
    let svc = chain_name("svc", "default/web/tcp/http");
    let plan = applied(&before).plan(&after);
    assert_eq!(
        plan.lines().collect::<Vec<_>>(),
        [
            format!("flush chain ip skiff-proxy {svc}"),
            format!(
                "add rule ip skiff-proxy {svc} ip daddr 10.43.0.10 tcp dport 80 ip saddr != \
                 10.42.0.0/16 jump mark-for-masquerade"
            ),
            format!(
                "add rule ip skiff-proxy {svc} numgen random mod 3 0 meta l4proto tcp dnat to \
                 10.42.0.5:8080"
            ),
            format!(
                "add rule ip skiff-proxy {svc} numgen random mod 2 0 meta l4proto tcp dnat to \
                 10.42.0.6:8080"
            ),
            format!("add rule ip skiff-proxy {svc} meta l4proto tcp dnat to 10.42.0.7:8080"),
        ]
    );
}

#[test]
fn losing_every_endpoint_swaps_the_verdict_and_deletes_the_chain() {
    let before = web(&["10.42.0.5"], json!({}));
    let after = web(&[], json!({}));
    let svc = chain_name("svc", "default/web/tcp/http");
    let plan = applied(&before).plan(&after);
    assert_eq!(
        plan.lines().collect::<Vec<_>>(),
        [
            "delete element ip skiff-proxy service-ips { 10.43.0.10 . tcp . 80 }".to_string(),
            "add element ip skiff-proxy no-endpoint-services { 10.43.0.10 . tcp . 80 : goto reject-chain }"
                .to_string(),
            format!("flush chain ip skiff-proxy {svc}"),
            format!("delete chain ip skiff-proxy {svc}"),
        ]
    );
    // And back: the chain comes first, then its rules, then the element that jumps to it.
    let plan = applied(&after).plan(&before);
    let lines: Vec<&str> = plan.lines().collect();
    assert_eq!(
        lines[0],
        format!("add chain ip skiff-proxy {svc} {{ comment \"default/web/tcp/http\"; }}")
    );
    let element = lines
        .iter()
        .position(|l| l.starts_with("add element ip skiff-proxy service-ips"))
        .expect("element added");
    let rule = lines
        .iter()
        .position(|l| l.starts_with(&format!("add rule ip skiff-proxy {svc}")))
        .expect("rule added");
    assert!(rule < element, "{plan}");
    assert!(
        plan.contains("delete element ip skiff-proxy no-endpoint-services"),
        "{plan}"
    );
}

#[test]
fn affinity_sets_are_added_before_and_deleted_after_their_chains() {
    let affinity = json!({
        "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": { "clientIP": { "timeoutSeconds": 600 } },
    });
    let before = web(&["10.42.0.5"], affinity.clone());
    let after = web(&["10.42.0.5", "10.42.0.6"], affinity);
    let plan = applied(&before).plan(&after);
    let lines: Vec<&str> = plan.lines().collect();
    assert!(
        lines[0].starts_with("add set ip skiff-proxy aff-")
            && lines[0].ends_with("{ type ipv4_addr; flags dynamic,timeout; timeout 600s; }"),
        "{plan}"
    );
    assert!(
        lines[1].starts_with("add chain ip skiff-proxy ep-"),
        "{plan}"
    );
    // The set of the endpoint that stays is left alone (its clients stay pinned).
    assert_eq!(plan.matches("add set").count(), 1, "{plan}");

    let plan = applied(&after).plan(&before);
    let last = plan.lines().last().unwrap_or_default();
    assert!(last.starts_with("delete set ip skiff-proxy aff-"), "{plan}");
    let flush = plan.find("flush chain ip skiff-proxy ep-").expect("flush");
    let delete = plan
        .find("delete chain ip skiff-proxy ep-")
        .expect("delete");
    assert!(flush < delete);
}

#[test]
fn a_base_change_re_creates_the_table() {
    let before = web(&["10.42.0.5"], json!({}));
    let mut after = before.clone();
    after.node_ips.push("192.168.1.11".parse().unwrap());
    assert_eq!(applied(&before).plan(&after), render(&after));
    let mut after = before.clone();
    after.service_cidr = cidr("10.44.0.0/16");
    assert_eq!(applied(&before).plan(&after), render(&after));
}

#[test]
fn a_new_node_port_service_adds_its_elements_and_chains() {
    let before = web(&["10.42.0.5"], json!({}));
    let after = web(
        &["10.42.0.5"],
        json!({ "type": "NodePort", "ports": [{ "name": "http", "port": 80, "nodePort": 30080 }] }),
    );
    let ext = chain_name("ext", "default/web/tcp/http");
    let plan = applied(&before).plan(&after);
    assert!(
        plan.contains(&format!(
            "add element ip skiff-proxy service-nodeports {{ tcp . 30080 : goto {ext} }}"
        )),
        "{plan}"
    );
    assert!(plan.contains(&format!(
        "add rule ip skiff-proxy {ext} jump mark-for-masquerade"
    )));
    assert!(!plan.contains("delete"), "{plan}");
}

#[test]
fn unchanged_service_ports_reuse_the_objects_printed_before() {
    let before = web(&["10.42.0.5"], json!({}));
    let after = web(&["10.42.0.5", "10.42.0.6"], json!({}));
    let first = Snapshot::of(&before, None);
    let next = Snapshot::of(&after, Some(&first));
    let shared = |key: &str| Arc::ptr_eq(&first.services[key], &next.services[key]);
    assert!(shared("default/other/tcp/http"));
    assert!(!shared("default/web/tcp/http"));
    // Reusing changes nothing in what is applied: the same delta as from fresh snapshots.
    let fresh = Snapshot::of(&after, None);
    let mut stats = ApplyStats::new(ApplyKind::Incremental);
    assert_eq!(
        delta(&first, &next, &mut stats),
        delta(&first, &fresh, &mut stats)
    );
    // A base change makes nothing reusable (the objects print base settings).
    let mut moved = after.clone();
    moved.cluster_cidr = cidr("10.44.0.0/16");
    let other = Snapshot::of(&moved, Some(&first));
    assert!(!Arc::ptr_eq(
        &first.services["default/other/tcp/http"],
        &other.services["default/other/tcp/http"]
    ));
}
