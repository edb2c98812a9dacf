//! The service proxy: Services and EndpointSlices turned into nftables rules, as kube-proxy's
//! nftables mode does, in three small steps.
//!
//! 1. [`build`] ([`model`]) translates the Kubernetes objects into a plain [`ProxyModel`]: one
//!    [`ServicePortRules`] per IPv4 service port with its addresses and the endpoints each kind
//!    of traffic may use. Pure, no I/O.
//! 2. [`render`] ([`nft`]) prints the model as one `nft -f` script for the table
//!    `ip skiff-proxy`, which it re-creates from scratch: the swap is one kernel transaction.
//!    Pure.
//! 3. [`Executor`] ([`apply`]) feeds a script to `nft -f -`, optionally inside a network
//!    namespace, and can delete the table again.
//!
//! 4. [`ProxyState`] ([`incremental`]) remembers the last applied model and applies the next
//!    one as one small transaction with only the differences (full replace the first time,
//!    after a failure or when the node's settings change).
//!
//! 5. [`conntrack`] deletes the UDP conntrack entries of endpoints a service no longer uses
//!    (`ProxyState::apply` does it after each successful update), so that UDP clients sending
//!    from one source port are not stuck on a removed endpoint; after each full replace (an
//!    agent's first apply among them) [`conntrack_sweep`] also lists the entries and deletes
//!    those of UDP service ports answered by none of their endpoints (endpoints removed while
//!    the agent was down).
//!
//! The node agent calls `build` + `ProxyState::apply` on every change of a Service, an
//! EndpointSlice or its Node.

pub mod apply;
pub mod conntrack;
pub mod conntrack_sweep;
pub mod hostport;
pub mod incremental;
pub mod model;
pub mod nft;

pub use apply::{Executor, ProxyError};
pub use hostport::{HostPort, host_ports};
pub use incremental::{ApplyKind, ApplyStats, ProxyState};
pub use model::{
    DnsRedirect, Endpoint, ModelWarning, Protocol, ProxyInput, ProxyModel, ServicePortRules,
    TrafficPolicy, build,
};
pub use nft::{TABLE, render};

#[cfg(test)]
pub(crate) mod fixtures;
