//! Flows: the key that names one, the record kept for it, the idle timeouts, and the bounded
//! per-port table that holds them.

mod key;
mod record;
mod table;
mod timeouts;

pub use key::FlowKey;
pub use record::{Admission, FlowRecord, FlowState, Opener};
pub use table::{Eviction, FlowIndex, FlowTable, Room, TableConfig};
pub use timeouts::{TimeoutClass, Timeouts};
