//! Format 1.2's policy check and no-state blob under attack (review of issue 16): blobs edited
//! by someone who recomputes every CRC, records moved, duplicated or dropped, fields out of
//! range behind a matching policy CRC, flags a later minor may define, and every truncation.
//!
//! A CRC is not a MAC: whoever can edit a blob can fix up both CRC-32C values (they are keyless),
//! so these tests reseal every edit and check that what decides policy is the *validation*, not
//! the checksum (the threat model: docs/runtime-state-format.md, "Threat model of a blob").

mod common;

use std::path::PathBuf;

use common::*;
use vsflow_core::codec::{self, DecodeConfig, DecodeError, Decoded, format};

fn fixture(name: &str) -> Vec<u8> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/runtime-state");
    std::fs::read(dir.join(name)).expect("fixture")
}

/// The 1.2 state fixtures.
const STATE_FIXTURES: [&str; 3] =
    ["v1.2-enforce-rules.bin", "v1.2-monitor-mixed.bin", "v1.2-capped.bin"];

/// A record: type and payload.
type Record = (u16, Vec<u8>);

/// Header and identity of `b`, then `recs` as its records: each `POLICY_CHECK` of 8 bytes gets
/// the CRC of every byte before its CRC field, wherever it stands; the total length and the
/// trailer are fixed up. What an attacker with a hex editor and a CRC-32C routine writes.
fn rebuild(b: &[u8], recs: &[Record]) -> Vec<u8> {
    let start = usize::from(le16(b, 8)) + 2 * usize::from(le16(b, 36));
    let mut out = b[..start].to_vec();
    out[32..36].copy_from_slice(&u32::try_from(recs.len()).unwrap().to_le_bytes());
    for (kind, payload) in recs {
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
        let mut p = payload.clone();
        if *kind == format::rec::POLICY_CHECK && p.len() == format::POLICY_CHECK_LEN {
            let mut before = out.clone();
            before.extend_from_slice(&p[..4]);
            p[4..8].copy_from_slice(&codec::crc32c(&before).to_le_bytes());
        }
        out.extend_from_slice(&p);
    }
    out.extend_from_slice(&[0; 4]);
    let n = out.len();
    out[12..16].copy_from_slice(&u32::try_from(n).unwrap().to_le_bytes());
    let crc = codec::crc32c(&out[..n - 4]).to_le_bytes();
    out[n - 4..].copy_from_slice(&crc);
    out
}

/// The records of `b` as (type, payload).
fn parts(b: &[u8]) -> Vec<Record> {
    records(b).iter().map(|r| (r.kind, b[r.payload.0..r.payload.1].to_vec())).collect()
}

fn salvage(b: &[u8]) -> Option<codec::SalvagedPolicy> {
    codec::salvage_policy(b, &DecodeConfig::default())
}

fn decode(b: &[u8]) -> Result<Decoded, DecodeError> {
    codec::decode(b, &DecodeConfig::default())
}

// Fails on main (08e07ee): `salvage_policy` accepted any header flag, so a blob carrying a
// flag this reader does not know (one a later minor defines, as 1.2 defined NO_STATE, relying
// on older readers to refuse it) was refused by `decode` as "damaged" and then had its mode and
// rules installed by the degraded restore anyway. The policy CRC covers the header, so with
// the policy intact the flag is the writer's, not damage: salvage must refuse it as decode does.
#[test]
fn salvage_refuses_header_flags_this_reader_does_not_know() {
    let good = fixture("v1.2-enforce-rules.bin");
    assert!(salvage(&good).is_some(), "an intact 1.2 blob's policy is salvageable");
    for bit in 2..16 {
        let mut b = good.clone();
        let flags = le16(&b, 10) | (1 << bit);
        b[10..12].copy_from_slice(&flags.to_le_bytes());
        let b = reseal(b);
        assert!(
            matches!(decode(&b), Err(DecodeError::UnknownFlags { .. })),
            "flag bit {bit}: {:?}",
            decode(&b)
        );
        assert_eq!(salvage(&b), None, "flag bit {bit}: no policy from a blob decode refuses");
        // Nor once the blob is also damaged after its policy (the degraded path's case).
        let mut d = b.clone();
        let n = d.len();
        d[n - 9] ^= 0x10;
        assert_eq!(salvage(&d), None, "flag bit {bit}, damaged after the policy");
    }
    // A 1.1 reader knows no NO_STATE flag: it salvages nothing either (it has no salvage, and
    // this build reading as 1.1 must not invent one).
    let as_1_1 = DecodeConfig { reader_minor: 1, ..DecodeConfig::default() };
    assert_eq!(codec::salvage_policy(&fixture("v1.2-no-state.bin"), &as_1_1), None);
}

// Holds: the policy check is the third record or nothing. Moved, duplicated, first, after the
// flows: refused, each with a policy CRC that matches its position (an attacker's fix-up).
#[test]
fn a_policy_check_out_of_place_or_twice_is_refused() {
    for name in STATE_FIXTURES {
        let good = fixture(name);
        let recs = parts(&good);
        assert_eq!(recs[2].0, format::rec::POLICY_CHECK, "{name}: third record");
        let check = recs[2].clone();
        let without: Vec<_> =
            recs.iter().filter(|r| r.0 != format::rec::POLICY_CHECK).cloned().collect();

        let mut twice = recs.clone();
        twice.insert(3, check.clone());
        let mut first = without.clone();
        first.insert(0, check.clone());
        let mut last = without.clone();
        last.push(check.clone());
        let mut after_flows = without.clone();
        let at = after_flows.iter().position(|r| r.0 == format::rec::FLOWS_V6).unwrap() + 1;
        after_flows.insert(at, check.clone());
        for (what, recs) in
            [("twice", twice), ("first", first), ("last", last), ("after the flows", after_flows)]
        {
            let b = rebuild(&good, &recs);
            assert!(decode(&b).is_err(), "{name}: policy check {what}");
            // The salvage path reads only the first three records: a check placed elsewhere
            // yields nothing; a second one after a good third changes nothing it reads.
            if what != "twice" {
                assert_eq!(salvage(&b), None, "{name}: policy check {what}");
            }
        }

        // MODE and RULES swapped before the check: salvage (which wants MODE, RULES, check)
        // yields nothing; decode may read it, but then with exactly the blob's policy.
        let mut swapped = recs.clone();
        swapped.swap(0, 1);
        let b = rebuild(&good, &swapped);
        assert_eq!(salvage(&b), None, "{name}: swapped");
        if let Ok(Decoded::State(s)) = decode(&b) {
            let Ok(Decoded::State(g)) = decode(&good) else { panic!() };
            assert_eq!((s.mode, s.rules), (g.mode, g.rules), "{name}: swapped");
        }

        // Stripped: a 1.2 blob without its check reads as a 1.1 blob (the check is optional,
        // so the same bytes carry the same policy), and has no policy to salvage.
        let b = rebuild(&good, &without);
        assert!(decode(&b).is_ok(), "{name}: stripped");
        assert_eq!(salvage(&b), None, "{name}: stripped");

        // Reserved bytes, a rules-left-out count that disagrees with SAVE_INFO2, a longer
        // payload: refused by decode; a mismatching count is not salvaged as complete.
        let mut reserved = recs.clone();
        reserved[2].1[2] = 1;
        assert!(decode(&rebuild(&good, &reserved)).is_err(), "{name}: reserved");
        let mut count = recs.clone();
        count[2].1[0] ^= 1;
        let b = rebuild(&good, &count);
        assert!(matches!(decode(&b), Err(DecodeError::InconsistentSaveInfo)), "{name}: count");
        let mut longer = recs.clone();
        longer[2].1.extend_from_slice(&[0; 4]);
        assert!(decode(&rebuild(&good, &longer)).is_err(), "{name}: longer check");
        assert_eq!(salvage(&rebuild(&good, &longer)), None, "{name}: longer check");
    }
}

// Holds: a policy CRC that matches proves nothing about the fields: mode and rules out of range
// behind a matching check are refused by decode and never salvaged (no Monitor from garbage).
#[test]
fn a_matching_policy_crc_over_fields_out_of_range_yields_no_policy() {
    let good = fixture("v1.2-enforce-rules.bin");
    let recs = parts(&good);
    let mut cases: Vec<(&str, Vec<Record>)> = Vec::new();
    for mode in [2u8, 3, 0x80, 0xFF] {
        let mut r = recs.clone();
        r[0].1[0] = mode;
        cases.push(("mode out of range", r));
    }
    let mut r = recs.clone();
    r[0].1.clear();
    cases.push(("empty mode record", r));
    // RULES: version u32, entry length u16, count u16, then 24-byte entries.
    let mut r = recs.clone();
    r[1].1[6..8].copy_from_slice(&257u16.to_le_bytes());
    cases.push(("257 rules", r));
    let mut r = recs.clone();
    r[1].1[4..6].copy_from_slice(&23u16.to_le_bytes());
    cases.push(("entry length 23", r));
    let mut r = recs.clone();
    r[1].1[6..8].copy_from_slice(&2u16.to_le_bytes());
    cases.push(("count says 2, 3 entries follow", r));
    let entry = 8;
    for (what, at, v) in [
        ("unknown rule flag", 0, 0x02u8),
        ("any protocol with a protocol", 1, 6),
        ("family 5", 2, 5),
        ("IPv4 prefix of 33 bits", 3, 33),
    ] {
        let mut r = recs.clone();
        let e = &mut r[1].1[entry..entry + 24];
        if what == "any protocol with a protocol" {
            e[0] = format::RULE_ANY_PROTOCOL;
        }
        e[at] = v;
        cases.push((what, r));
    }
    let mut r = recs.clone();
    // Port range 22..=21 (start after end).
    r[1].1[entry + 6..entry + 8].copy_from_slice(&21u16.to_le_bytes());
    cases.push(("inverted port range", r));
    let mut r = recs;
    // 198.51.100.0/24 with a host bit set.
    r[1].1[entry + 8 + 3] = 1;
    cases.push(("host bits past the prefix", r));
    for (what, recs) in cases {
        let b = rebuild(&good, &recs);
        assert!(decode(&b).is_err(), "{what}: decoded");
        assert_eq!(salvage(&b), None, "{what}: salvaged");
        // Damaged after the policy as well: still nothing.
        let mut d = b.clone();
        let n = d.len();
        d[n - 9] ^= 0x10;
        assert_eq!(salvage(&d), None, "{what}: salvaged once damaged");
    }
}

// Holds: the no-state blob is exactly a header and one NO_STATE record; anything more is refused
// (never read as a state, never salvaged), and a NO_STATE record in a state blob is refused.
#[test]
fn a_no_state_blob_with_anything_else_is_refused_and_never_carries_policy() {
    let none = fixture("v1.2-no-state.bin");
    assert_eq!(decode(&none), Ok(Decoded::NoState { reason: format::no_state::UNTRACKED }));
    assert_eq!(salvage(&none), None);
    let good = fixture("v1.2-enforce-rules.bin");
    let state = parts(&good);
    let no_state = parts(&none);
    // NO_STATE plus the policy records, in either order.
    let mut plus_policy = no_state.clone();
    plus_policy.extend(state[..3].iter().cloned());
    let mut policy_first = state[..3].to_vec();
    policy_first.extend(no_state.iter().cloned());
    for (what, recs) in
        [("no-state then policy", plus_policy), ("policy then no-state", policy_first)]
    {
        let b = rebuild(&none, &recs);
        assert!(decode(&b).is_err(), "{what}");
        assert_eq!(salvage(&b), None, "{what}: a no-state blob carries no policy");
    }
    // The NO_STATE flag on a complete state blob.
    let mut b = good.clone();
    let flags = le16(&b, 10) | format::FLAG_NO_STATE;
    b[10..12].copy_from_slice(&flags.to_le_bytes());
    let b = reseal(b);
    assert!(decode(&b).is_err(), "NO_STATE flag over a state");
    assert_eq!(salvage(&b), None, "NO_STATE flag over a state");
    // NO_STATE with FLOWS_DROPPED, a NO_STATE record in a state blob, a longer record.
    let mut b = none.clone();
    b[10..12].copy_from_slice(&(format::FLAG_NO_STATE | format::FLAG_FLOWS_DROPPED).to_le_bytes());
    assert!(decode(&reseal(b)).is_err(), "NO_STATE with FLOWS_DROPPED");
    let mut recs = state.clone();
    recs.push(no_state[0].clone());
    assert!(decode(&rebuild(&good, &recs)).is_err(), "a NO_STATE record in a state blob");
    let mut longer = no_state.clone();
    longer[0].1.push(0);
    assert!(decode(&rebuild(&none, &longer)).is_err(), "NO_STATE payload of 5 bytes");
    let mut reserved = no_state;
    reserved[0].1[3] = 1;
    assert!(decode(&rebuild(&none, &reserved)).is_err(), "NO_STATE reserved bytes");
}

// Holds: salvage reads only what it was given. Every truncation of every 1.2 fixture (resealed
// or not), every one of them with each byte of the policy zone overwritten, and record lengths
// pointing past the end: no panic, no policy unless the whole policy and its check are there.
#[test]
fn salvage_on_every_truncation_never_panics_and_needs_the_whole_policy() {
    for name in STATE_FIXTURES.iter().chain(std::iter::once(&"v1.2-no-state.bin")) {
        let good = fixture(name);
        let whole = salvage(&good);
        let end = policy_crc_at(&good).map(|at| at + 4);
        for cut in 0..good.len() {
            let got = salvage(&good[..cut]);
            match end {
                Some(end) if cut >= end => assert_eq!(got, whole, "{name} cut at {cut}"),
                _ => assert_eq!(got, None, "{name} cut at {cut}"),
            }
            // The cut blob with its length and CRC fixed up: decode refuses or reads it; salvage
            // never panics.
            let _ = decode(&reseal(good[..cut].to_vec()));
            let _ = salvage(&reseal(good[..cut].to_vec()));
        }
        // Each record length in the policy zone set to values that point past the end.
        for r in records(&good).iter().take(3) {
            for len in [u32::MAX, u32::MAX - 7, 0x8000_0000, u32::try_from(good.len()).unwrap()] {
                let mut b = good.clone();
                b[r.start + 4..r.start + 8].copy_from_slice(&len.to_le_bytes());
                assert_eq!(salvage(&b), None, "{name}: record at {} of length {len}", r.start);
                let _ = decode(&reseal(b));
            }
        }
        // The identity length and the header length past the end.
        for (at, v) in [(36usize, 0xFFFFu16), (36, 257), (8, 0xFFFF), (8, 39), (8, 0)] {
            let mut b = good.clone();
            b[at..at + 2].copy_from_slice(&v.to_le_bytes());
            assert_eq!(salvage(&b), None, "{name}: u16 at {at} = {v}");
        }
    }
    // Short garbage of every length up to 64 bytes with a 1.2 prefix.
    for n in 0..64 {
        let mut b = vec![0xA5u8; n];
        for (d, s) in b.iter_mut().zip(b"VSFL\x01\x00\x02\x00") {
            *d = *s;
        }
        assert_eq!(salvage(&b), None, "{n} bytes");
    }
}

// Holds: for every intact 1.2 blob, what salvage would recover is exactly what decode reads
// (the two readers agree on the policy).
#[test]
fn salvage_and_decode_agree_on_every_intact_1_2_blob() {
    for name in STATE_FIXTURES {
        let b = fixture(name);
        let Ok(Decoded::State(s)) = decode(&b) else { panic!("{name}") };
        let p = salvage(&b).expect(name);
        assert_eq!((p.mode, &p.rules), (s.mode, &s.rules), "{name}");
        assert_eq!(p.complete, s.save_info.rules_dropped == 0, "{name}");
    }
}
