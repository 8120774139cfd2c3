//! The seven NSPv2 entry points Winsock calls, and the `NSPV2_ROUTINE` table that names them.
//!
//! Each entry point reads the caller's structures (bounded, null-checked), calls the hosted
//! [`Provider`], and reports the result the way its type demands (see
//! ../shared/reference/usermode-apis.md and the SDK typedefs):
//! - `INT` entries (`Startup`, `Cleanup`, `LookupServiceBegin`, `LookupServiceEnd`) return
//!   `NO_ERROR`, or `SOCKET_ERROR` after `WSASetLastError(code)`;
//! - `VOID` entries with an async call (`LookupServiceNextEx`, `SetServiceEx`) complete it
//!   with `WSAProviderCompleteAsyncCall(hAsyncCall, code)` exactly once, on every path,
//!   before returning;
//! - `ClientSessionRundown` returns nothing and reports nothing.
//!
//! A panic never crosses into Winsock: it is caught here and reported as `WSANO_RECOVERY`.
//! The Winsock functions the entry points call back (`WSAProviderCompleteAsyncCall`,
//! `WSASetLastError`) are given by the host with [`host`], so the entry points run the same
//! on Windows (netports resolves them in ws2_32) and in tests (which record them).
//!
//! What `NSPv2Startup` stores in `*ppvClientSessionArg` and what `LookupServiceBegin`
//! returns in `*lphLookup` are ids, not pointers (see [`crate::sessions`]).

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, PoisonError, RwLock};

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::Networking::WinSock::{CSADDR_INFO, NSPV2_ROUTINE, WSAQUERYSET2W};
use windows_sys::Win32::System::Com::BLOB;
use windows_sys::core::GUID;

use crate::provider::{Provider, RegInfo, Restrictions};
use crate::queryset::layout::QS_SIZE;
use crate::sessions::{LookupHandle, SessionId};
use crate::wsa::{SOCKET_ERROR, WSANO_RECOVERY, WsaError};

/// `WSAProviderCompleteAsyncCall`.
pub type CompleteFn = unsafe extern "system" fn(HANDLE, i32) -> i32;
/// `WSASetLastError`.
pub type SetLastErrorFn = unsafe extern "system" fn(i32);

/// The longest service name read from a caller, in UTF-16 units (longer is `WSAEINVAL`).
pub const MAX_WIDE_NAME: usize = 256;
/// The largest `lpBlob` read from a `SetServiceEx` caller.
pub const MAX_BLOB: usize = 64;

#[derive(Clone)]
struct Host {
    provider: Arc<Provider>,
    complete: CompleteFn,
    set_last_error: SetLastErrorFn,
}

static HOST: RwLock<Option<Host>> = RwLock::new(None);

/// The host's Winsock functions, kept after the provider stops being hosted: a call that
/// arrives then (Winsock may still dispatch one after `WSAUnadvertiseProvider`) is refused and
/// its async call completed like every other path. They are process-wide ws2_32 exports.
static CALLS: RwLock<Option<(CompleteFn, SetLastErrorFn)>> = RwLock::new(None);

/// The code a call gets when no provider is hosted.
const NOT_HOSTED: i32 = WSANO_RECOVERY;

fn calls() -> Option<(CompleteFn, SetLastErrorFn)> {
    *CALLS.read().unwrap_or_else(PoisonError::into_inner)
}

fn current() -> Option<Host> {
    HOST.read().unwrap_or_else(PoisonError::into_inner).clone()
}

/// While alive, the entry points serve its provider; dropping it stops them (calls already
/// running finish with the provider they started with).
#[derive(Debug)]
pub struct Hosting(());

/// A provider is hosted already (one per process: the entry points are process-wide).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlreadyHosted;

impl std::fmt::Display for AlreadyHosted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a provider is already hosted in this process")
    }
}

impl std::error::Error for AlreadyHosted {}

/// Makes the entry points serve `provider`, completing async calls with `complete` and
/// reporting `INT` failures with `set_last_error`.
///
/// # Errors
/// [`AlreadyHosted`].
pub fn host(
    provider: Arc<Provider>,
    complete: CompleteFn,
    set_last_error: SetLastErrorFn,
) -> Result<Hosting, AlreadyHosted> {
    let mut slot = HOST.write().unwrap_or_else(PoisonError::into_inner);
    if slot.is_some() {
        return Err(AlreadyHosted);
    }
    *slot = Some(Host { provider, complete, set_last_error });
    drop(slot);
    *CALLS.write().unwrap_or_else(PoisonError::into_inner) = Some((complete, set_last_error));
    Ok(Hosting(()))
}

impl Drop for Hosting {
    fn drop(&mut self) {
        *HOST.write().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// The table to give `WSAAdvertiseProvider`: version 1.0, all seven entries.
#[must_use]
pub fn routine() -> NSPV2_ROUTINE {
    NSPV2_ROUTINE {
        cbSize: u32::try_from(size_of::<NSPV2_ROUTINE>()).unwrap_or(u32::MAX),
        dwMajorVersion: 1,
        dwMinorVersion: 0,
        NSPv2Startup: Some(nsp_startup),
        NSPv2Cleanup: Some(nsp_cleanup),
        NSPv2LookupServiceBegin: Some(nsp_lookup_service_begin),
        NSPv2LookupServiceNextEx: Some(nsp_lookup_service_next_ex),
        NSPv2LookupServiceEnd: Some(nsp_lookup_service_end),
        NSPv2SetServiceEx: Some(nsp_set_service_ex),
        NSPv2ClientSessionRundown: Some(nsp_client_session_rundown),
    }
}

/// Runs an `INT` entry: `NO_ERROR`, or `SOCKET_ERROR` with the code set.
fn int_entry(body: impl FnOnce(&Provider) -> Result<(), WsaError>) -> i32 {
    let Some(host) = current() else {
        if let Some((_, set_last_error)) = calls() {
            // SAFETY: the host's `WSASetLastError`, which takes any code.
            unsafe { set_last_error(NOT_HOSTED) };
        }
        return SOCKET_ERROR;
    };
    let code = match catch_unwind(AssertUnwindSafe(|| body(&host.provider))) {
        Ok(Ok(())) => return 0,
        Ok(Err(e)) => e.code(),
        Err(_) => WSANO_RECOVERY,
    };
    // SAFETY: the host's `WSASetLastError`, which takes any code.
    unsafe { (host.set_last_error)(code) };
    SOCKET_ERROR
}

/// Runs a `VOID` entry with an async call: completes `async_call` exactly once.
fn async_entry(async_call: HANDLE, body: impl FnOnce(&Provider) -> Result<(), WsaError>) {
    let Some(host) = current() else {
        if let Some((complete, _)) = calls() {
            // SAFETY: the host's `WSAProviderCompleteAsyncCall` with the handle Winsock gave
            // this call, completed here once.
            unsafe { complete(async_call, NOT_HOSTED) };
        }
        return;
    };
    let code = match catch_unwind(AssertUnwindSafe(|| body(&host.provider))) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => e.code(),
        Err(_) => WSANO_RECOVERY,
    };
    // SAFETY: the host's `WSAProviderCompleteAsyncCall` with the handle Winsock gave this
    // call, completed here once.
    unsafe { (host.complete)(async_call, code) };
}

fn session_of(arg: *const c_void) -> Option<SessionId> {
    SessionId::from_raw(arg.addr() as u64)
}

/// Reads a GUID argument.
///
/// # Safety
/// `p` is null or points to a readable GUID.
unsafe fn read_guid(p: *const GUID) -> Result<GUID, WsaError> {
    if p.is_null() {
        return Err(WsaError::Invalid);
    }
    // SAFETY: non-null and readable (contract).
    Ok(unsafe { p.read_unaligned() })
}

/// Reads a NUL-terminated UTF-16 string of at most [`MAX_WIDE_NAME`] units.
///
/// # Safety
/// `p` is null or points to a NUL-terminated UTF-16 string (reading stops at the NUL or
/// after [`MAX_WIDE_NAME`] units, whichever is first).
unsafe fn read_wide(p: *const u16) -> Result<Option<String>, WsaError> {
    if p.is_null() {
        return Ok(None);
    }
    let mut units = Vec::new();
    for i in 0..=MAX_WIDE_NAME {
        // SAFETY: within the string (contract): every unit before the NUL is readable.
        let c = unsafe { p.wrapping_add(i).read_unaligned() };
        if c == 0 {
            return String::from_utf16(&units).map(Some).map_err(|_| WsaError::Invalid);
        }
        units.push(c);
    }
    Err(WsaError::Invalid)
}

/// Reads the caller's query set.
///
/// # Safety
/// `p` is null or points to a readable `WSAQUERYSET2W` whose pointers are null or valid.
unsafe fn read_queryset(p: *const WSAQUERYSET2W) -> Result<WSAQUERYSET2W, WsaError> {
    if p.is_null() {
        return Err(WsaError::Invalid);
    }
    // SAFETY: non-null and readable (contract).
    let qs = unsafe { p.read_unaligned() };
    if (qs.dwSize as usize) < QS_SIZE {
        return Err(WsaError::Invalid);
    }
    Ok(qs)
}

/// `NSPv2Startup`.
///
/// # Safety
/// Called by Winsock with a valid provider id and out-pointer.
unsafe extern "system" fn nsp_startup(provider: *const GUID, session_out: *mut *mut c_void) -> i32 {
    int_entry(|p| {
        // SAFETY: Winsock passes a valid provider id (null is refused).
        let id = unsafe { read_guid(provider) }?;
        if session_out.is_null() {
            return Err(WsaError::Invalid);
        }
        let s = p.startup(&id)?;
        let arg = std::ptr::without_provenance_mut(usize::try_from(s.raw()).unwrap_or(0));
        // SAFETY: a non-null out-pointer from Winsock.
        unsafe { session_out.write_unaligned(arg) };
        Ok(())
    })
}

/// `NSPv2Cleanup`.
///
/// # Safety
/// Called by Winsock with a valid provider id.
unsafe extern "system" fn nsp_cleanup(provider: *const GUID, session: *const c_void) -> i32 {
    int_entry(|p| {
        // SAFETY: Winsock passes a valid provider id (null is refused).
        let id = unsafe { read_guid(provider) }?;
        p.cleanup(&id, session_of(session))
    })
}

/// `NSPv2LookupServiceBegin`.
///
/// # Safety
/// Called by Winsock with valid pointers (nulls are refused).
unsafe extern "system" fn nsp_lookup_service_begin(
    provider: *const GUID,
    restrictions: *const WSAQUERYSET2W,
    flags: u32,
    session: *const c_void,
    lookup_out: *mut HANDLE,
) -> i32 {
    int_entry(|p| {
        // SAFETY: Winsock passes a valid provider id (null is refused).
        let id = unsafe { read_guid(provider) }?;
        // SAFETY: Winsock passes the client's query set (null is refused).
        let qs = unsafe { read_queryset(restrictions) }?;
        if lookup_out.is_null() {
            return Err(WsaError::Invalid);
        }
        // SAFETY: the query set's name is null or a NUL-terminated string.
        let name = unsafe { read_wide(qs.lpszServiceInstanceName) }?;
        let wanted = if qs.lpNSProviderId.is_null() {
            None
        } else {
            // SAFETY: a non-null provider id in the client's query set.
            Some(unsafe { read_guid(qs.lpNSProviderId) }?)
        };
        let r = Restrictions { name, namespace: qs.dwNameSpace, provider: wanted };
        let h = p.lookup_begin(&id, &r, flags, session_of(session))?;
        let handle = std::ptr::without_provenance_mut(usize::try_from(h.raw()).unwrap_or(0));
        // SAFETY: a non-null out-pointer from Winsock.
        unsafe { lookup_out.write_unaligned(handle) };
        Ok(())
    })
}

/// `NSPv2LookupServiceNextEx`: completes `async_call` with the result.
///
/// # Safety
/// Called by Winsock; `length` points to the size of `results`, a writable buffer.
unsafe extern "system" fn nsp_lookup_service_next_ex(
    async_call: HANDLE,
    lookup: HANDLE,
    flags: u32,
    length: *const u32,
    results: *mut WSAQUERYSET2W,
) {
    async_entry(async_call, |p| {
        let handle = LookupHandle::from_raw(lookup.addr() as u64).ok_or(WsaError::InvalidHandle)?;
        if length.is_null() {
            return Err(WsaError::Invalid);
        }
        // SAFETY: a non-null length from Winsock.
        let len = unsafe { length.read_unaligned() } as usize;
        let mut empty = [0u8; 0];
        let buf: &mut [u8] = if results.is_null() || len == 0 {
            &mut empty
        } else {
            // SAFETY: Winsock's buffer of `*length` writable bytes, not aliased during the
            // call.
            unsafe { std::slice::from_raw_parts_mut(results.cast::<u8>(), len) }
        };
        match p.lookup_next(handle, flags, buf) {
            Err(WsaError::Fault { needed }) => {
                let needed = u32::try_from(needed).unwrap_or(u32::MAX);
                // SAFETY: the length is in/out (LPDWORD in the SDK); windows-sys declares it
                // `*const`, the memory is the caller's writable DWORD.
                unsafe { length.cast_mut().write_unaligned(needed) };
                Err(WsaError::Fault { needed: needed as usize })
            }
            other => other.map(|_| ()),
        }
    });
}

/// `NSPv2LookupServiceEnd`.
///
/// # Safety
/// Called by Winsock.
unsafe extern "system" fn nsp_lookup_service_end(lookup: HANDLE) -> i32 {
    int_entry(|p| {
        let handle = LookupHandle::from_raw(lookup.addr() as u64).ok_or(WsaError::InvalidHandle)?;
        p.lookup_end(handle)
    })
}

/// Reads what `SetServiceEx` registers.
///
/// # Safety
/// As [`read_queryset`], and the query set's blob and addresses are null or valid.
unsafe fn read_reg_info(p: *const WSAQUERYSET2W) -> Result<RegInfo, WsaError> {
    // SAFETY: forwarded contract.
    let qs = unsafe { read_queryset(p) }?;
    // SAFETY: the name is null or a NUL-terminated string.
    let name = unsafe { read_wide(qs.lpszServiceInstanceName) }?;
    let blob = if qs.lpBlob.is_null() {
        None
    } else {
        // SAFETY: a non-null BLOB in the client's query set.
        let b: BLOB = unsafe { qs.lpBlob.read_unaligned() };
        let n = b.cbSize as usize;
        if n > MAX_BLOB || (n > 0 && b.pBlobData.is_null()) {
            return Err(WsaError::Invalid);
        }
        Some(if n == 0 {
            Vec::new()
        } else {
            // SAFETY: the blob's `cbSize` readable bytes.
            unsafe { std::slice::from_raw_parts(b.pBlobData, n) }.to_vec()
        })
    };
    let first_address = if qs.dwNumberOfCsAddrs == 0 || qs.lpcsaBuffer.is_null() {
        None
    } else {
        // SAFETY: the first of `dwNumberOfCsAddrs` (>= 1) entries.
        let cs: CSADDR_INFO = unsafe { qs.lpcsaBuffer.read_unaligned() };
        let sa = cs.LocalAddr.lpSockaddr;
        if sa.is_null() || cs.LocalAddr.iSockaddrLength < 4 {
            None
        } else {
            // SAFETY: the socket address has at least 4 bytes: family, then port.
            let head: [u8; 4] = unsafe { sa.cast::<[u8; 4]>().read_unaligned() };
            Some((cs.iProtocol, u16::from_be_bytes([head[2], head[3]])))
        }
    };
    Ok(RegInfo { name, blob, first_address })
}

/// `NSPv2SetServiceEx`: completes `async_call` with the result.
///
/// # Safety
/// Called by Winsock with valid pointers (nulls are refused).
unsafe extern "system" fn nsp_set_service_ex(
    async_call: HANDLE,
    provider: *const GUID,
    reg_info: *const WSAQUERYSET2W,
    operation: i32,
    _flags: u32,
    session: *const c_void,
) {
    async_entry(async_call, |p| {
        // SAFETY: Winsock passes a valid provider id (null is refused).
        let id = unsafe { read_guid(provider) }?;
        // SAFETY: Winsock passes the client's query set (null is refused).
        let reg = unsafe { read_reg_info(reg_info) }?;
        p.set_service(&id, &reg, operation, session_of(session))
    });
}

/// `NSPv2ClientSessionRundown`: frees everything the ending session owns.
///
/// # Safety
/// Called by Winsock.
unsafe extern "system" fn nsp_client_session_rundown(
    provider: *const GUID,
    session: *const c_void,
) {
    let Some(host) = current() else { return };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: Winsock passes a valid provider id (null is refused).
        if let Ok(id) = unsafe { read_guid(provider) } {
            host.provider.rundown(&id, session_of(session));
        }
    }));
}
