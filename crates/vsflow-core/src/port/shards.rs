//! One port on several processors: the port's flows split by flow hash into *shards*, each a
//! [`Port`] of its own that the caller keeps under its own lock (issue 18, item 2).
//!
//! On Hyper-V, vRSS spreads one busy VM's traffic over several processors; with one lock per
//! port they all queue on it, and its cache line (and the table's) moves between them on every
//! packet. A *sharded* port keeps each flow in exactly one of `n` shards, the one
//! [`ShardHasher::shard_of`] names for the packet, so two processors classifying different
//! connections of one VM take different locks.
//!
//! # What a shard holds, and why the result is the single-lock port's
//!
//! Classify reads the port's policy (mode, rules, how it judges) and reads or writes at most
//! *one* flow per packet: the packet's own ([`FlowKey::of`]), the ICMP query it answers, or
//! the flow an ICMP error quotes ([`packet_flow`]). Everything else it writes is a counter.
//! So a shard is a whole [`Port`]: its own table (the flows whose key maps to it) and counters,
//! and a copy of the port's policy. Classify on the shard the packet maps to does exactly what
//! classify on the whole port would do: the same flow (or its absence), the same policy.
//!
//! Everything else stays on one port, *shard 0*, the *home* shard:
//! - **A port is sharded only while nothing of a migration is open** ([`may_split`]): not
//!   restoring, no armed fingerprints, no tentative pickup, no loose window. Pickups need the
//!   one fingerprint set (each fingerprint admits one connection) and the one bounded tentative
//!   set; a restore window changes policy under the packets. A port created for a restore
//!   starts and stays unsharded until all of that is over.
//! - **Every operation but classify, expiry and reads works on the unsharded port**: the caller
//!   takes every shard's lock (home first, then 1, 2, ... : a fixed order, so two such callers
//!   never deadlock and classify, which takes one, never waits in a cycle) and [`merge`]s the
//!   shards back into the home shard before a save, a restore, a rule or mode change, a counter
//!   reset. Under all the locks no packet is between two shards, so the merged port *is* the
//!   single-lock port at that instant: the union of disjoint shards (each flow in exactly one),
//!   counters summed, the policy of the home shard (the others are copies of it). A save
//!   therefore encodes exactly what the single-lock port would have held.
//! - [`split`] makes an unsharded port sharded again (the driver's expiry sweep does it), under
//!   every lock: fresh tables are built first (nothing changes if one cannot be allocated),
//!   each flow moved to its shard in least-recently-used order per timeout class (so eviction
//!   and expiry order stay exact within each shard), the policy copied.
//!
//! # Bounds
//!
//! A sharded port's shard holds at most [`shard_bound`] flows: `ceil(max_flows x 9 / 8 / n)`.
//! With a keyed hash an outsider cannot aim its flows at one shard; a shard of a full port
//! reaches its bound about when the port reaches `max_flows` (a split that would put more than
//! the bound into a shard does not happen). So a sharded port holds at most `9/8 x max_flows`
//! flows. A new flow in a full shard reclaims a slot in that shard by the table's rules
//! ([`crate::flow::Room`]): as a single table would, within the shard.

use alloc::vec::Vec;
use core::hash::BuildHasher;
use core::ops::DerefMut;

use foldhash::fast::FixedState;

use crate::counters::PortCounters;
use crate::error::Error;
use crate::fingerprint::Pickup;
use crate::flow::{FlowKey, FlowTable, MAX_FLOWS_LIMIT, TableConfig, TimeoutClass};
use crate::icmp::{self, Icmp};
use crate::packet::{Headers, PacketMeta};
use crate::policy::RuleSet;
use crate::port::Port;
use crate::time::Tick;

/// Most shards a port is split into.
pub const MAX_SHARDS: usize = 8;

/// The flow a packet reads or writes in classify, if any: the key its shard is chosen by.
///
/// `None` for a packet that touches no flow (a TCP or UDP first fragment without ports, ICMP
/// that is neither a query nor an error quoting a packet sent to its sender): it reads only
/// policy, and any shard judges it alike.
#[must_use]
pub fn packet_flow(meta: &PacketMeta) -> Option<FlowKey> {
    match meta.headers {
        Headers::NoPorts => None,
        Headers::Complete if icmp::is_icmp(meta.family, meta.protocol) => match meta.icmp {
            Icmp::Query { request, kind, id } => Some(icmp::query_key(
                meta.direction,
                meta.family,
                meta.protocol,
                meta.src_addr,
                meta.dst_addr,
                (request, kind, id),
            )),
            Icmp::Error(q) => icmp::quoted_flow(meta, &q),
            Icmp::Link { .. }
            | Icmp::LaterFragment
            | Icmp::None
            | Icmp::Unreadable
            | Icmp::Other => None,
        },
        // Flags that could not be read: judged as the packet's own flow (classify's
        // `unreadable`), as is everything else.
        Headers::NoFlags | Headers::Complete => Some(FlowKey::of(meta)),
    }
}

/// Picks a flow's shard: a keyed hash of its key, under a seed of its own (not the table's: a
/// shard's keys would otherwise share the low bits its table indexes by).
#[derive(Clone, Debug)]
pub struct ShardHasher {
    hasher: FixedState,
}

impl ShardHasher {
    /// A hasher keyed by `seed` (the driver's per-boot random value).
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self { hasher: FixedState::with_seed(seed ^ 0x7368_6172_6473_2d31) }
    }

    /// The shard, of `n`, that holds the flow `key`.
    #[must_use]
    #[inline]
    pub fn shard_of_key(&self, key: &FlowKey, n: usize) -> usize {
        let h = self.hasher.hash_one(key);
        // Multiply-shift: the high bits of `h x n`, uniform for any `n`.
        #[allow(clippy::cast_possible_truncation, reason = "the result is < n <= MAX_SHARDS")]
        let s = ((u128::from(h) * n as u128) >> 64) as usize;
        s
    }

    /// The shard, of `n`, that judges this packet ([`packet_flow`]; shard 0 for a packet that
    /// touches no flow).
    #[must_use]
    #[inline]
    pub fn shard_of(&self, meta: &PacketMeta, n: usize) -> usize {
        packet_flow(meta).map_or(0, |key| self.shard_of_key(&key, n))
    }
}

/// The most flows one of `n` shards of a port bounded by `max_flows` holds: `ceil(max_flows x
/// 9 / 8 / n)` (see the module docs).
#[must_use]
pub const fn shard_bound(max_flows: u32, n: usize) -> u32 {
    let n = if n == 0 { 1 } else { n as u64 };
    let b = (max_flows as u64 * 9).div_ceil(8 * n);
    #[allow(clippy::cast_possible_truncation, reason = "b <= max_flows, a u32, in that branch")]
    let shard = b as u32;
    if b > max_flows as u64 {
        max_flows
    } else if b == 0 {
        1
    } else {
        shard
    }
}

/// True if `home` (an unsharded port) may be split at `now`: nothing of a migration is open
/// (see the module docs).
#[must_use]
pub fn may_split(home: &Port, now: Tick) -> bool {
    !home.is_restoring()
        && home.pickup.set().is_empty()
        && home.tentative.is_empty()
        && !home.pickups_open(now)
}

/// Splits the unsharded port `home` into `1 + others.len()` shards.
///
/// Under every shard's lock: `others` are shards 1, 2, ... in order, each `Some`. `full` is
/// the port's own table configuration (what [`merge`] restores).
///
/// Every table is built before anything moves: on error nothing has changed.
///
/// # Errors
/// [`Error::OutOfMemory`]; [`Error::TableFull`] if a shard would get more than its bound (the
/// port stays unsharded; the sweep tries again later).
pub fn split<G: DerefMut<Target = Port>>(
    home: &mut Port,
    others: &mut [Option<G>],
    hasher: &ShardHasher,
    full: &TableConfig,
) -> Result<(), Error> {
    let n = others.len() + 1;
    if n == 1 || n > MAX_SHARDS || others.iter().any(Option::is_none) {
        return Err(Error::InvalidConfig("shards: 2..=MAX_SHARDS, every one locked"));
    }
    let bound = shard_bound(full.max_flows, n);
    let mut counts = [0u32; MAX_SHARDS];
    for (key, _) in home.table.iter() {
        let c = counts.get_mut(hasher.shard_of_key(key, n)).ok_or(Error::TableFull)?;
        *c += 1;
        if *c > bound {
            return Err(Error::TableFull);
        }
    }
    let shard_config = TableConfig { max_flows: bound, initial_capacity: 0, ..*full };
    let mut tables = Vec::new();
    tables.try_reserve_exact(n)?;
    for &count in counts.iter().take(n) {
        let mut t = FlowTable::try_new(shard_config)?;
        t.reserve(count)?;
        tables.push(t);
    }
    let mut rules = Vec::new();
    rules.try_reserve_exact(others.len())?;
    for _ in 0..others.len() {
        rules.push(RuleSet::try_from_slice(home.rules.version(), home.rules.rules())?);
    }
    // Nothing fails from here on: every table has room reserved for exactly what it receives.
    // Each class in least-recently-used order: every shard's lists keep their order.
    for class in TimeoutClass::ALL {
        for (key, record) in home.table.iter_lru(class) {
            if let Some(t) = tables.get_mut(hasher.shard_of_key(key, n)) {
                let _ = t.insert(*key, *record, record.last_seen);
            }
        }
    }
    let mut tables = tables.into_iter();
    if let Some(t) = tables.next() {
        home.table = t;
    }
    for ((o, t), r) in others.iter_mut().flatten().zip(tables).zip(rules) {
        copy_policy(home, o, r);
        o.table = t;
    }
    Ok(())
}

/// Makes `to` judge as `home` does: the same mode, rules (`rules`, a copy of `home`'s), restore
/// state and names; no pickups (a sharded port has none) and zero counters.
fn copy_policy(home: &Port, to: &mut Port, rules: RuleSet) {
    to.identity = home.identity;
    to.mode = home.mode;
    to.rules = rules;
    to.judging = home.judging;
    to.restore = home.restore.clone();
    to.nic = home.nic;
    to.restored_digest = home.restored_digest;
    to.pickup = Pickup::default();
    to.tentative.clear();
    to.counters = PortCounters::default();
}

/// Merges the shards `others` (shards 1, 2, ..., each locked) back into `home`.
///
/// Every flow goes into `home`'s table, rebuilt with the port's own configuration `full` (its bound raised to what
/// the shards hold, if they hold more: no connection is lost to a merge), in
/// least-recently-used order per timeout class across the shards; the counters summed into
/// `home`'s; the other shards left empty. Returns how many flows could not be placed (out of
/// memory only; counted in `untracked`). The port is consistent either way.
pub fn merge<G: DerefMut<Target = Port>>(
    home: &mut Port,
    others: &mut [Option<G>],
    full: &TableConfig,
    now: Tick,
) -> usize {
    let spread = others.iter().flatten().any(|o| !o.table.is_empty());
    if !spread && home.table.config().max_flows >= full.max_flows {
        sum_into(home, others);
        return 0;
    }
    let total = home.table.len() + others.iter().flatten().map(|o| o.table.len()).sum::<usize>();
    let bound = u32::try_from(total).unwrap_or(u32::MAX).clamp(full.max_flows, MAX_FLOWS_LIMIT);
    let mut dropped = 0usize;
    match FlowTable::try_new(TableConfig { max_flows: bound, initial_capacity: 0, ..*full }) {
        Ok(mut table) => {
            #[allow(clippy::cast_possible_truncation, reason = "total <= 9/8 x MAX_FLOWS_LIMIT")]
            let _ = table.reserve(total as u32);
            for class in TimeoutClass::ALL {
                dropped += merge_class(&mut table, home, others, class, now);
            }
            home.table = table;
        }
        Err(_) => {
            // Not even an empty table: the home shard keeps its own flows; the others' are
            // dropped (counted) so that the port is whole again.
            dropped = others.iter().flatten().map(|o| o.table.len()).sum();
        }
    }
    for o in others.iter_mut().flatten() {
        o.table.clear();
    }
    sum_into(home, others);
    home.counters.untracked = home.counters.untracked.saturating_add(dropped as u64);
    dropped
}

/// Moves one timeout class of every shard into `table`, oldest first across the shards (a
/// merge of the shards' lists, each ordered by placement time). Returns the flows not placed.
fn merge_class<G: DerefMut<Target = Port>>(
    table: &mut FlowTable,
    home: &Port,
    others: &[Option<G>],
    class: TimeoutClass,
    now: Tick,
) -> usize {
    let mut dropped = 0;
    let mut lists: [Option<_>; MAX_SHARDS] = Default::default();
    for (slot, port) in
        lists.iter_mut().zip(core::iter::once(home).chain(others.iter().flatten().map(|o| &**o)))
    {
        *slot = Some(port.table.iter_lru(class).peekable());
    }
    loop {
        let mut oldest: Option<(usize, Tick)> = None;
        for (i, list) in lists.iter_mut().enumerate() {
            if let Some((_, r)) = list.as_mut().and_then(core::iter::Peekable::peek)
                && oldest.is_none_or(|(_, t)| r.last_seen < t)
            {
                oldest = Some((i, r.last_seen));
            }
        }
        let Some((i, _)) = oldest else { break };
        let Some((key, record)) =
            lists.get_mut(i).and_then(Option::as_mut).and_then(Iterator::next)
        else {
            break;
        };
        // The bound holds every flow: an insert fails only if memory runs out.
        if table.insert(*key, *record, now).is_err() {
            dropped += 1;
        }
    }
    dropped
}

/// Adds the other shards' counters into `home`'s and zeroes theirs.
fn sum_into<G: DerefMut<Target = Port>>(home: &mut Port, others: &mut [Option<G>]) {
    for o in others.iter_mut().flatten() {
        home.counters = home.counters.saturating_add(&o.counters);
        o.counters = PortCounters::default();
    }
}
