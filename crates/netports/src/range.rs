//! Port blocks: validation, overlap, parsing and formatting. Host byte order everywhere; the
//! Windows layer converts to network order at the FFI boundary only.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::error::Error;

/// TCP or UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A persistent-reservation call, to name the Windows function in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservationCall {
    /// `CreatePersistent*PortReservation`.
    Create,
    /// `DeletePersistent*PortReservation`.
    Delete,
    /// `LookupPersistent*PortReservation`.
    Lookup,
}

impl Protocol {
    /// The name of the Windows function making `call` for this protocol.
    #[must_use]
    pub const fn persistent_api(self, call: ReservationCall) -> &'static str {
        match (call, self) {
            (ReservationCall::Create, Self::Tcp) => "CreatePersistentTcpPortReservation",
            (ReservationCall::Create, Self::Udp) => "CreatePersistentUdpPortReservation",
            (ReservationCall::Delete, Self::Tcp) => "DeletePersistentTcpPortReservation",
            (ReservationCall::Delete, Self::Udp) => "DeletePersistentUdpPortReservation",
            (ReservationCall::Lookup, Self::Tcp) => "LookupPersistentTcpPortReservation",
            (ReservationCall::Lookup, Self::Udp) => "LookupPersistentUdpPortReservation",
        }
    }

    /// `tcp` or `udp`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            _ => Err(Error::Protocol(format!("unknown protocol '{s}' (tcp or udp)"))),
        }
    }
}

/// A block of `count` ports starting at `start`: `start..start + count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PortBlock {
    /// First port.
    pub start: u16,
    /// Number of ports.
    pub count: u16,
}

impl PortBlock {
    /// A validated block: start and count non-zero, and `start + count <= 65,536`.
    ///
    /// # Errors
    /// [`Error::InvalidRange`] (checked before any Windows call).
    pub fn new(start: u16, count: u16) -> Result<Self, Error> {
        if start == 0 {
            return Err(Error::InvalidRange { why: "the start port must not be 0" });
        }
        if count == 0 {
            return Err(Error::InvalidRange { why: "the count must not be 0" });
        }
        if u32::from(start) + u32::from(count) > 65_536 {
            return Err(Error::InvalidRange { why: "the block runs past port 65535" });
        }
        Ok(Self { start, count })
    }

    /// The last port.
    #[must_use]
    pub const fn end(&self) -> u16 {
        // Cannot overflow for a validated block.
        self.start.wrapping_add(self.count).wrapping_sub(1)
    }

    /// True if `port` is in the block.
    #[must_use]
    pub const fn contains(&self, port: u16) -> bool {
        port >= self.start && port <= self.end()
    }

    /// True if the blocks share a port.
    #[must_use]
    pub const fn overlaps(&self, other: &Self) -> bool {
        self.start <= other.end() && other.start <= self.end()
    }
}

impl fmt::Display for PortBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 1 {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end())
        }
    }
}

/// Parses a port number (1-65535).
///
/// # Errors
/// [`Error::InvalidRange`].
pub fn parse_port(s: &str) -> Result<u16, Error> {
    match s.trim().parse::<u32>() {
        Ok(p) if (1..=65_535).contains(&p) => Ok(u16::try_from(p).unwrap_or(0)),
        _ => Err(Error::InvalidRange { why: "a port is a number from 1 to 65535" }),
    }
}

/// Parses a count (1-65535).
///
/// # Errors
/// [`Error::InvalidRange`].
pub fn parse_count(s: &str) -> Result<u16, Error> {
    match s.trim().parse::<u32>() {
        Ok(p) if (1..=65_535).contains(&p) => Ok(u16::try_from(p).unwrap_or(0)),
        _ => Err(Error::InvalidRange { why: "a count is a number from 1 to 65535" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn invalid_blocks_are_rejected_before_any_call() {
        assert!(matches!(PortBlock::new(0, 5), Err(Error::InvalidRange { .. })));
        assert!(matches!(PortBlock::new(5, 0), Err(Error::InvalidRange { .. })));
        assert!(matches!(PortBlock::new(65_535, 2), Err(Error::InvalidRange { .. })));
        let b = PortBlock::new(65_535, 1).unwrap();
        assert_eq!(b.end(), 65_535);
        assert_eq!(PortBlock::new(5000, 10).unwrap().to_string(), "5000-5009");
        assert_eq!(PortBlock::new(22, 1).unwrap().to_string(), "22");
        assert!(
            parse_port("0").is_err() && parse_port("65536").is_err() && parse_port("x").is_err()
        );
        assert_eq!(parse_port(" 443 ").unwrap(), 443);
        assert_eq!("UDP".parse::<Protocol>().unwrap(), Protocol::Udp);
    }

    proptest! {
        #[test]
        fn overlap_is_symmetric_and_matches_membership(a in 1u16..2000, an in 1u16..50, b in 1u16..2000, bn in 1u16..50) {
            let x = PortBlock::new(a, an).unwrap();
            let y = PortBlock::new(b, bn).unwrap();
            prop_assert_eq!(x.overlaps(&y), y.overlaps(&x));
            let shared = (x.start..=x.end()).any(|p| y.contains(p));
            prop_assert_eq!(x.overlaps(&y), shared);
        }

        #[test]
        fn validation_accepts_exactly_the_blocks_inside_the_port_space(start in any::<u16>(), count in any::<u16>()) {
            let ok = start != 0 && count != 0 && u32::from(start) + u32::from(count) <= 65_536;
            prop_assert_eq!(PortBlock::new(start, count).is_ok(), ok);
        }
    }
}
