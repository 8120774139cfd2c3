//! Growth off the packet path (issue 18 item 3): with a counting global allocator, no classify
//! call copies a table. A table grows in bounded steps: within one classify call nothing is
//! reallocated or freed (a table that grows by copying frees or reallocates its old storage
//! there), and no single allocation is larger than [`STEP`] bytes, from the first flow to the
//! bound.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use vsflow_core::flow::TableConfig;
use vsflow_core::{Direction, Mode, PacketMeta, Port, PortConfig, PortIdentity, protocol};

/// The largest allocation one classify call may make: one growth step.
const STEP: usize = 16 * 1024;

struct Counting;

#[derive(Clone, Copy, Default)]
struct Seen {
    /// Largest single allocation (or reallocation's new size).
    largest: usize,
    /// Bytes freed or reallocated away (storage given up by a copy).
    moved: usize,
}

thread_local! {
    /// This thread's allocations (the harness's own threads never count).
    static SEEN: Cell<Seen> = const { Cell::new(Seen { largest: 0, moved: 0 }) };
}

fn note(alloc: usize, moved: usize) {
    SEEN.with(|s| {
        let mut v = s.get();
        v.largest = v.largest.max(alloc);
        v.moved += moved;
        s.set(v);
    });
}

fn take() -> Seen {
    SEEN.with(|s| s.replace(Seen::default()))
}

// SAFETY: every method forwards to `System`, which upholds the `GlobalAlloc` contract; the
// counters have no effect on the memory returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), 0);
        // SAFETY: the caller's layout obligations are passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(0, layout.size());
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size, layout.size());
        // SAFETY: as for `dealloc`; `new_size` obligations are the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The VM's `i`-th UDP flow (distinct for every `i` below 2^24).
fn udp(i: u32) -> PacketMeta {
    let [_, a, b, c] = i.to_be_bytes();
    let sport = u16::from_be_bytes([b, c]);
    PacketMeta::ipv4(
        Direction::Outbound,
        protocol::UDP,
        [10, 0, 0, 2],
        sport,
        [192, 0, a, 1],
        53,
        0,
        60,
    )
}

#[test]
fn no_classify_copies_the_table_and_each_growth_step_is_bounded() {
    let max_flows = 65_536;
    let cfg = PortConfig {
        table: TableConfig { max_flows, initial_capacity: 64, ..TableConfig::default() },
        initial_mode: Mode::Enforce,
    };
    let mut port = Port::try_new(PortIdentity::try_from_str("growth").unwrap(), cfg).unwrap();
    let mut worst = Seen::default();
    let mut worst_at = 0;
    take();
    for i in 0..max_flows {
        port.classify(&udp(i), u64::from(i));
        let s = take();
        if s.largest > worst.largest || s.moved > worst.moved {
            worst_at = i;
        }
        worst.largest = worst.largest.max(s.largest);
        worst.moved = worst.moved.max(s.moved);
    }
    assert_eq!(port.table().len(), max_flows as usize, "every flow tracked");
    println!(
        "worst classify: largest allocation {} bytes, {} bytes moved (flow {worst_at})",
        worst.largest, worst.moved
    );
    assert_eq!(worst.moved, 0, "a classify freed or reallocated table storage (a copy)");
    assert!(worst.largest <= STEP, "a classify allocated {} bytes in one step", worst.largest);
}
