//! NetworkPolicy (`networking.k8s.io/v1`) enforcement for the pods of one node, in the same
//! three steps as the service proxy.
//!
//! 1. [`build`] ([`model`]) resolves NetworkPolicies, Pods and Namespaces into a plain
//!    [`PolicyModel`]: which local pods are isolated for ingress and egress, and each
//!    selecting policy's rules as address sets and port lists (named ports resolved per
//!    destination pod). Pure, no I/O.
//! 2. [`render`] ([`nft`]) prints the model as one `nft -f` script for the tables
//!    `inet skiff-policy` and `bridge skiff-policy`, which it re-creates from scratch in one
//!    kernel transaction. Pure.
//! 3. [`Executor`] ([`apply`]) switches `br_netfilter` on in the node's namespace (so that
//!    pod-to-pod traffic on the bridge passes the IP forward hook) and feeds a script to
//!    `nft -f -`, optionally inside a network namespace; it can delete the tables again.
//!
//! The tables always exist once applied (empty maps when no pod is isolated). Replies of
//! allowed connections pass (`ct direction reply`); every packet in the original direction is
//! judged, so applying or removing a policy takes effect on open connections.
//!
//! Wiring (node agent): reflect NetworkPolicies and Namespaces next to the Pods, and after
//! each burst of changes call [`build`] with all of them, this node's name and the bridge,
//! [`render`], and [`Executor::apply`] when the script differs from the last one applied
//! (log [`PolicyModel::warnings`]). A pod is enforced once its `status.podIP` is in the
//! model; peers likewise, so a new client pod is let in after the next re-render.

pub mod apply;
pub mod model;
pub mod nft;

pub use apply::{BRIDGE_NF_CALL_IPTABLES, Executor, PolicyError};
pub use model::{
    AddressSet, LocalPod, NAMESPACE_NAME_LABEL, NamedPort, Packet, Peers, PolicyInput, PolicyModel,
    PolicyRules, PolicyWarning, PortRange, Ports, Protocol, Rule, build,
};
pub use nft::{TABLE, render};

#[cfg(test)]
mod tests;
