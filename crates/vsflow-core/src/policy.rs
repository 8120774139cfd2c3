//! Per-port policy: the mode and the versioned allow rules of Enforce mode.

use alloc::vec::Vec;

use crate::error::Error;
use crate::packet::IpFamily;

/// Most allow rules one port may have.
pub const MAX_RULES: usize = 256;

/// What the port does with traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Permit everything, track every flow (the default).
    #[default]
    Monitor,
    /// Stateful: flows the VM opens and their return traffic are permitted; unsolicited
    /// inbound traffic is permitted only by an allow rule; everything else is blocked.
    Enforce,
}

impl Mode {
    /// Wire value.
    #[must_use]
    pub const fn to_wire(self) -> u8 {
        match self {
            Self::Monitor => 0,
            Self::Enforce => 1,
        }
    }

    /// Parses a wire value.
    #[must_use]
    pub const fn from_wire(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Monitor),
            1 => Some(Self::Enforce),
            _ => None,
        }
    }

    /// Human name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Monitor => "monitor",
            Self::Enforce => "enforce",
        }
    }
}

/// An inclusive range of local ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port (inclusive, `>= start`).
    pub end: u16,
}

impl PortRange {
    /// Every port, including 0 (protocols without ports).
    pub const ANY: Self = Self { start: 0, end: u16::MAX };

    /// A range; `None` if `start > end`.
    #[must_use]
    pub const fn new(start: u16, end: u16) -> Option<Self> {
        if start <= end { Some(Self { start, end }) } else { None }
    }

    /// One port.
    #[must_use]
    pub const fn single(port: u16) -> Self {
        Self { start: port, end: port }
    }

    /// True if `port` is in the range.
    #[must_use]
    pub const fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }
}

/// A remote address prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prefix {
    /// Any address of either family.
    Any,
    /// An IPv4 prefix (`len <= 32`; bits past `len` are zero).
    V4 {
        /// Network address.
        addr: [u8; 4],
        /// Prefix length.
        len: u8,
    },
    /// An IPv6 prefix (`len <= 128`; bits past `len` are zero).
    V6 {
        /// Network address.
        addr: [u8; 16],
        /// Prefix length.
        len: u8,
    },
}

impl Prefix {
    /// An IPv4 prefix; host bits are cleared. `None` if `len > 32`.
    #[must_use]
    pub fn v4(addr: [u8; 4], len: u8) -> Option<Self> {
        (len <= 32).then(|| {
            let bits = u32::from_be_bytes(addr) & mask32(len);
            Self::V4 { addr: bits.to_be_bytes(), len }
        })
    }

    /// An IPv6 prefix; host bits are cleared. `None` if `len > 128`.
    #[must_use]
    pub fn v6(addr: [u8; 16], len: u8) -> Option<Self> {
        (len <= 128).then(|| {
            let bits = u128::from_be_bytes(addr) & mask128(len);
            Self::V6 { addr: bits.to_be_bytes(), len }
        })
    }

    /// True if `addr` (16-byte form) of family `family` is inside the prefix.
    #[must_use]
    pub fn contains(&self, family: IpFamily, addr: &[u8; 16]) -> bool {
        match (*self, family) {
            (Self::Any, _) => true,
            (Self::V4 { addr: net, len }, IpFamily::V4) => {
                let a = u32::from_be_bytes([addr[0], addr[1], addr[2], addr[3]]);
                a & mask32(len) == u32::from_be_bytes(net)
            }
            (Self::V6 { addr: net, len }, IpFamily::V6) => {
                u128::from_be_bytes(*addr) & mask128(len) == u128::from_be_bytes(net)
            }
            _ => false,
        }
    }
}

const fn mask32(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - len as u32) }
}

const fn mask128(len: u8) -> u128 {
    if len == 0 { 0 } else { u128::MAX << (128 - len as u32) }
}

/// Permits unsolicited inbound traffic: protocol (or any), local port range, remote prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AllowRule {
    /// IP protocol, or `None` for any.
    pub protocol: Option<u8>,
    /// The VM's ports the rule opens.
    pub local_ports: PortRange,
    /// Peers the rule admits.
    pub remote: Prefix,
}

impl AllowRule {
    /// True if an inbound packet of this flow is admitted.
    #[must_use]
    pub fn matches(
        &self,
        protocol: u8,
        family: IpFamily,
        local_port: u16,
        remote: &[u8; 16],
    ) -> bool {
        self.protocol.is_none_or(|p| p == protocol)
            && self.local_ports.contains(local_port)
            && self.remote.contains(family, remote)
    }
}

/// The allow rules of a port with their version. Every replacement bumps the version; flows
/// admitted under an older version are re-checked (see [`crate::flow::Admission`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    version: u32,
    rules: Vec<AllowRule>,
}

impl RuleSet {
    /// A rule set with an explicit version (used by restore).
    ///
    /// # Errors
    /// [`Error::TooManyRules`] past [`MAX_RULES`], [`Error::OutOfMemory`].
    pub fn try_from_slice(version: u32, rules: &[AllowRule]) -> Result<Self, Error> {
        if rules.len() > MAX_RULES {
            return Err(Error::TooManyRules);
        }
        let mut v = Vec::new();
        v.try_reserve_exact(rules.len())?;
        v.extend_from_slice(rules);
        Ok(Self { version, rules: v })
    }

    /// The version; 0 for a port that never had rules.
    #[must_use]
    pub const fn version(&self) -> u32 {
        self.version
    }

    /// The rules.
    #[must_use]
    pub fn rules(&self) -> &[AllowRule] {
        &self.rules
    }

    /// Replaces all rules at once and bumps the version. On error nothing changes.
    ///
    /// # Errors
    /// [`Error::TooManyRules`], [`Error::OutOfMemory`].
    pub fn replace(&mut self, rules: &[AllowRule]) -> Result<u32, Error> {
        let next = Self::try_from_slice(self.version.wrapping_add(1).max(1), rules)?;
        *self = next;
        Ok(self.version)
    }

    /// True if any rule admits the flow.
    #[must_use]
    pub fn admits(
        &self,
        protocol: u8,
        family: IpFamily,
        local_port: u16,
        remote: &[u8; 16],
    ) -> bool {
        self.rules.iter().any(|r| r.matches(protocol, family, local_port, remote))
    }

    /// True if some rule admits inbound `protocol` traffic from `remote` to *every* local port:
    /// the judgement of a packet whose ports could not be read ([`crate::packet::Headers`]).
    #[must_use]
    pub fn admits_every_port(&self, protocol: u8, family: IpFamily, remote: &[u8; 16]) -> bool {
        self.rules
            .iter()
            .any(|r| r.local_ports == PortRange::ANY && r.matches(protocol, family, 0, remote))
    }

    /// True if some rule admits inbound traffic of every protocol from `remote` to every local
    /// port: the judgement of a packet whose protocol and ports cannot be relied on
    /// ([`crate::packet::Headers::Unknown`]).
    #[must_use]
    pub fn admits_everything(&self, family: IpFamily, remote: &[u8; 16]) -> bool {
        self.rules.iter().any(|r| {
            r.protocol.is_none()
                && r.local_ports == PortRange::ANY
                && r.remote.contains(family, remote)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::v4;

    #[test]
    fn v4_prefix_matches_only_its_network_and_family() {
        let p = Prefix::v4([192, 168, 7, 99], 24).unwrap();
        assert_eq!(p, Prefix::V4 { addr: [192, 168, 7, 0], len: 24 });
        assert!(p.contains(IpFamily::V4, &v4([192, 168, 7, 1])));
        assert!(!p.contains(IpFamily::V4, &v4([192, 168, 8, 1])));
        assert!(!p.contains(IpFamily::V6, &v4([192, 168, 7, 1])));
        assert!(Prefix::v4([1, 2, 3, 4], 0).unwrap().contains(IpFamily::V4, &v4([9, 9, 9, 9])));
        assert!(Prefix::v4([1, 2, 3, 4], 33).is_none());
    }

    #[test]
    fn v6_prefix_length_128_is_one_host() {
        let mut a = [0u8; 16];
        a[0] = 0x20;
        a[15] = 1;
        let p = Prefix::v6(a, 128).unwrap();
        assert!(p.contains(IpFamily::V6, &a));
        let mut b = a;
        b[15] = 2;
        assert!(!p.contains(IpFamily::V6, &b));
        assert!(Prefix::v6(a, 129).is_none());
    }

    #[test]
    fn replace_bumps_version_and_is_atomic_on_error() {
        let mut rs = RuleSet::default();
        let r = AllowRule {
            protocol: Some(6),
            local_ports: PortRange::single(22),
            remote: Prefix::Any,
        };
        assert_eq!(rs.replace(&[r]).unwrap(), 1);
        let too_many = alloc::vec![r; MAX_RULES + 1];
        assert_eq!(rs.replace(&too_many), Err(Error::TooManyRules));
        assert_eq!(rs.version(), 1);
        assert_eq!(rs.rules(), &[r]);
        assert!(rs.admits(6, IpFamily::V4, 22, &v4([1, 1, 1, 1])));
        assert!(!rs.admits(17, IpFamily::V4, 22, &v4([1, 1, 1, 1])));
        assert!(!rs.admits(6, IpFamily::V4, 23, &v4([1, 1, 1, 1])));
    }

    #[test]
    fn port_range_rejects_inverted_bounds() {
        assert!(PortRange::new(10, 9).is_none());
        assert!(PortRange::new(9, 9).unwrap().contains(9));
        assert!(PortRange::ANY.contains(0));
    }
}
