//! The pure half of allocation: which address or port is free, as kube-apiserver's bitmap
//! allocators pick them.
//!
//! Both ranges keep a low "static band" (kube-apiserver's `ServiceIPStaticSubrange` and
//! `ServiceNodePortStaticSubrange`): dynamic allocation takes it only when the rest of the
//! range is full, so addresses and ports users choose themselves rarely collide with
//! allocated ones. In the service CIDR the network address and (below /31) the broadcast
//! address are never used, and offsets 1 (`kubernetes`) and 10 (`kube-dns`) are never picked
//! dynamically.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use skiff_apimachinery::cidr::{Ipv4Cidr, PortRange};

/// Offsets in the service CIDR dynamic allocation never picks: `.1` for the `kubernetes`
/// Service, `.10` for `kube-dns`.
pub const RESERVED_IP_OFFSETS: [u64; 2] = [1, 10];

/// The static band of a service CIDR of `size` addresses: min(max(16, size/16), 256).
pub fn ip_band(size: u64) -> u64 {
    (size / 16).clamp(16, 256).min(size)
}

/// The static band of a node port range of `size` ports: min(max(16, size/32), 128).
pub fn port_band(size: u64) -> u64 {
    (size / 32).clamp(16, 128).min(size)
}

/// The usable offsets of a service CIDR, `[first, end)`: without the network and broadcast
/// addresses (a /31 or /32 uses every address).
pub fn usable_offsets(cidr: &Ipv4Cidr) -> (u64, u64) {
    if cidr.prefix() >= 31 {
        (0, cidr.size())
    } else {
        (1, cidr.size() - 1)
    }
}

/// Whether `ip` may be a Service's cluster IP in `cidr` (inside, neither network nor
/// broadcast address).
pub fn ip_in_range(cidr: &Ipv4Cidr, ip: Ipv4Addr) -> bool {
    let (first, end) = usable_offsets(cidr);
    cidr.offset_of(ip).is_some_and(|o| o >= first && o < end)
}

/// The first offset in `[first, end)` that `free` accepts, scanning from a point `seed`
/// chooses: first above the static band `band`, then inside it.
pub fn pick(
    first: u64,
    end: u64,
    band: u64,
    seed: u64,
    mut free: impl FnMut(u64) -> bool,
) -> Option<u64> {
    let split = band.clamp(first, end.max(first));
    for (low, high) in [(split, end), (first, split)] {
        if low >= high {
            continue;
        }
        let span = high - low;
        let start = seed % span;
        for i in 0..span {
            let offset = low + (start + i) % span;
            if free(offset) {
                return Some(offset);
            }
        }
    }
    None
}

/// A free cluster IP of `cidr` not in `used`, or `None` when the range is full.
pub fn next_free_ip(cidr: &Ipv4Cidr, used: &HashSet<Ipv4Addr>, seed: u64) -> Option<Ipv4Addr> {
    let (first, end) = usable_offsets(cidr);
    let offset = pick(first, end, ip_band(cidr.size()), seed, |o| {
        !RESERVED_IP_OFFSETS.contains(&o) && cidr.nth(o).is_some_and(|ip| !used.contains(&ip))
    })?;
    cidr.nth(offset)
}

/// A free node port of `range` not in `used`, or `None` when the range is full.
pub fn next_free_port(range: &PortRange, used: &HashSet<u16>, seed: u64) -> Option<u16> {
    let size = u64::from(range.size());
    let offset = pick(0, size, port_band(size), seed, |o| {
        u32::try_from(o)
            .ok()
            .and_then(|o| range.nth(o))
            .is_some_and(|p| !used.contains(&p))
    })?;
    range.nth(u32::try_from(offset).ok()?)
}

/// A random seed for [`pick`].
pub fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    crate::object::random_bytes(&mut bytes);
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Ipv4Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn dynamic_ips_avoid_the_static_band_and_reserved_addresses() {
        let range = cidr("10.43.0.0/16");
        let used = HashSet::new();
        for seed in [0, 1, 255, 65535, u64::MAX] {
            let ip = next_free_ip(&range, &used, seed).unwrap();
            let offset = range.offset_of(ip).unwrap();
            assert!((256..65535).contains(&offset), "{ip}");
        }
        assert_eq!(ip_band(65536), 256);
        assert_eq!(ip_band(64), 16);
    }

    #[test]
    fn a_small_range_fills_up_without_collisions() {
        let range = cidr("10.0.0.0/28");
        let mut used = HashSet::new();
        let mut got = Vec::new();
        while let Some(ip) = next_free_ip(&range, &used, got.len() as u64 * 7) {
            assert!(used.insert(ip), "{ip} twice");
            got.push(ip);
        }
        // 16 addresses minus network, broadcast, .1 and .10.
        assert_eq!(got.len(), 12);
        assert!(!got.contains(&Ipv4Addr::new(10, 0, 0, 0)));
        assert!(!got.contains(&Ipv4Addr::new(10, 0, 0, 1)));
        assert!(!got.contains(&Ipv4Addr::new(10, 0, 0, 10)));
        assert!(!got.contains(&Ipv4Addr::new(10, 0, 0, 15)));
    }

    #[test]
    fn the_static_band_is_used_when_the_rest_is_full() {
        let range = cidr("10.0.0.0/24");
        let used: HashSet<Ipv4Addr> = (16..255).filter_map(|o| range.nth(o)).collect();
        let ip = next_free_ip(&range, &used, 3).unwrap();
        assert!(range.offset_of(ip).unwrap() < 16, "{ip}");
    }

    #[test]
    fn chosen_ips_must_be_usable() {
        let range = cidr("10.43.0.0/16");
        assert!(ip_in_range(&range, Ipv4Addr::new(10, 43, 0, 5)));
        assert!(!ip_in_range(&range, Ipv4Addr::new(10, 43, 0, 0)));
        assert!(!ip_in_range(&range, Ipv4Addr::new(10, 43, 255, 255)));
        assert!(!ip_in_range(&range, Ipv4Addr::new(10, 44, 0, 5)));
    }

    #[test]
    fn node_ports_fill_the_range() {
        let range: PortRange = "30000-30031".parse().unwrap();
        let mut used = HashSet::new();
        for i in 0..32 {
            let port = next_free_port(&range, &used, i * 13).unwrap();
            assert!(range.contains(i64::from(port)));
            // The band (16 ports) is used only after the upper half.
            assert_eq!(port >= 30016, i < 16, "{port} at {i}");
            assert!(used.insert(port));
        }
        assert_eq!(next_free_port(&range, &used, 0), None);
        let full: PortRange = "30000-32767".parse().unwrap();
        assert_eq!(port_band(u64::from(full.size())), 86);
    }
}
