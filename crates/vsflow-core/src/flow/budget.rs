//! The host-wide flow-memory budget: every flow table of a host charges the storage it grows by
//! to one [`FlowBudget`], and a table whose next growth step would pass the limit refuses the
//! new flow instead ([`crate::Error::OverBudget`]: the packet's verdict stands, the flow is not
//! tracked).
//!
//! What is charged and when:
//! - a growth step on the packet path (a slot segment or a bucket segment of a table, a few
//!   kilobytes: [`crate::flow::FlowTable`]'s module docs) is charged strictly
//!   ([`FlowBudget::try_charge`]); past the limit the new flow is refused and counted;
//! - a table's first storage (a port being created) and a restore's storage (the VM's carried
//!   connections) are charged even past the limit ([`FlowBudget::charge_over`], counted as
//!   overdraft): refusing them would leave a port untracked or cut established connections.
//!   Both are bounded by the per-port bound and the blob size, not by the guest's traffic;
//! - nothing already tracked is ever given up for the budget: it refuses only new flows;
//! - the memory a port's save keeps for its next save ([`crate::codec::Encoder`], about 200
//!   bytes a flow) is charged as the save ends if there is room ([`FlowBudget::try_charge_save`]);
//!   otherwise it is freed at once (counted, [`FlowBudget::saves_unkept`]): a save never fails
//!   and its blob does not change, it only allocates again next time.
//! - the buffer a port's save hands to WFP (the driver's, `vsflow_callout`'s `save_buffer`: at
//!   most `BlobCap` bytes a port, kept until the port's next save or its deletion) is charged
//!   even past the limit ([`FlowBudget::charge_over`]): WFP may read it after the save
//!   returns, so it cannot be freed for the budget.
//!
//! A table releases what it charged when it is dropped. The budget is a few atomics: a growth
//! step (one per 64 flows at most) does one compare-exchange on it, a packet that finds its flow
//! or reuses a free slot does not touch it.

use core::fmt;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The host-wide flow-memory budget (see the module docs).
#[derive(Debug)]
pub struct FlowBudget {
    limit: AtomicUsize,
    used: AtomicUsize,
    refused: AtomicU64,
    reported: AtomicU64,
    overdraft: AtomicU64,
    saves_unkept: AtomicU64,
    saves_unkept_reported: AtomicU64,
}

/// What the budget refused since the last report ([`FlowBudget::take_unreported`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unreported {
    /// New flows refused.
    pub refused: u64,
    /// Saves whose working memory was freed at once, not kept.
    pub saves_unkept: u64,
}

impl Unreported {
    /// Nothing to report.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.refused == 0 && self.saves_unkept == 0
    }
}

impl FlowBudget {
    /// A budget of `limit` bytes, nothing charged.
    #[must_use]
    pub const fn new(limit: usize) -> Self {
        Self {
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            reported: AtomicU64::new(0),
            overdraft: AtomicU64::new(0),
            saves_unkept: AtomicU64::new(0),
            saves_unkept_reported: AtomicU64::new(0),
        }
    }

    /// Charges `bytes` if the total stays within the limit; otherwise charges nothing, counts a
    /// refusal and returns `false`.
    pub fn try_charge(&self, bytes: usize) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        let charged = self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            used.checked_add(bytes).filter(|&total| total <= limit)
        });
        if charged.is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        charged.is_ok()
    }

    /// Charges `bytes` of a save's kept memory if the total stays within the limit; otherwise
    /// charges nothing, counts the save in [`FlowBudget::saves_unkept`] (not as a refused
    /// flow) and returns `false`: the caller frees the memory.
    pub fn try_charge_save(&self, bytes: usize) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        let charged = self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            used.checked_add(bytes).filter(|&total| total <= limit)
        });
        if charged.is_err() {
            self.saves_unkept.fetch_add(1, Ordering::Relaxed);
        }
        charged.is_ok()
    }

    /// Charges `bytes` even past the limit (a port's first storage, a restore's), counting
    /// the bytes past it as overdraft.
    pub fn charge_over(&self, bytes: usize) {
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        let limit = self.limit.load(Ordering::Relaxed);
        let over = before.saturating_add(bytes).saturating_sub(limit.max(before));
        if over > 0 {
            self.overdraft.fetch_add(over as u64, Ordering::Relaxed);
        }
    }

    /// Gives back `bytes` charged earlier.
    pub fn release(&self, bytes: usize) {
        let _ = self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            Some(used.saturating_sub(bytes))
        });
    }

    /// Bytes charged now.
    #[must_use]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit in bytes.
    #[must_use]
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// New flows refused so far.
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Bytes charged past the limit so far (ports created and restores applied at the limit).
    #[must_use]
    pub fn overdraft(&self) -> u64 {
        self.overdraft.load(Ordering::Relaxed)
    }

    /// Saves whose working memory the budget had no room to keep (freed as the save ended).
    #[must_use]
    pub fn saves_unkept(&self) -> u64 {
        self.saves_unkept.load(Ordering::Relaxed)
    }

    /// Refused flows and unkept saves since the last call (for a periodic event: the driver's
    /// `FlowMemoryRefused`, one per tick at most).
    pub fn take_unreported(&self) -> Unreported {
        let since = |total: u64, reported: &AtomicU64| {
            total.saturating_sub(reported.swap(total, Ordering::Relaxed))
        };
        Unreported {
            refused: since(self.refused(), &self.reported),
            saves_unkept: since(self.saves_unkept(), &self.saves_unkept_reported),
        }
    }
}

/// A table's handle on its host's budget: a shared reference to a budget that outlives every
/// table (the driver owns it and drops its ports first). Compared by address.
#[derive(Clone, Copy)]
pub struct BudgetRef(pub &'static FlowBudget);

impl PartialEq for BudgetRef {
    fn eq(&self, other: &Self) -> bool {
        core::ptr::eq(self.0, other.0)
    }
}

impl Eq for BudgetRef {}

impl fmt::Debug for BudgetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BudgetRef({} of {} bytes)", self.0.used(), self.0.limit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_within_the_limit_refuse_past_it_and_overdraft_is_counted() {
        let b = FlowBudget::new(100);
        assert!(b.try_charge(60));
        assert!(!b.try_charge(41), "past the limit");
        assert_eq!((b.used(), b.refused()), (60, 1));
        assert!(b.try_charge(40));
        b.charge_over(30);
        assert_eq!((b.used(), b.overdraft()), (130, 30));
        b.release(130);
        assert_eq!(b.used(), 0);
        assert!(b.try_charge_save(100));
        assert!(!b.try_charge_save(1), "a save's memory past the limit");
        assert_eq!((b.used(), b.refused(), b.saves_unkept()), (100, 1, 1), "not a refused flow");
        b.release(100);
        assert_eq!(b.take_unreported(), Unreported { refused: 1, saves_unkept: 1 });
        assert!(b.take_unreported().is_empty(), "each reported once");
        assert!(!b.try_charge_save(101));
        assert_eq!(b.take_unreported(), Unreported { refused: 0, saves_unkept: 1 });
    }
}
