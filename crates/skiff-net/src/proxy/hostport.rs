//! `hostPort`: a container port published on the node's own addresses, as the CNI portmap
//! plugin does for the kubelet: traffic to `hostIP:hostPort` (every node address when
//! `hostIP` is unset or `0.0.0.0`) is DNATed to the pod's address and container port.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;

use super::model::Protocol;

/// One published port of a pod on this node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPort {
    /// The node address it answers on; `None`: every node address.
    pub host_ip: Option<Ipv4Addr>,
    /// The node port.
    pub port: u16,
    /// TCP, UDP or SCTP.
    pub protocol: Protocol,
    /// The pod's address.
    pub pod_ip: Ipv4Addr,
    /// The container port.
    pub container_port: u16,
}

/// The host ports of the running, non-host-network pods bound to `node_name` that have an
/// address. A port claimed twice (the scheduler keeps that from happening) goes to the pod
/// listed first.
pub fn host_ports<P: std::borrow::Borrow<Pod>>(pods: &[P], node_name: &str) -> Vec<HostPort> {
    let mut out: Vec<HostPort> = Vec::new();
    for pod in pods {
        let pod: &Pod = pod.borrow();
        let Some(spec) = pod.spec.as_ref() else {
            continue;
        };
        if spec.node_name.as_deref() != Some(node_name)
            || spec.host_network.unwrap_or(false)
            || pod.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let Some(pod_ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        for port in spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
        {
            let (Some(host), Ok(container)) = (port.host_port, u16::try_from(port.container_port))
            else {
                continue;
            };
            let (Ok(host), Some(protocol)) = (
                u16::try_from(host),
                Protocol::parse(port.protocol.as_deref()),
            ) else {
                continue;
            };
            if host == 0 {
                continue;
            }
            let host_ip = port
                .host_ip
                .as_deref()
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
                .filter(|ip| !ip.is_unspecified());
            let taken = out
                .iter()
                .any(|p| p.port == host && p.protocol == protocol && p.host_ip == host_ip);
            if !taken {
                out.push(HostPort {
                    host_ip,
                    port: host,
                    protocol,
                    pod_ip,
                    container_port: container,
                });
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pod(name: &str, node: &str, ip: Option<&str>, ports: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports}]},
            "status": {"podIP": ip},
        }))
        .unwrap()
    }

    #[test]
    fn host_ports_of_local_pods_with_addresses() {
        let pods = [
            pod(
                "a",
                "n1",
                Some("10.42.0.5"),
                serde_json::json!([
                    {"containerPort": 80, "hostPort": 8080},
                    {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "10.0.0.1"},
                    {"containerPort": 9000},
                ]),
            ),
            pod(
                "b",
                "n2",
                Some("10.42.1.5"),
                serde_json::json!([{"containerPort": 80, "hostPort": 8081}]),
            ),
            pod(
                "c",
                "n1",
                None,
                serde_json::json!([{"containerPort": 80, "hostPort": 8082}]),
            ),
            pod(
                "d",
                "n1",
                Some("10.42.0.6"),
                serde_json::json!([{"containerPort": 81, "hostPort": 8080}]),
            ),
        ];
        let ports = host_ports(&pods, "n1");
        assert_eq!(
            ports,
            vec![
                HostPort {
                    host_ip: None,
                    port: 8080,
                    protocol: Protocol::Tcp,
                    pod_ip: "10.42.0.5".parse().unwrap(),
                    container_port: 80
                },
                HostPort {
                    host_ip: Some("10.0.0.1".parse().unwrap()),
                    port: 5353,
                    protocol: Protocol::Udp,
                    pod_ip: "10.42.0.5".parse().unwrap(),
                    container_port: 53
                },
            ]
        );
    }
}
