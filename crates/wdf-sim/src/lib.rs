//! wdf-sim: a KMDF double for driver/.
//!
//! driver/ calls WDF and kernel functions through wdk-sys. In `cargo xtask driver-tests` the
//! driver is built for the Linux host against xtask/wdk-mirror, whose wdk-sys declares those
//! functions; this crate defines them ([`exports`]), so the driver's own calls land in a model
//! of the framework ([`framework`]) built from KMDF's documentation and its open-source
//! implementation (microsoft/Windows-Driver-Frameworks: read, never copied):
//!
//! - object attributes validated per DDI as `FxValidateObjectAttributes` does ([`validate`]):
//!   a zeroed `WDF_OBJECT_ATTRIBUTES` (`ExecutionLevel`/`SynchronizationScope` 0 = Invalid) is
//!   `STATUS_WDF_OBJECT_ATTRIBUTES_INVALID`;
//! - configuration structure sizes; the non-PnP control device sequence (SDDL, parsed by
//!   `WdfDeviceCreate` as `IoCreateDeviceSecure` does: [`sddl`]; name,
//!   `WdfDeviceCreate`, symbolic link, default queue before `WdfControlFinishInitializing`, no
//!   I/O until it is called);
//! - `METHOD_BUFFERED` IOCTLs through a sequential queue with one shared system buffer, each
//!   request completed exactly once, `Information` within the output buffer;
//! - work items and timers (parent rules, coalescing enqueue, flush, periodic re-arm, no
//!   periodic passive timer), IRQL rules, spin locks, `RtlGetVersion`, the `Parameters` key;
//! - the kernel pool ([`pool`]: `ExAllocatePool2`/`ExFreePool`, reached by vsflow.sys as linked
//!   for Windows when crates/sys-loader runs it; the host build uses the host heap);
//! - unload: `EvtDriverUnload`, then the framework deletes the tree; leftovers are reported.
//!
//! [`Session`] is the harness a test drives; [`etw`] records the driver's TraceLogging events.
//! docs/SIMULATOR-FIDELITY.md ("KMDF double") lists every modelled behaviour, its source and
//! its test.

#![allow(
    clippy::doc_markdown,
    reason = "the docs name Windows DDIs, IRQLs and structures in prose throughout"
)]
#![allow(
    clippy::too_long_first_doc_paragraph,
    reason = "each shim's first paragraph states the KMDF rule it enforces and its source"
)]

pub mod etw;
pub mod exports;
pub mod framework;
pub mod pool;
pub mod sddl;
pub mod session;
pub mod status;
pub mod validate;
pub mod violation;

pub use session::{DriverEntry, Ioctl, Session};
pub use violation::Violation;
