//! The Teredo port on Windows, and a watcher for its changes.
//!
//! Two sources, the non-deprecated one preferred when `fwpuclnt` exports it and BFE answers:
//! - `FwpmSystemPortsGet0` / `FwpmSystemPortsSubscribe0` (`FWPM_SYSTEM_PORT_TEREDO`), called
//!   without an engine session (the handle is documented as optional, and a non-elevated
//!   `FwpmEngineOpen0` may be refused);
//! - `GetTeredoPort` / `NotifyTeredoPortChange` (deprecated, still everywhere).
//!
//! Neither documents its port's byte order: each source has a [`PortOrder`], confirmed only by
//! the Teredo service's own UDP endpoint in `GetExtendedUdpTable` (documented network order);
//! when the service's process is unknown every process's endpoints are a hint for one reading,
//! never kept. A host-order finding is logged to stderr. Every port of the system-ports Teredo
//! entry is used.
//!
//! The watcher's rules (the seed's deadlock rule): the user's closure runs on the OS's
//! notification thread, serialized by one lock and by the OS, with panics caught at the FFI
//! boundary; dropping the watcher ends the registration (`FwpmSystemPortsUnsubscribe0` or
//! `CancelMibChangeNotify2`, both wait for running callbacks) never on the notification thread
//! itself (there the cancel is handed to another thread) and never while holding the lock the
//! callback takes. [`WatchState`] turns notifications into events: `Initial` first, then real
//! changes only.

use std::cell::Cell;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};

use super::tables;

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::NetworkManagement::IpHelper::PTEREDO_PORT_CHANGE_CALLBACK;
use windows_sys::Win32::NetworkManagement::WindowsFilteringPlatform::{
    FWPM_SYSTEM_PORTS_BY_TYPE0, FWPM_SYSTEM_PORTS_CALLBACK0, FWPM_SYSTEM_PORTS0,
};

use super::dynload::{Dll, system_fn};
use crate::error::Error;
use crate::range::Protocol;
use crate::teredo::{
    Evidence, Observation, PortOrder, PortReading, TeredoEvent, WatchState,
    observation_from_callback, ports_from_system_ports,
};

system_fn!(fn get_teredo_port = Dll::Iphlpapi, c"GetTeredoPort": fn(*mut u16) -> u32;);
system_fn!(fn notify_teredo_port_change = Dll::Iphlpapi, c"NotifyTeredoPortChange": fn(PTEREDO_PORT_CHANGE_CALLBACK, *const c_void, bool, *mut HANDLE) -> u32;);
system_fn!(fn cancel_mib_change_notify2 = Dll::Iphlpapi, c"CancelMibChangeNotify2": fn(HANDLE) -> u32;);
system_fn!(fn fwpm_system_ports_get0 = Dll::Fwpuclnt, c"FwpmSystemPortsGet0": fn(HANDLE, *mut *mut FWPM_SYSTEM_PORTS0) -> u32;);
system_fn!(fn fwpm_system_ports_subscribe0 = Dll::Fwpuclnt, c"FwpmSystemPortsSubscribe0": fn(HANDLE, *const c_void, FWPM_SYSTEM_PORTS_CALLBACK0, *const c_void, *mut HANDLE) -> u32;);
system_fn!(fn fwpm_system_ports_unsubscribe0 = Dll::Fwpuclnt, c"FwpmSystemPortsUnsubscribe0": fn(HANDLE, HANDLE) -> u32;);
system_fn!(fn fwpm_free_memory0 = Dll::Fwpuclnt, c"FwpmFreeMemory0": fn(*mut *mut c_void););

/// The two sources' byte orders, settled once per process.
static IPHLP_ORDER: Mutex<PortOrder> = Mutex::new(PortOrder::new());
static FWP_ORDER: Mutex<PortOrder> = Mutex::new(PortOrder::new());

/// The host-order local ports of the Teredo service's UDP endpoints, those owned by the process
/// hosting `iphlpsvc` (the IP Helper service, which runs the Teredo client); every process's
/// UDP endpoints when that process cannot be found (then only a hint).
fn teredo_udp_ports() -> Evidence {
    let endpoints = tables::endpoints(Protocol::Udp).unwrap_or_default().into_iter();
    match super::service::pid("iphlpsvc") {
        Some(pid) => {
            Evidence::TeredoService(endpoints.filter(|e| e.pid == pid).map(|e| e.port).collect())
        }
        None => Evidence::AnyProcess(endpoints.map(|e| e.port).collect()),
    }
}

/// Reads one report's raw ports through `order`, logging a host-order finding.
fn read_ports(source: &str, order: &Mutex<PortOrder>, raws: &[u16]) -> PortReading {
    let reading = order.lock().unwrap_or_else(PoisonError::into_inner).read_all(
        source,
        raws,
        &mut teredo_udp_ports,
    );
    if let Some(w) = &reading.warning {
        eprintln!("netports: warning: {w}");
    }
    reading
}

/// The Teredo ports from `FwpmSystemPortsGet0` (no engine session).
fn teredo_port_fwp() -> Result<PortReading, Error> {
    let (get, free) = (fwpm_system_ports_get0()?, fwpm_free_memory0()?);
    let mut ports: *mut FWPM_SYSTEM_PORTS0 = std::ptr::null_mut();
    // SAFETY: the engine handle is optional (null: no session); a valid out-pointer.
    let rc = unsafe { get(std::ptr::null_mut(), &raw mut ports) };
    if rc != 0 {
        return Err(Error::from_win32(rc, "FwpmSystemPortsGet0"));
    }
    // SAFETY: WFP returned a valid list (or null) that lives until freed below.
    let raws = unsafe { teredo_in(ports) };
    // SAFETY: memory allocated by FwpmSystemPortsGet0, freed once.
    unsafe { free((&raw mut ports).cast()) };
    Ok(read_ports("FwpmSystemPortsGet0", &FWP_ORDER, &raws))
}

/// Every raw port of the Teredo entries in a system-ports list.
///
/// # Safety
/// `list` is null or a valid `FWPM_SYSTEM_PORTS0` whose arrays hold the counts they claim,
/// alive for the call.
unsafe fn teredo_in(list: *const FWPM_SYSTEM_PORTS0) -> Vec<u16> {
    // SAFETY: per the contract, null or valid.
    let Some(list) = (unsafe { list.as_ref() }) else { return Vec::new() };
    let types: &[FWPM_SYSTEM_PORTS_BY_TYPE0] = if list.types.is_null() {
        &[]
    } else {
        // SAFETY: `types` has `numTypes` entries (contract).
        unsafe { std::slice::from_raw_parts(list.types, list.numTypes as usize) }
    };
    ports_from_system_ports(types.iter().map(|t| {
        let ports: &[u16] = if t.ports.is_null() {
            &[]
        } else {
            // SAFETY: `ports` has `numPorts` entries (contract).
            unsafe { std::slice::from_raw_parts(t.ports, t.numPorts as usize) }
        };
        (t.r#type, ports)
    }))
}

fn teredo_port_iphlp() -> Result<PortReading, Error> {
    let f = get_teredo_port()?;
    let mut raw = 0u16;
    // SAFETY: the documented signature; valid out-pointer.
    let rc = unsafe { f(&raw mut raw) };
    match rc {
        0 => Ok(read_ports("GetTeredoPort", &IPHLP_ORDER, &[raw])),
        rc => Err(Error::from_win32(rc, "GetTeredoPort")),
    }
}

/// The Teredo client's UDP ports (none: it has none), and how their byte order was decided:
/// from the system-ports list when it has a Teredo entry, else `GetTeredoPort`.
///
/// # Errors
/// `Unsupported` (neither source exists), `NotReady`, `NoIpv6`.
pub fn teredo_port() -> Result<PortReading, Error> {
    if let Ok(r) = teredo_port_fwp()
        && !r.ports.is_empty()
    {
        return Ok(r);
    }
    teredo_port_iphlp()
}

/// What the registration and its callbacks share.
struct Shared {
    inner: Mutex<Inner>,
}

struct Inner {
    state: WatchState,
    callback: Box<dyn FnMut(TeredoEvent) + Send>,
}

impl Shared {
    /// Runs `step` on the state under the lock and gives the event, if any, to the user's
    /// closure; a panic in the closure stops here.
    fn deliver(&self, step: impl FnOnce(&mut WatchState) -> Option<TeredoEvent>) {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(event) = step(&mut inner.state) {
                (inner.callback)(event);
            }
        }));
    }
}

thread_local! {
    /// The registration whose callback this thread is running (0: none).
    static RUNNING: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as running `context`'s callback for the guard's lifetime.
struct Running;

impl Running {
    fn enter(context: usize) -> Self {
        RUNNING.with(|r| r.set(context));
        Self
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.with(|r| r.set(0));
    }
}

unsafe extern "system" fn on_teredo_change(context: *const c_void, port: u16, kind: i32) {
    if context.is_null() {
        return;
    }
    let _running = Running::enter(context as usize);
    // SAFETY: `context` is the `Shared` the registration keeps alive until cancel returns.
    let shared = unsafe { &*context.cast::<Shared>() };
    let ports = read_ports("NotifyTeredoPortChange", &IPHLP_ORDER, &[port]).ports;
    let observation = observation_from_callback(ports, kind);
    shared.deliver(|state| state.observe(observation));
}

unsafe extern "system" fn on_system_ports(context: *mut c_void, ports: *const FWPM_SYSTEM_PORTS0) {
    if context.is_null() {
        return;
    }
    let _running = Running::enter(context as usize);
    // SAFETY: `context` is the `Shared` the registration keeps alive until unsubscribe
    // returns.
    let shared = unsafe { &*context.cast::<Shared>() };
    // SAFETY: WFP passes a valid list (or null) for the duration of the callback.
    let raws = unsafe { teredo_in(ports) };
    let ports = read_ports("FwpmSystemPortsSubscribe0", &FWP_ORDER, &raws).ports;
    shared.deliver(|state| state.observe(Observation::Ports(ports)));
}

/// The OS registration behind a watcher.
enum Registration {
    SystemPorts { handle: usize, unsubscribe: unsafe extern "system" fn(HANDLE, HANDLE) -> u32 },
    TeredoChange { handle: usize, cancel: unsafe extern "system" fn(HANDLE) -> u32 },
}

impl Registration {
    /// `FwpmSystemPortsSubscribe0` without an engine session (the handle is optional).
    fn system_ports(context: *const Shared) -> Result<Self, Error> {
        let (subscribe, unsubscribe) =
            (fwpm_system_ports_subscribe0()?, fwpm_system_ports_unsubscribe0()?);
        let mut handle: HANDLE = std::ptr::null_mut();
        // SAFETY: the documented signature; `context` stays valid until unsubscribe returns.
        let rc = unsafe {
            subscribe(
                std::ptr::null_mut(),
                std::ptr::null(),
                Some(on_system_ports),
                context.cast(),
                &raw mut handle,
            )
        };
        if rc != 0 {
            return Err(Error::from_win32(rc, "FwpmSystemPortsSubscribe0"));
        }
        Ok(Self::SystemPorts { handle: handle as usize, unsubscribe })
    }

    /// `NotifyTeredoPortChange`.
    fn teredo_change(context: *const Shared) -> Result<Self, Error> {
        let notify = notify_teredo_port_change()?;
        // Resolved before registering so that the registration can always be cancelled.
        let cancel = cancel_mib_change_notify2()?;
        let mut handle: HANDLE = std::ptr::null_mut();
        // SAFETY: the documented signature; `context` stays valid until cancel returns.
        let rc = unsafe { notify(Some(on_teredo_change), context.cast(), true, &raw mut handle) };
        if rc != 0 {
            return Err(Error::from_win32(rc, "NotifyTeredoPortChange"));
        }
        Ok(Self::TeredoChange { handle: handle as usize, cancel })
    }

    /// The ports now, from the same source.
    fn current_ports(&self) -> Vec<u16> {
        match self {
            Self::SystemPorts { .. } => teredo_port_fwp().map(|r| r.ports).unwrap_or_default(),
            Self::TeredoChange { .. } => teredo_port_iphlp().map(|r| r.ports).unwrap_or_default(),
        }
    }

    /// Ends the registration; returns once no callback runs any more.
    fn end(self) {
        match self {
            Self::SystemPorts { handle, unsubscribe } => {
                // SAFETY: the subscription made above (no session), ended once, not from its
                // callback thread.
                unsafe { unsubscribe(std::ptr::null_mut(), handle as HANDLE) };
            }
            Self::TeredoChange { handle, cancel } => {
                // SAFETY: the registration's handle, cancelled once, not from its callback
                // thread.
                unsafe { cancel(handle as HANDLE) };
            }
        }
    }
}

/// Where a watcher's notifications come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `FwpmSystemPortsSubscribe0` when available, else `NotifyTeredoPortChange`.
    Any,
    /// `FwpmSystemPortsSubscribe0` only.
    SystemPorts,
    /// `NotifyTeredoPortChange` only.
    TeredoChange,
}

/// Watches the Teredo port; ends the registration on drop.
pub struct TeredoWatcher {
    registration: Option<Registration>,
    context: usize,
}

impl std::fmt::Debug for TeredoWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match self.registration {
            Some(Registration::SystemPorts { .. }) => "FwpmSystemPortsSubscribe0",
            Some(Registration::TeredoChange { .. }) => "NotifyTeredoPortChange",
            None => "ended",
        };
        f.debug_struct("TeredoWatcher").field("source", &source).finish_non_exhaustive()
    }
}

impl TeredoWatcher {
    /// Registers `callback`, which first receives `TeredoEvent::Initial`, then every change.
    /// The closure runs on an OS thread; it must not wait for a thread that is dropping this
    /// watcher (the drop waits for the closure to return).
    ///
    /// # Errors
    /// `Unsupported` (neither source exists), or the registration failed.
    pub fn start(callback: impl FnMut(TeredoEvent) + Send + 'static) -> Result<Self, Error> {
        Self::start_from(Source::Any, callback)
    }

    /// True when the notifications come from WFP (`FwpmSystemPortsSubscribe0`), which ends
    /// with BFE.
    #[must_use]
    pub const fn uses_wfp(&self) -> bool {
        matches!(self.registration, Some(Registration::SystemPorts { .. }))
    }

    /// Like [`TeredoWatcher::start`], from a chosen source.
    ///
    /// # Errors
    /// `Unsupported` (the source does not exist), or the registration failed.
    pub fn start_from(
        source: Source,
        callback: impl FnMut(TeredoEvent) + Send + 'static,
    ) -> Result<Self, Error> {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner { state: WatchState::default(), callback: Box::new(callback) }),
        });
        let context = Arc::into_raw(shared);
        let registered = match source {
            Source::Any => Registration::system_ports(context)
                .or_else(|_| Registration::teredo_change(context)),
            Source::SystemPorts => Registration::system_ports(context),
            Source::TeredoChange => Registration::teredo_change(context),
        };
        let registration = match registered {
            Ok(r) => r,
            Err(e) => {
                // SAFETY: no registration exists: no callback will use `context`; reclaim
                // the reference `into_raw` made.
                drop(unsafe { Arc::from_raw(context) });
                return Err(e);
            }
        };
        // The initial port is read after subscribing, so no change between the two is lost;
        // changes reported before this are folded into it (WatchState).
        let ports = registration.current_ports();
        // SAFETY: `context` is alive: the registration holds its reference until `end`.
        let shared = unsafe { &*context };
        shared.deliver(|state| state.initial(ports));
        Ok(Self { registration: Some(registration), context: context as usize })
    }
}

impl Drop for TeredoWatcher {
    fn drop(&mut self) {
        let Some(registration) = self.registration.take() else { return };
        let context = self.context;
        let finish = move || {
            registration.end();
            // SAFETY: after the registration ended no callback runs: release its reference
            // to the shared state.
            drop(unsafe { Arc::from_raw(context as *const Shared) });
        };
        if RUNNING.with(Cell::get) == context {
            // Dropped from inside its own callback: ending the registration here would wait
            // for this very callback (deadlock). Hand it to another thread.
            std::thread::spawn(finish);
        } else {
            finish();
        }
    }
}
