//! Byte layout of the runtime-state blob, version 1.0. The prose specification is
//! `docs/runtime-state-format.md`; the constants here are the single source of truth in code.
//!
//! All integers little-endian, fixed width, no padding, no pointers.

/// `"VSFL"`.
pub const MAGIC: [u8; 4] = *b"VSFL";
/// Format major version written and read by this build.
pub const MAJOR: u16 = 1;
/// Format minor version written by this build.
pub const MINOR: u16 = 0;

/// Size of the 1.0 fixed header (before the port identity).
pub const HEADER_LEN: usize = 40;
/// The frozen prefix every major version keeps.
///
/// Magic, major, minor, header length, flags, total length: with the CRC trailer they let
/// any build check integrity and read the version of a blob of any major.
pub const FROZEN_PREFIX_LEN: usize = 16;
/// CRC-32C trailer.
pub const TRAILER_LEN: usize = 4;
/// Record header: type u16, flags u16, payload length u32.
pub const RECORD_HEADER_LEN: usize = 8;

/// Header offsets.
pub mod hdr {
    /// Magic, 4 bytes.
    pub const MAGIC: usize = 0;
    /// Major version, u16.
    pub const MAJOR: usize = 4;
    /// Minor version, u16.
    pub const MINOR: usize = 6;
    /// Fixed header length, u16 (40 in 1.0; readers skip what they do not know).
    pub const HEADER_LEN: usize = 8;
    /// Flags, u16.
    pub const FLAGS: usize = 10;
    /// Total blob length including the CRC trailer, u32.
    pub const TOTAL_LEN: usize = 12;
    /// Provider GUID, 16 bytes (Windows in-memory layout).
    pub const PROVIDER: usize = 16;
    /// Number of records, u32.
    pub const RECORD_COUNT: usize = 32;
    /// Port identity length in UTF-16 code units, u16 (<= 256).
    pub const IDENTITY_UNITS: usize = 36;
    /// Reserved, u16, written 0, ignored.
    pub const RESERVED: usize = 38;
}

/// Header flag: the encoder left flows out to stay under the size cap.
pub const FLAG_FLOWS_DROPPED: u16 = 0x0001;
/// Header flags this build defines.
pub const KNOWN_FLAGS: u16 = FLAG_FLOWS_DROPPED;

/// Record types.
pub mod rec {
    /// Mode: u8.
    pub const MODE: u16 = 1;
    /// Allow rules: version u32, entry length u16, count u16, entries.
    pub const RULES: u16 = 2;
    /// IPv4 flows: entry length u16, reserved u16, count u32, entries.
    pub const FLOWS_V4: u16 = 3;
    /// IPv6 flows: same layout with 16-byte addresses.
    pub const FLOWS_V6: u16 = 4;
    /// Counters: count u16, then u64 values in `PortCounters` order.
    pub const COUNTERS: u16 = 5;
    /// Save information: flows in the table at save u32, flows dropped u32.
    pub const SAVE_INFO: u16 = 6;
    /// Every record type a 1.x writer must write.
    pub const REQUIRED: [u16; 6] = [MODE, RULES, FLOWS_V4, FLOWS_V6, COUNTERS, SAVE_INFO];
}

/// Rule entry: flags u8, protocol u8, family u8, prefix length u8, port start u16,
/// port end u16, address 16 bytes.
pub const RULE_ENTRY_LEN: usize = 24;
/// Rule flag: any protocol (the protocol byte must be 0).
pub const RULE_ANY_PROTOCOL: u8 = 0x01;

/// Flow entry, common part.
///
/// Protocol u8, state u8, opener u8, admission u8, FIN bits u8,
/// admitting rule version u32; then local address, remote address (4 or 16 bytes each);
/// then local port u16, remote port u16, packets out u64, packets in u64, bytes out u64,
/// bytes in u64, first-seen age u64, last-seen age u64.
pub const FLOW_FIXED_LEN: usize = 5 + 4 + 2 + 2 + 4 * 8 + 2 * 8;
/// IPv4 flow entry length in 1.0.
pub const FLOW_V4_ENTRY_LEN: usize = FLOW_FIXED_LEN + 2 * 4;
/// IPv6 flow entry length in 1.0.
pub const FLOW_V6_ENTRY_LEN: usize = FLOW_FIXED_LEN + 2 * 16;
/// Fixed part of a flows record payload: entry length, reserved, count.
pub const FLOWS_PAYLOAD_HEADER: usize = 8;

/// Admission wire values.
pub mod admission {
    /// Opened by the VM.
    pub const VM: u8 = 1;
    /// Admitted in Monitor mode.
    pub const MONITOR: u8 = 2;
    /// Admitted by a rule set version.
    pub const RULE: u8 = 3;
}

/// Family wire values of rule prefixes.
pub mod family {
    /// Any address.
    pub const ANY: u8 = 0;
    /// IPv4.
    pub const V4: u8 = 4;
    /// IPv6.
    pub const V6: u8 = 6;
}

const _: () = assert!(FLOW_V4_ENTRY_LEN == 69);
const _: () = assert!(FLOW_V6_ENTRY_LEN == 93);
const _: () = assert!(hdr::RESERVED + 2 == HEADER_LEN);
