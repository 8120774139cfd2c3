//! Golden runtime-state fixtures under `tests/fixtures/runtime-state/` (workspace root).
//!
//! Every fixture must stay readable by every later build: blobs saved by an old driver reach
//! a new one during a rolling upgrade of a Hyper-V cluster. The `v1.0-*` fixtures are also
//! reproduced byte for byte from their fixed inputs, so an accidental format change fails
//! here. To regenerate after a deliberate, versioned format change:
//! `VSFLOW_BLESS=1 cargo test -p vsflow-core --test fixtures` (never edit old fixtures).

mod common;

use std::path::PathBuf;

use common::*;
use vsflow_core::codec::{self, DecodeConfig, DecodeError, Decoded, PortState, UnknownMajor};
use vsflow_core::{Port, PortConfig, PortIdentity};

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
        ("v1.0-monitor-mixed.bin", mixed.clone()),
        ("v1.0-enforce-rules.bin", encode_state(&fixture_enforce_rules())),
        ("v1.0-capped.bin", encode_with_cap(&capped, cap)),
        // What a 1.3 writer would produce under the 1.x compatibility rules.
        ("v1.3-future-minor.bin", as_future_minor(&mixed, 3, 8)),
        ("v2.0-future-major.bin", with_major(&mixed, 2)),
    ]
}

#[test]
fn v1_0_fixtures_are_reproduced_byte_for_byte() {
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
            port.table().check_invariants().unwrap();
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
    assert!(seen >= 5, "fixtures missing from {}", dir().display());
}

#[test]
fn fixture_contents_are_what_their_inputs_say() {
    let mixed =
        decode_state(&std::fs::read(dir().join("v1.0-monitor-mixed.bin")).unwrap()).unwrap();
    assert_eq!(mixed, as_decoded(fixture_monitor_mixed()));
    let future =
        decode_state(&std::fs::read(dir().join("v1.3-future-minor.bin")).unwrap()).unwrap();
    assert_eq!(future.minor, 3);
    assert_eq!(future.skipped_records, 1);
    assert_eq!(future.flows, mixed.flows);
    assert_eq!(future.identity, mixed.identity);
    let capped = decode_state(&std::fs::read(dir().join("v1.0-capped.bin")).unwrap()).unwrap();
    assert!(capped.save_info.flows_dropped > 0);
}
