//! The per-port encoder: the working memory of a port's saves, kept across saves.
//!
//! A save (the vSwitch runtime-state save callback) runs synchronously on the OID path under
//! the port's lock, so its cost is the VM's to wait for and the port's packets' to wait behind
//! (issue 18: save at the 4,096-connection cap p99 <= 100 us). The encoder needs a list of the
//! port's flows, two address dictionaries with their hash tables and, past the cap, the
//! ranking and fingerprint pool; allocating and freeing those on every save cost as much as
//! the encoding itself. An [`Encoder`] keeps them: each save clears and reuses them, so a save
//! of a port no larger than at its previous save allocates nothing but what the blob itself
//! needs (and the driver reuses the blob's buffer too). Memory: a port whose flows all fit
//! as exact records is saved straight from its table (`encode/exact.rs`: no copy of its
//! flows; about 40 bytes a flow, a 4,096-flow port 158 KB); past the cap about 200-300 bytes
//! a flow (below). [`Encoder::heap_bytes`]; freed with the port, or at once by
//! [`Encoder::release`].
//!
//! **Readied before the save.** A live migration saves a port once, so a save that sizes the
//! encoder's memory and computes every fingerprint itself is the common case, not the
//! exception. For a port past the cap the driver's expiry sweep calls [`Encoder::prepare`]
//! once a second: the salt drawn, every vector sized for the port's flows (the save then
//! allocates nothing), the fingerprints computed a bounded number a call. The cost moves to
//! the sweep, under the port's lock (callgrind, 20,000 connections: about 220,000 instructions
//! a tick while it computes 1,024 fingerprints, for about 20 s after the encoder is made; about
//! 80,000 a tick to read 4,096 flows once they are ready); the memory is held from then on,
//! not only for a minute after a save (about 300 bytes a flow past the cap, 20,000 flows:
//! 6.1 MB, sized for the most exact records any save writes; 4.1 MB when a save sizes it for
//! its own), charged to the budget only while an eighth of it stays free for new flows.
//!
//! **Why not dictionaries maintained as flows come and go.** Keeping the address
//! dictionaries (a count per distinct remote address) up to date on every flow insert and
//! removal would move two hash-table updates onto the packet path of every new flow, every
//! eviction and every expiry, to save work that happens once per migration. The encoder builds
//! them at the save instead, in one pass over the flows with one hash lookup per flow, in
//! reused tables; see docs/PERFORMANCE.md for what that costs.
//!
//! **Charged to the host's flow-memory budget.** What an encoder keeps is flow memory like the
//! port's table (about 200 bytes a flow), so a live port's save settles it with the budget the
//! port's table charges ([`crate::flow::FlowBudget`]) as the save ends: the growth is charged
//! if the budget has room for it (kept for the next save), and otherwise the encoder frees
//! everything at once (counted, [`crate::flow::FlowBudget::saves_unkept`]). A save never fails
//! and never drops state for the budget: its blob is the same either way; past the budget its
//! working memory exists only while the save runs (under the port's lock, bounded by the
//! port's flow bound), and the next save allocates it again. Whatever it charged is given back
//! by [`Encoder::release`] and when the encoder is dropped.
//!
//! **One consistent port.** The encoder reads the port's flows once, in least-recently-used
//! order per timeout class ([`crate::flow::FlowTable::iter_lru`]), while the caller holds
//! whatever makes the port consistent (the port's lock). When a port's flows are split over
//! processors' shards (each with its own lock, [`crate::port::shards`]), the caller holds every
//! shard's lock too and [`Encoder::encode_split`] reads each class oldest first across the
//! shards, as [`crate::port::shards::merge`] would place them: the blob is the merged port's,
//! byte for byte, without the merge's new table in the save, and every flow keeps its slot
//! (the encoder keeps fingerprints by table and slot). The sweep readies a split port's encoder
//! shard by shard ([`Encoder::prepare_split`], [`Encoder::prepare_shard`]).

use alloc::vec::Vec;

use super::encode::{LivePort, MIN_ENTRY_LEN, Work, encode_source};
use super::{EncodeConfig, EncodeSummary, PortState};
use crate::error::Error;
use crate::flow::BudgetRef;
use crate::port::Port;
use crate::time::Tick;

/// A port's encoder: the working memory of its saves, reused by each (see the module docs).
#[derive(Debug, Default)]
pub struct Encoder {
    work: Work,
    /// The budget `charged` is charged to (the saved port's table's), if any.
    budget: Option<BudgetRef>,
    /// Bytes of `work` charged to `budget`.
    charged: usize,
    /// The budget had no room for a preparation at this many flows: the next is tried once
    /// the port has an eighth more (or after the memory was freed).
    unprepared_at: Option<usize>,
    /// A preparation sized the memory it holds (freed by a later preparation once the port is
    /// well within the cap again).
    prepared: bool,
}

/// Flows a preparation ([`Encoder::prepare`]) looks at per call, at most.
///
/// About 30 us of reading at the driver's one call a second (4,096 table slots and cache
/// entries, both in slab order).
pub const PREPARE_SCAN: usize = 4_096;
/// Fingerprints a preparation computes per call, at most (SipHash-1-3 of 1,024 keys).
///
/// About 50 us: a port of 20,000 connections is ready about 20 s after its encoder was made
/// (or freed), and a port that gains connections faster than that leaves the rest to its
/// save.
pub const PREPARE_HASH: usize = 1_024;

impl Drop for Encoder {
    fn drop(&mut self) {
        self.uncharge();
    }
}

impl Encoder {
    /// An encoder holding no memory yet (the first save allocates what it needs).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Encodes a live port as of `now` into `out` (cleared first; its allocation is reused).
    ///
    /// The blob is the one [`super::encode`] writes for the same port: the same bytes.
    ///
    /// # Errors
    /// As [`super::encode`]. On error the encoder keeps its memory and stays usable.
    pub fn encode(
        &mut self,
        port: &Port,
        now: Tick,
        config: &EncodeConfig,
        out: &mut Vec<u8>,
    ) -> Result<EncodeSummary, Error> {
        self.encode_split(port, &[], now, config, out)
    }

    /// [`Encoder::encode`] of a port split over processors' shards
    /// ([`crate::port::shards`]): `port` its home shard, `shards` the processors' (`Some` each,
    /// the caller holding every one's lock and the home one's).
    ///
    /// The blob is the one [`Encoder::encode`] writes for the port after
    /// [`crate::port::shards::merge`], byte for byte, but the shards are read in place: a
    /// merge would build a new table (an allocation the size of the port's flows, a hash per
    /// flow) and give every flow a new slot, and this encoder keeps each connection's
    /// fingerprint by its slot, so a save that merged computed them all again (review-s4 L4).
    /// The port stays split, its flows where they are.
    ///
    /// # Errors
    /// As [`super::encode`].
    pub fn encode_split(
        &mut self,
        port: &Port,
        shards: &[Option<&Port>],
        now: Tick,
        config: &EncodeConfig,
        out: &mut Vec<u8>,
    ) -> Result<EncodeSummary, Error> {
        let src = LivePort { port, shards, now };
        let result = encode_source(&src, config, out, &mut self.work);
        self.settle(port.table.config().budget);
        result
    }

    /// Encodes a [`PortState`] (tools, fixtures, tests), as [`super::encode_state`].
    ///
    /// # Errors
    /// As [`super::encode`].
    pub fn encode_state(
        &mut self,
        state: &PortState,
        config: &EncodeConfig,
        out: &mut Vec<u8>,
    ) -> Result<EncodeSummary, Error> {
        encode_source(state, config, out, &mut self.work)
    }

    /// Readies the encoder for the next save of `port` as of `now` (the driver's expiry sweep,
    /// once a second, under the port's lock: never on the packet path or in a save). Only for
    /// a port past the cap (more flows than `cap` bytes could hold as exact records, where
    /// fingerprints are needed); otherwise nothing happens.
    ///
    /// A save past the cap used to allocate its working memory (about 4 MB at 20,000 flows,
    /// when a port's first save, as a live migration's usually is, found no encoder) and
    /// compute every connection's fingerprint: two-fifths of a first save. Here, away from the
    /// save, the encoder draws its salt, sizes its memory for the port's flows (the save then
    /// allocates nothing) and computes at most [`PREPARE_HASH`] fingerprints among the next
    /// [`PREPARE_SCAN`] flows, so that a port's save finds them computed. The memory is
    /// charged to the port's flow-memory budget only while that leaves an eighth of the budget
    /// free for new flows; otherwise it is freed and the save allocates as before. The salt is
    /// the one a save would have drawn (docs/runtime-state-format.md, "Fingerprints"): the
    /// driver frees the encoder a minute after a save, so the next preparation draws a new one.
    /// Returns the fingerprints computed.
    pub fn prepare(&mut self, port: &Port, now: Tick, cap: usize) -> usize {
        self.prepare_split(port, port.table.len(), now, cap)
    }

    /// [`Encoder::prepare`] of a port's home shard `port` when the port holds `flows` flows in
    /// all (split over processors' shards: [`crate::port::shards`]). The memory is sized for
    /// every flow and the home shard's fingerprints computed; the caller then passes each
    /// processor's shard to [`Encoder::prepare_shard`] under that shard's lock (one at a time:
    /// a processor judging its own connections waits for its own shard only), which computes
    /// theirs within what this call left of [`PREPARE_SCAN`] and [`PREPARE_HASH`]. Returns
    /// the fingerprints computed.
    pub fn prepare_split(&mut self, port: &Port, flows: usize, now: Tick, cap: usize) -> usize {
        let n = flows;
        if n.saturating_mul(MIN_ENTRY_LEN) <= cap {
            // Within the cap: nothing to ready. Memory a preparation sized is given back once
            // the port is well within it (three quarters: a port at the threshold does not
            // allocate and free at every call).
            if self.prepared && n.saturating_mul(MIN_ENTRY_LEN) <= cap / 4 * 3 {
                self.release();
            }
            return 0;
        }
        if self.unprepared_at.is_some_and(|at| n <= at + at / 8) {
            return 0;
        }
        self.unprepared_at = None;
        let src = LivePort::whole(port, now);
        let computed =
            self.work.prepare(&src, n, cap, PREPARE_SCAN, PREPARE_HASH).unwrap_or_default();
        if !self.settle_prepared(port.table.config().budget) {
            self.unprepared_at = Some(n);
            return 0;
        }
        self.prepared = true;
        computed
    }

    /// Readies processor shard `shard` (`0..MAX_SHARDS`) of a split port, after
    /// [`Encoder::prepare_split`] of its home shard in the same sweep: the fingerprints of its
    /// connections, within what that call left of the sweep's budget (nothing if it readied
    /// nothing: a port within the cap, or one the budget had no room for). Returns the
    /// fingerprints computed.
    pub fn prepare_shard(&mut self, shard: usize, port: &Port) -> usize {
        if !self.prepared {
            return 0;
        }
        let computed = self.work.prepare_table(shard, &port.table).unwrap_or_default();
        if !self.settle_prepared(port.table.config().budget) {
            return 0;
        }
        computed
    }

    /// [`Encoder::settle`] for a preparation: the growth is charged only if an eighth of the
    /// budget stays free after it (new flows come first); otherwise everything is freed.
    /// `false` if freed.
    fn settle_prepared(&mut self, budget: Option<BudgetRef>) -> bool {
        if self.budget != budget {
            self.uncharge();
            self.budget = budget;
        }
        let Some(BudgetRef(b)) = self.budget else { return true };
        let held = self.work.heap_bytes();
        if held <= self.charged {
            return true;
        }
        let growth = held - self.charged;
        let limit = b.limit();
        if b.used().saturating_add(growth) <= limit - limit / 8 && b.try_charge_save(growth) {
            self.charged = held;
            true
        } else {
            self.work = Work::default();
            self.uncharge();
            self.prepared = false;
            false
        }
    }

    /// Whether a preparation ([`Encoder::prepare`]) sized the memory the encoder holds (a port
    /// past the cap, readied for its next save).
    #[must_use]
    pub const fn is_prepared(&self) -> bool {
        self.prepared
    }

    /// Heap bytes the encoder holds (for accounting).
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        self.work.heap_bytes()
    }

    /// Frees every allocation (the next save allocates again) and gives back its charge.
    pub fn release(&mut self) {
        self.work = Work::default();
        self.uncharge();
        self.unprepared_at = None;
        self.prepared = false;
    }

    /// Bytes charged to the flow-memory budget now.
    #[must_use]
    pub const fn charged_bytes(&self) -> usize {
        self.charged
    }

    /// Settles the memory kept after a live port's save with the port's budget (see the module
    /// docs): charges its growth if the budget has room, frees everything otherwise.
    fn settle(&mut self, budget: Option<BudgetRef>) {
        if self.budget != budget {
            // Another budget than the one charged (not the driver's case: a port keeps its
            // table's): give the old one back first.
            self.uncharge();
            self.budget = budget;
        }
        let Some(BudgetRef(b)) = self.budget else { return };
        let held = self.work.heap_bytes();
        if held <= self.charged {
            // Vectors never shrink on their own: nothing new to charge.
            return;
        }
        if b.try_charge_save(held - self.charged) {
            self.charged = held;
        } else {
            self.work = Work::default();
            self.uncharge();
            self.prepared = false;
        }
    }

    fn uncharge(&mut self) {
        if let Some(BudgetRef(b)) = self.budget {
            b.release(self.charged);
        }
        self.charged = 0;
    }
}
