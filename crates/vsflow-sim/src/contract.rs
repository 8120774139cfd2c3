//! The contracts the simulator enforces, and how a breach is reported.

use std::fmt;

/// A breach of a documented WFP or vSwitch contract by the driver under test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A callback that may not pend returned `STATUS_PENDING`.
    PendingNotAllowed {
        /// The callback.
        callback: &'static str,
    },
    /// `FwpsvSwitchNotifyComplete0` with a context that is not pending (never pended, or
    /// already completed).
    UnknownCompletion {
        /// The context.
        context: usize,
    },
    /// `FwpsvSwitchNotifyComplete0` with `STATUS_PENDING`.
    CompletedWithPending,
    /// A pended notification was never completed.
    NeverCompleted {
        /// What was pending.
        what: String,
    },
    /// A WFP filter was added or deleted inside a vSwitch callback or while a notification pends.
    FilterChangeDuringNotification {
        /// The function called.
        call: &'static str,
    },
    /// A callout was unregistered while the driver's vSwitch subscription was still active.
    UnregisterBeforeUnsubscribe,
    /// A management call needed BFE while it was not running.
    BfeNotRunning {
        /// The function called.
        call: &'static str,
    },
    /// An object was added without the provider key (HLK `FwpmProviders.AssociateWithObjects`).
    ObjectWithoutProvider {
        /// Kind of object.
        kind: &'static str,
    },
    /// A filter was added to a built-in or foreign sublayer, or to one that does not exist.
    BadSublayer,
    /// A filter references a callout object that does not exist.
    FilterWithoutCalloutObject,
    /// A callback returned a save blob too large for `NDIS_SWITCH_NIC_SAVE_STATE`.
    SaveTooLarge {
        /// Bytes returned.
        len: usize,
    },
    /// A save callback returned success with a null buffer: `runtimeState` is
    /// `_Outptr_result_buffer_(*runtimeStateLength)`, a valid buffer on success.
    SaveNullOnSuccess,
    /// The classify function changed the packet's action without the write right, or returned
    /// an action that is not permit or block.
    BadClassifyAction {
        /// What happened.
        what: String,
    },
    /// The driver left objects, callouts, subscriptions or memory behind at unload.
    Leak {
        /// What was left.
        what: String,
    },
    /// A spin lock was acquired recursively (a deadlock at `DISPATCH_LEVEL`).
    RecursiveLock,
    /// An engine call used a handle the engine never issued or already closed.
    BadHandle {
        /// The function called.
        call: &'static str,
    },
    /// A service documented for `PASSIVE_LEVEL` was called at `DISPATCH_LEVEL` (in classify, a
    /// vSwitch callback, or holding a spin lock).
    WrongIrql {
        /// The service.
        call: &'static str,
    },
    /// `FwpsvSwitchEventsUnsubscribe0` while a vSwitch callback was running on another thread
    /// (the kernel unsubscribe page does not say it waits for them).
    UnsubscribeWithCallbacksInFlight,
    /// `FwpsvSwitchEventsUnsubscribe0` while pended notifications were not completed (their
    /// completion contexts are WFP's; completing after unsubscribe is not documented).
    UnsubscribeWithPendingNotifications {
        /// How many were pending.
        pending: usize,
    },
    /// A kernel primitive used against its documented contract (IRQL, recursion).
    KernelPrimitiveMisuse {
        /// What happened.
        what: String,
    },
    /// A transaction misuse (commit or abort without begin, nested begin).
    Transaction {
        /// What happened.
        what: &'static str,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PendingNotAllowed { callback } => write!(f, "{callback} returned STATUS_PENDING, which it may not"),
            Self::UnknownCompletion { context } => write!(f, "FwpsvSwitchNotifyComplete0({context:#x}): not a pending notification (double or spurious completion)"),
            Self::CompletedWithPending => f.write_str("FwpsvSwitchNotifyComplete0 called with STATUS_PENDING"),
            Self::NeverCompleted { what } => write!(f, "pended notification never completed: {what}"),
            Self::FilterChangeDuringNotification { call } => write!(f, "{call} inside a vSwitch notification or while one is pending"),
            Self::UnregisterBeforeUnsubscribe => f.write_str("callout unregistered while the vSwitch subscription is active (unsubscribe first)"),
            Self::BfeNotRunning { call } => write!(f, "{call} while the base filtering engine is not running"),
            Self::ObjectWithoutProvider { kind } => write!(f, "{kind} added without providerKey (HLK FwpmProviders.AssociateWithObjects)"),
            Self::BadSublayer => f.write_str("filter added to a sublayer that is not the driver's own (HLK FwpmSublayers.UseOwnOrBuiltIn)"),
            Self::FilterWithoutCalloutObject => f.write_str("filter references a callout object that was never added"),
            Self::SaveTooLarge { len } => write!(f, "runtime state of {len} bytes does not fit NDIS_SWITCH_NIC_SAVE_STATE (USHORT size)"),
            Self::SaveNullOnSuccess => f.write_str("vSwitchRuntimeStateSaveNotifyFn returned success with a NULL runtimeState (_Outptr_result_buffer_)"),
            Self::BadClassifyAction { what } => write!(f, "classify: {what}"),
            Self::Leak { what } => write!(f, "left behind at unload: {what}"),
            Self::RecursiveLock => f.write_str("spin lock acquired recursively (deadlock at DISPATCH_LEVEL)"),
            Self::BadHandle { call } => write!(f, "{call} with an invalid handle"),
            Self::WrongIrql { call } => write!(f, "{call} called at DISPATCH_LEVEL (PASSIVE_LEVEL only)"),
            Self::UnsubscribeWithCallbacksInFlight => f.write_str("FwpsvSwitchEventsUnsubscribe0 while a vSwitch callback was still running"),
            Self::UnsubscribeWithPendingNotifications { pending } => write!(f, "FwpsvSwitchEventsUnsubscribe0 with {pending} pended notifications not completed"),
            Self::KernelPrimitiveMisuse { what } => write!(f, "kernel primitive misused: {what}"),
            Self::Transaction { what } => write!(f, "transaction misuse: {what}"),
        }
    }
}
