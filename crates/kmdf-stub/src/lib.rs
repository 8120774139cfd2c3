//! vsflow's KMDF entry stub: what the WDK's `WdfDriverEntry.lib` does for a KMDF driver, for
//! the image `cargo xtask sys` links on Linux (the WDK's library cannot enter the repository;
//! on Windows the WDK build links the real one and never builds this crate).
//!
//! A KMDF driver's image entry point is not its `DriverEntry` but the stub's `FxDriverEntry`
//! (`/ENTRY:FxDriverEntry`, as wdk-build sets it). The stub binds the driver to the framework
//! before the driver runs, and unbinds it after the driver's unload:
//!
//! 1. [`bind`]: the bind information the stub hands to the WDF loader (`WDF_BIND_INFO`,
//!    version 2 since KMDF 1.25): component `KmdfLibrary`, version 1.33, the number of table
//!    entries the driver was compiled against (458) and the address of the driver's
//!    `WdfFunctions_01033` pointer, which the framework sets to its function table
//!    (fxlibrarycommon.cpp: "`FuncTable` arrives with a ptr to `&WdfFunctions`, so we update
//!    what `WdfFunctions` points to"), plus the addresses of `WdfFunctionCount`,
//!    `WdfStructureCount`, `WdfClientVersionHigherThanFramework` and `WdfStructures`, which
//!    the framework fills (fxldr.h `WDF_BIND_INFO2`).
//! 2. `FxDriverEntry` (kernel target only): copies the registry path (the I/O manager's buffer
//!    lives only during the call; unbinding needs it at unload), calls `WdfVersionBind`
//!    (WDFLDR.SYS) which sets `WdfFunctions_01033` and `WdfDriverGlobals`, then the driver's
//!    `DriverEntry`. If that fails it unbinds and returns its status. If it succeeds and the
//!    framework set `WdfDriverGlobals->DisplaceDriverUnload` (wdfglobals.h: "the stub code
//!    will capture DriverObject->DriverUnload and insert itself first in the unload chain";
//!    fxdriverapi.cpp sets it for a non-PnP driver that gives `EvtDriverUnload`), it saves
//!    `DriverObject->DriverUnload` and puts its own unload routine there.
//! 3. The stub's unload: the saved routine (the framework's, which calls `EvtDriverUnload` and
//!    deletes the driver's objects), then `WdfVersionUnbind`.
//!
//! Written from the open-source KMDF (microsoft/Windows-Driver-Frameworks: fxldr.h,
//! wdfglobals.h, wdffuncenum.h, fxlibrarycommon.cpp, fxdriverapi.cpp; the stub's own source is
//! not published) and wdk-build's link arguments; read, never copied. What it leaves out, and
//! why: the `/GS` cookie initialisation (`GsDriverEntry`; rustc emits no `/GS` checks), class
//! extension binding (`WdfVersionBindClass`; vsflow binds to no class extension) and context
//! type initialisation (`WDF_DECLARE_CONTEXT_TYPE` sections; the Rust driver declares none).

#![no_std]

pub mod bind;
#[cfg(target_os = "windows")]
mod entry;
pub mod path;
