//! The HLK `WindowsFilteringPlatform_Tests` requirements that map to vsflow behaviour, each as
//! a scenario named after its requirement. These check what the simulator can check; the real
//! HLK run on Windows is in docs/INSTALL.md and docs/WINDOWS-VERIFICATION.md.

use fwps_sys as sys;
use vsflow_callout::{DriverConfig, RestoreMode, keys};
use vsflow_core::{IpFamily, protocol};
use vsflow_scenarios::{delivered, enforce, finish, host, open_connections, vm_port};
use vsflow_sim::host::EXTERNAL_PORT;
use vsflow_sim::tools::migrate::{MigrateOptions, run};
use vsflow_sim::{PacketFate, SimPacket};

#[test]
fn support_live_migration() {
    let r = run(&MigrateOptions { ports: 4, flows_per_port: 100, ..MigrateOptions::default() });
    assert!(r.passed(), "{}", r.to_text());
}

#[test]
fn support_reordering() {
    let (mut h, sw) = host(1, enforce(RestoreMode::Pending), "SW");
    assert_eq!(h.reorder(false), sys::STATUS_SUCCESS, "reorder never pends");
    assert_eq!(h.driver().reorder_in_position(), Some(false));
    assert_eq!(h.reorder(true), sys::STATUS_SUCCESS);
    assert_eq!(h.driver().reorder_in_position(), Some(true));
    assert_eq!(h.driver().stats().reorder_events, 2);
    // Filtering keeps working across reorders.
    vm_port(&mut h, sw, 5, "p", 1, false);
    let inbound = open_connections(&mut h, sw, 5, 2);
    assert_eq!(delivered(&mut h, sw, 5, &inbound), 2);
    finish(&mut h);
}

#[test]
fn support_removal() {
    // WFP disabled on a switch: the switch's state goes away and its traffic is no longer
    // filtered; other switches are unaffected.
    let (mut h, sw) = host(2, enforce(RestoreMode::Pending), "SW-1");
    vm_port(&mut h, sw, 5, "p", 1, false);
    let unsolicited = SimPacket::new(
        IpFamily::V4,
        protocol::TCP,
        vsflow_core::packet::v4([198, 51, 100, 1]),
        999,
        vsflow_scenarios::vm_ip(5),
        80,
        0x02,
        0,
    );
    assert_eq!(h.transmit(sw, EXTERNAL_PORT, 5, &unsolicited), PacketFate::BlockedAtEgress);
    h.delete_switch(sw);
    assert_eq!(h.transmit(sw, EXTERNAL_PORT, 5, &unsolicited), PacketFate::Delivered);
    finish(&mut h);
}

#[test]
fn no_egress_modification() {
    // The simulator compares every frame before and after each classify call and records a
    // violation on any change; `finish` asserts none, across permit and block verdicts.
    let (mut h, sw) = host(3, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 5, "p", 1, false);
    let inbound = open_connections(&mut h, sw, 5, 5);
    assert_eq!(delivered(&mut h, sw, 5, &inbound), 5);
    let unsolicited = SimPacket::new(
        IpFamily::V6,
        protocol::UDP,
        [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        53,
        [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 2],
        5353,
        0,
        64,
    );
    assert_eq!(h.transmit(sw, EXTERNAL_PORT, 5, &unsolicited), PacketFate::BlockedAtEgress);
    finish(&mut h);
}

#[test]
fn interop_with_other_extensions() {
    // With the default configuration (Monitor mode) vsflow blocks nothing, and it never
    // filters ports it does not track (external, internal, default port 0).
    let (mut h, sw) = host(4, DriverConfig::default(), "SW");
    vm_port(&mut h, sw, 5, "p", 1, false);
    let unsolicited = SimPacket::new(
        IpFamily::V4,
        protocol::TCP,
        vsflow_core::packet::v4([198, 51, 100, 1]),
        999,
        vsflow_scenarios::vm_ip(5),
        80,
        0x02,
        0,
    );
    assert_eq!(
        h.transmit(sw, EXTERNAL_PORT, 5, &unsolicited),
        PacketFate::Delivered,
        "monitor mode by default"
    );
    let host_traffic = SimPacket::new(
        IpFamily::V4,
        protocol::TCP,
        vsflow_core::packet::v4([198, 51, 100, 1]),
        999,
        vsflow_core::packet::v4([10, 9, 9, 9]),
        80,
        0x02,
        0,
    );
    assert_eq!(
        h.transmit(sw, EXTERNAL_PORT, 0, &host_traffic),
        PacketFate::Delivered,
        "port 0 is trusted"
    );
    assert!(h.driver().stats().trusted_port_packets > 0);
    finish(&mut h);
    // Enforce mode still leaves untracked ports alone.
    let (mut h, sw) = host(5, enforce(RestoreMode::Pending), "SW");
    assert_eq!(h.transmit(sw, EXTERNAL_PORT, 0, &host_traffic), PacketFate::Delivered);
    assert_eq!(
        h.transmit(sw, 0, EXTERNAL_PORT, &host_traffic.reply(0x12, 0)),
        PacketFate::Delivered
    );
    finish(&mut h);
}

#[test]
fn clean_uninstall() {
    let (mut h, sw) = host(6, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 5, "p", 1, false);
    let _ = open_connections(&mut h, sw, 5, 10);
    let _ = h.save(sw, 5);
    // `finish` unloads and fails on any object, callout, subscription or pended notification
    // left behind.
    finish(&mut h);
}

#[test]
fn fwpm_providers_maintain_identifying() {
    let (mut h, _) = host(7, enforce(RestoreMode::Pending), "SW");
    let providers = h.engine_objects().providers;
    assert!(
        providers.iter().any(|p| p.key == keys::PROVIDER),
        "vsflow's provider exists while loaded"
    );
    finish(&mut h);
}

#[test]
fn fwpm_providers_associate_with_objects() {
    let (mut h, _) = host(8, enforce(RestoreMode::Pending), "SW");
    let o = h.engine_objects();
    assert!(!o.sublayers.is_empty() && !o.callouts.is_empty() && o.filters.len() == 4);
    assert!(o.sublayers.iter().all(|x| x.provider == Some(keys::PROVIDER)));
    assert!(o.callouts.iter().all(|x| x.provider == Some(keys::PROVIDER)));
    assert!(o.filters.iter().all(|x| x.provider == Some(keys::PROVIDER)));
    finish(&mut h);
}

#[test]
fn fwpm_sublayers_use_own_or_built_in() {
    let (mut h, _) = host(9, enforce(RestoreMode::Pending), "SW");
    let o = h.engine_objects();
    assert!(o.filters.iter().all(|f| f.sublayer == keys::SUBLAYER));
    assert!(
        o.filters
            .iter()
            .all(|f| f.flags & sys::FWPM_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED != 0),
        "never fails closed when unloaded"
    );
    finish(&mut h);
}

#[test]
fn callouts_allow_receive_segment_coalescing() {
    let (mut h, _) = host(10, enforce(RestoreMode::Pending), "SW");
    let flags = h.callout_flags();
    assert_eq!(flags.len(), 4);
    assert!(flags.iter().all(|f| f & sys::FWP_CALLOUT_FLAG_ALLOW_RSC != 0));
    finish(&mut h);
}
