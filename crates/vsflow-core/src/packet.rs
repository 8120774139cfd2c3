//! What classify is told about one packet.
//!
//! The callout reads these values from the WFP incoming values of a vSwitch transport layer and,
//! for TCP flags and ICMP messages, from the packet's first bytes ([`crate::icmp::read`]); the
//! core never modifies a packet.

pub use crate::icmp::Icmp;

/// IP protocol numbers the core treats specially.
pub mod protocol {
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMP for IPv6.
    pub const ICMPV6: u8 = 58;
}

/// The direction of a packet from the VM's point of view.
///
/// At the vSwitch, a packet *ingressing* the switch from the VM's port is [`Outbound`]; a
/// packet *egressing* the switch to the VM's port is [`Inbound`].
///
/// [`Outbound`]: Direction::Outbound
/// [`Inbound`]: Direction::Inbound
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sent by the VM.
    Outbound,
    /// Sent to the VM.
    Inbound,
}

impl Direction {
    /// 0 for outbound, 1 for inbound: the index of per-direction counters.
    #[must_use]
    pub const fn index(self) -> usize {
        match self {
            Self::Outbound => 0,
            Self::Inbound => 1,
        }
    }
}

/// IPv4 or IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    /// IPv4: addresses use the first 4 of 16 bytes, the rest are zero.
    V4,
    /// IPv6.
    V6,
}

/// TCP flags as they appear in the TCP header (only the low 8 bits are used).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;

    /// True if every bit of `mask` is set.
    #[must_use]
    pub const fn has(self, mask: u8) -> bool {
        self.0 & mask == mask
    }

    /// A SYN without ACK: the first packet of a connection.
    #[must_use]
    pub const fn is_initial_syn(self) -> bool {
        self.has(Self::SYN) && !self.has(Self::ACK) && !self.has(Self::RST)
    }
}

/// How much of a packet's headers the callout could read (issue 16: headers that cannot be
/// read are not permits).
///
/// A TCP packet whose flags could not be read may be a SYN: it is never "mid-stream", never
/// picked up, and inbound in Enforce it is judged by the rules as a new connection. A packet
/// whose ports could not be read (a first fragment too short to hold them, or headers the
/// callout cannot walk) is judged without them: inbound in Enforce only a rule admitting every
/// port admits it, and it neither creates nor matches a flow. So is a later fragment that may
/// overlap its first fragment's headers (it starts within the bytes the callout reads: RFC
/// 1858 3.3). Any other non-first fragment (IP fragment offset not 0) never reaches classify:
/// the callout permits it on the first fragment's verdict (without its first fragment the
/// datagram cannot be reassembled).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Headers {
    /// Everything classify uses was read.
    #[default]
    Complete,
    /// TCP with ports, but the flags could not be read (`tcp_flags` is 0).
    NoFlags,
    /// TCP or UDP whose ports could not be read (ports and flags are 0).
    NoPorts,
    /// Neither the protocol nor the ports can be relied on: fragments vsflow does not judge
    /// may rewrite them in the guest's reassembly (an IPv6 later fragment that may overlap its
    /// first fragment's headers whatever protocol it names, or a first fragment whose headers
    /// lie past the bytes later fragments are judged within; the callout's
    /// `frame::headers_rewritable`). Inbound in Enforce only a rule admitting every protocol
    /// and port from its source admits it; it neither creates nor matches a flow.
    Unknown,
}

/// One packet as classify sees it.
///
/// Addresses are 16 bytes; an IPv4 address occupies the first four, the rest must be zero
/// (the constructors guarantee it). Ports are host order; they are 0 for protocols without
/// ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PacketMeta {
    /// Direction from the VM's point of view.
    pub direction: Direction,
    /// Address family.
    pub family: IpFamily,
    /// IP protocol number.
    pub protocol: u8,
    /// Source address.
    pub src_addr: [u8; 16],
    /// Destination address.
    pub dst_addr: [u8; 16],
    /// Source port (host order).
    pub src_port: u16,
    /// Destination port (host order).
    pub dst_port: u16,
    /// TCP flags (zero for other protocols).
    pub tcp_flags: TcpFlags,
    /// IP packet length in bytes.
    pub length: u32,
    /// Which headers could be read ([`Headers::Complete`] from the constructors).
    pub headers: Headers,
    /// What an ICMP or ICMPv6 message says ([`Icmp::None`] for other protocols).
    pub icmp: Icmp,
}

/// Widens an IPv4 address to the 16-byte form used throughout the core.
#[must_use]
pub const fn v4(a: [u8; 4]) -> [u8; 16] {
    [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

impl PacketMeta {
    /// An IPv4 packet.
    #[must_use]
    #[allow(clippy::too_many_arguments, reason = "a packet has this many header fields")]
    pub const fn ipv4(
        direction: Direction,
        protocol: u8,
        src: [u8; 4],
        src_port: u16,
        dst: [u8; 4],
        dst_port: u16,
        tcp_flags: u8,
        length: u32,
    ) -> Self {
        Self {
            direction,
            family: IpFamily::V4,
            protocol,
            src_addr: v4(src),
            dst_addr: v4(dst),
            src_port,
            dst_port,
            tcp_flags: TcpFlags(tcp_flags),
            length,
            headers: Headers::Complete,
            icmp: Icmp::None,
        }
    }

    /// An IPv6 packet.
    #[must_use]
    #[allow(clippy::too_many_arguments, reason = "a packet has this many header fields")]
    pub const fn ipv6(
        direction: Direction,
        protocol: u8,
        src: [u8; 16],
        src_port: u16,
        dst: [u8; 16],
        dst_port: u16,
        tcp_flags: u8,
        length: u32,
    ) -> Self {
        Self {
            direction,
            family: IpFamily::V6,
            protocol,
            src_addr: src,
            dst_addr: dst,
            src_port,
            dst_port,
            tcp_flags: TcpFlags(tcp_flags),
            length,
            headers: Headers::Complete,
            icmp: Icmp::None,
        }
    }

    /// The same packet travelling the other way (addresses and ports swapped; an ICMP query
    /// becomes its answer, with the answer's type).
    #[must_use]
    pub const fn reply(&self, tcp_flags: u8) -> Self {
        let (src_port, dst_port) = match self.icmp {
            Icmp::Query { request, kind, .. } => {
                (crate::icmp::query_type(self.family, !request, kind) as u16, 0)
            }
            _ => (self.dst_port, self.src_port),
        };
        Self {
            direction: match self.direction {
                Direction::Outbound => Direction::Inbound,
                Direction::Inbound => Direction::Outbound,
            },
            family: self.family,
            protocol: self.protocol,
            src_addr: self.dst_addr,
            dst_addr: self.src_addr,
            src_port,
            dst_port,
            tcp_flags: TcpFlags(tcp_flags),
            length: self.length,
            headers: Headers::Complete,
            icmp: self.icmp.answer(),
        }
    }

    /// A TCP segment that can only belong to a connection already under way: flags read, ACK
    /// set, SYN and RST clear. The only packets a pickup may admit inbound (issue 16).
    #[inline]
    #[must_use]
    pub const fn is_midstream_tcp(&self) -> bool {
        self.protocol == protocol::TCP
            && matches!(self.headers, Headers::Complete)
            && self.tcp_flags.has(TcpFlags::ACK)
            && !self.tcp_flags.has(TcpFlags::SYN)
            && !self.tcp_flags.has(TcpFlags::RST)
    }

    /// A TCP segment that may open a connection: an initial SYN, or one whose flags could not
    /// be read (it may hide a SYN). Inbound, only the rules admit it, whatever flow it names.
    #[inline]
    #[must_use]
    pub const fn may_open_connection(&self) -> bool {
        self.protocol == protocol::TCP
            && (self.tcp_flags.is_initial_syn() || !matches!(self.headers, Headers::Complete))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(flags: u8) -> PacketMeta {
        PacketMeta::ipv4(
            Direction::Inbound,
            protocol::TCP,
            [1, 2, 3, 4],
            5,
            [6, 7, 8, 9],
            10,
            flags,
            60,
        )
    }

    #[test]
    fn only_readable_ack_segments_without_syn_or_rst_are_mid_stream() {
        for f in 0..=u8::MAX {
            let m = tcp(f);
            let want = f & TcpFlags::ACK != 0 && f & (TcpFlags::SYN | TcpFlags::RST) == 0;
            assert_eq!(m.is_midstream_tcp(), want, "flags {f:#x}");
            let hidden = PacketMeta { headers: Headers::NoFlags, tcp_flags: TcpFlags(0), ..m };
            assert!(!hidden.is_midstream_tcp());
            assert!(hidden.may_open_connection(), "unreadable flags may hide a SYN");
        }
        assert!(tcp(TcpFlags::SYN).may_open_connection());
        assert!(!tcp(TcpFlags::SYN | TcpFlags::ACK).may_open_connection());
        let udp = PacketMeta { protocol: protocol::UDP, ..tcp(TcpFlags::ACK) };
        assert!(!udp.is_midstream_tcp() && !udp.may_open_connection());
    }
}
