//! Which running driver a classify or notify call belongs to, without trusting
//! `filter->context`.
//!
//! Any elevated process can add a filter that names vsflow's callout, with any context. So the
//! callout never dereferences a filter's context: it compares the context *value* and the
//! filter's run-time id against this table of running drivers and the filter ids each added
//! itself (from `FwpmFilterAdd0`), and uses the driver only on a match. Entries are static
//! atomics: reads on the packet path share read-only cache lines and take no lock.
//!
//! A driver registers before it adds its filters and unregisters after its callouts are
//! unregistered and its callbacks in flight drained (`registration.rs`).

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::error::CalloutError;

/// Drivers that can run at once in one address space (one in the kernel; the simulator runs
/// several hosts in one process).
const SLOTS: usize = 16;
/// vsflow's filters per driver (one per layer).
const FILTERS: usize = 4;

struct Instance {
    driver: AtomicUsize,
    filters: [AtomicU64; FILTERS],
    callouts: [AtomicU32; FILTERS],
}

#[allow(clippy::declare_interior_mutable_const, reason = "an array initializer only")]
const EMPTY: Instance = Instance {
    driver: AtomicUsize::new(0),
    filters: [const { AtomicU64::new(0) }; FILTERS],
    callouts: [const { AtomicU32::new(0) }; FILTERS],
};

static INSTANCES: [Instance; SLOTS] = [EMPTY; SLOTS];

fn find(driver: usize) -> Option<&'static Instance> {
    INSTANCES.iter().find(|i| driver != 0 && i.driver.load(Ordering::Acquire) == driver)
}

/// Registers a running driver at `driver` (its address).
///
/// # Errors
/// `InvalidState` when every slot is taken.
pub fn register(driver: usize) -> Result<(), CalloutError> {
    if find(driver).is_some() {
        return Ok(());
    }
    for i in &INSTANCES {
        if i.driver.compare_exchange(0, driver, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            for f in &i.filters {
                f.store(0, Ordering::Release);
            }
            for c in &i.callouts {
                c.store(0, Ordering::Release);
            }
            return Ok(());
        }
    }
    Err(CalloutError::InvalidState)
}

/// Forgets a driver (after its callouts are unregistered and its callbacks drained).
pub fn unregister(driver: usize) {
    if let Some(i) = find(driver) {
        for f in &i.filters {
            f.store(0, Ordering::Release);
        }
        i.driver.store(0, Ordering::Release);
    }
}

/// Records the run-time id of filter number `n` (`0..4`) the driver added itself.
pub fn set_filter(driver: usize, n: usize, filter_id: u64) {
    if let Some(slot) = find(driver).and_then(|i| i.filters.get(n)) {
        slot.store(filter_id, Ordering::Release);
    }
}

/// Records the run-time id of callout number `n` the driver registered.
pub fn set_callout(driver: usize, n: usize, callout_id: u32) {
    if let Some(slot) = find(driver).and_then(|i| i.callouts.get(n)) {
        slot.store(callout_id, Ordering::Release);
    }
}

/// The running driver a classify call belongs to: `context` must be a registered driver's
/// address and `filter_id` one of the filters it added. Only compares values.
#[inline]
pub fn driver_for_filter(context: u64, filter_id: u64) -> Option<usize> {
    let context = usize::try_from(context).ok().filter(|&c| c != 0)?;
    let i = find(context)?;
    i.filters
        .iter()
        .any(|f| filter_id != 0 && f.load(Ordering::Acquire) == filter_id)
        .then_some(context)
}

/// Whether `context` is a registered driver's address (a value comparison).
pub fn is_driver(context: u64) -> bool {
    usize::try_from(context).ok().and_then(find).is_some()
}

/// A registered driver that registered callout `callout_id` (to report a foreign filter to).
pub fn driver_for_callout(callout_id: u32) -> Option<usize> {
    INSTANCES.iter().find_map(|i| {
        let d = i.driver.load(Ordering::Acquire);
        (d != 0
            && callout_id != 0
            && i.callouts.iter().any(|c| c.load(Ordering::Acquire) == callout_id))
        .then_some(d)
    })
}
