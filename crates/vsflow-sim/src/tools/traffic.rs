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
