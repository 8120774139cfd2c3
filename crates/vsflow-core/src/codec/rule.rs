//! The 24-byte allow-rule entry, shared by the runtime-state format and the IOCTL protocol.

use super::error::DecodeError;
use super::format::{self, rec};
use super::reader::Reader;
use crate::policy::{AllowRule, PortRange, Prefix};

/// Size of one rule entry.
pub const RULE_LEN: usize = format::RULE_ENTRY_LEN;

/// The entry of a rule: flags u8 (bit 0 any protocol), protocol u8, family u8 (0/4/6), prefix
/// length u8, local port start u16, local port end u16, address 16 bytes (little-endian).
#[must_use]
pub fn rule_to_bytes(r: &AllowRule) -> [u8; RULE_LEN] {
    let PortRange { start, end } = r.local_ports;
    let (flags, proto) = r.protocol.map_or((format::RULE_ANY_PROTOCOL, 0), |p| (0, p));
    let (family, len, addr) = match r.remote {
        Prefix::Any => (format::family::ANY, 0, [0u8; 16]),
        Prefix::V4 { addr, len } => (format::family::V4, len, crate::packet::v4(addr)),
        Prefix::V6 { addr, len } => (format::family::V6, len, addr),
    };
    let mut out = [0u8; RULE_LEN];
    let [s0, s1] = start.to_le_bytes();
    let [e0, e1] = end.to_le_bytes();
    let head = [flags, proto, family, len, s0, s1, e0, e1];
    for (dst, src) in out.iter_mut().zip(head.iter().chain(addr.iter())) {
        *dst = *src;
    }
    out
}

/// Parses and validates one rule entry (entry `entry` of its record, for error messages).
/// Extra bytes past [`RULE_LEN`] (a later minor version's fields) are ignored.
///
/// # Errors
/// [`DecodeError::InvalidField`] naming the offending field, or `BadEntryLength` if short.
pub fn rule_from_bytes(e: &[u8], entry: u32) -> Result<AllowRule, DecodeError> {
    let kind = rec::RULES;
    let invalid = |field, value: u64| DecodeError::InvalidField { kind, entry, field, value };
    let mut r = Reader::new(e);
    let short = DecodeError::BadEntryLength { kind, len: 0 };
    let flags = r.u8().ok_or(short)?;
    let proto = r.u8().ok_or(short)?;
    let family = r.u8().ok_or(short)?;
    let plen = r.u8().ok_or(short)?;
    let start = r.u16().ok_or(short)?;
    let end = r.u16().ok_or(short)?;
    let addr: [u8; 16] = r.array().ok_or(short)?;
    if flags & !format::RULE_ANY_PROTOCOL != 0 {
        return Err(invalid("rule flags", flags.into()));
    }
    let protocol = if flags & format::RULE_ANY_PROTOCOL != 0 {
        if proto != 0 {
            return Err(invalid("protocol of an any-protocol rule", proto.into()));
        }
        None
    } else {
        Some(proto)
    };
    let local_ports =
        PortRange::new(start, end).ok_or_else(|| invalid("port range end", end.into()))?;
    let remote = match family {
        format::family::ANY => {
            if plen != 0 || addr != [0; 16] {
                return Err(invalid("prefix of an any-address rule", plen.into()));
            }
            Prefix::Any
        }
        format::family::V4 => {
            let a = [addr[0], addr[1], addr[2], addr[3]];
            let p =
                Prefix::v4(a, plen).ok_or_else(|| invalid("IPv4 prefix length", plen.into()))?;
            if p != (Prefix::V4 { addr: a, len: plen })
                || addr.get(4..).is_some_and(|t| t.iter().any(|&b| b != 0))
            {
                return Err(invalid("IPv4 prefix host bits", plen.into()));
            }
            p
        }
        format::family::V6 => {
            let p =
                Prefix::v6(addr, plen).ok_or_else(|| invalid("IPv6 prefix length", plen.into()))?;
            if p != (Prefix::V6 { addr, len: plen }) {
                return Err(invalid("IPv6 prefix host bits", plen.into()));
            }
            p
        }
        other => return Err(invalid("prefix family", other.into())),
    };
    Ok(AllowRule { protocol, local_ports, remote })
}
