//! Foreign filters: any elevated process can add a filter that names vsflow's callout, with
//! any context (`FWPM_FILTER0.rawContext` becomes `FWPS_FILTER3.context`). The engine calls the
//! callout's notifyFn with `FWPS_CALLOUT_NOTIFY_ADD_FILTER` and refuses the filter when notifyFn
//! fails. Its own binary: before the fix, classify dereferencing a garbage context crashes.

use vsflow_callout::RestoreMode;
use vsflow_callout::keys::HOOKS;
use vsflow_scenarios::{delivered, enforce, finish, host, open_connections, vm_port};
use vsflow_sim::wfp::foreign::{ForeignAction, ForeignProcess};

const GARBAGE: [u64; 3] = [0, 0xDEAD_BEEF_0000_0001, 0x0000_7fff_ffff_f000];

#[test]
fn a_foreign_filter_naming_vsflows_callout_is_refused_whatever_its_context() {
    let (mut h, sw) = host(1, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 7, "vm-a", 1, false);
    let before = h.engine_objects().filters.len();
    {
        let mut other = ForeignProcess::open(h.id());
        let sub = other.add_sublayer(0x8000);
        for hook in HOOKS {
            for ctx in GARBAGE {
                let status =
                    other.add_filter(hook.layer, sub, ForeignAction::Callout(hook.callout), 0, ctx);
                assert!(status < 0, "notifyFn refuses a filter that is not vsflow's ({ctx:#x})");
            }
        }
        assert_eq!(h.engine_objects().filters.len(), before, "the engine did not add them");
    }
    finish(&mut h);
}

#[test]
fn traffic_is_judged_correctly_after_foreign_filters_were_tried() {
    let (mut h, sw) = host(1, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 7, "vm-a", 1, false);
    let inbound = open_connections(&mut h, sw, 7, 3);
    let mut other = ForeignProcess::open(h.id());
    let sub = other.add_sublayer(0x8000);
    for hook in HOOKS {
        let _ =
            other.add_filter(hook.layer, sub, ForeignAction::Callout(hook.callout), 0, GARBAGE[1]);
    }
    // If any was accepted, classify now runs with its garbage context: it must not be used.
    assert_eq!(delivered(&mut h, sw, 7, &inbound), 3);
    let more = open_connections(&mut h, sw, 7, 2);
    assert_eq!(delivered(&mut h, sw, 7, &more), 2);
    drop(other);
    finish(&mut h);
}

#[test]
fn a_foreign_filter_added_before_vsflow_registers_is_never_notified_and_its_context_is_not_used() {
    // "Processing Notify Callouts": a callout registered after filters naming it were added
    // is not told of them, so notifyFn cannot refuse this one: classify gets its context.
    let mut h = vsflow_sim::Host::new(1);
    let mut other = ForeignProcess::open(h.id());
    let sub = other.add_sublayer(0x8000);
    for hook in HOOKS {
        assert_eq!(other.add_callout_object(hook.callout, hook.layer), 0);
        let status =
            other.add_filter(hook.layer, sub, ForeignAction::Callout(hook.callout), 0, GARBAGE[1]);
        assert_eq!(status, 0, "nothing is registered yet: the engine accepts it");
    }
    h.load_driver(enforce(RestoreMode::Pending)).expect("loads");
    let sw = h.create_switch("SW", &[]);
    vm_port(&mut h, sw, 7, "vm-a", 1, false);
    let inbound = open_connections(&mut h, sw, 7, 3);
    assert_eq!(delivered(&mut h, sw, 7, &inbound), 3);
    let unsolicited = vsflow_sim::tools::traffic::inbound_syn(
        vsflow_core::IpFamily::V4,
        vsflow_sim::tools::traffic::remote_addr(vsflow_core::IpFamily::V4, 4, false),
        5000,
        7,
        3389,
    );
    assert_ne!(
        h.transmit(sw, vsflow_sim::host::EXTERNAL_PORT, 7, &unsolicited),
        vsflow_sim::PacketFate::Delivered,
        "Enforce still blocks unsolicited traffic"
    );
    drop(other);
    finish(&mut h);
}
