//! Test "nodes": network namespaces joined by a Linux bridge, without touching the host's own
//! network namespace.
//!
//! A [`TestNetwork`] owns one namespace that holds the bridge (`br0`) and N node namespaces.
//! Each node is joined to the bridge by a veth pair created inside the bridge namespace with
//! its peer placed straight into the node namespace, so no link, address or route ever
//! appears in the host's namespace. Inside a node the peer is called `eth0` and has the
//! address `10.123.X.(i+1)/24`, X chosen per network.
//!
//! Namespaces are named `skt-<pid>-<counter>-br` and `skt-<pid>-<counter>-n<i>` (files under
//! `/run/netns`, made by `ip netns add`), so parallel test processes never collide, and
//! [`sweep_stale`] can tell which leftovers belong to processes that are gone. Dropping the
//! network deletes all its namespaces, also when the test panics. A namespace lives on while a
//! process still runs in it, so tests should reap what they start through
//! [`TestNode::command`].

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::process::run;
use crate::require::require_program;
use crate::{Result, TestkitError};

/// Where `ip netns add` puts its namespace files.
pub const NETNS_DIR: &str = "/run/netns";
/// The prefix of every namespace name this module creates.
pub const NAME_PREFIX: &str = "skt-";
/// The bridge's name inside the bridge namespace.
pub const BRIDGE: &str = "br0";
/// The name of each node's interface inside its namespace.
pub const NODE_INTERFACE: &str = "eth0";
/// The prefix length of a network's subnet.
pub const PREFIX_LEN: u8 = 24;

/// Numbers the networks of this process (the pid makes names unique across processes).
static NEXT_NETWORK: AtomicU32 = AtomicU32::new(0);

/// The `ip` program, or an error naming iproute2.
fn ip_program() -> Result<PathBuf> {
    require_program("ip", "iproute2")
}

/// Runs `ip` with `args`.
fn run_ip(program: &Path, args: &[&str]) -> Result<()> {
    run(Command::new(program).args(args)).map(drop)
}

/// A bridge namespace plus N node namespaces joined to the bridge; all deleted on drop.
#[derive(Debug)]
pub struct TestNetwork {
    ip: PathBuf,
    nsenter: PathBuf,
    bridge_ns: String,
    subnet: Ipv4Addr,
    nodes: Vec<TestNode>,
    /// Every namespace created so far, deleted on drop (also after a half-done `new`).
    created: Vec<String>,
}

impl TestNetwork {
    /// Creates the bridge namespace and `n_nodes` (at most 253) node namespaces joined to it.
    ///
    /// Removes stale namespaces of dead test processes first (see [`sweep_stale`]). Fails with
    /// [`TestkitError::MissingProgram`] naming iproute2 or util-linux if `ip` or `nsenter` is
    /// not installed.
    pub fn new(n_nodes: usize) -> Result<TestNetwork> {
        if n_nodes > 253 {
            return Err(TestkitError::Invalid {
                fixture: "netns",
                detail: format!("{n_nodes} nodes do not fit a /24 (at most 253)"),
            });
        }
        let ip = ip_program()?;
        let nsenter = require_program("nsenter", "util-linux")?;
        sweep_stale()?;

        let pid = std::process::id();
        let counter = NEXT_NETWORK.fetch_add(1, Ordering::Relaxed);
        let id = format!("{NAME_PREFIX}{pid}-{counter}");
        // Nodes see only their own bridge, so the subnet need not be unique; varying it per
        // network still keeps addresses from different tests apart in logs.
        let third = u8::try_from((pid.wrapping_mul(31).wrapping_add(counter)) % 250)
            .expect("a number below 250 fits a u8");
        let mut network = TestNetwork {
            ip,
            nsenter,
            bridge_ns: format!("{id}-br"),
            subnet: Ipv4Addr::new(10, 123, third, 0),
            nodes: Vec::with_capacity(n_nodes),
            created: Vec::with_capacity(n_nodes + 1),
        };
        // On an error below, dropping `network` deletes whatever was created.
        let bridge_ns = network.bridge_ns.clone();
        network.add_namespace(&bridge_ns)?;
        let ip = network.ip.clone();
        run_ip(&ip, &["-n", &bridge_ns, "link", "set", "lo", "up"])?;
        run_ip(
            &ip,
            &["-n", &bridge_ns, "link", "add", BRIDGE, "type", "bridge"],
        )?;
        run_ip(&ip, &["-n", &bridge_ns, "link", "set", BRIDGE, "up"])?;
        for i in 0..n_nodes {
            let node_ns = format!("{id}-n{i}");
            network.add_namespace(&node_ns)?;
            let host_end = format!("veth{i}");
            let octet = u8::try_from(i + 1).expect("at most 253 nodes, checked above");
            let address = Ipv4Addr::new(10, 123, third, octet);
            let cidr = format!("{address}/{PREFIX_LEN}");
            // Both ends are born inside test namespaces: the host namespace never sees them.
            run_ip(
                &ip,
                &[
                    "-n",
                    &bridge_ns,
                    "link",
                    "add",
                    &host_end,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    NODE_INTERFACE,
                    "netns",
                    &node_ns,
                ],
            )?;
            run_ip(
                &ip,
                &["-n", &bridge_ns, "link", "set", &host_end, "master", BRIDGE],
            )?;
            run_ip(&ip, &["-n", &bridge_ns, "link", "set", &host_end, "up"])?;
            run_ip(&ip, &["-n", &node_ns, "link", "set", "lo", "up"])?;
            run_ip(
                &ip,
                &["-n", &node_ns, "addr", "add", &cidr, "dev", NODE_INTERFACE],
            )?;
            run_ip(&ip, &["-n", &node_ns, "link", "set", NODE_INTERFACE, "up"])?;
            network.nodes.push(TestNode {
                name: node_ns,
                ip: address,
                nsenter: network.nsenter.clone(),
            });
        }
        Ok(network)
    }

    /// `ip netns add name`, remembering it for deletion.
    fn add_namespace(&mut self, name: &str) -> Result<()> {
        run_ip(&self.ip, &["netns", "add", name])?;
        self.created.push(name.to_string());
        Ok(())
    }

    /// The nodes, in order.
    pub fn nodes(&self) -> &[TestNode] {
        &self.nodes
    }

    /// Node `i`.
    ///
    /// # Panics
    /// If `i` is not below the number of nodes.
    pub fn node(&self, i: usize) -> &TestNode {
        &self.nodes[i]
    }

    /// The name of the namespace that holds the bridge.
    pub fn bridge_netns(&self) -> &str {
        &self.bridge_ns
    }

    /// The path of the bridge namespace, `/run/netns/NAME`.
    pub fn bridge_netns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.bridge_ns)
    }

    /// A command that runs `program` inside the bridge namespace (e.g. to inspect `br0`).
    pub fn bridge_command(&self, program: impl AsRef<OsStr>) -> Command {
        nsenter_command(&self.nsenter, &self.bridge_netns_path(), program.as_ref())
    }

    /// The network address of the nodes' subnet (its prefix length is [`PREFIX_LEN`]).
    pub fn subnet(&self) -> Ipv4Addr {
        self.subnet
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        // Nodes first, then the bridge namespace: deleting a namespace deletes its veth ends.
        for name in self.created.iter().rev() {
            if let Err(error) = run_ip(&self.ip, &["netns", "delete", name]) {
                eprintln!("skiff-testkit: could not delete network namespace {name}: {error}");
            }
        }
    }
}

/// One node of a [`TestNetwork`]: a network namespace with `eth0` on the bridge.
#[derive(Debug, Clone)]
pub struct TestNode {
    name: String,
    ip: Ipv4Addr,
    nsenter: PathBuf,
}

impl TestNode {
    /// The namespace's name (as listed by `ip netns list`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file, `/run/netns/NAME`.
    pub fn netns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// The node's address on `eth0`.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The node's interface name, `eth0`.
    pub fn interface(&self) -> &str {
        NODE_INTERFACE
    }

    /// A command that runs `program` in this node's network namespace; add arguments with
    /// `arg`/`args`.
    ///
    /// It goes through `nsenter --net=PATH`, which changes only the network namespace, unlike
    /// `ip netns exec`, which also remounts `/sys` and so hides the cgroup mounts.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        nsenter_command(&self.nsenter, &self.netns_path(), program.as_ref())
    }
}

/// A lone network namespace (a pod's, say) named `skt-<pid>-<counter>-p`, deleted on drop.
///
/// It starts empty, with `lo` down. Like the namespaces of a [`TestNetwork`] it is cleaned up by
/// [`sweep_stale`] if its test process dies before dropping it.
#[derive(Debug)]
pub struct Namespace {
    name: String,
    ip: PathBuf,
    nsenter: PathBuf,
}

impl Namespace {
    /// Creates the namespace (`ip netns add`).
    ///
    /// Fails with [`TestkitError::MissingProgram`] if `ip` or `nsenter` is not installed.
    pub fn new() -> Result<Namespace> {
        let ip = ip_program()?;
        let nsenter = require_program("nsenter", "util-linux")?;
        let counter = NEXT_NETWORK.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NAME_PREFIX}{}-{counter}-p", std::process::id());
        run_ip(&ip, &["netns", "add", &name])?;
        Ok(Namespace { name, ip, nsenter })
    }

    /// The namespace's name (as listed by `ip netns list`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file, `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// A command that runs `program` in this namespace (through `nsenter --net=PATH`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        nsenter_command(&self.nsenter, &self.path(), program.as_ref())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Err(error) = run_ip(&self.ip, &["netns", "delete", &self.name]) {
            eprintln!(
                "skiff-testkit: could not delete network namespace {}: {error}",
                self.name
            );
        }
    }
}

/// `nsenter --net=PATH -- PROGRAM`.
fn nsenter_command(nsenter: &Path, netns: &Path, program: &OsStr) -> Command {
    let mut net = std::ffi::OsString::from("--net=");
    net.push(netns);
    let mut command = Command::new(nsenter);
    command.arg(net).arg("--").arg(program);
    command
}

/// Deletes leftover `skt-*` namespaces whose creating process no longer runs (a test process
/// that was killed before its networks were dropped) and returns their names.
///
/// The creator's pid is part of every name; namespaces of live processes are left alone.
pub fn sweep_stale() -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(TestkitError::io("list", NETNS_DIR)(error)),
    };
    let ip = ip_program()?;
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(TestkitError::io("list", NETNS_DIR))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = creator_pid(&name) else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        match run_ip(&ip, &["netns", "delete", &name]) {
            Ok(()) => removed.push(name),
            // Another process may have swept it first.
            Err(_) if !entry.path().exists() => {}
            Err(error) => return Err(error),
        }
    }
    Ok(removed)
}

/// The pid in a name made by this module (`skt-<pid>-...`), or `None` for any other name.
fn creator_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_is_created_and_deleted_on_drop() {
        let ns = Namespace::new().unwrap();
        let path = ns.path();
        assert!(path.exists());
        assert_eq!(creator_pid(ns.name()), Some(std::process::id()));
        let out = ns
            .command("ip")
            .args(["-o", "link", "show", "lo"])
            .output()
            .unwrap();
        assert!(out.status.success());
        drop(ns);
        assert!(!path.exists());
    }

    #[test]
    fn the_creator_pid_is_read_only_from_names_this_module_makes() {
        assert_eq!(creator_pid("skt-1234-0-n1"), Some(1234));
        assert_eq!(creator_pid("skt-1234-7-br"), Some(1234));
        assert_eq!(creator_pid("skt-abc-0-n1"), None);
        assert_eq!(creator_pid("cni-1234-0"), None);
        assert_eq!(creator_pid("skt-1234"), None);
    }
}
