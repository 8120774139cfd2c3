//! ICMP and ICMPv6 as stateful firewalls handle them.
//!
//! At the vSwitch transport layers WFP reports an ICMP message's type and code in the port
//! values (fwpsk.h: `FWPS_FIELD_*_VSWITCH_TRANSPORT_V4_ICMP_TYPE` is `..._IP_SOURCE_PORT`,
//! `..._ICMP_CODE` is `..._IP_DESTINATION_PORT`). Nothing there ties an echo reply to its
//! request or an error to the flow it reports on, so the callout reads the message from the
//! packet's bytes ([`read`]) and classify decides with what it says ([`Icmp`]):
//!
//! - **Queries** (echo; for ICMPv4 also timestamp, information and address mask, the query
//!   types Linux conntrack tracks): a flow like any other, keyed by the requester's
//!   identifier and the request type ([`query_key`]). Only a request opens one; a reply is
//!   return traffic of its request's flow, else it is unsolicited (never picked up after a
//!   restore: only TCP is). Carried across a migration like any flow: the key uses the existing fields.
//! - **Errors** (destination unreachable, packet too big, time exceeded, parameter problem; for
//!   ICMPv4 also source quench and redirect, as conntrack's `icmp_is_err`): admitted when the
//!   packet they quote ([`quoted`]) belongs to a tracked, unexpired flow and the error goes back
//!   to that packet's sender (conntrack's RELATED, with its check that the outer destination is
//!   the quoted source). An error never creates or refreshes a flow, so a forged quote opens
//!   nothing.
//! - **Neighbor discovery and MLD** (ICMPv6 133-137; 130-132, 143): link-local control
//!   traffic IPv6 cannot work without, admitted inbound by default when it can only have come
//!   from the link: hop limit 255 for neighbor discovery (RFC 4861 sections 6.1, 7.1, 8.1: a
//!   receiver discards any other), a link-local source for router advertisements and redirects
//!   (same sections), hop limit 1 and a link-local source for MLD (RFC 2710 section 3, RFC
//!   3810 sections 5 and 7.4; an MLDv2 report may come from `::`). Windows Defender Firewall's
//!   "Core Networking" group admits the same message types inbound by default (verify on
//!   Windows: the rule set of the host's version). Never tracked.
//! - Anything else (unknown types, unreadable or truncated messages) is treated like an
//!   unsolicited packet: blocked inbound in Enforce unless an allow rule admits it.
//!
//! **Rules.** For ICMP an allow rule's local port range matches the message type (WFP's own
//! convention); a query flow a peer opened is re-checked against its request type.
//!
//! A non-first fragment carries no ICMP header: it is permitted without a flow, as the callout
//! does for TCP and UDP fragments (the first fragment was judged), unless it starts within the
//! bytes vsflow reads of its first fragment ([`READ_LEN`]): then it may rewrite the quote an
//! error was related by (RFC 1858 section 3.3), and it is judged like a packet without ports
//! ([`Icmp::OverlappingFragment`]).

use crate::classify::{BlockReason, Verdict, admitted, track};
use crate::flow::FlowKey;
use crate::packet::{Direction, IpFamily, PacketMeta, protocol};
use crate::port::Port;
use crate::time::Tick;

/// Bytes of a packet's start the callout reads for an ICMP message.
///
/// The outer IP header with options or a few extension headers, the 8-byte ICMP header, and
/// the quoted IP header with the first 8 bytes of its payload (RFC 792, RFC 4443 section 2.4).
pub const READ_LEN: usize = 192;

/// Extension headers walked before giving up.
const MAX_EXTENSIONS: usize = 8;

/// Added to the request type in a query flow's remote port when the peer asked and the VM
/// answers (see [`query_key`]).
pub const PEER_REQUESTER: u16 = 0x100;

/// What an ICMP or ICMPv6 packet says, read from its bytes by [`read`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Icmp {
    /// Not read: not an ICMP packet (or the caller had no bytes).
    #[default]
    None,
    /// An ICMP packet whose message is not in the bytes read (truncated, malformed, or an
    /// extension header vsflow does not walk).
    Unreadable,
    /// A non-first fragment that starts past the bytes vsflow reads of its first fragment
    /// ([`READ_LEN`]): no ICMP header, and nothing it overlaps was judged.
    LaterFragment,
    /// A non-first fragment that starts within the bytes vsflow reads of its first fragment: it
    /// may rewrite the header or the quote that fragment was judged by (RFC 1858 section 3.3),
    /// so it is judged, never passed on the first fragment's verdict (see [`classify`]).
    OverlappingFragment,
    /// A query or its answer.
    Query {
        /// True for the request (echo request, ...), false for the reply.
        request: bool,
        /// The request's type (8 echo, 13 timestamp, 15 information, 17 address mask; 128
        /// ICMPv6 echo), also for a reply.
        kind: u8,
        /// The identifier.
        id: u16,
    },
    /// An error message quoting a packet.
    Error(Quoted),
    /// Neighbor discovery or MLD.
    Link {
        /// The message can only have come from the link (see the module docs).
        on_link: bool,
    },
    /// Any other message type, or an error whose quote cannot be matched to a flow.
    Other,
}

impl Icmp {
    /// The answer to this query (a request becomes its reply, a reply its request); anything
    /// else unchanged.
    #[must_use]
    pub const fn answer(self) -> Self {
        match self {
            Self::Query { request, kind, id } => Self::Query { request: !request, kind, id },
            other => other,
        }
    }
}

/// The packet an ICMP error quotes, as it travelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quoted {
    /// Its IP protocol.
    pub protocol: u8,
    /// Its destination address.
    pub dst_addr: [u8; 16],
    /// Its source port (TCP, UDP; for a quoted query see [`Quoted::query`]).
    pub src_port: u16,
    /// Its destination port.
    pub dst_port: u16,
    /// Its source address is the error's destination: the error goes back to the quoted
    /// packet's sender. Only then can it be related (conntrack checks the same).
    pub to_sender: bool,
    /// For a quoted ICMP query: `(request, kind, id)`.
    pub query: Option<(bool, u8, u16)>,
}

/// True for ICMP in IPv4 and ICMPv6 in IPv6: the packets whose message the callout reads.
#[inline]
#[must_use]
pub const fn is_icmp(family: IpFamily, proto: u8) -> bool {
    match family {
        IpFamily::V4 => proto == protocol::ICMP,
        IpFamily::V6 => proto == protocol::ICMPV6,
    }
}

/// Where an IP datagram's upper-layer header starts, and what the IP header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Upper {
    family: IpFamily,
    protocol: u8,
    offset: usize,
    hop_limit: u8,
    first_fragment: bool,
    /// A non-first fragment's offset in its datagram's fragmentable part, in bytes (0 for a
    /// first fragment).
    fragment_offset: usize,
    src: [u8; 16],
    dst: [u8; 16],
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at.checked_add(1)?)?]))
}

fn addr<const N: usize>(b: &[u8], at: usize) -> Option<[u8; 16]> {
    let src = b.get(at..at.checked_add(N)?)?;
    let mut a = [0u8; 16];
    a.get_mut(..N)?.copy_from_slice(src);
    Some(a)
}

/// Walks an IP header (IPv4 options, IPv6 extension headers) with bounds. `None` if the
/// header is not inside `ip`. The datagram's total length is not checked against `ip` here: a
/// quoted datagram is truncated by design, and [`read`] cuts an outer one to its length first.
fn upper(ip: &[u8]) -> Option<Upper> {
    match *ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(*ip.first()? & 0x0f) * 4;
            if ihl < 20 || ip.len() < ihl {
                return None;
            }
            let fragment_offset = usize::from(be16(ip, 6)? & 0x1fff) * 8;
            Some(Upper {
                family: IpFamily::V4,
                protocol: *ip.get(9)?,
                offset: ihl,
                hop_limit: *ip.get(8)?,
                first_fragment: fragment_offset == 0,
                fragment_offset,
                src: addr::<4>(ip, 12)?,
                dst: addr::<4>(ip, 16)?,
            })
        }
        6 => {
            let mut next = *ip.get(6)?;
            let mut off = 40usize;
            let v6 = |protocol, offset, fragment_offset| {
                Some(Upper {
                    family: IpFamily::V6,
                    protocol,
                    offset,
                    hop_limit: *ip.get(7)?,
                    first_fragment: fragment_offset == 0,
                    fragment_offset,
                    src: addr::<16>(ip, 8)?,
                    dst: addr::<16>(ip, 24)?,
                })
            };
            for _ in 0..MAX_EXTENSIONS {
                let len = match next {
                    // Hop-by-hop, routing, destination options: length in 8-byte units.
                    0 | 43 | 60 => (usize::from(*ip.get(off.checked_add(1)?)?) + 1) * 8,
                    // Fragment: fixed 8 bytes. A non-first fragment's data is no header: the
                    // walk ends there, with the protocol its fragment header names.
                    44 => {
                        let fragment_offset = usize::from(be16(ip, off.checked_add(2)?)? & 0xfff8);
                        if fragment_offset != 0 {
                            return v6(*ip.get(off)?, off.checked_add(8)?, fragment_offset);
                        }
                        8
                    }
                    // Authentication header: length in 4-byte units, minus 2.
                    51 => (usize::from(*ip.get(off.checked_add(1)?)?) + 2) * 4,
                    _ => return v6(next, off, 0),
                };
                next = *ip.get(off)?;
                off = off.checked_add(len)?;
            }
            None
        }
        _ => None,
    }
}

/// The request type a query message of `ty` belongs to, and whether it is the request.
const fn query_kind(family: IpFamily, ty: u8) -> Option<(bool, u8)> {
    match (family, ty) {
        (IpFamily::V4, 8 | 13 | 15 | 17) => Some((true, ty)),
        (IpFamily::V4, 0) => Some((false, 8)),
        (IpFamily::V4, 14 | 16 | 18) => Some((false, ty - 1)),
        (IpFamily::V6, 128) => Some((true, 128)),
        (IpFamily::V6, 129) => Some((false, 128)),
        _ => None,
    }
}

/// The message type of a query's request (`request`) or reply, given the request type `kind`.
#[must_use]
pub const fn query_type(family: IpFamily, request: bool, kind: u8) -> u8 {
    match (family, request, kind) {
        (_, true, k) => k,
        (IpFamily::V4, false, 8) => 0,
        (IpFamily::V4 | IpFamily::V6, false, k) => k.wrapping_add(1),
    }
}

/// True for the error message types (conntrack's `icmp_is_err`; ICMPv6 types below 128).
const fn is_error(family: IpFamily, ty: u8) -> bool {
    match family {
        IpFamily::V4 => matches!(ty, 3 | 4 | 5 | 11 | 12),
        IpFamily::V6 => matches!(ty, 1..=4),
    }
}

const fn is_link_local(a: &[u8; 16]) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

const fn is_unspecified(a: &[u8; 16]) -> bool {
    u128::from_ne_bytes(*a) == 0
}

/// The bytes of `ip` (data starting at the IP header) that belong to its IP datagram: at most
/// its IPv4 total length or its IPv6 header and payload length.
///
/// A frame may hold more than its datagram (Ethernet pads a frame to 60 bytes; a sender may
/// append any trailer), and the receiver's IP layer drops what lies past the datagram's end
/// (RFC 791, RFC 8200 section 3), so nothing there is read: an error of 8 bytes followed by a
/// trailer that quotes the VM's flow would otherwise be related while the guest receives an
/// error that quotes nothing (issue 16; the callout's `frame::datagram` bounds the TCP and UDP
/// headers the same way). Unlike a TCP segment, an ICMP message is never a large send (LSO
/// segments TCP only), so a length of 0 means no datagram: an IPv4 total length of 0, or an
/// IPv6 payload length of 0 (a jumbogram's, RFC 2675, which no vSwitch port's MTU carries),
/// leaves nothing to read past the IP header: unreadable, never the frame.
fn datagram(ip: &[u8]) -> &[u8] {
    let total = match ip.first().map(|b| b >> 4) {
        Some(4) => be16(ip, 2).map_or(0, usize::from),
        Some(6) => be16(ip, 4).map_or(0, |n| 40 + usize::from(n)),
        _ => 0,
    };
    ip.get(..total).unwrap_or(ip)
}

/// Reads an ICMP or ICMPv6 packet (data starting at the IP header; a prefix of at least
/// [`READ_LEN`] bytes where the packet has them).
///
/// Never panics; what it cannot read is [`Icmp::Unreadable`]. Only the datagram's own bytes
/// are read ([`datagram`]): a quote, or any part of one, past its end relates nothing
/// ([`Icmp::Other`]).
#[must_use]
pub fn read(ip: &[u8]) -> Icmp {
    let ip = datagram(ip);
    let Some(h) = upper(ip) else { return Icmp::Unreadable };
    if !h.first_fragment {
        // RFC 1858 section 3.3: a fragment starting within the bytes read of its first fragment
        // may overlap them (at byte 8 it lies on an error's quote).
        return if h.fragment_offset < READ_LEN {
            Icmp::OverlappingFragment
        } else {
            Icmp::LaterFragment
        };
    }
    if !is_icmp(h.family, h.protocol) {
        return Icmp::Unreadable;
    }
    let Some(msg) = ip.get(h.offset..) else { return Icmp::Unreadable };
    let (Some(&ty), Some(&code)) = (msg.first(), msg.get(1)) else { return Icmp::Unreadable };
    if let Some((request, kind)) = query_kind(h.family, ty) {
        return match be16(msg, 4) {
            Some(id) => Icmp::Query { request, kind, id },
            None => Icmp::Unreadable,
        };
    }
    if is_error(h.family, ty) {
        // The quoted packet starts after the 8-byte ICMP header.
        return match msg.get(8..).and_then(|inner| quoted(h.family, inner, &h.dst)) {
            Some(q) => Icmp::Error(q),
            None => Icmp::Other,
        };
    }
    if h.family == IpFamily::V6 {
        let link_local = is_link_local(&h.src);
        let on_link = match ty {
            // Router and neighbor solicitation and advertisement (RFC 4861).
            133 | 135 | 136 => h.hop_limit == 255 && code == 0,
            // Router advertisement and redirect: also from a link-local address.
            134 | 137 => h.hop_limit == 255 && code == 0 && link_local,
            // MLD query, report, done (RFC 2710); MLDv2 report (RFC 3810), maybe from `::`.
            130..=132 => h.hop_limit == 1 && link_local,
            143 => h.hop_limit == 1 && (link_local || is_unspecified(&h.src)),
            _ => return Icmp::Other,
        };
        return Icmp::Link { on_link };
    }
    Icmp::Other
}

/// Parses the packet an ICMP error quotes, with bounds.
///
/// Its IP header (`family`, the error's own family), then at least the 8 bytes of its payload RFC 792 and RFC 4443
/// guarantee. `outer_dst` is the error's destination. `None` if the quote is truncated, of
/// another family, a non-first fragment (no ports), or an ICMP message other than a query
/// (an error about an error is never related).
#[must_use]
pub fn quoted(family: IpFamily, inner: &[u8], outer_dst: &[u8; 16]) -> Option<Quoted> {
    let h = upper(inner)?;
    if h.family != family || !h.first_fragment {
        return None;
    }
    let payload = inner.get(h.offset..h.offset.checked_add(8)?)?;
    let (src_port, dst_port, query) = if is_icmp(family, h.protocol) {
        let (request, kind) = query_kind(family, *payload.first()?)?;
        (0, 0, Some((request, kind, be16(payload, 4)?)))
    } else {
        (be16(payload, 0)?, be16(payload, 2)?, None)
    };
    Some(Quoted {
        protocol: h.protocol,
        dst_addr: h.dst,
        src_port,
        dst_port,
        to_sender: h.src == *outer_dst,
        query,
    })
}

/// The flow key of a query travelling in `direction` from `src` to `dst`.
///
/// The identifier is the requester's, like an ephemeral port: it is the key's local port.
/// The request type is the key's remote port, plus [`PEER_REQUESTER`] when the peer asked and
/// the VM answers, so the VM's own echo and a peer's echo to the VM never share a key.
#[must_use]
pub const fn query_key(
    direction: Direction,
    family: IpFamily,
    proto: u8,
    src: [u8; 16],
    dst: [u8; 16],
    (request, kind, id): (bool, u8, u16),
) -> FlowKey {
    let outbound = matches!(direction, Direction::Outbound);
    let vm_asked = outbound == request;
    let (local_addr, remote_addr) = if outbound { (src, dst) } else { (dst, src) };
    let role = if vm_asked { 0 } else { PEER_REQUESTER };
    FlowKey {
        family,
        protocol: proto,
        local_addr,
        remote_addr,
        local_port: id,
        remote_port: kind as u16 | role,
    }
}

/// The port an allow rule matches a flow's key against: the local port, or for an ICMP query
/// flow the request type (a rule for ICMP matches message types; see the module docs).
#[inline]
#[must_use]
pub const fn rule_port(key: &FlowKey) -> u16 {
    if is_icmp(key.family, key.protocol) { key.remote_port & 0xff } else { key.local_port }
}

/// Classifies an ICMP or ICMPv6 packet on `port` (see the module docs). Counting permits
/// and blocks is the caller's.
pub(crate) fn classify(port: &mut Port, meta: &PacketMeta, now: Tick) -> Verdict {
    match meta.icmp {
        Icmp::Query { request, kind, id } => {
            let key = query_key(
                meta.direction,
                meta.family,
                meta.protocol,
                meta.src_addr,
                meta.dst_addr,
                (request, kind, id),
            );
            // A reply opens nothing: it is return traffic of a tracked query, else unsolicited
            // (only TCP is ever picked up after a restore: issue 16).
            let known =
                request || port.table.find(&key).is_some_and(|at| !port.table.is_expired(at, now));
            if known { track(port, key, meta, now) } else { unmatched(port, meta) }
        }
        Icmp::Error(q) => related(port, meta, &q, now),
        Icmp::Link { on_link } => {
            if on_link || meta.direction == Direction::Outbound || port.monitors() {
                let c = &mut port.counters;
                c.icmp_link = c.icmp_link.wrapping_add(1);
                Verdict::Permit
            } else if admits_type(port, meta) {
                Verdict::Permit
            } else {
                Verdict::Block(BlockReason::NotOnLink)
            }
        }
        Icmp::LaterFragment => Verdict::Permit,
        Icmp::OverlappingFragment => overlapping(port, meta),
        Icmp::None | Icmp::Unreadable | Icmp::Other => unmatched(port, meta),
    }
}

/// A later fragment that may overlap what its first fragment was judged by
/// ([`Icmp::OverlappingFragment`]): at byte 8 it rewrites an error's quote, so an error admitted
/// as related to one flow reaches a guest that keeps the later bytes as an error about another
/// (an unreachable that aborts a connection, a packet-too-big that shrinks its segments). It
/// names no flow and its type is not in it (what WFP reports as its type is not relied on: the
/// worse case), so it is judged like a TCP or UDP packet without ports: the VM's own is
/// permitted, and inbound in Enforce (the restore window included) only a rule admitting every
/// type of its protocol from its source admits it. RFC 5722 and RFC 8200 section 4.5 make IPv6
/// receivers drop overlapping fragments, and Linux drops overlapping IPv4 ones; a guest that
/// does not is the threat model's worse case. No sender fragments a datagram this finely on a
/// link whose MTU is 252 bytes or more (a 60-byte IPv4 header and [`READ_LEN`]; IPv6's minimum
/// MTU is 1280).
fn overlapping(port: &mut Port, meta: &PacketMeta) -> Verdict {
    if meta.direction == Direction::Outbound {
        return Verdict::Permit;
    }
    let c = &mut port.counters;
    c.headers_unreadable = c.headers_unreadable.wrapping_add(1);
    c.icmp_unmatched = c.icmp_unmatched.wrapping_add(1);
    if port.monitors() || port.rules.admits_every_port(meta.protocol, meta.family, &meta.src_addr) {
        Verdict::Permit
    } else {
        Verdict::Block(BlockReason::Unsolicited)
    }
}

/// An ICMP error: permitted when the quoted packet belongs to a tracked, unexpired flow (for
/// an inbound error, one whose inbound traffic is still admitted) and the error goes back to
/// its sender. Never creates, refreshes or changes a flow.
fn related(port: &mut Port, meta: &PacketMeta, q: &Quoted, now: Tick) -> Verdict {
    if let Some(key) = quoted_flow(meta, q)
        && let Some(at) = port.table.find(&key)
        && !port.table.is_expired(at, now)
        && (meta.direction == Direction::Outbound || port.monitors() || admitted(port, at))
    {
        let c = &mut port.counters;
        c.icmp_related = c.icmp_related.wrapping_add(1);
        return Verdict::Permit;
    }
    unmatched(port, meta)
}

/// The flow an ICMP error `meta` quoting `q` is related to, if it goes back to the quoted
/// packet's sender (only such an error can be; see [`related`]).
#[must_use]
pub fn quoted_flow(meta: &PacketMeta, q: &Quoted) -> Option<FlowKey> {
    if !q.to_sender {
        return None;
    }
    // The quoted packet travelled the other way; its source is this packet's destination.
    let quoted_dir = match meta.direction {
        Direction::Outbound => Direction::Inbound,
        Direction::Inbound => Direction::Outbound,
    };
    Some(match q.query {
        Some(query) => {
            query_key(quoted_dir, meta.family, q.protocol, meta.dst_addr, q.dst_addr, query)
        }
        None => FlowKey::of(&PacketMeta {
            direction: quoted_dir,
            protocol: q.protocol,
            src_addr: meta.dst_addr,
            dst_addr: q.dst_addr,
            src_port: q.src_port,
            dst_port: q.dst_port,
            ..*meta
        }),
    })
}

/// An ICMP packet that belongs to no flow: permitted outbound (the VM's own traffic, not
/// tracked) and in Monitor; inbound in Enforce only if an allow rule admits its type.
fn unmatched(port: &mut Port, meta: &PacketMeta) -> Verdict {
    if meta.direction == Direction::Outbound {
        return Verdict::Permit;
    }
    let c = &mut port.counters;
    c.icmp_unmatched = c.icmp_unmatched.wrapping_add(1);
    if port.monitors() || admits_type(port, meta) {
        Verdict::Permit
    } else {
        Verdict::Block(BlockReason::Unsolicited)
    }
}

/// True if an allow rule admits this inbound ICMP message by its type (WFP's source-port
/// value at these layers).
fn admits_type(port: &Port, meta: &PacketMeta) -> bool {
    port.rules.admits(meta.protocol, meta.family, meta.src_port, &meta.src_addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn v4_header(proto: u8, ttl: u8, src: [u8; 4], dst: [u8; 4], frag: u16) -> Vec<u8> {
        let mut h = alloc::vec![0x45, 0, 0, 0, 0, 0];
        h.extend_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&[ttl, proto, 0, 0]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h
    }

    fn v6_header(next: u8, hop: u8, src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
        let mut h = alloc::vec![0x60, 0, 0, 0, 0, 0, next, hop];
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h
    }

    const VM: [u8; 4] = [192, 0, 2, 1];
    const PEER: [u8; 4] = [192, 0, 2, 2];

    /// Reads `p` with its outer length field (IPv4 total length, IPv6 payload length) set to
    /// the bytes given: the whole buffer is the datagram.
    fn read_sealed(p: &[u8]) -> Icmp {
        let mut p = p.to_vec();
        let (at, len) = if p[0] >> 4 == 4 { (2, p.len()) } else { (4, p.len() - 40) };
        p[at..at + 2].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        read(&p)
    }

    #[test]
    fn echo_request_and_reply_carry_the_identifier_from_the_packet() {
        let mut p = v4_header(1, 64, VM, PEER, 0x4000);
        p.extend_from_slice(&[8, 0, 0, 0, 0x12, 0x34, 0, 1]);
        assert_eq!(read_sealed(&p), Icmp::Query { request: true, kind: 8, id: 0x1234 });
        p[20] = 0;
        assert_eq!(read_sealed(&p), Icmp::Query { request: false, kind: 8, id: 0x1234 });
        // Truncated before the identifier.
        assert_eq!(read_sealed(&p[..24]), Icmp::Unreadable);
    }

    #[test]
    fn an_error_quotes_the_packet_it_reports_on() {
        // Port unreachable from the peer for the VM's UDP datagram 192.0.2.1:5000 -> :53.
        let mut p = v4_header(1, 64, PEER, VM, 0);
        p.extend_from_slice(&[3, 3, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&v4_header(17, 64, VM, PEER, 0x4000));
        p.extend_from_slice(&[0x13, 0x88, 0, 53, 0, 8, 0, 0]);
        let Icmp::Error(q) = read_sealed(&p) else { panic!("{:?}", read_sealed(&p)) };
        assert_eq!((q.protocol, q.src_port, q.dst_port), (17, 5000, 53));
        assert!(q.to_sender);
        assert_eq!(&q.dst_addr[..4], &PEER);
        // One byte short of the quoted transport header's 8 bytes: not an error we can match.
        assert_eq!(read_sealed(&p[..p.len() - 1]), Icmp::Other);
        // Sent to someone else than the quoted packet's sender.
        p[16..20].copy_from_slice(&[192, 0, 2, 99]);
        let Icmp::Error(q) = read_sealed(&p) else { panic!() };
        assert!(!q.to_sender);
    }

    /// The quote is read only within the error's own datagram (its IPv4 total length or
    /// IPv6 payload length): bytes past it are the frame's trailer, which the receiver's IP
    /// layer drops, so a quote there relates nothing (issue 16, "Headers read only within the
    /// IP datagram").
    #[test]
    fn a_quote_past_the_datagrams_end_is_never_read() {
        let mut p = v4_header(1, 64, PEER, VM, 0);
        p.extend_from_slice(&[3, 3, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&v4_header(17, 64, VM, PEER, 0x4000));
        p.extend_from_slice(&[0x13, 0x88, 0, 53, 0, 8, 0, 0]);
        let total = |p: &mut Vec<u8>, n: usize| {
            p[2..4].copy_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
        };
        total(&mut p, 56);
        assert!(matches!(read(&p), Icmp::Error(_)), "control: the whole quote inside");
        p.extend_from_slice(&[0xee; 8]);
        assert!(matches!(read(&p), Icmp::Error(_)), "a trailer after the datagram is ignored");
        for inside in [28, 40, 55] {
            total(&mut p, inside);
            assert_eq!(read(&p), Icmp::Other, "IPv4: the datagram ends at {inside}");
        }
        for bad in [0, 12, 19] {
            total(&mut p, bad);
            assert_eq!(read(&p), Icmp::Unreadable, "IPv4: total length {bad}");
        }
        // IPv6: ICMPv6 port unreachable quoting the VM's UDP datagram.
        let (a, b) = ([0x20; 16], [0x30; 16]);
        let mut p = v6_header(58, 64, b, a);
        p.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&v6_header(17, 64, a, b));
        p.extend_from_slice(&[0x13, 0x88, 0, 53, 0, 8, 0, 0]);
        let payload = |p: &mut Vec<u8>, n: usize| {
            p[4..6].copy_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
        };
        payload(&mut p, 56);
        assert!(matches!(read(&p), Icmp::Error(_)), "control: the whole quote inside");
        for inside in [8, 48, 55] {
            payload(&mut p, inside);
            assert_eq!(read(&p), Icmp::Other, "IPv6: the payload ends at {inside}");
        }
        payload(&mut p, 0);
        assert_eq!(read(&p), Icmp::Unreadable, "IPv6: payload length 0");
    }

    #[test]
    fn quoted_errors_and_later_fragments_are_never_related() {
        let inner_err = {
            let mut i = v4_header(1, 64, VM, PEER, 0);
            i.extend_from_slice(&[3, 1, 0, 0, 0, 0, 0, 0]);
            i
        };
        assert_eq!(quoted(IpFamily::V4, &inner_err, &crate::packet::v4(VM)), None);
        let mut frag = v4_header(17, 64, VM, PEER, 0x0010);
        frag.extend_from_slice(&[0; 8]);
        assert_eq!(quoted(IpFamily::V4, &frag, &crate::packet::v4(VM)), None);
        // An IPv6 packet quoted in an ICMPv4 error.
        let mut six = v6_header(17, 64, [0x20; 16], [0x20; 16]);
        six.extend_from_slice(&[0; 8]);
        assert_eq!(quoted(IpFamily::V4, &six, &[0x20; 16]), None);
    }

    #[test]
    fn neighbor_discovery_needs_hop_limit_255_and_router_messages_a_link_local_source() {
        let ll = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let global = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let nd = |ty: u8, hop: u8, src: [u8; 16]| {
            let mut p = v6_header(58, hop, src, global);
            p.extend_from_slice(&[ty, 0, 0, 0, 0, 0, 0, 0]);
            read_sealed(&p)
        };
        assert_eq!(nd(136, 255, global), Icmp::Link { on_link: true });
        assert_eq!(nd(136, 254, global), Icmp::Link { on_link: false });
        assert_eq!(nd(134, 255, ll), Icmp::Link { on_link: true });
        assert_eq!(nd(134, 255, global), Icmp::Link { on_link: false });
        assert_eq!(nd(130, 1, ll), Icmp::Link { on_link: true });
        assert_eq!(nd(143, 1, [0; 16]), Icmp::Link { on_link: true });
        assert_eq!(nd(130, 255, ll), Icmp::Link { on_link: false });
        assert_eq!(nd(200, 255, ll), Icmp::Other);
    }

    #[test]
    fn ipv6_extension_headers_and_fragments_are_walked() {
        let a = [0x20; 16];
        // Hop-by-hop, then a first fragment, then ICMPv6 echo request.
        let mut p = v6_header(0, 64, a, a);
        p.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&[58, 0, 0, 1, 0, 0, 0, 7]);
        p.extend_from_slice(&[128, 0, 0, 0, 0xab, 0xcd, 0, 1]);
        assert_eq!(read_sealed(&p), Icmp::Query { request: true, kind: 128, id: 0xabcd });
        // The same fragment at byte 64: no ICMP header, and it may overlap the bytes read.
        p[50] = 0;
        p[51] = 0x40;
        assert_eq!(read_sealed(&p), Icmp::OverlappingFragment);
        // At byte 192, past them.
        p[50..52].copy_from_slice(&192u16.to_be_bytes());
        assert_eq!(read_sealed(&p), Icmp::LaterFragment);
    }

    /// RFC 1858 section 3.3: a later fragment starting within the [`READ_LEN`] bytes vsflow
    /// reads may rewrite an error's quote; only one starting past them is a plain later
    /// fragment. IPv4 and IPv6.
    #[test]
    fn a_later_fragment_within_the_bytes_read_may_overlap_them() {
        let mut p = v4_header(1, 64, PEER, VM, 0);
        p.extend_from_slice(&[0xee; 16]);
        for (units, what) in [
            (1u16, Icmp::OverlappingFragment),
            (23, Icmp::OverlappingFragment),
            (24, Icmp::LaterFragment),
            (185, Icmp::LaterFragment),
        ] {
            p[6..8].copy_from_slice(&units.to_be_bytes());
            assert_eq!(read_sealed(&p), what, "IPv4 offset {units}");
            p[6] |= 0x20; // more fragments
            assert_eq!(read_sealed(&p), what, "IPv4 offset {units}, MF");
        }
        let mut p = v6_header(44, 64, [0x20; 16], [0x30; 16]);
        // A fragment header naming ICMPv6; the data after it reads as no header.
        p.extend_from_slice(&[58, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[60, 0xff, 0, 0, 0, 0, 0, 0]);
        for (units, what) in [
            (1u16, Icmp::OverlappingFragment),
            (23, Icmp::OverlappingFragment),
            (24, Icmp::LaterFragment),
        ] {
            p[42..44].copy_from_slice(&(units << 3).to_be_bytes());
            assert_eq!(read_sealed(&p), what, "IPv6 offset {units}");
        }
    }

    #[test]
    fn the_two_requesters_of_an_echo_never_share_a_key() {
        let (vm, peer) = (crate::packet::v4(VM), crate::packet::v4(PEER));
        let f = IpFamily::V4;
        // The VM pings the peer with identifier 8; the peer pings the VM with identifier 8.
        let mine = query_key(Direction::Outbound, f, 1, vm, peer, (true, 8, 8));
        let theirs = query_key(Direction::Inbound, f, 1, peer, vm, (true, 8, 8));
        assert_ne!(mine, theirs);
        // Each reply maps to its request's key.
        assert_eq!(query_key(Direction::Inbound, f, 1, peer, vm, (false, 8, 8)), mine);
        assert_eq!(query_key(Direction::Outbound, f, 1, vm, peer, (false, 8, 8)), theirs);
        assert_eq!(rule_port(&theirs), 8);
    }

    mod decisions {
        use super::super::*;
        use crate::flow::TableConfig;
        use crate::policy::{AllowRule, Mode, PortRange, Prefix};
        use crate::port::{PortConfig, PortIdentity};
        use crate::time::secs;

        const VM: [u8; 4] = [192, 0, 2, 1];
        const PEER: [u8; 4] = [192, 0, 2, 2];
        const ROUTER: [u8; 4] = [192, 0, 2, 254];

        fn port() -> Port {
            let cfg = PortConfig { table: TableConfig::default(), initial_mode: Mode::Enforce };
            Port::try_new(PortIdentity::try_from_str("icmp").unwrap(), cfg).unwrap()
        }

        fn msg(dir: Direction, src: [u8; 4], dst: [u8; 4], ty: u8, icmp: Icmp) -> PacketMeta {
            PacketMeta {
                icmp,
                ..PacketMeta::ipv4(dir, protocol::ICMP, src, u16::from(ty), dst, 0, 0, 84)
            }
        }

        fn ping(id: u16) -> PacketMeta {
            msg(Direction::Outbound, VM, PEER, 8, Icmp::Query { request: true, kind: 8, id })
        }

        fn udp_out(sport: u16, dport: u16) -> PacketMeta {
            PacketMeta::ipv4(Direction::Outbound, protocol::UDP, VM, sport, PEER, dport, 0, 60)
        }

        /// An error from `from` to the VM quoting the VM's UDP datagram `sport -> PEER:dport`.
        fn unreachable(from: [u8; 4], sport: u16, dport: u16, to_sender: bool) -> PacketMeta {
            let q = Quoted {
                protocol: protocol::UDP,
                dst_addr: crate::packet::v4(PEER),
                src_port: sport,
                dst_port: dport,
                to_sender,
                query: None,
            };
            msg(Direction::Inbound, from, VM, 3, Icmp::Error(q))
        }

        #[test]
        fn an_echo_reply_passes_only_as_the_answer_to_the_vms_request() {
            let mut p = port();
            let req = ping(0x77);
            assert_eq!(p.classify(&req.reply(0), 1), Verdict::Block(BlockReason::Unsolicited));
            assert!(p.table().is_empty(), "a reply opens nothing");
            assert_eq!(p.classify(&req, 2), Verdict::Permit);
            let reply = req.reply(0);
            assert_eq!((reply.src_port, reply.icmp.answer()), (0, req.icmp));
            assert_eq!(p.classify(&reply, 3), Verdict::Permit);
            // Another identifier is another flow.
            assert_eq!(
                p.classify(&ping(0x78).reply(0), 4),
                Verdict::Block(BlockReason::Unsolicited)
            );
            // A peer's echo request with the VM's identifier is not the VM's flow.
            let theirs = msg(
                Direction::Inbound,
                PEER,
                VM,
                8,
                Icmp::Query { request: true, kind: 8, id: 0x77 },
            );
            assert_eq!(p.classify(&theirs, 5), Verdict::Block(BlockReason::Unsolicited));
            // Idle past the 30 s timeout of other protocols, the flow admits nothing.
            assert_eq!(p.classify(&reply, 3 + secs(31)), Verdict::Block(BlockReason::Unsolicited));
        }

        #[test]
        fn a_peers_ping_needs_a_rule_for_its_type_and_is_rechecked_when_rules_change() {
            let mut p = port();
            let theirs =
                msg(Direction::Inbound, PEER, VM, 8, Icmp::Query { request: true, kind: 8, id: 5 });
            assert_eq!(p.classify(&theirs, 1), Verdict::Block(BlockReason::Unsolicited));
            let echo = AllowRule {
                protocol: Some(protocol::ICMP),
                local_ports: PortRange::single(8),
                remote: Prefix::Any,
            };
            p.replace_rules(&[echo]).unwrap();
            assert_eq!(p.classify(&theirs, 2), Verdict::Permit);
            assert_eq!(p.classify(&theirs.reply(0), 3), Verdict::Permit, "the VM answers");
            p.replace_rules(&[]).unwrap();
            assert_eq!(p.classify(&theirs, 4), Verdict::Block(BlockReason::NotAdmitted));
        }

        #[test]
        fn an_error_is_admitted_only_when_it_quotes_a_tracked_flow_and_goes_back_to_its_sender() {
            let mut p = port();
            // Nothing tracked: a forged error is blocked and creates nothing.
            assert_eq!(
                p.classify(&unreachable(PEER, 5000, 53, true), 1),
                Verdict::Block(BlockReason::Unsolicited)
            );
            assert!(p.table().is_empty());
            assert_eq!(p.classify(&udp_out(5000, 53), 2), Verdict::Permit);
            // From the peer or a router on the path: related.
            assert_eq!(p.classify(&unreachable(PEER, 5000, 53, true), 3), Verdict::Permit);
            assert_eq!(p.classify(&unreachable(ROUTER, 5000, 53, true), 3), Verdict::Permit);
            assert_eq!(p.counters().icmp_related, 2);
            // Quoting another flow, or a packet the error's destination did not send.
            assert_eq!(
                p.classify(&unreachable(PEER, 5001, 53, true), 4),
                Verdict::Block(BlockReason::Unsolicited)
            );
            assert_eq!(
                p.classify(&unreachable(PEER, 5000, 53, false), 4),
                Verdict::Block(BlockReason::Unsolicited)
            );
            // The error neither refreshed nor created flows.
            assert_eq!(p.table().len(), 1);
            let key = FlowKey::of(&udp_out(5000, 53));
            assert_eq!(p.table().get(&key).unwrap().packets, [1, 0]);
            // Expired flows relate nothing.
            assert_eq!(
                p.classify(&unreachable(PEER, 5000, 53, true), 2 + secs(61)),
                Verdict::Block(BlockReason::Unsolicited)
            );
        }

        #[test]
        fn an_error_about_the_vms_echo_is_related_to_the_echo_flow() {
            let mut p = port();
            p.classify(&ping(9), 1);
            let q = Quoted {
                protocol: protocol::ICMP,
                dst_addr: crate::packet::v4(PEER),
                src_port: 0,
                dst_port: 0,
                to_sender: true,
                query: Some((true, 8, 9)),
            };
            let ttl = msg(Direction::Inbound, ROUTER, VM, 11, Icmp::Error(q));
            assert_eq!(p.classify(&ttl, 2), Verdict::Permit);
            let other = Icmp::Error(Quoted { query: Some((true, 8, 10)), ..q });
            assert_eq!(
                p.classify(&msg(Direction::Inbound, ROUTER, VM, 11, other), 2),
                Verdict::Block(BlockReason::Unsolicited)
            );
        }

        #[test]
        fn the_vms_own_errors_pass_and_open_nothing() {
            let mut p = port();
            let q = Quoted {
                protocol: protocol::UDP,
                dst_addr: crate::packet::v4(VM),
                src_port: 40000,
                dst_port: 9,
                to_sender: true,
                query: None,
            };
            let err = msg(Direction::Outbound, VM, PEER, 3, Icmp::Error(q));
            assert_eq!(p.classify(&err, 1), Verdict::Permit);
            assert!(p.table().is_empty());
        }

        #[test]
        fn neighbor_discovery_passes_by_default_only_from_the_link() {
            let mut p = port();
            let a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
            let b = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
            let na = |on_link| PacketMeta {
                icmp: Icmp::Link { on_link },
                ..PacketMeta::ipv6(Direction::Inbound, protocol::ICMPV6, a, 136, b, 0, 0, 72)
            };
            assert_eq!(p.classify(&na(true), 1), Verdict::Permit);
            assert_eq!(p.classify(&na(false), 1), Verdict::Block(BlockReason::NotOnLink));
            assert!(p.table().is_empty());
            let nd = AllowRule {
                protocol: Some(protocol::ICMPV6),
                local_ports: PortRange::single(136),
                remote: Prefix::Any,
            };
            p.replace_rules(&[nd]).unwrap();
            assert_eq!(p.classify(&na(false), 2), Verdict::Permit, "an allow rule admits it");
            p.set_mode(Mode::Monitor);
            p.replace_rules(&[]).unwrap();
            assert_eq!(p.classify(&na(false), 3), Verdict::Permit);
        }

        #[test]
        fn unreadable_icmp_is_unsolicited_inbound_and_later_fragments_pass() {
            let mut p = port();
            let m = msg(Direction::Inbound, PEER, VM, 0, Icmp::Unreadable);
            assert_eq!(p.classify(&m, 1), Verdict::Block(BlockReason::Unsolicited));
            let none = msg(Direction::Inbound, PEER, VM, 0, Icmp::None);
            assert_eq!(p.classify(&none, 1), Verdict::Block(BlockReason::Unsolicited));
            assert_eq!(
                p.classify(&msg(Direction::Outbound, VM, PEER, 0, Icmp::Unreadable), 1),
                Verdict::Permit
            );
            let frag = msg(Direction::Inbound, PEER, VM, 0, Icmp::LaterFragment);
            assert_eq!(p.classify(&frag, 1), Verdict::Permit);
            assert!(p.table().is_empty());
        }

        #[test]
        fn a_later_fragment_that_may_overlap_is_judged_like_a_packet_without_ports() {
            let mut p = port();
            let frag = msg(Direction::Inbound, PEER, VM, 0, Icmp::OverlappingFragment);
            assert_eq!(p.classify(&frag, 1), Verdict::Block(BlockReason::Unsolicited));
            let own = msg(Direction::Outbound, VM, PEER, 0, Icmp::OverlappingFragment);
            assert_eq!(p.classify(&own, 1), Verdict::Permit, "the VM's own");
            // A rule for one type (WFP's value for a later fragment) does not admit it.
            let echo = |ports| AllowRule {
                protocol: Some(protocol::ICMP),
                local_ports: ports,
                remote: Prefix::Any,
            };
            p.replace_rules(&[echo(PortRange::single(0))]).unwrap();
            assert_eq!(p.classify(&frag, 2), Verdict::Block(BlockReason::Unsolicited));
            p.replace_rules(&[echo(PortRange::ANY)]).unwrap();
            assert_eq!(p.classify(&frag, 3), Verdict::Permit, "a rule admitting every type");
            p.replace_rules(&[]).unwrap();
            p.set_mode(Mode::Monitor);
            assert_eq!(p.classify(&frag, 4), Verdict::Permit);
            assert!(p.table().is_empty());
            assert_eq!(p.counters().headers_unreadable, 4, "every inbound one counted");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..260)) {
            let _ = read(&bytes);
            let _ = quoted(IpFamily::V4, &bytes, &[0; 16]);
            let _ = quoted(IpFamily::V6, &bytes, &[0; 16]);
        }
    }
}
