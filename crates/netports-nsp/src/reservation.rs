//! What a registered name stands for: a persistent port reservation (transport, first port,
//! count), and the 8-byte blob that carries one in `WSAQUERYSET2W::lpBlob`.
//!
//! [`Transport`] and [`PortBlock`] are also netports' TCP/UDP type and validated port block
//! (`netports::range` re-exports them): one definition for the provider and the CLI.
//!
//! Blob layout (little-endian, no padding): `version: u8 = 1`, `protocol: u8` (6 TCP, 17 UDP),
//! `start: u16`, `count: u16`, `reserved: u16 = 0`. Answers carry it when `LUP_RETURN_BLOB`
//! is asked for; `SetServiceEx` accepts it to register a block of more than one port.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// TCP or UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP (`SOCK_STREAM`, `IPPROTO_TCP`).
    Tcp,
    /// UDP (`SOCK_DGRAM`, `IPPROTO_UDP`).
    Udp,
}

impl Transport {
    /// The IP protocol number.
    #[must_use]
    pub const fn protocol(self) -> i32 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
        }
    }

    /// The Winsock socket type (`SOCK_STREAM` = 1, `SOCK_DGRAM` = 2).
    #[must_use]
    pub const fn socket_type(self) -> i32 {
        match self {
            Self::Tcp => 1,
            Self::Udp => 2,
        }
    }

    /// The transport of an IP protocol number.
    #[must_use]
    pub const fn from_protocol(p: i32) -> Option<Self> {
        match p {
            6 => Some(Self::Tcp),
            17 => Some(Self::Udp),
            _ => None,
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

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Not `tcp` or `udp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownTransport(pub String);

impl fmt::Display for UnknownTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown protocol '{}' (tcp or udp)", self.0)
    }
}

impl std::error::Error for UnknownTransport {}

impl FromStr for Transport {
    type Err = UnknownTransport;
    fn from_str(s: &str) -> Result<Self, UnknownTransport> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            _ => Err(UnknownTransport(s.to_owned())),
        }
    }
}

/// Why a port block is not valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// The start is 0.
    StartZero,
    /// The count is 0.
    CountZero,
    /// `start + count > 65,536`.
    PastEnd,
}

impl BlockError {
    /// The reason, for a person.
    #[must_use]
    pub const fn why(self) -> &'static str {
        match self {
            Self::StartZero => "the start port must not be 0",
            Self::CountZero => "the count must not be 0",
            Self::PastEnd => "the block runs past port 65535",
        }
    }
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.why())
    }
}

impl std::error::Error for BlockError {}

/// A validated block of `count` ports starting at `start`: `start..start + count`, with start
/// and count non-zero and the block ending by port 65535. Host byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PortBlock {
    /// First port.
    pub start: u16,
    /// Number of ports.
    pub count: u16,
}

impl PortBlock {
    /// A validated block.
    ///
    /// # Errors
    /// [`BlockError`].
    pub const fn new(start: u16, count: u16) -> Result<Self, BlockError> {
        if start == 0 {
            return Err(BlockError::StartZero);
        }
        if count == 0 {
            return Err(BlockError::CountZero);
        }
        if start as u32 + count as u32 > 65_536 {
            return Err(BlockError::PastEnd);
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

/// A block of ports: `start..start + count`, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reservation {
    transport: Transport,
    block: PortBlock,
}

/// Why a block is not valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidBlock;

impl fmt::Display for InvalidBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a port block needs a start from 1, a count from 1, and must end by port 65535")
    }
}

impl std::error::Error for InvalidBlock {}

impl Reservation {
    /// A validated block.
    ///
    /// # Errors
    /// [`InvalidBlock`] for start 0, count 0, or a block past port 65535.
    pub fn new(transport: Transport, start: u16, count: u16) -> Result<Self, InvalidBlock> {
        let block = PortBlock::new(start, count).map_err(|_| InvalidBlock)?;
        Ok(Self { transport, block })
    }

    /// A reservation of an already validated block.
    #[must_use]
    pub const fn of(transport: Transport, block: PortBlock) -> Self {
        Self { transport, block }
    }

    /// The ports.
    #[must_use]
    pub const fn block(&self) -> PortBlock {
        self.block
    }

    /// TCP or UDP.
    #[must_use]
    pub const fn transport(&self) -> Transport {
        self.transport
    }

    /// The first port.
    #[must_use]
    pub const fn start(&self) -> u16 {
        self.block.start
    }

    /// The number of ports.
    #[must_use]
    pub const fn count(&self) -> u16 {
        self.block.count
    }

    /// The last port.
    #[must_use]
    pub const fn end(&self) -> u16 {
        self.block.end()
    }

    /// The 8-byte blob.
    #[must_use]
    pub fn to_blob(&self) -> [u8; BLOB_LEN] {
        let [s0, s1] = self.block.start.to_le_bytes();
        let [c0, c1] = self.block.count.to_le_bytes();
        let protocol = if self.transport == Transport::Tcp { 6 } else { 17 };
        [BLOB_VERSION, protocol, s0, s1, c0, c1, 0, 0]
    }

    /// Reads a blob.
    ///
    /// # Errors
    /// [`InvalidBlock`] for a wrong length, version, protocol, reserved bytes or block.
    pub fn from_blob(b: &[u8]) -> Result<Self, InvalidBlock> {
        let &[BLOB_VERSION, protocol, s0, s1, c0, c1, 0, 0] = b else {
            return Err(InvalidBlock);
        };
        let transport = Transport::from_protocol(i32::from(protocol)).ok_or(InvalidBlock)?;
        Self::new(transport, u16::from_le_bytes([s0, s1]), u16::from_le_bytes([c0, c1]))
    }
}

/// The blob's length.
pub const BLOB_LEN: usize = 8;
/// The blob's version byte.
pub const BLOB_VERSION: u8 = 1;

impl fmt::Display for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.transport, self.block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn blocks_are_validated_and_formatted() {
        assert_eq!(Reservation::new(Transport::Tcp, 0, 1), Err(InvalidBlock));
        assert_eq!(Reservation::new(Transport::Tcp, 1, 0), Err(InvalidBlock));
        assert_eq!(Reservation::new(Transport::Tcp, 65_535, 2), Err(InvalidBlock));
        assert_eq!(Reservation::new(Transport::Udp, 65_535, 1).unwrap().end(), 65_535);
        assert_eq!(
            Reservation::new(Transport::Tcp, 50_000, 10).unwrap().to_string(),
            "tcp 50000-50009"
        );
        assert_eq!(Reservation::new(Transport::Udp, 3544, 1).unwrap().to_string(), "udp 3544");
    }

    #[test]
    fn malformed_blobs_are_rejected() {
        let good = Reservation::new(Transport::Tcp, 50_000, 10).unwrap().to_blob();
        assert!(Reservation::from_blob(&good).is_ok());
        for i in 0..BLOB_LEN {
            let mut b = good;
            b[i] ^= 0xFF;
            // Flipping the start or count bytes may still give a valid block; everything
            // else must be refused.
            if !(2..6).contains(&i) {
                assert_eq!(Reservation::from_blob(&b), Err(InvalidBlock), "byte {i}");
            }
        }
        assert_eq!(Reservation::from_blob(&good[..7]), Err(InvalidBlock));
    }

    proptest! {
        #[test]
        fn every_valid_block_survives_the_blob(start in 1u16.., count in 1u16.., udp in any::<bool>()) {
            let t = if udp { Transport::Udp } else { Transport::Tcp };
            if let Ok(r) = Reservation::new(t, start, count) {
                prop_assert_eq!(Reservation::from_blob(&r.to_blob()), Ok(r));
            }
        }

        #[test]
        fn blob_reading_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = Reservation::from_blob(&bytes);
        }
    }
}
