//! A restore's carried flows placed in a flow table detached from any port ([`Staged`]): the
//! table the port gets once the restore is applied ([`super::apply_staged`]).
//!
//! The decoder places each flow it reads straight into the table's slot
//! ([`super::decode_staged`]): no list of [`SavedFlow`]s is built and read again (issue 18
//! item 4: writing that list was a third of the decode, and the list 426 KB at 4,096 flows).
//! It writes each flow's key and record in the next slot of the slab as it reads it, and
//! [`Staged::finish`] then links them all, in one short loop, into the index and the LRU
//! lists (a flow inserted as it was read cost more than the list it replaced: the insert's
//! chain walk and the decode's serial reads no longer overlapped). In the driver all of this
//! runs outside every lock; only the apply takes the port's.
//! A decoded [`super::PortState`]'s list is placed the same way ([`stage_saved`], for
//! [`super::apply_with`] and for blobs the decoder cannot place as it reads them), so every
//! restore reaches the port through one apply.
//!
//! Placement is what the apply did with the list: flows idle past their timeout at the save
//! are left out (counted expired); each class's list ends up oldest first (placed in blob
//! order, which the encoder writes least recently used first per class and address family;
//! a list placed out of age order is put in order once placed, [`Staged::finish`]); a blob of
//! more flows than the table's bound keeps the most valuable ([`SavedFlow::value_rank`],
//! through [`stage_saved`]); a failed allocation of the table while placing is kept as the
//! apply's error, so a blob that decodes still carries its policy when its flows cannot be
//! placed (the order of a list placed out of age order is best effort: [`Staged::finish`]).
//! A key the blob carries twice (only a buggy or hostile source writes one) is carried by
//! neither record: both are left out, counted `untracked` by the apply, the connection judged
//! as any the blob does not carry (fail closed for it), every other flow placed (faults s7: it
//! was the apply's error, a degraded restore that lost every carried connection). A duplicate
//! whose twin was left out (idle past its timeout, or past this host's bound) is not seen: the
//! record placed stands as it would alone.
//! Carried admissions stay as the blob has them: the apply maps them to this host's rule
//! versions once it has planned the port's policy under the port's lock (one pass over the
//! slab, only if a flow has a rule admission), and merges the flows the restore window saw
//! into them (a merge that moves a flow to another timeout class puts it at the head of that
//! class's list, as a packet that changes a flow's state does; the session-4 apply put it at
//! its blob position).
//!
//! Times are rebased on [`StageConfig::base`], the instant the restore was received: a flow's
//! `last_seen` is `base - last_age`. The staging and the apply run later (a pended restore
//! waits for its work item): the flows are then older by the time since `base`; those idle
//! past their timeout at the staging ([`StageConfig::now`]) are left out, and those that pass
//! it before the apply are removed by the apply.

use alloc::vec::Vec;
use core::cmp::Reverse;

use super::SavedFlow;
use super::error::ApplyError;
use crate::error::Error;
use crate::flow::{Admission, FlowTable, TableConfig, TimeoutClass};
use crate::time::Tick;

/// Where a restore's flows are placed: the port's table configuration (its bound, timeouts,
/// hash seed and the host's budget) and the instant the blob's ages count from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageConfig {
    /// The configuration of the port's table (`FlowTable::config`): the staged table becomes
    /// the port's, so it must be the same. An apply into a port whose table differs places
    /// the flows again (correct, slower).
    pub table: TableConfig,
    /// The instant the restore was received (the blob's ages are ages at that instant).
    pub base: Tick,
    /// The instant of the staging (`>= base`): flows idle past their timeout by then are left
    /// out (counted expired); those that pass it before the apply are removed by the apply.
    pub now: Tick,
}

impl StageConfig {
    /// The time between the restore's receipt and the staging (a pended restore's wait).
    const fn waited(&self) -> Tick {
        self.now.saturating_sub(self.base)
    }
}

/// A restore's flows in a detached table; see the module docs.
#[derive(Debug)]
pub struct Staged {
    pub(super) table: FlowTable,
    /// The instant the records' times are rebased on.
    pub(super) base: Tick,
    /// Ticks between `base` and the staging: added to a flow's age to tell if it expired.
    waited: Tick,
    /// Flows taken ([`Staged::put`]).
    taken: usize,
    /// Flows left out because they were idle past their timeout.
    pub(super) expired: u64,
    /// Flows left out because of the table's bound.
    pub(super) dropped: u32,
    /// Some placed flow has a rule admission (the apply maps those to this host's versions).
    pub(super) rule_admitted: bool,
    /// What placing the flows met (memory for the table): the apply's error.
    pub(super) failed: Option<ApplyError>,
    /// Keys taken more than once: none of their flows placed (the apply counts them
    /// `untracked`).
    pub(super) duplicated: u32,
    /// The first slot [`FlowTable::link_pushed`] marked as a key met again (`u32::MAX`: none).
    first_marked: u32,
    /// Per class, the age of the flow taken last (oldest first: ages never grow).
    last_age: [Tick; TimeoutClass::COUNT],
    /// Classes whose flows were taken out of age order (a bit per class).
    unordered: u8,
}

impl Staged {
    /// An empty staged table for up to `expected` flows (its index split ahead for them).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`], [`Error::OutOfMemory`].
    pub(super) fn try_new(config: &StageConfig, expected: u32) -> Result<Self, Error> {
        let mut table = FlowTable::try_new_unreserved(config.table)?;
        table.reserve_index(expected)?;
        Ok(Self {
            table,
            base: config.base,
            waited: config.waited(),
            taken: 0,
            expired: 0,
            dropped: 0,
            rule_admitted: false,
            failed: None,
            duplicated: 0,
            first_marked: u32::MAX,
            last_age: [Tick::MAX; TimeoutClass::COUNT],
            unordered: 0,
        })
    }

    /// Takes the next flow (the caller keeps to the table's bound): its key and record,
    /// rebased on the base, are written in the next slot of the table's slab, not linked yet
    /// ([`Staged::finish`] links them all); one idle past its timeout is left out (counted
    /// expired). Memory refused is kept as the apply's error; nothing is taken after it.
    #[allow(clippy::inline_always, reason = "the decoder's per-entry loop: one call site each")]
    #[inline(always)]
    pub(super) fn put(&mut self, s: SavedFlow) {
        self.taken += 1;
        if self.failed.is_some() {
            return;
        }
        let class = TimeoutClass::of(s.key.protocol, s.state).index();
        let idle = s.last_age.saturating_add(self.waited);
        let left_out = idle >= self.table.timeout(class);
        if left_out {
            self.expired += 1;
        } else {
            if let Some(previous) = self.last_age.get_mut(class) {
                if s.last_age > *previous {
                    self.unordered |= 1 << class;
                }
                *previous = s.last_age;
            }
            self.rule_admitted |= matches!(s.admission, Admission::Rule(_));
        }
        let base = self.base;
        if let Err(e) = self.table.push_unlinked(&s.key, class, left_out, s.to_record(base)) {
            self.failed = Some(ApplyError::Core(e));
        } else if self.table.unlinked() == 64 {
            self.link();
        }
    }

    /// Links the flows placed since the last link ([`FlowTable::link_pushed`]).
    fn link(&mut self) {
        match self.table.link_pushed() {
            Ok(linked) => {
                self.duplicated = self.duplicated.saturating_add(linked.duplicated);
                self.first_marked = self.first_marked.min(linked.first_marked);
            }
            Err(e) => self.failed = Some(ApplyError::Core(e)),
        }
    }

    /// Flows taken so far (placed or left out).
    pub(super) const fn taken(&self) -> usize {
        self.taken
    }

    /// Ends the placement: the flows taken are linked into the table in the order taken (a
    /// key taken more than once keeps none of its flows, counted in `duplicated`:
    /// `FlowTable::link_pushed`), and each list
    /// taken out of age order is put in order, if there is memory for that order (16 bytes a
    /// flow): without it the list stays in placement order, consistent, its idle flows only
    /// reclaimed later (classify treats a flow idle past its timeout as absent anyway), never
    /// a reason to lose the carried connections (review s6, R6-3: the refusal was the apply's
    /// error, a degraded restore; any dual-stack port's blob places a list out of order, its
    /// IPv4 flows before its IPv6 ones). The apply's re-sort after the window merge is best
    /// effort the same way.
    pub(super) fn finish(mut self) -> Self {
        if self.failed.is_some() {
            return self;
        }
        self.link();
        if self.failed.is_some() {
            return self;
        }
        if self.duplicated != 0 {
            self.table.remove_duplicated(self.first_marked);
        }
        if self.unordered != 0 {
            let _ = self.table.order_lists(self.unordered);
        }
        self
    }

    /// Flows placed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True if no flow was placed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The staged table (its flows' admissions still the blob's).
    #[must_use]
    pub const fn table(&self) -> &FlowTable {
        &self.table
    }

    /// The flows again, as a list in each class's order (oldest first): for an apply into a
    /// port whose table configuration differs from the staged one.
    pub(super) fn to_saved(&self) -> Result<Vec<SavedFlow>, Error> {
        let mut out = Vec::new();
        out.try_reserve_exact(self.table.len())?;
        for class in TimeoutClass::ALL {
            out.extend(
                self.table.iter_lru(class).map(|(k, r)| SavedFlow::from_record(*k, r, self.base)),
            );
        }
        Ok(out)
    }
}

/// Places a decoded list of flows ([`super::PortState::flows`], blob order) in a staged table.
///
/// Every live flow if they fit the bound, else the most valuable ([`SavedFlow::value_rank`]),
/// placed oldest first.
///
/// # Errors
/// [`Error::InvalidConfig`], [`Error::OutOfMemory`] (the table itself; without memory for the
/// ranking of a list over the bound, the first live flows in list order are kept). A key listed
/// twice keeps neither record (`Staged::finish`).
pub fn stage_saved(flows: &[SavedFlow], config: &StageConfig) -> Result<Staged, Error> {
    let timeouts = config.table.timeouts;
    let bound = config.table.max_flows as usize;
    let waited = config.waited();
    let expired_at = |s: &SavedFlow| {
        timeouts.expired(s.key.protocol, s.state, s.last_age.saturating_add(waited))
    };
    let live = flows.iter().filter(|s| !expired_at(s)).count();
    if flows.len() <= bound {
        // Every flow in list order (those idle past their timeout take a slot, freed).
        let mut staged = Staged::try_new(config, u32::try_from(live).unwrap_or(u32::MAX))?;
        for s in flows {
            staged.put(*s);
        }
        return Ok(staged.finish());
    }
    // Over the bound: the most valuable live flows up to the bound, placed oldest first (ties
    // in list order), so each class's list is in recency order.
    let mut order: Vec<(Reverse<Tick>, u32)> = Vec::new();
    if order.try_reserve_exact(live).is_err() {
        // Without the memory to rank them (16 bytes a live flow): the first live flows in list
        // order, up to the bound, each class's list put in age order by `finish` if it can be.
        // The refusal costs the choice of the flows kept, never the carried flows (review s7
        // F4, faults: it was the apply's error, a degraded restore that lost every one).
        let mut staged = Staged::try_new(config, u32::try_from(bound).unwrap_or(u32::MAX))?;
        for s in flows.iter().filter(|s| !expired_at(s)).take(bound) {
            staged.put(*s);
        }
        staged.expired = u64::try_from(flows.len() - live).unwrap_or(u64::MAX);
        staged.dropped = u32::try_from(live - staged.taken()).unwrap_or(u32::MAX);
        return Ok(staged.finish());
    }
    for (i, s) in (0u32..).zip(flows.iter()) {
        if !expired_at(s) {
            order.push((Reverse(s.last_age), i));
        }
    }
    if order.len() > bound {
        let rank =
            |&(_, i): &(Reverse<Tick>, u32)| flows.get(i as usize).map(SavedFlow::value_rank);
        order.sort_unstable_by_key(rank);
        order.truncate(bound);
    }
    order.sort_unstable();
    let kept = order.len();
    let mut staged = Staged::try_new(config, u32::try_from(kept).unwrap_or(u32::MAX))?;
    staged.expired = u64::try_from(flows.len() - live).unwrap_or(u64::MAX);
    staged.dropped = u32::try_from(live - kept).unwrap_or(u32::MAX);
    for &(_, i) in &order {
        if let Some(s) = flows.get(i as usize) {
            staged.put(*s);
        }
    }
    Ok(staged.finish())
}
