//! The control device end to end on the simulator: every IOCTL, through the same bytes user
//! mode sends, against a driver with live ports; validation and error statuses.

use fwps_sys as sys;
use vsflow_callout::RestoreMode;
use vsflow_core::policy::{PortRange, Prefix};
use vsflow_core::{AllowRule, IpFamily, Mode, protocol};
use vsflow_proto::Ioctl;
use vsflow_proto::request::{PortRef, Request, rule_list};
use vsflow_proto::response::{self, ConfigInfo, PortInfo, VersionInfo};
use vsflow_scenarios::{enforce, finish, host, open_connections, vm_ip, vm_port};
use vsflow_sim::host::EXTERNAL_PORT;
use vsflow_sim::{Host, PacketFate, SimPacket};

fn call(h: &Host, req: &Request<'_>, out: usize) -> (i32, usize, Vec<u8>) {
    let mut buf = vec![0u8; req.encoded_len()];
    req.encode(&mut buf).expect("encodes");
    let (o, bytes) = h.ioctl(req.ioctl().code(), &buf, out);
    (o.status, o.information, bytes)
}

fn ports(h: &Host) -> Vec<PortInfo> {
    let (status, _, bytes) = call(h, &Request::ListPorts, 64 * 1024);
    assert_eq!(status, 0);
    let mut v = Vec::new();
    response::decode_ports(&bytes, |p| v.push(p)).expect("decodes");
    v
}

#[test]
fn version_config_ports_flows_and_counters_are_reported() {
    let (mut h, sw) = host(1, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 7, "vm-seven", 1, false);
    let _ = open_connections(&mut h, sw, 7, 25);

    let (status, _, bytes) = call(&h, &Request::GetVersion, 64);
    assert_eq!(status, 0);
    let version = VersionInfo::decode(&bytes).expect("version");
    assert_eq!((version.protocol, version.format), (2, [1, 2]), "runtime-state format 1.2");

    let (_, _, bytes) = call(&h, &Request::GetConfig, 64);
    let config = ConfigInfo::decode(&bytes).expect("config");
    assert_eq!(
        (config.default_mode, config.flows_per_port, config.blob_cap),
        (Mode::Enforce, 4096, 61_440)
    );

    let listed = ports(&h);
    assert_eq!(listed.len(), 1);
    let p0 = listed[0];
    assert_eq!(
        (p0.port.port_id, p0.flow_count, p0.name.to_string(), p0.nic_connected),
        (7, 25, "vm-seven".to_owned(), true)
    );

    // Paged flows: 10 + 10 + 5.
    let mut seen = Vec::new();
    let mut start = 0;
    loop {
        let (status, _, bytes) =
            call(&h, &Request::GetFlows { port: p0.port, start, max: 10 }, 4096);
        assert_eq!(status, 0);
        let page = response::decode_flows(&bytes, |f| seen.push(f)).expect("flows");
        assert_eq!(page.total, 25);
        start = page.next;
        if page.next == response::FLOWS_END {
            break;
        }
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.iter().all(|f| f.key.remote_port == 443 && f.opener == vsflow_core::Opener::Vm));

    let (_, _, bytes) = call(&h, &Request::GetCounters { port: Some(p0.port) }, 512);
    // Every counter, the extended ones after the runtime-state ones (`ALL_NAMES` order) ...
    let mut port_counters = [0u64; vsflow_core::PortCounters::ALL_COUNT];
    assert_eq!(
        response::decode_counters(&bytes, &mut port_counters),
        Ok(vsflow_core::PortCounters::ALL_COUNT)
    );
    assert_eq!(port_counters[2], 25, "flows_created");
    // ... and a reader that knows only the runtime-state counters (protocol 2's netports) reads
    // those unchanged.
    let mut older = [0u64; vsflow_core::PortCounters::COUNT];
    assert_eq!(
        response::decode_counters(&bytes, &mut older),
        Ok(vsflow_core::PortCounters::ALL_COUNT)
    );
    assert_eq!(older[..], port_counters[..vsflow_core::PortCounters::COUNT]);
    let (_, _, bytes) = call(&h, &Request::GetCounters { port: None }, 512);
    let mut driver_counters = [0u64; 15];
    response::decode_counters(&bytes, &mut driver_counters).expect("driver counters");
    assert!(driver_counters[0] > 0, "classify_calls");
    assert_eq!(call(&h, &Request::ClearCounters { port: None }, 64).0, 0);
    let (_, _, bytes) = call(&h, &Request::GetCounters { port: Some(p0.port) }, 512);
    response::decode_counters(&bytes, &mut port_counters).expect("counters");
    assert_eq!(port_counters, [0; vsflow_core::PortCounters::ALL_COUNT]);
    finish(&mut h);
}

#[test]
fn mode_and_rules_change_what_is_permitted() {
    let (mut h, sw) = host(2, vsflow_callout::DriverConfig::default(), "SW");
    vm_port(&mut h, sw, 7, "vm", 1, false);
    let port = ports(&h)[0].port;
    let ssh = SimPacket::new(
        IpFamily::V4,
        protocol::TCP,
        vsflow_core::packet::v4([203, 0, 113, 5]),
        40000,
        vm_ip(7),
        22,
        0x02,
        0,
    );
    assert_eq!(h.transmit(sw, EXTERNAL_PORT, 7, &ssh), PacketFate::Delivered, "monitor by default");
    assert_eq!(call(&h, &Request::SetPortMode { port, mode: Mode::Enforce }, 64).0, 0);
    let ssh2 = SimPacket::new(
        IpFamily::V4,
        protocol::TCP,
        vsflow_core::packet::v4([203, 0, 113, 6]),
        40001,
        vm_ip(7),
        22,
        0x02,
        0,
    );
    assert_eq!(h.transmit(sw, EXTERNAL_PORT, 7, &ssh2), PacketFate::BlockedAtEgress);
    let rule = AllowRule {
        protocol: Some(protocol::TCP),
        local_ports: PortRange::single(22),
        remote: Prefix::v4([203, 0, 113, 0], 24).unwrap(),
    };
    let mut space = [0u8; 24];
    let rules = rule_list(&[rule], &mut space).expect("rules");
    let (status, _, _) = call(&h, &Request::ReplaceRules { port, expected_version: 5, rules }, 64);
    assert_eq!(status, response::STATUS_RULES_CHANGED, "a replace based on stale rules is refused");
    let (status, _, bytes) =
        call(&h, &Request::ReplaceRules { port, expected_version: 0, rules }, 64);
    assert_eq!(status, 0);
    assert_eq!(response::decode_rules_version(&bytes), Ok(1));
    let ssh3 = SimPacket::new(
        IpFamily::V4,
        protocol::TCP,
        vsflow_core::packet::v4([203, 0, 113, 7]),
        40002,
        vm_ip(7),
        22,
        0x02,
        0,
    );
    assert_eq!(h.transmit(sw, EXTERNAL_PORT, 7, &ssh3), PacketFate::Delivered);
    assert_eq!(ports(&h)[0].rules_version, 1);
    finish(&mut h);
}

#[test]
fn errors_have_the_documented_statuses() {
    let (mut h, sw) = host(3, enforce(RestoreMode::Pending), "SW");
    vm_port(&mut h, sw, 7, "vm", 1, false);
    let _ = open_connections(&mut h, sw, 7, 3);
    // Unknown code.
    let (o, _) = h.ioctl(0x0022_0000, &[], 64);
    assert_eq!(o.status, sys::STATUS_INVALID_DEVICE_REQUEST);
    // Malformed: truncated header.
    let (o, _) = h.ioctl(Ioctl::GetVersion.code(), b"VSF", 64);
    assert_eq!(o.status, sys::STATUS_INVALID_PARAMETER);
    // Another protocol version.
    let (o, _) = h.ioctl(Ioctl::GetVersion.code(), &[b'V', b'S', b'F', b'P', 9, 0, 0, 0], 64);
    assert_eq!(o.status, sys::STATUS_REVISION_MISMATCH);
    // Output too small: the needed size comes back in Information.
    let (status, information, bytes) = call(&h, &Request::GetVersion, 4);
    assert_eq!(
        (status, information, bytes.len()),
        (sys::STATUS_BUFFER_TOO_SMALL, VersionInfo::LEN, 0)
    );
    let port = ports(&h)[0].port;
    let (status, information, _) = call(&h, &Request::GetFlows { port, start: 0, max: 100 }, 10);
    assert_eq!(
        (status, information),
        (sys::STATUS_BUFFER_TOO_SMALL, response::FLOWS_FIXED + response::FLOW_ENTRY_LEN)
    );
    // Unknown port.
    let nowhere = PortRef { switch_id: 99, port_id: 1 };
    assert_eq!(
        call(&h, &Request::SetPortMode { port: nowhere, mode: Mode::Monitor }, 64).0,
        sys::STATUS_NOT_FOUND
    );
    assert_eq!(
        call(&h, &Request::GetFlows { port: nowhere, start: 0, max: 1 }, 4096).0,
        sys::STATUS_NOT_FOUND
    );
    finish(&mut h);
}
