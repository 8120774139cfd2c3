//! One port on several processors: the port's flows split over *shards*, one per processor,
//! each a [`Port`] of its own that the caller keeps under its own lock (issue 18, item 2).
//!
//! On Hyper-V, vRSS spreads one busy VM's traffic over several processors; with one lock per
//! port they all queue on it, and its cache line (and the table's) moves between them on every
//! packet. Shards chosen by a hash of the flow do not fix that: each processor's connections
//! spread over every shard, so about half of all acquisitions of a shard's lock (and of the
//! shard's counters, written per packet) find the line last written by the other processor.
//! Here a flow lives in the shard of the **processor that first judged it** (while the port is
//! split), so the lines a packet writes are written by one processor only, as long as a flow's
//! packets stay on one processor (the Windows assumption: vRSS and VMQ steer a flow's packets
//! to one processor per direction; docs/WINDOWS-VERIFICATION.md).
//!
//! # The two paths
//!
//! - **Fast** (the packet's processor's shard, under that shard's lock only): a TCP or UDP
//!   packet of a flow the shard holds, live and not restarted, is judged there
//!   ([`Port::classify_existing`]): one hash, one lookup, nothing else locked or written.
//! - **Slow** ([`classify_slow`], under the *home* lock, the port's own): everything else: a
//!   new flow, a packet of a flow another shard holds (a flow whose directions arrive on two
//!   processors: correct, slower), ICMP, unreadable headers, a flow that expired or restarts.
//!   Under the home lock it finds the flow's shard by looking in each (one lock at a time, in
//!   order; at most [`MAX_SHARDS`] + 1 lookups), judges the packet there, and creates a new flow
//!   in the packet's processor's shard. A flow the home shard holds (every flow, right after a
//!   split) moves to the processor's shard right after a packet of it that the flow saw
//!   (*adoption*; a packet the flow does not count, such as a blocked one, leaves it in place),
//!   so a split port's existing connections reach the fast path after one packet each.
//! - **A flow another processor's shard holds** (its two directions steered to two processors):
//!   the slow path tells the caller which shard judged it, and the caller keeps that as a
//!   *hint* for the processor (per hash bucket of the flow, on the processor's own lines); the
//!   next packet of the flow there tries the hinted shard under that shard's lock alone
//!   ([`Port::classify_existing`] again) before the home lock. Any hint is safe: a flow is in at
//!   most one shard and only the slow path adds or moves flows, so a flow found in a shard under
//!   that shard's lock is judged where the single-lock port would judge it; a stale hint costs
//!   one lock and one lookup, then the slow path.
//!
//! **Invariant: a flow is in at most one shard.** Only the slow path creates flows and moves
//! them, and it does so under the home lock after looking in every shard; the fast path never
//! adds or removes a flow (it judges an existing flow in place), the expiry sweep only removes.
//! So under the home lock the shards' flows are stable as sets, and the slow path's search is
//! exact.
//!
//! # Why the verdicts are the single-lock port's
//!
//! Classify reads the port's policy (mode, rules, how it judges) and reads or writes at most
//! *one* flow per packet: the packet's own ([`FlowKey::of`]), the ICMP query it answers, or
//! the flow an ICMP error quotes ([`packet_flow`]). Every shard holds a copy of the policy; a
//! packet is judged on the shard that holds its flow (or, for a new flow, on a shard that does
//! not hold it while no other does): on that shard, classify does what classify on the whole
//! port would. Each packet is judged under the lock of the shard holding its flow, and flows
//! change shard only under the home lock, so concurrent packets are judged as in some order of
//! the single-lock port (the slow path takes the home lock, then one shard's lock at a time: a
//! fixed order; the fast path takes one shard's lock and nothing else: no cycle).
//!
//! Everything else sees the port whole, as before:
//! - **A port is split only while nothing of a migration is open** ([`may_split`]): not
//!   restoring, no armed fingerprints, no tentative pickup, no loose window.
//! - **Every operation but classify, expiry and reads works on the whole port**: the caller
//!   takes the home lock and then every shard's, in order, and [`merge`]s the shards back into
//!   the home shard (a restore, a rule or mode change, NIC events, the IOCTLs that read flows
//!   or change the port). Under all the locks the merged port *is* the single-lock port. A
//!   save takes the same locks and reads the shards in place instead
//!   (`codec::Encoder::encode_split`: the blob of the merged port, byte for byte, without
//!   building its table in the save; the port stays split).
//! - [`split`] makes a whole port split again (the expiry sweep does it): the other shards get
//!   empty tables and a copy of the policy; the flows stay in the home shard until adopted.
//!
//! # Bounds
//!
//! The port's flows are counted across its shards (`flows`, kept under the home lock: only the slow
//! path and the sweep change how many there are). A shard's table has the port's bound (one
//! processor may judge every connection of the port), and the port as a whole never holds more than
//! its bound: when it is full, a new flow goes to the shard holding the flow the single-lock port
//! would reclaim (its eviction order compared across the shards, `FlowTable::eviction_rank`,
//! under every shard's lock until the flow is judged), and that shard reclaims it; if none may
//! be reclaimed, the flow is refused as in the single-lock port. Past the host's flow-memory budget (no growth step allowed) a new flow goes to a shard
//! with a free slot (the processor's, the home shard, any other), else to the shard whose flow the
//! whole port's eviction order reclaims first: as the single-lock port tracks it in any free slot
//! of its table or recycles one (the shards' free slots are not the whole table's, so the two may
//! differ in which flow is recycled; a flow is refused only when no shard has a free slot and
//! nothing may be reclaimed). Storage: a shard's slab never shrinks while split (flows created on one
//! processor, expired, then created on another grow every processor's shard), all charged to the
//! host's flow-memory budget; a merge frees the other shards' storage (empty ones too), and the
//! driver's sweep merges a port whose processors' shards hold slots for more than twice its bound
//! (`ports::MERGE_SLOTS` in vsflow-callout), so a split port keeps at most about four times its
//! bound: the home shard's, twice the bound in the others at a sweep, and what grows until the
//! next one.

use alloc::vec::Vec;
use core::ops::DerefMut;

use crate::Verdict;
use crate::counters::PortCounters;
use crate::error::Error;
use crate::fingerprint::Pickup;
use crate::flow::{FlowKey, FlowTable, MAX_FLOWS_LIMIT, TableConfig, TimeoutClass};
use crate::icmp::{self, Icmp};
use crate::packet::{Headers, PacketMeta};
use crate::policy::RuleSet;
use crate::port::Port;
use crate::time::Tick;

/// Most shards (beyond the home one) a port is split into: one per processor, processors
/// beyond share (`processor % shards`).
pub const MAX_SHARDS: usize = 8;

/// The flow a packet reads or writes in classify, if any: the key its shard is found by.
///
/// `None` for a packet that touches no flow (a TCP or UDP first fragment without ports, ICMP
/// that is neither a query nor an error quoting a packet sent to its sender): it reads only
/// policy, and any shard judges it alike.
#[must_use]
pub fn packet_flow(meta: &PacketMeta) -> Option<FlowKey> {
    match meta.headers {
        Headers::NoPorts | Headers::Unknown => None,
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
            | Icmp::OverlappingFragment
            | Icmp::None
            | Icmp::Unreadable
            | Icmp::Other => None,
        },
        // Flags that could not be read: judged as the packet's own flow (classify's
        // `unreadable`), as is everything else.
        Headers::NoFlags | Headers::Complete => Some(FlowKey::of(meta)),
    }
}

/// The flow of a packet the fast path may judge ([`Port::classify_existing`]): a TCP or UDP
/// packet with complete headers; `None` for any other (the slow path's).
#[must_use]
#[inline]
pub fn fast_flow(meta: &PacketMeta) -> Option<FlowKey> {
    let tcp_udp = meta.protocol == crate::packet::protocol::TCP
        || meta.protocol == crate::packet::protocol::UDP;
    (tcp_udp && matches!(meta.headers, Headers::Complete)).then(|| FlowKey::of(meta))
}

/// True if `home` (a whole port) may be split at `now`: nothing of a migration is open (see
/// the module docs).
#[must_use]
pub fn may_split(home: &Port, now: Tick) -> bool {
    !home.is_restoring()
        && home.pickup.set().is_empty()
        && home.tentative.is_empty()
        && !home.pickups_open(now)
}

/// Splits the whole port `home` over the processors' shards `others`.
///
/// The shards (each `Some`, locked, in order) get an empty table with the port's configuration
/// `full` and a copy of `home`'s policy; the flows stay in `home` (processors adopt them, see
/// the module docs). Returns how many flows the port holds (the count the slow path keeps).
///
/// Everything is allocated before anything changes: on error nothing has changed.
///
/// # Errors
/// [`Error::OutOfMemory`]; [`Error::InvalidConfig`] for no shard, more than [`MAX_SHARDS`], or
/// one not locked.
pub fn split<G: DerefMut<Target = Port>>(
    home: &mut Port,
    others: &mut [Option<G>],
    full: &TableConfig,
) -> Result<u32, Error> {
    if others.is_empty() || others.len() > MAX_SHARDS || others.iter().any(Option::is_none) {
        return Err(Error::InvalidConfig("shards: 1..=MAX_SHARDS, every one locked"));
    }
    let config = TableConfig { initial_capacity: 0, ..*full };
    let mut tables = Vec::new();
    tables.try_reserve_exact(others.len())?;
    let mut rules = Vec::new();
    rules.try_reserve_exact(others.len())?;
    for o in others.iter().flatten() {
        // A shard emptied by a merge keeps its (empty) table when it has the port's
        // configuration.
        let reuse = o.table.is_empty() && *o.table.config() == config;
        tables.push(if reuse { None } else { Some(FlowTable::try_new(config)?) });
        rules.push(RuleSet::try_from_slice(home.rules.version(), home.rules.rules())?);
    }
    for ((o, t), r) in others.iter_mut().flatten().zip(tables).zip(rules) {
        copy_policy(home, o, r);
        if let Some(t) = t {
            o.table = t;
        }
    }
    Ok(u32::try_from(home.table.len()).unwrap_or(u32::MAX))
}

/// Makes `to` judge as `home` does: the same mode, rules (`rules`, a copy of `home`'s), restore
/// state and names; no pickups (a split port has none) and zero counters.
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

/// The slow path of a split port (see the module docs), under the home lock.
///
/// Judges `meta` on the shard holding its flow (`home` is the home shard), creating a new flow
/// in shard `own` (the packet's processor's). `lock(i)` locks processor shard `i` (`None`: no
/// such shard, and none after it); `flows` is the port's flow count across the shards,
/// `bound` the port's bound. Returns the verdict and the processor shard that judged it, if
/// one did (the caller's hint for this flow's next packet on this processor).
pub fn classify_slow<G: DerefMut<Target = Port>>(
    home: &mut Port,
    flows: &mut u32,
    bound: u32,
    own: usize,
    mut lock: impl FnMut(usize) -> Option<G>,
    meta: &PacketMeta,
    now: Tick,
) -> (Verdict, Option<usize>) {
    let Some(key) = packet_flow(meta) else {
        // Policy only: any shard judges it alike.
        return (home.classify(meta, now), None);
    };
    if home.table.find(&key).is_some() {
        let verdict = judge(home, flows, bound, meta, now);
        if home.table.get(&key).is_some_and(|r| r.last_seen == now)
            && let Some(mut shard) = lock(own)
        {
            adopt(home, &mut shard, &key);
        }
        return (verdict, None);
    }
    for i in 0..MAX_SHARDS {
        let Some(mut shard) = lock(i) else { break };
        if shard.table.find(&key).is_some() {
            return (judge(&mut shard, flows, bound, meta, now), Some(i));
        }
    }
    // A new flow (if the packet makes one). In the processor's shard while the port has room;
    // at its bound, in the shard whose flow the single-lock port would reclaim.
    if *flows < bound {
        // The processor's shard, if it has a slot (growing by a step the host's budget allows:
        // at most one step per shard for packets that open nothing, then the slot is free).
        if let Some(mut shard) = lock(own)
            && shard.table.make_room()
        {
            return (judge(&mut shard, flows, bound, meta, now), Some(own));
        }
        // Past the host's budget (or out of memory) the processor's shard has no slot: the
        // whole port would track the flow in any free slot of its table, else recycle one in
        // its eviction order. So: the shard with a free slot (the home shard first), else the
        // shard whose flow the whole port's order reclaims first (its insert recycles it past
        // the budget, or refuses as the whole port would).
        if home.table.make_room() {
            return (judge(home, flows, bound, meta, now), None);
        }
        for i in 0..MAX_SHARDS {
            let Some(mut shard) = lock(i) else { break };
            if i != own && shard.table.make_room() {
                return (judge(&mut shard, flows, bound, meta, now), Some(i));
            }
        }
    }
    if let Some(judged) = reclaim(home, flows, bound, &mut lock, meta, now) {
        return judged;
    }
    match lock(own) {
        Some(mut shard) => (judge(&mut shard, flows, bound, meta, now), Some(own)),
        None => (judge(home, flows, bound, meta, now), None),
    }
}

/// A new flow where the single-lock port would reclaim a slot for it: judged on the shard (the
/// home shard, `None`, or processor shard `i`) whose flow comes first in the whole port's
/// eviction order (`FlowTable::eviction_rank` compared across the shards); `None` if every
/// shard is empty.
///
/// Every processor shard's lock is held from the ranking to the judging, taken in order and
/// released in reverse (the order `PortSlot::lock_whole` takes them in): ranked one lock at a
/// time and the winner locked again, a packet on the winner's processor in between (its fast
/// path takes that shard's lock alone) could make its candidate an established connection,
/// which a new flow may not displace, and the new flow was refused where the single-lock port,
/// in either order of the two packets, reclaims another shard's flow (review s4, the shard
/// eviction race). Only at the port's bound; the shards' fast paths wait for one ranking
/// (each an O(1) look at its lists' tails) and one classify.
fn reclaim<G: DerefMut<Target = Port>>(
    home: &mut Port,
    flows: &mut u32,
    bound: u32,
    lock: &mut impl FnMut(usize) -> Option<G>,
    meta: &PacketMeta,
    now: Tick,
) -> Option<(Verdict, Option<usize>)> {
    let mut held: [Option<G>; MAX_SHARDS] = core::array::from_fn(|_| None);
    for (i, guard) in held.iter_mut().enumerate() {
        let Some(shard) = lock(i) else { break };
        *guard = Some(shard);
    }
    let mut best = home.table.eviction_rank(now).map(|r| (r, None));
    for (i, shard) in held.iter().enumerate() {
        if let Some(r) = shard.as_ref().and_then(|s| s.table.eviction_rank(now))
            && best.is_none_or(|(b, _)| r < b)
        {
            best = Some((r, Some(i)));
        }
    }
    let judged = match best {
        None => None,
        Some((_, None)) => Some((judge(home, flows, bound, meta, now), None)),
        Some((_, Some(i))) => held
            .get_mut(i)
            .and_then(Option::as_mut)
            .map(|shard| (judge(shard, flows, bound, meta, now), Some(i))),
    };
    for guard in held.iter_mut().rev() {
        drop(guard.take());
    }
    judged
}

/// Moves the flow `key` from `home` to `to` if `to` has a free slot for it (growing by a step
/// the host's budget allows, never reclaiming a slot). Called right after a packet of the flow
/// (its `last_seen` is now): it goes to the head of its list in `to`, placed now, so every
/// list stays ordered by placement time (what expiry and eviction rely on).
fn adopt(home: &mut Port, to: &mut Port, key: &FlowKey) {
    if !to.table.make_room() {
        return;
    }
    let Some(record) = home.table.remove(key) else { return };
    if to.table.insert(*key, record, record.last_seen).is_err() {
        // Not expected (room was made): back where it was, placed now (the slot it left is
        // free: no allocation, no eviction).
        let _ = home.table.insert(*key, record, record.last_seen);
    }
}

/// Classifies `meta` on `port`, a shard of a split port holding `flows` flows of at most
/// `bound`: at the bound, a new flow reclaims a slot of this shard or is refused.
fn judge(port: &mut Port, flows: &mut u32, bound: u32, meta: &PacketMeta, now: Tick) -> Verdict {
    let before = port.table.len();
    let full = *flows >= bound;
    let limit = port.table.config().max_flows;
    if full {
        #[allow(clippy::cast_possible_truncation, reason = "a table's length fits its u32 bound")]
        port.table.set_max_flows(before as u32);
    }
    let verdict = port.classify(meta, now);
    if full {
        port.table.set_max_flows(limit);
    }
    let after = port.table.len();
    #[allow(clippy::cast_possible_truncation, reason = "a table's length fits its u32 bound")]
    if after >= before {
        *flows = flows.saturating_add((after - before) as u32);
    } else {
        *flows = flows.saturating_sub((before - after) as u32);
    }
    verdict
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
        release(others);
        sum_into(home, others);
        return 0;
    }
    let total = home.table.len() + others.iter().flatten().map(|o| o.table.len()).sum::<usize>();
    let bound = u32::try_from(total).unwrap_or(u32::MAX).clamp(full.max_flows, MAX_FLOWS_LIMIT);
    let dropped =
        match FlowTable::try_new(TableConfig { max_flows: bound, initial_capacity: 0, ..*full }) {
            Ok(mut table) => {
                #[allow(
                    clippy::cast_possible_truncation,
                    reason = "total <= MAX_FLOWS_LIMIT: the bound"
                )]
                let _ = table.reserve(total as u32);
                for class in TimeoutClass::ALL {
                    merge_class(&mut table, home, others, class, now);
                }
                // Whatever was not placed (out of memory only), counted from the totals.
                let dropped = total.saturating_sub(table.len());
                home.table = table;
                dropped
            }
            // Not even an empty table: the home shard keeps its own flows; the others' are
            // dropped (counted) so that the port is whole again.
            Err(_) => others.iter().flatten().map(|o| o.table.len()).sum(),
        };
    release(others);
    sum_into(home, others);
    home.counters.untracked = home.counters.untracked.saturating_add(dropped as u64);
    dropped
}

/// Empties the shards `others` and frees their storage (a split port's shards may have grown;
/// a shard left empty but holding slots keeps them across splits otherwise).
fn release<G: DerefMut<Target = Port>>(others: &mut [Option<G>]) {
    for o in others.iter_mut().flatten() {
        if o.table.is_empty() && o.table.capacity() == 0 {
            continue;
        }
        match FlowTable::try_new(TableConfig { initial_capacity: 0, ..*o.table.config() }) {
            Ok(t) => o.table = t,
            Err(_) => o.table.clear(),
        }
    }
}

/// Moves one timeout class of every shard into `table`, oldest first across the shards (a
/// merge of the shards' lists, each ordered by placement time).
fn merge_class<G: DerefMut<Target = Port>>(
    table: &mut FlowTable,
    home: &Port,
    others: &[Option<G>],
    class: TimeoutClass,
    now: Tick,
) {
    // The home shard and up to MAX_SHARDS processors' shards.
    let mut lists: [Option<_>; MAX_SHARDS + 1] = Default::default();
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
        // The bound holds every flow: an insert fails only if memory runs out (the caller
        // counts what is missing).
        let _ = table.insert(*key, *record, now);
    }
}

/// Adds the other shards' counters into `home`'s and zeroes theirs.
fn sum_into<G: DerefMut<Target = Port>>(home: &mut Port, others: &mut [Option<G>]) {
    for o in others.iter_mut().flatten() {
        home.counters = home.counters.saturating_add(&o.counters);
        o.counters = PortCounters::default();
    }
}
