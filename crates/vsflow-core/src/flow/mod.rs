//! Flows: the key that names one, the record kept for it, the idle timeouts, the bounded
//! per-port table that holds them, and the tentative flows a pickup admitted that the VM has
//! not answered yet.

mod key;
mod record;
mod table;
pub mod tentative;
mod timeouts;

pub use key::FlowKey;
pub use record::{Admission, FlowRecord, FlowState, Opener};
pub use table::{Eviction, FlowIndex, FlowTable, MAX_FLOWS_LIMIT, Room, TableConfig};
pub use tentative::{PickupKind, TentativeFlows};
pub use timeouts::{TimeoutClass, Timeouts};
