//! vsflow-callout: everything between the Windows Filtering Platform and vsflow-core.
//!
//! The driver (`driver/`, WDK glue) creates a [`Driver`] with its [`KernelServices`] and calls
//! [`Driver::start`] and [`Driver::stop`]; WFP then calls the `extern "system"` functions here:
//!
//! - [`classify`]: where a packet goes: vSwitch port ids and 5-tuple in, verdict out.
//! - [`vswitch`]: the seven vSwitch event callbacks; [`vswitch::save`] encodes a port's runtime
//!   state, [`vswitch::restore`] copies a blob and pends, [`pending`] holds the notifications in
//!   flight and guarantees each is completed exactly once.
//! - [`registration`]: provider, sublayer, callouts, filters, subscription, and their exact
//!   reverse; waits for the base filtering engine when it is not yet running.
//! - [`control`]: the control device's IOCTLs (vsflow-proto), validated before use.
//! - [`frame`]: reads the TCP flags from the first bytes of a packet, which start at the IP
//!   header at these layers (never writes a packet).
//! - [`ports`]: per-port state under per-port locks, found through per-processor reader locks
//!   held only to find a port (and take a counted reference on it) or to judge one packet.
//!
//! Nothing here depends on wdk-sys: the crate builds and runs on Linux against `vsflow-sim`,
//! which defines the same `fwpkclnt.sys` symbols the driver imports.

#![no_std]

extern crate alloc;

pub mod alloc_util;
mod budget;
pub mod classify;
pub mod config;
pub mod control;
pub mod driver;
pub mod error;
pub mod frame;
mod instances;
pub mod keys;
pub mod os_version;
pub mod pending;
mod percpu;
pub mod ports;
mod prefetch;
pub mod registration;
mod save_buffer;
pub mod seed;
pub mod services;
pub mod sync;
pub mod trace;
pub mod vswitch;
pub mod wide;

pub use config::{DriverConfig, Key, RestoreMode, SETTINGS, Setting};
pub use driver::{Driver, DriverStats, FlowTotals};
pub use error::CalloutError;
pub use registration::Phase;
pub use services::{
    ConfigValue, Frame, KernelServices, LogLevel, RawRundown, RawRwSpinLock, RawSpinLock,
};
pub use trace::{DegradedReason, RestoreOutcome, TraceEvent};
