//! vsflow-sim: a user-mode Windows Filtering Platform engine and Hyper-V virtual switch double.
//!
//! It defines, as `#[no_mangle] extern "system"` functions, the `fwpkclnt.sys` symbols that
//! vsflow-callout imports ([`wfp::exports`]), so the callout code under test is the code that
//! ships. Each simulated [`Host`] has its own engine ([`wfp::engine`]: BFE, sessions,
//! transactions, providers, sublayers, callouts, filters, classify dispatch) and vSwitch
//! ([`vswitch`]: switch,
//! port and NIC events, runtime-state save and restore, pended-notification tracking), and loads
//! its own instance of the driver. Every documented contract is checked; a breach is recorded as
//! a [`Violation`] and reported loudly.
//!
//! The modules are laid out by what they double:
//! - [`wfp`]: the filter engine (`fwpkclnt.sys`): engine state, the exported functions, and
//!   another elevated process adding its own filters;
//! - [`vswitch`]: the Hyper-V extensible switch as WFP exposes it: event subscriptions and
//!   notifications, packets as the vSwitch transport layers hand them over, the wire;
//! - [`kernel`]: the kernel services the driver uses (IRQL, locks, work items, clock, pool
//!   accounting) and fault injection into them;
//! - [`tools`]: what people run: [`tools::migrate`] (the README's main job), [`tools::bench`],
//!   [`tools::inspect`] (a saved blob decoded for a person), and the scenarios' traffic.
//!
//! [`Host`] ties one engine, its switches and one loaded driver together; `world` maps each
//! thread to its current host; [`contract`] records every breach of a documented contract.

pub mod contract;
pub mod host;
pub mod kernel;
pub mod tools;
pub mod vswitch;
pub mod wfp;
mod world;

pub use contract::Violation;

#[global_allocator]
static ACCOUNTING: kernel::alloc::Accounting = kernel::alloc::Accounting;
pub use host::{Host, PacketFate, RestoreTicket, VmRestore};
pub use vswitch::packet::SimPacket;
