//! Host-local IPv4 address management for one node's pod CIDR.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Why an address could not be handed out or a CIDR parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// The CIDR string is malformed.
    #[error("invalid CIDR {input:?}: write it as a.b.c.d/len with len between 8 and 30")]
    BadCidr {
        /// The input.
        input: String,
    },
    /// Every usable address of the range is taken.
    #[error("no free address left in {cidr} ({allocated} allocated)")]
    Exhausted {
        /// The range.
        cidr: Ipv4Cidr,
        /// How many are allocated.
        allocated: usize,
    },
}

/// An IPv4 network: address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// The network address (host bits zero).
    pub network: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// The number of addresses in the range.
    pub fn size(self) -> u32 {
        1u32 << (32 - u32::from(self.prefix))
    }

    /// The `n`th address of the range.
    pub fn nth(self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + n)
    }

    /// The gateway (the node bridge's address): the first host address.
    pub fn gateway(self) -> Ipv4Addr {
        self.nth(1)
    }

    /// Whether `addr` is inside the range.
    pub fn contains(self, addr: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - u32::from(self.prefix));
        u32::from(addr) & mask == u32::from(self.network)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = IpamError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bad = || IpamError::BadCidr {
            input: input.to_string(),
        };
        let (addr, prefix) = input.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        Ok(Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Hands out addresses of one range to owners (pod sandbox ids), round-robin from the last
/// allocation so a just-freed address is not reused at once (stale ARP and conntrack entries).
#[derive(Debug, Clone)]
pub struct Ipam {
    cidr: Ipv4Cidr,
    allocated: BTreeMap<Ipv4Addr, String>,
    last: u32,
}

impl Ipam {
    /// An allocator for `cidr`; the network, gateway and broadcast addresses are never handed out.
    pub fn new(cidr: Ipv4Cidr) -> Ipam {
        Ipam {
            cidr,
            allocated: BTreeMap::new(),
            last: 1,
        }
    }

    /// Allocates an address to `owner`; the same owner gets the same address back.
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some((addr, _)) = self.allocated.iter().find(|(_, o)| o.as_str() == owner) {
            return Ok(*addr);
        }
        let usable = self.cidr.size() - 3; // network, gateway, broadcast
        for step in 1..=usable {
            let n = 2 + (self.last - 1 + step - 1) % usable;
            let addr = self.cidr.nth(n);
            if let std::collections::btree_map::Entry::Vacant(slot) = self.allocated.entry(addr) {
                slot.insert(owner.to_string());
                self.last = n;
                return Ok(addr);
            }
        }
        Err(IpamError::Exhausted {
            cidr: self.cidr,
            allocated: self.allocated.len(),
        })
    }

    /// Frees whatever `owner` holds; freeing twice is harmless.
    pub fn release(&mut self, owner: &str) {
        self.allocated.retain(|_, o| o != owner);
    }

    /// Records that `owner` already holds `addr`, as read back from disk after a restart.
    ///
    /// Returns false (and records nothing) when `addr` is not a usable address of the range or
    /// is held by another owner. Later allocations continue after the highest restored address.
    pub fn restore(&mut self, addr: Ipv4Addr, owner: &str) -> bool {
        let n = u32::from(addr).wrapping_sub(u32::from(self.cidr.network));
        if !self.cidr.contains(addr) || n < 2 || n >= self.cidr.size() - 1 {
            return false;
        }
        match self.allocated.get(&addr) {
            Some(holder) => holder == owner,
            None => {
                self.allocated.insert(addr, owner.to_string());
                self.last = self.last.max(n);
                true
            }
        }
    }

    /// The address `owner` holds, if any.
    pub fn address_of(&self, owner: &str) -> Option<Ipv4Addr> {
        self.allocated
            .iter()
            .find(|(_, o)| o.as_str() == owner)
            .map(|(a, _)| *a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_normalise() {
        let cidr: Ipv4Cidr = "10.42.0.77/24".parse().unwrap();
        assert_eq!(cidr.to_string(), "10.42.0.0/24");
        assert_eq!(cidr.gateway(), Ipv4Addr::new(10, 42, 0, 1));
        assert!(cidr.contains(Ipv4Addr::new(10, 42, 0, 200)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 42, 1, 1)));
        assert!("10.42.0.0".parse::<Ipv4Cidr>().is_err());
        assert!("10.42.0.0/31".parse::<Ipv4Cidr>().is_err());
    }

    #[test]
    fn addresses_are_unique_and_skip_reserved_ones() {
        let cidr: Ipv4Cidr = "10.42.0.0/29".parse().unwrap();
        let mut ipam = Ipam::new(cidr);
        let got: Vec<_> = (0..5)
            .map(|i| ipam.allocate(&format!("pod{i}")).unwrap())
            .collect();
        assert_eq!(got, (2..=6).map(|n| cidr.nth(n)).collect::<Vec<_>>());
        assert!(matches!(
            ipam.allocate("pod5"),
            Err(IpamError::Exhausted { allocated: 5, .. })
        ));
        assert_eq!(ipam.allocate("pod3").unwrap(), got[3]);
    }

    #[test]
    fn a_freed_address_is_not_reused_first() {
        let mut ipam = Ipam::new("10.42.0.0/24".parse().unwrap());
        let a = ipam.allocate("a").unwrap();
        ipam.release("a");
        let b = ipam.allocate("b").unwrap();
        assert_ne!(a, b);
        assert_eq!(ipam.address_of("a"), None);
        assert_eq!(ipam.address_of("b"), Some(b));
    }
}
