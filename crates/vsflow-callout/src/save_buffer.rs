//! The buffer a port's runtime-state save hands to WFP, charged to the host's flow-memory
//! budget.
//!
//! WFP reads the blob after the save callback returns, and who frees it is not documented
//! ([`crate::vswitch::save`]; docs/WINDOWS-VERIFICATION.md items 1-3), so the driver keeps one
//! buffer per port: reused by the port's next save, freed with the port or at stop. It holds up
//! to `BlobCap` bytes (61,440 by default) for as long as the port lives, non-paged memory like
//! the port's flow table, so it is charged to the same host-wide budget
//! ([`vsflow_core::flow::FlowBudget`]) as each save ends, as the save's kept working memory is
//! (`vsflow_core::codec::Encoder`). Unlike that memory it cannot be freed when the budget has
//! no room (WFP may still be reading it), so it is charged even past the limit
//! ([`vsflow_core::flow::FlowBudget::charge_over`], counted as overdraft), as a port's first
//! storage and a restore's are: bounded by `BlobCap` per port, not by the guest's traffic. A
//! buffer that shrank gives back the difference; a dropped one gives back everything.
//!
//! **Readied before the save.** The expiry sweep readies the buffer of a port past the cap for
//! its next save ([`SaveBuffer::reserve_for_next_save`]), so that a save, at `DISPATCH_LEVEL`
//! in the save callback and usually a live migration's, allocates nothing. A buffer a save
//! handed to WFP is never moved or freed outside a save (review s5, R5-3), so for a port
//! saved once while small (its buffer as long as that blob) and grown since, the sweep
//! reserves a second buffer beside it, the *spare*, which the next save takes
//! ([`SaveBuffer::for_save`]: the handed block is freed there, where a save reusing it would
//! overwrite it anyway). At most `2 x BlobCap` per port meanwhile, charged like the buffer. A
//! sweep that cannot allocate leaves it to the save, which grows the buffer itself (and sends
//! the no-state blob if that fails too: degraded, never a lower policy).

use alloc::vec::Vec;

use vsflow_core::flow::BudgetRef;

/// A port's save buffer and what it has charged (see the module docs).
#[derive(Debug, Default)]
pub struct SaveBuffer {
    bytes: Vec<u8>,
    /// The budget `charged` is charged to.
    budget: Option<BudgetRef>,
    /// Bytes of `bytes`' capacity charged to `budget`.
    charged: usize,
    /// A save handed the buffer's bytes to WFP ([`SaveBuffer::blob`]): from then on only a
    /// save (or the port's deletion) may move or free them (review s5, R5-3).
    handed: bool,
    /// Room the sweep reserved for the next save beside handed `bytes` too short for it (see
    /// the module docs); empty otherwise.
    spare: Vec<u8>,
}

impl SaveBuffer {
    /// An empty buffer, nothing charged.
    pub const fn new() -> Self {
        Self { bytes: Vec::new(), budget: None, charged: 0, handed: false, spare: Vec::new() }
    }

    /// The bytes, for the encoder to write the blob into.
    pub const fn bytes_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// The bytes a save writes its blob into: the spare the sweep reserved, if it holds more
    /// than the buffer, swapped in (the buffer the last save handed out is freed: WFP copied
    /// that blob before the last save's OID completed, WINDOWS-VERIFICATION 1, as reusing it
    /// assumes); otherwise the buffer itself. Allocates nothing.
    pub fn for_save(&mut self) -> &mut Vec<u8> {
        if self.spare.capacity() > self.bytes.capacity() {
            self.bytes = core::mem::take(&mut self.spare);
            self.handed = false;
        } else if self.spare.capacity() > 0 {
            self.spare = Vec::new();
        }
        &mut self.bytes
    }

    /// The blob's address and length, handed to WFP: the bytes stay where they are until the
    /// port's next save or its deletion (WFP copies them some time before the save's OID
    /// completes: WINDOWS-VERIFICATION 1).
    pub const fn blob(&mut self) -> (*const u8, usize) {
        self.handed = true;
        (self.bytes.as_ptr(), self.bytes.len())
    }

    /// Reserves room for a blob of `cap` bytes for the port's next save (the expiry sweep
    /// readying a port past the cap, so that its save allocates nothing), charged to `budget`
    /// as a save's buffer is. A buffer no save has handed to WFP grows in place; one that was
    /// is never moved or freed outside a save, since WFP may still be copying it (review s5,
    /// R5-3: the sweep after a port's first save grew the buffer, a reallocation that freed
    /// the block WFP was handed), so a spare of `cap` bytes is reserved beside it for the save
    /// to take ([`SaveBuffer::for_save`]). Fallible: `false` if nothing was reserved (room
    /// already, or no memory: the save then grows the buffer itself).
    pub fn reserve_for_next_save(&mut self, cap: usize, budget: Option<BudgetRef>) -> bool {
        if self.bytes.capacity() >= cap || self.spare.capacity() >= cap {
            return false;
        }
        let reserved = if self.handed {
            let mut spare = Vec::new();
            let ok = spare.try_reserve_exact(cap).is_ok();
            if ok {
                self.spare = spare;
            }
            ok
        } else {
            self.bytes.try_reserve_exact(cap.saturating_sub(self.bytes.len())).is_ok()
        };
        if reserved && let Some(budget) = budget {
            self.settle(budget);
        }
        reserved
    }

    /// Frees the spare (a port no longer past the cap: its next save fits the buffer it has or
    /// grows it as any save within the cap does), giving its charge back.
    pub fn release_spare(&mut self) {
        if self.spare.capacity() == 0 {
            return;
        }
        self.spare = Vec::new();
        if let Some(budget) = self.budget {
            self.settle(budget);
        }
    }

    /// Bytes charged to the budget now.
    #[cfg(test)]
    pub const fn charged(&self) -> usize {
        self.charged
    }

    /// Settles the buffer's capacity with `budget` once a save has written it: growth charged
    /// even past the limit, a shrink given back.
    pub fn settle(&mut self, budget: BudgetRef) {
        if self.budget != Some(budget) {
            self.uncharge();
            self.budget = Some(budget);
        }
        let held = self.bytes.capacity().saturating_add(self.spare.capacity());
        if held > self.charged {
            budget.0.charge_over(held - self.charged);
        } else {
            budget.0.release(self.charged - held);
        }
        self.charged = held;
    }

    fn uncharge(&mut self) {
        if let Some(BudgetRef(b)) = self.budget {
            b.release(self.charged);
        }
        self.charged = 0;
    }
}

impl Drop for SaveBuffer {
    fn drop(&mut self) {
        self.uncharge();
    }
}

#[cfg(test)]
mod tests {
    use super::SaveBuffer;
    use vsflow_core::flow::{BudgetRef, FlowBudget};

    #[test]
    fn growth_is_charged_even_past_the_limit_and_given_back_on_drop() {
        let budget: &'static FlowBudget =
            alloc::boxed::Box::leak(alloc::boxed::Box::new(FlowBudget::new(100)));
        let mut b = SaveBuffer::new();
        b.bytes_mut().extend_from_slice(&[7; 64]);
        b.settle(BudgetRef(budget));
        assert_eq!(budget.used(), b.charged());
        assert!(b.charged() >= 64);
        b.bytes_mut().extend_from_slice(&[7; 200]);
        b.settle(BudgetRef(budget));
        assert!(budget.used() >= 264, "past the 100-byte limit: charged all the same");
        assert!(budget.overdraft() > 0, "counted as overdraft");
        assert_eq!(budget.refused(), 0, "not a refused flow");
        b.bytes_mut().clear();
        b.bytes_mut().shrink_to_fit();
        b.settle(BudgetRef(budget));
        assert_eq!(budget.used(), 0, "a shrink gives back the difference");
        b.bytes_mut().extend_from_slice(&[7; 32]);
        b.settle(BudgetRef(budget));
        drop(b);
        assert_eq!(budget.used(), 0, "dropped: everything given back");
        // Reserved before the first save in place.
        let mut b = SaveBuffer::new();
        assert!(b.reserve_for_next_save(256, Some(BudgetRef(budget))));
        assert!(b.charged() >= 256 && budget.used() == b.charged(), "charged as a save's");
        assert!(!b.reserve_for_next_save(256, Some(BudgetRef(budget))), "already room");
        drop(b);
        // Once a save handed the bytes out: they stay put, a spare beside them, which the next
        // save takes without allocating.
        let mut b = SaveBuffer::new();
        b.bytes_mut().extend_from_slice(&[7; 64]);
        b.settle(BudgetRef(budget));
        let (at, len) = b.blob();
        assert!(b.reserve_for_next_save(256, Some(BudgetRef(budget))), "a spare");
        assert_eq!(b.blob(), (at, len), "the handed bytes stay put");
        assert!(b.charged() >= 64 + 256 && budget.used() == b.charged(), "both charged");
        assert!(!b.reserve_for_next_save(256, Some(BudgetRef(budget))), "already a spare");
        let spare = b.spare.as_ptr();
        let bytes = b.for_save();
        assert!(bytes.capacity() >= 256 && bytes.as_ptr() == spare, "the save takes the spare");
        bytes.extend_from_slice(&[9; 200]);
        b.settle(BudgetRef(budget));
        assert!(b.charged() >= 256 && b.charged() < 64 + 256, "the old buffer given back");
        assert_eq!(b.blob().0, spare, "the blob is the spare's bytes");
        // A spare released: its charge given back.
        let mut c = SaveBuffer::new();
        c.bytes_mut().extend_from_slice(&[7; 64]);
        c.settle(BudgetRef(budget));
        let _ = c.blob();
        let before = c.charged();
        assert!(c.reserve_for_next_save(256, Some(BudgetRef(budget))));
        c.release_spare();
        assert_eq!(c.charged(), before, "the spare's charge given back");
        drop((b, c));
        assert_eq!(budget.used(), 0, "dropped: everything given back");
    }
}
