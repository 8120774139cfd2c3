//! vsflow.sys, the KMDF WFP callout driver.
//!
//! Status: the WDK glue (`DriverEntry`, control device, kernel-services implementation, unload)
//! is delivered by the driver issue; until then this crate only fixes the build layout:
//! the wdk dependencies are gated to Windows so that the Linux workspace builds, and this
//! file compiles to an empty library on every host. No behaviour is claimed here.

// no_std only where the driver is real (Windows targets); on other hosts this is an empty
// std cdylib, which needs no panic handler.
#![cfg_attr(windows, no_std)]
