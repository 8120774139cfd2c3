//! `vsflow-sim bench`: the performance targets of the callout bridge, measured through the real
//! callback paths against baselines run in the same process.
//!
//! - save callback of a port at the cap: the default table full (4,096 established IPv4
//!   connections, all exact records in format 1.1), of a port past it (20,000 connections, the
//!   bound raised to 32,768 so that the sweep splits the port over the processors and its
//!   connections sit in their processors' shards, as in production: exact records and
//!   fingerprints filling 60 KiB), and, as the same-run
//!   baseline, of the 886 connections format 1.0 carried at most;
//! - restore callback, synchronous mode (decode + validate + apply inside the callback), of the
//!   same three blobs;
//! - all callbacks of one migrating port (from a full `migrate` run);
//! - classify through the `extern "system"` classify function against calling
//!   `vsflow_core::classify` directly on the same packets.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use fwps_sys as sys;
use vsflow_callout::{DriverConfig, RestoreMode};
use vsflow_core::codec::{self, DecodeConfig, Decoded};
use vsflow_core::flow::TableConfig;
use vsflow_core::{
    Direction, IpFamily, Mode, PacketMeta, Port, PortConfig, PortIdentity, protocol,
};

use crate::host::{EXTERNAL_PORT, Host};
use crate::tools::migrate::{Latency, MigrateOptions};
use crate::vswitch::packet::{ClassifyInput, SimPacket};

/// What the bench measured.
#[derive(Clone, Debug, Default)]
pub struct BenchReport {
    /// Save callback, the same-run baseline: 886 connections (format 1.0's most).
    pub save_baseline: Latency,
    /// Save callback, port at the cap: the default table full (4,096 connections).
    pub save_at_cap: Latency,
    /// Blob size of that port.
    pub save_at_cap_bytes: usize,
    /// Save callback, port past the cap (20,000 connections; the bound raised).
    pub save_over_cap: Latency,
    /// That port's blob: bytes, exact records, fingerprints.
    pub over_cap_blob: (usize, usize, usize),
    /// Connections in processors' shards when that port's saves were measured (the port split,
    /// as production holds it: [`OVER_CAP_BOUND`]).
    pub over_cap_in_shards: usize,
    /// The same port's first save, as a live migration's usually is: its encoder freed (a
    /// minute after the last save), then the port running on for 25 s of the driver's
    /// once-a-second sweeps, which ready the encoder (`Encoder::prepare`) before the save.
    /// Wall clock and thread CPU time.
    pub save_over_cap_first: (Latency, Latency),
    /// The same, saved within the second its encoder was freed (the sweep's first
    /// preparation only): a save that finds its encoder barely readied computes most
    /// fingerprints itself. Thread CPU time (reported, not the target).
    pub save_over_cap_unready: Latency,
    /// Restore callback in synchronous mode (decode + apply), the baseline's blob.
    pub restore_baseline: Latency,
    /// Restore callback in synchronous mode (decode + apply), the at-cap blob.
    pub restore_sync: Latency,
    /// Restore callback in synchronous mode, the past-the-cap blob (arms its fingerprints).
    pub restore_over_cap: Latency,
    /// The same six measurements in the calling thread's CPU time (save baseline, at cap,
    /// past cap; restore baseline, at cap, past cap): what the callbacks cost whatever else the
    /// machine runs (a descheduled thread's wait is not in it). Includes the simulator's copy
    /// of the blob and its notification bookkeeping around each callback.
    pub cpu: [Latency; 6],
    /// Load average (1 minute) when the callbacks were measured.
    pub load: f64,
    /// All callbacks of one migrating port, from a full `migrate` run (only the callbacks are
    /// timed: [`crate::tools::migrate::MigrationReport::per_port_total`]).
    pub per_port: Latency,
    /// The same in thread CPU time.
    pub per_port_cpu: Latency,
    /// Classify through the callout against the core call.
    pub classify: CalloutVsCore,
}

/// Opens `flows` established TCP connections from the VM on port `id` of switch `sw` (the
/// bench's ports; also `examples/restore_at_cap.rs`).
pub fn fill_port(h: &mut Host, sw: usize, id: u32, flows: u16) {
    let [_, _, hi, lo] = id.to_be_bytes();
    let vm = vsflow_core::packet::v4([10, hi, lo, 2]);
    for k in 0..flows {
        h.advance(10_000);
        let remote = vsflow_core::packet::v4([
            198,
            51,
            u8::try_from(k >> 8).unwrap_or(0),
            u8::try_from(k & 0xff).unwrap_or(0),
        ]);
        let syn = SimPacket::new(IpFamily::V4, protocol::TCP, vm, 20_000 + k, remote, 443, 0x02, 0);
        h.transmit(sw, id, EXTERNAL_PORT, &syn);
        h.transmit(sw, EXTERNAL_PORT, id, &syn.reply(0x12, 0));
        // The handshake's ACK: an established connection (what fingerprints carry).
        let ack = SimPacket::new(IpFamily::V4, protocol::TCP, vm, 20_000 + k, remote, 443, 0x10, 0);
        h.transmit(sw, id, EXTERNAL_PORT, &ack);
    }
}

/// A busy port's production shape (see [`OVER_CAP_BOUND`]).
///
/// One expiry sweep splits port `id` of switch `sw` over the processors, then one packet of each of its first `flows` connections
/// ([`fill_port`]'s), from the peer, arrives on processor `k % PROCESSORS` (vRSS spreading the
/// VM's connections), 50 us after the one before, which moves the connection to that
/// processor's shard.
pub fn spread_port(h: &mut Host, sw: usize, id: u32, flows: u16) {
    use crate::kernel::services::{PROCESSORS, set_processor};
    let [_, _, hi, lo] = id.to_be_bytes();
    let vm = vsflow_core::packet::v4([10, hi, lo, 2]);
    h.advance(10_000_000);
    let _ = h.within(|| h.driver().expire_idle(16));
    for k in 0..flows {
        let remote = vsflow_core::packet::v4([
            198,
            51,
            u8::try_from(k >> 8).unwrap_or(0),
            u8::try_from(k & 0xff).unwrap_or(0),
        ]);
        let data =
            SimPacket::new(IpFamily::V4, protocol::TCP, vm, 20_000 + k, remote, 443, 0x10, 0)
                .reply(0x18, 100);
        // 50 us apart (20,000 connections' packets a second, each at its own instant).
        h.advance(500);
        set_processor(u32::from(k) % PROCESSORS);
        h.transmit(sw, EXTERNAL_PORT, id, &data);
    }
    set_processor(0);
}

/// `n` samples of `f`: its wall-clock figures (what `f` returns) and the thread CPU time of
/// each call.
fn sample(n: usize, mut f: impl FnMut() -> Duration) -> (Latency, Latency) {
    let (wall, cpu): (Vec<Duration>, Vec<Duration>) = (0..n)
        .map(|_| {
            let t = thread_cpu();
            let wall = f();
            (wall, thread_cpu().saturating_sub(t))
        })
        .unzip();
    (Latency::of(wall), Latency::of(cpu))
}

/// The 1-minute load average (`/proc/loadavg`), 0 where it cannot be read.
#[must_use]
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs every measurement with `iterations` samples each.
///
/// # Panics
/// If the simulated driver cannot be loaded.
#[must_use]
#[allow(clippy::too_many_lines, reason = "one measurement after another")]
#[allow(clippy::many_single_char_names, reason = "hosts a, b, h and the report r, as in the docs")]
pub fn run(iterations: usize) -> BenchReport {
    let mut r = BenchReport::default();
    let cfg = DriverConfig {
        default_mode: Mode::Enforce,
        restore_mode: RestoreMode::Synchronous,
        ..DriverConfig::default()
    };

    // Save: the baseline (886 connections, format 1.0's most), the default table full (the
    // cap of issue 12's proof) and a port past it (its table bound raised to 20,000).
    let big = DriverConfig { flows_per_port: OVER_CAP_FLOWS.into(), ..cfg };
    let mut a = Host::new(1);
    a.load_driver(DriverConfig { flows_per_port: OVER_CAP_BOUND, ..cfg }).expect("loads");
    let sa = a.create_switch("BENCH-A", &[]);
    a.create_port(sa, 9, "baseline", false);
    fill_port(&mut a, sa, 9, 886);
    a.create_port(sa, 10, "at-cap", false);
    fill_port(&mut a, sa, 10, 4096);
    a.create_port(sa, 11, "over-cap", false);
    fill_port(&mut a, sa, 11, OVER_CAP_FLOWS);
    let (baseline_blobs, _) = a.save(sa, 9);
    let (blobs, _) = a.save(sa, 10);
    let (over_blobs, _) = a.save(sa, 11);
    r.save_at_cap_bytes = blobs.first().map_or(0, |b| b.1.len());
    if let Some((_, blob)) = over_blobs.first()
        && let Ok(Decoded::State(st)) = codec::decode(blob, &DecodeConfig::default())
    {
        r.over_cap_blob = (blob.len(), st.flows.len(), st.fingerprints.len());
    }
    // The past-the-cap port costs milliseconds a save: fewer samples.
    let few = (iterations / 10).max(20);
    r.load = load_average();
    (r.save_baseline, r.cpu[0]) = sample(iterations, || a.save(sa, 9).1);
    (r.save_at_cap, r.cpu[1]) = sample(iterations, || a.save(sa, 10).1);
    // The past-the-cap port as production holds it: split, its connections in the processors'
    // shards (the other two ports are split too, their flows left in the home shard).
    spread_port(&mut a, sa, 11, OVER_CAP_FLOWS);
    r.over_cap_in_shards = a.within(|| a.driver().flow_totals().in_shards);
    (r.save_over_cap, r.cpu[2]) = sample(few, || a.save(sa, 11).1);
    // The port's first save: the sweep freed its encoder (a minute after the last save), then
    // the port ran on for 25 s of sweeps (one a second, as the driver's timer), which ready
    // the encoder for the next save.
    let sweeps = |a: &mut Host, n: u32| {
        for _ in 0..n {
            a.advance(10_000_000);
            let _ = a.within(|| a.driver().expire_idle(16));
        }
    };
    // 40 rounds at most: 40 x 86 s and the 40 x 61 s below stay within the connections'
    // two-hour idle timeout (past it they would expire and be swept, and the saves measured
    // an emptying port).
    let first_rounds = few.min(40);
    // Each round the VM's connections carry on (a packet each, on its processor): the port as
    // production holds it between saves, whatever the last save did to it.
    let (wall, cpu): (Vec<Duration>, Vec<Duration>) = (0..first_rounds)
        .map(|_| {
            spread_port(&mut a, sa, 11, OVER_CAP_FLOWS);
            sweeps(&mut a, 61 + 25);
            let t = thread_cpu();
            let wall = a.save(sa, 11).1;
            (wall, thread_cpu().saturating_sub(t))
        })
        .unzip();
    r.save_over_cap_first = (Latency::of(wall), Latency::of(cpu));
    // The same, saved within the second the sweep freed its encoder.
    r.save_over_cap_unready = Latency::of(
        (0..first_rounds)
            .map(|_| {
                spread_port(&mut a, sa, 11, OVER_CAP_FLOWS);
                sweeps(&mut a, 61);
                let t = thread_cpu();
                let _ = a.save(sa, 11);
                thread_cpu().saturating_sub(t)
            })
            .collect(),
    );

    // Restore, synchronous: decode + validate + apply inside the callback.
    let mut b = Host::new(2);
    b.load_driver(big).expect("loads");
    let sb = b.create_switch("BENCH-B", &[]);
    let mut id = 100;
    // Thread CPU time around the restore callback alone (not the port's create and delete).
    let mut restore = |blobs: &[(Option<sys::GUID>, Vec<u8>)], n: usize| {
        let (wall, cpu): (Vec<Duration>, Vec<Duration>) = (0..n)
            .map(|_| {
                id += 1;
                b.create_port(sb, id, "at-cap", true);
                let c = thread_cpu();
                let t = b.restore(sb, id, blobs);
                let cpu = thread_cpu().saturating_sub(c);
                b.delete_port(sb, id);
                (t.first().map_or(Duration::ZERO, |t| t.elapsed), cpu)
            })
            .unzip();
        (Latency::of(wall), Latency::of(cpu))
    };
    (r.restore_baseline, r.cpu[3]) = restore(&baseline_blobs, iterations);
    (r.restore_sync, r.cpu[4]) = restore(&blobs, iterations);
    (r.restore_over_cap, r.cpu[5]) = restore(&over_blobs, few);
    a.unload_driver();
    b.unload_driver();

    // All callbacks of one migrating port, from a full migration.
    let m = crate::tools::migrate::run(&MigrateOptions {
        ports: 64,
        flows_per_port: 1000,
        save_restore: true,
        ..MigrateOptions::default()
    });
    r.per_port = m.per_port_total;
    r.per_port_cpu = m.per_port_cpu;

    // Classify: the callout's extern "system" path vs the core directly, same packets.
    r.classify = callout_vs_core(cfg, 15);
    r
}

/// Classify through the callout against the core call, one thread (CPU ns per packet, medians
/// of rounds interleaved).
#[derive(Clone, Copy, Debug, Default)]
pub struct CalloutVsCore {
    /// The callout's `extern "system"` classify function, as WFP calls it.
    pub callout_ns: f64,
    /// `vsflow_core::classify` on the same packets of the same connections.
    pub core_ns: f64,
    /// The simulator's kernel primitives a classify call uses, alone, on the same thread and
    /// packets: a shared hold of an `EX_SPIN_LOCK`, a `KSPIN_LOCK`, a clock read and
    /// `NdisGetDataBuffer` on the packet's `NET_BUFFER`. With their contract checks
    /// (per-thread hold records, an emulated IRQL, release order) they cost more than the
    /// kernel's: included in `callout_ns`, reported so the floor they set is visible.
    pub primitives_ns: f64,
    /// The same `classify_fn` calls with each packet's WFP inputs warm: its values, metadata,
    /// `VSWITCH_ID` blob and `NET_BUFFER_LIST` chain read (`touch_inputs`) just before its
    /// call, as WFP has just written them on Windows, and that read's own time (a round of
    /// reads alone) subtracted. A diagnostic beside the target's line, not the judged figure:
    /// the rig builds every packet's inputs ahead of the rounds (~10 MB), so `callout_ns`
    /// reads them cold while the core call reads a dense, prefetched array.
    pub warm_callout_ns: f64,
    /// What reading one packet's WFP inputs cold costs alone (`touch_inputs`, a round).
    pub inputs_cold_ns: f64,
}

impl CalloutVsCore {
    /// The target's ratio: callout / core.
    #[must_use]
    pub fn ratio(&self) -> f64 {
        self.callout_ns / self.core_ns.max(f64::MIN_POSITIVE)
    }

    /// The simulator's floor: what the ratio would be if the callout's own work cost nothing
    /// ((core + the simulator's primitives) / core).
    #[must_use]
    pub fn floor(&self) -> f64 {
        (self.core_ns + self.primitives_ns) / self.core_ns.max(f64::MIN_POSITIVE)
    }

    /// One line: both figures, the ratio against issue 18's target (<= 2x) with met/MISSED,
    /// and the primitives' share.
    #[must_use]
    pub fn to_line(&self) -> String {
        let r = self.ratio();
        format!(
            "classify via callout {:.1} ns/packet vs core {:.1} ns/packet, one thread: {r:.2}x (target <= 2x, issue 18)  {}\n    of which the simulator's checked kernel primitives {:.1} ns/packet (measured alone): floor (core + primitives) / core {:.2}x; the callout's own work {:.1} ns/packet",
            self.callout_ns,
            self.core_ns,
            if r <= CALLOUT_TARGET { "met" } else { "MISSED" },
            self.primitives_ns,
            self.floor(),
            (self.callout_ns - self.core_ns - self.primitives_ns).max(0.0),
        ) + &format!(
            "\n    diagnostic, not the target's figure: with WFP's inputs warm (each packet's values, metadata, VSWITCH_ID blob and NET_BUFFER_LIST read just before its call, as WFP has just written them; that read, {:.1} ns/packet cold, subtracted) {:.1} ns/packet: {:.2}x the core call",
            self.inputs_cold_ns,
            self.warm_callout_ns,
            self.warm_callout_ns / self.core_ns.max(f64::MIN_POSITIVE),
        )
    }
}

/// Issue 18's target: classify through the callout at most twice the core call.
pub const CALLOUT_TARGET: f64 = 2.0;

/// One thread: CPU ns per packet through the callout and through the core call.
///
/// Both sides get the same packets in the same order: the peers' data segments (PSH|ACK, 100
/// bytes) of 10,000 connections the VM opened with a full handshake, on a port table with the
/// same bound and growth (the driver's `FlowsPerPort` 16,384, grown from the default initial
/// capacity by the same inserts), at a clock that does not move during the rounds. What
/// differs is what the target measures: the core call gets the packet as a ready
/// `PacketMeta` from a dense array; the callout reads it from WFP's values, metadata and
/// `NET_BUFFER_LIST` (separate allocations per packet, as WFP's are), parses the IP and TCP
/// headers for the flags, finds the switch and the port, and takes the map and port locks.
/// Medians of `rounds` rounds, interleaved; thread CPU time. Beside them, as a diagnostic
/// ([`CalloutVsCore::warm_callout_ns`]): a round of the inputs read alone, and a round of
/// the same calls each right after its inputs were read (the inputs warm, as WFP's are).
///
/// # Panics
/// If the simulated driver cannot be loaded.
#[must_use]
pub fn callout_vs_core(cfg: DriverConfig, rounds: usize) -> CalloutVsCore {
    let mut h = Host::new(3);
    let flows_per_port = 16_384;
    h.load_driver(DriverConfig { flows_per_port, ..cfg }).expect("loads");
    let sw = h.create_switch("BENCH-C", &[]);
    h.create_port(sw, 20, "classify", false);
    let rig = ClassifyRig::with_connections(&mut h, sw, "BENCH-C", &[20], 10_000);
    let mut core_port = Port::try_new(
        PortIdentity::try_from_str("core").unwrap_or_else(|_| unreachable!()),
        PortConfig {
            table: TableConfig { max_flows: flows_per_port, ..TableConfig::default() },
            initial_mode: cfg.default_mode,
        },
    )
    .expect("port");
    // The packets as the callout reads them (inbound on the VM's port).
    let meta_of = |p: &SimPacket| PacketMeta {
        direction: Direction::Inbound,
        family: p.family,
        protocol: p.protocol,
        src_addr: p.src,
        dst_addr: p.dst,
        src_port: p.sport,
        dst_port: p.dport,
        tcp_flags: vsflow_core::TcpFlags(p.flags),
        length: u32::try_from(p.datagram.len()).unwrap_or(u32::MAX),
        headers: vsflow_core::Headers::Complete,
        icmp: vsflow_core::Icmp::None,
    };
    let inbound: Vec<PacketMeta> = rig.lanes[0].packets.iter().map(meta_of).collect();
    // The same connections opened the same way: the VM's SYN, the peer's SYN-ACK, the VM's ACK.
    let mut now = vsflow_callout::driver::CLOCK_EPOCH;
    for m in &inbound {
        now += 1_000;
        let syn = m.reply(0x02);
        core_port.classify(&syn, now);
        core_port.classify(&syn.reply(0x12), now);
        core_port.classify(&syn.reply(0x12).reply(0x10), now);
    }
    let mut callout_rounds = Vec::new();
    let mut core_rounds = Vec::new();
    let mut primitive_rounds = Vec::new();
    let mut touch_rounds = Vec::new();
    let mut warm_rounds = Vec::new();
    let primitives = Primitives::new();
    // Thread CPU time, not wall time: on a shared machine a round that is descheduled would
    // otherwise count the other processes' time (rounds are 0.5-2 ms, near a time slice).
    for _ in 0..rounds {
        let t = thread_cpu();
        let blocked = rig.classify_round(0);
        #[allow(clippy::cast_precision_loss, reason = "a measurement")]
        callout_rounds.push(
            thread_cpu().saturating_sub(t).as_nanos() as f64 / rig.lanes[0].calls.len() as f64,
        );
        assert_eq!(blocked, 0, "established return traffic is permitted");
        let t = thread_cpu();
        for m in &inbound {
            black_box(core_port.classify(black_box(m), now));
        }
        #[allow(clippy::cast_precision_loss, reason = "a measurement")]
        core_rounds.push(thread_cpu().saturating_sub(t).as_nanos() as f64 / inbound.len() as f64);
        let t = thread_cpu();
        for call in &rig.lanes[0].calls {
            primitives.run(call.layer_data);
        }
        #[allow(clippy::cast_precision_loss, reason = "a measurement")]
        primitive_rounds
            .push(thread_cpu().saturating_sub(t).as_nanos() as f64 / inbound.len() as f64);
        // The inputs read alone (cold: the rounds above evicted them), then each read just
        // before its packet's call.
        let t = thread_cpu();
        for call in &rig.lanes[0].calls {
            touch_inputs(call);
        }
        #[allow(clippy::cast_precision_loss, reason = "a measurement")]
        touch_rounds.push(thread_cpu().saturating_sub(t).as_nanos() as f64 / inbound.len() as f64);
        let t = thread_cpu();
        let mut blocked = 0;
        for i in 0..rig.lane_len(0) {
            if let Some(call) = rig.lanes[0].calls.get(i) {
                touch_inputs(call);
            }
            blocked += u64::from(rig.classify_one(0, i));
        }
        #[allow(clippy::cast_precision_loss, reason = "a measurement")]
        warm_rounds.push(thread_cpu().saturating_sub(t).as_nanos() as f64 / inbound.len() as f64);
        assert_eq!(blocked, 0, "established return traffic is permitted");
    }
    drop(rig);
    h.unload_driver();
    let inputs_cold_ns = median(touch_rounds);
    CalloutVsCore {
        callout_ns: median(callout_rounds),
        core_ns: median(core_rounds),
        primitives_ns: median(primitive_rounds),
        warm_callout_ns: (median(warm_rounds) - inputs_cold_ns).max(0.0),
        inputs_cold_ns,
    }
}

/// Reads what `classify_fn` reads of one packet's WFP inputs, through the callout's own
/// readers: the values array and the metadata (`classify::read_values`), every byte of the
/// `VSWITCH_ID` blob, and `NdisGetDataBuffer` over the `NET_BUFFER_LIST` chain into the same
/// [`vsflow_callout::frame::IP_PREFIX`] bytes of storage (an IPv4 TCP packet's read). Brings
/// them into the cache as WFP's writing them just before the call would.
#[inline(never)]
fn touch_inputs(call: &Call) {
    // SAFETY: the rig's metadata, alive for the bench and only read (as in `classify_one`).
    let meta = unsafe { &*call.meta };
    // SAFETY: the rig's values and metadata, alive for the bench and only read.
    black_box(unsafe { vsflow_callout::classify::read_values(&call.values, meta) }.ok());
    let n = call.values.valueCount as usize;
    if !call.values.incomingValue.is_null() {
        // SAFETY: the rig's values array holds `valueCount` values.
        let values = unsafe { std::slice::from_raw_parts(call.values.incomingValue, n) };
        if let Some(v) = values.get(sys::FIELD_VSWITCH_ID)
            && v.value.r#type == sys::FWP_BYTE_BLOB_TYPE
        {
            // SAFETY: the type tag says `byteBlob` is the active arm; the rig's blob pointer.
            let blob = unsafe { v.value.u.byteBlob };
            // SAFETY: non-null in the rig (checked), its `size` bytes at `data`.
            if let Some(blob) = unsafe { blob.as_ref() }
                && !blob.data.is_null()
            {
                // SAFETY: as above.
                let bytes = unsafe { std::slice::from_raw_parts(blob.data, blob.size as usize) };
                black_box(bytes.iter().fold(0u8, |a, &b| a ^ b));
            }
        }
    }
    let mut storage = [0u8; vsflow_callout::frame::IP_PREFIX];
    // SAFETY: the rig's NET_BUFFER_LIST, alive; `storage` has IP_PREFIX writable bytes.
    black_box(
        unsafe { vsflow_callout::frame::nbl_prefix(call.layer_data, &mut storage) }
            .map(|f| f.frame_len),
    );
}

/// The simulator's kernel primitives one classify call uses, each once, as the callout uses
/// them: the clock, this processor's `EX_SPIN_LOCK` shared, a port's `KSPIN_LOCK`, and
/// `NdisGetDataBuffer` for the first [`vsflow_callout::frame::IP_PREFIX`] bytes.
struct Primitives {
    services: crate::kernel::services::SimServices,
    map: crate::kernel::services::SimRwLock,
    port: crate::kernel::services::SimLock,
}

impl Primitives {
    fn new() -> Self {
        use vsflow_callout::KernelServices as _;
        let services =
            crate::kernel::services::SimServices { shared: std::sync::Arc::default(), seed: 1 };
        let (map, port) = (services.new_rw_lock(), services.new_lock());
        Self { services, map, port }
    }

    #[inline(never)]
    fn run(&self, layer_data: *mut std::ffi::c_void) {
        use vsflow_callout::{KernelServices as _, RawRwSpinLock as _, RawSpinLock as _};
        black_box(self.services.now());
        let shared = self.map.lock_shared();
        let held = self.port.lock();
        let mut storage = [0u8; vsflow_callout::frame::IP_PREFIX];
        // SAFETY: `layer_data` is the rig's NET_BUFFER_LIST, alive for the bench; `storage`
        // has IP_PREFIX writable bytes.
        black_box(unsafe { vsflow_callout::frame::nbl_prefix(layer_data, &mut storage) });
        // SAFETY: acquired above by this thread with these tokens, released in reverse order.
        unsafe { self.port.unlock(held) };
        // SAFETY: as above.
        unsafe { self.map.unlock_shared(shared) };
    }
}

/// One thread on one port, split over processor shards or kept whole (issue 18 §2).
///
/// Classifies the inbound packets of 10,000 established connections of one port through the
/// callout, `rounds` rounds, with the port split over processor shards (as the periodic sweep
/// leaves a port with nothing of a migration open) or kept whole (as a save leaves it): for
/// instruction counts (`valgrind --tool=callgrind --toggle-collect='*classify_fn*'`)
/// of what splitting costs a packet on one processor (issue 18 §2). `elsewhere`: the flows are
/// first judged (adopted) on processor 0 and the rounds run on processor 1, so every packet
/// is of a flow another processor's shard holds (vRSS steering a flow's directions apart).
/// Returns CPU ns per packet (median of rounds).
///
/// # Panics
/// If the simulated driver cannot be loaded.
#[must_use]
pub fn one_port_one_thread(cfg: DriverConfig, split: bool, elsewhere: bool, rounds: usize) -> f64 {
    crate::kernel::services::set_processor(0);
    let mut h = Host::new(3);
    h.load_driver(DriverConfig { flows_per_port: 16_384, ..cfg }).expect("loads");
    let sw = h.create_switch("BENCH-C", &[]);
    h.create_port(sw, 20, "classify", false);
    let rig = ClassifyRig::with_connections(&mut h, sw, "BENCH-C", &[20], 10_000);
    let _ = h.within(|| h.driver().expire_idle(0));
    if !split {
        let _ = h.within(|| h.driver().on_save(&switch_params("BENCH-C"), 20));
    }
    assert_eq!(h.driver().flow_totals().sharded, usize::from(split), "the port as asked");
    if elsewhere {
        assert_eq!(rig.classify_round(0), 0, "established return traffic is permitted");
        crate::kernel::services::set_processor(1);
    }
    let mut per_packet = Vec::new();
    for _ in 0..rounds {
        let t = thread_cpu();
        let blocked = rig.classify_round(0);
        #[allow(clippy::cast_precision_loss, reason = "a measurement")]
        per_packet.push(
            thread_cpu().saturating_sub(t).as_nanos() as f64 / rig.lanes[0].calls.len() as f64,
        );
        assert_eq!(blocked, 0, "established return traffic is permitted");
    }
    drop(rig);
    h.unload_driver();
    median(per_packet)
}

/// Prepared classify calls on a loaded driver.
///
/// Per port ("lane"), the inbound packets of established (or unsolicited) connections as WFP
/// would hand them to vsflow's callout at the egress V4 layer, through vsflow's own filter (its
/// run-time id and context).
pub struct ClassifyRig {
    lanes: Vec<Lane>,
    filter: sys::FWPS_FILTER3,
}

struct Lane {
    packets: Vec<SimPacket>,
    #[allow(clippy::vec_box, reason = "the calls point into each input: they must not move")]
    _inputs: Vec<Box<ClassifyInput>>,
    calls: Vec<Call>,
}

struct Call {
    values: sys::FWPS_INCOMING_VALUES0,
    meta: *const sys::FWPS_INCOMING_METADATA_VALUES0,
    layer_data: *mut std::ffi::c_void,
}

// SAFETY: after construction the rig is only read: every pointer in a `Call` points into the
// boxed inputs the rig owns, and classify only reads them (NdisGetDataBuffer copies into the
// caller's storage, never into the packet).
unsafe impl Sync for ClassifyRig {}
// SAFETY: as above; the boxes move with the rig.
#[allow(clippy::non_send_fields_in_send_ty, reason = "pointers into the rig's own boxes")]
unsafe impl Send for ClassifyRig {}

impl ClassifyRig {
    /// Unsolicited inbound TCP packets to each of `ports` on switch `switch_name` (blocked by
    /// a port in Enforce mode, tracked in Monitor).
    ///
    /// # Panics
    /// If vsflow's egress filter is not in the engine (driver not running).
    #[must_use]
    pub fn new(h: &Host, switch_name: &str, ports: &[u32], packets: usize) -> Self {
        let lanes = ports
            .iter()
            .map(|&id| {
                let vm = vm_v4(id);
                (0..packets)
                    .map(|k| {
                        SimPacket::new(
                            IpFamily::V4,
                            protocol::TCP,
                            remote_v4(k),
                            443,
                            vm,
                            8080,
                            0x02,
                            0,
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>();
        Self::build(h, switch_name, ports, lanes)
    }

    /// Opens `packets` connections from the VM of each of `ports` (handshakes through the
    /// switch), and prepares the peers' data packets. Every lane gets connections of its own,
    /// also when a port is named twice (two lanes of one port: one VM's connections spread over
    /// processors, as vRSS does).
    ///
    /// # Panics
    /// As [`ClassifyRig::new`].
    #[must_use]
    pub fn with_connections(
        h: &mut Host,
        sw: usize,
        switch_name: &str,
        ports: &[u32],
        packets: usize,
    ) -> Self {
        let lanes = ports
            .iter()
            .enumerate()
            .map(|(lane, &id)| {
                (lane * packets..(lane + 1) * packets)
                    .map(|k| {
                        h.advance(1_000);
                        let sport = 1024 + u16::try_from(k % 60_000).unwrap_or(0);
                        let syn = SimPacket::new(
                            IpFamily::V4,
                            protocol::TCP,
                            vm_v4(id),
                            sport,
                            remote_v4(k),
                            443,
                            0x02,
                            0,
                        );
                        h.transmit(sw, id, EXTERNAL_PORT, &syn);
                        let synack = syn.reply(0x12, 0);
                        h.transmit(sw, EXTERNAL_PORT, id, &synack);
                        h.transmit(sw, id, EXTERNAL_PORT, &synack.reply(0x10, 0));
                        syn.reply(0x18, 100)
                    })
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>();
        Self::build(h, switch_name, ports, lanes)
    }

    fn build(h: &Host, switch_name: &str, ports: &[u32], lanes: Vec<Vec<SimPacket>>) -> Self {
        let ours = h
            .engine_objects()
            .filters
            .into_iter()
            .find(|f| {
                f.provider == Some(vsflow_callout::keys::PROVIDER)
                    && f.layer == sys::FWPM_LAYER_EGRESS_VSWITCH_TRANSPORT_V4
            })
            .expect("vsflow's egress V4 filter");
        // SAFETY: plain data, all zeroes valid.
        let mut filter: sys::FWPS_FILTER3 = unsafe { std::mem::zeroed() };
        filter.filterId = ours.id;
        filter.context = ours.raw_context;
        let name: Vec<u16> = switch_name.encode_utf16().collect();
        let lanes = ports
            .iter()
            .zip(lanes)
            .map(|(&id, packets)| {
                let mut inputs: Vec<Box<ClassifyInput>> = packets
                    .iter()
                    .map(|p| ClassifyInput::new(p, false, EXTERNAL_PORT, id, &name))
                    .collect();
                let calls = inputs
                    .iter_mut()
                    .map(|i| Call {
                        values: i.incoming(sys::FWPS_LAYER_EGRESS_VSWITCH_TRANSPORT_V4),
                        meta: &raw const i.meta,
                        layer_data: i.layer_data(),
                    })
                    .collect();
                Lane { packets, _inputs: inputs, calls }
            })
            .collect();
        Self { lanes, filter }
    }

    /// Packets per lane.
    #[must_use]
    pub fn lane_len(&self, lane: usize) -> usize {
        self.lanes.get(lane).map_or(0, |l| l.calls.len())
    }

    /// Classifies packet `i` of `lane`; true if blocked.
    #[must_use]
    pub fn classify_one(&self, lane: usize, i: usize) -> bool {
        let Some(call) = self.lanes.get(lane).and_then(|l| l.calls.get(i)) else { return false };
        let mut out =
            sys::FWPS_CLASSIFY_OUT0 { rights: sys::FWPS_RIGHT_ACTION_WRITE, ..Default::default() };
        // SAFETY: the callout's classify function with inputs alive for the call (owned by
        // the rig), as WFP would call it.
        unsafe {
            vsflow_callout::classify::classify_fn::<crate::kernel::services::SimServices>(
                &raw const call.values,
                call.meta,
                call.layer_data,
                std::ptr::null(),
                &raw const self.filter,
                0,
                &raw mut out,
            );
        };
        out.actionType == sys::FWP_ACTION_BLOCK
    }

    /// Classifies every packet of `lane` once; returns how many were blocked.
    #[must_use]
    pub fn classify_round(&self, lane: usize) -> u64 {
        (0..self.lane_len(lane)).map(|i| u64::from(self.classify_one(lane, i))).sum()
    }
}

fn vm_v4(id: u32) -> [u8; 16] {
    let [_, _, hi, lo] = id.to_be_bytes();
    vsflow_core::packet::v4([10, hi, lo, 2])
}

fn remote_v4(k: usize) -> [u8; 16] {
    let [_, b1, b2, b3] = u32::try_from(k).unwrap_or(0).to_be_bytes();
    vsflow_core::packet::v4([198, 18 + (b1 & 1), b2, b3])
}

/// Issue 11's measurements, ratios within one run.
#[derive(Clone, Debug, Default)]
pub struct ScalingReport {
    /// Cores the machine reports.
    pub cores: usize,
    /// Classify throughput (packets/s, median of trials): `(threads, packets/s)`, each thread
    /// on its own port.
    pub distinct_ports: Vec<(usize, f64)>,
    /// Median over trials of (2 threads on 2 ports) / (1 thread).
    pub two_port_ratio: f64,
    /// CPU ns per packet at `threads` threads on distinct ports (median of trials).
    pub cpu_ns: Vec<(usize, f64)>,
    /// Median over trials of 2 x (CPU ns per packet at 1 thread) / (at 2 threads): the
    /// scaling two free cores would give, independent of the machine's other load.
    pub two_port_cpu_ratio: f64,
    /// Load average (1 minute) when the measurement started.
    pub load: f64,
    /// Two threads on one port, the same connections, packets/s, and its ratio to one thread.
    /// With the port split, every packet of the second processor misses its shard: what a
    /// flow steered to two processors costs (the Windows assumption failing for every flow).
    pub same_port: (f64, f64),
    /// The same from CPU time per packet, split and kept whole (medians of trials).
    pub same_port_cpu: (f64, f64),
    /// Two threads on one port, each with connections of its own (vRSS: a flow stays on one
    /// processor), packets/s and its ratio to one thread (medians of trials).
    pub one_port_own_flows: (f64, f64),
    /// The same from CPU time per packet (`2 x cpu1 / cpu2`, median of trials).
    pub one_port_own_flows_cpu: f64,
    /// The same two threads on one port kept whole (one lock: merged by a save before the
    /// point, as before issue 18 §2): packets/s, ratio to one thread, CPU-time ratio.
    pub one_port_whole: (f64, f64, f64),
    /// One thread on lane 0, CPU ns per packet: the port sharded (the 1-thread point) and
    /// kept whole (medians of trials): what sharding costs a packet on one processor.
    pub one_thread_sharded_vs_whole: (f64, f64),
    /// Whether the benchmark's ports were split into shards when measured.
    pub sharded_ports: usize,
    /// Classify latency on port B, quiet: p50, p99 (ns, per call incl. the clock reads).
    pub quiet: (f64, f64),
    /// The same while another thread saves port A (at the blob cap) in a loop.
    pub while_saving: (f64, f64),
    /// Saves completed during the latency measurement.
    pub saves: u64,
    /// Classify through the callout against the core call, one thread.
    pub classify: CalloutVsCore,
    /// Trials and seconds per throughput point.
    pub trials: usize,
    /// Seconds per throughput point.
    pub seconds: f64,
}

fn switch_params(name: &str) -> sys::NDIS_SWITCH_PARAMETERS {
    let units: Vec<u16> = name.encode_utf16().collect();
    let mut counted = sys::IF_COUNTED_STRING::EMPTY;
    let n = units.len().min(sys::IF_MAX_STRING_SIZE);
    counted.String[..n].copy_from_slice(&units[..n]);
    counted.Length = u16::try_from(2 * n).unwrap_or(0);
    sys::NDIS_SWITCH_PARAMETERS {
        Header: sys::NDIS_OBJECT_HEADER {
            Type: sys::NDIS_OBJECT_TYPE_DEFAULT,
            Revision: 1,
            Size: u16::try_from(std::mem::size_of::<sys::NDIS_SWITCH_PARAMETERS>()).unwrap_or(0),
        },
        Flags: 0,
        SwitchName: counted,
        SwitchFriendlyName: counted,
        NumSwitchPorts: 0,
        IsActive: 1,
    }
}

/// CPU time the calling thread has used.
#[cfg(unix)]
#[must_use]
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer; CLOCK_THREAD_CPUTIME_ID needs nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(u64::try_from(ts.tv_sec).unwrap_or(0), u32::try_from(ts.tv_nsec).unwrap_or(0))
}

/// Elsewhere (the simulator also builds for Windows): wall time since the first call, so the
/// figures are wall-clock ones there.
#[cfg(not(unix))]
#[must_use]
pub fn thread_cpu() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// One throughput point: packets per second of wall time, and CPU nanoseconds per packet
/// (summed over the threads: contention shows as more CPU per packet, whatever else runs on
/// the machine).
#[derive(Clone, Copy, Debug, Default)]
pub struct Point {
    /// Packets per second (wall clock).
    pub pps: f64,
    /// CPU ns per packet.
    pub cpu_ns: f64,
}

/// Packets/s of `threads` threads, thread `t` classifying lane `lane(t)` for `d`.
#[allow(clippy::many_single_char_names, reason = "t(hread), d(uration), n, e, s as in the docs")]
fn throughput(
    rig: &ClassifyRig,
    threads: usize,
    lane: impl Fn(usize) -> usize + Sync,
    d: Duration,
) -> Point {
    let barrier = std::sync::Barrier::new(threads);
    let total = std::sync::atomic::AtomicU64::new(0);
    let cpu = std::sync::atomic::AtomicU64::new(0);
    let elapsed = std::sync::Mutex::new(Duration::ZERO);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (barrier, total, elapsed, lane, cpu) = (&barrier, &total, &elapsed, &lane, &cpu);
            s.spawn(move || {
                crate::kernel::services::set_processor(u32::try_from(t).unwrap_or(0));
                let l = lane(t);
                barrier.wait();
                let start = Instant::now();
                let cpu0 = thread_cpu();
                let mut n = 0u64;
                while start.elapsed() < d {
                    black_box(rig.classify_round(l));
                    n += rig.lane_len(l) as u64;
                }
                let e = start.elapsed();
                let used = thread_cpu().saturating_sub(cpu0);
                cpu.fetch_add(
                    u64::try_from(used.as_nanos()).unwrap_or(u64::MAX),
                    std::sync::atomic::Ordering::Relaxed,
                );
                total.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                let mut m = elapsed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                *m = (*m).max(e);
            });
        }
    });
    let e = elapsed.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let n = total.into_inner().max(1);
    #[allow(clippy::cast_precision_loss, reason = "a measurement")]
    Point { pps: n as f64 / e.as_secs_f64().max(1e-9), cpu_ns: cpu.into_inner() as f64 / n as f64 }
}

fn percentiles(mut v: Vec<u64>) -> (f64, f64) {
    v.sort_unstable();
    let at = |q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into a sorted sample"
        )]
        let i = ((v.len().saturating_sub(1)) as f64 * q) as usize;
        #[allow(clippy::cast_precision_loss, reason = "a measurement")]
        v.get(i).map_or(0.0, |&x| x as f64)
    };
    (at(0.5), at(0.99))
}

/// Per-call classify latency on `lane` for `calls` calls.
fn latency(rig: &ClassifyRig, lane: usize, calls: usize) -> Vec<u64> {
    crate::kernel::services::set_processor(1);
    let n = rig.lane_len(lane).max(1);
    (0..calls)
        .map(|k| {
            let t = Instant::now();
            black_box(rig.classify_one(lane, k % n));
            u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
        })
        .collect()
}

/// Issue 11's benchmarks, ratios within one run.
///
/// Classify throughput on N threads and N ports vs one thread, two threads on one port,
/// classify p99 on port B while port A is saved in a loop vs quiet, and the callout vs the core
/// call on one thread. `seconds` per throughput point, `trials` repetitions (medians reported).
///
/// # Panics
/// If the simulated driver cannot be loaded.
#[must_use]
#[allow(clippy::many_single_char_names, reason = "h(ost), r(eport), d(uration), c, k")]
#[allow(clippy::too_many_lines, reason = "one measurement after another")]
pub fn scaling(seconds: f64, trials: usize) -> ScalingReport {
    let cfg = DriverConfig {
        default_mode: Mode::Enforce,
        restore_mode: RestoreMode::Synchronous,
        ..DriverConfig::default()
    };
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get).max(2);
    let max_threads = cores.max(4);
    let mut h = Host::new(11);
    h.load_driver(cfg).expect("loads");
    let sw = h.create_switch("BENCH-S", &[]);
    // Port A (9): a port at the blob cap, saved in a loop. Ports 10..: classify lanes.
    h.create_port(sw, 9, "saved", false);
    let _at_cap = ClassifyRig::with_connections(&mut h, sw, "BENCH-S", &[9], 886);
    let ids: Vec<u32> = (0..max_threads).map(|t| 10 + u32::try_from(t).unwrap_or(0)).collect();
    for &id in &ids {
        h.create_port(sw, id, &format!("lane-{id}"), false);
    }
    // One more lane: port 10 again, with connections of its own (two processors on one port).
    let mut lanes_ports = ids.clone();
    lanes_ports.push(ids[0]);
    let rig = ClassifyRig::with_connections(&mut h, sw, "BENCH-S", &lanes_ports, 1024);
    let own_lane = max_threads;
    // The periodic sweep splits ports that have nothing of a migration open into shards.
    let _ = h.within(|| h.driver().expire_idle(0));
    let sharded_ports = h.driver().flow_totals().sharded;
    let d = Duration::from_secs_f64(seconds);
    let mut r = ScalingReport { cores, sharded_ports, trials, seconds, ..ScalingReport::default() };
    r.load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0.0);
    let mut points: Vec<Vec<Point>> = vec![Vec::new(); max_threads];
    let mut ratios = Vec::new();
    let mut cpu_ratios = Vec::new();
    let mut same = Vec::new();
    let mut same_ratio = Vec::new();
    let (mut same_cpu, mut same_whole_cpu) = (Vec::new(), Vec::new());
    let mut own = Vec::new();
    let mut own_ratio = Vec::new();
    let mut own_cpu = Vec::new();
    let (mut whole, mut whole_ratio, mut whole_cpu) = (Vec::new(), Vec::new(), Vec::new());
    let (mut one_sharded, mut one_whole) = (Vec::new(), Vec::new());
    let bench_switch = switch_params("BENCH-S");
    for _ in 0..trials {
        for n in 1..=max_threads {
            points[n - 1].push(throughput(&rig, n, |t| t, d));
        }
        let one = points[0].last().copied().unwrap_or_default();
        let two = points[1].last().copied().unwrap_or_default();
        ratios.push(two.pps / one.pps.max(1.0));
        cpu_ratios.push(2.0 * one.cpu_ns / two.cpu_ns.max(1e-9));
        let two_same = throughput(&rig, 2, |_| 0, d);
        same.push(two_same.pps);
        same_ratio.push(two_same.pps / one.pps.max(1.0));
        same_cpu.push(2.0 * one.cpu_ns / two_same.cpu_ns.max(1e-9));
        let two_own = throughput(&rig, 2, |t| if t == 0 { 0 } else { own_lane }, d);
        own.push(two_own.pps);
        own_ratio.push(two_own.pps / one.pps.max(1.0));
        own_cpu.push(2.0 * one.cpu_ns / two_own.cpu_ns.max(1e-9));
        // The same port whole (a save merges it), then split again by the sweep.
        let _ = h.within(|| h.driver().on_save(&bench_switch, ids[0]));
        let two_whole = throughput(&rig, 2, |t| if t == 0 { 0 } else { own_lane }, d);
        whole.push(two_whole.pps);
        whole_ratio.push(two_whole.pps / one.pps.max(1.0));
        whole_cpu.push(2.0 * one.cpu_ns / two_whole.cpu_ns.max(1e-9));
        same_whole_cpu.push(2.0 * one.cpu_ns / throughput(&rig, 2, |_| 0, d).cpu_ns.max(1e-9));
        one_sharded.push(one.cpu_ns);
        one_whole.push(throughput(&rig, 1, |_| 0, d).cpu_ns);
        let _ = h.within(|| h.driver().expire_idle(0));
    }
    r.distinct_ports = points
        .iter()
        .enumerate()
        .map(|(i, v)| (i + 1, median(v.iter().map(|p| p.pps).collect())))
        .collect();
    r.cpu_ns = points
        .iter()
        .enumerate()
        .map(|(i, v)| (i + 1, median(v.iter().map(|p| p.cpu_ns).collect())))
        .collect();
    r.two_port_ratio = median(ratios);
    r.two_port_cpu_ratio = median(cpu_ratios);
    r.same_port = (median(same), median(same_ratio));
    r.same_port_cpu = (median(same_cpu), median(same_whole_cpu));
    r.one_port_own_flows = (median(own), median(own_ratio));
    r.one_port_own_flows_cpu = median(own_cpu);
    r.one_port_whole = (median(whole), median(whole_ratio), median(whole_cpu));
    r.one_thread_sharded_vs_whole = (median(one_sharded), median(one_whole));

    // Latency on port B (lane 1) quiet, then while port A is saved in a loop.
    let calls = 400_000;
    r.quiet = percentiles(latency(&rig, 1, calls));
    let params = switch_params("BENCH-S");
    let driver = h.driver();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let saves = std::sync::atomic::AtomicU64::new(0);
    r.while_saving = std::thread::scope(|s| {
        s.spawn(|| {
            crate::kernel::services::set_processor(0);
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                black_box(driver.on_save(&params, 9));
                saves.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let v = percentiles(latency(&rig, 1, calls));
        stop.store(true, std::sync::atomic::Ordering::Release);
        v
    });
    r.saves = saves.into_inner();
    drop(rig);
    h.unload_driver();
    r.classify = callout_vs_core(cfg, 15);
    r
}

impl ScalingReport {
    /// The report, each target with whether it was met.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let met = |ok: bool| if ok { "met" } else { "MISSED" };
        let _ = writeln!(
            s,
            "vsflow-sim bench --mode scaling ({} cores reported, load average {:.1} at start; {} trials x {:.1} s per point, medians)",
            self.cores, self.load, self.trials, self.seconds
        );
        let one = self.distinct_ports.first().map_or(1.0, |p| p.1).max(1.0);
        for ((n, pps), (_, cpu)) in self.distinct_ports.iter().zip(&self.cpu_ns) {
            let _ = writeln!(
                s,
                "  classify, {n} thread(s) on {n} port(s)   {:>8.2} Mpps  {:.2}x of 1 thread   {cpu:>6.1} CPU ns/packet",
                pps / 1e6,
                pps / one
            );
        }
        let _ = writeln!(
            s,
            "  2 threads / 1 thread, wall clock (median of per-trial ratios): {:.2}x (target >= 1.8x)  {}",
            self.two_port_ratio,
            met(self.two_port_ratio >= 1.8)
        );
        let _ = writeln!(
            s,
            "  2 threads / 1 thread, from CPU time per packet (2 x cpu1 / cpu2): {:.2}x (target >= 1.8x)  {}",
            self.two_port_cpu_ratio,
            met(self.two_port_cpu_ratio >= 1.8)
        );
        let _ = writeln!(
            s,
            "  2 threads on ONE port, same conns     {:>8.2} Mpps  {:.2}x of 1 thread; from CPU time per packet {:.2}x split, {:.2}x kept whole (reported: every flow on both processors)",
            self.same_port.0 / 1e6,
            self.same_port.1,
            self.same_port_cpu.0,
            self.same_port_cpu.1
        );
        let _ = writeln!(
            s,
            "  2 threads on ONE port, own conns      {:>8.2} Mpps  {:.2}x of 1 thread (target >= 1.6x)  {}; from CPU time per packet {:.2}x  {} ({} of the bench's ports sharded)",
            self.one_port_own_flows.0 / 1e6,
            self.one_port_own_flows.1,
            met(self.one_port_own_flows.1 >= 1.6),
            self.one_port_own_flows_cpu,
            met(self.one_port_own_flows_cpu >= 1.6),
            self.sharded_ports
        );
        let _ = writeln!(
            s,
            "  the same, port kept whole (one lock)  {:>8.2} Mpps  {:.2}x of 1 thread; from CPU time per packet {:.2}x (same-run baseline)",
            self.one_port_whole.0 / 1e6,
            self.one_port_whole.1,
            self.one_port_whole.2
        );
        let _ = writeln!(
            s,
            "  1 thread on one port: sharded {:.1} vs whole {:.1} CPU ns/packet ({:.2}x, reported)",
            self.one_thread_sharded_vs_whole.0,
            self.one_thread_sharded_vs_whole.1,
            self.one_thread_sharded_vs_whole.0 / self.one_thread_sharded_vs_whole.1.max(1e-9)
        );
        let ratio = self.while_saving.1 / self.quiet.1.max(1.0);
        let _ = writeln!(
            s,
            "  classify on port B: quiet p50 {:.0} ns p99 {:.0} ns; while port A is saved in a loop ({} saves) p50 {:.0} ns p99 {:.0} ns: p99 {ratio:.2}x (target <= 2x)  {}",
            self.quiet.0,
            self.quiet.1,
            self.saves,
            self.while_saving.0,
            self.while_saving.1,
            met(ratio <= 2.0)
        );
        let _ = writeln!(s, "  {}", self.classify.to_line());
        s
    }
}

fn us(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

/// Connections of the past-the-cap port (and the restoring host's `FlowsPerPort`).
pub const OVER_CAP_FLOWS: u16 = 20_000;

/// The saving host's `FlowsPerPort`.
///
/// Raised past [`OVER_CAP_FLOWS`] with room to spare, as a host running a VM of 20,000
/// connections would set it. The expiry sweep then splits the port over
/// the processors (it holds less than 3/4 of its bound, `ports::SPLIT_BELOW`, and stays split
/// below 7/8, `MERGE_AT`), and its connections move to the shards of the processors their
/// packets arrive on ([`spread_port`]): the shape a busy port has in production, which its save
/// must handle (review-s4 L4). A bound of exactly 20,000 would keep the port whole (never split
/// at or above 3/4), a shape production has only with no headroom.
pub const OVER_CAP_BOUND: u32 = 32_768;

impl BenchReport {
    /// The report with each target and whether it was met.
    #[must_use]
    #[allow(clippy::too_many_lines, reason = "one row after another")]
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let row = |s: &mut String, name: &str, l: Latency, target: Duration| {
            let ok = if l.p99 <= target { "met" } else { "MISSED" };
            let _ = writeln!(
                s,
                "  {name:<34} p50 {:>10}  p99 {:>10}  max {:>10}  target p99 <= {:>8}  {ok}",
                us(l.p50),
                us(l.p99),
                us(l.max),
                us(target)
            );
        };
        let _ = writeln!(s, "vsflow-sim bench");
        // p50 and p99 ratios: on a loaded VM the p99 is the scheduler's, the p50 the code's.
        let ratio = |l: Latency, base: Latency| {
            format!(
                "{:.2}x (p50 {:.2}x)",
                l.p99.as_secs_f64() / base.p99.as_secs_f64().max(f64::MIN_POSITIVE),
                l.p50.as_secs_f64() / base.p50.as_secs_f64().max(f64::MIN_POSITIVE)
            )
        };
        row(&mut s, "save, baseline (886 conns)", self.save_baseline, Duration::from_micros(100));
        row(
            &mut s,
            &format!("save, at cap (4096, {} B)", self.save_at_cap_bytes),
            self.save_at_cap,
            Duration::from_micros(100),
        );
        row(
            &mut s,
            &format!("save, past cap ({OVER_CAP_FLOWS}, {} B)", self.over_cap_blob.0),
            self.save_over_cap,
            Duration::from_millis(1),
        );
        row(
            &mut s,
            "restore sync, baseline (886)",
            self.restore_baseline,
            Duration::from_micros(200),
        );
        row(&mut s, "restore sync, at cap (4096)", self.restore_sync, Duration::from_micros(200));
        row(
            &mut s,
            &format!("restore sync, past cap ({OVER_CAP_FLOWS})"),
            self.restore_over_cap,
            Duration::from_micros(200),
        );
        let _ = writeln!(
            s,
            "  past-the-cap blob: {} exact records + {} fingerprints of {OVER_CAP_FLOWS} connections",
            self.over_cap_blob.1, self.over_cap_blob.2
        );
        let _ = writeln!(
            s,
            "  past-the-cap port: FlowsPerPort {OVER_CAP_BOUND}, split, {} of its {OVER_CAP_FLOWS} connections in processors' shards",
            self.over_cap_in_shards
        );
        let _ = writeln!(
            s,
            "  p99 vs the same-run baseline: save at cap {}, past cap {}; restore at cap {}, past cap {}",
            ratio(self.save_at_cap, self.save_baseline),
            ratio(self.save_over_cap, self.save_baseline),
            ratio(self.restore_sync, self.restore_baseline),
            ratio(self.restore_over_cap, self.restore_baseline)
        );
        let _ = writeln!(
            s,
            "  the same in thread CPU time (load average {:.1} at start; a descheduled wait is not in it):",
            self.load
        );
        let names = [
            ("save, baseline (886 conns)", Duration::from_micros(100)),
            ("save, at cap (4096)", Duration::from_micros(100)),
            ("save, past cap (20000)", Duration::from_millis(1)),
            ("restore sync, baseline (886)", Duration::from_micros(200)),
            ("restore sync, at cap (4096)", Duration::from_micros(200)),
            ("restore sync, past cap (20000)", Duration::from_micros(200)),
        ];
        for ((name, target), l) in names.into_iter().zip(self.cpu) {
            row(&mut s, &format!("{name}, CPU"), l, target);
        }
        // A live migration saves a port once: its first save, the port's encoder readied by
        // the sweep while the VM ran (issue 18 item 4's target holds for it too).
        row(
            &mut s,
            "save, past cap, first save",
            self.save_over_cap_first.0,
            Duration::from_millis(1),
        );
        row(
            &mut s,
            "save, past cap, first save, CPU",
            self.save_over_cap_first.1,
            Duration::from_millis(1),
        );
        let _ = writeln!(
            s,
            "  (reported) save, past cap, within a second of its encoder freed, CPU: p50 {:.1} us  p99 {:.1} us",
            self.save_over_cap_unready.p50.as_secs_f64() * 1e6,
            self.save_over_cap_unready.p99.as_secs_f64() * 1e6
        );
        row(&mut s, "one migrating port, all callbacks", self.per_port, Duration::from_millis(1));
        row(&mut s, "the same, CPU", self.per_port_cpu, Duration::from_millis(1));
        let _ = writeln!(s, "  {}", self.classify.to_line());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::CalloutVsCore;

    /// The classify line states issue 18's target (<= 2x the core call) and judges the ratio
    /// against it, not against issue 11's 1.5x; the floor is (core + primitives) / core.
    #[test]
    fn the_classify_line_judges_the_ratio_against_two_times_the_core_call() {
        let at = |callout_ns| CalloutVsCore {
            callout_ns,
            core_ns: 40.0,
            primitives_ns: 30.0,
            warm_callout_ns: 70.0,
            inputs_cold_ns: 33.0,
        };
        let met = at(80.0).to_line();
        assert!(met.contains("2.00x (target <= 2x, issue 18)  met"), "{met}");
        let missed = at(80.4).to_line();
        assert!(missed.contains("2.01x (target <= 2x, issue 18)  MISSED"), "{missed}");
        assert!(!missed.contains("1.5x"), "{missed}");
        assert!(missed.contains("floor (core + primitives) / core 1.75x"), "{missed}");
        assert!((at(60.0).ratio() - 1.5).abs() < 1e-9);
        // The warm-input figure is a diagnostic line of its own, with no verdict of its own
        // (verdicts follow two spaces).
        let warm = missed.lines().nth(2).unwrap_or_default();
        assert!(warm.contains("diagnostic, not the target's figure"), "{missed}");
        assert!(
            warm.contains("33.0 ns/packet cold, subtracted) 70.0 ns/packet: 1.75x"),
            "{missed}"
        );
        assert!(!warm.contains("  met") && !warm.contains("MISSED"), "{missed}");
    }
}
