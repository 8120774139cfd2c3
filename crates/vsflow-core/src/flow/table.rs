//! The bounded per-port flow table.
//!
//! Layout: a slab of slots in segments of 64 (`Segments`, grown fallibly one segment at a time
//! up to the bound, never shrunk, never moved), a chained hash index from key hash to slot
//! number (bucket heads in segments of 1,024, each slot carrying its chain link and the low 32
//! bits of its hash), and one intrusive LRU list per [`TimeoutClass`] threaded through the
//! slots. Lookups, touches, state changes, inserts and evictions are O(1); nothing allocates
//! unless the slab or the index takes one growth step.
//!
//! Growth is off the packet path in the sense issue 18 asks for: no insert copies the table.
//! The slab grows by one segment of 64 slots (8 KiB) when it is full; the index grows by
//! *linear hashing* (Litwin 1980; Larson, "Dynamic hash tables", CACM 31(4), 1988): each insert
//! that leaves more flows than buckets splits one bucket — the next in order — into itself and
//! one new bucket, moving only the entries of that one chain, and a new segment of 512 bucket
//! heads (2 KiB) is allocated when the bucket array crosses into it. The worst single insert
//! therefore allocates at most one slab segment and one bucket segment and walks one chain; it
//! never reallocates, frees or copies storage (`tests/growth.rs` proves it with a counting
//! allocator and measures the worst classify). The directories of segments are reserved for the
//! bound when the table is created. The hash is keyed per boot, so chains stay short against
//! chosen 5-tuples.
//!
//! Every growth step is charged to the host's flow-memory budget, if the table has one
//! ([`TableConfig::budget`], [`FlowBudget`]): an insert whose step the budget refuses recycles a
//! slot by the eviction order below, as at the bound, or else is refused
//! ([`Error::OverBudget`]). A refused bucket split only lengthens chains.
//!
//! A flow idle for at least its class's timeout is *expired*: it admits nothing (classify asks
//! [`FlowTable::is_expired`] before using a flow and treats an expired one as absent), and
//! [`FlowTable::expire`] reclaims expired flows from a periodic timer, oldest first, within a
//! budget.
//!
//! When the table is full, an insert reclaims one slot, in this order:
//! 1. the least recently used *closed* TCP flow;
//! 2. otherwise the *idle* flow (expired) that is furthest past its timeout;
//! 3. otherwise the least recently used flow that is not an established TCP connection
//!    (handshakes, closing connections, UDP and other protocols);
//! 4. otherwise, only if the insert may displace established connections ([`Room::Any`]), the
//!    least recently used established TCP connection.
//!
//! If none qualifies the insert is refused ([`Error::TableFull`]): an established connection is
//! never evicted to admit an unestablished flow, so a burst of SYNs through an allow rule
//! recycles the slots of other handshakes and cannot push quiet established connections out.
//! A flood of new flows recycles slots and can never grow memory past the bound.
//!
//! Recency is kept lazily: a packet moves its flow to the head of its list only if the flow was
//! last placed there at least [`TableConfig::lru_granularity`] earlier (default 100 ms). Each
//! list is therefore ordered by placement time, and every flow's last packet is less than one
//! granularity after its placement: eviction and expiry order are exact to within that
//! granularity, and a busy flow is relinked at most ten times a second instead of on every
//! packet (three random cache lines saved per packet).

use core::hash::BuildHasher;

use foldhash::fast::FixedState;

use crate::keys::{self, Purpose};

use super::budget::{BudgetRef, FlowBudget};
use super::segments::Segments;
use crate::error::Error;
use crate::flow::{FlowKey, FlowRecord, FlowState, TimeoutClass, Timeouts};
use crate::time::Tick;

const NIL: u32 = u32::MAX;
const FREE: u8 = u8::MAX;
/// The class byte of a slot written by [`FlowTable::push_unlinked`], not linked yet.
const UNLINKED: u8 = u8::MAX - 1;
/// `linked_at` of a linked slot whose key [`FlowTable::link_pushed`] met again (a flow's
/// `linked_at` is its `last_seen`, never this): removed once the pass is over.
const DUPLICATED: Tick = Tick::MAX;
/// Slots per slab segment (64: 8 KiB).
const SLOT_SEGMENT: usize = 64;
/// Bucket heads per index segment (512: 2 KiB).
const BUCKET_SEGMENT: usize = 512;
/// Fewest buckets a table has.
const MIN_BUCKETS: u32 = 16;

/// Largest bound a table accepts: the driver's documented maximum of `FlowsPerPort`.
///
/// docs/INSTALL.md gives the reasons: the host-wide budget bounds the total, and a port's
/// migration blob carries about 25,900 connections at most.
pub const MAX_FLOWS_LIMIT: u32 = 1 << 16;

/// Table sizing and behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableConfig {
    /// The bound: the table never holds more flows (default 4,096).
    pub max_flows: u32,
    /// Slots allocated up front (capped at `max_flows`); the table grows on demand up to
    /// `max_flows` (default 64).
    pub initial_capacity: u32,
    /// Idle timeouts.
    pub timeouts: Timeouts,
    /// The port's secret seed. The driver passes its per-boot random value so that a peer
    /// cannot aim crafted 5-tuples at one bucket. Every hash of the port keys itself with a
    /// key derived from it for its purpose ([`crate::keys`]), never with the seed itself.
    pub hash_seed: u64,
    /// Granularity of the LRU order in ticks (default 1,000,000 = 100 ms); see the module docs.
    pub lru_granularity: Tick,
    /// The host-wide flow-memory budget every growth step is charged to (`None`: only the
    /// bound limits the table).
    pub budget: Option<BudgetRef>,
}

impl Default for TableConfig {
    fn default() -> Self {
        Self {
            max_flows: 4096,
            initial_capacity: 64,
            timeouts: Timeouts::default(),
            hash_seed: 0x5653_464c_4f57_0001,
            lru_granularity: 1_000_000,
            budget: None,
        }
    }
}

impl TableConfig {
    /// Checks every value against its documented range.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the offending value.
    pub const fn validate(&self) -> Result<(), Error> {
        if self.max_flows == 0 || self.max_flows > MAX_FLOWS_LIMIT {
            return Err(Error::InvalidConfig("max_flows must be 1..=65536"));
        }
        if !self.timeouts.is_valid() {
            return Err(Error::InvalidConfig("timeouts must be non-zero"));
        }
        Ok(())
    }
}

/// Why a flow was removed to make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// A closed TCP flow.
    Closed,
    /// A flow idle past its timeout.
    Idle,
    /// The least recently used live flow.
    LeastRecentlyUsed,
}

/// Which flows an insert into a full table may displace (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Room {
    /// Closed, expired, then least recently used flows that are not established TCP
    /// connections; never an established connection.
    SpareEstablished,
    /// As [`Room::SpareEstablished`], then the least recently used established connection.
    Any,
}

impl Room {
    /// The default for a record: an established flow may displace an established flow, an
    /// unestablished one may not.
    #[must_use]
    pub const fn for_record(record: &FlowRecord) -> Self {
        if record.is_established() { Self::Any } else { Self::SpareEstablished }
    }
}

/// What [`FlowTable::link_pushed`] met: keys pushed again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linked {
    /// Keys met again for the first time.
    pub duplicated: u32,
    /// The first slot marked (`u32::MAX`: none).
    pub first_marked: u32,
}

/// A handle to a flow in a table, valid until the next insert or removal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowIndex(u32);

#[derive(Clone, Copy, Debug)]
struct Slot {
    key: FlowKey,
    record: FlowRecord,
    /// When the flow was last placed at the head of its list.
    linked_at: Tick,
    prev: u32,
    next: u32,
    /// The next slot in this slot's bucket chain.
    chain: u32,
    /// The low 32 bits of the key's hash (bucket address and a cheap key filter).
    hash: u32,
    class: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY_LIST: List = List { head: NIL, tail: NIL };

/// What a slab segment's slots hold before first use (never read: the slab's length says
/// which slots were used).
const FREE_SLOT: Slot = Slot {
    key: FlowKey {
        family: crate::packet::IpFamily::V4,
        protocol: 0,
        local_addr: [0; 16],
        remote_addr: [0; 16],
        local_port: 0,
        remote_port: 0,
    },
    record: FlowRecord::new(
        FlowState::Closed,
        crate::flow::Opener::Vm,
        crate::flow::Admission::Vm,
        0,
    ),
    linked_at: 0,
    prev: NIL,
    next: NIL,
    chain: NIL,
    hash: 0,
    class: FREE,
};

/// A bounded table of flows with idle reclaim and LRU eviction. See the module docs.
#[derive(Debug)]
pub struct FlowTable {
    slots: Segments<Slot, SLOT_SEGMENT>,
    /// Bucket chain heads; buckets `0..level + split` are in use (linear hashing).
    buckets: Segments<u32, BUCKET_SEGMENT>,
    /// The bucket count at the start of the current round of splits (a power of two).
    level: u32,
    /// The next bucket to split.
    split: u32,
    /// Most buckets the table will have (the bound rounded up to a power of two).
    max_buckets: u32,
    free: u32,
    lists: [List; TimeoutClass::COUNT],
    len: u32,
    config: TableConfig,
    /// `config.timeouts` by class index, padded to a power of two so that a masked class
    /// indexes it without a bounds check on the packet path.
    timeouts: [Tick; 8],
    hasher: FixedState,
    /// Bytes charged to the budget, given back on drop.
    charged: usize,
    /// Slots at the slab's end written by [`FlowTable::push_unlinked`] and not yet linked
    /// ([`FlowTable::link_pushed`]).
    unlinked: u32,
    /// The segment [`FlowTable::push_unlinked`] writes past the slab's (empty, no allocation,
    /// but while a restore stages its flows).
    building: alloc::vec::Vec<Slot>,
    /// Slots `building` may take (its capacity is a whole segment's; the bound may leave
    /// room for fewer).
    building_limit: usize,
    /// What `building`'s allocation was charged to the budget.
    building_charge: usize,
}

impl Drop for FlowTable {
    fn drop(&mut self) {
        if let Some(BudgetRef(b)) = self.config.budget {
            b.release(self.charged);
        }
    }
}

impl FlowTable {
    /// Creates an empty table with `config.initial_capacity` slots reserved. Its first storage
    /// is charged to the budget even past the limit (a port must not be left untracked).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an out-of-range value, [`Error::OutOfMemory`] if the initial
    /// reservation fails.
    pub fn try_new(config: TableConfig) -> Result<Self, Error> {
        let mut table = Self::try_new_unreserved(config)?;
        table.reserve(config.initial_capacity)?;
        Ok(table)
    }

    /// [`FlowTable::try_new`] without its initial slots: a restore's staged table, whose
    /// slab [`FlowTable::push_unlinked`] builds a segment at a time.
    ///
    /// # Errors
    /// As [`FlowTable::try_new`].
    pub(crate) fn try_new_unreserved(config: TableConfig) -> Result<Self, Error> {
        config.validate()?;
        let max_buckets = config.max_flows.next_power_of_two().max(MIN_BUCKETS);
        let level = config.initial_capacity.clamp(MIN_BUCKETS, max_buckets).next_power_of_two();
        let mut table = Self {
            slots: Segments::try_new(config.max_flows as usize)?,
            buckets: Segments::try_new(max_buckets as usize)?,
            level,
            split: 0,
            max_buckets,
            free: NIL,
            lists: [EMPTY_LIST; TimeoutClass::COUNT],
            len: 0,
            config,
            timeouts: core::array::from_fn(|i| {
                TimeoutClass::ALL.get(i).map_or(Tick::MAX, |&c| config.timeouts.of(c))
            }),
            // The table's own key, derived from the port's seed (crate::keys): not the seed
            // itself, which keys other hashes too.
            hasher: FixedState::with_seed(keys::derive(config.hash_seed, Purpose::FlowTable)),
            charged: 0,
            unlinked: 0,
            building: alloc::vec::Vec::new(),
            building_limit: 0,
            building_charge: 0,
        };
        table.charge(table.slots.dir_bytes() + table.buckets.dir_bytes(), false);
        while table.buckets.len() < level as usize {
            if table.buckets.is_full() {
                table.grow_buckets(false)?;
            }
            table.buckets.push(NIL);
        }
        Ok(table)
    }

    /// Ensures room for `additional` more flows (capped at the bound) without further slab
    /// growth, and splits the index ahead to a bucket per flow ([`FlowTable::reserve_index`]).
    /// What it allocates is charged to the budget even past the limit: it is for a port's
    /// creation and a restore's carried connections, never for a packet.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`].
    pub fn reserve(&mut self, additional: u32) -> Result<(), Error> {
        let want = self.len.saturating_add(additional).min(self.config.max_flows);
        while self.slots.capacity() < want as usize {
            self.grow_slots(false)?;
        }
        self.reserve_index(additional)
    }

    /// Splits the index ahead to a bucket per flow for `additional` more flows (capped at the
    /// bound), so that inserts up to that many flows split nothing: a restore's bulk insert
    /// ([`FlowTable::insert_unique`]), which then grows the slab itself a segment at a time as
    /// it fills it, so that each 8 KiB segment is allocated (zeroed by the pool), written and
    /// linked while it is in the cache, instead of the whole slab being allocated first and
    /// every line of it missed again by the inserts (issue 18). What it allocates is charged
    /// to the budget even past the limit, as [`FlowTable::reserve`].
    ///
    /// # Errors
    /// [`Error::OutOfMemory`].
    pub fn reserve_index(&mut self, additional: u32) -> Result<(), Error> {
        let want = self.len.saturating_add(additional).min(self.config.max_flows);
        // What `split_one` would do insert by insert, done at once (on an empty table each
        // split moves nothing).
        let target = want.min(self.max_buckets);
        if self.len == 0 && self.level + self.split < target {
            // Nothing to move: the index takes its final shape at once (the largest power of
            // two not above the target, plus the splits of the current round).
            while self.buckets.capacity() < target as usize {
                self.grow_buckets(false)?;
            }
            self.buckets.fill_to(target as usize, NIL);
            self.level = 1 << target.ilog2();
            self.split = target - self.level;
            return Ok(());
        }
        while self.level + self.split < target {
            if self.buckets.is_full() {
                self.grow_buckets(false)?;
            }
            self.split_bucket();
        }
        Ok(())
    }

    /// Charges `bytes` to the budget (strictly, or even past the limit); `false` if refused.
    fn charge(&mut self, bytes: usize, strict: bool) -> bool {
        match self.config.budget {
            Some(BudgetRef(b)) if strict && !b.try_charge(bytes) => return false,
            Some(BudgetRef(b)) if !strict => b.charge_over(bytes),
            _ => {}
        }
        self.charged += bytes;
        true
    }

    fn uncharge(&mut self, bytes: usize) {
        if let Some(BudgetRef(b)) = self.config.budget {
            b.release(bytes);
        }
        self.charged -= bytes;
    }

    /// One slab growth step: a segment of up to 64 slots.
    fn grow_slots(&mut self, strict: bool) -> Result<(), Error> {
        let bytes = self.slots.next_segment_bytes();
        if !self.charge(bytes, strict) {
            return Err(Error::OverBudget);
        }
        self.slots.grow(FREE_SLOT).inspect_err(|_| self.uncharge(bytes))
    }

    /// One index growth step: a segment of up to 1,024 bucket heads.
    fn grow_buckets(&mut self, strict: bool) -> Result<(), Error> {
        let bytes = self.buckets.next_segment_bytes();
        if !self.charge(bytes, strict) {
            return Err(Error::OverBudget);
        }
        self.buckets.grow(NIL).inspect_err(|_| self.uncharge(bytes))
    }

    /// The configuration the table was created with.
    #[must_use]
    pub const fn config(&self) -> &TableConfig {
        &self.config
    }

    /// The budget the table charges, if any.
    #[must_use]
    pub fn budget(&self) -> Option<&'static FlowBudget> {
        self.config.budget.map(|BudgetRef(b)| b)
    }

    /// Number of flows.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len as usize
    }

    /// True if the table holds no flow.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Flows the table can hold before its storage must grow (never more than the bound).
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.slots.capacity().min(self.config.max_flows as usize)
    }

    /// Bytes of heap the table holds (slab, index and their directories), for accounting;
    /// what it charged to its budget.
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        self.slots.heap_bytes() + self.buckets.heap_bytes()
    }

    /// Buckets of the index in use.
    #[must_use]
    pub const fn buckets(&self) -> usize {
        (self.level + self.split) as usize
    }

    /// The hash of a key under this table's seed.
    #[inline]
    #[must_use]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The bucket of a (32-bit) hash under linear hashing.
    #[inline]
    const fn bucket_of(&self, hash: u32) -> usize {
        let b = hash & (self.level - 1);
        if b < self.split { (hash & (2 * self.level - 1)) as usize } else { b as usize }
    }

    /// Finds a flow by key.
    #[inline]
    #[must_use]
    pub fn find(&self, key: &FlowKey) -> Option<FlowIndex> {
        self.find_hashed(self.hash(key), key)
    }

    /// Finds a flow by key with a hash computed by [`FlowTable::hash`].
    #[inline]
    #[must_use]
    pub fn find_hashed(&self, hash: u64, key: &FlowKey) -> Option<FlowIndex> {
        #[allow(clippy::cast_possible_truncation, reason = "the low 32 bits address buckets")]
        let h = hash as u32;
        let mut at = *self.buckets.get(self.bucket_of(h));
        while at != NIL {
            let s = self.slots.get(at as usize);
            if s.hash == h && s.key == *key {
                return Some(FlowIndex(at));
            }
            at = s.chain;
        }
        None
    }

    /// The record of a flow, by key.
    #[must_use]
    pub fn get(&self, key: &FlowKey) -> Option<&FlowRecord> {
        self.find(key).map(|i| self.record(i))
    }

    /// The key of a flow.
    #[must_use]
    pub fn key(&self, at: FlowIndex) -> &FlowKey {
        &self.slots.get(at.0 as usize).key
    }

    /// The record of a flow.
    #[must_use]
    pub fn record(&self, at: FlowIndex) -> &FlowRecord {
        &self.slots.get(at.0 as usize).record
    }

    /// The record of a flow, to update counters. Use [`FlowTable::set_state`] to change its
    /// state and [`FlowTable::touch`] after a packet.
    pub fn record_mut(&mut self, at: FlowIndex) -> &mut FlowRecord {
        &mut self.slots.get_mut(at.0 as usize).record
    }

    /// The idle timeout of the class of index `class` ([`TimeoutClass::index`]).
    #[inline]
    pub(crate) fn timeout(&self, class: usize) -> Tick {
        self.timeouts[class & 7]
    }

    /// True if the flow has been idle for at least its class's timeout at `now`: it admits
    /// nothing and is reclaimed by [`FlowTable::expire`] or the next insert that needs room.
    #[inline]
    #[must_use]
    pub fn is_expired(&self, at: FlowIndex, now: Tick) -> bool {
        let slot = self.slots.get(at.0 as usize);
        let timeout = self.timeouts[usize::from(slot.class & 7)];
        now.saturating_sub(slot.record.last_seen) >= timeout
    }

    /// Records that a flow saw a packet at its record's `last_seen`: moves it to the head of
    /// its class list if it was placed there at least one LRU granularity earlier.
    #[inline]
    pub fn touch(&mut self, at: FlowIndex) {
        let i = at.0;
        let slot = self.slots.get(i as usize);
        if slot.record.last_seen.saturating_sub(slot.linked_at) < self.config.lru_granularity {
            return;
        }
        let class = slot.class as usize;
        self.unlink(i);
        self.push_front(i, class);
    }

    /// Changes a flow's state, moving it to the list of its new timeout class.
    pub fn set_state(&mut self, at: FlowIndex, state: FlowState) {
        let i = at.0;
        let slot = self.slots.get_mut(i as usize);
        slot.record.state = state;
        let class = TimeoutClass::of(slot.key.protocol, state).index();
        if usize::from(slot.class) != class {
            self.unlink(i);
            self.push_front(i, class);
        }
    }

    /// Inserts a flow that is not in the table, reclaiming a slot first if the table is full
    /// ([`Room::for_record`] decides what may be reclaimed). The new flow is most recently used
    /// in its class. Inserting records in `last_seen` order keeps expiry order exact.
    ///
    /// # Errors
    /// [`Error::TableFull`] if the table is full and no flow may be reclaimed (the table is
    /// unchanged); [`Error::OverBudget`] if the slab had to grow, the host's budget refused the
    /// step and no flow may be reclaimed (the table is unchanged); [`Error::OutOfMemory`] if
    /// the slab had to grow and could not (the table is unchanged).
    pub fn insert(
        &mut self,
        key: FlowKey,
        record: FlowRecord,
        now: Tick,
    ) -> Result<(FlowIndex, Option<Eviction>), Error> {
        let hash = self.hash(&key);
        self.insert_hashed(hash, key, record, now)
    }

    /// [`FlowTable::insert`] with a hash computed by [`FlowTable::hash`].
    ///
    /// # Errors
    /// As [`FlowTable::insert`].
    pub fn insert_hashed(
        &mut self,
        hash: u64,
        key: FlowKey,
        record: FlowRecord,
        now: Tick,
    ) -> Result<(FlowIndex, Option<Eviction>), Error> {
        self.insert_with(hash, key, record, now, Room::for_record(&record))
    }

    /// [`FlowTable::insert_hashed`] with an explicit [`Room`] policy.
    ///
    /// # Errors
    /// As [`FlowTable::insert`].
    pub fn insert_with(
        &mut self,
        hash: u64,
        key: FlowKey,
        record: FlowRecord,
        now: Tick,
        room: Room,
    ) -> Result<(FlowIndex, Option<Eviction>), Error> {
        debug_assert!(self.find_hashed(hash, &key).is_none(), "insert of a present key");
        let mut evicted = if self.len >= self.config.max_flows {
            Some(self.evict_one(now, room).ok_or(Error::TableFull)?)
        } else {
            None
        };
        if self.free == NIL && self.slots.is_full() {
            match self.grow_slots(true) {
                Ok(()) => {}
                // Past the host's budget: recycle a slot as at the bound, or refuse.
                Err(Error::OverBudget) => {
                    evicted = Some(self.evict_one(now, room).ok_or(Error::OverBudget)?);
                }
                Err(e) => return Err(e),
            }
        }
        let class = TimeoutClass::of(key.protocol, record.state).index();
        #[allow(clippy::cast_possible_truncation, reason = "the low 32 bits address buckets")]
        let h = hash as u32;
        let slot = Slot {
            key,
            record,
            linked_at: record.last_seen,
            prev: NIL,
            next: NIL,
            chain: NIL,
            hash: h,
            class: 0,
        };
        let i = if self.free == NIL {
            // Cannot fail to fit: a segment with room was made above.
            #[allow(clippy::cast_possible_truncation, reason = "bounded by MAX_FLOWS_LIMIT")]
            let i = self.slots.len() as u32;
            self.slots.push(slot);
            i
        } else {
            let i = self.free;
            self.free = self.slots.get(i as usize).next;
            *self.slots.get_mut(i as usize) = slot;
            i
        };
        self.push_front(i, class);
        let b = self.bucket_of(h);
        self.slots.get_mut(i as usize).chain = *self.buckets.get(b);
        *self.buckets.get_mut(b) = i;
        self.len += 1;
        self.split_one();
        Ok((FlowIndex(i), evicted))
    }

    /// Inserts a flow unless its key is present (then `Ok(None)`, the table unchanged): a
    /// restore's bulk insert, one chain walk for the duplicate check and the placement. `fill`
    /// writes the new flow's record (every field) in place. Below the bound and with the index
    /// split ahead ([`FlowTable::reserve`], [`FlowTable::reserve_index`]) the flow is placed
    /// directly: no eviction or split; if the slab is full it grows by one segment, charged to
    /// the budget even past the limit as `reserve` charges it (a restore's carried
    /// connections are never refused). Otherwise this is [`FlowTable::insert_with`] with
    /// [`Room::for_record`]. The new flow is most recently used in its class.
    ///
    /// (The record is written in place rather than passed by value: a record built just before
    /// and copied whole through the stack re-read its small stores with wide loads, a
    /// store-forwarding stall per flow that cost a fifth of a restore.)
    ///
    /// # Errors
    /// As [`FlowTable::insert`].
    pub fn insert_unique(
        &mut self,
        hash: u64,
        key: &FlowKey,
        now: Tick,
        fill: impl FnOnce(&mut FlowRecord),
    ) -> Result<Option<FlowIndex>, Error> {
        #[allow(clippy::cast_possible_truncation, reason = "the low 32 bits address buckets")]
        let h = hash as u32;
        let b = self.bucket_of(h);
        let head = *self.buckets.get(b);
        let mut at = head;
        while at != NIL {
            let s = self.slots.get(at as usize);
            if s.hash == h && s.key == *key {
                return Ok(None);
            }
            at = s.chain;
        }
        if self.len >= self.config.max_flows || self.len >= self.level + self.split {
            let mut record = FREE_SLOT.record;
            fill(&mut record);
            let room = Room::for_record(&record);
            return self.insert_with(hash, *key, record, now, room).map(|(at, _)| Some(at));
        }
        // Below the bound and with the index split ahead: placed directly, in a free slot or
        // at the slab's end (which grows by a segment when full: below the bound, the
        // directory has room for it).
        #[allow(clippy::cast_possible_truncation, reason = "bounded by MAX_FLOWS_LIMIT")]
        let (i, slot) = if self.free == NIL {
            let i = self.slots.len() as u32;
            if self.slots.is_full() {
                self.grow_slots(false)?;
            }
            (i, self.slots.push_in_place())
        } else {
            let i = self.free;
            self.free = self.slots.get(i as usize).next;
            (i, Some(self.slots.get_mut(i as usize)))
        };
        let Some(d) = slot else { return Err(Error::TableFull) };
        fill(&mut d.record);
        let class = TimeoutClass::of(key.protocol, d.record.state).index();
        let list_head = self.lists.get(class).map_or(NIL, |l| l.head);
        d.key = *key;
        d.linked_at = d.record.last_seen;
        d.prev = NIL;
        d.next = list_head;
        d.chain = head;
        d.hash = h;
        #[allow(clippy::cast_possible_truncation, reason = "class < TimeoutClass::COUNT")]
        let class_u8 = class as u8;
        d.class = class_u8;
        if let Some(list) = self.lists.get_mut(class) {
            list.head = i;
            if list_head == NIL {
                list.tail = i;
            }
        }
        if list_head != NIL {
            self.slots.get_mut(list_head as usize).prev = i;
        }
        *self.buckets.get_mut(b) = i;
        self.len += 1;
        Ok(Some(FlowIndex(i)))
    }

    /// Writes a flow in the slab's next slot without linking it into the index or its list:
    /// a restore's staging writes each flow's slot as it decodes it, and links them a
    /// segment at a time ([`FlowTable::link_pushed`]), as the key and record are written only
    /// once (no list of decoded flows in between) and the linking loop stays short (issue 18).
    /// `class` is the flow's [`TimeoutClass::index`]; `fill` writes the record (every field).
    /// A flow pushed `left_out` (idle past its timeout) takes its slot but is never linked:
    /// the link pass frees it (so a pushed flow's slot number is its position in what was
    /// pushed). Only on a table made by [`FlowTable::try_new_unreserved`] (no slot yet), below
    /// its bound; until the link pass the table must not be used otherwise.
    ///
    /// The flows are written into the slab's next segment as it is built (`building`: an
    /// allocation of a segment's slots, charged to the budget even past the limit as
    /// [`FlowTable::insert_unique`] charges the slab's growth), not into a segment first
    /// filled with the free-slot pattern: each slot is written once, not twice (the pool's
    /// zeroing aside). [`FlowTable::link_pushed`] appends it to the slab.
    ///
    /// # Errors
    /// [`Error::TableFull`] at the bound (or on a table with slots); [`Error::OutOfMemory`].
    #[allow(clippy::inline_always, reason = "a restore's per-flow decode loop: one call site")]
    #[inline(always)]
    pub(crate) fn push_unlinked(
        &mut self,
        key: &FlowKey,
        class: usize,
        left_out: bool,
        record: FlowRecord,
    ) -> Result<(), Error> {
        if self.building.len() >= self.building_limit {
            self.next_building()?;
        }
        #[allow(clippy::cast_possible_truncation, reason = "class < TimeoutClass::COUNT")]
        let class = if left_out { FREE } else { class as u8 };
        if self.building.len() >= self.building.capacity() {
            // Never: the segment holds `building_limit` (at most a segment's) slots.
            return Err(Error::TableFull);
        }
        self.building.push(Slot {
            key: *key,
            record,
            linked_at: 0,
            prev: NIL,
            next: NIL,
            chain: NIL,
            hash: 0,
            class,
        });
        self.unlinked += 1;
        Ok(())
    }

    /// Appends the segment built (if any) to the slab and starts the next, of the slots the
    /// bound leaves room for.
    #[cold]
    #[inline(never)]
    fn next_building(&mut self) -> Result<(), Error> {
        self.end_building()?;
        self.start_building()
    }

    /// Allocates the segment [`FlowTable::push_unlinked`] builds next (the slab's are full),
    /// a whole segment's slots (so that appending it never reallocates), of which it takes
    /// those the bound leaves room for; charged to the budget even past the limit.
    fn start_building(&mut self) -> Result<(), Error> {
        let room = (self.config.max_flows as usize).saturating_sub(self.slots.len());
        let bytes = self.slots.next_segment_bytes();
        if room == 0 || bytes == 0 || self.slots.len() != self.slots.capacity() {
            return Err(Error::TableFull);
        }
        self.charge(bytes, false);
        let mut segment = alloc::vec::Vec::new();
        if let Err(e) = segment.try_reserve_exact(SLOT_SEGMENT) {
            self.uncharge(bytes);
            return Err(e.into());
        }
        self.building = segment;
        self.building_limit = SLOT_SEGMENT.min(room);
        self.building_charge = bytes;
        Ok(())
    }

    /// Appends the segment being built to the slab (its slots past those written hold the
    /// free-slot pattern, unused).
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] (never: its allocation holds a whole segment, so appending it
    /// allocates nothing): the slots built are lost and no longer counted pushed, the
    /// segment's charge given back.
    fn end_building(&mut self) -> Result<(), Error> {
        let building = core::mem::take(&mut self.building);
        let charge = core::mem::take(&mut self.building_charge);
        self.building_limit = 0;
        if building.capacity() == 0 {
            return Ok(());
        }
        #[allow(clippy::cast_possible_truncation, reason = "at most a segment")]
        let n = building.len() as u32;
        self.slots.push_segment(building, FREE_SLOT).inspect_err(|_| {
            self.uncharge(charge);
            self.unlinked -= n;
        })
    }

    /// Slots pushed and not linked yet.
    pub(crate) const fn unlinked(&self) -> u32 {
        self.unlinked
    }

    /// Links every slot [`FlowTable::push_unlinked`] wrote, in slab order: each into its
    /// bucket's chain (after a check for its key there) and at the head of its class's list;
    /// a slot pushed left out goes to the free list. The index should have been split ahead
    /// ([`FlowTable::reserve_index`]): nothing is split here.
    ///
    /// A key pushed more than once (a blob that describes one connection twice: only a buggy
    /// or hostile source writes one) keeps none of its flows: every slot of it is freed, the
    /// others are linked. Neither description is trusted, so the duplicate never makes the
    /// connection more permissive than either record alone would, and costs that connection
    /// only, not every other (review s6 "Left open", faults s7). A restore links a segment's
    /// slots at a time: a key's first slot, once met again, is marked and stays linked (so that
    /// an occurrence in any later batch still finds it) until
    /// [`FlowTable::remove_duplicated`], after the last batch. Returns how many keys this batch
    /// met again for the first time, and the first slot it marked.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] (never: [`FlowTable::push_unlinked`]'s segment holds a whole
    /// segment's slots): the segment being built could not be appended; its flows are lost,
    /// those before it linked.
    pub(crate) fn link_pushed(&mut self) -> Result<Linked, Error> {
        let built = self.end_building();
        #[allow(clippy::cast_possible_truncation, reason = "bounded by MAX_FLOWS_LIMIT")]
        let end = self.slots.len() as u32;
        let mut slot = end - self.unlinked;
        // Keys met twice: their first (linked) slot is marked and unlinked after the pass, so
        // that a third occurrence still finds it.
        let mut duplicated = 0u32;
        let mut first_marked = NIL;
        while slot < end {
            let pushed = self.slots.get(slot as usize);
            if pushed.class == FREE {
                self.free_pushed(slot);
                slot += 1;
                continue;
            }
            let key = pushed.key;
            let class = usize::from(pushed.class);
            #[allow(clippy::cast_possible_truncation, reason = "the low 32 bits address buckets")]
            let hash = self.hash(&key) as u32;
            let bucket = self.bucket_of(hash);
            let head = *self.buckets.get(bucket);
            let mut at = head;
            while at != NIL {
                let t = self.slots.get(at as usize);
                if t.hash == hash && t.key == key {
                    break;
                }
                at = t.chain;
            }
            if at != NIL {
                let first = self.slots.get_mut(at as usize);
                if first.linked_at != DUPLICATED {
                    first.linked_at = DUPLICATED;
                    duplicated += 1;
                    first_marked = first_marked.min(at);
                }
                self.free_pushed(slot);
                slot += 1;
                continue;
            }
            let list_head = self.lists.get(class).map_or(NIL, |l| l.head);
            let d = self.slots.get_mut(slot as usize);
            d.linked_at = d.record.last_seen;
            d.prev = NIL;
            d.next = list_head;
            d.chain = head;
            d.hash = hash;
            if let Some(list) = self.lists.get_mut(class) {
                list.head = slot;
                if list_head == NIL {
                    list.tail = slot;
                }
            }
            if list_head != NIL {
                self.slots.get_mut(list_head as usize).prev = slot;
            }
            *self.buckets.get_mut(bucket) = slot;
            self.len += 1;
            slot += 1;
        }
        self.unlinked = 0;
        built.map(|()| Linked { duplicated, first_marked })
    }

    /// Removes the slots [`FlowTable::link_pushed`] marked, from slot `from` (the first it
    /// marked) on: every slot of a key pushed more than once.
    pub(crate) fn remove_duplicated(&mut self, from: u32) {
        #[allow(clippy::cast_possible_truncation, reason = "bounded by MAX_FLOWS_LIMIT")]
        let end = self.slots.len() as u32;
        for i in from..end {
            let s = self.slots.get(i as usize);
            if usize::from(s.class) < TimeoutClass::COUNT && s.linked_at == DUPLICATED {
                self.remove_at(i);
            }
        }
    }

    /// A pushed slot that is not linked goes to the free list.
    fn free_pushed(&mut self, i: u32) {
        let free = self.free;
        let slot = self.slots.get_mut(i as usize);
        slot.class = FREE;
        slot.next = free;
        slot.prev = NIL;
        self.free = i;
    }

    /// Puts the lists of the classes in `classes` (a bit per [`TimeoutClass::index`]) in the
    /// order of their flows' `last_seen`, ties by slot number (placement order): a restore that
    /// placed a class's flows out of age order (a blob of IPv4 then IPv6 flows, each list
    /// oldest first) gets each list ordered as if they had been inserted oldest first, so
    /// expiry and eviction order stay exact (see the module docs).
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] (a list's order is built in a vector); the table is unchanged.
    pub(crate) fn order_lists(&mut self, classes: u8) -> Result<(), Error> {
        // One vector for every list (each list is at most the table): one allocation, not one
        // a class (review3 s5).
        let mut order: alloc::vec::Vec<(Tick, u32)> = alloc::vec::Vec::new();
        if classes != 0 {
            order.try_reserve_exact(self.len as usize)?;
        }
        for class in TimeoutClass::ALL {
            let c = class.index();
            if classes & (1 << c) == 0 {
                continue;
            }
            order.clear();
            order.extend(self.iter_lru_slots(class).map(|(i, _, r)| (r.last_seen, i)));
            order.sort_unstable();
            self.lists[c] = EMPTY_LIST;
            for &(_, i) in &order {
                self.push_front(i, c);
            }
        }
        Ok(())
    }

    /// Merges a restore's carried flows (`carried`: a table with this one's configuration, so
    /// the same hash key, each list oldest first) into this table, the port's live one holding
    /// the flows the restore window saw: the restore's apply when the window is the larger
    /// side, so that its work under the port's lock is the carried flows', not the window's
    /// (issue 18 item 1: a window that filled a 65,536-flow table was copied flow by flow into
    /// the carried table and re-sorted, 5-7.5 ms at `DISPATCH_LEVEL`; review3 s5).
    ///
    /// The result is the table the apply builds the other way round, flow for flow: a carried
    /// flow the window also saw becomes `merge(carried, window)` (where its time or class
    /// changes, it moves to its place by its `last_seen`); every other carried flow is placed
    /// at its place by its `last_seen` in its class's list, after the window's flows of an
    /// earlier time and before those of the same or a later one (the order the apply's sort
    /// gives, carried flows first on ties); if the bound leaves no room for all, the window's
    /// flows that only the window saw go, the last in slot order first (the apply kept them in
    /// slot order while room remained). Window flows stay in their slots and list places.
    /// Carried flows are charged to the budget even past the limit, as the staging charged
    /// them.
    ///
    /// Work: one lookup and one placement per carried flow, plus the window flows a placement
    /// walks past (`place_run`): none when each class's carried flows are all
    /// older or all fresher than its window flows (the VM's own flows in the window come after
    /// the source's last save), at worst a class list's window flows, once, when the two are
    /// interleaved in time; plus, only at the bound, the slots it steps over to find window
    /// flows to let go (as many as there are new carried flows, and the merged and free slots
    /// among them). The index is not split ahead for the new flows (later inserts split it on,
    /// one bucket each, as every insert does). Nothing else of the window is read.
    ///
    /// Returns `None` (this table unchanged but for storage reserved) if the memory for the
    /// carried flows or the placement order could not be had: the apply then merges the other
    /// way round. Otherwise `(merged, let_go, walked)`: carried flows the window also saw,
    /// window flows let go for the bound, and list nodes walked past.
    pub(crate) fn merge_carried(
        &mut self,
        carried: &Self,
        merge: impl Fn(&FlowRecord, &FlowRecord) -> FlowRecord,
    ) -> Option<(u32, u32, u64)> {
        // 1. Read only: each carried flow's slot here (NIL: new), and what is new.
        let mut plan: alloc::vec::Vec<(u32, u32)> = alloc::vec::Vec::new();
        plan.try_reserve_exact(carried.len()).ok()?;
        let mut new = 0u32;
        for class in TimeoutClass::ALL {
            for (cs, key, _) in carried.iter_lru_slots(class) {
                let hash = carried.slots.get(cs as usize).hash;
                let at = self.find_hashed(u64::from(hash), key).map_or(NIL, |a| a.0);
                new += u32::from(at == NIL);
                plan.push((cs, at));
            }
        }
        // Each placement: (class, time, order taken, slot).
        let mut places: alloc::vec::Vec<(u8, Tick, u32, u32)> = alloc::vec::Vec::new();
        places.try_reserve_exact(plan.len()).ok()?;
        // Storage for the new ones (the bound's room made below), charged past the limit. The
        // index is not split ahead for them (a split walks a chain of flows scattered over the
        // slab, for every one of them: two fifths of this merge's instructions): their chains
        // are a little longer until later inserts split it on, one bucket each, as every insert
        // does.
        let want = self.len.saturating_add(new).min(self.config.max_flows) as usize;
        while self.slots.capacity() < want {
            self.grow_slots(false).ok()?;
        }

        // 2. At the bound: the window's own flows go, the last in slot order first.
        let mut excess = (self.len + new).saturating_sub(self.config.max_flows);
        let let_go = excess;
        let mut slot = self.slots.len();
        while excess > 0 && slot > 0 {
            slot -= 1;
            let s = self.slots.get(slot);
            if s.class >= UNLINKED || carried.find_hashed(u64::from(s.hash), &s.key).is_some() {
                continue;
            }
            #[allow(clippy::cast_possible_truncation, reason = "bounded by MAX_FLOWS_LIMIT")]
            self.remove_at(slot as u32);
            excess -= 1;
        }

        // 3. Merge or place each carried flow (taken off its list while it is placed).
        let mut merged = 0u32;
        #[allow(clippy::cast_possible_truncation, reason = "bounded by MAX_FLOWS_LIMIT")]
        for (&(cs, at), order) in plan.iter().zip(0u32..) {
            let c = carried.slots.get(cs as usize);
            let (slot, record) = if at == NIL {
                let i = if self.free == NIL {
                    let i = self.slots.len() as u32;
                    // Reserved above: never full.
                    if self.slots.push_in_place().is_none() {
                        continue;
                    }
                    i
                } else {
                    let i = self.free;
                    self.free = self.slots.get(i as usize).next;
                    i
                };
                let b = self.bucket_of(c.hash);
                let chain = *self.buckets.get(b);
                let d = self.slots.get_mut(i as usize);
                d.key = c.key;
                d.record = c.record;
                d.chain = chain;
                d.hash = c.hash;
                d.prev = NIL;
                d.next = NIL;
                *self.buckets.get_mut(b) = i;
                self.len += 1;
                (i, c.record)
            } else {
                merged += 1;
                let w = self.slots.get(at as usize);
                let record = merge(&c.record, &w.record);
                let class = TimeoutClass::of(w.key.protocol, record.state).index();
                let stays = usize::from(w.class) == class && record.last_seen == w.record.last_seen;
                self.slots.get_mut(at as usize).record = record;
                if stays {
                    continue;
                }
                self.unlink(at);
                (at, record)
            };
            let class = TimeoutClass::of(c.key.protocol, record.state).index();
            places.push((class as u8, record.last_seen, order, slot));
        }

        // 4. Each class's placements in time order, into its list.
        places.sort_unstable();
        let mut walked = 0u64;
        let mut rest = places.as_slice();
        while let Some(&(class, ..)) = rest.first() {
            let n = rest.iter().take_while(|p| p.0 == class).count();
            let (run, after) = rest.split_at(n);
            walked += self.place_run(usize::from(class), run);
            rest = after;
        }
        Some((merged, let_go, walked))
    }

    /// Links the slots of `run` (one class's, each taken off every list, in time order) into
    /// their class's list, each after the flows of an earlier time and before those of the same
    /// or a later one (the run's ties in run order): a cursor from the list's oldest end places
    /// the run's oldest, one from its freshest end the run's freshest, whichever can without a
    /// step, and only when neither can does each step past one node (once the rest are of one
    /// time, the oldest end's cursor alone). A run older or fresher than the whole list walks
    /// nothing; otherwise the nodes walked past are at most twice those of the nearer side:
    /// the window flows between the run's and, at most, those older than its oldest or
    /// fresher than its freshest, whichever are fewer. Returns them.
    fn place_run(&mut self, class: usize, run: &[(u8, Tick, u32, u32)]) -> u64 {
        let Some(list) = self.lists.get(class).copied() else { return 0 };
        #[allow(clippy::cast_possible_truncation, reason = "class < TimeoutClass::COUNT")]
        let class_u8 = class as u8;
        for &(_, t, _, i) in run {
            let s = self.slots.get_mut(i as usize);
            s.linked_at = t;
            s.class = class_u8;
        }
        if list.head == NIL {
            // Nothing to walk past: oldest first, each at the head.
            for &(.., i) in run {
                self.push_front(i, class);
            }
            return 0;
        }
        let linked_at = |t: &Self, i: u32| t.slots.get(i as usize).linked_at;
        // Each side inserts next to the node it placed or stepped past last (NIL: its end of
        // the list), so what the other side inserted meanwhile is seen, never stepped over.
        // `old`: the run's oldest left goes just fresher than it; `fresh`: the run's freshest
        // left goes just older than it.
        let (mut old, mut fresh) = (NIL, NIL);
        let (mut lo, mut hi) = (0usize, run.len());
        let mut walked = 0u64;
        while lo < hi {
            let (Some(&(_, t_lo, _, a)), Some(&(_, t_hi, _, z))) = (run.get(lo), run.get(hi - 1))
            else {
                break;
            };
            // The oldest left goes in from the oldest end if it can without a step (alone once
            // the rest are of one time: ties in run order) ...
            let older =
                if old == NIL { self.lists[class].tail } else { self.slots.get(old as usize).prev };
            if older == NIL || linked_at(self, older) >= t_lo {
                self.link_after(a, old, class);
                old = a;
                lo += 1;
                continue;
            }
            if t_lo == t_hi {
                old = older;
                walked += 1;
                continue;
            }
            // ... else the freshest left from the freshest end ...
            let fresher = if fresh == NIL {
                self.lists[class].head
            } else {
                self.slots.get(fresh as usize).next
            };
            if fresher == NIL || linked_at(self, fresher) < t_hi {
                self.link_before(z, fresh, class);
                fresh = z;
                hi -= 1;
                continue;
            }
            // ... else each end steps past one node.
            old = older;
            fresh = fresher;
            walked += 2;
        }
        walked
    }

    /// Links `i` into `class`'s list just older than `at` (NIL: at the freshest end).
    fn link_before(&mut self, i: u32, at: u32, class: usize) {
        if at == NIL {
            self.push_front(i, class);
            return;
        }
        let older = self.slots.get(at as usize).next;
        let s = self.slots.get_mut(i as usize);
        s.prev = at;
        s.next = older;
        self.slots.get_mut(at as usize).next = i;
        if older == NIL {
            self.lists[class].tail = i;
        } else {
            self.slots.get_mut(older as usize).prev = i;
        }
    }

    /// Links `i` into `class`'s list just fresher than `at` (NIL: at the oldest end).
    fn link_after(&mut self, i: u32, at: u32, class: usize) {
        let fresher =
            if at == NIL { self.lists[class].tail } else { self.slots.get(at as usize).prev };
        let s = self.slots.get_mut(i as usize);
        s.prev = fresher;
        s.next = at;
        if at == NIL {
            self.lists[class].tail = i;
        } else {
            self.slots.get_mut(at as usize).prev = i;
        }
        if fresher == NIL {
            self.lists[class].head = i;
        } else {
            self.slots.get_mut(fresher as usize).next = i;
        }
    }

    /// Rewrites a flow's record in place (`update`): a restore merging the flow the restore
    /// window saw into the carried one. Its list place stays, now dated by its `last_seen`
    /// (as if it had been placed with it); if its state moved it to another timeout class, it
    /// goes to the head of that class's list, as [`FlowTable::set_state`] moves it.
    pub(crate) fn update_record(&mut self, at: FlowIndex, update: impl FnOnce(&mut FlowRecord)) {
        let i = at.0;
        let slot = self.slots.get_mut(i as usize);
        update(&mut slot.record);
        let class = TimeoutClass::of(slot.key.protocol, slot.record.state).index();
        slot.linked_at = slot.record.last_seen;
        if usize::from(slot.class) != class {
            self.unlink(i);
            self.push_front(i, class);
        }
    }

    /// Calls `f` on every flow's record, in slab order: a restore maps its carried rule
    /// admissions to this host's rule versions in one sequential pass.
    pub(crate) fn for_each_record_mut(&mut self, mut f: impl FnMut(&mut FlowRecord)) {
        self.slots.for_each_mut(|s| {
            if s.class != FREE {
                f(&mut s.record);
            }
        });
    }

    /// One step of linear hashing: while the table holds more flows than buckets, splits the
    /// next bucket into itself and a new one, moving only that chain's entries. Allocates at
    /// most one segment of bucket heads; if the budget or the allocator refuses it, the table
    /// keeps its buckets (longer chains, still correct).
    fn split_one(&mut self) {
        let in_use = self.level + self.split;
        if self.len <= in_use || in_use >= self.max_buckets {
            return;
        }
        if self.buckets.is_full() && self.grow_buckets(true).is_err() {
            return;
        }
        self.split_bucket();
    }

    /// Splits the next bucket into itself and a new one (the index has room for it), moving
    /// only that chain's entries.
    fn split_bucket(&mut self) {
        self.buckets.push(NIL);
        let from = self.split;
        let to = from + self.level;
        let mut at = core::mem::replace(self.buckets.get_mut(from as usize), NIL);
        while at != NIL {
            let s = self.slots.get_mut(at as usize);
            let next = s.chain;
            let dest = if s.hash & self.level == 0 { from } else { to };
            s.chain = *self.buckets.get(dest as usize);
            *self.buckets.get_mut(dest as usize) = at;
            at = next;
        }
        self.split += 1;
        if self.split == self.level {
            self.level *= 2;
            self.split = 0;
        }
    }

    /// Removes a flow by key, returning its record.
    pub fn remove(&mut self, key: &FlowKey) -> Option<FlowRecord> {
        let at = self.find(key)?;
        let record = *self.record(at);
        self.remove_at(at.0);
        Some(record)
    }

    /// Removes a flow by handle, its key hashing to `hash`.
    pub(crate) fn remove_hashed(&mut self, hash: u64, at: FlowIndex) {
        self.remove_at_hashed(hash, at.0);
    }

    /// Removes up to `budget` flows idle for at least their class's timeout, oldest first in each
    /// class. Returns how many were removed. The driver calls this from a periodic timer.
    ///
    /// Cost: O(removed + classes); it stops at the first live flow of each class. Each class list
    /// is ordered by placement time and a flow's last packet is less than one
    /// [`TableConfig::lru_granularity`] after its placement, so a flow is reclaimed at most one
    /// granularity after it expired (classify treats it as absent meanwhile).
    pub fn expire(&mut self, now: Tick, budget: usize) -> usize {
        let mut removed = 0;
        for class in TimeoutClass::ALL {
            let timeout = self.timeouts.get(class.index()).copied().unwrap_or(0);
            while removed < budget {
                let tail = self.lists[class.index()].tail;
                if tail == NIL {
                    break;
                }
                let last = self.slots.get(tail as usize).record.last_seen;
                if now.saturating_sub(last) < timeout {
                    break;
                }
                self.remove_at(tail);
                removed += 1;
            }
        }
        removed
    }

    /// Removes every flow, keeping the allocated storage.
    pub fn clear(&mut self) {
        let buckets = self.buckets.len();
        self.buckets.clear();
        for _ in 0..buckets {
            // Into the kept segments: no allocation.
            self.buckets.push(NIL);
        }
        self.slots.clear();
        self.free = NIL;
        self.lists = [EMPTY_LIST; TimeoutClass::COUNT];
        self.len = 0;
    }

    /// All flows, in slab order.
    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &FlowRecord)> + '_ {
        self.slots.iter_from(0).filter(|s| s.class != FREE).map(|s| (&s.key, &s.record))
    }

    /// The flows from slab position `from` on, in slab order, each with its position: a
    /// cursor for paging (a page resumes at the last position + 1 without walking what came
    /// before).
    pub fn iter_from(&self, from: u32) -> impl Iterator<Item = (u32, &FlowKey, &FlowRecord)> + '_ {
        (from..)
            .zip(self.slots.iter_from(from as usize))
            .filter(|(_, s)| s.class != FREE)
            .map(|(i, s)| (i, &s.key, &s.record))
    }

    /// The flows of one timeout class, least recently used first.
    pub fn iter_lru(&self, class: TimeoutClass) -> impl Iterator<Item = (&FlowKey, &FlowRecord)> {
        self.iter_lru_slots(class).map(|(_, k, r)| (k, r))
    }

    /// [`FlowTable::iter_lru`] with each flow's slot number: the same while the flow stays in
    /// the table, below [`FlowTable::slot_count`], reused by a later flow once it leaves (the
    /// save encoder keys its per-flow memory by it, checking the key).
    pub fn iter_lru_slots(
        &self,
        class: TimeoutClass,
    ) -> impl Iterator<Item = (u32, &FlowKey, &FlowRecord)> {
        let mut at = self.lists[class.index()].tail;
        core::iter::from_fn(move || {
            if at == NIL {
                return None;
            }
            let i = at;
            let s = self.slots.get(at as usize);
            at = s.prev;
            Some((i, &s.key, &s.record))
        })
    }

    /// The flow in slot `slot` (a number [`FlowTable::iter_lru_slots`] gave), `None` for a
    /// slot out of range or free. The at-cap save walks the lists once and reads the same
    /// flows again by slot number (independent loads, not a second pointer chase).
    #[inline]
    #[must_use]
    pub fn slot_flow(&self, slot: u32) -> Option<(&FlowKey, &FlowRecord)> {
        self.slots.try_get(slot as usize).filter(|s| s.class != FREE).map(|s| (&s.key, &s.record))
    }

    /// Slot numbers in use so far: every flow's slot is below it.
    #[must_use]
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Lowers the bound to `max_flows` (at most the bound the table was created with), or
    /// restores it: a port split into shards lets only the shard a new flow goes to reclaim a
    /// slot when the port as a whole is full ([`crate::port::shards`]). `0` makes every insert
    /// reclaim or be refused.
    pub(crate) fn set_max_flows(&mut self, max_flows: u32) {
        self.config.max_flows = max_flows;
    }

    /// Makes sure the next insert finds a free slot without reclaiming one: true if the table
    /// is below its bound and has a free slot, or grew by one slab step the host's budget
    /// allows. For a flow that moves between tables (nothing new is tracked).
    pub(crate) fn make_room(&mut self) -> bool {
        if self.len >= self.config.max_flows {
            return false;
        }
        self.free != NIL || !self.slots.is_full() || self.grow_slots(true).is_ok()
    }

    /// The flow an insert into this table at its bound would reclaim first (the order of
    /// [`FlowTable::insert`]), ranked so that ranks of several tables compare as if their flows
    /// were in one table: lower goes first; `None` for an empty table. An established TCP
    /// connection ranks last (`3`): it goes only if the insert may displace one.
    pub(crate) fn eviction_rank(&self, now: Tick) -> Option<(u8, u64)> {
        self.eviction_choice(now).map(|(class, order, _)| (class, order))
    }

    /// The flow the documented order reclaims first, as (class, order within the class, slot):
    /// class 0 the oldest closed flow, 1 the most overdue idle flow (of any timeout class), 2 the
    /// least recently used flow that is not an established connection, 3 the least recently
    /// used established connection. The one place that order is written: [`Self::evict_one`]
    /// removes this flow and [`Self::eviction_rank`] compares it across tables.
    fn eviction_choice(&self, now: Tick) -> Option<(u8, u64, u32)> {
        let closed = self.lists[TimeoutClass::Closed.index()].tail;
        if closed != NIL {
            return Some((0, self.slots.get(closed as usize).record.last_seen, closed));
        }
        let mut idle: Option<(u64, u32)> = None;
        let mut lru: Option<(Tick, u32)> = None;
        for class in TimeoutClass::ALL {
            let tail = self.lists[class.index()].tail;
            if tail == NIL {
                continue;
            }
            let last = self.slots.get(tail as usize).record.last_seen;
            let idle_for = now.saturating_sub(last);
            let timeout = self.timeouts.get(class.index()).copied().unwrap_or(0);
            if idle_for >= timeout {
                let overdue = idle_for - timeout;
                if idle.is_none_or(|(o, _)| overdue > o) {
                    idle = Some((overdue, tail));
                }
            }
            if class != TimeoutClass::TcpEstablished && lru.is_none_or(|(l, _)| last < l) {
                lru = Some((last, tail));
            }
        }
        if let Some((overdue, at)) = idle {
            return Some((1, u64::MAX - overdue, at));
        }
        if let Some((last, at)) = lru {
            return Some((2, last, at));
        }
        let est = self.lists[TimeoutClass::TcpEstablished.index()].tail;
        (est != NIL).then(|| (3, self.slots.get(est as usize).record.last_seen, est))
    }

    /// Picks and removes one flow in the documented order; `None` if nothing may go.
    fn evict_one(&mut self, now: Tick, room: Room) -> Option<Eviction> {
        let (class, _, at) = self.eviction_choice(now)?;
        let eviction = match class {
            0 => Eviction::Closed,
            1 => Eviction::Idle,
            2 => Eviction::LeastRecentlyUsed,
            _ if matches!(room, Room::Any) => Eviction::LeastRecentlyUsed,
            _ => return None,
        };
        self.remove_at(at);
        Some(eviction)
    }

    fn remove_at(&mut self, i: u32) {
        let hash = u64::from(self.slots.get(i as usize).hash);
        self.remove_at_hashed(hash, i);
    }

    fn remove_at_hashed(&mut self, hash: u64, i: u32) {
        #[allow(clippy::cast_possible_truncation, reason = "the low 32 bits address buckets")]
        let b = self.bucket_of(hash as u32);
        let next = self.slots.get(i as usize).chain;
        let mut at = *self.buckets.get(b);
        if at == i {
            *self.buckets.get_mut(b) = next;
        } else {
            while at != NIL {
                let s = self.slots.get_mut(at as usize);
                if s.chain == i {
                    s.chain = next;
                    break;
                }
                at = s.chain;
            }
        }
        self.unlink(i);
        let slot = self.slots.get_mut(i as usize);
        slot.class = FREE;
        slot.next = self.free;
        slot.prev = NIL;
        self.free = i;
        self.len -= 1;
    }

    fn unlink(&mut self, i: u32) {
        let Slot { prev, next, class, .. } = *self.slots.get(i as usize);
        let list = &mut self.lists[class as usize];
        if prev == NIL {
            list.head = next;
        } else {
            self.slots.get_mut(prev as usize).next = next;
        }
        if next == NIL {
            list.tail = prev;
        } else {
            self.slots.get_mut(next as usize).prev = prev;
        }
    }

    fn push_front(&mut self, i: u32, class: usize) {
        let list = &mut self.lists[class];
        let old = list.head;
        list.head = i;
        if old == NIL {
            list.tail = i;
        }
        let slot = self.slots.get_mut(i as usize);
        slot.prev = NIL;
        slot.next = old;
        slot.linked_at = slot.record.last_seen;
        #[allow(clippy::cast_possible_truncation, reason = "class < TimeoutClass::COUNT")]
        let class_u8 = class as u8;
        slot.class = class_u8;
        if old != NIL {
            self.slots.get_mut(old as usize).prev = i;
        }
    }

    /// Checks every internal invariant; used by tests and the simulator's contract checks.
    /// Returns a description of the first violation.
    ///
    /// # Errors
    /// A static description of the broken invariant.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        let mut in_lists = 0usize;
        for (c, list) in self.lists.iter().enumerate() {
            let mut at = list.head;
            let mut prev = NIL;
            let mut steps = 0usize;
            while at != NIL {
                let s = self.slots.try_get(at as usize).ok_or("list points outside the slab")?;
                if usize::from(s.class) != c {
                    return Err("slot in the wrong class list");
                }
                if s.prev != prev {
                    return Err("broken prev link");
                }
                if TimeoutClass::of(s.key.protocol, s.record.state).index() != c {
                    return Err("flow filed under the wrong timeout class");
                }
                if self.find(&s.key) != Some(FlowIndex(at)) {
                    return Err("listed flow not found through the index");
                }
                prev = at;
                at = s.next;
                steps += 1;
                if steps > self.slots.len() {
                    return Err("cycle in a class list");
                }
            }
            if list.tail != prev {
                return Err("list tail is not its last element");
            }
            in_lists += steps;
        }
        let mut chained = 0usize;
        for b in 0..self.buckets() {
            let mut at = *self.buckets.try_get(b).ok_or("bucket outside the index")?;
            while at != NIL {
                let s = self.slots.try_get(at as usize).ok_or("chain points outside the slab")?;
                if s.class == FREE {
                    return Err("a free slot is chained");
                }
                #[allow(clippy::cast_possible_truncation, reason = "the low 32 bits")]
                if s.hash != self.hash(&s.key) as u32 {
                    return Err("stored hash is not the key's");
                }
                if self.bucket_of(s.hash) != b {
                    return Err("flow chained in the wrong bucket");
                }
                chained += 1;
                if chained > self.slots.len() {
                    return Err("cycle in a chain");
                }
                at = s.chain;
            }
        }
        if in_lists != self.len as usize || chained != self.len as usize {
            return Err("length disagrees with lists or index");
        }
        if self.buckets() > self.max_buckets as usize || self.buckets() > self.buckets.len() {
            return Err("more buckets than the index holds");
        }
        if self.len > self.config.max_flows {
            return Err("table holds more than its bound");
        }
        if self.charged != self.heap_bytes() {
            return Err("charged bytes differ from the storage held");
        }
        let free = self.slots.iter_from(0).filter(|s| s.class == FREE).count();
        if free + self.len as usize != self.slots.len() {
            return Err("free list and live slots do not cover the slab");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Admission, Opener};
    use crate::packet::{IpFamily, protocol, v4};
    use crate::time::secs;

    fn key(n: u16, proto: u8) -> FlowKey {
        FlowKey {
            family: IpFamily::V4,
            protocol: proto,
            local_addr: v4([10, 0, 0, 1]),
            remote_addr: v4([192, 0, 2, 1]),
            local_port: n,
            remote_port: 443,
        }
    }

    fn rec(state: FlowState, now: Tick) -> FlowRecord {
        FlowRecord::new(state, Opener::Vm, Admission::Vm, now)
    }

    fn table(max_flows: u32) -> FlowTable {
        FlowTable::try_new(TableConfig { max_flows, initial_capacity: 2, ..TableConfig::default() })
            .unwrap()
    }

    #[test]
    fn insert_find_remove_keep_invariants() {
        let mut t = table(8);
        for n in 0..8 {
            t.insert(key(n, protocol::TCP), rec(FlowState::Established, 1), 1).unwrap();
            t.check_invariants().unwrap();
        }
        assert_eq!(t.len(), 8);
        assert!(t.get(&key(3, protocol::TCP)).is_some());
        assert!(t.remove(&key(3, protocol::TCP)).is_some());
        assert!(t.get(&key(3, protocol::TCP)).is_none());
        assert!(t.remove(&key(3, protocol::TCP)).is_none());
        t.check_invariants().unwrap();
        assert_eq!(t.len(), 7);
    }

    #[test]
    fn closed_flows_are_reclaimed_before_anything_else() {
        let mut t = table(3);
        t.insert(key(1, protocol::TCP), rec(FlowState::Established, 1), 1).unwrap();
        t.insert(key(2, protocol::TCP), rec(FlowState::Closed, 9), 9).unwrap();
        t.insert(key(3, protocol::UDP), rec(FlowState::Active, 2), 2).unwrap();
        let (_, ev) = t.insert(key(4, protocol::TCP), rec(FlowState::SynSent, 10), 10).unwrap();
        assert_eq!(ev, Some(Eviction::Closed));
        assert!(t.get(&key(2, protocol::TCP)).is_none());
        t.check_invariants().unwrap();
    }

    #[test]
    fn the_most_overdue_idle_flow_goes_next() {
        let mut t = table(3);
        let now = secs(10_000);
        // Established idle 1 h (timeout 2 h): not idle. UDP idle 100 s (timeout 60 s): 40 s
        // overdue. Other idle 200 s (timeout 30 s): 170 s overdue.
        t.insert(key(1, protocol::TCP), rec(FlowState::Established, now - secs(3600)), 0).unwrap();
        t.insert(key(2, protocol::UDP), rec(FlowState::Active, now - secs(100)), 0).unwrap();
        t.insert(key(3, 47), rec(FlowState::Active, now - secs(200)), 0).unwrap();
        let (_, ev) = t.insert(key(4, protocol::UDP), rec(FlowState::Active, now), now).unwrap();
        assert_eq!(ev, Some(Eviction::Idle));
        assert!(t.get(&key(3, 47)).is_none(), "GRE flow was the most overdue");
        let (_, ev) = t.insert(key(5, protocol::UDP), rec(FlowState::Active, now), now).unwrap();
        assert_eq!(ev, Some(Eviction::Idle));
        assert!(t.get(&key(2, protocol::UDP)).is_none());
        t.check_invariants().unwrap();
    }

    #[test]
    fn without_idle_flows_the_least_recently_used_goes() {
        let mut t = table(3);
        let ms = |n: u64| n * 10_000;
        let k1 = key(1, protocol::TCP);
        t.insert(k1, rec(FlowState::Established, ms(500)), ms(500)).unwrap();
        t.insert(key(2, protocol::TCP), rec(FlowState::Established, ms(600)), ms(600)).unwrap();
        t.insert(key(3, protocol::UDP), rec(FlowState::Active, ms(700)), ms(700)).unwrap();
        let lru = |t: &FlowTable| *t.iter_lru(TimeoutClass::TcpEstablished).next().unwrap().0;
        // A packet on flow 1 within the LRU granularity does not reorder...
        let at = t.find(&k1).unwrap();
        t.record_mut(at).last_seen = ms(550);
        t.touch(at);
        assert_eq!(lru(&t), k1);
        // ...one a granularity later does: flow 2 becomes the least recently used.
        t.record_mut(at).last_seen = ms(800);
        t.touch(at);
        assert_eq!(lru(&t), key(2, protocol::TCP));
        // An established flow may displace the least recently used flow: the UDP flow first
        // (not established), then flow 2.
        let (_, ev) =
            t.insert(key(4, protocol::TCP), rec(FlowState::Established, ms(900)), ms(900)).unwrap();
        assert_eq!(ev, Some(Eviction::LeastRecentlyUsed));
        assert!(t.get(&key(3, protocol::UDP)).is_none());
        let (_, ev) = t
            .insert(key(5, protocol::TCP), rec(FlowState::Established, ms(1000)), ms(1000))
            .unwrap();
        assert_eq!(ev, Some(Eviction::LeastRecentlyUsed));
        assert!(t.get(&key(2, protocol::TCP)).is_none());
        assert!(t.get(&key(1, protocol::TCP)).is_some());
        t.check_invariants().unwrap();
    }

    #[test]
    fn an_unestablished_flow_never_displaces_an_established_one() {
        let mut t = table(3);
        let ms = |n: u64| n * 10_000;
        t.insert(key(1, protocol::TCP), rec(FlowState::Established, ms(1)), ms(1)).unwrap();
        t.insert(key(2, protocol::TCP), rec(FlowState::Established, ms(2)), ms(2)).unwrap();
        t.insert(key(3, protocol::TCP), rec(FlowState::SynSent, ms(900)), ms(900)).unwrap();
        // The handshake goes, although the established flows are older.
        let (_, ev) =
            t.insert(key(4, protocol::UDP), rec(FlowState::Active, ms(950)), ms(950)).unwrap();
        assert_eq!(ev, Some(Eviction::LeastRecentlyUsed));
        assert!(t.get(&key(3, protocol::TCP)).is_none());
        let (_, ev) =
            t.insert(key(5, protocol::TCP), rec(FlowState::SynReceived, ms(960)), ms(960)).unwrap();
        assert_eq!(ev, Some(Eviction::LeastRecentlyUsed));
        assert!(t.get(&key(4, protocol::UDP)).is_none());
        // Only established flows left besides it: another handshake displaces it, never them.
        let before = t.len();
        t.remove(&key(5, protocol::TCP)).unwrap();
        t.insert(key(6, protocol::TCP), rec(FlowState::Established, ms(970)), ms(970)).unwrap();
        assert_eq!(t.len(), before);
        let hash = t.hash(&key(7, protocol::TCP));
        let r = rec(FlowState::SynSent, ms(980));
        assert_eq!(
            t.insert_with(hash, key(7, protocol::TCP), r, ms(980), Room::SpareEstablished),
            Err(Error::TableFull)
        );
        assert_eq!(t.insert(key(7, protocol::TCP), r, ms(980)), Err(Error::TableFull));
        assert!(t.get(&key(7, protocol::TCP)).is_none());
        // Unless it is idle past its timeout.
        let late = ms(2) + t.config().timeouts.tcp_established;
        let (_, ev) = t.insert(key(7, protocol::TCP), rec(FlowState::SynSent, late), late).unwrap();
        assert_eq!(ev, Some(Eviction::Idle));
        assert!(t.get(&key(1, protocol::TCP)).is_none());
        t.check_invariants().unwrap();
    }

    #[test]
    fn is_expired_follows_the_class_timeout() {
        let mut t = table(4);
        let (at, _) = t.insert(key(1, protocol::UDP), rec(FlowState::Active, 0), 0).unwrap();
        let udp = t.config().timeouts.udp;
        assert!(!t.is_expired(at, udp - 1));
        assert!(t.is_expired(at, udp));
        // A clock reading before the last packet is not idle.
        t.record_mut(at).last_seen = udp * 3;
        assert!(!t.is_expired(at, udp));
        let (at, _) = t.insert(key(2, protocol::TCP), rec(FlowState::Established, 0), 0).unwrap();
        assert!(!t.is_expired(at, udp));
        assert!(t.is_expired(at, t.config().timeouts.tcp_established));
    }

    #[test]
    fn a_flood_never_grows_past_the_bound_or_its_storage() {
        let mut t = table(64);
        for n in 0..32u16 {
            t.insert(key(n, protocol::TCP), rec(FlowState::Established, 1), 1).unwrap();
        }
        for n in 32..64u16 {
            t.insert(key(n, protocol::UDP), rec(FlowState::Active, 1), 1).unwrap();
        }
        let bytes = t.heap_bytes();
        // The slab never grows; the index may grow once when the flood's tombstones first fill
        // it (past that it is at most half full and hashbrown rehashes it in place).
        // tests/alloc_free.rs proves the allocation-free steady state with a counting allocator.
        let mut most = bytes;
        for n in 64..20_000u16 {
            let now = Tick::from(n);
            t.insert(key(n, protocol::TCP), rec(FlowState::SynSent, now), now).unwrap();
            assert_eq!(t.len(), 64);
            most = most.max(t.heap_bytes());
        }
        assert!(t.capacity() <= 64);
        assert!(most <= 2 * bytes, "storage grew from {bytes} to {most} bytes under a flood");
        for n in 0..32u16 {
            assert!(t.get(&key(n, protocol::TCP)).is_some(), "an established flow was evicted");
        }
        t.check_invariants().unwrap();
    }

    #[test]
    fn state_changes_move_flows_between_classes() {
        let mut t = table(4);
        let (at, _) = t.insert(key(1, protocol::TCP), rec(FlowState::SynSent, 1), 1).unwrap();
        t.set_state(at, FlowState::Closed);
        t.check_invariants().unwrap();
        assert_eq!(t.iter_lru(TimeoutClass::Closed).count(), 1);
        assert_eq!(t.iter_lru(TimeoutClass::TcpHandshake).count(), 0);
    }

    proptest::proptest! {
        /// After a sweep with an unlimited budget, no flow is idle for more than its timeout plus
        /// one LRU granularity, and none was removed before its timeout; a budget bounds the work.
        #[test]
        fn a_sweep_leaves_no_flow_idle_past_its_timeout_by_more_than_the_granularity(
            ops in proptest::collection::vec((0u16..48, 0u8..3, 0u64..20_000_000_000), 1..300),
            budget in 1usize..8,
        ) {
            let mut t = table(32);
            let mut now = 0;
            let states = [FlowState::SynSent, FlowState::Established, FlowState::Active];
            for (n, st, dt) in ops {
                now += dt;
                let proto = if st == 2 { protocol::UDP } else { protocol::TCP };
                let k = key(n, proto);
                if let Some(at) = t.find(&k) {
                    t.record_mut(at).last_seen = now;
                    t.touch(at);
                } else {
                    let _ = t.insert(k, rec(states[usize::from(st)], now), now);
                }
            }
            let later = now + 30_000_000_000;
            let snapshot: alloc::vec::Vec<(FlowKey, FlowRecord)> =
                t.iter().map(|(k, r)| (*k, *r)).collect();
            let before = t.len();
            let removed = t.expire(later, budget);
            proptest::prop_assert!(removed <= budget);
            proptest::prop_assert_eq!(t.len(), before - removed);
            t.expire(later, usize::MAX);
            let timeouts = t.config().timeouts;
            let granularity = t.config().lru_granularity;
            for (k, r) in &snapshot {
                if t.get(k).is_none() {
                    let timeout = timeouts.of(TimeoutClass::of(k.protocol, r.state));
                    proptest::prop_assert!(later - r.last_seen >= timeout, "removed a live flow");
                }
            }
            for (k, r) in t.iter() {
                let timeout = timeouts.of(TimeoutClass::of(k.protocol, r.state));
                proptest::prop_assert!(later - r.last_seen < timeout + granularity);
            }
            t.check_invariants().map_err(proptest::test_runner::TestCaseError::fail)?;
        }
    }

    #[test]
    fn expire_removes_only_idle_flows_within_budget() {
        let mut t = table(16);
        let now = secs(1000);
        for n in 0..5 {
            t.insert(key(n, protocol::UDP), rec(FlowState::Active, now - secs(61)), 0).unwrap();
        }
        t.insert(key(9, protocol::UDP), rec(FlowState::Active, now - secs(59)), 0).unwrap();
        assert_eq!(t.expire(now, 3), 3);
        assert_eq!(t.expire(now, 100), 2);
        assert_eq!(t.len(), 1);
        assert!(t.get(&key(9, protocol::UDP)).is_some());
        t.check_invariants().unwrap();
    }

    #[test]
    fn clear_keeps_storage_and_resets_everything() {
        let mut t = table(16);
        for n in 0..10 {
            t.insert(key(n, protocol::UDP), rec(FlowState::Active, 1), 1).unwrap();
        }
        t.clear();
        assert!(t.is_empty());
        t.check_invariants().unwrap();
        t.insert(key(1, protocol::UDP), rec(FlowState::Active, 1), 1).unwrap();
        t.check_invariants().unwrap();
    }

    #[test]
    fn past_the_budget_a_new_flow_recycles_its_tables_unestablished_flows_or_is_refused() {
        let budget: &'static FlowBudget =
            alloc::boxed::Box::leak(alloc::boxed::Box::new(FlowBudget::new(0)));
        let config = TableConfig {
            max_flows: 1024,
            initial_capacity: 64,
            budget: Some(BudgetRef(budget)),
            ..TableConfig::default()
        };
        let mut t = FlowTable::try_new(config).unwrap();
        // The first storage is charged past the (zero) limit: a port is never left untracked.
        assert_eq!(budget.used(), t.heap_bytes());
        assert_eq!(budget.overdraft(), t.heap_bytes() as u64);
        for n in 0..64 {
            t.insert(key(n, protocol::TCP), rec(FlowState::Established, 1), 1).unwrap();
        }
        let used = budget.used();
        // A handshake needs a growth step: refused, nothing established is displaced.
        let r = rec(FlowState::SynSent, 2);
        assert_eq!(t.insert(key(100, protocol::TCP), r, 2), Err(Error::OverBudget));
        assert_eq!((t.len(), budget.used(), budget.refused()), (64, used, 1));
        // An unestablished flow of the table's own is recycled instead, as at the bound.
        t.remove(&key(0, protocol::TCP)).unwrap();
        t.insert(key(100, protocol::TCP), r, 2).unwrap();
        let (_, ev) = t.insert(key(101, protocol::UDP), rec(FlowState::Active, 3), 3).unwrap();
        assert_eq!(ev, Some(Eviction::LeastRecentlyUsed), "the handshake made room");
        assert!(t.get(&key(100, protocol::TCP)).is_none());
        t.check_invariants().unwrap();
        // A restore's storage is charged past the limit; everything is given back on drop.
        t.reserve(200).unwrap();
        assert!(t.capacity() >= 264 && budget.used() == t.heap_bytes());
        drop(t);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn linear_hashing_keeps_one_bucket_per_flow_through_growth_and_removal() {
        let mut t = table(4096);
        for n in 0..3000 {
            t.insert(key(n, protocol::UDP), rec(FlowState::Active, 1), 1).unwrap();
        }
        assert!(t.buckets() >= 3000 && t.buckets() <= 4096, "{} buckets", t.buckets());
        t.check_invariants().unwrap();
        for n in (0..3000).step_by(3) {
            assert!(t.remove(&key(n, protocol::UDP)).is_some());
        }
        for n in 0..3000 {
            assert_eq!(t.get(&key(n, protocol::UDP)).is_some(), n % 3 != 0, "flow {n}");
        }
        t.check_invariants().unwrap();
        t.clear();
        t.check_invariants().unwrap();
        assert!(t.get(&key(1, protocol::UDP)).is_none());
    }

    #[test]
    fn a_bulk_insert_into_reserved_room_splits_nothing_and_matches_one_by_one_inserts() {
        let mut bulk = table(4096);
        let mut one = table(4096);
        bulk.reserve(3000).unwrap();
        let buckets = bulk.buckets();
        assert_eq!(buckets, 3000, "split ahead to a bucket per flow");
        let bytes = bulk.heap_bytes();
        for n in 0..3000u16 {
            let (k, r) = if n % 3 == 0 {
                (key(n, protocol::UDP), rec(FlowState::Active, u64::from(n)))
            } else {
                (key(n, protocol::TCP), rec(FlowState::Established, u64::from(n)))
            };
            let hash = bulk.hash(&k);
            let at = bulk.insert_unique(hash, &k, u64::from(n), |d| *d = r).unwrap();
            assert!(at.is_some());
            let again = bulk.insert_unique(hash, &k, u64::from(n), |_| unreachable!()).unwrap();
            assert!(again.is_none(), "a duplicate");
            one.insert(k, r, u64::from(n)).unwrap();
        }
        assert_eq!((bulk.buckets(), bulk.heap_bytes()), (buckets, bytes), "nothing grew or split");
        bulk.check_invariants().unwrap();
        for class in TimeoutClass::ALL {
            assert!(bulk.iter_lru(class).eq(one.iter_lru(class)), "{class:?}: the same LRU order");
        }
        // Past the reserved room: an ordinary insert (growth, splits, eviction at the bound).
        for n in 3000..5000u16 {
            let k = key(n, protocol::TCP);
            let r = rec(FlowState::Established, u64::from(n));
            let hash = bulk.hash(&k);
            assert!(bulk.insert_unique(hash, &k, u64::from(n), |d| *d = r).unwrap().is_some());
        }
        assert_eq!(bulk.len(), 4096);
        bulk.check_invariants().unwrap();
    }

    #[test]
    fn a_bulk_insert_grows_the_slab_a_segment_at_a_time_charged_past_the_budget() {
        // A budget with no room at all: a restore's carried flows are charged past it.
        let budget: &'static FlowBudget =
            alloc::boxed::Box::leak(alloc::boxed::Box::new(FlowBudget::new(0)));
        let config = TableConfig {
            max_flows: 4096,
            initial_capacity: 64,
            budget: Some(BudgetRef(budget)),
            ..TableConfig::default()
        };
        let mut bulk = FlowTable::try_new(config).unwrap();
        let mut one = table(4096);
        bulk.reserve_index(1000).unwrap();
        assert_eq!((bulk.buckets(), bulk.capacity()), (1000, 64), "index split ahead, slab not");
        for n in 0..1000u16 {
            let k = key(n, protocol::TCP);
            let r = rec(FlowState::Established, u64::from(n));
            let hash = bulk.hash(&k);
            let at = bulk.insert_unique(hash, &k, u64::from(n), |d| *d = r).unwrap();
            assert!(at.is_some(), "flow {n} placed");
            // The slab holds what was placed, rounded up to its next segment of 64.
            assert_eq!(bulk.capacity(), (usize::from(n) / 64 + 1) * 64, "flow {n}");
            one.insert(k, r, u64::from(n)).unwrap();
        }
        assert_eq!(bulk.buckets(), 1000, "nothing split");
        assert_eq!(budget.used(), bulk.heap_bytes(), "every segment charged");
        assert_eq!(budget.refused(), 0, "a restore's flows are never refused");
        bulk.check_invariants().unwrap();
        for class in TimeoutClass::ALL {
            assert!(bulk.iter_lru(class).eq(one.iter_lru(class)), "{class:?}: the same LRU order");
        }
        // A duplicate is refused with the table unchanged.
        let k = key(7, protocol::TCP);
        let hash = bulk.hash(&k);
        assert_eq!(bulk.insert_unique(hash, &k, 9, |_| unreachable!()), Ok(None));
        assert_eq!(bulk.len(), 1000);
        bulk.check_invariants().unwrap();
        drop(bulk);
        assert_eq!(budget.used(), 0, "given back");
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let bad = |c: TableConfig| FlowTable::try_new(c).err();
        assert!(matches!(
            bad(TableConfig { max_flows: 0, ..TableConfig::default() }),
            Some(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            bad(TableConfig { max_flows: MAX_FLOWS_LIMIT + 1, ..TableConfig::default() }),
            Some(Error::InvalidConfig(_))
        ));
        let timeouts = Timeouts { udp: 0, ..Timeouts::default() };
        assert!(matches!(
            bad(TableConfig { timeouts, ..TableConfig::default() }),
            Some(Error::InvalidConfig(_))
        ));
    }
}
