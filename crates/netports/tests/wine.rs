//! netports' Windows code against the Wine test doubles (`tests/wine-doubles/`: iphlpapi and
//! fwpuclnt built with mingw, loaded "native" from the Wine prefix's system32, so the
//! production loader finds them like the real DLLs).
//!
//! `cargo xtask wine` builds this test for x86_64-pc-windows-gnu and runs each test in its own
//! Wine process (the doubles and the byte-order cache are per process) with
//! `NETPORTS_WINE_DOUBLES=1`. Elsewhere on Windows (no doubles) every test says so and passes
//! without checking anything; with `NETPORTS_WINE_DOUBLES=1` a missing double is a failure.
//! The doubles' behaviours and their sources: docs/SIMULATOR-FIDELITY.md, "Wine doubles".

#![cfg(windows)]
#![allow(
    clippy::missing_transmute_annotations,
    reason = "each transmute target is spelled out in the accessor's return type"
)]

use std::ffi::CStr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netports::cli;
use netports::exception::TeredoException;
use netports::model::Reservations;
use netports::teredo::TeredoEvent;
use netports::win::host_filter::WfpHostFilters;
use netports::win::persistent::WindowsReservations;
use netports::win::teredo::{Source, TeredoWatcher, teredo_port};
use netports::win::{WindowsPlatform, runtime};
use netports::{Error, PortBlock, Protocol};
use windows_sys::Win32::System::LibraryLoader::{GetProcAddress, LoadLibraryW};

/// A test control the double exports (`None`: not running against the doubles).
fn control(dll: &str, name: &CStr) -> Option<usize> {
    let wide: Vec<u16> = dll.encode_utf16().chain(std::iter::once(0)).collect();
    // SAFETY: a NUL-terminated name; the module stays loaded for the process.
    let module = unsafe { LoadLibraryW(wide.as_ptr()) };
    if module.is_null() {
        return None;
    }
    // SAFETY: a loaded module and a NUL-terminated name.
    unsafe { GetProcAddress(module, name.as_ptr().cast()) }.map(|f| f as usize)
}

/// The doubles' controls, or `None` (then the test has nothing to check here).
struct Doubles {
    set_teredo_port: unsafe extern "system" fn(u16, u32),
    configure: unsafe extern "system" fn(i32, i32, i32),
    add_endpoint: unsafe extern "system" fn(i32, i32, u16, u32),
    own_endpoint: unsafe extern "system" fn(i32, u16, u32),
    registrations: unsafe extern "system" fn() -> u32,
    initial_inline: unsafe extern "system" fn(i32),
    fwp_configure: unsafe extern "system" fn(i32, i32),
    fwp_set_teredo_port: unsafe extern "system" fn(u16),
    fwp_set_teredo_ports: unsafe extern "system" fn(*const u16, u32),
    fwp_filters: unsafe extern "system" fn(*mut FilterInfo, u32) -> u32,
    fwp_subscriptions: unsafe extern "system" fn() -> u32,
    fwp_objects: unsafe extern "system" fn(*mut u32, *mut u32),
    fwp_commits: unsafe extern "system" fn() -> u32,
    fwp_gets: unsafe extern "system" fn() -> u32,
    fwp_fail_filter_add: unsafe extern "system" fn(u32),
    fwp_bfe: unsafe extern "system" fn(i32),
}

/// `FILTER_INFO` of the fwpuclnt double.
#[repr(C)]
#[derive(Clone, Copy)]
struct FilterInfo {
    layer: u32,
    proto: u32,
    local_port: u32,
    remote_port: u32,
    local_addr: u32,
    session: u32,
    app_id_len: u32,
    app_id: [u16; 260],
    user_len: u32,
    user: [u8; 256],
}

/// Where a permit filter is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    RecvAcceptV4,
    RecvAcceptV6,
    ConnectV4,
    ConnectV6,
}

/// A permit filter as the double holds it: layer, protocol, local port, remote port, local
/// address (0: no such condition), the application id as text, and the DACL of its
/// `FWPM_CONDITION_ALE_USER_ID` security descriptor in SDDL (empty: no such condition).
type Permit = (Layer, u32, u16, u16, std::net::Ipv4Addr, String, String);

/// A double's control as a typed function pointer.
macro_rules! ctl {
    ($dll:literal, $name:literal) => {{
        let addr = control($dll, $name)?;
        // SAFETY: the export has the signature the field declares (tests/wine-doubles/*.c).
        unsafe { std::mem::transmute::<usize, _>(addr) }
    }};
}

fn doubles() -> Option<Doubles> {
    let found = (|| {
        Some(Doubles {
            set_teredo_port: ctl!("iphlpapi.dll", c"DoubleSetTeredoPort"),
            configure: ctl!("iphlpapi.dll", c"DoubleConfigure"),
            add_endpoint: ctl!("iphlpapi.dll", c"DoubleAddEndpoint"),
            own_endpoint: ctl!("iphlpapi.dll", c"DoubleOwnEndpoint"),
            registrations: ctl!("iphlpapi.dll", c"DoubleRegistrations"),
            initial_inline: ctl!("iphlpapi.dll", c"DoubleInitialInline"),
            fwp_configure: ctl!("fwpuclnt.dll", c"DoubleFwpConfigure"),
            fwp_set_teredo_port: ctl!("fwpuclnt.dll", c"DoubleFwpSetTeredoPort"),
            fwp_set_teredo_ports: ctl!("fwpuclnt.dll", c"DoubleFwpSetTeredoPorts"),
            fwp_filters: ctl!("fwpuclnt.dll", c"DoubleFwpFilters"),
            fwp_subscriptions: ctl!("fwpuclnt.dll", c"DoubleFwpSubscriptions"),
            fwp_objects: ctl!("fwpuclnt.dll", c"DoubleFwpObjects"),
            fwp_commits: ctl!("fwpuclnt.dll", c"DoubleFwpCommits"),
            fwp_gets: ctl!("fwpuclnt.dll", c"DoubleFwpGets"),
            fwp_fail_filter_add: ctl!("fwpuclnt.dll", c"DoubleFwpFailFilterAdd"),
            fwp_bfe: ctl!("fwpuclnt.dll", c"DoubleFwpBfe"),
        })
    })();
    if found.is_none() {
        assert!(
            std::env::var_os("NETPORTS_WINE_DOUBLES").is_none(),
            "NETPORTS_WINE_DOUBLES is set but the doubles are not loaded (WINEDLLOVERRIDES, system32)"
        );
        eprintln!("no Wine doubles here: nothing to check");
    }
    found
}

impl Doubles {
    fn teredo(&self, port: u16) {
        // SAFETY: a control of the double.
        unsafe { (self.set_teredo_port)(port, 4242) };
        // SAFETY: as above.
        unsafe { (self.fwp_set_teredo_port)(port) };
    }
    fn configure(&self, elevated: bool, ipv6: bool, network_order: bool) {
        // SAFETY: a control of the double.
        unsafe { (self.configure)(elevated.into(), ipv6.into(), network_order.into()) };
        // SAFETY: as above.
        unsafe { (self.fwp_configure)(elevated.into(), network_order.into()) };
    }
    fn registrations(&self) -> u32 {
        // SAFETY: a control of the double.
        let iphlp = unsafe { (self.registrations)() };
        // SAFETY: as above.
        let fwp = unsafe { (self.fwp_subscriptions)() };
        iphlp + fwp
    }
    /// Every permit filter, sorted.
    fn filters(&self) -> Vec<Permit> {
        let blank = FilterInfo {
            layer: 0,
            proto: 0,
            local_port: 0,
            remote_port: 0,
            local_addr: 0,
            session: 0,
            app_id_len: 0,
            app_id: [0; 260],
            user_len: 0,
            user: [0; 256],
        };
        let mut out = vec![blank; 64];
        // SAFETY: a buffer of 64 entries.
        let n = unsafe { (self.fwp_filters)(out.as_mut_ptr(), 64) } as usize;
        let mut v: Vec<Permit> = out[..n.min(64)]
            .iter()
            .map(|f| {
                let layer =
                    [Layer::RecvAcceptV4, Layer::RecvAcceptV6, Layer::ConnectV4, Layer::ConnectV6]
                        [f.layer as usize];
                let units = (f.app_id_len as usize / 2).min(260);
                let app =
                    String::from_utf16_lossy(&f.app_id[..units]).trim_end_matches('\0').to_owned();
                let user = if f.user_len == 0 { String::new() } else { dacl_sddl(&f.user) };
                (
                    layer,
                    f.proto,
                    u16::try_from(f.local_port).unwrap(),
                    u16::try_from(f.remote_port).unwrap(),
                    std::net::Ipv4Addr::from(f.local_addr),
                    app,
                    user,
                )
            })
            .collect();
        v.sort();
        v
    }
    /// (providers, sublayers) alive in the engine.
    fn objects(&self) -> (u32, u32) {
        let (mut p, mut s) = (0, 0);
        // SAFETY: a control of the double; valid out-pointers.
        unsafe { (self.fwp_objects)(&raw mut p, &raw mut s) };
        (p, s)
    }
    /// Explicit transactions committed so far.
    fn commits(&self) -> u32 {
        // SAFETY: a control of the double.
        unsafe { (self.fwp_commits)() }
    }
    /// BFE stops (its engine drops every session, object and subscription, and the service
    /// stops) or runs again.
    fn bfe(&self, running: bool) {
        if running {
            bfe_service(true);
        }
        // SAFETY: a control of the double.
        unsafe { (self.fwp_bfe)(running.into()) };
        if !running {
            bfe_service(false);
        }
    }
    /// Whether a watch on the system-ports source has read its initial ports (subscribed, then
    /// `FwpmSystemPortsGet0`).
    fn watch_started(&self) -> bool {
        // SAFETY: controls of the double.
        self.registrations() == 1 && unsafe { (self.fwp_gets)() } >= 1
    }
    /// The `nth` next `FwpmFilterAdd0` fails.
    fn fail_filter_add(&self, nth: u32) {
        // SAFETY: a control of the double.
        unsafe { (self.fwp_fail_filter_add)(nth) };
    }
}

/// The Teredo service's application id as the double gives it (`FwpmGetAppIdFromFileName0`
/// of `%SystemRoot%\System32\svchost.exe`, the process hosting `iphlpsvc`).
const SVCHOST: &str = r"\device\harddiskvolume1\windows\system32\svchost.exe";

/// The `FWPM_CONDITION_ALE_USER_ID` DACL that scopes a filter to the Teredo service: every
/// `svchost.exe` has the app id above, whichever services it hosts, so only the service SID of
/// `iphlpsvc` (`NT SERVICE\iphlpsvc`, in that service's token) tells the Teredo service's
/// sockets apart; `FWP_ACTRL_MATCH_FILTER` (0x1, written `CC`) granted to it.
const IPHLPSVC_ONLY: &str =
    "D:(A;;CC;;;S-1-5-80-62724632-2456781206-3863850748-1496050881-1042387526)";

/// The DACL part (from `D:`) of a self-relative security descriptor, in SDDL.
fn dacl_sddl(sd: &[u8]) -> String {
    use windows_sys::Win32::Foundation::{HLOCAL, LocalFree};
    use windows_sys::Win32::Security::Authorization::{
        ConvertSecurityDescriptorToStringSecurityDescriptorW, SDDL_REVISION_1,
    };
    use windows_sys::Win32::Security::DACL_SECURITY_INFORMATION;
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: a self-relative descriptor (the double checked its header) and a valid
    // out-pointer; the length is optional.
    let ok = unsafe {
        ConvertSecurityDescriptorToStringSecurityDescriptorW(
            sd.as_ptr().cast_mut().cast(),
            SDDL_REVISION_1,
            DACL_SECURITY_INFORMATION,
            &raw mut text,
            std::ptr::null_mut(),
        )
    };
    assert_ne!(ok, 0, "the ALE_USER_ID descriptor converts to SDDL");
    let mut len = 0;
    // SAFETY: a NUL-terminated string from the conversion; reading stops at the NUL.
    while unsafe { text.wrapping_add(len).read() } != 0 {
        len += 1;
    }
    // SAFETY: `len` units were just read.
    let s = String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(text, len) });
    // SAFETY: allocated by the conversion with LocalAlloc, freed once.
    unsafe { LocalFree(text as HLOCAL) };
    s
}

/// The host Teredo filters netports must keep for client port `port`: all IPv4 UDP, all for
/// the Teredo service only (svchost.exe's app id and the `iphlpsvc` service SID).
fn teredo_filters(ports: &[u16]) -> Vec<Permit> {
    let none = std::net::Ipv4Addr::UNSPECIFIED;
    let teredo = || (SVCHOST.to_owned(), IPHLPSVC_ONLY.to_owned());
    let permit = |layer, local, remote, address, (app, user): (String, String)| {
        (layer, 17, local, remote, address, app, user)
    };
    let mut v = vec![
        // The client qualifies with the Teredo server's UDP 3544 (remote).
        permit(Layer::ConnectV4, 0, 3544, none, teredo()),
        // Local 3544 only for the IPv4 multicast discovery group 224.0.0.253.
        permit(Layer::RecvAcceptV4, 3544, 0, std::net::Ipv4Addr::new(224, 0, 0, 253), teredo()),
    ];
    for &p in ports {
        v.push(permit(Layer::RecvAcceptV4, p, 0, none, teredo()));
        v.push(permit(Layer::ConnectV4, p, 0, none, teredo()));
    }
    v.sort();
    v
}

/// Starts or stops the BFE service stand-in and waits for it.
fn bfe_service(running: bool) {
    service("BFE", running);
}

/// Starts or stops a service stand-in (tests/wine-doubles/service.c) and waits for it; its
/// process id while it runs.
fn service(name: &str, running: bool) -> u32 {
    use windows_sys::Win32::System::Services::{
        CloseServiceHandle, ControlService, OpenSCManagerW, OpenServiceW, QueryServiceStatusEx,
        SC_MANAGER_CONNECT, SC_STATUS_PROCESS_INFO, SERVICE_CONTROL_STOP, SERVICE_QUERY_STATUS,
        SERVICE_RUNNING, SERVICE_START, SERVICE_STATUS, SERVICE_STATUS_PROCESS, SERVICE_STOP,
        SERVICE_STOPPED, StartServiceW,
    };
    let wide: Vec<u16> = name.encode_utf16().chain(std::iter::once(0)).collect();
    // (Wine sometimes reports a manager handle invalid while another thread opens one: the
    // open is retried, as netports' own service code does.)
    let (mut scm, mut svc) = (std::ptr::null_mut(), std::ptr::null_mut());
    for _ in 0..5 {
        // SAFETY: local manager, default database.
        scm = unsafe { OpenSCManagerW(std::ptr::null(), std::ptr::null(), SC_MANAGER_CONNECT) };
        if scm.is_null() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        // SAFETY: an open manager and a NUL-terminated name.
        svc = unsafe {
            OpenServiceW(scm, wide.as_ptr(), SERVICE_START | SERVICE_STOP | SERVICE_QUERY_STATUS)
        };
        if !svc.is_null() {
            break;
        }
        // SAFETY: the manager opened above, closed once.
        unsafe { CloseServiceHandle(scm) };
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!svc.is_null(), "the {name} stand-in is registered (cargo xtask wine)");
    if running {
        // SAFETY: an open service; no arguments.
        if unsafe { StartServiceW(svc, 0, std::ptr::null()) } == 0 {
            // SAFETY: reads this thread's last error, set by the failed call above.
            let error = unsafe { windows_sys::Win32::Foundation::GetLastError() };
            // (Running already is what the caller wants.)
            assert_eq!(
                error,
                windows_sys::Win32::Foundation::ERROR_SERVICE_ALREADY_RUNNING,
                "StartService({name}) failed with error {error}"
            );
        }
    } else {
        let mut status = SERVICE_STATUS::default();
        // SAFETY: an open service and a valid status buffer.
        unsafe { ControlService(svc, SERVICE_CONTROL_STOP, &raw mut status) };
    }
    let want = if running { SERVICE_RUNNING } else { SERVICE_STOPPED };
    let mut status = SERVICE_STATUS_PROCESS::default();
    // A generous bound: the start or stop is one process on a machine that may be busy.
    wait_for("the stand-in's state", Duration::from_secs(30), || {
        let mut needed = 0u32;
        // SAFETY: an open service and a buffer of the size given.
        unsafe {
            QueryServiceStatusEx(
                svc,
                SC_STATUS_PROCESS_INFO,
                (&raw mut status).cast(),
                u32::try_from(size_of::<SERVICE_STATUS_PROCESS>()).unwrap(),
                &raw mut needed,
            )
        };
        status.dwCurrentState == want
    });
    // SAFETY: the handles opened above, closed once.
    unsafe { CloseServiceHandle(svc) };
    // SAFETY: as above.
    unsafe { CloseServiceHandle(scm) };
    status.dwProcessId
}

/// Stops a service stand-in when dropped.
struct Stops(&'static str);

impl Drop for Stops {
    fn drop(&mut self) {
        service(self.0, false);
    }
}

/// Starts BFE again when dropped (a failing test must not leave it stopped for the next).
struct BfeBack<'a>(&'a Doubles);

impl Drop for BfeBack<'_> {
    fn drop(&mut self) {
        self.0.bfe(true);
    }
}

fn recv(rx: &mpsc::Receiver<TeredoEvent>) -> TeredoEvent {
    rx.recv_timeout(Duration::from_secs(10)).expect("an event within 10 s")
}

fn wait_until(what: &str, f: impl FnMut() -> bool) {
    wait_for(what, Duration::from_secs(10), f);
}

/// Polls `f` every 20 ms until it holds; panics after `limit`.
fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(args: &[&str]) -> (u8, String, String) {
    let args: Vec<String> =
        std::iter::once("netports").chain(args.iter().copied()).map(str::to_owned).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::run(&args, &mut WindowsPlatform::default(), &mut out, &mut err);
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

fn watcher_follows_changes_and_stops(source: Source) {
    watcher_follows_changes_in_order(source, true);
}

/// The watcher from `source`, whose ports the doubles report in network order or not (the
/// order is undocumented: netports settles it against the UDP endpoint table).
fn watcher_follows_changes_in_order(source: Source, network_order: bool) {
    let Some(d) = doubles() else { return };
    d.configure(false, true, network_order);
    d.teredo(51_234);
    let (tx, rx) = mpsc::channel();
    let w = TeredoWatcher::start_from(source, move |ev| {
        let _ = tx.send((ev, std::thread::current().id()));
    })
    .unwrap();
    let (tx2, rx2) = mpsc::channel();
    let me = std::thread::current().id();
    std::thread::spawn(move || {
        while let Ok((ev, thread)) = rx.recv() {
            let _ = tx2.send((ev, thread));
        }
    });
    let (first, _) = rx2.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(first, TeredoEvent::Initial { ports: vec![51_234] });
    d.teredo(52_000);
    let (ev, thread) = rx2.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(ev, TeredoEvent::Changed { ports: vec![52_000] });
    assert_ne!(thread, me, "changes arrive on the notification thread");
    d.teredo(0);
    assert_eq!(
        rx2.recv_timeout(Duration::from_secs(10)).unwrap().0,
        TeredoEvent::Changed { ports: vec![] }
    );
    assert_eq!(d.registrations(), 1);
    drop(w);
    assert_eq!(d.registrations(), 0, "dropping the watcher ends the registration");
}

#[test]
fn the_notify_teredo_port_change_watcher_starts_follows_and_stops() {
    watcher_follows_changes_and_stops(Source::TeredoChange);
}

#[test]
fn the_watcher_copes_with_an_initial_notification_before_registration_returns() {
    let Some(d) = doubles() else { return };
    // Undocumented when "immediately after the registration completes" is: here, on the
    // registering thread before NotifyTeredoPortChange returns.
    // SAFETY: a control of the double.
    unsafe { (d.initial_inline)(1) };
    watcher_follows_changes_and_stops(Source::TeredoChange);
}

#[test]
fn the_notify_teredo_port_change_watcher_reads_ports_reported_in_host_order() {
    watcher_follows_changes_in_order(Source::TeredoChange, false);
}

#[test]
fn the_system_ports_watcher_reads_ports_reported_in_host_order() {
    watcher_follows_changes_in_order(Source::SystemPorts, false);
}

#[test]
fn the_system_ports_watcher_starts_follows_and_stops() {
    watcher_follows_changes_and_stops(Source::SystemPorts);
}

fn dropped_from_its_own_callback(source: Source) {
    let Some(d) = doubles() else { return };
    d.configure(false, true, true);
    d.teredo(51_234);
    let slot: Arc<Mutex<Option<TeredoWatcher>>> = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel();
    let inner = Arc::clone(&slot);
    let w = TeredoWatcher::start_from(source, move |ev| {
        if let TeredoEvent::Changed { .. } = ev {
            // Dropping here would call CancelMibChangeNotify2 on the callback's own thread
            // (the double ends the process with exit code 86 if it does).
            let taken = inner.lock().unwrap().take();
            drop(taken);
        }
        let _ = tx.send(ev);
    })
    .unwrap();
    *slot.lock().unwrap() = Some(w);
    assert!(matches!(recv(&rx), TeredoEvent::Initial { .. }));
    d.teredo(52_000);
    assert_eq!(recv(&rx), TeredoEvent::Changed { ports: vec![52_000] });
    wait_until("the registration ends on another thread", || d.registrations() == 0);
}

#[test]
fn a_watcher_dropped_from_its_own_callback_cancels_on_another_thread() {
    dropped_from_its_own_callback(Source::TeredoChange);
}

#[test]
fn a_system_ports_watcher_dropped_from_its_own_callback_unsubscribes_on_another_thread() {
    dropped_from_its_own_callback(Source::SystemPorts);
}

#[test]
fn the_byte_order_is_settled_against_the_teredo_services_endpoint() {
    let Some(d) = doubles() else { return };
    // GetTeredoPort reports host order here: the UDP table (network order, documented) says
    // which reading is right.
    d.configure(false, true, false);
    // SAFETY: a control of the double (iphlpapi only: the system-ports list has no Teredo entry).
    unsafe { (d.set_teredo_port)(51_234, 4242) };
    assert_eq!(teredo_port().map(|r| r.ports), Ok(vec![51_234]));
}

#[test]
fn teredo_errors_map_to_exit_codes() {
    let Some(d) = doubles() else { return };
    d.configure(false, true, true);
    let (code, _, err) = run(&["teredo", "port"]);
    assert_eq!(
        (code, err.as_str()),
        (
            6,
            "netports: the Teredo client is not started (it starts with IPv6 connectivity needs; `netsh interface teredo show state`)\n"
        )
    );
    d.configure(false, false, true);
    let (code, _, err) = run(&["teredo", "port"]);
    assert_eq!(
        (code, err.as_str()),
        (3, "netports: no IPv6 stack on this host: Teredo is unavailable\n")
    );
    d.configure(false, true, true);
    d.teredo(40_000);
    assert_eq!(
        run(&["teredo", "port"]).1,
        "teredo client port: udp 40000 (static port udp 3544; byte order: network, from a UDP socket not known to be the Teredo service's (not confirmed))\n",
        "iphlpsvc does not run here: the Teredo socket (pid 4242) is a hint only"
    );
}

#[test]
fn persistent_reservations_round_trip_with_the_documented_errors() {
    let Some(d) = doubles() else { return };
    let b = |s, n| PortBlock::new(s, n).unwrap();
    let mut r = WindowsReservations;
    d.configure(false, true, true);
    assert_eq!(r.create(Protocol::Tcp, b(50_000, 10)), Err(5), "ERROR_ACCESS_DENIED");
    let (code, _, err) = run(&["reserve", "tcp", "50000", "10"]);
    assert_eq!(code, 4);
    assert!(err.contains("run from an elevated prompt"), "{err}");
    d.configure(true, true, true);
    let token = r.create(Protocol::Tcp, b(50_000, 10)).unwrap();
    assert_eq!(
        r.lookup(Protocol::Tcp, b(50_000, 10)),
        Ok(token),
        "start port went out in network order and came back"
    );
    assert_eq!(
        r.lookup(Protocol::Tcp, b(50_000, 9)),
        Err(1168),
        "ERROR_NOT_FOUND: exact match only"
    );
    assert_eq!(r.create(Protocol::Tcp, b(50_005, 2)), Err(32), "ERROR_SHARING_VIOLATION: overlap");
    assert!(r.create(Protocol::Udp, b(50_005, 2)).is_ok(), "protocols are separate");
    // SAFETY: a control of the double: TCP 6001 in use.
    unsafe { (d.add_endpoint)(0, 0, 6001, 1) };
    let (code, _, err) = run(&["reserve", "tcp", "6000", "5"]);
    assert_eq!((code, err.starts_with("netports: conflict")), (5, true), "{err}");
    let (code, out, _) = run(&["lookup", "tcp", "50000", "10"]);
    assert_eq!((code, out), (0, format!("tcp 50000-50009: token {token:#018x}\n")));
    assert_eq!(run(&["release", "tcp", "50000", "10"]).0, 0);
    let (code, _, err) = run(&["release", "tcp", "50000", "10"]);
    assert_eq!((code, err.contains("not found")), (6, true));
}

#[test]
fn why_blocked_names_the_owner_from_the_endpoint_table() {
    let Some(d) = doubles() else { return };
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    // Wine's tables list the socket (it is real) but know no owner: the test names it.
    // SAFETY: a control of the double: the owner of TCP `port`'s real sockets.
    unsafe { (d.own_endpoint)(0, port, std::process::id()) };
    let (code, out, err) = run(&["why-blocked", &port.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("tcp {port} is in use (bind fails with WSAEADDRINUSE on ")),
        "{out}"
    );
    assert!(out.contains(&format!("held by pid {} (", std::process::id())), "{out}");
    assert!(out.contains(".exe)"), "the process name is read: {out}");
    drop(held);
    // The socket is gone from the tables with the socket itself.
    let (_, out, _) = run(&["why-blocked", &port.to_string()]);
    assert!(out.starts_with(&format!("tcp {port} is free")), "{out}");
}

#[test]
fn the_endpoint_tables_list_the_real_sockets() {
    let Some(d) = doubles() else { return };
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let (tp, up) = (tcp.local_addr().unwrap().port(), udp.local_addr().unwrap().port());
    let listed = |proto| -> Vec<u16> {
        netports::win::tables::endpoints(proto).unwrap().into_iter().map(|e| e.port).collect()
    };
    assert!(listed(Protocol::Tcp).contains(&tp), "a listening TCP socket is in the TCP table");
    assert!(listed(Protocol::Udp).contains(&up), "a bound UDP socket is in the UDP table");
    // ERROR_SHARING_VIOLATION: "a port in the block is in use" counts real sockets too.
    d.configure(true, true, true);
    let block = PortBlock::new(tp, 1).unwrap();
    assert_eq!(WindowsReservations.create(Protocol::Tcp, block), Err(32));
    drop((tcp, udp));
    assert!(!listed(Protocol::Tcp).contains(&tp), "closed: gone from the table");
    assert!(!listed(Protocol::Udp).contains(&up));
}

#[test]
fn the_host_teredo_filters_are_ipv4_for_the_teredo_service_and_follow_the_port() {
    let Some(d) = doubles() else { return };
    d.configure(false, true, true);
    assert!(
        matches!(WfpHostFilters::open(), Err(Error::AccessDenied)),
        "filters need an administrator"
    );
    d.configure(true, true, true);
    let mut keeper = TeredoException::new(WfpHostFilters::open().unwrap());
    // (Opening adds the run's provider and sublayer in a transaction of its own.)
    let commits = d.commits();
    keeper.on_event(&TeredoEvent::Initial { ports: vec![51_000] }).unwrap();
    assert_eq!(d.filters(), teredo_filters(&[51_000]));
    keeper.on_event(&TeredoEvent::Changed { ports: vec![52_000] }).unwrap();
    assert_eq!(d.filters(), teredo_filters(&[52_000]));
    keeper.on_event(&TeredoEvent::Changed { ports: vec![] }).unwrap();
    assert_eq!(d.filters(), teredo_filters(&[]));
    assert_eq!(d.commits() - commits, 3, "each change is one transaction");
    drop(keeper);
    assert_eq!(d.filters(), vec![], "a dynamic session's filters go when it closes");
    assert_eq!(d.objects(), (0, 0), "and its provider and sublayer");
}

#[test]
fn a_port_change_that_fails_half_way_leaves_the_previous_filters() {
    let Some(d) = doubles() else { return };
    d.configure(true, true, true);
    let mut keeper = TeredoException::new(WfpHostFilters::open().unwrap());
    keeper.on_event(&TeredoEvent::Initial { ports: vec![51_000] }).unwrap();
    let commits = d.commits();
    // The second filter of the change fails: the first is rolled back with the transaction.
    d.fail_filter_add(2);
    assert!(keeper.on_event(&TeredoEvent::Changed { ports: vec![52_000] }).is_err());
    assert_eq!(d.filters(), teredo_filters(&[51_000]), "nothing half-applied");
    assert_eq!(d.commits(), commits, "the failed change committed nothing");
    keeper.on_event(&TeredoEvent::Changed { ports: vec![52_000] }).unwrap();
    assert_eq!(d.filters(), teredo_filters(&[52_000]), "the next event applies it");
}

#[test]
fn a_second_instance_works_beside_the_first_and_after_it_exits() {
    let Some(d) = doubles() else { return };
    d.configure(true, true, true);
    // Two `teredo-exception` processes, each in its own dynamic session: each must use its
    // own provider and sublayer (a dynamic object of another session cannot be referenced).
    let mut first = TeredoException::new(WfpHostFilters::open().unwrap());
    first.on_event(&TeredoEvent::Initial { ports: vec![51_000] }).unwrap();
    let mut second = TeredoException::new(WfpHostFilters::open().unwrap());
    second
        .on_event(&TeredoEvent::Initial { ports: vec![51_000] })
        .expect("the second instance gets its filters");
    assert_eq!(d.objects(), (2, 2), "a provider and a sublayer per instance");
    drop(first);
    assert_eq!(d.filters(), teredo_filters(&[51_000]), "the second's filters stay");
    second.on_event(&TeredoEvent::Changed { ports: vec![52_000] }).unwrap();
    assert_eq!(d.filters(), teredo_filters(&[52_000]));
    drop(second);
    assert_eq!((d.filters(), d.objects()), (vec![], (0, 0)));
}

/// Runs a command on another thread; its result arrives on the receiver.
fn run_in_background(args: &'static [&'static str]) -> mpsc::Receiver<(u8, String, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run(args));
    });
    rx
}

/// How long a command under Wine may take to notice that BFE stopped and return.
///
/// A liveness bound, not a performance figure: netports' watch reports the stop within about a
/// second (the notification, or its once-a-second poll of the service state with handles of
/// its own), which these tests take 0.1-1.9 s for even with the machine at load 10 (8 busy
/// loops on 2 cores; figures in docs/SIMULATOR-FIDELITY.md, "Wine doubles"). The bound only
/// decides how long a hang takes to fail: a watch that never notices still fails, so a longer
/// bound costs nothing but the wait. 20 s was once exceeded during a full `cargo xtask ci` at
/// load ~5 and never since; a timeout prints what a fresh query of the service manager says,
/// so a recurrence tells a product that missed a stop (BFE reads stopped, promptly) from a
/// stalled Wine service manager (the query itself is slow or fails).
const STOP_NOTICED: Duration = Duration::from_mins(1);

/// Waits for the command that runs in the background to return after BFE stopped.
fn returns_after_bfe_stopped(
    rx: &mpsc::Receiver<(u8, String, String)>,
    what: &str,
) -> (u8, String, String) {
    match rx.recv_timeout(STOP_NOTICED) {
        Ok(got) => got,
        Err(e) => {
            // On a thread of its own and bounded: a stalled service manager must not turn the
            // failure into a hang.
            let (tx, answer) = mpsc::channel();
            let start = std::time::Instant::now();
            std::thread::spawn(move || {
                let _ = tx.send((netports::win::service::state("BFE"), start.elapsed()));
            });
            let query = answer.recv_timeout(Duration::from_secs(10)).map_or_else(
                |_| "gave no answer within 10 s".to_owned(),
                |(state, took)| {
                    format!("read {state:?} in {took:?} (1 = stopped, 3 = stop pending)")
                },
            );
            panic!(
                "{what} within {STOP_NOTICED:?}: {e}; a fresh query of BFE's state through the \
                 service manager then {query}"
            );
        }
    }
}

#[test]
fn teredo_exception_exits_non_zero_with_a_message_when_bfe_stops() {
    let Some(d) = doubles() else { return };
    d.configure(true, true, true);
    d.bfe(true);
    d.teredo(51_000);
    let back = BfeBack(&d);
    let rx = run_in_background(&["teredo-exception"]);
    wait_until("the exception's filters", || !d.filters().is_empty());
    // BFE stops: the engine handle, the filters and the system-ports subscription die with it.
    d.bfe(false);
    let (code, out, err) =
        returns_after_bfe_stopped(&rx, "teredo-exception returns when BFE stops");
    drop(back);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with("note: these are soft permits"), "{out}");
    assert!(
        err.contains("the Base Filtering Engine (BFE) stopped"),
        "the reason, not a silent end: {err}"
    );
}

#[test]
fn teredo_watch_on_the_system_ports_source_exits_when_bfe_stops() {
    let Some(d) = doubles() else { return };
    d.configure(false, true, true);
    d.bfe(true);
    d.teredo(51_000);
    let back = BfeBack(&d);
    let rx = run_in_background(&["teredo", "watch"]);
    wait_until("the watch's subscription and initial read", || d.watch_started());
    d.bfe(false);
    let (code, out, err) = returns_after_bfe_stopped(&rx, "teredo watch returns when BFE stops");
    drop(back);
    assert_eq!((code, out.as_str()), (1, "watching; teredo port udp 51000\n"), "{err}");
    assert!(err.contains("the Base Filtering Engine (BFE) stopped"), "{err}");
}

#[test]
fn teredo_port_reports_every_port_of_the_system_ports_entry() {
    let Some(d) = doubles() else { return };
    d.configure(false, true, true);
    d.teredo(51_234);
    let ports = [51_234u16, 51_235];
    // SAFETY: a control of the double; two ports.
    unsafe { (d.fwp_set_teredo_ports)(ports.as_ptr(), 2) };
    let (code, out, err) = run(&["teredo", "port"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("teredo client ports: udp 51234, udp 51235 ("), "{out}");
}

#[test]
fn the_byte_order_is_confirmed_only_by_the_teredo_services_own_endpoint() {
    let Some(d) = doubles() else { return };
    // GetTeredoPort reports host order (contradicting the network-order assumption).
    d.configure(false, true, false);
    service("iphlpsvc", false);
    // iphlpsvc does not run: the Teredo socket belongs to some process (pid 4242), a hint
    // for this reading only, not a confirmation.
    // SAFETY: a control of the double (iphlpapi only: no system-ports Teredo entry).
    unsafe { (d.set_teredo_port)(51_234, 4242) };
    let (code, out, err) = run(&["teredo", "port"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("byte order: host, from a UDP socket not known to be the Teredo service's (not confirmed)"),
        "{out}"
    );
    // iphlpsvc runs and owns the Teredo socket: confirmed.
    let pid = service("iphlpsvc", true);
    let stops = Stops("iphlpsvc");
    // SAFETY: as above.
    unsafe { (d.set_teredo_port)(51_234, pid) };
    let (code, out, err) = run(&["teredo", "port"]);
    drop(stops);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("udp 51234")
            && out.contains("byte order: host, confirmed by the Teredo service's socket"),
        "{out}"
    );
}

/// Gives this process a console of its own, so a Ctrl-C can reach it as a user's keypress
/// would (before the command under test installs its handler).
fn own_console() {
    use windows_sys::Win32::System::Console::{
        AllocConsole, FreeConsole, GetStdHandle, STD_ERROR_HANDLE, STD_INPUT_HANDLE,
        STD_OUTPUT_HANDLE, SetStdHandle,
    };
    let kinds = [STD_INPUT_HANDLE, STD_OUTPUT_HANDLE, STD_ERROR_HANDLE];
    // SAFETY: plain arguments; the handles are kept, not closed.
    let saved = kinds.map(|k| unsafe { GetStdHandle(k) });
    // SAFETY: no arguments.
    unsafe { FreeConsole() };
    // SAFETY: no arguments.
    assert_ne!(unsafe { AllocConsole() }, 0, "a console for the Ctrl-C");
    // AllocConsole points the standard handles at the new console: keep the test's output
    // where the harness reads it.
    for (k, h) in kinds.into_iter().zip(saved) {
        // SAFETY: a standard handle kind and the handle it had.
        unsafe { SetStdHandle(k, h) };
    }
}

/// Sends a Ctrl-C to this process's console once `ready` holds.
fn ctrl_c_when(what: &str, ready: impl FnMut() -> bool) {
    use windows_sys::Win32::System::Console::{CTRL_C_EVENT, GenerateConsoleCtrlEvent};
    wait_until(what, ready);
    // SAFETY: the console's process group (0: every process attached, this one).
    assert_ne!(unsafe { GenerateConsoleCtrlEvent(CTRL_C_EVENT, 0) }, 0);
}

#[test]
fn ctrl_c_ends_teredo_exception_with_exit_0_after_removing_its_filters() {
    let Some(d) = doubles() else { return };
    d.configure(true, true, true);
    d.bfe(true);
    d.teredo(51_000);
    own_console();
    let rx = run_in_background(&["teredo-exception"]);
    ctrl_c_when("the exception's filters", || !d.filters().is_empty());
    let (code, out, err) =
        rx.recv_timeout(Duration::from_secs(20)).expect("teredo-exception returns on Ctrl-C");
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(err, "", "an interruption is not an error");
    assert_eq!((d.filters(), d.objects()), (vec![], (0, 0)), "its filters are gone");
}

#[test]
fn ctrl_c_ends_teredo_watch_with_exit_0() {
    let Some(d) = doubles() else { return };
    d.configure(false, true, true);
    d.bfe(true);
    d.teredo(51_000);
    own_console();
    let rx = run_in_background(&["teredo", "watch"]);
    ctrl_c_when("the watch's registration", || d.registrations() == 1);
    let (code, out, err) =
        rx.recv_timeout(Duration::from_secs(20)).expect("teredo watch returns on Ctrl-C");
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    // (The Ctrl-C may come before or after the initial event is printed.)
    assert!(out.is_empty() || out == "watching; teredo port udp 51000\n", "{out}");
    assert_eq!(d.registrations(), 0, "the registration ended");
}

/// Raw WFP calls against the double (its own rules, as WFP documents them).
mod engine {
    use windows_sys::Win32::Foundation::HANDLE;
    use windows_sys::Win32::NetworkManagement::WindowsFilteringPlatform::{
        FWP_ACTION_PERMIT, FWPM_FILTER0, FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V4, FWPM_PROVIDER0,
        FWPM_SESSION_FLAG_DYNAMIC, FWPM_SESSION0, FWPM_SUBLAYER0, FwpmEngineClose0,
        FwpmEngineOpen0, FwpmFilterAdd0, FwpmProviderAdd0, FwpmSubLayerAdd0, FwpmTransactionAbort0,
        FwpmTransactionBegin0, FwpmTransactionCommit0,
    };
    use windows_sys::core::GUID;

    use windows_sys::Win32::Foundation as f;

    pub const LIFETIME_MISMATCH: u32 = f::FWP_E_LIFETIME_MISMATCH.cast_unsigned();
    pub const TXN_IN_PROGRESS: u32 = f::FWP_E_TXN_IN_PROGRESS.cast_unsigned();
    pub const NO_TXN_IN_PROGRESS: u32 = f::FWP_E_NO_TXN_IN_PROGRESS.cast_unsigned();
    pub const TIMEOUT: u32 = f::FWP_E_TIMEOUT.cast_unsigned();
    pub const SUBLAYER_NOT_FOUND: u32 = f::FWP_E_SUBLAYER_NOT_FOUND.cast_unsigned();

    pub fn open(dynamic: bool) -> HANDLE {
        let session = FWPM_SESSION0 {
            flags: if dynamic { FWPM_SESSION_FLAG_DYNAMIC } else { 0 },
            ..FWPM_SESSION0::default()
        };
        let mut h: HANDLE = std::ptr::null_mut();
        // SAFETY: a valid session and out-pointer; local engine.
        let rc = unsafe {
            FwpmEngineOpen0(std::ptr::null(), 10, std::ptr::null(), &raw const session, &raw mut h)
        };
        assert_eq!(rc, 0);
        h
    }
    pub fn close(h: HANDLE) {
        // SAFETY: a handle from `open`.
        assert_eq!(unsafe { FwpmEngineClose0(h) }, 0);
    }
    pub fn provider(h: HANDLE, key: GUID) -> u32 {
        let p = FWPM_PROVIDER0 { providerKey: key, ..FWPM_PROVIDER0::default() };
        // SAFETY: a valid provider.
        unsafe { FwpmProviderAdd0(h, &raw const p, std::ptr::null_mut()) }
    }
    pub fn sublayer(h: HANDLE, key: GUID, mut provider: GUID) -> u32 {
        let s = FWPM_SUBLAYER0 {
            subLayerKey: key,
            providerKey: &raw mut provider,
            ..FWPM_SUBLAYER0::default()
        };
        // SAFETY: a valid sublayer whose provider key outlives the call.
        unsafe { FwpmSubLayerAdd0(h, &raw const s, std::ptr::null_mut()) }
    }
    pub fn filter(h: HANDLE, sublayer: GUID) -> u32 {
        let mut f = FWPM_FILTER0 {
            layerKey: FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V4,
            subLayerKey: sublayer,
            ..FWPM_FILTER0::default()
        };
        f.action.r#type = FWP_ACTION_PERMIT;
        let mut id = 0u64;
        // SAFETY: a valid filter without conditions and a valid out-pointer.
        unsafe { FwpmFilterAdd0(h, &raw const f, std::ptr::null_mut(), &raw mut id) }
    }
    pub fn begin(h: HANDLE) -> u32 {
        // SAFETY: a session handle.
        unsafe { FwpmTransactionBegin0(h, 0) }
    }
    pub fn commit(h: HANDLE) -> u32 {
        // SAFETY: a session handle.
        unsafe { FwpmTransactionCommit0(h) }
    }
    pub fn abort(h: HANDLE) -> u32 {
        // SAFETY: a session handle.
        unsafe { FwpmTransactionAbort0(h) }
    }
}

#[test]
#[allow(clippy::many_single_char_names, reason = "sessions a, b, c; provider p, sublayer s")]
fn the_engine_double_refuses_references_to_another_sessions_dynamic_objects() {
    let Some(d) = doubles() else { return };
    d.configure(true, true, true);
    let (p, s) = (windows_sys::core::GUID::from_u128(1), windows_sys::core::GUID::from_u128(2));
    let a = engine::open(true);
    assert_eq!(
        (engine::provider(a, p), engine::sublayer(a, s, p), engine::filter(a, s)),
        (0, 0, 0)
    );
    let b = engine::open(true);
    assert_eq!(
        engine::filter(b, s),
        engine::LIFETIME_MISMATCH,
        "another dynamic session's sublayer"
    );
    assert_eq!(
        engine::sublayer(b, windows_sys::core::GUID::from_u128(3), p),
        engine::LIFETIME_MISMATCH,
        "another dynamic session's provider"
    );
    let c = engine::open(false);
    assert_eq!(
        engine::filter(c, s),
        engine::LIFETIME_MISMATCH,
        "a static object cannot outlive it"
    );
    engine::close(a);
    assert_eq!(engine::filter(b, s), engine::SUBLAYER_NOT_FOUND, "gone with its session");
    engine::close(b);
    engine::close(c);
    assert_eq!((d.filters(), d.objects()), (vec![], (0, 0)));
}

#[test]
#[allow(clippy::many_single_char_names, reason = "sessions a, b, c; provider p, sublayer s")]
fn the_engine_double_has_one_transaction_per_session_and_rolls_back_an_abort() {
    let Some(d) = doubles() else { return };
    d.configure(true, true, true);
    let (p, s) = (windows_sys::core::GUID::from_u128(1), windows_sys::core::GUID::from_u128(2));
    let a = engine::open(true);
    let b = engine::open(true);
    assert_eq!(engine::commit(a), engine::NO_TXN_IN_PROGRESS);
    assert_eq!(engine::abort(a), engine::NO_TXN_IN_PROGRESS);
    assert_eq!(engine::begin(a), 0);
    assert_eq!(engine::begin(a), engine::TXN_IN_PROGRESS);
    assert_eq!(engine::provider(a, p), 0);
    assert_eq!(
        engine::provider(b, windows_sys::core::GUID::from_u128(9)),
        engine::TIMEOUT,
        "the lock is held"
    );
    assert_eq!(engine::abort(a), 0);
    assert_eq!(d.objects(), (0, 0), "the abort rolled the provider back");
    assert_eq!(engine::begin(a), 0);
    assert_eq!((engine::provider(a, p), engine::sublayer(a, s, p)), (0, 0));
    let commits = d.commits();
    assert_eq!(engine::commit(a), 0);
    assert_eq!((d.objects(), d.commits()), ((1, 1), commits + 1));
    assert_eq!(engine::begin(a), 0);
    assert_eq!(engine::filter(a, s), 0);
    engine::close(a); // aborts the open transaction, then deletes the session's objects
    assert_eq!((d.filters(), d.objects()), (vec![], (0, 0)));
    engine::close(b);
}

#[test]
fn reservation_ioctl_errors_are_not_about_elevation() {
    // The runtime-reservation IOCTLs are Wine's own (not doubled): the mapping is checked here
    // on the Windows build, and `netports acquire` reaches Wine's WSAIoctl in `cargo xtask wine`.
    assert_eq!(runtime::ioctl_error(10_048, "SIO_ACQUIRE_PORT_RESERVATION"), Error::Conflict);
    assert_eq!(
        runtime::ioctl_error(10_013, "SIO_ACQUIRE_PORT_RESERVATION"),
        Error::Forbidden { function: "SIO_ACQUIRE_PORT_RESERVATION" }
    );
    assert!(
        matches!(
            runtime::ioctl_error(10_055, "SIO_ACQUIRE_PORT_RESERVATION"),
            Error::Os { code: 10_055, .. }
        ),
        "WSAENOBUFS is not a conflict"
    );
}
