//! `vsflow-sim bench`: the performance targets of the callout bridge, measured through the real
//! callback paths against baselines run in the same process.
//!
//! - save callback of a port at the 60 KiB cap (and of one over it);
//! - restore callback, synchronous mode (decode + validate + apply inside the callback);
//! - all callbacks of one migrating port (from a full `migrate` run);
//! - classify through the `extern "system"` classify function against calling
//!   `vsflow_core::classify` directly on the same packets.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use fwps_sys as sys;
use vsflow_callout::{DriverConfig, RestoreMode};
use vsflow_core::flow::TableConfig;
use vsflow_core::{
    Direction, IpFamily, Mode, PacketMeta, Port, PortConfig, PortIdentity, protocol,
};

use crate::host::{EXTERNAL_PORT, Host};
use crate::migrate::{Latency, MigrateOptions};
use crate::packet::{ClassifyInput, SimPacket};

/// What the bench measured.
#[derive(Clone, Debug, Default)]
pub struct BenchReport {
    /// Save callback, port at the cap.
    pub save_at_cap: Latency,
    /// Blob size of that port.
    pub save_at_cap_bytes: usize,
    /// Save callback, port over the cap (1,000 flows).
    pub save_over_cap: Latency,
    /// Restore callback in synchronous mode (decode + apply).
    pub restore_sync: Latency,
    /// All callbacks of one migrating port.
    pub per_port: Latency,
    /// Classify through the callout, ns per packet (median of rounds).
    pub classify_callout_ns: f64,
    /// `vsflow_core::classify` directly, ns per packet (median of rounds).
    pub classify_core_ns: f64,
}

fn fill_port(h: &mut Host, sw: usize, id: u32, flows: u16) {
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
    }
}

fn sample(n: usize, mut f: impl FnMut() -> Duration) -> Latency {
    Latency::of((0..n).map(|_| f()).collect())
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

    // Save: a port whose blob is just under the cap, and one over it.
    let mut a = Host::new(1);
    a.load_driver(cfg).expect("loads");
    let sa = a.create_switch("BENCH-A", &[]);
    a.create_port(sa, 10, "at-cap", false);
    fill_port(&mut a, sa, 10, 886);
    a.create_port(sa, 11, "over-cap", false);
    fill_port(&mut a, sa, 11, 1000);
    let (blobs, _) = a.save(sa, 10);
    r.save_at_cap_bytes = blobs.first().map_or(0, |b| b.1.len());
    r.save_at_cap = sample(iterations, || a.save(sa, 10).1);
    r.save_over_cap = sample(iterations, || a.save(sa, 11).1);

    // Restore, synchronous: decode + validate + apply inside the callback.
    let mut b = Host::new(2);
    b.load_driver(cfg).expect("loads");
    let sb = b.create_switch("BENCH-B", &[]);
    let mut id = 100;
    r.restore_sync = sample(iterations, || {
        id += 1;
        b.create_port(sb, id, "at-cap", true);
        let t = b.restore(sb, id, &blobs);
        b.delete_port(sb, id);
        t.first().map_or(Duration::ZERO, |t| t.elapsed)
    });
    a.unload_driver();
    b.unload_driver();

    // All callbacks of one migrating port, from a full migration.
    let m = crate::migrate::run(&MigrateOptions {
        ports: 64,
        flows_per_port: 1000,
        save_restore: true,
        ..MigrateOptions::default()
    });
    r.per_port = m.per_port_total;

    // Classify: the callout's extern "system" path vs the core directly, same packets.
    let mut h = Host::new(3);
    h.load_driver(DriverConfig { flows_per_port: 16_384, ..cfg }).expect("loads");
    let sw = h.create_switch("BENCH-C", &[]);
    h.create_port(sw, 20, "classify", false);
    let packets: Vec<SimPacket> = (0..10_000u32)
        .map(|k| {
            let [_, b1, b2, b3] = k.to_be_bytes();
            SimPacket::new(
                IpFamily::V4,
                protocol::TCP,
                vsflow_core::packet::v4([10, 0, 20, 2]),
                1024 + u16::try_from(k % 60_000).unwrap_or(0),
                vsflow_core::packet::v4([198, b1, b2, b3]),
                443,
                0x10,
                100,
            )
        })
        .collect();
    for p in &packets {
        h.transmit(sw, 20, EXTERNAL_PORT, p);
    }
    let replies: Vec<SimPacket> = packets.iter().map(|p| p.reply(0x10, 100)).collect();
    let mut inputs: Vec<Box<ClassifyInput>> = replies
        .iter()
        .map(|p| {
            ClassifyInput::new(
                p,
                false,
                EXTERNAL_PORT,
                20,
                &"BENCH-C".encode_utf16().collect::<Vec<_>>(),
            )
        })
        .collect();
    let values: Vec<sys::FWPS_INCOMING_VALUES0> = inputs
        .iter_mut()
        .map(|i| i.incoming(sys::FWPS_LAYER_EGRESS_VSWITCH_TRANSPORT_V4))
        .collect();
    let driver = std::ptr::from_ref(h.driver());
    // SAFETY: plain data, all zeroes valid.
    let mut filter: sys::FWPS_FILTER3 = unsafe { std::mem::zeroed() };
    filter.context = driver as u64;
    let classify = vsflow_callout::classify::classify_fn::<crate::services::SimServices>;

    let mut core_port = Port::try_new(
        PortIdentity::try_from_str("core").unwrap_or_else(|_| unreachable!()),
        PortConfig {
            table: TableConfig {
                max_flows: 16_384,
                initial_capacity: 16_384,
                ..TableConfig::default()
            },
            initial_mode: Mode::Enforce,
        },
    )
    .expect("port");
    let metas: Vec<PacketMeta> = packets
        .iter()
        .map(|p| PacketMeta {
            direction: Direction::Outbound,
            family: IpFamily::V4,
            protocol: p.protocol,
            src_addr: p.src,
            dst_addr: p.dst,
            src_port: p.sport,
            dst_port: p.dport,
            tcp_flags: vsflow_core::TcpFlags(0x10),
            length: 100,
        })
        .collect();
    for (t, m) in (0u64..).zip(&metas) {
        core_port.classify(m, t);
    }
    let inbound: Vec<PacketMeta> = metas.iter().map(|m| m.reply(0x10)).collect();

    let mut callout_rounds = Vec::new();
    let mut core_rounds = Vec::new();
    h.within(|| {
        for _ in 0..15 {
            let t = Instant::now();
            for (input, v) in inputs.iter_mut().zip(&values) {
                let mut out = sys::FWPS_CLASSIFY_OUT0 {
                    rights: sys::FWPS_RIGHT_ACTION_WRITE,
                    ..Default::default()
                };
                let layer_data = input.layer_data();
                // SAFETY: the callout's classify function with inputs alive for the call.
                unsafe {
                    classify(
                        v,
                        &raw const input.meta,
                        layer_data,
                        std::ptr::null(),
                        &raw const filter,
                        0,
                        &raw mut out,
                    );
                };
                black_box(out.actionType);
            }
            #[allow(clippy::cast_precision_loss, reason = "a measurement")]
            callout_rounds.push(t.elapsed().as_nanos() as f64 / inputs.len() as f64);
            let t = Instant::now();
            for (now, m) in (1_000_000u64..).zip(&inbound) {
                black_box(core_port.classify(black_box(m), now));
            }
            #[allow(clippy::cast_precision_loss, reason = "a measurement")]
            core_rounds.push(t.elapsed().as_nanos() as f64 / inbound.len() as f64);
        }
    });
    r.classify_callout_ns = median(callout_rounds);
    r.classify_core_ns = median(core_rounds);
    h.unload_driver();
    r
}

fn us(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

impl BenchReport {
    /// The report with each target and whether it was met.
    #[must_use]
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
        row(
            &mut s,
            &format!("save, port at cap ({} B)", self.save_at_cap_bytes),
            self.save_at_cap,
            Duration::from_micros(100),
        );
        row(
            &mut s,
            "save, port over cap (1000 flows)",
            self.save_over_cap,
            Duration::from_micros(100),
        );
        row(
            &mut s,
            "restore (decode + apply), sync",
            self.restore_sync,
            Duration::from_micros(200),
        );
        row(&mut s, "one migrating port, all callbacks", self.per_port, Duration::from_millis(1));
        let ratio = self.classify_callout_ns / self.classify_core_ns.max(f64::MIN_POSITIVE);
        let _ = writeln!(
            s,
            "  classify via callout                {:.1} ns/packet vs core {:.1} ns/packet: {ratio:.2}x (target <= 1.5x)  {}",
            self.classify_callout_ns,
            self.classify_core_ns,
            if ratio <= 1.5 { "met" } else { "MISSED" }
        );
        s
    }
}
