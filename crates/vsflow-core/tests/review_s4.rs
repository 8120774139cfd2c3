//! Review s4 (session 4's independent review of session 3's code): what a fingerprint pickup
//! does when the 5-tuple that matches a carried value is one the VM really has.
//!
//! The false-admission bound (docs/SECURITY.md, "The false-admission bound", items 2-3, and
//! runtime-state-format.md, "Pickups") rests on the VM resetting what a chance match admits:
//! "delivered to a VM that has no such connection and resets it", and "the VM confirms only
//! connections it has", so "nothing a spray sends costs a carried connection". But a
//! connection a *peer* opened (admitted by a rule) that the cap left out is one the VM has and
//! that carries no fingerprint (format 1.2 fingerprints only the VM's own): if its key's value
//! equals a carried VM connection's, its next segment is picked up, the VM confirms it (it has
//! it), and it becomes the VM's. Two things follow, each outside every documented bound:
//! the peer's connection survives the operator removing the rule that admitted it (the source
//! would cut it: edge 3 says the destination's rules judge it "as they would a new one"), and
//! the VM connection whose value it took never resumes (a carried connection lost).
//!
//! The encoder checks collisions only among the values it writes (its connections' and the
//! carried ones: `plan_upgrades`), never against the keys of the connections it leaves out.
//! With `m` peer-opened connections left out and `n` fingerprints a migration hits this with
//! probability about `m n / 2^32` (0.02 at 10,000 each; 0.25 at 32,768 each under the maximum
//! `FlowsPerPort`), and an outsider who opens many connections to a service a rule admits
//! raises `m`. Here the colliding key is searched for under the salt the port's encoder keeps
//! across saves (issue 18: two saves share it), which only makes the chance event
//! reproducible: the encoder would write the same blob whoever chose the key.
//!
//! Fixed (pastcap, session 4): the encoder makes such a connection exact before its upgrades
//! by rank (`plan_upgrades`, "Left-out connections"), or tries another salt (`plan_ranked`).

use std::collections::{HashMap, HashSet};

use vsflow_core::codec::{self, DecodeConfig, Decoded, Encoder, PortState};
use vsflow_core::fingerprint::fingerprint;
use vsflow_core::flow::TableConfig;
use vsflow_core::time::secs;
use vsflow_core::{
    AllowRule, BlockReason, Direction, FlowKey, Guid, Mode, PacketMeta, Port, PortConfig,
    PortIdentity, PortRange, Prefix, Verdict, protocol,
};

const PROVIDER: Guid = Guid::from_parts(1, 2, 3, *b"review4!");
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;
const VM: [u8; 4] = [10, 0, 0, 2];
const CONNECTIONS: u32 = 4_000;
const CAP: usize = 12_000;

fn port() -> Port {
    let cfg = PortConfig {
        table: TableConfig { max_flows: 8_192, ..TableConfig::default() },
        initial_mode: Mode::Enforce,
    };
    Port::try_new(PortIdentity::try_from_str("review-s4").unwrap(), cfg).unwrap()
}

fn ssh_rule() -> AllowRule {
    AllowRule {
        protocol: Some(protocol::TCP),
        local_ports: PortRange::single(22),
        remote: Prefix::Any,
    }
}

/// The VM's connection `n`: 10.0.0.2:(20000 + n) -> 93.184.hi.lo:443, as the VM's SYN.
fn vm_syn(n: u32) -> PacketMeta {
    let [_, _, hi, lo] = n.to_be_bytes();
    PacketMeta::ipv4(
        Direction::Outbound,
        protocol::TCP,
        VM,
        u16::try_from(20_000 + n).unwrap(),
        [93, 184, hi, lo],
        443,
        SYN,
        60,
    )
}

/// A peer's SSH connection `i`: 198.51.hi.lo:sport -> 10.0.0.2:22, as the peer's SYN.
fn peer_syn(i: u32) -> PacketMeta {
    let [_, a, b, c] = i.to_be_bytes();
    PacketMeta::ipv4(
        Direction::Inbound,
        protocol::TCP,
        [198, 51, a, b],
        1_024 + u16::from(c) * 200,
        VM,
        22,
        SYN,
        60,
    )
}

/// The same segment with other flags (same direction and 5-tuple).
fn with_flags(m: &PacketMeta, flags: u8) -> PacketMeta {
    let mut m = *m;
    m.tcp_flags = vsflow_core::TcpFlags(flags);
    m
}

/// Opens a connection whose first packet is `syn` (either side) and completes the handshake.
fn handshake(p: &mut Port, syn: &PacketMeta, t: u64) {
    assert_eq!(p.classify(syn, t), Verdict::Permit);
    assert_eq!(p.classify(&syn.reply(SYN | ACK), t + 1), Verdict::Permit);
    assert_eq!(p.classify(&with_flags(syn, ACK), t + 2), Verdict::Permit);
}

fn decode(blob: &[u8]) -> PortState {
    let Decoded::State(s) = codec::decode(blob, &DecodeConfig::default()).unwrap() else {
        unreachable!()
    };
    s
}

/// Host A's port past the cap with a peer's SSH connection the cap leaves out whose key has a
/// carried VM connection's value; returns A, the decoded blob, the peer's SYN, the VM
/// connection's SYN and A's clock.
fn collided() -> (Port, PortState, PacketMeta, PacketMeta, u64) {
    let mut src = port();
    src.replace_rules(&[ssh_rule()]).unwrap();
    let mut t = secs(100);
    for n in 0..CONNECTIONS {
        handshake(&mut src, &vm_syn(n), t);
        t += 10;
    }
    let cfg = codec::EncodeConfig { provider: PROVIDER, cap: CAP };
    let mut encoder = Encoder::new();
    let mut blob = Vec::new();
    let first = encoder.encode(&src, t, &cfg, &mut blob).unwrap();
    assert!(first.flows_fingerprinted > 3_000, "past the cap: {first:?}");
    let state1 = decode(&blob);
    let salt = state1.fingerprints.salt();
    // Each carried value -> the VM connection it stands for.
    let by_value: HashMap<u32, u32> = (0..CONNECTIONS)
        .map(|n| (fingerprint(salt, &FlowKey::of(&vm_syn(n))), n))
        .filter(|(v, _)| state1.fingerprints.values().binary_search(v).is_ok())
        .collect();
    // A peer's SSH connection whose key has one of those values (the chance event, found).
    let (peer, v) = (0u32..)
        .map(peer_syn)
        .find_map(|m| {
            let v = fingerprint(salt, &FlowKey::of(&m));
            by_value.contains_key(&v).then_some((m, v))
        })
        .unwrap();
    let victim = vm_syn(by_value[&v]);
    // The peer's connection is the oldest (it ranks last for an exact record): opened, then
    // every VM connection speaks again.
    t += secs(1);
    handshake(&mut src, &peer, t);
    t += secs(1);
    for n in 0..CONNECTIONS {
        assert_eq!(src.classify(&vm_syn(n).reply(ACK), t), Verdict::Permit);
        t += 10;
    }
    let second = encoder.encode(&src, t, &cfg, &mut blob).unwrap();
    let state = decode(&blob);
    assert_eq!(state.fingerprints.salt(), salt, "one salt for the port's saves (issue 18)");
    let exact: HashSet<FlowKey> = state.flows.iter().map(|s| s.key).collect();
    // Before the fix the cap left the peer's connection out; a TCP connection whose key has
    // a written value is now carried exactly (`plan_upgrades`, "Left-out connections").
    assert!(
        exact.contains(&FlowKey::of(&peer)),
        "the peer's connection, whose key has a written value, is carried exactly: {second:?}"
    );
    assert!(!exact.contains(&FlowKey::of(&victim)), "the VM connection travels as a fingerprint");
    assert!(state.fingerprints.values().binary_search(&v).is_ok());
    (src, state, peer, victim, t)
}

#[test]
fn a_left_out_peer_connection_never_takes_a_vm_connections_fingerprint() {
    let (mut src, state, peer, victim, t) = collided();
    // Host B restores; the operator then removes the SSH rule on B, and on A had the VM stayed.
    let restored_at = secs(100_000);
    let mut dst = port();
    codec::apply(&mut dst, &state, restored_at).unwrap();
    dst.replace_rules(&[]).unwrap();
    src.replace_rules(&[]).unwrap();
    let at = |d: u64| restored_at + secs(1) + d;
    let peer_ack = with_flags(&peer, ACK);
    let peer_data = with_flags(&peer, PSH_ACK);
    let vm_ack = peer.reply(ACK);
    // The peer's next segment (a chance match: within the documented bound), the VM's answer
    // on a connection it has, then the peer's data: on A the rule's removal cuts it.
    let _ = dst.classify(&peer_ack, at(0));
    assert_eq!(dst.classify(&vm_ack, at(1)), Verdict::Permit, "the VM's own traffic");
    let on_a = src.classify(&peer_data, t + 100);
    assert_eq!(on_a, Verdict::Block(BlockReason::NotAdmitted), "control: A cuts it");
    let on_b = dst.classify(&peer_data, at(2));
    // The VM connection whose value the peer's connection took resumes on A, and on B?
    let victim_in = victim.reply(ACK);
    let victim_a = src.classify(&victim_in, t + 101);
    let victim_b = dst.classify(&victim_in, at(3));
    assert_eq!(victim_a, Verdict::Permit, "control");
    assert_eq!(
        (on_b, victim_b),
        (on_a, victim_a),
        "B admits the peer's connection A cuts, and loses the VM connection A keeps"
    );
}

/// The same when the VM speaks first on the peer's connection (a server's keepalive or data),
/// with the rule in place: no operator action is needed for the VM connection to be lost, and
/// the peer's connection is the VM's from then on (a later rule removal no longer cuts it).
#[test]
fn the_vm_speaking_first_on_a_left_out_peer_connection_takes_no_fingerprint() {
    let (mut src, state, peer, victim, t) = collided();
    let restored_at = secs(100_000);
    let mut dst = port();
    codec::apply(&mut dst, &state, restored_at).unwrap();
    let at = |d: u64| restored_at + secs(1) + d;
    let vm_data = peer.reply(PSH_ACK);
    assert_eq!(dst.classify(&vm_data, at(0)), Verdict::Permit, "the VM's own traffic");
    assert_eq!(src.classify(&vm_data, t + 100), Verdict::Permit);
    let victim_in = victim.reply(ACK);
    let victim_a = src.classify(&victim_in, t + 101);
    assert_eq!(victim_a, Verdict::Permit, "control");
    let victim_b = dst.classify(&victim_in, at(1));
    dst.replace_rules(&[]).unwrap();
    src.replace_rules(&[]).unwrap();
    let peer_data = with_flags(&peer, PSH_ACK);
    let on_a = src.classify(&peer_data, t + 102);
    assert_eq!(on_a, Verdict::Block(BlockReason::NotAdmitted), "control: A cuts it");
    let on_b = dst.classify(&peer_data, at(2));
    assert_eq!(
        (victim_b, on_b),
        (victim_a, on_a),
        "B loses the VM connection A keeps, and admits the peer's connection A cuts"
    );
}
