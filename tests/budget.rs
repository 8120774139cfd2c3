//! The host-wide flow-memory budget (issue 18 item 3): `FlowMemoryMB` bounds the flow memory
//! of every port of the host together. A guest (here several VMs at once) opening new flows
//! past it is refused — the packet's verdict stands, the flow is not tracked (fail-closed for
//! its return traffic in Enforce) — and connections already established keep passing.

use vsflow_core::IpFamily;
use vsflow_core::packet::protocol;
use vsflow_scenarios::{delivered, finish, open_connections, vm_ip, vm_port};
use vsflow_sim::host::EXTERNAL_PORT;
use vsflow_sim::{Host, SimPacket};

/// Fewest bytes one tracked flow can cost (its key and record alone are larger).
const MIN_FLOW_BYTES: usize = 64;

#[test]
fn a_host_wide_flow_memory_budget_bounds_all_ports_together_and_spares_established_ones() {
    let mut h = Host::new(18);
    h.set_parameter("FlowMemoryMB", 1);
    h.set_parameter("FlowsPerPort", 65_536);
    h.set_parameter("DefaultMode", 1);
    h.load_driver_from_registry().expect("loads");
    let sw = h.create_switch("budget", &[]);
    for id in 11..=14 {
        vm_port(&mut h, sw, id, &format!("vm{id}"), u16::try_from(id - 10).unwrap(), false);
    }
    let established = open_connections(&mut h, sw, 11, 50);
    // Four VMs each open 20,000 UDP flows: 80,000 flows, several MB of tables unbounded.
    for id in 11..=14u32 {
        for i in 0..20_000u32 {
            let remote = vsflow_core::packet::v4([198, 18, 0, u8::try_from(i % 200).unwrap()]);
            let p = SimPacket::new(
                IpFamily::V4,
                protocol::UDP,
                vm_ip(id),
                u16::try_from(10_000 + i).unwrap(),
                remote,
                53,
                0,
                40,
            );
            h.advance(10);
            let _ = h.transmit(sw, id, EXTERNAL_PORT, &p);
        }
    }
    let totals = h.driver().flow_totals();
    assert!(totals.consistent);
    assert!(
        totals.flows * MIN_FLOW_BYTES <= 1 << 20,
        "{} flows tracked host-wide: past a 1 MB budget",
        totals.flows
    );
    assert_eq!(delivered(&mut h, sw, 11, &established), 50, "an established connection was cut");
    assert_eq!(h.driver().stats().settings_refused, 0);
    finish(&mut h);
}

#[test]
fn flows_per_port_past_its_documented_maximum_is_refused_with_its_default() {
    let mut h = Host::new(19);
    h.set_parameter("FlowsPerPort", 1 << 20);
    h.load_driver_from_registry().expect("loads");
    assert_eq!(h.driver().config().flows_per_port, 4096, "the default applies");
    assert_eq!(h.driver().stats().settings_refused, 1);
    finish(&mut h);
}
