//! Emulated IRQL, per thread.
//!
//! The level itself lives in [`crate::kernel::services`], which the spin locks, rundown and fast
//! mutexes use. Callbacks WFP may call at `DISPATCH_LEVEL` (classify,
//! the vSwitch callbacks: "IRQL <= `DISPATCH_LEVEL`") run at `DISPATCH_LEVEL` in the double, the
//! higher of what the documents allow; services documented for `PASSIVE_LEVEL` only
//! (`FwpmFilterAdd0` and the other management calls, `FwpsCalloutRegister3`,
//! `FwpsCalloutUnregister*`, FwpsvSwitchEventsSubscribe0/Unsubscribe0,
//! `FwpmBfeStateSubscribeChanges0`, a work-item flush) fail loudly above it
//! (`Violation::WrongIrql`).

use crate::kernel::services::{APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL, current_irql, set_irql};

/// An IRQL the double emulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Irql {
    /// `PASSIVE_LEVEL` (0).
    Passive,
    /// `APC_LEVEL` (1).
    Apc,
    /// `DISPATCH_LEVEL` (2).
    Dispatch,
}

impl Irql {
    const fn level(self) -> u8 {
        match self {
            Self::Passive => PASSIVE_LEVEL,
            Self::Apc => APC_LEVEL,
            Self::Dispatch => DISPATCH_LEVEL,
        }
    }
}

/// The calling thread's IRQL.
#[must_use]
pub fn current() -> Irql {
    match current_irql() {
        PASSIVE_LEVEL => Irql::Passive,
        APC_LEVEL => Irql::Apc,
        _ => Irql::Dispatch,
    }
}

/// Raises the thread's IRQL (never lowers it) until dropped.
#[derive(Debug)]
pub struct Raised {
    previous: u8,
}

impl Raised {
    /// Raises to `irql` if it is higher than the current IRQL.
    #[must_use]
    pub fn to(irql: Irql) -> Self {
        let previous = current_irql();
        if irql.level() > previous {
            set_irql(irql.level());
        }
        Self { previous }
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        set_irql(self.previous);
    }
}
