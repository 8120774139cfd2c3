//! The driver's host-wide flow-memory budget ([`vsflow_core::flow::FlowBudget`]): one per
//! driver, shared by every port's flow table through a `&'static` reference
//! ([`vsflow_core::flow::BudgetRef`]).
//!
//! The budget is allocated fallibly (`try_box`) when the driver object is created and freed
//! when it is dropped. The tables and buffers that refer to it all live inside the driver (its
//! ports' tables, encoders and save buffers, and a restore's table while it is built): the driver declares the budget as its last field, so
//! Rust drops it after every port, and a restore runs only while the driver holds a reference
//! to the port (unload drains every callback and work item before the driver is dropped). The
//! `'static` lifetime handed out is therefore never outlived; the core stays free of `unsafe`.

use alloc::boxed::Box;
use core::ptr::NonNull;

use vsflow_core::flow::{BudgetRef, FlowBudget};

use crate::alloc_util::try_box;
use crate::error::CalloutError;

/// The owned budget (see the module docs).
pub struct HostBudget(NonNull<FlowBudget>);

// SAFETY: `FlowBudget` is atomics only (`Sync` and `Send`); `HostBudget` owns it like a `Box`.
unsafe impl Send for HostBudget {}
// SAFETY: as above: shared access goes through `&FlowBudget`, which is `Sync`.
unsafe impl Sync for HostBudget {}

impl HostBudget {
    /// A budget of `limit` bytes.
    ///
    /// # Errors
    /// Out of memory.
    pub fn try_new(limit: usize) -> Result<Self, CalloutError> {
        let boxed = try_box(FlowBudget::new(limit))?;
        Ok(Self(NonNull::from(Box::leak(boxed))))
    }

    /// The budget.
    pub fn get(&self) -> &FlowBudget {
        // SAFETY: the pointer came from a live `Box` leaked in `try_new` and is freed only in
        // `drop`, after which no `&self` exists.
        unsafe { self.0.as_ref() }
    }

    /// The `'static` handle tables keep: valid until this budget is dropped, which happens
    /// after every table of the driver (see the module docs).
    pub fn handle(&self) -> BudgetRef {
        // SAFETY: the budget is freed only when the driver drops its last field, after its
        // ports and every table in them (the module docs give the argument).
        BudgetRef(unsafe { self.0.as_ref() })
    }
}

impl Drop for HostBudget {
    fn drop(&mut self) {
        debug_assert_eq!(self.get().used(), 0, "a flow table outlived the driver's budget");
        // SAFETY: the pointer came from `Box::leak` in `try_new`; this is its only release.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}
