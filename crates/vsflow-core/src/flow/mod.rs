//! Flows: the key that names one, the record kept for it, the idle timeouts, the bounded
//! per-port table that holds them, and the tentative flows a pickup admitted.
//!
//! The table grows in bounded steps (`segments.rs`), each charged to the host's flow-memory
//! budget (`budget.rs`); tentative flows are those the VM has not answered yet.

mod budget;
mod key;
mod record;
mod segments;
mod table;
pub mod tentative;
mod timeouts;

pub use budget::{BudgetRef, FlowBudget, Unreported};
pub use key::FlowKey;
pub use record::{Admission, FlowRecord, FlowState, Opener};
pub use table::{Eviction, FlowIndex, FlowTable, MAX_FLOWS_LIMIT, Room, TableConfig};
pub use tentative::{PickupKind, TentativeFlows};
pub use timeouts::{TimeoutClass, Timeouts};
