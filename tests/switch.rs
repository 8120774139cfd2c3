//! The switch as WFP reports it: `VSWITCH_CREATE` carries the port and NIC arrays WFP queried
//! in `FilterRestart`, and comes again when the extension is paused and restarted (a filter-engine
//! reorder does that) for a switch the driver knows; NIC arrays carry each NIC's `NicState`
//! and may use the revision-1 element size; port types per `NDIS_SWITCH_PORT_TYPE`; a driver
//! started after switches and VMs exist.

use fwps_sys as sys;
use vsflow_callout::RestoreMode;
use vsflow_scenarios::{delivered, enforce, finish, flows_of, host, open_connections, vm_port};
use vsflow_sim::host::{ExistingSwitches, NicElementSize, SimPort};
use vsflow_sim::{Host, PacketFate};

fn names(h: &Host) -> Vec<String> {
    let mut v: Vec<String> = h.list_ports().iter().map(|p| p.name.to_string()).collect();
    v.sort();
    v
}

fn nic_connected(h: &Host, name: &str) -> Option<bool> {
    h.list_ports().iter().find(|p| p.name.to_string() == name).map(|p| p.nic_connected)
}

#[test]
fn pause_and_restart_keeps_every_port_and_its_flows() {
    let (mut h, sw) = host(1, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 7, "vm-a", 1, false);
    vm_port(&mut h, sw, 8, "vm-b", 2, false);
    let inbound = open_connections(&mut h, sw, 7, 10);
    h.pause_restart(sw);
    assert_eq!(names(&h), ["vm-a", "vm-b"]);
    assert_eq!(flows_of(&h, "vm-a"), Some(10), "a replayed VSWITCH_CREATE keeps the port's state");
    assert_eq!(delivered(&mut h, sw, 7, &inbound), 10);
    assert_eq!(nic_connected(&h, "vm-a"), Some(true));
    finish(&mut h);
}

#[test]
fn a_reorder_pauses_and_restarts_the_extension_and_state_survives() {
    let (mut h, sw) = host(1, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 7, "vm-a", 1, false);
    let inbound = open_connections(&mut h, sw, 7, 5);
    assert_eq!(h.reorder(true), sys::STATUS_SUCCESS);
    assert_eq!(flows_of(&h, "vm-a"), Some(5));
    assert_eq!(delivered(&mut h, sw, 7, &inbound), 5);
    finish(&mut h);
}

#[test]
fn a_port_id_that_now_names_another_port_is_a_new_port() {
    let (mut h, sw) = host(1, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 7, "vm-a", 1, false);
    let inbound = open_connections(&mut h, sw, 7, 5);
    // While paused, vm-a's port went away and vm-c's port took id 7.
    h.replace_port_silently(
        sw,
        SimPort::new(7, "vm-c", sys::NdisSwitchPortTypeSynthetic)
            .with_nic(1, sys::NdisSwitchNicStateConnected),
    );
    h.pause_restart(sw);
    assert_eq!(flows_of(&h, "vm-c"), Some(0), "vm-a's flows are not vm-c's");
    assert!(!names(&h).contains(&"vm-a".to_owned()), "{:?}", names(&h));
    assert_eq!(delivered(&mut h, sw, 7, &inbound), 0, "Enforce: vm-c never opened them");
    finish(&mut h);
}

#[test]
fn the_nic_array_is_applied_by_nic_state() {
    let mut h = Host::new(1);
    h.load_driver(enforce(RestoreMode::Pending)).expect("loads");
    let sw = h.create_switch(
        "SW",
        &[
            SimPort::new(10, "created", sys::NdisSwitchPortTypeSynthetic)
                .with_nic(1, sys::NdisSwitchNicStateCreated),
            SimPort::new(11, "connected", sys::NdisSwitchPortTypeSynthetic)
                .with_nic(2, sys::NdisSwitchNicStateConnected),
            SimPort::new(12, "disconnected", sys::NdisSwitchPortTypeSynthetic)
                .with_nic(3, sys::NdisSwitchNicStateDisconnected),
            SimPort::new(13, "no-nic", sys::NdisSwitchPortTypeSynthetic),
        ],
    );
    let _ = sw;
    assert_eq!(nic_connected(&h, "created"), Some(false));
    assert_eq!(nic_connected(&h, "connected"), Some(true));
    assert_eq!(nic_connected(&h, "disconnected"), Some(false));
    assert_eq!(nic_connected(&h, "no-nic"), Some(false));
    finish(&mut h);
}

fn nic_arrays_of_size(size: NicElementSize) {
    let mut h = Host::new(1);
    h.nic_element_size = size;
    h.load_driver(enforce(RestoreMode::Pending)).expect("loads");
    let _ = h.create_switch(
        "SW",
        &[
            SimPort::new(10, "a", sys::NdisSwitchPortTypeSynthetic)
                .with_nic(1, sys::NdisSwitchNicStateConnected),
            SimPort::new(11, "b", sys::NdisSwitchPortTypeSynthetic)
                .with_nic(2, sys::NdisSwitchNicStateConnected),
            SimPort::new(12, "c", sys::NdisSwitchPortTypeSynthetic)
                .with_nic(3, sys::NdisSwitchNicStateConnected),
        ],
    );
    for n in ["a", "b", "c"] {
        assert_eq!(nic_connected(&h, n), Some(true), "{size:?}: NIC of {n}");
    }
    finish(&mut h);
}

#[test]
fn nic_arrays_with_the_revision_1_element_size_are_read() {
    nic_arrays_of_size(NicElementSize::Revision1);
}

#[test]
fn nic_arrays_with_a_larger_element_size_are_read() {
    nic_arrays_of_size(NicElementSize::Larger(64));
}

#[test]
fn every_vm_port_type_is_tracked_and_external_internal_and_validation_ports_are_not() {
    let (mut h, sw) = host(1, enforce(RestoreMode::Pending), "SW");
    let nic = sys::NdisSwitchNicStateConnected;
    for p in [
        SimPort::new(20, "synthetic", sys::NdisSwitchPortTypeSynthetic).with_nic(1, nic),
        SimPort::new(21, "emulated", sys::NdisSwitchPortTypeEmulated).with_nic(2, nic),
        SimPort::new(22, "generic-vm", sys::NdisSwitchPortTypeGeneric).with_nic(3, nic),
        SimPort::new(23, "internal", sys::NdisSwitchPortTypeInternal).with_nic(4, nic),
        SimPort::new(24, "external-2", sys::NdisSwitchPortTypeExternal).with_nic(5, nic),
        SimPort::new(25, "validation", sys::NdisSwitchPortTypeSynthetic).validation(),
    ] {
        let nic = p.nic;
        let id = p.id;
        assert_eq!(h.create_port_as(sw, p, false), sys::STATUS_SUCCESS);
        if let Some((index, _)) = nic {
            for e in [
                sys::FWPS_VSWITCH_EVENT_INTERFACE_CREATE,
                sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT,
            ] {
                assert_eq!(h.nic_event(sw, id, index, e), sys::STATUS_SUCCESS);
            }
        }
    }
    assert_eq!(names(&h), ["emulated", "generic-vm", "synthetic"]);
    finish(&mut h);
}

#[test]
fn a_driver_started_after_switches_exist_tracks_them_when_windows_replays_them() {
    let mut h = Host::new(1);
    h.existing_switches = ExistingSwitches::Replayed;
    let _ = h.create_switch(
        "SW",
        &[SimPort::new(10, "vm-a", sys::NdisSwitchPortTypeSynthetic)
            .with_nic(1, sys::NdisSwitchNicStateConnected)],
    );
    h.load_driver(enforce(RestoreMode::Pending)).expect("loads");
    assert_eq!(names(&h), ["vm-a"]);
    finish(&mut h);
}

#[test]
fn a_driver_started_after_switches_exist_never_blocks_their_traffic_when_not_replayed() {
    let mut h = Host::new(1);
    h.existing_switches = ExistingSwitches::NotReplayed;
    let sw = h.create_switch(
        "SW",
        &[SimPort::new(10, "vm-a", sys::NdisSwitchPortTypeSynthetic)
            .with_nic(1, sys::NdisSwitchNicStateConnected)],
    );
    h.load_driver(enforce(RestoreMode::Pending)).expect("loads");
    assert!(names(&h).is_empty(), "nothing was reported");
    // Untracked traffic is never blocked, in either direction.
    let syn = vsflow_sim::tools::traffic::inbound_syn(
        vsflow_core::IpFamily::V4,
        vsflow_sim::tools::traffic::remote_addr(vsflow_core::IpFamily::V4, 1, false),
        4000,
        10,
        8080,
    );
    assert_eq!(h.transmit(sw, vsflow_sim::host::EXTERNAL_PORT, 10, &syn), PacketFate::Delivered);
    // A second, known switch exists too: the unknown switch is not judged by its ports.
    let sw2 = h.create_switch("SW2", &[]);
    vm_port(&mut h, sw2, 10, "vm-z", 1, false);
    assert_eq!(h.transmit(sw, vsflow_sim::host::EXTERNAL_PORT, 10, &syn), PacketFate::Delivered);
    finish(&mut h);
}
