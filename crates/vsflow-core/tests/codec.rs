//! Runtime-state codec: round trips, rejection of every damaged blob, the size cap, version
//! rules, and all-or-nothing apply.

mod common;

use common::*;
use proptest::prelude::*;
use vsflow_core::codec::{self, DecodeConfig, DecodeError, Decoded, UnknownMajor, format};
use vsflow_core::flow::{TableConfig, TimeoutClass};
use vsflow_core::{
    Direction, FlowKey, FlowState, Mode, PacketMeta, Port, PortConfig, PortIdentity, protocol,
    time::secs,
};

fn port_with_traffic(flows: u16, now: u64) -> Port {
    let cfg = PortConfig {
        table: TableConfig { max_flows: 4096, ..TableConfig::default() },
        initial_mode: Mode::Enforce,
    };
    let mut p = Port::try_new(PortIdentity::try_from_str("port-a").unwrap(), cfg).unwrap();
    for n in 0..flows {
        // Two seconds apart: ages travel in whole seconds.
        let t = now - u64::from(flows - n) * 2 * vsflow_core::TICKS_PER_SECOND;
        let syn = PacketMeta::ipv4(
            Direction::Outbound,
            protocol::TCP,
            [10, 0, 0, 2],
            1024 + n,
            [192, 0, 2, 9],
            443,
            0x02,
            60,
        );
        p.classify(&syn, t);
        if n % 2 == 0 {
            p.classify(&syn.reply(0x12), t + 1);
        }
    }
    p
}

#[test]
fn live_port_survives_encode_decode_apply_with_rebased_times() {
    let src_now = secs(5000);
    let src = port_with_traffic(200, src_now);
    let mut blob = Vec::new();
    let summary = codec::encode(&src, src_now, &encode_config(), &mut blob).unwrap();
    assert_eq!((summary.flows_written, summary.flows_dropped, summary.len), (200, 0, blob.len()));

    let state = decode_state(&blob).unwrap();
    let dst_now = secs(100_042); // another host, another tick base
    let mut dst =
        Port::try_new(PortIdentity::try_from_str("port-a").unwrap(), PortConfig::default())
            .unwrap();
    let report = codec::apply(&mut dst, &state, dst_now).unwrap();
    // Flows idle past their timeout at the save (handshakes older than 60 s) admit nothing
    // and are not restored; every other flow is.
    let timeouts = dst.table().config().timeouts;
    let live = |(k, r): &(&vsflow_core::FlowKey, &vsflow_core::FlowRecord)| {
        !timeouts.expired(k.protocol, r.state, src_now - r.last_seen)
    };
    let carried = src.table().iter().filter(live).count();
    assert!(carried > 100 && carried < 200, "{carried}");
    assert_eq!(report.restored as usize, carried);
    assert_eq!(dst.counters().expired, 200 - carried as u64);
    assert_eq!(dst.mode(), Mode::Enforce);
    assert_eq!(dst.table().len(), carried);
    for (k, r) in src.table().iter().filter(live) {
        let d = dst.table().get(k).expect("flow carried");
        assert_eq!(
            (d.state, d.opener, d.admission, d.packets, d.bytes),
            (r.state, r.opener, r.admission, r.packets, r.bytes)
        );
        // Ages travel coarse: last activity in whole seconds (read as the oldest age the
        // second stands for: never younger on the destination), duration in whole minutes.
        let sec = vsflow_core::TICKS_PER_SECOND;
        let last = (src_now - r.last_seen) / sec * sec + sec - 1;
        let dur = (r.last_seen - r.first_seen) / (60 * sec) * (60 * sec);
        assert_eq!(dst_now - d.last_seen, last, "age preserved to the second");
        assert_eq!(dst_now - d.first_seen, last + dur);
    }
    dst.table().check_invariants().unwrap();
    assert_eq!(dst.counters().restores, 1);
    assert_eq!(dst.counters().restored_flows, carried as u64);
    assert_eq!(dst.counters().flows_created, src.counters().flows_created);
}

#[test]
fn restored_flows_keep_their_recency_order_for_eviction() {
    let now = secs(100);
    let src = port_with_traffic(25, now);
    let mut blob = Vec::new();
    codec::encode(&src, now, &encode_config(), &mut blob).unwrap();
    let state = decode_state(&blob).unwrap();
    let cfg = PortConfig {
        table: TableConfig { max_flows: 25, ..TableConfig::default() },
        initial_mode: Mode::Monitor,
    };
    let mut dst = Port::try_new(PortIdentity::try_from_str("port-a").unwrap(), cfg).unwrap();
    codec::apply(&mut dst, &state, now).unwrap();
    // The destination is full and nothing is idle: the next new flow evicts the least
    // recently used flow of the source that is not an established connection, whatever its
    // class (an unestablished flow never displaces an established one).
    let oldest = src
        .table()
        .iter()
        .filter(|(_, r)| !r.is_established())
        .min_by_key(|(_, r)| r.last_seen)
        .map(|(k, _)| *k)
        .unwrap();
    let newcomer = PacketMeta::ipv4(
        Direction::Outbound,
        protocol::UDP,
        [10, 0, 0, 2],
        9,
        [192, 0, 2, 9],
        9,
        0,
        60,
    );
    dst.classify(&newcomer, now + 1);
    assert!(dst.table().get(&oldest).is_none());
    assert_eq!(dst.counters().evicted_lru, 1);
    assert_eq!(dst.table().len(), 25);
}

#[test]
fn over_the_cap_fingerprints_established_and_keeps_the_most_valuable_exactly() {
    let (state, cap) = fixture_capped();
    let mut blob = Vec::new();
    let cfg = codec::EncodeConfig { cap, ..encode_config() };
    let summary = codec::encode_state(&state, &cfg, &mut blob).unwrap();
    assert!(blob.len() <= cap);
    assert!(summary.flows_dropped > 0 && summary.flows_fingerprinted > 0);
    let decoded = decode_state(&blob).unwrap();
    assert_eq!(decoded.save_info.flows_dropped, summary.flows_dropped);
    assert_eq!(decoded.save_info.flows_fingerprinted, summary.flows_fingerprinted);
    assert_eq!(decoded.save_info.flows_in_table, 300);
    assert_eq!(u32::try_from(decoded.flows.len()).unwrap(), summary.flows_written);
    assert_eq!(summary.flows_written + summary.flows_fingerprinted + summary.flows_dropped, 300);
    // Every established connection is carried, exactly or by fingerprint; only other flows
    // are lost, and none of them is exact while an established one is only a fingerprint
    // unless the established one's exact record would not have fit either.
    let kept: std::collections::HashSet<FlowKey> = decoded.flows.iter().map(|f| f.key).collect();
    for f in &state.flows {
        if f.state == FlowState::Established {
            assert!(kept.contains(&f.key) || decoded.fingerprints.contains(&f.key), "{f:?}");
        }
    }
    let lost_established = state
        .flows
        .iter()
        .filter(|f| f.state == FlowState::Established)
        .filter(|f| !kept.contains(&f.key) && !decoded.fingerprints.contains(&f.key))
        .count();
    assert_eq!(lost_established, 0);
    assert_eq!(
        u32::try_from(state.flows.iter().filter(|f| f.state == FlowState::Established).count())
            .unwrap(),
        u32::try_from(decoded.flows.iter().filter(|f| f.state == FlowState::Established).count())
            .unwrap()
            + summary.flows_fingerprinted
    );
}

#[test]
fn a_cap_too_small_for_the_fixed_records_is_an_error() {
    let s = fixture_enforce_rules();
    let mut out = vec![1, 2, 3];
    let cfg = codec::EncodeConfig { cap: 100, ..encode_config() };
    assert_eq!(codec::encode_state(&s, &cfg, &mut out), Err(vsflow_core::Error::CapTooSmall));
    assert!(out.is_empty());
}

#[test]
fn every_truncation_of_a_valid_blob_is_rejected() {
    let blob = encode_state(&fixture_enforce_rules());
    for n in 0..blob.len() {
        assert!(decode_state(&blob[..n]).is_err(), "prefix of {n} bytes accepted");
    }
    let mut longer = blob;
    longer.push(0);
    assert!(matches!(decode_state(&longer), Err(DecodeError::LengthMismatch { .. })));
}

#[test]
fn every_single_byte_change_of_a_valid_blob_is_rejected_exhaustively() {
    let blob = encode_state(&fixture_enforce_rules());
    let mut damaged = blob.clone();
    for i in 0..blob.len() {
        for x in 1..=255u8 {
            damaged[i] = blob[i] ^ x;
            assert!(decode_state(&damaged).is_err(), "byte {i} ^ {x:#x} accepted");
        }
        damaged[i] = blob[i];
    }
}

#[test]
fn unknown_major_is_an_error_when_strict_and_empty_when_lenient() {
    let blob = with_major(&encode_state(&fixture_monitor_mixed()), 2);
    let minor = format::MINOR;
    assert_eq!(decode_state(&blob), Err(DecodeError::UnsupportedMajor { major: 2, minor }));
    let lenient = DecodeConfig { unknown_major: UnknownMajor::Lenient, ..DecodeConfig::default() };
    assert_eq!(codec::decode(&blob, &lenient), Ok(Decoded::UnsupportedMajor { major: 2, minor }));
    // A damaged blob of an unknown major is still rejected, even when lenient.
    let mut bad = blob;
    bad[20] ^= 1;
    assert!(matches!(codec::decode(&bad, &lenient), Err(DecodeError::BadChecksum { .. })));
}

#[test]
fn a_later_minor_version_with_longer_entries_and_new_records_decodes_to_the_same_state() {
    let s = fixture_enforce_rules();
    let blob = encode_state(&s);
    let future = as_future_minor(&blob, 3, 12);
    let d = decode_state(&future).unwrap();
    assert_eq!(d.minor, 3);
    assert_eq!(d.skipped_records, 1);
    let mut expect = as_decoded(s, has_flow_counters(&blob));
    expect.minor = 3;
    expect.skipped_records = 1;
    assert_eq!(d, expect);
}

#[test]
fn provider_mismatch_is_rejected_when_checked() {
    let blob = encode_state(&fixture_monitor_mixed());
    let other = vsflow_core::Guid::from_parts(1, 2, 3, [4; 8]);
    let cfg = DecodeConfig { expected_provider: Some(other), ..DecodeConfig::default() };
    assert_eq!(codec::decode(&blob, &cfg), Err(DecodeError::ProviderMismatch));
    let cfg = DecodeConfig { expected_provider: Some(PROVIDER), ..DecodeConfig::default() };
    assert!(codec::decode(&blob, &cfg).is_ok());
}

#[test]
fn semantic_damage_behind_a_valid_crc_is_named_precisely() {
    let blob = encode_state(&fixture_enforce_rules());
    let recs = records(&blob);
    let v4 = recs.iter().find(|r| r.kind == format::rec::COMPACT_V4).unwrap();
    // Kind bits of the first IPv4 flow's tag: 0 is no state.
    let mut b = blob.clone();
    b[v4.payload.0 + format::compact::HEADER_LEN] &= !format::compact::KIND_MASK;
    let err = decode_state(&reseal(b)).unwrap_err();
    assert_eq!(
        err,
        DecodeError::InvalidField {
            kind: format::rec::COMPACT_V4,
            entry: 0,
            field: "state",
            value: 0
        }
    );
    // A remote index past the dictionary.
    let mut b = blob.clone();
    let at = v4.payload.0 + format::compact::HEADER_LEN;
    b[at] &= !format::compact::REMOTE_LITERAL;
    assert!(matches!(
        decode_state(&reseal(b)),
        Err(DecodeError::InvalidField { field: "remote address index", .. }
            | DecodeError::BadRecordLength { .. })
    ));
    // Duplicate the mode record.
    let mode = recs.iter().find(|r| r.kind == format::rec::MODE).unwrap();
    let mut b = blob[..blob.len() - 4].to_vec();
    b.extend_from_slice(&blob[mode.start..mode.payload.1]);
    b[32..36].copy_from_slice(&(le32(&blob, 32) + 1).to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    assert_eq!(
        decode_state(&reseal(b)),
        Err(DecodeError::DuplicateRecord { kind: format::rec::MODE })
    );
    // Drop a required record by lowering the count: the bytes behind it are then trailing.
    let mut b = blob.clone();
    b[32..36].copy_from_slice(&(le32(&blob, 32) - 1).to_le_bytes());
    assert!(matches!(decode_state(&reseal(b)), Err(DecodeError::TrailingBytes { .. })));
    // Unknown header flag.
    let mut b = blob;
    b[10] = 0x80;
    assert_eq!(decode_state(&reseal(b)), Err(DecodeError::UnknownFlags { flags: 0x80 }));
}

/// The apply inserts a blob already listed oldest first straight from the blob, and any other
/// order through a sort: both give the same table (records, each class's LRU order), the same
/// expired count, and refuse a duplicate leaving the port unchanged. (Slot numbers are
/// placement order, the blob's since the flows are staged as read: no behaviour.)
#[test]
fn apply_in_blob_order_equals_apply_through_the_sort() {
    let now = secs(1000);
    let src = port_with_traffic(40, now);
    let mut blob = Vec::new();
    codec::encode(&src, now, &encode_config(), &mut blob).unwrap();
    let mut oldest_first = decode_state(&blob).unwrap();
    // One flow idle for a day: expired at the save, never restored, in both orders.
    oldest_first.flows[7].last_age = 86_400 * vsflow_core::TICKS_PER_SECOND;
    oldest_first.flows[7].first_age = oldest_first.flows[7].last_age;
    // Stable: equal ages keep the blob's order, as the apply's sort does.
    oldest_first.flows.sort_by_key(|f| core::cmp::Reverse(f.last_age));
    let mut reversed = oldest_first.clone();
    reversed.flows.reverse();
    // Equal ages break ties by blob position in the sort: reverse each run of equal ages back.
    let mut start = 0;
    while start < reversed.flows.len() {
        let age = reversed.flows[start].last_age;
        let end = start + reversed.flows[start..].iter().take_while(|f| f.last_age == age).count();
        reversed.flows[start..end].reverse();
        start = end;
    }
    assert_ne!(oldest_first.flows, reversed.flows);
    let restore = |state: &codec::PortState| {
        let mut dst = Port::try_new(
            PortIdentity::try_from_str("port-a").unwrap(),
            // Room for every flow of the blob: the newcomers below fill it, then evict.
            PortConfig {
                table: TableConfig { max_flows: 40, ..TableConfig::default() },
                initial_mode: Mode::Monitor,
            },
        )
        .unwrap();
        let report = codec::apply(&mut dst, state, now).unwrap();
        dst.table().check_invariants().unwrap();
        let table: Vec<_> = TimeoutClass::ALL
            .iter()
            .flat_map(|&c| dst.table().iter_lru(c).map(|(k, r)| (*k, *r)))
            .collect();
        (report, table, dst.counters().expired, dst)
    };
    let (report_a, table_a, expired_a, mut a) = restore(&oldest_first);
    let (report_b, table_b, expired_b, mut b) = restore(&reversed);
    assert_eq!((report_a, expired_a), (report_b, expired_b));
    // The day-idle flow and the half-open ones past their (shorter) timeout.
    assert!(expired_a >= 1);
    assert_eq!(u64::from(report_a.restored) + expired_a, 40);
    assert_eq!(table_a, table_b);
    // The same LRU order: filled to the bound, both evict the same flows in the same order.
    for n in 0..40u16 {
        let newcomer = PacketMeta::ipv4(
            Direction::Outbound,
            protocol::UDP,
            [10, 0, 0, 3],
            n,
            [192, 0, 2, 9],
            9,
            0,
            60,
        );
        a.classify(&newcomer, now + 1);
        b.classify(&newcomer, now + 1);
    }
    assert!(a.counters().evicted_lru > 0);
    let lru = |p: &Port| -> Vec<_> {
        TimeoutClass::ALL.iter().flat_map(|&c| p.table().iter_lru(c).map(|(k, _)| *k)).collect()
    };
    let (a_now, b_now) = (lru(&a), lru(&b));
    assert_eq!(a_now, b_now);
    // A duplicate in a blob listed oldest first (next to its twin, same age): neither record
    // is restored, the rest are (faults s7; it was the apply's error, every flow lost).
    let mut duplicated = oldest_first.clone();
    duplicated.flows.insert(3, duplicated.flows[3]);
    let twin = duplicated.flows[3].key;
    let (report, _, _, p) = restore(&duplicated);
    assert!(p.table().get(&twin).is_none());
    let mut without = oldest_first.clone();
    without.flows.remove(3);
    let (expected, _, _, q) = restore(&without);
    assert_eq!(report, expected);
    assert_eq!(p.counters().untracked, q.counters().untracked + 1);
}

/// A blob that carries a key twice restores everything else, with its policy: the
/// duplicated connection is carried by neither record (faults s7; it was the apply's error,
/// the port left as it was, every carried flow lost).
#[test]
fn apply_of_a_blob_with_a_duplicate_flow_restores_the_others_and_its_policy() {
    let mut s = fixture_enforce_rules();
    let twin = s.flows[0];
    s.flows.push(twin);
    let decoded = decode_state(&encode_state(&s)).unwrap();
    let now = secs(10);
    let mut p = port_with_traffic(5, now);
    let report = codec::apply(&mut p, &decoded, now).unwrap();
    assert!(p.table().get(&twin.key).is_none());
    assert!(report.restored > 0);
    assert_eq!((p.mode(), p.rules().rules()), (s.mode, s.rules.rules()));
    p.table().check_invariants().unwrap();
}

#[test]
fn apply_beyond_the_destination_bound_keeps_the_most_valuable() {
    let now = secs(1000);
    let (state, _) = fixture_capped();
    let cfg = PortConfig {
        table: TableConfig { max_flows: 100, ..TableConfig::default() },
        initial_mode: Mode::Monitor,
    };
    let mut p = Port::try_new(PortIdentity::try_from_str("x").unwrap(), cfg).unwrap();
    let report = codec::apply(&mut p, &state, now).unwrap();
    assert_eq!((report.restored, report.dropped), (100, 200));
    assert!(
        p.table().iter().all(|(_, r)| r.state == FlowState::Established),
        "the 100 established flows win"
    );
    assert_eq!(p.counters().restore_dropped, state.counters.restore_dropped + 200);
    p.table().check_invariants().unwrap();
}

#[test]
fn apply_keeps_flows_the_destination_saw_before_the_restore() {
    let now = secs(50);
    let state = decode_state(&encode_state(&fixture_enforce_rules())).unwrap();
    let mut p =
        Port::try_new(PortIdentity::try_from_str("x").unwrap(), PortConfig::default()).unwrap();
    let local = PacketMeta::ipv4(
        Direction::Outbound,
        protocol::UDP,
        [10, 9, 9, 9],
        1,
        [8, 8, 4, 4],
        53,
        0,
        80,
    );
    p.classify(&local, now - 5);
    let report = codec::apply(&mut p, &state, now).unwrap();
    assert_eq!((report.restored, report.kept_local), (4, 1));
    assert!(p.table().get(&FlowKey::of(&local)).is_some());
    // Versions are this host's: the carried rules (version 7) install as a later version.
    assert_eq!(p.rules().version(), 8);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Issue 18 item 4: a port's encoder keeps its working memory across saves; what it writes
    /// never depends on what it encoded before (each blob is the one a fresh encode writes),
    /// whether the flows fit, need ranking and fingerprints, or are fewer than last time.
    #[test]
    fn a_reused_encoder_writes_what_a_fresh_encode_writes(
        states in proptest::collection::vec((arb_state(60), 0usize..3), 1..5),
    ) {
        let mut encoder = codec::Encoder::new();
        let mut reused = Vec::new();
        for (s, c) in &states {
            let cap = [1_200, 2_500, codec::DEFAULT_CAP][*c];
            let config = codec::EncodeConfig { cap, ..encode_config() };
            let mut fresh = Vec::new();
            let a = codec::encode_state(s, &config, &mut fresh);
            let b = encoder.encode_state(s, &config, &mut reused);
            prop_assert_eq!(&a, &b);
            if a.is_ok() {
                prop_assert_eq!(&fresh, &reused);
            }
        }
    }

    #[test]
    fn decode_of_encode_is_identity(s in arb_state(40)) {
        let blob = encode_state(&s);
        prop_assert!(blob.len() <= codec::DEFAULT_CAP);
        let counters = has_flow_counters(&blob);
        prop_assert_eq!(decode_state(&blob).unwrap(), as_decoded(s, counters));
    }

    #[test]
    fn any_single_byte_change_is_rejected(s in arb_state(12), pos in any::<prop::sample::Index>(), x in 1u8..=255) {
        let mut blob = encode_state(&s);
        let i = pos.index(blob.len());
        blob[i] ^= x;
        prop_assert!(decode_state(&blob).is_err());
    }

    #[test]
    fn any_truncation_is_rejected(s in arb_state(12), cut in any::<prop::sample::Index>()) {
        let blob = encode_state(&s);
        let n = cut.index(blob.len());
        prop_assert!(decode_state(&blob[..n]).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = codec::decode(&bytes, &DecodeConfig::default());
        let lenient = DecodeConfig { unknown_major: UnknownMajor::Lenient, ..DecodeConfig::default() };
        let _ = codec::decode(&bytes, &lenient);
    }

    #[test]
    fn resealed_mutations_never_panic_and_decoded_states_apply_or_fail_cleanly(
        s in arb_state(8),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        // Fixing length and CRC after the edit drives the mutation past the checksum into
        // every field check.
        let mut blob = encode_state(&s);
        for (pos, v) in edits {
            let i = pos.index(blob.len());
            blob[i] = v;
        }
        let blob = reseal(blob);
        if let Ok(Decoded::State(st)) = codec::decode(&blob, &DecodeConfig::default()) {
            let mut p = Port::try_new(PortIdentity::try_from_str("m").unwrap(), PortConfig::default()).unwrap();
            match codec::apply(&mut p, &st, 12345) {
                Ok(_) => p.table().check_invariants().unwrap(),
                Err(e) => prop_assert!(matches!(e, codec::ApplyError::DuplicateFlow { .. }), "unexpected {:?}", e),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Review (rv-codec) of the restore's bulk insert (`FlowTable::reserve` and
    /// `insert_unique`): a second restore into a port that already holds a first restore's
    /// flows (the window lookup, the merge, the kept flows and the fallback past the reserved
    /// room all run), under a small bound, with duplicate keys injected anywhere in the blob.
    /// A blob without duplicates always applies; an apply that fails changes nothing; an apply
    /// that succeeds leaves a consistent table within its bound holding every flow it reports.
    #[test]
    fn a_restore_over_restored_flows_with_duplicates_applies_cleanly_or_changes_nothing(
        first in arb_state(24),
        second in arb_state(24),
        shared in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        dups in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..3),
        bound in 1u32..40,
    ) {
        let cfg = PortConfig {
            table: TableConfig { max_flows: bound, initial_capacity: 1, ..TableConfig::default() },
            initial_mode: Mode::Monitor,
        };
        let now = secs(100_000);
        let mut p = Port::try_new(PortIdentity::try_from_str("r").unwrap(), cfg).unwrap();
        let mut first = first;
        let mut seen = std::collections::BTreeSet::new();
        first.flows.retain(|f| seen.insert(f.key));
        codec::apply(&mut p, &first, now).unwrap();
        p.table().check_invariants().unwrap();
        // The second blob shares keys with the first (merged with the port's flows).
        let mut second = second;
        if !first.flows.is_empty() {
            for i in &shared {
                let mut f = second.flows.first().copied().unwrap_or(first.flows[0]);
                f.key = first.flows[i.index(first.flows.len())].key;
                second.flows.push(f);
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        second.flows.retain(|f| seen.insert(f.key));
        let distinct = dups.is_empty() || second.flows.is_empty();
        if !second.flows.is_empty() {
            for (a, b) in &dups {
                let f = second.flows[a.index(second.flows.len())];
                let at = b.index(second.flows.len() + 1);
                second.flows.insert(at, f);
            }
        }
        let before: Vec<_> = p.table().iter().map(|(k, r)| (*k, *r)).collect();
        let (mode, counters, rules) = (p.mode(), *p.counters(), p.rules().clone());
        match codec::apply(&mut p, &second, now + secs(1)) {
            Ok(report) => {
                p.table().check_invariants().unwrap();
                prop_assert!(p.table().len() <= bound as usize);
                prop_assert_eq!(p.table().len(), (report.restored + report.kept_local) as usize);
            }
            Err(e) => {
                prop_assert!(!distinct, "a blob without duplicates refused: {:?}", e);
                prop_assert!(matches!(e, codec::ApplyError::DuplicateFlow { .. }), "{:?}", e);
                let after: Vec<_> = p.table().iter().map(|(k, r)| (*k, *r)).collect();
                prop_assert_eq!(before, after);
                prop_assert_eq!((p.mode(), *p.counters(), p.rules().clone()), (mode, counters, rules));
            }
        }
    }
}
