//! Cluster networking end to end: real nodes (one network namespace each), real pods with
//! addresses on their node's bridge, routes between nodes (host-gw and VXLAN), Services
//! through the nftables proxy, and the cluster DNS, all proved with real traffic between
//! busybox pods (`httpd`, `wget`, `nslookup`).
#![allow(clippy::unwrap_used)]

mod net_support;

use std::collections::BTreeMap;
use std::time::Duration;

use net_support::{IMAGE, NetCluster};

/// A busybox pod on `node` serving its hostname over HTTP on 8080 (port name `http`).
fn web_pod(name: &str, node: &str, labels: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{{labels}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {IMAGE}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports:
    - name: http
      containerPort: 8080
    readinessProbe:
      tcpSocket:
        port: 8080
      periodSeconds: 1
"#
    )
}

/// `wget -q -O - URL` from inside a pod's container `web`, with a short timeout.
fn fetch(c: &NetCluster, pod: &str, url: &str) -> std::process::Output {
    c.exec(
        "default",
        pod,
        "web",
        &["timeout", "5", "wget", "-q", "-O", "-", url],
    )
}

fn fetch_ok(c: &NetCluster, pod: &str, url: &str) -> String {
    c.exec_ok(
        "default",
        pod,
        "web",
        &["timeout", "5", "wget", "-q", "-O", "-", url],
    )
    .trim()
    .to_string()
}

/// Whether `ip` lies in `cidr` (a.b.c.d/len).
fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').unwrap();
    let to_u32 = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
    let mask = u32::MAX << (32 - len.parse::<u32>().unwrap());
    to_u32(ip) & mask == to_u32(net) & mask
}

#[test]
fn pods_services_and_dns_across_three_nodes_with_host_gw() {
    let c = NetCluster::start(3, "host-gw");
    for (i, name) in ["a", "b", "d"].iter().enumerate() {
        let labels = if *name == "a" {
            "role: client"
        } else {
            "app: web"
        };
        c.apply(&web_pod(name, &format!("node-{i}"), labels));
    }
    c.apply(&web_pod("a2", "node-0", "role: client"));
    let mut ips = BTreeMap::new();
    for name in ["a", "b", "d", "a2"] {
        let ip = c.wait_running("default", name);
        let node = c.field(&["get", "pod", name], "{.spec.nodeName}");
        let cidr = c.field(&["get", "node", &node], "{.spec.podCIDR}");
        assert!(
            in_cidr(&ip, &cidr),
            "pod {name} has {ip}, outside {node}'s {cidr}"
        );
        ips.insert(name, ip);
    }
    let distinct: std::collections::BTreeSet<_> = ips.values().collect();
    assert_eq!(distinct.len(), 4, "pod addresses collide: {ips:?}");

    // Pod to pod: the same node over the bridge, other nodes over the host-gw routes.
    for target in ["a2", "b", "d"] {
        let url = format!("http://{}:8080/", ips[target]);
        assert_eq!(fetch_ok(&c, "a", &url), target, "a -> {target}");
    }
    assert_eq!(
        fetch_ok(&c, "d", &format!("http://{}:8080/", ips["b"])),
        "b"
    );

    // The pod's resolv.conf and hosts file.
    let resolv = c.exec_ok("default", "a", "web", &["cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 10.43.0.10\n"), "{resolv}");
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    let hosts = c.exec_ok("default", "a", "web", &["cat", "/etc/hosts"]);
    assert!(hosts.contains(&format!("{}\ta\n", ips["a"])), "{hosts}");

    // A ClusterIP service over the two web pods, by target port name.
    c.apply(
        r#"apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - name: http
    port: 80
    targetPort: http
"#,
    );
    let cluster_ip = c.field(&["get", "svc", "web"], "{.spec.clusterIP}");
    assert!(in_cidr(&cluster_ip, "10.43.0.0/16"), "{cluster_ip}");
    let url = format!("http://{cluster_ip}/");
    c.wait("the service answering", Duration::from_secs(30), |c| {
        fetch(c, "a", &url).status.success()
    });
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        *seen.entry(fetch_ok(&c, "a", &url)).or_default() += 1;
    }
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["b", "d"],
        "connections through the ClusterIP reach both endpoints: {seen:?}"
    );
    assert!(
        seen.values().all(|n| *n >= 5),
        "a lopsided spread: {seen:?}"
    );

    // The cluster DNS: the service's name, its short name through the search path, and a
    // name that does not exist.
    let lookup = c.exec_ok(
        "default",
        "a",
        "web",
        &["nslookup", "web.default.svc.cluster.local"],
    );
    assert!(lookup.contains(&cluster_ip), "{lookup}");
    let by_short_name = fetch_ok(&c, "a", "http://web/");
    assert!(
        ["b", "d"].contains(&by_short_name.as_str()),
        "{by_short_name}"
    );
    let missing = c.exec(
        "default",
        "a",
        "web",
        &["nslookup", "nope.default.svc.cluster.local"],
    );
    assert!(!missing.status.success(), "{missing:?}");

    // NodePort: every node's address, from outside any pod.
    c.k(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"type":"NodePort"}}"#,
    ]);
    let node_port = c.field(&["get", "svc", "web"], "{.spec.ports[0].nodePort}");
    let port: u16 = node_port.parse().unwrap();
    assert!((30000..=32767).contains(&port), "{node_port}");
    let busybox = skiff_testkit::image::require_static_busybox().unwrap();
    let busybox = busybox.to_str().unwrap();
    for node in [0, 1] {
        let url = format!("http://{}:{port}/", c.node_ip(node));
        c.wait(
            &format!("NodePort {url} from node-2"),
            Duration::from_secs(30),
            |c| {
                c.on_node(2, busybox, &["timeout", "5", "wget", "-q", "-O", "-", &url])
                    .status
                    .success()
            },
        );
    }

    // LoadBalancer: the built-in load balancer lists the nodes' addresses as its ingress, and
    // the service port answers on them.
    c.k(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"type":"LoadBalancer"}}"#,
    ]);
    c.wait("the LoadBalancer ingress", Duration::from_secs(30), |c| {
        let ingress = c.field(
            &["get", "svc", "web"],
            "{.status.loadBalancer.ingress[*].ip}",
        );
        (0..3).all(|i| ingress.split_whitespace().any(|ip| ip == c.node_ip(i)))
    });
    let lb_url = format!("http://{}:80/", c.node_ip(1));
    c.wait(
        &format!("LoadBalancer {lb_url} from node-2"),
        Duration::from_secs(30),
        |c| {
            c.on_node(
                2,
                busybox,
                &["timeout", "5", "wget", "-q", "-O", "-", &lb_url],
            )
            .status
            .success()
        },
    );

    // Deleting the service removes its rules.
    c.k(&["delete", "svc", "web"]);
    c.wait(
        "the deleted service's rules gone",
        Duration::from_secs(30),
        |c| !fetch(c, "a", &url).status.success(),
    );
}

#[test]
fn pods_reach_each_other_across_nodes_over_vxlan_and_addresses_are_freed() {
    let c = NetCluster::start(2, "vxlan");
    c.apply(&web_pod("a", "node-0", "role: client"));
    c.apply(&web_pod("b", "node-1", "app: web"));
    let a = c.wait_running("default", "a");
    let b = c.wait_running("default", "b");
    assert_eq!(fetch_ok(&c, "a", &format!("http://{b}:8080/")), "b");
    assert_eq!(fetch_ok(&c, "b", &format!("http://{a}:8080/")), "a");
    // exec through the API server reaches a joined node's agent, which verifies the server's
    // client certificate against its `--ca-file`.
    assert_eq!(c.k(&["exec", "b", "--", "hostname"]).trim(), "b");
    let link = c.on_node(1, "ip", &["-d", "link", "show", "skiff.vxlan"]);
    assert!(
        String::from_utf8_lossy(&link.stdout).contains("vxlan id"),
        "no VXLAN device on node-1: {link:?}"
    );

    // Deleting a pod frees its address and its veth.
    let veths = |c: &NetCluster| {
        String::from_utf8_lossy(
            &c.on_node(1, "ip", &["-o", "link", "show", "master", "skiff0"])
                .stdout,
        )
        .lines()
        .count()
    };
    assert_eq!(veths(&c), 1);
    c.k(&["delete", "pod", "b", "--wait=true"]);
    c.wait("b's veth gone", Duration::from_secs(30), |c| veths(c) == 0);
    let held = |c: &NetCluster| {
        let dir = c.nodes[1].dir.path().join("agent/ipam");
        std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy() == b)
            })
            .unwrap_or(false)
    };
    c.wait("b's address released", Duration::from_secs(30), |c| {
        !held(c)
    });
    c.apply(&web_pod("b2", "node-1", "app: web"));
    let b2 = c.wait_running("default", "b2");
    assert_eq!(fetch_ok(&c, "a", &format!("http://{b2}:8080/")), "b2");
}

#[test]
fn statefulset_dns_host_ports_host_network_and_an_agent_restart() {
    let mut c = NetCluster::start(2, "host-gw");
    c.apply(&format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  clusterIP: None
  selector: {{app: db}}
  ports:
  - name: http
    port: 8080
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 2
  selector:
    matchLabels: {{app: db}}
  template:
    metadata:
      labels: {{app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {IMAGE}
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports:
        - name: http
          containerPort: 8080
        readinessProbe:
          tcpSocket:
            port: 8080
          periodSeconds: 1
"#
    ));
    let mut client = web_pod("client", "node-1", "role: client");
    client = client.replace(
        "    - name: http\n      containerPort: 8080\n",
        "    - name: http\n      containerPort: 8080\n      hostPort: 18080\n",
    );
    c.apply(&client);
    c.wait_running("default", "client");
    let db0 = c.wait_running("default", "db-0");
    let db1 = c.wait_running("default", "db-1");

    // Each ready member of a headless service has its own name; the service name lists all.
    c.wait("the members' DNS names", Duration::from_secs(30), |c| {
        let out = c.exec(
            "default",
            "client",
            "web",
            &["nslookup", "db-0.db.default.svc.cluster.local"],
        );
        String::from_utf8_lossy(&out.stdout).contains(&db0)
    });
    assert_eq!(fetch_ok(&c, "client", "http://db-1.db:8080/"), "db-1");
    let all = c.exec_ok(
        "default",
        "client",
        "web",
        &["nslookup", "db.default.svc.cluster.local"],
    );
    assert!(all.contains(&db0) && all.contains(&db1), "{all}");
    let hosts = c.exec_ok("default", "db-0", "web", &["cat", "/etc/hosts"]);
    assert!(
        hosts.contains(&format!("{db0}\tdb-0.db.default.svc.cluster.local\tdb-0")),
        "{hosts}"
    );

    // hostPort: the client's port 8080 is published on node-1's address.
    let busybox = skiff_testkit::image::require_static_busybox().unwrap();
    let busybox = busybox.to_str().unwrap();
    let published = format!("http://{}:18080/", c.node_ip(1));
    c.wait(
        "the hostPort answering from node-0",
        Duration::from_secs(30),
        |c| {
            let out = c.on_node(
                0,
                busybox,
                &["timeout", "5", "wget", "-q", "-O", "-", &published],
            );
            String::from_utf8_lossy(&out.stdout).trim() == "client"
        },
    );

    // hostNetwork: the pod sees the node's interfaces and reports the node's address.
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: hostnet
spec:
  nodeName: node-1
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {IMAGE}
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
"#
    ));
    c.wait_running("default", "hostnet");
    assert_eq!(
        c.field(&["get", "pod", "hostnet"], "{.status.podIP}"),
        c.node_ip(1)
    );
    let addrs = c.exec_ok("default", "hostnet", "web", &["ip", "-o", "addr"]);
    assert!(addrs.contains(&c.node_ip(1)), "{addrs}");

    // Restarting node-1's agent keeps its pods, their addresses and the rules.
    let before = c.field(&["get", "pod", "client"], "{.status.podIP}");
    c.kill(1);
    c.start_agent(1);
    c.wait("node-1's agent back", Duration::from_secs(60), |c| {
        c.log(1).matches("node agent running").count() >= 2
    });
    assert_eq!(
        c.field(&["get", "pod", "client"], "{.status.podIP}"),
        before
    );
    assert_eq!(
        fetch_ok(&c, "db-0", &format!("http://{before}:8080/")),
        "client"
    );
    let out = c.on_node(
        0,
        busybox,
        &["timeout", "5", "wget", "-q", "-O", "-", &published],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "client",
        "{out:?}"
    );
}

#[test]
fn ingress_routes_by_host_and_path_with_tls_on_every_node() {
    let c = NetCluster::start(2, "host-gw");
    assert_eq!(
        c.field(
            &["get", "ingressclass", "skiff"],
            "{.metadata.annotations.ingressclass\\.kubernetes\\.io/is-default-class}"
        ),
        "true"
    );
    c.apply(&web_pod("b", "node-1", "app: web"));
    c.apply(&web_pod("d", "node-0", "app: api"));
    c.wait_running("default", "b");
    c.wait_running("default", "d");
    // Ingress paths are passed through unchanged: d serves /api/ too.
    c.exec_ok(
        "default",
        "d",
        "web",
        &[
            "sh",
            "-c",
            "mkdir -p /www/api && hostname > /www/api/index.html",
        ],
    );

    // A certificate for web.example, as a kubernetes.io/tls Secret.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=web.example",
        ])
        .args(["-addext", "subjectAltName=DNS:web.example", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "openssl: {made:?}");
    c.k(&[
        "create",
        "secret",
        "tls",
        "web-tls",
        &format!("--cert={}", cert.display()),
        &format!("--key={}", key.display()),
    ]);
    c.apply(
        r#"apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: http
---
apiVersion: v1
kind: Service
metadata:
  name: api
spec:
  selector: {app: api}
  ports:
  - name: web
    port: 8000
    targetPort: 8080
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: site
spec:
  tls:
  - hosts: [web.example]
    secretName: web-tls
  rules:
  - host: web.example
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {name: web, port: {number: 80}}
      - path: /api
        pathType: Prefix
        backend:
          service: {name: api, port: {name: web}}
"#,
    );
    c.wait("the Ingress status", Duration::from_secs(30), |c| {
        let ips = c.field(
            &["get", "ingress", "site"],
            "{.status.loadBalancer.ingress[*].ip}",
        );
        (0..2).all(|i| ips.split_whitespace().any(|ip| ip == c.node_ip(i)))
    });
    let curl = |c: &NetCluster, from: usize, args: &[&str]| -> String {
        let out = c.on_node(from, "curl", &[&["-s", "--max-time", "5"], args].concat());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // Every node serves every Ingress: node-0's proxy reaches b on node-1 and the other way.
    for node in [0, 1] {
        let base = format!("http://{}/", c.node_ip(node));
        c.wait(
            &format!("the Ingress on node-{node}"),
            Duration::from_secs(30),
            |c| curl(c, 1 - node, &["-H", "Host: web.example", &base]) == "b",
        );
        let api = format!("http://{}/api/", c.node_ip(node));
        assert_eq!(curl(&c, 1 - node, &["-H", "Host: web.example", &api]), "d");
    }
    let code = curl(
        &c,
        0,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Host: nope.example",
            &format!("http://{}/", c.node_ip(1)),
        ],
    );
    assert_eq!(code, "404");
    let resolve = format!("web.example:443:{}", c.node_ip(1));
    let tls = curl(
        &c,
        0,
        &[
            "--resolve",
            &resolve,
            "--cacert",
            cert.to_str().unwrap(),
            "https://web.example/",
        ],
    );
    assert_eq!(tls, "b", "HTTPS with the Secret's certificate");
}

#[test]
fn network_policies_allow_and_deny_real_traffic_and_keep_dns_reachable() {
    let c = NetCluster::start(2, "host-gw");
    c.apply(&web_pod("web", "node-1", "app: web"));
    c.apply(&web_pod("client", "node-0", "role: client"));
    c.apply(&web_pod("other", "node-0", "role: other"));
    let web = c.wait_running("default", "web");
    c.wait_running("default", "client");
    let other = c.wait_running("default", "other");
    let to_web = format!("http://{web}:8080/");
    for pod in ["client", "other"] {
        assert_eq!(fetch_ok(&c, pod, &to_web), "web");
    }

    // Ingress: only role=client may reach web, on its http port.
    c.apply(
        r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web-from-clients
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - podSelector: {matchLabels: {role: client}}
    ports:
    - port: http
"#,
    );
    c.wait("other shut out of web", Duration::from_secs(30), |c| {
        !fetch(c, "other", &to_web).status.success()
    });
    assert_eq!(fetch_ok(&c, "client", &to_web), "web");

    // Egress: client may only talk to web and to the cluster DNS (selected the usual way).
    c.apply(
        r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: client-egress
spec:
  podSelector: {matchLabels: {role: client}}
  policyTypes: [Egress]
  egress:
  - to:
    - podSelector: {matchLabels: {app: web}}
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
      podSelector: {matchLabels: {k8s-app: kube-dns}}
    ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
"#,
    );
    let to_other = format!("http://{other}:8080/");
    c.wait("client kept from other", Duration::from_secs(30), |c| {
        !fetch(c, "client", &to_other).status.success()
    });
    assert_eq!(fetch_ok(&c, "client", &to_web), "web");
    let lookup = c.exec_ok(
        "default",
        "client",
        "web",
        &["nslookup", "kubernetes.default.svc.cluster.local"],
    );
    assert!(lookup.contains("10.43.0.1"), "{lookup}");

    // Removing the policies opens the way again.
    c.k(&["delete", "networkpolicy", "--all"]);
    c.wait("other let in again", Duration::from_secs(30), |c| {
        fetch(c, "other", &to_web).status.success()
    });
    assert_eq!(fetch_ok(&c, "client", &to_other), "other");
}
