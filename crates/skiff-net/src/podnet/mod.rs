//! The pod network of one node: a bridge holding the pod CIDR's gateway address, one veth pair
//! per pod (host end on the bridge, `eth0` in the pod), addresses persisted across restarts.
//!
//! Changes are made with iproute2 batches (`ip -batch -`, under `nsenter --net=PATH` when the
//! node's namespace is not the caller's): a fresh [`NodeNetwork::attach`] costs two process
//! spawns, one in the node's namespace and one in the pod's.

mod link;
mod store;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::ipam::{IpamError, Ipv4Cidr};
use store::AddressStore;

/// The bridge's default name.
pub const DEFAULT_BRIDGE: &str = "skiff0";
/// The default MTU of the bridge and the veths (host-gw routing).
pub const DEFAULT_MTU: u32 = 1500;
/// The name of a pod's interface inside its namespace.
pub const POD_INTERFACE: &str = "eth0";

/// What [`NodeNetwork::setup`] builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNetworkConfig {
    /// The bridge's name (at most 15 bytes), [`DEFAULT_BRIDGE`] by default.
    pub bridge: String,
    /// This node's pod CIDR, e.g. 10.42.0.0/24; its first host address is the gateway.
    pub pod_cidr: Ipv4Cidr,
    /// The CIDR of every pod of the cluster, e.g. 10.42.0.0/16.
    pub cluster_cidr: Ipv4Cidr,
    /// The MTU of the bridge and of both ends of every veth: 1500, or 1450 under VXLAN.
    pub mtu: u32,
    /// Where allocations persist, one file per address.
    pub state_dir: PathBuf,
    /// The node's network namespace; `None` is the caller's own (production).
    pub netns: Option<PathBuf>,
}

impl NodeNetworkConfig {
    /// A configuration with the default bridge name and MTU in the caller's namespace.
    pub fn new(pod_cidr: Ipv4Cidr, cluster_cidr: Ipv4Cidr, state_dir: PathBuf) -> Self {
        NodeNetworkConfig {
            bridge: DEFAULT_BRIDGE.to_string(),
            pod_cidr,
            cluster_cidr,
            mtu: DEFAULT_MTU,
            state_dir,
            netns: None,
        }
    }
}

/// Where a pod was attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAddress {
    /// The pod's address on `eth0`.
    pub ip: Ipv4Addr,
    /// Its prefix length (the pod CIDR's).
    pub prefix: u8,
    /// The default gateway: the bridge's address.
    pub gateway: Ipv4Addr,
    /// The host end of the pod's veth pair.
    pub host_veth: String,
}

/// Why the pod network could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum PodNetError {
    /// The configuration cannot work.
    #[error("invalid node network configuration: {detail}")]
    InvalidConfig {
        /// What is wrong.
        detail: String,
    },
    /// The state directory could not be read or written.
    #[error("{action} pod network state {path}: {source}")]
    State {
        /// What was being done, e.g. "write".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// No address could be allocated to a pod.
    #[error("allocate an address for pod {pod_uid}: {source}")]
    Ipam {
        /// The pod.
        pod_uid: String,
        /// Why.
        source: IpamError,
    },
    /// Two pods' uids hash to the same host veth name.
    #[error("pod {pod_uid} would use host veth {host_veth}, which belongs to pod {other_uid}")]
    VethNameCollision {
        /// The pod being attached.
        pod_uid: String,
        /// The contested name.
        host_veth: String,
        /// The pod that has it.
        other_uid: String,
    },
    /// A command failed.
    #[error("{context}: `{command}` failed: {stderr}")]
    Command {
        /// What was being done, naming the pod and device.
        context: String,
        /// The command line and batch.
        command: String,
        /// Its stderr.
        stderr: String,
    },
    /// A command printed something that could not be understood.
    #[error("{context}: {detail}")]
    Unexpected {
        /// What was being done.
        context: String,
        /// What was found.
        detail: String,
    },
}

impl PodNetError {
    /// A [`PodNetError::Command`] from a failure, with `context`.
    fn command(context: impl Into<String>) -> impl FnOnce(crate::iproute::Failure) -> PodNetError {
        let context = context.into();
        move |failure| PodNetError::Command {
            context,
            stderr: failure.detail(),
            command: failure.command,
        }
    }
}

/// The host end's name for a pod: `veth` and 8 hex digits of a hash of its uid (FNV-1a, folded
/// to 32 bits), stable across versions and restarts.
pub fn host_veth_name(pod_uid: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in pod_uid.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let folded = (hash >> 32) ^ (hash & 0xffff_ffff);
    format!("veth{folded:08x}")
}

/// A node's pod network, set up; attaches and detaches pods.
#[derive(Debug)]
pub struct NodeNetwork {
    config: NodeNetworkConfig,
    store: Mutex<AddressStore>,
}

impl NodeNetwork {
    /// Creates or updates the bridge with the gateway address (`pod_cidr.gateway()/prefix`,
    /// other addresses removed), sets its MTU, brings it up and sets `net.ipv4.ip_forward=1` in
    /// the node's namespace; loads the persisted allocations. Idempotent.
    pub async fn setup(config: NodeNetworkConfig) -> Result<NodeNetwork, PodNetError> {
        validate(&config)?;
        let store = AddressStore::load(&config.state_dir, config.pod_cidr)?;
        link::setup_bridge(&config).await?;
        link::enable_forwarding(config.netns.as_deref()).await?;
        Ok(NodeNetwork {
            config,
            store: Mutex::new(store),
        })
    }

    /// The configuration this network was set up with.
    pub fn config(&self) -> &NodeNetworkConfig {
        &self.config
    }

    /// Connects the pod whose network namespace is `pod_netns` (e.g. `/proc/PID/ns/net`):
    /// a veth pair whose host end ([`host_veth_name`]) is on the bridge and up, and whose other
    /// end is the pod's `eth0`, with the pod's address, up; `lo` up; a default route via the
    /// gateway.
    ///
    /// Idempotent per uid: the same uid keeps its address, also across restarts. When the host
    /// veth exists and the pod's `eth0` has the address, nothing is changed; a host veth left
    /// from an earlier, different namespace is replaced.
    pub async fn attach(&self, pod_uid: &str, pod_netns: &Path) -> Result<PodAddress, PodNetError> {
        let host_veth = host_veth_name(pod_uid);
        let (ip, fresh) = {
            let mut store = self.lock();
            let other = store
                .owners()
                .find(|(uid, _)| *uid != pod_uid && host_veth_name(uid) == host_veth)
                .map(|(uid, _)| uid.to_string());
            if let Some(other_uid) = other {
                return Err(PodNetError::VethNameCollision {
                    pod_uid: pod_uid.to_string(),
                    host_veth,
                    other_uid,
                });
            }
            store.allocate(pod_uid)?
        };
        let address = PodAddress {
            ip,
            prefix: self.config.pod_cidr.prefix,
            gateway: self.config.pod_cidr.gateway(),
            host_veth,
        };
        match link::plumb(&self.config, pod_uid, pod_netns, &address).await {
            Ok(()) => Ok(address),
            Err(error) => {
                if fresh {
                    // Best effort: the plumbing error is the one worth reporting.
                    let _ = self.lock().release(pod_uid);
                }
                Err(error)
            }
        }
    }

    /// Deletes the pod's host veth if present (its `eth0` goes with it) and releases its
    /// address. Idempotent.
    pub async fn detach(&self, pod_uid: &str) -> Result<(), PodNetError> {
        link::delete_veths(&self.config, &[host_veth_name(pod_uid)])
            .await
            .map_err(|error| match error {
                PodNetError::Command {
                    context,
                    command,
                    stderr,
                } => PodNetError::Command {
                    context: format!("detach pod {pod_uid}: {context}"),
                    command,
                    stderr,
                },
                other => other,
            })?;
        self.lock().release(pod_uid)?;
        Ok(())
    }

    /// The address allocated to `pod_uid`, if any.
    pub fn address_of(&self, pod_uid: &str) -> Option<Ipv4Addr> {
        self.lock().get(pod_uid)
    }

    /// Every pod that holds an address, with it.
    pub fn allocations(&self) -> Vec<(String, Ipv4Addr)> {
        self.lock()
            .owners()
            .map(|(uid, addr)| (uid.to_string(), addr))
            .collect()
    }

    /// Releases every allocation whose uid is not in `live` and deletes those pods' host veths
    /// (garbage after a crash); returns the released uids, sorted.
    pub async fn release_except(&self, live: &HashSet<String>) -> Result<Vec<String>, PodNetError> {
        let dead: Vec<String> = self
            .lock()
            .owners()
            .filter(|(uid, _)| !live.contains(*uid))
            .map(|(uid, _)| uid.to_string())
            .collect();
        if dead.is_empty() {
            return Ok(dead);
        }
        let veths: Vec<String> = dead.iter().map(|uid| host_veth_name(uid)).collect();
        link::delete_veths(&self.config, &veths).await?;
        let mut store = self.lock();
        for uid in &dead {
            store.release(uid)?;
        }
        Ok(dead)
    }

    /// The allocations, locked (a poisoned lock still holds consistent data: every change
    /// to it is a single insert or remove).
    fn lock(&self) -> MutexGuard<'_, AddressStore> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Checks what `ip` would reject late or what would break routing.
fn validate(config: &NodeNetworkConfig) -> Result<(), PodNetError> {
    let invalid = |detail: String| Err(PodNetError::InvalidConfig { detail });
    if config.bridge.is_empty()
        || config.bridge.len() > 15
        || config
            .bridge
            .bytes()
            .any(|b| b == b'/' || b.is_ascii_whitespace())
    {
        return invalid(format!(
            "bridge name {:?} must be 1 to 15 bytes without '/' or spaces",
            config.bridge
        ));
    }
    if !(576..=65535).contains(&config.mtu) {
        return invalid(format!("MTU {} is not between 576 and 65535", config.mtu));
    }
    if config.cluster_cidr.prefix > config.pod_cidr.prefix
        || !config.cluster_cidr.contains(config.pod_cidr.network)
    {
        return invalid(format!(
            "pod CIDR {} is not inside the cluster CIDR {}",
            config.pod_cidr, config.cluster_cidr
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_short_stable_and_distinct() {
        let a = host_veth_name("0b1c2d3e-aaaa-bbbb-cccc-000000000001");
        let b = host_veth_name("0b1c2d3e-aaaa-bbbb-cccc-000000000002");
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("veth"));
        assert_ne!(a, b);
        assert_eq!(a, host_veth_name("0b1c2d3e-aaaa-bbbb-cccc-000000000001"));
        // FNV-1a of nothing is the offset basis; folding xors its halves.
        assert_eq!(
            host_veth_name(""),
            format!("veth{:08x}", 0xcbf2_9ce4_u32 ^ 0x8422_2325)
        );
    }

    #[test]
    fn configurations_are_checked() {
        let mut config = NodeNetworkConfig::new(
            "10.42.0.0/24".parse().unwrap(),
            "10.42.0.0/16".parse().unwrap(),
            PathBuf::from("/nonexistent"),
        );
        assert!(validate(&config).is_ok());
        config.bridge = "a-very-long-bridge-name".into();
        assert!(validate(&config).is_err());
        config.bridge = DEFAULT_BRIDGE.into();
        config.cluster_cidr = "10.43.0.0/16".parse().unwrap();
        assert!(validate(&config).is_err());
        config.cluster_cidr = "10.42.0.0/16".parse().unwrap();
        config.mtu = 100;
        assert!(validate(&config).is_err());
    }
}
