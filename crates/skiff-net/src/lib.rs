//! Cluster networking for Skiff: pod network, IPAM, service proxy rules, DNS, network policy.
//!
//! Today: host-local IPAM, handing out pod addresses from a node's pod CIDR. The agent and
//! networking issues add the bridge and veth plumbing, routes between nodes, nftables rules for
//! services and policy, and the DNS server.

pub mod dns;
pub mod ingress;
pub mod ipam;
mod iproute;
mod nftcmd;
pub mod podnet;
pub mod policy;
pub mod proxy;
pub mod routes;
pub mod slices;

pub use ipam::{Ipam, IpamError, Ipv4Cidr};
