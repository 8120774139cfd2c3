//! Port blocks and protocols.
//!
//! netports-nsp's [`PortBlock`] and [`Transport`](Protocol) (one
//! definition for the provider and the CLI), parsing, and the Windows function names. Host
//! byte order everywhere; the Windows layer converts to network order at the FFI boundary only.

pub use netports_nsp::reservation::{BlockError, PortBlock, Transport as Protocol};

use crate::error::Error;

impl From<BlockError> for Error {
    fn from(e: BlockError) -> Self {
        Self::InvalidRange { why: e.why() }
    }
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

/// The name of the Windows function making `call` for `proto`.
#[must_use]
pub const fn persistent_api(proto: Protocol, call: ReservationCall) -> &'static str {
    match (call, proto) {
        (ReservationCall::Create, Protocol::Tcp) => "CreatePersistentTcpPortReservation",
        (ReservationCall::Create, Protocol::Udp) => "CreatePersistentUdpPortReservation",
        (ReservationCall::Delete, Protocol::Tcp) => "DeletePersistentTcpPortReservation",
        (ReservationCall::Delete, Protocol::Udp) => "DeletePersistentUdpPortReservation",
        (ReservationCall::Lookup, Protocol::Tcp) => "LookupPersistentTcpPortReservation",
        (ReservationCall::Lookup, Protocol::Udp) => "LookupPersistentUdpPortReservation",
    }
}

/// A validated block from the command line's START and COUNT.
///
/// # Errors
/// [`Error::InvalidRange`].
pub fn block(start: &str, count: &str) -> Result<PortBlock, Error> {
    Ok(PortBlock::new(parse_port(start)?, parse_count(count)?)?)
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
        assert_eq!(PortBlock::new(0, 5), Err(BlockError::StartZero));
        assert_eq!(PortBlock::new(5, 0), Err(BlockError::CountZero));
        assert_eq!(PortBlock::new(65_535, 2), Err(BlockError::PastEnd));
        assert!(matches!(
            block("65535", "2"),
            Err(Error::InvalidRange { why: "the block runs past port 65535" })
        ));
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
