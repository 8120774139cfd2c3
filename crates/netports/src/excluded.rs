//! Sources of reserved and excluded port ranges and the dynamic port range, read-only.
//!
//! Windows has no documented API to enumerate them. The best available sources:
//! - administered (persistent) reservations: value names under
//!   `HKLM\SYSTEM\CurrentControlSet\Control\Nsi\{eb004a03-9b1a-11d4-9123-0050047759bc}\29`
//!   (TCP) and `...\{eb004a02-9b1a-11d4-9123-0050047759bc}\5` (UDP), each the hex of an
//!   `INET_PORT_RANGE` (undocumented; verify on Windows);
//! - every excluded range, including the dynamic ones WinNAT/HNS take for Hyper-V, WSL and
//!   Docker (no owner): `netsh int ipv4|ipv6 show excludedportrange protocol=tcp|udp`, whose
//!   text is localized, so only lines of two numbers (and an optional `*`, "administered") are
//!   read, after the dashed separator line that every language prints;
//! - the dynamic (ephemeral) port range: `netsh int ipv4|ipv6 show dynamicport tcp|udp`, two
//!   `label : number` lines (start, number of ports).
//!
//! Output that does not have this shape is an error, never an empty listing.

use serde::Serialize;

use crate::error::Error;
use crate::range::PortBlock;

/// IPv4 or IPv6: exclusions and dynamic ranges are per family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

impl Family {
    /// `ipv4` or `ipv6` (netsh's context name).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        }
    }
}

/// An excluded range and whether it is an administered (persistent) exclusion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ExcludedRange {
    /// The ports.
    pub block: PortBlock,
    /// Marked `*` by netsh: an administered port exclusion (a persistent reservation or a
    /// `netsh add excludedportrange`).
    pub administered: bool,
}

/// Parses `netsh int ipvN show excludedportrange` output in any language.
///
/// # Errors
/// [`Error::Protocol`] when the output has no dashed separator line (not the listing: an
/// error message, a missing context, a stub), or a row of two numbers is not a port range.
pub fn parse_netsh(output: &str) -> Result<Vec<ExcludedRange>, Error> {
    let mut lines = output.lines();
    if !lines.by_ref().any(|l| {
        let t = l.trim();
        t.len() >= 4 && t.chars().all(|c| c == '-' || c.is_whitespace())
    }) {
        return Err(unrecognised("excludedportrange", output));
    }
    let mut out = Vec::new();
    for line in lines {
        let mut words = line.split_whitespace();
        let (Some(a), Some(b)) = (words.next(), words.next()) else { continue };
        let (Ok(start), Ok(end)) = (a.parse::<u16>(), b.parse::<u16>()) else { continue };
        // Two numbers that are not a range: not the listing's shape (dropping the row would
        // hide an exclusion).
        let count = end.checked_sub(start).and_then(|span| span.checked_add(1));
        let Some(block) = count.and_then(|n| PortBlock::new(start, n).ok()) else {
            return Err(unrecognised("excludedportrange", output));
        };
        let administered = words.next() == Some("*");
        out.push(ExcludedRange { block, administered });
    }
    Ok(out)
}

/// Parses `netsh int ipvN show dynamicport tcp|udp` output in any language: the first two
/// `label : number` lines are the start and the number of ports.
///
/// # Errors
/// [`Error::Protocol`] when there are not two such lines or they are not a valid block.
pub fn parse_dynamic_port(output: &str) -> Result<PortBlock, Error> {
    let numbers: Vec<u32> = output
        .lines()
        .filter_map(|l| l.rsplit_once(':'))
        .filter_map(|(_, v)| v.trim().parse::<u32>().ok())
        .take(2)
        .collect();
    let &[start, count] = numbers.as_slice() else {
        return Err(unrecognised("dynamicport", output));
    };
    let (Ok(start), Ok(count)) = (u16::try_from(start), u16::try_from(count)) else {
        return Err(unrecognised("dynamicport", output));
    };
    PortBlock::new(start, count).map_err(|_| unrecognised("dynamicport", output))
}

fn unrecognised(what: &str, output: &str) -> Error {
    let first = output.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("(no output)");
    Error::Protocol(format!("netsh {what}: output not recognised (first line: {first:?})"))
}

/// What enumerating one registry value (`RegEnumValueW` at an index) gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueName {
    /// The value's name.
    Name(String),
    /// A name too long for the buffer (`ERROR_MORE_DATA`): not a port range, skipped.
    TooLong,
    /// Any other result code (`ERROR_NO_MORE_ITEMS`, 259, ends the enumeration).
    Error(u32),
}

/// `ERROR_NO_MORE_ITEMS`.
const ERROR_NO_MORE_ITEMS: u32 = 259;

/// The administered reservations a registry key's value names describe, enumerating with
/// `value` (index by index) until `ERROR_NO_MORE_ITEMS`; names that are not a port range are
/// skipped. Sorted.
///
/// # Errors
/// The first other error code (the enumeration stops there: an error that repeats would
/// otherwise never end it, and a listing with holes would hide reservations).
pub fn administered_from(mut value: impl FnMut(u32) -> ValueName) -> Result<Vec<PortBlock>, u32> {
    let mut out = Vec::new();
    for index in 0.. {
        match value(index) {
            ValueName::Name(n) => out.extend(parse_nsi_value_name(&n)),
            ValueName::TooLong => {}
            ValueName::Error(ERROR_NO_MORE_ITEMS) => break,
            ValueName::Error(code) => return Err(code),
        }
    }
    out.sort();
    Ok(out)
}

/// Parses an NSI value name: the hex of an `INET_PORT_RANGE` (start in network order, then the
/// count, both little-endian `USHORT`s in memory: 8 hex digits).
#[must_use]
pub fn parse_nsi_value_name(name: &str) -> Option<PortBlock> {
    if name.len() != 8 || !name.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let bytes = u32::from_str_radix(name, 16).ok()?.to_be_bytes();
    let start = u16::from_be_bytes([bytes[0], bytes[1]]);
    let count = u16::from_le_bytes([bytes[2], bytes[3]]);
    PortBlock::new(start, count).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETSH_EN: &str = "
Protocol tcp Port Exclusion Ranges

Start Port    End Port
----------    --------
      5357        5357
     49709       49808
     50000       50059     *

* - Administered port exclusions.
";

    const NETSH_DE: &str = "
Portausschlussbereiche für das Protokoll tcp

Startport    Endport
----------    --------
      1080        1179
      8000        8000     *

* - Verwaltete Portausschlüsse.
";

    #[test]
    fn netsh_output_is_read_in_any_language() {
        let en = parse_netsh(NETSH_EN).unwrap();
        assert_eq!(en.len(), 3);
        assert_eq!(en[1].block, PortBlock::new(49_709, 100).unwrap());
        assert!(!en[1].administered && en[2].administered);
        let de = parse_netsh(NETSH_DE).unwrap();
        assert_eq!(
            de.iter().map(|r| (r.block.start, r.block.count, r.administered)).collect::<Vec<_>>(),
            vec![(1080, 100, false), (8000, 1, true)]
        );
        assert_eq!(parse_netsh("----\ngarbage\n* - footer\n").unwrap(), vec![]);
    }

    #[test]
    fn unrecognised_netsh_output_is_an_error_not_an_empty_listing() {
        for text in [
            "",
            "The following command was not found: int ipv4 show excludedportrange.",
            "0 5\n9 3\n",
            // A row of two numbers that is not a range is not silently dropped (a dropped
            // exclusion would let find-free offer its ports).
            "----\n0 5\n",
            "----\n1080 1179\n9 3\n",
            "----\n0 65535\n",
        ] {
            assert!(
                matches!(parse_netsh(text), Err(Error::Protocol(m)) if m.contains("not recognised")),
                "{text:?}"
            );
        }
    }

    #[test]
    fn the_dynamic_range_is_read_in_any_language() {
        let en = "\nProtocol tcp Dynamic Port Range\n---------------------------------\nStart Port      : 49152\nNumber of Ports : 16384\n";
        assert_eq!(parse_dynamic_port(en).unwrap(), PortBlock::new(49_152, 16_384).unwrap());
        let fr = "Plage de ports dynamiques du protocole tcp\n----\nPort de démarrage : 1025\nNombre de ports   : 64511\n";
        assert_eq!(parse_dynamic_port(fr).unwrap(), PortBlock::new(1025, 64_511).unwrap());
        assert!(parse_dynamic_port("Start Port : 0\nNumber of Ports : 5\n").is_err());
        assert!(parse_dynamic_port("nothing here").is_err());
    }

    #[test]
    fn nsi_value_names_decode_to_blocks() {
        // Start 50000 (0xC350) in network order, count 60 (0x003C) little-endian.
        assert_eq!(parse_nsi_value_name("C3503C00"), Some(PortBlock::new(50_000, 60).unwrap()));
        assert_eq!(parse_nsi_value_name("c3503c00"), Some(PortBlock::new(50_000, 60).unwrap()));
        assert_eq!(parse_nsi_value_name("zz"), None);
        assert_eq!(parse_nsi_value_name("00000000"), None);
    }
}
