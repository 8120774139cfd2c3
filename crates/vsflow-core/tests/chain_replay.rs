//! A -> B -> C before the VM's traffic resumed on B (review of issue 16): B carries its unused
//! fingerprints on to C under the salt A chose (they are hashes under it; B cannot re-salt
//! them). What an outsider learned on B therefore still holds on C: a 5-tuple that matched a
//! fingerprint on B (it saw the VM's reset) matches it again on C, where B's refusal is not
//! known. This test pins down what such a replay gets on C: the documented per-5-tuple limit of
//! a tentative pickup (at most 4 mid-stream segments before the VM answers), never a SYN, and
//! nothing after the VM's reset on C; and no carried connection lost.

use vsflow_core::codec::{self, DecodeConfig, Decoded};
use vsflow_core::fingerprint::FingerprintSet;
use vsflow_core::flow::TableConfig;
use vsflow_core::time::secs;
use vsflow_core::{
    BlockReason, Direction, FlowKey, Guid, Mode, PacketMeta, Port, PortConfig, PortIdentity,
    Verdict, protocol,
};

const RESTORED_AT: u64 = 100_000 * 10_000_000;
const PROVIDER: Guid = Guid::from_parts(1, 2, 3, *b"chain!!!");
const ACK: u8 = 0x10;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;

fn port() -> Port {
    let cfg = PortConfig {
        table: TableConfig { max_flows: 1024, ..TableConfig::default() },
        initial_mode: Mode::Enforce,
    };
    Port::try_new(PortIdentity::try_from_str("chain").unwrap(), cfg).unwrap()
}

fn round_trip(from: &Port, now: u64) -> codec::PortState {
    let mut blob = Vec::new();
    let cfg = codec::EncodeConfig { provider: PROVIDER, cap: codec::DEFAULT_CAP };
    codec::encode(from, now, &cfg, &mut blob).unwrap();
    let Decoded::State(state) = codec::decode(&blob, &DecodeConfig::default()).unwrap() else {
        unreachable!()
    };
    state
}

/// The VM's connection `n` (it opened it: 10.0.0.2:(20000 + n) -> 93.184.x.y:443), as the
/// peer's inbound segment.
fn carried(n: u32) -> PacketMeta {
    let [_, _, hi, lo] = n.to_be_bytes();
    PacketMeta::ipv4(
        Direction::Inbound,
        protocol::TCP,
        [93, 184, hi, lo],
        443,
        [10, 0, 0, 2],
        20_000 + (n % 20_000) as u16,
        ACK,
        100,
    )
}

/// An outsider's segment to the VM's port 3389 (no rule admits it) from 203.0.x.y:sport.
fn outsider(i: u32, flags: u8) -> PacketMeta {
    let [_, hi, lo, s] = i.to_be_bytes();
    PacketMeta::ipv4(
        Direction::Inbound,
        protocol::TCP,
        [203, hi, lo, 1],
        1024 + u16::from(s) * 200,
        [10, 0, 0, 2],
        3389,
        flags,
        60,
    )
}

#[test]
fn a_5_tuple_learned_on_b_replayed_on_c_gets_at_most_the_tentative_limit_and_no_conversation() {
    // B: restored from A with 20,000 fingerprints (A's salt) and nothing exact.
    let mut b = port();
    let mut state = round_trip(&port(), 0);
    let keys: Vec<FlowKey> = (0..20_000).map(|n| FlowKey::of(&carried(n))).collect();
    state.fingerprints = FingerprintSet::try_from_keys([0x5eed, 0xa11], keys.iter()).unwrap();
    state.save_info.flows_fingerprinted = 20_000;
    state.save_info.flows_in_table = 20_000;
    state.digest = 0;
    codec::apply(&mut b, &state, RESTORED_AT).unwrap();

    // The outsider sprays B until one segment gets through (the VM's reset tells it which).
    let now = RESTORED_AT + secs(1);
    let hit = (0..u32::MAX)
        .map(|i| outsider(i, ACK))
        .find(|m| b.classify(m, now) == Verdict::Permit)
        .expect("a chance match within 2^32 keys");
    assert_eq!(b.classify(&hit.reply(RST), now), Verdict::Permit, "the VM resets it");
    assert_eq!(
        b.classify(&hit, now + 1),
        Verdict::Block(BlockReason::Unsolicited),
        "on B the refusal is remembered: a replay gets nothing"
    );

    // B is saved before the VM's traffic resumed: the fingerprints travel on under A's salt.
    let onward = round_trip(&b, now + 2);
    assert_eq!(onward.fingerprints.salt(), [0x5eed, 0xa11], "A's salt, carried on");
    assert_eq!(onward.fingerprints.len(), 20_000);
    let mut c = port();
    codec::apply(&mut c, &onward, RESTORED_AT + secs(60)).unwrap();
    let t = RESTORED_AT + secs(61);

    // On C the learned 5-tuple matches again (C does not know B's refusal) ...
    let admitted = (0..8).filter(|_| c.classify(&hit, t) == Verdict::Permit).count();
    assert_eq!(admitted, 4, "at most the tentative limit of segments before the VM answers");
    // ... but it opens no conversation: a SYN on it is judged by the rules ...
    assert_eq!(c.classify(&outsider_syn(&hit), t), Verdict::Block(BlockReason::Unsolicited));
    // ... and after the VM's reset on C nothing more passes.
    assert_eq!(c.classify(&hit.reply(RST), t), Verdict::Permit);
    assert_eq!(c.classify(&hit, t + 1), Verdict::Block(BlockReason::Unsolicited));
    // No carried connection was lost to it: every one resumes on C.
    for n in (0..20_000).step_by(997) {
        assert_eq!(c.classify(&carried(n).reply(ACK), t + 2), Verdict::Permit, "connection {n}");
        assert_eq!(c.classify(&carried(n), t + 2), Verdict::Permit, "connection {n}");
    }
}

fn outsider_syn(m: &PacketMeta) -> PacketMeta {
    PacketMeta { tcp_flags: vsflow_core::packet::TcpFlags(SYN), ..*m }
}
