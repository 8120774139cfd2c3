//! The driver's ETW provider, `Vsflow.Callout`.
//!
//! `TraceLogging` through Microsoft's `tracelogging` crate with `kernel_mode`: every
//! [`TraceEvent`] becomes one event. docs/TRACING.md lists the provider GUID, the events, their
//! fields and how to capture them.
//!
//! Each event is written by one [`event!`] invocation: on Windows that is the crate's
//! `write_event!` (which does nothing while no session listens); under the KMDF double, where
//! the crate compiles to no-ops, the same provider, name, level, keyword and fields also go to
//! the double's ETW session so tests can assert what the driver reports.

use tracelogging as tlg;
use vsflow_callout::{DegradedReason, RestoreOutcome, TraceEvent};

/// Provider name.
pub const PROVIDER_NAME: &str = "Vsflow.Callout";
/// Provider GUID: the ETW name hash of [`PROVIDER_NAME`] (`tracelogging::Guid::from_name`,
/// what `tracelog`/WPR derive from `*Vsflow.Callout`), fixed here so it never drifts.
pub const PROVIDER_GUID: &str = "89a711ba-7b7c-57d7-ad3c-a04cbf683b6f";

/// Keyword of runtime-state save and restore events.
pub const KEYWORD_MIGRATION: u64 = 0x1;
/// Keyword of filter-engine events (BFE state, registration).
pub const KEYWORD_ENGINE: u64 = 0x2;
/// Keyword of policy events (foreign filters).
pub const KEYWORD_POLICY: u64 = 0x4;
/// Keyword of configuration events (registry values refused at load).
pub const KEYWORD_CONFIG: u64 = 0x8;

tlg::define_provider!(PROVIDER, "Vsflow.Callout", id("89a711ba-7b7c-57d7-ad3c-a04cbf683b6f"));

/// Registers the provider (`DriverEntry`, before anything can emit).
pub fn register() {
    // SAFETY: `unregister` is called before the image unloads (unload and every failure path
    // of DriverEntry).
    let _status = unsafe { PROVIDER.register() };
    #[cfg(not(windows))]
    wdf_sim::etw::register(PROVIDER_NAME, PROVIDER.id().to_bytes_le());
}

/// Unregisters the provider (last step of unload, and on a failed `DriverEntry`).
pub fn unregister() {
    let _status = PROVIDER.unregister();
    #[cfg(not(windows))]
    wdf_sim::etw::unregister(PROVIDER_NAME);
}

/// One event: `tlg::write_event!` and, under the double, the same event recorded there.
macro_rules! event {
    ($name:tt, $level:ident, $keyword:ident, $($kind:ident($field:tt, $value:expr)),* $(,)?) => {{
        tlg::write_event!(PROVIDER, $name, level($level), keyword($keyword), $($kind($field, &$value)),*);
        #[cfg(not(windows))]
        wdf_sim::etw::write(wdf_sim::etw::EtwEvent {
            provider: PROVIDER_NAME,
            name: $name,
            level: tlg::Level::$level.as_int(),
            keyword: $keyword,
            fields: vec![$(($field, event!(@value $kind, $value))),*],
        });
    }};
    (@value u32, $v:expr) => { wdf_sim::etw::EtwValue::U32($v) };
    (@value u16, $v:expr) => { wdf_sim::etw::EtwValue::U16($v) };
    (@value u64, $v:expr) => { wdf_sim::etw::EtwValue::U64($v) };
    (@value win_ntstatus, $v:expr) => { wdf_sim::etw::EtwValue::I32($v) };
    (@value str8, $v:expr) => { wdf_sim::etw::EtwValue::Str($v) };
}

const fn outcome_name(outcome: RestoreOutcome) -> (&'static str, &'static str) {
    match outcome {
        RestoreOutcome::Applied => ("Applied", ""),
        RestoreOutcome::Repeated => ("Repeated", ""),
        RestoreOutcome::Degraded(reason) => ("Degraded", reason_name(reason)),
        RestoreOutcome::Failed => ("Failed", ""),
        RestoreOutcome::Cancelled => ("Cancelled", ""),
        _ => ("Other", ""),
    }
}

const fn reason_name(reason: DegradedReason) -> &'static str {
    match reason {
        DegradedReason::Empty => "Empty",
        DegradedReason::NoState => "NoState",
        DegradedReason::Damaged => "Damaged",
        DegradedReason::Foreign => "Foreign",
        DegradedReason::UnknownMajor => "UnknownMajor",
        DegradedReason::UnknownPort => "UnknownPort",
        DegradedReason::OutOfMemory => "OutOfMemory",
        DegradedReason::Oversized => "Oversized",
        DegradedReason::PortReplaced => "PortReplaced",
        _ => "Other",
    }
}

/// Writes `event` (any IRQL `<= DISPATCH_LEVEL`; allocates nothing on Windows).
pub fn write(event: &TraceEvent) {
    match *event {
        TraceEvent::Save {
            port,
            bytes,
            flows_saved,
            flows_dropped,
            flows_fingerprinted,
            status,
        } => {
            event!(
                "RuntimeStateSave",
                Informational,
                KEYWORD_MIGRATION,
                u32("Port", port),
                u32("Bytes", bytes),
                u32("FlowsSaved", flows_saved),
                u32("FlowsDropped", flows_dropped),
                u32("FlowsFingerprinted", flows_fingerprinted),
                win_ntstatus("Status", status),
            );
        }
        TraceEvent::Restore { port, bytes, flows_restored, fingerprints, outcome, status } => {
            let (outcome, reason) = outcome_name(outcome);
            match outcome {
                "Applied" | "Repeated" | "Cancelled" => event!(
                    "RuntimeStateRestore",
                    Informational,
                    KEYWORD_MIGRATION,
                    u32("Port", port),
                    u32("Bytes", bytes),
                    u32("FlowsRestored", flows_restored),
                    u32("Fingerprints", fingerprints),
                    str8("Outcome", outcome),
                    str8("Reason", reason),
                    win_ntstatus("Status", status),
                ),
                // A degraded restore is an error (the VM's connections were not carried),
                // like a failed one: both at error level.
                _ => event!(
                    "RuntimeStateRestore",
                    Error,
                    KEYWORD_MIGRATION,
                    u32("Port", port),
                    u32("Bytes", bytes),
                    u32("FlowsRestored", flows_restored),
                    u32("Fingerprints", fingerprints),
                    str8("Outcome", outcome),
                    str8("Reason", reason),
                    win_ntstatus("Status", status),
                ),
            }
        }
        TraceEvent::BfeState { state } => {
            event!("BfeStateChange", Informational, KEYWORD_ENGINE, u32("State", state));
        }
        TraceEvent::RegistrationFailed { step, status } => event!(
            "RegistrationFailed",
            Error,
            KEYWORD_ENGINE,
            str8("Step", step),
            win_ntstatus("Status", status),
        ),
        TraceEvent::SettingRefused { name, value, default, reason } => event!(
            "SettingRefused",
            Error,
            KEYWORD_CONFIG,
            str8("Name", name),
            u32("Value", value),
            u32("Default", default),
            str8("Reason", reason),
        ),
        TraceEvent::FlowMemoryRefused { refused, saves_unkept, used, limit } => event!(
            "FlowMemoryRefused",
            Warning,
            KEYWORD_POLICY,
            u32("Refused", refused),
            u32("SavesUnkept", saves_unkept),
            u64("Used", used),
            u64("Limit", limit),
        ),
        TraceEvent::ForeignFilterRejected { filter_id, layer_id } => event!(
            "ForeignFilterRejected",
            Warning,
            KEYWORD_POLICY,
            u64("FilterId", filter_id),
            u16("LayerId", layer_id),
        ),
        _ => event!("UnknownEvent", Verbose, KEYWORD_ENGINE,),
    }
}
