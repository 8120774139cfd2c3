//! The driver's scenarios, run through vsflow.sys's own machine code: the PE image `cargo xtask
//! sys` links for Windows, loaded by `sys_loader` and bound to the doubles (wdf-sim, vsflow-sim).
//! They are the scenarios of driver/src/tests.rs (which run driver/ built for the host), plus
//! what only the image has: the KMDF stub's bind and unbind, the WDF function table, the
//! Win64 calls both ways, the pool, ETW as TraceLogging encodes it, the stack probe.
//!
//! Every test ends as the service stops: `DriverObject->DriverUnload`, then nothing left (no KMDF
//! misuse, no WFP contract broken, no WFP object, no WDF object, no ETW provider, no pool block,
//! not bound to the framework).

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]
#![allow(clippy::doc_markdown, reason = "the docs name Windows DDIs and formats in prose")]
#![allow(
    clippy::significant_drop_tightening,
    reason = "each test holds its Loaded image (and its wdf-sim Session) to the end"
)]

use fwps_sys as sys;
use sys_loader::Loaded;
use vsflow_core::{FlowState, IpFamily};
use vsflow_proto::Ioctl;
use vsflow_proto::request::{PortRef, Request};
use vsflow_proto::response::{ConfigInfo, VersionInfo};
use vsflow_sim::host::EXTERNAL_PORT;
use vsflow_sim::tools::traffic::{self, remote_addr};
use vsflow_sim::{Host, PacketFate};
use wdf_sim::etw::EtwValue;
use wdf_sim::{Ioctl as Io, Violation};

/// One second in 100 ns ticks.
const SECOND: u64 = 10_000_000;
/// The provider the image registers (docs/TRACING.md).
const PROVIDER: &str = "Vsflow.Callout";

fn image() -> Vec<u8> {
    let path = sys_loader::image_path();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The image loaded with these `Parameters` values; `DriverEntry` not yet run.
fn loaded(parameters: &[(&str, u32)]) -> Loaded {
    let driver = Loaded::load(&image()).expect("vsflow.sys loads");
    for (name, value) in parameters {
        driver.session().set_parameter(name, *value);
    }
    driver
}

/// Loaded and started on `h`.
fn started(parameters: &[(&str, u32)], h: &Host) -> Loaded {
    let driver = loaded(parameters);
    assert_eq!(h.within(|| driver.driver_entry()), 0, "FxDriverEntry");
    driver
}

/// Stops the service and checks nothing is left.
fn unload_clean(driver: &Loaded, h: &Host) {
    h.within(|| driver.unload()).expect("the driver unloads");
    let s = driver.session();
    assert_eq!(s.violations(), Vec::<Violation>::new(), "KMDF or kernel misuse");
    assert_eq!(h.violations(), Vec::new(), "WFP contract violations");
    let o = h.engine_objects();
    assert!(o.filters.is_empty() && o.callouts.is_empty(), "WFP objects left: {o:?}");
    assert!(s.live_objects().is_empty(), "WDF objects left: {:?}", s.live_objects());
    assert!(s.etw_providers().is_empty(), "ETW provider left registered");
    assert_eq!(s.pool_live(), Vec::new(), "pool blocks left");
    assert!(s.pool_allocations() > 0, "the image's heap is the pool");
}

fn call(driver: &Loaded, h: &Host, req: &Request<'_>, out: usize) -> (i32, Vec<u8>) {
    let mut buf = vec![0u8; req.encoded_len()];
    req.encode(&mut buf).expect("encodes");
    match h.within(|| driver.session().ioctl(req.ioctl().code(), &buf, out)) {
        Io::Completed { status, output, .. } => (status, output),
        other => panic!("IOCTL not completed: {other:?}"),
    }
}

/// The states of the flows the image tracks for `port` (GetFlows through the control device).
fn flow_states(driver: &Loaded, h: &Host, port: u32) -> Vec<FlowState> {
    let mut listed = None;
    let (status, bytes) = call(driver, h, &Request::ListPorts, 1 << 20);
    assert_eq!(status, 0, "ListPorts");
    vsflow_proto::response::decode_ports(&bytes, |p| {
        if p.port.port_id == port {
            listed = Some(p.port);
        }
    })
    .expect("ports decode");
    let Some(port): Option<PortRef> = listed else { return Vec::new() };
    let mut found = Vec::new();
    let (status, bytes) = call(driver, h, &Request::GetFlows { port, start: 0, max: 256 }, 1 << 20);
    assert_eq!(status, 0, "GetFlows");
    vsflow_proto::response::decode_flows(&bytes, |f| found.push(f.state)).expect("flows decode");
    found
}

fn vm_port(h: &mut Host, sw: usize, id: u32, name: &str) {
    assert_eq!(h.create_port(sw, id, name, false), sys::STATUS_SUCCESS);
    for event in
        [sys::FWPS_VSWITCH_EVENT_INTERFACE_CREATE, sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT]
    {
        assert_eq!(h.nic_event(sw, id, 1, event), sys::STATUS_SUCCESS);
    }
}

fn events(driver: &Loaded, name: &str) -> Vec<wdf_sim::etw::EtwEvent> {
    driver.session().etw_events().into_iter().filter(|e| e.name == name).collect()
}

#[test]
fn fx_driver_entry_binds_kmdf_then_driver_entry_builds_the_control_device_and_unload_unbinds_last()
{
    let h = Host::new(1);
    let driver = started(&[], &h);
    let s = driver.session();
    let calls = s.calls();
    assert_eq!(
        calls.first(),
        Some(&"WdfVersionBind"),
        "the KMDF stub binds before DriverEntry runs"
    );
    let setup: Vec<_> = calls
        .iter()
        .copied()
        .filter(|c| {
            c.starts_with("WdfControl")
                || c.starts_with("WdfDevice")
                || c.starts_with("WdfIoQueue")
                || c.starts_with("WdfWorkItemCreate")
                || c.starts_with("WdfTimer")
                || *c == "WdfDriverCreate"
        })
        .collect();
    assert_eq!(
        setup,
        [
            "WdfDriverCreate",
            "WdfControlDeviceInitAllocate",
            "WdfDeviceInitAssignName",
            "WdfDeviceCreate",
            "WdfDeviceCreateSymbolicLink",
            "WdfIoQueueCreate",
            "WdfControlFinishInitializing",
            "WdfDeviceWdmGetDeviceObject",
            "WdfWorkItemCreate",
            "WdfTimerCreate",
            "WdfTimerStart",
        ]
    );
    let (name, sddl, links, initializing) = s.control_device().expect("control device");
    assert_eq!(name, "\\Device\\vsflow");
    assert_eq!(sddl, "D:P(A;;GA;;;SY)(A;;GA;;;BA)");
    assert_eq!(links, ["\\DosDevices\\vsflow"]);
    assert!(!initializing);
    assert_eq!(h.callout_flags().len(), 4, "callouts registered");
    // The stub displaced the framework's unload routine with its own, in the image.
    let unload = driver.driver_unload_routine().expect("an unload routine");
    assert!(driver.mapping().contains(unload), "DriverUnload is the stub's, in the image");
    let before = s.calls().len();
    unload_clean(&driver, &h);
    let stop: Vec<_> = s.calls()[before..]
        .iter()
        .copied()
        .filter(|c| {
            matches!(
                *c,
                "EvtDriverUnload"
                    | "WdfTimerStop"
                    | "WdfWorkItemFlush"
                    | "WdfObjectDelete"
                    | "EtwUnregister"
                    | "WdfVersionUnbind"
            )
        })
        .collect();
    assert_eq!(
        stop,
        [
            "EvtDriverUnload",
            "WdfTimerStop",
            "WdfWorkItemFlush",
            "WdfObjectDelete",
            "EtwUnregister",
            "WdfVersionUnbind"
        ],
        "the framework's unload, then the stub unbinds"
    );
}

#[test]
fn ioctls_reach_the_image_through_the_passive_sequential_queue_and_complete_once() {
    let h = Host::new(2);
    let driver = started(&[("FlowsPerPort", 1000)], &h);
    let (status, bytes) = call(&driver, &h, &Request::GetVersion, 64);
    assert_eq!(status, 0);
    let v = VersionInfo::decode(&bytes).expect("version decodes");
    assert_eq!(v.protocol, vsflow_proto::PROTOCOL_VERSION);
    let (status, bytes) = call(&driver, &h, &Request::GetConfig, 64);
    assert_eq!(status, 0);
    assert_eq!(
        ConfigInfo::decode(&bytes).expect("config").flows_per_port,
        1000,
        "the Parameters key reached the configuration through WdfRegistryQueryULong"
    );
    match h.within(|| driver.session().ioctl(Ioctl::GetVersion.code(), b"", 4)) {
        Io::Completed { status, output, .. } => {
            assert!(status < 0, "an output buffer too small fails");
            assert!(output.is_empty(), "and copies nothing back");
        }
        other => panic!("{other:?}"),
    }
    let foreign =
        vsflow_proto::codes::ctl_code(vsflow_proto::codes::FILE_DEVICE_VSFLOW, 0x8FF, 0, 1);
    assert!(matches!(
        h.within(|| driver.session().ioctl(foreign, &[1, 2, 3], 16)),
        Io::Completed { status, .. } if status < 0
    ));
    unload_clean(&driver, &h);
}

#[test]
fn an_absent_parameters_key_or_a_mistyped_value_leaves_the_defaults() {
    let h = Host::new(3);
    let default = {
        let driver = loaded(&[]);
        driver.session().remove_parameters_key();
        assert_eq!(h.within(|| driver.driver_entry()), 0);
        let (_, bytes) = call(&driver, &h, &Request::GetConfig, 64);
        let flows = ConfigInfo::decode(&bytes).expect("config").flows_per_port;
        unload_clean(&driver, &h);
        flows
    };
    let driver = loaded(&[]);
    driver.session().set_parameter_string("FlowsPerPort", "1000");
    assert_eq!(h.within(|| driver.driver_entry()), 0);
    let (_, bytes) = call(&driver, &h, &Request::GetConfig, 64);
    assert_eq!(ConfigInfo::decode(&bytes).expect("config").flows_per_port, default);
    unload_clean(&driver, &h);
}

#[test]
fn classify_of_real_packets_tracks_the_vms_flow_and_blocks_unsolicited_inbound_in_enforce_mode() {
    let mut h = Host::new(4);
    let driver = started(&[("DefaultMode", 1)], &h);
    let sw = h.create_switch("SW", &[]);
    vm_port(&mut h, sw, 7, "vm-seven");
    let syn = traffic::vm_syn(IpFamily::V4, 7, 40_000, remote_addr(IpFamily::V4, 9, false), 443);
    assert_eq!(h.transmit(sw, 7, EXTERNAL_PORT, &syn), PacketFate::Delivered);
    assert_eq!(flow_states(&driver, &h, 7), [FlowState::SynSent], "TCP flags read by the image");
    let (fates, data) = traffic::vm_handshake(&mut h, sw, 7, &syn);
    assert_eq!(fates, [PacketFate::Delivered; 3]);
    assert_eq!(h.transmit(sw, EXTERNAL_PORT, 7, &data), PacketFate::Delivered);
    assert_eq!(flow_states(&driver, &h, 7), [FlowState::Established]);
    let unsolicited =
        traffic::inbound_syn(IpFamily::V6, remote_addr(IpFamily::V6, 3, false), 5555, 7, 22);
    assert_eq!(
        h.transmit(sw, EXTERNAL_PORT, 7, &unsolicited),
        PacketFate::BlockedAtEgress,
        "enforce mode: a conversation the VM did not start is blocked on its way to the VM's port"
    );
    assert!(h.classify_invocations() >= 6);
    h.delete_switch(sw);
    unload_clean(&driver, &h);
}

#[test]
fn flow_tables_grow_from_the_pool_in_bounded_steps_and_a_failed_step_refuses_only_the_new_flow() {
    let mut h = Host::new(14);
    let driver = started(&[("DefaultMode", 1)], &h);
    let sw = h.create_switch("SW", &[]);
    vm_port(&mut h, sw, 7, "vm-seven");
    let connection = |k: u16| {
        traffic::vm_syn(
            IpFamily::V4,
            7,
            30_000 + k,
            remote_addr(IpFamily::V4, u32::from(k), false),
            443,
        )
    };
    // 64 connections fill the port's first slab segment.
    let mut established = Vec::new();
    for k in 0..64 {
        let (fates, data) = traffic::vm_handshake(&mut h, sw, 7, &connection(k));
        assert_eq!(fates, [PacketFate::Delivered; 3]);
        established.push(data);
    }
    let pool = driver.session().pool_allocations();
    let before: Vec<usize> = driver.session().pool_live().iter().map(|b| b.0).collect();
    // The 65th needs one growth step from the pool; that ExAllocatePool2 returns NULL.
    driver.session().fail_pool_allocation(1);
    let (fates, _) = traffic::vm_handshake(&mut h, sw, 7, &connection(64));
    assert_eq!(fates[0], PacketFate::Delivered, "the VM's SYN: its verdict stands");
    assert_eq!(fates[1], PacketFate::BlockedAtEgress, "its reply: the flow was not tracked");
    for data in &established {
        assert_eq!(h.transmit(sw, EXTERNAL_PORT, 7, data), PacketFate::Delivered);
    }
    assert_eq!(fates[2], PacketFate::Delivered, "the VM's own next segment: tracked now");
    // With pool again, the table took one bounded step (a slab segment of 8 KiB).
    let (fates, _) = traffic::vm_handshake(&mut h, sw, 7, &connection(65));
    assert_eq!(fates, [PacketFate::Delivered; 3]);
    let grown: Vec<usize> = driver
        .session()
        .pool_live()
        .iter()
        .filter(|b| !before.contains(&b.0))
        .map(|b| b.1)
        .collect();
    assert!(!grown.is_empty() && grown.iter().all(|&n| n <= 16 * 1024), "steps: {grown:?}");
    assert!(driver.session().pool_allocations() > pool, "the image's flows come from the pool");
    h.delete_switch(sw);
    unload_clean(&driver, &h);
}

#[test]
fn a_save_and_a_pended_restore_complete_from_the_work_item_and_etw_reports_both() {
    let mut h = Host::new(5);
    let driver = started(&[("DefaultMode", 1), ("RestoreMode", 0)], &h);
    let sw = h.create_switch("SW", &[]);
    vm_port(&mut h, sw, 5, "vm-five");
    for k in 0..3 {
        let syn =
            traffic::vm_syn(IpFamily::V4, 5, 30_000 + k, remote_addr(IpFamily::V4, 7, false), 443);
        assert_eq!(h.transmit(sw, 5, EXTERNAL_PORT, &syn), PacketFate::Delivered);
    }
    let (blobs, _) = h.save(sw, 5);
    assert_eq!(blobs.len(), 1);
    assert_eq!(h.delete_port(sw, 5), sys::STATUS_SUCCESS);
    assert_eq!(h.create_port(sw, 5, "vm-five", true), sys::STATUS_SUCCESS);
    let tickets = h.restore(sw, 5, &blobs);
    assert_eq!(tickets.len(), 1);
    assert_eq!(tickets[0].returned, sys::STATUS_PENDING, "RestoreMode 0: the image pends");
    assert_eq!(h.restore_status(&tickets[0]), None, "not completed before the work item runs");
    assert!(h.within(|| driver.session().run_work_items()) >= 1, "the work item ran");
    assert_eq!(h.restore_status(&tickets[0]), Some(sys::STATUS_SUCCESS), "completed from it");
    let save = events(&driver, "RuntimeStateSave");
    let save = save.first().expect("save event");
    assert_eq!(save.provider, PROVIDER);
    assert_eq!(save.field("Port"), Some(&EtwValue::U32(5)));
    assert_eq!(save.field("Status"), Some(&EtwValue::I32(0)));
    assert_eq!(save.field("FlowsSaved"), Some(&EtwValue::U32(3)));
    assert!(
        matches!(save.field("Bytes"), Some(EtwValue::U32(n)) if *n as usize == blobs[0].1.len())
    );
    let restore = events(&driver, "RuntimeStateRestore");
    let restore = restore.first().expect("restore event");
    assert_eq!(restore.field("Outcome"), Some(&EtwValue::Str("Applied")));
    assert_eq!(restore.keyword, 0x1, "KEYWORD_MIGRATION");
    assert_eq!(restore.level, 4, "Informational");
    h.delete_switch(sw);
    unload_clean(&driver, &h);
}

#[test]
fn a_damaged_blob_is_a_degraded_restore_at_error_level_the_port_enforces_and_the_vm_still_migrates()
{
    let mut h = Host::new(6);
    let driver = started(&[], &h);
    let sw = h.create_switch("SW", &[]);
    assert_eq!(h.create_port(sw, 9, "vm-nine", true), sys::STATUS_SUCCESS);
    let tickets = h.restore(sw, 9, &[(Some(vsflow_callout::keys::PROVIDER_KEY), vec![0xA5; 40])]);
    if tickets.first().is_some_and(|t| t.returned == sys::STATUS_PENDING) {
        h.within(|| driver.session().run_work_items());
    }
    assert_eq!(
        tickets.first().and_then(|t| h.restore_status(t)),
        Some(sys::STATUS_SUCCESS),
        "migration never fails"
    );
    let restore = events(&driver, "RuntimeStateRestore");
    let restore = restore.first().expect("restore event");
    assert_eq!(restore.field("Outcome"), Some(&EtwValue::Str("Degraded")));
    assert_eq!(restore.field("Reason"), Some(&EtwValue::Str("Damaged")));
    assert_eq!(restore.level, 2, "Error: every degraded restore is traced at error level");
    let (status, bytes) = call(&driver, &h, &Request::ListPorts, 1 << 20);
    assert_eq!(status, 0);
    let mut modes = Vec::new();
    vsflow_proto::response::decode_ports(&bytes, |p| modes.push((p.port.port_id, p.mode)))
        .expect("ports decode");
    assert_eq!(modes, vec![(9, vsflow_core::Mode::Enforce)], "never Monitor by accident");
    h.delete_switch(sw);
    unload_clean(&driver, &h);
}

#[test]
fn bfe_start_stop_and_restart_register_the_callouts_each_time_and_etw_reports_the_states() {
    let mut h = Host::with_bfe_stopped(7);
    let driver = started(&[], &h);
    assert!(h.callout_flags().is_empty(), "nothing registered while BFE is stopped");
    h.start_bfe();
    assert_eq!(h.callout_flags().len(), 4, "registered once BFE runs");
    h.stop_bfe();
    h.start_bfe();
    assert_eq!(h.callout_flags().len(), 4, "registered again after a restart");
    let states: Vec<_> = events(&driver, "BfeStateChange")
        .iter()
        .filter_map(|e| match e.field("State") {
            Some(EtwValue::U32(s)) => Some(*s),
            _ => None,
        })
        .collect();
    assert_eq!(states.last(), Some(&sys::FWPM_SERVICE_RUNNING));
    assert!(states.len() >= 2, "states reported: {states:?}");
    unload_clean(&driver, &h);
}

#[test]
fn the_periodic_timer_runs_the_images_dpc_and_expires_idle_flows() {
    let mut h = Host::new(8);
    let driver = started(&[], &h);
    assert_eq!(driver.session().timers().len(), 1);
    let sw = h.create_switch("SW", &[]);
    vm_port(&mut h, sw, 5, "vm-five");
    for k in 0..20 {
        let syn =
            traffic::vm_syn(IpFamily::V4, 5, 30_000 + k, remote_addr(IpFamily::V4, 7, false), 443);
        let _ = h.transmit(sw, 5, EXTERNAL_PORT, &syn);
    }
    assert_eq!(flow_states(&driver, &h, 5).len(), 20);
    let fired = h.within(|| driver.session().advance(2 * 3600 * SECOND));
    assert!(fired >= 7200, "fired {fired} times");
    assert_eq!(flow_states(&driver, &h, 5), [], "idle flows expired");
    h.delete_switch(sw);
    unload_clean(&driver, &h);
}

#[test]
fn the_images_seed_comes_from_cng_sys_bcrypt_gen_random_and_a_failure_is_logged() {
    // driver/src/random.rs through the image's import of cng.sys!BCryptGenRandom.
    let h = Host::new(9);
    let driver = started(&[], &h);
    assert!(driver.session().calls().contains(&"BCryptGenRandom"));
    unload_clean(&driver, &h);
    drop(driver);
    let h = Host::new(10);
    let driver = loaded(&[]);
    driver.session().fail_rng();
    assert_eq!(h.within(|| driver.driver_entry()), 0, "the driver loads without the RNG");
    assert!(
        driver
            .session()
            .debug_output()
            .iter()
            .any(|(_, level, text)| *level == 0 && text.contains("BCryptGenRandom failed")),
        "{:?}",
        driver.session().debug_output()
    );
    unload_clean(&driver, &h);
}

#[test]
fn callout_flags_follow_the_build_rtl_get_version_reports() {
    let all = sys::FWP_CALLOUT_FLAG_ALLOW_RSC
        | sys::FWP_CALLOUT_FLAG_ALLOW_USO
        | sys::FWP_CALLOUT_FLAG_ALLOW_URO;
    for (build, expected) in [(26_100, all), (17_763, sys::FWP_CALLOUT_FLAG_ALLOW_RSC)] {
        let h = Host::new(9);
        let driver = loaded(&[]);
        driver.session().set_os_build(build);
        assert_eq!(h.within(|| driver.driver_entry()), 0);
        let flags = h.callout_flags();
        assert_eq!(flags.len(), 4);
        assert!(flags.iter().all(|f| *f == expected), "build {build}: {flags:x?}");
        unload_clean(&driver, &h);
    }
}

#[test]
fn debugger_output_goes_to_dpfltr_ihvnetwork_id_and_the_provider_is_named_by_its_traits() {
    let h = Host::new(10);
    let driver = started(&[], &h);
    let out = driver.session().debug_output();
    assert!(!out.is_empty());
    assert!(
        out.iter().all(|(component, _, text)| *component == 80 && text.starts_with("vsflow: "))
    );
    let guid = tracelogging::Guid::from_name(PROVIDER);
    assert_eq!(driver.session().etw_providers(), [(PROVIDER, guid.to_bytes_le())]);
    unload_clean(&driver, &h);
}

#[test]
fn a_failed_driver_entry_unbinds_and_leaves_no_provider_no_objects_and_no_pool() {
    use vsflow_sim::kernel::faults::{self, Site};
    let h = Host::new(11);
    let driver = loaded(&[]);
    // The first filter-engine call fails: the driver's start fails.
    faults::arm(h.id(), Some(Site::Engine), 1);
    let status = h.within(|| driver.driver_entry());
    faults::disarm();
    assert!(status < 0, "DriverEntry fails: {status:#x}");
    let s = driver.session();
    assert_eq!(s.violations(), Vec::<Violation>::new());
    assert!(s.etw_providers().is_empty());
    assert!(s.live_objects().is_empty());
    assert_eq!(s.pool_live(), Vec::new(), "every block freed");
    assert_eq!(s.calls().last(), Some(&"WdfVersionUnbind"), "the stub unbinds a failed driver");
    assert!(!sys_loader::shims::wdfldr::is_bound());
    assert!(h.engine_objects().callouts.is_empty());
}

#[test]
fn a_foreign_filter_is_refused_by_the_images_notify_fn_and_reported_through_etw() {
    use vsflow_callout::keys::HOOKS;
    use vsflow_sim::wfp::foreign::{ForeignAction, ForeignProcess};
    let h = Host::new(12);
    let driver = started(&[], &h);
    {
        let mut other = ForeignProcess::open(h.id());
        let sub = other.add_sublayer(0x8000);
        let hook = HOOKS[0];
        let status =
            other.add_filter(hook.layer, sub, ForeignAction::Callout(hook.callout), 0, 0xDEAD);
        assert!(status < 0, "notifyFn refuses it");
    }
    let rejected = events(&driver, "ForeignFilterRejected");
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].keyword, 0x4, "KEYWORD_POLICY");
    assert!(matches!(rejected[0].field("LayerId"), Some(EtwValue::U16(_))));
    unload_clean(&driver, &h);
}

#[test]
fn the_images_large_frames_probe_the_stack_through_chkstk_and_keep_running() {
    let mut h = Host::new(13);
    let driver = loaded(&[("DefaultMode", 1)]);
    // Read while this test holds the session: no other image runs until it is dropped.
    let before = sys_loader::shims::kernel::crt::chkstk_calls();
    assert_eq!(h.within(|| driver.driver_entry()), 0);
    let sw = h.create_switch("SW", &[]);
    vm_port(&mut h, sw, 5, "vm-five");
    let syn = traffic::vm_syn(IpFamily::V4, 5, 30_000, remote_addr(IpFamily::V4, 7, false), 443);
    assert_eq!(h.transmit(sw, 5, EXTERNAL_PORT, &syn), PacketFate::Delivered);
    let (blobs, _) = h.save(sw, 5);
    assert_eq!(blobs.len(), 1);
    let _ = call(&driver, &h, &Request::ListPorts, 1 << 20);
    h.delete_switch(sw);
    unload_clean(&driver, &h);
    assert!(
        sys_loader::shims::kernel::crt::chkstk_calls() > before,
        "__chkstk ran (size in RAX, registers preserved) and the callers carried on"
    );
}
