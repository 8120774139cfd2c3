//! What people run on top of the doubles.
//!
//! - [`migrate`]: the README's main job, a two-host live migration with live traffic;
//! - [`bench`]: the callback-path benchmarks;
//! - [`differential`]: the same traffic through the host a VM left and the host it reached,
//!   verdict by verdict (issue 16);
//! - [`inspect`]: a saved runtime-state blob, decoded for a person;
//! - [`replay`]: a packet capture through vsflow, per flow what it would do and why;
//! - [`traffic`]: the exchanges the scenarios send; [`rng`]: their deterministic generator.

pub mod bench;
pub mod differential;
pub mod inspect;
pub mod migrate;
pub mod replay;
pub mod rng;
pub mod traffic;
