//! The Windows Filtering Platform double: the engine (`fwpkclnt.sys` and the base filtering
//! engine behind it), the symbols the driver imports from it, and other processes using it.
//!
//! - [`engine`]: BFE state, sessions, transactions, providers, sublayers, callouts, filters,
//!   filter arbitration and classify dispatch. The engine owns the rules it enforces.
//! - [`exports`]: the exported `fwpkclnt.sys` functions, thin shims onto [`engine`] and
//!   [`crate::vswitch`].
//! - [`foreign`]: another elevated process adding its own objects and filters.

pub mod engine;
pub mod exports;
pub mod foreign;
