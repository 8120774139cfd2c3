//! Measures the false-admission probability of restored fingerprints per unknown packet.
//!
//! A port with 30,000 established connections is saved under the default 60 KiB cap (the
//! fingerprint set then holds as many values as a blob can: the worst case), the blob is
//! decoded, and `PACKETS` (default 10^8) packets of connections that were never on the port
//! are looked up in the restored set. Each lookup is what the classify hook does for a packet
//! of an unknown flow inside the pickup window. Prints the observed rate, the bound
//! `n / 2^32`, and a 99.9 % interval of the observed rate (normal approximation of the
//! binomial).
//!
//! ```text
//! cargo run --release -p vsflow-core --example fingerprint_fp [-- PACKETS]
//! ```

#![allow(clippy::cast_precision_loss, reason = "a report of measured rates")]

use std::time::Instant;

use vsflow_core::codec::{self, DecodeConfig, Decoded};
use vsflow_core::flow::TableConfig;
use vsflow_core::{
    Direction, FlowKey, Mode, PacketMeta, Port, PortConfig, PortIdentity, TcpFlags, protocol,
};

#[path = "../benches/workload/mod.rs"]
mod workload;

fn main() {
    let packets: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000_000);
    let now = 1_000_000_000_000u64;
    let n_conn = 30_000u32;
    let cfg = PortConfig {
        table: TableConfig { max_flows: n_conn, ..TableConfig::default() },
        initial_mode: Mode::Enforce,
    };
    let mut port = Port::try_new(PortIdentity::try_from_str("fp-port").unwrap(), cfg).unwrap();
    let mut rng = workload::Mix(0x00C0_FFEE);
    for i in 0..n_conn {
        let r = rng.next().to_le_bytes();
        let syn = PacketMeta::ipv4(
            Direction::Outbound,
            protocol::TCP,
            [10, 0, 0, 2],
            u16::from_le_bytes([r[0], r[1]]),
            [r[2] | 1, r[3], r[4], r[5]],
            443,
            TcpFlags::SYN,
            60,
        );
        let t = now - u64::from(n_conn - i) * 1000;
        port.classify(&syn, t);
        port.classify(&syn.reply(TcpFlags::SYN | TcpFlags::ACK), t + 1);
    }
    let mut blob = Vec::new();
    let enc = codec::EncodeConfig { provider: workload::PROVIDER, cap: codec::DEFAULT_CAP };
    let s = codec::encode(&port, now, &enc, &mut blob).unwrap();
    let Ok(Decoded::State(state)) = codec::decode(&blob, &DecodeConfig::default()) else {
        panic!("decode")
    };
    let set = &state.fingerprints;
    let n = set.len();
    println!(
        "blob {} bytes: {} exact, {} fingerprinted ({} distinct values), {} lost",
        blob.len(),
        s.flows_written,
        s.flows_fingerprinted,
        n,
        s.flows_dropped
    );

    // Unknown packets: TCP to or from the VM's address, from random peers and ports (keys
    // the port never had; a collision with a real key has probability ~2^-48 per packet and
    // is excluded explicitly below).
    let known: std::collections::HashSet<FlowKey> = port.table().iter().map(|(k, _)| *k).collect();
    let mut rng = workload::Mix(0x005E_ED0F_0000_0001);
    let mut hits = 0u64;
    let mut tested = 0u64;
    let start = Instant::now();
    while tested < packets {
        let r = rng.next().to_le_bytes();
        let r2 = rng.next().to_le_bytes();
        let m = PacketMeta::ipv4(
            if r[7] & 1 == 0 { Direction::Inbound } else { Direction::Outbound },
            protocol::TCP,
            [r[0], r[1], r[2], r[3]],
            u16::from_le_bytes([r[4], r[5]]),
            [10, 0, 0, 2],
            u16::from_le_bytes([r2[0], r2[1]]),
            TcpFlags::ACK,
            60,
        );
        let key = FlowKey::of(&m);
        if known.contains(&key) {
            continue;
        }
        tested += 1;
        if set.contains(&key) {
            hits += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let (rate, bound) = (hits as f64 / tested as f64, n as f64 / 4_294_967_296.0);
    let sd = (bound * (1.0 - bound) / tested as f64).sqrt();
    println!(
        "{tested} unknown packets: {hits} false matches, rate {rate:.3e} (bound n/2^32 = {bound:.3e}, \
         99.9% interval of the rate under the bound: {:.3e}..{:.3e}); {:.1} ns per lookup",
        3.29f64.mul_add(-sd, bound).max(0.0),
        3.29f64.mul_add(sd, bound),
        secs * 1e9 / tested as f64
    );
    assert!(rate <= 1e-5, "false admission rate over the 1e-5 target");
}
