//! The save of a live port whose flows all fit as exact records, written straight from the
//! port's table (issue 18 item 4: a port at the 4,096-connection cap, save p99 <= 100 us).
//!
//! The general path ([`super::encode_source`] through [`super::Source::flows`]) first copies
//! every flow into a [`SavedFlow`] (104 bytes each, about 430 KB at 4,096 flows), then reads
//! that copy again to build the dictionaries, again for the entries' lengths, and once per
//! address family to write them. A port whose flows all fit needs none of the planner's
//! choices, so this path reads the table itself:
//!
//! 1. [`plan_live`] walks the table's LRU lists once, in the order every save writes (class by
//!    class, least recently used first), building the address dictionaries (the local
//!    addresses, the remotes with their use counts), summing each family's entry bytes that
//!    depend on no layout choice, and recording each flow's slot number with its dictionary
//!    ids. The layouts, the shared remotes' indexes and the entries' total length then follow
//!    from counts alone (no second pass); only when the per-flow counters might fit does it
//!    read the flows again (by slot) for their lengths.
//! 2. [`write_live`] writes each family's entries from the recorded slots (independent loads,
//!    not a second walk of the lists), mapping each remote's id to its dictionary index as it
//!    goes.
//!
//! The caller holds the port's lock across both passes (the driver's `lock_whole`: one
//! consistent port, every shard merged), so the table cannot change between them. The bytes
//! are exactly those of the general path (the tests below hold the two to each other over
//! random ports); when the flows do not all fit, [`plan_live`] says so and the general path
//! (the planner, fingerprints) runs instead. Its working memory is the encoder's
//! ([`super::Work`]: the slot numbers, the dictionaries), kept across saves: a second save
//! of the same port allocates nothing, and the 104-byte copies are never made.

use super::{
    Carried, Dicts, Entry, EntryFlow, MIN_ENTRY_LEN, NONE, Plan, Work, addr_len, counters_len,
    family_slot, fixed_len, local_id, write_compact,
};
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

/// The family's half of a per-family pair (no index, no check: two fields).
#[inline]
fn pick<T>(pair: &mut [T; 2], family: IpFamily) -> &mut T {
    let [v4, v6] = pair;
    match family {
        IpFamily::V4 => v4,
        IpFamily::V6 => v6,
    }
}

/// What pass 1 counts per family.
#[derive(Default)]
struct Sums {
    /// Flows.
    count: [usize; 2],
    /// Their entries' bytes that depend on no layout: [`fixed_len`].
    fixed: [usize; 2],
    /// Flows whose remote is written as a dictionary index.
    indexed: [usize; 2],
}

/// Pass 1 (see the module docs): the dictionaries of every flow of `table` into `d`, each
/// flow's slot into `slots` and its (local index, remote id) into `d.idx`, in save order.
/// `None` if a flow cannot be written exactly (its local address did not fit the dictionary)
/// or the lists hold more flows than the table counts (never): the general path decides.
///
/// Unlike [`Dicts::build`], each flow's second id is its remote's position in `d.remotes`
/// (its dictionary index is that entry's third field, or NONE for a literal).
///
/// # Errors
/// [`Error::OutOfMemory`].
fn build_live(
    d: &mut Dicts,
    slots: &mut alloc::vec::Vec<u32>,
    table: &FlowTable,
    now: Tick,
    rules_version: u32,
    seed: u64,
) -> Result<Option<Sums>, Error> {
    d.clear();
    slots.clear();
    let n = table.len();
    slots.try_reserve(n)?;
    d.idx.try_reserve(n)?;
    let mut sums = Sums::default();
    // A family's remote index is sized (and its list reserved) by its first flow: a port of
    // one family holds nothing for the other.
    let mut ready = [false; 2];
    let mut last_local: Option<(IpFamily, [u8; 16], u32)> = None;
    let Dicts { addrs, idx, local_index, remotes, remote_index, .. } = d;
    for class in TimeoutClass::ALL {
        for (slot, key, record) in table.iter_lru_slots(class) {
            // Reserved for `n`: a push past the capacity (more flows on the lists than the
            // table counts) would allocate infallibly.
            if slots.len() >= n || slots.len() == slots.capacity() || idx.len() == idx.capacity() {
                return Ok(None);
            }
            let fam = key.family;
            let rems = pick(remotes, fam);
            let ri = pick(remote_index, fam);
            let started = pick(&mut ready, fam);
            if !*started {
                rems.try_reserve(n)?;
                ri.reset(n, seed)?;
                *started = true;
            }
            let a = key.local_addr;
            let local = match last_local {
                Some((lf, la, i)) if lf == fam && la == a => i,
                _ => {
                    let i = local_id(pick(addrs, fam), pick(local_index, fam), a)?;
                    last_local = Some((fam, a, i));
                    i
                }
            };
            if local == NONE {
                return Ok(None);
            }
            let r = key.remote_addr;
            let next = u32::try_from(rems.len()).unwrap_or(NONE);
            let (rid, new) = ri.find_or_insert(&r, next, |j| rems.get(j as usize).map(|x| x.0));
            if new {
                if rems.len() == rems.capacity() {
                    return Ok(None);
                }
                rems.push((r, 1, NONE));
            } else if let Some(x) = rems.get_mut(rid as usize) {
                x.1 = x.1.saturating_add(1);
            }
            let live = LiveFlow { key, record, now };
            *pick(&mut sums.fixed, fam) += fixed_len(&live, rules_version);
            *pick(&mut sums.count, fam) += 1;
            slots.push(slot);
            idx.push((local, rid));
        }
    }
    let locals = [d.addrs[0].len(), d.addrs[1].len()];
    sums.indexed = d.adopt_shared_remotes()?;
    d.set_layouts(locals);
    Ok(Some(sums))
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
    let Some(sums) = build_live(&mut w.all, &mut w.slots, table, now, rules_version, w.seed)?
    else {
        return Ok(None);
    };
    // Each flow's entry is its fixed bytes, its local index and its remote: a literal, or an
    // index for the `indexed` flows whose remote is in the dictionary (what `entry_len` sums
    // flow by flow on the general path).
    let mut base = [0usize; 2];
    for (f, family) in [IpFamily::V4, IpFamily::V6].into_iter().enumerate() {
        let (Some(b), Some(lay), Some(&count), Some(&fixed), Some(&indexed)) = (
            base.get_mut(f),
            w.all.lays.get(f),
            sums.count.get(f),
            sums.fixed.get(f),
            sums.indexed.get(f),
        ) else {
            continue;
        };
        let alen = addr_len(family);
        *b =
            (fixed + count * (lay.lw + alen)).saturating_sub(indexed * alen.saturating_sub(lay.rw));
    }
    let without = w.all.bytes() + carried_bytes + base[0] + base[1];
    if without > room {
        return Ok(None);
    }
    let n = sums.count[0] + sums.count[1];
    let (mut entries, mut counters) = (base, false);
    // Per-flow counters take 4 bytes at least (four varints): often that alone decides.
    if without + 4 * n <= room {
        let mut extra = [0usize; 2];
        for &slot in &w.slots {
            if let Some((key, record)) = table.slot_flow(slot) {
                *pick(&mut extra, key.family) += counters_len(&LiveFlow { key, record, now });
            }
        }
        if without + extra[0] + extra[1] <= room {
            entries = [base[0] + extra[0], base[1] + extra[1]];
            counters = true;
        }
    }
    w.fps.try_reserve(carried.values.len())?;
    w.fps.extend_from_slice(carried.values);
    let plan = Plan {
        salt,
        all_exact: true,
        k: carried_k,
        fingerprinted: carried.flows,
        lost: 0,
        counters,
        entries,
    };
    Ok(Some((plan, sums.count)))
}

/// Pass 2 (see the module docs): writes the entries of `family`'s flows, in save order, from
/// the slots [`plan_live`] recorded in `w`.
pub(super) fn write_live(
    e: &mut Entry<'_>,
    table: &FlowTable,
    now: Tick,
    w: &Work,
    family: IpFamily,
    rules_version: u32,
    counters: bool,
) {
    let d = &w.all;
    let f = family_slot(family);
    let (Some(lay), Some(rems)) = (d.lays.get(f), d.remotes.get(f)) else { return };
    for (&slot, &(local, rid)) in w.slots.iter().zip(d.idx.iter()) {
        let Some((key, record)) = table.slot_flow(slot) else { continue };
        if key.family != family {
            continue;
        }
        let remote = rems.get(rid as usize).map_or(NONE, |x| x.2);
        write_compact(
            e,
            &LiveFlow { key, record, now },
            (local, remote, lay),
            rules_version,
            counters,
        );
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::String;
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::super::{LivePort, Work, encode_source_with};
    use crate::codec::{self, DecodeConfig, Decoded, EncodeConfig};
    use crate::flow::{Admission, FlowKey, FlowRecord, FlowState, Opener, TableConfig};
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
        encode_source_with(&LivePort { port: p, now: NOW }, &config, &mut out, work, direct)
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
                (prop::collection::vec(raw_flow(), 0..500), 1u16..400,
                 prop::collection::vec(any::<usize>(), 0..50), 0usize..4),
                1..4,
            ),
        ) {
            let (mut direct, mut general) = (Work::default(), Work::default());
            for (raw, locals, touch, c) in &ports {
                let p = live_port(raw, *locals, touch);
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
