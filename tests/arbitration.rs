//! Filter arbitration as WFP does it ("Filter Arbitration", Configurable Override Policy):
//! every sublayer is evaluated from the highest weight to the lowest, even after a block; a
//! soft permit (write right kept) can be blocked in another sublayer; a hard permit (write
//! right cleared) only by a callout's veto; a hard block is final. vsflow's block clears the
//! write right, so another vendor's permit in a higher sublayer does not cancel it.

use vsflow_callout::RestoreMode;
use vsflow_callout::keys::HOOKS;
use vsflow_core::IpFamily;
use vsflow_scenarios::{enforce, finish, host, vm_port};
use vsflow_sim::host::EXTERNAL_PORT;
use vsflow_sim::tools::traffic::{inbound_syn, remote_addr, vm_syn};
use vsflow_sim::wfp::foreign::{ForeignAction, ForeignProcess};
use vsflow_sim::{Host, PacketFate, SimPacket};

const CLEAR_ACTION_RIGHT: u32 = fwps_sys::FWPM_FILTER_FLAG_CLEAR_ACTION_RIGHT;

fn unsolicited() -> SimPacket {
    inbound_syn(IpFamily::V4, remote_addr(IpFamily::V4, 4, false), 5000, 7, 3389)
}

/// The VM on port 7 opening a connection: its outbound SYN to a remote host's port 443.
fn vm_syn_out() -> SimPacket {
    vm_syn(IpFamily::V4, 7, 4000, remote_addr(IpFamily::V4, 1, false), 443)
}

/// A host with vsflow in Enforce mode on port 7 and another vendor's filters on every layer.
fn with_foreign(filters: &[(u16, ForeignAction, u32)]) -> (Host, usize, ForeignProcess) {
    let (mut h, sw) = host(1, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 7, "vm-a", 1, false);
    let mut other = ForeignProcess::open(h.id());
    for &(weight, action, flags) in filters {
        let sub = other.add_sublayer(weight);
        for hook in HOOKS {
            assert_eq!(other.add_filter(hook.layer, sub, action, flags, 0), 0);
        }
    }
    (h, sw, other)
}

fn done(mut h: Host, other: ForeignProcess) {
    drop(other);
    finish(&mut h);
}

#[test]
fn a_soft_permit_in_a_higher_sublayer_does_not_cancel_vsflows_block() {
    let (mut h, sw, other) = with_foreign(&[(0xFFFF, ForeignAction::Permit, 0)]);
    assert_eq!(h.transmit(sw, EXTERNAL_PORT, 7, &unsolicited()), PacketFate::BlockedAtEgress);
    done(h, other);
}

#[test]
fn below_a_hard_permit_vsflow_gets_no_write_right_and_the_packet_passes() {
    // "Only a callout veto can block traffic in another sublayer": vsflow does not veto (it
    // returns without acting when it lacks the write right), so an administrator's hard
    // permit wins. The double does not count that as a bad classify action.
    let (mut h, sw, other) = with_foreign(&[(0xFFFF, ForeignAction::Permit, CLEAR_ACTION_RIGHT)]);
    assert_eq!(h.transmit(sw, EXTERNAL_PORT, 7, &unsolicited()), PacketFate::Delivered);
    done(h, other);
}

#[test]
fn a_hard_permit_above_is_not_overridden_by_a_static_block_below() {
    let (mut h, sw, other) = with_foreign(&[
        (0xFFFF, ForeignAction::Permit, CLEAR_ACTION_RIGHT),
        (0, ForeignAction::Block, 0),
    ]);
    // vsflow permits its own VM's outbound SYN; the static block below cannot override.
    let syn = vm_syn_out();
    assert_eq!(h.transmit(sw, 7, EXTERNAL_PORT, &syn), PacketFate::Delivered);
    done(h, other);
}

#[test]
fn a_soft_block_above_is_permitted_by_a_lower_permit() {
    let (mut h, sw, other) =
        with_foreign(&[(0xFFFF, ForeignAction::Block, 0), (0, ForeignAction::Permit, 0)]);
    let syn = vm_syn_out();
    assert_eq!(h.transmit(sw, 7, EXTERNAL_PORT, &syn), PacketFate::Delivered);
    done(h, other);
}

#[test]
fn a_hard_block_above_is_final_and_every_sublayer_is_still_evaluated() {
    let (mut h, sw, other) = with_foreign(&[(0xFFFF, ForeignAction::Block, CLEAR_ACTION_RIGHT)]);
    let calls = h.classify_invocations();
    let syn = vm_syn_out();
    assert_eq!(h.transmit(sw, 7, EXTERNAL_PORT, &syn), PacketFate::BlockedAtIngress);
    assert_eq!(h.classify_invocations(), calls + 1, "vsflow's sublayer was still evaluated");
    done(h, other);
}

#[test]
fn a_filter_whose_callout_is_not_registered_blocks_unless_permit_if_callout_unregistered() {
    // fwpmtypes.h, FWPM_FILTER0 flags: a terminating callout filter whose callout is not
    // registered acts as block, or as permit with FWPM_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED.
    // As any static filter, it is hard with CLEAR_ACTION_RIGHT and soft without (a soft block
    // is then permitted by vsflow's sublayer below).
    let nobody = fwps_sys::GUID::from_parts(0x0bad_ca11, 1, 2, [3; 8]);
    let permit_if = fwps_sys::FWPM_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED;
    for (flags, expect) in [
        (CLEAR_ACTION_RIGHT, PacketFate::BlockedAtIngress),
        (0, PacketFate::Delivered),
        (permit_if | CLEAR_ACTION_RIGHT, PacketFate::Delivered),
    ] {
        let (mut h, sw) = host(1, enforce(RestoreMode::Pending), "SW");
        vm_port(&mut h, sw, 7, "vm-a", 1, false);
        let mut other = ForeignProcess::open(h.id());
        let sub = other.add_sublayer(0xFFFF);
        let layer = HOOKS[0].layer; // ingress, IPv4
        assert_eq!(other.add_callout_object(nobody, layer), 0);
        assert_eq!(other.add_filter(layer, sub, ForeignAction::Callout(nobody), flags, 0), 0);
        let syn = vm_syn_out();
        assert_eq!(h.transmit(sw, 7, EXTERNAL_PORT, &syn), expect, "flags {flags:#x}");
        done(h, other);
    }
}
