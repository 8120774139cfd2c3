//! The wire: packets crossing a simulated switch.
//!
//! Classified at the vSwitch transport layers as WFP does it (ingress layer, then egress; every sublayer arbitrated). [`Wire`] lets other
//! threads send packets while the host runs events, restores, work items and unload.

use fwps_sys::{self as sys, GUID};

use crate::contract::Violation;
use crate::host::PacketFate;
use crate::vswitch::packet::{ClassifyInput, SimPacket};
use crate::wfp::engine::{Arbiter, Decision};
use crate::world::{CurrentHost, with_host_id};

/// A sender of packets on one host's switches, usable from any thread.
#[derive(Clone, Debug)]
pub struct Wire {
    host: usize,
    switches: Vec<Vec<u16>>,
}

impl Wire {
    /// A wire on host `host` whose switches have these names (by index).
    #[must_use]
    pub const fn new(host: usize, switches: Vec<Vec<u16>>) -> Self {
        Self { host, switches }
    }

    /// Sends `p` across switch `sw` from port `src` to port `dst`.
    ///
    /// # Panics
    /// If `sw` is not a switch of the host when the wire was made (a scenario bug).
    #[must_use]
    pub fn transmit(&self, sw: usize, src: u32, dst: u32, p: &SimPacket) -> PacketFate {
        transmit(self.host, &self.switches[sw], src, dst, p)
    }
}

/// Sends `p` from port `src` to port `dst` of the switch named `switch_name` on host `host`:
/// classified at the ingress transport layer, then at egress.
#[must_use]
pub fn transmit(host: usize, switch_name: &[u16], src: u32, dst: u32, p: &SimPacket) -> PacketFate {
    let (ingress_id, ingress_key, egress_id, egress_key) = match p.family {
        vsflow_core::IpFamily::V4 => (
            sys::FWPS_LAYER_INGRESS_VSWITCH_TRANSPORT_V4,
            sys::FWPM_LAYER_INGRESS_VSWITCH_TRANSPORT_V4,
            sys::FWPS_LAYER_EGRESS_VSWITCH_TRANSPORT_V4,
            sys::FWPM_LAYER_EGRESS_VSWITCH_TRANSPORT_V4,
        ),
        vsflow_core::IpFamily::V6 => (
            sys::FWPS_LAYER_INGRESS_VSWITCH_TRANSPORT_V6,
            sys::FWPM_LAYER_INGRESS_VSWITCH_TRANSPORT_V6,
            sys::FWPS_LAYER_EGRESS_VSWITCH_TRANSPORT_V6,
            sys::FWPM_LAYER_EGRESS_VSWITCH_TRANSPORT_V6,
        ),
    };
    if !classify_at(host, ingress_id, &ingress_key, true, src, dst, switch_name, p) {
        return PacketFate::BlockedAtIngress;
    }
    if !classify_at(host, egress_id, &egress_key, false, src, dst, switch_name, p) {
        return PacketFate::BlockedAtEgress;
    }
    PacketFate::Delivered
}

/// Runs the filters of one layer on a packet as WFP arbitrates them; true if permitted.
/// Every sublayer is evaluated, highest weight first; within one, filters from the
/// highest weight until one returns permit or block ([`crate::wfp::engine::Arbiter`]).
#[allow(clippy::too_many_arguments, reason = "the classify inputs")]
#[allow(clippy::too_many_lines, reason = "one layer's classify, top to bottom")]
fn classify_at(
    host: usize,
    layer_id: u16,
    layer: &GUID,
    ingress: bool,
    src: u32,
    dst: u32,
    switch_name: &[u16],
    p: &SimPacket,
) -> bool {
    let (sublayers, callouts) =
        with_host_id(host, |s| (s.engine.sublayers_at(layer), s.engine.registered.clone()));
    let _cur = CurrentHost::enter(host);
    let mut input = ClassifyInput::new(p, ingress, src, dst, switch_name);
    let before = input.list.bytes();
    let values = input.incoming(layer_id);
    let mut arbiter = Arbiter::default();
    for (sublayer_weight, filters) in sublayers {
        for f in filters {
            let soft = f.flags & sys::FWPM_FILTER_FLAG_CLEAR_ACTION_RIGHT == 0;
            if f.action == sys::FWP_ACTION_BLOCK || f.action == sys::FWP_ACTION_PERMIT {
                arbiter.sublayer(Decision { action: f.action, overridable: soft }, false);
                break;
            }
            let terminating = f.action == sys::FWP_ACTION_CALLOUT_TERMINATING
                || f.action == sys::FWP_ACTION_CALLOUT_UNKNOWN;
            let Some(ckey) = f.callout else { continue };
            let Some(callout) = callouts.iter().find(|c| c.key == ckey) else {
                // fwpmtypes.h: a filter whose callout is not registered acts as block,
                // or as permit with FWPM_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED.
                if !terminating {
                    continue;
                }
                let action = if f.flags & sys::FWPM_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED != 0
                {
                    sys::FWP_ACTION_PERMIT
                } else {
                    sys::FWP_ACTION_BLOCK
                };
                arbiter.sublayer(Decision { action, overridable: soft }, false);
                break;
            };
            let Some(classify) = callout.classify else { continue };
            // SAFETY: plain data, all zeroes valid.
            let mut filter: sys::FWPS_FILTER3 = unsafe { std::mem::zeroed() };
            filter.filterId = f.id;
            filter.subLayerWeight = sublayer_weight;
            filter.flags = if soft { 0 } else { sys::FWPS_FILTER_FLAG_CLEAR_ACTION_RIGHT };
            filter.action = sys::FWPS_ACTION0 { r#type: f.action, calloutId: callout.id };
            filter.context = f.raw_context;
            let rights = arbiter.rights();
            let mut out = sys::FWPS_CLASSIFY_OUT0 { rights, ..Default::default() };
            let layer_data = input.layer_data();
            if !with_host_id(host, |s| s.engine.classify_started(callout.id)) {
                // Unregistered since the snapshot: the filter acts as its callout is gone.
                continue;
            }
            let drv = crate::kernel::alloc::Attribution::enter(Some(host));
            let irql = crate::kernel::irql::Raised::to(crate::kernel::irql::Irql::Dispatch);
            // SAFETY: the driver's classify function with valid inputs alive for the call.
            unsafe {
                classify(
                    &raw const values,
                    &raw const input.meta,
                    layer_data,
                    std::ptr::null(),
                    &raw const filter,
                    0,
                    &raw mut out,
                );
            };
            drop(irql);
            drop(drv);
            with_host_id(host, |s| s.engine.classify_finished(callout.id));
            if input.list.bytes() != before {
                with_host_id(host, |s| {
                    s.violate(Violation::BadClassifyAction {
                        what: "packet modified (HLK NoEgressModification)".to_owned(),
                    });
                });
            }
            if !terminating {
                continue; // an inspection callout's action is not used
            }
            let kept_write = out.rights & sys::FWPS_RIGHT_ACTION_WRITE != 0;
            match out.actionType {
                sys::FWP_ACTION_BLOCK => {
                    if rights & sys::FWPS_RIGHT_ACTION_WRITE != 0 && kept_write {
                        with_host_id(host, |s| {
                            s.violate(Violation::BadClassifyAction {
                                what: "block without clearing FWPS_RIGHT_ACTION_WRITE".to_owned(),
                            });
                        });
                    }
                    let d = Decision { action: sys::FWP_ACTION_BLOCK, overridable: kept_write };
                    arbiter.sublayer(d, true);
                    break;
                }
                sys::FWP_ACTION_PERMIT => {
                    let d = Decision { action: sys::FWP_ACTION_PERMIT, overridable: kept_write };
                    arbiter.sublayer(d, true);
                    break;
                }
                sys::FWP_ACTION_CONTINUE => {}
                // Without the write right a callout returns without acting (WFPSampler's
                // classify functions check FWPS_RIGHT_ACTION_WRITE first).
                _ if rights & sys::FWPS_RIGHT_ACTION_WRITE == 0 => {}
                other => {
                    with_host_id(host, |s| {
                        s.violate(Violation::BadClassifyAction {
                            what: format!("terminating callout returned action {other:#x}"),
                        });
                    });
                }
            }
        }
    }
    arbiter.permits()
}
