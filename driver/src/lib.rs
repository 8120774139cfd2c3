//! vsflow.sys, the KMDF WFP callout driver: only the glue that needs the WDK.
//!
//! - [`entry`]: `DriverEntry` (non-PnP KMDF driver), configuration from the service's
//!   `Parameters` key, start, and `EvtDriverUnload` in the documented order.
//! - [`services`]: `vsflow_callout::KernelServices` on wdk-sys: spin locks, interrupt time,
//!   a WDF work item at `PASSIVE_LEVEL`, `DbgPrintEx` logging, frame reads through NDIS.
//! - [`control`]: the control device `\\.\vsflow` (SYSTEM and Administrators only) and its
//!   sequential IOCTL queue; requests are handled by `vsflow_callout::control`.
//!
//! Everything that does not need the WDK lives in vsflow-callout, vsflow-core and
//! vsflow-proto, which Linux builds and tests. On non-Windows targets this crate is empty.

#![cfg_attr(windows, no_std)]

#[cfg(windows)]
extern crate alloc;
#[cfg(all(windows, not(test)))]
extern crate wdk_panic;

#[cfg(windows)]
pub mod control;
#[cfg(windows)]
pub mod entry;
#[cfg(windows)]
pub mod services;

#[cfg(all(windows, not(test)))]
#[global_allocator]
static GLOBAL_ALLOCATOR: wdk_alloc::WdkAllocator = wdk_alloc::WdkAllocator;
