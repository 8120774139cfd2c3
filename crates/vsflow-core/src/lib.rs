//! vsflow-core: the pure heart of vsflow.
//!
//! Everything here is plain data and arithmetic: no unsafe, no clock, no locks, no I/O. The
//! callout bridge (`vsflow-callout`) turns WFP classify calls and vSwitch notifications into
//! calls on these types; the same code runs unchanged in the kernel and in the Linux tests.
//!
//! - [`packet`]: what classify is told about a packet ([`PacketMeta`]).
//! - [`icmp`]: ICMP and ICMPv6 as stateful firewalls handle them: echo flows, errors related
//!   to the flow they quote, neighbor discovery.
//! - [`flow`]: the bounded per-port [`FlowTable`], its keys, records and timeouts.
//! - [`policy`]: the per-port [`Mode`] and versioned allow rules.
//! - [`port`]: a switch port's durable identity and state ([`Port`]), with [`classify`].
//! - [`codec`]: the live-migration runtime-state blob (`encode`, `decode`, `apply`).
//! - [`fingerprint`]: keyed fingerprints of connections a blob carries beyond its exact
//!   records, and their pickup on the destination.
//! - [`keys`]: a key per purpose (each hash's own) derived from the per-boot seed.
//!
//! Time is supplied by the caller as [`Tick`]s (100 ns units, Windows interrupt time).
//! Allocation is fallible everywhere: out of memory is [`Error::OutOfMemory`], never a panic.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod classify;
pub mod codec;
pub mod counters;
pub mod error;
pub mod fingerprint;
pub mod flow;
pub mod guid;
pub mod icmp;
pub mod keys;
pub mod packet;
pub mod policy;
pub mod port;
pub mod time;

pub use classify::{BlockReason, Verdict, classify};
pub use counters::PortCounters;
pub use error::Error;
pub use flow::{FlowKey, FlowRecord, FlowState, FlowTable, Opener, Timeouts};
pub use guid::Guid;
pub use icmp::Icmp;
pub use packet::{Direction, Headers, IpFamily, PacketMeta, TcpFlags, protocol};
pub use policy::{AllowRule, Mode, PortRange, Prefix, RuleSet};
pub use port::{Port, PortConfig, PortIdentity};
pub use time::{TICKS_PER_SECOND, Tick};
