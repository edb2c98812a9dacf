//! The iproute2 batches behind [`super::NodeNetwork`]: the bridge, veth pairs, a pod's side.

use std::net::Ipv4Addr;
use std::path::Path;

use super::{NodeNetworkConfig, POD_INTERFACE, PodAddress, PodNetError};
use crate::iproute::{self, Failure};

/// Creates the bridge if missing, sets its MTU, gateway address (removing any other IPv4
/// address) and brings it up.
pub(super) async fn setup_bridge(config: &NodeNetworkConfig) -> Result<(), PodNetError> {
    let node = config.netns.as_deref();
    let bridge = &config.bridge;
    let context = |what: &str| format!("set up bridge {bridge}: {what}");
    let gateway = config.pod_cidr.gateway();
    let prefix = config.pod_cidr.prefix;
    let mut lines = Vec::new();
    match iproute::json(node, "ip", &["-j", "-d", "addr", "show", "dev", bridge]).await {
        Ok(links) => {
            let link = links.first();
            let kind = link
                .and_then(|l| l.pointer("/linkinfo/info_kind"))
                .and_then(|k| k.as_str())
                .unwrap_or("");
            if kind != "bridge" {
                return Err(PodNetError::Unexpected {
                    context: context("inspect"),
                    detail: format!("device {bridge} exists but is not a bridge (kind {kind:?})"),
                });
            }
            for (addr, len) in inet_addresses(link) {
                if (addr, len) != (gateway, prefix) {
                    lines.push(format!("addr del {addr}/{len} dev {bridge}"));
                }
            }
        }
        Err(failure) if failure.no_device() => {
            lines.push(format!("link add name {bridge} type bridge"));
        }
        Err(failure) => return Err(PodNetError::command(context("inspect"))(failure)),
    }
    lines.push(format!("link set dev {bridge} mtu {} up", config.mtu));
    lines.push(format!("addr replace {gateway}/{prefix} dev {bridge}"));
    iproute::ip_batch(node, &lines)
        .await
        .map_err(PodNetError::command(context("configure")))
}

/// Writes 1 to `/proc/sys/net/ipv4/ip_forward` from inside `netns` (or the caller's own).
pub(super) async fn enable_forwarding(netns: Option<&Path>) -> Result<(), PodNetError> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    match netns {
        None => tokio::fs::write(PATH, b"1\n")
            .await
            .map_err(|source| PodNetError::State {
                action: "write",
                path: PATH.into(),
                source,
            }),
        Some(_) => iproute::run(
            netns,
            "sh",
            &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
            None,
        )
        .await
        .map(drop)
        .map_err(PodNetError::command("enable IPv4 forwarding")),
    }
}

/// Creates the pod's veth pair and configures the pod's side (see
/// [`super::NodeNetwork::attach`]).
pub(super) async fn plumb(
    config: &NodeNetworkConfig,
    pod_uid: &str,
    pod_netns: &Path,
    address: &PodAddress,
) -> Result<(), PodNetError> {
    let node = config.netns.as_deref();
    let host = &address.host_veth;
    let context = |what: String| format!("attach pod {pod_uid}: {what}");
    let netns_text = pod_netns.to_string_lossy();
    if netns_text.is_empty() || netns_text.chars().any(char::is_whitespace) {
        return Err(PodNetError::InvalidConfig {
            detail: format!("pod {pod_uid}: unusable network namespace path {netns_text:?}"),
        });
    }
    let create = [
        format!(
            "link add name {host} mtu {mtu} type veth peer name {POD_INTERFACE} mtu {mtu} netns {netns_text}",
            mtu = config.mtu
        ),
        format!("link set dev {host} master {} up", config.bridge),
        // Hairpin: a pod reaching its own service is DNATed back to itself and must be able
        // to leave through the port it came in on when the bridge passes frames through
        // netfilter (br_netfilter), as kubelet's hairpin-veth mode does.
        format!("link set dev {host} type bridge_slave hairpin on"),
    ];
    match iproute::ip_batch(node, &create).await {
        Ok(()) => {}
        Err(failure) if failure.already_exists() => {
            let (host_exists, pod_ready) = tokio::join!(
                host_veth_exists(node, host),
                pod_has_address(pod_netns, address)
            );
            let host_exists = host_exists.map_err(PodNetError::command(context(format!(
                "look for host veth {host}"
            ))))?;
            let pod_ready = pod_ready.map_err(PodNetError::command(context(format!(
                "read {POD_INTERFACE} in {}",
                pod_netns.display()
            ))))?;
            if host_exists && pod_ready {
                return Ok(());
            }
            if !host_exists {
                // The pod already has an eth0 that is not ours.
                return Err(PodNetError::command(context(format!(
                    "create veth {host} with {POD_INTERFACE} in {}",
                    pod_netns.display()
                )))(failure));
            }
            // A host veth left from an earlier namespace of this pod: replace it.
            delete_veths(config, std::slice::from_ref(host)).await?;
            if let Err(failure) = iproute::ip_batch(node, &create).await {
                let _ = iproute::ip_batch(node, &[format!("link del dev {host}")]).await;
                return Err(PodNetError::command(context(format!(
                    "recreate veth {host}"
                )))(failure));
            }
        }
        Err(failure) => {
            // `link add` may have worked and `link set` not.
            let _ = iproute::ip_batch(node, &[format!("link del dev {host}")]).await;
            return Err(PodNetError::command(context(format!(
                "create veth {host} on bridge {}",
                config.bridge
            )))(failure));
        }
    }
    let pod = [
        "link set dev lo up".to_string(),
        format!(
            "addr replace {}/{} dev {POD_INTERFACE}",
            address.ip, address.prefix
        ),
        format!("link set dev {POD_INTERFACE} up"),
        format!(
            "route replace default via {} dev {POD_INTERFACE}",
            address.gateway
        ),
    ];
    if let Err(failure) = iproute::ip_batch(Some(pod_netns), &pod).await {
        let _ = iproute::ip_batch(node, &[format!("link del dev {host}")]).await;
        return Err(PodNetError::command(context(format!(
            "configure {POD_INTERFACE} in {}",
            pod_netns.display()
        )))(failure));
    }
    Ok(())
}

/// Deletes the named host veths in one batch; missing ones are fine.
pub(super) async fn delete_veths(
    config: &NodeNetworkConfig,
    names: &[String],
) -> Result<(), PodNetError> {
    let mut batch: String = names
        .iter()
        .map(|name| format!("link del dev {name}\n"))
        .collect();
    if batch.is_empty() {
        return Ok(());
    }
    batch.push('\n');
    let result = iproute::run(
        config.netns.as_deref(),
        "ip",
        &["-force", "-batch", "-"],
        Some(&batch),
    )
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(failure) => {
            let real = failure.stderr.lines().any(|line| {
                let line = line.trim();
                !line.is_empty()
                    && !line.contains("Cannot find device")
                    && !line.starts_with("Command failed")
            });
            if real || failure.stderr.is_empty() {
                Err(PodNetError::command(format!(
                    "delete host veths {}",
                    names.join(", ")
                ))(failure))
            } else {
                Ok(())
            }
        }
    }
}

/// Whether `name` exists in the node's namespace.
async fn host_veth_exists(node: Option<&Path>, name: &str) -> Result<bool, Failure> {
    match iproute::run(node, "ip", &["-o", "link", "show", "dev", name], None).await {
        Ok(_) => Ok(true),
        Err(failure) if failure.no_device() => Ok(false),
        Err(failure) => Err(failure),
    }
}

/// Whether the pod's `eth0` has exactly `address`'s address and prefix.
async fn pod_has_address(pod_netns: &Path, address: &PodAddress) -> Result<bool, Failure> {
    match iproute::json(
        Some(pod_netns),
        "ip",
        &["-j", "-4", "addr", "show", "dev", POD_INTERFACE],
    )
    .await
    {
        Ok(links) => Ok(inet_addresses(links.first()).contains(&(address.ip, address.prefix))),
        Err(failure) if failure.no_device() => Ok(false),
        Err(failure) => Err(failure),
    }
}

/// The IPv4 addresses in an `ip -j addr show` entry.
fn inet_addresses(link: Option<&serde_json::Value>) -> Vec<(Ipv4Addr, u8)> {
    let Some(infos) = link
        .and_then(|l| l.get("addr_info"))
        .and_then(|a| a.as_array())
    else {
        return Vec::new();
    };
    infos
        .iter()
        .filter(|info| info.get("family").and_then(|f| f.as_str()) == Some("inet"))
        .filter_map(|info| {
            let addr = info.get("local")?.as_str()?.parse().ok()?;
            let len = u8::try_from(info.get("prefixlen")?.as_u64()?).ok()?;
            Some((addr, len))
        })
        .collect()
}
