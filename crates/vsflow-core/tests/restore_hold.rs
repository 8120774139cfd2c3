//! Issue 18 item 1 / issue 12 (review3 s5): the restore's apply runs under the port's lock (at
//! `DISPATCH_LEVEL` in the driver), so its work there must not grow with the flows the restore
//! window created: a destination VM fills its table in the window (60,437 of 65,536 flows) and
//! the apply that copied every one of them into the carried table held the lock 5-7.5 ms.
//!
//! Deterministic measures, not timings: with a counting allocator (this thread's bytes), the
//! apply into a port whose window holds 16,384 flows allocates no more than the apply into one
//! whose window holds 1,024 (less than one slab segment apart: no window flow is copied into
//! new storage), and every window flow is still in the slot it had (not moved). The result is
//! the restore's as before: every carried connection and every window flow kept, counted, and
//! each class's list in recency order.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::encode_config;
use vsflow_core::codec::{self, ApplyConfig, DecodeConfig, DecodedStaged, StageConfig};
use vsflow_core::flow::{MAX_FLOWS_LIMIT, TableConfig, TimeoutClass};
use vsflow_core::time::secs;
use vsflow_core::{Direction, FlowKey, Mode, PacketMeta, Port, PortConfig, PortIdentity, protocol};

struct Counting;

thread_local! {
    /// Bytes this thread allocated (the harness's own threads never count).
    static BYTES: Cell<usize> = const { Cell::new(0) };
    /// A block size this thread's allocations of are refused (0: none).
    static REFUSE: Cell<usize> = const { Cell::new(0) };
}

fn refused(size: usize) -> bool {
    size != 0 && REFUSE.try_with(Cell::get).unwrap_or(0) == size
}

fn note(bytes: usize) {
    BYTES.with(|b| b.set(b.get() + bytes));
}

fn take() -> usize {
    BYTES.with(|b| b.replace(0))
}

// SAFETY: every method forwards to `System`, which upholds the `GlobalAlloc` contract, or
// returns null, which the contract allows for any allocation; the counter has no effect on the
// memory returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refused(layout.size()) {
            return std::ptr::null_mut();
        }
        note(layout.size());
        // SAFETY: the caller's layout obligations are passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if refused(new_size) {
            return std::ptr::null_mut();
        }
        note(new_size);
        // SAFETY: as for `dealloc`; `new_size` obligations are the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const NOW: u64 = 1_000_000_000_000;
/// Carried connections.
const CARRIED: u32 = 256;
/// One slab segment: 64 slots (well above 64 slots' bytes).
const SEGMENT: usize = 16 * 1024;

fn port(max_flows: u32) -> Port {
    let cfg = PortConfig {
        table: TableConfig { max_flows, initial_capacity: 64, ..TableConfig::default() },
        initial_mode: Mode::Enforce,
    };
    Port::try_new(PortIdentity::try_from_str("hold").unwrap(), cfg).unwrap()
}

fn tcp(sport: u16, remote: [u8; 4], flags: u8) -> PacketMeta {
    PacketMeta::ipv4(
        Direction::Outbound,
        protocol::TCP,
        [10, 0, 0, 2],
        sport,
        remote,
        443,
        flags,
        60,
    )
}

/// The VM's `i`-th window flow: UDP from the VM.
fn udp(i: u32) -> PacketMeta {
    let [_, a, b, c] = i.to_be_bytes();
    PacketMeta::ipv4(
        Direction::Outbound,
        protocol::UDP,
        [10, 0, 0, 2],
        1024 + u16::from(c),
        [198, 51, a, b],
        53,
        0,
        60,
    )
}

/// A blob of `CARRIED` established connections the VM opened, last used over the minute
/// before `NOW - first_window` ... spread so that some are older and some fresher than the
/// window's flows when `interleave`.
fn blob() -> Vec<u8> {
    let mut src = port(4096);
    for i in 0..CARRIED {
        let syn = tcp(2000 + u16::try_from(i).unwrap(), [203, 0, 113, 7], 0x02);
        // Last packets 1 s apart, the freshest 10 s before the save.
        let t = NOW - secs(10) - secs(u64::from(CARRIED - i));
        src.classify(&syn, t);
        src.classify(&syn.reply(0x12), t + 1);
    }
    let mut blob = Vec::new();
    let s = codec::encode(&src, NOW, &encode_config(), &mut blob).unwrap();
    assert_eq!(s.flows_written, CARRIED);
    blob
}

/// A destination port whose window holds `window` UDP flows of the VM, over the 5 s before
/// `NOW`.
fn destination(window: u32) -> Port {
    let mut p = port(MAX_FLOWS_LIMIT);
    for i in 0..window {
        p.classify(&udp(i), NOW - secs(5) + secs(5) * u64::from(i) / u64::from(window));
    }
    assert_eq!(p.table().len(), window as usize);
    p
}

/// Restores `blob` into `p`: the bytes the apply alone allocated.
fn restore(p: &mut Port, blob: &[u8]) -> (usize, codec::ApplyReport) {
    let stage = StageConfig { table: *p.table().config(), base: NOW, now: NOW };
    let Ok(DecodedStaged::State(decoded, staged)) =
        codec::decode_staged(blob, &DecodeConfig::default(), &stage)
    else {
        panic!("decodes")
    };
    take();
    let report = codec::apply_staged(p, &decoded, staged, NOW, &ApplyConfig::default()).unwrap();
    (take(), report)
}

fn slots(p: &Port) -> std::collections::HashSet<(u32, FlowKey)> {
    p.table().iter_from(0).map(|(i, k, _)| (i, *k)).collect()
}

fn in_recency_order(p: &Port) {
    for class in TimeoutClass::ALL {
        let ages: Vec<u64> = p.table().iter_lru(class).map(|(_, r)| r.last_seen).collect();
        assert!(ages.is_sorted(), "{class:?} list out of recency order");
    }
}

#[test]
fn the_apply_copies_no_window_flow_however_many_the_window_created() {
    let blob = blob();
    let mut bytes = Vec::new();
    let mut moved = Vec::new();
    for window in [1_024, 16_384] {
        let mut p = destination(window);
        let before = slots(&p);
        let (allocated, report) = restore(&mut p, &blob);
        assert_eq!(report.restored, CARRIED);
        assert_eq!(report.kept_local, window, "every window flow kept");
        assert_eq!(p.table().len(), (CARRIED + window) as usize);
        p.table().check_invariants().unwrap();
        in_recency_order(&p);
        let after = slots(&p);
        moved.push(before.iter().filter(|s| !after.contains(s)).count());
        bytes.push(allocated);
    }
    println!("window flows moved {moved:?}, bytes the apply allocated {bytes:?}");
    assert_eq!(moved, [0, 0], "window flows moved to another slot (windows of 1,024 and 16,384)");
    assert!(
        bytes[1] < bytes[0] + SEGMENT,
        "the apply allocated {} bytes with 16,384 window flows, {} with 1,024: it grows with the window",
        bytes[1],
        bytes[0]
    );
}

/// The carried connections' times among the window's (the source runs until its last save
/// while the destination's window is open): window connections of the VM last used before,
/// between and after the carried ones (the same list), some carried ones also seen in the
/// window (merged, moved to their later time), and a bound that leaves no room for all (the
/// window's own flows give way, never a carried connection). Every carried connection stays,
/// no window flow that stays moves, each list is in recency order.
#[test]
fn carried_flows_among_the_windows_keep_their_recency_places_and_the_bound() {
    let blob = blob();
    let window = 2_048u32;
    let seen_again = 16u32;
    let bound = CARRIED + window - 10;
    let mut p = port(bound);
    // Window connections over the carried connections' span and past it (8 s before the
    // freshest carried to 2 s after it), created in time order as packets make them.
    let first = NOW - secs(10) - secs(u64::from(CARRIED)) - secs(8);
    let span = secs(u64::from(CARRIED)) + secs(10);
    for i in 0..window {
        let t = first + span * u64::from(i) / u64::from(window);
        let syn = tcp(30_000 + u16::try_from(i).unwrap(), [198, 51, 100, 9], 0x02);
        p.classify(&syn, t);
        p.classify(&syn.reply(0x12), t + 1);
        p.classify(&tcp(30_000 + u16::try_from(i).unwrap(), [198, 51, 100, 9], 0x10), t + 2);
    }
    // Some carried connections seen in the window too, at the end.
    for i in 0..seen_again {
        let m = tcp(2000 + u16::try_from(i * 7).unwrap(), [203, 0, 113, 7], 0x10);
        p.classify(&m, NOW - secs(1) + u64::from(i));
    }
    assert_eq!(p.table().len(), (window + seen_again) as usize);
    let before = slots(&p);
    let (_, report) = restore(&mut p, &blob);
    assert_eq!(report.restored, CARRIED);
    assert_eq!(p.counters().window_flows_merged, u64::from(seen_again));
    assert_eq!(p.table().len(), bound as usize, "the table at its bound");
    assert_eq!(report.kept_local, bound - CARRIED, "the window's flows give way at the bound");
    for i in 0..CARRIED {
        let k = FlowKey::of(&tcp(2000 + u16::try_from(i).unwrap(), [203, 0, 113, 7], 0x02));
        assert!(p.table().find(&k).is_some(), "carried connection {i} kept");
    }
    p.table().check_invariants().unwrap();
    in_recency_order(&p);
    // One list: the carried connections among the window's, window ones on both sides (the
    // ones seen again, now the freshest, aside).
    let seen =
        |port: u16| port >= 2000 && (port - 2000).is_multiple_of(7) && (port - 2000) / 7 < 16;
    let carried_at: Vec<bool> = p
        .table()
        .iter_lru(TimeoutClass::TcpEstablished)
        .filter(|(k, _)| !(k.remote_addr[..4] == [203, 0, 113, 7] && seen(k.local_port)))
        .map(|(k, _)| k.remote_addr[..4] == [203, 0, 113, 7])
        .collect();
    let first_carried = carried_at.iter().position(|&c| c).unwrap();
    let last_carried = carried_at.iter().rposition(|&c| c).unwrap();
    assert!(first_carried > 0 && last_carried + 1 < carried_at.len(), "window flows around");
    assert!(carried_at[first_carried..last_carried].contains(&false), "and among them");
    let after = slots(&p);
    let stayed = before.iter().filter(|(_, k)| after.iter().any(|(_, a)| a == k)).count();
    let unmoved = before.iter().filter(|s| after.contains(s)).count();
    assert_eq!(unmoved, stayed, "a window flow that stays keeps its slot");
}

/// What a restore left that two ways of applying it must agree on: every flow with its
/// record (by key), the report and the counters.
fn result(
    p: &Port,
    report: codec::ApplyReport,
) -> (Vec<String>, codec::ApplyReport, vsflow_core::PortCounters) {
    let mut flows: Vec<String> = p.table().iter().map(|(k, r)| format!("{k:?} {r:?}")).collect();
    flows.sort();
    (flows, report, *p.counters())
}

/// Without memory for the merge into the window's table (its placement order refused), the
/// apply goes the other way round (the window's flows copied into the staged table): the
/// same flows, records, report and counters, the restore applied, nothing lost.
#[test]
fn without_memory_for_the_merge_the_apply_goes_the_other_way_and_loses_nothing() {
    let blob = blob();
    let window = 1_024;
    let mut merged = destination(window);
    let (_, report) = restore(&mut merged, &blob);
    let expected = result(&merged, report);
    let mut other = destination(window);
    // The placement order: a (class, time, order, slot) per carried flow.
    REFUSE.with(|r| r.set(CARRIED as usize * std::mem::size_of::<(u8, u64, u32, u32)>()));
    let before = slots(&other);
    let (_, report) = restore(&mut other, &blob);
    REFUSE.with(|r| r.set(0));
    assert_eq!(result(&other, report), expected);
    other.table().check_invariants().unwrap();
    in_recency_order(&other);
    let after = slots(&other);
    assert!(
        before.iter().all(|s| !after.contains(s)),
        "the window's flows were copied: the other way"
    );
}

/// Established connections of the VM's source port in the fingerprint blob.
const SOURCE: u32 = 600;
/// A blob cap that carries part of `SOURCE` exactly and fingerprints the rest.
const FP_CAP: usize = 3 * 1024;

/// A blob of `SOURCE` established connections of the VM, part of them carried exactly and the
/// rest as fingerprints (the cap), and the keys of the fingerprinted ones.
fn fingerprint_blob() -> (Vec<u8>, Vec<FlowKey>) {
    let mut src = port(4096);
    for i in 0..SOURCE {
        let syn = tcp(2000 + u16::try_from(i).unwrap(), [203, 0, 113, 7], 0x02);
        let t = NOW - secs(10) - secs(u64::from(SOURCE - i));
        src.classify(&syn, t);
        src.classify(&syn.reply(0x12), t + 1);
    }
    let mut blob = Vec::new();
    let cfg = codec::EncodeConfig { cap: FP_CAP, ..encode_config() };
    let s = codec::encode(&src, NOW, &cfg, &mut blob).unwrap();
    assert!(s.flows_fingerprinted > 0 && s.flows_written > 0, "{s:?}");
    let Ok(codec::Decoded::State(decoded)) = codec::decode(&blob, &DecodeConfig::default()) else {
        panic!("decodes")
    };
    let fingerprinted = (0..SOURCE)
        .map(|i| FlowKey::of(&tcp(2000 + u16::try_from(i).unwrap(), [203, 0, 113, 7], 0x02)))
        .filter(|k| decoded.flows.iter().all(|f| f.key != *k))
        .collect();
    (blob, fingerprinted)
}

/// Issue 18 item 1 (window s6, what was left): a blob that arms fingerprints, restored into a
/// window larger than the blob (the VM's own UDP flows, and some fingerprinted connections the
/// VM resumed in the window). The apply must check each window connection against the
/// fingerprints (resume it), but it must not copy the window: no window flow moves, and the
/// apply allocates no more with a window of 16,384 flows than with one of 1,024.
#[test]
fn a_fingerprint_blob_into_a_large_window_copies_no_window_flow() {
    let (blob, fingerprinted) = fingerprint_blob();
    let resumed: Vec<FlowKey> = fingerprinted.iter().step_by(3).copied().collect();
    let mut bytes = Vec::new();
    let mut moved = Vec::new();
    for window in [1_024, 16_384] {
        let mut p = destination(window);
        // The VM's own segments on a third of the fingerprinted connections, in the window.
        for k in &resumed {
            let ack = tcp(k.local_port, [203, 0, 113, 7], 0x10);
            p.classify(&ack, NOW - secs(1));
        }
        let before = slots(&p);
        let (allocated, report) = restore(&mut p, &blob);
        assert_eq!(report.picked_up_local as usize, resumed.len(), "{report:?}");
        assert_eq!(report.kept_local as usize, window as usize + resumed.len());
        assert_eq!(p.table().len(), report.restored as usize + window as usize + resumed.len());
        for k in &resumed {
            let r = p.table().get(k).expect("a resumed connection is kept");
            assert_eq!(r.admission, vsflow_core::flow::Admission::Vm);
        }
        p.table().check_invariants().unwrap();
        in_recency_order(&p);
        let after = slots(&p);
        moved.push(before.iter().filter(|s| !after.contains(s)).count());
        bytes.push(allocated);
    }
    println!("window flows moved {moved:?}, bytes the apply allocated {bytes:?}");
    assert_eq!(moved, [0, 0], "window flows moved to another slot (windows of 1,024 and 16,384)");
    assert!(
        bytes[1] < bytes[0] + SEGMENT,
        "the apply allocated {} bytes with 16,384 window flows, {} with 1,024: it grows with the window",
        bytes[1],
        bytes[0]
    );
}

/// Restores `blob` into `p` as the driver does (`vsflow-callout` `Driver::apply_restore`): the
/// window checked ahead in steps of `codec::CHECK_STEP` slots (each a hold of the port's lock
/// in the driver), `between` run on the port after the last step (packets of the window
/// between the check's last hold and the apply's), then the apply. Returns the report and the flows the apply read itself.
fn restore_checked(
    p: &mut Port,
    blob: &[u8],
    between: impl FnOnce(&mut Port),
) -> (codec::ApplyReport, u32, usize) {
    let stage = StageConfig { table: *p.table().config(), base: NOW, now: NOW };
    let Ok(DecodedStaged::State(decoded, staged)) =
        codec::decode_staged(blob, &DecodeConfig::default(), &stage)
    else {
        panic!("decodes")
    };
    let mut check = codec::WindowCheck::try_new(&decoded, p.table().config().max_flows).unwrap();
    let mut steps = 1;
    while !check.step(p, &decoded, codec::CHECK_STEP) {
        steps += 1;
    }
    between(p);
    let config = ApplyConfig::default();
    let report =
        codec::apply_staged_checked(p, &decoded, staged, NOW, &config, Some(&mut check)).unwrap();
    check.disarm(p);
    (report, check.read_by_apply(), steps)
}

/// Issue 18 item 1: with the window checked ahead in short steps (as the driver does), what the
/// apply reads of the window under the lock is only what was placed after the steps passed it
/// (here 40 connections the VM opened in the window after the last step, 20 of them
/// fingerprinted ones it resumed): the same with a window of 16,384 flows as with one of 4,096; and the result is
/// the apply's without the steps (every resumed connection resumed, every window flow kept).
#[test]
fn with_the_window_checked_ahead_the_apply_reads_only_what_was_placed_since() {
    let (blob, fingerprinted) = fingerprint_blob();
    let mut read = Vec::new();
    for window in [4_096u32, 16_384] {
        let late = |p: &mut Port| {
            for (i, k) in fingerprinted.iter().take(20).enumerate() {
                p.classify(&tcp(k.local_port, [203, 0, 113, 7], 0x10), NOW - secs(1));
                let other = tcp(40_000 + u16::try_from(i).unwrap(), [198, 51, 100, 1], 0x02);
                p.classify(&other, NOW - secs(1));
            }
        };
        let mut p = destination(window);
        let (report, by_apply, steps) = restore_checked(&mut p, &blob, late);
        assert!(steps > 1, "the window is checked in {steps} steps");
        let mut q = destination(window);
        late(&mut q);
        let (_, expected) = restore(&mut q, &blob);
        assert_eq!(report, expected);
        assert_eq!(result(&p, report), result(&q, expected));
        assert_eq!(report.picked_up_local, 20);
        p.table().check_invariants().unwrap();
        in_recency_order(&p);
        read.push(by_apply);
    }
    println!("window flows the apply read itself: {read:?}");
    assert_eq!(read, [40, 40], "window flows the apply read itself");
}

/// A check refused its memory (its room for the matches, made before any lock): the apply
/// checks the window in its own hold, and without that memory either, copies the window as
/// before: the same restore, nothing lost.
#[test]
fn without_memory_for_the_window_check_the_restore_is_the_same() {
    let (blob, fingerprinted) = fingerprint_blob();
    let resume = |p: &mut Port| {
        for k in fingerprinted.iter().step_by(5) {
            p.classify(&tcp(k.local_port, [203, 0, 113, 7], 0x10), NOW - secs(1));
        }
    };
    let mut p = destination(1_024);
    resume(&mut p);
    let (_, report) = restore(&mut p, &blob);
    let expected = result(&p, report);
    assert!(report.picked_up_local > 0);
    // The room for a match per fingerprint: refused, for the check ahead and for the apply's.
    let mut other = destination(1_024);
    resume(&mut other);
    let stage = StageConfig { table: *other.table().config(), base: NOW, now: NOW };
    let Ok(DecodedStaged::State(decoded, staged)) =
        codec::decode_staged(&blob, &DecodeConfig::default(), &stage)
    else {
        panic!("decodes")
    };
    let before = slots(&other);
    // (A match per fingerprint and 64 more: `codec::window`.)
    REFUSE.with(|r| r.set((decoded.fingerprints.len() + 64) * std::mem::size_of::<u32>()));
    let check = codec::WindowCheck::try_new(&decoded, other.table().config().max_flows);
    let applied = codec::apply_staged(&mut other, &decoded, staged, NOW, &ApplyConfig::default());
    REFUSE.with(|r| r.set(0));
    assert!(check.is_none(), "the check's memory refused");
    assert_eq!(result(&other, applied.unwrap()), expected);
    other.table().check_invariants().unwrap();
    in_recency_order(&other);
    let after = slots(&other);
    assert!(
        before.iter().all(|s| !after.contains(s)),
        "the window's flows were copied: the old way"
    );
}
