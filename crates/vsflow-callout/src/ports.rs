//! The host's switches and ports, and how a packet finds its port without a host-wide lock.
//!
//! Every port has its own spin lock ([`PortSlot::state`]): classify, save, restore and the
//! IOCTLs of one port never wait for another port. Finding a port takes no lock shared between
//! processors: the port map is guarded by one reader/writer spin lock (`EX_SPIN_LOCK`) *per
//! processor*, each on its own cache lines. A reader takes its own processor's lock shared: an
//! interlocked operation on a line no other processor writes. A writer (switch and port
//! create/delete, stop: rare) takes every processor's lock exclusively, in order.
//!
//! **Short holds only.** While a writer waits for processor k's lock it holds processors
//! 0..k-1, and while it waits no new reader gets processor k's lock either ("Reader/Writer Spin
//! Locks"): every reader of those processors waits as long as the slowest reader at k. So the
//! map lock is held only for what is short and bounded:
//! - to find a port and take a reference on it ([`PortRef`], a count in the port: one
//!   interlocked increment), for everything that works on a port for longer than a packet:
//!   save, restore apply, the IOCTLs, NIC events ([`PortMap::get`]); walks over every port
//!   (the expiry sweep, `ListPorts`, counters) take a reference on each port into a list
//!   allocated *before* the lock ([`PortMap::snapshot`]) and visit them one at a time after it;
//! - to classify one packet ([`PortMap::with_packet_port`]): the packet path takes no
//!   reference (no interlocked operation on a line other processors write), judges the packet
//!   under its port's lock and lets go; a classify allocates at most one flow and never copies
//!   a table. Under the map lock it never *waits* for a lock of its port: it takes them only
//!   if free (`KeTryToAcquireSpinLockAtDpcLevel`), and a port whose home lock is taken (its
//!   save, restore apply, an IOCTL, a merge) is judged after the map lock is released, on a
//!   reference taken under it (review s6, R6-1: a packet spinning on its port's lock under
//!   processor k's map lock made a writer holding processors 0..k-1 wait for that port's long
//!   work, and every packet of every port on those processors with it).
//!
//! A port a writer removes from the map is freed when its last reference goes: by the writer
//! (after releasing the map's locks) if nobody else holds one, else by the last holder. So a
//! port is never freed under a reader, and no writer ever waits for long work. Rundown: once a
//! port is out of the map no new reference to it can be taken (references are taken only
//! under the map lock), and [`PortSlot::is_removed`] tells a holder it is gone.
//!
//! **One port on several processors** (issue 18 §2). A port's flows are split over shards, one
//! per processor ([`vsflow_core::port::shards`]): the *home* shard is [`PortState::port`] under
//! [`PortSlot::state`], the processors' ([`ShardSlot`], one per processor up to
//! [`shards::MAX_SHARDS`]) each under a lock of its own, on cache lines of its own. While the
//! port is *split* ([`PortSlot::is_sharded`]) a packet of a flow its processor's shard holds
//! takes only that shard's lock ([`PortSlot::classify`]): a processor judging its own
//! connections writes only lines no other processor writes. A packet of a flow another
//! processor's shard holds (its other direction's processor) takes, after the flow's first
//! packet here, that shard's lock alone (the processor's hint, `ShardSlot::hints`). Anything
//! else (a new flow, ICMP, a stale hint) takes the home lock and finds the flow's shard
//! (`shards::classify_slow`). Everything else sees the port whole: it takes the home lock and
//! then every shard's, in order, and merges the shards back ([`PortSlot::lock_whole`]), but a
//! save, which only reads, reads the shards in place under the same locks
//! ([`PortSlot::with_all_locks`]: the same blob, and the port stays split); the expiry sweep
//! splits a port again when nothing of a migration is open on it ([`PortSlot::sweep`]). `sharded` changes only under every one of the port's locks, so a
//! holder of any of them reads it stably.
//!
//! **The packet's port without a map lookup** ([`PortMap::with_packet_port`]). Each processor
//! keeps, beside its map lock and on its cache lines, a small cache of the ports its packets
//! found ([`CachedPort`]: the port, the switch's index, the map *generation* they were found
//! at). Every change of the map (switch or port create, delete, replace, stop: [`PortMap::update`])
//! takes a new generation under every processor's lock held exclusively, so an entry of an
//! older generation is never used: a port deleted, or deleted and created again with the same
//! key (another [`PortSlot`], another instance), is looked up in the map again. An entry is used
//! only if its generation is the map's and its port, switch and the packet's `VSWITCH_ID` bytes
//! and port id all agree, checked on every packet (so entries written at once by two readers of
//! one processor's lock — a thread that read its processor number before its IRQL was raised —
//! can mix, but never name a port the packet does not). The cache is read and written only under
//! that processor's lock held shared, and a port in the map at the generation the lock holder
//! sees is alive (the map holds a reference), so an entry never outlives its port's use.
//! Beside it, an *absence cache* ([`CachedAbsence`]) remembers, by the same generation rule,
//! port ids of a known switch the map holds no port for: a switch's external and internal
//! ports, which vsflow does not track, are one side of every packet between a VM and the
//! outside, and their packets are passed by without hashing the map each time.
//!
//! All of it works at `IRQL <= DISPATCH_LEVEL` (vSwitch callbacks may come at `DISPATCH_LEVEL`):
//! nobody waits, a writer spins only for readers' short critical sections, and a reader never
//! asks for a lock exclusively (lock order: map (shared or exclusive) -> one port's home shard ->
//! its shards 0, 1, ... in order -> pending; classify takes one shard's lock, or the home's then
//! one shard's at a time).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::hash::BuildHasher;
use core::ops::Deref;
use core::ptr::NonNull;
use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering, fence,
};

use foldhash::fast::FixedState;
use hashbrown::HashMap;
use vsflow_core::flow::TableConfig;
use vsflow_core::keys;
use vsflow_core::port::MAX_NAME_UNITS;
use vsflow_core::port::shards::{self, MAX_SHARDS};
use vsflow_core::{PacketMeta, Port, PortCounters, PortIdentity, Tick, Verdict};

use crate::alloc_util::try_box;

mod absence;
mod call_count;
use crate::error::CalloutError;
use crate::services::{KernelServices, RawSpinLock};
use crate::sync::{ExclusiveGuard, SharedGuard, SpinGuard, SpinMutex};
use absence::Absence;
use call_count::CallCount;

/// A port of a switch: `(switch, PortId)`. `PortId`s are unique only within a switch and change
/// across live migration; the port's durable identity lives in its [`PortState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortKey {
    /// The switch's id (assigned by vsflow at switch create).
    pub switch: u32,
    /// The current host's `NDIS_SWITCH_PORT_ID`.
    pub port: u32,
}

/// A split port holding at least this fraction of its bound (7/8) is merged back by the sweep.
pub(crate) const MERGE_AT: (u64, u64) = (7, 8);
/// A whole port is split by the sweep only while it holds less than this fraction (3/4) of its
/// bound.
pub(crate) const SPLIT_BELOW: (u64, u64) = (3, 4);
/// A split port whose processors' shards hold slots for more than this many times its bound is
/// merged back by the sweep (freeing them): a slab never shrinks while the port is split, and a
/// guest's connections coming and going on one processor after another would otherwise keep a
/// slab of nearly the bound in every processor's shard, charged to the host-wide flow budget.
pub(crate) const MERGE_SLOTS: u64 = 2;

/// How long a port keeps its encoder's memory after a save (60 s): a migration's retries and
/// a checkpoint series reuse it; a port that stays frees it at the next sweep after that.
pub(crate) const ENCODER_KEEP: vsflow_core::Tick = vsflow_core::time::secs(60);

/// How long after a page of a `GetFlows` listing the sweep leaves the port whole (10 s).
///
/// A listing pages with a cursor that is a position in the port's table. A page runs on the
/// port whole ([`PortSlot::lock_whole`]: a split port merged into a new table, every flow at a
/// new position), so a split between two pages (and the VM's packets moving flows into the
/// processors' shards) would make the next page's merge lay the flows out anew, and the
/// listing skip some and repeat others (review s4, L2). While the port stays whole its flows
/// keep their positions: a listing whose pages come within this of each other lists every
/// flow that lives throughout it exactly once. The price: the port's packets take its one lock
/// for as long (diagnostics are rare; a split port is split again at the next sweep after).
pub(crate) const LISTING_HOLD: vsflow_core::Tick = vsflow_core::time::secs(10);

/// A virtual switch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SwitchEntry {
    /// vsflow's id for it.
    pub(crate) id: u32,
    /// `SwitchName` (the switch GUID string).
    pub(crate) name: PortIdentity,
    /// The name as UTF-16LE bytes (as WFP's `FWPS_FIELD_*_VSWITCH_ID` blob carries it), so a
    /// packet's switch is found with one byte comparison; `None` if the name holds a NUL unit
    /// (no blob can name it: a blob's name ends at its first NUL).
    name_le: Option<([u8; 2 * MAX_NAME_UNITS], usize)>,
}

impl SwitchEntry {
    fn new(id: u32, name: &PortIdentity) -> Self {
        let units = name.as_utf16();
        let mut le = [0u8; 2 * MAX_NAME_UNITS];
        for (d, u) in le.chunks_exact_mut(2).zip(units) {
            d.copy_from_slice(&u.to_le_bytes());
        }
        let name_le = (!units.contains(&0)).then_some((le, 2 * units.len()));
        Self { id, name: *name, name_le }
    }

    /// Whether `bytes` (UTF-16LE, up to an optional NUL unit) is this switch's name.
    fn is_named_le(&self, bytes: &[u8]) -> bool {
        let Some((le, n)) = &self.name_le else { return false };
        // The blob ends with the name (an odd byte after it is not a unit), or a NUL unit
        // follows it.
        let ends = matches!(bytes.get(*n..), Some([] | [_] | [0, 0, ..]));
        ends && bytes.get(..*n) == le.get(..*n)
    }
}

/// Everything vsflow keeps for one switch port, under the port's own lock.
#[derive(Debug)]
pub(crate) struct PortState {
    /// Flow table, policy, counters, durable identity.
    pub(crate) port: Port,
    /// `NDIS_SWITCH_PORT_TYPE`.
    pub(crate) port_type: u32,
    /// The VM NIC connected to the port, if any (`NicIndex`).
    pub(crate) nic: Option<u16>,
    /// A NIC is connected (`NicState` connected, or between `INTERFACE_CONNECT` and
    /// `INTERFACE_DISCONNECT`).
    pub(crate) nic_connected: bool,
    /// A VM NIC (synthetic or emulated) is on the port. A generic port is judged only then.
    pub(crate) vm_nic: bool,
    /// The buffer handed to WFP by the last runtime-state save of this port. Owned by the
    /// driver: replaced by the next save, freed with the port or at stop; charged to the
    /// host's flow-memory budget while it lives ([`crate::save_buffer`]).
    pub(crate) save_buffer: crate::save_buffer::SaveBuffer,
    /// The working memory of this port's saves, reused by each (no allocation per save once
    /// the port has been saved at its size: `vsflow_core::codec::Encoder`; about 200 bytes a
    /// flow). Freed with the port, or by the expiry sweep once no save came for
    /// [`ENCODER_KEEP`] ([`PortState::sweep`]): a port saves once per migration, and a port
    /// that stays keeps no save memory.
    pub(crate) encoder: vsflow_core::codec::Encoder,
    /// When the port was last saved (`Tick::MAX`: never).
    pub(crate) last_save: vsflow_core::Tick,
    /// When a page of a `GetFlows` listing last read the port (`Tick::MAX`: never): the sweep
    /// does not split it for [`LISTING_HOLD`] after.
    pub(crate) last_listed: vsflow_core::Tick,
    /// Keyed digest and length of the last blob restored into this port (a second restore of
    /// the same blob changes nothing).
    pub(crate) last_restore: Option<(u64, usize)>,
    /// When a restore window closes on its own if no restore came (the source host may have
    /// saved nothing for vsflow: no restore callback will ever come); `Tick::MAX` if none.
    pub(crate) window_deadline: vsflow_core::Tick,
    /// Classify calls that reached this port (summed into the driver's count on read).
    pub(crate) classify_calls: u64,
    /// While the port is split: its flows, counted across the shards (kept by the slow path and
    /// the sweep, under this lock: `shards::classify_slow`).
    pub(crate) spread: u32,
}

impl PortState {
    /// Closes the restore window if its deadline passed (no restore came: a source host
    /// without vsflow): the port applies its own mode again and the loose pickup window opens
    /// ([`vsflow_core::Port::restore_timed_out`]). A branch per packet while no window is open.
    #[inline]
    pub(crate) fn close_stale_window(&mut self, now: vsflow_core::Tick) {
        if now >= self.window_deadline {
            self.window_deadline = vsflow_core::Tick::MAX;
            self.port.restore_timed_out(now);
        }
    }

    /// The periodic sweep of this port's home shard: closes a stale restore window, removes up
    /// to `budget` idle flows (returns how many), frees the encoder's memory once no save came
    /// for [`ENCODER_KEEP`] (with it the fingerprint salt of its saves).
    pub(crate) fn sweep(&mut self, now: vsflow_core::Tick, budget: usize) -> usize {
        self.close_stale_window(now);
        if self.last_save != vsflow_core::Tick::MAX
            && now.saturating_sub(self.last_save) >= ENCODER_KEEP
        {
            self.encoder.release();
            self.last_save = vsflow_core::Tick::MAX;
        }
        self.port.expire(now, budget)
    }

    /// Readies the encoder of a port past the cap for its next save (blobs of at most `cap`
    /// bytes; the port holds `flows` flows, every shard's): its memory sized, its salt drawn
    /// and its connections' fingerprints computed a bounded number at a time
    /// (`vsflow_core::codec::Encoder::prepare_split`; a split port's processors' shards after
    /// this, `Encoder::prepare_shard`), so that a port's first save, as a live migration's
    /// usually is, allocates nothing and hashes only connections new since. True if the
    /// encoder holds prepared memory.
    pub(crate) fn prepare_save(
        &mut self,
        now: vsflow_core::Tick,
        cap: usize,
        flows: usize,
    ) -> bool {
        self.encoder.prepare_split(&self.port, flows, now, cap);
        if self.encoder.heap_bytes() > 0 {
            // The blob's buffer too (it stays with the port after its first save anyway),
            // charged as a save charges it; one a save handed to WFP, which may still be
            // copying it, is left where it is and a spare readied beside it for the next save
            // (crate::save_buffer; review s5, R5-3).
            let _ = self.save_buffer.reserve_for_next_save(cap, self.port.table().config().budget);
        } else {
            self.save_buffer.release_spare();
        }
        self.encoder.is_prepared()
    }

    /// Whether packets of this port are judged (generic ports only with a VM NIC on them).
    pub(crate) const fn judged(&self) -> bool {
        self.port_type != fwps_sys::NdisSwitchPortTypeGeneric || self.vm_nic
    }
}

/// Whether a classify waits for the port's locks ([`PortSlot::classify`]'s `WAIT`): `true`
/// outside the map lock (spins for them), `false` under it (takes a lock only if it is free,
/// `KeTryToAcquireSpinLockAtDpcLevel`, at `DISPATCH_LEVEL`). A constant, so that the packet
/// path's copy is its own and inlined.
pub(crate) type Wait = bool;

/// Under the map lock: never wait ([`Wait`]).
pub(crate) const NO_WAIT: Wait = false;

/// `m`'s guard: waited for (`WAIT`), or only if free.
#[inline]
fn take<const WAIT: bool, L: RawSpinLock, T>(m: &SpinMutex<L, T>) -> Option<SpinGuard<'_, L, T>> {
    if WAIT { Some(m.lock()) } else { m.try_lock_at_dpc() }
}

/// A port's home lock was taken when a classify under the map lock looked ([`NO_WAIT`]):
/// nothing was judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Busy;

/// A processor's shard of a port: its own [`Port`] (the flows that processor judged first, a
/// copy of the port's policy, its counters) under its own lock, alone on its cache lines (see
/// [`CpuLock`] for why padding and not alignment).
///
/// The guards are [`SHARD_GUARD`] bytes a side, not 64: with 64 the two processors' shards of
/// one port interfered (two threads on one port, own connections, fell from 1.96x to 1.61-1.69x
/// of one thread when `calls` grew by 8 bytes in 25e0ac5; 128-byte guards: 1.99x; PERFORMANCE.md,
/// the lead's sixth-session re-measure). x86 processors' adjacent-line prefetcher fetches
/// 128-byte pairs of lines, so hot data of two processors closer than 128 bytes can still share
/// a pair (a hypothesis consistent with the measure, not profiled; verify on Windows hardware:
/// WINDOWS-VERIFICATION 80). The seventh session's restore changes grew the shard's `Port` by
/// 72 bytes (a `FlowTable`'s window-check and staging fields, cold on the packet path) and two
/// threads on one port fell again, to 1.88-1.90x (four runs); with 256-byte guards 1.98x, 1.98x
/// in the same window (PERFORMANCE.md, the lead's seventh-session re-measure). Whether the
/// distance or the exact placement is what matters is not known: one experiment, not a profile.
#[repr(C)]
pub(crate) struct ShardSlot<L: RawSpinLock> {
    _front: [u64; SHARD_GUARD / 8],
    pub(crate) port: SpinMutex<L, Port>,
    /// Classify calls judged on this shard (written under its lock; summed on read).
    calls: CallCount,
    /// Where this processor's slow path last judged a flow of each hash bucket that another
    /// processor's shard holds (`1 + shard`; `0`: none): the next packet of such a flow tries
    /// that shard's lock alone first (`shards`, "A flow another processor's shard holds").
    /// Written and read by this shard's processor; any value is safe (a hint).
    hints: [AtomicU8; HINTS],
    _back: [u64; SHARD_GUARD / 8],
}

/// Bytes of guard padding on each side of a [`ShardSlot`]: two 128-byte pairs of cache lines.
const SHARD_GUARD: usize = 256;

// Two shards' hot fields stay at least two whole 128-byte line pairs apart.
const _: () = assert!(SHARD_GUARD >= 256 && SHARD_GUARD.is_multiple_of(8));

/// Hints per processor's shard (256 bytes: four cache lines of its own).
const HINTS: usize = 256;

impl<L: RawSpinLock> ShardSlot<L> {
    /// A shard holding `port`.
    pub(crate) fn new(port: SpinMutex<L, Port>) -> Self {
        Self {
            _front: [0; SHARD_GUARD / 8],
            port,
            calls: CallCount::new(),
            hints: [const { AtomicU8::new(0) }; HINTS],
            _back: [0; SHARD_GUARD / 8],
        }
    }

    /// Counts a classify call; the caller holds the shard's lock (so no other writer).
    #[inline]
    fn count_call(&self) {
        self.calls.count();
    }
}

/// How a port is split (issue 18 §2): its processors' shards and the port's own table
/// configuration (what a merge restores).
pub(crate) struct Sharding<L: RawSpinLock> {
    pub(crate) shards: Vec<ShardSlot<L>>,
    pub(crate) full: TableConfig,
}

/// A port and its locks. Lives in a box shared by [`PortRef`]s: the map holds one, and anyone
/// working on the port holds another, taken under the map lock.
///
/// `repr(C)` with padding: what every packet reads (the shards, `sharded`) stays on lines no
/// packet writes, apart from the home shard's lock and state.
#[repr(C)]
pub(crate) struct PortSlot<L: RawSpinLock> {
    pub(crate) key: PortKey,
    /// `PortName`: never changes for a slot (a new name is a new port).
    pub(crate) identity: PortIdentity,
    /// This port's instance, unique among the driver's ports: a port deleted and created again
    /// with the same key is another instance (a restore received for one never applies to the
    /// other: `vswitch::restore`).
    pub(crate) instance: u64,
    /// The processors' shards (none: the port is never split).
    shards: Vec<ShardSlot<L>>,
    full: TableConfig,
    /// Keyed (per boot) hash of a flow to its hint bucket ([`ShardSlot::hints`]).
    hint_hash: FixedState,
    /// The port's flows are spread over its shards. Changed only under every one of the port's
    /// locks: stable for anyone holding one of them.
    sharded: AtomicBool,
    /// References held ([`PortRef`]); the slot is freed when the last goes.
    refs: AtomicUsize,
    /// Taken out of the map (deleted, replaced, or the driver stopped).
    removed: AtomicBool,
    _pad: [u64; 8],
    /// The home shard and everything else vsflow keeps for the port.
    pub(crate) state: SpinMutex<L, PortState>,
    _back: [u64; 8],
}

impl<L: RawSpinLock> PortSlot<L> {
    /// A port, not yet in the map, unsharded.
    pub(crate) fn new(
        key: PortKey,
        identity: &PortIdentity,
        instance: u64,
        state: SpinMutex<L, PortState>,
        sharding: Sharding<L>,
    ) -> Self {
        let shards = if sharding.shards.len() <= MAX_SHARDS { sharding.shards } else { Vec::new() };
        Self {
            key,
            identity: *identity,
            instance,
            shards,
            full: sharding.full,
            // The hints' own key (vsflow_core::keys), not the port's seed.
            hint_hash: FixedState::with_seed(keys::derive(
                sharding.full.hash_seed,
                keys::Purpose::ShardHints,
            )),
            sharded: AtomicBool::new(false),
            refs: AtomicUsize::new(1),
            removed: AtomicBool::new(false),
            _pad: [0; 8],
            state,
            _back: [0; 8],
        }
    }

    /// Whether the port was taken out of the map (its work can stop: nobody will find it).
    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Whether the port's flows are spread over its shards.
    pub(crate) fn is_sharded(&self) -> bool {
        self.sharded.load(Ordering::Acquire)
    }

    /// Judges one packet on processor `cpu` (`KeGetCurrentProcessorNumberEx`, read by classify
    /// before the map lock raises the IRQL: a classify called at `PASSIVE_LEVEL` may have moved
    /// to another processor since. Only which shard is tried first, and which processor's map
    /// lock and port cache are used, depend on it, never the verdict: any processor's map lock
    /// excludes every writer, the cache's entries are checked as two readers may write them, and
    /// any shard may be tried first).
    /// While the port is split, a packet of a flow `cpu`'s shard holds is judged under that
    /// shard's lock only; anything else under the home lock (`shards::classify_slow`), as is
    /// every packet of a whole port. `None` for a port whose packets are not judged (a generic
    /// port without a VM NIC; never split).
    ///
    /// `WAIT`: under the map lock ([`NO_WAIT`], the packet path's first try) no lock of the
    /// port is waited for: a shard's lock that is taken is passed over (its flows are found
    /// by the slow path), and a home lock that is taken returns [`Busy`] before anything was
    /// judged, for the caller to wait for it after releasing the map lock (review s6, R6-1:
    /// [`PortMap::with_packet_port`]). Under the home lock the slow path waits for a shard's
    /// lock: only a packet's fast path holds one without the home lock, for one packet.
    ///
    /// # Errors
    /// [`Busy`]: with [`NO_WAIT`] only, the port's home lock is taken; nothing was judged.
    #[inline]
    pub(crate) fn classify<const WAIT: Wait>(
        &self,
        cpu: u32,
        meta: &PacketMeta,
        now: Tick,
    ) -> Result<Option<Verdict>, Busy> {
        let n = self.shards.len();
        let own = if n == 0 { 0 } else { cpu as usize % n };
        if self.sharded.load(Ordering::Acquire)
            && let Some(shard) = self.shards.get(own)
        {
            // Taken (another packet of this processor's shard, or the port's long work): the
            // slow path finds the flow wherever it is.
            if let Some(mut port) = take::<WAIT, _, _>(&shard.port) {
                // Stable under any of the port's locks; merged meanwhile: the home lock judges.
                if self.sharded.load(Ordering::Relaxed)
                    && let Some(verdict) = port.classify_existing(meta, now)
                {
                    shard.count_call();
                    return Ok(Some(verdict));
                }
            }
            if let Some(verdict) = self.classify_hinted::<WAIT>(shard, own, meta, now) {
                return Ok(Some(verdict));
            }
            let mut st = take::<WAIT, _, _>(&self.state).ok_or(Busy)?;
            return Ok(self.classify_split(&mut st, own, meta, now));
        }
        let mut st = take::<WAIT, _, _>(&self.state).ok_or(Busy)?;
        if self.sharded.load(Ordering::Relaxed) {
            // Split since the first look.
            return Ok(self.classify_split(&mut st, own, meta, now));
        }
        st.classify_calls += 1;
        st.close_stale_window(now);
        Ok(st.judged().then(|| st.port.classify(meta, now)))
    }

    /// [`PortSlot::classify`] waiting for the port's locks (`WAIT`): outside the map
    /// lock, for a packet whose port's home lock was taken when it looked
    /// ([`PortMap::with_packet_port`]). Out of line: only contended packets come here.
    #[cold]
    #[inline(never)]
    pub(crate) fn classify_waiting(
        &self,
        cpu: u32,
        meta: &PacketMeta,
        now: Tick,
    ) -> Option<Verdict> {
        // Waiting always takes the lock: never `Busy`.
        self.classify::<true>(cpu, meta, now).unwrap_or(None)
    }

    /// A packet its processor's shard does not hold, on a split port: judged in the shard this
    /// processor's slow path last judged a flow of its bucket in, under that lock alone, if
    /// that shard holds it (out of line: the fast path's hits stay short).
    #[cold]
    #[inline(never)]
    fn classify_hinted<const WAIT: Wait>(
        &self,
        shard: &ShardSlot<L>,
        own: usize,
        meta: &PacketMeta,
        now: Tick,
    ) -> Option<Verdict> {
        let other = self.hinted(shard, own, meta)?;
        // Taken: as if there were no hint (the slow path finds the flow).
        let mut port = take::<WAIT, _, _>(&other.port)?;
        if !self.sharded.load(Ordering::Relaxed) {
            return None;
        }
        let verdict = port.classify_existing(meta, now)?;
        other.count_call();
        Some(verdict)
    }

    /// The slow path of a split port, under the home lock (`st`; `shards::classify_slow`), and
    /// the hint it leaves for the flow's next packet on this processor. A port merged meanwhile
    /// is judged whole.
    #[cold]
    #[inline(never)]
    fn classify_split(
        &self,
        st: &mut PortState,
        own: usize,
        meta: &PacketMeta,
        now: Tick,
    ) -> Option<Verdict> {
        st.classify_calls += 1;
        if !self.sharded.load(Ordering::Relaxed) {
            st.close_stale_window(now);
            return st.judged().then(|| st.port.classify(meta, now));
        }
        let (verdict, judged_in) = shards::classify_slow(
            &mut st.port,
            &mut st.spread,
            self.full.max_flows,
            own,
            |i| self.shards.get(i).map(|s| s.port.lock()),
            meta,
            now,
        );
        if let Some(j) = judged_in.filter(|&j| j != own)
            && let (Some(key), Some(shard)) = (shards::fast_flow(meta), self.shards.get(own))
            && let Ok(hint) = u8::try_from(j + 1)
        {
            let bucket = self.hint_bucket(&key);
            if let Some(h) = shard.hints.get(bucket) {
                h.store(hint, Ordering::Relaxed);
            }
        }
        Some(verdict)
    }

    /// The hint bucket of flow `key`.
    #[inline]
    fn hint_bucket(&self, key: &vsflow_core::FlowKey) -> usize {
        #[allow(clippy::cast_possible_truncation, reason = "the low bits pick a bucket")]
        let h = self.hint_hash.hash_one(key) as usize;
        h & (HINTS - 1)
    }

    /// The shard `own`'s hints name for the flow of `meta` (a fast-path packet), if another.
    #[inline]
    fn hinted(&self, shard: &ShardSlot<L>, own: usize, meta: &PacketMeta) -> Option<&ShardSlot<L>> {
        let key = shards::fast_flow(meta)?;
        let hint = shard.hints.get(self.hint_bucket(&key))?.load(Ordering::Relaxed);
        let j = usize::from(hint).checked_sub(1).filter(|&j| j != own)?;
        self.shards.get(j)
    }

    /// Runs `f` with every processor's shard locked, in order (the caller holds the home
    /// shard's lock); releases them in reverse order.
    fn with_shards<R>(&self, f: impl FnOnce(&mut [Option<SpinGuard<'_, L, Port>>]) -> R) -> R {
        let mut guards: [Option<SpinGuard<'_, L, Port>>; MAX_SHARDS] = Default::default();
        for (guard, shard) in guards.iter_mut().zip(&self.shards) {
            *guard = Some(shard.port.lock());
        }
        let n = self.shards.len().min(MAX_SHARDS);
        let r = f(guards.get_mut(..n).unwrap_or_default());
        for guard in guards.iter_mut().rev() {
            drop(guard.take());
        }
        r
    }

    /// The port's lock with the port whole: a sharded port is merged back into its home shard
    /// first, under every shard's lock ([`shards::merge`]: the port as one lock would have
    /// kept it). For everything but classify, the expiry sweep and the read-only walks: save,
    /// restore, NIC events, the IOCTLs that read flows or change the port.
    pub(crate) fn lock_whole(&self, now: Tick) -> SpinGuard<'_, L, PortState> {
        let mut st = self.state.lock();
        if self.sharded.load(Ordering::Relaxed) {
            let home = &mut st.port;
            self.with_shards(|others| {
                shards::merge(home, others, &self.full, now);
                self.sharded.store(false, Ordering::Release);
            });
            st.spread = 0;
        }
        st
    }

    /// Runs `f` on the port's state with every one of the port's locks held, the home shard's
    /// and then each processor's shard's in order (as [`PortSlot::lock_whole`] takes them), and
    /// the processors' shards (none while the port is whole), without merging them: a save
    /// (`vsflow_core::codec::Encoder::encode_split` writes the blob the merged port would give,
    /// byte for byte, reading the shards in place; a merge would build a new table of the port's
    /// flows in the save, and move every flow to a new slot, so the fingerprints the sweep
    /// readied by slot were computed again: review-s4 L4). The port stays split.
    pub(crate) fn with_all_locks<R>(
        &self,
        f: impl FnOnce(&mut PortState, &[Option<&Port>]) -> R,
    ) -> R {
        let mut st = self.state.lock();
        if !self.sharded.load(Ordering::Relaxed) {
            return f(&mut st, &[]);
        }
        self.with_shards(|others| {
            let mut ports: [Option<&Port>; MAX_SHARDS] = [None; MAX_SHARDS];
            for (p, g) in ports.iter_mut().zip(others.iter()) {
                *p = g.as_deref();
            }
            f(&mut st, ports.get(..others.len()).unwrap_or_default())
        })
    }

    /// The expiry sweep of this port: idle flows of every shard (up to `budget` in each), the
    /// restore window closed if no restore came in time, the save memory freed after a minute
    /// ([`PortState::sweep`]); then a whole port with nothing of a migration open is split
    /// ([`shards::split`]; it stays whole if that cannot be done now), and a split port over
    /// [`MERGE_AT`] of its bound is merged back (a port near its bound reclaims slots in the
    /// single table's exact order, and churning floods gain nothing from processors), to split
    /// again below [`SPLIT_BELOW`]. Returns the flows removed.
    pub(crate) fn sweep(&self, now: Tick, budget: usize, cap: usize) -> usize {
        let mut st = self.state.lock();
        let mut removed = st.sweep(now, budget);
        let bound = u64::from(self.full.max_flows);
        if self.sharded.load(Ordering::Relaxed) {
            let mut spread_removed = removed;
            // Slots the processors' shards hold (their slabs never shrink while split).
            let mut slots = 0u64;
            for shard in &self.shards {
                let mut port = shard.port.lock();
                let n = port.expire(now, budget);
                slots = slots.saturating_add(port.table().capacity() as u64);
                removed += n;
                spread_removed += n;
            }
            let spread_removed = u32::try_from(spread_removed).unwrap_or(u32::MAX);
            st.spread = st.spread.saturating_sub(spread_removed);
            // Merged near the bound, or once the shards' storage passes MERGE_SLOTS times the
            // bound (flows that came and went on one processor after another): a merge frees
            // the shards' storage, so a split port never keeps much more than the whole
            // port's from the host's budget.
            if u64::from(st.spread) * MERGE_AT.1 >= bound * MERGE_AT.0
                || slots > bound.saturating_mul(MERGE_SLOTS)
            {
                let home = &mut st.port;
                self.with_shards(|others| {
                    shards::merge(home, others, &self.full, now);
                    self.sharded.store(false, Ordering::Release);
                });
                st.spread = 0;
            }
        } else if !self.shards.is_empty()
            && st.judged()
            && (st.last_listed == Tick::MAX || now.saturating_sub(st.last_listed) >= LISTING_HOLD)
            && shards::may_split(&st.port, now)
            && (st.port.table().len() as u64) * SPLIT_BELOW.1 < bound * SPLIT_BELOW.0
        {
            let home = &mut st.port;
            let split = self.with_shards(|others| {
                let r = shards::split(home, others, &self.full);
                if r.is_ok() {
                    self.sharded.store(true, Ordering::Release);
                }
                r
            });
            if let Ok(flows) = split {
                st.spread = flows;
            }
        }
        // The encoder of a port past the cap readied for its next save: sized for every flow,
        // the home shard's fingerprints computed, then each processor's shard's under that
        // shard's lock alone (a save reads the shards in place: `with_all_locks`).
        if self.sharded.load(Ordering::Relaxed) {
            let flows = st.spread as usize;
            if st.prepare_save(now, cap, flows) {
                for (i, shard) in self.shards.iter().enumerate() {
                    let port = shard.port.lock();
                    st.encoder.prepare_shard(i, &port);
                }
            }
        } else {
            let flows = st.port.table().len();
            st.prepare_save(now, cap, flows);
        }
        removed
    }

    /// Runs `f` on the home shard's port and then on each other shard's, one lock at a time
    /// (the caller holds the home lock, `st`): for reads that add up over the shards.
    pub(crate) fn each_shard(&self, st: &PortState, mut f: impl FnMut(&Port)) {
        f(&st.port);
        if self.sharded.load(Ordering::Relaxed) {
            for shard in &self.shards {
                f(&shard.port.lock());
            }
        }
    }

    /// Flows in the port, every shard's (the caller holds the home lock, `st`).
    pub(crate) fn flow_count(&self, st: &PortState) -> usize {
        let mut n = 0;
        self.each_shard(st, |p| n += p.table().len());
        n
    }

    /// The port's counters, every shard's summed (the caller holds the home lock, `st`).
    pub(crate) fn counters(&self, st: &PortState) -> PortCounters {
        let mut sum = PortCounters::default();
        self.each_shard(st, |p| sum = sum.saturating_add(p.counters()));
        sum
    }

    /// Classify calls that reached the port, every shard's; `take` resets them (the caller
    /// holds the home lock, `st`).
    pub(crate) fn classify_calls(&self, st: &mut PortState, take: bool) -> u64 {
        let mut n = if take { core::mem::take(&mut st.classify_calls) } else { st.classify_calls };
        for shard in &self.shards {
            let c = if take { shard.calls.take() } else { shard.calls.read() };
            n = n.wrapping_add(c);
        }
        n
    }
}

/// A counted reference to a [`PortSlot`]: the port lives while one exists.
///
/// New references are made only from one already held (`clone_ref`), and only under the map
/// lock or by the map itself, so once a port is out of the map the count only goes down.
pub(crate) struct PortRef<L: RawSpinLock> {
    slot: NonNull<PortSlot<L>>,
}

// SAFETY: a `PortRef` is a shared reference to a `PortSlot` with a count; the slot is `Sync`
// (its state is behind a spin lock, the rest is immutable or atomic), so it may be shared and
// released from any thread.
unsafe impl<L: RawSpinLock> Send for PortRef<L> where PortSlot<L>: Sync + Send {}
// SAFETY: as above.
unsafe impl<L: RawSpinLock> Sync for PortRef<L> where PortSlot<L>: Sync + Send {}

impl<L: RawSpinLock> PortRef<L> {
    /// The first reference to a new port (its count is 1).
    ///
    /// # Errors
    /// Out of memory.
    pub(crate) fn try_new(slot: PortSlot<L>) -> Result<Self, CalloutError> {
        let boxed = try_box(slot)?;
        Ok(Self { slot: NonNull::from(Box::leak(boxed)) })
    }

    /// Another reference to the same port.
    pub(crate) fn clone_ref(&self) -> Self {
        // Relaxed is enough: the caller's reference keeps the slot alive (as `Arc::clone`).
        self.refs.fetch_add(1, Ordering::Relaxed);
        Self { slot: self.slot }
    }
}

impl<L: RawSpinLock> Deref for PortRef<L> {
    type Target = PortSlot<L>;
    fn deref(&self) -> &PortSlot<L> {
        // SAFETY: this reference is counted, so the slot is alive until it is dropped.
        unsafe { self.slot.as_ref() }
    }
}

impl<L: RawSpinLock> Drop for PortRef<L> {
    fn drop(&mut self) {
        if self.refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Every other holder's use of the slot happened before its release (as `Arc`'s drop).
        fence(Ordering::Acquire);
        // SAFETY: the count reached zero: this was the last reference, and the slot came from
        // `Box::leak` in `try_new`; it is freed exactly once.
        drop(unsafe { Box::from_raw(self.slot.as_ptr()) });
    }
}

/// The switches and ports, as readers see them (under a shared hold of the map).
pub(crate) type Index<L> = Master<L>;

/// The map: holds a reference to every port.
pub(crate) struct Master<L: RawSpinLock> {
    pub(crate) switches: Vec<SwitchEntry>,
    pub(crate) ports: HashMap<PortKey, PortRef<L>, FixedState>,
    next_switch_id: u32,
    closed: bool,
    /// Changes with every [`PortMap::update`] (never 0): what the processors' port caches are
    /// valid for.
    generation: u64,
}

impl<L: RawSpinLock> Master<L> {
    /// The id of the switch named `name`.
    pub(crate) fn switch_id(&self, name: &[u16]) -> Option<u32> {
        self.switches.iter().find(|s| s.name.as_utf16() == name).map(|s| s.id)
    }

    /// The port `key` (valid while the map lock is held).
    pub(crate) fn port(&self, key: PortKey) -> Option<&PortSlot<L>> {
        self.ports.get(&key).map(|r| &**r)
    }

    /// A reference to port `key`, usable after the map lock is released.
    pub(crate) fn port_ref(&self, key: PortKey) -> Option<PortRef<L>> {
        self.ports.get(&key).map(PortRef::clone_ref)
    }

    /// Number of ports.
    pub(crate) fn len(&self) -> usize {
        self.ports.len()
    }

    /// Number of switches.
    pub(crate) fn switch_count(&self) -> usize {
        self.switches.len()
    }

    /// The switch named `name`, creating it if needed.
    ///
    /// # Errors
    /// Out of memory.
    pub(crate) fn switch_id_or_insert(&mut self, name: &PortIdentity) -> Result<u32, CalloutError> {
        if let Some(s) = self.switches.iter().find(|s| s.name == *name) {
            return Ok(s.id);
        }
        self.switches.try_reserve(1)?;
        let id = self.next_switch_id;
        self.next_switch_id = self.next_switch_id.wrapping_add(1).max(1);
        self.switches.push(SwitchEntry::new(id, name));
        Ok(id)
    }

    /// Removes a port and returns the map's reference (the caller drops it after releasing
    /// the map).
    pub(crate) fn remove_port(&mut self, key: PortKey) -> Option<PortRef<L>> {
        let gone = self.ports.remove(&key)?;
        gone.removed.store(true, Ordering::Release);
        Some(gone)
    }

    /// Inserts (or replaces) a port; returns the map's reference to the port it replaced.
    ///
    /// # Errors
    /// Out of memory (nothing changed; the reference is handed back).
    pub(crate) fn insert_port(&mut self, slot: PortRef<L>) -> InsertResult<L> {
        if self.ports.try_reserve(1).is_err() {
            return Err((CalloutError::Core(vsflow_core::Error::OutOfMemory), slot));
        }
        let replaced = self.ports.insert(slot.key, slot);
        if let Some(old) = &replaced {
            old.removed.store(true, Ordering::Release);
        }
        Ok(replaced)
    }

    /// Forgets a switch and returns the map's references to its ports (the caller drops them
    /// after releasing the map).
    ///
    /// # Errors
    /// Out of memory (nothing removed).
    pub(crate) fn remove_switch(&mut self, id: u32) -> Result<Vec<PortRef<L>>, CalloutError> {
        let n = self.ports.keys().filter(|k| k.switch == id).count();
        let mut gone = Vec::new();
        gone.try_reserve_exact(n)?;
        gone.extend(self.ports.extract_if(|k, _| k.switch == id).map(|(_, slot)| slot));
        for slot in &gone {
            slot.removed.store(true, Ordering::Release);
        }
        self.switches.retain(|s| s.id != id);
        Ok(gone)
    }
}

/// What [`Master::insert_port`] gives back: the port replaced, or the error and the port.
pub(crate) type InsertResult<L> = Result<Option<PortRef<L>>, (CalloutError, PortRef<L>)>;

/// One processor's lock, alone on its cache lines.
///
/// Not `#[repr(align(128))]`: the kernel heap (wdk-alloc's `ExAllocatePool2`) guarantees only
/// 16-byte alignment and ignores a larger `Layout::align` (undefined behaviour for an
/// over-aligned type). 64 bytes of guard padding on each side keep two processors' locks at
/// least 128 bytes apart wherever the array starts, so they never share a 64-byte line.
///
/// Its port cache and absence cache sit on the same lines: written only by this processor's
/// packets, under this lock held shared.
#[repr(C)]
struct CpuLock<R, L: RawSpinLock> {
    _front: [u64; 8],
    lock: R,
    cache: [CachedPort<L>; CACHED_PORTS],
    absent: [CachedAbsence; CACHED_ABSENT],
    _back: [u64; 8],
}

impl<R, L: RawSpinLock> CpuLock<R, L> {
    fn new(lock: R) -> Self {
        Self {
            _front: [0; 8],
            lock,
            cache: [const { CachedPort::EMPTY }; CACHED_PORTS],
            absent: core::array::from_fn(|_| CachedAbsence::new()),
            _back: [0; 8],
        }
    }
}

/// Entries of a processor's absence cache, chosen by the port id's low bits: the ports of a
/// known switch the map holds no port for that this processor's packets met (a switch's
/// external and internal ports, which vsflow does not track: one side of every packet between
/// a VM and the outside).
const CACHED_ABSENT: usize = 4;

/// One entry of a processor's absence cache: port id `key & 0xFFFF_FFFF` of switch number
/// `key >> 32` of the map (its index in [`Master::switches`]) was looked up and not found, at
/// the map's generation ([`absence::Absence`]: the key is one atomic word, so two readers of
/// one processor's lock writing an entry at once never leave a mix of theirs, and a key read
/// at the map's generation was written at it: a port id the map at this generation does not
/// hold). A packet of that switch and port id is passed by without hashing the map again
/// ([`PortMap::with_packet_port`]). A switch's number is checked against the packet's
/// `VSWITCH_ID` bytes on every use, as the port cache's is.
struct CachedAbsence(Absence);

impl CachedAbsence {
    fn new() -> Self {
        Self(Absence::new())
    }

    /// Whether this entry says the map holds no port `port` of switch `name` (`VSWITCH_ID`
    /// bytes) at its generation. The caller holds this processor's lock shared and `map` is
    /// the map under it.
    #[inline]
    fn holds<L: RawSpinLock>(&self, map: &Master<L>, name: &[u8], port: u32) -> bool {
        let Some(key) = self.0.get(map.generation) else { return false };
        #[allow(clippy::cast_possible_truncation, reason = "the low half is the port id")]
        let cached_port = key as u32;
        let switch = usize::try_from(key >> 32).ok().and_then(|i| map.switches.get(i));
        cached_port == port && switch.is_some_and(|s| s.is_named_le(name))
    }

    /// Remembers that the map holds no port `port` of switch number `switch` at
    /// `generation`. The caller holds this processor's lock shared and looked the port up in
    /// the map at `generation`.
    #[inline]
    fn set(&self, generation: u64, switch: usize, port: u32) {
        let Ok(switch) = u32::try_from(switch) else { return };
        self.0.set(generation, u64::from(switch) << 32 | u64::from(port));
    }
}

/// Entries of a processor's port cache, chosen by the port id's low bits (a host's port ids
/// are small numbers given out in order, so a processor serving a few VMs keeps them all).
const CACHED_PORTS: usize = 8;

/// One entry of a processor's port cache (module docs, "The packet's port without a map
/// lookup"): the port a packet of this switch and port id found, at map generation
/// `generation` (0: empty). Three separate atomics: two readers of one processor's lock
/// may write an entry at once, so a reader checks that what it read agrees with itself and
/// with the packet ([`CachedPort::get`]).
struct CachedPort<L: RawSpinLock> {
    generation: AtomicU64,
    slot: AtomicPtr<PortSlot<L>>,
    /// The switch's index in [`Master::switches`].
    switch: AtomicUsize,
}

impl<L: RawSpinLock> CachedPort<L> {
    #[allow(clippy::declare_interior_mutable_const, reason = "an array initializer only")]
    const EMPTY: Self = Self {
        generation: AtomicU64::new(0),
        slot: AtomicPtr::new(core::ptr::null_mut()),
        switch: AtomicUsize::new(0),
    };

    /// The cached port of switch `name` (`VSWITCH_ID` bytes) and port id `port`, if this entry
    /// holds it for the map's generation. The caller holds this processor's lock shared and
    /// `map` is the map under it.
    #[inline]
    fn get<'m>(&self, map: &'m Master<L>, name: &[u8], port: u32) -> Option<&'m PortSlot<L>> {
        // Acquire: the slot and switch written before this generation (`set`) are seen.
        if self.generation.load(Ordering::Acquire) != map.generation {
            return None;
        }
        let switch = map.switches.get(self.switch.load(Ordering::Relaxed))?;
        let slot = self.slot.load(Ordering::Relaxed);
        // SAFETY: non-null entries are written only under this processor's lock held shared
        // (`set`), with a port in the map at the generation read above. Every map change takes
        // a new generation under this lock held exclusively, which orders all of them before
        // this hold; so whatever was stored after the generation this load synchronised with was
        // stored in this generation: a port the map holds a reference to now, alive while the
        // caller holds the lock (module docs).
        let slot = unsafe { slot.as_ref() }?;
        // Checked together: an entry written at once by two readers may mix their values.
        (slot.key.port == port && slot.key.switch == switch.id && switch.is_named_le(name))
            .then_some(slot)
    }

    /// Remembers `slot` (switch number `switch` of the map) at `generation`. The caller holds
    /// this processor's lock shared and found `slot` in the map at `generation`.
    #[inline]
    fn set(&self, generation: u64, slot: &PortSlot<L>, switch: usize) {
        self.slot.store(core::ptr::from_ref(slot).cast_mut(), Ordering::Relaxed);
        self.switch.store(switch, Ordering::Relaxed);
        self.generation.store(generation, Ordering::Release);
    }
}

/// The port map: the switches and ports under one reader/writer spin lock per processor.
pub(crate) struct PortMap<S: KernelServices> {
    locks: Vec<CpuLock<S::RwLock, S::Lock>>,
    map: UnsafeCell<Master<S::Lock>>,
}

// SAFETY: `map` is read only under a shared hold of some processor's lock and written only
// under exclusive holds of all of them (module protocol); its contents are `Send`.
unsafe impl<S: KernelServices> Sync for PortMap<S> where Master<S::Lock>: Send {}
// SAFETY: as above; moving the map moves its contents.
unsafe impl<S: KernelServices> Send for PortMap<S> where Master<S::Lock>: Send {}

impl<S: KernelServices> PortMap<S> {
    /// An empty map with one lock per processor.
    ///
    /// # Errors
    /// Out of memory.
    pub(crate) fn try_new(services: &S) -> Result<Self, CalloutError> {
        let n = (services.processor_count() as usize).clamp(1, 1024);
        let mut locks = Vec::new();
        locks.try_reserve_exact(n)?;
        locks.extend((0..n).map(|_| CpuLock::new(services.new_rw_lock())));
        let map = Master {
            switches: Vec::new(),
            // The map's own key (vsflow_core::keys), not the boot seed itself.
            ports: HashMap::with_hasher(FixedState::with_seed(keys::derive(
                services.hash_seed(),
                keys::Purpose::PortMap,
            ))),
            next_switch_id: 1,
            closed: false,
            generation: 1,
        };
        Ok(Self { locks, map: UnsafeCell::new(map) })
    }

    /// Runs `f` on the map under the current processor's lock, shared; `None` once closed
    /// (stop). Any IRQL `<= DISPATCH_LEVEL`; `f` runs at `DISPATCH_LEVEL` and must be short:
    /// find a port (and take a reference), or judge one packet. Anything longer takes a
    /// reference ([`PortMap::get`], [`PortMap::snapshot`]) and works after the lock is gone.
    pub(crate) fn read<R>(&self, cpu: u32, f: impl FnOnce(&Index<S::Lock>) -> R) -> Option<R> {
        let lock = self.locks.get(cpu as usize % self.locks.len().max(1))?;
        let _shared = SharedGuard::acquire(&lock.lock);
        // SAFETY: a shared hold of one processor's lock excludes every writer (writers hold
        // all of them exclusively), so no `&mut` to the map exists meanwhile.
        let map = unsafe { &*self.map.get() };
        if map.closed {
            return None;
        }
        Some(f(map))
    }

    /// Runs `f` on the port a packet belongs to — its switch named by the `VSWITCH_ID` bytes
    /// `name`, its port id `port` — under processor `cpu`'s lock held shared (the packet path:
    /// `f` judges one packet). `None` once closed, or if the switch or the port is unknown.
    ///
    /// The port is taken from this processor's port cache when an entry holds it for the map's
    /// current generation, else looked up in the map (and cached): the common packet does no
    /// hashing and no walk of the switches (module docs, "The packet's port without a map
    /// lookup").
    ///
    /// `f` runs under the map lock and must never wait for a lock of the port there
    /// ([`NO_WAIT`]). If the port's home lock is taken ([`Busy`]: the port's save, restore
    /// apply, an IOCTL walking it, a merge, or another packet's slow path), a reference to the
    /// port is taken (one interlocked operation, only then) and returned once the map lock is
    /// released, for the caller to judge the packet waiting for the port's lock outside it
    /// ([`PortSlot::classify_waiting`]; review s6, R6-1). A packet that waited for its port's
    /// long work under its processor's map lock held shared made a port create or delete wait
    /// there while it held every lower processor's map lock exclusively, so every packet of
    /// every port on those processors waited for one port's long work.
    #[inline]
    pub(crate) fn with_packet_port<R>(
        &self,
        cpu: u32,
        name: Option<&[u8]>,
        port: u32,
        f: impl FnOnce(&PortSlot<S::Lock>) -> Result<R, Busy>,
    ) -> Option<Result<R, PortRef<S::Lock>>> {
        let lock = self.locks.get(cpu as usize % self.locks.len().max(1))?;
        let shared = SharedGuard::acquire(&lock.lock);
        // SAFETY: a shared hold of one processor's lock excludes every writer (writers hold
        // all of them exclusively), so no `&mut` to the map exists meanwhile.
        let map = unsafe { &*self.map.get() };
        let slot = match (map.closed, name, lock.cache.get(port as usize % CACHED_PORTS)) {
            (false, Some(name), Some(entry)) => match entry.get(map, name, port) {
                Some(slot) => Some(slot),
                None => Self::look_up(map, lock, entry, name, port),
            },
            _ => None,
        };
        let r = match slot.map(f) {
            Some(Ok(r)) => Some(Ok(r)),
            Some(Err(Busy)) => return Self::contended(map, slot, shared),
            None => None,
        };
        // One release for every other outcome, inlined here.
        shared.release();
        r
    }

    /// [`PortMap::with_packet_port`] for a port whose home lock was taken: a reference taken
    /// under the map lock, returned after it is released (out of line: the common packet never
    /// comes here). `None` if the port could not be found again (not possible: the map holds
    /// it at this hold).
    #[cold]
    #[inline(never)]
    fn contended<R>(
        map: &Master<S::Lock>,
        slot: Option<&PortSlot<S::Lock>>,
        shared: SharedGuard<'_, S::RwLock>,
    ) -> Option<Result<R, PortRef<S::Lock>>> {
        // The map holds the port (the caller found it in the map at this hold), so a reference
        // may be taken now and keeps it alive after the lock.
        let port = slot.and_then(|s| map.port_ref(s.key));
        shared.release();
        port.map(Err)
    }

    /// The port of switch `name` and port id `port` from the map, remembered in `entry` (a
    /// packet of a port this processor has not seen at this generation: out of line). A port
    /// of a known switch the map does not hold (the switch's external port: vsflow tracks VM
    /// ports) is remembered in the processor's absence cache, and its next packets are passed
    /// by from there without hashing the map ([`CachedAbsence`]).
    #[cold]
    #[inline(never)]
    fn look_up<'m>(
        map: &'m Master<S::Lock>,
        lock: &CpuLock<S::RwLock, S::Lock>,
        entry: &CachedPort<S::Lock>,
        name: &[u8],
        port: u32,
    ) -> Option<&'m PortSlot<S::Lock>> {
        let absent = lock.absent.get(port as usize % CACHED_ABSENT);
        if absent.is_some_and(|a| a.holds(map, name, port)) {
            return None;
        }
        let (index, switch) = map.switches.iter().enumerate().find(|(_, s)| s.is_named_le(name))?;
        let Some(slot) = map.port(PortKey { switch: switch.id, port }) else {
            if let Some(a) = absent {
                a.set(map.generation, index, port);
            }
            return None;
        };
        entry.set(map.generation, slot, index);
        Some(slot)
    }

    /// A reference to the port `find` picks, taken under the current processor's lock (held
    /// only for the lookup); `None` if there is none or the map is closed.
    pub(crate) fn get(
        &self,
        cpu: u32,
        find: impl FnOnce(&Index<S::Lock>) -> Option<PortKey>,
    ) -> Option<PortRef<S::Lock>> {
        self.read(cpu, |ix| find(ix).and_then(|key| ix.port_ref(key))).flatten()
    }

    /// A reference to every port, for a walk that visits them one at a time after the map
    /// lock is released. The list is allocated before the lock is taken (a few ports of slack;
    /// if ports came meanwhile it is allocated again), so the lock is held only to count
    /// references in.
    ///
    /// # Errors
    /// Out of memory; `InvalidState` once closed.
    pub(crate) fn snapshot(&self, cpu: u32) -> Result<Vec<PortRef<S::Lock>>, CalloutError> {
        let mut refs: Vec<PortRef<S::Lock>> = Vec::new();
        loop {
            let n = self.read(cpu, Index::len).ok_or(CalloutError::InvalidState)?;
            refs.try_reserve_exact(n.saturating_add(8))?;
            let filled = self
                .read(cpu, |ix| {
                    if ix.len() > refs.capacity() {
                        return false;
                    }
                    refs.extend(ix.ports.values().map(PortRef::clone_ref));
                    true
                })
                .ok_or(CalloutError::InvalidState)?;
            if filled {
                return Ok(refs);
            }
        }
    }

    /// Changes the map with `f` under every processor's lock, exclusive (any IRQL
    /// `<= DISPATCH_LEVEL`; spins only while readers finish their short sections). Ports `f`
    /// removes are returned by it and dropped by the caller after the locks are released.
    ///
    /// # Errors
    /// `InvalidState` once closed, or what `f` returns.
    pub(crate) fn update<R>(
        &self,
        f: impl FnOnce(&mut Master<S::Lock>) -> Result<R, CalloutError>,
    ) -> Result<R, CalloutError> {
        let mut held: Vec<ExclusiveGuard<'_, S::RwLock>> = Vec::new();
        held.try_reserve_exact(self.locks.len())?;
        held.extend(self.locks.iter().map(|l| ExclusiveGuard::acquire(&l.lock)));
        // SAFETY: every processor's lock is held exclusively: no reader and no other writer.
        let map = unsafe { &mut *self.map.get() };
        let r = if map.closed { Err(CalloutError::InvalidState) } else { f(map) };
        // Every processor's port cache is now out of date (module docs), whatever `f` did.
        map.generation = map.generation.wrapping_add(1).max(1);
        // Release in reverse order: the first hold restores the caller's IRQL, last.
        while let Some(guard) = held.pop() {
            drop(guard);
        }
        r
    }

    /// Closes the map (stop): waits for every reader in flight (classify included), then drops
    /// the map's reference to every port; returns the classify calls they had counted. Readers
    /// get `None` from then on.
    pub(crate) fn close(&self) -> u64 {
        let gone = self.update(|m| {
            m.closed = true;
            m.switches.clear();
            let mut ports = HashMap::with_hasher(FixedState::with_seed(0));
            core::mem::swap(&mut ports, &mut m.ports);
            for slot in ports.values() {
                slot.removed.store(true, Ordering::Release);
            }
            Ok(ports)
        });
        // Dropped outside the locks.
        gone.map_or(0, |ports| {
            ports.into_values().map(|slot| slot.classify_calls(&mut slot.state.lock(), false)).sum()
        })
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use super::SwitchEntry;
    use vsflow_core::PortIdentity;

    fn le(units: &[u16]) -> Vec<u8> {
        units.iter().flat_map(|u| u.to_le_bytes()).collect()
    }

    /// The name a blob carries ends at its first NUL unit or at its end (an odd last byte is
    /// not a unit); anything else is another name.
    #[test]
    fn a_switch_is_named_by_its_utf16le_bytes_up_to_a_nul_unit() {
        let units: Vec<u16> = "SW-A".encode_utf16().collect();
        let s = SwitchEntry::new(1, &PortIdentity::try_from_utf16(&units).unwrap());
        assert!(s.is_named_le(&le(&units)));
        assert!(s.is_named_le(&[le(&units), vec![0, 0]].concat()));
        assert!(s.is_named_le(&[le(&units), vec![0, 0, b'x', 0]].concat()));
        assert!(s.is_named_le(&[le(&units), vec![7]].concat()));
        assert!(!s.is_named_le(&[le(&units), vec![b'x', 0]].concat()));
        assert!(!s.is_named_le(&le(&units[..3])));
        assert!(!s.is_named_le(&le(&"SW-B".encode_utf16().collect::<Vec<_>>())));
        assert!(!s.is_named_le(&[]));
        // A name holding a NUL unit is never a blob's.
        let nul = SwitchEntry::new(2, &PortIdentity::try_from_utf16(&[b'S'.into(), 0]).unwrap());
        assert!(!nul.is_named_le(&le(&[b'S'.into(), 0])));
        assert!(!nul.is_named_le(&le(&[b'S'.into()])));
    }
}
