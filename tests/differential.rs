//! Issue 16, item 1: the differential harness (`vsflow_sim::tools::differential`), case by case.
//!
//! Each case sends the same traffic, packet by packet, through host A where the VM stayed and
//! through host B after a live migration, and fails on any verdict that differs unless it is a
//! documented, counted false admission (a mid-stream TCP segment picked up by a carried
//! fingerprint, or admitted in the restore window, or by opt-in loose pickup). The cases that
//! fail on main are the failing-first tests of fc-pickup's and fc-restore's fixes: they are
//! ignored with the reason and the owner until the fix lands (docs/SECURITY.md lists each with
//! the commit it failed on and the commit that made it pass). `vsflow-sim differential` runs
//! the same catalogue with larger counts.

use vsflow_core::Mode;
use vsflow_sim::tools::differential::{Arrival, Options, Report, Run, Setup, run_case};

/// The CI options: a 20,000-packet spray, 3,000 connections of which about 2,300 travel as
/// fingerprints (16 KiB blobs).
fn opts() -> Options {
    Options::default()
}

fn case(name: &str) -> Report {
    let r = run_case(name, &opts()).unwrap_or_else(|| panic!("no case {name}"));
    eprintln!("{}", r.to_text());
    r
}

fn passes(name: &str) {
    let r = case(name);
    assert!(r.passed(), "{}", r.to_text());
    assert!(r.empty_classes().is_empty(), "classes without traffic: {:?}", r.empty_classes());
}

// ---- The harness itself: it sees an opening and a loss --------------------------------------

#[test]
fn the_harness_catches_a_destination_that_opens_and_one_that_loses_connections() {
    let mut run = Run::start("self-test", Setup::default());
    run.migrate(Arrival::Intact);
    run.complete_restore();
    // B's operator turns Monitor on: every outsider's SYN B admits is an opening.
    run.destination_mode(Mode::Monitor);
    run.class("outsiders, B in Monitor");
    for n in 0..10 {
        let p = run.outsider(
            vsflow_core::IpFamily::V4,
            vsflow_core::protocol::TCP,
            n,
            3389,
            vsflow_sim::tools::traffic::tcp::SYN,
        );
        run.inbound(&p, vsflow_sim::tools::differential::Origin::Adversary);
    }
    run.class("carried connections");
    run.resume_all();
    let r = run.finish();
    let opened = r.class("outsiders, B in Monitor");
    assert_eq!((opened.opened, opened.new_inbound_connections), (10, 10), "{}", r.to_text());
    assert!(!r.passed());
    assert_eq!(r.class("carried connections").differing, 0, "{}", r.to_text());

    // In the window, a B in Monitor admits every segment: the first 4 of a 5-tuple are what
    // the window documents, the rest open the firewall; after the VM's reset, anything does.
    let mut run = Run::start("self-test-cap", Setup::default());
    run.migrate(Arrival::Intact);
    run.destination_mode(Mode::Monitor);
    run.guest_silent(true);
    run.class("eight ACKs, B in Monitor");
    let ack = run.outsider(
        vsflow_core::IpFamily::V4,
        vsflow_core::protocol::TCP,
        7,
        3389,
        vsflow_sim::tools::traffic::tcp::ACK,
    );
    for _ in 0..8 {
        run.inbound(&ack, vsflow_sim::tools::differential::Origin::Adversary);
    }
    run.guest_silent(false);
    run.class("after the VM's reset, B in Monitor");
    let other = run.outsider(
        vsflow_core::IpFamily::V4,
        vsflow_core::protocol::TCP,
        8,
        3389,
        vsflow_sim::tools::traffic::tcp::ACK,
    );
    run.inbound(&other, vsflow_sim::tools::differential::Origin::Adversary);
    run.inbound(&other, vsflow_sim::tools::differential::Origin::Adversary);
    let r = run.finish();
    let capped = r.class("eight ACKs, B in Monitor");
    assert_eq!((capped.window_admissions, capped.opened), (4, 4), "{}", r.to_text());
    let refused = r.class("after the VM's reset, B in Monitor");
    assert_eq!((refused.window_admissions, refused.opened), (1, 1), "{}", r.to_text());

    // B never receives the state (no restore, DefaultMode Enforce on B): the VM's connections
    // are lost, and the harness says so.
    let mut run = Run::start(
        "self-test-loss",
        Setup {
            destination_registry: vec![("DefaultMode", 1), ("RestoreWindowSeconds", 1)],
            ..Setup::default()
        },
    );
    run.migrate(Arrival::Nothing);
    run.advance(2 * vsflow_core::TICKS_PER_SECOND);
    run.class("carried connections");
    run.resume_all();
    let r = run.finish();
    let lost = r.class("carried connections");
    assert!(lost.lost_connections > 0 && !lost.passed(), "{}", r.to_text());
}

// ---- Passing on main --------------------------------------------------------------------------

#[test]
fn legitimate_traffic_carried_exactly_by_fingerprint_and_in_the_window_is_judged_alike() {
    passes("legit");
}

#[test]
fn a_pickup_window_spray_of_every_protocol_opens_nothing_and_costs_no_connection() {
    let r = case("spray");
    assert!(r.passed(), "{}", r.to_text());
    let sprayed: u64 =
        r.classes.iter().filter(|c| c.name.starts_with("spray: ")).map(|c| c.packets).sum();
    assert_eq!(sprayed, opts().spray);
    assert!(r.fingerprints > 2_000, "the port carries fingerprints: {}", r.to_text());
}

#[test]
fn an_operator_change_in_the_window_wins_when_the_restore_completes_in_time() {
    passes("operator-window");
}

#[test]
fn packets_without_ports_are_judged_alike_on_both_hosts() {
    passes("portless");
}

// ---- fc-pickup (items 2, 4, 5, 7) -------------------------------------------------------------
// Failed on main 1866301 (the reasons were the `#[ignore]` messages: SYNs after a pickup, a
// Monitor restore window, an outsider filling the window's table, hidden SYNs picked up,
// portless first fragments waved through, UDP on a TCP fingerprint, loose pickup without a
// restore); pass since 73956ae (fc-pickup).

#[test]
fn a_syn_on_a_picked_up_tuple_is_judged_as_a_new_connection() {
    passes("syn-after-pickup");
}

#[test]
fn a_syn_overlapping_a_picked_up_first_fragment_opens_no_connection() {
    passes("overlapping-fragments");
}

#[test]
fn the_restore_window_admits_no_syn_and_no_unsolicited_udp() {
    passes("restore-window");
}

#[test]
fn an_outsider_cannot_fill_the_table_in_the_restore_window() {
    passes("window-table-fill");
}

#[test]
fn a_port_that_never_receives_its_restore_enforces_in_the_window() {
    passes("no-restore");
}

#[test]
fn syns_with_unreadable_flags_are_not_picked_up_by_fingerprint() {
    passes("unreadable-flags");
}

#[test]
fn syns_with_unreadable_flags_are_not_picked_up_loosely() {
    passes("unreadable-flags-loose");
}

#[test]
fn a_first_fragment_without_ports_is_judged_in_enforce() {
    let r = case("portless");
    assert_eq!(
        r.class("first fragments cut before the ports (TCP SYN, UDP)").reference_admitted,
        0,
        "{}",
        r.to_text()
    );
}

/// Review of issue 16 (residuals): an ICMP error's quote read from the frame's trailer, and a
/// later fragment rewriting an admitted error's quote, were admitted on host A and B alike (the
/// comparison alone cannot see them: A is the reference here). Failing first: 7d74726, 7a4514a.
#[test]
fn icmp_errors_quoting_past_the_datagram_or_overlapped_by_a_later_fragment_admit_nothing() {
    let r = case("icmp-quotes");
    assert!(r.passed(), "{}", r.to_text());
    assert!(r.empty_classes().is_empty(), "classes without traffic: {:?}", r.empty_classes());
    for class in [
        "errors quoting carried connections from the frame's trailer",
        "later fragments at bytes 8-184, over the admitted error's quote",
    ] {
        assert_eq!(r.class(class).reference_admitted, 0, "{class}: {}", r.to_text());
    }
}

#[test]
fn a_udp_datagram_on_a_tcp_fingerprint_key_is_not_picked_up() {
    passes("udp-on-tcp-fingerprint");
}

#[test]
fn the_vms_udp_never_uses_up_a_tcp_connections_fingerprint() {
    passes("vm-udp-on-tcp-fingerprint");
}

#[test]
fn loose_pickup_admits_connections_when_no_restore_comes() {
    passes("loose-no-restore");
}

// ---- fc-restore (items 3, 7) ------------------------------------------------------------------
// Failed on 530b4cb (main 1866301); pass since f0d045f (fc-restore): the five degraded blobs,
// the operator's change against a late work item, ages on a recently booted destination; since
// format 1.2 (fc-restore): the source that cannot encode (no-state blob), rule-admitted
// connections (never fingerprinted as the VM's), the save while the restore is pended.

#[test]
fn a_damaged_flow_section_keeps_the_policy() {
    passes("degraded-flow-section");
}

#[test]
fn an_empty_blob_never_lowers_policy() {
    passes("degraded-empty");
}

#[test]
fn a_foreign_blob_never_lowers_policy() {
    passes("degraded-foreign");
}

#[test]
fn an_unknown_major_never_lowers_policy() {
    passes("degraded-unknown-major");
}

#[test]
fn a_truncated_blob_never_lowers_policy() {
    passes("degraded-truncated");
}

#[test]
fn a_source_that_cannot_encode_never_lowers_policy() {
    passes("degraded-encode-failure");
}

#[test]
fn an_operator_change_in_the_window_survives_a_late_work_item() {
    passes("operator-late-restore");
}

#[test]
fn a_rule_admitted_connection_carried_as_a_fingerprint_is_rechecked_against_the_rules() {
    passes("rule-admitted-fingerprint");
}

#[test]
fn flows_idle_past_their_timeout_admit_nothing_on_a_recently_booted_destination() {
    passes("idle-ages");
}

#[test]
fn a_second_migration_carries_the_pending_fingerprints() {
    passes("chain");
}

/// Found by this harness (no item of issue 16 names it). Failed on f410416; fixed in the
/// callout's restore worker (the time a blob waits in the pending set ages its flows).
#[test]
fn flows_that_idle_past_their_timeout_while_the_restore_is_pended_admit_nothing() {
    passes("pended-ages");
}

#[test]
fn a_save_while_the_restore_is_pended_carries_the_pended_state() {
    passes("save-while-pended");
}
