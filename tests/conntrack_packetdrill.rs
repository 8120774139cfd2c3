//! The Linux kernel's conntrack packetdrill cases (tools/testing/selftests/net/netfilter/
//! packetdrill/conntrack_*.pkt), each replayed through vsflow as the same packet sequence,
//! written here from the scripts' descriptions. In a script, `>` is a packet the local stack
//! sends and `<` one it receives: here the local stack is the VM (outbound and inbound at its
//! port), in Enforce with an allow rule for the port the VM serves.
//!
//! The scripts assert what conntrack decides; vsflow tracks no sequence numbers, so each test
//! asserts the product's expectation (no packet of the legitimate exchange is blocked) and
//! vsflow's connection state, and names where it differs from conntrack's (docs/CONFORMANCE.md).
//! Each runs over IPv4 and IPv6.

use etherparse::PacketBuilder;
use vsflow_callout::RestoreMode;
use vsflow_core::policy::{AllowRule, PortRange, Prefix};
use vsflow_core::{FlowState, protocol};
use vsflow_scenarios::{enforce, finish, flow_states, host, vm_port};
use vsflow_sim::host::EXTERNAL_PORT;
use vsflow_sim::{Host, PacketFate, SimPacket};

const PORT: u32 = 5;
const NAME: &str = "pkt-vm";
/// The VM's port when it is the client, and the server port either way (the scripts' 8080).
const CLIENT: u16 = 40000;
const SERVER: u16 = 8080;

/// TCP flags of a scripted segment.
#[derive(Clone, Copy, Default)]
#[allow(clippy::struct_excessive_bools, reason = "one bool per TCP flag")]
struct F {
    syn: bool,
    ack: Option<u32>,
    fin: bool,
    rst: bool,
    psh: bool,
}

const S: F = F { syn: true, ack: None, fin: false, rst: false, psh: false };
const R: F = F { syn: false, ack: None, fin: false, rst: true, psh: false };
const fn a(n: u32) -> F {
    F { syn: false, ack: Some(n), fin: false, rst: false, psh: false }
}
const fn sa(n: u32) -> F {
    F { syn: true, ack: Some(n), fin: false, rst: false, psh: false }
}
const fn pa(n: u32) -> F {
    F { syn: false, ack: Some(n), fin: false, rst: false, psh: true }
}
const fn fa(n: u32) -> F {
    F { syn: false, ack: Some(n), fin: true, rst: false, psh: false }
}
const fn ra(n: u32) -> F {
    F { syn: false, ack: Some(n), fin: false, rst: true, psh: false }
}

/// One connection between the VM and its peer, sent through the switch.
struct Conn {
    h: Host,
    sw: usize,
    v6: bool,
    vm_port: u16,
    peer_port: u16,
    fates: Vec<PacketFate>,
}

impl Conn {
    /// The VM as client (`server` false) or as the server a rule admits (`server` true).
    fn new(v6: bool, server: bool) -> Self {
        let (mut h, sw) = host(17, enforce(RestoreMode::Synchronous), "SW-PKT");
        vm_port(&mut h, sw, PORT, NAME, 1, false);
        if server {
            let rule = AllowRule {
                protocol: Some(protocol::TCP),
                local_ports: PortRange::single(SERVER),
                remote: Prefix::Any,
            };
            assert_eq!(h.replace_rules_everywhere(&[rule]), 1);
        }
        let (vm_port, peer_port) = if server { (SERVER, CLIENT) } else { (CLIENT, SERVER) };
        Self { h, sw, v6, vm_port, peer_port, fates: Vec::new() }
    }

    fn segment(&self, outbound: bool, f: F, seq: u32, len: usize) -> SimPacket {
        let (vm4, peer4) = ([192, 0, 2, 1], [192, 0, 2, 2]);
        let mut vm6 = [0u8; 16];
        vm6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        let mut peer6 = vm6;
        vm6[15] = 1;
        peer6[15] = 2;
        let (sport, dport) =
            if outbound { (self.vm_port, self.peer_port) } else { (self.peer_port, self.vm_port) };
        let b = if self.v6 {
            let (s, d) = if outbound { (vm6, peer6) } else { (peer6, vm6) };
            PacketBuilder::ipv6(s, d, 64)
        } else {
            let (s, d) = if outbound { (vm4, peer4) } else { (peer4, vm4) };
            PacketBuilder::ipv4(s, d, 64)
        };
        let mut b = b.tcp(sport, dport, seq, 65535);
        if f.syn {
            b = b.syn();
        }
        if let Some(n) = f.ack {
            b = b.ack(n);
        }
        if f.fin {
            b = b.fin();
        }
        if f.rst {
            b = b.rst();
        }
        if f.psh {
            b = b.psh();
        }
        let payload = vec![0x42u8; len];
        let mut bytes = Vec::with_capacity(b.size(len));
        b.write(&mut bytes, &payload).expect("segment builds");
        SimPacket::from_datagram(bytes).expect("a valid datagram")
    }

    /// `>`: the VM sends.
    fn out(&mut self, f: F, seq: u32, len: usize) -> PacketFate {
        self.h.advance(1_000);
        let p = self.segment(true, f, seq, len);
        let fate = self.h.transmit(self.sw, PORT, EXTERNAL_PORT, &p);
        self.fates.push(fate);
        fate
    }

    /// `<`: the VM receives.
    fn inn(&mut self, f: F, seq: u32, len: usize) -> PacketFate {
        self.h.advance(1_000);
        let p = self.segment(false, f, seq, len);
        let fate = self.h.transmit(self.sw, EXTERNAL_PORT, PORT, &p);
        self.fates.push(fate);
        fate
    }

    fn state(&self) -> Vec<FlowState> {
        flow_states(&self.h, NAME)
    }

    /// No packet of the exchange was blocked; unloads and checks the double's contracts.
    fn all_delivered(mut self) {
        let blocked: Vec<usize> = self
            .fates
            .iter()
            .enumerate()
            .filter(|(_, f)| **f != PacketFate::Delivered)
            .map(|(i, _)| i)
            .collect();
        assert!(blocked.is_empty(), "packets blocked (by index): {blocked:?}");
        finish(&mut self.h);
    }
}

/// `conntrack_ack_loss_stall`: the VM serves; the peer sends 46 full segments, each acked,
/// then retransmits the first (already acked) one: it must pass (conntrack used to mark it
/// INVALID), and the VM acks again.
#[test]
fn ack_loss_stall_a_retransmit_of_acked_data_passes() {
    for v6 in [false, true] {
        let mut c = Conn::new(v6, true);
        c.inn(S, 0, 0);
        c.out(sa(1), 0, 0);
        c.inn(a(1), 1, 0);
        let mut seq = 1u32;
        for _ in 0..46 {
            c.inn(pa(1), seq, 1460);
            seq += 1460;
            c.out(a(seq), 1, 0);
        }
        assert_eq!(c.inn(pa(1), 1, 1460), PacketFate::Delivered, "the retransmit of acked data");
        c.out(a(seq), 1, 0);
        assert_eq!(c.state(), [FlowState::Established]);
        c.all_delivered();
    }
}

/// `conntrack_inexact_rst`: after the peer's FIN and the VM's RST (unread data), a spurious
/// RST from the peer whose sequence is not the exact next one passes; conntrack is CLOSE.
#[test]
fn inexact_rst_after_the_close_passes() {
    for v6 in [false, true] {
        let mut c = Conn::new(v6, false);
        c.out(S, 0, 0);
        c.inn(sa(1), 1, 0);
        c.out(a(1), 1, 0);
        for k in 0..3 {
            c.inn(a(1), 1 + 1000 * k, 1000);
        }
        for k in 1..=3 {
            c.out(a(1 + 1000 * k), 1, 0);
        }
        c.out(pa(3001), 1, 1000);
        c.inn(fa(1001), 3001, 0);
        c.out(a(3002), 1001, 0);
        assert_eq!(c.state(), [FlowState::FinWait], "conntrack: CLOSE_WAIT");
        c.out(ra(3002), 1001, 0);
        assert_eq!(c.state(), [FlowState::Closed], "conntrack: CLOSE");
        c.inn(R, 2001, 0);
        assert_eq!(c.state(), [FlowState::Closed]);
        c.all_delivered();
    }
}

/// `conntrack_rst_invalid`: three RSTs from the peer out of the window or not at the exact next
/// sequence; conntrack marks all of them (and one more later) INVALID, drops them and stays
/// ESTABLISHED. vsflow tracks no sequence numbers: it permits them (documented difference,
/// docs/CONFORMANCE.md) and the first one closes its record; the connection's later packets
/// still pass, and the VM's next segment shows it alive again.
#[test]
fn rst_invalid_out_of_window_resets_neither_block_nor_end_the_connection() {
    for v6 in [false, true] {
        let mut c = Conn::new(v6, false);
        c.out(S, 0, 0);
        c.inn(sa(1), 1, 0);
        c.out(a(1), 1, 0);
        for k in 0..3 {
            c.inn(a(1), 1 + 1000 * k, 1000);
        }
        for k in 1..=3 {
            c.out(a(1 + 1000 * k), 1, 0);
        }
        for seq in [0, 1_000_000, 42] {
            c.inn(R, seq, 0);
        }
        c.out(pa(3001), 1, 1000);
        c.inn(a(1001), 3001, 0);
        c.inn(ra(1001), 3000, 0);
        // The exact next sequence: conntrack moves to CLOSE.
        c.inn(ra(1001), 3001, 0);
        assert_eq!(c.state(), [FlowState::Closed]);
        c.all_delivered();
    }
}

/// `conntrack_syn_challenge_ack`: the peer answers the VM's SYN with a challenge ACK of an old
/// incarnation; the VM resets and sends a new SYN; the handshake completes: everything passes
/// and the connection is established.
#[test]
fn syn_challenge_ack_then_a_new_handshake_is_established() {
    for v6 in [false, true] {
        let mut c = Conn::new(v6, false);
        c.out(S, 0, 0);
        c.inn(a(643_160_523), 145_824_453, 0);
        c.out(R, 643_160_523, 0);
        c.out(S, 0, 0);
        assert_eq!(c.state(), [FlowState::SynSent], "conntrack: SYN_SENT");
        c.inn(sa(1), 0, 0);
        c.out(a(1), 1, 0);
        assert_eq!(c.state(), [FlowState::Established], "conntrack: ESTABLISHED");
        c.all_delivered();
    }
}

/// `conntrack_synack_old`: a SYN-ACK of an older incarnation (wrong acknowledgment) arrives
/// first; conntrack marks it INVALID (one drop) and stays `SYN_SENT`; vsflow permits it
/// (documented difference) and counts the connection established at once; the retransmitted
/// SYN and the correct SYN-ACK pass, and the connection is established either way.
#[test]
fn synack_old_the_correct_synack_after_a_stale_one_passes() {
    for v6 in [false, true] {
        let mut c = Conn::new(v6, false);
        c.out(S, 0, 0);
        c.inn(sa(643_160_523), 145_824_453, 0);
        c.out(S, 0, 0);
        c.inn(sa(1), 145_758_918, 0);
        c.out(pa(145_758_919), 1, 1);
        assert_eq!(c.state(), [FlowState::Established]);
        c.all_delivered();
    }
}

/// `conntrack_synack_reuse`: the VM serves; while the connection is established the peer sends
/// a new SYN (challenge ACK from the VM), resets, and sends the SYN again: it starts a new
/// connection (conntrack: `SYN_RECV`) and nothing is blocked.
#[test]
fn synack_reuse_a_new_syn_after_the_reset_starts_a_new_connection() {
    for v6 in [false, true] {
        let mut c = Conn::new(v6, true);
        c.inn(S, 0, 0);
        c.out(sa(1), 0, 0);
        c.inn(a(1), 1, 0);
        c.inn(pa(1), 1, 100);
        c.out(a(101), 1, 0);
        c.inn(S, 2000, 0);
        c.out(a(101), 1, 0);
        c.inn(ra(1), 101, 0);
        c.inn(S, 2000, 0);
        assert_eq!(c.state(), [FlowState::SynReceived], "conntrack: SYN_RECV");
        c.all_delivered();
    }
}

/// The connection of `conntrack_rst_invalid` after one of its out-of-window resets: the VM's
/// stack ignored it (RFC 5961) and keeps sending, so the connection is alive (conntrack:
/// `ESTABLISHED`). It then stays idle longer than a closed flow's 10 s timeout: the peer's
/// next segment is return traffic of an established connection and must pass.
#[test]
fn a_reset_the_vm_ignored_does_not_end_the_connection_for_vsflow() {
    for v6 in [false, true] {
        let mut c = Conn::new(v6, false);
        c.out(S, 0, 0);
        c.inn(sa(1), 1, 0);
        c.out(a(1), 1, 0);
        c.inn(a(1), 1, 1000);
        c.out(a(1001), 1, 0);
        c.inn(R, 1_000_000, 0);
        c.out(pa(1001), 1, 100);
        assert_eq!(c.state(), [FlowState::Established], "the VM kept the connection");
        c.h.advance(11 * vsflow_core::TICKS_PER_SECOND);
        assert_eq!(c.inn(a(101), 1001, 0), PacketFate::Delivered, "the peer's next segment");
        c.all_delivered();
    }
}
