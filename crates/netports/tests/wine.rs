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
use netports::exception::{HostFilters, TeredoException};
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
    registrations: unsafe extern "system" fn() -> u32,
    initial_inline: unsafe extern "system" fn(i32),
    fwp_configure: unsafe extern "system" fn(i32, i32),
    fwp_set_teredo_port: unsafe extern "system" fn(u16),
    fwp_filters: unsafe extern "system" fn(*mut u32, u32) -> u32,
    fwp_subscriptions: unsafe extern "system" fn() -> u32,
}

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
            registrations: ctl!("iphlpapi.dll", c"DoubleRegistrations"),
            initial_inline: ctl!("iphlpapi.dll", c"DoubleInitialInline"),
            fwp_configure: ctl!("fwpuclnt.dll", c"DoubleFwpConfigure"),
            fwp_set_teredo_port: ctl!("fwpuclnt.dll", c"DoubleFwpSetTeredoPort"),
            fwp_filters: ctl!("fwpuclnt.dll", c"DoubleFwpFilters"),
            fwp_subscriptions: ctl!("fwpuclnt.dll", c"DoubleFwpSubscriptions"),
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
    /// Permit filters as (layer 4|6, protocol, port).
    fn filters(&self) -> Vec<(u32, u32, u16)> {
        let mut out = [0u32; 64];
        // SAFETY: a buffer of 64 entries.
        let n = unsafe { (self.fwp_filters)(out.as_mut_ptr(), 64) } as usize;
        let mut v: Vec<_> = out[..n.min(64)]
            .iter()
            .map(|x| (x >> 24, (x >> 16) & 0xFF, u16::try_from(x & 0xFFFF).unwrap()))
            .collect();
        v.sort_unstable();
        v
    }
}

fn recv(rx: &mpsc::Receiver<TeredoEvent>) -> TeredoEvent {
    rx.recv_timeout(Duration::from_secs(10)).expect("an event within 10 s")
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for: {what}");
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
    assert_eq!(first, TeredoEvent::Initial { port: Some(51_234) });
    d.teredo(52_000);
    let (ev, thread) = rx2.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(ev, TeredoEvent::Changed { port: Some(52_000) });
    assert_ne!(thread, me, "changes arrive on the notification thread");
    d.teredo(0);
    assert_eq!(
        rx2.recv_timeout(Duration::from_secs(10)).unwrap().0,
        TeredoEvent::Changed { port: None }
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
    assert_eq!(recv(&rx), TeredoEvent::Changed { port: Some(52_000) });
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
    assert_eq!(teredo_port(), Ok(Some(51_234)));
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
        "teredo client port: udp 40000 (static port udp 3544)\n"
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
    // SAFETY: a control of the double: the table lists this process's socket.
    unsafe { (d.add_endpoint)(0, 0, port, std::process::id()) };
    let (code, out, err) = run(&["why-blocked", &port.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("tcp {port} is in use (bind fails with WSAEADDRINUSE on ")),
        "{out}"
    );
    assert!(out.contains(&format!("held by pid {} (", std::process::id())), "{out}");
    assert!(out.contains(".exe)"), "the process name is read: {out}");
    drop(held);
    let (_, out, _) = run(&["why-blocked", &port.to_string()]);
    assert!(out.starts_with(&format!("tcp {port} is free")), "{out}");
}

#[test]
fn the_host_teredo_filters_follow_the_port_and_go_with_the_session() {
    let Some(d) = doubles() else { return };
    d.configure(false, true, true);
    assert!(
        matches!(WfpHostFilters::open(), Err(Error::AccessDenied)),
        "filters need an administrator"
    );
    d.configure(true, true, true);
    let mut keeper = TeredoException::new(WfpHostFilters::open().unwrap());
    keeper.on_event(TeredoEvent::Initial { port: Some(51_000) }).unwrap();
    assert_eq!(d.filters(), vec![(4, 17, 3544), (4, 17, 51_000), (6, 17, 3544), (6, 17, 51_000)]);
    keeper.on_event(TeredoEvent::Changed { port: Some(52_000) }).unwrap();
    assert_eq!(d.filters(), vec![(4, 17, 3544), (4, 17, 52_000), (6, 17, 3544), (6, 17, 52_000)]);
    keeper.on_event(TeredoEvent::Changed { port: None }).unwrap();
    assert_eq!(d.filters(), vec![(4, 17, 3544), (6, 17, 3544)]);
    // A second instance shares the provider and sublayer.
    let mut other = WfpHostFilters::open().unwrap();
    let ids = other.permit_udp(7000).unwrap();
    other.remove(&ids).unwrap();
    drop(other);
    drop(keeper);
    assert_eq!(d.filters(), vec![], "a dynamic session's filters go when it closes");
}

#[test]
fn host_filters_keep_working_after_the_instance_that_added_the_provider_exits() {
    let Some(d) = doubles() else { return };
    d.configure(true, true, true);
    // Two `teredo-exception` processes: the first adds netports' provider and sublayer in its
    // dynamic session, the second finds them there (FWP_E_ALREADY_EXISTS).
    let first = WfpHostFilters::open().unwrap();
    let mut second = WfpHostFilters::open().unwrap();
    second.permit_udp(7000).unwrap();
    // The first exits: its session's provider and sublayer go with it. The second's next
    // port change must still get its filters.
    drop(first);
    let ids = second.permit_udp(7001).expect("filters after the other instance exited");
    let filters = d.filters();
    assert!(filters.contains(&(4, 17, 7001)) && filters.contains(&(6, 17, 7001)), "{filters:?}");
    second.remove(&ids).unwrap();
    drop(second);
    assert!(!d.filters().iter().any(|f| f.2 == 7001), "{:?}", d.filters());
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
