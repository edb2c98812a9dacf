//! The pod network for real, as root, inside network namespaces these tests create: the
//! host's own namespace is never touched. Every namespace is a guard deleted on drop, also when
//! a test panics.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use skiff_net::podnet::{NodeNetwork, NodeNetworkConfig, PodNetError, host_veth_name};
use skiff_testkit::netns::Namespace;

fn config(node: &Namespace, state_dir: &Path) -> NodeNetworkConfig {
    let mut config = NodeNetworkConfig::new(
        "10.42.0.0/24".parse().unwrap(),
        "10.42.0.0/16".parse().unwrap(),
        state_dir.to_path_buf(),
    );
    config.netns = Some(node.path());
    config
}

/// Whether `from` can ping `to` (a few tries: the first packet may wait for ARP).
fn pings(from: &Namespace, to: Ipv4Addr) -> bool {
    (0..3).any(|_| {
        from.command("busybox")
            .args(["ping", "-c1", "-W1", &to.to_string()])
            .output()
            .unwrap()
            .status
            .success()
    })
}

/// Runs `program args` in `ns` and returns its stdout, or `None` if it failed.
fn output(ns: &Namespace, program: &str, args: &[&str]) -> Option<String> {
    let out = ns.command(program).args(args).output().unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn link_exists(ns: &Namespace, name: &str) -> bool {
    output(ns, "ip", &["link", "show", "dev", name]).is_some()
}

#[tokio::test]
async fn two_pods_on_a_node_reach_each_other_and_the_gateway() {
    let node = Namespace::new().unwrap();
    let state = tempfile::tempdir().unwrap();
    let network = NodeNetwork::setup(config(&node, state.path()))
        .await
        .unwrap();
    // Setup is idempotent.
    let network2 = NodeNetwork::setup(config(&node, state.path()))
        .await
        .unwrap();
    drop(network2);
    assert_eq!(
        output(&node, "cat", &["/proc/sys/net/ipv4/ip_forward"])
            .unwrap()
            .trim(),
        "1"
    );
    let bridge = output(&node, "ip", &["-o", "-4", "addr", "show", "dev", "skiff0"]).unwrap();
    assert!(bridge.contains("10.42.0.1/24"), "{bridge}");

    let pod_a = Namespace::new().unwrap();
    let pod_b = Namespace::new().unwrap();
    let started = Instant::now();
    let a = network.attach("pod-a", &pod_a.path()).await.unwrap();
    let first = started.elapsed();
    let started = Instant::now();
    let b = network.attach("pod-b", &pod_b.path()).await.unwrap();
    let second = started.elapsed();
    eprintln!("attach took {first:?} and {second:?}");

    assert_eq!(a.gateway, Ipv4Addr::new(10, 42, 0, 1));
    assert_eq!(a.prefix, 24);
    assert_ne!(a.ip, b.ip);
    assert_eq!(a.host_veth, host_veth_name("pod-a"));
    assert_eq!(network.address_of("pod-a"), Some(a.ip));
    assert!(link_exists(&node, &a.host_veth));
    let master = output(&node, "ip", &["-o", "link", "show", "dev", &a.host_veth]).unwrap();
    assert!(
        master.contains("master skiff0") && master.contains("state UP"),
        "{master}"
    );
    let eth0 = output(&pod_a, "ip", &["-o", "-4", "addr", "show", "dev", "eth0"]).unwrap();
    assert!(eth0.contains(&format!("{}/24", a.ip)), "{eth0}");
    let route = output(&pod_a, "ip", &["route", "show", "default"]).unwrap();
    assert!(route.contains("via 10.42.0.1 dev eth0"), "{route}");

    assert!(pings(&pod_a, b.ip));
    assert!(pings(&pod_b, a.ip));
    assert!(pings(&pod_a, a.gateway));
    assert!(pings(&pod_a, Ipv4Addr::LOCALHOST));
}

#[tokio::test]
async fn attach_is_idempotent_and_detach_frees_the_address() {
    let node = Namespace::new().unwrap();
    let state = tempfile::tempdir().unwrap();
    let network = NodeNetwork::setup(config(&node, state.path()))
        .await
        .unwrap();
    let pod = Namespace::new().unwrap();

    let first = network.attach("pod-a", &pod.path()).await.unwrap();
    let started = Instant::now();
    let again = network.attach("pod-a", &pod.path()).await.unwrap();
    eprintln!("repeated attach took {:?}", started.elapsed());
    assert_eq!(first, again);
    assert!(state.path().join(first.ip.to_string()).exists());

    network.detach("pod-a").await.unwrap();
    assert_eq!(network.address_of("pod-a"), None);
    assert!(!link_exists(&node, &first.host_veth));
    assert!(!link_exists(&pod, "eth0"));
    assert!(!state.path().join(first.ip.to_string()).exists());
    network.detach("pod-a").await.unwrap();
    network.detach("never-attached").await.unwrap();

    // Attaching again works (a fresh address: a freed one is not reused at once).
    let back = network.attach("pod-a", &pod.path()).await.unwrap();
    assert_ne!(back.ip, first.ip);
    assert!(pings(&pod, back.gateway));
}

#[tokio::test]
async fn allocations_survive_a_new_node_network_over_the_same_state() {
    let node = Namespace::new().unwrap();
    let state = tempfile::tempdir().unwrap();
    let pod_a = Namespace::new().unwrap();
    let pod_b = Namespace::new().unwrap();
    let (a, b) = {
        let network = NodeNetwork::setup(config(&node, state.path()))
            .await
            .unwrap();
        let a = network.attach("pod-a", &pod_a.path()).await.unwrap();
        let b = network.attach("pod-b", &pod_b.path()).await.unwrap();
        (a, b)
    };
    // The agent restarts.
    let network = NodeNetwork::setup(config(&node, state.path()))
        .await
        .unwrap();
    assert_eq!(network.address_of("pod-a"), Some(a.ip));
    assert_eq!(network.address_of("pod-b"), Some(b.ip));
    assert_eq!(network.attach("pod-a", &pod_a.path()).await.unwrap(), a);
    let pod_c = Namespace::new().unwrap();
    let c = network.attach("pod-c", &pod_c.path()).await.unwrap();
    assert!(c.ip != a.ip && c.ip != b.ip);
    assert!(pings(&pod_c, a.ip));
}

#[tokio::test]
async fn release_except_frees_what_is_not_live() {
    let node = Namespace::new().unwrap();
    let state = tempfile::tempdir().unwrap();
    let network = NodeNetwork::setup(config(&node, state.path()))
        .await
        .unwrap();
    let pods: Vec<Namespace> = (0..3).map(|_| Namespace::new().unwrap()).collect();
    let mut addresses = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        addresses.push(
            network
                .attach(&format!("pod-{i}"), &pod.path())
                .await
                .unwrap(),
        );
    }
    let live: HashSet<String> = ["pod-1".to_string()].into();
    let released = network.release_except(&live).await.unwrap();
    assert_eq!(released, vec!["pod-0".to_string(), "pod-2".to_string()]);
    assert_eq!(network.address_of("pod-0"), None);
    assert_eq!(network.address_of("pod-2"), None);
    assert_eq!(network.address_of("pod-1"), Some(addresses[1].ip));
    assert!(!link_exists(&node, &addresses[0].host_veth));
    assert!(!link_exists(&node, &addresses[2].host_veth));
    assert!(link_exists(&node, &addresses[1].host_veth));
    assert!(pings(&pods[1], addresses[1].gateway));
    assert!(network.release_except(&live).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_new_sandbox_with_the_same_uid_replaces_the_old_veth() {
    let node = Namespace::new().unwrap();
    let state = tempfile::tempdir().unwrap();
    let network = NodeNetwork::setup(config(&node, state.path()))
        .await
        .unwrap();
    let old = Namespace::new().unwrap();
    let first = network.attach("pod-a", &old.path()).await.unwrap();
    let new = Namespace::new().unwrap();
    let second = network.attach("pod-a", &new.path()).await.unwrap();
    assert_eq!(first, second);
    assert!(!link_exists(&old, "eth0"));
    assert!(pings(&new, second.gateway));
}

#[tokio::test]
async fn a_failed_attach_releases_a_fresh_address() {
    let node = Namespace::new().unwrap();
    let state = tempfile::tempdir().unwrap();
    let network = NodeNetwork::setup(config(&node, state.path()))
        .await
        .unwrap();
    let error = network
        .attach("pod-a", Path::new("/run/netns/skiff-no-such-namespace"))
        .await
        .unwrap_err();
    eprintln!("{error}");
    assert!(matches!(error, PodNetError::Command { .. }), "{error}");
    assert!(error.to_string().contains("pod-a"), "{error}");
    assert_eq!(network.address_of("pod-a"), None);
    assert!(!link_exists(&node, &host_veth_name("pod-a")));
}

#[tokio::test]
async fn attach_is_fast() {
    let node = Namespace::new().unwrap();
    let state = tempfile::tempdir().unwrap();
    let network = NodeNetwork::setup(config(&node, state.path()))
        .await
        .unwrap();
    let pods: Vec<Namespace> = (0..10).map(|_| Namespace::new().unwrap()).collect();
    let mut times = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let started = Instant::now();
        network
            .attach(&format!("pod-{i}"), &pod.path())
            .await
            .unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    eprintln!("attach times: {times:?}");
    // Generous bound for a loaded shared machine; the typical time is printed above.
    assert!(
        times[times.len() / 2] < Duration::from_millis(500),
        "{times:?}"
    );
}
