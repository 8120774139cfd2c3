//! Review s6 (review, wip/review6), R6-3: a restore's staging that cannot have the memory to put
//! a class's list in age order loses no carried connection. With a global allocator that
//! refuses large blocks while armed (this thread only).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use vsflow_core::codec::{
    self, ApplyConfig, DecodeConfig, DecodedStaged, EncodeConfig, Encoder, StageConfig,
};
use vsflow_core::flow::TableConfig;
use vsflow_core::{Direction, Mode, PacketMeta, Port, PortConfig, PortIdentity, protocol};

/// Blocks larger than this are refused while armed: above a slab segment (64 slots) and an
/// index segment (1,024 heads), below the age order of a list of 1,000 flows (16 bytes a flow).
const REFUSE_ABOVE: usize = 12 * 1024;

struct Refusing;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

fn refused(size: usize) -> bool {
    size > REFUSE_ABOVE && ARMED.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every method forwards to `System` (which upholds the `GlobalAlloc` contract) or
// returns null, which the contract allows for any allocation.
unsafe impl GlobalAlloc for Refusing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refused(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout obligations are passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if refused(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `dealloc`; `new_size` obligations are the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Refusing = Refusing;

const NOW: u64 = 100_000_000_000;

fn config() -> PortConfig {
    PortConfig {
        table: TableConfig { max_flows: 4_096, initial_capacity: 64, ..TableConfig::default() },
        initial_mode: Mode::Enforce,
    }
}

/// The VM's UDP flow `n` over IPv4 or IPv6.
fn udp(v6: bool, n: u16) -> PacketMeta {
    let [a, b] = n.to_be_bytes();
    if v6 {
        let mut local = [0u8; 16];
        local[..2].copy_from_slice(&[0x20, 0x01]);
        local[15] = 2;
        let mut remote = local;
        remote[13..16].copy_from_slice(&[a, b, 9]);
        PacketMeta::ipv6(Direction::Outbound, protocol::UDP, local, 5_000, remote, 53, 0, 60)
    } else {
        PacketMeta::ipv4(
            Direction::Outbound,
            protocol::UDP,
            [10, 0, 0, 2],
            5_000,
            [10, 9, a, b],
            53,
            0,
            60,
        )
    }
}

#[test]
fn a_staging_without_memory_to_order_a_list_keeps_every_carried_flow() {
    // The source: 500 IPv6 flows, then 500 IPv4 flows, all UDP (one timeout class). The blob
    // lists the IPv4 flows first, so the staged UDP list is out of age order.
    let mut src = Port::try_new(PortIdentity::try_from_str("vm").unwrap(), config()).unwrap();
    for n in 0..1_000u16 {
        src.classify(&udp(n < 500, n), NOW - 20_000_000 + u64::from(n) * 10_000);
    }
    assert_eq!(src.table().len(), 1_000);
    let mut blob = Vec::new();
    let cfg = EncodeConfig { provider: vsflow_core::Guid::default(), cap: 61_440 };
    Encoder::new().encode(&src, NOW, &cfg, &mut blob).unwrap();

    let mut dest = Port::try_new(PortIdentity::try_from_str("vm").unwrap(), config()).unwrap();
    let placement = StageConfig { table: *dest.table().config(), base: NOW, now: NOW };
    ARMED.with(|a| a.set(true));
    let decoded = codec::decode_staged(&blob, &DecodeConfig::default(), &placement);
    ARMED.with(|a| a.set(false));
    let Ok(DecodedStaged::State(state, staged)) = decoded else { panic!("decodes: {decoded:?}") };
    let report = codec::apply_staged(&mut dest, &state, staged, NOW, &ApplyConfig::default());
    assert_eq!(
        report.map(|r| r.restored).map_err(|e| e.to_string()),
        Ok(1_000),
        "a 16 KB order for the UDP list refused: the restore must still carry every flow"
    );
    dest.table().check_invariants().unwrap();
}

/// The VM's TCP connection `n` over IPv4 (distinct for every `n` below 2^16), its three
/// handshake segments.
fn connection(n: u16) -> [PacketMeta; 3] {
    let [a, b] = n.to_be_bytes();
    let out = |flags| {
        PacketMeta::ipv4(
            Direction::Outbound,
            protocol::TCP,
            [10, 0, 0, 2],
            40_000,
            [10, 8, a, b],
            443,
            flags,
            60,
        )
    };
    let syn = out(0x02);
    [syn, syn.reply(0x12), out(0x10)]
}

/// A port of 10,000 of the VM's connections saved past the cap (about 4,000 written exactly,
/// the rest fingerprinted): its configuration, blob and save summary.
fn fingerprinted_blob() -> (PortConfig, Vec<u8>, vsflow_core::codec::EncodeSummary) {
    let cfg = PortConfig {
        table: TableConfig { max_flows: 16_384, initial_capacity: 64, ..TableConfig::default() },
        initial_mode: Mode::Enforce,
    };
    let mut src = Port::try_new(PortIdentity::try_from_str("vm").unwrap(), cfg).unwrap();
    for n in 0..10_000u16 {
        let t = NOW - 20_000_000 + u64::from(n) * 1_000;
        for (i, p) in (0u64..).zip(connection(n)) {
            src.classify(&p, t + i);
        }
    }
    let mut blob = Vec::new();
    let enc = EncodeConfig { provider: vsflow_core::Guid::default(), cap: 61_440 };
    let summary = Encoder::new().encode(&src, NOW, &enc, &mut blob).unwrap();
    assert!(summary.flows_fingerprinted > 4_000, "{summary:?}");
    (cfg, blob, summary)
}

/// R6-4: a restore whose apply cannot have the memory to arm the blob's fingerprints (a copy of
/// the set, 4 bytes a fingerprint, and its pickup state) still carries the connections the blob
/// holds exactly: the fingerprints are left unarmed (those connections' next segments judged as
/// any uncarried connection's), never a degraded restore that loses every one.
#[test]
fn an_apply_without_memory_to_arm_the_fingerprints_keeps_the_exact_connections() {
    let (cfg, blob, summary) = fingerprinted_blob();

    let mut dest = Port::try_new(PortIdentity::try_from_str("vm").unwrap(), cfg).unwrap();
    let placement = StageConfig { table: *dest.table().config(), base: NOW, now: NOW };
    let decoded = codec::decode_staged(&blob, &DecodeConfig::default(), &placement);
    let Ok(DecodedStaged::State(state, staged)) = decoded else { panic!("decodes: {decoded:?}") };
    ARMED.with(|a| a.set(true));
    let report = codec::apply_staged(&mut dest, &state, staged, NOW, &ApplyConfig::default());
    ARMED.with(|a| a.set(false));
    assert_eq!(
        report.map(|r| r.restored).map_err(|e| e.to_string()),
        Ok(summary.flows_written),
        "no memory to arm {} fingerprints: the exact connections must still be carried",
        summary.flows_fingerprinted
    );
    dest.table().check_invariants().unwrap();
}

/// R6-5: a restore whose decode cannot have the memory for the blob's fingerprint set (4 bytes
/// a fingerprint, after the blob's CRC-32C has checked every byte) still carries the
/// connections the blob holds exactly: the fingerprints are left out (those connections judged
/// as any uncarried connection's), never a degraded restore that loses every one.
#[test]
fn a_decode_without_memory_for_the_fingerprints_keeps_the_exact_connections() {
    let (cfg, blob, summary) = fingerprinted_blob();

    let mut dest = Port::try_new(PortIdentity::try_from_str("vm").unwrap(), cfg).unwrap();
    let placement = StageConfig { table: *dest.table().config(), base: NOW, now: NOW };
    ARMED.with(|a| a.set(true));
    let decoded = codec::decode_staged(&blob, &DecodeConfig::default(), &placement);
    ARMED.with(|a| a.set(false));
    let Ok(DecodedStaged::State(state, staged)) = decoded else {
        panic!(
            "no memory for {} fingerprints: decodes all the same: {decoded:?}",
            summary.flows_fingerprinted
        )
    };
    assert!(state.fingerprints.is_empty(), "none armed");
    let report = codec::apply_staged(&mut dest, &state, staged, NOW, &ApplyConfig::default());
    assert_eq!(report.map(|r| r.restored).map_err(|e| e.to_string()), Ok(summary.flows_written));
    dest.table().check_invariants().unwrap();
}
