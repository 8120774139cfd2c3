//! The worst re-sort of a restore's window merge (review2 s5, R5b-2; measured by review3 s5):
//! `codec::apply_staged` puts each timeout class's LRU list the restore window touched back in
//! recency order (`FlowTable::order_lists`), under the port's lock (at `DISPATCH_LEVEL` in the
//! driver). The destination VM chooses what its window holds, so this is the largest case:
//! the bound at its maximum (`FlowsPerPort` = `MAX_FLOWS_LIMIT`, 65,536), the blob carrying
//! the most established connections the default cap (60 KiB) holds exactly (5,099, found by
//! bisection), and the window filling the table to the bound (60,437 flows) with flows of every
//! timeout class (`udp`: all in one list, the larger sort). Results: docs/PERFORMANCE.md,
//! "Issue 18: the restore window's re-sort at the largest port".
//!
//! Two windows of the same flows, in the same run: `sorted` (the window's flows last seen in
//! the order they were created, so every list the apply builds is in recency order and nothing
//! is sorted: the apply without the sort) and `shuffled` (half of them seen again in a random
//! order, as a VM that re-sends on its flows in any order makes it: every list out of order,
//! each sorted whole). The difference is the sort's own cost.
//!
//! Window s6 (issue 18 item 1) added shapes: `est` (every window flow an established
//! connection, the carried flows' list), `interleaved` (the window's flows created over the
//! carried connections' hour, so the carried lie among them: the merge's placement walk at its
//! worst) and `fp` (a blob with fingerprints: the apply still copies the window). Results:
//! docs/PERFORMANCE.md, "Issue 18: the restore window's hold bounded".
//!
//! fpwindow s7 (issue 18 item 1, `fp`): the window is checked against the fingerprints ahead
//! of the apply, as the driver does it (`vsflow-callout` `Driver::check_window`): holds of
//! `codec::CHECK_STEP` slots (`check_hold`, each a hold of the port's lock in the driver), then
//! the apply's hold (`apply`). `timed` prints the apply's hold and the longest check hold;
//! callgrind counts them apart (`--toggle-collect='*restore_resort*check_hold*'`); `fp
//! resumed` has the VM speak in the window on every fingerprinted connection (each resumed by
//! the apply: a hostile VM's most matches). Results:
//! docs/PERFORMANCE.md, "Issue 18: the fingerprint window's hold bounded (fpwindow, seventh
//! session)".
//!
//! ```text
//! cargo build --release -p vsflow-core --example restore_resort
//! target/release/examples/restore_resort timed 15          # alternates the two
//! target/release/examples/restore_resort timed 15 udp      # every window flow in one list
//! for m in sorted shuffled; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/$m.cg \
//!     --toggle-collect='*restore_resort*apply*' target/release/examples/restore_resort $m 2>&1 \
//!     | grep Collected     # the apply alone (`apply_staged` is inlined into `apply`)
//!   callgrind_annotate --inclusive=yes /tmp/$m.cg | grep -E 'order_lists|ipnsort \['
//! done                     # `udp` as a second argument: one list
//! ```

use std::hint::black_box;
use std::time::Instant;

use vsflow_core::codec::{self, DecodeConfig, DecodedStaged};
use vsflow_core::flow::{MAX_FLOWS_LIMIT, TimeoutClass};
use vsflow_core::{Direction, PacketMeta, Port, protocol};

#[path = "../benches/workload/mod.rs"]
mod workload;

/// Ticks a second (100 ns each).
const SEC: u64 = 10_000_000;

/// The VM's `i`-th window flow: its packets, the last one the one it re-sends (so a re-send
/// leaves the flow in its class). Six kinds, one per timeout class.
fn window_flow(i: u32) -> Vec<PacketMeta> {
    let [_, a, b, c] = i.to_be_bytes();
    let sport = 1024 + u16::from(c);
    let remote = [198, 51, a, b];
    let tcp = |flags: u8| {
        PacketMeta::ipv4(
            Direction::Outbound,
            protocol::TCP,
            [10, 0, 0, 3],
            sport,
            remote,
            8443,
            flags,
            60,
        )
    };
    // `udp` on the command line: every window flow UDP (one list holds them all).
    // `est`: every window flow an established connection (the carried flows' list).
    let kind = if std::env::args().any(|a| a == "udp") {
        4
    } else if std::env::args().any(|a| a == "est") {
        1
    } else {
        i % 6
    };
    match kind {
        0 => vec![tcp(0x02)],
        1 => vec![tcp(0x02), tcp(0x02).reply(0x12), tcp(0x10)],
        2 => vec![tcp(0x02), tcp(0x02).reply(0x12), tcp(0x11)],
        3 => vec![tcp(0x02), tcp(0x02).reply(0x12), tcp(0x04)],
        4 => vec![PacketMeta::ipv4(
            Direction::Outbound,
            protocol::UDP,
            [10, 0, 0, 3],
            sport,
            remote,
            53,
            0,
            60,
        )],
        _ => vec![PacketMeta::ipv4(
            Direction::Outbound,
            47,
            [10, 0, 0, 3],
            0,
            [198, 52, a, b],
            u16::from(c),
            0,
            60,
        )],
    }
}

/// A destination port (bound 65,536) whose window holds `count` flows, created over
/// `now - 6 s .. now - 4 s`; with `shuffled`, half of each kind (i mod 12 < 6) seen again over
/// `now - 3 s .. now - 1 s` in a random order.
fn destination(now: u64, count: u32, shuffled: bool) -> Port {
    let mut p = workload::port(MAX_FLOWS_LIMIT, 64);
    let flows: Vec<Vec<PacketMeta>> = (0..count).map(window_flow).collect();
    for (i, f) in flows.iter().enumerate() {
        // `interleaved`: created over the carried connections' hour (the worst order for the
        // apply that merges the carried flows into the window's table: each list walked whole).
        let t = if std::env::args().any(|a| a == "interleaved") {
            now - 10 * SEC - 3600 * SEC + 3600 * SEC * i as u64 / u64::from(count)
        } else {
            now - 6 * SEC + 2 * SEC * i as u64 / u64::from(count)
        };
        for (j, m) in f.iter().enumerate() {
            p.classify(m, t + j as u64);
        }
    }
    if shuffled {
        let mut again: Vec<usize> = (0..flows.len()).filter(|i| i % 12 < 6).collect();
        let mut rng = workload::Mix(0x005E_ED0F_5047);
        for k in (1..again.len()).rev() {
            let j = usize::try_from(rng.next() % (k as u64 + 1)).unwrap_or(0);
            again.swap(k, j);
        }
        for (n, &i) in again.iter().enumerate() {
            let t = now - 3 * SEC + 2 * SEC * n as u64 / again.len() as u64;
            if let Some(m) = flows[i].last() {
                p.classify(m, t);
            }
        }
    }
    p
}

struct Run {
    apply_ns: u128,
    /// Each of the check's holds (none: no check).
    hold_ns: Vec<u128>,
    holds: u32,
    restored: u32,
    lists: [usize; TimeoutClass::COUNT],
}

/// One hold of the window check (the driver's port lock held around it).
#[inline(never)]
fn check_hold(dst: &mut Port, st: &codec::PortState, check: &mut codec::WindowCheck) -> bool {
    check.step(dst, st, codec::CHECK_STEP)
}

#[inline(never)]
fn apply(
    dst: &mut Port,
    st: &codec::PortState,
    flows: Result<codec::Staged, codec::ApplyError>,
    now: u64,
    check: Option<&mut codec::WindowCheck>,
) -> u32 {
    let config = codec::ApplyConfig::default();
    codec::apply_staged_checked(dst, st, flows, now, &config, check).expect("applies").restored
}

fn restore(
    blob: &[u8],
    now: u64,
    (window, resumed): (u32, &[PacketMeta]),
    shuffled: bool,
    timed: bool,
) -> Run {
    let mut dst = destination(now, window, shuffled);
    // `resumed`: the VM's own segment on each fingerprinted connection, in the window.
    for m in resumed {
        dst.classify(m, now - SEC / 2);
    }
    let stage = codec::StageConfig { table: *dst.table().config(), base: now, now };
    let Ok(DecodedStaged::State(st, flows)) =
        codec::decode_staged(blob, &DecodeConfig::default(), &stage)
    else {
        panic!("decodes")
    };
    // The driver's steps (`Driver::check_window`): the check made outside the lock, then
    // holds of the lock until it has read every slot.
    let mut check = codec::WindowCheck::try_new(&st, dst.table().config().max_flows);
    let (mut hold_ns, mut holds) = (Vec::new(), 0);
    if let Some(c) = check.as_mut() {
        loop {
            let start = timed.then(wall_ns);
            let done = black_box(check_hold(&mut dst, &st, c));
            hold_ns.push(start.map_or(0, |s| wall_ns() - s));
            holds += 1;
            if done {
                break;
            }
        }
    }
    let start = timed.then(wall_ns);
    let restored = black_box(apply(&mut dst, &st, flows, now, check.as_mut()));
    let apply_ns = start.map_or(0, |s| wall_ns() - s);
    if let Some(c) = check.as_mut() {
        assert_eq!(c.read_by_apply(), 0, "the apply read no window flow itself");
        c.disarm(&mut dst);
    }
    let mut lists = [0; TimeoutClass::COUNT];
    for c in TimeoutClass::ALL {
        let ages: Vec<u64> = dst.table().iter_lru(c).map(|(_, r)| r.last_seen).collect();
        assert!(ages.is_sorted(), "{c:?} in recency order after the apply");
        lists[c.index()] = ages.len();
    }
    assert_eq!(dst.table().len(), MAX_FLOWS_LIMIT as usize, "the table at the bound");
    let picked = usize::try_from(dst.counters().fingerprint_pickups).expect("fits");
    assert_eq!(picked, resumed.len(), "every resumed connection picked up");
    Run { apply_ns, hold_ns, holds, restored, lists }
}

/// Wall time (ns) from a fixed instant; the figures keep each mode's minimum and median (a
/// preempted round only adds time on the shared machine).
fn wall_ns() -> u128 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos()
}

#[allow(clippy::too_many_lines, reason = "one example's modes, each a few lines")]
fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "timed".into());
    let now = 1_000_000_000_000u64;
    // The source: the most established connections a blob carries exactly (found by bisection
    // over the default cap; past it the encoder fingerprints some, and past about 25,900 all),
    // the last one 10 s before the save (so every window flow is fresher than every carried
    // one: the sorted window needs no sort).
    let cfg = codec::EncodeConfig { provider: workload::PROVIDER, cap: codec::DEFAULT_CAP };
    let mut blob = Vec::with_capacity(codec::DEFAULT_CAP);
    let encode = |n: u32, blob: &mut Vec<u8>| {
        let src = workload::established_port(now - 10 * SEC, n);
        codec::encode(&src, now, &cfg, blob).expect("encodes")
    };
    let (mut lo, mut hi) = (4096u32, 16_384u32);
    while hi - lo > 1 {
        let mid = u32::midpoint(lo, hi);
        if encode(mid, &mut blob).flows_written == mid {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    // `fp`: 4,000 connections past that, so the blob arms fingerprints (the apply then checks
    // each window connection against them and copies the window, window s6).
    let fp = std::env::args().any(|a| a == "fp");
    let sources = if fp { lo + 4_000 } else { lo };
    let s = encode(sources, &mut blob);
    let carried = s.flows_written;
    // `fp resumed` (fpwindow s7): the VM spoke in the window on every fingerprinted connection
    // (a hostile VM's most matches: each is resumed by the apply, under the lock).
    let resumed: Vec<PacketMeta> = if std::env::args().any(|a| a == "resumed") {
        let Ok(codec::Decoded::State(decoded)) = codec::decode(&blob, &DecodeConfig::default())
        else {
            panic!("decodes")
        };
        let exact: std::collections::HashSet<_> = decoded.flows.iter().map(|f| f.key).collect();
        let src = workload::established_port(now - 10 * SEC, sources);
        src.table()
            .iter()
            .filter(|(k, _)| !exact.contains(*k))
            .map(|(k, _)| {
                let remote: [u8; 4] = k.remote_addr[..4].try_into().expect("IPv4");
                PacketMeta::ipv4(
                    Direction::Outbound,
                    protocol::TCP,
                    [10, 0, 0, 2],
                    k.local_port,
                    remote,
                    k.remote_port,
                    0x10,
                    60,
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let window = MAX_FLOWS_LIMIT - carried - u32::try_from(resumed.len()).expect("fits");
    let window = (window, resumed.as_slice());
    println!(
        "blob {} bytes: {carried} exact, {} fingerprinted; window {} flows, {} of them resumed \
         fingerprinted connections; bound {}",
        blob.len(),
        s.flows_fingerprinted,
        window.0 as usize + window.1.len(),
        window.1.len(),
        MAX_FLOWS_LIMIT
    );
    match mode.as_str() {
        "window" => {
            // Per class: the window's flows and whether the apply meets them (slab order, each
            // pushed to its list's head) in recency order: if not, that list is re-sorted.
            for shuffled in [false, true] {
                let d = destination(now, window.0, shuffled);
                let per_class: Vec<(usize, bool)> = TimeoutClass::ALL
                    .iter()
                    .map(|&c| {
                        let seen: Vec<u64> = d
                            .table()
                            .iter()
                            .filter(|(k, r)| TimeoutClass::of(k.protocol, r.state) == c)
                            .map(|(_, r)| r.last_seen)
                            .collect();
                        (seen.len(), seen.is_sorted())
                    })
                    .collect();
                println!("shuffled {shuffled}: (flows, met in order) per class {per_class:?}");
            }
        }
        "sorted" | "shuffled" => {
            let r = restore(&blob, now, window, mode == "shuffled", false);
            println!(
                "{mode}: restored {}, lists {:?}, window check holds {}",
                r.restored, r.lists, r.holds
            );
        }
        "timed" => {
            let rounds: usize = args.next().map_or(15, |r| r.parse().expect("rounds"));
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let (mut ha, mut hb) = (Vec::new(), Vec::new());
            let mut lists = ([0; TimeoutClass::COUNT], [0; TimeoutClass::COUNT]);
            let mut holds = 0;
            for _ in 0..rounds {
                let r = restore(&blob, now, window, false, true);
                lists.0 = r.lists;
                a.push(r.apply_ns);
                ha.extend(r.hold_ns);
                let r = restore(&blob, now, window, true, true);
                lists.1 = r.lists;
                b.push(r.apply_ns);
                hb.extend(r.hold_ns);
                holds = r.holds;
            }
            a.sort_unstable();
            b.sort_unstable();
            ha.sort_unstable();
            hb.sort_unstable();
            #[allow(
                clippy::cast_precision_loss,
                reason = "microseconds of a restore: far below 2^52"
            )]
            let us = |v: &[u128], i: usize| v[i] as f64 / 1000.0;
            let m = rounds / 2;
            println!("lists after (sorted) {:?}, (shuffled) {:?}", lists.0, lists.1);
            println!(
                "apply, sorted window (no re-sort):  min {:.0} us, median {:.0} us, max {:.0} us",
                us(&a, 0),
                us(&a, m),
                us(&a, rounds - 1)
            );
            println!(
                "apply, shuffled window (re-sort):   min {:.0} us, median {:.0} us, max {:.0} us",
                us(&b, 0),
                us(&b, m),
                us(&b, rounds - 1)
            );
            println!(
                "re-sort alone (median difference): {:.0} us; ratio shuffled/sorted {:.2}",
                us(&b, m) - us(&a, m),
                us(&b, m) / us(&a, m)
            );
            if holds > 0 {
                // Every hold of every round: a preempted hold (the machine is shared) is one of
                // many, so the median is the hold's own time.
                let pct = |v: &[u128], p: usize| us(v, (v.len() - 1) * p / 100);
                println!(
                    "window check: {holds} holds a restore; each hold, sorted: min {:.0} us, \
                     median {:.0} us, p99 {:.0} us; shuffled: min {:.0} us, median {:.0} us, \
                     p99 {:.0} us",
                    pct(&ha, 0),
                    pct(&ha, 50),
                    pct(&ha, 99),
                    pct(&hb, 0),
                    pct(&hb, 50),
                    pct(&hb, 99)
                );
            }
        }
        other => panic!("unknown mode {other}"),
    }
}
