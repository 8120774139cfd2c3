//! Field diagnostics: the events vsflow reports through ETW.
//!
//! Driver teams read a driver's behaviour in the field through ETW, not a kernel debugger. Every
//! event the driver emits is one value of [`TraceEvent`], handed to
//! [`crate::KernelServices::trace`]: the driver writes it as a `TraceLogging` event of its
//! documented provider (see `docs/TRACING.md`), the simulator records it so tests can assert it.
//! Events are plain data: building one allocates nothing and reads no packet.

/// How a runtime-state restore ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestoreOutcome {
    /// The blob was decoded and applied.
    Applied,
    /// The same blob (same keyed digest and length) was restored into this port before:
    /// nothing changed.
    Repeated,
    /// No flows were restored and the restore reported success: the blob was empty, damaged,
    /// foreign, of an unknown major version or from a source without state, it could not be
    /// applied, or the port is unknown (see `reason`). The port's policy was kept or closed,
    /// never lowered: the operator's settings, else the policy the blob still carries, else
    /// Enforce. Traced at error level.
    Degraded(DegradedReason),
    /// The restore was failed on purpose (the opt-in strict policy), or could not run.
    Failed,
    /// The pended restore was completed as cancelled (port or switch deleted, driver stopping).
    Cancelled,
}

/// Why a restore carried no flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DegradedReason {
    /// A zero-length blob.
    Empty,
    /// The source host had no state for the port (it did not track it, its encode failed, or
    /// it was stopping): its blob says so and carries no policy.
    NoState,
    /// The blob failed validation (framing, checksum, bounds).
    Damaged,
    /// The blob was written by another provider.
    Foreign,
    /// The blob's major format version is unknown to this driver.
    UnknownMajor,
    /// The port is not known to vsflow.
    UnknownPort,
    /// Memory ran out while applying it.
    OutOfMemory,
    /// Longer than the format's maximum (65,535 bytes): refused before it was copied.
    Oversized,
    /// Received for a port that was deleted before it could be applied, and another port took
    /// the port's id meanwhile: the restore is not that port's (never another VM's flows on
    /// it), which gets a degraded restore instead.
    PortReplaced,
}

/// One diagnostic event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceEvent {
    /// A runtime-state save was answered.
    Save {
        /// The port's current `PortId`.
        port: u32,
        /// Bytes of the blob handed to WFP.
        bytes: u32,
        /// Flows carried as exact records.
        flows_saved: u32,
        /// Flows carried neither exactly nor as a fingerprint (lost to the size cap).
        flows_dropped: u32,
        /// Established connections carried as keyed fingerprints (no exact record fitted):
        /// the destination picks them up when their traffic resumes.
        flows_fingerprinted: u32,
        /// The NTSTATUS returned.
        status: i32,
    },
    /// A runtime-state restore completed (synchronously or through its pended completion).
    Restore {
        /// The port's current `PortId`.
        port: u32,
        /// Bytes of the blob received.
        bytes: u32,
        /// Flows restored as exact records.
        flows_restored: u32,
        /// Fingerprints armed for pickup (connections carried without an exact record).
        fingerprints: u32,
        /// How it ended.
        outcome: RestoreOutcome,
        /// The NTSTATUS reported to WFP.
        status: i32,
    },
    /// The base filtering engine changed state (`FWPM_SERVICE_STATE`).
    BfeState {
        /// The new state.
        state: u32,
    },
    /// A registration step failed.
    RegistrationFailed {
        /// Which step (a fixed name such as `"FwpsCalloutRegister3"`).
        step: &'static str,
        /// The NTSTATUS it returned.
        status: i32,
    },
    /// A registry value under the `Parameters` key was refused at load (out of its documented
    /// range, or not a `REG_DWORD`): its default applies (config.rs, `SETTINGS`).
    SettingRefused {
        /// The value's name.
        name: &'static str,
        /// What was read (0 if it was not a `REG_DWORD`).
        value: u32,
        /// The default used instead.
        default: u32,
        /// Why: `"out of range"` or `"not a REG_DWORD"`.
        reason: &'static str,
    },
    /// New flows were refused since the last report because the host-wide flow-memory budget
    /// (`FlowMemoryMB`) had no room for their tables' growth: their packets' verdicts stood,
    /// they were not tracked; established connections were kept. Or saves' working memory was
    /// not kept for the port's next save (freed as the save ended; the blob carried every
    /// connection). At most one per expiry tick.
    FlowMemoryRefused {
        /// New flows refused since the last report.
        refused: u32,
        /// Saves since the last report whose working memory the budget had no room to keep.
        saves_unkept: u32,
        /// Bytes of flow tables charged now.
        used: u64,
        /// The budget in bytes.
        limit: u64,
    },
    /// A filter naming a vsflow callout that vsflow did not add was refused in `notifyFn`.
    ForeignFilterRejected {
        /// The filter's runtime id.
        filter_id: u64,
        /// The FWPS layer id it was added at.
        layer_id: u16,
    },
}
