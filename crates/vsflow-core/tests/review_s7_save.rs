//! Review s7: a port's saves past the cap, from one encoder kept across saves as the driver
//! keeps it (its fingerprints kept by slot, readied by the sweep between saves: pastcap s5-s7),
//! with connections closing and opening and slots reused between the saves: the blob of the
//! later save lets the destination admit nothing the source blocks at that save. A fingerprint
//! left over from a connection that has closed since the earlier save would let a peer's
//! mid-stream segment on its 5-tuple be picked up (a tentative inbound pickup) on the
//! destination, where the source blocks it as unsolicited.

use vsflow_core::codec::{
    self, ApplyConfig, DecodeConfig, DecodedStaged, EncodeConfig, Encoder, StageConfig,
};
use vsflow_core::flow::TableConfig;
use vsflow_core::{
    Direction, Mode, PacketMeta, Port, PortConfig, PortIdentity, TICKS_PER_SECOND, Verdict,
    protocol,
};

const NOW: u64 = 86_400 * TICKS_PER_SECOND;
const CAP: usize = 61_440;

fn config() -> PortConfig {
    PortConfig {
        table: TableConfig { max_flows: 16_384, initial_capacity: 64, ..TableConfig::default() },
        initial_mode: Mode::Enforce,
    }
}

/// The VM's TCP connection `n` (distinct for every `n`): its SYN.
fn syn(n: u16) -> PacketMeta {
    let [a, b] = n.to_be_bytes();
    PacketMeta::ipv4(
        Direction::Outbound,
        protocol::TCP,
        [10, 0, 0, 2],
        40_000,
        [10, 9, a, b],
        443,
        0x02,
        60,
    )
}

fn open(p: &mut Port, n: u16, t: u64) {
    let s = syn(n);
    p.classify(&s, t);
    p.classify(&s.reply(0x12), t + 1);
    p.classify(&s.reply(0x12).reply(0x10), t + 2);
}

fn save(encoder: &mut Encoder, p: &Port, now: u64) -> Vec<u8> {
    let mut blob = Vec::new();
    let cfg = EncodeConfig { provider: vsflow_core::Guid::default(), cap: CAP };
    let s = encoder.encode(p, now, &cfg, &mut blob).expect("saves");
    assert!(s.flows_fingerprinted > 1_000, "past the cap: {s:?}");
    blob
}

/// The sweep's preparations between saves (one a second, as the driver's).
fn sweeps(encoder: &mut Encoder, p: &Port, from: u64, n: u64) {
    for i in 0..n {
        encoder.prepare_split(p, p.table().len(), from + i * TICKS_PER_SECOND, CAP);
    }
}

#[test]
fn a_later_save_from_a_kept_encoder_carries_no_connection_closed_since_the_earlier_one() {
    let mut src = Port::try_new(PortIdentity::try_from_str("vm").unwrap(), config()).unwrap();
    for n in 0..12_000u16 {
        open(&mut src, n, NOW + u64::from(n) * 1_000);
    }
    let mut encoder = Encoder::new();
    let t1 = NOW + 10 * TICKS_PER_SECOND;
    sweeps(&mut encoder, &src, t1, 10);
    let _first = save(&mut encoder, &src, t1 + 10 * TICKS_PER_SECOND);
    // Every third connection reset by the VM and gone from the source's table (its closed
    // flow idled out); new ones opened in the slots they freed, before the sweeps and in the
    // last second after them; then the save that migrates the VM.
    let t2 = t1 + 20 * TICKS_PER_SECOND;
    for n in (0..12_000u16).step_by(3) {
        src.classify(&syn(n).reply(0x12).reply(0x14), t2);
    }
    let t3 = t2 + 600 * TICKS_PER_SECOND;
    src.expire(t3, usize::MAX);
    for n in 12_000..13_000u16 {
        open(&mut src, n, t3 + u64::from(n) * 1_000);
    }
    let t4 = t3 + 10 * TICKS_PER_SECOND;
    sweeps(&mut encoder, &src, t4, 5);
    // And more in the last second before the save, after the last sweep: more than the save
    // writes exactly, so some of them, in slots of connections fingerprinted earlier, are
    // fingerprinted (their values computed at the save, not taken from the slot's past).
    let t5 = t4 + 5 * TICKS_PER_SECOND;
    for n in 13_000..18_000u16 {
        open(&mut src, n, t5 - TICKS_PER_SECOND + u64::from(n - 13_000) * 100);
    }
    let blob = save(&mut encoder, &src, t5);

    let mut dest = Port::try_new(PortIdentity::try_from_str("vm").unwrap(), config()).unwrap();
    let placement = StageConfig { table: *dest.table().config(), base: t5, now: t5 };
    let decoded = codec::decode_staged(&blob, &DecodeConfig::default(), &placement);
    let Ok(DecodedStaged::State(state, staged)) = decoded else { panic!("decodes: {decoded:?}") };
    codec::apply_staged(&mut dest, &state, staged, t5, &ApplyConfig::default()).expect("applies");

    // A peer's mid-stream segment on every 5-tuple: wherever the source blocks it, so must
    // the destination (each key probed once on each side).
    let mut opened_admitted = 0;
    let mut src_blocked = 0;
    let t6 = t5 + TICKS_PER_SECOND;
    for n in 0..18_000u16 {
        let probe = syn(n).reply(0x18);
        let at_source = src.classify(&probe, t6);
        let at_dest = dest.classify(&probe, t6);
        if matches!(at_source, Verdict::Block(_)) {
            src_blocked += 1;
            assert!(
                matches!(at_dest, Verdict::Block(_)),
                "connection {n}: blocked by the source at its save, {at_dest:?} on the destination"
            );
        } else if at_dest == Verdict::Permit {
            opened_admitted += 1;
        }
    }
    assert_eq!(src_blocked, 4_000, "the connections reset are blocked by the source");
    // The control: the connections still open are carried (exactly or by fingerprint).
    assert!(opened_admitted > 12_000, "{opened_admitted} of the open connections admitted");
}
