//! vsflow-sim: a user-mode Windows Filtering Platform engine and Hyper-V virtual switch double.
//!
//! It defines, as `#[no_mangle] extern "system"` functions, the `fwpkclnt.sys` symbols that
//! vsflow-callout imports ([`exports`]), so the callout code under test is the code that ships.
//! Each simulated [`Host`] has its own engine ([`engine`]: BFE, sessions, transactions,
//! providers, sublayers, callouts, filters, classify dispatch) and vSwitch ([`vswitch`]: switch,
//! port and NIC events, runtime-state save and restore, pended-notification tracking), and loads
//! its own instance of the driver. Every documented contract is checked; a breach is recorded as
//! a [`Violation`] and reported loudly.
//!
//! [`migrate`] runs the two-host live migration of the README's main job; [`inspect`] decodes a
//! saved blob for a person.

pub mod alloc;
pub mod bench;
pub mod contract;
pub mod engine;
pub mod exports;
pub mod faults;
pub mod foreign;
pub mod host;
pub mod inspect;
pub mod irql;
pub mod migrate;
pub mod packet;
pub mod rng;
pub mod services;
pub mod traffic;
pub mod vswitch;
pub mod wire;
mod world;

pub use contract::Violation;

#[global_allocator]
static ACCOUNTING: alloc::Accounting = alloc::Accounting;
pub use host::{Host, PacketFate, RestoreTicket, VmRestore};
pub use packet::SimPacket;
