//! vsflow.sys, the KMDF WFP callout driver: only the glue that needs the WDK.
//!
//! - [`entry`]: `DriverEntry` (non-PnP KMDF driver), configuration from the service's
//!   `Parameters` key, start, and `EvtDriverUnload` in the documented order.
//! - [`services`]: `vsflow_callout::KernelServices` on wdk-sys: spin locks, interrupt time,
//!   a WDF work item at `PASSIVE_LEVEL`, `DbgPrintEx` logging, ETW events, the OS build,
//!   frame reads through NDIS.
//! - [`control`]: the control device `\\.\vsflow` (SYSTEM and Administrators only) and its
//!   sequential IOCTL queue; requests are handled by `vsflow_callout::control`.
//! - [`expiry`]: the periodic WDF timer that expires idle flows.
//! - [`random`]: the per-boot seed, from the system-preferred RNG (`BCryptGenRandom`).
//! - [`etw`]: the `Vsflow.Callout` `TraceLogging` provider (docs/TRACING.md).
//! - [`wdf`]: `WDF_OBJECT_ATTRIBUTES_INIT` and structure sizes.
//!
//! Everything that does not need the WDK lives in vsflow-callout, vsflow-core and
//! vsflow-proto, which Linux builds and tests. On Windows this is the driver; on the Linux host
//! it builds only with the feature `wdf-sim`, against xtask/wdk-mirror and the KMDF double
//! (`cargo xtask driver-tests`), and is otherwise empty.

#![cfg_attr(windows, no_std)]

#[cfg(any(windows, feature = "wdf-sim"))]
extern crate alloc;
#[cfg(all(windows, not(test)))]
extern crate wdk_panic;
// The image `cargo xtask sys` links on Linux: vsflow's KMDF entry stub in place of the WDK's.
#[cfg(all(windows, feature = "kmdf-stub"))]
extern crate kmdf_stub;

#[cfg(any(windows, feature = "wdf-sim"))]
pub mod control;
#[cfg(any(windows, feature = "wdf-sim"))]
pub mod entry;
#[cfg(any(windows, feature = "wdf-sim"))]
pub mod etw;
#[cfg(any(windows, feature = "wdf-sim"))]
pub mod expiry;
#[cfg(any(windows, feature = "wdf-sim"))]
pub mod random;
#[cfg(any(windows, feature = "wdf-sim"))]
pub mod services;
#[cfg(any(windows, feature = "wdf-sim"))]
pub mod wdf;

#[cfg(all(test, not(windows), feature = "wdf-sim"))]
mod tests;

/// The kernel heap (wdk-alloc: `ExAllocatePool2`, tag `'rust'`) gives 16-byte alignment: no
/// type the driver allocates may need more (also linted by `cargo xtask wdk-check`).
#[cfg(any(windows, feature = "wdf-sim"))]
const _: () = {
    assert!(core::mem::align_of::<vsflow_callout::Driver<services::WdkServices>>() <= 16);
    assert!(core::mem::align_of::<services::WdkServices>() <= 16);
    assert!(core::mem::align_of::<services::KernelRwLock>() <= 16);
    assert!(core::mem::align_of::<services::KernelRundown>() <= 16);
};

#[cfg(all(windows, not(test)))]
#[global_allocator]
static GLOBAL_ALLOCATOR: wdk_alloc::WdkAllocator = wdk_alloc::WdkAllocator;
