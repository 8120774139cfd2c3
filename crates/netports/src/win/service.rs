//! Services: whether one runs and its process, and a watch for its stop.
//!
//! The process id of a running service (`QueryServiceStatusEx`, `SC_STATUS_PROCESS_INFO`), and
//! [`StopWatch`], which reports when a service stops (netports watches BFE, whose stop kills
//! every WFP handle).

use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_INVALID_HANDLE, ERROR_SERVICE_DOES_NOT_EXIST, HANDLE, WAIT_IO_COMPLETION,
    WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::Services::{
    CloseServiceHandle, NotifyServiceStatusChangeW, OpenSCManagerW, OpenServiceW,
    QueryServiceStatus, QueryServiceStatusEx, SC_HANDLE, SC_MANAGER_CONNECT,
    SC_STATUS_PROCESS_INFO, SERVICE_NOTIFY_2W, SERVICE_NOTIFY_STATUS_CHANGE,
    SERVICE_NOTIFY_STOP_PENDING, SERVICE_NOTIFY_STOPPED, SERVICE_QUERY_STATUS, SERVICE_RUNNING,
    SERVICE_STATUS, SERVICE_STATUS_PROCESS, SERVICE_STOP_PENDING, SERVICE_STOPPED,
};
use windows_sys::Win32::System::Threading::{
    CreateEventW, INFINITE, SetEvent, WaitForMultipleObjects, WaitForSingleObjectEx,
};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;
use crate::stop_watch::{Seen, StopPoll, Wake};

/// The pid of service `name` when it runs (`None`: unknown, stopped, or not readable).
#[must_use]
pub fn pid(name: &str) -> Option<u32> {
    let (scm, svc) = open(name, SERVICE_QUERY_STATUS).ok()?;
    let mut status = SERVICE_STATUS_PROCESS::default();
    let mut needed = 0u32;
    let ok = svc.is_some_and(|svc| {
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
        // SAFETY: the service handle opened by `open`, closed once.
        unsafe { CloseServiceHandle(svc) };
        rc != 0
    });
    // SAFETY: the manager handle opened by `open`, closed once.
    unsafe { CloseServiceHandle(scm) };
    (ok && status.dwProcessId != 0).then_some(status.dwProcessId)
}

/// Opens the service control manager and service `name` with `access`: `(manager, service)`,
/// the service `None` when it does not exist.
///
/// A handle Wine reports invalid (`ERROR_INVALID_HANDLE`, seen under Wine when two threads open
/// the manager at once; not documented for Windows) is retried a few times.
fn open(name: &str, access: u32) -> Result<(SC_HANDLE, Option<SC_HANDLE>), Error> {
    let wide: Vec<u16> = name.encode_utf16().chain(std::iter::once(0)).collect();
    let mut attempts = 0;
    loop {
        attempts += 1;
        // SAFETY: local machine, default database, connect right only.
        let scm = unsafe { OpenSCManagerW(std::ptr::null(), std::ptr::null(), SC_MANAGER_CONNECT) };
        if scm.is_null() {
            let code = last_error();
            if code == ERROR_INVALID_HANDLE && attempts < 5 {
                std::thread::sleep(std::time::Duration::from_millis(20));
                continue;
            }
            return Err(Error::from_win32(code, "OpenSCManagerW"));
        }
        // SAFETY: an open manager and a NUL-terminated name.
        let svc = unsafe { OpenServiceW(scm, wide.as_ptr(), access) };
        if !svc.is_null() {
            return Ok((scm, Some(svc)));
        }
        let code = last_error();
        // SAFETY: the manager opened above, closed once.
        unsafe { CloseServiceHandle(scm) };
        match code {
            ERROR_SERVICE_DOES_NOT_EXIST => {
                // SAFETY: as above; reopened for the caller, which closes it.
                let scm = unsafe {
                    OpenSCManagerW(std::ptr::null(), std::ptr::null(), SC_MANAGER_CONNECT)
                };
                if scm.is_null() {
                    return Err(Error::from_win32(last_error(), "OpenSCManagerW"));
                }
                return Ok((scm, None));
            }
            ERROR_INVALID_HANDLE if attempts < 5 => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            code => return Err(Error::from_win32(code, "OpenServiceW")),
        }
    }
}

/// The current state of service `name` (`None` when it does not exist).
///
/// # Errors
/// The service control manager cannot be opened, or the service's status cannot be read.
pub fn state(name: &str) -> Result<Option<u32>, Error> {
    let (scm, svc) = open(name, SERVICE_QUERY_STATUS)?;
    let result = match svc {
        None => Ok(None),
        Some(svc) => {
            let mut status = SERVICE_STATUS::default();
            // SAFETY: an open service and a valid status buffer.
            let ok = unsafe { QueryServiceStatus(svc, &raw mut status) };
            let r = if ok == 0 {
                Err(Error::from_win32(last_error(), "QueryServiceStatus"))
            } else {
                Ok(Some(status.dwCurrentState))
            };
            // SAFETY: the service opened by `open`, closed once.
            unsafe { CloseServiceHandle(svc) };
            r
        }
    };
    // SAFETY: the manager opened by `open`, closed once.
    unsafe { CloseServiceHandle(scm) };
    result
}

/// Whether service `name` runs (`false` when it does not exist).
///
/// # Errors
/// The service control manager cannot be opened, or the service's status cannot be read.
pub fn running(name: &str) -> Result<bool, Error> {
    Ok(state(name)? == Some(SERVICE_RUNNING))
}

/// A watch on a running service that reports when it stops (or stops watching).
///
/// Two threads. The *notifier* asks `NotifyServiceStatusChangeW` for the stop: it queues its
/// callback as an APC to the thread that asked, so that thread then waits alertably
/// (`WaitForSingleObjectEx`) for the APC or the watch's end. If the service is already stopped
/// (or stopping) the callback is queued at once ("If the service is already in any of the
/// requested states ... the callback function is queued immediately"); closing the service
/// handle cancels the request. The *watcher* waits for the notifier's signal or the watch's
/// end, and asks the state itself once a second with handles of its own, so a late or lost
/// notification, or a notifier stuck in the call (Wine has kept one there when the service
/// stopped while it registered), still gets the stop reported within that second. A watch
/// that cannot watch reports a stop too ([`crate::stop_watch`]): the state unreadable three
/// polls in a row, a notification whose state cannot be read, a failed wait. User mode
/// has no BFE-state subscription (`FwpmBfeStateSubscribeChanges0` is kernel mode only), so
/// this is how netports learns that BFE, and every WFP handle with it, went away.
pub struct StopWatch {
    events: Arc<Events>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for StopWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopWatch").finish_non_exhaustive()
    }
}

/// The watch's two manual-reset events: `end` (the watch ends) and `notified` (the notifier
/// saw the stop). Closed when the last thread using them lets go.
struct Events {
    end: usize,
    notified: usize,
}

impl Events {
    fn new() -> Result<Self, Error> {
        // SAFETY: a manual-reset event, initially not set, unnamed.
        let end = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
        if end.is_null() {
            return Err(Error::from_win32(last_error(), "CreateEventW"));
        }
        // SAFETY: as above.
        let notified = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
        if notified.is_null() {
            let code = last_error();
            // SAFETY: the event created above, closed once.
            unsafe { CloseHandle(end) };
            return Err(Error::from_win32(code, "CreateEventW"));
        }
        Ok(Self { end: end as usize, notified: notified as usize })
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        // SAFETY: the events created in `new`, closed once, when nothing uses them any more.
        unsafe { CloseHandle(self.end as HANDLE) };
        // SAFETY: as above.
        unsafe { CloseHandle(self.notified as HANDLE) };
    }
}

/// Set by the notification callback (its context).
unsafe extern "system" fn on_status(parameter: *const std::ffi::c_void) {
    // SAFETY: the SERVICE_NOTIFY_2W the notifier passed, alive while it waits; its context is
    // the notifier's flag.
    let notify = unsafe { &*parameter.cast::<SERVICE_NOTIFY_2W>() };
    // SAFETY: the context is the AtomicBool the notifier owns, alive while it waits.
    let fired = unsafe { &*notify.pContext.cast::<AtomicBool>() };
    fired.store(true, Ordering::SeqCst);
}

impl StopWatch {
    /// Watches service `name` (which must exist); `on_stop` runs once, on the watch's thread,
    /// when it stops or is stopping, or if the watch itself fails (the safe reading: a watch
    /// that cannot watch reports a stop; [`crate::stop_watch`] says when: the state
    /// unreadable [`crate::stop_watch::MAX_FAILED_READS`] polls in a row, about three seconds).
    ///
    /// # Errors
    /// The service does not exist, or the service control manager cannot be read.
    pub fn start(name: &str, on_stop: impl FnOnce(String) + Send + 'static) -> Result<Self, Error> {
        if state(name)?.is_none() {
            return Err(Error::from_win32(ERROR_SERVICE_DOES_NOT_EXIST, "OpenServiceW"));
        }
        let events = Arc::new(Events::new()?);
        let (n_events, n_name) = (Arc::clone(&events), name.to_owned());
        // The notifier is not joined: Drop ends it through `end`, and one stuck in the call
        // must not hold up the watch's end.
        std::thread::spawn(move || notifier(&n_name, &n_events));
        let (w_events, w_name) = (Arc::clone(&events), name.to_owned());
        let watcher = std::thread::spawn(move || {
            if let Some(why) = watcher(&w_name, &w_events) {
                on_stop(why);
            }
        });
        Ok(Self { events, watcher: Some(watcher) })
    }
}

/// How often the watcher also asks the service's state.
const POLL_MS: u32 = 1000;

const fn is_stopping(state: u32) -> bool {
    state == SERVICE_STOPPED || state == SERVICE_STOP_PENDING
}

/// A state read as the watch's decision sees it.
fn seen(state: Option<u32>) -> Seen {
    match state {
        None => Seen::Deleted,
        Some(SERVICE_STOPPED) => Seen::Stopped,
        Some(SERVICE_STOP_PENDING) => Seen::StopPending,
        Some(_) => Seen::Other,
    }
}

/// The notifier thread: asks for the stop notification and sets `notified` when it comes;
/// returns when the watch ends (or the request fails: the watcher still polls).
fn notifier(name: &str, events: &Events) {
    let Ok((scm, Some(svc))) = open(name, SERVICE_QUERY_STATUS) else { return };
    let fired = AtomicBool::new(false);
    let mut notify = SERVICE_NOTIFY_2W {
        dwVersion: SERVICE_NOTIFY_STATUS_CHANGE,
        pfnNotifyCallback: Some(on_status),
        pContext: (&raw const fired).cast_mut().cast(),
        ..SERVICE_NOTIFY_2W::default()
    };
    'request: loop {
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
            break;
        }
        loop {
            // SAFETY: an event handle alive while `events` is; an alertable wait runs the APC.
            let w = unsafe { WaitForSingleObjectEx(events.end as HANDLE, INFINITE, 1) };
            if w != WAIT_IO_COMPLETION {
                break 'request;
            }
            if fired.swap(false, Ordering::SeqCst) {
                break;
            }
        }
        if notify.dwNotificationStatus != 0 || is_stopping(notify.ServiceStatus.dwCurrentState) {
            // SAFETY: an event handle alive while `events` is.
            unsafe { SetEvent(events.notified as HANDLE) };
            break;
        }
        // Another state (a spurious wake): ask again.
    }
    // SAFETY: the handles `open` returned, closed once; closing the service handle cancels a
    // request still pending.
    unsafe { CloseServiceHandle(svc) };
    // SAFETY: as above.
    unsafe { CloseServiceHandle(scm) };
}

/// The watcher thread: `Some(why)` when the service stopped, `None` when the watch ended.
fn watcher(name: &str, events: &Events) -> Option<String> {
    let handles = [events.end as HANDLE, events.notified as HANDLE];
    let mut poll = StopPoll::default();
    loop {
        // SAFETY: two event handles alive while `events` is.
        let w = unsafe { WaitForMultipleObjects(2, handles.as_ptr(), 0, POLL_MS) };
        if w == WAIT_OBJECT_0 {
            return None;
        }
        // Notified, or a second passed: the state decides (a notification may come late, be
        // lost, or report an error).
        let wake = match w {
            WAIT_TIMEOUT => Wake::Poll,
            n if n == WAIT_OBJECT_0 + 1 => Wake::Notified,
            _ => Wake::WaitFailed(last_error()),
        };
        if let Some(why) = poll.look(wake, state(name).map(seen)) {
            return Some(why);
        }
    }
}

impl Drop for StopWatch {
    fn drop(&mut self) {
        // SAFETY: an event handle alive while `events` is.
        unsafe { SetEvent(self.events.end as HANDLE) };
        if let Some(t) = self.watcher.take() {
            let _ = t.join();
        }
    }
}

fn last_error() -> u32 {
    // SAFETY: no arguments.
    unsafe { windows_sys::Win32::Foundation::GetLastError() }
}
