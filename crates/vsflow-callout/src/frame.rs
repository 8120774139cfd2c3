//! Reading a packet's headers: the TCP flags, and whether a packet is a non-first fragment. The
//! only packet bytes vsflow looks at; packets are never modified.
//!
//! At the `FWPS_LAYER_*_VSWITCH_TRANSPORT_V4` and `_V6` layers the packet data starts at the IP
//! header (WFP "Data offset positions"; the `WFPSampler` packet examination). The IPv4 header's
//! IHL, the IPv6 extension headers (hop-by-hop, routing, destination options, fragment) and
//! authentication headers (`IPsec` AH, RFC 4302, in either family) are walked with bounds, at most
//! [`MAX_EXTENSIONS`] of them, within the first [`IP_PREFIX`] bytes.
//!
//! Only the datagram's own bytes are read ([`datagram`]: never a frame's padding or trailer past
//! the IP length).
//!
//! **What cannot be read is never a permit** (issue 16): flags [`tcp_flags`] cannot read (a tiny
//! first fragment, more headers than it walks, an ESP or unknown header, a frame cut short) make
//! the packet [`vsflow_core::Headers::NoFlags`], which classify never treats as mid-stream; a
//! TCP or UDP packet WFP gives no ports for is a non-first fragment only if its IP header says
//! so ([`is_non_first_fragment`]: fragment offset not 0); otherwise it is judged without ports
//! ([`vsflow_core::Headers::NoPorts`]). A TCP (or IPv6 UDP) later fragment that starts within
//! the bytes vsflow reads ([`may_overlap_headers`]) may rewrite the headers its first fragment
//! was judged by (RFC 1858 3.3): it is judged without ports too. And a fragment whose protocol
//! and ports fragments vsflow does not judge may rewrite ([`headers_rewritable`]: a first
//! fragment whose headers lie past the bound later fragments are judged within, an IPv6 later
//! fragment within it whatever protocol it names) is [`vsflow_core::Headers::Unknown`]. See
//! `classify.rs`.

/// Bytes of a packet's start that classify asks for: IPv6 (40), a few extension headers, and
/// the first 14 bytes of TCP. Also covers a maximal IPv4 header (60), an AH, plus 14.
pub const IP_PREFIX: usize = 128;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AUTHENTICATION: u8 = 51;
const DESTINATION: u8 = 60;
/// Extension headers (IPv6 extension headers and authentication headers) walked before giving
/// up.
pub const MAX_EXTENSIONS: usize = 8;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at.checked_add(1)?)?]))
}

/// What walking an IP packet's headers found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// The header after the IP headers: its protocol number and offset.
    Transport {
        /// The protocol (next header) number.
        protocol: u8,
        /// Where it starts.
        at: usize,
        /// For the first fragment of a fragmented datagram (IPv4: offset 0 with more fragments
        /// to come; IPv6: a Fragment header at offset 0), where its fragmentable part starts:
        /// the byte later fragments' offsets count from. `None` for a whole datagram.
        fragmentable: Option<usize>,
    },
    /// A fragment whose offset is not 0: no transport header.
    NonFirstFragment {
        /// Where its data starts in the datagram's fragmentable part, in bytes.
        offset: usize,
        /// The protocol its own header names: IPv4's protocol field, IPv6's Fragment header's
        /// Next Header (the first header of the fragmentable part, as the sender copied it
        /// from the first fragment's; RFC 8200 4.5: reassembly uses only the first's).
        next: u8,
    },
    /// The headers are not inside the bytes given, are malformed, or are more than
    /// [`MAX_EXTENSIONS`].
    Unreadable,
}

/// The bytes of `ip` (data starting at the IP header) that belong to its IP datagram.
///
/// A frame may hold more than its datagram: Ethernet pads a frame to 60 bytes, and a sender
/// may append any trailer. What lies past the datagram's end is the sender's choice, and the
/// receiver's IP layer drops it (RFC 791 total length, RFC 8200 payload length), so nothing
/// is read there: a tiny first fragment followed by bytes that read as a TCP header with ACK
/// would otherwise pass for a mid-stream segment while the datagram it starts carries a SYN
/// (issue 16). A length field of 0 is a large send (`LSOv2` sets the IPv4 total length to 0:
/// the frame's length counts; Microsoft, "Offloading the Segmentation of Large TCP Packets")
/// or a jumbogram: the frame bounds the datagram.
#[must_use]
pub fn datagram(ip: &[u8]) -> &[u8] {
    let total = match ip.first().map(|b| b >> 4) {
        Some(4) => be16(ip, 2).map_or(0, usize::from),
        Some(6) => be16(ip, 4).map_or(0, |n| if n == 0 { 0 } else { 40 + usize::from(n) }),
        _ => 0,
    };
    if total == 0 { ip } else { ip.get(..total).unwrap_or(ip) }
}

/// Walks the IP headers of `ip` (data starting at the IP header) to the transport header,
/// within its [`datagram`].
#[must_use]
pub fn walk(ip: &[u8]) -> Walk {
    let ip = datagram(ip);
    let Some(&first) = ip.first() else { return Walk::Unreadable };
    match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            let (Some(frag), Some(&protocol)) = (be16(ip, 6), ip.get(9)) else {
                return Walk::Unreadable;
            };
            if ihl < 20 {
                return Walk::Unreadable;
            }
            if frag & 0x1fff != 0 {
                let offset = usize::from(frag & 0x1fff) * 8;
                return Walk::NonFirstFragment { offset, next: protocol };
            }
            if ihl > ip.len() {
                // The datagram (or the bytes read) ends inside its own header.
                return Walk::Unreadable;
            }
            // More fragments (MF) at offset 0: a first fragment, fragmentable after the header.
            let first = (frag & 0x2000 != 0).then_some(ihl);
            chain(ip, protocol, ihl, false, first).unwrap_or(Walk::Unreadable)
        }
        6 => match ip.get(6) {
            Some(&next) => chain(ip, next, 40, true, None).unwrap_or(Walk::Unreadable),
            None => Walk::Unreadable,
        },
        _ => Walk::Unreadable,
    }
}

/// Follows the header chain from header `next` at `off`; `None` if a header is cut short.
/// `fragmentable`: where a first fragment's fragmentable part starts, if known yet.
fn chain(
    ip: &[u8],
    mut next: u8,
    mut off: usize,
    v6: bool,
    mut fragmentable: Option<usize>,
) -> Option<Walk> {
    for _ in 0..MAX_EXTENSIONS {
        match next {
            AUTHENTICATION => {
                // RFC 4302 2.2: the payload length is the AH's length in 32-bit words minus 2.
                let len = (usize::from(*ip.get(off.checked_add(1)?)?) + 2) * 4;
                next = *ip.get(off)?;
                off = off.checked_add(len)?;
            }
            HOP_BY_HOP | ROUTING | DESTINATION if v6 => {
                let len = (usize::from(*ip.get(off.checked_add(1)?)?) + 1) * 8;
                next = *ip.get(off)?;
                off = off.checked_add(len)?;
            }
            FRAGMENT if v6 => {
                if fragmentable.is_some() {
                    // A second Fragment header (review s5, R5-1). No sender makes one (RFC
                    // 8200 section 4.1: each extension header at most once, Destination
                    // Options twice), and a receiver reassembles on the first one's offsets
                    // while the second would move where the fragmentable part starts, so the
                    // bound later fragments are judged within: unreadable (IPv6: what fragments
                    // may rewrite cannot be told, `headers_rewritable`).
                    return Some(Walk::Unreadable);
                }
                // The offset in 8-byte units in the upper 13 bits: masked, it is in bytes.
                let offset = usize::from(be16(ip, off.checked_add(2)?)? & 0xfff8);
                if offset != 0 {
                    return Some(Walk::NonFirstFragment { offset, next: *ip.get(off)? });
                }
                next = *ip.get(off)?;
                off = off.checked_add(8)?;
                fragmentable = Some(off);
            }
            protocol => return Some(Walk::Transport { protocol, at: off, fragmentable }),
        }
    }
    let extension = matches!(next, AUTHENTICATION)
        || (v6 && matches!(next, HOP_BY_HOP | ROUTING | DESTINATION | FRAGMENT));
    Some(if extension {
        Walk::Unreadable
    } else {
        Walk::Transport { protocol: next, at: off, fragmentable }
    })
}

/// Where the TCP header starts in an IP packet, or `None` if the packet is not TCP, is a
/// non-first fragment, or its headers are not inside its datagram (see [`walk`]).
#[must_use]
pub fn tcp_offset(ip: &[u8]) -> Option<usize> {
    match walk(ip) {
        Walk::Transport { protocol: IPPROTO_TCP, at, .. } => Some(at),
        _ => None,
    }
}

/// The TCP flags byte of an IP packet carrying TCP over IPv4 or IPv6 (data starting at the IP
/// header), or `None`: not readable, never to be taken for "no flags".
///
/// Not readable: see [`tcp_offset`], or the flags lie past the end of the [`datagram`].
#[must_use]
#[inline]
pub fn tcp_flags(ip: &[u8]) -> Option<u8> {
    // Every packet: IPv4 without options carrying TCP, read in a few tests (what `walk` finds
    // for it: a non-first fragment has no flags; otherwise the TCP header is at 20, and its
    // flags byte, 33, must lie inside the datagram: see `datagram` for the total length).
    if let [0x45, _, t0, t1, _, _, f0, f1, _, IPPROTO_TCP, ..] = *ip {
        let total = usize::from(u16::from_be_bytes([t0, t1]));
        let end = if total == 0 || total > ip.len() { ip.len() } else { total };
        if u16::from_be_bytes([f0, f1]) & 0x1fff != 0 || end <= 20 + 13 {
            return None;
        }
        return ip.get(20 + 13).copied();
    }
    tcp_flags_walked(ip)
}

/// The TCP flags of the common packet, or `None` for any other: IPv4 without options (IHL 5),
/// not a fragment (MF and the fragment offset 0), carrying TCP, its flags byte inside the
/// [`datagram`].
///
/// For such a packet [`headers_rewritable`] is false and [`tcp_flags`] returns this byte:
/// classify reads it with one look instead of both (`the_plain_tcp_path_agrees_with_the_general_readers`);
/// for anything else the general readers decide.
#[must_use]
#[inline]
pub fn plain_tcp_flags(ip: &[u8]) -> Option<u8> {
    if let [0x45, _, t0, t1, _, _, f0, f1, _, IPPROTO_TCP, ..] = *ip
        && u16::from_be_bytes([f0, f1]).trailing_zeros() >= 14
    // MF and the offset are 0
    {
        let total = usize::from(u16::from_be_bytes([t0, t1]));
        let end = if total == 0 || total > ip.len() { ip.len() } else { total };
        if end > 20 + 13 {
            return ip.get(20 + 13).copied();
        }
    }
    None
}

/// [`tcp_flags`] for every other packet: the header walk.
#[inline(never)]
fn tcp_flags_walked(ip: &[u8]) -> Option<u8> {
    let ip = datagram(ip);
    ip.get(tcp_offset(ip)?.checked_add(13)?).copied()
}

/// True only if the IP header of `ip` says the packet is a fragment at a non-zero offset.
///
/// That is the IPv4 fragment offset, or an IPv6 fragment header's: such a packet has no
/// transport header and passes on the verdict of its datagram's first fragment (classify.rs).
#[must_use]
pub fn is_non_first_fragment(ip: &[u8]) -> bool {
    matches!(walk(ip), Walk::NonFirstFragment { .. })
}

/// True if `ip` is a later fragment that may overlap the headers its first fragment was judged by.
///
/// Its data starts within the first [`IP_PREFIX`] bytes of the datagram's fragmentable part
/// (IPv6: `vsflow_core::icmp::READ_LEN`, below), where every header vsflow reads in a first
/// fragment lies, so it may rewrite what that fragment's verdict rested on.
///
/// RFC 1858 section 3.3: a fragment at offset 1 (byte 8) overwrites a TCP header's bytes 8-15,
/// its flags among them, so a first fragment judged as a mid-stream ACK becomes a SYN in the
/// guest's reassembly. RFC 5722 and RFC 8200 section 4.5 make IPv6 receivers drop a datagram
/// whose fragments overlap, and Linux drops overlapping IPv4 fragments, but nothing says every
/// guest does (verify on Windows: its reassembly of overlapping IPv4 fragments). After an IPv6
/// fragment header, destination options or an AH move the TCP header further in, so the bound
/// is every byte vsflow reads, not only offset 1. No sender makes such a fragment on a link
/// with an MTU of 176 bytes or more (IPv4: 20 + 128 + 28; IPv6's minimum MTU is 1280).
///
/// Except IPv4 UDP: its header is the payload's first 8 bytes, which only the first fragment
/// carries, and UDP has no flags, so nothing a later fragment overlaps was judged (a capture
/// of NTP fragmented at offset 48 replays unchanged: `captures.rs`). IPv6 UDP is not exempt:
/// destination options or an AH after the fragment header move its ports into reach.
///
/// IPv6's bound is wider: RFC 8200 section 4.5, "the Next Header values in the Fragment headers
/// of different fragments of the same original packet may differ. Only the value from the
/// Offset zero fragment packet is used for reassembly", so a later fragment that names TCP or
/// UDP may overlap an ICMPv6 first fragment, whose quote vsflow reads up to
/// [`vsflow_core::icmp::READ_LEN`] bytes (an IPv4 fragment joins only fragments of its own
/// protocol, RFC 791). ICMP later fragments are judged by `vsflow_core::icmp::read` to the same
/// bound. No IPv6 sender makes one: every link carries 1280 bytes.
#[must_use]
pub fn may_overlap_headers(ip: &[u8]) -> bool {
    let Walk::NonFirstFragment { offset, .. } = walk(ip) else { return false };
    if ip.first().is_some_and(|b| b >> 4 == 6) {
        return offset < vsflow_core::icmp::READ_LEN;
    }
    offset < IP_PREFIX && ip.get(9) != Some(&17)
}

/// True if `ip` is a later fragment (offset not 0) of an AH-protected datagram.
///
/// Its own header names the authentication header (RFC 4302: AH is applied to whole datagrams,
/// and fragments made after it; IPv4's protocol field, or IPv6's Fragment header's Next
/// Header, is 51).
///
/// Review s4, L3. WFP reports such a datagram's first fragment by the transport protocol
/// behind the AH, with its ports (the double does; verify on Windows, WINDOWS-VERIFICATION
/// 56), and a later fragment, which has neither the AH nor a transport header, by whatever
/// else it can (51, or what its data reads as): judged as that protocol's packet it never
/// matches the flow its first fragment made or matched, and the datagram is never reassembled.
/// Classify passes one that starts past the bound on its first fragment's verdict, as TCP and
/// UDP later fragments (within it, [`headers_rewritable`] has made it `Unknown` already: it
/// may rewrite the AH chain's Next Header or the ports).
#[must_use]
#[inline]
pub fn is_ah_later_fragment(ip: &[u8]) -> bool {
    match ip.first().map(|b| b >> 4) {
        // IPv4: the protocol field names AH, and the offset is not 0 (`walk` reads it).
        Some(4) => {
            ip.get(9) == Some(&AUTHENTICATION)
                && matches!(walk(ip), Walk::NonFirstFragment { next: AUTHENTICATION, .. })
        }
        // IPv6: only a packet with extension headers can be a fragment.
        Some(6) => {
            matches!(ip.get(6), Some(&(HOP_BY_HOP | ROUTING | FRAGMENT | DESTINATION)))
                && matches!(walk(ip), Walk::NonFirstFragment { next: AUTHENTICATION, .. })
        }
        _ => false,
    }
}

/// True if fragments vsflow does not judge may rewrite what `ip`'s protocol and ports rest on.
///
/// Then neither can be relied on ([`vsflow_core::Headers::Unknown`]). `ip` is the packet's
/// start as read: [`IP_PREFIX`] bytes of IPv4, [`vsflow_core::icmp::READ_LEN`] of IPv6.
///
/// Later fragments are judged only when they start within the bound of [`may_overlap_headers`]
/// (IPv4: [`IP_PREFIX`] bytes of the fragmentable part; IPv6: `READ_LEN`); past it they pass on
/// their first fragment's verdict. That is sound only if every byte a first fragment is judged
/// by lies within the bound, and two kinds of packet break it (review s4, R4-1 and R4-2):
///
/// - A **first fragment whose upper-layer header lies past the bound**. WFP gives a transport
///   header's ports wherever it lies (the double does; verify on Windows), and IPv6 destination
///   options after the Fragment header (RFC 8200 section 4.1: up to 2 KB each, `PadN`) or AHs
///   (RFC 4302, either family) move it as deep as a sender likes: a later fragment past the
///   bound rewrites the judged ports (UDP to 53 reassembles as UDP to 161) or the header
///   chain's last Next Header, so the protocol too. Judged: TCP's first 14 bytes (ports and
///   flags), UDP's first 4 (ports), ICMP's and ICMPv6's first 2 (type and code, WFP's port
///   values), and for every protocol the chain before its header.
/// - An **IPv6 later fragment within the bound, whatever protocol it names**. Reassembly uses
///   only the first fragment's Next Header (RFC 8200 section 4.5), so one that names GRE or
///   TCP lies on a UDP first fragment's header as well as one naming UDP: judging it as a
///   packet of the protocol it names (a GRE flow admitting it, or a rule admitting every TCP
///   port) would admit a rewrite of a UDP datagram. IPv4 fragments join only fragments of their
///   own protocol (RFC 791), so an IPv4 later fragment names its datagram's protocol, except
///   behind an AH, whose chain a later fragment at offset 8 or more may rewrite.
///
/// And an IPv6 packet whose header chain cannot be walked within the bytes read (more than
/// `READ_LEN` - 8 bytes of extension headers, or more than [`MAX_EXTENSIONS`] of them, or cut
/// short, or a second Fragment header): whether it is such a fragment cannot be told, so it is
/// taken to be one. No sender
/// makes any of these on a link whose MTU is 1280 bytes or more (IPv6's minimum) unless it
/// means to: a fragment carries at least 1232 bytes of data; nothing legitimate puts 150 bytes
/// of options after a Fragment header.
#[must_use]
#[inline]
pub fn headers_rewritable(ip: &[u8]) -> bool {
    // Every packet: IPv4 without options, not a fragment (no MF, offset 0), not an AH.
    if let [0x45, _, _, _, _, _, f0, f1, _, protocol, ..] = *ip
        && u16::from_be_bytes([f0, f1]).trailing_zeros() >= 14 // MF and the offset are 0
        && protocol != AUTHENTICATION
    {
        return false;
    }
    headers_rewritable_walked(ip)
}

/// [`headers_rewritable`] for every other packet: the header walk.
#[inline(never)]
fn headers_rewritable_walked(ip: &[u8]) -> bool {
    let v6 = ip.first().is_some_and(|b| b >> 4 == 6);
    let bound = if v6 { vsflow_core::icmp::READ_LEN } else { IP_PREFIX };
    match walk(ip) {
        Walk::Transport { fragmentable: None, .. } => false,
        Walk::Transport { protocol, at, fragmentable: Some(start) } => {
            let family = if v6 { vsflow_core::IpFamily::V6 } else { vsflow_core::IpFamily::V4 };
            let judged = match protocol {
                IPPROTO_TCP => 14,
                IPPROTO_UDP => 4,
                // ICMP's type and code: WFP reports them in its port values wherever the header
                // lies, and a rule for ICMP matches the type (review s5, R5-2: a header at
                // exactly the bound was judged by its type, which a later fragment there
                // rewrote unjudged).
                p if vsflow_core::icmp::is_icmp(family, p) => 2,
                _ => 0,
            };
            at.saturating_add(judged) > start.saturating_add(bound)
        }
        Walk::NonFirstFragment { offset, .. } => {
            offset < bound && (v6 || ip.get(9) == Some(&AUTHENTICATION))
        }
        // IPv6, or nothing read: whether it is such a fragment cannot be told. IPv4: a first
        // fragment (MF) whose chain of AHs goes on past the bytes read is one (its transport
        // header lies past the bound); any other is judged as before by what WFP and
        // `tcp_flags` say.
        Walk::Unreadable => {
            v6 || ip.first().is_none_or(|b| b >> 4 != 4)
                || be16(ip, 6).is_some_and(|frag| frag & 0x2000 != 0)
        }
    }
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
#[allow(
    clippy::inline_always,
    reason = "once per packet on the classify path: out of line it costs a call and a frame (callgrind, docs/PERFORMANCE.md)"
)]
#[inline(always)]
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
    use super::{
        MAX_EXTENSIONS, Walk, datagram, is_non_first_fragment, tcp_flags, tcp_offset, walk,
    };
    use alloc::vec::Vec;

    /// The IPv4 fast path reads what the header walk reads, for every length, fragment field
    /// and total length (random bytes after a header of IHL 5 carrying TCP).
    #[test]
    fn the_ipv4_fast_path_reads_the_flags_the_walk_finds() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            let len = usize::from(b[0] % 64);
            let mut ip: Vec<u8> = (0..len).map(|i| b[i % 8] ^ b[(i / 8) % 8]).collect();
            if let Some(v) = ip.get_mut(0) {
                *v = 0x45;
            }
            if let Some(v) = ip.get_mut(9) {
                *v = 6;
            }
            if b[1] & 1 == 0
                && let Some(f) = ip.get_mut(6..8)
            {
                f.copy_from_slice(&[b[2] & 0xe0, 0]);
            }
            let general = {
                let d = datagram(&ip);
                tcp_offset(d).and_then(|at| d.get(at + 13).copied())
            };
            assert_eq!(tcp_flags(&ip), general, "{ip:02x?}");
        }
    }

    /// Whatever the bytes, the one-look reader of the common packet finds flags only where the
    /// general readers find the same flags and no rewritable headers (random bytes after an
    /// IPv4 header of IHL 5 carrying TCP, AH or UDP, any fragment field and total length, half
    /// the time a total length about the bytes read).
    #[test]
    fn the_plain_tcp_path_agrees_with_the_general_readers() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut found = 0;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            let len = usize::from(b[0] % 80);
            let mut ip: Vec<u8> = (0..len).map(|i| b[i % 8] ^ b[(i / 8) % 8]).collect();
            if b[3] & 3 != 0
                && let Some(v) = ip.get_mut(0)
            {
                *v = 0x45;
            }
            if let Some(v) = ip.get_mut(9) {
                *v = [6, 6, 51, 17][usize::from(b[4] & 3)];
            }
            if b[1] & 1 == 0
                && let Some(f) = ip.get_mut(6..8)
            {
                f.copy_from_slice(&[b[2] & 0xe0, 0]);
            }
            // Half the time a total length about the bytes read (0, a large send, included):
            // the flags byte just inside, at or past the datagram's end (review s7: a random
            // total length almost never ends the datagram within the 80 bytes read).
            if b[1] & 2 == 0
                && let Some(t) = ip.get_mut(2..4)
            {
                let total = u16::from(b[5]) % (u16::from(b[0] % 80) + 3);
                t.copy_from_slice(&total.to_be_bytes());
            }
            if let Some(flags) = super::plain_tcp_flags(&ip) {
                found += 1;
                assert!(!super::headers_rewritable(&ip), "{ip:02x?}");
                assert_eq!(tcp_flags(&ip), Some(flags), "{ip:02x?}");
            }
        }
        assert!(found > 1_000, "the common packet was generated ({found})");
    }

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

    #[test]
    fn authentication_headers_are_walked_in_both_families() {
        // IPv4 | AH (next TCP, 24 bytes) | TCP
        let mut ip = alloc::vec![0u8; 20];
        ip[0] = 0x45;
        ip[9] = 51;
        ip.extend_from_slice(&[6, 4, 0, 0]);
        ip.extend_from_slice(&[0; 20]);
        ip.extend_from_slice(&tcp(0x02));
        assert_eq!(tcp_flags(&ip), Some(0x02));
        // IPv6 | hop-by-hop | AH | TCP
        let mut ip: Vec<u8> = alloc::vec![0u8; 40];
        ip[0] = 0x60;
        ip[6] = 0;
        ip.extend_from_slice(&[51, 0, 0, 0, 0, 0, 0, 0]);
        ip.extend_from_slice(&[6, 4, 0, 0]);
        ip.extend_from_slice(&[0; 20]);
        ip.extend_from_slice(&tcp(0x10));
        assert_eq!(tcp_flags(&ip), Some(0x10));
        // The AH cut short: unreadable, not "no flags".
        assert_eq!(tcp_flags(&ip[..60]), None);
    }

    #[test]
    fn more_extension_headers_than_walked_or_an_unknown_one_are_unreadable() {
        let build = |n: usize, last: u8| {
            let mut ip: Vec<u8> = alloc::vec![0u8; 40];
            ip[0] = 0x60;
            ip[6] = if n == 0 { last } else { 60 };
            for i in 0..n {
                ip.extend_from_slice(&[if i + 1 == n { last } else { 60 }, 0, 1, 4, 0, 0, 0, 0]);
            }
            ip.extend_from_slice(&tcp(0x02));
            ip
        };
        assert_eq!(tcp_flags(&build(MAX_EXTENSIONS, 6)), Some(0x02));
        assert_eq!(tcp_flags(&build(MAX_EXTENSIONS + 1, 6)), None);
        assert_eq!(walk(&build(MAX_EXTENSIONS + 1, 6)), Walk::Unreadable);
        // ESP: nothing after it can be read.
        assert_eq!(tcp_flags(&build(1, 50)), None);
    }

    #[test]
    fn only_a_fragment_offset_makes_a_non_first_fragment() {
        let mut ip = alloc::vec![0u8; 20];
        ip[0] = 0x45;
        ip[9] = 17;
        ip[6] = 0x20; // MF, offset 0: a first fragment
        ip.extend_from_slice(&[0, 53]);
        assert!(!is_non_first_fragment(&ip), "a tiny first fragment is a first fragment");
        ip[7] = 1;
        assert!(is_non_first_fragment(&ip));
        ip[6] = 0;
        assert!(is_non_first_fragment(&ip), "the last fragment");
        assert!(!is_non_first_fragment(&ip[..4]), "unreadable is not a non-first fragment");
        assert!(!is_non_first_fragment(&[]));
        // IPv6 fragment header: offset 0 with M, then offset 3.
        let mut ip6: Vec<u8> = alloc::vec![0u8; 40];
        ip6[0] = 0x60;
        ip6[6] = 44;
        ip6.extend_from_slice(&[17, 0, 0, 1, 0, 0, 0, 1]);
        assert!(!is_non_first_fragment(&ip6));
        ip6[42..44].copy_from_slice(&(3u16 << 3).to_be_bytes());
        assert!(is_non_first_fragment(&ip6));
    }

    #[test]
    fn a_later_fragment_naming_ah_is_an_ah_protected_datagrams() {
        use super::is_ah_later_fragment;
        // IPv4: protocol 51, offset 185 units; a first fragment (offset 0, MF) is not one, nor
        // is a later fragment of UDP.
        let mut ip = alloc::vec![0u8; 20];
        ip[0] = 0x45;
        ip[9] = 51;
        ip.extend_from_slice(&[0x44; 16]);
        ip[6..8].copy_from_slice(&185u16.to_be_bytes());
        assert!(is_ah_later_fragment(&ip));
        ip[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
        assert!(!is_ah_later_fragment(&ip), "a first fragment");
        ip[6..8].copy_from_slice(&185u16.to_be_bytes());
        ip[9] = 17;
        assert!(!is_ah_later_fragment(&ip), "UDP");
        assert!(!is_ah_later_fragment(&ip[..8]) && !is_ah_later_fragment(&[]), "unreadable");
        // IPv6: a Fragment header naming AH at offset 154 units, behind a hop-by-hop header; at
        // offset 0 (a first fragment) it is not one, nor is one naming UDP.
        let mut ip6: Vec<u8> = alloc::vec![0u8; 40];
        ip6[0] = 0x60;
        ip6[6] = 0;
        ip6.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]);
        ip6.extend_from_slice(&[51, 0, 0, 0, 0, 0, 0, 1]);
        ip6.extend_from_slice(&[0x44; 16]);
        ip6[50..52].copy_from_slice(&(154u16 << 3).to_be_bytes());
        assert!(is_ah_later_fragment(&ip6));
        ip6[50..52].copy_from_slice(&1u16.to_be_bytes());
        assert!(!is_ah_later_fragment(&ip6), "a first fragment");
        ip6[50..52].copy_from_slice(&(154u16 << 3).to_be_bytes());
        ip6[48] = 17;
        assert!(!is_ah_later_fragment(&ip6), "UDP");
        ip6[6] = 17;
        assert!(!is_ah_later_fragment(&ip6), "no extension headers: not a fragment");
    }

    #[test]
    fn a_later_fragment_within_the_bytes_read_may_overlap_the_headers() {
        use super::may_overlap_headers;
        let mut ip = alloc::vec![0u8; 20];
        ip[0] = 0x45;
        ip[9] = 6;
        ip.extend_from_slice(&[0; 8]);
        for (units, overlaps) in [(1u16, true), (2, true), (15, true), (16, false), (185, false)] {
            ip[6..8].copy_from_slice(&units.to_be_bytes());
            let offset = usize::from(units) * 8;
            assert_eq!(walk(&ip), Walk::NonFirstFragment { offset, next: 6 });
            assert_eq!(may_overlap_headers(&ip), overlaps, "IPv4 offset {units}");
        }
        ip[6..8].copy_from_slice(&0u16.to_be_bytes());
        assert!(!may_overlap_headers(&ip), "a first fragment");
        // IPv4 UDP: only the first fragment holds its header.
        ip[9] = 17;
        ip[6..8].copy_from_slice(&1u16.to_be_bytes());
        assert!(!may_overlap_headers(&ip), "IPv4 UDP");
        let mut ip6: Vec<u8> = alloc::vec![0u8; 40];
        ip6[0] = 0x60;
        ip6[6] = 44;
        ip6.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 1]);
        ip6.extend_from_slice(&[0; 8]);
        // IPv6: to the bytes read of an ICMPv6 first fragment (reassembly ignores a later
        // fragment's next header, RFC 8200 4.5).
        for (units, overlaps) in [(1u16, true), (15, true), (16, true), (23, true), (24, false)] {
            ip6[42..44].copy_from_slice(&(units << 3).to_be_bytes());
            assert_eq!(may_overlap_headers(&ip6), overlaps, "IPv6 offset {units}");
        }
    }

    #[test]
    fn headers_later_fragments_may_rewrite_are_found_in_either_family() {
        use super::{AUTHENTICATION, DESTINATION, FRAGMENT, HOP_BY_HOP, headers_rewritable};
        // IPv4: a whole datagram, a first fragment with its TCP header at 20, one behind an AH
        // of 24 bytes (within the 128 later fragments are judged in) and one of 124 bytes.
        let v4 = |mf_offset: u16, protocol: u8, ah_words: Option<u8>| {
            let mut ip = alloc::vec![0u8; 20];
            ip[0] = 0x45;
            ip[6..8].copy_from_slice(&mf_offset.to_be_bytes());
            ip[9] = if ah_words.is_some() { AUTHENTICATION } else { protocol };
            if let Some(words) = ah_words {
                // AH: next header, payload length in words minus 2, then (words * 4 - 2) bytes.
                ip.extend_from_slice(&[protocol, words - 2]);
                ip.resize(ip.len() + usize::from(words) * 4 - 2, 0);
            }
            ip.extend_from_slice(&tcp(0x10));
            ip
        };
        assert!(!headers_rewritable(&v4(0, 6, None)), "whole");
        assert!(!headers_rewritable(&v4(0x2000, 6, None)), "first fragment");
        assert!(!headers_rewritable(&v4(0x2000, 17, None)), "first fragment, UDP");
        assert!(!headers_rewritable(&v4(0x2000, 6, Some(6))), "AH of 24 bytes");
        assert!(!headers_rewritable(&v4(0, 6, Some(31))), "a whole datagram behind a deep AH");
        assert!(headers_rewritable(&v4(0x2000, 6, Some(31))), "TCP behind an AH of 124 bytes");
        assert!(!headers_rewritable(&v4(0x2000, 17, Some(31))), "UDP ports at 124-127: within");
        // Two AHs, the second past the 128 bytes read: the chain cannot be walked.
        let mut two = v4(0x2000, AUTHENTICATION, Some(30));
        two.truncate(super::IP_PREFIX);
        assert!(headers_rewritable(&two), "a first fragment's AH chain past the bytes read");
        two[6] = 0;
        assert!(!headers_rewritable(&two), "the same, not a fragment: as before");
        assert!(headers_rewritable(&v4(0x2000, 17, Some(32))), "UDP behind an AH of 128 bytes");
        // Later fragments: named AH within 128 bytes; others are the port-less path's.
        assert!(headers_rewritable(&v4(1, 6, Some(6))), "an AH later fragment at 8");
        assert!(!headers_rewritable(&v4(16, 6, Some(6))), "an AH later fragment at 128");
        assert!(!headers_rewritable(&v4(1, 6, None)), "a TCP later fragment: NoPorts");
        // IPv6: a Fragment header at offset 0, then `opts` bytes of destination options, then
        // UDP (ports within 192 bytes of the fragmentable part only up to 188).
        let v6 = |offset_units: u16, opts: usize, upper: u8| {
            let mut ip = alloc::vec![0u8; 40];
            ip[0] = 0x60;
            ip[6] = FRAGMENT;
            let next = if opts == 0 { upper } else { DESTINATION };
            ip.extend_from_slice(&[next, 0]);
            ip.extend_from_slice(&(offset_units << 3 | 1).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0, 1]);
            if opts > 0 {
                ip.extend_from_slice(&[upper, u8::try_from(opts / 8 - 1).unwrap()]);
                ip.resize(ip.len() + opts - 2, 0);
            }
            ip.extend_from_slice(&tcp(0x10));
            ip.truncate(vsflow_core::icmp::READ_LEN);
            ip
        };
        assert!(!headers_rewritable(&v6(0, 0, 17)), "UDP at 0");
        assert!(!headers_rewritable(&v6(0, 88, 17)), "UDP at 88");
        assert!(!headers_rewritable(&v6(0, 184, 17)), "UDP ports at 184-187: within the bound");
        assert!(headers_rewritable(&v6(0, 192, 17)), "UDP at 192: past it");
        assert!(!headers_rewritable(&v6(0, 176, 6)), "TCP at 176: its flags at 189, within");
        assert!(headers_rewritable(&v6(0, 184, 6)), "TCP at 184: its flags at 197, past it");
        // ICMPv6: its type and code (WFP's port values) at 192-193 lie past the bound (R5-2).
        assert!(!headers_rewritable(&v6(0, 184, 58)), "ICMPv6 type at 184: within");
        assert!(headers_rewritable(&v6(0, 192, 58)), "ICMPv6 type at 192: past it");
        assert!(!headers_rewritable(&v6(0, 192, 47)), "GRE at 192: nothing of it judged");
        assert!(headers_rewritable(&v6(3, 0, 47)), "a later fragment at 24 naming GRE");
        assert!(headers_rewritable(&v6(23, 0, 17)), "at 184 naming UDP");
        assert!(!headers_rewritable(&v6(24, 0, 17)), "at 192: past what is judged");
        // A second Fragment header (an atomic one, offset 0): the bound's start cannot be told
        // (R5-1). Nor can it behind a first one at offset 0 with a later one's offset.
        for second in [0u16, 1, 24 << 3] {
            let mut two = alloc::vec![0u8; 40];
            two[0] = 0x60;
            two[6] = FRAGMENT;
            two.extend_from_slice(&[FRAGMENT, 0, 0, 1, 0, 0, 0, 1]);
            two.extend_from_slice(&[17, 0]);
            two.extend_from_slice(&second.to_be_bytes());
            two.extend_from_slice(&[0, 0, 0, 2]);
            two.extend_from_slice(&[0; 8]);
            assert_eq!(walk(&two), Walk::Unreadable, "second Fragment header {second:#x}");
            assert!(headers_rewritable(&two), "second Fragment header {second:#x}");
        }
        // A whole IPv6 datagram with its headers within reach; nothing read at all.
        let mut whole = alloc::vec![0u8; 40];
        whole[0] = 0x60;
        whole[6] = 17;
        whole.extend_from_slice(&[0; 8]);
        assert!(!headers_rewritable(&whole));
        assert!(headers_rewritable(&[]), "no bytes: nothing can be relied on");
        // A hop-by-hop header of 160 bytes: the chain goes on past the bytes read.
        let mut long = alloc::vec![0u8; 40];
        long[0] = 0x60;
        long[6] = HOP_BY_HOP;
        long.extend_from_slice(&[FRAGMENT, 19]);
        long.resize(vsflow_core::icmp::READ_LEN, 0);
        assert!(headers_rewritable(&long), "a chain that cannot be walked in the bytes read");
    }

    #[test]
    fn flags_past_the_datagram_end_are_never_read() {
        // IPv4: a first fragment of 28 bytes (8 of TCP: ports and sequence number), padded by
        // Ethernet with bytes that read as a TCP header with ACK.
        let mut ip = alloc::vec![0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&28u16.to_be_bytes());
        ip[6] = 0x20; // MF, offset 0
        ip[9] = 6;
        ip.extend_from_slice(&tcp(0x10));
        assert_eq!(tcp_flags(&ip), None, "the flags byte is padding");
        // The whole header inside the datagram: read.
        ip[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(tcp_flags(&ip), Some(0x10));
        // A total length of 0 (a large send, LSOv2): the frame counts.
        ip[2..4].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(tcp_flags(&ip), Some(0x10));
        // Shorter than its own header: unreadable.
        ip[2..4].copy_from_slice(&12u16.to_be_bytes());
        assert_eq!(walk(&ip), Walk::Unreadable);
        // IPv6: payload length 16 (fragment header and 8 bytes of TCP), a trailer after it.
        let mut ip6: Vec<u8> = alloc::vec![0u8; 40];
        ip6[0] = 0x60;
        ip6[4..6].copy_from_slice(&16u16.to_be_bytes());
        ip6[6] = 44;
        ip6.extend_from_slice(&[6, 0, 0, 1, 0, 0, 0, 1]);
        ip6.extend_from_slice(&tcp(0x10));
        assert_eq!(tcp_flags(&ip6), None, "the flags byte is a trailer");
        ip6[4..6].copy_from_slice(&28u16.to_be_bytes());
        assert_eq!(tcp_flags(&ip6), Some(0x10));
        ip6[4..6].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(tcp_flags(&ip6), Some(0x10), "payload length 0: the frame counts");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_packets_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = tcp_flags(&bytes);
            let _ = is_non_first_fragment(&bytes);
        }
    }
}
