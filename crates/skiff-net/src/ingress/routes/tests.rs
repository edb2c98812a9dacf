//! Unit tests of route building and matching.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde_json::{Value, json};

use super::*;

fn ingress(namespace: &str, name: &str, created: &str, spec: Value) -> Ingress {
    ingress_annotated(namespace, name, created, json!({}), spec)
}

fn ingress_annotated(
    namespace: &str,
    name: &str,
    created: &str,
    annotations: Value,
    mut spec: Value,
) -> Ingress {
    if spec.get("ingressClassName").is_none() && annotations.as_object().unwrap().is_empty() {
        spec["ingressClassName"] = json!("skiff");
    }
    serde_json::from_value(json!({
        "metadata": {
            "namespace": namespace, "name": name, "annotations": annotations,
            "creationTimestamp": format!("2026-01-01T00:00:{created}Z"),
        },
        "spec": spec,
    }))
    .unwrap()
}

/// A rule-less spec routing `host` + `path` (Prefix) to `service:80`.
fn simple(host: &str, path: &str, service: &str) -> Value {
    json!({"rules": [{"host": host, "http": {"paths": [
        {"path": path, "pathType": "Prefix",
         "backend": {"service": {"name": service, "port": {"number": 80}}}}
    ]}}]})
}

fn service(namespace: &str, name: &str, ports: Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"clusterIP": "10.43.0.5", "ports": ports},
    }))
    .unwrap()
}

fn http_service(namespace: &str, name: &str) -> Service {
    service(
        namespace,
        name,
        json!([{"name": "http", "port": 80, "targetPort": 8080}]),
    )
}

fn slice(namespace: &str, service: &str, ports: Value, endpoints: Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"namespace": namespace, "name": format!("{service}-abcde"),
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }))
    .unwrap()
}

/// A slice for an [`http_service`] with one ready endpoint `ip:8080`.
fn http_slice(namespace: &str, service: &str, ip: &str) -> EndpointSlice {
    slice(
        namespace,
        service,
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        json!([{"addresses": [ip], "conditions": {"ready": true}}]),
    )
}

fn class(name: &str, default: bool) -> IngressClass {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {
            "ingressclass.kubernetes.io/is-default-class": default.to_string()}},
        "spec": {"controller": "skiff.io/ingress"},
    }))
    .unwrap()
}

fn tls_secret(namespace: &str, name: &str, hosts: &[&str]) -> (Secret, Vec<u8>) {
    let made =
        rcgen::generate_simple_self_signed(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
            .unwrap();
    let der = made.cert.der().to_vec();
    let mut data = BTreeMap::new();
    data.insert(
        "tls.crt".to_string(),
        ByteString(made.cert.pem().into_bytes()),
    );
    data.insert(
        "tls.key".to_string(),
        ByteString(made.signing_key.serialize_pem().into_bytes()),
    );
    let mut secret = Secret {
        data: Some(data),
        type_: Some(TLS_SECRET_TYPE.to_string()),
        ..Secret::default()
    };
    secret.metadata.namespace = Some(namespace.to_string());
    secret.metadata.name = Some(name.to_string());
    (secret, der)
}

struct World {
    ingresses: Vec<Ingress>,
    classes: Vec<IngressClass>,
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
    secrets: Vec<Secret>,
}

impl World {
    fn new(ingresses: Vec<Ingress>) -> World {
        World {
            ingresses,
            classes: Vec::new(),
            services: Vec::new(),
            slices: Vec::new(),
            secrets: Vec::new(),
        }
    }

    /// Adds an [`http_service`] named `name` in `default` with endpoint `ip:8080`.
    fn with_service(mut self, name: &str, ip: &str) -> World {
        self.services.push(http_service("default", name));
        self.slices.push(http_slice("default", name, ip));
        self
    }

    fn build(&self) -> RouteTable {
        build(&IngressInput {
            ingresses: &self.ingresses,
            classes: &self.classes,
            services: &self.services,
            slices: &self.slices,
            secrets: &self.secrets,
            class_name: DEFAULT_CLASS_NAME,
        })
    }
}

/// The service name a request reaches, or `None` for 404.
fn target(table: &RouteTable, host: &str, path: &str) -> Option<String> {
    table.route(host, path).map(|b| b.service.clone())
}

#[test]
fn hosts_exact_then_wildcard_of_one_label_then_any_host() {
    let world = World::new(vec![
        ingress("default", "a", "01", simple("a.example.com", "/", "svc-a")),
        ingress("default", "w", "02", simple("*.example.com", "/", "svc-w")),
        ingress(
            "default",
            "any",
            "03",
            json!({"rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "svc-any", "port": {"number": 80}}}}]}}]}),
        ),
    ])
    .with_service("svc-a", "10.42.0.1")
    .with_service("svc-w", "10.42.0.2")
    .with_service("svc-any", "10.42.0.3");
    let table = world.build();
    assert!(table.warnings().is_empty(), "{:?}", table.warnings());
    assert_eq!(
        target(&table, "a.example.com", "/").as_deref(),
        Some("svc-a")
    );
    assert_eq!(
        target(&table, "A.Example.COM.:8080", "/x").as_deref(),
        Some("svc-a")
    );
    assert_eq!(
        target(&table, "b.example.com", "/").as_deref(),
        Some("svc-w")
    );
    // A wildcard covers exactly one label.
    assert_eq!(
        target(&table, "x.b.example.com", "/").as_deref(),
        Some("svc-any")
    );
    assert_eq!(
        target(&table, "example.com", "/").as_deref(),
        Some("svc-any")
    );
    assert_eq!(target(&table, "", "/").as_deref(), Some("svc-any"));
    assert_eq!(target(&table, "[::1]:80", "/").as_deref(), Some("svc-any"));
    assert_eq!(
        table.route("a.example.com", "/").unwrap().endpoints,
        vec!["10.42.0.1:8080".parse().unwrap()]
    );
}

#[test]
fn host_rules_fall_through_to_any_host_rules_and_404() {
    let world = World::new(vec![
        ingress("default", "a", "01", simple("a.test", "/api", "svc-a")),
        ingress(
            "default",
            "any",
            "02",
            json!({"rules": [{"http": {"paths": [{"path": "/static", "pathType": "Prefix",
                "backend": {"service": {"name": "svc-any", "port": {"number": 80}}}}]}}]}),
        ),
    ])
    .with_service("svc-a", "10.42.0.1")
    .with_service("svc-any", "10.42.0.3");
    let table = world.build();
    assert_eq!(
        target(&table, "a.test", "/api/v1").as_deref(),
        Some("svc-a")
    );
    assert_eq!(
        target(&table, "a.test", "/static/x").as_deref(),
        Some("svc-any")
    );
    assert_eq!(target(&table, "a.test", "/other"), None);
    assert_eq!(target(&table, "b.test", "/api"), None);
    assert!(table.default_backend().is_none());
}

#[test]
fn exact_and_prefix_match_whole_elements() {
    let spec = json!({"rules": [{"host": "p.test", "http": {"paths": [
        {"path": "/foo", "pathType": "Prefix",
         "backend": {"service": {"name": "prefix", "port": {"number": 80}}}},
        {"path": "/foo/bar", "pathType": "Exact",
         "backend": {"service": {"name": "exact", "port": {"number": 80}}}},
        {"path": "/bar/", "pathType": "Prefix",
         "backend": {"service": {"name": "slash", "port": {"number": 80}}}},
    ]}}]});
    let table = World::new(vec![ingress("default", "p", "01", spec)]).build();
    let t = |path| target(&table, "p.test", path);
    assert_eq!(t("/foo").as_deref(), Some("prefix"));
    assert_eq!(t("/foo/").as_deref(), Some("prefix"));
    assert_eq!(t("/foo/baz").as_deref(), Some("prefix"));
    assert_eq!(t("/foo/bar").as_deref(), Some("exact"));
    assert_eq!(t("/foo/bar/").as_deref(), Some("prefix"));
    assert_eq!(t("/foo/bar/baz").as_deref(), Some("prefix"));
    assert_eq!(t("/foobar"), None);
    assert_eq!(t("/fo"), None);
    // A trailing slash on a Prefix path is ignored.
    assert_eq!(t("/bar").as_deref(), Some("slash"));
    assert_eq!(t("/bar/x").as_deref(), Some("slash"));
    assert_eq!(t("/barx"), None);
    assert_eq!(t("/"), None);
}

#[test]
fn longest_path_wins_and_exact_beats_prefix_at_equal_length() {
    let path = |path: &str, kind: &str, service: &str| {
        json!({"path": path, "pathType": kind,
               "backend": {"service": {"name": service, "port": {"number": 80}}}})
    };
    let spec = json!({"rules": [{"host": "l.test", "http": {"paths": [
        path("/", "Prefix", "root"),
        path("/a", "ImplementationSpecific", "a"),
        path("/a/b", "Prefix", "ab-prefix"),
        path("/a/b", "Exact", "ab-exact"),
        path("/a/b/c/", "Prefix", "abc"),
    ]}}]});
    let table = World::new(vec![ingress("default", "l", "01", spec)]).build();
    let t = |p| target(&table, "l.test", p);
    assert_eq!(t("/").as_deref(), Some("root"));
    assert_eq!(t("/z").as_deref(), Some("root"));
    assert_eq!(t("/a").as_deref(), Some("a"));
    assert_eq!(t("/a/x").as_deref(), Some("a"));
    assert_eq!(t("/a/b").as_deref(), Some("ab-exact"));
    assert_eq!(t("/a/b/").as_deref(), Some("ab-prefix"));
    assert_eq!(t("/a/b/x").as_deref(), Some("ab-prefix"));
    assert_eq!(t("/a/b/c").as_deref(), Some("abc"));
    assert_eq!(t("/a/b/c/d").as_deref(), Some("abc"));
}

#[test]
fn default_backend_of_the_oldest_ingress_answers_unmatched_requests() {
    let with_default = |name: &str, created: &str, service: &str| {
        let mut spec = simple("d.test", "/app", "app");
        spec["defaultBackend"] = json!({"service": {"name": service, "port": {"number": 80}}});
        ingress("default", name, created, spec)
    };
    // Listed newest first: age decides, not order.
    let world = World::new(vec![
        with_default("newer", "09", "fallback-new"),
        with_default("older", "01", "fallback-old"),
    ]);
    let table = world.build();
    assert_eq!(target(&table, "d.test", "/app").as_deref(), Some("app"));
    assert_eq!(
        target(&table, "d.test", "/other").as_deref(),
        Some("fallback-old")
    );
    assert_eq!(
        target(&table, "x.test", "/").as_deref(),
        Some("fallback-old")
    );
    assert!(table.warnings().iter().any(|w| matches!(w,
        RouteWarning::Conflict { ingress, owner, .. }
            if ingress == "default/newer" && owner == "default/older")));
}

#[test]
fn conflicting_rules_go_to_the_oldest_ingress() {
    let world = World::new(vec![
        ingress("default", "b-newer", "05", simple("c.test", "/", "new")),
        ingress("default", "a-older", "01", simple("c.test", "/", "old")),
        // Same timestamp: namespace, then name decide.
        ingress("zzz", "same-time", "01", simple("c.test", "/x", "zzz")),
        ingress("aaa", "same-time", "01", simple("c.test", "/x", "aaa")),
    ]);
    let table = world.build();
    assert_eq!(target(&table, "c.test", "/").as_deref(), Some("old"));
    assert_eq!(target(&table, "c.test", "/x").as_deref(), Some("aaa"));
    let conflicts = table
        .warnings()
        .iter()
        .filter(|w| matches!(w, RouteWarning::Conflict { .. }))
        .count();
    assert_eq!(conflicts, 2, "{:?}", table.warnings());
}

#[test]
fn named_and_numbered_service_ports_resolve_target_ports_through_slices() {
    let mut world = World::new(vec![ingress(
        "default",
        "n",
        "01",
        json!({"rules": [{"host": "n.test", "http": {"paths": [
            {"path": "/web", "pathType": "Prefix",
             "backend": {"service": {"name": "multi", "port": {"name": "http"}}}},
            {"path": "/metrics", "pathType": "Prefix",
             "backend": {"service": {"name": "multi", "port": {"number": 9090}}}},
            {"path": "/nope", "pathType": "Prefix",
             "backend": {"service": {"name": "multi", "port": {"name": "grpc"}}}},
        ]}}]}),
    )]);
    world.services.push(service(
        "default",
        "multi",
        json!([{"name": "http", "port": 80, "targetPort": "web"},
               {"name": "metrics", "port": 9090, "targetPort": 9091}]),
    ));
    // Two slices: the named target port resolves per pod.
    world.slices.push(slice(
        "default",
        "multi",
        json!([{"name": "http", "port": 8080}, {"name": "metrics", "port": 9091}]),
        json!([{"addresses": ["10.42.0.1"], "conditions": {"ready": true}},
               {"addresses": ["10.42.0.2"]}]),
    ));
    world.slices.push(slice(
        "default",
        "multi",
        json!([{"name": "http", "port": 8081}, {"name": "metrics", "port": 9091}]),
        json!([{"addresses": ["10.42.1.1"], "conditions": {"ready": true}}]),
    ));
    let table = world.build();
    let endpoints = |path| table.route("n.test", path).unwrap().endpoints.clone();
    let addrs =
        |list: &[&str]| -> Vec<SocketAddr> { list.iter().map(|a| a.parse().unwrap()).collect() };
    assert_eq!(
        endpoints("/web"),
        addrs(&["10.42.0.1:8080", "10.42.0.2:8080", "10.42.1.1:8081"])
    );
    assert_eq!(
        endpoints("/metrics"),
        addrs(&["10.42.0.1:9091", "10.42.0.2:9091", "10.42.1.1:9091"])
    );
    assert!(endpoints("/nope").is_empty());
    assert!(table.warnings().iter().any(|w| matches!(w,
        RouteWarning::Backend { backend, .. } if backend == "multi:grpc")));
}

#[test]
fn no_ready_endpoints_or_no_service_means_an_empty_backend() {
    let mut world = World::new(vec![ingress(
        "default",
        "e",
        "01",
        json!({"rules": [{"host": "e.test", "http": {"paths": [
            {"path": "/down", "pathType": "Prefix",
             "backend": {"service": {"name": "down", "port": {"number": 80}}}},
            {"path": "/missing", "pathType": "Prefix",
             "backend": {"service": {"name": "missing", "port": {"number": 80}}}},
            {"path": "/noslices", "pathType": "Prefix",
             "backend": {"service": {"name": "noslices", "port": {"number": 80}}}},
        ]}}]}),
    )]);
    world.services.push(http_service("default", "down"));
    world.services.push(http_service("default", "noslices"));
    // The same service in another namespace does not count.
    world.services.push(http_service("other", "missing"));
    world.slices.push(slice(
        "default",
        "down",
        json!([{"name": "http", "port": 8080}]),
        json!([{"addresses": ["10.42.0.1"], "conditions": {"ready": false, "serving": true}}]),
    ));
    let table = world.build();
    for path in ["/down", "/missing", "/noslices"] {
        let backend = table.route("e.test", path).unwrap();
        assert!(backend.endpoints.is_empty(), "{path}");
        assert!(backend.pick().is_empty());
    }
    assert_eq!(table.warnings().len(), 1, "{:?}", table.warnings());
}

#[test]
fn class_selection_by_name_legacy_annotation_and_default_class() {
    let annotated = |name: &str, class: &str| {
        let mut spec = simple(&format!("{name}.test"), "/", name);
        spec.as_object_mut().unwrap().remove("ingressClassName");
        ingress_annotated(
            "default",
            name,
            "01",
            json!({"kubernetes.io/ingress.class": class}),
            spec,
        )
    };
    let mut unset = simple("unset.test", "/", "unset");
    unset["ingressClassName"] = Value::Null;
    let mut unset = ingress("default", "unset", "01", unset);
    unset.spec.as_mut().unwrap().ingress_class_name = None;
    let named = |name: &str, class: &str| {
        let mut spec = simple(&format!("{name}.test"), "/", name);
        spec["ingressClassName"] = json!(class);
        ingress("default", name, "01", spec)
    };
    let mut world = World::new(vec![
        named("mine", "skiff"),
        named("theirs", "nginx"),
        annotated("legacy", "skiff"),
        annotated("legacyother", "traefik"),
        unset,
    ]);
    let served = |world: &World| -> Vec<&str> {
        let table = world.build();
        let names: Vec<&str> = ["mine", "theirs", "legacy", "legacyother", "unset"]
            .into_iter()
            .filter(|name| table.route(&format!("{name}.test"), "/").is_some())
            .collect();
        // Same creation time: ordered by name.
        let mut ids: Vec<String> = names.iter().map(|n| format!("default/{n}")).collect();
        ids.sort();
        assert_eq!(table.ingresses(), ids);
        let input = IngressInput {
            ingresses: &world.ingresses,
            classes: &world.classes,
            services: &world.services,
            slices: &world.slices,
            secrets: &world.secrets,
            class_name: DEFAULT_CLASS_NAME,
        };
        assert_eq!(super::served(&input).len(), names.len());
        names
    };
    assert_eq!(served(&world), ["mine", "legacy"]);
    world.classes = vec![class("skiff", false), class("nginx", true)];
    assert_eq!(served(&world), ["mine", "legacy"]);
    world.classes = vec![class("skiff", true)];
    assert_eq!(served(&world), ["mine", "legacy", "unset"]);
}

#[test]
fn tls_hosts_choose_secrets_oldest_ingress_first() {
    let (old_secret, old_der) = tls_secret("default", "old-cert", &["t.test"]);
    let (new_secret, _) = tls_secret("default", "new-cert", &["t.test"]);
    let (wild_secret, wild_der) = tls_secret("default", "wild-cert", &["*.w.test"]);
    let (implicit_secret, implicit_der) = tls_secret("default", "implicit", &["i.test"]);
    let (elsewhere, _) = tls_secret("other", "elsewhere", &["o.test"]);
    let mut opaque = tls_secret("default", "opaque", &["q.test"]).0;
    opaque.type_ = Some("Opaque".into());
    let with_tls = |name: &str, created: &str, host: &str, tls: Value| {
        let mut spec = simple(host, "/", "svc");
        spec["tls"] = tls;
        ingress("default", name, created, spec)
    };
    let mut world = World::new(vec![
        with_tls(
            "newer",
            "09",
            "t.test",
            json!([{"hosts": ["t.test"], "secretName": "new-cert"}]),
        ),
        with_tls(
            "older",
            "01",
            "t.test",
            json!([{"hosts": ["T.test"], "secretName": "old-cert"}]),
        ),
        with_tls(
            "wild",
            "02",
            "*.w.test",
            json!([{"hosts": ["*.w.test"], "secretName": "wild-cert"}]),
        ),
        with_tls(
            "implicit",
            "03",
            "i.test",
            json!([{"secretName": "implicit"}]),
        ),
        with_tls(
            "cross",
            "04",
            "o.test",
            json!([{"hosts": ["o.test"], "secretName": "elsewhere"}]),
        ),
        with_tls(
            "opaque",
            "05",
            "q.test",
            json!([{"hosts": ["q.test"], "secretName": "opaque"}]),
        ),
    ]);
    world.secrets = vec![
        old_secret,
        new_secret,
        wild_secret,
        implicit_secret,
        elsewhere,
        opaque,
    ];
    let table = world.build();
    let leaf = |name: &str| table.certificate(name).map(|key| key.cert[0].to_vec());
    assert_eq!(leaf("t.test"), Some(old_der.clone()));
    assert_eq!(leaf("T.TEST"), Some(old_der));
    assert_eq!(leaf("a.w.test"), Some(wild_der.clone()));
    assert_eq!(leaf("a.b.w.test"), None);
    assert_eq!(leaf("w.test"), None);
    assert_eq!(leaf("i.test"), Some(implicit_der));
    assert_eq!(leaf("o.test"), None);
    assert_eq!(leaf("q.test"), None);
    assert_eq!(leaf("unknown.test"), None);
    assert_eq!(table.tls_hosts(), ["*.w.test", "i.test", "t.test"]);
    let warnings = table.warnings();
    assert!(
        warnings.iter().any(|w| matches!(w,
        RouteWarning::Conflict { ingress, owner, .. }
            if ingress == "default/newer" && owner == "default/older")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| matches!(w,
        RouteWarning::Tls { secret, reason, .. }
            if secret == "default/elsewhere" && reason == "no such secret")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| matches!(w,
        RouteWarning::Tls { secret, .. } if secret == "default/opaque")),
        "{warnings:?}"
    );
}

#[test]
fn broken_tls_secrets_and_bad_paths_are_warnings() {
    let (mut broken, _) = tls_secret("default", "broken", &["b.test"]);
    let (other, _) = tls_secret("default", "other", &["b.test"]);
    // The key of another certificate.
    broken.data.as_mut().unwrap().insert(
        "tls.key".into(),
        other.data.as_ref().unwrap()["tls.key"].clone(),
    );
    let mut spec = json!({"rules": [{"host": "b.test", "http": {"paths": [
        {"path": "relative", "pathType": "Prefix",
         "backend": {"service": {"name": "svc", "port": {"number": 80}}}},
        {"path": "/x", "pathType": "Regex",
         "backend": {"service": {"name": "svc", "port": {"number": 80}}}},
    ]}}, {"host": "bad..host", "http": {"paths": []}}]});
    spec["tls"] = json!([{"hosts": ["b.test"], "secretName": "broken"}]);
    let mut world = World::new(vec![ingress("default", "b", "01", spec)]);
    world.secrets = vec![broken];
    let table = world.build();
    assert!(table.certificate("b.test").is_none());
    assert!(table.route("b.test", "/x").is_none());
    let kinds: Vec<&str> = table
        .warnings()
        .iter()
        .map(|w| match w {
            RouteWarning::BadPath { .. } => "path",
            RouteWarning::BadHost { .. } => "host",
            RouteWarning::Tls { .. } => "tls",
            RouteWarning::Backend { .. } => "backend",
            RouteWarning::Conflict { .. } => "conflict",
        })
        .collect();
    assert_eq!(
        kinds,
        ["path", "path", "host", "tls"],
        "{:?}",
        table.warnings()
    );
}

#[test]
fn round_robin_is_shared_by_rules_naming_the_same_service_port() {
    let spec = json!({"rules": [{"host": "r.test", "http": {"paths": [
        {"path": "/a", "pathType": "Prefix",
         "backend": {"service": {"name": "svc", "port": {"number": 80}}}},
        {"path": "/b", "pathType": "Prefix",
         "backend": {"service": {"name": "svc", "port": {"name": "http"}}}},
        {"path": "/c", "pathType": "Prefix",
         "backend": {"service": {"name": "svc", "port": {"number": 80}}}},
    ]}}]});
    let mut world = World::new(vec![ingress("default", "r", "01", spec)]);
    world.services.push(http_service("default", "svc"));
    world.slices.push(slice(
        "default",
        "svc",
        json!([{"name": "http", "port": 8080}]),
        json!([{"addresses": ["10.42.0.1"]}, {"addresses": ["10.42.0.2"]},
               {"addresses": ["10.42.0.3"]}]),
    ));
    let table = world.build();
    let a = table.route("r.test", "/a").unwrap();
    let c = table.route("r.test", "/c").unwrap();
    assert!(Arc::ptr_eq(a, c));
    let first: Vec<SocketAddr> = (0..3).map(|_| a.pick()[0]).collect();
    let mut sorted = first.clone();
    sorted.sort();
    assert_eq!(sorted, a.endpoints, "each endpoint once per round");
    // The retry order after the first choice covers every endpoint.
    let mut all = c.pick();
    all.sort();
    assert_eq!(all, a.endpoints);
}
