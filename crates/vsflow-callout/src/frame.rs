//! Reading the TCP flags of a packet: the only packet bytes vsflow looks at. Packets are never
//! modified.
//!
//! At the `FWPS_LAYER_*_VSWITCH_TRANSPORT_V4` and `_V6` layers the packet data starts at the IP
//! header (WFP "Data offset positions"; the `WFPSampler` packet examination). The IPv4 header's
//! IHL and the IPv6 extension headers are walked with bounds. A non-first fragment has no
//! transport header: no flags are read from it (and classify does not judge it, see
//! `classify.rs`).

/// Bytes of a packet's start that classify asks for: IPv6 (40), a few extension headers, and
/// the first 14 bytes of TCP. Also covers a maximal IPv4 header (60) plus 14.
pub const IP_PREFIX: usize = 128;

const IPPROTO_TCP: u8 = 6;
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DESTINATION: u8 = 60;
/// Extension headers walked before giving up.
const MAX_EXTENSIONS: usize = 8;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at.checked_add(1)?)?]))
}

/// Where the TCP header starts in an IP packet, or `None` if the packet is not TCP, is a
/// non-first fragment, or its headers are not inside `ip`.
#[must_use]
pub fn tcp_offset(ip: &[u8]) -> Option<usize> {
    match *ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(*ip.first()? & 0x0f) * 4;
            let frag = be16(ip, 6)?;
            if ihl < 20 || *ip.get(9)? != IPPROTO_TCP || frag & 0x1fff != 0 {
                return None;
            }
            Some(ihl)
        }
        6 => {
            let mut next = *ip.get(6)?;
            let mut off = 40usize;
            for _ in 0..MAX_EXTENSIONS {
                match next {
                    IPPROTO_TCP => return Some(off),
                    HOP_BY_HOP | ROUTING | DESTINATION => {
                        next = *ip.get(off)?;
                        let len = (usize::from(*ip.get(off.checked_add(1)?)?) + 1) * 8;
                        off = off.checked_add(len)?;
                    }
                    FRAGMENT => {
                        next = *ip.get(off)?;
                        if be16(ip, off.checked_add(2)?)? & 0xfff8 != 0 {
                            return None;
                        }
                        off = off.checked_add(8)?;
                    }
                    _ => return None,
                }
            }
            (next == IPPROTO_TCP).then_some(off)
        }
        _ => None,
    }
}

/// The TCP flags byte of an IP packet carrying TCP over IPv4 or IPv6 (data starting at the IP
/// header), or `None` (see [`tcp_offset`]).
#[must_use]
pub fn tcp_flags(ip: &[u8]) -> Option<u8> {
    ip.get(tcp_offset(ip)?.checked_add(13)?).copied()
}

/// The start of a frame in a `NET_BUFFER_LIST`, without copying when NDIS has it contiguous.
///
/// Up to `storage.len()` bytes from the first `NET_BUFFER` of the list at `nbl` (what WFP
/// passes as `layerData` at the vSwitch layers), with `NdisGetDataBuffer`: the view points into
/// the buffer, or into `storage` when NDIS had to copy.
///
/// # Safety
/// `nbl` is null or a valid `NET_BUFFER_LIST` whose data stays valid and unchanged for as long
/// as `storage` is borrowed (within one classify call).
pub unsafe fn nbl_prefix(
    nbl: *mut core::ffi::c_void,
    storage: &mut [u8],
) -> Option<crate::services::Frame<'_>> {
    // SAFETY: caller's contract.
    let list = unsafe { nbl.cast::<fwps_sys::NET_BUFFER_LIST>().as_ref() }?;
    let nb = list.FirstNetBuffer;
    // SAFETY: the list's first buffer, valid with the list.
    let buffer = unsafe { nb.as_ref() }?;
    // `DataLength` is a ULONG (in a union with a SIZE_T): fwps-sys declares the ULONG.
    let frame_len = buffer.data_length();
    let want = storage.len().min(usize::try_from(frame_len).unwrap_or(usize::MAX));
    if want == 0 {
        return Some(crate::services::Frame { head: &[], frame_len });
    }
    let needed = u32::try_from(want).ok()?;
    // SAFETY: `nb` is valid; `storage` has at least `want` writable bytes for the copy case.
    let p = unsafe { fwps_sys::NdisGetDataBuffer(nb, needed, storage.as_mut_ptr().cast(), 1, 0) };
    if p.is_null() {
        return None;
    }
    // SAFETY: NDIS returned `want` contiguous readable bytes at `p` (in the buffer, or the
    // storage it copied into), valid while the list is (caller's contract: while `storage` is borrowed).
    let head = unsafe { core::slice::from_raw_parts(p.cast::<u8>().cast_const(), want) };
    Some(crate::services::Frame { head, frame_len })
}

#[cfg(test)]
mod tests {
    use super::tcp_flags;
    use alloc::vec::Vec;

    fn tcp(flags: u8) -> [u8; 20] {
        let mut t = [0u8; 20];
        t[12] = 0x50;
        t[13] = flags;
        t
    }

    #[test]
    fn ipv4_tcp_flags_are_read_after_the_ip_header_and_its_options() {
        let mut ip = alloc::vec![0u8; 24];
        ip[0] = 0x46; // IHL 6: 4 bytes of options
        ip[9] = 6;
        ip.extend_from_slice(&tcp(0x12));
        assert_eq!(tcp_flags(&ip), Some(0x12));
        // UDP: no flags.
        ip[9] = 17;
        assert_eq!(tcp_flags(&ip), None);
    }

    #[test]
    fn data_starts_at_the_ip_header_not_an_ethernet_header() {
        // An Ethernet frame handed as if it were the packet: not parsed as IP.
        let mut f = alloc::vec![0u8; 12];
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[9] = 6;
        f.extend_from_slice(&ip);
        f.extend_from_slice(&tcp(0x02));
        assert_eq!(tcp_flags(&f), None);
        assert_eq!(tcp_flags(&f[14..]), Some(0x02));
    }

    #[test]
    fn ipv6_with_extension_headers() {
        let mut ip: Vec<u8> = alloc::vec![0u8; 40];
        ip[0] = 0x60;
        ip[6] = 0; // hop-by-hop
        ip.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]); // next destination options, 8 bytes
        ip.extend_from_slice(&[44, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // next fragment, 16 bytes
        ip.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 1]); // fragment: next TCP, offset 0
        ip.extend_from_slice(&tcp(0x11));
        assert_eq!(tcp_flags(&ip), Some(0x11));
        // The same as a non-first fragment: no transport header.
        let at = 40 + 8 + 16 + 2;
        ip[at] = 0x01;
        assert_eq!(tcp_flags(&ip), None);
    }

    #[test]
    fn non_first_fragments_and_truncated_packets_give_none() {
        let mut ip = alloc::vec![0u8; 20];
        ip[0] = 0x45;
        ip[9] = 6;
        ip[7] = 8; // fragment offset 8
        ip.extend_from_slice(&tcp(0x10));
        assert_eq!(tcp_flags(&ip), None);
        ip[7] = 0;
        assert_eq!(tcp_flags(&ip), Some(0x10));
        assert_eq!(tcp_flags(&ip[..33]), None);
        assert_eq!(tcp_flags(&[]), None);
        // IHL below 5 is malformed.
        ip[0] = 0x44;
        assert_eq!(tcp_flags(&ip), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_packets_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = tcp_flags(&bytes);
        }
    }
}
