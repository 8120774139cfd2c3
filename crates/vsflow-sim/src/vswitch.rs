//! The WFP side of the vSwitch event API: subscriptions and the notifications in flight.
//! The switch itself (its ports, NICs and event sequences) is driven by [`crate::Host`].

use std::collections::HashMap;

use fwps_sys::{FWPS_VSWITCH_EVENT_DISPATCH_TABLE0, GUID, NTSTATUS};

/// A vSwitch event subscription.
#[derive(Clone, Copy, Debug)]
pub struct Subscription {
    /// Run-time id.
    pub id: u32,
    /// Provider GUID (routes restores).
    pub provider: Option<GUID>,
    /// The driver's context.
    pub context: usize,
    /// The dispatch table.
    pub table: FWPS_VSWITCH_EVENT_DISPATCH_TABLE0,
}

/// A notification that returned `STATUS_PENDING`.
#[derive(Clone, Debug)]
pub struct Outstanding {
    /// Which callback pended.
    pub callback: &'static str,
    /// Port it concerns.
    pub port_id: u32,
}

/// Subscriptions and notification tracking of one host.
#[derive(Debug, Default)]
pub struct WfpVSwitch {
    /// Active subscriptions.
    pub subscriptions: Vec<Subscription>,
    /// Last subscription id issued.
    pub next_subscription: u32,
    /// Pended notifications by completion context.
    pub outstanding: HashMap<usize, Outstanding>,
    /// Completed pended notifications: context, status.
    pub completed: HashMap<usize, NTSTATUS>,
    /// Depth of vSwitch callbacks currently running.
    pub in_callback: u32,
    /// Callbacks running now, by completion context.
    pub in_progress: HashMap<usize, Outstanding>,
    /// Completions that arrived while their callback was still running.
    pub early: HashMap<usize, NTSTATUS>,
    /// How many completions arrived before their callback returned.
    pub early_completions: u64,
}
