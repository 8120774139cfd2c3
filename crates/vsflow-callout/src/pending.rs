//! Notifications in flight: every runtime-state restore that returned `STATUS_PENDING`.
//!
//! The rule that makes completion exactly-once: an entry is completed by whoever *removes* it
//! from the set, and removal happens only under the driver's state lock. The deferred worker
//! *claims* an entry when it has a result ([`PendingSet::claim`]): a claimed entry is the
//! worker's alone, stays in the set (still in flight for a save of its port) until the worker
//! has applied it and removes it ([`PendingSet::release`]); a port delete, switch delete or
//! driver stop removes the port's unclaimed entries and completes them as cancelled. Whoever
//! comes second finds nothing.
//! At stop the set is closed: nothing more can be pended, and the stopper finishes everything
//! left (decodes, applies and completes it, as the worker would). While the driver adds its
//! WFP objects again after a BFE restart the set is *held*: nothing new is pended (restores
//! complete synchronously) until the objects are in. The set lives under its own spin lock
//! (never on the packet path).

use alloc::vec::Vec;

use crate::error::CalloutError;
use crate::ports::PortKey;

/// The port a restore is for: its key, and the instance that had the key when the restore was
/// received (`PortSlot::instance`; `None`: no port had it then). Only that instance is restored
/// into.
pub type Target = (PortKey, Option<u64>);

/// One pended restore.
#[derive(Clone, Debug)]
pub struct PendingRestore {
    /// Unique id (never reused while the driver runs).
    pub id: u64,
    /// WFP's completion context, for `FwpsvSwitchNotifyComplete0`.
    pub completion: usize,
    /// The port it restores.
    pub key: PortKey,
    /// The instance of that port when the restore was received (`PortSlot::instance`; `None`
    /// if no port had the key then): only that instance is restored into.
    pub instance: Option<u64>,
    /// The blob, copied out of WFP's buffer in the callback. Moved to the worker when taken.
    pub blob: Vec<u8>,
    /// When the callback received it: the blob's ages count from its save, and the time it
    /// waits here passes for its flows too.
    pub received_at: vsflow_core::Tick,
    /// The worker has taken it and is decoding.
    pub taken: bool,
    /// The worker has claimed it and is applying it: only the worker removes and completes it.
    pub claimed: bool,
}

/// The set of pended notifications.
#[derive(Clone, Debug, Default)]
pub struct PendingSet {
    items: Vec<PendingRestore>,
    next_id: u64,
    closed: bool,
    held: bool,
}

impl PendingSet {
    /// Records a pended restore; returns its id.
    ///
    /// # Errors
    /// Out of memory, or the set is closed or held (the caller must then not return
    /// `STATUS_PENDING`).
    pub fn push(
        &mut self,
        completion: usize,
        (key, instance): Target,
        blob: Vec<u8>,
        received_at: vsflow_core::Tick,
    ) -> Result<u64, CalloutError> {
        if self.closed || self.held {
            return Err(CalloutError::InvalidState);
        }
        self.items.try_reserve(1)?;
        self.next_id += 1;
        let id = self.next_id;
        self.items.push(PendingRestore {
            id,
            completion,
            key,
            instance,
            blob,
            received_at,
            taken: false,
            claimed: false,
        });
        Ok(id)
    }

    /// Number of notifications in flight.
    #[must_use]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if none is in flight.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The oldest entry the worker has not taken yet: marks it taken and moves its blob out.
    /// Returns its id, its port and that port's instance, the blob, and when it was received.
    pub fn take_next(&mut self) -> Option<(u64, Target, Vec<u8>, vsflow_core::Tick)> {
        let e = self.items.iter_mut().find(|e| !e.taken)?;
        e.taken = true;
        Some((e.id, (e.key, e.instance), core::mem::take(&mut e.blob), e.received_at))
    }

    /// Removes entry `id`, if still present and not claimed by the worker; the caller must
    /// complete it.
    pub fn remove(&mut self, id: u64) -> Option<PendingRestore> {
        let i = self.items.iter().position(|e| e.id == id && !e.claimed)?;
        Some(self.items.swap_remove(i))
    }

    /// The worker claims entry `id` to apply it, if no canceller removed it: returns its
    /// completion context and when it was received. The entry stays in the set, in flight for
    /// its port ([`PendingSet::in_flight`]), until [`PendingSet::release`]; the worker alone
    /// completes it.
    pub fn claim(&mut self, id: u64) -> Option<(usize, vsflow_core::Tick)> {
        let e = self.items.iter_mut().find(|e| e.id == id && !e.claimed)?;
        e.claimed = true;
        Some((e.completion, e.received_at))
    }

    /// Removes claimed entry `id` once applied; the worker then completes it.
    pub fn release(&mut self, id: u64) {
        if let Some(i) = self.items.iter().position(|e| e.id == id && e.claimed) {
            self.items.swap_remove(i);
        }
    }

    /// Removes one unclaimed entry of a port matching `pred`; the caller must complete it.
    pub fn remove_where(
        &mut self,
        mut pred: impl FnMut(&PortKey) -> bool,
    ) -> Option<PendingRestore> {
        let i = self.items.iter().position(|e| !e.claimed && pred(&e.key))?;
        Some(self.items.swap_remove(i))
    }

    /// Removes the oldest entry of port `key` the worker has not taken (its blob still here);
    /// the caller must complete it.
    pub fn remove_waiting(&mut self, key: PortKey) -> Option<PendingRestore> {
        let i = self.items.iter().position(|e| e.key == key && !e.taken)?;
        Some(self.items.remove(i))
    }

    /// True if the worker is decoding or applying a restore of port `key` right now (taken,
    /// and not yet applied: a claimed entry leaves the set only once applied).
    #[must_use]
    pub fn in_flight(&self, key: PortKey) -> bool {
        self.items.iter().any(|e| e.key == key && e.taken)
    }

    /// Closes the set (driver stop): every later `push` fails. The caller then finishes what
    /// is left ([`PendingSet::take_next`], [`PendingSet::remove`]).
    pub const fn close(&mut self) {
        self.closed = true;
    }

    /// Holds the set (`true`: every `push` fails until released with `false`): while the
    /// driver adds WFP objects, which it may not do with a notification pended.
    pub const fn hold(&mut self, held: bool) {
        self.held = held;
    }

    /// True once closed.
    #[must_use]
    pub const fn is_closed(&self) -> bool {
        self.closed
    }

    /// The completion contexts in flight (for contract checks and diagnostics).
    pub fn completions(&self) -> impl Iterator<Item = usize> + '_ {
        self.items.iter().map(|e| e.completion)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: PortKey = PortKey { switch: 1, port: 7 };

    #[test]
    fn an_entry_is_removed_once_whoever_asks_first() {
        let mut p = PendingSet::default();
        let id = p.push(0xC0, (K, Some(3)), alloc::vec![1, 2, 3], 5).unwrap();
        let (tid, key, blob, _) = p.take_next().unwrap();
        assert_eq!((tid, key, blob.as_slice()), (id, (K, Some(3)), &[1u8, 2, 3][..]));
        assert!(p.take_next().is_none(), "a taken entry is not handed out twice");
        // The port is deleted while the worker decodes: the canceller wins.
        let cancelled = p.remove_where(|k| *k == K).unwrap();
        assert_eq!(cancelled.completion, 0xC0);
        assert!(p.remove(id).is_none(), "the worker finds nothing to complete");
        assert!(p.is_empty());
        // Claimed by the worker: no canceller removes it, and it is in flight until released.
        let id = p.push(0xC2, (K, None), alloc::vec![4], 6).unwrap();
        let _ = p.take_next().unwrap();
        assert_eq!(p.claim(id), Some((0xC2, 6)));
        assert!(p.remove_where(|k| *k == K).is_none(), "the worker owns a claimed entry");
        assert!(p.remove(id).is_none());
        assert!(p.claim(id).is_none(), "claimed once");
        assert!(p.in_flight(K), "in flight until applied");
        p.release(id);
        assert!(!p.in_flight(K) && p.is_empty());
        p.close();
        assert!(
            p.push(0xC1, (K, None), alloc::vec![], 6).is_err(),
            "nothing is pended after close"
        );
    }

    #[test]
    fn a_held_set_refuses_new_entries_until_released() {
        let mut p = PendingSet::default();
        p.hold(true);
        assert!(p.push(0xC0, (K, None), alloc::vec![], 0).is_err());
        p.hold(false);
        assert!(p.push(0xC0, (K, None), alloc::vec![], 0).is_ok());
    }
}
