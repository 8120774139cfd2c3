//! The process id of a running service (`QueryServiceStatusEx`, `SC_STATUS_PROCESS_INFO`).

use windows_sys::Win32::System::Services::{
    CloseServiceHandle, OpenSCManagerW, OpenServiceW, QueryServiceStatusEx, SC_MANAGER_CONNECT,
    SC_STATUS_PROCESS_INFO, SERVICE_QUERY_STATUS, SERVICE_STATUS_PROCESS,
};

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
