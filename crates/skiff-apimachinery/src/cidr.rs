//! IPv4 CIDR blocks (`10.43.0.0/16`) and port ranges (`30000-32767`) as the control plane's
//! allocators use them: parsing with kube-apiserver's rules, membership, and addressing the
//! n-th address or the n-th sub-block.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Why a CIDR or a port range could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Not `ADDRESS/PREFIX` with an IPv4 address and a prefix of 0-32.
    #[error("invalid CIDR {0:?}: expected an IPv4 network such as 10.43.0.0/16")]
    BadCidr(String),
    /// The address has bits set beyond the prefix.
    #[error("invalid CIDR {text:?}: the network address is {network}/{prefix}")]
    NotNetwork {
        /// The text given.
        text: String,
        /// The network the prefix implies.
        network: Ipv4Addr,
        /// The prefix.
        prefix: u8,
    },
    /// Not `FIRST-LAST` (or `FIRST+COUNT`) with `1 <= FIRST <= LAST <= 65535`.
    #[error("invalid port range {0:?}: expected FIRST-LAST such as 30000-32767")]
    BadPortRange(String),
}

/// An IPv4 network: an address whose bits beyond `prefix` are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// The network `network/prefix`; `None` when the prefix exceeds 32 or host bits are set.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Option<Ipv4Cidr> {
        if prefix > 32 || u32::from(network) & !mask(prefix) != 0 {
            return None;
        }
        Some(Ipv4Cidr { network, prefix })
    }

    /// The block holding `addr` with `prefix` (capped at 32): host bits are cleared.
    pub fn masked(addr: Ipv4Addr, prefix: u8) -> Ipv4Cidr {
        let prefix = prefix.min(32);
        Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        }
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// How many addresses the block spans (including network and broadcast).
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// Whether `ip` lies in the block.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
    }

    /// The address at `offset` from the network address, if inside the block.
    pub fn nth(&self, offset: u64) -> Option<Ipv4Addr> {
        if offset >= self.size() {
            return None;
        }
        u32::try_from(u64::from(u32::from(self.network)) + offset)
            .ok()
            .map(Ipv4Addr::from)
    }

    /// The offset of `ip` from the network address, if inside the block.
    pub fn offset_of(&self, ip: Ipv4Addr) -> Option<u64> {
        self.contains(ip)
            .then(|| u64::from(u32::from(ip) - u32::from(self.network)))
    }

    /// How many sub-blocks of `prefix` the block holds (0 when `prefix` is shorter).
    pub fn subnet_count(&self, prefix: u8) -> u64 {
        if prefix < self.prefix || prefix > 32 {
            return 0;
        }
        1u64 << (prefix - self.prefix)
    }

    /// The `index`-th sub-block of length `prefix`.
    pub fn subnet(&self, prefix: u8, index: u64) -> Option<Ipv4Cidr> {
        if index >= self.subnet_count(prefix) {
            return None;
        }
        let step = 1u64 << (32 - u32::from(prefix));
        let network = self.nth(index * step)?;
        Ipv4Cidr::new(network, prefix)
    }

    /// Whether the block lies inside `other`.
    pub fn is_within(&self, other: &Ipv4Cidr) -> bool {
        self.prefix >= other.prefix && other.contains(self.network)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

impl FromStr for Ipv4Cidr {
    type Err = RangeError;

    fn from_str(text: &str) -> Result<Ipv4Cidr, RangeError> {
        let bad = || RangeError::BadCidr(text.to_string());
        let (addr, prefix) = text.trim().split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        Ipv4Cidr::new(addr, prefix).ok_or(RangeError::NotNetwork {
            text: text.to_string(),
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// An inclusive range of ports (`--service-node-port-range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// `first..=last`; `None` when empty or starting at 0.
    pub fn new(first: u16, last: u16) -> Option<PortRange> {
        (first >= 1 && first <= last).then_some(PortRange { first, last })
    }

    /// The ports between `a` and `b` in either order (port 0 excluded).
    pub fn between(a: u16, b: u16) -> PortRange {
        PortRange {
            first: a.min(b).max(1),
            last: a.max(b).max(1),
        }
    }

    /// The first port.
    pub fn first(&self) -> u16 {
        self.first
    }

    /// The last port.
    pub fn last(&self) -> u16 {
        self.last
    }

    /// How many ports the range holds.
    pub fn size(&self) -> u32 {
        u32::from(self.last - self.first) + 1
    }

    /// Whether `port` lies in the range.
    pub fn contains(&self, port: i64) -> bool {
        port >= i64::from(self.first) && port <= i64::from(self.last)
    }

    /// The port at `offset` from the first one.
    pub fn nth(&self, offset: u32) -> Option<u16> {
        if offset >= self.size() {
            return None;
        }
        u16::try_from(u32::from(self.first) + offset).ok()
    }
}

impl FromStr for PortRange {
    type Err = RangeError;

    /// `FIRST-LAST`, `FIRST+COUNT` (`LAST = FIRST + COUNT`) or a single port, as
    /// kube-apiserver's `--service-node-port-range` reads them.
    fn from_str(text: &str) -> Result<PortRange, RangeError> {
        let bad = || RangeError::BadPortRange(text.to_string());
        let number = |s: &str| s.trim().parse::<u16>().map_err(|_| bad());
        let trimmed = text.trim();
        let (first, last) = if let Some((a, b)) = trimmed.split_once('-') {
            (number(a)?, number(b)?)
        } else if let Some((a, b)) = trimmed.split_once('+') {
            let first = number(a)?;
            (first, first.checked_add(number(b)?).ok_or_else(bad)?)
        } else {
            let port = number(trimmed)?;
            (port, port)
        };
        PortRange::new(first, last).ok_or_else(bad)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_address() {
        let cidr: Ipv4Cidr = "10.43.0.0/16".parse().unwrap();
        assert_eq!(cidr.size(), 65536);
        assert_eq!(cidr.to_string(), "10.43.0.0/16");
        assert!(cidr.contains(Ipv4Addr::new(10, 43, 255, 255)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 44, 0, 0)));
        assert_eq!(cidr.nth(1), Some(Ipv4Addr::new(10, 43, 0, 1)));
        assert_eq!(cidr.nth(65536), None);
        assert_eq!(cidr.offset_of(Ipv4Addr::new(10, 43, 1, 2)), Some(258));
        assert_eq!(cidr.subnet_count(24), 256);
        assert_eq!(cidr.subnet(24, 3).unwrap().to_string(), "10.43.3.0/24");
        assert_eq!(cidr.subnet(24, 256), None);
        assert!(cidr.subnet(24, 3).unwrap().is_within(&cidr));
        assert_eq!(cidr.subnet_count(8), 0);
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(all.size(), 1 << 32);
    }

    #[test]
    fn bad_cidrs_are_refused() {
        for bad in [
            "10.43.0.0",
            "10.43.0.0/33",
            "10.43.0/16",
            "x/8",
            "10.43.0.0/",
            "::/0",
        ] {
            assert!(
                matches!(bad.parse::<Ipv4Cidr>(), Err(RangeError::BadCidr(_))),
                "{bad}"
            );
        }
        let err = "10.43.0.1/16".parse::<Ipv4Cidr>().unwrap_err();
        assert!(err.to_string().contains("10.43.0.0/16"), "{err}");
    }

    #[test]
    fn port_ranges_parse() {
        let range: PortRange = "30000-32767".parse().unwrap();
        assert_eq!(range.size(), 2768);
        assert!(range.contains(30000) && range.contains(32767) && !range.contains(32768));
        assert_eq!(range.nth(2767), Some(32767));
        assert_eq!(range.nth(2768), None);
        assert_eq!("30000+10".parse::<PortRange>().unwrap().last(), 30010);
        assert_eq!("8080".parse::<PortRange>().unwrap().size(), 1);
        for bad in ["0-10", "20-10", "a-b", "", "70000-70001"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }
}
