//! One port on several processors (issue 18 §2).
//!
//! On Hyper-V, vRSS spreads one busy VM's traffic over several processors: the connections of
//! one port are judged on several processors at once. With one lock per port, a processor
//! that holds it (a packet interrupted by a burst of interrupts, a cache-missing walk) stops
//! every other processor's packets of that VM. A port's flows are split by flow hash into
//! shards with a lock each (`vsflow_core::port::shards`): a packet waits only for packets of
//! connections in its own shard.
//!
//! The test holds processor 1 (the double's interrupts: `kernel::interrupts`) right after the
//! first spin lock a packet of one connection of port 7 takes there, then sends a packet of each
//! of eight other connections of port 7 on processor 0: with one lock per port none of them
//! can be judged while processor 1 is held; with the port sharded, those in other shards are.

use std::time::{Duration, Instant};

use vsflow_callout::RestoreMode;
use vsflow_scenarios::{enforce, finish, host, open_connections, vm_port};
use vsflow_sim::PacketFate;
use vsflow_sim::host::EXTERNAL_PORT;
use vsflow_sim::kernel::services::set_processor;

/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(5);

#[test]
fn a_packet_of_one_connection_does_not_wait_for_another_connection_of_its_port_on_another_processor()
 {
    set_processor(3);
    let (mut h, sw) = host(19, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 7, "vm-busy", 1, false);
    let inbound = open_connections(&mut h, sw, 7, 9);
    // The expiry sweep splits a port that has nothing of a migration open.
    let _ = h.within(|| h.driver().expire_idle(100));
    let wire = h.wire();
    h.interrupts().arm(1);
    let judged_in_time = std::thread::scope(|s| {
        let held = {
            let wire = wire.clone();
            let first = inbound[0].clone();
            s.spawn(move || {
                set_processor(1);
                wire.transmit(sw, EXTERNAL_PORT, 7, &first)
            })
        };
        assert!(h.interrupts().wait_held(PATIENCE), "the packet took no spin lock");
        let senders: Vec<_> = inbound[1..]
            .iter()
            .map(|p| {
                let (wire, p) = (wire.clone(), p.clone());
                s.spawn(move || {
                    set_processor(0);
                    wire.transmit(sw, EXTERNAL_PORT, 7, &p)
                })
            })
            .collect();
        // Packets of the other shards go through at once; give them time.
        let t = Instant::now();
        while senders.iter().any(|t| !t.is_finished()) && t.elapsed() < Duration::from_millis(500) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let judged = senders.iter().filter(|t| t.is_finished()).count();
        assert!(h.interrupts().is_held(), "processor 1 is held until released");
        h.interrupts().release();
        for sender in senders {
            assert_eq!(sender.join().expect("sender"), PacketFate::Delivered, "established flows");
        }
        assert_eq!(held.join().expect("held packet"), PacketFate::Delivered);
        judged
    });
    assert!(
        judged_in_time > 0,
        "all 8 packets of other connections of port 7 on processor 0 waited for processor 1"
    );
    assert!(h.primitive_misuse().is_empty(), "{:?}", h.primitive_misuse());
    finish(&mut h);
}

/// Sends `packet` to port `id` from the external port on simulated processor `cpu`.
fn on_processor(
    wire: &vsflow_sim::vswitch::wire::Wire,
    sw: usize,
    id: u32,
    cpu: u32,
    p: &vsflow_sim::SimPacket,
) -> PacketFate {
    let (wire, p) = (wire.clone(), p.clone());
    std::thread::spawn(move || {
        set_processor(cpu);
        wire.transmit(sw, EXTERNAL_PORT, id, &p)
    })
    .join()
    .expect("sender")
}

/// Processor-affine shards: the connections a processor judges are in that processor's shard,
/// so no packet of them ever waits for another processor judging its own connections of the
/// same port (vRSS keeps a flow's packets on one processor). With shards chosen by a hash of
/// the flow, each processor's connections spread over every shard, and some of them wait.
#[test]
fn a_processor_judging_its_own_connections_of_a_port_never_waits_for_another_processor() {
    set_processor(3);
    let (mut h, sw) = host(21, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 7, "vm-busy", 1, false);
    let inbound = open_connections(&mut h, sw, 7, 25);
    let _ = h.within(|| h.driver().expire_idle(100));
    let wire = h.wire();
    // Processor 1 has judged connection 0; processor 0 the 24 others.
    assert_eq!(on_processor(&wire, sw, 7, 1, &inbound[0]), PacketFate::Delivered);
    for p in &inbound[1..] {
        assert_eq!(on_processor(&wire, sw, 7, 0, p), PacketFate::Delivered);
    }
    h.interrupts().arm(1);
    let judged_in_time = std::thread::scope(|s| {
        let held = {
            let wire = wire.clone();
            let first = inbound[0].clone();
            s.spawn(move || {
                set_processor(1);
                wire.transmit(sw, EXTERNAL_PORT, 7, &first)
            })
        };
        assert!(h.interrupts().wait_held(PATIENCE), "the packet took no spin lock");
        let senders: Vec<_> = inbound[1..]
            .iter()
            .map(|p| {
                let (wire, p) = (wire.clone(), p.clone());
                s.spawn(move || {
                    set_processor(0);
                    wire.transmit(sw, EXTERNAL_PORT, 7, &p)
                })
            })
            .collect();
        let t = Instant::now();
        while senders.iter().any(|t| !t.is_finished()) && t.elapsed() < Duration::from_millis(500) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let judged = senders.iter().filter(|t| t.is_finished()).count();
        assert!(h.interrupts().is_held(), "processor 1 is held until released");
        h.interrupts().release();
        for sender in senders {
            assert_eq!(sender.join().expect("sender"), PacketFate::Delivered, "established flows");
        }
        assert_eq!(held.join().expect("held packet"), PacketFate::Delivered);
        judged
    });
    assert_eq!(
        judged_in_time, 24,
        "packets of processor 0's own connections of port 7 waited for processor 1"
    );
    assert!(h.primitive_misuse().is_empty(), "{:?}", h.primitive_misuse());
    finish(&mut h);
}
