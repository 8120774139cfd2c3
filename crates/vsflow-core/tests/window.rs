//! Issue 16: the restore window enforces. Between a port's creation for a live migration
//! (`begin_restore`) and its restore, the VM's own traffic and inbound mid-stream TCP pass (the
//! carried connections keep working), but nothing opens a new conversation: inbound initial
//! SYNs and unsolicited inbound UDP and other protocols are blocked, whatever the port's
//! configured mode (the blob may carry Enforce), and an outsider cannot fill the table.

use vsflow_core::codec::{self, DecodeConfig, Decoded, PortState};
use vsflow_core::flow::TableConfig;
use vsflow_core::{
    BlockReason, Direction, FlowKey, Guid, Mode, PacketMeta, Port, PortConfig, PortIdentity,
    Verdict, protocol,
};

const PROVIDER: Guid = Guid::from_parts(1, 2, 3, *b"window!!");
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const SYNACK: u8 = 0x12;

fn port(mode: Mode, max_flows: u32) -> Port {
    let cfg = PortConfig {
        table: TableConfig { max_flows, ..TableConfig::default() },
        initial_mode: mode,
    };
    Port::try_new(PortIdentity::try_from_str("vm-nic").unwrap(), cfg).unwrap()
}

/// What an Enforce source port without rules or flows saves.
fn empty_enforce_state() -> PortState {
    let mut blob = Vec::new();
    let cfg = codec::EncodeConfig { provider: PROVIDER, cap: codec::DEFAULT_CAP };
    codec::encode(&port(Mode::Enforce, 64), 5, &cfg, &mut blob).unwrap();
    match codec::decode(&blob, &DecodeConfig::default()).unwrap() {
        Decoded::State(s) => s,
        Decoded::UnsupportedMajor { .. } | Decoded::NoState { .. } => unreachable!(),
    }
}

/// A packet from peer `n` (198.51.100.n:40000+n) to the VM's `dport`.
fn inbound(proto: u8, n: u16, dport: u16, flags: u8) -> PacketMeta {
    let [hi, lo] = n.to_be_bytes();
    PacketMeta::ipv4(
        Direction::Inbound,
        proto,
        [198, 51, hi, lo],
        40000u16.wrapping_add(n),
        [10, 0, 0, 2],
        dport,
        flags,
        60,
    )
}

/// The VM's SYN to 203.0.113.1:443 from port `sport`.
fn vm_syn(sport: u16) -> PacketMeta {
    PacketMeta::ipv4(
        Direction::Outbound,
        protocol::TCP,
        [10, 0, 0, 2],
        sport,
        [203, 0, 113, 1],
        443,
        SYN,
        60,
    )
}

fn window_enforces(mode: Mode) {
    let mut p = port(mode, 64);
    p.begin_restore();
    let unsolicited = [
        inbound(protocol::TCP, 1, 3389, SYN),
        inbound(protocol::TCP, 2, 22, SYN),
        inbound(protocol::UDP, 3, 161, 0),
        inbound(47, 4, 0, 0),
    ];
    for m in &unsolicited {
        assert_eq!(
            p.classify(m, 10),
            Verdict::Block(BlockReason::Unsolicited),
            "{mode:?} port in the restore window admitted {m:?}"
        );
    }
    assert_eq!(p.counters().packets_blocked, 4);
    // The VM's own traffic opens flows whose return traffic passes.
    let syn = vm_syn(41000);
    assert_eq!(p.classify(&syn, 11), Verdict::Permit);
    assert_eq!(p.classify(&syn.reply(SYNACK), 12), Verdict::Permit);
    let dns = PacketMeta::ipv4(
        Direction::Outbound,
        protocol::UDP,
        [10, 0, 0, 2],
        5353,
        [1, 1, 1, 1],
        53,
        0,
        60,
    );
    assert_eq!(p.classify(&dns, 13), Verdict::Permit);
    assert_eq!(p.classify(&dns.reply(0), 14), Verdict::Permit);
    // A carried connection's mid-stream segment passes.
    assert_eq!(p.classify(&inbound(protocol::TCP, 5, 443, ACK), 15), Verdict::Permit);
}

#[test]
fn an_enforce_port_in_the_restore_window_blocks_syns_and_unsolicited_udp_and_other_protocols() {
    window_enforces(Mode::Enforce);
}

#[test]
fn a_monitor_port_in_the_restore_window_enforces_too_until_the_blob_says_otherwise() {
    window_enforces(Mode::Monitor);
}

#[test]
fn an_outsider_cannot_fill_the_table_during_the_restore_window() {
    let mut p = port(Mode::Enforce, 1000);
    p.begin_restore();
    for n in 0..1000 {
        p.classify(&inbound(protocol::TCP, n, 3389, ACK), 10);
    }
    assert!(
        p.table().iter().all(|(_, r)| r.packets[0] > 0),
        "flows the VM never answered hold the table ({} flows)",
        p.table().len()
    );
    codec::apply(&mut p, &empty_enforce_state(), 20).unwrap();
    let mut completed = 0;
    for i in 0..10 {
        let syn = vm_syn(42000 + i);
        p.classify(&syn, 30);
        if p.classify(&syn.reply(SYNACK), 31) == Verdict::Permit {
            completed += 1;
        }
    }
    assert_eq!(completed, 10, "the VM's new connections after the restore");
    for n in 0..1000 {
        let m = inbound(protocol::TCP, n, 3389, ACK);
        assert_ne!(p.classify(&m, 40), Verdict::Permit, "an outsider's window flow still passes");
        assert!(p.table().get(&FlowKey::of(&m)).is_none());
    }
}

// ---- A connection a peer opened stays the peer's (review16) ----

/// What an Enforce source port with the SSH allow rule saves when none of its connections fit
/// as exact records (a connection a peer opened travels exactly or not at all, format 1.2) and
/// none is fingerprinted.
fn ssh_enforce_state() -> PortState {
    let mut src = port(Mode::Enforce, 64);
    let ssh = vsflow_core::AllowRule {
        protocol: Some(protocol::TCP),
        local_ports: vsflow_core::PortRange::single(22),
        remote: vsflow_core::Prefix::Any,
    };
    src.replace_rules(&[ssh]).unwrap();
    let mut blob = Vec::new();
    let cfg = codec::EncodeConfig { provider: PROVIDER, cap: codec::DEFAULT_CAP };
    codec::encode(&src, 5, &cfg, &mut blob).unwrap();
    match codec::decode(&blob, &DecodeConfig::default()).unwrap() {
        Decoded::State(s) => s,
        Decoded::UnsupportedMajor { .. } | Decoded::NoState { .. } => unreachable!(),
    }
}

/// An SSH connection a peer opened through the source's allow rule, not carried exactly: the
/// VM (the SSH server) speaks on it first on the destination, in the restore window or after
/// a restore that armed no fingerprint. Its return traffic stays judged by the rules, as on
/// the source: once the operator removes the rule, the peer's segments are blocked there and
/// must be here. (A mid-stream segment of the VM's proves nothing about who opened the
/// connection: `classify.rs`, `vm_flow`.)
#[test]
fn a_peer_opened_connection_the_vm_speaks_on_first_after_a_migration_stays_the_peers() {
    const PSH_ACK: u8 = 0x18;
    let peer = inbound(protocol::TCP, 7, 22, PSH_ACK);
    let server = peer.reply(PSH_ACK);
    for in_window in [true, false] {
        let mut b = port(Mode::Enforce, 64);
        b.begin_restore();
        let mut now = 10;
        if !in_window {
            codec::apply(&mut b, &ssh_enforce_state(), now).unwrap();
        }
        now += 1;
        assert_eq!(b.classify(&server, now), Verdict::Permit, "the VM's own segment");
        assert_eq!(b.classify(&peer, now + 1), Verdict::Permit, "window {in_window}");
        if in_window {
            codec::apply(&mut b, &ssh_enforce_state(), now + 2).unwrap();
        }
        assert_eq!(b.classify(&peer, now + 3), Verdict::Permit, "the rule admits it");
        b.replace_rules(&[]).unwrap();
        assert_eq!(
            b.classify(&peer, now + 4),
            Verdict::Block(BlockReason::NotAdmitted),
            "window {in_window}: a peer-opened connection became the VM's and outlived its rule"
        );
    }
}
