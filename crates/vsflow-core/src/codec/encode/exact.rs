//! The save of a live port whose flows all fit as exact records, written straight from the
//! port's table (issue 18 item 4: a port at the 4,096-connection cap, save p99 <= 100 us).
//!
//! The general path ([`super::encode_source`] through [`super::Source::flows`]) first copies
//! every flow into a [`SavedFlow`] (104 bytes each, about 430 KB at 4,096 flows), then reads
//! that copy again to build the dictionaries, again for the entries' lengths, and once per
//! address family to write them. A port whose flows all fit needs none of the planner's
//! choices, so this path reads the table itself, once:
//!
//! 1. [`plan_live`] walks the table's LRU lists in the order every save writes (class by
//!    class, least recently used first). For each flow it finds its local address's and its
//!    remote's ids (the dictionaries, the remotes' use counts) and writes its entry as it would
//!    be if the VM had one address and no remote were shared (no local index, the remote
//!    literal): the *provisional* entry, in a buffer per family kept by the encoder. The
//!    dictionaries' layouts, the shared remotes' indexes and so the entries' exact lengths
//!    then follow from counts alone. Only when the per-flow counters might fit does it read
//!    the flows again (by slot) for their lengths.
//! 2. [`write_live`] writes each family's entries: where that family's VM has one address and
//!    no remote is shared (a port at the cap with distinct peers), the provisional entries
//!    are the entries, copied whole; otherwise each is rewritten from its provisional form
//!    (the tag's literal bit, a local index inserted, a shared remote's address replaced by
//!    its index; the counters appended from the flow's slot when they fit).
//!
//! The caller holds the port's lock across both passes (the driver's `lock_whole`: one
//! consistent port, every shard merged), so the table cannot change between them. The bytes
//! are exactly those of the general path (the tests below hold the two to each other over
//! random ports); when the flows do not all fit, [`plan_live`] says so and the general path
//! (the planner, fingerprints) runs instead. Its working memory ([`Kept`]: the provisional
//! entries, each flow's slot and ids, the remote index; about 30 bytes a flow) is kept by the
//! port's encoder across saves: a second save of the same port allocates nothing, and the
//! 104-byte copies are never made.

use alloc::vec::Vec;
use core::hash::BuildHasher;

use foldhash::fast::FixedState;

use super::{
    Carried, Dicts, Entry, EntryFlow, Layout, MAX_ENTRY, MIN_ENTRY_LEN, NONE, Plan, Work,
    compact_entry, counters_len, local_id,
};
use crate::codec::format::compact;
use crate::codec::{SavedFlow, rice};
use crate::error::Error;
use crate::flow::{Admission, FlowKey, FlowRecord, FlowState, FlowTable, TimeoutClass};
use crate::packet::IpFamily;
use crate::time::Tick;

/// A live table slot as of the save instant: gives the entry the bytes its [`SavedFlow`]
/// would ([`SavedFlow::from_record`]).
pub(super) struct LiveFlow<'a> {
    pub(super) key: &'a FlowKey,
    pub(super) record: &'a FlowRecord,
    pub(super) now: Tick,
}

impl EntryFlow for LiveFlow<'_> {
    #[inline]
    fn key(&self) -> &FlowKey {
        self.key
    }
    #[inline]
    fn state(&self) -> FlowState {
        self.record.state
    }
    #[inline]
    fn admission(&self) -> Admission {
        self.record.admission
    }
    #[inline]
    fn fin_seen(&self) -> u8 {
        self.record.fin_seen
    }
    #[inline]
    fn counters(&self) -> [u64; 4] {
        let r = self.record;
        [r.packets[0], r.packets[1], r.bytes[0], r.bytes[1]]
    }
    #[inline]
    fn ages(&self) -> (Tick, Tick) {
        SavedFlow::ages(self.record, self.now)
    }
}

/// The layout of a provisional entry: no local index, every remote literal.
const PROVISIONAL: Layout = Layout { lw: 0, rw: 1 };

/// One flow of the save, in save order within its family.
#[derive(Clone, Copy, Debug, Default)]
struct Flow {
    /// Its table slot.
    slot: u32,
    /// Its local address's dictionary index.
    local: u32,
    /// Its remote's position in the family's remotes (`Dicts::remotes`), NONE if the index
    /// was full (never: it holds twice the flows).
    remote: u32,
    /// Its provisional entry's length.
    len: u32,
}

/// What the at-cap save keeps from one save to the next (in the port's encoder): per family,
/// the provisional entries, the flows, the remote index.
#[derive(Debug, Default)]
pub(super) struct Kept {
    /// Provisional entries; `used` bytes of them are this save's (the rest is room, so that
    /// an entry is written in place without a length check per byte growing the vector).
    entries: [Vec<u8>; 2],
    used: [usize; 2],
    flows: [Vec<Flow>; 2],
    /// Per family, the remotes' bitmaps (`Family::seen`).
    seen: [Vec<u64>; 2],
    index: [RemoteIndex; 2],
}

impl Kept {
    /// Heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        let mut n = 0;
        for f in 0..2 {
            n += self.entries[f].capacity()
                + self.flows[f].capacity() * core::mem::size_of::<Flow>()
                + self.seen[f].capacity() * 8
                + self.index[f].slots.capacity() * 4;
        }
        n
    }
}

/// A map from remote addresses to their ids (positions in the family's remotes) for one save:
/// open addressing with linear probing, at most half full, one `u32` a slot (the hash's top
/// 16 bits, then the id + 1; 0 is empty), keyed by the port's per-boot seed (peers choose
/// their addresses: they cannot aim them at one run of slots). At 4,096 flows it is 32 KiB,
/// cleared per save (a `memset`), so its probes stay in the first-level cache where the
/// general path's 12-byte slots (96 KiB) did not.
#[derive(Debug, Default)]
struct RemoteIndex {
    slots: Vec<u32>,
    mask: usize,
    hasher: FixedState,
}

/// Most flows of one family the index takes (ids + 1 fit its 16 low bits).
const MAX_INDEXED: usize = 0xffff - 1;

impl RemoteIndex {
    /// Starts a save of at most `n` (<= [`MAX_INDEXED`]) remotes under `seed`.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`].
    fn reset(&mut self, n: usize, seed: u64) -> Result<(), Error> {
        let want = n.saturating_mul(2).next_power_of_two().max(16);
        if self.slots.len() < want {
            self.slots.try_reserve_exact(want - self.slots.len())?;
            self.slots.resize(want, 0);
        }
        if let Some(used) = self.slots.get_mut(..want) {
            used.fill(0);
        }
        self.mask = want - 1;
        self.hasher = FixedState::with_seed(seed);
        Ok(())
    }

    /// The id of `addr`, or `id` if it is new (then recorded): (the id, whether new).
    /// `known(j)` is the address recorded under id `j` (the caller keeps them).
    #[inline]
    fn find_or_insert(
        &mut self,
        addr: &[u8; 16],
        id: u32,
        known: impl Fn(u32) -> Option<[u8; 16]>,
    ) -> (u32, bool) {
        if id as usize > MAX_INDEXED {
            // Past what a slot's 16 bits hold (never: ports this large take the general path).
            return (NONE, false);
        }
        let h = self.hasher.hash_one(u128::from_ne_bytes(*addr));
        #[allow(clippy::cast_possible_truncation, reason = "a hash, masked")]
        let mut i = h as usize & self.mask;
        #[allow(clippy::cast_possible_truncation, reason = "the top 16 bits")]
        let tag = ((h >> 48) as u32) << 16;
        // At most half full: an empty slot comes before the probe wraps around.
        for _ in 0..=self.mask {
            let Some(slot) = self.slots.get_mut(i) else { break };
            if *slot == 0 {
                *slot = tag | (id + 1);
                return (id, true);
            }
            if *slot & 0xffff_0000 == tag {
                let j = (*slot & 0xffff).wrapping_sub(1);
                if known(j).as_ref() == Some(addr) {
                    return (j, false);
                }
            }
            i = (i + 1) & self.mask;
        }
        (NONE, false)
    }
}

/// One family's part of pass 1: where its flows' ids, provisional entries and records go.
struct Family<'a> {
    dict: &'a mut Vec<[u8; 16]>,
    local_index: &'a mut hashbrown::HashTable<u32>,
    flows: &'a mut Vec<Flow>,
    entries: &'a mut Vec<u8>,
    used: &'a mut usize,
    /// Two bitmaps of `bits` bits each, one after the other: a remote's hash bit seen once,
    /// seen again.
    seen: &'a mut Vec<u64>,
    bits: usize,
    /// Flows whose remote's bit was seen before (at most that many remotes are shared).
    hits: usize,
    /// Its vectors are readied by its first flow: a port of one family holds nothing for
    /// the other.
    ready: bool,
    /// The last flow's local address and its index (consecutive flows of one VM address
    /// skip the lookup).
    last_local: Option<([u8; 16], u32)>,
}

impl Family<'_> {
    /// Records one flow (see [`build_live`]); `false` if it cannot be written exactly here.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`].
    #[allow(
        clippy::inline_always,
        reason = "once per flow, the loop's whole body: measured (callgrind, the call and its \
                  result cost about 20 instructions a flow)"
    )]
    #[inline(always)]
    fn add(
        &mut self,
        slot: u32,
        live: &LiveFlow<'_>,
        n: usize,
        rules_version: u32,
        hasher: &FixedState,
    ) -> Result<bool, Error> {
        if !self.ready {
            self.flows.clear();
            self.flows.try_reserve(n)?;
            // 16 bits a flow: about one remote in 16 shares its bit with an earlier one.
            self.bits = n.saturating_mul(16).next_power_of_two().max(64);
            let words = 2 * self.bits / 64;
            self.seen.clear();
            self.seen.try_reserve_exact(words)?;
            self.seen.resize(words, 0);
            self.ready = true;
        }
        // Reserved for `n`: a push past the capacity (more flows on the lists than the table
        // counts) would allocate infallibly.
        if self.flows.len() == self.flows.capacity() || self.flows.len() >= n {
            return Ok(false);
        }
        let a = live.key.local_addr;
        let local = match self.last_local {
            Some((la, i)) if la == a => i,
            _ => {
                let i = local_id(self.dict, self.local_index, a)?;
                self.last_local = Some((a, i));
                i
            }
        };
        if local == NONE {
            return Ok(false);
        }
        // The remote's bit: a remote whose bit was not seen before is not shared with an
        // earlier flow (see `resolve` for the others).
        let h = hasher.hash_one(u128::from_ne_bytes(live.key.remote_addr));
        #[allow(clippy::cast_possible_truncation, reason = "a hash, masked")]
        let bit = h as usize & (self.bits - 1);
        let mask = 1u64 << (bit % 64);
        if let Some(once) = self.seen.get_mut(bit / 64) {
            if *once & mask == 0 {
                *once |= mask;
            } else {
                self.hits += 1;
                if let Some(again) = self.seen.get_mut(self.bits / 64 + bit / 64) {
                    *again |= mask;
                }
            }
        }
        // The provisional entry, in place: room for the longest first.
        let at = *self.used;
        if self.entries.len() < at + MAX_ENTRY {
            let grow = self.entries.len().max(n.saturating_mul(16)).max(MAX_ENTRY);
            self.entries.try_reserve_exact(grow)?;
            self.entries.resize(self.entries.len() + grow, 0);
        }
        let Some(room) = self.entries.get_mut(at..).and_then(|b| b.first_chunk_mut()) else {
            return Ok(false);
        };
        let len = compact_entry(room, live, (0, NONE, &PROVISIONAL), rules_version, false);
        *self.used = at + len;
        #[allow(clippy::cast_possible_truncation, reason = "a bit below 2^20; an entry's length")]
        self.flows.push(Flow { slot, local, remote: bit as u32, len: len as u32 });
        Ok(true)
    }
}

/// After pass 1, the remotes of `flows` (whose `remote` holds its bit in `bitmaps`) that could be
/// shared: every flow whose bit was seen twice (its remote may be another's) is looked up in
/// `index` by its address, in save order, which gives `remotes` (first-seen order, use
/// counts) and the flow its id there; every other flow's remote is not shared (NONE).
/// Returns the remotes two flows or more share.
///
/// # Errors
/// [`Error::OutOfMemory`].
#[allow(clippy::too_many_arguments, reason = "one family's part of the dictionaries")]
fn resolve(
    flows: &mut [Flow],
    bitmaps: &[u64],
    bits: usize,
    hits: usize,
    remotes: &mut Vec<([u8; 16], u32, u32)>,
    index: &mut RemoteIndex,
    table: &FlowTable,
    seed: u64,
) -> Result<usize, Error> {
    remotes.clear();
    // At most `hits` bits were seen again, each by at most `hits + 1` flows in all.
    let most = (2 * hits).min(flows.len());
    remotes.try_reserve(most)?;
    index.reset(most, seed)?;
    let mut shared = 0;
    let twice = bitmaps.get(bits / 64..).unwrap_or(&[]);
    for flow in flows {
        let bit = flow.remote as usize;
        flow.remote = NONE;
        if twice.get(bit / 64).is_none_or(|w| w & (1u64 << (bit % 64)) == 0) {
            continue;
        }
        let Some((key, _)) = table.slot_flow(flow.slot) else { continue };
        let r = key.remote_addr;
        let next = u32::try_from(remotes.len()).unwrap_or(NONE);
        let rems = &*remotes;
        let (id, new) = index.find_or_insert(&r, next, |j| rems.get(j as usize).map(|x| x.0));
        if new {
            if remotes.len() == remotes.capacity() {
                // More than the bound above (never): this flow's remote stays literal.
                continue;
            }
            remotes.push((r, 1, NONE));
        } else if let Some(x) = remotes.get_mut(id as usize) {
            shared += usize::from(x.1 == 1);
            x.1 = x.1.saturating_add(1);
        }
        flow.remote = id;
    }
    Ok(shared)
}

/// What pass 1 counts per family.
struct Counts {
    flows: [usize; 2],
    /// Remotes two flows or more share.
    shared: [usize; 2],
}

/// Pass 1 (see the module docs): for every flow of `table` in save order, its ids (the
/// dictionaries and the remotes' counts into `d`), its provisional entry and its record into
/// `k`. Remotes are found shared in two steps: each flow's remote sets a bit of a small
/// bitmap (8 KiB at 4,096 flows, in the first-level cache), and only the flows whose bit was
/// set twice are then looked up by address (`resolve`): a port whose peers are all distinct
/// looks up a few percent of them. Returns per family the flows and the shared remotes;
/// `None` if a flow cannot be written exactly (its local address did not fit the dictionary),
/// or the port is larger than this path takes, or the lists hold more flows than the table
/// counts (never): the general path decides.
///
/// # Errors
/// [`Error::OutOfMemory`].
fn build_live(
    d: &mut Dicts,
    k: &mut Kept,
    table: &FlowTable,
    now: Tick,
    rules_version: u32,
    seed: u64,
) -> Result<Option<Counts>, Error> {
    d.clear();
    let n = table.len();
    if n > MAX_INDEXED {
        return Ok(None);
    }
    k.used = [0; 2];
    // Keyed by the port's per-boot seed: peers choose their addresses, and cannot aim them
    // at one bit.
    let hasher = FixedState::with_seed(seed);
    let Dicts { addrs: [dict4, dict6], local_index: [li4, li6], .. } = d;
    let Kept {
        entries: [entries4, entries6],
        used: [used4, used6],
        flows: [flows4, flows6],
        seen: [seen4, seen6],
        ..
    } = k;
    let family = |dict, local_index, flows, entries, used, seen| Family {
        dict,
        local_index,
        flows,
        entries,
        used,
        seen,
        bits: 0,
        hits: 0,
        ready: false,
        last_local: None,
    };
    let mut v4 = family(dict4, li4, flows4, entries4, used4, seen4);
    let mut v6 = family(dict6, li6, flows6, entries6, used6, seen6);
    for class in TimeoutClass::ALL {
        for (slot, key, record) in table.iter_lru_slots(class) {
            let live = LiveFlow { key, record, now };
            let added = match key.family {
                IpFamily::V4 => v4.add(slot, &live, n, rules_version, &hasher)?,
                IpFamily::V6 => v6.add(slot, &live, n, rules_version, &hasher)?,
            };
            if !added {
                return Ok(None);
            }
        }
    }
    let mut counts = Counts { flows: [0; 2], shared: [0; 2] };
    let remotes = d.remotes.iter_mut().zip(&mut k.index);
    for (((f, count), shared), (rems, index)) in
        [v4, v6].iter_mut().zip(&mut counts.flows).zip(&mut counts.shared).zip(remotes)
    {
        if !f.ready {
            continue;
        }
        *count = f.flows.len();
        if f.hits > 0 {
            *shared = resolve(f.flows, f.seen, f.bits, f.hits, rems, index, table, seed)?;
        }
    }
    Ok(Some(counts))
}

/// Plans the save of a live port's `table` if every flow fits exactly within `room` bytes
/// (with the carried fingerprints' bytes): the plan the general path's `plan` makes for it,
/// with the per-family flow counts; `None` if they do not all fit (the general path plans).
///
/// # Errors
/// [`Error::OutOfMemory`].
pub(super) fn plan_live(
    w: &mut Work,
    table: &FlowTable,
    now: Tick,
    room: usize,
    rules_version: u32,
    salt: [u64; 2],
    carried: &Carried<'_>,
) -> Result<Option<(Plan, [usize; 2])>, Error> {
    w.exact.clear();
    w.fps.clear();
    let carried_k = rice::best_k(carried.values);
    let carried_bytes = rice::bytes(carried.values, carried_k);
    if table.len().saturating_mul(MIN_ENTRY_LEN).saturating_add(carried_bytes) > room {
        return Ok(None);
    }
    let Some(Counts { flows: counts, shared }) =
        build_live(&mut w.all, &mut w.live, table, now, rules_version, w.seed)?
    else {
        return Ok(None);
    };
    let locals = [w.all.addrs[0].len(), w.all.addrs[1].len()];
    // No remote shared (every peer its own: no pass over the remotes).
    let indexed = if shared == [0, 0] { [0, 0] } else { w.all.adopt_shared_remotes()? };
    w.all.set_layouts(locals);
    // Each entry is its provisional form with a local index of the layout's width, and an
    // index in place of the literal address for the `indexed` flows whose remote is shared.
    let mut base = [0usize; 2];
    for (f, (family, b)) in [IpFamily::V4, IpFamily::V6].into_iter().zip(&mut base).enumerate() {
        let (Some(lay), Some(&count), Some(&used), Some(&shared)) =
            (w.all.lays.get(f), counts.get(f), w.live.used.get(f), indexed.get(f))
        else {
            continue;
        };
        let alen = super::addr_len(family);
        *b = (used + count * lay.lw).saturating_sub(shared * alen.saturating_sub(lay.rw));
    }
    let without = w.all.bytes() + carried_bytes + base[0] + base[1];
    if without > room {
        return Ok(None);
    }
    let n = counts[0] + counts[1];
    let (mut entries, mut counters) = (base, false);
    // Per-flow counters take 4 bytes at least (four varints): often that alone decides.
    if without + 4 * n <= room {
        let mut extra = [0usize; 2];
        for (list, x) in w
            .live
            .flows
            .iter()
            .zip(&mut extra)
            .zip(counts)
            .map(|((l, x), c)| (l.get(..c).unwrap_or(&[]), x))
        {
            for flow in list {
                if let Some((key, record)) = table.slot_flow(flow.slot) {
                    *x += counters_len(&LiveFlow { key, record, now });
                }
            }
        }
        if without + extra[0] + extra[1] <= room {
            entries = [base[0] + extra[0], base[1] + extra[1]];
            counters = true;
        }
    }
    let plan = Plan::all_exact(w, salt, carried, (carried_k, carried_bytes), counters, entries)?;
    Ok(Some((plan, counts)))
}

/// Pass 2 (see the module docs): appends to `out` the entries of `family`'s `count` flows
/// (`len` bytes, the plan's), in save order, from what [`plan_live`] kept in `w`. `out` has
/// the room (the blob's length was reserved).
#[allow(clippy::too_many_arguments, reason = "the entries' place and what they are made of")]
pub(super) fn write_live(
    out: &mut Vec<u8>,
    table: &FlowTable,
    now: Tick,
    w: &Work,
    family: IpFamily,
    count: usize,
    len: usize,
    counters: bool,
) {
    let fam = super::family_slot(family);
    let (Some(lay), Some(dict), Some(rems), Some(flows), Some(provisional)) = (
        w.all.lays.get(fam),
        w.all.addrs.get(fam),
        w.all.remotes.get(fam),
        w.live.flows.get(fam).and_then(|v| v.get(..count)),
        w.live.entries.get(fam).and_then(|b| w.live.used.get(fam).and_then(|&u| b.get(..u))),
    ) else {
        return;
    };
    // One VM address (an index of width 0) and a dictionary of it alone (no remote shared):
    // every provisional entry is final.
    if lay.lw == 0 && dict.len() <= 1 && !counters && provisional.len() == len {
        out.extend_from_slice(provisional);
        return;
    }
    let start = out.len();
    out.resize(start + len, 0);
    let mut e = Entry { b: out.get_mut(start..).unwrap_or(&mut []), n: 0 };
    let alen = super::addr_len(family);
    let mut at = 0usize;
    for flow in flows {
        let flow_len = flow.len as usize;
        let Some(p) = provisional.get(at..at + flow_len) else { return };
        at += flow_len;
        let (Some(&tag), Some(proto)) = (p.first(), p.get(1).copied()) else { return };
        let head = if tag & compact::KIND_MASK == compact::KIND_ACTIVE_OTHER { 2 } else { 1 };
        let remote = rems.get(flow.remote as usize).map_or(NONE, |x| x.2);
        if remote == NONE {
            e.u8(tag);
        } else {
            e.u8(tag & !compact::REMOTE_LITERAL);
        }
        if head == 2 {
            e.u8(proto);
        }
        e.index(flow.local, lay.lw);
        if remote == NONE {
            e.bytes(p.get(head..head + alen).unwrap_or(&[]));
        } else {
            e.index(remote, lay.rw);
        }
        e.bytes(p.get(head + alen..).unwrap_or(&[]));
        if counters && let Some((key, record)) = table.slot_flow(flow.slot) {
            for v in (LiveFlow { key, record, now }).counters() {
                e.varint(v);
            }
        }
    }
    debug_assert_eq!(e.n, len, "the entries' planned length");
}

#[cfg(test)]
mod tests {
    use alloc::string::String;
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::super::{LivePort, Work, encode_source_with};
    use crate::codec::{self, DecodeConfig, Decoded, EncodeConfig};
    use crate::flow::{
        Admission, FlowKey, FlowRecord, FlowState, Opener, TableConfig, TimeoutClass,
    };
    use crate::guid::Guid;
    use crate::packet::{IpFamily, protocol};
    use crate::policy::Mode;
    use crate::port::{Port, PortConfig, PortIdentity};
    use crate::time::{TICKS_PER_SECOND, Tick};

    const NOW: Tick = 50_000 * TICKS_PER_SECOND;
    const PROVIDER: Guid = Guid::from_parts(1, 2, 3, *b"exactexa");

    fn port(max_flows: u32) -> Port {
        let cfg = PortConfig {
            table: TableConfig { max_flows, hash_seed: 0x5eed, ..TableConfig::default() },
            initial_mode: Mode::Enforce,
        };
        Port::try_new(PortIdentity::try_from_str("exact").expect("name"), cfg).expect("port")
    }

    /// One flow of a random port: (kind, admission, v6, local, remote, ports, ages, counters).
    type RawFlow = (u8, u8, bool, u8, u16, u32, (u64, u64), u64);

    /// A port of random flows: every state and protocol kind, both families, one to several
    /// hundred VM addresses, remotes drawn from a small pool (shared) or a large one (mostly
    /// literal), rule admissions at this and older versions, ages from seconds to days, counters
    /// from 0 to 2^63; then some flows touched again (a different LRU order).
    fn live_port(raw: &[RawFlow], locals: u16, touch: &[usize]) -> Port {
        let mut p = port(u32::try_from(raw.len()).unwrap_or(u32::MAX).max(16));
        // Three rule-set versions: admissions at the current one and at older ones.
        for _ in 0..3 {
            p.replace_rules(&[]).expect("rules");
        }
        let version = p.rules().version();
        for (j, &(kind, adm, v6, local, remote, ports, (first, idle), counter)) in
            raw.iter().enumerate()
        {
            let (state, proto) = match kind % 9 {
                0 => (FlowState::SynSent, protocol::TCP),
                1 => (FlowState::SynReceived, protocol::TCP),
                2..=4 => (FlowState::Established, protocol::TCP),
                5 => (FlowState::FinWait, protocol::TCP),
                6 => (FlowState::Closed, protocol::TCP),
                7 => (FlowState::Active, protocol::UDP),
                _ => (FlowState::Active, 47),
            };
            let (opener, admission) = match adm % 5 {
                0 | 1 => (Opener::Vm, Admission::Vm),
                2 => (Opener::Remote, Admission::Monitor),
                3 => (Opener::Remote, Admission::Rule(version)),
                _ => (Opener::Remote, Admission::Rule(version.wrapping_sub(u32::from(adm)))),
            };
            let l = u16::from(local) % locals.max(1);
            let [lh, ll] = l.to_be_bytes();
            let [rh, rl] = remote.to_be_bytes();
            let (mut local_addr, mut remote_addr) = ([0u8; 16], [0u8; 16]);
            let family = if v6 {
                local_addr[0] = 0xfd;
                local_addr[14..].copy_from_slice(&[lh, ll]);
                remote_addr[..2].copy_from_slice(&[0x20, 0x01]);
                remote_addr[14..].copy_from_slice(&[rh, rl]);
                IpFamily::V6
            } else {
                local_addr[..4].copy_from_slice(&[10, 0, lh, ll]);
                remote_addr[..4].copy_from_slice(&[198, 18, rh, rl]);
                IpFamily::V4
            };
            let [p0, p1, p2, p3] = ports.to_le_bytes();
            let key = FlowKey {
                family,
                protocol: proto,
                local_addr,
                remote_addr,
                local_port: u16::from_le_bytes([p0, p1]),
                remote_port: u16::from_le_bytes([p2, p3]),
            };
            let last_seen = NOW.saturating_sub(idle);
            let record = FlowRecord {
                state,
                opener,
                admission,
                fin_seen: if matches!(state, FlowState::FinWait | FlowState::Closed) {
                    kind >> 6
                } else {
                    0
                },
                packets: [counter, counter >> 7],
                bytes: [counter.rotate_left(9) >> 1, counter >> 30],
                // A few flows "from the future" (a clock bug the save clamps).
                first_seen: if j % 37 == 5 { NOW + first } else { last_seen.saturating_sub(first) },
                last_seen,
            };
            let _ = p.table.insert(key, record, last_seen);
        }
        for &i in touch {
            let key = p.table.iter().nth(i % raw.len().max(1)).map(|(k, _)| *k);
            if let Some(at) = key.and_then(|k| p.table.find(&k)) {
                p.table.record_mut(at).last_seen = NOW;
                p.table.touch(at);
            }
        }
        p
    }

    fn raw_flow() -> impl Strategy<Value = RawFlow> {
        (
            any::<u8>(),
            any::<u8>(),
            prop::bool::weighted(0.3),
            any::<u8>(),
            prop_oneof![0u16..40, any::<u16>()],
            any::<u32>(),
            (0u64..(3 * 86_400 * TICKS_PER_SECOND), 0u64..(7_200 * TICKS_PER_SECOND)),
            prop_oneof![0u64..200, any::<u64>()],
        )
    }

    /// Encodes `p` as the driver does (`direct`) or through saved records (the general path).
    fn save(p: &Port, cap: usize, work: &mut Work, direct: bool) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let config = EncodeConfig { provider: PROVIDER, cap };
        encode_source_with(&LivePort::whole(p, NOW), &config, &mut out, work, direct)
            .map(|s| {
                assert_eq!(s.len, out.len());
                out
            })
            .map_err(|e| alloc::format!("{e:?}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Issue 18 item 4: the at-cap save written straight from the table's slots is byte
        /// for byte the save through saved records, whatever the port (states, families,
        /// local and shared remote addresses, admissions, ages, counters, recency order) and
        /// the cap (all exact with or without per-flow counters, or past it: the general
        /// path then runs in both), with the working memory reused from save to save.
        #[test]
        fn the_save_from_the_table_writes_what_the_save_through_records_writes(
            ports in prop::collection::vec(
                (prop::collection::vec(raw_flow(), 0..500), prop_oneof![Just(1u16), 1u16..400],
                 prop::collection::vec(any::<usize>(), 0..50), 0usize..4, any::<bool>()),
                1..4,
            ),
        ) {
            let (mut direct, mut general) = (Work::default(), Work::default());
            for (raw, locals, touch, c, distinct) in &ports {
                let mut raw = raw.clone();
                if *distinct {
                    // Every remote its own (the provisional entries are the entries when
                    // the VM has one address too).
                    for (j, f) in raw.iter_mut().enumerate() {
                        f.4 = u16::try_from(j).unwrap_or(0);
                    }
                }
                let p = live_port(&raw, *locals, touch);
                let cap = [2_500, 9_000, 30_000, codec::DEFAULT_CAP][*c];
                let a = save(&p, cap, &mut direct, true);
                let b = save(&p, cap, &mut general, false);
                prop_assert_eq!(&a, &b);
                if let Ok(blob) = &a {
                    prop_assert!(codec::decode(blob, &DecodeConfig::default()).is_ok());
                }
                // The same port again in the same working memory.
                prop_assert_eq!(&save(&p, cap, &mut direct, true), &b);
            }
        }
    }

    /// `p`'s flows moved to `n` processors' shards as `to` says (0: stays in the home shard),
    /// each shard's in its own LRU order, and some counters in each shard: the shape
    /// `shards::split` and the processors' packets give a port.
    fn split(p: &mut Port, n: usize, to: &[u8]) -> Vec<Port> {
        let mut shards: Vec<Port> = (0..n).map(|_| port(p.table.config().max_flows)).collect();
        let mut moved = Vec::new();
        let mut seen = 0usize;
        for class in TimeoutClass::ALL {
            for (k, r) in p.table.iter_lru(class) {
                let s = usize::from(to.get(seen % to.len().max(1)).copied().unwrap_or(0)) % (n + 1);
                seen += 1;
                if s != 0 {
                    moved.push((s - 1, *k, *r));
                }
            }
        }
        for (s, k, r) in moved {
            let _ = p.table.remove(&k);
            if let Some(shard) = shards.get_mut(s) {
                shard.table.insert(k, r, r.last_seen).expect("room");
            }
        }
        for (i, shard) in (1u64..).zip(&mut shards) {
            shard.counters.expired = i;
            shard.counters.untracked = 3 * i;
        }
        shards
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Issue 18 item 4, review-s4 L4: a split port's save reads its processors' shards in
        /// place and writes, byte for byte, what the port merged into its home shard
        /// (`shards::merge`, what a save did before) writes: the same flows in the same order,
        /// the same counters; within the cap and past it, again from the same working memory.
        #[test]
        fn a_split_ports_save_writes_what_the_merged_port_writes(
            raw in prop::collection::vec(raw_flow(), 0..600),
            locals in prop_oneof![Just(1u16), 1u16..40],
            touch in prop::collection::vec(any::<usize>(), 0..50),
            to in prop::collection::vec(any::<u8>(), 1..64),
            n in 1usize..=crate::port::shards::MAX_SHARDS,
            c in 0usize..4,
        ) {
            let cap = [2_500, 9_000, 30_000, codec::DEFAULT_CAP][c];
            let mut home = live_port(&raw, locals, &touch);
            let shards = split(&mut home, n, &to);
            let refs: Vec<Option<&Port>> = shards.iter().map(Some).collect();
            let config = EncodeConfig { provider: PROVIDER, cap };
            let mut work = Work::default();
            let mut in_place = Vec::new();
            let a = encode_source_with(
                &LivePort { port: &home, shards: &refs, now: NOW }, &config, &mut in_place,
                &mut work, true,
            ).map_err(|e| alloc::format!("{e:?}"));
            let mut again = Vec::new();
            let b = encode_source_with(
                &LivePort { port: &home, shards: &refs, now: NOW }, &config, &mut again,
                &mut work, true,
            ).map_err(|e| alloc::format!("{e:?}"));
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(&in_place, &again);
            // Past the cap the save plans from the shards' slots: the save through saved
            // records (every flow copied, as before) writes the same.
            let mut through = Vec::new();
            let c = encode_source_with(
                &LivePort { port: &home, shards: &refs, now: NOW }, &config, &mut through,
                &mut Work::default(), false,
            ).map_err(|e| alloc::format!("{e:?}"));
            prop_assert_eq!(&a, &c);
            prop_assert_eq!(&in_place, &through);
            let full = *home.table.config();
            let mut shards = shards;
            let mut others: Vec<Option<&mut Port>> = shards.iter_mut().map(Some).collect();
            let _ = crate::port::shards::merge(&mut home, &mut others, &full, NOW);
            let merged = save(&home, cap, &mut Work::default(), true);
            prop_assert_eq!(a.map(|_| in_place), merged);
        }
    }

    /// One change to a live port between two saves (see
    /// `the_set_of_values_kept_across_saves_follows_every_change`): (what, which table, which
    /// flow, a seed for a new key).
    type Change = (u8, u8, u16, u32);

    /// Applies `c` to the home shard and `shards` (every table its own index: 0 the home
    /// shard): a flow removed, a new established connection of the VM's, a connection's state
    /// changed both ways, a flow moved to another table (a free slot reused), or the sweep's
    /// preparations (a small budget: some tables readied, others not).
    fn change(home: &mut Port, shards: &mut [Port], what: Change, work: &mut Work, n_raw: usize) {
        let (what, t, j, seed) = what;
        let tables = shards.len() + 1;
        let t = usize::from(t) % tables;
        let pick = |p: &Port| {
            let len = p.table.len();
            (len > 0)
                .then(|| p.table.iter().nth(usize::from(j) % len).map(|(k, r)| (*k, *r)))
                .flatten()
        };
        let port = if t == 0 { &mut *home } else { &mut shards[t - 1] };
        match what % 6 {
            0 => {
                if let Some((k, _)) = pick(port) {
                    let _ = port.table.remove(&k);
                }
            }
            1 => {
                let [vm, hi, lo, port_lo] = seed.to_le_bytes();
                let key = FlowKey {
                    family: IpFamily::V4,
                    protocol: protocol::TCP,
                    local_addr: [10, 0, 0, vm % 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    remote_addr: [203, 0, hi, lo, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    local_port: 40_000 + u16::from(port_lo),
                    remote_port: 443,
                };
                let mut r = FlowRecord::new(FlowState::Established, Opener::Vm, Admission::Vm, NOW);
                r.last_seen = NOW - u64::from(seed % 5_000) * 1_000;
                r.first_seen = r.last_seen;
                let _ = port.table.insert(key, r, r.last_seen);
            }
            2 | 3 => {
                if let Some((k, r)) = pick(port)
                    && k.protocol == protocol::TCP
                    && let Some(at) = port.table.find(&k)
                {
                    let state = if r.state == FlowState::Established {
                        FlowState::FinWait
                    } else {
                        FlowState::Established
                    };
                    port.table.set_state(at, state);
                }
            }
            4 => {
                if let Some((k, r)) = pick(port) {
                    let _ = port.table.remove(&k);
                    let u = usize::from(j.rotate_left(3)) % tables;
                    let to = if u == 0 { &mut *home } else { &mut shards[u - 1] };
                    let _ = to.table.insert(k, r, r.last_seen);
                }
            }
            _ => {
                let n = n_raw + 64;
                work.prepare(&LivePort::whole(home, NOW), n, 6_000, 256, 96).expect("prepares");
                for (i, s) in shards.iter().enumerate() {
                    work.prepare_table(i, &s.table).expect("prepares");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Issue 18 item 4: a live port's encoder keeps the sorted fingerprint values of its
        /// connections from one save past the cap to the next (`FpCache::set`), changed only
        /// by what changed. Whatever changes between saves (connections closed, new ones,
        /// states changed both ways, flows moved between the shards and slots reused, the
        /// sweep's preparations in between or not), each save writes, byte for byte, what a
        /// save in fresh working memory under the same salt writes, and what the save through
        /// saved records writes.
        #[test]
        fn the_set_of_values_kept_across_saves_follows_every_change(
            raw in prop::collection::vec(raw_flow(), 300..1_200),
            to in prop::collection::vec(any::<u8>(), 1..64),
            n in 0usize..=crate::port::shards::MAX_SHARDS,
            // The same few flows picked again and again (a connection closed and reopened,
            // a slot freed and reused), or any.
            rounds in prop::collection::vec(
                prop::collection::vec(
                    (any::<u8>(), prop_oneof![Just(0u8), any::<u8>()],
                     prop_oneof![0u16..4, any::<u16>()], any::<u32>()),
                    0..24,
                ),
                2..7,
            ),
            c in 0usize..2,
        ) {
            let cap = [6_000, 9_000][c];
            let mut home = live_port(&raw, 3, &[]);
            let mut shards = split(&mut home, n, &to);
            let config = EncodeConfig { provider: PROVIDER, cap };
            let mut work = Work::default();
            for round in &rounds {
                for &ch in round {
                    change(&mut home, &mut shards, ch, &mut work, raw.len());
                }
                let refs: Vec<Option<&Port>> = shards.iter().map(Some).collect();
                let src = LivePort { port: &home, shards: &refs, now: NOW };
                let mut kept = Vec::new();
                let a = encode_source_with(&src, &config, &mut kept, &mut work, true)
                    .map_err(|e| alloc::format!("{e:?}"));
                let salt = work.cache.salt;
                let mut fresh_work = Work::default();
                fresh_work.cache.salt = salt;
                let mut fresh = Vec::new();
                let b = encode_source_with(&src, &config, &mut fresh, &mut fresh_work, true)
                    .map_err(|e| alloc::format!("{e:?}"));
                prop_assert_eq!(&a, &b);
                prop_assert_eq!(&kept, &fresh);
                let mut records_work = Work::default();
                records_work.cache.salt = salt;
                let mut through = Vec::new();
                let c = encode_source_with(&src, &config, &mut through, &mut records_work, false)
                    .map_err(|e| alloc::format!("{e:?}"));
                prop_assert_eq!(&a, &c);
                prop_assert_eq!(&kept, &through);
            }
        }
    }

    /// Issue 18 item 4: a connection that leaves the kept set (no longer established) and
    /// comes back (established again, its fingerprint entry unchanged) joins the set again:
    /// the save writes its value, as a save in fresh memory does.
    #[test]
    fn a_connection_that_leaves_the_kept_set_and_comes_back_is_written_again() {
        let raw: Vec<RawFlow> = (0..800u32)
            .map(|i| {
                let r = u16::try_from(i).unwrap_or(0);
                (2, 0, false, 0, r, i.wrapping_mul(2_654_435_761), (60 * TICKS_PER_SECOND, 0), 1)
            })
            .collect();
        let mut home = live_port(&raw, 1, &[]);
        let config = EncodeConfig { provider: PROVIDER, cap: 6_000 };
        let mut work = Work::default();
        // The oldest connection: fingerprinted, never made exact.
        let class = TimeoutClass::of(protocol::TCP, FlowState::Established);
        let (key, _) = home.table.iter_lru(class).next().map(|(k, r)| (*k, *r)).expect("a flow");
        for state in [FlowState::Established, FlowState::FinWait, FlowState::Established] {
            let at = home.table.find(&key).expect("in the table");
            home.table.set_state(at, state);
            let src = LivePort::whole(&home, NOW);
            let mut kept = Vec::new();
            encode_source_with(&src, &config, &mut kept, &mut work, true).expect("saves");
            let mut fresh_work = Work::default();
            fresh_work.cache.salt = work.cache.salt;
            let mut fresh = Vec::new();
            encode_source_with(&src, &config, &mut fresh, &mut fresh_work, true).expect("saves");
            assert_eq!(kept, fresh, "{state:?}");
        }
    }

    /// Issue 18 item 4, review-s4 L4: the fingerprints a split port's preparations computed,
    /// every shard's, are found by its save: a save that reads the shards in place hashes
    /// none of them. The sweeps' budget goes round every shard (9,000 connections, 1,024
    /// fingerprints a sweep: ready after 9 sweeps, whichever shard holds them).
    #[test]
    fn a_split_ports_save_finds_the_fingerprints_its_preparation_computed() {
        let raw: Vec<RawFlow> = (0..9_000u32)
            .map(|i| {
                let r = u16::try_from(i).unwrap_or(0);
                (
                    2,
                    0,
                    false,
                    0,
                    r,
                    i.wrapping_mul(2_654_435_761),
                    (60 * TICKS_PER_SECOND, u64::from(i) * 8_000),
                    10,
                )
            })
            .collect();
        let mut home = live_port(&raw, 1, &[]);
        let to: Vec<u8> = (0..=8).collect();
        let shards = split(&mut home, 8, &to);
        assert!(shards.iter().all(|s| !s.table.is_empty()) && !home.table.is_empty());
        let refs: Vec<Option<&Port>> = shards.iter().map(Some).collect();
        let cap = 9_000;
        let mut work = Work::default();
        // The sweep's preparations until every shard's connections are hashed.
        for _ in 0..10 {
            let src = LivePort::whole(&home, NOW);
            work.prepare(&src, raw.len(), cap, 4_096, 1_024).expect("prepares");
            for (i, s) in shards.iter().enumerate() {
                work.prepare_table(i, &s.table).expect("prepares");
            }
        }
        let config = EncodeConfig { provider: PROVIDER, cap };
        let mut out = Vec::new();
        let src = LivePort { port: &home, shards: &refs, now: NOW };
        let s = encode_source_with(&src, &config, &mut out, &mut work, true).expect("saves");
        assert!(s.flows_fingerprinted > 1_000, "{s:?}");
        assert_eq!(work.hashed, 0, "fingerprints computed again at the save");
    }

    /// Issue 18 item 4 (save past the cap): a live port past the cap, whole or split over
    /// processors' shards, is planned from its tables' slots: no saved record of every flow
    /// (20,000 x 104 bytes at the target, written and read again), only its exact records
    /// made; the blob is the one the save through saved records writes, in fresh and in reused
    /// working memory.
    #[test]
    fn a_port_past_the_cap_is_saved_from_its_tables_without_copying_its_flows() {
        let raw: Vec<RawFlow> = (0..2_000u32)
            .map(|i| {
                let r = u16::try_from(i).unwrap_or(0);
                // Mostly the VM's established connections, some other flows and states.
                (
                    if i % 7 == 0 { u8::try_from(i % 9).unwrap_or(0) } else { 2 },
                    u8::try_from(i % 3).unwrap_or(0),
                    i % 11 == 0,
                    u8::try_from(i % 3).unwrap_or(0),
                    r,
                    i.wrapping_mul(2_654_435_761),
                    (60 * TICKS_PER_SECOND, u64::from(i % 1_000) * 8_000_000),
                    10,
                )
            })
            .collect();
        let config = EncodeConfig { provider: PROVIDER, cap: 9_000 };
        for n in [0, 3, 8] {
            let mut home = live_port(&raw, 3, &[]);
            let to: Vec<u8> = (0..=8).collect();
            let shards = split(&mut home, n, &to);
            let refs: Vec<Option<&Port>> = shards.iter().map(Some).collect();
            let src = LivePort { port: &home, shards: &refs, now: NOW };
            let mut work = Work::default();
            let mut blob = Vec::new();
            let s = encode_source_with(&src, &config, &mut blob, &mut work, true).expect("saves");
            assert!(s.flows_fingerprinted > 800 && s.flows_written > 50, "{s:?}");
            assert_eq!(work.flows.capacity(), 0, "{n} shards: saved records made");
            assert!(work.exact.len() == s.flows_written as usize, "{n} shards");
            let mut through = Vec::new();
            encode_source_with(&src, &config, &mut through, &mut Work::default(), false)
                .expect("saves");
            assert_eq!(blob, through, "{n} shards");
            let mut again = Vec::new();
            encode_source_with(&src, &config, &mut again, &mut work, true).expect("saves");
            assert_eq!(blob, again, "{n} shards, working memory reused");
        }
    }

    #[test]
    fn a_port_at_the_cap_is_saved_from_its_table_without_copying_its_flows() {
        // 4,096 established connections of one VM address to distinct peers (the bench's).
        let raw: Vec<RawFlow> = (0..4_096u32)
            .map(|i| {
                let r = u16::try_from(i).unwrap_or(0);
                (
                    2,
                    0,
                    false,
                    0,
                    r,
                    i.wrapping_mul(2_654_435_761),
                    (60 * TICKS_PER_SECOND, u64::from(i) * 8_000_000),
                    10,
                )
            })
            .collect();
        let p = live_port(&raw, 1, &[]);
        assert_eq!(p.table.len(), 4_096);
        let mut work = Work::default();
        let blob = save(&p, codec::DEFAULT_CAP, &mut work, true).expect("saves");
        assert_eq!(work.flows.capacity(), 0, "no saved record made");
        assert_eq!(blob, save(&p, codec::DEFAULT_CAP, &mut Work::default(), false).expect("saves"));
        let Ok(Decoded::State(st)) = codec::decode(&blob, &DecodeConfig::default()) else {
            panic!("decodes")
        };
        assert_eq!(st.flows.len(), 4_096);
    }

    #[test]
    fn carried_fingerprints_are_written_the_same_from_the_table() {
        // A port past a small cap: its blob carries fingerprints; restored into a new port,
        // they are armed there, and that port's next save carries them on with its few exact
        // flows (the at-cap path with carried values).
        let raw: Vec<RawFlow> = (0..900u32)
            .map(|i| {
                let r = u16::try_from(i).unwrap_or(0);
                (
                    3,
                    0,
                    i % 5 == 0,
                    0,
                    r,
                    i.wrapping_mul(40_503),
                    (100 * TICKS_PER_SECOND, u64::from(i) * 10_000_000),
                    3,
                )
            })
            .collect();
        let src = live_port(&raw, 1, &[]);
        let mut blob = Vec::new();
        let config = EncodeConfig { provider: PROVIDER, cap: 4_000 };
        let s = codec::encode(&src, NOW, &config, &mut blob).expect("encodes");
        assert!(s.flows_fingerprinted > 500, "{s:?}");
        let Ok(Decoded::State(st)) = codec::decode(&blob, &DecodeConfig::default()) else {
            panic!("decodes")
        };
        let mut dst = port(2_000);
        codec::apply(&mut dst, &st, NOW).expect("applies");
        assert!(dst.pickup.is_armed(NOW) && dst.pickup.pending().count() > 500);
        for cap in [4_000, 6_000, codec::DEFAULT_CAP] {
            let mut work = Work::default();
            let a = save(&dst, cap, &mut work, true);
            let b = save(&dst, cap, &mut Work::default(), false);
            assert_eq!(a, b, "cap {cap}");
            if cap == codec::DEFAULT_CAP {
                assert_eq!(work.flows.capacity(), 0, "the table path was taken");
                let Ok(Decoded::State(again)) =
                    codec::decode(&a.expect("saves"), &DecodeConfig::default())
                else {
                    panic!("decodes")
                };
                assert_eq!(again.fingerprints.len(), dst.pickup.pending().count());
            }
        }
    }
}
