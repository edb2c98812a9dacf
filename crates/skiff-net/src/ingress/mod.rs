//! The built-in Ingress controller (`networking.k8s.io/v1`) each node runs: an HTTP and HTTPS
//! reverse proxy in the agent's process.
//!
//! [`routes`] turns Ingresses, IngressClasses, Services, EndpointSlices and TLS Secrets into a
//! [`RouteTable`] (pure data); [`proxy`] serves the latest table with hyper and rustls,
//! forwarding straight to the ready endpoints (round robin); [`tls`] holds the certificate
//! handling (SNI selection, the self-signed default certificate). [`ingress_status`] is the
//! status the agent or server writes to the Ingresses it serves.

pub mod proxy;
pub mod routes;
pub mod tls;

use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};

pub use proxy::{IngressError, IngressHandle, IngressProxy};
pub use routes::{
    Backend, DEFAULT_CLASS_ANNOTATION, DEFAULT_CLASS_NAME, IngressInput, LEGACY_CLASS_ANNOTATION,
    PathKind, Route, RouteTable, RouteWarning, TLS_SECRET_TYPE, build, served,
};
pub use tls::{DEFAULT_CERT_NAME, DefaultCertificate, TlsError};

/// The route table being served, shared by the proxy's connections, its TLS resolver and
/// [`IngressHandle`]s; replaced as a whole.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedTable(Arc<RwLock<Arc<RouteTable>>>);

impl SharedTable {
    /// The current table.
    pub(crate) fn load(&self) -> Arc<RouteTable> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the table: each request (and handshake) sees the old or the new one.
    pub(crate) fn store(&self, table: RouteTable) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
    }
}

/// The status of an Ingress served by the nodes with addresses `node_ips`, as a merge patch for
/// the Ingress's `status` subresource: `{"status": {"loadBalancer": {"ingress": [{"ip": ..}]}}}`.
///
/// Like k3s's built-in load balancer (ServiceLB), each node address is listed once, IPv4 before
/// IPv6, in address order; unspecified addresses are left out. No addresses gives an empty
/// list (which clears the status).
pub fn ingress_status(node_ips: &[IpAddr]) -> serde_json::Value {
    let mut ips: Vec<IpAddr> = node_ips
        .iter()
        .copied()
        .filter(|ip| !ip.is_unspecified())
        .collect();
    ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    ips.dedup();
    let ingress: Vec<serde_json::Value> = ips
        .iter()
        .map(|ip| serde_json::json!({ "ip": ip.to_string() }))
        .collect();
    serde_json::json!({ "status": { "loadBalancer": { "ingress": ingress } } })
}

#[cfg(test)]
mod status_tests {
    use super::*;

    #[test]
    fn status_lists_node_ips_once_ipv4_first() {
        let ips: Vec<IpAddr> = ["fd00::1", "10.0.0.2", "0.0.0.0", "10.0.0.1", "10.0.0.2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            ingress_status(&ips),
            serde_json::json!({"status": {"loadBalancer": {"ingress": [
                {"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::1"}
            ]}}})
        );
        assert_eq!(
            ingress_status(&[]),
            serde_json::json!({"status": {"loadBalancer": {"ingress": []}}})
        );
    }
}
