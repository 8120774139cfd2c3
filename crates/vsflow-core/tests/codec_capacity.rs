//! Format 1.1 capacity and restore semantics: the default table fits the cap exactly, 12,000+
//! established connections of one port survive by fingerprint, every cap and rule count gives
//! a valid blob within the cap, restores are idempotent, lenient empty restores empty the
//! port, identities are carried and mismatches counted.

#![allow(
    clippy::many_single_char_names,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "test arithmetic on small known values"
)]

mod common;

use common::*;
use proptest::prelude::*;
use vsflow_core::codec::{self, ApplyConfig, DecodeConfig, Decoded};
use vsflow_core::flow::TableConfig;
use vsflow_core::time::secs;
use vsflow_core::{
    AllowRule, Direction, FlowKey, FlowState, Mode, PacketMeta, Port, PortConfig, PortIdentity,
    PortRange, Prefix, TcpFlags, protocol,
};

const GUID_NAME: &str = "6A1B2C3D-0000-4E5F-8A9B-0C1D2E3F4A5B";

fn port(max_flows: u32, mode: Mode) -> Port {
    let cfg = PortConfig {
        table: TableConfig { max_flows, ..TableConfig::default() },
        initial_mode: mode,
    };
    Port::try_new(PortIdentity::try_from_str(GUID_NAME).unwrap(), cfg).unwrap()
}

/// A deterministic pseudo-random sequence (`SplitMix64`).
struct Mix(u64);
impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The packet of connection `n` from the VM (`10.0.0.2` or `fd00::2`) to a distinct peer,
/// peers and ports random, outbound.
fn conn(n: u32, v6: bool, rng: &mut Mix) -> PacketMeta {
    let r = rng.next();
    let sport = 1024 + u16::try_from(n % 60_000).unwrap();
    let dport = [443u16, 80, 22, 5432][usize::try_from(r % 4).unwrap()];
    if v6 {
        let mut dst = [0u8; 16];
        dst[..8].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0]);
        dst[8..].copy_from_slice(&rng.next().to_le_bytes());
        let mut src = [0u8; 16];
        src[0] = 0xfd;
        src[15] = 2;
        PacketMeta::ipv6(
            Direction::Outbound,
            protocol::TCP,
            src,
            sport,
            dst,
            dport,
            TcpFlags::SYN,
            80,
        )
    } else {
        let [a, b, c, d] = (r >> 32).to_le_bytes()[..4].try_into().unwrap();
        PacketMeta::ipv4(
            Direction::Outbound,
            protocol::TCP,
            [10, 0, 0, 2],
            sport,
            [a | 1, b, c, d],
            dport,
            TcpFlags::SYN,
            60,
        )
    }
}

/// A port with `n` established connections opened by the VM over the last `spread` seconds
/// before `now` (handshake: SYN out, SYN-ACK in, ACK out).
fn busy_port(n: u32, v6: bool, spread: u64, now: u64) -> (Port, Vec<PacketMeta>) {
    let mut p = port(n.max(16), Mode::Enforce);
    let mut rng = Mix(u64::from(n) ^ u64::from(v6));
    let mut conns = Vec::new();
    for i in 0..n {
        let t = now - secs(spread) + secs(spread) * u64::from(i) / u64::from(n);
        let syn = conn(i, v6, &mut rng);
        assert_eq!(p.classify(&syn, t), vsflow_core::Verdict::Permit);
        p.classify(&syn.reply(TcpFlags::SYN | TcpFlags::ACK), t + 1);
        let mut ack = syn;
        ack.tcp_flags = TcpFlags(TcpFlags::ACK);
        p.classify(&ack, t + 2);
        conns.push(ack);
    }
    assert_eq!(p.table().len(), n as usize);
    assert!(p.table().iter().all(|(_, r)| r.state == FlowState::Established));
    (p, conns)
}

fn save(p: &Port, now: u64, cap: usize) -> (Vec<u8>, codec::EncodeSummary) {
    let mut blob = Vec::new();
    let cfg = codec::EncodeConfig { cap, ..encode_config() };
    let s = codec::encode(p, now, &cfg, &mut blob).unwrap();
    assert!(blob.len() <= cap);
    (blob, s)
}

/// The keys of the flows `state` carries exactly.
fn exact_keys(state: &codec::PortState) -> std::collections::HashSet<FlowKey> {
    state.flows.iter().map(|f| f.key).collect()
}

fn state_of(blob: &[u8]) -> codec::PortState {
    match codec::decode(blob, &DecodeConfig::default()).unwrap() {
        Decoded::State(s) => s,
        Decoded::UnsupportedMajor { .. } | Decoded::NoState { .. } => unreachable!(),
    }
}

#[test]
fn the_default_table_of_4096_ipv4_flows_fits_the_default_cap_exactly() {
    let now = secs(100_000);
    // Connections spread over two hours: ages up to 7,200 s (two-byte varints).
    let (p, _) = busy_port(4096, false, 7200, now);
    let (blob, s) = save(&p, now, codec::DEFAULT_CAP);
    assert_eq!((s.flows_written, s.flows_fingerprinted, s.flows_dropped), (4096, 0, 0));
    println!(
        "4096 IPv4 flows: {} bytes, {:.2} bytes per flow",
        blob.len(),
        blob.len() as f64 / 4096.0
    );
    assert_eq!(state_of(&blob).flows.len(), 4096);
}

#[test]
fn at_least_2048_ipv6_flows_fit_the_default_cap_exactly() {
    let now = secs(100_000);
    let (p, _) = busy_port(2048, true, 7200, now);
    let (blob, s) = save(&p, now, codec::DEFAULT_CAP);
    assert_eq!((s.flows_written, s.flows_fingerprinted, s.flows_dropped), (2048, 0, 0));
    println!("2048 IPv6 flows: {} bytes", blob.len());
}

/// Saves, at the default cap, a port with `n` IPv4 connections established over the hour
/// before `secs(100_000)`; returns the connections, the blob and the encoder's summary.
fn save_established(n: u32) -> (Vec<PacketMeta>, Vec<u8>, codec::EncodeSummary) {
    let now = secs(100_000);
    let (p, conns) = busy_port(n, false, 3600, now);
    let (blob, s) = save(&p, now, codec::DEFAULT_CAP);
    println!(
        "{n} established: exact {} fingerprinted {} lost {} ({} bytes)",
        s.flows_written,
        s.flows_fingerprinted,
        s.flows_dropped,
        blob.len()
    );
    (conns, blob, s)
}

/// Restores `blob` on a fresh destination port (enforce mode, no allow rule) and sends one
/// non-SYN packet of every connection in alternating directions through classify; returns
/// (carried exactly, picked up by fingerprint, blocked).
fn migrate_and_replay(blob: &[u8], conns: &[PacketMeta], bound: u32) -> (usize, usize, usize) {
    let state = state_of(blob);
    let mut dst = port(bound, Mode::Enforce);
    let now = secs(7);
    codec::apply(&mut dst, &state, now).unwrap();
    let exact = exact_keys(&state);
    let (mut e, mut f, mut lost) = (0, 0, 0);
    for (i, c) in conns.iter().enumerate() {
        let pkt = if i % 2 == 0 { *c } else { c.reply(TcpFlags::ACK) };
        let known = dst.table().get(&FlowKey::of(c)).is_some();
        assert_eq!(known, exact.contains(&FlowKey::of(c)));
        let picked_before = dst.counters().fingerprint_pickups;
        let verdict = dst.classify(&pkt, now + secs(1));
        // Outbound packets of the VM are always permitted; what matters is that the flow is
        // then tracked as an established connection whose inbound traffic passes.
        let back = dst.classify(&pkt.reply(TcpFlags::ACK), now + secs(1));
        let passes =
            verdict == vsflow_core::Verdict::Permit && back == vsflow_core::Verdict::Permit;
        let established =
            dst.table().get(&FlowKey::of(c)).is_some_and(|r| r.state == FlowState::Established);
        if known {
            assert!(passes && established, "an exact flow is blocked");
            e += 1;
        } else if dst.counters().fingerprint_pickups > picked_before {
            assert!(passes && established, "a picked-up flow is blocked");
            f += 1;
        } else {
            lost += 1;
        }
    }
    (e, f, lost)
}

#[test]
fn twenty_thousand_established_connections_of_one_port_survive_within_the_default_cap() {
    let n = 20_000;
    let (conns, blob, s) = save_established(n);
    assert_eq!(s.flows_dropped, 0);
    assert_eq!(s.flows_written + s.flows_fingerprinted, n);
    assert!(s.flows_written > 0, "the budget left over from fingerprints buys exact records");
    let (e, f, lost) = migrate_and_replay(&blob, &conns, n);
    assert_eq!((e + f, lost), (n as usize, 0));
    assert_eq!(e, s.flows_written as usize);
}

#[test]
fn past_the_fingerprint_capacity_the_most_recent_connections_are_kept_and_the_rest_counted() {
    let n = 30_000;
    let (conns, blob, s) = save_established(n);
    assert!(s.flows_dropped > 0);
    assert_eq!(s.flows_written + s.flows_fingerprinted + s.flows_dropped, n);
    let (e, f, lost) = migrate_and_replay(&blob, &conns, n);
    assert_eq!(lost, s.flows_dropped as usize);
    assert_eq!(e + f, (s.flows_written + s.flows_fingerprinted) as usize);
    // The connections lost are the least recently active (busy_port opens them in order).
    let state = state_of(&blob);
    let exact = exact_keys(&state);
    let carried = |c: &PacketMeta| {
        exact.contains(&FlowKey::of(c)) || state.fingerprints.contains(&FlowKey::of(c))
    };
    assert!(conns[conns.len() - 1000..].iter().all(carried));
    assert!(!conns[..100].iter().all(carried));
}

fn rules(n: usize) -> Vec<AllowRule> {
    (0..n)
        .map(|i| AllowRule {
            protocol: Some(protocol::TCP),
            local_ports: PortRange::single(u16::try_from(i).unwrap() + 1),
            remote: Prefix::v4([10, u8::try_from(i % 256).unwrap(), 0, 0], 16).unwrap(),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Issue 9: for every configured cap and rule count, the blob stays within the cap and
    /// decodes; what does not fit is counted, never a broken blob.
    #[test]
    fn every_cap_and_rule_count_gives_a_valid_blob_within_the_cap(
        cap in 1024usize..=65_000,
        n_rules in 0usize..=256,
        n_flows in 0u32..3000,
        nic in any::<bool>(),
    ) {
        let now = secs(10_000);
        let (mut p, _) = busy_port(n_flows, n_flows % 3 == 0, 600, now);
        p.replace_rules(&rules(n_rules)).unwrap();
        if nic {
            p.set_nic_identity(Some(PortIdentity::try_from_str("Network Adapter 2").unwrap()));
        }
        let mut blob = vec![0xEE; 7];
        let cfg = codec::EncodeConfig { cap, ..encode_config() };
        let s = codec::encode(&p, now, &cfg, &mut blob).unwrap();
        prop_assert!(blob.len() <= cap);
        prop_assert_eq!(s.len, blob.len());
        let st = state_of(&blob);
        prop_assert_eq!(st.rules.rules().len() + s.rules_dropped as usize, n_rules);
        prop_assert_eq!(st.save_info.rules_dropped, s.rules_dropped);
        prop_assert_eq!(st.flows.len() as u32, s.flows_written);
        prop_assert_eq!(st.save_info.flows_in_table, n_flows);
        prop_assert_eq!(s.flows_written + s.flows_fingerprinted + s.flows_dropped, n_flows);
        prop_assert_eq!(st.mode, Mode::Enforce);
        if s.rules_dropped > 0 {
            // Rules come before flows: what is left (under one 24-byte rule) holds at most
            // a few fingerprints.
            prop_assert_eq!(s.flows_written, 0, "rules before flows");
            prop_assert!(s.flows_fingerprinted < 24, "rules before flows");
        }
    }
}

#[test]
fn even_the_largest_identities_and_every_rule_save_a_valid_blob_at_the_smallest_cap() {
    let now = secs(10_000);
    let (mut p, _) = busy_port(100, false, 60, now);
    p.replace_rules(&rules(256)).unwrap();
    let long: String = std::iter::repeat_n('n', 256).collect();
    p.set_nic_identity(Some(PortIdentity::try_from_str(&long).unwrap()));
    let (blob, s) = save(&p, now, 1024);
    assert!(s.rules_dropped > 0);
    assert_eq!(s.flows_written, 0);
    assert_eq!(s.flows_dropped + s.flows_fingerprinted, 100);
    let st = state_of(&blob);
    assert_eq!(st.mode, Mode::Enforce);
    assert_eq!(st.save_info.flows_dropped, s.flows_dropped);
    // A long port name too: the NIC name gives way first, then rules.
    let mut q =
        Port::try_new(PortIdentity::try_from_str(&long).unwrap(), PortConfig::default()).unwrap();
    q.set_nic_identity(Some(PortIdentity::try_from_str(&long).unwrap()));
    q.replace_rules(&rules(256)).unwrap();
    let (blob, _) = save(&q, now, 1024);
    assert_eq!(state_of(&blob).nic, None);
    // Below any valid blob: an error, and nothing written.
    let mut out = vec![1u8];
    let cfg = codec::EncodeConfig { cap: 200, ..encode_config() };
    assert_eq!(codec::encode(&q, now, &cfg, &mut out), Err(vsflow_core::Error::CapTooSmall));
    assert!(out.is_empty());
}

#[test]
fn restoring_the_same_blob_twice_does_not_double_counters() {
    let now = secs(1000);
    let (p, _) = busy_port(300, false, 100, now);
    let (blob, _) = save(&p, now, codec::DEFAULT_CAP);
    let state = state_of(&blob);
    let mut dst = port(4096, Mode::Monitor);
    let first = codec::apply(&mut dst, &state, secs(5)).unwrap();
    assert!(!first.repeated);
    let counters = *dst.counters();
    assert_eq!(counters.restores, 1);
    assert_eq!(counters.flows_created, p.counters().flows_created);
    let again = codec::apply(&mut dst, &state_of(&blob), secs(6)).unwrap();
    assert!(again.repeated);
    assert_eq!(*dst.counters(), counters);
    assert_eq!(dst.table().len(), 300);
    // Another blob of the same port is a new restore.
    let (blob2, _) = save(&p, now + 1, codec::DEFAULT_CAP);
    assert!(!codec::apply(&mut dst, &state_of(&blob2), secs(7)).unwrap().repeated);
    assert_eq!(dst.counters().restores, 2);
}

#[test]
fn an_unreadable_restore_keeps_the_flows_seen_locally_and_arms_no_fingerprints() {
    let mut dst = port(4096, Mode::Enforce);
    let (p, _) = busy_port(10, false, 10, secs(100));
    let (blob, _) = save(&p, secs(100), codec::DEFAULT_CAP);
    codec::apply(&mut dst, &state_of(&blob), secs(1)).unwrap();
    // A flow seen locally before the second, unreadable restore.
    let local = PacketMeta::ipv4(
        Direction::Outbound,
        protocol::UDP,
        [10, 0, 0, 2],
        5,
        [9, 9, 9, 9],
        53,
        0,
        60,
    );
    dst.classify(&local, secs(2));
    assert_eq!(dst.table().len(), 11);
    codec::apply_degraded(&mut dst, None);
    assert_eq!(dst.table().len(), 11, "nothing carried, nothing of this host's lost");
    assert_eq!(dst.mode(), Mode::Enforce, "the earlier restore's mode is kept");
    assert!(!dst.pickup().is_armed(secs(2)));
    assert_eq!(dst.counters().restores_empty, 1);
    dst.table().check_invariants().unwrap();
}

#[test]
fn identities_travel_and_mismatches_are_counted_but_restore() {
    let now = secs(100);
    let (mut p, _) = busy_port(5, false, 10, now);
    let nic = PortIdentity::try_from_str("Network Adapter").unwrap();
    p.set_nic_identity(Some(nic));
    let (blob, _) = save(&p, now, codec::DEFAULT_CAP);
    let state = state_of(&blob);
    assert_eq!(state.nic, Some(nic));
    assert_eq!(state.identity, PortIdentity::try_from_str(GUID_NAME).unwrap());
    // Same port and NIC names: no mismatch; the NIC name is learnt if unknown.
    let mut same = port(64, Mode::Monitor);
    assert!(!codec::apply(&mut same, &state, 1).unwrap().identity_mismatch);
    assert_eq!(same.nic_identity(), Some(&nic));
    // Another NIC name: restored (keyed by the destination's port id) and counted.
    let mut other = port(64, Mode::Monitor);
    other.set_nic_identity(Some(PortIdentity::try_from_str("Other Adapter").unwrap()));
    let r = codec::apply(&mut other, &state, 1).unwrap();
    assert!(r.identity_mismatch);
    assert_eq!(r.restored, 5);
    assert_eq!(other.counters().identity_mismatches, 1);
    // Another port name.
    let mut renamed =
        Port::try_new(PortIdentity::try_from_str("x").unwrap(), PortConfig::default()).unwrap();
    assert!(codec::apply(&mut renamed, &state, 1).unwrap().identity_mismatch);
}

#[test]
fn window_flows_merge_with_the_blob_and_fingerprinted_ones_become_carried() {
    let now = secs(100_000);
    let n = 15_000;
    let (p, conns) = busy_port(n, false, 3600, now);
    let (blob, s) = save(&p, now, codec::DEFAULT_CAP);
    let state = state_of(&blob);
    let exact = exact_keys(&state);
    let fp_conn = conns.iter().find(|c| !exact.contains(&FlowKey::of(c))).unwrap();
    let exact_conn = conns.iter().find(|c| exact.contains(&FlowKey::of(c))).unwrap();
    // The destination tracks in monitor mode before the restore; the peer speaks first on
    // both connections, and the VM answers on the fingerprinted one.
    let mut dst = port(n, Mode::Monitor);
    let t = secs(3);
    dst.classify(&fp_conn.reply(TcpFlags::ACK), t);
    dst.classify(fp_conn, t);
    dst.classify(&exact_conn.reply(TcpFlags::ACK), t);
    // A third fingerprinted connection only its peer spoke on: that proves nothing (issue
    // 16), so it is not resumed at the restore but picked up on its next segment.
    let silent = conns.iter().rev().filter(|c| !exact.contains(&FlowKey::of(c))).nth(1).unwrap();
    dst.classify(&silent.reply(TcpFlags::ACK), t);
    let before = dst.table().get(&FlowKey::of(exact_conn)).unwrap().packets;
    let r = codec::apply_with(&mut dst, &state, secs(4), &ApplyConfig::default()).unwrap();
    assert_eq!(r.picked_up_local, 1);
    assert!(dst.table().get(&FlowKey::of(silent)).is_none(), "a peer-only window flow resumed");
    assert_eq!(r.restored, s.flows_written);
    let fp = dst.table().get(&FlowKey::of(fp_conn)).unwrap();
    assert_eq!(fp.admission, vsflow_core::flow::Admission::Vm, "carried: allowed both ways");
    let ex = dst.table().get(&FlowKey::of(exact_conn)).unwrap();
    assert_eq!(ex.opener, vsflow_core::Opener::Vm, "the blob's history wins");
    assert_eq!(ex.packets, before, "over the cap no per-flow counters travel: the window's");
    assert_eq!(ex.last_seen, t, "the window's later activity");
    assert_eq!(dst.counters().fingerprint_pickups, 1);
    // The Enforce port picks the silent one up on its next segment; the VM confirms it.
    assert_eq!(
        dst.classify(&silent.reply(TcpFlags::ACK), secs(4) + 1),
        vsflow_core::Verdict::Permit
    );
    assert_eq!(dst.classify(silent, secs(4) + 2), vsflow_core::Verdict::Permit);
    assert_eq!(
        dst.table().get(&FlowKey::of(silent)).unwrap().admission,
        vsflow_core::flow::Admission::Vm
    );
    // The fingerprint used by the window's flow admits nothing else.
    let mut pickup = dst.pickup().clone();
    assert!(!pickup.take(&FlowKey::of(fp_conn), secs(5)));
    // And after the window nothing matches at all.
    let other = conns.iter().rev().find(|c| !exact.contains(&FlowKey::of(c))).unwrap();
    assert!(pickup.clone().take(&FlowKey::of(other), secs(5)));
    assert!(
        !pickup.take(&FlowKey::of(other), secs(4) + codec::ApplyConfig::default().pickup_window)
    );
}
