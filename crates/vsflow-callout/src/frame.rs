//! Reading the TCP flags of a frame: the only packet bytes vsflow looks at. Packets are never
//! modified.

/// Bytes of a frame's start that classify copies: Ethernet + one VLAN tag (18), IPv6 (40),
/// a few extension headers, and the first 14 bytes of TCP.
pub const FRAME_PREFIX: usize = 128;
/// Enough for TCP over IPv4: Ethernet with two VLAN tags (22), a maximal IPv4 header (60),
/// and the TCP flags (14).
pub const FRAME_PREFIX_V4: usize = 96;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88A8;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The TCP flags byte of an Ethernet frame carrying TCP over IPv4 or IPv6, or `None` if the
/// frame is not TCP, is a non-first fragment, or the header is not inside `frame`.
#[must_use]
pub fn tcp_flags(frame: &[u8]) -> Option<u8> {
    let mut at = 12;
    let mut ethertype = be16(frame, at)?;
    let mut tags = 0;
    while (ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ) && tags < 2 {
        at += 4;
        ethertype = be16(frame, at)?;
        tags += 1;
    }
    let ip = at + 2;
    let tcp = match ethertype {
        ETHERTYPE_IPV4 => {
            let vihl = *frame.get(ip)?;
            if vihl >> 4 != 4 {
                return None;
            }
            let ihl = usize::from(vihl & 0x0f) * 4;
            let frag = be16(frame, ip + 6)?;
            if ihl < 20 || *frame.get(ip + 9)? != 6 || frag & 0x1fff != 0 {
                return None;
            }
            ip + ihl
        }
        ETHERTYPE_IPV6 => {
            if *frame.get(ip)? >> 4 != 6 {
                return None;
            }
            let mut next = *frame.get(ip + 6)?;
            let mut off = ip + 40;
            // Hop-by-hop, routing, destination options: length in 8-octet units; fragment: 8.
            for _ in 0..4 {
                match next {
                    6 => break,
                    0 | 43 | 60 => {
                        next = *frame.get(off)?;
                        off += (usize::from(*frame.get(off + 1)?) + 1) * 8;
                    }
                    44 => {
                        next = *frame.get(off)?;
                        if be16(frame, off + 2)? & 0xfff8 != 0 {
                            return None;
                        }
                        off += 8;
                    }
                    _ => return None,
                }
            }
            if next != 6 {
                return None;
            }
            off
        }
        _ => return None,
    };
    frame.get(tcp + 13).copied()
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

    fn eth(ethertype: u16) -> Vec<u8> {
        let mut f = alloc::vec![0u8; 12];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    fn tcp(flags: u8) -> [u8; 20] {
        let mut t = [0u8; 20];
        t[12] = 0x50;
        t[13] = flags;
        t
    }

    #[test]
    fn ipv4_tcp_flags_are_read_after_the_ip_header_and_options() {
        let mut f = eth(0x0800);
        let mut ip = [0u8; 24];
        ip[0] = 0x46; // IHL 6: 4 bytes of options
        ip[9] = 6;
        f.extend_from_slice(&ip);
        f.extend_from_slice(&tcp(0x12));
        assert_eq!(tcp_flags(&f), Some(0x12));
        // UDP: no flags.
        f[14 + 9] = 17;
        assert_eq!(tcp_flags(&f), None);
    }

    #[test]
    fn vlan_tagged_ipv6_with_an_extension_header() {
        let mut f = alloc::vec![0u8; 12];
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&[0, 5]);
        f.extend_from_slice(&0x86DDu16.to_be_bytes());
        let mut ip = [0u8; 40];
        ip[0] = 0x60;
        ip[6] = 60; // destination options
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]); // next = TCP, length 0 => 8 bytes
        f.extend_from_slice(&tcp(0x02));
        assert_eq!(tcp_flags(&f), Some(0x02));
    }

    #[test]
    fn non_first_fragments_and_truncated_frames_give_none() {
        let mut f = eth(0x0800);
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[9] = 6;
        ip[7] = 8; // fragment offset 8
        f.extend_from_slice(&ip);
        f.extend_from_slice(&tcp(0x10));
        assert_eq!(tcp_flags(&f), None);
        assert_eq!(tcp_flags(&f[..20]), None);
        assert_eq!(tcp_flags(&[]), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..160)) {
            let _ = tcp_flags(&bytes);
        }
    }
}
