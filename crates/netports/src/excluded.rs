//! Sources of reserved and excluded port ranges, read-only.
//!
//! Windows has no documented API to enumerate them. The best available sources, in order:
//! - administered (persistent) reservations: value names under
//!   `HKLM\SYSTEM\CurrentControlSet\Control\Nsi\{eb004a03-9b1a-11d4-9123-0050047759bc}\29`
//!   (TCP) and `...\{eb004a02-9b1a-11d4-9123-0050047759bc}\5` (UDP), each the hex of an
//!   `INET_PORT_RANGE` (undocumented; verify on Windows);
//! - every excluded range, including the dynamic ones WinNAT/HNS take for Hyper-V, WSL and
//!   Docker (no owner): the output of `netsh int ipv4 show excludedportrange protocol=tcp`,
//!   whose header is localized, so only lines of two numbers (and an optional `*`, "administered")
//!   are read.

use serde::Serialize;

use crate::range::PortBlock;

/// An excluded range and whether it is an administered (persistent) reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ExcludedRange {
    /// The ports.
    pub block: PortBlock,
    /// Marked `*` by netsh: an administered port exclusion (a persistent reservation).
    pub administered: bool,
}

/// Parses `netsh int ipv4 show excludedportrange` output in any language.
#[must_use]
pub fn parse_netsh(output: &str) -> Vec<ExcludedRange> {
    let mut out = Vec::new();
    for line in output.lines() {
        let mut words = line.split_whitespace();
        let (Some(a), Some(b)) = (words.next(), words.next()) else { continue };
        let (Ok(start), Ok(end)) = (a.parse::<u16>(), b.parse::<u16>()) else { continue };
        if end < start || start == 0 {
            continue;
        }
        let administered = words.next() == Some("*");
        if let Ok(block) = PortBlock::new(start, end - start + 1) {
            out.push(ExcludedRange { block, administered });
        }
    }
    out
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
        let en = parse_netsh(NETSH_EN);
        assert_eq!(en.len(), 3);
        assert_eq!(en[1].block, PortBlock::new(49_709, 100).unwrap());
        assert!(!en[1].administered && en[2].administered);
        let de = parse_netsh(NETSH_DE);
        assert_eq!(
            de.iter().map(|r| (r.block.start, r.block.count, r.administered)).collect::<Vec<_>>(),
            vec![(1080, 100, false), (8000, 1, true)]
        );
        assert!(parse_netsh("garbage\n0 5\n9 3\n").is_empty());
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
