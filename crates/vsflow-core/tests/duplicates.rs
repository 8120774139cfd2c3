//! Faults s7 (review s6 "Left open"): a CRC-valid blob that carries one connection's key more
//! than once (only a buggy or hostile source writes one). Neither record is trusted: the
//! connection is restored as any connection the blob does not carry (fail closed for it),
//! counted `untracked`, and every other carried connection is restored. Before, the duplicate
//! was the apply's error: a degraded restore that lost every carried connection.

mod common;

use common::*;
use vsflow_core::codec::{self, ApplyConfig, DecodeConfig, DecodedStaged, PortState, StageConfig};
use vsflow_core::{FlowState, Mode, PacketMeta, Port, PortIdentity, Verdict, time::secs};

const CONNS: u16 = 40;

/// The peer's data segment of connection `n`.
fn peer_data(n: u16) -> PacketMeta {
    vm_syn(n).reply(0x18)
}

/// The source: `CONNS` established connections the VM opened, saved and decoded (a list).
fn saved(now: u64) -> PortState {
    let mut src =
        Port::try_new(PortIdentity::try_from_str("dup").unwrap(), enforce_config(4_096)).unwrap();
    for n in 0..CONNS {
        let t = now - u64::from(CONNS - n) * 2 * vsflow_core::TICKS_PER_SECOND;
        src.classify(&vm_syn(n), t);
        src.classify(&vm_syn(n).reply(0x12), t + 1);
        src.classify(&vm_syn(n).reply(0x12).reply(0x10), t + 2);
    }
    let mut blob = Vec::new();
    codec::encode(&src, now, &encode_config(), &mut blob).unwrap();
    decode_state(&blob).unwrap()
}

/// Restores `state` through a blob (CRC-valid: written by the encoder) the way the driver does
/// (`decode_staged` + `apply_staged`) and through the decoded list (`apply`), and checks both.
fn restore_both_ways(state: &PortState, victim: u16, now: u64) {
    let blob = encode_state(state);
    let placement = StageConfig { table: enforce_config(4_096).table, base: now, now };
    let decoded = codec::decode_staged(&blob, &DecodeConfig::default(), &placement);
    let Ok(DecodedStaged::State(st, staged)) = decoded else { panic!("decodes: {decoded:?}") };
    let mut staged_port =
        Port::try_new(PortIdentity::try_from_str("dup").unwrap(), enforce_config(4_096)).unwrap();
    let report = codec::apply_staged(&mut staged_port, &st, staged, now, &ApplyConfig::default());
    let mut list_port =
        Port::try_new(PortIdentity::try_from_str("dup").unwrap(), enforce_config(4_096)).unwrap();
    let listed = codec::apply(&mut list_port, &decode_state(&blob).unwrap(), now);
    for (how, port, report) in
        [("staged", &mut staged_port, report), ("list", &mut list_port, listed)]
    {
        let report = report.unwrap_or_else(|e| panic!("{how}: the restore fails: {e}"));
        assert_eq!(report.restored, u32::from(CONNS) - 1, "{how}: every other connection");
        assert_eq!(port.counters().untracked, 1, "{how}: the connection lost is counted");
        assert_eq!(port.mode(), Mode::Enforce, "{how}");
        port.table().check_invariants().unwrap();
        assert!(
            port.table().get(&vsflow_core::FlowKey::of(&vm_syn(victim))).is_none(),
            "{how}: neither record of the duplicated key is placed"
        );
        for n in 0..CONNS {
            let v = port.classify(&peer_data(n), now + 10);
            if n == victim {
                assert!(matches!(v, Verdict::Block(_)), "{how}: the duplicated connection: {v:?}");
            } else {
                assert_eq!(v, Verdict::Permit, "{how}: connection {n}");
            }
        }
    }
}

#[test]
fn a_key_carried_twice_is_carried_by_neither_record_and_costs_only_that_connection() {
    let now = secs(5_000);
    let state = saved(now);
    assert_eq!(state.flows.len(), usize::from(CONNS));
    let victim = 10u16;
    let at = state
        .flows
        .iter()
        .position(|f| f.key == vsflow_core::FlowKey::of(&vm_syn(victim)))
        .expect("the victim is carried");
    // The twin says something else of the connection (a handshake the VM is still waiting on):
    // written before or after the original, next to it or far from it, or twice more.
    let mut twin = state.flows[at];
    twin.state = FlowState::SynSent;
    for place in [at, at + 1, 0, state.flows.len()] {
        let mut s = state.clone();
        s.flows.insert(place, twin);
        restore_both_ways(&s, victim, now);
    }
    let mut thrice = state.clone();
    thrice.flows.push(twin);
    thrice.flows.insert(0, state.flows[at]);
    restore_both_ways(&thrice, victim, now);
}
