//! Real captures through vsflow (`vsflow-sim replay`'s library): what the Linux kernel sent
//! and answered, replayed through the shipped callout at the vSwitch transport layers as the
//! VM's port, with the documented expectation of each capture (tests/fixtures/pcap/README.md).

use std::path::Path;

use vsflow_core::Mode;
use vsflow_sim::tools::replay::{self, Fate, ReplayOptions, VmSide};

fn capture(name: &str) -> Vec<replay::Frame> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pcap").join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    replay::read_capture(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn enforce(vm: VmSide) -> ReplayOptions {
    ReplayOptions { vm, mode: Mode::Enforce, ..ReplayOptions::default() }
}

/// The VM of the namespace captures (tests/fixtures/pcap/README.md).
const NETNS_VM: VmSide = VmSide::Mac([2, 0, 0, 0, 0, 1]);

// Issue 17: before the ICMP module, every inbound ICMP packet of this capture was blocked:
// the echo replies, both port-unreachable errors, the neighbor advertisement, the peer's
// neighbor and router solicitations and MLD reports.
#[test]
fn linux_ping_port_unreachable_and_neighbor_discovery_pass_in_enforce_without_rules() {
    let r = replay::replay(&capture("linux-netns-icmp.pcap"), &enforce(NETNS_VM));
    let (permitted, blocked) = r.classified();
    assert_eq!(blocked, 0, "{}", r.to_text());
    assert_eq!(permitted, 23, "{}", r.to_text());
    assert_eq!(r.count(|f| *f == Fate::NotIp), 2, "the ARP request and reply");
    // Both echo exchanges are flows the VM opened; both errors are related to the VM's UDP.
    assert_eq!(r.counter("icmp_related"), 2, "{}", r.to_text());
    let echo: Vec<_> = r.flows.iter().filter(|(c, _)| c.kind.starts_with("icmp query")).collect();
    assert_eq!(echo.len(), 2, "{}", r.to_text());
    for (c, f) in echo {
        assert_eq!(f.packets, [2, 2], "{}", c.label());
        assert!(f.record.is_some(), "{} is tracked", c.label());
    }
    assert!(r.counter("icmp_link") >= 5, "{}", r.to_text());
}
