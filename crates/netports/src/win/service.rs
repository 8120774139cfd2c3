//! Services: whether one runs and its process, and a watch for its stop.
//!
//! The process id of a running service (`QueryServiceStatusEx`, `SC_STATUS_PROCESS_INFO`), and
//! [`StopWatch`], which reports when a service stops (netports watches BFE, whose stop kills
//! every WFP handle).

use windows_sys::Win32::Foundation::{
    CloseHandle, HANDLE, WAIT_IO_COMPLETION, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::Services::{
    CloseServiceHandle, NotifyServiceStatusChangeW, OpenSCManagerW, OpenServiceW,
    QueryServiceStatus, QueryServiceStatusEx, SC_HANDLE, SC_MANAGER_CONNECT,
    SC_STATUS_PROCESS_INFO, SERVICE_NOTIFY_2W, SERVICE_NOTIFY_STATUS_CHANGE,
    SERVICE_NOTIFY_STOP_PENDING, SERVICE_NOTIFY_STOPPED, SERVICE_QUERY_STATUS, SERVICE_RUNNING,
    SERVICE_STATUS, SERVICE_STATUS_PROCESS, SERVICE_STOP_PENDING, SERVICE_STOPPED,
};
use windows_sys::Win32::System::Threading::{CreateEventW, SetEvent, WaitForSingleObjectEx};

use crate::error::Error;

/// The pid of service `name` when it runs (`None`: unknown, stopped, or not readable).
#[must_use]
pub fn pid(name: &str) -> Option<u32> {
    let wide: Vec<u16> = name.encode_utf16().chain(std::iter::once(0)).collect();
    // SAFETY: local machine, default database, connect right only.
    let scm = unsafe { OpenSCManagerW(std::ptr::null(), std::ptr::null(), SC_MANAGER_CONNECT) };
    if scm.is_null() {
        return None;
    }
    // SAFETY: an open manager and a NUL-terminated name.
    let svc = unsafe { OpenServiceW(scm, wide.as_ptr(), SERVICE_QUERY_STATUS) };
    let mut status = SERVICE_STATUS_PROCESS::default();
    let mut needed = 0u32;
    let ok = !svc.is_null() && {
        // SAFETY: an open service and a buffer the size of SERVICE_STATUS_PROCESS.
        let rc = unsafe {
            QueryServiceStatusEx(
                svc,
                SC_STATUS_PROCESS_INFO,
                (&raw mut status).cast(),
                u32::try_from(size_of::<SERVICE_STATUS_PROCESS>()).unwrap_or(0),
                &raw mut needed,
            )
        };
        rc != 0
    };
    if !svc.is_null() {
        // SAFETY: the service handle opened above, closed once.
        unsafe { CloseServiceHandle(svc) };
    }
    // SAFETY: the manager handle opened above, closed once.
    unsafe { CloseServiceHandle(scm) };
    (ok && status.dwProcessId != 0).then_some(status.dwProcessId)
}

/// Whether service `name` runs (`false` when it does not exist).
///
/// # Errors
/// The service control manager cannot be opened, or the service's status cannot be read.
pub fn running(name: &str) -> Result<bool, Error> {
    let wide: Vec<u16> = name.encode_utf16().chain(std::iter::once(0)).collect();
    // SAFETY: local machine, default database, connect right only.
    let scm = unsafe { OpenSCManagerW(std::ptr::null(), std::ptr::null(), SC_MANAGER_CONNECT) };
    if scm.is_null() {
        return Err(Error::from_win32(last_error(), "OpenSCManagerW"));
    }
    // SAFETY: an open manager and a NUL-terminated name.
    let svc = unsafe { OpenServiceW(scm, wide.as_ptr(), SERVICE_QUERY_STATUS) };
    let result = if svc.is_null() {
        match last_error() {
            ERROR_SERVICE_DOES_NOT_EXIST => Ok(false),
            code => Err(Error::from_win32(code, "OpenServiceW")),
        }
    } else {
        let mut status = SERVICE_STATUS::default();
        // SAFETY: an open service and a valid status buffer.
        let ok = unsafe { QueryServiceStatus(svc, &raw mut status) };
        let r = if ok == 0 {
            Err(Error::from_win32(last_error(), "QueryServiceStatus"))
        } else {
            Ok(status.dwCurrentState == SERVICE_RUNNING)
        };
        // SAFETY: the service opened above, closed once.
        unsafe { CloseServiceHandle(svc) };
        r
    };
    // SAFETY: the manager opened above, closed once.
    unsafe { CloseServiceHandle(scm) };
    result
}

/// `ERROR_SERVICE_DOES_NOT_EXIST`.
const ERROR_SERVICE_DOES_NOT_EXIST: u32 = 1060;

/// A watch on a running service that reports when it stops (or stops watching).
///
/// `NotifyServiceStatusChangeW` queues its callback as an APC to the thread that asked, so a
/// thread of its own asks and then waits alertably (`WaitForSingleObjectEx`) on either the APC
/// or this watch's end. If the service is already stopped (or stopping) the callback is queued
/// at once ("If the service is already in any of the requested states ... the callback
/// function is queued immediately"). Closing the service handle cancels the request: after
/// `CloseServiceHandle` no notification is queued any more. User mode has no BFE-state
/// subscription (`FwpmBfeStateSubscribeChanges0` is kernel mode only), so this is how
/// netports learns that BFE, and every WFP handle with it, went away. The state is also asked
/// directly once a second, so a late or lost notification is noticed within that.
pub struct StopWatch {
    stop: usize,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for StopWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopWatch").finish_non_exhaustive()
    }
}

/// Set by the notification callback (its context).
unsafe extern "system" fn on_status(parameter: *const std::ffi::c_void) {
    // SAFETY: the SERVICE_NOTIFY_2W the watch thread passed, alive while it waits; its
    // context is the thread's flag.
    let notify = unsafe { &*parameter.cast::<SERVICE_NOTIFY_2W>() };
    // SAFETY: the context is the AtomicBool the watch thread owns, alive while it waits.
    let fired = unsafe { &*notify.pContext.cast::<std::sync::atomic::AtomicBool>() };
    fired.store(true, std::sync::atomic::Ordering::SeqCst);
}

impl StopWatch {
    /// Watches service `name` (which must exist); `on_stop` runs once, on the watch's thread,
    /// when it stops or is stopping, or if the watch itself fails (the safe reading: a watch
    /// that cannot watch reports a stop).
    ///
    /// # Errors
    /// The service control manager or the service cannot be opened.
    pub fn start(name: &str, on_stop: impl FnOnce(String) + Send + 'static) -> Result<Self, Error> {
        let wide: Vec<u16> = name.encode_utf16().chain(std::iter::once(0)).collect();
        // SAFETY: local machine, default database, connect right only.
        let scm = unsafe { OpenSCManagerW(std::ptr::null(), std::ptr::null(), SC_MANAGER_CONNECT) };
        if scm.is_null() {
            return Err(Error::from_win32(last_error(), "OpenSCManagerW"));
        }
        // SAFETY: an open manager and a NUL-terminated name.
        let svc = unsafe { OpenServiceW(scm, wide.as_ptr(), SERVICE_QUERY_STATUS) };
        if svc.is_null() {
            let code = last_error();
            // SAFETY: the manager opened above, closed once.
            unsafe { CloseServiceHandle(scm) };
            return Err(Error::from_win32(code, "OpenServiceW"));
        }
        // SAFETY: a manual-reset event, initially not set, unnamed.
        let stop = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
        if stop.is_null() {
            let code = last_error();
            // SAFETY: the handles opened above, closed once.
            unsafe { CloseServiceHandle(svc) };
            // SAFETY: as above.
            unsafe { CloseServiceHandle(scm) };
            return Err(Error::from_win32(code, "CreateEventW"));
        }
        let (svc_addr, scm_addr, stop_addr) = (svc as usize, scm as usize, stop as usize);
        let thread = std::thread::spawn(move || {
            let why = watch(svc_addr as SC_HANDLE, stop_addr as HANDLE);
            // SAFETY: the handles opened by `start`, owned by this thread, closed once; closing
            // the service handle cancels any request still pending.
            unsafe { CloseServiceHandle(svc_addr as SC_HANDLE) };
            // SAFETY: as above.
            unsafe { CloseServiceHandle(scm_addr as SC_HANDLE) };
            if let Some(why) = why {
                on_stop(why);
            }
        });
        Ok(Self { stop: stop_addr, thread: Some(thread) })
    }
}

/// How often the watch also asks the service's state (a lost notification is noticed then).
const POLL_MS: u32 = 1000;

const fn is_stopping(state: u32) -> bool {
    state == SERVICE_STOPPED || state == SERVICE_STOP_PENDING
}

fn state_text(state: u32) -> String {
    if state == SERVICE_STOPPED { "stopped".into() } else { "stopping".into() }
}

/// The watch thread: `Some(why)` when the service stopped (or the watch failed), `None` when
/// the watch was ended.
fn watch(svc: SC_HANDLE, stop: HANDLE) -> Option<String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let fired = AtomicBool::new(false);
    let mut notify = SERVICE_NOTIFY_2W {
        dwVersion: SERVICE_NOTIFY_STATUS_CHANGE,
        pfnNotifyCallback: Some(on_status),
        pContext: (&raw const fired).cast_mut().cast(),
        ..SERVICE_NOTIFY_2W::default()
    };
    loop {
        // SAFETY: a service handle with SERVICE_QUERY_STATUS and a notify buffer that stays
        // valid until the callback ran or the handle is closed (both on this thread).
        let rc = unsafe {
            NotifyServiceStatusChangeW(
                svc,
                SERVICE_NOTIFY_STOPPED | SERVICE_NOTIFY_STOP_PENDING,
                &raw mut notify,
            )
        };
        if rc != 0 {
            return Some(format!("NotifyServiceStatusChangeW failed with Windows error {rc}"));
        }
        loop {
            // SAFETY: an event handle owned by the watch; an alertable wait runs the APC.
            let w = unsafe { WaitForSingleObjectEx(stop, POLL_MS, 1) };
            if w == WAIT_OBJECT_0 {
                return None;
            }
            if w == WAIT_TIMEOUT {
                // A notification can be late or lost (ERROR_SERVICE_NOTIFY_CLIENT_LAGGING;
                // Wine has lost one here): ask the state directly as well, once a second.
                let mut status = SERVICE_STATUS::default();
                // SAFETY: a service handle with SERVICE_QUERY_STATUS and a valid buffer.
                let ok = unsafe { QueryServiceStatus(svc, &raw mut status) };
                if ok != 0 && is_stopping(status.dwCurrentState) {
                    return Some(state_text(status.dwCurrentState));
                }
                continue;
            }
            if w != WAIT_IO_COMPLETION {
                return Some(format!("waiting for the service failed ({w:#x})"));
            }
            if fired.swap(false, Ordering::SeqCst) {
                break;
            }
        }
        if notify.dwNotificationStatus != 0 {
            return Some(format!(
                "the service notification failed with Windows error {}",
                notify.dwNotificationStatus
            ));
        }
        let state = notify.ServiceStatus.dwCurrentState;
        if is_stopping(state) {
            return Some(state_text(state));
        }
        // Another state (a spurious wake): ask again.
    }
}

impl Drop for StopWatch {
    fn drop(&mut self) {
        // SAFETY: the event created in `start`, alive until closed below.
        unsafe { SetEvent(self.stop as HANDLE) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // SAFETY: the event created in `start`, closed once, after the thread ended.
        unsafe { CloseHandle(self.stop as HANDLE) };
    }
}

fn last_error() -> u32 {
    // SAFETY: no arguments.
    unsafe { windows_sys::Win32::Foundation::GetLastError() }
}
