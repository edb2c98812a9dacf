//! The cluster DNS server each node agent runs: answers the cluster domain (services, headless
//! endpoints, pods, reverse names) like CoreDNS's `kubernetes` plugin, forwards the rest.
//!
//! [`records`] turns API objects into a [`DnsSnapshot`]; [`server`] serves the latest snapshot
//! over UDP and TCP with `hickory-proto` for the wire format.

pub mod records;
pub mod server;

pub use records::{Answer, DnsRecord, DnsSnapshot, Lookup, RecordData, TTL, reverse_name};
pub use server::{
    DEFAULT_UPSTREAM_TIMEOUT, DnsError, DnsHandle, DnsServer, upstreams_from_resolv_conf,
};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Builds the records of `domain` from the cluster's objects: [`DnsSnapshot::build`].
pub fn build(
    services: &[Service],
    slices: &[EndpointSlice],
    pods: &[Pod],
    domain: &str,
) -> DnsSnapshot {
    DnsSnapshot::build(services, slices, pods, domain)
}
