//! Traffic the scenarios send.
//!
//! VM and remote addresses, named TCP flags, and the exchanges (TCP handshakes, closes, UDP request and reply) one VM port takes part in. Used by the main
//! job, the benchmarks and the end-to-end tests, so they all send the same packets.

use vsflow_core::{IpFamily, protocol};

use crate::host::{EXTERNAL_PORT, Host, PacketFate};
use crate::vswitch::packet::SimPacket;

/// TCP header flag bits (RFC 9293).
pub mod tcp {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// SYN + ACK.
    pub const SYN_ACK: u8 = SYN | ACK;
    /// PSH + ACK: data.
    pub const PSH_ACK: u8 = PSH | ACK;
    /// FIN + ACK.
    pub const FIN_ACK: u8 = FIN | ACK;
}

/// The address of the VM behind port number `n` (10.hi.lo.2, or `fd00::hi:lo02`).
#[must_use]
pub fn vm_addr(family: IpFamily, n: u32) -> [u8; 16] {
    let [_, _, hi, lo] = n.to_be_bytes();
    match family {
        IpFamily::V4 => vsflow_core::packet::v4([10, hi, lo, 2]),
        IpFamily::V6 => [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, hi, lo, 2],
    }
}

/// A remote host's address: 198.51.hi.lo (documentation range), 203.0.113.lo for the SSH
/// clients an allow rule admits, `2001:db8::hi:lo` for IPv6.
#[must_use]
pub fn remote_addr(family: IpFamily, n: u32, ssh_client: bool) -> [u8; 16] {
    let [_, _, hi, lo] = n.to_be_bytes();
    match (family, ssh_client) {
        (IpFamily::V4, false) => vsflow_core::packet::v4([198, 51, hi, lo]),
        (IpFamily::V4, true) => vsflow_core::packet::v4([203, 0, 113, lo]),
        (IpFamily::V6, _) => [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, hi, lo],
    }
}

/// A TCP SYN from the VM of port number `vm` (source port `sport`) to `remote:dport`.
#[must_use]
pub fn vm_syn(family: IpFamily, vm: u32, sport: u16, remote: [u8; 16], dport: u16) -> SimPacket {
    SimPacket::new(family, protocol::TCP, vm_addr(family, vm), sport, remote, dport, tcp::SYN, 0)
}

/// A TCP SYN from `remote:sport` to the VM of port number `vm`, port `dport`.
#[must_use]
pub fn inbound_syn(
    family: IpFamily,
    remote: [u8; 16],
    sport: u16,
    vm: u32,
    dport: u16,
) -> SimPacket {
    SimPacket::new(family, protocol::TCP, remote, sport, vm_addr(family, vm), dport, tcp::SYN, 0)
}

/// The fates of the three packets of a handshake.
pub type HandshakeFates = [PacketFate; 3];

/// A VM-opened TCP handshake on switch `sw`, port `port`: SYN out, SYN-ACK in, ACK out.
/// Returns the fates and the peer's data packet of the (now established) connection.
pub fn vm_handshake(
    h: &mut Host,
    sw: usize,
    port: u32,
    syn: &SimPacket,
) -> (HandshakeFates, SimPacket) {
    let a = h.transmit(sw, port, EXTERNAL_PORT, syn);
    let synack = syn.reply(tcp::SYN_ACK, 0);
    let b = h.transmit(sw, EXTERNAL_PORT, port, &synack);
    let c = h.transmit(sw, port, EXTERNAL_PORT, &synack.reply(tcp::ACK, 0));
    ([a, b, c], syn.reply(tcp::PSH_ACK, 500))
}

/// A remote-opened TCP handshake to the VM: SYN in, SYN-ACK out, ACK in. Returns the fates
/// and the peer's next data packet.
pub fn inbound_handshake(
    h: &mut Host,
    sw: usize,
    port: u32,
    syn: &SimPacket,
) -> (HandshakeFates, SimPacket) {
    let a = h.transmit(sw, EXTERNAL_PORT, port, syn);
    let synack = syn.reply(tcp::SYN_ACK, 0);
    let b = h.transmit(sw, port, EXTERNAL_PORT, &synack);
    let ack = synack.reply(tcp::ACK, 0);
    let c = h.transmit(sw, EXTERNAL_PORT, port, &ack);
    ([a, b, c], ack.reply(tcp::ACK, 100).reply(tcp::PSH_ACK, 100))
}

/// The VM closes a connection it opened with `syn`: FIN out, FIN-ACK in, ACK out.
pub fn vm_close(h: &mut Host, sw: usize, port: u32, syn: &SimPacket) -> HandshakeFates {
    let fin = syn.reply(tcp::ACK, 0).reply(tcp::FIN_ACK, 0);
    let a = h.transmit(sw, port, EXTERNAL_PORT, &fin);
    let b = h.transmit(sw, EXTERNAL_PORT, port, &fin.reply(tcp::FIN_ACK, 0));
    let c = h.transmit(sw, port, EXTERNAL_PORT, &fin.reply(tcp::ACK, 0).reply(tcp::ACK, 0));
    [a, b, c]
}

/// A UDP request from the VM and its reply. Returns both fates.
pub fn udp_exchange(h: &mut Host, sw: usize, port: u32, query: &SimPacket) -> [PacketFate; 2] {
    let a = h.transmit(sw, port, EXTERNAL_PORT, query);
    let b = h.transmit(sw, EXTERNAL_PORT, port, &query.reply(0, 120));
    [a, b]
}

/// An IP header from the destination of `quoted` back to its source, carrying ICMP (IPv4) or
/// ICMPv6 with `length` bytes after the IP header (and the fragment header), unfragmented
/// (`None`) or as a fragment at an offset in 8-byte units (`more`: more fragments follow).
fn icmp_ip_header(quoted: &SimPacket, length: usize, fragment: Option<(u16, bool)>) -> Vec<u8> {
    let (src, dst) = (quoted.dst, quoted.src);
    match quoted.family {
        IpFamily::V4 => {
            let total = u16::try_from(20 + length).unwrap_or(u16::MAX);
            let frag = fragment.map_or(0, |(off, more)| off | if more { 0x2000 } else { 0 });
            let mut d = vec![0x45, 0];
            d.extend_from_slice(&total.to_be_bytes());
            d.extend_from_slice(&[0x42, 0x42]);
            d.extend_from_slice(&frag.to_be_bytes());
            d.extend_from_slice(&[64, protocol::ICMP, 0, 0]);
            d.extend_from_slice(src.get(..4).unwrap_or(&[0; 4]));
            d.extend_from_slice(dst.get(..4).unwrap_or(&[0; 4]));
            d
        }
        IpFamily::V6 => {
            let ext = if fragment.is_some() { 8 } else { 0 };
            let payload = u16::try_from(ext + length).unwrap_or(u16::MAX);
            let next = if fragment.is_some() { 44 } else { protocol::ICMPV6 };
            let mut d = vec![0x60, 0, 0, 0];
            d.extend_from_slice(&payload.to_be_bytes());
            d.extend_from_slice(&[next, 64]);
            d.extend_from_slice(&src);
            d.extend_from_slice(&dst);
            if let Some((off, more)) = fragment {
                d.extend_from_slice(&[protocol::ICMPV6, 0]);
                d.extend_from_slice(&((off << 3) | u16::from(more)).to_be_bytes());
                d.extend_from_slice(&0x4242_4242u32.to_be_bytes());
            }
            d
        }
    }
}

/// The port-unreachable error (ICMP 3/3, ICMPv6 1/4) that `quoted`'s destination sends back.
///
/// It quotes `quoted`'s IP header, the first 8 bytes of its transport header and `quote_extra`
/// bytes more (RFC 792, RFC 4443 section 3.1).
///
/// `inside`: how many bytes of the ICMP message lie within the datagram (its IPv4 total length
/// or IPv6 payload length), the rest following as the frame's trailer; `None`, all of them.
/// `fragment`: unfragmented (`None`), or a fragment at an offset in 8-byte units (`more`: more
/// fragments follow). The frame is padded to Ethernet's 60 bytes.
///
/// # Panics
/// If `quoted` has fewer bytes than the quote.
#[must_use]
pub fn icmp_unreachable(
    quoted: &SimPacket,
    quote_extra: usize,
    inside: Option<usize>,
    fragment: Option<(u16, bool)>,
) -> SimPacket {
    let quote = &quoted.datagram[..quoted.ip_header_len() + 8 + quote_extra];
    let (ty, code) = match quoted.family {
        IpFamily::V4 => (3, 3),
        IpFamily::V6 => (1, 4),
    };
    let mut message = vec![ty, code, 0, 0, 0, 0, 0, 0];
    message.extend_from_slice(quote);
    let mut d = icmp_ip_header(quoted, inside.unwrap_or(message.len()), fragment);
    d.extend_from_slice(&message);
    d.resize(d.len().max(46), 0);
    SimPacket::from_datagram(d).expect("an IP datagram")
}

/// A later fragment (the last) at `offset` 8-byte units of the error [`icmp_unreachable`]
/// builds for `quoted`.
///
/// Its 16 bytes, laid over the quote (offset 1 is the quote's first byte) in a reassembly that
/// keeps later bytes, make it quote an IPv4 TCP packet of no flow.
///
/// # Panics
/// Never: the datagram is well formed.
#[must_use]
pub fn icmp_later_fragment(quoted: &SimPacket, offset: u16) -> SimPacket {
    let mut d = icmp_ip_header(quoted, 16, Some((offset, false)));
    d.extend_from_slice(&[0x45, 0, 0, 0x30, 0, 0, 0x40, 0, 64, 6, 0, 0, 0xee, 0xee, 0xee, 0xee]);
    d.resize(d.len().max(46), 0);
    SimPacket::from_datagram(d).expect("an IP datagram")
}
