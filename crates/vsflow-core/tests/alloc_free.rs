//! Proves with a counting global allocator that classify allocates nothing for an existing
//! flow, nothing for a new flow while the table has room, nothing for a flood at the bound
//! (slots are recycled, or the flow is refused when only established connections remain), and
//! nothing on a restoring port.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use vsflow_core::flow::TableConfig;
use vsflow_core::{Direction, Mode, PacketMeta, Port, PortConfig, PortIdentity, protocol};

struct Counting;

thread_local! {
    /// Allocations made by this thread: the test harness's own threads (its progress and
    /// timeout reports on a loaded machine) never count against the code under test.
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    ALLOCS.with(|n| n.set(n.get() + 1));
}

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

// SAFETY: every method forwards to `System`, which upholds the `GlobalAlloc` contract; the
// counter has no effect on the memory returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's layout obligations are passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as for `dealloc`; `new_size` obligations are the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn pkt(i: u16, dir: Direction) -> PacketMeta {
    let vm = [10, 0, 0, 2];
    let peer = [192, 0, 2, (i % 200) as u8];
    match dir {
        Direction::Outbound => {
            PacketMeta::ipv4(dir, protocol::TCP, vm, 1000 + i, peer, 443, 0x10, 100)
        }
        Direction::Inbound => {
            PacketMeta::ipv4(dir, protocol::TCP, peer, 443, vm, 1000 + i, 0x10, 100)
        }
    }
}

// One test function, counting its own thread's allocations.
#[test]
fn classify_allocates_nothing_for_existing_flows_new_flows_with_room_and_floods() {
    let cfg = PortConfig {
        table: TableConfig { max_flows: 1024, initial_capacity: 1024, ..TableConfig::default() },
        initial_mode: Mode::Enforce,
    };
    let mut port = Port::try_new(PortIdentity::try_from_str("a").unwrap(), cfg).unwrap();

    // New flows while the table has room (capacity reserved up front).
    let before = allocs();
    for i in 0..1024 {
        port.classify(&pkt(i, Direction::Outbound), u64::from(i));
    }
    assert_eq!(allocs() - before, 0, "new flows with room allocated");
    assert_eq!(port.table().len(), 1024);

    // Existing flows, both directions.
    let before = allocs();
    for round in 0..10u64 {
        for i in 0..1024 {
            port.classify(&pkt(i, Direction::Inbound), 2000 + round);
            port.classify(&pkt(i, Direction::Outbound), 2000 + round);
        }
    }
    assert_eq!(allocs() - before, 0, "existing flows allocated");

    // A flood of new unestablished flows at the bound, the table full of established
    // connections: refused, counted, nothing allocated.
    let before = allocs();
    for i in 0..20_000u16 {
        let m = PacketMeta::ipv4(
            Direction::Outbound,
            protocol::UDP,
            [10, 0, 0, 2],
            i,
            [203, 0, 113, 1],
            53,
            0,
            60,
        );
        port.classify(&m, 10_000 + u64::from(i));
    }
    assert_eq!(allocs() - before, 0, "refused flood allocated");
    assert_eq!(port.table().len(), 1024);
    assert_eq!(port.counters().refused_full, 20_000);

    // A flood the VM sends mid-stream (established, so it may displace the least recently
    // used connection) recycles slots.
    let before = allocs();
    for i in 0..20_000u16 {
        let m = PacketMeta::ipv4(
            Direction::Outbound,
            protocol::TCP,
            [10, 0, 0, 3],
            i,
            [203, 0, 113, 1],
            443,
            0x10,
            60,
        );
        port.classify(&m, 40_000 + u64::from(i));
    }
    assert_eq!(allocs() - before, 0, "flood at the bound allocated");
    assert_eq!(port.table().len(), 1024);
    assert_eq!(port.counters().evicted_lru, 20_000);

    // A restoring port classifies without allocating too, including a spray of mid-stream
    // segments of unknown flows (tentative pickups, answered by the VM's resets) and SYNs.
    port.begin_restore();
    let before = allocs();
    for i in 0..1024 {
        port.classify(&pkt(i, Direction::Inbound), 70_000);
    }
    for i in 0..5_000u16 {
        let m = PacketMeta::ipv4(
            Direction::Inbound,
            protocol::TCP,
            [198, 51, 100, 9],
            i,
            [10, 0, 0, 2],
            3389,
            if i % 3 == 0 { 0x02 } else { 0x10 },
            60,
        );
        port.classify(&m, 80_000 + u64::from(i));
        port.classify(&m.reply(0x04), 80_000 + u64::from(i));
    }
    assert_eq!(allocs() - before, 0, "restoring port allocated");
}
