//! The WFP side of the vSwitch event API: subscriptions and the notifications in flight.

use std::collections::HashMap;

use fwps_sys::{self as sys, FWPS_VSWITCH_EVENT_DISPATCH_TABLE0, GUID, NTSTATUS};

use crate::contract::Violation;

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

/// What a completion settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completed {
    /// Nothing for the host to record.
    Nothing,
    /// A restore failed: the VM's whole restore fails (`OID_SWITCH_NIC_RESTORE`).
    FailedRestore {
        /// The port.
        port_id: u32,
        /// The status.
        status: NTSTATUS,
    },
}

/// The rules of the vSwitch event API (`FwpsvSwitchEventsSubscribe0`, `Unsubscribe0`,
/// `FwpsvSwitchNotifyComplete0`).
impl WfpVSwitch {
    /// Subscribes; returns the subscription id.
    pub fn subscribe(
        &mut self,
        provider: Option<GUID>,
        context: usize,
        table: FWPS_VSWITCH_EVENT_DISPATCH_TABLE0,
    ) -> u32 {
        self.next_subscription += 1;
        let id = self.next_subscription;
        self.subscriptions.push(Subscription { id, provider, context, table });
        id
    }

    /// Unsubscribes. The kernel page does not say it waits for callbacks in flight, and the
    /// pended notifications' contexts are WFP's: both are reported.
    pub fn unsubscribe(&mut self, id: u32, b: &mut Vec<Violation>) {
        // This thread is at PASSIVE (checked by the caller), so a running callback is another
        // thread's.
        if self.in_callback > 0 {
            b.push(Violation::UnsubscribeWithCallbacksInFlight);
        }
        if !self.outstanding.is_empty() {
            b.push(Violation::UnsubscribeWithPendingNotifications {
                pending: self.outstanding.len(),
            });
        }
        let n = self.subscriptions.len();
        self.subscriptions.retain(|s| s.id != id);
        if n == self.subscriptions.len() {
            b.push(Violation::BadHandle { call: "FwpsvSwitchEventsUnsubscribe0" });
        }
    }

    /// `FwpsvSwitchNotifyComplete0`: completes a pended notification exactly once. A completion
    /// that arrives while its callback is still running (its work item ran on another CPU) is
    /// held until the callback returns `STATUS_PENDING`.
    pub fn complete(&mut self, ctx: usize, status: NTSTATUS, b: &mut Vec<Violation>) -> Completed {
        if status == sys::STATUS_PENDING {
            b.push(Violation::CompletedWithPending);
            return Completed::Nothing;
        }
        let o = if let Some(o) = self.outstanding.remove(&ctx) {
            self.completed.insert(ctx, status);
            o
        } else if let Some(o) = self.in_progress.get(&ctx).cloned()
            && !self.early.contains_key(&ctx)
        {
            self.early.insert(ctx, status);
            self.early_completions += 1;
            o
        } else {
            b.push(Violation::UnknownCompletion { context: ctx });
            return Completed::Nothing;
        };
        if o.callback == "vSwitchRuntimeStateRestoreNotifyFn" && !sys::nt_success(status) {
            Completed::FailedRestore { port_id: o.port_id, status }
        } else {
            Completed::Nothing
        }
    }
}
