//! Golden runtime-state fixtures under `tests/fixtures/runtime-state/` (workspace root).
//!
//! Every fixture must stay readable by every later build: blobs saved by an old driver reach
//! a new one during a rolling upgrade of a Hyper-V cluster. The fixtures of the version this
//! build writes (`v1.1-*`) are also reproduced byte for byte from their fixed inputs, so an
//! accidental format change fails here; older ones (`v1.0-*`, written by the 1.0 encoder,
//! and the synthetic `v1.3-future-minor` and `v2.0-future-major` made from a 1.0 blob) are
//! frozen: they are only ever read. To write the current version's fixtures after a
//! deliberate, versioned format change:
//! `VSFLOW_BLESS=1 cargo test -p vsflow-core --test fixtures` (it never touches other files).

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
    vec![
        ("v1.1-monitor-mixed.bin", mixed.clone()),
        ("v1.1-enforce-rules.bin", encode_state(&fixture_enforce_rules())),
        ("v1.1-capped.bin", encode_with_cap(&capped, cap)),
        // What a 1.5 writer would produce from a 1.1 blob under the 1.x compatibility rules.
        ("v1.5-future-minor.bin", as_future_minor(&mixed, 5, 8)),
    ]
}

#[test]
fn v1_1_fixtures_are_reproduced_byte_for_byte() {
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
            let Decoded::State(state) = codec::decode(&bytes, &DecodeConfig::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"))
            else {
                panic!("{name}: not a state");
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
    // 1.1: coarse ages; everything fits, per-flow counters included.
    let mixed11 = read("v1.1-monitor-mixed.bin");
    assert_eq!(mixed11, as_decoded(fixture_monitor_mixed(), true));
    let rules11 = read("v1.1-enforce-rules.bin");
    assert_eq!(rules11, as_decoded(fixture_enforce_rules(), true));
    assert_eq!(rules11.nic, Some(PortIdentity::try_from_str("Network Adapter").unwrap()));
    // 1.1 over its cap: every established connection is carried, exactly or by fingerprint.
    let capped11 = read("v1.1-capped.bin");
    let (capped_in, _) = fixture_capped();
    let established = capped_in.flows.iter().filter(|f| f.state == FlowState::Established);
    let exact: std::collections::HashSet<_> = capped11.flows.iter().map(|f| f.key).collect();
    for f in established {
        assert!(exact.contains(&f.key) || capped11.fingerprints.contains(&f.key), "{f:?} lost");
    }
    assert!(capped11.save_info.flows_fingerprinted > 0 && capped11.save_info.flows_dropped > 0);
    let future = read("v1.5-future-minor.bin");
    assert_eq!((future.minor, future.skipped_records), (5, 1));
    assert_eq!((future.flows, future.identity), (mixed11.flows.clone(), mixed11.identity));
    let future = read("v1.3-future-minor.bin");
    assert_eq!(future.minor, 3);
    assert_eq!(future.skipped_records, 1);
    assert_eq!(future.flows, mixed.flows);
    assert_eq!(future.identity, mixed.identity);
    let capped = read("v1.0-capped.bin");
    assert!(capped.save_info.flows_dropped > 0);
}
