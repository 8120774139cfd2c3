//! No packet waits behind long work (issue 18 §1).
//!
//! The port map is found through one `EX_SPIN_LOCK` per processor: a reader takes its own
//! processor's lock shared, a writer (switch or port create/delete, stop) takes every
//! processor's lock exclusively, in order. While the writer waits at processor k it holds
//! processors 0..k-1, and while it waits no new reader gets processor k's lock either
//! ("Reader/Writer Spin Locks"). So if anything long holds a processor's map lock shared, a
//! port create makes every packet on the other processors wait for that long thing.
//!
//! Each test holds processor 1 (the double's interrupts: `kernel::interrupts`) right after the
//! first spin lock one long operation takes there — a save, a restore's apply, the expiry
//! sweep, an IOCTL walk — then creates a port on processor 2, then sends packets of two ports
//! on processor 0. A packet must be judged while processor 1 is still held unless its own port
//! is the one the held operation is working on: only that port may wait for it.

use std::time::{Duration, Instant};

use fwps_sys as sys;
use vsflow_callout::{DriverConfig, RestoreMode};
use vsflow_proto::request::Request;
use vsflow_scenarios::{enforce, finish, host, open_connections, vm_port};
use vsflow_sim::host::{EXTERNAL_PORT, SimPort};
use vsflow_sim::kernel::services::set_processor;
use vsflow_sim::{Host, PacketFate, SimPacket};

/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(5);

fn wait_for(done: impl Fn() -> bool, within: Duration) -> bool {
    let t = Instant::now();
    while !done() {
        if t.elapsed() > within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// A host with port 7 (200 connections) and port 8; an inbound packet of an established
/// connection of each.
fn rig(config: DriverConfig) -> (Host, usize, [(u32, SimPacket); 2]) {
    set_processor(3);
    let (mut h, sw) = host(18, config, "SW");
    vm_port(&mut h, sw, 7, "vm-long", 1, false);
    vm_port(&mut h, sw, 8, "vm-packets", 2, false);
    let p7 = open_connections(&mut h, sw, 7, 200).swap_remove(0);
    let p8 = open_connections(&mut h, sw, 8, 1).swap_remove(0);
    (h, sw, [(7, p7), (8, p8)])
}

/// Runs `long` on processor 1 and holds that processor right after the first spin lock it
/// takes; creates port 9 on processor 2; then sends each of `packets` (to ports 7 and 8) on
/// processor 0. Returns, per packet, whether it was judged (and delivered) while processor 1
/// was still held.
fn judged_while_long_work_is_held(
    h: &Host,
    sw: usize,
    packets: &[(u32, SimPacket); 2],
    long: impl FnOnce(&Host) + Send,
) -> [bool; 2] {
    let wire = h.wire();
    h.interrupts().arm(1);
    std::thread::scope(|s| {
        let long_work = s.spawn(|| {
            set_processor(1);
            long(h);
        });
        assert!(h.interrupts().wait_held(PATIENCE), "the long operation took no spin lock");
        let writer = s.spawn(|| {
            set_processor(2);
            let port = SimPort::new(9, "vm-new", sys::NdisSwitchPortTypeSynthetic);
            h.port_notification(sw, &port, true)
        });
        // The writer either finishes or settles into waiting for processor 1.
        let _ = wait_for(|| writer.is_finished(), Duration::from_millis(200));
        let senders = packets.clone().map(|(port, packet)| {
            let wire = wire.clone();
            s.spawn(move || {
                set_processor(0);
                wire.transmit(sw, EXTERNAL_PORT, port, &packet)
            })
        });
        // Wait until both are judged, or one is and the other has had 300 ms more (it waits
        // for its own port, held on processor 1), or nothing is judged at all within 5 s.
        let t = Instant::now();
        let mut first_judged: Option<Instant> = None;
        let mut in_time = [false; 2];
        loop {
            let judged = senders.iter().filter(|t| t.is_finished()).count();
            if judged > 0 && first_judged.is_none() {
                first_judged = Some(Instant::now());
            }
            let settled = first_judged.is_some_and(|f| f.elapsed() > Duration::from_millis(300));
            if judged == senders.len() || settled || t.elapsed() > PATIENCE {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // A packet counts as judged in time if it was done while processor 1 was held.
        for (done, sender) in in_time.iter_mut().zip(&senders) {
            *done = sender.is_finished() && h.interrupts().is_held();
        }
        h.interrupts().release();
        for sender in senders {
            assert_eq!(
                sender.join().expect("sender"),
                PacketFate::Delivered,
                "an established flow"
            );
        }
        assert_eq!(writer.join().expect("writer thread"), sys::STATUS_SUCCESS);
        long_work.join().expect("long operation");
        in_time
    })
}

/// `long` works on port 7 only: port 8's packet must never wait for it.
fn check_one_port(config: DriverConfig, what: &str, long: impl FnOnce(&Host) + Send) {
    let (mut h, sw, packets) = rig(config);
    let [_, port8] = judged_while_long_work_is_held(&h, sw, &packets, long);
    assert!(
        port8,
        "a packet of port 8 on processor 0 waited for {what} of port 7 held on processor 1 \
         (behind a port create waiting for it)"
    );
    assert!(h.primitive_misuse().is_empty(), "{:?}", h.primitive_misuse());
    finish(&mut h);
}

/// `long` visits every port, one at a time, and is held at the first: the packet of the
/// other port must not wait.
fn check_walk(what: &str, long: impl FnOnce(&Host) + Send) {
    let (mut h, sw, packets) = rig(enforce(RestoreMode::Pending));
    let in_time = judged_while_long_work_is_held(&h, sw, &packets, long);
    assert!(
        in_time.iter().any(|&t| t),
        "packets of both ports on processor 0 waited for {what} held on processor 1 at one \
         port (behind a port create waiting for it)"
    );
    assert!(h.primitive_misuse().is_empty(), "{:?}", h.primitive_misuse());
    finish(&mut h);
}

#[test]
fn a_packet_never_waits_for_a_save_of_another_port() {
    check_one_port(enforce(RestoreMode::Pending), "a save", |h| {
        let _ = h.save(0, 7);
    });
}

#[test]
fn a_packet_never_waits_for_a_restore_being_applied_to_another_port() {
    let (mut a, sa) = host(17, enforce(RestoreMode::Pending), "SW-A");
    vm_port(&mut a, sa, 7, "vm-long", 1, false);
    let _ = open_connections(&mut a, sa, 7, 50);
    let (blobs, _) = a.save(sa, 7);
    finish(&mut a);
    check_one_port(enforce(RestoreMode::Synchronous), "a restore's apply", move |h| {
        let tickets = h.restore(0, 7, &blobs);
        assert_eq!(h.vm_restore(&tickets), vsflow_sim::VmRestore::Succeeded);
    });
}

#[test]
fn a_packet_never_waits_for_the_expiry_sweep() {
    check_walk("the expiry sweep", |h| {
        let _ = h.within(|| h.driver().expire_idle(100));
    });
}

#[test]
fn a_packet_never_waits_for_an_ioctl_walking_the_ports() {
    check_walk("a ListPorts walk", |h| {
        assert_eq!(h.control(&Request::ListPorts, 1 << 16).0, 0);
    });
}

#[test]
fn a_packet_never_waits_for_an_ioctl_reading_another_ports_flows() {
    // vsflow numbers switches from 1: port 7 of the first switch.
    let port = vsflow_proto::request::PortRef { switch_id: 1, port_id: 7 };
    check_one_port(enforce(RestoreMode::Pending), "a GetFlows page", move |h| {
        assert_eq!(h.control(&Request::GetFlows { port, start: 0, max: 500 }, 1 << 16).0, 0);
    });
}

#[test]
fn a_packet_never_waits_for_the_driver_wide_counters() {
    check_walk("the driver-wide counters", |h| {
        assert_eq!(h.control(&Request::GetCounters { port: None }, 4096).0, 0);
    });
}

/// The same, with a packet of the held port sent first on processor 3 (the VM's traffic spread
/// over processors by vRSS): it waits for port 7's lock while holding processor 3's map lock
/// shared, so the port create on processor 2 takes processors 0..2 exclusively and waits at
/// processor 3 for it. Port 8's packet on processor 0 must still be judged while processor 1
/// is held: no packet of another port may wait behind port 7's long work through that chain
/// (review s6, R6-1). `long` must take port 7's lock as its first spin lock.
/// `skip`: spin locks `long` takes before port 7's (held after the next one).
fn check_one_port_behind_its_own_packet(
    config: DriverConfig,
    what: &str,
    skip: u32,
    long: impl FnOnce(&Host) + Send,
) {
    let (mut h, sw, [(p7, own), (p8, other)]) = rig(config);
    let wire = h.wire();
    h.interrupts().arm_after(1, skip);
    let (own_waited, other_in_time) = std::thread::scope(|s| {
        let long_work = s.spawn(|| {
            set_processor(1);
            long(&h);
        });
        let held = h.interrupts().wait_held(PATIENCE);
        // Port 7's own packet on processor 3: it waits for port 7's lock.
        let own_sender = {
            let wire = wire.clone();
            s.spawn(move || {
                set_processor(3);
                wire.transmit(sw, EXTERNAL_PORT, p7, &own)
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        let own_waited = held && !own_sender.is_finished();
        let writer = s.spawn(|| {
            set_processor(2);
            let port = SimPort::new(9, "vm-new", sys::NdisSwitchPortTypeSynthetic);
            h.port_notification(sw, &port, true)
        });
        // The writer either finishes or settles into waiting for processor 3.
        let _ = wait_for(|| writer.is_finished(), Duration::from_millis(200));
        let other_sender = {
            let wire = wire.clone();
            s.spawn(move || {
                set_processor(0);
                wire.transmit(sw, EXTERNAL_PORT, p8, &other)
            })
        };
        let judged = wait_for(|| other_sender.is_finished(), Duration::from_millis(500));
        let in_time = judged && h.interrupts().is_held();
        h.interrupts().release();
        for sender in [own_sender, other_sender] {
            assert_eq!(
                sender.join().expect("sender"),
                PacketFate::Delivered,
                "an established flow"
            );
        }
        assert_eq!(writer.join().expect("writer thread"), sys::STATUS_SUCCESS);
        long_work.join().expect("long operation");
        (own_waited, in_time)
    });
    assert!(own_waited, "the rig: port 7's packet on processor 3 did not wait for {what}");
    assert!(
        other_in_time,
        "a packet of port 8 on processor 0 waited for {what} of port 7 held on processor 1 \
         (behind a port create that holds processor 0's map lock while it waits at processor 3 \
         for a packet of port 7, which holds processor 3's map lock shared while it waits for \
         port 7's lock)"
    );
    assert!(h.primitive_misuse().is_empty(), "{:?}", h.primitive_misuse());
    finish(&mut h);
}

#[test]
fn a_packet_never_waits_for_an_ioctl_reading_another_ports_flows_behind_that_ports_packet() {
    let port = vsflow_proto::request::PortRef { switch_id: 1, port_id: 7 };
    check_one_port_behind_its_own_packet(
        enforce(RestoreMode::Pending),
        "a GetFlows page",
        0,
        |h| {
            assert_eq!(h.control(&Request::GetFlows { port, start: 0, max: 500 }, 1 << 16).0, 0);
        },
    );
}

/// A save of port 7 held at port 7's lock (review s6, T6-1: `a_packet_never_waits_for_a_save_of_another_port`
/// holds the save at its first spin lock, the pending set's, so it never held port 7's lock):
/// the pending set's lock twice (`finish_pended`, `in_flight`), then port 7's.
#[test]
fn a_packet_never_waits_for_a_save_of_another_port_behind_that_ports_packet() {
    check_one_port_behind_its_own_packet(enforce(RestoreMode::Pending), "a save", 2, |h| {
        let _ = h.save(0, 7);
    });
}

/// A restore's apply to port 7 (synchronous: its first spin lock is port 7's), behind port 7's
/// own packet on processor 3 (review s6, R6-1).
#[test]
fn a_packet_never_waits_for_a_restore_being_applied_to_another_port_behind_that_ports_packet() {
    let (mut a, sa) = host(17, enforce(RestoreMode::Pending), "SW-A");
    vm_port(&mut a, sa, 7, "vm-long", 1, false);
    let _ = open_connections(&mut a, sa, 7, 50);
    let (blobs, _) = a.save(sa, 7);
    finish(&mut a);
    check_one_port_behind_its_own_packet(
        enforce(RestoreMode::Synchronous),
        "a restore's apply",
        0,
        move |h| {
            let tickets = h.restore(0, 7, &blobs);
            assert_eq!(h.vm_restore(&tickets), vsflow_sim::VmRestore::Succeeded);
        },
    );
}

/// Review s7 (R6-1's reference): a packet whose port's home lock was taken waits for it
/// outside the map lock on a reference to the port (`PortMap::with_packet_port`); the port's
/// delete meanwhile takes it out of the map without waiting for that packet (it holds no map
/// lock: a later packet of the port finds no port at once), and the port lives on for the
/// holders of its references: the waiting packet is judged on it (an established flow:
/// delivered, as before the delete), the last reference (the packet's, the IOCTL's or the
/// delete's own, which waits for the port's lock to read its counters) frees it then, not at
/// unload, and no primitive is misused.
#[test]
fn a_port_deleted_while_its_packet_waits_for_its_lock_is_freed_by_the_last_holder() {
    let (mut h, sw, [(p7, own), _]) = rig(enforce(RestoreMode::Pending));
    let wire = h.wire();
    let port = vsflow_proto::request::PortRef { switch_id: 1, port_id: 7 };
    // A GetFlows page of port 7 held at its first spin lock, port 7's home lock.
    h.interrupts().arm(1);
    let (own_waited, out_of_map_in_time, blocks_held, fate) = std::thread::scope(|s| {
        let long_work = s.spawn(|| {
            set_processor(1);
            h.control(&Request::GetFlows { port, start: 0, max: 500 }, 1 << 16).0
        });
        let held = h.interrupts().wait_held(PATIENCE);
        let send = |processor: u32| {
            let (wire, own) = (wire.clone(), own.clone());
            s.spawn(move || {
                set_processor(processor);
                wire.transmit(sw, EXTERNAL_PORT, p7, &own)
            })
        };
        let own_sender = send(3);
        std::thread::sleep(Duration::from_millis(100));
        let own_waited = held && !own_sender.is_finished();
        let deleter = s.spawn(|| {
            set_processor(2);
            let gone = SimPort::new(p7, "vm-long", sys::NdisSwitchPortTypeSynthetic);
            h.port_notification(sw, &gone, false)
        });
        // (Its map update takes no port lock: done at once, but a loaded machine may start
        // the thread late.)
        std::thread::sleep(Duration::from_millis(300));
        // Port 7 is out of the map: its next packet finds no port, without waiting.
        let probe = send(0);
        let out_of_map = wait_for(|| probe.is_finished(), PATIENCE);
        let out_of_map_in_time = out_of_map && h.interrupts().is_held();
        let blocks_held = h.driver_blocks();
        h.interrupts().release();
        let fate = own_sender.join().expect("sender");
        let _ = probe.join().expect("probe");
        assert_eq!(deleter.join().expect("deleter"), sys::STATUS_SUCCESS);
        assert_eq!(long_work.join().expect("GetFlows"), 0);
        (own_waited, out_of_map_in_time, blocks_held, fate)
    });
    assert!(own_waited, "the rig: port 7's packet on processor 3 did not wait for its lock");
    assert!(out_of_map_in_time, "port 7's delete waited, under the map's locks, for its packet");
    assert_eq!(fate, PacketFate::Delivered, "judged on the port it found (an established flow)");
    let (Some(held), Some(after)) = (blocks_held, h.driver_blocks()) else {
        panic!("the double counts the driver's heap blocks")
    };
    assert!(
        after < held,
        "the deleted port is freed by its last holder ({held} -> {after} blocks)"
    );
    assert!(h.primitive_misuse().is_empty(), "{:?}", h.primitive_misuse());
    finish(&mut h);
}
