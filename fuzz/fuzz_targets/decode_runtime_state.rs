//! Fuzzes the runtime-state decoder with arbitrary bytes, in strict and lenient mode.
//!
//! Besides "never panics", it checks properties on every input that decodes (formats 1.0 and
//! 1.1): applying the state to a port either succeeds with a consistent table or fails without
//! touching the port, applying it again changes nothing (idempotent restore), re-encoding the
//! decoded state yields a blob that decodes to the same flows (ages at the 1.1 precision) and
//! the same fingerprints, and re-encoding under a small cap stays within the cap.
//! To reach past the CRC, inputs starting with byte 0xFF get their length and CRC fields (and a
//! 1.2 blob's policy CRC) fixed up before decoding (the fuzzer then explores field validation).
//! Format 1.2: `salvage_policy` never panics, never yields a policy from a no-state blob, and
//! agrees with `decode` on every blob that decodes. The restore's `decode_staged` (flows
//! straight into the port's future table) agrees with `decode` on every input, and its
//! `apply_staged` with `apply`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vsflow_core::codec::{self, DecodeConfig, Decoded, UnknownMajor};
use vsflow_core::{Port, PortConfig, PortIdentity};

/// Where the policy CRC of a 1.2 blob is: the last four bytes of its third record, when that
/// is an 8-byte `POLICY_CHECK`.
fn policy_crc_at(b: &[u8]) -> Option<usize> {
    let get16 = |at: usize| Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?));
    let get32 = |at: usize| Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?));
    if b.len() < 40 || get16(6)? < 2 {
        return None;
    }
    let mut at = usize::from(get16(8)?) + 2 * usize::from(get16(36)?);
    for _ in 0..2 {
        at = at.checked_add(8)?.checked_add(get32(at.checked_add(4)?)? as usize)?;
    }
    let crc_at = at.checked_add(12)?;
    (get16(at)? == codec::format::rec::POLICY_CHECK
        && get32(at + 4)? == 8
        && crc_at + 4 <= b.len().checked_sub(4)?)
    .then_some(crc_at)
}

/// Fixes up the total length, the policy CRC (1.2) and the trailer CRC, as a writer (or an
/// attacker) would: the fuzzer then explores the field validation behind both checksums.
fn reseal(data: &[u8]) -> Vec<u8> {
    let mut b = data.to_vec();
    if b.len() >= 20 {
        let n = b.len();
        let len = u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
        b[12..16].copy_from_slice(&len);
        if let Some(at) = policy_crc_at(&b) {
            let crc = codec::crc32c(&b[..at]).to_le_bytes();
            b[at..at + 4].copy_from_slice(&crc);
        }
        let crc = codec::crc32c(&b[..n - 4]).to_le_bytes();
        b[n - 4..].copy_from_slice(&crc);
    }
    b
}

fuzz_target!(|data: &[u8]| {
    let owned;
    let bytes = match data.split_first() {
        Some((0xFF, rest)) => {
            owned = reseal(rest);
            &owned[..]
        }
        _ => data,
    };
    let lenient = DecodeConfig { unknown_major: UnknownMajor::Lenient, ..DecodeConfig::default() };
    let _ = codec::decode(bytes, &lenient);
    let as_1_1 = DecodeConfig { reader_minor: 1, ..DecodeConfig::default() };
    let _ = codec::decode(bytes, &as_1_1);
    // What a degraded restore recovers from a damaged blob (format 1.2): never panics either.
    let salvaged = codec::salvage_policy(bytes, &DecodeConfig::default());
    if let Some(policy) = &salvaged {
        let mut port = Port::try_new(PortIdentity::try_from_str("fuzz").unwrap(), PortConfig::default()).unwrap();
        codec::apply_degraded(&mut port, Some(policy.carried()));
    }
    let decoded = codec::decode(bytes, &DecodeConfig::default());
    // The two readers agree: a no-state blob carries no policy, and a blob that decodes
    // carries exactly the policy salvage would recover from it.
    match (&decoded, &salvaged) {
        (Ok(Decoded::NoState { .. }), Some(_)) => panic!("policy salvaged from a no-state blob"),
        (Ok(Decoded::State(s)), Some(p)) => {
            assert_eq!((s.mode, &s.rules), (p.mode, &p.rules), "salvage and decode disagree");
            assert_eq!(s.save_info.rules_dropped == 0, p.complete);
        }
        _ => {}
    }
    // The restore's decode (straight into the port's future table, as the driver restores)
    // says what `decode` says, and applies to the same port.
    let fresh = || Port::try_new(PortIdentity::try_from_str("fuzz").unwrap(), PortConfig::default()).unwrap();
    let stage = codec::StageConfig { table: *fresh().table().config(), base: 1 << 40, now: 1 << 40 };
    match (&decoded, codec::decode_staged(bytes, &DecodeConfig::default(), &stage)) {
        (Ok(Decoded::State(s)), Ok(codec::DecodedStaged::State(t, flows))) => {
            assert_eq!(codec::PortState { flows: Vec::new(), ..s.clone() }, t, "staged decode disagrees");
            let (mut a, mut b) = (fresh(), fresh());
            let ra = codec::apply(&mut a, s, 1 << 40);
            let rb = codec::apply_staged(&mut b, &t, flows, 1 << 40, &codec::ApplyConfig::default());
            assert_eq!(ra, rb, "staged apply disagrees");
            assert_eq!((a.table().len(), *a.counters()), (b.table().len(), *b.counters()));
            if rb.is_ok() {
                b.table().check_invariants().unwrap();
            }
        }
        (Ok(Decoded::UnsupportedMajor { .. }), Ok(codec::DecodedStaged::UnsupportedMajor { .. }))
        | (Ok(Decoded::NoState { .. }), Ok(codec::DecodedStaged::NoState { .. })) => {}
        (Err(a), Err(b)) => assert_eq!(a, &b, "staged decode fails otherwise"),
        (a, _) => panic!("staged decode disagrees with {a:?}"),
    }
    let Ok(Decoded::State(state)) = decoded else { return };

    let mut port = Port::try_new(PortIdentity::try_from_str("fuzz").unwrap(), PortConfig::default()).unwrap();
    match codec::apply(&mut port, &state, 1 << 40) {
        Ok(_) => {
            port.table().check_invariants().unwrap();
            let before = (*port.counters(), port.table().len());
            assert!(codec::apply(&mut port, &state, 1 << 41).unwrap().repeated);
            assert_eq!(before, (*port.counters(), port.table().len()), "restore not idempotent");
        }
        Err(_) => assert!(port.table().is_empty(), "failed apply changed the port"),
    }

    let cfg = codec::EncodeConfig { provider: state.provider, cap: usize::MAX };
    let mut again = Vec::new();
    codec::encode_state(&state, &cfg, &mut again).unwrap();
    let Ok(Decoded::State(round)) = codec::decode(&again, &DecodeConfig { max_len: usize::MAX, ..DecodeConfig::default() }) else {
        panic!("re-encoded state does not decode");
    };
    // 1.1 carries last activity in whole seconds and the duration in whole minutes, and the
    // decoder reads an age of `s` whole seconds as the oldest it may stand for (plus a second
    // less a tick: tests/common's `coarse`).
    let sec = vsflow_core::TICKS_PER_SECOND;
    let coarse = |f: &codec::SavedFlow| {
        let mut f = *f;
        let last = f.last_age / sec * sec;
        let dur = (f.first_age - f.last_age) / (60 * sec) * (60 * sec);
        let slack = (sec - 1).min(u64::MAX - (last + dur));
        f.last_age = last + slack;
        f.first_age = last + dur + slack;
        f
    };
    let mut a: Vec<_> = state.flows.iter().map(coarse).collect();
    let mut b = round.flows.clone();
    a.sort_by_key(|f| (f.key, f.last_age));
    b.sort_by_key(|f| (f.key, f.last_age));
    assert_eq!(a, b);
    assert_eq!(round.rules, state.rules);
    assert_eq!(round.mode, state.mode);
    assert_eq!(round.counters, state.counters);
    assert_eq!(round.fingerprints, state.fingerprints);
    assert_eq!(round.nic, state.nic);

    // Under a small cap the blob stays within it, or the cap is below any valid blob.
    let small = codec::EncodeConfig { provider: state.provider, cap: 1024 + usize::from(data.len() as u16 % 2048) };
    let mut capped = Vec::new();
    if codec::encode_state(&state, &small, &mut capped).is_ok() {
        assert!(capped.len() <= small.cap);
        assert!(codec::decode(&capped, &DecodeConfig::default()).is_ok());
    }
});
