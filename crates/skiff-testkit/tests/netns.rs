//! The test-node fixture: namespaces on a bridge, never touching the host's network namespace.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use skiff_testkit::netns::{TestNetwork, sweep_stale};
use skiff_testkit::process::run;

/// Runs `command` and returns its trimmed stdout, failing the test with its stderr.
fn stdout_of(command: &mut Command) -> String {
    let output = run(command).unwrap_or_else(|error| panic!("{error}"));
    String::from_utf8(output.stdout)
        .expect("the command prints UTF-8")
        .trim()
        .to_string()
}

/// The host namespace's links as `index: name` (state and counters left out, they change).
fn host_links() -> BTreeSet<String> {
    stdout_of(Command::new("ip").args(["-o", "link", "show"]))
        .lines()
        .map(|line| line.splitn(3, ':').take(2).collect::<Vec<_>>().join(":"))
        .collect()
}

/// Whether a link (`index: name[@peer]`) bears a name the fixture gives its interfaces.
/// Tests of other crates may add links of their own to the host namespace meanwhile.
fn is_fixture_name(link: &str) -> bool {
    let name = link.split(':').nth(1).unwrap_or_default().trim();
    let name = name.split('@').next().unwrap_or_default();
    name == "br0"
        || name == "eth0"
        || name
            .strip_prefix("veth")
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// The names `ip netns list` shows (it prints `name (id: N)` for some).
fn netns_names() -> BTreeSet<String> {
    stdout_of(Command::new("ip").args(["netns", "list"]))
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn two_nodes_reach_each_other_over_the_bridge() {
    let network = TestNetwork::new(2).unwrap();
    let (a, b) = (network.node(0), network.node(1));
    assert_ne!(a.ip(), b.ip());

    let ping = stdout_of(
        a.command("/bin/busybox")
            .args(["ping", "-c", "1", "-W", "2"])
            .arg(b.ip().to_string()),
    );
    assert!(ping.contains("1 packets received"), "{ping}");

    let addresses =
        stdout_of(
            b.command("ip")
                .args(["-o", "-4", "addr", "show", "dev", b.interface()]),
        );
    assert!(addresses.contains(&format!("{}/24", b.ip())), "{addresses}");
}

#[test]
fn the_host_namespace_gains_no_links() {
    let before = host_links();
    let network = TestNetwork::new(3).unwrap();
    let during = host_links();
    drop(network);
    let after = host_links();

    for now in [during, after] {
        let added: Vec<_> = now
            .difference(&before)
            .filter(|link| is_fixture_name(link))
            .collect();
        assert!(
            added.is_empty(),
            "links appeared in the host namespace: {added:?}"
        );
    }
}

#[test]
fn dropping_the_network_deletes_its_namespaces() {
    let network = TestNetwork::new(2).unwrap();
    let mut ours: Vec<String> = network
        .nodes()
        .iter()
        .map(|node| node.name().to_string())
        .collect();
    ours.push(network.bridge_netns().to_string());
    let listed = netns_names();
    for name in &ours {
        assert!(listed.contains(name), "{name} missing from {listed:?}");
        assert!(Path::new("/run/netns").join(name).exists());
    }
    assert_eq!(
        network.node(0).netns_path(),
        Path::new("/run/netns").join(network.node(0).name())
    );

    drop(network);

    let listed = netns_names();
    for name in &ours {
        assert!(!listed.contains(name), "{name} still in {listed:?}");
        assert!(!Path::new("/run/netns").join(name).exists());
    }
}

#[test]
fn namespaces_are_deleted_when_the_test_holding_them_panics() {
    let (sender, receiver) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let network = TestNetwork::new(1).unwrap();
        sender
            .send(vec![
                network.node(0).netns_path(),
                network.bridge_netns_path(),
            ])
            .unwrap();
        panic!("the test failed");
    })
    .join();
    assert!(result.is_err());
    for path in receiver.recv().unwrap() {
        assert!(!path.exists(), "{} still exists", path.display());
    }
}

#[test]
fn a_node_process_sees_the_cgroup_mounts_and_its_own_network_namespace() {
    let network = TestNetwork::new(1).unwrap();
    let node = network.node(0);

    let cgroups = stdout_of(node.command("ls").arg("/sys/fs/cgroup"));
    assert!(
        !cgroups.is_empty(),
        "/sys/fs/cgroup is empty inside the node"
    );
    let host_cgroups = stdout_of(Command::new("ls").arg("/sys/fs/cgroup"));
    assert_eq!(cgroups, host_cgroups);

    let host_netns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let node_netns = stdout_of(node.command("readlink").arg("/proc/self/ns/net"));
    assert_ne!(Path::new(&node_netns), host_netns);
    // And it is the node's namespace, not some other one.
    let inode = stdout_of(
        Command::new("stat")
            .args(["-L", "-c", "%i"])
            .arg(node.netns_path()),
    );
    assert_eq!(node_netns, format!("net:[{inode}]"));
}

#[test]
fn stale_namespaces_of_dead_processes_are_swept_and_live_ones_kept() {
    // A pid that surely belongs to no process any more: a child that has been reaped.
    let mut child = Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let stale = format!("skt-{dead_pid}-0-n0");
    let live = format!("skt-{}-sweep-test", std::process::id());
    stdout_of(Command::new("ip").args(["netns", "add", &live]));
    // Tests in other processes sweep too and may delete it even while `ip` is creating it,
    // which fails the creation: either way it must be gone below.
    let _ = run(Command::new("ip").args(["netns", "add", &stale]));

    let removed = sweep_stale().unwrap();

    let listed = netns_names();
    stdout_of(Command::new("ip").args(["netns", "delete", &live]));
    // A parallel test process may have swept it first, so `removed` need not name it.
    assert!(
        !listed.contains(&stale),
        "{stale} not swept: {listed:?} (removed {removed:?})"
    );
    assert!(listed.contains(&live), "{listed:?}");
}
