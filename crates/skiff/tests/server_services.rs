//! Service addresses and the cluster's default objects, with real kubectl against a real
//! `skiff server`: cluster IPs and node ports allocated, chosen ones honoured or refused with
//! kube-apiserver's messages, freed on delete; the `kubernetes` and `kube-dns` Services (and
//! the former coming back when deleted); pod CIDRs for Nodes; and two API servers over one
//! etcd never handing out the same address.
#![allow(clippy::unwrap_used)] // test code: a panic is how a test reports failure

mod server_support;

use std::collections::HashSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use server_support::{Server, ok, run, wait_until};
use skiff_testkit::etcd::EtcdMember;

const DEADLINE: Duration = Duration::from_secs(60);

fn kubectl(server: &Server, args: &[&str]) -> Command {
    let mut command = server.kubectl("1.33");
    command.args(args);
    command
}

fn json(server: &Server, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&ok(&mut kubectl(server, &all))).unwrap()
}

/// Runs kubectl expecting a refusal; returns its stderr.
fn refused(server: &Server, args: &[&str]) -> String {
    let out = run(&mut kubectl(server, args));
    assert!(
        !out.status.success(),
        "kubectl {args:?} should have failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn apply(server: &Server, yaml: &str) -> Output {
    with_stdin(server, &["apply", "-f", "-"], yaml)
}

fn with_stdin(server: &Server, args: &[&str], input: &str) -> Output {
    let mut child = kubectl(server, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn cluster_ip(server: &Server, namespace: &str, name: &str) -> String {
    ok(&mut kubectl(
        server,
        &[
            "-n",
            namespace,
            "get",
            "svc",
            name,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    ))
}

fn in_service_cidr(ip: &str) -> bool {
    ip.parse::<Ipv4Addr>()
        .is_ok_and(|ip| ip.octets()[..2] == [10, 43] && ip != Ipv4Addr::new(10, 43, 0, 0))
}

/// Every cluster IP in the cluster (headless ones left out).
fn all_cluster_ips(server: &Server) -> Vec<String> {
    json(server, &["get", "svc", "-A"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["spec"]["clusterIP"].as_str())
        .filter(|ip| *ip != "None")
        .map(str::to_string)
        .collect()
}

#[test]
fn cluster_ips_and_node_ports_are_allocated_honoured_and_freed() {
    let server = Server::start_in(tempfile::tempdir().unwrap(), &["--disable-scheduler"]);
    let s = &server;

    ok(&mut kubectl(
        s,
        &["create", "service", "clusterip", "web", "--tcp=80:8080"],
    ));
    let web = json(s, &["get", "svc", "web"]);
    let ip = web["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(in_service_cidr(&ip), "{web}");
    assert_eq!(web["spec"]["clusterIPs"], serde_json::json!([ip]));
    assert_eq!(web["spec"]["ipFamilies"], serde_json::json!(["IPv4"]));
    assert_eq!(web["spec"]["ipFamilyPolicy"], "SingleStack");
    let table = ok(&mut kubectl(s, &["get", "svc", "web"]));
    assert!(table.contains(&ip), "{table}");

    // Thirty creates at once get thirty different addresses.
    let handles: Vec<_> = (0..30)
        .map(|i| {
            let mut command = kubectl(
                s,
                &[
                    "create",
                    "service",
                    "clusterip",
                    &format!("many-{i}"),
                    "--tcp=80",
                ],
            );
            std::thread::spawn(move || run(&mut command))
        })
        .collect();
    for handle in handles {
        let out = handle.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ips = all_cluster_ips(s);
    let distinct: HashSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), ips.len(), "duplicate cluster IPs: {ips:?}");
    assert!(ips.len() >= 33, "{ips:?}"); // web, many-*, kubernetes, kube-dns
    assert!(ips.iter().all(|ip| in_service_cidr(ip)), "{ips:?}");

    // A chosen address is honoured; a taken or foreign one is refused.
    ok(&mut kubectl(
        s,
        &[
            "create",
            "service",
            "clusterip",
            "chosen",
            "--tcp=80",
            "--clusterip=10.43.0.5",
        ],
    ));
    assert_eq!(cluster_ip(s, "default", "chosen"), "10.43.0.5");
    let err = refused(
        s,
        &[
            "create",
            "service",
            "clusterip",
            "second",
            "--tcp=80",
            "--clusterip=10.43.0.5",
        ],
    );
    assert!(
        err.contains(
            r#"Service "second" is invalid: spec.clusterIPs: Invalid value: []string{"10.43.0.5"}: failed to allocate IP 10.43.0.5: provided IP is already allocated"#
        ),
        "{err}"
    );
    let err = refused(
        s,
        &[
            "create",
            "service",
            "clusterip",
            "foreign",
            "--tcp=80",
            "--clusterip=10.44.0.5",
        ],
    );
    assert!(
        err.contains(r#"spec.clusterIPs: Invalid value: []string{"10.44.0.5"}: failed to allocate IP 10.44.0.5: the provided IP (10.44.0.5) is not in the valid range. The range of valid IPs is 10.43.0.0/16"#),
        "{err}"
    );

    // Deleting frees the address: a new Service can take it.
    ok(&mut kubectl(s, &["delete", "svc", "chosen"]));
    ok(&mut kubectl(
        s,
        &[
            "create",
            "service",
            "clusterip",
            "again",
            "--tcp=80",
            "--clusterip=10.43.0.5",
        ],
    ));
    assert_eq!(cluster_ip(s, "default", "again"), "10.43.0.5");

    // The cluster IP is immutable; a replace that leaves it out keeps it.
    let err = refused(
        s,
        &[
            "patch",
            "svc",
            "web",
            "-p",
            r#"{"spec":{"clusterIP":"10.43.0.77","clusterIPs":["10.43.0.77"]}}"#,
        ],
    );
    assert!(
        err.contains(
            "spec.clusterIPs[0]: Invalid value: []string{\"10.43.0.77\"}: may not change once set"
        ),
        "{err}"
    );
    let out = with_stdin(
        s,
        &["replace", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels: {tier: front}\nspec:\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cluster_ip(s, "default", "web"), ip);

    // Headless Services get no address.
    ok(&mut kubectl(
        s,
        &[
            "create",
            "service",
            "clusterip",
            "headless",
            "--clusterip=None",
        ],
    ));
    assert_eq!(cluster_ip(s, "default", "headless"), "None");

    // Node ports: one from the range, a taken one refused, an out-of-range one refused.
    ok(&mut kubectl(
        s,
        &["create", "service", "nodeport", "np", "--tcp=80:8080"],
    ));
    let np = json(s, &["get", "svc", "np"]);
    let port = np["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&port), "{np}");
    assert!(in_service_cidr(np["spec"]["clusterIP"].as_str().unwrap()));
    let err = refused(
        s,
        &[
            "create",
            "service",
            "nodeport",
            "np2",
            "--tcp=80:8080",
            &format!("--node-port={port}"),
        ],
    );
    assert!(
        err.contains(&format!(
            "spec.ports[0].nodePort: Invalid value: {port}: provided port is already allocated"
        )),
        "{err}"
    );
    let err = refused(
        s,
        &[
            "create",
            "service",
            "nodeport",
            "np3",
            "--tcp=80:8080",
            "--node-port=8080",
        ],
    );
    assert!(
        err.contains("spec.ports[0].nodePort: Invalid value: 8080: provided port is not in the valid range. The range of valid ports is 30000-32767"),
        "{err}"
    );
    // Back to ClusterIP: the node port is released and can be taken by another Service.
    ok(&mut kubectl(
        s,
        &[
            "patch",
            "svc",
            "np",
            "-p",
            r#"{"spec":{"type":"ClusterIP"}}"#,
        ],
    ));
    let np = json(s, &["get", "svc", "np"]);
    assert!(np["spec"]["ports"][0].get("nodePort").is_none(), "{np}");
    ok(&mut kubectl(
        s,
        &[
            "create",
            "service",
            "nodeport",
            "np2",
            "--tcp=80:8080",
            &format!("--node-port={port}"),
        ],
    ));
    // And deleting a NodePort Service frees its port too.
    ok(&mut kubectl(s, &["delete", "svc", "np2"]));
    ok(&mut kubectl(
        s,
        &[
            "create",
            "service",
            "nodeport",
            "np4",
            "--tcp=80:8080",
            &format!("--node-port={port}"),
        ],
    ));
}

#[test]
fn default_services_exist_come_back_and_nodes_get_pod_cidrs() {
    let server = Server::start_in(tempfile::tempdir().unwrap(), &["--disable-scheduler"]);
    let s = &server;

    let table = ok(&mut kubectl(s, &["get", "svc", "kubernetes"]));
    assert!(
        table.contains("10.43.0.1 ") && table.contains("443/TCP"),
        "{table}"
    );
    let svc = json(s, &["get", "svc", "kubernetes"]);
    assert_eq!(svc["spec"]["ports"][0]["name"], "https");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], i64::from(s.port));
    assert!(svc["spec"].get("selector").is_none(), "{svc}");
    let endpoints = json(s, &["get", "endpoints", "kubernetes"]);
    assert_eq!(
        endpoints["subsets"][0]["addresses"][0]["ip"], "127.0.0.1",
        "{endpoints}"
    );
    assert_eq!(
        endpoints["subsets"][0]["ports"][0]["port"],
        i64::from(s.port)
    );
    let table = ok(&mut kubectl(s, &["get", "endpoints", "kubernetes"]));
    assert!(table.contains(&format!("127.0.0.1:{}", s.port)), "{table}");
    let slices = json(
        s,
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=kubernetes",
        ],
    );
    let slice = &slices["items"][0];
    assert_eq!(
        slice["endpoints"][0]["addresses"][0], "127.0.0.1",
        "{slices}"
    );
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "skiff"
    );

    let dns = json(s, &["-n", "kube-system", "get", "svc", "kube-dns"]);
    assert_eq!(dns["spec"]["clusterIP"], "10.43.0.10");
    assert_eq!(dns["metadata"]["labels"]["k8s-app"], "kube-dns");
    let ports: Vec<(String, i64, String)> = dns["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["port"].as_i64().unwrap(),
                p["protocol"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("dns".to_string(), 53, "UDP".to_string()),
            ("dns-tcp".to_string(), 53, "TCP".to_string())
        ]
    );

    // A deleted `kubernetes` Service comes back with its address.
    let uid = svc["metadata"]["uid"].as_str().unwrap().to_string();
    ok(&mut kubectl(s, &["delete", "svc", "kubernetes"]));
    wait_until("the kubernetes service to come back", DEADLINE, || {
        let out = run(&mut kubectl(
            s,
            &[
                "get",
                "svc",
                "kubernetes",
                "-o",
                "jsonpath={.metadata.uid} {.spec.clusterIP}",
            ],
        ));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success() && !text.starts_with(&uid) && text.ends_with(" 10.43.0.1")
    });

    // Nodes: a preset pod CIDR is kept, the others get distinct free /24s.
    let out = apply(
        s,
        "apiVersion: v1\nkind: Node\nmetadata: {name: preset}\nspec: {podCIDR: 10.42.0.0/24, podCIDRs: [10.42.0.0/24]}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n1}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n2}\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pod_cidr = |name: &str| {
        let out = run(&mut kubectl(
            s,
            &[
                "get",
                "node",
                name,
                "-o",
                "jsonpath={.spec.podCIDR},{.spec.podCIDRs[0]}",
            ],
        ));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (single, plural) = text.split_once(',').unwrap_or_default();
        (out.status.success() && !single.is_empty() && single == plural).then(|| single.to_string())
    };
    let mut cidrs = Vec::new();
    for name in ["n1", "n2"] {
        wait_until(&format!("a pod CIDR for {name}"), DEADLINE, || {
            pod_cidr(name).is_some()
        });
        cidrs.push(pod_cidr(name).unwrap());
    }
    assert_eq!(pod_cidr("preset").unwrap(), "10.42.0.0/24");
    assert_ne!(cidrs[0], cidrs[1]);
    for cidr in &cidrs {
        assert!(
            cidr.starts_with("10.42.") && cidr.ends_with(".0/24") && cidr != "10.42.0.0/24",
            "{cidrs:?}"
        );
    }
    // A deleted node's block goes to the next node.
    ok(&mut kubectl(s, &["delete", "node", "n1"]));
    let out = apply(s, "apiVersion: v1\nkind: Node\nmetadata: {name: n3}\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("a pod CIDR for n3", DEADLINE, || pod_cidr("n3").is_some());
    assert_eq!(pod_cidr("n3").unwrap(), cidrs[0]);
}

#[test]
fn two_servers_over_one_etcd_never_share_an_address() {
    let etcd = EtcdMember::start().unwrap_or_else(|e| panic!("{e}"));
    let endpoint = etcd.endpoint();
    let args = [
        "--store",
        "etcd",
        "--etcd-endpoints",
        endpoint.as_str(),
        "--disable-scheduler",
        "--disable-controllers",
    ];
    let one = Server::start_in(tempfile::tempdir().unwrap(), &args);
    let two = Server::start_in(tempfile::tempdir().unwrap(), &args);

    // Twenty creates on each server at the same time, half of them NodePort.
    let handles: Vec<_> = (0..40)
        .map(|i| {
            let server = if i % 2 == 0 { &one } else { &two };
            let kind = if i % 4 < 2 { "clusterip" } else { "nodeport" };
            let mut command = kubectl(
                server,
                &["create", "service", kind, &format!("svc-{i}"), "--tcp=80"],
            );
            std::thread::spawn(move || run(&mut command))
        })
        .collect();
    for handle in handles {
        let out = handle.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let services = json(&one, &["get", "svc", "-A"]);
    let items = services["items"].as_array().unwrap();
    assert_eq!(items.len(), 42, "{services}"); // 40 + kubernetes + kube-dns
    let ips: Vec<&str> = items
        .iter()
        .map(|s| s["spec"]["clusterIP"].as_str().unwrap())
        .collect();
    let distinct: HashSet<&&str> = ips.iter().collect();
    assert_eq!(distinct.len(), ips.len(), "duplicate cluster IPs: {ips:?}");
    let ports: Vec<i64> = items
        .iter()
        .filter_map(|s| s["spec"]["ports"][0]["nodePort"].as_i64())
        .collect();
    assert_eq!(ports.len(), 20, "{ports:?}");
    let distinct: HashSet<&i64> = ports.iter().collect();
    assert_eq!(
        distinct.len(),
        ports.len(),
        "duplicate node ports: {ports:?}"
    );

    // A chosen address taken through one server is refused by the other.
    ok(&mut kubectl(
        &one,
        &[
            "create",
            "service",
            "clusterip",
            "pinned",
            "--tcp=80",
            "--clusterip=10.43.0.20",
        ],
    ));
    let err = refused(
        &two,
        &[
            "create",
            "service",
            "clusterip",
            "pinned-too",
            "--tcp=80",
            "--clusterip=10.43.0.20",
        ],
    );
    assert!(err.contains("provided IP is already allocated"), "{err}");

    // The `kubernetes` Endpoints name both API servers.
    wait_until("both servers in the kubernetes endpoints", DEADLINE, || {
        let endpoints = json(&two, &["get", "endpoints", "kubernetes"]);
        let ports: HashSet<i64> = endpoints["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["ports"][0]["port"].as_i64())
            .collect();
        ports.contains(&i64::from(one.port)) && ports.contains(&i64::from(two.port))
    });
}
