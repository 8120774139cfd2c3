//! The encoder: a port's state to bytes, within the size cap (format 1.1).
//!
//! Budget order when not everything fits: the header, identity, mode, counters and save
//! information always; then the NIC identity; then as many rules as fit; then every flow
//! exactly if they all fit (with per-flow counters if those fit too); otherwise a 32-bit
//! fingerprint for every established TCP connection, the rest of the budget upgrading the most
//! valuable flows to exact records; if even the fingerprints do not all fit, the most recently
//! active established connections are fingerprinted and the rest are lost (counted).
//!
//! Past the cap (issue 18: 20,000 connections, p99 <= 1 ms) the save does no work over all
//! flows but reading them once: `plan_upgrades` ranks only the candidates an upgrade can
//! still reach (selection, not a sort of every flow), sorts the fingerprint values alone by
//! one distribution pass, resolves colliding values with exact records instead of rehashing
//! every connection under another salt, and takes each connection's fingerprint from the
//! port's encoder when an earlier save computed it (`FpCache`).

mod exact;

use alloc::vec::Vec;
use core::hash::BuildHasher;

use foldhash::fast::FixedState;
use hashbrown::HashTable;
use siphasher::sip::SipHasher13;

use super::Encoder;
use super::format::{self, compact, hdr, rec};
use super::{PortState, SavedFlow, crc32c, rice};
use crate::counters::PortCounters;
use crate::error::Error;
use crate::flow::{Admission, FlowKey, FlowState, TimeoutClass};
use crate::guid::Guid;
use crate::keys::{self, Purpose};
use crate::packet::{IpFamily, protocol};
use crate::policy::{AllowRule, Mode, RuleSet};
use crate::port::{Port, PortIdentity};
use crate::time::{TICKS_PER_SECOND, Tick};

/// Encoder settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeConfig {
    /// Provider GUID written into the header (the vSwitch subscription's providerGuid).
    pub provider: Guid,
    /// Largest blob to produce, in bytes (default [`super::DEFAULT_CAP`]).
    pub cap: usize,
}

/// What one encode produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeSummary {
    /// Blob length.
    pub len: usize,
    /// Flows written as exact records.
    pub flows_written: u32,
    /// Flows carried by neither an exact record nor a fingerprint (lost to the cap).
    pub flows_dropped: u32,
    /// Established connections carried as fingerprints.
    pub flows_fingerprinted: u32,
    /// Allow rules left out because even they did not fit the cap.
    pub rules_dropped: u32,
}

/// Where the encoder gets a port's contents: a live [`Port`] or a decoded [`PortState`].
pub(super) trait Source {
    fn identity(&self) -> &PortIdentity;
    fn nic(&self) -> Option<&PortIdentity>;
    fn mode(&self) -> Mode;
    fn rules(&self) -> &RuleSet;
    fn counters(&self) -> PortCounters;
    /// True for a live port's save: the blob's counters count the save itself
    /// (`Port::note_saved` then counts it on the source the same way).
    fn is_save(&self) -> bool;
    /// Appends every flow to `out`, oldest activity first where the source knows it.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`].
    fn flows(&self, out: &mut Vec<SavedFlow>) -> Result<(), Error>;
    /// A fresh fingerprint salt (a live port's encoder keeps the first it draws past the cap).
    fn salt(&self) -> [u64; 2];
    /// A key for the encoder's address hashing: derived from the port's per-boot random seed
    /// for that purpose ([`crate::keys`]), so peers cannot aim their addresses at one run of
    /// slots.
    fn hash_seed(&self) -> u64;
    /// Fingerprints the source already carries, kept as they are: a decoded state's, or the
    /// ones a live port's restore armed that no connection has used yet (a second migration
    /// before the VM's traffic resumed carries them on). Appends them (sorted, distinct) to
    /// `out`; returns their salt, `None` if there are none.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`].
    fn carried(&self, out: &mut Vec<u32>) -> Result<Option<[u64; 2]>, Error>;
    /// Connections `n` carried fingerprints stand for.
    fn carried_count(&self, n: usize) -> usize;
    /// A live port and the save instant: its flows are read from its table directly when
    /// they all fit exactly ([`exact`]).
    fn live(&self) -> Option<(&Port, Tick)> {
        None
    }
    /// A live port (whole or split): past the cap its flows are planned from its tables'
    /// slots ([`plan_past_live`]).
    fn as_live(&self) -> Option<&LivePort<'_>> {
        None
    }
}

/// A live port: its home shard `port` and, while it is split, its processors' shards
/// (`vsflow_core::port::shards`; every lock held by the caller). A save reads the shards in
/// place: the blob is the one the port merged into its home shard would give (the flows of
/// each timeout class taken oldest first across the shards, in the order `shards::merge`
/// places them, its counters summed as it sums them), without the merge's new table, so every
/// flow keeps its slot and the encoder's fingerprints kept by slot stay valid (review-s4 L4).
pub(super) struct LivePort<'a> {
    pub(super) port: &'a Port,
    pub(super) shards: &'a [Option<&'a Port>],
    pub(super) now: Tick,
}

/// Tables a live port's flows are read from: the home shard's and each processor shard's.
pub(super) const TABLES: usize = crate::port::shards::MAX_SHARDS + 1;
/// A flow's place for the encoder's kept fingerprints: its table in the bits from here up,
/// its slot below.
const TABLE_SHIFT: u32 = 24;

/// Leaves of the tournament a split port's flows are merged by (a power of two, at least
/// [`TABLES`]).
const TREE_LEAVES: usize = TABLES.next_power_of_two();

/// What [`LivePort::visit`] calls with each flow: its table, slot, key and record.
type Visitor<'v> =
    dyn FnMut(usize, u32, &FlowKey, &crate::flow::FlowRecord) -> Result<(), Error> + 'v;

/// The list bits of a merge key ([`head_key`]).
const HEAD_LIST: u64 = 0xf;
const _: () = assert!(TABLES as u64 <= HEAD_LIST);

/// A list head's key in the merge of a split port's lists ([`LivePort::visit`]): its last
/// activity above, its list (`< TABLES`) in the low 4 bits, so one `u64` comparison orders two
/// heads as `shards::merge` does (older first, ties to the earlier list). An instant past
/// 2^60 ticks (3,650 years of uptime at 10 MHz) counts as 2^60 - 1; `u64::MAX` stays a
/// finished list's.
#[allow(clippy::cast_possible_truncation, reason = "list < TABLES")]
const fn head_key(last_seen: Tick, list: usize) -> u64 {
    let t = if last_seen < (1 << 60) - 1 { last_seen } else { (1 << 60) - 1 };
    (t << 4) | (list as u64 & HEAD_LIST)
}

/// The table and the slot of a place [`Source::flows`] gives.
const fn slot_table(at: u32) -> (usize, usize) {
    ((at >> TABLE_SHIFT) as usize, (at & ((1 << TABLE_SHIFT) - 1)) as usize)
}

impl<'a> LivePort<'a> {
    /// A whole port (not split).
    pub(super) const fn whole(port: &'a Port, now: Tick) -> Self {
        Self { port, shards: &[], now }
    }

    /// Each table with its number ([`slot_table`]).
    fn tables(&self) -> impl Iterator<Item = (usize, &'a crate::flow::FlowTable)> + '_ {
        core::iter::once((0, &self.port.table))
            .chain(self.shards.iter().enumerate().filter_map(|(i, p)| p.map(|p| (i + 1, &p.table))))
    }

    /// The port's flows, every shard's.
    fn len(&self) -> usize {
        self.tables().map(|(_, t)| t.len()).sum()
    }

    /// Calls `visit` with every flow (its table, [`slot_table`], its slot, key and record) in
    /// the order the merged port's home shard would hold them: each timeout class least
    /// recently used first, a split port's shards merged as `shards::merge` merges them.
    ///
    /// # Errors
    /// What `visit` returns (the walk stops there).
    ///
    /// (The visitor is a `dyn` and the walk out of line: one copy of the walk's code for both
    /// its callers; the driver image has a size budget.)
    #[allow(clippy::too_many_lines, reason = "one table, or the shards' lists merged")]
    #[inline(never)]
    fn visit(&self, visit: &mut Visitor<'_>) -> Result<(), Error> {
        if self.in_home() {
            for class in TimeoutClass::ALL {
                for (i, k, r) in self.port.table.iter_lru_slots(class) {
                    visit(0, i, k, r)?;
                }
            }
            return Ok(());
        }
        // Split: each class oldest first across the shards, ties to the earlier table, as
        // `shards::merge` places them in the home shard's new table: each step takes the
        // smallest of the lists' heads by (last seen, list), a list's key u64::MAX once it is
        // done (a scan of the heads through peekable iterators cost three times the single
        // table's walk, a plain scan of the nine keys still twice). A key is the instant in
        // its high 60 bits (`head_key`), the list below.
        #[allow(clippy::cast_possible_truncation, reason = "at < TABLES")]
        for class in TimeoutClass::ALL {
            let mut lists: [Option<_>; TABLES] = Default::default();
            let mut heads = [u64::MAX; TABLES];
            let mut used = 0;
            for (t, table) in self.tables() {
                let mut it = table.iter_lru_slots(class);
                if let Some(first) = it.next()
                    && let (Some(list), Some(head)) = (lists.get_mut(used), heads.get_mut(used))
                {
                    *head = head_key(first.2.last_seen, used);
                    *list = Some((t, first, it));
                    used += 1;
                }
            }
            // A tournament over the lists' head keys (a loser tree): node `i` (from 1) holds
            // the larger of the two keys that met there, the leaves (from `width`) the heads,
            // `best` the smallest; a step replays the taken list's path only, one comparison
            // a level (three for eight shards).
            let width = used.next_power_of_two();
            let mut won = [u64::MAX; 2 * TREE_LEAVES];
            for (leaf, &h) in won.iter_mut().skip(width).zip(heads.iter().take(used)) {
                *leaf = h;
            }
            let mut lost = [u64::MAX; TREE_LEAVES];
            for node in (1..width).rev() {
                let a = won.get(2 * node).copied().unwrap_or(u64::MAX);
                let b = won.get(2 * node + 1).copied().unwrap_or(u64::MAX);
                if let (Some(w), Some(l)) = (won.get_mut(node), lost.get_mut(node)) {
                    (*w, *l) = (a.min(b), a.max(b));
                }
            }
            // (One list: its leaf is node 1.)
            let mut best = won.get(1).copied().unwrap_or(u64::MAX);
            while best != u64::MAX {
                let at = (best & HEAD_LIST) as usize;
                let Some(Some((t, (slot, k, r), it))) = lists.get_mut(at) else { break };
                visit(*t, *slot, k, r)?;
                let mut key = match it.next() {
                    Some(next) => {
                        (*slot, *k, *r) = next;
                        head_key(next.2.last_seen, at)
                    }
                    None => u64::MAX,
                };
                let leaf = width + at;
                let mut node = leaf / 2;
                while node > 0 {
                    if let Some(l) = lost.get_mut(node)
                        && *l < key
                    {
                        core::mem::swap(l, &mut key);
                    }
                    node /= 2;
                }
                best = key;
            }
        }
        Ok(())
    }

    /// Every flow is in the home shard (the port is whole, or split with nothing moved yet).
    fn in_home(&self) -> bool {
        self.shards.iter().flatten().all(|p| p.table.is_empty())
    }
}

impl Source for LivePort<'_> {
    fn identity(&self) -> &PortIdentity {
        &self.port.identity
    }
    fn nic(&self) -> Option<&PortIdentity> {
        self.port.nic.as_ref()
    }
    fn mode(&self) -> Mode {
        self.port.mode
    }
    fn rules(&self) -> &RuleSet {
        &self.port.rules
    }
    fn counters(&self) -> PortCounters {
        // As `shards::merge` sums them into the home shard's.
        self.shards.iter().flatten().fold(self.port.counters, |c, p| c.saturating_add(&p.counters))
    }
    fn is_save(&self) -> bool {
        true
    }
    fn flows(&self, out: &mut Vec<SavedFlow>) -> Result<(), Error> {
        out.try_reserve(self.len())?;
        // Class by class, least recently used first: the decoder's recency sort then sees
        // long sorted runs. (A save past the cap reads the tables' slots instead:
        // [`plan_past_live`]; this copy serves the rest.)
        // The key field by field: copied whole it went through the stack in pieces that the
        // push re-read with wider loads (a store-forwarding stall per flow).
        let key = |k: &FlowKey| FlowKey {
            family: k.family,
            protocol: k.protocol,
            local_addr: k.local_addr,
            remote_addr: k.remote_addr,
            local_port: k.local_port,
            remote_port: k.remote_port,
        };
        self.visit(&mut |_, _, k, r| {
            // Reserved above: always true. Pushing only within the capacity lets the record be
            // built in place (with a growth path the value went through the stack and was
            // re-read with wide loads: another stall).
            if out.len() < out.capacity() {
                out.push(SavedFlow::from_record(key(k), r, self.now));
            }
            Ok(())
        })
    }
    fn hash_seed(&self) -> u64 {
        // The address index's own key (crate::keys), not the port's seed.
        keys::derive(self.port.table.config().hash_seed, Purpose::AddressIndex)
    }
    fn salt(&self) -> [u64; 2] {
        // Random without a random source in the core: SipHash keyed by a key derived from the
        // port's per-boot random seed for this purpose (crate::keys) over the instant, the save
        // count and the port's name. A peer knows neither the key nor the salt. The port's encoder keeps
        // the salt its first save past the cap drew for its later saves (`FpCache`;
        // docs/runtime-state-format.md, "Fingerprints").
        let [k0, k1] =
            keys::derive128(self.port.table.config().hash_seed, Purpose::FingerprintSalt);
        let mut msg = [0u8; 17];
        for (d, s) in msg
            .iter_mut()
            .zip(self.now.to_le_bytes().iter().chain(self.port.counters.saves.to_le_bytes().iter()))
        {
            *d = *s;
        }
        // And the port's name: the sweep readies every port's encoder at one instant
        // (`Encoder::prepare`), where ports not saved yet have one save count.
        let name = self.port.identity.as_utf16();
        let h = |lane: u8| {
            let mut m = msg;
            if let Some(last) = m.last_mut() {
                *last = lane;
            }
            let mut s = SipHasher13::new_with_keys(k0, k1);
            core::hash::Hasher::write(&mut s, &m);
            for &u in name {
                core::hash::Hasher::write_u16(&mut s, u);
            }
            core::hash::Hasher::finish(&s)
        };
        [h(0), h(1)]
    }
    fn carried(&self, out: &mut Vec<u32>) -> Result<Option<[u64; 2]>, Error> {
        let pickup = &self.port.pickup;
        if !pickup.is_armed(self.now) {
            return Ok(None);
        }
        // Counted first, so that the extend below never allocates.
        let n = pickup.pending().count();
        if n == 0 {
            return Ok(None);
        }
        out.try_reserve_exact(n)?;
        out.extend(pickup.pending());
        Ok(Some(pickup.set().salt()))
    }
    fn carried_count(&self, n: usize) -> usize {
        // Each pending value stands for one connection that has not resumed.
        n
    }
    fn live(&self) -> Option<(&Port, Tick)> {
        // The at-cap path reads one table: a split port's flows go through saved records.
        self.in_home().then_some((self.port, self.now))
    }
    fn as_live(&self) -> Option<&LivePort<'_>> {
        Some(self)
    }
}

impl Source for PortState {
    fn identity(&self) -> &PortIdentity {
        &self.identity
    }
    fn nic(&self) -> Option<&PortIdentity> {
        self.nic.as_ref()
    }
    fn mode(&self) -> Mode {
        self.mode
    }
    fn rules(&self) -> &RuleSet {
        &self.rules
    }
    fn counters(&self) -> PortCounters {
        self.counters
    }
    fn is_save(&self) -> bool {
        false
    }
    fn flows(&self, out: &mut Vec<SavedFlow>) -> Result<(), Error> {
        out.try_reserve(self.flows.len())?;
        out.extend_from_slice(&self.flows);
        Ok(())
    }
    fn hash_seed(&self) -> u64 {
        // Tools and tests: any fixed key (the blob does not depend on it).
        0x5653_464c_4449_4354
    }
    fn salt(&self) -> [u64; 2] {
        if !self.fingerprints.is_empty() {
            return self.fingerprints.salt();
        }
        // Tools and tests: deterministic, so fixtures reproduce byte for byte.
        let mut h = SipHasher13::new_with_keys(0x5653_464c, self.flows.len() as u64);
        core::hash::Hasher::write(&mut h, &self.identity.as_utf16().len().to_le_bytes());
        let a = core::hash::Hasher::finish(&h);
        [a, a.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15]
    }
    fn carried(&self, out: &mut Vec<u32>) -> Result<Option<[u64; 2]>, Error> {
        if self.fingerprints.is_empty() {
            return Ok(None);
        }
        out.try_reserve_exact(self.fingerprints.len())?;
        out.extend_from_slice(self.fingerprints.values());
        Ok(Some(self.fingerprints.salt()))
    }
    fn carried_count(&self, n: usize) -> usize {
        if n == 0 { 0 } else { self.save_info.flows_fingerprinted as usize }
    }
}

/// Encodes a live port as of `now` into `out` (cleared first; its allocation is reused).
///
/// The blob never exceeds `config.cap`. See the module docs for what is kept when not
/// everything fits; the summary and the blob's save information count what was left out.
///
/// # Errors
/// [`Error::CapTooSmall`] if even a blob without rules and flows exceeds the cap (under
/// 1 KiB, below the driver's configurable minimum); [`Error::OutOfMemory`]. `out` is left
/// empty on error.
pub fn encode(
    port: &Port,
    now: Tick,
    config: &EncodeConfig,
    out: &mut Vec<u8>,
) -> Result<EncodeSummary, Error> {
    Encoder::new().encode(port, now, config, out)
}

/// Encodes a [`PortState`] (tools, fixtures, tests).
///
/// The state's `save_info` is replaced by what this encode does; its `minor` is ignored (this
/// build writes [`format::MINOR`]). Fingerprints the state carries are written again if they
/// fit.
///
/// # Errors
/// As [`encode`].
pub fn encode_state(
    state: &PortState,
    config: &EncodeConfig,
    out: &mut Vec<u8>,
) -> Result<EncodeSummary, Error> {
    Encoder::new().encode_state(state, config, out)
}

/// Writes the blob of a port the source host has no state for ([`format::FLAG_NO_STATE`]).
///
/// No policy, no flows, the reason ([`format::no_state`]). The destination then keeps or
/// closes its own policy; it never installs one the source did not have.
///
/// # Errors
/// [`Error::OutOfMemory`].
pub fn encode_no_state(
    identity: &PortIdentity,
    reason: u8,
    provider: Guid,
    out: &mut Vec<u8>,
) -> Result<usize, Error> {
    out.clear();
    let units = identity.as_utf16();
    let len = format::HEADER_LEN
        + 2 * units.len()
        + format::RECORD_HEADER_LEN
        + format::NO_STATE_LEN
        + format::TRAILER_LEN;
    out.try_reserve_exact(len)?;
    let mut w = Writer { out };
    w.bytes(&format::MAGIC);
    w.u16(format::MAJOR);
    w.u16(format::MINOR);
    #[allow(clippy::cast_possible_truncation, reason = "HEADER_LEN is 40")]
    w.u16(format::HEADER_LEN as u16);
    w.u16(format::FLAG_NO_STATE);
    w.u32(u32::try_from(len).unwrap_or(u32::MAX));
    w.bytes(&provider.to_bytes());
    w.u32(1);
    #[allow(clippy::cast_possible_truncation, reason = "identity is at most 256 units")]
    w.u16(units.len() as u16);
    w.u16(0);
    for &u in units {
        w.u16(u);
    }
    w.record(rec::NO_STATE, format::NO_STATE_LEN);
    w.bytes(&[reason, 0, 0, 0]);
    let crc = crc32c(w.out);
    w.u32(crc);
    Ok(len)
}

/// Bytes of an unsigned LEB128 varint.
pub(super) const fn varint_len(v: u64) -> usize {
    let bits = 64 - v.leading_zeros() as usize;
    if bits == 0 { 1 } else { bits.div_ceil(7) }
}

const fn addr_len(family: IpFamily) -> usize {
    match family {
        IpFamily::V4 => 4,
        IpFamily::V6 => 16,
    }
}

const fn family_slot(family: IpFamily) -> usize {
    match family {
        IpFamily::V4 => 0,
        IpFamily::V6 => 1,
    }
}

/// Largest dictionary (its count is a u16).
const MAX_DICT: usize = u16::MAX as usize;

/// No dictionary index: a remote written literally, or a local address that did not fit.
const NONE: u32 = u32::MAX;

/// The address dictionaries of a list of flows, one per family (locals first, then remotes
/// that at least two flows share, each in first-seen order), and every flow's indexes into
/// its family's dictionary. Built in two passes with one hash lookup per flow (consecutive
/// flows of one VM address skip even that).
///
/// Kept in an [`super::Encoder`] across saves: [`Dicts::build`] clears it and reuses every
/// allocation, so a save of a port no larger than the previous one allocates nothing here.
#[derive(Debug, Default)]
pub(super) struct Dicts {
    addrs: [Vec<[u8; 16]>; 2],
    lays: [Layout; 2],
    /// Per flow: (local index or NONE, remote index or NONE).
    idx: Vec<(u32, u32)>,
    local_index: [HashTable<u32>; 2],
    /// Distinct remotes per family in first-seen order: address, uses, dictionary index.
    remotes: [Vec<([u8; 16], u32, u32)>; 2],
    /// Per family: remote address -> its position in `remotes`.
    remote_index: [AddrIndex; 2],
}

/// A map from addresses to ids for one dictionary build: open addressing with linear probing,
/// at most half full, keyed by the port's per-boot seed (remote addresses are the peers'
/// choice: they cannot aim them at one run of slots). A slot belongs to the current build
/// only if it carries the build's generation, so a new build reuses the slots without
/// clearing them.
#[derive(Debug, Default)]
struct AddrIndex {
    slots: Vec<AddrSlot>,
    /// Slots in use by this build (a power of two, at most `slots.len()`) minus one.
    mask: usize,
    generation: u32,
    hasher: FixedState,
}

/// 12 bytes: the address itself is the caller's (`id` indexes it), so the index stays small
/// enough for the cache (a 4,096-flow save probes 96 KiB, not 256).
#[derive(Clone, Copy, Debug, Default)]
struct AddrSlot {
    /// The address's hash's high 32 bits: most different addresses differ here.
    tag: u32,
    generation: u32,
    id: u32,
}

impl AddrIndex {
    /// Starts a build of at most `n` addresses under `seed`.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`].
    fn reset(&mut self, n: usize, seed: u64) -> Result<(), Error> {
        let want = n.saturating_mul(2).next_power_of_two().max(16);
        self.size_for(n)?;
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // Wrapped: every stamp could look current; clear them once.
            for slot in &mut self.slots {
                slot.generation = 0;
            }
            self.generation = 1;
        }
        self.mask = want - 1;
        self.hasher = FixedState::with_seed(seed);
        Ok(())
    }

    /// The id of `addr`, or `id` if it is new (then recorded): (the id, whether new). At most
    /// `n` (of [`AddrIndex::reset`]) distinct addresses per build. `known(j)` is the address
    /// recorded under id `j` (the caller keeps them).
    fn find_or_insert(
        &mut self,
        addr: &[u8; 16],
        id: u32,
        known: impl Fn(u32) -> Option<[u8; 16]>,
    ) -> (u32, bool) {
        let h = self.hasher.hash_one(u128::from_ne_bytes(*addr));
        #[allow(clippy::cast_possible_truncation, reason = "a hash, masked")]
        let mut i = h as usize & self.mask;
        let tag = (h >> 32) as u32;
        // At most half full: an empty slot comes before the probe wraps around.
        for _ in 0..=self.mask {
            let Some(slot) = self.slots.get_mut(i) else { break };
            if slot.generation != self.generation {
                *slot = AddrSlot { tag, generation: self.generation, id };
                return (id, true);
            }
            if slot.tag == tag && known(slot.id).as_ref() == Some(addr) {
                return (slot.id, false);
            }
            i = (i + 1) & self.mask;
        }
        (NONE, false)
    }

    fn heap_bytes(&self) -> usize {
        self.slots.capacity() * core::mem::size_of::<AddrSlot>()
    }

    /// Sizes the slots for builds of up to `n` addresses ([`AddrIndex::reset`] then
    /// allocates nothing).
    ///
    /// # Errors
    /// [`Error::OutOfMemory`].
    fn size_for(&mut self, n: usize) -> Result<(), Error> {
        let want = n.saturating_mul(2).next_power_of_two().max(16);
        if self.slots.len() < want {
            self.slots.clear();
            self.slots.try_reserve_exact(want)?;
            self.slots.resize(want, AddrSlot::default());
            self.generation = 0;
        }
        Ok(())
    }
}

/// The dictionary index of local address `a` (added to `dict` if new), NONE once the
/// dictionary is full.
///
/// # Errors
/// [`Error::OutOfMemory`].
fn local_id(dict: &mut Vec<[u8; 16]>, li: &mut HashTable<u32>, a: [u8; 16]) -> Result<u32, Error> {
    let h = addr_hash(&a);
    if let Some(&i) = li.find(h, |&j| dict.get(j as usize) == Some(&a)) {
        return Ok(i);
    }
    if dict.len() >= MAX_DICT {
        return Ok(NONE);
    }
    #[allow(clippy::cast_possible_truncation, reason = "below MAX_DICT")]
    let i = dict.len() as u32;
    dict.try_reserve(1)?;
    dict.push(a);
    let rehash = |j: &u32| dict.get(*j as usize).map_or(0, addr_hash);
    li.try_reserve(1, rehash)?;
    li.insert_unique(h, i, rehash);
    Ok(i)
}

/// The dictionaries' hash: fixed (their order is first-seen, not hash order, so the hash
/// never shows in a blob). An address hashes as one `u128`.
fn addr_hash(a: &[u8; 16]) -> u64 {
    FixedState::with_seed(7).hash_one(u128::from_ne_bytes(*a))
}

impl Dicts {
    /// Builds the dictionaries of `flows` (with `remotes` false, the local addresses only:
    /// every flow's remote is then written literally, which is what the plan's over-the-cap
    /// costs assume).
    #[allow(
        clippy::too_many_lines,
        clippy::many_single_char_names,
        reason = "two passes over the flows; f family, a/r addresses, h hash, i/j indexes"
    )]
    fn build(&mut self, flows: &[SavedFlow], remotes: bool, seed: u64) -> Result<(), Error> {
        self.clear();
        let Self { addrs, lays: _, idx, local_index, remotes: rems_all, remote_index } = self;
        idx.try_reserve(flows.len())?;
        if remotes {
            // Room for every flow having a distinct remote: no growth while building.
            let v4 = flows.iter().filter(|s| s.key.family == IpFamily::V4).count();
            for (f, n) in [(0, v4), (1, flows.len() - v4)] {
                if let (Some(rems), Some(ri)) = (rems_all.get_mut(f), remote_index.get_mut(f)) {
                    rems.try_reserve(n)?;
                    ri.reset(n, seed)?;
                }
            }
        }
        let mut last_local: Option<(usize, [u8; 16], u32)> = None;
        // Pass 1: locals into the dictionaries, remotes counted.
        for s in flows {
            let f = family_slot(s.key.family);
            let (Some(dict), Some(li), Some(rems), Some(ri)) = (
                addrs.get_mut(f),
                local_index.get_mut(f),
                rems_all.get_mut(f),
                remote_index.get_mut(f),
            ) else {
                continue;
            };
            let a = s.key.local_addr;
            let local = match last_local {
                Some((lf, la, i)) if lf == f && la == a => i,
                _ => {
                    let i = local_id(dict, li, a)?;
                    last_local = Some((f, a, i));
                    i
                }
            };
            if !remotes {
                idx.push((local, NONE));
                continue;
            }
            let r = s.key.remote_addr;
            let next = u32::try_from(rems.len()).unwrap_or(NONE);
            let (rid, new) = ri.find_or_insert(&r, next, |j| rems.get(j as usize).map(|x| x.0));
            if new {
                // Reserved above: no growth.
                rems.push((r, 1, NONE));
            } else if let Some(x) = rems.get_mut(rid as usize) {
                x.1 += 1;
            }
            idx.push((local, rid));
        }
        let locals = [addrs[0].len(), addrs[1].len()];
        if remotes {
            self.adopt_shared_remotes()?;
            let Self { idx, remotes: rems_all, .. } = self;
            for (s, slot) in flows.iter().zip(idx.iter_mut()) {
                let f = family_slot(s.key.family);
                slot.1 = rems_all
                    .get(f)
                    .and_then(|rems| rems.get(slot.1 as usize))
                    .map_or(NONE, |x| x.2);
            }
        }
        self.set_layouts(locals);
        Ok(())
    }

    /// [`Dicts::build`] without remotes and without the flows' indexes, a flow at a time (in
    /// the source's order; `last` the previous flow's local address, its family and index,
    /// `None` at the first): its local address joins the dictionary. [`Dicts::local`] then
    /// finds a flow's index; [`Dicts::finish_locals`] ends the build.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`].
    #[inline]
    fn add_local(
        &mut self,
        family: IpFamily,
        a: [u8; 16],
        last: &mut Option<(usize, [u8; 16], u32)>,
    ) -> Result<(), Error> {
        let f = family_slot(family);
        if let Some((lf, la, _)) = *last
            && lf == f
            && u128::from_ne_bytes(la) == u128::from_ne_bytes(a)
        {
            return Ok(());
        }
        let (Some(dict), Some(li)) = (self.addrs.get_mut(f), self.local_index.get_mut(f)) else {
            return Ok(());
        };
        let i = local_id(dict, li, a)?;
        *last = Some((f, a, i));
        Ok(())
    }

    /// Flow `i`'s local index (`s` the flow): from the flows' indexes when the build made
    /// them, else found in the dictionary ([`Dicts::add_local`]); NONE if it did not fit.
    #[inline]
    fn local(&self, i: u32, s: &SavedFlow) -> u32 {
        if let Some(&(local, _)) = self.idx.get(i as usize) {
            return local;
        }
        let f = family_slot(s.key.family);
        let a = s.key.local_addr;
        match (self.addrs.get(f), self.local_index.get(f)) {
            (Some(dict), Some(li)) => li
                .find(addr_hash(&a), |&j| dict.get(j as usize) == Some(&a))
                .copied()
                .unwrap_or(NONE),
            _ => NONE,
        }
    }

    /// Ends a build made by [`Dicts::add_local`]: the index widths.
    fn finish_locals(&mut self) {
        self.set_layouts([self.addrs[0].len(), self.addrs[1].len()]);
    }

    /// After the locals and the remotes' counts (`remotes`, first-seen order): remotes used
    /// twice or more join the dictionary (once costs less as a literal), in the order of the
    /// first flow using each, while it has room; each remote's third field becomes its
    /// dictionary index (or stays NONE). Returns, per family, the flows whose remote is then
    /// written as an index.
    fn adopt_shared_remotes(&mut self) -> Result<[usize; 2], Error> {
        let mut indexed = [0usize; 2];
        for ((dict, rems), n) in
            self.addrs.iter_mut().zip(self.remotes.iter_mut()).zip(indexed.iter_mut())
        {
            let shared = rems.iter().filter(|x| x.1 >= 2).count();
            let room = MAX_DICT.saturating_sub(dict.len());
            dict.try_reserve(shared.min(room))?;
            for x in rems.iter_mut() {
                if x.1 >= 2 && dict.len() < MAX_DICT {
                    #[allow(clippy::cast_possible_truncation, reason = "below MAX_DICT")]
                    let i = dict.len() as u32;
                    dict.push(x.0);
                    x.2 = i;
                    *n += x.1 as usize;
                }
            }
        }
        Ok(indexed)
    }

    /// The index widths, from the count of local addresses per family and the dictionaries.
    fn set_layouts(&mut self, locals: [usize; 2]) {
        let lay = |locals: usize, total: usize| Layout {
            lw: match locals {
                0 | 1 => 0,
                2..=256 => 1,
                _ => 2,
            },
            rw: if total <= 256 { 1 } else { 2 },
        };
        self.lays = [lay(locals[0], self.addrs[0].len()), lay(locals[1], self.addrs[1].len())];
    }

    fn bytes(&self) -> usize {
        self.addrs[0].len() * 4 + self.addrs[1].len() * 16
    }

    /// Empties the dictionaries (keeping their memory).
    fn clear(&mut self) {
        for f in 0..2 {
            self.addrs[f].clear();
            self.local_index[f].clear();
            self.remotes[f].clear();
        }
        self.idx.clear();
    }

    /// Heap bytes held.
    fn heap_bytes(&self) -> usize {
        let mut n = self.idx.capacity() * core::mem::size_of::<(u32, u32)>();
        for f in 0..2 {
            n += self.addrs[f].capacity() * 16
                + self.remotes[f].capacity() * core::mem::size_of::<([u8; 16], u32, u32)>()
                + self.local_index[f].capacity() * 5
                + self.remote_index[f].heap_bytes();
        }
        n
    }

    /// Bytes of flow `i`'s compact entry; `None` if its local address is not in the dictionary.
    fn entry_len(
        &self,
        i: usize,
        s: &SavedFlow,
        rules_version: u32,
        counters: bool,
    ) -> Option<usize> {
        let (local, remote) = self.idx.get(i).copied()?;
        if local == NONE {
            return None;
        }
        let lay = self.lays.get(family_slot(s.key.family))?;
        Some(entry_len(s, lay, remote != NONE, rules_version, counters))
    }
}

/// Per-family layout choices.
#[derive(Clone, Copy, Debug, Default)]
struct Layout {
    lw: usize,
    rw: usize,
}

/// What a compact entry is written from: a saved flow, or (the at-cap save, [`exact`]) a
/// live table slot as of the save. The same flow gives the same bytes either way.
pub(super) trait EntryFlow {
    fn key(&self) -> &FlowKey;
    fn state(&self) -> FlowState;
    fn admission(&self) -> Admission;
    fn fin_seen(&self) -> u8;
    /// Packets, then bytes, per direction (the per-flow counters' order in an entry).
    fn counters(&self) -> [u64; 4];
    /// `(first_age, last_age)` at the save instant ([`SavedFlow::ages`]).
    fn ages(&self) -> (Tick, Tick);
}

impl EntryFlow for SavedFlow {
    #[inline]
    fn key(&self) -> &FlowKey {
        &self.key
    }
    #[inline]
    fn state(&self) -> FlowState {
        self.state
    }
    #[inline]
    fn admission(&self) -> Admission {
        self.admission
    }
    #[inline]
    fn fin_seen(&self) -> u8 {
        self.fin_seen
    }
    #[inline]
    fn counters(&self) -> [u64; 4] {
        [self.packets[0], self.packets[1], self.bytes[0], self.bytes[1]]
    }
    #[inline]
    fn ages(&self) -> (Tick, Tick) {
        (self.first_age, self.last_age)
    }
}

/// Bytes of `s`'s compact entry with this layout.
fn entry_len(
    s: &impl EntryFlow,
    lay: &Layout,
    remote_indexed: bool,
    rules_version: u32,
    counters: bool,
) -> usize {
    let mut n = fixed_len(s, rules_version) + lay.lw;
    n += if remote_indexed { lay.rw } else { addr_len(s.key().family) };
    if counters {
        n += counters_len(s);
    }
    n
}

/// Bytes of `s`'s compact entry that depend on neither the dictionaries' layout nor the
/// remote's form, nor the per-flow counters: tag, protocol, ports, rule delta, ages.
#[inline]
fn fixed_len(s: &impl EntryFlow, rules_version: u32) -> usize {
    let key = s.key();
    let mut n = 1 + 4;
    if s.state() == FlowState::Active && key.protocol != protocol::UDP {
        n += 1;
    }
    if let Admission::Rule(v) = s.admission()
        && v != rules_version
    {
        n += varint_len(u64::from(rules_version.wrapping_sub(v)));
    }
    let (last_s, dur_m) = coarse_ages(s);
    n + varint_len(last_s) + varint_len(dur_m)
}

/// An entry's ages: seconds since the last packet, the flow's duration in
/// [`compact::DURATION_UNIT_SECS`] units.
#[inline]
fn coarse_ages(s: &impl EntryFlow) -> (u64, u64) {
    let (first_age, last_age) = s.ages();
    let last = last_age / TICKS_PER_SECOND;
    let dur = first_age.saturating_sub(last_age) / (TICKS_PER_SECOND * compact::DURATION_UNIT_SECS);
    (last, dur)
}

/// The fixed part of a blob: everything but rules, NIC name, dictionaries, entries and
/// fingerprint values.
const fn minimal_len(identity_units: usize) -> usize {
    format::HEADER_LEN
        + 2 * identity_units
        + format::RECORD_HEADER_LEN + 1 // mode
        + format::RECORD_HEADER_LEN + 8 // rules, empty
        + format::RECORD_HEADER_LEN + format::POLICY_CHECK_LEN
        + 2 * (format::RECORD_HEADER_LEN + format::FLOWS_PAYLOAD_HEADER) // 1.0 flows, empty
        + format::RECORD_HEADER_LEN + 2 + 8 * PortCounters::COUNT
        + format::RECORD_HEADER_LEN + 8 // save info
        + format::RECORD_HEADER_LEN + format::SAVE_INFO2_LEN
        + 2 * (format::RECORD_HEADER_LEN + 2) // dictionaries, empty
        + 2 * (format::RECORD_HEADER_LEN + compact::HEADER_LEN) // compact flows, empty
        + format::RECORD_HEADER_LEN + format::FINGERPRINTS_HEADER_LEN
        + format::TRAILER_LEN
}

pub(super) fn encode_source(
    src: &dyn Source,
    config: &EncodeConfig,
    out: &mut Vec<u8>,
    work: &mut Work,
) -> Result<EncodeSummary, Error> {
    encode_source_with(src, config, out, work, true)
}

/// [`encode_source`], with the at-cap path that writes a live port's entries straight from
/// its table ([`exact`]) on or off. Off, a live port's flows are copied into saved records
/// first, as for every other source: the tests hold the two to the same bytes.
#[allow(clippy::too_many_lines, reason = "the budget, then the blob layout, written in order")]
// Out of line: one copy in the driver image (it has a size budget).
#[inline(never)]
fn encode_source_with(
    src: &dyn Source,
    config: &EncodeConfig,
    out: &mut Vec<u8>,
    work: &mut Work,
    direct: bool,
) -> Result<EncodeSummary, Error> {
    let live = if direct { src.live() } else { None };
    out.clear();
    let identity = src.identity().as_utf16();
    let all_rules = src.rules().rules();
    let rules_version = src.rules().version();
    let minimal = minimal_len(identity.len());
    if minimal > config.cap {
        return Err(Error::CapTooSmall);
    }
    let mut room = config.cap - minimal;
    let nic = src.nic().map(PortIdentity::as_utf16).filter(|n| {
        let need = format::RECORD_HEADER_LEN + 2 + 2 * n.len();
        need <= room
    });
    if let Some(n) = nic {
        room -= format::RECORD_HEADER_LEN + 2 + 2 * n.len();
    }
    let rule_count = all_rules.len().min(room / format::RULE_ENTRY_LEN);
    let rules = all_rules.get(..rule_count).unwrap_or(&[]);
    room -= rule_count * format::RULE_ENTRY_LEN;

    // Fingerprints the source already carries are kept with the highest priority, all or none,
    // under their own salt: a decoded state's (re-encoded by a tool), or those a live port's
    // restore armed that no connection has used yet (A -> B -> C before the VM's traffic
    // resumed: B's new fingerprints join them under A's salt, which no peer knows either).
    // (Taken out of the working memory for the plan, and put back after: no allocation.)
    let mut carried_values = core::mem::take(&mut work.carried);
    carried_values.clear();
    let planned = src.carried(&mut carried_values).and_then(|carried_salt| {
        // A live port keeps the salt of its encoder's fingerprints (`FpCache`): only the
        // values of connections new since its last save past the cap are computed.
        let kept_salt = work.cache.salt.filter(|_| src.is_save());
        let salt = carried_salt.or(kept_salt).unwrap_or_else(|| src.salt());
        let carried_in =
            Carried { values: &carried_values, flows: src.carried_count(carried_values.len()) };
        work.seed = src.hash_seed();
        // A live port whose flows all fit: from its table, without copying them ([`exact`]).
        if let Some((port, now)) = live
            && let Some((p, counts)) =
                exact::plan_live(work, &port.table, now, room, rules_version, salt, &carried_in)?
        {
            return Ok((p, Some(counts)));
        }
        // A live port past the cap: planned from its tables' slots, no copy of every flow.
        // Where that finds no plan (the fingerprints do not all fit, or a collision the room
        // cannot resolve), neither does `plan_upgrades` over the same flows: the ranked planner
        // decides.
        let past = direct
            && src.as_live().is_some_and(|lp| {
                lp.len().saturating_mul(MIN_ENTRY_LEN).saturating_add(carried_in.bytes()) > room
            });
        if past
            && let Some(lp) = src.as_live()
            && let Some(p) = plan_past_live(work, lp, room, rules_version, salt, &carried_in)?
        {
            return Ok((p, None));
        }
        work.flows.clear();
        src.flows(&mut work.flows)?;
        plan_with(work, room, rules_version, salt, &carried_in, !past).map(|p| (p, None))
    });
    work.carried = carried_values;
    let (plan, from_table) = planned?;

    // What is written: every flow with the dictionaries of every flow (from the live table's
    // slots when `from_table` gives their counts), or the flows kept with theirs.
    let (exact, dicts) =
        if plan.all_exact { (&work.flows, &work.all) } else { (&work.exact, &work.kept) };
    // Counted in a register (an increment of an array slot per flow chained every flow
    // through a store and a reload).
    let counts = from_table.unwrap_or_else(|| {
        let v4 = exact.iter().filter(|s| s.key.family == IpFamily::V4).count();
        [v4, exact.len() - v4]
    });
    let entries_len = plan.entries;
    let fps = &work.fps;
    let fp_bytes = plan.fp_bytes;
    debug_assert_eq!(fp_bytes, rice::bytes(fps, plan.k), "the planner's count of the coding");

    let len = minimal
        + nic.map_or(0, |n| format::RECORD_HEADER_LEN + 2 + 2 * n.len())
        + rule_count * format::RULE_ENTRY_LEN
        + dicts.bytes()
        + entries_len[0]
        + entries_len[1]
        + fp_bytes;
    if len > config.cap {
        // The plan's estimate is an upper bound of this (see `plan`): unreachable, but a blob
        // over the cap must never be produced.
        debug_assert!(false, "encoder over the cap: {len} > {}", config.cap);
        return Err(Error::CapTooSmall);
    }
    out.try_reserve_exact(len)?;

    let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let written = counts[0] + counts[1];
    let fingerprinted = plan.fingerprinted;
    let lost = plan.lost;
    let in_table = written + fingerprinted + lost;
    let rules_dropped = all_rules.len() - rule_count;
    let mut w = Writer { out };
    // Header. To a 1.0 reader every flow is "dropped": its flow records are empty.
    w.bytes(&format::MAGIC);
    w.u16(format::MAJOR);
    w.u16(format::MINOR);
    #[allow(clippy::cast_possible_truncation, reason = "HEADER_LEN is 40")]
    w.u16(format::HEADER_LEN as u16);
    w.u16(if in_table > 0 { format::FLAG_FLOWS_DROPPED } else { 0 });
    w.u32(clamp(len));
    w.bytes(&config.provider.to_bytes());
    let records = 14 - u32::from(nic.is_none());
    w.u32(records);
    #[allow(clippy::cast_possible_truncation, reason = "identity is at most 256 units")]
    w.u16(identity.len() as u16);
    w.u16(0);
    debug_assert_eq!(w.out.len(), format::HEADER_LEN);
    debug_assert_eq!(hdr::RESERVED + 2, format::HEADER_LEN);
    for &u in identity {
        w.u16(u);
    }
    // Mode.
    w.record(rec::MODE, 1);
    w.u8(src.mode().to_wire());
    // Rules.
    w.record(rec::RULES, 8 + rules.len() * format::RULE_ENTRY_LEN);
    w.u32(rules_version);
    #[allow(clippy::cast_possible_truncation, reason = "constant 24")]
    w.u16(format::RULE_ENTRY_LEN as u16);
    #[allow(clippy::cast_possible_truncation, reason = "at most MAX_RULES (256)")]
    w.u16(rules.len() as u16);
    for r in rules {
        write_rule(&mut w, r);
    }
    // The policy's own check (1.2): the CRC-32C of every byte so far and of the count of rules
    // left out, so a destination recovers the VM's mode and rules from a blob damaged after
    // them.
    w.record(rec::POLICY_CHECK, format::POLICY_CHECK_LEN);
    #[allow(clippy::cast_possible_truncation, reason = "at most MAX_RULES (256)")]
    w.u16(rules_dropped as u16);
    w.u16(0);
    let policy_crc = crc32c(w.out);
    w.u32(policy_crc);
    // 1.0 flow records, empty: this build writes compact records.
    for (kind, entry) in
        [(rec::FLOWS_V4, format::FLOW_V4_ENTRY_LEN), (rec::FLOWS_V6, format::FLOW_V6_ENTRY_LEN)]
    {
        w.record(kind, format::FLOWS_PAYLOAD_HEADER);
        #[allow(clippy::cast_possible_truncation, reason = "69 or 93")]
        w.u16(entry as u16);
        w.u16(0);
        w.u32(0);
    }
    // Counters.
    w.record(rec::COUNTERS, 2 + 8 * PortCounters::COUNT);
    #[allow(clippy::cast_possible_truncation, reason = "COUNT is 18")]
    w.u16(PortCounters::COUNT as u16);
    let mut counters = src.counters();
    if src.is_save() {
        let c = &mut counters;
        c.saves = c.saves.saturating_add(1);
        c.save_dropped = c.save_dropped.saturating_add(lost as u64);
        c.save_fingerprinted = c.save_fingerprinted.saturating_add(fingerprinted as u64);
    }
    for v in counters.to_array() {
        w.u64(v);
    }
    // Save info, as a 1.0 reader must see it.
    w.record(rec::SAVE_INFO, 8);
    w.u32(clamp(in_table));
    w.u32(clamp(in_table));
    // Save info 2.
    w.record(rec::SAVE_INFO2, format::SAVE_INFO2_LEN);
    w.u32(clamp(fingerprinted));
    w.u32(clamp(lost));
    #[allow(clippy::cast_possible_truncation, reason = "at most MAX_RULES (256)")]
    w.u16(rules_dropped as u16);
    w.u16(0);
    if let Some(n) = nic {
        w.record(rec::NIC_IDENTITY, 2 + 2 * n.len());
        #[allow(clippy::cast_possible_truncation, reason = "at most 256 units")]
        w.u16(n.len() as u16);
        for &u in n {
            w.u16(u);
        }
    }
    for (f, family) in [IpFamily::V4, IpFamily::V6].into_iter().enumerate() {
        let (dict, lay) = (&dicts.addrs[f], &dicts.lays[f]);
        let (dkind, ckind) = match family {
            IpFamily::V4 => (rec::ADDRS_V4, rec::COMPACT_V4),
            IpFamily::V6 => (rec::ADDRS_V6, rec::COMPACT_V6),
        };
        let alen = addr_len(family);
        w.record(dkind, 2 + dict.len() * alen);
        #[allow(clippy::cast_possible_truncation, reason = "at most MAX_DICT")]
        w.u16(dict.len() as u16);
        for a in dict {
            w.bytes(a.get(..alen).unwrap_or(&[]));
        }
        w.record(ckind, compact::HEADER_LEN + entries_len[f]);
        w.u8(if plan.counters { compact::FLAG_COUNTERS } else { 0 });
        #[allow(clippy::cast_possible_truncation, reason = "0..=2")]
        w.u8(lay.lw as u8);
        #[allow(clippy::cast_possible_truncation, reason = "1 or 2")]
        w.u8(lay.rw as u8);
        w.u8(0);
        w.u32(clamp(counts[f]));
        if counts[f] == 0 {
            continue;
        }
        if let (Some(_), Some((port, now))) = (from_table, live) {
            // A live port whose flows all fit: from its table ([`exact`]).
            exact::write_live(
                w.out,
                &port.table,
                now,
                work,
                family,
                counts[f],
                entries_len[f],
                plan.counters,
            );
            continue;
        }
        // The entries are written in place: the record's bytes are made first (the capacity
        // was reserved: no allocation), then filled entry by entry.
        let start = w.out.len();
        w.out.resize(start + entries_len[f], 0);
        let mut e = Entry { b: w.out.get_mut(start..).unwrap_or(&mut []), n: 0 };
        for (s, &(local, remote)) in exact.iter().zip(dicts.idx.iter()) {
            if s.key.family == family {
                write_compact(&mut e, s, (local, remote, lay), rules_version, plan.counters);
            }
        }
        debug_assert_eq!(e.n, entries_len[f], "the entries' planned length");
    }
    // Fingerprints.
    w.record(rec::FINGERPRINTS, format::FINGERPRINTS_HEADER_LEN + fp_bytes);
    w.u64(plan.salt[0]);
    w.u64(plan.salt[1]);
    #[allow(clippy::cast_possible_truncation, reason = "32")]
    w.u8(crate::fingerprint::FINGERPRINT_BITS as u8);
    w.u8(format::FINGERPRINTS_RICE);
    w.u8(plan.k);
    w.u8(0);
    w.u32(clamp(fps.len()));
    rice::encode(fps, plan.k, w.out);
    // Trailer.
    let crc = crc32c(w.out);
    w.u32(crc);
    debug_assert_eq!(out.len(), len);
    Ok(EncodeSummary {
        len,
        flows_written: clamp(written),
        flows_dropped: clamp(lost),
        flows_fingerprinted: clamp(fingerprinted),
        rules_dropped: clamp(rules_dropped),
    })
}

/// What goes into the blob (the flows and values themselves are in the [`Work`] it was
/// planned in).
#[cfg_attr(test, derive(Debug, PartialEq, Eq))]
struct Plan {
    /// The fingerprint salt the plan's values are under.
    salt: [u64; 2],
    /// Every flow is written exactly, with the dictionaries [`Work::all`]; otherwise the
    /// flows in [`Work::exact`] with [`Work::kept`].
    all_exact: bool,
    /// Their Rice parameter.
    k: u8,
    /// Connections the fingerprints stand for.
    fingerprinted: usize,
    lost: usize,
    counters: bool,
    /// Bytes of the compact entries per family (with counters if `counters`).
    entries: [usize; 2],
    /// Bytes of the fingerprints' Rice coding under `k` (`rice::bytes`; [`plan_chosen`]
    /// counts them as it keeps the values, without a pass of its own).
    fp_bytes: usize,
}

impl Plan {
    /// Every flow written exactly, the carried fingerprints kept as they came (their values
    /// copied into [`Work::fps`]; their Rice parameter and coding's bytes as the caller
    /// counted them).
    fn all_exact(
        w: &mut Work,
        salt: [u64; 2],
        carried: &Carried<'_>,
        (k, fp_bytes): (u8, usize),
        counters: bool,
        entries: [usize; 2],
    ) -> Result<Self, Error> {
        w.fps.try_reserve(carried.values.len())?;
        w.fps.extend_from_slice(carried.values);
        Ok(Self {
            fp_bytes,
            salt,
            all_exact: true,
            k,
            fingerprinted: carried.flows,
            lost: 0,
            counters,
            entries,
        })
    }
}

/// Fingerprints a decoded state brings along.
struct Carried<'a> {
    values: &'a [u32],
    flows: usize,
}

impl Carried<'_> {
    /// Bytes the values take in the blob alone ([`plan_with`]'s `carried_bytes`).
    fn bytes(&self) -> usize {
        rice::bytes(self.values, rice::best_k(self.values))
    }
}

/// The encoder's working memory: every vector and hash table one encode needs, cleared and
/// reused by the next (`Vec::clear` and `HashTable::clear` keep their allocations). Owned by
/// an [`super::Encoder`].
#[derive(Debug, Default)]
pub(super) struct Work {
    /// The source's flows, as saved.
    flows: Vec<SavedFlow>,
    /// A live port's, past the cap ([`plan_past_live`]): each flow's table and slot (parallel
    /// to `ranks`; [`slot_table`]), and each table's bound of the slot numbers.
    slots: Vec<u32>,
    slot_count: [usize; TABLES],
    /// Fingerprints of the port's connections as of its last save past the cap.
    cache: FpCache,
    /// Fingerprints the source carries.
    carried: Vec<u32>,
    /// Dictionaries of every flow (all of them, or the locals only when the flows cannot
    /// all fit).
    all: Dicts,
    /// Over the cap: the flows written exactly, and their dictionaries.
    exact: Vec<SavedFlow>,
    kept: Dicts,
    /// Fingerprints to write: sorted, distinct.
    fps: Vec<u32>,
    /// Over the cap: `rank_key`s (value rank, flow index), ranked (all of them, or the
    /// best by selection).
    order: Vec<u128>,
    /// Flow index -> fingerprint priority (0: not fingerprinted); the fast path: flow index
    /// -> fingerprint value (established connections of the VM's only).
    prio: Vec<u32>,
    /// Priority - 1 -> flow index; the fast path: every fingerprint value (carried ones and
    /// the connections'), sorted, with repeats.
    by_prio: Vec<u32>,
    /// The fast path: values of the connections made exact, sorted (first: the values more
    /// than one entry holds).
    gone: Vec<u32>,
    /// The fast path: the first selection step's heap.
    heap: alloc::collections::BinaryHeap<u128>,
    /// The fast path: connections whose fingerprints collide, (value, rank key).
    collide: Vec<(u32, u128)>,
    /// The value sort's bucket counts (`sort_values`).
    radix: Vec<u32>,
    /// (fingerprint value, priority), sorted.
    pool: Vec<(u32, u32)>,
    /// Distinct values of a subset of the pool.
    subset: Vec<u32>,
    /// Flow index -> 0 lost, 1 fingerprint, 2 exact.
    take: Vec<u8>,
    /// Priority -> its value is shared by no other pool entry.
    unique: Vec<bool>,
    /// Per family, per local dictionary index: charged to the budget already.
    charged: [Vec<bool>; 2],
    /// Key of the dictionaries' address hash (the source's [`Source::hash_seed`]).
    seed: u64,
    /// A live port's save when every flow fits: what [`exact`] keeps.
    live: exact::Kept,
    /// Candidates the last plan's selection steps after the first handled (the flows each
    /// step partitioned, summed): a measure of the planner's work, for tests.
    selected: usize,
    /// Fingerprints the last plan computed itself (not found kept): for tests.
    hashed: usize,
    /// The fast path: each flow's [`SavedFlow::value_rank`], taken in the pass that reads its
    /// key, so that ranking reads 8 bytes a flow and not the flow again.
    ranks: Vec<u64>,
}

/// The fingerprints of a live port's connections, kept by its encoder from one save past
/// the cap to the next, by table slot: a connection's value under the kept salt is computed
/// once, when a save first fingerprints it, and reused while its slot holds the same key.
///
/// The salt is the encoder's first save's (random per port and save, as
/// [`Source::salt`]), kept while the encoder lives: a port's saves share it until the driver
/// frees the encoder (a minute after the last save). docs/runtime-state-format.md
/// ("Fingerprints") gives why that keeps the false-admission bound. A save that carries
/// fingerprints of an earlier restore writes under their salt; the cache then switches to it.
#[derive(Debug, Default)]
struct FpCache {
    salt: Option<[u64; 2]>,
    /// Per table (the home shard's, then each processor shard's: [`slot_table`]), per slot:
    /// the key its value was computed for, the value, and the slot's member tag (`set`).
    entries: [Vec<FpSlot>; TABLES],
    /// The table and slot the next preparation looks at first: one position over every
    /// table, so that a sweep's budget goes on from where the last one stopped (a cursor per
    /// table, each sweep starting at the home shard, spent the budget again on the first
    /// shards' flows, computed already, and never reached the last shards').
    cursor: (usize, u32),
    /// The current preparation (a sweep's) stopped at `cursor` for its budget.
    stopped: bool,
    /// What the current preparation may still look at and compute over the processors'
    /// shards ([`Work::prepare_table`]).
    scan_left: usize,
    hash_left: usize,
    /// An IPv6 flow was seen by a preparation: the IPv6 dictionary vectors are sized too.
    v6: bool,
    /// The fingerprint values of the port's established connections (the VM's), kept sorted
    /// across saves so that a save sorts only what changed (issue 18 item 4: sorting every
    /// value was a tenth of a save past the cap). Each member is `value << 32 | place`
    /// ([`slot_table`]), ascending. While `set_ok`, the members are exactly the places whose
    /// entry's tag is `2 * epoch` or `2 * epoch + 1` (each with its entry's value): a save
    /// (epoch `E + 1`) tags the members it finds again `2 * (E + 1)`, the connections it adds
    /// `2 * (E + 1) + 1`, and keeps of the old members those tagged `2 * (E + 1)`; a place
    /// whose entry is written for another key is untagged (0) first.
    set: Vec<u64>,
    set_ok: bool,
    epoch: u32,
    /// Members the preparations added and removed since the set was last updated (sorted and
    /// applied at the next preparation of the home shard or the next save).
    pending_added: Vec<u64>,
    pending_gone: Vec<u64>,
    /// Scratch: the set's update is merged into it, then swapped.
    set_tmp: Vec<u64>,
}

/// One slot's kept fingerprint ([`FpCache::entries`]): the key its value was computed for and
/// the value, and the slot's member tag ([`FpCache::set`]; 0: none).
#[derive(Clone, Copy, Debug, Default)]
struct FpSlot {
    fp: Option<(FlowKey, u32)>,
    tag: u32,
}

/// Epochs stop before this (tags are `2 * epoch + 1`): past it every tag is cleared and the
/// epochs start again (after 2^31 saves of one encoder: never in practice, but defined).
const EPOCH_MAX: u32 = (u32::MAX >> 1) - 1;

impl FpCache {
    /// Applies what the preparations added to and removed from the set since it was last
    /// updated (`pending_added`, `pending_gone`). A set that cannot be updated (out of
    /// memory) is left for the next save to rebuild (`set_ok` false).
    fn apply_pending(&mut self) {
        if self.pending_added.is_empty() && self.pending_gone.is_empty() {
            return;
        }
        if self.set_ok {
            let Self { set, pending_added, pending_gone, set_tmp, .. } = self;
            pending_gone.sort_unstable();
            let gone: &[u64] = pending_gone;
            let kept = set.len().saturating_sub(pending_gone.len());
            let applied = update_set(set, set_tmp, pending_added, kept, &|x| {
                gone.is_empty() || gone.binary_search(&x).is_err()
            });
            self.set_ok = applied.is_ok();
        }
        self.pending_added.clear();
        self.pending_gone.clear();
    }

    /// Starts the set's epoch of a save: returns the epoch the set was kept under (0: no
    /// member, every place's tag is below 2). A set that is not up to date, or kept under
    /// another salt, is emptied (its places' tags then match no epoch: the save adds every
    /// connection).
    fn begin_epoch(&mut self) -> u32 {
        if !self.set_ok {
            self.set.clear();
            self.set_ok = true;
            // Past every tag written so far.
            self.epoch += 1;
        }
        if self.epoch >= EPOCH_MAX {
            for e in self.entries.iter_mut().flatten() {
                e.tag = 0;
            }
            self.set.clear();
            self.epoch = 0;
        }
        self.epoch
    }

    /// Computes the fingerprints of up to `self.hash_left` connections among the next
    /// `self.scan_left` flows of table `t` (slab order) from the cursor, under the kept salt.
    /// A preparation visits the tables in order: a table before the cursor's waits for the
    /// next round, the cursor's is taken up where the last preparation stopped. Returns how
    /// many it computed.
    fn fill(&mut self, t: usize, table: &crate::flow::FlowTable) -> Result<usize, Error> {
        let Some(salt) = self.salt else { return Ok(0) };
        if self.stopped || t < self.cursor.0 || self.scan_left == 0 || self.hash_left == 0 {
            return Ok(0);
        }
        let slot_count = table.slot_count();
        let Some(entries) = self.entries.get_mut(t) else { return Ok(0) };
        if entries.len() < slot_count {
            grow_to(entries, slot_count)?;
            entries.resize(slot_count, FpSlot::default());
        }
        // Members are kept up to date only while the set is (and within the pending room the
        // preparation reserved: past it the next save rebuilds the set).
        let member = 2 * self.epoch;
        let keep_set = self.set_ok;
        let from = if t == self.cursor.0 && (self.cursor.1 as usize) < slot_count {
            self.cursor.1
        } else {
            0
        };
        let mut computed = 0;
        let mut seen = 0;
        for (i, k, r) in table.iter_from(from) {
            if seen == self.scan_left || computed == self.hash_left {
                self.cursor = (t, i);
                self.stopped = true;
                break;
            }
            seen += 1;
            self.v6 |= k.family == IpFamily::V6;
            // The VM's established connections, and every other TCP flow (whose value the
            // planner checks against the written ones).
            let est = r.state == FlowState::Established && r.admission == Admission::Vm;
            if !est && k.protocol != protocol::TCP {
                continue;
            }
            let Some(FpSlot { fp: e, tag }) = entries.get_mut(i as usize) else { continue };
            #[allow(clippy::cast_possible_truncation, reason = "t < TABLES")]
            let at = u64::from(((t as u32) << TABLE_SHIFT) | i);
            if !matches!(e, Some((key, _)) if key == k) {
                // Another key's entry: its member (if it is one) leaves the set.
                if let Some((_, old)) = *e
                    && keep_set
                    && *tag & !1 == member
                {
                    if self.pending_gone.len() < self.pending_gone.capacity() {
                        self.pending_gone.push((u64::from(old) << 32) | at);
                    } else {
                        self.set_ok = false;
                    }
                }
                *tag = 0;
                *e = Some((*k, crate::fingerprint::fingerprint(salt, k)));
                computed += 1;
            }
            // The VM's established connection joins the set if it is not a member yet.
            if est
                && keep_set
                && *tag & !1 != member
                && let Some((_, v)) = *e
            {
                if self.pending_added.len() < self.pending_added.capacity() {
                    self.pending_added.push((u64::from(v) << 32) | at);
                    *tag = member | 1;
                } else {
                    self.set_ok = false;
                }
            }
        }
        self.scan_left -= seen;
        self.hash_left -= computed;
        if !self.stopped && (self.scan_left == 0 || self.hash_left == 0) {
            // The budget ran out exactly at this table's end: the next preparation goes on at
            // the next table. (Not noted, the next one began a new round at the home shard: a
            // home shard of exactly `PREPARE_SCAN` flows then took every sweep's budget and the
            // processors' shards were never readied: review s6, R6-2.) Past the last table the
            // next preparation finds nothing and the one after it starts a new round.
            self.cursor = (t + 1, 0);
            self.stopped = true;
        }
        Ok(computed)
    }
}

/// Grows `v`'s capacity to at least `n` (to `n` and an eighth, so that a table growing a
/// little at a time does not reallocate at every step).
///
/// # Errors
/// [`Error::OutOfMemory`].
fn grow_to<T>(v: &mut Vec<T>, n: usize) -> Result<(), Error> {
    if v.capacity() < n {
        v.try_reserve_exact((n + n / 8).saturating_sub(v.len()))?;
    }
    Ok(())
}

/// The least an upgrade to an exact record costs past the cap: `plan_upgrades`' `min_upgrade`
/// with the largest fingerprint saving (`k / 8` for `k <= 31`). A save past the cap writes at
/// most `cap / MIN_UPGRADE` exact records and ranks at most that many candidates a step.
const MIN_UPGRADE: usize = 1 + 4 + 4 + 1 + 1 - 3;

impl Work {
    /// Starts the key pass of [`plan_upgrades`] or [`plan_past_live`] over `n` flows: each
    /// flow's value, first choice and rank vectors emptied with room for `n` (no push of the
    /// pass grows them), the fingerprint values starting with the `carried` ones, no
    /// fingerprint computed yet.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`].
    fn begin_key_pass(&mut self, n: usize, carried: &[u32]) -> Result<(), Error> {
        self.prio.clear();
        self.prio.try_reserve(n)?;
        self.take.clear();
        self.take.try_reserve(n)?;
        self.by_prio.clear();
        self.by_prio.try_reserve(carried.len() + n)?;
        self.by_prio.extend_from_slice(carried);
        self.ranks.clear();
        self.ranks.try_reserve(n)?;
        self.hashed = 0;
        Ok(())
    }

    /// Readies the working memory for the next save of a live port past the cap, away from
    /// the save (the driver's expiry sweep, once a second: see [`super::Encoder::prepare`]):
    /// draws the fingerprint salt if none is kept, sizes every vector a save of the port's
    /// flows uses (so that its save allocates nothing), and computes the fingerprints of up
    /// to `hash` connections among the next `scan` flows of the table from a cursor (slab
    /// order), so that a save finds them computed. Returns the fingerprints computed.
    ///
    /// `src` is the port's home shard (whole, or split); `n` its flows, every shard's. A split
    /// port's processors' shards are readied after this, one at a time under each shard's own
    /// lock, within what is left of `scan` and `hash` ([`Work::prepare_table`]).
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] (what was sized before stays).
    pub(super) fn prepare(
        &mut self,
        src: &LivePort<'_>,
        n: usize,
        cap: usize,
        scan: usize,
        hash: usize,
    ) -> Result<usize, Error> {
        let table = &src.port.table;
        self.cache.salt.get_or_insert_with(|| src.salt());
        // Sizes: what `flows`, `plan`, `plan_upgrades` and `sort_values` reserve at a save
        // of `n` flows past the cap; the exact records' vectors and the first selection step
        // for as many as any such save writes (`MIN_UPGRADE`). Only a save whose first
        // selection step leaves room that later steps fill reserves more (their candidates).
        let m = n.min(cap / MIN_UPGRADE + 1);
        grow_to(&mut self.flows, n)?;
        grow_to(&mut self.slots, n)?;
        grow_to(&mut self.prio, n)?;
        grow_to(&mut self.take, n)?;
        grow_to(&mut self.ranks, n)?;
        // The value sort swaps these two and wants either as large as the other: both sized
        // to one capacity.
        if self.by_prio.capacity().min(self.subset.capacity()) < n {
            let c = (n + n / 8).max(self.by_prio.capacity()).max(self.subset.capacity());
            for v in [&mut self.by_prio, &mut self.subset] {
                v.try_reserve_exact(c.saturating_sub(v.len()))?;
            }
        }
        grow_to(&mut self.fps, n)?;
        grow_to(&mut self.radix, 1 << BUCKET_BITS_MAX)?;
        grow_to(&mut self.all.idx, n)?;
        grow_to(&mut self.exact, m)?;
        grow_to(&mut self.gone, m)?;
        grow_to(&mut self.order, m.max(MIN_STEP).min(n))?;
        if self.heap.capacity() < m.max(MIN_STEP).min(n) {
            self.heap.try_reserve_exact(m.max(MIN_STEP).min(n))?;
        }
        grow_to(&mut self.collide, 8)?;
        grow_to(&mut self.kept.idx, m)?;
        let families = if self.cache.v6 { 2 } else { 1 };
        for f in 0..families {
            // Locals (a VM has few), and for the exact records' the remotes they share.
            for (d, addrs) in [(&mut self.all, 4), (&mut self.kept, m.max(4))] {
                if let Some(a) = d.addrs.get_mut(f) {
                    grow_to(a, addrs)?;
                }
                if let Some(t) = d.local_index.get_mut(f)
                    && t.capacity() < 4
                {
                    // Emptied first (each build starts empty): nothing to rehash.
                    t.clear();
                    t.try_reserve(4, |_: &u32| 0)?;
                }
            }
            if let Some(c) = self.charged.get_mut(f) {
                grow_to(c, 4)?;
            }
            if let Some(r) = self.kept.remotes.get_mut(f) {
                grow_to(r, m)?;
            }
            if let Some(ri) = self.kept.remote_index.get_mut(f) {
                ri.size_for(m)?;
            }
        }
        // A build sizes both families' remote index, its smallest even for none.
        for ri in &mut self.kept.remote_index {
            ri.size_for(0)?;
        }
        // The set of values kept sorted across saves (`FpCache::set`): its members and what
        // one save or preparation adds to it.
        grow_to(&mut self.cache.set, n)?;
        grow_to(&mut self.cache.set_tmp, n)?;
        grow_to(&mut self.cache.pending_added, n)?;
        grow_to(&mut self.cache.pending_gone, n.min(scan))?;
        self.cache.apply_pending();
        // From the encoder's first preparation on, the preparations keep the set (its first
        // save past the cap then sorts only what changed since).
        self.cache.begin_epoch();
        // Fingerprints: the kept ones by slot, the key checked (as `plan_upgrades` does).
        self.cache.scan_left = scan;
        self.cache.hash_left = hash;
        // The last preparation went through every table within its budget: a new round.
        if !self.cache.stopped {
            self.cache.cursor = (0, 0);
        }
        self.cache.stopped = false;
        self.cache.fill(0, table)
    }

    /// Readies processor shard `shard`'s flows of a split port (after [`Work::prepare`] of
    /// its home shard, within what that left of its budget): their fingerprints computed.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`].
    pub(super) fn prepare_table(
        &mut self,
        shard: usize,
        table: &crate::flow::FlowTable,
    ) -> Result<usize, Error> {
        self.cache.fill(shard + 1, table)
    }

    /// Heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        let flow = core::mem::size_of::<SavedFlow>();
        (self.flows.capacity() + self.exact.capacity()) * flow
            + (self.carried.capacity() + self.fps.capacity() + self.subset.capacity()) * 4
            + self.all.heap_bytes()
            + self.kept.heap_bytes()
            + self.order.capacity() * 16
            + (self.prio.capacity() + self.by_prio.capacity() + self.gone.capacity()) * 4
            + self.radix.capacity() * 4
            + self.slots.capacity() * 4
            + self.ranks.capacity() * 8
            + self.cache.entries.iter().map(Vec::capacity).sum::<usize>()
                * core::mem::size_of::<FpSlot>()
            + (self.cache.set.capacity()
                + self.cache.set_tmp.capacity()
                + self.cache.pending_added.capacity()
                + self.cache.pending_gone.capacity())
                * 8
            + self.collide.capacity() * core::mem::size_of::<(u32, u128)>()
            + self.heap.capacity() * 16
            + self.pool.capacity() * 8
            + self.take.capacity()
            + self.unique.capacity()
            + self.charged[0].capacity()
            + self.charged[1].capacity()
            + self.live.heap_bytes()
    }
}

/// Fewest bytes any compact entry takes: tag, remote index (1 byte at least), both ports, the
/// two age varints. A port whose flows need more than the room even at this size is over the
/// cap without building its remote dictionary.
pub(super) const MIN_ENTRY_LEN: usize = 1 + 1 + 4 + 2;

/// Bytes the per-flow counters add to `s`'s compact entry.
#[inline]
fn counters_len(s: &impl EntryFlow) -> usize {
    let [p0, p1, b0, b1] = s.counters();
    varint_len(p0) + varint_len(p1) + varint_len(b0) + varint_len(b1)
}

/// Tries to fit every flow exactly (the dictionaries of every flow, one pass of entry
/// lengths). `Some((entries, counters))` if they fit: the bytes of each family's entries and
/// whether per-flow counters fit too.
fn fit_all(
    w: &mut Work,
    room: usize,
    rules_version: u32,
    carried_bytes: usize,
) -> Result<Option<([usize; 2], bool)>, Error> {
    if w.flows.len().saturating_mul(MIN_ENTRY_LEN).saturating_add(carried_bytes) > room {
        return Ok(None);
    }
    w.all.build(&w.flows, true, w.seed)?;
    // Summed in registers, one per family (see `encode_source`'s count).
    let (mut b4, mut b6) = (0usize, 0usize);
    let [lay4, lay6] = w.all.lays;
    for (s, &(local, remote)) in w.flows.iter().zip(w.all.idx.iter()) {
        if local == NONE {
            // Its local address did not fit the dictionary: it cannot be written exactly.
            return Ok(None);
        }
        match s.key.family {
            IpFamily::V4 => b4 += entry_len(s, &lay4, remote != NONE, rules_version, false),
            IpFamily::V6 => b6 += entry_len(s, &lay6, remote != NONE, rules_version, false),
        }
    }
    let base = [b4, b6];
    let without = w.all.bytes() + carried_bytes + base[0] + base[1];
    if without > room {
        return Ok(None);
    }
    // Per-flow counters take 4 bytes at least (four varints): often that alone decides.
    if without + 4 * w.flows.len() > room {
        return Ok(Some((base, false)));
    }
    let (mut x4, mut x6) = (0usize, 0usize);
    for s in &w.flows {
        match s.key.family {
            IpFamily::V4 => x4 += counters_len(s),
            IpFamily::V6 => x6 += counters_len(s),
        }
    }
    let extra = [x4, x6];
    if without + extra[0] + extra[1] <= room {
        Ok(Some(([base[0] + extra[0], base[1] + extra[1]], true)))
    } else {
        Ok(Some((base, false)))
    }
}

/// Chooses exact records and fingerprints within `room` bytes, from the flows in `w.flows`,
/// with the over-the-cap fast path ([`plan_upgrades`]) on or off. Off, every case
/// takes [`plan_ranked`], the planner before issue 18's fast path: the property tests hold the
/// two to the same choices.
fn plan_with(
    w: &mut Work,
    room: usize,
    rules_version: u32,
    salt: [u64; 2],
    carried: &Carried<'_>,
    fast: bool,
) -> Result<Plan, Error> {
    w.exact.clear();
    w.fps.clear();
    let carried_k = rice::best_k(carried.values);
    let carried_bytes = rice::bytes(carried.values, carried_k);
    // `w.all` is this encode's from here on (never a previous encode's).
    w.all.clear();
    if let Some((entries, counters)) = fit_all(w, room, rules_version, carried_bytes)? {
        return Plan::all_exact(w, salt, carried, (carried_k, carried_bytes), counters, entries);
    }
    // Over the cap. The local dictionary of every flow gives each flow's local index and the
    // index widths (which bound those of any subset's dictionary); remotes are charged as
    // literals below, so their dictionary is not needed.
    if w.all.idx.len() != w.flows.len() {
        // `fit_all` left early, before building them.
        w.all.build(&w.flows, false, w.seed)?;
    }
    if fast && let Some(p) = plan_upgrades(w, room, rules_version, salt, carried)? {
        return Ok(p);
    }
    plan_ranked(w, room, rules_version, salt, carried)
}

/// The over-the-cap planner that ranks every flow (a sort of all of them) and fingerprints
/// them by priority: what [`plan_with`] does when even the fingerprints of every established
/// connection do not fit (the largest prefix by rank that fits is fingerprinted), and, in
/// tests, the reference the fast path is held to.
#[allow(
    clippy::too_many_lines,
    clippy::many_single_char_names,
    reason = "two cases of one budget; s flow, i index, p priority, f family, c cost, t choice"
)]
fn plan_ranked(
    w: &mut Work,
    room: usize,
    rules_version: u32,
    salt: [u64; 2],
    carried: &Carried<'_>,
) -> Result<Plan, Error> {
    let Work {
        flows,
        all: dicts,
        exact,
        kept,
        fps,
        order,
        prio,
        by_prio,
        pool,
        subset: scratch,
        take,
        unique,
        charged,
        seed,
        ..
    } = w;
    let flows: &[SavedFlow] = flows;
    // Rank: established TCP first, then most recently active (packed keys, see `rank_key`).
    order.clear();
    order.try_reserve(flows.len())?;
    order.extend((0u32..).zip(flows.iter()).map(|(i, s)| rank_key(s, i)));
    order.sort_unstable();
    // Only the VM's own connections are fingerprinted: a pickup admits a flow as the VM's,
    // which a peer-opened connection (admitted by a rule, or in Monitor mode) is not. Those
    // travel exactly or not at all, and the destination's rules judge their next packet.
    let is_est = |s: &SavedFlow| s.state == FlowState::Established && s.admission == Admission::Vm;
    // The fingerprint pool: (value, priority); carried values have priority 0, established
    // flows 1 + their rank among established flows. Sorted by value.
    prio.clear();
    prio.try_reserve(flows.len())?;
    prio.resize(flows.len(), 0u32);
    by_prio.clear();
    by_prio.try_reserve(flows.len())?;
    let mut n_est = 0u32;
    for i in order.iter().map(|&x| rank_index(x)) {
        if flows.get(i as usize).is_some_and(is_est) {
            n_est += 1;
            by_prio.push(i);
            if let Some(p) = prio.get_mut(i as usize) {
                *p = n_est;
            }
        }
    }
    pool.clear();
    pool.try_reserve(carried.values.len() + by_prio.len())?;
    // Two connections with one fingerprint value would be one pickup on the destination (a
    // value is taken once), so one of them would be lost. Without carried values the salt is
    // ours to choose: try further salts, derived from the first so that saves stay
    // reproducible, until no two established flows share a value (at 20,000 connections a
    // salt collides with probability about n^2 / 2^33 = 5%, so every further try divides the
    // chance of a loss by about 20). The last salt tried is kept if every one collides.
    let mut salt = salt;
    for attempt in 0..SALT_TRIES {
        pool.clear();
        pool.extend(carried.values.iter().map(|&v| (v, 0)));
        for (p, &i) in (1u32..).zip(by_prio.iter()) {
            if let Some(s) = flows.get(i as usize) {
                pool.push((crate::fingerprint::fingerprint(salt, &s.key), p));
            }
        }
        pool.sort_unstable_by_key(|&(v, p)| (u64::from(v) << 32) | u64::from(p));
        // A TCP connection that is not fingerprinted but has a pool value's key would be
        // picked up by it (see `plan_upgrades`, "Left-out connections"): another salt too.
        let collides = pool.windows(2).any(|w| matches!(w, [a, b] if a.0 == b.0))
            || flows.iter().any(|s| {
                !is_est(s) && s.key.protocol == protocol::TCP && {
                    let v = crate::fingerprint::fingerprint(salt, &s.key);
                    pool.binary_search_by_key(&v, |&(x, _)| x).is_ok()
                }
            });
        if !collides || !carried.values.is_empty() || attempt + 1 == SALT_TRIES {
            break;
        }
        salt = next_salt(salt);
    }
    // Distinct values of the pool entries with priority below `m`.
    scratch.clear();
    scratch.try_reserve(pool.len())?;
    let pool: &[(u32, u32)] = pool;
    let subset = |m: u32, out: &mut Vec<u32>| {
        out.clear();
        for &(v, p) in pool {
            if p < m && out.last() != Some(&v) {
                out.push(v);
            }
        }
    };
    let n_all = n_est + 1;
    subset(n_all, scratch);
    let k_all = rice::best_k(scratch);
    let all_bytes = rice::bytes(scratch, k_all);

    take.clear();
    take.try_reserve(flows.len())?;
    take.resize(flows.len(), 0u8);
    let max_fps = crate::fingerprint::MAX_FINGERPRINTS;
    let (m, k) = if all_bytes >= room || scratch.len() > max_fps {
        // Fingerprints only: the largest m whose subset fits (the size is monotone in m).
        let fits = |m: u32, scratch: &mut Vec<u32>| {
            subset(m, scratch);
            let k = rice::best_k(scratch);
            (rice::bytes(scratch, k) <= room && scratch.len() <= max_fps, k)
        };
        let (mut lo, mut hi) = (0u32, n_all); // fits(lo), and m >= hi does not
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits(mid, scratch).0 {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let (_, k) = fits(lo, scratch);
        for (t, &p) in take.iter_mut().zip(prio.iter()) {
            if p != 0 && p < lo {
                *t = 1;
            }
        }
        (lo, k)
    } else {
        // Every fingerprint fits: spend the rest upgrading the most valuable flows to exact
        // records. Removing a value that no other entry shares shrinks the fingerprints by at
        // least k bits (see `rice`), so an established flow's upgrade costs its entry minus
        // k / 8 bytes.
        unique.clear();
        unique.try_reserve(n_all as usize)?;
        unique.resize(n_all as usize, false);
        for (j, &(v, p)) in pool.iter().enumerate() {
            let shared = (j > 0 && pool.get(j - 1).is_some_and(|x| x.0 == v))
                || pool.get(j + 1).is_some_and(|x| x.0 == v);
            if let Some(u) = unique.get_mut(p as usize) {
                *u = p != 0 && !shared;
            }
        }
        //
        // The dictionary is charged as it is used, not up front: a flow pays for its local
        // address the first time one is upgraded, and its remote address as a literal (a
        // remote the kept flows share costs less as an entry plus indexes, so this is an upper
        // bound of what the rebuilt dictionary costs).
        let saving = usize::from(k_all / 8);
        let mut left = room - all_bytes;
        for (c, d) in charged.iter_mut().zip(dicts.addrs.iter()) {
            c.clear();
            c.try_reserve(d.len())?;
            c.resize(d.len(), false);
        }
        for i in order.iter().map(|&x| rank_index(x)) {
            let Some(s) = flows.get(i as usize) else { continue };
            let p = prio.get(i as usize).copied().unwrap_or(0);
            let f = family_slot(s.key.family);
            let local = dicts.idx.get(i as usize).map_or(NONE, |x| x.0);
            let first_use = charged.get(f).and_then(|c| c.get(local as usize)) == Some(&false);
            let c = dicts
                .lays
                .get(f)
                .filter(|_| local != NONE)
                .map_or(1 << 40, |lay| entry_len(s, lay, false, rules_version, false))
                + if first_use { addr_len(s.key.family) } else { 0 };
            let back = if unique.get(p as usize).copied().unwrap_or(false) { saving } else { 0 };
            let extra = c.saturating_sub(back);
            let t = if extra <= left {
                left -= extra;
                if let Some(b) = charged.get_mut(f).and_then(|c| c.get_mut(local as usize)) {
                    *b = true;
                }
                2
            } else {
                u8::from(p != 0)
            };
            if let Some(slot) = take.get_mut(i as usize) {
                *slot = t;
            }
        }
        (n_all, k_all)
    };
    let mut lost = 0;
    let mut fp_count = 0;
    // Exact records keep the source's order (oldest activity first within each class).
    #[allow(clippy::naive_bytecount, reason = "a few thousand bytes once per save; no dependency")]
    let n_exact = take.iter().filter(|&&t| t == 2).count();
    exact.try_reserve(n_exact)?;
    for (s, &t) in flows.iter().zip(take.iter()) {
        match t {
            2 => exact.push(*s),
            1 => fp_count += 1,
            _ => lost += 1,
        }
    }
    fps.try_reserve(pool.len())?;
    let mut prev_value = None;
    for &(v, p) in pool {
        let keep = if p == 0 {
            m > 0
        } else {
            // The flow of priority p keeps its fingerprint unless it became exact.
            let i = by_prio.get(p as usize - 1).copied().unwrap_or(u32::MAX);
            take.get(i as usize) == Some(&1)
        };
        if keep && prev_value != Some(v) {
            fps.push(v);
            prev_value = Some(v);
        }
    }
    // The dictionaries of what is written, and its entries' bytes.
    kept.build(exact, true, *seed)?;
    let mut entries = [0usize; 2];
    for (i, s) in exact.iter().enumerate() {
        if let Some(e) = entries.get_mut(family_slot(s.key.family)) {
            *e += kept.entry_len(i, s, rules_version, false).unwrap_or(0);
        }
    }
    let carried_kept = if m > 0 { carried.flows } else { 0 };
    Ok(Plan {
        salt,
        all_exact: false,
        k,
        fingerprinted: fp_count + carried_kept,
        lost: lost + (carried.flows - carried_kept),
        counters: false,
        entries,
        fp_bytes: rice::bytes(fps, k),
    })
}

/// A flow's place in the save-cap ranking ([`SavedFlow::value_rank`], ties by position in the
/// source's order), packed so that one integer comparison orders two flows.
fn rank_key(s: &SavedFlow, i: u32) -> u128 {
    (u128::from(s.value_rank()) << 32) | u128::from(i)
}

/// The flow index of a [`rank_key`].
const fn rank_index(key: u128) -> u32 {
    #[allow(clippy::cast_possible_truncation, reason = "the low 32 bits hold the index")]
    let i = key as u32;
    i
}

/// Most bits [`sort_values`] distributes on (32,768 buckets: 128 KiB of counts).
const BUCKET_BITS_MAX: u32 = 15;
/// Below this many values a comparison sort is as cheap as distributing them.
const BUCKET_MIN: usize = 256;
/// A bucket larger than this is sorted by a comparison sort (insertion sort below it).
const BUCKET_INSERTION_MAX: usize = 24;

/// Sorts `values` ascending: one distribution pass on their top bits into `tmp` (its memory
/// reused; about one value a bucket), then each bucket by insertion sort, or a comparison
/// sort if it is large. `hist` holds the bucket counts (kept across saves).
///
/// Past the cap the encoder sorts every connection's fingerprint at each save (20,000 at
/// issue 18's target), where a comparison sort cost about 120 instructions a value and this
/// about 20. Fingerprints are uniform under a salt no peer knows, so the buckets stay small;
/// whatever the values, the cost is at most that of the comparison sort of the largest
/// buckets (never quadratic).
///
/// # Errors
/// [`Error::OutOfMemory`] (the first sort of a port's encoder reserves `tmp` and `hist`).
fn sort_values(
    values: &mut Vec<u32>,
    tmp: &mut Vec<u32>,
    hist: &mut Vec<u32>,
) -> Result<(), Error> {
    let n = values.len();
    if n < BUCKET_MIN {
        values.sort_unstable();
        return Ok(());
    }
    // About one value a bucket: log2(n) bits, at most BUCKET_BITS_MAX (insertion sorts of
    // several values mispredict their branches: buckets of one or two cost less).
    let bits = n.ilog2().clamp(4, BUCKET_BITS_MAX);
    let buckets = 1usize << bits;
    let shift = 32 - bits;
    if hist.capacity() < buckets {
        hist.clear();
        hist.try_reserve_exact(1 << BUCKET_BITS_MAX)?;
    }
    hist.clear();
    hist.resize(buckets, 0);
    for &v in values.iter() {
        if let Some(c) = hist.get_mut((v >> shift) as usize) {
            *c += 1;
        }
    }
    // Counts to starting offsets.
    let mut at = 0u32;
    for c in hist.iter_mut() {
        let x = *c;
        *c = at;
        at += x;
    }
    tmp.clear();
    // As much as `values` holds: the two swap buffers, and the next save must find either as
    // large as this one's `values` (no allocation then).
    tmp.try_reserve(values.capacity())?;
    tmp.resize(n, 0);
    for &v in values.iter() {
        if let Some(c) = hist.get_mut((v >> shift) as usize) {
            if let Some(d) = tmp.get_mut(*c as usize) {
                *d = v;
            }
            *c += 1;
        }
    }
    // Each count is now its bucket's end.
    let mut start = 0usize;
    for &end in hist.iter() {
        let end = end as usize;
        if let Some(bucket) = tmp.get_mut(start..end) {
            if bucket.len() > BUCKET_INSERTION_MAX {
                bucket.sort_unstable();
            } else {
                insertion_sort(bucket);
            }
        }
        start = end;
    }
    core::mem::swap(values, tmp);
    Ok(())
}

/// Updates the kept set of values (`FpCache::set`): `set` becomes its members `keep` keeps
/// and every member of `added` (unsorted, emptied here), ascending. `tmp` is scratch; the
/// two trade their memory (each sized for every connection by the preparation: no
/// allocation then).
///
/// # Errors
/// [`Error::OutOfMemory`] (the set is then not up to date: the caller marks it so).
// Out of line: one copy for its two callers (the driver image has a size budget).
#[inline(never)]
fn update_set(
    set: &mut Vec<u64>,
    tmp: &mut Vec<u64>,
    added: &mut Vec<u64>,
    kept: usize,
    keep: &dyn Fn(u64) -> bool,
) -> Result<(), Error> {
    // (A comparison sort: a radix sort of pairs was a second copy of `sort_values` in the
    // driver image, for the one save that adds every connection: an encoder's first, when no
    // sweep readied it.)
    added.sort_unstable();
    tmp.clear();
    // Room for what the set becomes (`kept` of its members and the added ones: no more than
    // the port's connections, for which the preparation sized it), not for every old member
    // as well (a port whose flows all moved, merged from its shards, would need twice that).
    // More than `kept` members kept (never, while the tags are right) refuses the update:
    // the vector is never grown here.
    tmp.try_reserve(kept + added.len())?;
    let mut a = added.iter().copied().peekable();
    let mut members = 0;
    for &x in set.iter() {
        if !keep(x) {
            continue;
        }
        while let Some(y) = a.next_if(|&y| y < x) {
            tmp.push(y);
        }
        if members == kept {
            return Err(Error::OutOfMemory);
        }
        members += 1;
        tmp.push(x);
    }
    tmp.extend(a);
    core::mem::swap(set, tmp);
    added.clear();
    Ok(())
}

/// Sorts a short slice ascending.
fn insertion_sort(v: &mut [u32]) {
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 {
            match (v.get(j - 1), v.get(j)) {
                (Some(&a), Some(&b)) if a > b => {
                    v.swap(j - 1, j);
                    j -= 1;
                }
                _ => break,
            }
        }
    }
}

/// Candidates ranked per selection step of [`plan_upgrades`] at the least (the step is larger
/// when the room left could still take more flows).
const MIN_STEP: usize = 256;

/// Over the cap, when every established connection's fingerprint fits (the case past the
/// default table): the choices of [`plan_ranked`], without ranking or sorting every flow and
/// without a second salt.
///
/// [`plan_ranked`] sorts all flows by rank and walks every one of them to upgrade flows to
/// exact records greedily; but an upgrade costs at least `min_upgrade` bytes, so once the
/// room left is below that, no later flow can be upgraded and the walk decides nothing more.
/// This planner therefore ranks only the best candidates, a selection step at a time
/// (`select_nth_unstable`, linear, then a sort of the step), until the room is spent; every
/// other flow keeps its fingerprint (or, not being one of the VM's established connections,
/// is lost). Its fingerprint pool is the values alone (sorted with repeats, by a radix sort);
/// whether an upgraded connection's value is shared is a binary search there.
///
/// **Collisions.** Two connections whose fingerprints share a value would be one pickup on
/// the destination (a value is taken once), so one would be lost. [`plan_ranked`] then hashes
/// every connection again under further salts; this planner instead makes the colliding
/// connections exact first (all of a value's connections but its least valuable one, or all
/// of them if the value is also a carried one), before the upgrades by rank: each is then
/// carried on its own, under the first salt. (At 20,000 connections about one save in 20 has
/// a collision; rehashing it cost a quarter of the save.) If the room cannot take them,
/// `None`, and [`plan_ranked`] tries further salts as before.
///
/// `None` also when the fingerprints do not all fit (then [`plan_ranked`] chooses the prefix
/// by rank that does). Without a collision under the first salt the blob is byte for byte
/// what [`plan_ranked`] writes (`the_fast_planner_chooses_what_the_ranked_planner_chooses`).
#[allow(
    clippy::too_many_lines,
    clippy::many_single_char_names,
    reason = "one budget in order; s flow, i index, f family, c cost, t choice, v value"
)]
fn plan_upgrades(
    w: &mut Work,
    room: usize,
    rules_version: u32,
    salt: [u64; 2],
    carried: &Carried<'_>,
) -> Result<Option<Plan>, Error> {
    w.begin_key_pass(w.flows.len(), carried.values)?;
    let Work { flows, prio: vals, by_prio: values, take, hashed, ranks, .. } = w;
    let flows: &[SavedFlow] = flows;
    let is_est = |s: &SavedFlow| s.state == FlowState::Established && s.admission == Admission::Vm;
    // One pass: every connection's fingerprint, its first choice (fingerprint, or lost if it
    // is not one of the VM's established connections) and its rank.
    // Reserved above: no push grows a vector. A TCP flow that is not one of the VM's
    // established connections is carried exactly or not at all; its value is computed too
    // (see "Left-out connections" below), and kept in `vals` beside the others'.
    for s in flows {
        ranks.push(s.value_rank());
        let est = is_est(s);
        let v = (est || s.key.protocol == protocol::TCP).then(|| {
            *hashed += 1;
            crate::fingerprint::fingerprint(salt, &s.key)
        });
        push_first_choice(vals, take, v, est);
        if let (Some(v), true) = (v, est) {
            values.push(v);
        }
    }
    // The rest reads the flows by index only.
    let flows = core::mem::take(&mut w.flows);
    let planned = plan_chosen(w, room, rules_version, salt, carried, false, &|i| {
        flows.get(i as usize).copied()
    });
    w.flows = flows;
    planned
}

/// [`plan_upgrades`] for a live port past the cap (whole or split, every lock held), from its
/// tables' slots: one walk in the merged port's order ([`LivePort::visit`]) takes each
/// flow's place, rank, fingerprint (kept by the encoder, `FpCache`) and local address, and
/// nothing else; only the candidates the room can take and the flows made exact are read
/// again, by slot ([`plan_chosen`]). No copy of every flow (a 104-byte [`SavedFlow`] each:
/// 2 MB at 20,000, written then read twice, was a third of the save). The plan is
/// [`plan_upgrades`]' over the flows [`Source::flows`] gives, byte for byte (the flows in the
/// same order, every choice read from the same values): `None` where it is `None`, and the
/// caller then takes that path.
///
/// # Errors
/// [`Error::OutOfMemory`].
#[allow(clippy::too_many_lines, reason = "one walk, then the plan: read top to bottom")]
fn plan_past_live(
    w: &mut Work,
    src: &LivePort<'_>,
    room: usize,
    rules_version: u32,
    salt: [u64; 2],
    carried: &Carried<'_>,
) -> Result<Option<Plan>, Error> {
    w.exact.clear();
    w.fps.clear();
    w.begin_key_pass(src.len(), carried.values)?;
    let mut sorted = false;
    {
        let sorted = &mut sorted;
        let Work {
            all: dicts,
            prio: vals,
            by_prio: values,
            take,
            slots,
            slot_count,
            cache,
            hashed,
            ranks,
            ..
        } = w;
        *slot_count = [0; TABLES];
        for (t, table) in src.tables() {
            if let Some(c) = slot_count.get_mut(t) {
                *c = table.slot_count();
            }
        }
        // The port's fingerprints computed at its earlier saves, if under this salt (the set
        // of values kept across saves with them).
        if cache.salt != Some(salt) {
            for e in &mut cache.entries {
                e.clear();
            }
            cache.salt = Some(salt);
            cache.set_ok = false;
        }
        for (e, &c) in cache.entries.iter_mut().zip(slot_count.iter()) {
            if e.len() < c {
                e.try_reserve(c - e.len())?;
                e.resize(c, FpSlot::default());
            }
        }
        // The kept set of values (`FpCache::set`): what the preparations changed, then this
        // save's epoch. Until the set is updated below it is not up to date (an error on the
        // way leaves it for the next save to rebuild).
        cache.apply_pending();
        let before = 2 * cache.begin_epoch();
        let member = before + 2;
        cache.set_ok = false;
        let n = src.len();
        cache.pending_added.try_reserve(n)?;
        let FpCache { entries, pending_added: added, .. } = cache;
        let mut kept = 0usize;
        slots.clear();
        slots.try_reserve(n)?;
        dicts.clear();
        let now = src.now;
        let mut last_local = None;
        // Reserved above: no push grows a vector (at most `n` flows are taken, so a port
        // that gained flows since `n` was counted, impossible under its locks, writes no more
        // than that; every vector, the set's additions too, has room for `n`).
        #[allow(clippy::cast_possible_truncation, reason = "t < TABLES")]
        src.visit(&mut |t, i, k, r| {
            if slots.len() >= n {
                return Ok(());
            }
            let at = ((t as u32) << TABLE_SHIFT) | i;
            slots.push(at);
            // `SavedFlow::value_rank` of the flow's saved record.
            let (_, last_age) = SavedFlow::ages(r, now);
            ranks.push(
                (u64::from(r.state != FlowState::Established) << 63) | last_age.min(u64::MAX >> 1),
            );
            let est = r.state == FlowState::Established && r.admission == Admission::Vm;
            let v = (est || k.protocol == protocol::TCP).then(|| {
                let Some(FpSlot { fp: e, tag }) =
                    entries.get_mut(t).and_then(|e| e.get_mut(i as usize))
                else {
                    *hashed += 1;
                    return crate::fingerprint::fingerprint(salt, k);
                };
                let v = match e {
                    Some((key, v)) if same_key(key, k) => *v,
                    _ => {
                        let v = crate::fingerprint::fingerprint(salt, k);
                        *e = Some((*k, v));
                        // Another key's entry: not a member any more.
                        *tag = 0;
                        *hashed += 1;
                        v
                    }
                };
                if est {
                    // A member found again, or a connection new to the set.
                    if *tag & !1 == before && before > 0 {
                        *tag = member;
                        kept += 1;
                    } else if added.len() < added.capacity() {
                        *tag = member | 1;
                        added.push((u64::from(v) << 32) | u64::from(at));
                    }
                }
                v
            });
            push_first_choice(vals, take, v, est);
            dicts.add_local(k.family, k.local_addr, &mut last_local)
        })?;
        dicts.finish_locals();
        // The set: the members found again (all of them, or those tagged so) and the new.
        let updated = if kept != cache.set.len() || !cache.pending_added.is_empty() {
            let FpCache { set, set_tmp, pending_added, entries, .. } = cache;
            let all_kept = kept == set.len();
            let entries: &[Vec<FpSlot>; TABLES] = entries;
            update_set(set, set_tmp, pending_added, kept, &|x| {
                #[allow(clippy::cast_possible_truncation, reason = "the low 32 bits: a place")]
                let (t, i) = slot_table(x as u32);
                all_kept || entries.get(t).and_then(|g| g.get(i)).is_some_and(|e| e.tag == member)
            })
            .is_ok()
        } else {
            true
        };
        // The values to write: the connections', sorted, after the carried ones (a restore's
        // that no connection used yet: then the planner sorts the two together). A set that
        // could not be updated is rebuilt by the next save; this one takes the values from its
        // pass (their room reserved), for the planner to sort.
        cache.epoch = member / 2;
        cache.set_ok = updated;
        if updated {
            values.try_reserve(cache.set.len())?;
            #[allow(clippy::cast_possible_truncation, reason = "the value: the high 32 bits")]
            values.extend(cache.set.iter().map(|&x| (x >> 32) as u32));
        } else {
            cache.pending_added.clear();
            values.extend(vals.iter().zip(take.iter()).filter(|&(_, &t)| t == 1).map(|(&v, _)| v));
        }
        *sorted = updated && carried.values.is_empty();
    }
    // The rest reads a flow by its slot (a candidate's cost, an exact record).
    let slots = core::mem::take(&mut w.slots);
    let now = src.now;
    let table = |t: usize| match t {
        0 => Some(&src.port.table),
        _ => src.shards.get(t - 1).copied().flatten().map(|p| &p.table),
    };
    let planned = plan_chosen(w, room, rules_version, salt, carried, sorted, &|i| {
        let (t, slot) = slot_table(*slots.get(i as usize)?);
        #[allow(clippy::cast_possible_truncation, reason = "slot < 2^24")]
        let (k, r) = table(t)?.slot_flow(slot as u32)?;
        Some(SavedFlow::from_record(*k, r, now))
    });
    w.slots = slots;
    planned
}

/// `a == b`: the addresses as 16-byte words first (the derived comparison, field by field
/// and byte array by byte array, took about twenty instructions a flow in the save's pass).
#[inline]
#[allow(clippy::needless_bitwise_bool, reason = "one branch for the whole key, not one a field")]
fn same_key(a: &FlowKey, b: &FlowKey) -> bool {
    // Every field compared and the results combined without short-circuiting: one branch,
    // not six (the keys are almost always equal, but each `&&` was a branch of its own).
    (u128::from_ne_bytes(a.remote_addr) == u128::from_ne_bytes(b.remote_addr))
        & (u128::from_ne_bytes(a.local_addr) == u128::from_ne_bytes(b.local_addr))
        & (a.local_port == b.local_port)
        & (a.remote_port == b.remote_port)
        & (a.protocol == b.protocol)
        & (a.family == b.family)
}

/// Records a flow's first choice in the key pass of [`plan_upgrades`] or [`plan_past_live`]:
/// `v` its fingerprint value if it is a TCP flow or one of the VM's established connections
/// (`est`: fingerprinted; otherwise [`LEFT_OUT_TCP`]), `None` for any other flow (lost unless
/// made exact). The vectors' room is reserved ([`Work::begin_key_pass`]).
#[inline]
fn push_first_choice(vals: &mut Vec<u32>, take: &mut Vec<u8>, v: Option<u32>, est: bool) {
    if let Some(v) = v {
        vals.push(v);
        take.push(if est { 1 } else { LEFT_OUT_TCP });
    } else {
        vals.push(0);
        take.push(0);
    }
}

/// `take`'s mark of a TCP flow that is not one of the VM's established connections before the
/// choice (carried exactly or lost, see "Left-out connections" in [`plan_chosen`]).
const LEFT_OUT_TCP: u8 = 3;

/// [`plan_upgrades`] once each flow's rank, fingerprint value and first choice are in the
/// working memory (`ranks`, `prio`, `take`: 1 the VM's established connection, fingerprinted,
/// [`LEFT_OUT_TCP`], or 0; `by_prio` the carried values then the connections'; `all` every
/// flow's local index): flows are otherwise read by index through `flow`, only the
/// candidates the room can take and the ones made exact (a live port past the cap
/// materialises those alone, [`plan_past_live`]).
#[allow(
    clippy::too_many_lines,
    clippy::many_single_char_names,
    reason = "one budget in order; s flow, i index, f family, c cost, t choice, v value"
)]
// Out of line: its two callers would each inline a copy (the driver image has a size budget).
#[inline(never)]
fn plan_chosen(
    w: &mut Work,
    room: usize,
    rules_version: u32,
    salt: [u64; 2],
    carried: &Carried<'_>,
    // `by_prio` is sorted already (a live port's, from its kept set: `FpCache::set`).
    sorted: bool,
    // (A `dyn`: one copy of the planner for both sources, read for the candidates only.)
    flow: &dyn Fn(u32) -> Option<SavedFlow>,
) -> Result<Option<Plan>, Error> {
    let Work {
        all: dicts,
        exact,
        kept,
        fps,
        order,
        prio: vals,
        by_prio: values,
        gone,
        collide,
        subset: distinct,
        take,
        charged,
        seed,
        radix,
        heap,
        selected,
        ranks,
        ..
    } = w;
    let is_est = |s: &SavedFlow| s.state == FlowState::Established && s.admission == Admission::Vm;
    let left_out_tcp = take.contains(&LEFT_OUT_TCP);
    if !sorted {
        sort_values(values, distinct, radix)?;
    }
    distinct.clear();
    distinct.try_reserve(values.len())?;
    let mut collisions = false;
    for &v in values.iter() {
        if distinct.last() == Some(&v) {
            collisions = true;
        } else {
            distinct.push(v);
        }
    }
    let (k, all_bits) = rice::best_k_bits(distinct);
    let all_bytes = usize::try_from(all_bits.div_ceil(8)).unwrap_or(usize::MAX);
    if all_bytes >= room || distinct.len() > crate::fingerprint::MAX_FINGERPRINTS {
        return Ok(None);
    }
    // Every fingerprint fits: spend the rest on exact records, as `plan_ranked` does (its
    // comments give the costs).
    let saving = usize::from(k / 8);
    // The least an upgrade costs: a tag, two ports, an IPv4 remote written literally and two
    // one-byte ages (see `entry_len`), less what its fingerprint gives back.
    let min_upgrade = (1 + 4 + 4 + 1 + 1usize).saturating_sub(saving).max(1);
    let mut left = room - all_bytes;
    for (c, d) in charged.iter_mut().zip(dicts.addrs.iter()) {
        c.clear();
        c.try_reserve(d.len())?;
        c.resize(d.len(), false);
    }
    let shared = |v: u32| {
        let at = values.partition_point(|&x| x < v);
        values.get(at + 1) == Some(&v)
    };
    // Upgrades flow `i` if its cost fits what is left.
    let mut upgrade = |i: u32, left: &mut usize, take: &mut [u8]| {
        let Some(s) = flow(i) else { return false };
        let s = &s;
        let f = family_slot(s.key.family);
        let local = dicts.local(i, s);
        let first_use = charged.get(f).and_then(|c| c.get(local as usize)) == Some(&false);
        let c = dicts
            .lays
            .get(f)
            .filter(|_| local != NONE)
            .map_or(1 << 40, |lay| entry_len(s, lay, false, rules_version, false))
            + if first_use { addr_len(s.key.family) } else { 0 };
        let v = vals.get(i as usize).copied().unwrap_or(0);
        // Without any repeated value (almost always), no value is shared.
        let back = if is_est(s) && !(collisions && shared(v)) { saving } else { 0 };
        let extra = c.saturating_sub(back);
        if extra > *left {
            return false;
        }
        *left -= extra;
        if let Some(b) = charged.get_mut(f).and_then(|c| c.get_mut(local as usize)) {
            *b = true;
        }
        if let Some(t) = take.get_mut(i as usize) {
            *t = 2;
        }
        true
    };
    if collisions {
        // The values more than one entry holds (a handful at most, in practice one), then
        // their connections by value and rank.
        gone.clear();
        for w in values.windows(2) {
            if let [a, b] = w
                && a == b
                && gone.last() != Some(a)
            {
                gone.try_reserve(1)?;
                gone.push(*a);
            }
        }
        collide.clear();
        for (((i, &r), &v), &t) in (0u32..).zip(ranks.iter()).zip(vals.iter()).zip(take.iter()) {
            if t == 1 && gone.binary_search(&v).is_ok() {
                collide.try_reserve(1)?;
                collide.push((v, (u128::from(r) << 32) | u128::from(i)));
            }
        }
        collide.sort_unstable();
        // All of a value's connections but the last (least valuable) one, or all of them if
        // a carried value holds it too.
        let mut j = 0;
        while let Some(&(v, _)) = collide.get(j) {
            let mut end = j;
            while collide.get(end).is_some_and(|x| x.0 == v) {
                end += 1;
            }
            let keep_one = carried.values.binary_search(&v).is_err();
            let last = if keep_one { end - 1 } else { end };
            for &(_, r) in collide.get(j..last).unwrap_or(&[]) {
                if !upgrade(rank_index(r), &mut left, take) {
                    return Ok(None);
                }
            }
            j = end;
        }
    }
    // Left-out connections (review s4, R4-4). A TCP connection the blob does not fingerprint
    // (a peer opened it, or it is not established) whose key has the value of a written
    // fingerprint would be picked up by it on the destination: the VM confirms it (it has
    // it), so it becomes the VM's (surviving a rule removal the source enforces) and takes
    // the value of the connection the fingerprint stands for (lost). Such a connection is
    // made exact first, like colliding ones: it is then carried, as a flow the destination
    // knows. If the room cannot take it, `plan_ranked` tries further salts.
    if left_out_tcp {
        for i in 0..u32::try_from(take.len()).unwrap_or(u32::MAX) {
            if take.get(i as usize) != Some(&LEFT_OUT_TCP) {
                continue;
            }
            let v = vals.get(i as usize).copied().unwrap_or(0);
            if values.binary_search(&v).is_ok() && !upgrade(i, &mut left, take) {
                return Ok(None);
            }
        }
    }
    // At most `left / min_upgrade` more flows can be upgraded: each step ranks that many of
    // the flows not walked yet (at least MIN_STEP) and walks them in rank order.
    //
    // The first step takes them straight from the flows with a bounded max-heap fed from the
    // end: the flows are in the table's recency order (least recently placed first in each
    // class), so from the end the ranks arrive nearly ascending and almost every flow past the
    // first `step` is refused by one comparison with the heap's top (any order costs at most
    // `n log step`).
    let n_flows = ranks.len();
    let mut walked: Option<u128> = None;
    let mut walked_all = 0;
    if left >= min_upgrade && n_flows > 0 {
        let step = (left / min_upgrade + 1).max(MIN_STEP).min(n_flows);
        heap.clear();
        heap.try_reserve(step)?;
        // Flows of one rank (the same last activity: a port restored from coarse ages, a
        // burst of packets in one clock tick) are fed in table order within their run, so
        // that their keys too arrive ascending (fed from the end, each was the smallest yet
        // and replaced the top: a sift per flow, a fifth of a save when every flow had one
        // rank). The heap keeps the `step` smallest keys whatever the order.
        //
        // Once the heap is full, a flow ranked after its top (`top_rank`) is refused by that
        // one comparison of its rank, before its key is made (most flows, past the first
        // `step`: a tenth of the feed's instructions).
        let mut end = ranks.len().min(n_flows);
        let mut top_rank = u64::MAX;
        while end > 0 {
            let r = ranks.get(end - 1).copied().unwrap_or(0);
            if r > top_rank {
                end -= 1;
                continue;
            }
            let mut start = end - 1;
            while start > 0 && ranks.get(start - 1) == Some(&r) {
                start -= 1;
            }
            for i in start..end {
                #[allow(clippy::cast_possible_truncation, reason = "i < n_flows <= u32::MAX")]
                let x = (u128::from(r) << 32) | u128::from(i as u32);
                if heap.len() < step {
                    heap.push(x);
                } else if let Some(mut top) = heap.peek_mut()
                    && x < *top
                {
                    *top = x;
                }
            }
            if heap.len() == step {
                #[allow(clippy::cast_possible_truncation, reason = "the rank is the high 64 bits")]
                let t = heap.peek().map_or(u64::MAX, |&t| (t >> 32) as u64);
                top_rank = t;
            }
            end = start;
        }
        order.clear();
        order.try_reserve(step)?;
        order.extend(heap.drain());
        order.sort_unstable();
        walked = order.last().copied();
        walked_all = order.len();
        for i in order.iter().map(|&x| rank_index(x)) {
            if left < min_upgrade {
                break;
            }
            if take.get(i as usize) != Some(&2) {
                upgrade(i, &mut left, take);
            }
        }
    }
    // Room left after the first step (many flows did not fit): the flows not walked yet that
    // the room left could still take, ranked a step at a time by selection. An upgrade costs
    // at least its entry less `saving` (`upgrade` adds the local address's first use and
    // gives back less for a shared value), and the room only shrinks: a flow above the room
    // left now can never be upgraded, and is not ranked (before, a room left just below
    // every remaining entry ranked all of them, 256 a step: about one first save in ten at
    // 20,000 connections cost three times the others).
    let floor = |i: u32| {
        let Some(s) = flow(i) else { return usize::MAX };
        let s = &s;
        let local = dicts.local(i, s);
        dicts
            .lays
            .get(family_slot(s.key.family))
            .filter(|_| local != NONE)
            .map_or(usize::MAX, |lay| entry_len(s, lay, false, rules_version, false))
            .saturating_sub(saving)
    };
    order.clear();
    if left >= min_upgrade && walked_all < n_flows {
        let fits = |i: u32| floor(i) <= left;
        let key = |(i, &r): (u32, &u64)| (u128::from(r) << 32) | u128::from(i);
        let n = (0u32..)
            .zip(ranks.iter())
            .map(key)
            .filter(|&x| Some(x) > walked && fits(rank_index(x)))
            .count();
        order.try_reserve(n)?;
        order.extend(
            (0u32..)
                .zip(ranks.iter())
                .map(key)
                .filter(|&x| Some(x) > walked && fits(rank_index(x))),
        );
    }
    let mut rest: &mut [u128] = order;
    *selected = 0;
    while left >= min_upgrade && !rest.is_empty() {
        *selected += rest.len();
        let step = (left / min_upgrade + 1).max(MIN_STEP).min(rest.len());
        if step < rest.len() {
            rest.select_nth_unstable(step - 1);
        }
        let (now, later) = rest.split_at_mut(step);
        now.sort_unstable();
        for i in now.iter().map(|&x| rank_index(x)) {
            if left < min_upgrade {
                break;
            }
            if take.get(i as usize) != Some(&2) {
                upgrade(i, &mut left, take);
            }
        }
        // What the room left can no longer take leaves the candidates.
        let mut kept_n = 0;
        for j in 0..later.len() {
            if later.get(j).is_some_and(|&x| floor(rank_index(x)) <= left) {
                later.swap(kept_n, j);
                kept_n += 1;
            }
        }
        rest = later.get_mut(..kept_n).unwrap_or(&mut []);
    }
    // Exact records keep the source's order (oldest activity first within each class); the
    // values of the connections made exact leave the fingerprints (unless another entry
    // shares the value).
    let mut lost = 0;
    let mut fp_count = 0;
    #[allow(clippy::naive_bytecount, reason = "a few thousand bytes once per save; no dependency")]
    let n_exact = take.iter().filter(|&&t| t == 2).count();
    exact.try_reserve(n_exact)?;
    gone.clear();
    gone.try_reserve(n_exact)?;
    for ((i, &t), &v) in (0u32..).zip(take.iter()).zip(vals.iter()) {
        match t {
            2 => {
                // Counted above: within the capacity. A flow the source cannot give again
                // (never: the plan read it) would be neither written nor counted.
                if let Some(s) = flow(i)
                    && exact.len() < exact.capacity()
                {
                    exact.push(s);
                    if is_est(&s) {
                        gone.push(v);
                    }
                }
            }
            1 => fp_count += 1,
            _ => lost += 1,
        }
    }
    gone.sort_unstable();
    // A value leaves when every entry holding it was made exact: `gone` keeps those values
    // (in place, sorted), then the distinct values are copied without them.
    let mut kept_gone = 0;
    let mut g = 0;
    while let Some(&v) = gone.get(g) {
        let mut m = 0;
        while gone.get(g) == Some(&v) {
            g += 1;
            m += 1;
        }
        let n = if collisions {
            let at = values.partition_point(|&x| x < v);
            values.get(at..).map_or(0, |r| r.iter().take_while(|&&x| x == v).count())
        } else {
            1
        };
        if n == m {
            if let Some(d) = gone.get_mut(kept_gone) {
                *d = v;
            }
            kept_gone += 1;
        }
    }
    gone.truncate(kept_gone);
    fps.try_reserve(distinct.len())?;
    // The coding's size is counted as the values are kept (`rice::bits`, without a second
    // pass over them): each kept value's gap from the one kept before it.
    let mut fp_bits = 0u64;
    let mut prev: Option<u32> = None;
    let mut r = 0;
    for &v in distinct.iter() {
        while gone.get(r).is_some_and(|&x| x < v) {
            r += 1;
        }
        if gone.get(r) != Some(&v) {
            fps.push(v);
            fp_bits += rice::code_bits(prev, v, k);
            prev = Some(v);
        }
    }
    // The dictionaries of what is written, and its entries' bytes.
    kept.build(exact, true, *seed)?;
    let mut entries = [0usize; 2];
    for (i, s) in exact.iter().enumerate() {
        if let Some(e) = entries.get_mut(family_slot(s.key.family)) {
            *e += kept.entry_len(i, s, rules_version, false).unwrap_or(0);
        }
    }
    Ok(Some(Plan {
        salt,
        all_exact: false,
        k,
        fingerprinted: fp_count + carried.flows,
        lost,
        counters: false,
        entries,
        fp_bytes: usize::try_from(fp_bits.div_ceil(8)).unwrap_or(usize::MAX),
    }))
}

/// Salts [`plan_ranked`] tries before it accepts a fingerprint collision among the connections.
const SALT_TRIES: u32 = 8;

/// The salt tried after `salt` when two connections' fingerprints collide: a fixed step of the
/// second key (odd, so 2^64 steps pass before a repeat), the first key unchanged.
const fn next_salt(salt: [u64; 2]) -> [u64; 2] {
    [salt[0], salt[1].wrapping_add(0x9e37_79b9_7f4a_7c15)]
}

fn write_rule(w: &mut Writer<'_>, r: &AllowRule) {
    w.bytes(&super::rule::rule_to_bytes(r));
}

/// Longest compact entry: tag, protocol, a 2-byte local index, a literal IPv6 remote, both
/// ports, a rule-version delta (5 bytes for 32 bits), the two age varints and the four
/// counters (10 bytes each for 64 bits).
pub(super) const MAX_ENTRY: usize = 1 + 1 + 2 + 16 + 4 + 5 + 2 * 10 + 4 * 10;

/// Writes `s`'s compact entry at `e`'s position.
#[inline]
fn write_compact(
    e: &mut Entry<'_>,
    s: &impl EntryFlow,
    ids: (u32, u32, &Layout),
    rules_version: u32,
    counters: bool,
) {
    let mut b = [0u8; MAX_ENTRY];
    let n = compact_entry(&mut b, s, ids, rules_version, counters);
    e.bytes(b.get(..n).unwrap_or(&[]));
}

/// Writes `s`'s compact entry at the start of `b`; returns its length. The one definition of
/// an entry's bytes (the at-cap save writes its entries with it straight into its buffer).
#[allow(
    clippy::inline_always,
    reason = "once per flow; inlined, the at-cap save's constant layout folds away (callgrind: \
              about 30 instructions a flow fewer)"
)]
#[inline(always)]
fn compact_entry(
    b: &mut [u8; MAX_ENTRY],
    s: &impl EntryFlow,
    (local, remote, lay): (u32, u32, &Layout),
    rules_version: u32,
    counters: bool,
) -> usize {
    let key = s.key();
    let kind = match s.state() {
        FlowState::Active if key.protocol == protocol::UDP => compact::KIND_ACTIVE_UDP,
        FlowState::Active => compact::KIND_ACTIVE_OTHER,
        st => st.to_wire(),
    };
    let (adm, delta) = match s.admission() {
        Admission::Vm => (compact::ADM_VM, None),
        Admission::Monitor => (compact::ADM_MONITOR, None),
        Admission::Rule(v) if v == rules_version => (compact::ADM_RULE_CURRENT, None),
        Admission::Rule(v) => (compact::ADM_RULE_OTHER, Some(rules_version.wrapping_sub(v))),
    };
    let literal = remote == NONE;
    let tag = kind
        | (adm << compact::ADMISSION_SHIFT)
        | ((s.fin_seen() & 0b11) << compact::FIN_SHIFT)
        | if literal { compact::REMOTE_LITERAL } else { 0 };
    // A local cursor (in a register), one check per write.
    let mut e = Entry { b, n: 0 };
    e.u8(tag);
    if kind == compact::KIND_ACTIVE_OTHER {
        e.u8(key.protocol);
    }
    e.index(local, lay.lw);
    if literal {
        let r = &key.remote_addr;
        match key.family {
            IpFamily::V4 => e.bytes(&[r[0], r[1], r[2], r[3]]),
            IpFamily::V6 => e.bytes(r),
        }
    } else {
        e.index(remote, lay.rw);
    }
    let [l0, l1] = key.local_port.to_le_bytes();
    let [r0, r1] = key.remote_port.to_le_bytes();
    e.bytes(&[l0, l1, r0, r1]);
    if let Some(d) = delta {
        e.varint(u64::from(d));
    }
    let (last_s, dur_m) = coarse_ages(s);
    e.varint(last_s);
    e.varint(dur_m);
    if counters {
        for v in s.counters() {
            e.varint(v);
        }
    }
    e.n
}

/// The compact entries of one record being written in place.
struct Entry<'a> {
    b: &'a mut [u8],
    n: usize,
}

impl Entry<'_> {
    #[inline]
    fn u8(&mut self, v: u8) {
        if let Some(d) = self.b.get_mut(self.n) {
            *d = v;
            self.n += 1;
        }
    }
    #[inline]
    fn bytes(&mut self, v: &[u8]) {
        if let Some(d) = self.b.get_mut(self.n..self.n + v.len()) {
            d.copy_from_slice(v);
            self.n += v.len();
        }
    }
    #[inline]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            #[allow(clippy::cast_possible_truncation, reason = "low 7 bits")]
            self.u8((v as u8) | 0x80);
            v >>= 7;
        }
        #[allow(clippy::cast_possible_truncation, reason = "v < 0x80")]
        self.u8(v as u8);
    }
    #[inline]
    fn index(&mut self, i: u32, width: usize) {
        let b = i.to_le_bytes();
        match width {
            1 => self.u8(b[0]),
            2 => self.bytes(&[b[0], b[1]]),
            _ => {}
        }
    }
}

/// Appends to a vector whose capacity was reserved up front (no allocation while writing).
struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    #[inline]
    fn bytes(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }
    #[inline]
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    #[inline]
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    #[inline]
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    #[inline]
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn record(&mut self, kind: u16, payload: usize) {
        self.u16(kind);
        self.u16(0);
        self.u32(u32::try_from(payload).unwrap_or(u32::MAX));
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::{Carried, SavedFlow, Work, plan_with, varint_len};
    use crate::fingerprint::fingerprint;
    use crate::flow::{Admission, FlowKey, FlowState, Opener};
    use crate::packet::{Direction, PacketMeta, protocol};

    fn established(remote: u32) -> SavedFlow {
        let [a, b, c, d] = remote.to_be_bytes();
        let key = FlowKey::of(&PacketMeta::ipv4(
            Direction::Outbound,
            protocol::TCP,
            [10, 0, 0, 2],
            40_000,
            [a, b, c, d],
            443,
            0x10,
            100,
        ));
        SavedFlow {
            key,
            state: FlowState::Established,
            opener: Opener::Vm,
            admission: Admission::Vm,
            fin_seen: 0,
            packets: [1, 1],
            bytes: [100, 100],
            first_age: 0,
            last_age: 0,
        }
    }

    /// Two connections whose fingerprints collide under `salt`: a birthday search over remote
    /// addresses (300,000 keys hold about 10 pairs of equal 32-bit values).
    fn colliding_pair(salt: [u64; 2]) -> (SavedFlow, SavedFlow) {
        let mut values: Vec<(u32, u32)> = (0x0a00_0000u32..0x0a00_0000 + 300_000)
            .map(|remote| (fingerprint(salt, &established(remote).key), remote))
            .collect();
        values.sort_unstable();
        let pair = values.windows(2).find_map(|w| match w {
            [a, b] if a.0 == b.0 => Some((a.1, b.1)),
            _ => None,
        });
        let (first, second) =
            pair.expect("a pair among 300,000 keys (the search is deterministic)");
        (established(first), established(second))
    }

    #[test]
    fn two_connections_with_one_fingerprint_under_the_first_salt_are_both_carried() {
        let salt = [0x5653_464c, 7];
        let (x, y) = colliding_pair(salt);
        let flows: Vec<SavedFlow> = alloc::vec![x, y];
        // Room for fingerprints only: both connections go as fingerprints.
        let carried = Carried { values: &[], flows: 0 };
        let mut w = Work { flows, ..Work::default() };
        let p = plan_with(&mut w, 16, 1, salt, &carried, true).expect("plan");
        assert_eq!(p.fingerprinted, 2);
        assert_eq!(p.lost, 0);
        assert_eq!(w.fps.len(), 2, "one value per connection: each is picked up on its own");
    }

    /// A random mix of flows for the planners: established connections of the VM's (the
    /// fingerprinted kind) and of peers', handshakes, UDP and other protocols, IPv4 and IPv6,
    /// several VM addresses, ages with many ties, rule admissions at other versions.
    fn arb_flows(n: usize) -> impl proptest::strategy::Strategy<Value = Vec<SavedFlow>> {
        use proptest::prelude::*;
        proptest::collection::vec(
            (any::<u64>(), 0u8..10, 0u8..4, any::<bool>(), 0u64..6, 0u64..4_000),
            0..n,
        )
        .prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(j, (r, kind, adm, v6, last, extra))| {
                    let mut s = established(0x0a00_0000 + u32::try_from(j).unwrap_or(0));
                    let b = r.to_le_bytes();
                    s.key.remote_addr[..4].copy_from_slice(&b[..4]);
                    s.key.local_addr[3] = 2 + (b[4] & 3);
                    s.key.local_port = u16::from_le_bytes([b[5], b[6]]);
                    if v6 {
                        s.key.family = crate::packet::IpFamily::V6;
                        s.key.local_addr[8..].copy_from_slice(&r.to_be_bytes());
                        s.key.remote_addr[4..12].copy_from_slice(&r.rotate_left(7).to_le_bytes());
                    }
                    (s.state, s.key.protocol) = match kind {
                        0..=5 => (FlowState::Established, protocol::TCP),
                        6 => (FlowState::SynSent, protocol::TCP),
                        7 => (FlowState::FinWait, protocol::TCP),
                        8 => (FlowState::Active, protocol::UDP),
                        _ => (FlowState::Active, 47),
                    };
                    (s.opener, s.admission) = match adm {
                        0 | 1 => (Opener::Vm, Admission::Vm),
                        2 => (Opener::Remote, Admission::Rule(1)),
                        _ => (Opener::Remote, Admission::Rule(u32::from(b[7]))),
                    };
                    // Ages in whole seconds, coarse, so that many flows tie in rank.
                    s.last_age = last * crate::time::TICKS_PER_SECOND;
                    s.first_age = s.last_age + extra * crate::time::TICKS_PER_SECOND;
                    s
                })
                .collect()
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 300,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Issue 18 item 4: past the cap the planner ranks only the best candidates and sorts
        /// fingerprint values alone; it chooses exactly what the planner that ranks and sorts
        /// every flow chooses (the same exact records, fingerprints, salt, Rice parameter and
        /// counts), whatever the room, the mix of flows and the carried values.
        #[test]
        fn the_fast_planner_chooses_what_the_ranked_planner_chooses(
            flows in arb_flows(700),
            room in 0usize..6_000,
            carried in proptest::collection::vec(proptest::prelude::any::<u32>(), 0..40),
            salt in proptest::prelude::any::<[u64; 2]>(),
        ) {
            let mut carried = carried;
            carried.sort_unstable();
            carried.dedup();
            // A collision under the first salt is where the two differ by design (see
            // `plan_upgrades`; tested below): about one case in 10^4 here.
            let mut all: Vec<u32> = flows
                .iter()
                .filter(|s| s.state == FlowState::Established && s.admission == Admission::Vm)
                .map(|s| fingerprint(salt, &s.key))
                .chain(carried.iter().copied())
                .collect();
            all.sort_unstable();
            proptest::prop_assume!(all.windows(2).all(|w| w[0] != w[1]));
            // Nor a left-out TCP connection's key with a written value (R4-4: the fast planner
            // makes it exact, the ranked one tries another salt).
            proptest::prop_assume!(flows.iter().all(|s| {
                (s.state == FlowState::Established && s.admission == Admission::Vm)
                    || s.key.protocol != protocol::TCP
                    || all.binary_search(&fingerprint(salt, &s.key)).is_err()
            }));
            let c = Carried { values: &carried, flows: carried.len() + 3 };
            let mut fast = Work { flows: flows.clone(), ..Work::default() };
            let mut ranked = Work { flows, ..Work::default() };
            let a = super::plan_with(&mut fast, room, 1, salt, &c, true);
            let b = super::plan_with(&mut ranked, room, 1, salt, &c, false);
            proptest::prop_assert_eq!(&a, &b);
            proptest::prop_assert_eq!(&fast.exact, &ranked.exact);
            proptest::prop_assert_eq!(&fast.fps, &ranked.fps);
            // And a second plan in the same working memory (as a port's encoder reuses it).
            let again = super::plan_with(&mut fast, room, 1, salt, &c, true);
            proptest::prop_assert_eq!(&again, &b);
            proptest::prop_assert_eq!(&fast.exact, &ranked.exact);
            proptest::prop_assert_eq!(&fast.fps, &ranked.fps);
        }
    }

    #[test]
    fn the_fast_planner_chooses_what_the_ranked_planner_chooses_past_the_table() {
        // 20,000 established connections of the VM's, as issue 18's target: every
        // fingerprint fits, the room upgrades the most recent ones.
        let flows: Vec<SavedFlow> = (0..20_000u32)
            .map(|j| {
                let mut s = established(0xc633_0000 + j);
                s.last_age = u64::from(20_000 - j) * 10_000;
                s.first_age = s.last_age;
                s
            })
            .collect();
        let c = Carried { values: &[], flows: 0 };
        for room in [45_000, 55_000, 60_000] {
            let mut fast = Work { flows: flows.clone(), ..Work::default() };
            let mut ranked = Work { flows: flows.clone(), ..Work::default() };
            let a = super::plan_with(&mut fast, room, 1, [3, 4], &c, true).expect("plans");
            let b = super::plan_with(&mut ranked, room, 1, [3, 4], &c, false).expect("plans");
            assert_eq!(a, b, "room {room}");
            assert_eq!(fast.exact, ranked.exact);
            assert_eq!(fast.fps, ranked.fps);
        }
    }

    /// Issue 18 item 4 (a port's first save past the cap, p99): when the first selection step
    /// leaves a little room that no remaining flow's upgrade fits (room left 9 bytes, every
    /// remaining entry 10), the planner used to rank every remaining flow anyway, 256 at a
    /// time (a `select_nth_unstable` over all of them per step: about one first save in ten at
    /// 20,000 connections, 2.5-3 ms instead of 1). A flow whose upgrade costs more than the
    /// room left can never be upgraded later (the room only shrinks): it is not ranked.
    #[test]
    fn the_planner_ranks_no_flow_the_room_left_cannot_take() {
        // 4,000 established connections of the VM's, idle for 200 s and more (two-byte age
        // varints: an upgrade costs one byte more than the least any upgrade costs).
        let flows: Vec<SavedFlow> = (0..4_000u32)
            .map(|j| {
                let mut s = established(0xc633_0000 + j);
                s.last_age = (200 + u64::from(j % 300)) * crate::time::TICKS_PER_SECOND;
                s.first_age = s.last_age;
                s
            })
            .collect();
        let c = Carried { values: &[], flows: 0 };
        let mut worst = 0;
        // Consecutive rooms: the room the first step leaves takes every value below an entry.
        for room in 12_000..12_040 {
            let mut fast = Work { flows: flows.clone(), ..Work::default() };
            let mut ranked = Work { flows: flows.clone(), ..Work::default() };
            let a = super::plan_with(&mut fast, room, 1, [3, 4], &c, true).expect("plans");
            let b = super::plan_with(&mut ranked, room, 1, [3, 4], &c, false).expect("plans");
            assert_eq!(a, b, "room {room}");
            assert_eq!(fast.exact, ranked.exact, "room {room}");
            worst = worst.max(fast.selected);
        }
        assert!(worst <= 2 * super::MIN_STEP, "later selection steps handled {worst} flows");
    }

    #[test]
    fn colliding_connections_are_made_exact_under_the_first_salt_when_the_room_takes_them() {
        let salt = [0x5653_464c, 7];
        let (x, y) = colliding_pair(salt);
        // Many more connections, so that the room cannot take every flow exactly.
        let mut flows: Vec<SavedFlow> = (0..600u32).map(|j| established(0xc633_0000 + j)).collect();
        for (j, s) in flows.iter_mut().enumerate() {
            s.last_age = 10_000_000 * (1 + j as u64);
            s.first_age = s.last_age;
        }
        // The pair is the least valuable: no rank-order upgrade would reach it.
        let (mut x, mut y) = (x, y);
        x.last_age = u64::MAX >> 2;
        y.last_age = (u64::MAX >> 2) - 1;
        x.first_age = x.last_age;
        y.first_age = y.last_age;
        flows.push(x);
        flows.push(y);
        let carried = Carried { values: &[], flows: 0 };
        for room in [2_000, 3_000] {
            let mut w = Work { flows: flows.clone(), ..Work::default() };
            let p = plan_with(&mut w, room, 1, salt, &carried, true).expect("plan");
            assert_eq!(
                p.salt, salt,
                "no second salt: the collision is resolved by an exact record"
            );
            assert_eq!(p.lost, 0);
            assert_eq!(p.fingerprinted + w.exact.len(), flows.len(), "every connection carried");
            // y (more valuable) is exact; x keeps the value alone.
            assert!(w.exact.contains(&y) && !w.exact.contains(&x), "room {room}");
            assert!(w.fps.binary_search(&fingerprint(salt, &x.key)).is_ok());
            assert_eq!(w.fps.len(), p.fingerprinted, "one value per fingerprinted connection");
        }
        // With a carried value equal to theirs, both are made exact.
        let shared_value = [fingerprint(salt, &x.key)];
        let carried = Carried { values: &shared_value, flows: 1 };
        let mut w = Work { flows: flows.clone(), ..Work::default() };
        let p = plan_with(&mut w, 3_000, 1, salt, &carried, true).expect("plan");
        assert!(w.exact.contains(&x) && w.exact.contains(&y));
        assert_eq!(p.lost, 0);
        assert_eq!(p.fingerprinted + w.exact.len(), flows.len() + 1);
    }

    #[test]
    fn the_value_sort_sorts_even_values_that_all_share_a_bucket() {
        let mut v: Vec<u32> = (0..3_000u32).rev().map(|i| i % 1_000).collect();
        let mut want = v.clone();
        want.sort_unstable();
        let (mut tmp, mut hist) = (Vec::new(), Vec::new());
        super::sort_values(&mut v, &mut tmp, &mut hist).expect("sorts");
        assert_eq!(v, want);
    }

    #[test]
    fn the_value_sort_sorts() {
        let mut x = 0x1234_5678_9abc_def1u64;
        for n in [0usize, 1, 255, 256, 257, 1_000, 5_000, 20_000, 70_000] {
            let mut v: Vec<u32> = (0..n)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Some repeats and some shared digits.
                    if i % 7 == 0 { 42 } else { (x >> 32) as u32 & 0xffff_f0ff }
                })
                .collect();
            let mut want = v.clone();
            want.sort_unstable();
            let (mut tmp, mut hist) = (Vec::new(), Vec::new());
            super::sort_values(&mut v, &mut tmp, &mut hist).expect("sorts");
            assert_eq!(v, want, "n {n}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 300,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Review (rv-codec) of the collision path the equivalence property leaves out: carried
        /// values equal to some live connections' fingerprints (a collision under the first
        /// salt that the planner must resolve without a second salt). Whatever the room, every
        /// VM connection is exact or has its value among the fingerprints; when the fast
        /// planner resolves the collision, no fingerprinted connection shares its value with
        /// another entry (carried or connection), and every other flow is exact or counted lost.
        #[test]
        fn colliding_with_carried_values_every_connection_is_carried_on_its_own(
            flows in arb_flows(400),
            room in 0usize..6_000,
            pick in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 1..8),
            extra in proptest::collection::vec(proptest::prelude::any::<u32>(), 0..8),
            salt in proptest::prelude::any::<[u64; 2]>(),
        ) {
            let is_est =
                |s: &SavedFlow| s.state == FlowState::Established && s.admission == Admission::Vm;
            let est: Vec<u32> =
                flows.iter().filter(|s| is_est(s)).map(|s| fingerprint(salt, &s.key)).collect();
            proptest::prop_assume!(!est.is_empty());
            let mut carried: Vec<u32> =
                pick.iter().map(|i| est[i.index(est.len())]).chain(extra).collect();
            carried.sort_unstable();
            carried.dedup();
            let c = Carried { values: &carried, flows: carried.len() };
            let mut w = Work { flows: flows.clone(), ..Work::default() };
            w.exact.clear();
            w.fps.clear();
            w.all.clear();
            let fits = super::fit_all(&mut w, room, 1, super::rice::bytes(&carried, super::rice::best_k(&carried)));
            let Ok(None) = fits else { return Ok(()) };
            if w.all.idx.len() != w.flows.len() {
                w.all.build(&w.flows, false, w.seed).expect("dictionaries");
            }
            let Ok(Some(p)) = super::plan_upgrades(&mut w, room, 1, salt, &c) else { return Ok(()) };
            let exact: alloc::collections::BTreeSet<FlowKey> = w.exact.iter().map(|s| s.key).collect();
            let mut fingerprinted = 0usize;
            for s in &flows {
                if exact.contains(&s.key) {
                    continue;
                }
                if is_est(s) {
                    fingerprinted += 1;
                    let v = fingerprint(salt, &s.key);
                    proptest::prop_assert!(w.fps.binary_search(&v).is_ok(), "a connection lost");
                    proptest::prop_assert!(carried.binary_search(&v).is_err(), "shares a carried value");
                    let holders = flows
                        .iter()
                        .filter(|o| is_est(o) && !exact.contains(&o.key) && fingerprint(salt, &o.key) == v)
                        .count();
                    proptest::prop_assert_eq!(holders, 1, "two fingerprinted connections share a value");
                }
            }
            proptest::prop_assert_eq!(p.fingerprinted, fingerprinted + carried.len());
            proptest::prop_assert_eq!(p.lost + fingerprinted + w.exact.len(), flows.len());
            proptest::prop_assert_eq!(p.salt, salt);
        }
    }

    #[test]
    fn varint_lengths() {
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(127), 1);
        assert_eq!(varint_len(128), 2);
        assert_eq!(varint_len(16_383), 2);
        assert_eq!(varint_len(16_384), 3);
        assert_eq!(varint_len(u64::MAX), 10);
    }
}
