//! Byte layout of the runtime-state blob, versions 1.0, 1.1 and 1.2. The prose specification is
//! `docs/runtime-state-format.md`; the constants here are the single source of truth in code.
//!
//! All integers little-endian, fixed width, no padding, no pointers.

/// `"VSFL"`.
pub const MAGIC: [u8; 4] = *b"VSFL";
/// Format major version written and read by this build.
pub const MAJOR: u16 = 1;
/// Format minor version written by this build.
///
/// 1.1: compact flow records, address dictionaries, fingerprints, NIC identity; 1.2: the
/// policy's own integrity check and the no-state blob (`docs/runtime-state-format.md`).
pub const MINOR: u16 = 2;

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
/// Header flag (1.2): the source host had no state for the port.
///
/// It did not track it, its encode failed, or it was stopping. The blob carries no policy and
/// no flows: its only record is [`rec::NO_STATE`]. A 1.1 reader refuses the unknown flag (so it
/// never installs a policy from it).
pub const FLAG_NO_STATE: u16 = 0x0002;
/// Header flags this build defines.
pub const KNOWN_FLAGS: u16 = FLAG_FLOWS_DROPPED | FLAG_NO_STATE;
/// Header flags a reader of minor `minor` knows.
#[must_use]
pub const fn known_flags(minor: u16) -> u16 {
    if minor >= 2 { KNOWN_FLAGS } else { FLAG_FLOWS_DROPPED }
}

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
    /// 1.1: how the flows in the table were saved: fingerprinted u32, lost u32, rules left
    /// out u16, reserved u16. Required when any 1.1 flow record is present.
    pub const SAVE_INFO2: u16 = 7;
    /// 1.1: the NIC's durable name (`NicName`): code units u16 (<= 256), UTF-16LE units.
    pub const NIC_IDENTITY: u16 = 8;
    /// 1.1: IPv4 address dictionary: count u16, addresses.
    pub const ADDRS_V4: u16 = 9;
    /// 1.1: IPv6 address dictionary: count u16, addresses.
    pub const ADDRS_V6: u16 = 10;
    /// 1.1: compact IPv4 flows (see [`super::compact`]).
    pub const COMPACT_V4: u16 = 11;
    /// 1.1: compact IPv6 flows.
    pub const COMPACT_V6: u16 = 12;
    /// 1.1: fingerprints of established connections saved without an exact record.
    ///
    /// Salt 2 x u64, bits u8 (32), encoding u8 (0: Golomb-Rice), Rice parameter u8 (<= 31),
    /// reserved u8 (0), count u32, then the Rice-coded sorted distinct values (see
    /// `codec::rice`) filling the rest of the payload exactly.
    pub const FINGERPRINTS: u16 = 13;
    /// 1.2: the integrity check of the policy.
    ///
    /// Right after `MODE` and `RULES` (the blob's first two records): rules left out u16 (as
    /// in `SAVE_INFO2`), reserved u16 (0), then the CRC-32C of every byte of the blob before
    /// this field. A blob damaged anywhere after it still yields the VM's mode and rules.
    /// Written by every 1.2 writer; optional to a reader (a 1.x blob without it is read as
    /// before).
    pub const POLICY_CHECK: u16 = 14;
    /// 1.2: the only record of a no-state blob ([`super::FLAG_NO_STATE`]): reason u8
    /// ([`super::no_state`]), reserved 3 bytes (0).
    pub const NO_STATE: u16 = 15;
    /// Largest record type a reader of minor `minor` knows (later ones it skips).
    #[must_use]
    pub const fn last_known(minor: u16) -> u16 {
        match minor {
            0 => SAVE_INFO,
            1 => FINGERPRINTS,
            _ => NO_STATE,
        }
    }
}

/// Policy-check payload length.
pub const POLICY_CHECK_LEN: usize = 8;
/// No-state payload length.
pub const NO_STATE_LEN: usize = 4;

/// Why a source host had no state for a port (the [`rec::NO_STATE`] record).
pub mod no_state {
    /// Not recorded.
    pub const UNSPECIFIED: u8 = 0;
    /// The source did not track the port.
    pub const UNTRACKED: u8 = 1;
    /// The source's encode failed (out of memory).
    pub const ENCODE_FAILED: u8 = 2;
    /// The source was stopping (or the port's restore was still being applied there).
    pub const UNAVAILABLE: u8 = 3;
}

/// 1.1 compact flow records.
///
/// Payload: flags u8 (bit 0: per-flow counters present), local index width u8 (0, 1 or 2),
/// remote index width u8 (1 or 2), reserved u8 (0), count u32, then entries of variable
/// length:
///
/// | size | field |
/// |---|---|
/// | 1 | tag: bits 0-2 [`KIND`](compact::KIND_MASK), bits 3-4 admission, bits 5-6 FIN bits, bit 7 remote literal |
/// | 0/1 | protocol (kind 6 only) |
/// | w | local address: index into the family's dictionary (width from the header; 0 = index 0) |
/// | 4/16 or w | remote address: literal (tag bit 7) or dictionary index |
/// | 2 | local port |
/// | 2 | remote port |
/// | varint | admitting rule-set version as `rules version - v` (admission 3 only) |
/// | varint | last-seen age, whole seconds |
/// | varint | first-seen age minus last-seen age, whole minutes |
/// | 4 varints | packets out, packets in, bytes out, bytes in (flag bit 0 only) |
///
/// Varints are unsigned LEB128, at most 10 bytes, no bits past 64.
pub mod compact {
    /// Flag: per-flow counters follow each entry.
    pub const FLAG_COUNTERS: u8 = 0x01;
    /// Tag bits of the kind: 1..=5 the TCP states (protocol 6) in [`crate::FlowState`] wire
    /// order, 6 active with a protocol byte, 7 active UDP.
    pub const KIND_MASK: u8 = 0x07;
    /// Kind: active, protocol byte follows.
    pub const KIND_ACTIVE_OTHER: u8 = 6;
    /// Kind: active UDP.
    pub const KIND_ACTIVE_UDP: u8 = 7;
    /// Tag shift of the admission (2 bits): 0 VM (opener VM), 1 monitor (opener remote),
    /// 2 rule at the blob's rule-set version, 3 rule at another version (varint follows).
    pub const ADMISSION_SHIFT: u8 = 3;
    /// Admission: opened by the VM.
    pub const ADM_VM: u8 = 0;
    /// Admission: monitor.
    pub const ADM_MONITOR: u8 = 1;
    /// Admission: the blob's current rules.
    pub const ADM_RULE_CURRENT: u8 = 2;
    /// Admission: an older rule-set version.
    pub const ADM_RULE_OTHER: u8 = 3;
    /// Tag shift of the FIN bits (2 bits).
    pub const FIN_SHIFT: u8 = 5;
    /// Tag bit: the remote address is literal.
    pub const REMOTE_LITERAL: u8 = 0x80;
    /// Payload header length.
    pub const HEADER_LEN: usize = 8;
    /// Seconds per unit of the duration field.
    pub const DURATION_UNIT_SECS: u64 = 60;
}

/// Fingerprint record: fixed part before the values.
pub const FINGERPRINTS_HEADER_LEN: usize = 16 + 1 + 1 + 2 + 4;
/// Fingerprint encoding: Golomb-Rice coded sorted distinct values. Another encoding would be
/// a new record type (a 1.1 reader refuses an encoding it does not know).
pub const FINGERPRINTS_RICE: u8 = 0;
/// Save-info-2 payload length.
pub const SAVE_INFO2_LEN: usize = 12;

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
