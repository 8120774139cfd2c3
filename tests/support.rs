//! Helpers shared by the end-to-end scenarios: hosts with a switch and VM ports, traffic that
//! establishes connections, and the checks every scenario ends with.

use fwps_sys as sys;
use vsflow_callout::{DriverConfig, RestoreMode};
use vsflow_core::{IpFamily, Mode};
use vsflow_sim::host::EXTERNAL_PORT;
use vsflow_sim::tools::traffic;
use vsflow_sim::{Host, PacketFate, SimPacket};

/// A driver configuration for scenarios: Enforce mode by default, so carried state is visible.
#[must_use]
pub fn enforce(restore: RestoreMode) -> DriverConfig {
    DriverConfig { restore_mode: restore, default_mode: Mode::Enforce, ..DriverConfig::default() }
}

/// A host with the driver loaded and one switch; returns the host and the switch index.
///
/// # Panics
/// If the driver does not load.
#[must_use]
pub fn host(seed: u64, config: DriverConfig, switch: &str) -> (Host, usize) {
    let mut h = Host::new(seed);
    h.load_driver(config).expect("driver loads");
    let sw = h.create_switch(switch, &[]);
    (h, sw)
}

/// Creates VM port `id` named `name` with a connected NIC.
///
/// # Panics
/// If the driver rejects an event.
pub fn vm_port(h: &mut Host, sw: usize, id: u32, name: &str, nic: u16, restoring: bool) {
    assert_eq!(h.create_port(sw, id, name, restoring), sys::STATUS_SUCCESS);
    assert_eq!(
        h.nic_event(sw, id, nic, sys::FWPS_VSWITCH_EVENT_INTERFACE_CREATE),
        sys::STATUS_SUCCESS
    );
    assert_eq!(
        h.nic_event(sw, id, nic, sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT),
        sys::STATUS_SUCCESS
    );
}

/// The VM's IPv4 address on port `id` (the traffic module's VM address).
#[must_use]
pub fn vm_ip(id: u32) -> [u8; 16] {
    traffic::vm_addr(IpFamily::V4, id)
}

/// Opens `n` VM-initiated TCP connections from port `id` (SYN out, SYN-ACK in, ACK out) and
/// returns, for each, an inbound data packet of the established connection.
///
/// # Panics
/// If a packet of the handshake is not delivered.
pub fn open_connections(h: &mut Host, sw: usize, id: u32, n: u16) -> Vec<SimPacket> {
    (0..n)
        .map(|k| {
            h.advance(10_000);
            let remote =
                vsflow_core::packet::v4([198, 51, 100, u8::try_from(k % 250).unwrap_or(0)]);
            let syn = traffic::vm_syn(IpFamily::V4, id, 30_000 + k, remote, 443);
            let (fates, data) = traffic::vm_handshake(h, sw, id, &syn);
            assert_eq!(fates, [PacketFate::Delivered; 3], "handshake {k} of port {id}");
            data
        })
        .collect()
}

/// How many of `inbound` reach port `id`.
pub fn delivered(h: &mut Host, sw: usize, id: u32, inbound: &[SimPacket]) -> usize {
    inbound.iter().filter(|p| h.transmit(sw, EXTERNAL_PORT, id, p) == PacketFate::Delivered).count()
}

/// The states of the flows in the table of the port named `name`, through the `ListPorts`
/// and `GetFlows` IOCTLs.
///
/// # Panics
/// If `GetFlows` fails or its answer does not decode.
#[must_use]
pub fn flow_states(h: &Host, name: &str) -> Vec<vsflow_core::FlowState> {
    use vsflow_proto::request::Request;
    let Some(listed) = h.list_ports().into_iter().find(|p| p.name.to_string() == name) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut start = 0;
    loop {
        let (status, bytes) =
            h.control(&Request::GetFlows { port: listed.port, start, max: 256 }, 1 << 20);
        assert_eq!(status, 0, "GetFlows");
        let flows_page = vsflow_proto::response::decode_flows(&bytes, |f| found.push(f.state))
            .expect("flows decode");
        // The driver pages with a cursor: pass back the page's `next`.
        start = flows_page.next;
        if flows_page.next == vsflow_proto::response::FLOWS_END {
            break;
        }
    }
    found
}

/// Flows in the table of the port named `name`.
///
/// # Panics
/// If `ListPorts` fails or its answer does not decode.
#[must_use]
pub fn flows_of(h: &Host, name: &str) -> Option<usize> {
    let listed = try_flows_of(h, name);
    assert_eq!(listed.err(), None, "ListPorts");
    listed.ok().flatten()
}

/// Flows in the table of the port named `name`.
///
/// # Errors
/// The status `ListPorts` failed with (it allocates its list of port references: out of
/// memory fails it).
///
/// # Panics
/// If the answer does not decode.
pub fn try_flows_of(h: &Host, name: &str) -> Result<Option<usize>, i32> {
    use vsflow_proto::request::Request;
    let req = Request::ListPorts;
    let mut buf = vec![0u8; req.encoded_len()];
    req.encode(&mut buf).expect("encodes");
    let (o, bytes) = h.ioctl(req.ioctl().code(), &buf, 1 << 20);
    if o.status != 0 {
        return Err(o.status);
    }
    let mut found = None;
    vsflow_proto::response::decode_ports(&bytes, |p| {
        if p.name.to_string() == name {
            found = Some(p.flow_count as usize);
        }
    })
    .expect("ports decode");
    Ok(found)
}

/// Unloads the driver and asserts no contract was broken and nothing was left behind.
///
/// # Panics
/// On any violation.
pub fn finish(h: &mut Host) {
    h.unload_driver();
    let v = h.violations();
    assert!(
        v.is_empty(),
        "contract violations: {}",
        v.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    );
}
