//! The Teredo port on Windows, and a watcher for its changes.
//!
//! The port comes from `FwpmSystemPortsGet0` (the non-deprecated source, preferred when
//! `fwpuclnt` exports it and BFE answers), else `GetTeredoPort`; the watcher uses
//! `NotifyTeredoPortChange` / `CancelMibChangeNotify2`.
//!
//! The watcher's rules (the seed's deadlock rule): the user's closure runs on the OS's
//! notification thread, serialized, with panics caught at the FFI boundary; dropping the
//! watcher cancels the registration, never on the notification thread itself (there the
//! cancel is handed to another thread) and never while holding the lock the callback takes.

use std::cell::Cell;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::NetworkManagement::WindowsFilteringPlatform::{
    FWPM_SYSTEM_PORT_TEREDO, FWPM_SYSTEM_PORTS0,
};

use super::dynload::{Dll, system_fn};
use crate::error::Error;
use crate::teredo::{TeredoEvent, event_from_callback, port_from_api};

type TeredoCallback = unsafe extern "system" fn(*const c_void, u16, i32);

system_fn!(fn get_teredo_port = Dll::Iphlpapi, c"GetTeredoPort": fn(*mut u16) -> u32;);
system_fn!(fn notify_teredo_port_change = Dll::Iphlpapi, c"NotifyTeredoPortChange": fn(Option<TeredoCallback>, *const c_void, bool, *mut HANDLE) -> u32;);
system_fn!(fn cancel_mib_change_notify2 = Dll::Iphlpapi, c"CancelMibChangeNotify2": fn(HANDLE) -> u32;);
system_fn!(fn fwpm_engine_open0 = Dll::Fwpuclnt, c"FwpmEngineOpen0": fn(*const u16, u32, *const c_void, *const c_void, *mut HANDLE) -> u32;);
system_fn!(fn fwpm_engine_close0 = Dll::Fwpuclnt, c"FwpmEngineClose0": fn(HANDLE) -> u32;);
system_fn!(fn fwpm_system_ports_get0 = Dll::Fwpuclnt, c"FwpmSystemPortsGet0": fn(HANDLE, *mut *mut FWPM_SYSTEM_PORTS0) -> u32;);
system_fn!(fn fwpm_free_memory0 = Dll::Fwpuclnt, c"FwpmFreeMemory0": fn(*mut *mut c_void););

/// `RPC_C_AUTHN_WINNT`.
const RPC_C_AUTHN_WINNT: u32 = 10;

/// The Teredo port from the WFP system-ports list (`Ok(None)`: no Teredo entry).
fn teredo_port_fwpm() -> Result<Option<u16>, Error> {
    let (open, close, get, free) = (
        fwpm_engine_open0()?,
        fwpm_engine_close0()?,
        fwpm_system_ports_get0()?,
        fwpm_free_memory0()?,
    );
    let mut engine: HANDLE = std::ptr::null_mut();
    // SAFETY: the documented signature; null server, identity and session; valid out-pointer.
    let rc = unsafe {
        open(
            std::ptr::null(),
            RPC_C_AUTHN_WINNT,
            std::ptr::null(),
            std::ptr::null(),
            &raw mut engine,
        )
    };
    if rc != 0 {
        return Err(Error::from_win32(rc, "FwpmEngineOpen0"));
    }
    let mut ports: *mut FWPM_SYSTEM_PORTS0 = std::ptr::null_mut();
    // SAFETY: an open engine and a valid out-pointer.
    let rc = unsafe { get(engine, &raw mut ports) };
    let mut found = None;
    if rc == 0 {
        // SAFETY: WFP returned a valid structure (or null).
        if let Some(p) = unsafe { ports.as_ref() } {
            for i in 0..p.numTypes as usize {
                // SAFETY: `types` has `numTypes` entries.
                let entry = unsafe { p.types.add(i) };
                // SAFETY: `entry` points inside the array.
                let t = unsafe { &*entry };
                if t.r#type == FWPM_SYSTEM_PORT_TEREDO && t.numPorts > 0 && !t.ports.is_null() {
                    // SAFETY: `ports` has `numPorts` entries. Host order (verify on Windows).
                    found = Some(unsafe { *t.ports });
                }
            }
        }
        // SAFETY: memory allocated by FwpmSystemPortsGet0, freed once.
        unsafe { free((&raw mut ports).cast()) };
    }
    // SAFETY: the engine opened above.
    unsafe { close(engine) };
    if rc != 0 {
        return Err(Error::from_win32(rc, "FwpmSystemPortsGet0"));
    }
    Ok(found.filter(|p| *p != 0))
}

/// The Teredo client's UDP port: `None` if it has none.
///
/// # Errors
/// `Unsupported` (neither source exists), `NotReady`, `NoIpv6`.
pub fn teredo_port() -> Result<Option<u16>, Error> {
    if let Ok(Some(p)) = teredo_port_fwpm() {
        return Ok(Some(p));
    }
    let f = get_teredo_port()?;
    let mut raw = 0u16;
    // SAFETY: the documented signature; valid out-pointer.
    let rc = unsafe { f(&raw mut raw) };
    match rc {
        0 => Ok(port_from_api(raw)),
        rc => Err(Error::from_win32(rc, "GetTeredoPort")),
    }
}

struct Shared {
    callback: Mutex<Box<dyn FnMut(TeredoEvent) + Send>>,
}

thread_local! {
    /// The registration whose callback this thread is running (0: none).
    static RUNNING: Cell<usize> = const { Cell::new(0) };
}

unsafe extern "system" fn trampoline(context: *const c_void, port: u16, notification_type: i32) {
    if context.is_null() {
        return;
    }
    RUNNING.with(|r| r.set(context as usize));
    // SAFETY: `context` is the `Shared` the registration keeps alive until cancel returns.
    let shared = unsafe { &*context.cast::<Shared>() };
    let current = if notification_type == crate::teredo::MIB_INITIAL_NOTIFICATION {
        teredo_port().ok().flatten()
    } else {
        None
    };
    let event = event_from_callback(port, notification_type, current);
    // A panic must not unwind into iphlpapi.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let mut cb = shared.callback.lock().unwrap_or_else(PoisonError::into_inner);
        cb(event);
    }));
    RUNNING.with(|r| r.set(0));
}

/// Watches the Teredo port; cancels on drop.
pub struct TeredoWatcher {
    handle: usize,
    context: usize,
    cancel: unsafe extern "system" fn(HANDLE) -> u32,
}

impl std::fmt::Debug for TeredoWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeredoWatcher").field("handle", &self.handle).finish_non_exhaustive()
    }
}

impl TeredoWatcher {
    /// Registers `callback`, which first receives `TeredoEvent::Initial`, then every change.
    ///
    /// # Errors
    /// `Unsupported` (the functions are missing), or the registration failed.
    pub fn start(callback: impl FnMut(TeredoEvent) + Send + 'static) -> Result<Self, Error> {
        let notify = notify_teredo_port_change()?;
        // Resolved now so that drop can always cancel.
        let cancel = cancel_mib_change_notify2()?;
        let shared = Arc::new(Shared { callback: Mutex::new(Box::new(callback)) });
        let context = Arc::into_raw(shared);
        let mut handle: HANDLE = std::ptr::null_mut();
        // SAFETY: the documented signature; `context` stays valid until cancel returns.
        let rc = unsafe { notify(Some(trampoline), context.cast(), true, &raw mut handle) };
        if rc != 0 {
            // SAFETY: the registration failed: no callback will use `context`; reclaim it.
            drop(unsafe { Arc::from_raw(context) });
            return Err(Error::from_win32(rc, "NotifyTeredoPortChange"));
        }
        Ok(Self { handle: handle as usize, context: context as usize, cancel })
    }
}

impl Drop for TeredoWatcher {
    fn drop(&mut self) {
        let (handle, context, cancel) = (self.handle, self.context, self.cancel);
        let finish = move || {
            // SAFETY: the registration's handle, cancelled once, not from its callback thread.
            unsafe { cancel(handle as HANDLE) };
            // SAFETY: after the cancel returns no callback runs: release the registration's
            // reference to the shared state.
            drop(unsafe { Arc::from_raw(context as *const Shared) });
        };
        if RUNNING.with(Cell::get) == context {
            // Dropped from inside its own callback: cancelling here would deadlock.
            std::thread::spawn(finish);
        } else {
            finish();
        }
    }
}
