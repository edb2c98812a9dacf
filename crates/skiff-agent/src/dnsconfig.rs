//! A pod's `/etc/resolv.conf` and `/etc/hosts`, written the way the kubelet writes them.
//!
//! `dnsPolicy` picks the source: `ClusterFirst` (the default) points at the cluster DNS with
//! the search path `<ns>.svc.<domain> svc.<domain> <domain>` plus the node's own searches
//! and `ndots:5`; `Default` is the node's resolv.conf; `None` is only `dnsConfig`;
//! `ClusterFirstWithHostNet` is `ClusterFirst` also for host-network pods (for which plain
//! `ClusterFirst` falls back to `Default`). `dnsConfig` adds name servers, searches and
//! options to any of them. The hosts file names the pod's address, hostname and, with a
//! subdomain, its fully qualified name, plus `hostAliases`.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;

/// The kubelet's limit on search domains (glibc's old limit was 6).
const MAX_SEARCHES: usize = 32;

/// The cluster's DNS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDns {
    /// The cluster DNS service address (10.43.0.10 by default).
    pub server: Ipv4Addr,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
}

/// The pod's resolv.conf; `host` is the node's own resolv.conf.
pub fn resolv_conf(pod: &Pod, cluster: &ClusterDns, host: &str) -> String {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let (host_servers, host_searches, host_options) = parse(host);
    let (mut servers, mut searches, mut options) = match policy {
        "None" => (Vec::new(), Vec::new(), Vec::new()),
        "Default" => (host_servers, host_searches, host_options),
        "ClusterFirst" if host_network => (host_servers, host_searches, host_options),
        _ => {
            let domain = &cluster.domain;
            let mut searches = vec![
                format!("{namespace}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.clone(),
            ];
            searches.extend(host_searches);
            (
                vec![cluster.server.to_string()],
                searches,
                vec!["ndots:5".to_string()],
            )
        }
    };
    if let Some(config) = spec.and_then(|s| s.dns_config.as_ref()) {
        for server in config.nameservers.iter().flatten() {
            if !servers.contains(server) {
                servers.push(server.clone());
            }
        }
        searches.extend(config.searches.iter().flatten().cloned());
        for option in config.options.iter().flatten() {
            let Some(name) = option.name.as_deref() else {
                continue;
            };
            let text = match &option.value {
                Some(value) => format!("{name}:{value}"),
                None => name.to_string(),
            };
            // A dnsConfig option replaces the one of the same name.
            options.retain(|o| o.split(':').next() != Some(name));
            options.push(text);
        }
    }
    let mut seen = std::collections::HashSet::new();
    searches.retain(|s| seen.insert(s.clone()));
    searches.truncate(MAX_SEARCHES);
    let mut out = String::new();
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for server in servers.iter().take(3) {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// Name servers, searches and options of a resolv.conf; loopback name servers are dropped
/// (a pod cannot reach the node's loopback).
fn parse(text: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut servers, mut searches, mut options) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ip) = words
                    .next()
                    .filter(|ip| !ip.starts_with("127.") && *ip != "::1")
                {
                    servers.push(ip.to_string());
                }
            }
            Some("search") | Some("domain") => {
                searches = words.map(str::to_string).collect();
            }
            Some("options") => options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    (servers, searches, options)
}

/// The pod's hosts file for address `ip` (`None`: a host-network pod, which gets the node's).
pub fn hosts_file(pod: &Pod, ip: Option<Ipv4Addr>, cluster: &ClusterDns, host: &str) -> String {
    let Some(ip) = ip else {
        return host.to_string();
    };
    let spec = pod.spec.as_ref();
    let hostname = crate::container::pod_hostname(pod);
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    match spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())
    {
        Some(subdomain) => out.push_str(&format!(
            "{ip}\t{hostname}.{subdomain}.{namespace}.svc.{}\t{hostname}\n",
            cluster.domain
        )),
        None => out.push_str(&format!("{ip}\t{hostname}\n")),
    }
    let aliases = spec.and_then(|s| s.host_aliases.as_ref());
    if aliases.is_some_and(|a| !a.is_empty()) {
        out.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases.into_iter().flatten() {
            let names = alias.hostnames.clone().unwrap_or_default();
            if !names.is_empty() {
                out.push_str(&format!("{}\t{}\n", alias.ip, names.join("\t")));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn cluster() -> ClusterDns {
        ClusterDns {
            server: Ipv4Addr::new(10, 43, 0, 10),
            domain: "cluster.local".into(),
        }
    }

    const HOST: &str =
        "nameserver 127.0.0.53\nnameserver 192.168.1.1\nsearch corp.example\noptions edns0\n";

    #[test]
    fn cluster_first_points_at_the_cluster_dns_with_the_search_path() {
        let text = resolv_conf(
            &pod(serde_json::json!({"containers": []})),
            &cluster(),
            HOST,
        );
        assert_eq!(
            text,
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.43.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn default_and_host_network_use_the_node_without_loopback_servers() {
        let expected = "search corp.example\nnameserver 192.168.1.1\noptions edns0\n";
        let default = pod(serde_json::json!({"containers": [], "dnsPolicy": "Default"}));
        assert_eq!(resolv_conf(&default, &cluster(), HOST), expected);
        let host = pod(serde_json::json!({"containers": [], "hostNetwork": true}));
        assert_eq!(resolv_conf(&host, &cluster(), HOST), expected);
        let with_net = pod(
            serde_json::json!({"containers": [], "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}),
        );
        assert!(resolv_conf(&with_net, &cluster(), HOST).contains("nameserver 10.43.0.10\n"));
    }

    #[test]
    fn none_takes_only_dns_config_and_options_override_by_name() {
        let none = pod(
            serde_json::json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["1.1.1.1"], "searches": ["a.example"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "rotate"}]}}),
        );
        assert_eq!(
            resolv_conf(&none, &cluster(), HOST),
            "search a.example\nnameserver 1.1.1.1\noptions ndots:2 rotate\n"
        );
        let merged = pod(serde_json::json!({"containers": [], "dnsConfig": {
            "options": [{"name": "ndots", "value": "1"}]}}));
        assert!(resolv_conf(&merged, &cluster(), HOST).ends_with("options ndots:1\n"));
    }

    #[test]
    fn hosts_file_names_the_pod_its_subdomain_and_aliases() {
        let p = pod(serde_json::json!({"containers": [], "subdomain": "web",
            "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}]}));
        let text = hosts_file(&p, Some(Ipv4Addr::new(10, 42, 0, 7)), &cluster(), "");
        assert!(text.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(text.contains("10.42.0.7\tweb-0.web.shop.svc.cluster.local\tweb-0\n"));
        assert!(text.contains("10.1.2.3\tfoo.local\tbar.local\n"));
        let plain = pod(serde_json::json!({"containers": []}));
        assert!(
            hosts_file(&plain, Some(Ipv4Addr::new(10, 42, 0, 8)), &cluster(), "")
                .contains("10.42.0.8\tweb-0\n")
        );
        assert_eq!(
            hosts_file(&plain, None, &cluster(), "node hosts\n"),
            "node hosts\n"
        );
    }
}
