//! Ingresses, Services, EndpointSlices and TLS Secrets translated into a [`RouteTable`]: which
//! backend endpoints answer a host and path, and which certificate answers a server name.
//!
//! Matching follows the Ingress specification: hosts exact or `*.domain` (one label), paths
//! `Exact` or `Prefix` (element-wise on `/`; `ImplementationSpecific` is treated as `Prefix`),
//! the longest path first and `Exact` before `Prefix` at equal length. A request is matched
//! against the rules of its exact host, then those of a wildcard host covering it, then the
//! rules without a host (as Traefik, k3s's built-in ingress controller, does), and finally the
//! default backend (`spec.defaultBackend` of the oldest Ingress that has one).
//! Conflicting definitions (the same host and path, the same TLS host) are won by the oldest
//! Ingress (creation timestamp, then namespace and name).

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::{Secret, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rustls::sign::CertifiedKey;

use crate::ingress::tls;

/// The IngressClass name Skiff's built-in controller answers to by default.
pub const DEFAULT_CLASS_NAME: &str = "skiff";
/// The annotation that makes an IngressClass the cluster's default (`"true"`).
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The annotation that named an Ingress's class before `spec.ingressClassName`.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// The Secret type holding a certificate chain and key (`tls.crt`, `tls.key`).
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Everything the route table depends on, as the node agent sees it. Services and slices
/// may be given as themselves or as anything borrowing them (a reflector store's `Arc`s).
#[derive(Debug, Clone, Copy)]
pub struct IngressInput<'a, S = Service, E = EndpointSlice> {
    /// All Ingresses of the cluster (those of other classes are skipped).
    pub ingresses: &'a [Ingress],
    /// All IngressClasses (to know whether `class_name` is the default class).
    pub classes: &'a [IngressClass],
    /// All Services.
    pub services: &'a [S],
    /// All EndpointSlices.
    pub slices: &'a [E],
    /// The Secrets that TLS sections may name (others are ignored).
    pub secrets: &'a [Secret],
    /// The class this controller implements ([`DEFAULT_CLASS_NAME`]).
    pub class_name: &'a str,
}

/// How a rule's path matches a request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathKind {
    /// The whole path, byte for byte.
    Exact,
    /// Whole `/`-separated elements: `/foo` matches `/foo` and `/foo/bar`, not `/foobar`.
    /// Also used for `ImplementationSpecific`.
    Prefix,
}

/// Something of the input that was skipped or resolved in a degraded way; the rest of the table
/// is still valid. Each names the Ingress concerned as `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteWarning {
    /// A path that cannot be used (does not start with `/`, unknown path type).
    #[error("ingress {ingress}: path {path:?} ({path_type}) skipped: {reason}")]
    BadPath {
        /// `namespace/name` of the Ingress.
        ingress: String,
        /// The path as written.
        path: String,
        /// The path type as written.
        path_type: String,
        /// Why.
        reason: String,
    },
    /// A host that is not a valid host name or wildcard.
    #[error("ingress {ingress}: host {host:?} skipped: {reason}")]
    BadHost {
        /// `namespace/name` of the Ingress.
        ingress: String,
        /// The host as written.
        host: String,
        /// Why.
        reason: String,
    },
    /// A backend that resolves to no endpoints for a reason other than no ready pods.
    #[error("ingress {ingress}: backend {backend}: {reason} (answers 503)")]
    Backend {
        /// `namespace/name` of the Ingress.
        ingress: String,
        /// The backend (`service:port` or the resource).
        backend: String,
        /// Why.
        reason: String,
    },
    /// A host and path (or TLS host, or default backend) an older Ingress defines already.
    #[error("ingress {ingress}: {what} already defined by {owner}, ignored")]
    Conflict {
        /// `namespace/name` of the later Ingress.
        ingress: String,
        /// The host and path, or TLS host, in question.
        what: String,
        /// `namespace/name` of the Ingress that keeps it.
        owner: String,
    },
    /// A TLS section whose Secret is missing, of the wrong type or unusable.
    #[error("ingress {ingress}: TLS secret {secret}: {reason}")]
    Tls {
        /// `namespace/name` of the Ingress.
        ingress: String,
        /// `namespace/name` of the Secret.
        secret: String,
        /// Why.
        reason: String,
    },
}

/// Where matching requests go: the ready endpoints of one service port.
#[derive(Debug)]
pub struct Backend {
    /// The Service's namespace (the Ingress's).
    pub namespace: String,
    /// The Service's name.
    pub service: String,
    /// The service port as the Ingress names it (a number or a name).
    pub port: String,
    /// The ready endpoints (address and target port), sorted; empty answers 503.
    pub endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl Backend {
    fn new(namespace: &str, service: &str, port: String, endpoints: Vec<SocketAddr>) -> Backend {
        Backend {
            namespace: namespace.to_string(),
            service: service.to_string(),
            port,
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// All endpoints, starting at the next one in round-robin order: the first is the choice
    /// for a new request, the rest are the ones to retry when connecting fails.
    pub fn pick(&self) -> Vec<SocketAddr> {
        let n = self.endpoints.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        (0..n).map(|i| self.endpoints[(start + i) % n]).collect()
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)
    }
}

/// One path rule of a host.
#[derive(Debug, Clone)]
pub struct Route {
    /// How the path matches.
    pub kind: PathKind,
    /// The path, for `Prefix` without a trailing `/` (`/` itself stays `/`).
    pub path: String,
    /// Where matching requests go.
    pub backend: Arc<Backend>,
    /// `namespace/name` of the Ingress that defined it.
    pub ingress: String,
}

impl Route {
    /// Whether the request path (without the query) matches.
    pub fn matches(&self, request_path: &str) -> bool {
        match self.kind {
            PathKind::Exact => request_path == self.path,
            PathKind::Prefix => prefix_matches(&self.path, request_path),
        }
    }
}

/// `Prefix` matching on whole path elements; `prefix` has no trailing `/` (except `/` itself).
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The routing data of one node's ingress proxy; [`crate::ingress::IngressProxy::update`]
/// swaps it in.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Rules by exact host (lower case), each list in match order.
    exact: HashMap<String, Vec<Route>>,
    /// Rules of `*.domain` hosts by `domain` (lower case), each list in match order.
    wildcard: HashMap<String, Vec<Route>>,
    /// Rules without a host, in match order.
    any_host: Vec<Route>,
    /// Where unmatched requests go.
    default_backend: Option<Arc<Backend>>,
    /// Certificates by exact host or `*.domain`.
    certificates: HashMap<String, Arc<CertifiedKey>>,
    /// `namespace/name` of the Ingresses served, oldest first.
    ingresses: Vec<String>,
    /// What was skipped and why.
    warnings: Vec<RouteWarning>,
}

impl RouteTable {
    /// A table without routes: every request answers 404.
    pub fn empty() -> RouteTable {
        RouteTable::default()
    }

    /// The backend for a request to `host` (a `Host` header or authority: a port and a trailing
    /// dot are ignored, case does not matter) and `path` (without the query); `None` means 404.
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Backend>> {
        let host = normalize_request_host(host);
        let lists = [
            self.exact.get(&host),
            wildcard_key(&host).and_then(|domain| self.wildcard.get(domain)),
            Some(&self.any_host),
        ];
        lists
            .into_iter()
            .flatten()
            .find_map(|routes| routes.iter().find(|r| r.matches(path)))
            .map(|r| &r.backend)
            .or(self.default_backend.as_ref())
    }

    /// The certificate for a TLS server name: the exact host's, else that of a `*.domain`
    /// covering it; `None` means the proxy's default certificate.
    pub fn certificate(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let name = normalize_request_host(server_name);
        if let Some(key) = self.certificates.get(&name) {
            return Some(key.clone());
        }
        let domain = wildcard_key(&name)?;
        self.certificates.get(&format!("*.{domain}")).cloned()
    }

    /// The hosts (and `*.domain`s) that have a certificate, sorted.
    pub fn tls_hosts(&self) -> Vec<&str> {
        let mut hosts: Vec<&str> = self.certificates.keys().map(String::as_str).collect();
        hosts.sort_unstable();
        hosts
    }

    /// The default backend, if any Ingress has one.
    pub fn default_backend(&self) -> Option<&Arc<Backend>> {
        self.default_backend.as_ref()
    }

    /// Whether the table has no rules, default backend nor certificates.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
            && self.wildcard.is_empty()
            && self.any_host.is_empty()
            && self.default_backend.is_none()
            && self.certificates.is_empty()
    }

    /// `namespace/name` of the Ingresses of the class (those whose status should name this
    /// node), oldest first.
    pub fn ingresses(&self) -> &[String] {
        &self.ingresses
    }

    /// What was skipped while building and why.
    pub fn warnings(&self) -> &[RouteWarning] {
        &self.warnings
    }
}

/// The host of a `Host` header or authority, lower case, without port or trailing dot.
fn normalize_request_host(host: &str) -> String {
    let host = host.trim();
    let host = if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal: `[::1]:8080`.
        rest.split(']').next().unwrap_or(rest)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The domain a `*.domain` rule would need to cover `host` (everything after the first label).
fn wildcard_key(host: &str) -> Option<&str> {
    let (label, domain) = host.split_once('.')?;
    (!label.is_empty() && !domain.is_empty()).then_some(domain)
}

/// A rule's host as written, checked: `Exact(host)`, `Wildcard(domain)` (lower case).
enum HostKey {
    Exact(String),
    Wildcard(String),
}

fn parse_rule_host(host: &str) -> Result<HostKey, String> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(domain) => (true, domain.to_string()),
        None => (false, host.clone()),
    };
    if name.is_empty() {
        return Err("empty host name".into());
    }
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !name.split('.').all(valid_label) {
        return Err("not a DNS name (a wildcard is only allowed as the first label `*.`)".into());
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err("IP addresses are not allowed as hosts".into());
    }
    Ok(if wildcard {
        HostKey::Wildcard(name)
    } else {
        HostKey::Exact(name)
    })
}

/// The Ingresses of `input.class_name` (the selection [`build`] makes), oldest first
/// (creation timestamp, then namespace and name); Ingresses being deleted are left out.
pub fn served<'a, S, E>(input: &IngressInput<'a, S, E>) -> Vec<&'a Ingress> {
    selected(input)
        .into_iter()
        .map(|(ingress, _)| ingress)
        .collect()
}

/// Selected Ingresses, oldest first, with their `namespace/name`.
fn selected<'a, S, E>(input: &IngressInput<'a, S, E>) -> Vec<(&'a Ingress, String)> {
    let default_class = input.classes.iter().any(|class| {
        class.metadata.name.as_deref() == Some(input.class_name)
            && class
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true")
    });
    let mut chosen: Vec<&Ingress> = input
        .ingresses
        .iter()
        .filter(|ingress| {
            let spec_class = ingress
                .spec
                .as_ref()
                .and_then(|s| s.ingress_class_name.as_deref());
            let legacy = ingress
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
                .map(String::as_str);
            match (spec_class, legacy) {
                (Some(class), _) => class == input.class_name,
                (None, Some(class)) => class == input.class_name,
                (None, None) => default_class,
            }
        })
        .filter(|ingress| ingress.metadata.deletion_timestamp.is_none())
        .collect();
    chosen.sort_by(|a, b| {
        let key = |i: &'a Ingress| {
            (
                // Ingresses without a timestamp (not yet stored) sort last.
                i.metadata.creation_timestamp.is_none(),
                i.metadata.creation_timestamp.as_ref().map(|t| t.0),
                i.metadata.namespace.as_deref().unwrap_or("default"),
                i.metadata.name.as_deref().unwrap_or(""),
            )
        };
        key(a).cmp(&key(b))
    });
    chosen
        .into_iter()
        .map(|ingress| {
            let id = format!(
                "{}/{}",
                ingress.metadata.namespace.as_deref().unwrap_or("default"),
                ingress.metadata.name.as_deref().unwrap_or("")
            );
            (ingress, id)
        })
        .collect()
}

/// Resolves backends against Services and EndpointSlices, sharing one [`Backend`] (and its
/// round-robin position) between the rules naming the same service port.
struct Resolver<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: std::collections::BTreeMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    cache: HashMap<(String, String, String), Arc<Backend>>,
}

impl<'a> Resolver<'a> {
    fn new<S: Borrow<Service>, E: Borrow<EndpointSlice>>(
        input: &IngressInput<'a, S, E>,
    ) -> Resolver<'a> {
        let mut services = HashMap::new();
        for service in input.services {
            let service: &Service = service.borrow();
            let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
            let name = service.metadata.name.as_deref().unwrap_or("");
            services.insert((namespace, name), service);
        }
        let slices = crate::slices::by_service(input.slices, &["IPv4", "IPv6"]);
        Resolver {
            services,
            slices,
            cache: HashMap::new(),
        }
    }

    /// The backend of an `IngressBackend` in `namespace`; problems become warnings and a
    /// backend without endpoints (503).
    fn resolve(
        &mut self,
        namespace: &str,
        backend: &IngressBackend,
        ingress: &str,
        warnings: &mut Vec<RouteWarning>,
    ) -> Arc<Backend> {
        let Some(service) = backend.service.as_ref() else {
            let what = backend
                .resource
                .as_ref()
                .map(|r| format!("resource {}/{}", r.kind, r.name))
                .unwrap_or_else(|| "(empty)".to_string());
            warnings.push(RouteWarning::Backend {
                ingress: ingress.to_string(),
                backend: what.clone(),
                reason: "only service backends are supported".into(),
            });
            return Arc::new(Backend::new(namespace, "", what, Vec::new()));
        };
        let port = service.port.as_ref();
        let port_label = match (
            port.and_then(|p| p.number),
            port.and_then(|p| p.name.as_deref()),
        ) {
            (Some(number), _) => number.to_string(),
            (None, Some(name)) => name.to_string(),
            (None, None) => String::new(),
        };
        let key = (
            namespace.to_string(),
            service.name.clone(),
            port_label.clone(),
        );
        if let Some(found) = self.cache.get(&key) {
            return found.clone();
        }
        let (endpoints, problem) = self.endpoints(namespace, &service.name, port);
        if let Some(reason) = problem {
            warnings.push(RouteWarning::Backend {
                ingress: ingress.to_string(),
                backend: format!("{}:{port_label}", service.name),
                reason,
            });
        }
        let resolved = Arc::new(Backend::new(
            namespace,
            &service.name,
            port_label,
            endpoints,
        ));
        self.cache.insert(key, resolved.clone());
        resolved
    }

    /// The ready endpoints of a service port, or none and the reason.
    fn endpoints(
        &self,
        namespace: &str,
        name: &str,
        port: Option<&k8s_openapi::api::networking::v1::ServiceBackendPort>,
    ) -> (Vec<SocketAddr>, Option<String>) {
        let Some(service) = self.services.get(&(namespace, name)) else {
            return (Vec::new(), Some("no such service".into()));
        };
        let Some(spec) = service.spec.as_ref() else {
            return (Vec::new(), Some("the service has no spec".into()));
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            return (
                Vec::new(),
                Some("ExternalName services are not supported".into()),
            );
        }
        let ports = spec.ports.as_deref().unwrap_or_default();
        let service_port: Option<&ServicePort> = match port {
            Some(p) if p.number.is_some() => ports.iter().find(|sp| Some(sp.port) == p.number),
            Some(p) if p.name.is_some() => ports
                .iter()
                .find(|sp| sp.name.is_some() && sp.name == p.name),
            // No port: a single-port service is unambiguous.
            _ if ports.len() == 1 => ports.first(),
            _ => None,
        };
        let Some(service_port) = service_port else {
            return (Vec::new(), Some("the service has no such port".into()));
        };
        if !matches!(service_port.protocol.as_deref(), None | Some("TCP")) {
            return (Vec::new(), Some("the service port is not TCP".into()));
        }
        let port_name = service_port.name.as_deref().unwrap_or("");
        let mut found: Vec<SocketAddr> = Vec::new();
        for slice in self
            .slices
            .get(&(namespace, name))
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            // kube-proxy's rule: the slice port with the service port's name carries the
            // target port as resolved for this slice's pods.
            let Some(slice_port) = slice.ports.iter().flatten().find(|p| {
                p.name.as_deref().unwrap_or("") == port_name
                    && matches!(p.protocol.as_deref(), None | Some("TCP"))
            }) else {
                continue;
            };
            let number = match slice_port.port {
                Some(n) => u16::try_from(n).ok(),
                None => match &service_port.target_port {
                    Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
                    Some(IntOrString::String(_)) => None,
                    None => u16::try_from(service_port.port).ok(),
                },
            };
            let Some(number) = number.filter(|n| *n > 0) else {
                continue;
            };
            for endpoint in &slice.endpoints {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                if !ready {
                    continue;
                }
                let Some(ip) = endpoint
                    .addresses
                    .first()
                    .and_then(|a| a.parse::<IpAddr>().ok())
                else {
                    continue;
                };
                found.push(SocketAddr::new(ip, number));
            }
        }
        found.sort_unstable();
        found.dedup();
        (found, None)
    }
}

/// Builds the route table of the Ingresses of `input.class_name`.
///
/// Ingresses are taken when `spec.ingressClassName` names the class; without it when the legacy
/// annotation `kubernetes.io/ingress.class` names it; without either when the IngressClass of
/// that name is the default class. Never fails: what cannot be used is left out and listed in
/// [`RouteTable::warnings`].
pub fn build<S: Borrow<Service>, E: Borrow<EndpointSlice>>(
    input: &IngressInput<S, E>,
) -> RouteTable {
    let mut table = RouteTable::default();
    let mut warnings = Vec::new();
    let mut resolver = Resolver::new(input);
    // (host group, kind, path) -> owner, to report conflicts.
    let mut owners: HashMap<(String, PathKind, String), String> = HashMap::new();
    let mut default_owner: Option<String> = None;
    let mut tls_owners: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut secrets_parsed: HashMap<(String, String), Result<Arc<CertifiedKey>, String>> =
        HashMap::new();

    for (ingress, id) in selected(input) {
        table.ingresses.push(id.clone());
        let namespace = ingress.metadata.namespace.as_deref().unwrap_or("default");
        let Some(spec) = ingress.spec.as_ref() else {
            continue;
        };
        if let Some(backend) = &spec.default_backend {
            match &default_owner {
                Some(owner) => warnings.push(RouteWarning::Conflict {
                    ingress: id.clone(),
                    what: "the default backend".into(),
                    owner: owner.clone(),
                }),
                None => {
                    table.default_backend =
                        Some(resolver.resolve(namespace, backend, &id, &mut warnings));
                    default_owner = Some(id.clone());
                }
            }
        }

        let mut rule_hosts: Vec<String> = Vec::new();
        for rule in spec.rules.iter().flatten() {
            let host_key = match rule.host.as_deref().filter(|h| !h.is_empty()) {
                None => None,
                Some(host) => match parse_rule_host(host) {
                    Ok(key) => Some(key),
                    Err(reason) => {
                        warnings.push(RouteWarning::BadHost {
                            ingress: id.clone(),
                            host: host.to_string(),
                            reason,
                        });
                        continue;
                    }
                },
            };
            let group = match &host_key {
                None => String::new(),
                Some(HostKey::Exact(h)) => h.clone(),
                Some(HostKey::Wildcard(d)) => format!("*.{d}"),
            };
            if !group.is_empty() && !rule_hosts.contains(&group) {
                rule_hosts.push(group.clone());
            }
            for path in rule.http.iter().flat_map(|h| h.paths.iter()) {
                let raw = path.path.as_deref().unwrap_or("/");
                let kind = match path.path_type.as_str() {
                    "Exact" => PathKind::Exact,
                    "Prefix" | "ImplementationSpecific" | "" => PathKind::Prefix,
                    other => {
                        warnings.push(RouteWarning::BadPath {
                            ingress: id.clone(),
                            path: raw.to_string(),
                            path_type: other.to_string(),
                            reason: "unknown path type".into(),
                        });
                        continue;
                    }
                };
                if !raw.starts_with('/') {
                    warnings.push(RouteWarning::BadPath {
                        ingress: id.clone(),
                        path: raw.to_string(),
                        path_type: path.path_type.clone(),
                        reason: "paths must start with `/`".into(),
                    });
                    continue;
                }
                let normalized = match kind {
                    PathKind::Exact => raw.to_string(),
                    PathKind::Prefix => {
                        let trimmed = raw.trim_end_matches('/');
                        if trimmed.is_empty() {
                            "/".to_string()
                        } else {
                            trimmed.to_string()
                        }
                    }
                };
                let owner_key = (group.clone(), kind, normalized.clone());
                if let Some(owner) = owners.get(&owner_key) {
                    if *owner != id {
                        warnings.push(RouteWarning::Conflict {
                            ingress: id.clone(),
                            what: format!("host {group:?} path {normalized:?} ({kind:?})"),
                            owner: owner.clone(),
                        });
                    }
                    continue;
                }
                owners.insert(owner_key, id.clone());
                let backend = resolver.resolve(namespace, &path.backend, &id, &mut warnings);
                let route = Route {
                    kind,
                    path: normalized,
                    backend,
                    ingress: id.clone(),
                };
                match &host_key {
                    None => table.any_host.push(route),
                    Some(HostKey::Exact(h)) => {
                        table.exact.entry(h.clone()).or_default().push(route)
                    }
                    Some(HostKey::Wildcard(d)) => {
                        table.wildcard.entry(d.clone()).or_default().push(route)
                    }
                }
            }
        }

        for section in spec.tls.iter().flatten() {
            let Some(secret_name) = section.secret_name.as_deref().filter(|s| !s.is_empty()) else {
                continue;
            };
            let secret_id = format!("{namespace}/{secret_name}");
            let hosts: Vec<String> = match section.hosts.as_deref() {
                Some(hosts) if !hosts.is_empty() => hosts
                    .iter()
                    .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                    .collect(),
                // No hosts: the certificate serves the hosts of this Ingress's rules.
                _ => rule_hosts.clone(),
            };
            let parsed = secrets_parsed
                .entry((namespace.to_string(), secret_name.to_string()))
                .or_insert_with(|| load_secret(input.secrets, namespace, secret_name))
                .clone();
            let key = match parsed {
                Ok(key) => key,
                Err(reason) => {
                    warnings.push(RouteWarning::Tls {
                        ingress: id.clone(),
                        secret: secret_id,
                        reason,
                    });
                    continue;
                }
            };
            for host in hosts {
                if host.is_empty() {
                    continue;
                }
                match tls_owners.get(&host) {
                    Some((owner, owner_secret)) => {
                        if *owner_secret != secret_id {
                            warnings.push(RouteWarning::Conflict {
                                ingress: id.clone(),
                                what: format!("TLS host {host:?} (secret {secret_id})"),
                                owner: owner.clone(),
                            });
                        }
                    }
                    None => {
                        tls_owners.insert(host.clone(), (id.clone(), secret_id.clone()));
                        table.certificates.insert(host, key.clone());
                    }
                }
            }
        }
    }

    let order = |routes: &mut Vec<Route>| {
        // Longest path first, Exact before Prefix at equal length; stable for the rest.
        routes.sort_by(|a, b| {
            b.path
                .len()
                .cmp(&a.path.len())
                .then_with(|| a.kind.cmp(&b.kind))
        });
    };
    table.exact.values_mut().for_each(order);
    table.wildcard.values_mut().for_each(order);
    order(&mut table.any_host);
    table.warnings = warnings;
    table
}

/// The certificate and key of a `kubernetes.io/tls` Secret, or why not.
fn load_secret(
    secrets: &[Secret],
    namespace: &str,
    name: &str,
) -> Result<Arc<CertifiedKey>, String> {
    let secret = secrets
        .iter()
        .find(|s| {
            s.metadata.namespace.as_deref().unwrap_or("default") == namespace
                && s.metadata.name.as_deref() == Some(name)
        })
        .ok_or_else(|| "no such secret".to_string())?;
    if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) {
        return Err(format!(
            "type {:?}, not {TLS_SECRET_TYPE}",
            secret.type_.as_deref().unwrap_or("Opaque")
        ));
    }
    let data = secret.data.as_ref();
    let field = |key: &str| -> Result<&[u8], String> {
        data.and_then(|d| d.get(key))
            .map(|b| b.0.as_slice())
            .ok_or_else(|| format!("no {key}"))
    };
    let key =
        tls::certified_key(field("tls.crt")?, field("tls.key")?).map_err(|e| e.to_string())?;
    Ok(Arc::new(key))
}

#[cfg(test)]
mod tests;
