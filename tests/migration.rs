//! Live migration across two simulated hosts: pended and synchronous restore, shuffled event
//! orders, blobs of other format versions, and damaged blobs.

use fwps_sys as sys;
use vsflow_callout::{DriverConfig, RestoreMode};
use vsflow_core::codec::UnknownMajor;
use vsflow_scenarios::{delivered, enforce, finish, flows_of, host, open_connections, vm_port};
use vsflow_sim::migrate::{MigrateOptions, run};

fn small(restore: RestoreMode, shuffle: bool, seed: u64) -> MigrateOptions {
    MigrateOptions {
        ports: 6,
        flows_per_port: 150,
        restore_mode: restore,
        seed,
        shuffle,
        save_dir: None,
        save_restore: true,
    }
}

#[test]
fn pended_restore_carries_every_established_connection() {
    let r = run(&small(RestoreMode::Pending, false, 1));
    assert!(r.passed(), "{}", r.to_text());
    assert!(r.connections > 0);
    assert_eq!(r.inbound_permitted, r.connections);
    assert_eq!(r.baseline_blocked, Some(r.connections), "without save/restore Enforce blocks them");
}

#[test]
fn synchronous_restore_carries_every_established_connection() {
    let r = run(&small(RestoreMode::Synchronous, false, 2));
    assert!(r.passed(), "{}", r.to_text());
    assert!(!r.pending, "the report names the restore mode");
}

#[test]
fn shuffled_event_orders_still_carry_every_connection() {
    for seed in 10..16 {
        let r = run(&small(RestoreMode::Pending, true, seed));
        assert!(r.passed(), "seed {seed}:\n{}", r.to_text());
    }
}

#[test]
fn ports_of_1000_flows_fit_the_cap_and_carry_every_connection() {
    // Runtime-state format 1.1: 1,000 flows take about 13 KiB (1.0 needed 69 bytes a flow and
    // dropped about 110 of them at the 60 KiB cap).
    let r = run(&MigrateOptions {
        ports: 2,
        flows_per_port: 1000,
        ..small(RestoreMode::Pending, false, 3)
    });
    assert!(r.passed(), "{}", r.to_text());
    assert_eq!(r.flows_dropped, 0, "1000 flows per port fit the 60 KiB cap");
    assert!(r.blob_sizes.2 <= 60 * 1024);
}

#[test]
fn past_the_exact_capacity_established_connections_are_carried_by_fingerprint() {
    // 12,000 flows on one port (the bound raised): more than a 60 KiB blob holds exactly, so
    // most established connections travel as fingerprints and are picked up on B by their
    // first packet; none is blocked.
    let r = run(&MigrateOptions {
        ports: 1,
        flows_per_port: 12_000,
        ..small(RestoreMode::Pending, false, 5)
    });
    assert!(r.passed(), "{}", r.to_text());
    assert!(r.flows_fingerprinted > 0, "{}", r.to_text());
    assert_eq!(r.inbound_permitted, r.connections);
    assert!(r.blob_sizes.2 <= 60 * 1024);
}

/// Migrates port `name` from a fresh host A to a fresh host B with the given blob mutation.
fn migrate_one(
    config_b: DriverConfig,
    mut mutate: impl FnMut(&mut Vec<u8>),
) -> (u32, Option<usize>, usize) {
    let (mut a, sa) = host(1, enforce(RestoreMode::Pending), "SW-A");
    let (mut b, sb) = host(2, config_b, "SW-B");
    vm_port(&mut a, sa, 10, "vm-port-1", 1, false);
    let inbound = open_connections(&mut a, sa, 10, 20);
    let (mut blobs, _) = a.save(sa, 10);
    for (_, blob) in &mut blobs {
        mutate(blob);
    }
    vm_port(&mut b, sb, 77, "vm-port-1", 1, true);
    let tickets = b.restore(sb, 77, &blobs);
    b.run_deferred();
    let status = b.restore_status(&tickets[0]).expect("completed");
    let reached = delivered(&mut b, sb, 77, &inbound);
    let flows = flows_of(&b, "vm-port-1");
    finish(&mut a);
    finish(&mut b);
    (u32::from_ne_bytes(status.to_ne_bytes()), flows, reached)
}

#[test]
fn a_corrupt_blob_fails_the_restore_and_applies_nothing() {
    let (status, flows, reached) = migrate_one(enforce(RestoreMode::Pending), |b| b[100] ^= 0x40);
    assert_eq!(
        status,
        u32::from_ne_bytes(sys::STATUS_DATA_ERROR.to_ne_bytes()),
        "Hyper-V sees the failure"
    );
    assert_eq!(flows, Some(0));
    assert_eq!(reached, 0);
}

#[test]
fn a_truncated_blob_fails_the_restore_and_applies_nothing() {
    let (status, flows, _) =
        migrate_one(enforce(RestoreMode::Synchronous), |b| b.truncate(b.len() / 2));
    assert_eq!(status, u32::from_ne_bytes(sys::STATUS_DATA_ERROR.to_ne_bytes()));
    assert_eq!(flows, Some(0));
}

#[test]
fn an_intact_blob_restores_and_permits_return_traffic() {
    let (status, flows, reached) = migrate_one(enforce(RestoreMode::Pending), |_| {});
    assert_eq!(status, 0);
    assert_eq!(flows, Some(20));
    assert_eq!(reached, 20);
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/runtime-state").join(name),
    )
    .expect("fixture")
}

fn restore_fixture(name: &str, config: DriverConfig) -> (i32, Option<usize>, u64) {
    let (mut b, sb) = host(5, config, "SW-B");
    vm_port(&mut b, sb, 9, "6A1B2C3D-0000-4E5F-8A9B-0C1D2E3F4A5B", 1, true);
    let blob = fixture(name);
    let tickets = b.restore(sb, 9, &[(Some(vsflow_callout::keys::PROVIDER), blob)]);
    b.run_deferred();
    let status = b.restore_status(&tickets[0]).expect("completed");
    let flows = flows_of(&b, "6A1B2C3D-0000-4E5F-8A9B-0C1D2E3F4A5B");
    let empty = b.driver().stats().restores_empty;
    finish(&mut b);
    (status, flows, empty)
}

#[test]
fn blobs_of_every_known_format_version_restore_through_the_driver() {
    assert_eq!(
        vsflow_callout::keys::provider_core().to_bytes()[..4],
        [0x6c, 0x66, 0x73, 0x76],
        "fixtures are saved under vsflow's provider"
    );
    for name in [
        "v1.0-monitor-mixed.bin",
        "v1.0-enforce-rules.bin",
        "v1.0-capped.bin",
        "v1.3-future-minor.bin",
    ] {
        let (status, flows, _) = restore_fixture(name, enforce(RestoreMode::Pending));
        assert_eq!(status, sys::STATUS_SUCCESS, "{name}");
        assert!(flows.unwrap_or(0) > 0, "{name}: flows restored");
    }
}

#[test]
fn an_older_driver_facing_a_newer_major_fails_cleanly_when_strict_and_restores_empty_when_lenient()
{
    let (status, flows, empty) =
        restore_fixture("v2.0-future-major.bin", enforce(RestoreMode::Pending));
    assert_eq!(status, sys::STATUS_REVISION_MISMATCH);
    assert_eq!((flows, empty), (Some(0), 0));
    let lenient =
        DriverConfig { unknown_major: UnknownMajor::Lenient, ..enforce(RestoreMode::Synchronous) };
    let (status, flows, empty) = restore_fixture("v2.0-future-major.bin", lenient);
    assert_eq!(status, sys::STATUS_SUCCESS);
    assert_eq!((flows, empty), (Some(0), 1));
}

#[test]
fn a_blob_saved_under_another_provider_is_not_delivered() {
    let (mut a, sa) = host(1, enforce(RestoreMode::Pending), "SW-A");
    let (mut b, sb) = host(2, enforce(RestoreMode::Pending), "SW-B");
    vm_port(&mut a, sa, 10, "p", 1, false);
    let _ = open_connections(&mut a, sa, 10, 3);
    let (blobs, _) = a.save(sa, 10);
    let other = fwps_sys::GUID::from_parts(1, 2, 3, [4; 8]);
    vm_port(&mut b, sb, 11, "p", 1, true);
    let foreign: Vec<_> = blobs.into_iter().map(|(_, blob)| (Some(other), blob)).collect();
    assert!(b.restore(sb, 11, &foreign).is_empty(), "WFP routes restores by provider GUID");
    finish(&mut a);
    finish(&mut b);
}
