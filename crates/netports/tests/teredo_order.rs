//! The Teredo port's byte order and the system-ports entry (issue 19, item 9).
//!
//! The byte order of the port `GetTeredoPort`, its callback and `FWPM_SYSTEM_PORTS_BY_TYPE0`
//! give is undocumented; `GetExtendedUdpTable` documents network order. Only an endpoint of the
//! Teredo service's own process (`iphlpsvc`) confirms an order; a match among every process's
//! UDP sockets (when that process is unknown) is a hint for one reading, never kept. And a
//! reading always says how its order was decided.

use netports::teredo::{Basis, ByteOrder, Evidence, PortOrder, ports_from_system_ports};

const PORT: u16 = 51_234;

#[test]
fn only_the_teredo_services_endpoint_settles_the_order() {
    let mut order = PortOrder::new();
    let r = order.read("GetTeredoPort", PORT, &mut || Evidence::AnyProcess(vec![PORT]));
    assert_eq!((r.port, r.order, r.basis), (Some(PORT), ByteOrder::Host, Basis::Hint));
    assert_eq!(order.settled(), None, "a socket of any process never settles the order");
    let r = order.read("GetTeredoPort", 52_000, &mut || Evidence::AnyProcess(vec![]));
    assert_eq!(
        (r.port, r.order, r.basis),
        (Some(52_000u16.swap_bytes()), ByteOrder::Network, Basis::Assumed),
        "without evidence: network order, assumed"
    );
    let r = order.read("GetTeredoPort", PORT, &mut || Evidence::TeredoService(vec![PORT]));
    assert_eq!((r.port, r.order, r.basis), (Some(PORT), ByteOrder::Host, Basis::Confirmed));
    assert_eq!(order.settled(), Some(ByteOrder::Host));
    let r = order.read("GetTeredoPort", 4000, &mut || unreachable!("settled: not asked again"));
    assert_eq!((r.port, r.basis), (Some(4000), Basis::Confirmed));
}

#[test]
fn a_value_that_reads_the_same_both_ways_needs_no_evidence() {
    let mut order = PortOrder::new();
    let r = order.read("x", 0x0101, &mut || unreachable!());
    assert_eq!((r.port, r.basis), (Some(0x0101), Basis::Symmetric));
    assert_eq!(order.read("x", 0, &mut || unreachable!()).port, None);
}

#[test]
fn a_network_order_source_is_confirmed_by_the_services_endpoint() {
    let mut order = PortOrder::new();
    let r = order.read("FwpmSystemPortsGet0", PORT.to_be(), &mut || {
        Evidence::TeredoService(vec![3544, PORT])
    });
    assert_eq!((r.port, r.order, r.basis), (Some(PORT), ByteOrder::Network, Basis::Confirmed));
    assert!(r.warning.is_none(), "agreeing with the assumption is not worth a warning");
}

#[test]
fn every_port_of_the_teredo_entry_is_used() {
    let rpc: &[u16] = &[135];
    let teredo: &[u16] = &[51_000, 51_001, 0];
    assert_eq!(ports_from_system_ports([(0, rpc), (1, teredo)]), vec![51_000, 51_001]);
    assert_eq!(ports_from_system_ports([(0, rpc)]), Vec::<u16>::new());
    assert_eq!(ports_from_system_ports([(1, &[0u16][..])]), Vec::<u16>::new());
}
