//! Golden runtime-state fixtures under `tests/fixtures/runtime-state/` (workspace root).
//!
//! Every fixture must stay readable by every later build: blobs saved by an old driver reach
//! a new one during a rolling upgrade of a Hyper-V cluster. The fixtures of the version this
//! build writes (`v1.2-*`, and the synthetic `v1.7-future-minor` made from a 1.2 blob) are also
//! reproduced byte for byte from their fixed inputs, so an accidental format change fails
//! here; older ones (`v1.0-*` and `v1.1-*`, written by the 1.0 and 1.1 encoders, and the
//! synthetic `v1.3-future-minor`, `v1.5-future-minor` and `v2.0-future-major`) are frozen:
//! they are only ever read. To write the current version's fixtures after a deliberate,
//! versioned format change:
//! `VSFLOW_BLESS=1 cargo test -p vsflow-core --test fixtures` (it never touches other files).
//!
//! Cross-version: this build reads every older fixture (`every_fixture_restores_forever`), and
//! a 1.1 reader reads every 1.2 fixture (`a_1_1_reader_reads_every_1_2_fixture`: the decoder
//! with `reader_minor: 1`, which knows exactly the records and flags 1.1 knew; the 1.1 build
//! itself was also run on them: docs/PERFORMANCE.md, "Cross-version (1.1 reader on 1.2
//! blobs)").

mod common;

use std::path::PathBuf;

use common::*;
use vsflow_core::codec::{self, DecodeConfig, DecodeError, Decoded, PortState, UnknownMajor};
use vsflow_core::{FlowState, Port, PortConfig, PortIdentity};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/runtime-state")
}

fn encode_with_cap(s: &PortState, cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode_state(s, &codec::EncodeConfig { cap, ..encode_config() }, &mut out).unwrap();
    out
}

/// The fixtures this build generates, with their fixed inputs.
fn generated() -> Vec<(&'static str, Vec<u8>)> {
    let mixed = encode_state(&fixture_monitor_mixed());
    let (capped, cap) = fixture_capped();
    let mut no_state = Vec::new();
    let identity = PortIdentity::try_from_str("6A1B2C3D-0000-4E5F-8A9B-0C1D2E3F4A5B").unwrap();
    codec::encode_no_state(&identity, codec::format::no_state::UNTRACKED, PROVIDER, &mut no_state)
        .unwrap();
    vec![
        ("v1.2-monitor-mixed.bin", mixed.clone()),
        ("v1.2-enforce-rules.bin", encode_state(&fixture_enforce_rules())),
        ("v1.2-capped.bin", encode_with_cap(&capped, cap)),
        ("v1.2-no-state.bin", no_state),
        // What a 1.7 writer would produce from a 1.2 blob under the 1.x compatibility rules.
        ("v1.7-future-minor.bin", as_future_minor(&mixed, 7, 8)),
    ]
}

#[test]
fn v1_2_fixtures_are_reproduced_byte_for_byte() {
    let bless = std::env::var_os("VSFLOW_BLESS").is_some();
    for (name, bytes) in generated() {
        let path = dir().join(name);
        if bless {
            std::fs::create_dir_all(dir()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
            continue;
        }
        let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(stored == bytes, "{name}: the encoder no longer reproduces this fixture");
    }
}

#[test]
fn every_fixture_restores_forever() {
    let mut seen = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("bin") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let major: u16 = name.trim_start_matches('v').split('.').next().unwrap().parse().unwrap();
        seen += 1;
        if major == 1 {
            let decoded = codec::decode(&bytes, &DecodeConfig::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let state = match decoded {
                Decoded::State(state) => state,
                Decoded::NoState { reason } if name.contains("no-state") => {
                    assert_eq!(reason, codec::format::no_state::UNTRACKED, "{name}");
                    continue;
                }
                other => panic!("{name}: {other:?}"),
            };
            let mut port =
                Port::try_new(PortIdentity::try_from_str("dest").unwrap(), PortConfig::default())
                    .unwrap();
            let report = codec::apply(&mut port, &state, 1_000_000_000)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(report.restored as usize, state.flows.len(), "{name}");
            assert_eq!(report.fingerprints as usize, state.fingerprints.len(), "{name}");
            port.table().check_invariants().unwrap();
            // Restoring the same blob again changes nothing.
            let before = (*port.counters(), port.table().len());
            assert!(codec::apply(&mut port, &state, 1_000_000_001).unwrap().repeated, "{name}");
            assert_eq!(before, (*port.counters(), port.table().len()), "{name}");
        } else {
            assert_eq!(
                codec::decode(&bytes, &DecodeConfig::default()),
                Err(DecodeError::UnsupportedMajor { major, minor: 0 }),
                "{name}: strict mode must refuse an unknown major"
            );
            let lenient =
                DecodeConfig { unknown_major: UnknownMajor::Lenient, ..DecodeConfig::default() };
            assert_eq!(
                codec::decode(&bytes, &lenient),
                Ok(Decoded::UnsupportedMajor { major, minor: 0 }),
                "{name}"
            );
        }
    }
    assert!(seen >= 9, "fixtures missing from {}", dir().display());
}

#[test]
fn fixture_contents_are_what_their_inputs_say() {
    let read = |name: &str| decode_state(&std::fs::read(dir().join(name)).unwrap()).unwrap();
    // 1.0: exact ages and per-flow counters; the 14 counters 1.0 had, later ones read as 0.
    let mixed = read("v1.0-monitor-mixed.bin");
    let mut expect = as_decoded_v1_0(fixture_monitor_mixed());
    expect.counters = vsflow_core::PortCounters::from_values(100..114);
    assert_eq!(mixed, expect);
    // 1.1 and 1.2: coarse ages; everything fits, per-flow counters included.
    let as_minor = |mut s: PortState, minor| {
        s.minor = minor;
        s
    };
    let mixed11 = read("v1.1-monitor-mixed.bin");
    assert_eq!(mixed11, as_minor(as_decoded(fixture_monitor_mixed(), true), 1));
    let rules11 = read("v1.1-enforce-rules.bin");
    assert_eq!(rules11, as_minor(as_decoded(fixture_enforce_rules(), true), 1));
    assert_eq!(rules11.nic, Some(PortIdentity::try_from_str("Network Adapter").unwrap()));
    let mixed12 = read("v1.2-monitor-mixed.bin");
    assert_eq!(mixed12, as_decoded(fixture_monitor_mixed(), true));
    assert_eq!(read("v1.2-enforce-rules.bin"), as_decoded(fixture_enforce_rules(), true));
    // Over the cap: every established connection of the VM is carried, exactly or by
    // fingerprint (1.2: peer-opened ones only exactly).
    let (capped_in, _) = fixture_capped();
    for name in ["v1.1-capped.bin", "v1.2-capped.bin"] {
        let capped = read(name);
        let exact: std::collections::HashSet<_> = capped.flows.iter().map(|f| f.key).collect();
        let vm_established = capped_in.flows.iter().filter(|f| {
            f.state == FlowState::Established && f.admission == vsflow_core::flow::Admission::Vm
        });
        for f in vm_established {
            assert!(exact.contains(&f.key) || capped.fingerprints.contains(&f.key), "{f:?} lost");
        }
        assert!(capped.save_info.flows_fingerprinted > 0 && capped.save_info.flows_dropped > 0);
    }
    let future = read("v1.5-future-minor.bin");
    assert_eq!((future.minor, future.skipped_records), (5, 1));
    assert_eq!((future.flows, future.identity), (mixed11.flows.clone(), mixed11.identity));
    let future = read("v1.7-future-minor.bin");
    assert_eq!((future.minor, future.skipped_records), (7, 1));
    assert_eq!((future.flows, future.identity), (mixed12.flows.clone(), mixed12.identity));
    let future = read("v1.3-future-minor.bin");
    assert_eq!(future.minor, 3);
    assert_eq!(future.skipped_records, 1);
    assert_eq!(future.flows, mixed.flows);
    assert_eq!(future.identity, mixed.identity);
    let capped = read("v1.0-capped.bin");
    assert!(capped.save_info.flows_dropped > 0);
}

/// Decodes `bytes` as a 1.1 reader does.
fn read_as_1_1(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    codec::decode(bytes, &DecodeConfig { reader_minor: 1, ..DecodeConfig::default() })
}

#[test]
fn a_1_1_reader_reads_every_1_2_fixture() {
    for name in ["v1.2-monitor-mixed.bin", "v1.2-enforce-rules.bin", "v1.2-capped.bin"] {
        let bytes = std::fs::read(dir().join(name)).unwrap();
        let Ok(Decoded::State(new)) = codec::decode(&bytes, &DecodeConfig::default()) else {
            panic!("{name}: this build reads it");
        };
        let Ok(Decoded::State(old)) = read_as_1_1(&bytes) else {
            panic!("{name}: a 1.1 reader reads it");
        };
        // Everything 1.1 knows is the same; the policy check is a record it skips.
        assert_eq!(old.skipped_records, new.skipped_records + 1, "{name}");
        assert_eq!(PortState { skipped_records: new.skipped_records, ..old }, new, "{name}");
    }
    // The no-state blob: a flag 1.1 does not know, so a 1.1 reader refuses it (its lenient
    // restore then installs no policy from it).
    let bytes = std::fs::read(dir().join("v1.2-no-state.bin")).unwrap();
    assert!(matches!(read_as_1_1(&bytes), Err(DecodeError::UnknownFlags { flags: 2 })));
    // And every 1.1 fixture reads the same through both.
    for name in ["v1.1-monitor-mixed.bin", "v1.1-enforce-rules.bin", "v1.1-capped.bin"] {
        let bytes = std::fs::read(dir().join(name)).unwrap();
        assert_eq!(read_as_1_1(&bytes), codec::decode(&bytes, &DecodeConfig::default()), "{name}");
    }
}

#[test]
fn a_1_2_blob_damaged_after_its_policy_still_yields_the_policy() {
    let bytes = std::fs::read(dir().join("v1.2-enforce-rules.bin")).unwrap();
    let whole = decode_state(&bytes).unwrap();
    let cfg = DecodeConfig::default();
    // Every single-byte change after the policy check, and every truncation after it.
    let check = records(&bytes).into_iter().find(|r| r.kind == codec::format::rec::POLICY_CHECK);
    let after = check.expect("a policy check").payload.1;
    let expect = Some(codec::SalvagedPolicy {
        mode: whole.mode,
        rules: whole.rules.clone(),
        complete: whole.save_info.rules_dropped == 0,
    });
    for at in after..bytes.len() {
        let mut b = bytes.clone();
        b[at] ^= 0x5A;
        assert!(codec::decode(&b, &cfg).is_err(), "byte {at}");
        assert_eq!(codec::salvage_policy(&b, &cfg), expect, "byte {at}");
        assert_eq!(codec::salvage_policy(&bytes[..at], &cfg), expect, "truncated at {at}");
    }
    // Damage to the policy itself (or before it) yields nothing.
    for at in 0..after {
        let mut b = bytes.clone();
        b[at] ^= 0x01;
        assert_eq!(codec::salvage_policy(&b, &cfg), None, "byte {at}");
    }
    // Nor does a 1.1 blob (no policy check), or another provider's blob.
    let old = std::fs::read(dir().join("v1.1-enforce-rules.bin")).unwrap();
    assert_eq!(codec::salvage_policy(&old, &cfg), None);
    let other = DecodeConfig {
        expected_provider: Some(vsflow_core::Guid::from_parts(1, 2, 3, [4; 8])),
        ..DecodeConfig::default()
    };
    assert_eq!(codec::salvage_policy(&bytes, &other), None);
}
