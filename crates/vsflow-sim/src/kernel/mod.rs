//! The kernel services the driver under test uses, doubled for user mode.
//!
//! - [`services`]: `KernelServices` for the simulator: the virtual clock, work items, spin locks,
//!   rundown, tracing;
//! - [`irql`]: emulated IRQL, per thread;
//! - [`alloc`]: pool accounting in the spirit of Driver Verifier's pool tracking;
//! - [`faults`]: fault injection into any fallible service, in the style of microsoft/usersim;
//! - [`interrupts`]: interrupts holding up a processor (and the spin locks its code holds).

pub mod alloc;
pub mod faults;
pub mod interrupts;
pub mod irql;
pub mod services;
