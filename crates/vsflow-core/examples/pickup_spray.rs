//! Issue 16's pickup spray, measured: what an outsider's spray admits in one pickup window.
//!
//! A source port with 30,000 established connections is saved under the default 60 KiB cap (so
//! the blob carries as many fingerprints as it can: the worst case) and restored into an
//! Enforce port with no allow rule. Within the pickup window (5 minutes) `PACKETS` (default
//! 10^8) packets of 5-tuples the port never had are sent to the VM: 7 of 8 a TCP ACK from a
//! random peer and port to a random VM port (every 16th to 3389), the 8th alternately a UDP
//! datagram and an ICMP packet. The VM is modelled as a TCP stack: it resets every mid-stream
//! segment of a connection it does not have (RFC 9293 3.10.7.1), and the attacker follows every
//! ACK that got through with a SYN and a UDP datagram on the same 5-tuple. Afterwards every
//! carried connection resumes (its peer's segment, the VM's acknowledgement).
//!
//! Prints: new inbound connections admitted (target 0), UDP/other flows admitted (target 0),
//! fingerprints used up by the spray (0), carried connections lost (target 0), and the
//! mid-stream segments admitted against the documented rate `n / 2^32` per ACK, with a 99.9 %
//! interval (normal approximation of the binomial). Exits non-zero if a target is missed.
//!
//! ```text
//! cargo run --release -p vsflow-core --example pickup_spray [-- PACKETS]
//! ```

#![allow(clippy::cast_precision_loss, reason = "a report of measured rates")]

use std::collections::HashSet;
use std::time::Instant;

use vsflow_core::codec::{self, DecodeConfig, Decoded};
use vsflow_core::flow::TableConfig;
use vsflow_core::time::secs;
use vsflow_core::{
    Direction, FlowKey, FlowState, Mode, PacketMeta, Port, PortConfig, PortIdentity, TcpFlags,
    Verdict, protocol,
};

#[path = "../benches/workload/mod.rs"]
mod workload;

const ACK: u8 = TcpFlags::ACK;

fn port(max_flows: u32) -> Port {
    let cfg = PortConfig {
        table: TableConfig { max_flows, ..TableConfig::default() },
        initial_mode: Mode::Enforce,
    };
    Port::try_new(PortIdentity::try_from_str("spray-port").unwrap(), cfg).unwrap()
}

/// Host A's saved state: `n_conn` VM-opened established connections at the default cap, and
/// each connection's inbound data segment.
fn source(now: u64, n_conn: u32) -> (codec::PortState, Vec<PacketMeta>) {
    let mut src = port(n_conn);
    let mut rng = workload::Mix(0x00C0_FFEE);
    let mut conns = Vec::new();
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
        src.classify(&syn, t);
        src.classify(&syn.reply(TcpFlags::SYN | ACK), t + 1);
        conns.push(syn.reply(ACK));
    }
    let mut blob = Vec::new();
    let enc = codec::EncodeConfig { provider: workload::PROVIDER, cap: codec::DEFAULT_CAP };
    let summary = codec::encode(&src, now, &enc, &mut blob).unwrap();
    let Ok(Decoded::State(state)) = codec::decode(&blob, &DecodeConfig::default()) else {
        panic!("decode")
    };
    println!(
        "blob {} bytes: {} exact, {} fingerprinted ({} distinct values), {} lost to the cap",
        blob.len(),
        summary.flows_written,
        summary.flows_fingerprinted,
        state.fingerprints.len(),
        summary.flows_dropped
    );
    (state, conns)
}

/// What the spray got through.
#[derive(Default)]
struct Spray {
    sent: u64,
    acks: u64,
    acks_admitted: u64,
    syns: u64,
    syns_admitted: u64,
    others: u64,
    others_admitted: u64,
}

/// Sprays `packets` packets of 5-tuples not in `known` at `dst` from `t` on, one every `step`
/// ticks; returns the tally and the time of the last packet.
fn spray(
    dst: &mut Port,
    known: &HashSet<FlowKey>,
    packets: u64,
    mut t: u64,
    step: u64,
) -> (Spray, u64) {
    let mut rng = workload::Mix(0x5EED_0016);
    let mut out = Spray::default();
    while out.sent < packets {
        let r = rng.next().to_le_bytes();
        let r2 = rng.next().to_le_bytes();
        t += step;
        let peer = [r[0] | 1, r[1], r[2], r[3]];
        let sport = u16::from_le_bytes([r[4], r[5]]);
        let dport = if r[6].is_multiple_of(16) { 3389 } else { u16::from_le_bytes([r2[0], r2[1]]) };
        if r[7] & 7 == 7 {
            let proto = if r[6] & 0x10 == 0 { protocol::UDP } else { protocol::ICMP };
            let (sp, dp) = if proto == protocol::UDP { (sport, dport) } else { (0, 0) };
            let m = PacketMeta::ipv4(Direction::Inbound, proto, peer, sp, [10, 0, 0, 2], dp, 0, 60);
            out.others += 1;
            out.sent += 1;
            out.others_admitted += u64::from(dst.classify(&m, t) == Verdict::Permit);
            continue;
        }
        let vm = [10, 0, 0, 2];
        let ack =
            PacketMeta::ipv4(Direction::Inbound, protocol::TCP, peer, sport, vm, dport, ACK, 60);
        if known.contains(&FlowKey::of(&ack)) {
            continue;
        }
        out.acks += 1;
        out.sent += 1;
        if dst.classify(&ack, t) != Verdict::Permit {
            continue;
        }
        out.acks_admitted += 1;
        // The VM has no such connection: it resets. The attacker tries a SYN and a datagram.
        dst.classify(&ack.reply(TcpFlags::RST), t);
        let syn = PacketMeta { tcp_flags: TcpFlags(TcpFlags::SYN), ..ack };
        let udp = PacketMeta { protocol: protocol::UDP, tcp_flags: TcpFlags(0), ..ack };
        out.syns += 1;
        out.syns_admitted += u64::from(dst.classify(&syn, t) == Verdict::Permit);
        out.others += 1;
        out.others_admitted += u64::from(dst.classify(&udp, t) == Verdict::Permit);
        out.sent += 2;
    }
    (out, t)
}

/// Every carried connection resumes (its peer's segment, the VM's acknowledgement); returns
/// how many were lost.
fn resume(dst: &mut Port, carried: &[PacketMeta], mut t: u64) -> usize {
    let mut lost = 0;
    for m in carried {
        t += 1;
        let v = dst.classify(m, t);
        dst.classify(&m.reply(ACK), t);
        let established =
            dst.table().get(&FlowKey::of(m)).is_some_and(|r| r.state == FlowState::Established);
        if v != Verdict::Permit || !established {
            lost += 1;
        }
    }
    lost
}

fn main() {
    let packets: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000_000);
    let now = 1_000_000_000_000u64;
    let n_conn = 30_000u32;
    let (state, conns) = source(now, n_conn);
    let exact: HashSet<FlowKey> = state.flows.iter().map(|f| f.key).collect();
    let carried: Vec<PacketMeta> = conns
        .iter()
        .copied()
        .filter(|c| exact.contains(&FlowKey::of(c)) || state.fingerprints.contains(&FlowKey::of(c)))
        .collect();
    let fingerprints = state.fingerprints.len();

    // Host B: the restore, then the spray within the pickup window.
    let mut dst = port(n_conn);
    let restored_at = now + secs(30);
    codec::apply(&mut dst, &state, restored_at).unwrap();
    let known: HashSet<FlowKey> = conns.iter().map(FlowKey::of).collect();
    let step = (secs(299) / packets.max(1)).max(1);
    let start = Instant::now();
    let (sp, t) = spray(&mut dst, &known, packets, restored_at, step);
    let elapsed = start.elapsed().as_secs_f64();
    let used_by_spray = dst.pickup().picked();
    let c = *dst.counters();
    let lost = resume(&mut dst, &carried, t);

    let rate = fingerprints as f64 / 4_294_967_296.0;
    let expected = rate * sp.acks as f64;
    let high = 3.29f64.mul_add((sp.acks as f64 * rate * (1.0 - rate)).sqrt(), expected);
    println!(
        "{} packets sprayed in {:.0} s of the pickup window ({elapsed:.1} s to run, {:.0} ns per \
         packet); {} carried connections",
        sp.sent,
        (t - restored_at) as f64 / 1e7,
        elapsed * 1e9 / sp.sent as f64,
        carried.len()
    );
    println!(
        "  new inbound connections admitted      {} of {} SYNs (target 0)",
        sp.syns_admitted, sp.syns
    );
    println!(
        "  UDP / ICMP flows admitted             {} of {} (target 0)",
        sp.others_admitted, sp.others
    );
    println!("  fingerprints used up by the spray     {used_by_spray} (target 0)");
    println!(
        "  mid-stream segments admitted          {} of {} ACKs: {:.3e} per ACK (documented rate \
         n/2^32 = {rate:.3e}: expected {expected:.0}, 99.9% bound {high:.0})",
        sp.acks_admitted,
        sp.acks,
        sp.acks_admitted as f64 / sp.acks.max(1) as f64
    );
    println!(
        "  counters: fingerprint_pickups {} pickups_refused {} pickups_confirmed {} packets_blocked {}",
        c.fingerprint_pickups, c.pickups_refused, c.pickups_confirmed, c.packets_blocked
    );
    println!("  carried connections lost              {lost} of {} (target 0)", carried.len());
    let ok = sp.syns_admitted == 0
        && sp.others_admitted == 0
        && used_by_spray == 0
        && lost == 0
        && (sp.acks_admitted as f64) <= high;
    println!("result: {}", if ok { "PASS" } else { "FAIL" });
    if !ok {
        std::process::exit(1);
    }
}
