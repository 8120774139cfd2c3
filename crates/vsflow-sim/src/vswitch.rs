//! The WFP side of the vSwitch event API: subscriptions and the notifications in flight.
//! The switch itself (its ports, NICs and event sequences) is driven by [`crate::Host`].

use std::collections::HashMap;

use fwps_sys::{FWPS_VSWITCH_EVENT_DISPATCH_TABLE0, GUID, NTSTATUS};

/// A vSwitch event subscription.
#[derive(Clone, Copy, Debug)]
pub struct Subscription {
    pub id: u32,
    pub provider: Option<GUID>,
    pub context: usize,
    pub table: FWPS_VSWITCH_EVENT_DISPATCH_TABLE0,
}

/// A notification that returned `STATUS_PENDING`.
#[derive(Clone, Debug)]
pub struct Outstanding {
    pub callback: &'static str,
    pub port_id: u32,
}

/// Subscriptions and notification tracking of one host.
#[derive(Debug, Default)]
pub struct WfpVSwitch {
    pub subscriptions: Vec<Subscription>,
    pub next_subscription: u32,
    /// Pended notifications by completion context.
    pub outstanding: HashMap<usize, Outstanding>,
    /// Completed pended notifications: context, status.
    pub completed: HashMap<usize, NTSTATUS>,
    /// Depth of vSwitch callbacks currently running.
    pub in_callback: u32,
}
