//! Runtime-state restore as the extensible switch runs it.
//!
//! - `OID_SWITCH_NIC_RESTORE`: if an extension fails the request, the whole VM restore fails
//!   (the double reports it in `Host::failed_vm_restores`); the save output is
//!   `_Outptr_result_buffer_` (never NULL on success) and its size a USHORT.
//! - "Hyper-V extensible switch port and network adapter states": traffic flows once the NIC
//!   is created, before NIC connect, so while a pended restore has not completed: the double
//!   sends traffic in that window.

use fwps_sys as sys;
use vsflow_callout::RestoreMode;
use vsflow_core::FlowState;
use vsflow_scenarios::{
    delivered, enforce, finish, flow_states, flows_of, host, open_connections, vm_port,
};
use vsflow_sim::{Host, VmRestore};

const NAME: &str = "6F1C0001-5A3B-4C2D-9E8F-000000001EEF";

/// Host A with port 10 carrying `n` established connections; returns A, its switch, the
/// inbound packets of those connections, and A's saved blobs of the port.
fn source(n: u16) -> (Host, usize, Vec<vsflow_sim::SimPacket>, Vec<vsflow_sim::host::SavedBlob>) {
    let (mut a, sa) = host(1, enforce(RestoreMode::Pending), "SW-A");
    vm_port(&mut a, sa, 10, NAME, 1, false);
    let inbound = open_connections(&mut a, sa, 10, n);
    let (blobs, _) = a.save(sa, 10);
    (a, sa, inbound, blobs)
}

/// Host B with port `id` created RESTORING and its NIC created (not connected).
fn destination(restore: RestoreMode, id: u32) -> (Host, usize) {
    let (mut b, sb) = host(2, enforce(restore), "SW-B");
    assert_eq!(b.create_port(sb, id, NAME, true), sys::STATUS_SUCCESS);
    assert_eq!(
        b.nic_event(sb, id, 1, sys::FWPS_VSWITCH_EVENT_INTERFACE_CREATE),
        sys::STATUS_SUCCESS
    );
    (b, sb)
}

#[test]
fn a_save_of_a_port_vsflow_does_not_know_is_a_valid_buffer_and_restores_successfully() {
    let (mut a, sa) = host(1, enforce(RestoreMode::Pending), "SW-A");
    // Port 404 was never reported to the driver.
    let (blobs, _) = a.save(sa, 404);
    finish(&mut a); // no SaveNullOnSuccess
    for (_, blob) in &blobs {
        assert!(u16::try_from(blob.len()).is_ok(), "fits NDIS_SWITCH_NIC_SAVE_STATE");
    }
    let (mut b, sb) = destination(RestoreMode::Pending, 5);
    let tickets = b.restore(sb, 5, &blobs);
    b.run_deferred();
    assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded, "the VM's migration does not fail");
    assert!(b.failed_vm_restores().is_empty());
    finish(&mut b);
}

#[test]
fn a_zero_length_restore_record_does_not_fail_the_vm_restore() {
    for mode in [RestoreMode::Pending, RestoreMode::Synchronous] {
        let (mut b, sb) = destination(mode, 5);
        let tickets = b.restore(sb, 5, &[(Some(vsflow_callout::keys::PROVIDER), Vec::new())]);
        assert_eq!(tickets.len(), 1, "WFP hands the record to vsflow's subscription");
        b.run_deferred();
        assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded, "{mode:?}");
        assert_eq!(flows_of(&b, NAME), Some(0));
        finish(&mut b);
    }
}

#[test]
fn damaged_blobs_never_fail_the_vm_restore_by_default() {
    let (mut a, _, _, blobs) = source(5);
    finish(&mut a);
    let damage: [fn(&mut Vec<u8>); 4] = [
        |b| b.truncate(3),
        |b| b.iter_mut().for_each(|x| *x = 0xFF),
        |b| b.truncate(b.len() - 1),
        |b| b[0] ^= 0x55,
    ];
    for (k, d) in damage.iter().enumerate() {
        for mode in [RestoreMode::Pending, RestoreMode::Synchronous] {
            let (mut b, sb) = destination(mode, 5);
            let mut bad = blobs.clone();
            for (_, blob) in &mut bad {
                d(blob);
            }
            let tickets = b.restore(sb, 5, &bad);
            b.run_deferred();
            assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded, "damage {k}, {mode:?}");
            assert!(b.failed_vm_restores().is_empty());
            assert_eq!(flows_of(&b, NAME), Some(0), "an empty port");
            finish(&mut b);
        }
    }
}

#[test]
fn carried_connections_flow_after_nic_create_before_the_pended_restore_completes() {
    let (mut a, _, inbound, blobs) = source(12);
    finish(&mut a);
    let (mut b, sb) = destination(RestoreMode::Pending, 77);
    // Window 1: NIC created, restore not delivered yet.
    assert_eq!(delivered(&mut b, sb, 77, &inbound[..4]), 4, "NIC created: traffic flows");
    let tickets = b.restore(sb, 77, &blobs);
    assert_eq!(b.vm_restore(&tickets), VmRestore::Pending);
    // Window 2: the restore pends (its work item has not run).
    assert_eq!(delivered(&mut b, sb, 77, &inbound[4..]), 8, "restore pending: traffic flows");
    b.run_deferred();
    assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded);
    assert_eq!(
        b.nic_event(sb, 77, 1, sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT),
        sys::STATUS_SUCCESS
    );
    // Flows seen in the window merge with the restored ones: one flow per connection.
    let states = flow_states(&b, NAME);
    assert_eq!(states.len(), 12, "merged, not duplicated: {states:?}");
    assert!(states.iter().all(|s| *s == FlowState::Established), "{states:?}");
    assert_eq!(delivered(&mut b, sb, 77, &inbound), 12);
    finish(&mut b);
}

#[test]
fn a_restore_failed_by_the_driver_fails_the_whole_vm_restore_and_is_reported() {
    // The opt-in policy (FailBadRestores): an unknown major version fails the restore; the double then
    // fails the VM's restore as the extensible switch does.
    let blob = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/runtime-state/v2.0-future-major.bin"),
    )
    .expect("fixture");
    let strict = vsflow_callout::DriverConfig {
        fail_bad_restores: true,
        ..enforce(RestoreMode::Synchronous)
    };
    let (mut b, sb) = host(2, strict, "SW-B");
    vm_port(&mut b, sb, 5, "6A1B2C3D-0000-4E5F-8A9B-0C1D2E3F4A5B", 1, true);
    let tickets = b.restore(sb, 5, &[(Some(vsflow_callout::keys::PROVIDER), blob)]);
    let VmRestore::Failed(status) = b.vm_restore(&tickets) else {
        panic!("strict policy: the VM's restore fails");
    };
    assert_eq!(b.failed_vm_restores(), vec![(5, status)]);
    finish(&mut b);
}

// ---- Issue 16: a degraded restore never lowers policy ------------------------------------

use vsflow_callout::{DriverConfig, RestoreOutcome, TraceEvent};
use vsflow_core::{AllowRule, Mode, PortCounters, PortRange, Prefix, protocol};
use vsflow_proto::request::{PortRef, Request};
use vsflow_proto::response::{PortInfo, STATUS_RULES_CHANGED};
use vsflow_sim::tools::traffic;

/// The port named `name` as `ListPorts` reports it.
fn port_info(h: &Host, name: &str) -> PortInfo {
    h.list_ports().into_iter().find(|p| p.name.to_string() == name).expect("port listed")
}

fn port_ref(h: &Host, name: &str) -> PortRef {
    port_info(h, name).port
}

/// Sets the port's mode through the IOCTL an operator's tool uses.
fn set_mode(h: &Host, name: &str, mode: Mode) {
    let (status, _) = h.control(&Request::SetPortMode { port: port_ref(h, name), mode }, 64);
    assert_eq!(status, 0, "SetPortMode");
}

/// Replaces the port's rules through the IOCTL, if they are still at `expected`; returns the
/// status.
fn replace_rules(h: &Host, name: &str, expected: u32, rules: &[AllowRule]) -> i32 {
    let mut space = vec![0u8; 24 * rules.len().max(1)];
    let list = vsflow_proto::request::rule_list(rules, &mut space).expect("rules encode");
    let req =
        Request::ReplaceRules { port: port_ref(h, name), expected_version: expected, rules: list };
    h.control(&req, 64).0
}

/// The port's rules through `GetRules`.
fn rules_of(h: &Host, name: &str) -> (u32, Vec<AllowRule>) {
    let (status, bytes) = h.control(&Request::GetRules { port: port_ref(h, name) }, 1 << 16);
    assert_eq!(status, 0, "GetRules");
    let mut rules = Vec::new();
    let version = vsflow_proto::response::decode_rules(&bytes, |r| rules.push(r)).expect("rules");
    (version, rules)
}

/// The port's counter `counter` through `GetCounters`.
fn port_counter(h: &Host, name: &str, counter: &str) -> u64 {
    let (status, bytes) = h.control(&Request::GetCounters { port: Some(port_ref(h, name)) }, 1024);
    assert_eq!(status, 0, "GetCounters");
    let mut values = [0u64; 64];
    let n = vsflow_proto::response::decode_counters(&bytes, &mut values).expect("counters");
    assert_eq!(n, PortCounters::ALL_COUNT);
    let i = PortCounters::ALL_NAMES.iter().position(|c| *c == counter).expect("named");
    values[i]
}

/// An inbound TCP SYN from an outsider to the VM of port 5/77 (`vm` is the traffic module's
/// VM number) on `dport`.
fn outsider_syn(vm: u32, dport: u16, sport: u16) -> vsflow_sim::SimPacket {
    traffic::inbound_syn(
        vsflow_core::IpFamily::V4,
        traffic::remote_addr(vsflow_core::IpFamily::V4, 99, false),
        sport,
        vm,
        dport,
    )
}

/// SSH from the clients the traffic module's allow rule names.
fn ssh_rule() -> AllowRule {
    AllowRule {
        protocol: Some(protocol::TCP),
        local_ports: PortRange::single(22),
        remote: Prefix::Any,
    }
}

fn ssh_syn(vm: u32, sport: u16) -> vsflow_sim::SimPacket {
    traffic::inbound_syn(
        vsflow_core::IpFamily::V4,
        traffic::remote_addr(vsflow_core::IpFamily::V4, 7, true),
        sport,
        vm,
        22,
    )
}

fn future_major() -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/runtime-state/v2.0-future-major.bin"),
    )
    .expect("fixture")
}

/// The restore events host `h` traced.
fn restore_events(h: &Host) -> Vec<TraceEvent> {
    h.trace_events().into_iter().filter(|e| matches!(e, TraceEvent::Restore { .. })).collect()
}

/// Every way a blob can be unusable, by name.
fn unusable_blobs(good: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut flipped = good.to_vec();
    let at = flipped.len() - 20;
    flipped[at] ^= 0x40;
    let mut truncated = good.to_vec();
    truncated.truncate(good.len() / 2);
    vec![
        ("a byte flipped in the flow section", flipped),
        ("truncated", truncated),
        ("empty", Vec::new()),
        ("all 0xFF", vec![0xFF; good.len()]),
        ("an unknown major version", future_major()),
    ]
}

// Fails on main (63e77af): each of these restored a fresh port in DefaultMode (Monitor), so an
// Enforce port became Monitor and an unsolicited SYN to 3389 was delivered.
#[test]
fn an_unusable_blob_never_turns_an_enforce_port_into_monitor() {
    let (mut a, _, _, blobs) = source(5);
    finish(&mut a);
    let good = blobs[0].1.clone();
    for (what, bad) in unusable_blobs(&good) {
        for mode in [RestoreMode::Pending, RestoreMode::Synchronous] {
            // B's default mode is Monitor: what a degraded restore must never fall back to.
            let cfg = DriverConfig { restore_mode: mode, ..DriverConfig::default() };
            let (mut b, sb) = host(2, cfg, "SW-B");
            vm_port(&mut b, sb, 5, NAME, 1, true);
            let tickets = b.restore(sb, 5, &[(blobs[0].0, bad.clone())]);
            b.run_deferred();
            assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded, "{what}: never fails");
            assert_eq!(port_info(&b, NAME).mode, Mode::Enforce, "{what}, {mode:?}");
            let syn = outsider_syn(5, 3389, 40_000);
            assert_eq!(delivered(&mut b, sb, 5, &[syn]), 0, "{what}: an unsolicited SYN");
            assert!(
                restore_events(&b).iter().any(|e| matches!(
                    e,
                    TraceEvent::Restore { outcome: RestoreOutcome::Degraded(_), status: 0, .. }
                )),
                "{what}: traced as degraded"
            );
            assert_eq!(b.driver().stats().restores_empty, 1, "{what}: counted");
            finish(&mut b);
        }
    }
}

// Fails on main (63e77af): the degraded path replaced the port with a fresh one in DefaultMode,
// throwing away the operator's Enforce although port.rs says the operator wins.
#[test]
fn the_operators_settings_made_in_the_window_survive_a_degraded_restore() {
    let (mut a, _, _, blobs) = source(5);
    finish(&mut a);
    let mut bad = blobs;
    let at = bad[0].1.len() - 20;
    bad[0].1[at] ^= 0x40;
    let (mut b, sb) = host(2, DriverConfig::default(), "SW-B");
    vm_port(&mut b, sb, 5, NAME, 1, true);
    set_mode(&b, NAME, Mode::Enforce);
    assert_eq!(replace_rules(&b, NAME, 0, &[ssh_rule()]), 0);
    let tickets = b.restore(sb, 5, &bad);
    b.run_deferred();
    assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded);
    assert_eq!(port_info(&b, NAME).mode, Mode::Enforce, "the operator's mode is kept");
    assert_eq!(rules_of(&b, NAME).1, vec![ssh_rule()], "the operator's rules are kept");
    assert_eq!(delivered(&mut b, sb, 5, &[ssh_syn(5, 41_000)]), 1, "SSH as the operator said");
    assert_eq!(delivered(&mut b, sb, 5, &[outsider_syn(5, 3389, 41_001)]), 0);
    finish(&mut b);
}

// Fails on main (63e77af): a degraded restore installed a fresh port at rules version 0, so a
// tool's replace read at version 1 before the restore was accepted after one newer edit and
// overwrote it (a lost update).
#[test]
fn a_degraded_restore_never_takes_the_rules_version_backwards() {
    let (mut a, _, _, blobs) = source(5);
    finish(&mut a);
    let (mut b, sb) = host(2, DriverConfig::default(), "SW-B");
    vm_port(&mut b, sb, 5, NAME, 1, true);
    assert_eq!(replace_rules(&b, NAME, 0, &[ssh_rule()]), 0);
    let stale = port_info(&b, NAME).rules_version; // a tool reads version 1 here
    assert_eq!(stale, 1);
    assert_eq!(replace_rules(&b, NAME, 1, &[]), 0);
    assert_eq!(replace_rules(&b, NAME, 2, &[ssh_rule()]), 0);
    let before = port_info(&b, NAME).rules_version;
    let tickets = b.restore(sb, 5, &[(blobs[0].0, Vec::new())]);
    b.run_deferred();
    assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded);
    let after = port_info(&b, NAME).rules_version;
    assert!(after >= before, "version {before} -> {after}");
    // A newer edit, then the stale tool: refused, the newer edit stays.
    assert_eq!(replace_rules(&b, NAME, after, &[ssh_rule(), ssh_rule()]), 0);
    assert_eq!(replace_rules(&b, NAME, stale, &[]), STATUS_RULES_CHANGED, "lost update");
    assert_eq!(rules_of(&b, NAME).1.len(), 2);
    finish(&mut b);
}

// Fails on main (63e77af): the source's "minimal blob" for a port it does not track was a
// valid Monitor/no-rules policy, which the destination installed as the VM's policy (applied,
// not counted as degraded).
#[test]
fn a_source_without_state_sends_no_policy_and_the_destination_closes() {
    let cfg = DriverConfig { restore_mode: RestoreMode::Pending, ..DriverConfig::default() };
    let (mut a, sa) = host(1, cfg, "SW-A");
    let (blobs, _) = a.save(sa, 404); // a port vsflow does not track
    finish(&mut a);
    let (mut b, sb) = host(2, DriverConfig::default(), "SW-B");
    vm_port(&mut b, sb, 5, NAME, 1, true);
    let tickets = b.restore(sb, 5, &blobs);
    b.run_deferred();
    assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded);
    assert_eq!(port_info(&b, NAME).mode, Mode::Enforce, "no policy carried: Enforce");
    assert_eq!(delivered(&mut b, sb, 5, &[outsider_syn(5, 3389, 42_000)]), 0);
    assert!(
        matches!(
            restore_events(&b).as_slice(),
            [TraceEvent::Restore { outcome: RestoreOutcome::Degraded(_), status: 0, .. }]
        ),
        "{:?}",
        restore_events(&b)
    );
    assert_eq!(port_counter(&b, NAME, "restores_empty"), 1);
    finish(&mut b);
}

// Fails on main (63e77af): with the restore pended past RestoreWindowSeconds the first packet
// closed the window, so when the work item ran the blob's SSH allow (which the operator had
// removed while the restore was pending) came back.
#[test]
fn an_operator_change_made_while_the_restore_is_pended_survives_a_late_work_item() {
    let (mut a, sa) = host(1, enforce(RestoreMode::Pending), "SW-A");
    vm_port(&mut a, sa, 10, NAME, 1, false);
    assert_eq!(replace_rules(&a, NAME, 0, &[ssh_rule()]), 0);
    let _ = open_connections(&mut a, sa, 10, 3);
    let (blobs, _) = a.save(sa, 10);
    finish(&mut a);
    let cfg = DriverConfig { restore_window_secs: 1, ..enforce(RestoreMode::Pending) };
    let (mut b, sb) = host(2, cfg, "SW-B");
    vm_port(&mut b, sb, 5, NAME, 1, true);
    let tickets = b.restore(sb, 5, &blobs);
    assert_eq!(b.vm_restore(&tickets), VmRestore::Pending);
    // The operator removes SSH while the restore is pending.
    let v = port_info(&b, NAME).rules_version;
    assert_eq!(replace_rules(&b, NAME, v, &[]), 0);
    // The work item is late: RestoreWindowSeconds pass, packets flow, the timer ticks.
    b.advance(5 * vsflow_core::TICKS_PER_SECOND);
    let _ = delivered(&mut b, sb, 5, &[outsider_syn(5, 80, 43_000)]);
    let _ = b.within(|| b.driver().expire_idle(16));
    b.run_deferred();
    assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded);
    assert_eq!(rules_of(&b, NAME).1, Vec::<AllowRule>::new(), "the operator's removal stands");
    assert_eq!(delivered(&mut b, sb, 5, &[ssh_syn(5, 43_001)]), 0, "SSH stays blocked");
    finish(&mut b);
}

// ---- Issue 16: blob identity and the save counters -----------------------------------------

/// `blob` with the second counter it carries (`packets_blocked`) changed and the first four
/// bytes of the first (`packets_permitted`) chosen so that the CRC-32C (and the length) stay
/// those of `blob`: another valid blob with the same CRC and length. (The counters lie after
/// the policy and its own check.)
fn same_crc_other_counters(blob: &[u8]) -> Vec<u8> {
    let units = usize::from(u16::from_le_bytes([blob[36], blob[37]]));
    let mut at = 40 + 2 * units;
    let mut counters_at = None;
    while at + 8 <= blob.len() - 4 {
        let kind = u16::from_le_bytes([blob[at], blob[at + 1]]);
        let len = u32::from_le_bytes(blob[at + 4..at + 8].try_into().unwrap()) as usize;
        if kind == 5 {
            counters_at = Some(at + 8 + 2);
        }
        at += 8 + len;
    }
    let free = counters_at.expect("COUNTERS");
    let body = blob.len() - 4;
    let crc = |b: &[u8]| vsflow_core::codec::crc32c(&b[..body]);
    let mut out = blob.to_vec();
    out[free + 8] ^= 0x01;
    // CRC-32C is affine: solve for the 32 bits at `free` that cancel the change.
    let target = crc(&out) ^ crc(blob);
    let syndrome = |bit: usize| {
        let mut m = out.clone();
        m[free + bit / 8] ^= 1 << (bit % 8);
        crc(&m) ^ crc(&out)
    };
    let mut rows: Vec<(u32, u32)> = (0..32).map(|i| (syndrome(i), 1u32 << i)).collect();
    let mut want = (target, 0u32);
    for bit in (0..32).rev() {
        let Some(p) = rows.iter().position(|r| r.0 >> bit & 1 == 1) else { continue };
        let pivot = rows.remove(p);
        for r in &mut rows {
            if r.0 >> bit & 1 == 1 {
                *r = (r.0 ^ pivot.0, r.1 ^ pivot.1);
            }
        }
        if want.0 >> bit & 1 == 1 {
            want = (want.0 ^ pivot.0, want.1 ^ pivot.1);
        }
    }
    assert_eq!(want.0, 0, "solvable");
    for i in 0..32 {
        if want.1 >> i & 1 == 1 {
            out[free + i / 8] ^= 1 << (i % 8);
        }
    }
    assert_eq!(crc(&out), crc(blob));
    assert_eq!(out[body..], blob[body..], "the same CRC trailer");
    out
}

// Fails on main (63e77af): a restore was recognised as "the same blob again" by its CRC-32C and
// length, so a different blob with the same CRC and length was ignored, and traced as applied;
// the true repeat was traced as applied too.
#[test]
fn a_blob_is_recognised_by_its_contents_not_its_crc_and_a_repeat_is_not_traced_as_applied() {
    let monitor =
        DriverConfig { restore_mode: RestoreMode::Synchronous, ..DriverConfig::default() };
    let (mut a, sa) = host(1, monitor, "SW-A");
    vm_port(&mut a, sa, 10, NAME, 1, false);
    let _ = open_connections(&mut a, sa, 10, 3);
    let (blobs, _) = a.save(sa, 10);
    finish(&mut a);
    let (provider, first) = blobs[0].clone();
    let other = same_crc_other_counters(&first);
    assert_ne!(first, other);

    let (mut b, sb) = host(2, enforce(RestoreMode::Synchronous), "SW-B");
    vm_port(&mut b, sb, 5, NAME, 1, true);
    let t = b.restore(sb, 5, &[(provider, first.clone())]);
    assert_eq!(b.vm_restore(&t), VmRestore::Succeeded);
    assert_eq!(port_counter(&b, NAME, "restores"), 1);
    // The same blob again: nothing changes, and the trace does not call it applied.
    let t = b.restore(sb, 5, &[(provider, first)]);
    assert_eq!(b.vm_restore(&t), VmRestore::Succeeded);
    let events = restore_events(&b);
    assert!(
        !matches!(
            events.last(),
            Some(TraceEvent::Restore { outcome: RestoreOutcome::Applied, .. })
        ),
        "a repeat is not applied: {events:?}"
    );
    assert_eq!(port_counter(&b, NAME, "restores"), 1, "a repeat changes nothing");
    // Another blob with the same CRC and length is another blob: applied.
    let t = b.restore(sb, 5, &[(provider, other)]);
    assert_eq!(b.vm_restore(&t), VmRestore::Succeeded);
    assert!(
        matches!(
            restore_events(&b).last(),
            Some(TraceEvent::Restore { outcome: RestoreOutcome::Applied, .. })
        ),
        "{:?}",
        restore_events(&b)
    );
    assert_eq!(port_counter(&b, NAME, "restores"), 2, "the second blob was applied");
    finish(&mut b);
}

// Fails on main (63e77af): `save_fingerprinted` stayed 0 after saves that fingerprinted
// connections, and the blob carried the counters from before its own save, so `saves` never
// counted the migrations.
#[test]
fn the_save_counters_count_every_save_and_every_fingerprinted_connection() {
    let cfg = DriverConfig { blob_cap: 2048, ..enforce(RestoreMode::Synchronous) };
    let mut hosts = [host(1, cfg, "SW-A"), host(2, cfg, "SW-B")];
    let ids = [10u32, 20];
    {
        let (h, sw) = &mut hosts[0];
        vm_port(h, *sw, ids[0], NAME, 1, false);
        let _ = open_connections(h, *sw, ids[0], 300);
    }
    let mut fingerprinted = 0u64;
    for hop in 0..10usize {
        let (from, to) = (hop % 2, (hop + 1) % 2);
        let (blobs, _) = {
            let (h, sw) = &hosts[from];
            h.save(*sw, ids[from])
        };
        let (h, _) = &hosts[from];
        let Some(TraceEvent::Save { flows_fingerprinted, .. }) =
            h.trace_events().into_iter().rfind(|e| matches!(e, TraceEvent::Save { .. }))
        else {
            panic!("a Save event");
        };
        fingerprinted += u64::from(flows_fingerprinted);
        let saves = hop as u64 + 1;
        assert_eq!(port_counter(h, NAME, "saves"), saves, "the source after save {saves}");
        assert_eq!(port_counter(h, NAME, "save_fingerprinted"), fingerprinted, "save {saves}");
        {
            let (h, sw) = &mut hosts[to];
            vm_port(h, *sw, ids[to], NAME, 1, true);
            let t = h.restore(*sw, ids[to], &blobs);
            assert_eq!(h.vm_restore(&t), VmRestore::Succeeded);
            assert_eq!(port_counter(h, NAME, "saves"), saves, "carried to the destination");
        }
        let (h, sw) = &mut hosts[from];
        assert_eq!(h.delete_port(*sw, ids[from]), sys::STATUS_SUCCESS);
    }
    assert!(fingerprinted > 0, "a 2,048-byte cap fingerprints most of 300 connections");
    for (h, _) in &mut hosts {
        finish(h);
    }
}

// ---- Issue 16: idle time survives a migration to a host that booted recently --------------

// Fails on main (63e77af): ages were rebased on the destination's clock and clamped at 0, so on
// a host up for a few seconds a UDP flow idle 65 s (timeout 60 s) and a TCP connection idle
// over 2 h still admitted the peer.
#[test]
fn an_idle_flow_expires_on_time_on_a_destination_that_booted_recently() {
    use vsflow_core::{IpFamily, TICKS_PER_SECOND as S};
    let (mut a, sa) = host(1, enforce(RestoreMode::Synchronous), "SW-A");
    a.advance(3 * 3600 * S); // A has been up for hours
    vm_port(&mut a, sa, 10, NAME, 1, false);
    let inbound = open_connections(&mut a, sa, 10, 1);
    a.advance(7_190 * S); // the connection idles 2 h minus 10 s
    let query = vsflow_sim::SimPacket::new(
        IpFamily::V4,
        protocol::UDP,
        traffic::vm_addr(IpFamily::V4, 10),
        5353,
        traffic::remote_addr(IpFamily::V4, 53, false),
        53,
        0,
        40,
    );
    assert_eq!(
        traffic::udp_exchange(&mut a, sa, 10, &query),
        [vsflow_sim::PacketFate::Delivered; 2]
    );
    a.advance(50 * S); // the UDP flow idles 50 s of its 60 s
    let (blobs, _) = a.save(sa, 10);
    finish(&mut a);

    // B booted 5 s ago.
    let (mut b, sb) = host(2, enforce(RestoreMode::Synchronous), "SW-B");
    b.advance(5 * S);
    vm_port(&mut b, sb, 5, NAME, 1, true);
    let t = b.restore(sb, 5, &blobs);
    assert_eq!(b.vm_restore(&t), VmRestore::Succeeded);
    b.advance(15 * S); // UDP idle 65 s, TCP idle 2 h + 5 s
    let reply = query.reply(0, 100);
    let tcp = &inbound[0];
    assert_eq!(delivered(&mut b, sb, 5, std::slice::from_ref(&reply)), 0, "UDP expired");
    assert_eq!(delivered(&mut b, sb, 5, std::slice::from_ref(tcp)), 0, "TCP expired");
    finish(&mut b);
}

// ---- Issue 16: format 1.2 (policy checked on its own), fingerprints, pended saves ----------

/// Host A (Enforce, an SSH rule) with port 10 carrying `vm` VM connections and `ssh` peer
/// connections admitted by the SSH rule, saved under blob cap `cap`; returns the blobs and the
/// peer's next packet of each VM connection and each SSH connection.
fn source_with_ssh(
    vm: u16,
    ssh: u16,
    cap: usize,
) -> (Vec<vsflow_sim::host::SavedBlob>, Vec<vsflow_sim::SimPacket>, Vec<vsflow_sim::SimPacket>) {
    let cfg = DriverConfig { blob_cap: cap, flows_per_port: 8192, ..enforce(RestoreMode::Pending) };
    let (mut a, sa) = host(1, cfg, "SW-A");
    vm_port(&mut a, sa, 10, NAME, 1, false);
    assert_eq!(replace_rules(&a, NAME, 0, &[ssh_rule()]), 0);
    // The SSH connections first: the least recently active, so the cap fingerprints them.
    let ssh_in: Vec<_> = (0..ssh)
        .map(|k| {
            a.advance(10_000);
            let (fates, data) =
                traffic::inbound_handshake(&mut a, sa, 10, &ssh_syn(10, 50_000 + k));
            assert_eq!(fates, [vsflow_sim::PacketFate::Delivered; 3], "SSH {k}");
            data
        })
        .collect();
    let vm_in = open_connections(&mut a, sa, 10, vm);
    let (blobs, _) = a.save(sa, 10);
    finish(&mut a);
    (blobs, vm_in, ssh_in)
}

// Fails on main (f0d045f): a blob damaged in its flow section lost the VM's rules too (the
// port enforced with no rules: SSH, which the VM's rules admit, was blocked). Format 1.2
// checks the mode and rules on their own.
#[test]
fn a_blob_damaged_in_its_flow_section_keeps_the_vms_mode_and_rules() {
    let (blobs, _, _) = source_with_ssh(20, 0, 61_440);
    let mut bad = blobs;
    let at = bad[0].1.len() - 20;
    bad[0].1[at] ^= 0x40;
    let (mut b, sb) = host(2, DriverConfig::default(), "SW-B");
    vm_port(&mut b, sb, 5, NAME, 1, true);
    let tickets = b.restore(sb, 5, &bad);
    b.run_deferred();
    assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded);
    assert_eq!(port_info(&b, NAME).mode, Mode::Enforce, "the VM's mode");
    assert_eq!(rules_of(&b, NAME).1, vec![ssh_rule()], "the VM's rules survived the damage");
    assert_eq!(delivered(&mut b, sb, 5, &[ssh_syn(5, 44_000)]), 1, "SSH as the VM's rules say");
    assert_eq!(delivered(&mut b, sb, 5, &[outsider_syn(5, 3389, 44_001)]), 0);
    assert_eq!(b.driver().stats().restores_empty, 1, "counted as degraded");
    finish(&mut b);
}

// Fails on main (f0d045f): a peer's connection admitted by a rule and carried as a fingerprint
// was picked up as VM-admitted on B, so it survived B removing every rule.
#[test]
fn a_rule_admitted_connection_is_never_carried_as_a_vm_admitted_fingerprint() {
    let (blobs, vm_in, ssh_in) = source_with_ssh(300, 40, 2048);
    let (mut b, sb) =
        host(2, DriverConfig { flows_per_port: 8192, ..enforce(RestoreMode::Pending) }, "SW-B");
    vm_port(&mut b, sb, 77, NAME, 1, true);
    let tickets = b.restore(sb, 77, &blobs);
    b.run_deferred();
    assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded);
    // Each SSH connection resumes with the VM's packet first (an outbound pickup), then the
    // operator removes every rule: A would now block the peers; so must B.
    for p in &ssh_in {
        let out = p.reply(traffic::tcp::ACK, 100);
        let _ = b.transmit(sb, 77, vsflow_sim::host::EXTERNAL_PORT, &out);
    }
    let v = port_info(&b, NAME).rules_version;
    assert_eq!(replace_rules(&b, NAME, v, &[]), 0);
    assert_eq!(delivered(&mut b, sb, 77, &ssh_in), 0, "no rule admits SSH any more");
    assert_eq!(delivered(&mut b, sb, 77, &vm_in), vm_in.len(), "the VM's own connections pass");
    finish(&mut b);
}

// Fails on main (f0d045f): a save while B's restore was still pended encoded B's empty port (0
// flows, a Monitor policy), so C received nothing of the VM's state.
#[test]
fn a_save_while_the_restore_is_pended_carries_the_pended_state() {
    let (blobs, vm_in, ssh_in) = source_with_ssh(30, 5, 61_440);
    let (mut b, sb) = host(2, enforce(RestoreMode::Pending), "SW-B");
    vm_port(&mut b, sb, 77, NAME, 1, true);
    let tickets = b.restore(sb, 77, &blobs);
    assert_eq!(b.vm_restore(&tickets), VmRestore::Pending, "the work item has not run");
    let (onward, _) = b.save(sb, 77);
    assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded, "the save completed the restore");
    let (mut c, sc) = host(3, DriverConfig::default(), "SW-C");
    vm_port(&mut c, sc, 9, NAME, 1, true);
    let t = c.restore(sc, 9, &onward);
    c.run_deferred();
    assert_eq!(c.vm_restore(&t), VmRestore::Succeeded);
    assert_eq!(port_info(&c, NAME).mode, Mode::Enforce, "the VM's mode reached C");
    assert_eq!(rules_of(&c, NAME).1, vec![ssh_rule()], "and its rules");
    assert_eq!(delivered(&mut c, sc, 9, &vm_in), vm_in.len(), "every connection reached C");
    assert_eq!(delivered(&mut c, sc, 9, &ssh_in), ssh_in.len());
    finish(&mut b);
    finish(&mut c);
}

#[test]
fn a_restore_blob_longer_than_the_documented_maximum_is_refused_before_it_is_copied() {
    // docs/runtime-state-format.md: a blob is at most 65,535 bytes. A longer one (a hostile or
    // broken source) is refused before the driver copies it: no allocation of its size, not
    // pended, the port degraded (the VM's restore succeeds), counted.
    use vsflow_sim::kernel::alloc::{largest_driver_block, reset_largest_driver_block};
    for mode in [RestoreMode::Pending, RestoreMode::Synchronous] {
        let (mut b, sb) = destination(mode, 9);
        let huge = vec![0x5Au8; 200_000];
        reset_largest_driver_block(b.id());
        let tickets = b.restore(sb, 9, &[(Some(vsflow_callout::keys::PROVIDER), huge)]);
        let largest = largest_driver_block(b.id());
        assert!(largest <= 65_535, "{mode:?}: the driver allocated {largest} bytes: it copied");
        assert_eq!(tickets[0].returned, sys::STATUS_SUCCESS, "{mode:?}: refused at once");
        assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded);
        assert_eq!(b.driver().stats().restores_empty, 1, "{mode:?}: counted as degraded");
        assert_eq!(b.driver().stats().restores_oversized, 1, "{mode:?}: counted as oversized");
        assert!(
            b.trace_events().iter().any(|e| matches!(
                e,
                vsflow_callout::TraceEvent::Restore {
                    port: 9,
                    bytes: 200_000,
                    outcome: vsflow_callout::RestoreOutcome::Degraded(
                        vsflow_callout::DegradedReason::Oversized
                    ),
                    ..
                }
            )),
            "{mode:?}: traced"
        );
        finish(&mut b);
    }
}

#[test]
fn an_unknown_major_under_the_default_strict_policy_does_not_fail_the_vm() {
    // What the INF's UnknownMajorPolicy comment says: 0 (strict, the default) and 1 (lenient)
    // differ only in how the decode reports the blob; either way the VM's restore succeeds
    // (degraded) unless FailBadRestores = 1.
    let blob = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/runtime-state/v2.0-future-major.bin"),
    )
    .expect("fixture");
    for policy in
        [vsflow_core::codec::UnknownMajor::Strict, vsflow_core::codec::UnknownMajor::Lenient]
    {
        let config = vsflow_callout::DriverConfig {
            unknown_major: policy,
            ..enforce(RestoreMode::Synchronous)
        };
        let (mut b, sb) = host(2, config, "SW-B");
        vm_port(&mut b, sb, 5, "6A1B2C3D-0000-4E5F-8A9B-0C1D2E3F4A5B", 1, true);
        let tickets = b.restore(sb, 5, &[(Some(vsflow_callout::keys::PROVIDER), blob.clone())]);
        assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded, "{policy:?}");
        assert_eq!(b.driver().stats().restores_empty, 1, "{policy:?}: degraded");
        finish(&mut b);
    }
}

// Fails on main (726e666): a second migration before the VM's traffic resumed (A -> B -> C)
// carried only B's exact records: the connections that travelled A -> B as fingerprints, still
// pending on B, were lost.
#[test]
fn a_second_migration_carries_the_fingerprints_still_pending() {
    let (blobs, vm_in, _) = source_with_ssh(300, 0, 2048);
    let cfg =
        DriverConfig { blob_cap: 2048, flows_per_port: 8192, ..enforce(RestoreMode::Pending) };
    let (mut b, sb) = host(2, cfg, "SW-B");
    vm_port(&mut b, sb, 77, NAME, 1, true);
    let t = b.restore(sb, 77, &blobs);
    b.run_deferred();
    assert_eq!(b.vm_restore(&t), VmRestore::Succeeded);
    assert!(port_counter(&b, NAME, "restored_fingerprints") > 200, "most travel as fingerprints");
    // B saves before any of the VM's traffic resumed.
    b.advance(vsflow_core::TICKS_PER_SECOND);
    let (onward, _) = b.save(sb, 77);
    let (mut c, sc) = host(3, cfg, "SW-C");
    vm_port(&mut c, sc, 9, NAME, 1, true);
    let t = c.restore(sc, 9, &onward);
    c.run_deferred();
    assert_eq!(c.vm_restore(&t), VmRestore::Succeeded);
    assert_eq!(delivered(&mut c, sc, 9, &vm_in), vm_in.len(), "every connection reached C");
    finish(&mut b);
    finish(&mut c);
}

// Fails on main (8a6beaa): a restore whose switch parameters vsflow cannot read (a switch name of
// odd byte length) failed with STATUS_INVALID_PARAMETER, which fails the VM's whole restore;
// only FailBadRestores may fail one.
#[test]
fn a_restore_with_unreadable_switch_parameters_never_fails_the_vm() {
    let (mut b, sb) = host(2, DriverConfig::default(), "SW-B");
    vm_port(&mut b, sb, 5, NAME, 1, true);
    let mut params: sys::NDIS_SWITCH_PARAMETERS =
        // SAFETY: plain data; all zeroes is a valid (empty) value.
        unsafe { std::mem::zeroed() };
    params.SwitchName.Length = 3; // not a whole number of UTF-16 units
    let status = b.within(|| b.driver().on_restore(std::ptr::null_mut(), &params, 5, &[]));
    assert_eq!(status, sys::STATUS_SUCCESS, "the VM's restore does not fail");
    assert!(
        restore_events(&b).iter().any(|e| matches!(
            e,
            TraceEvent::Restore { outcome: RestoreOutcome::Degraded(_), status: 0, .. }
        )),
        "counted and traced as degraded: {:?}",
        restore_events(&b)
    );
    assert_eq!(b.driver().stats().restores_unknown_port, 1);
    finish(&mut b);
}

// Fails on main (072fa57): after a degraded restore no fingerprint is armed, so the VM's first
// mid-stream segment of a peer's connection the blob could not carry opened a VM-admitted flow:
// the peer's SSH connection, admitted by a rule on A, survived B removing every rule (A would
// have cut it). As while fingerprints are armed, the VM's mid-stream segment of a connection
// nothing carried opens a flow whose return traffic the rules judge, for PickupWindowSeconds.
#[test]
fn a_peers_connection_lost_to_a_degraded_restore_never_becomes_the_vms() {
    let (blobs, _vm_in, ssh_in) = source_with_ssh(20, 10, 61_440);
    let mut bad = blobs;
    let at = bad[0].1.len() - 20;
    bad[0].1[at] ^= 0x40;
    let (mut b, sb) = host(2, enforce(RestoreMode::Pending), "SW-B");
    vm_port(&mut b, sb, 77, NAME, 1, true);
    let tickets = b.restore(sb, 77, &bad);
    b.run_deferred();
    assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded);
    assert_eq!(b.driver().stats().restores_empty, 1, "degraded: no flows carried");
    assert_eq!(rules_of(&b, NAME).1, vec![ssh_rule()], "the VM's rules survived the damage");
    // Each SSH connection resumes with the VM's packet first; the SSH rule admits the peers.
    for p in &ssh_in {
        let out = p.reply(traffic::tcp::ACK, 100);
        let _ = b.transmit(sb, 77, vsflow_sim::host::EXTERNAL_PORT, &out);
    }
    assert_eq!(delivered(&mut b, sb, 77, &ssh_in), ssh_in.len(), "the rule admits them");
    // The operator removes every rule: A would now block the peers; so must B.
    let v = port_info(&b, NAME).rules_version;
    assert_eq!(replace_rules(&b, NAME, v, &[]), 0);
    assert_eq!(delivered(&mut b, sb, 77, &ssh_in), 0, "no rule admits SSH any more");
    finish(&mut b);
}

// Fails on main (0a6f9c3): with loose pickup on (the documented opt-in: a mid-stream segment of
// an unknown connection is taken as the VM's), a connection the VM resumed first after a degraded
// restore was judged by the rules (the judging of uncarried connections ignored loose pickup),
// so its peer's packets were blocked, while the same connection resumed by the peer first was
// picked up loosely. In the loose window the VM's own segment opens the VM's flow, as before.
#[test]
fn with_loose_pickup_the_vm_resumes_its_connections_after_a_degraded_restore() {
    let (blobs, vm_in, _) = source_with_ssh(12, 0, 61_440);
    let mut bad = blobs;
    let at = bad[0].1.len() - 20;
    bad[0].1[at] ^= 0x40;
    let cfg = DriverConfig { loose_pickup: true, ..enforce(RestoreMode::Pending) };
    let (mut b, sb) = host(2, cfg, "SW-B");
    vm_port(&mut b, sb, 77, NAME, 1, true);
    let tickets = b.restore(sb, 77, &bad);
    b.run_deferred();
    assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded);
    assert_eq!(b.driver().stats().restores_empty, 1, "degraded: no flows carried");
    for p in &vm_in {
        let out = p.reply(traffic::tcp::ACK, 100);
        let _ = b.transmit(sb, 77, vsflow_sim::host::EXTERNAL_PORT, &out);
    }
    assert_eq!(delivered(&mut b, sb, 77, &vm_in), vm_in.len(), "loose pickup: the VM's own");
    finish(&mut b);
}

// Fails on main (464ad64): a server VM whose connections peers opened (admitted by a rule, so
// never fingerprinted) and that the cap left out arms no fingerprint on B; the VM's mid-stream
// segment of such a lost connection then opened a VM-admitted flow, which survived B removing
// every rule (A cuts it). For the pickup window after any restore, the VM's segment of a
// connection nothing carried opens a flow whose return traffic the rules judge.
#[test]
fn a_peers_connection_the_cap_left_out_never_becomes_the_vms() {
    let (blobs, _, ssh_in) = source_with_ssh(0, 300, 2048);
    let (mut b, sb) =
        host(2, DriverConfig { flows_per_port: 8192, ..enforce(RestoreMode::Pending) }, "SW-B");
    vm_port(&mut b, sb, 77, NAME, 1, true);
    let tickets = b.restore(sb, 77, &blobs);
    b.run_deferred();
    assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded);
    let flows = flows_of(&b, NAME).expect("port");
    assert!(flows < ssh_in.len(), "the cap left connections out ({flows} carried)");
    for p in &ssh_in {
        let out = p.reply(traffic::tcp::ACK, 100);
        let _ = b.transmit(sb, 77, vsflow_sim::host::EXTERNAL_PORT, &out);
    }
    assert_eq!(delivered(&mut b, sb, 77, &ssh_in), ssh_in.len(), "the SSH rule admits them");
    let v = port_info(&b, NAME).rules_version;
    assert_eq!(replace_rules(&b, NAME, v, &[]), 0);
    assert_eq!(delivered(&mut b, sb, 77, &ssh_in), 0, "no rule admits SSH any more");
    finish(&mut b);
}

/// A pended restore's wait counts as idle time: its flows are decoded straight into the port's
/// future table with their ages counted from the callback (issue 18 item 4, fifth session), so
/// a connection that idled past its timeout while the work item was late arrives expired (the
/// source's idle time plus the wait), and one that did not arrives live.
#[test]
fn a_pended_restores_wait_ages_its_flows_as_idle_time() {
    let established = 2 * 60 * 60 * vsflow_core::TICKS_PER_SECOND;
    for (wait, live) in
        [(established - 600 * vsflow_core::TICKS_PER_SECOND, true), (established, false)]
    {
        let (mut a, _, _, blobs) = source(5);
        finish(&mut a);
        let (mut b, sb) = destination(RestoreMode::Pending, 5);
        let tickets = b.restore(sb, 5, &blobs);
        assert_eq!(b.vm_restore(&tickets), VmRestore::Pending);
        b.advance(wait);
        b.run_deferred();
        assert_eq!(b.vm_restore(&tickets), VmRestore::Succeeded, "never fails the VM");
        assert_eq!(
            flows_of(&b, NAME),
            Some(if live { 5 } else { 0 }),
            "a wait of {} s: the five connections {}",
            wait / vsflow_core::TICKS_PER_SECOND,
            if live { "arrive live" } else { "arrive expired" }
        );
        finish(&mut b);
    }
}
