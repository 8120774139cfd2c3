//! The Winsock side of `netports nsp`.
//!
//! Hosting and advertising the provider, installing it, and resolving names as a client.
//! Every ws2_32 function is resolved at run time (Wine 8
//! lacks `WSAAdvertiseProvider`, `WSAProviderCompleteAsyncCall` and `WSCInstallNameSpaceEx`).
//!
//! Verify on Windows (docs/WINDOWS-VERIFICATION.md): the `WSCInstallNameSpaceEx` arguments
//! for an NSPv2 provider (an empty path as Microsoft's NSPv2 sample passes, version 1, an
//! `NAPI_PROVIDER_INSTALLATION_BLOB` of version 1 with `ProviderType_Application`), and that
//! Winsock keeps using the `NSPV2_ROUTINE` table's address (it lives for the whole process
//! here).

use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use netports_nsp::provider::{NAMESPACE, SourceError, Sources};
use netports_nsp::reservation::Reservation;
use netports_nsp::{PROVIDER_ID, Provider, routine};
use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::Networking::WinSock::{
    CSADDR_INFO, LUP_RETURN_ALL, NAPI_PROVIDER_INSTALLATION_BLOB, NSPV2_ROUTINE, WSADATA,
    WSAEFAULT, WSAEINVALIDPROVIDER, WSANAMESPACE_INFOW, WSANO_DATA, WSAQUERYSETW,
    WSASERVICE_NOT_FOUND,
};
use windows_sys::Win32::System::Com::BLOB;
use windows_sys::core::GUID;

use super::dynload::{Dll, resolve, system_fn};
use super::persistent::WindowsReservations;
use crate::error::{Error, win32};
use crate::model::Reservations;
use crate::nsp::{Catalog, NspHost, Resolved};
use crate::range::{ReservationCall, persistent_api};

system_fn!(fn wsa_startup = Dll::Ws2_32, c"WSAStartup": fn(u16, *mut WSADATA) -> i32;);
system_fn!(fn wsa_get_last_error = Dll::Ws2_32, c"WSAGetLastError": fn() -> i32;);
system_fn!(fn wsa_set_last_error = Dll::Ws2_32, c"WSASetLastError": fn(i32););
system_fn!(fn wsa_advertise_provider = Dll::Ws2_32, c"WSAAdvertiseProvider": fn(*const GUID, *const NSPV2_ROUTINE) -> i32;);
system_fn!(fn wsa_unadvertise_provider = Dll::Ws2_32, c"WSAUnadvertiseProvider": fn(*const GUID) -> i32;);
system_fn!(fn wsa_provider_complete_async_call = Dll::Ws2_32, c"WSAProviderCompleteAsyncCall": fn(HANDLE, i32) -> i32;);
system_fn!(fn wsc_install_name_space_ex = Dll::Ws2_32, c"WSCInstallNameSpaceEx": fn(*const u16, *const u16, u32, u32, *const GUID, *const BLOB) -> i32;);
system_fn!(fn wsc_install_name_space_ex32 = Dll::Ws2_32, c"WSCInstallNameSpaceEx32": fn(*const u16, *const u16, u32, u32, *const GUID, *const BLOB) -> i32;);
system_fn!(fn wsc_uninstall_name_space = Dll::Ws2_32, c"WSCUnInstallNameSpace": fn(*const GUID) -> i32;);
system_fn!(fn wsc_uninstall_name_space32 = Dll::Ws2_32, c"WSCUnInstallNameSpace32": fn(*const GUID) -> i32;);
system_fn!(fn wsa_enum_name_space_providers_w = Dll::Ws2_32, c"WSAEnumNameSpaceProvidersW": fn(*mut u32, *mut WSANAMESPACE_INFOW) -> i32;);
system_fn!(fn wsc_enum_name_space_providers32 = Dll::Ws2_32, c"WSCEnumNameSpaceProviders32": fn(*mut u32, *mut WSANAMESPACE_INFOW) -> i32;);
system_fn!(fn wsa_lookup_service_begin_w = Dll::Ws2_32, c"WSALookupServiceBeginW": fn(*const WSAQUERYSETW, u32, *mut HANDLE) -> i32;);
system_fn!(fn wsa_lookup_service_next_w = Dll::Ws2_32, c"WSALookupServiceNextW": fn(HANDLE, u32, *mut u32, *mut WSAQUERYSETW) -> i32;);
system_fn!(fn wsa_lookup_service_end = Dll::Ws2_32, c"WSALookupServiceEnd": fn(HANDLE) -> i32;);

/// The provider's sources on Windows.
#[derive(Debug, Default)]
pub struct WindowsSources;

impl Sources for WindowsSources {
    fn teredo_port(&self) -> Result<Option<u16>, SourceError> {
        match super::teredo::teredo_port() {
            Ok(r) => Ok(r.first()),
            Err(Error::NotReady) => Err(SourceError::NotReady),
            Err(Error::Unsupported { what }) => Err(SourceError::Unsupported(what)),
            Err(e) => Err(SourceError::Failed(e.to_string())),
        }
    }

    fn reservation_exists(&self, r: &Reservation) -> Result<bool, SourceError> {
        let (proto, block) = (r.transport(), r.block());
        match WindowsReservations.lookup(proto, block) {
            Ok(_) => Ok(true),
            Err(win32::NOT_FOUND) => Ok(false),
            Err(win32::CALL_NOT_IMPLEMENTED) => Err(SourceError::Unsupported(
                persistent_api(proto, ReservationCall::Lookup).to_owned(),
            )),
            Err(code) => Err(SourceError::Failed(format!("Windows error {code}"))),
        }
    }
}

/// The provider id at a fixed address (Winsock receives pointers to it).
static ID: GUID = PROVIDER_ID;

/// The routine table, alive for the whole process (Winsock may keep its address).
static ROUTINE: OnceLock<NSPV2_ROUTINE> = OnceLock::new();

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// `WSAGetLastError()` (0 when it cannot be resolved).
fn last_code() -> u32 {
    // SAFETY: no arguments.
    let code = wsa_get_last_error().map_or(0, |f| unsafe { f() });
    u32::try_from(code).unwrap_or(0)
}

fn last_error(function: &'static str) -> Error {
    // SAFETY: no arguments.
    let code = wsa_get_last_error().map_or(0, |f| unsafe { f() });
    match code {
        10_013 => Error::AccessDenied,
        WSASERVICE_NOT_FOUND => Error::NotFound,
        WSANO_DATA => Error::NoData,
        c => Error::from_win32(u32::try_from(c).unwrap_or(0), function),
    }
}

fn startup() -> Result<(), Error> {
    let f = wsa_startup()?;
    let mut data = WSADATA::default();
    // SAFETY: version 2.2 and a valid out-pointer.
    match unsafe { f(0x0202, &raw mut data) } {
        0 => Ok(()),
        rc => Err(Error::from_win32(u32::try_from(rc).unwrap_or(0), "WSAStartup")),
    }
}

/// `netports nsp` on Windows.
#[derive(Debug, Default)]
pub struct WindowsNsp;

impl NspHost for WindowsNsp {
    fn serve(&mut self, provider: Arc<Provider>, ready: &mut dyn FnMut()) -> Result<(), Error> {
        // Resolve everything before anything is advertised.
        let (advertise, unadvertise) = (wsa_advertise_provider()?, wsa_unadvertise_provider()?);
        let (complete, set_last_error) =
            (wsa_provider_complete_async_call()?, wsa_set_last_error()?);
        startup()?;
        let hosting = routine::host(provider, complete, set_last_error)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let table = ROUTINE.get_or_init(routine::routine);
        // SAFETY: a valid GUID and a table that lives for the whole process.
        if unsafe { advertise(&raw const ID, table) } != 0 {
            drop(hosting);
            // WSAEINVALIDPROVIDER: not in the catalog (uninstalled since the check).
            return Err(if last_code() == WSAEINVALIDPROVIDER.cast_unsigned() {
                crate::nsp::not_installed()
            } else {
                last_error("WSAAdvertiseProvider")
            });
        }
        let interrupt = super::interrupt::Interrupt::install();
        ready();
        interrupt.wait();
        // SAFETY: the GUID advertised above.
        unsafe { unadvertise(&raw const ID) };
        drop(interrupt);
        drop(hosting);
        Ok(())
    }

    fn installed(&mut self, catalog: Catalog) -> Result<bool, Error> {
        installed(catalog)
    }

    fn install(&mut self, catalog: Catalog) -> Result<String, Error> {
        let (install, function) = match catalog {
            Catalog::Native => (wsc_install_name_space_ex()?, "WSCInstallNameSpaceEx"),
            Catalog::Wow64 => (wsc_install_name_space_ex32()?, "WSCInstallNameSpaceEx32"),
        };
        // WSCInstallNameSpaceEx2 is undocumented (mingw lists 7 parameters, no types): it is
        // looked up so the output can say whether this Windows has it, and never called with
        // a guessed signature.
        let ex2 = resolve(Dll::Ws2_32, c"WSCInstallNameSpaceEx2").is_ok();
        // As Microsoft's NSPv2 sample installs its provider: an empty path (an NSPv2 provider
        // is hosted by a process that advertises it, there is no DLL to load), NS_EMAIL,
        // version 1, and an installation blob of version 1. The sample's header names the
        // second field `dwReserved` and leaves it 0; nsemail.h documents it as
        // `dwProviderType`, and netports sets `ProviderType_Application` (the one supported
        // type). No domains (the sample registers one it is primary for): clients reach the
        // provider by its id. The 32-bit catalog gets the same entry (the `...32` functions
        // take the same arguments). Verify on Windows (docs/WINDOWS-VERIFICATION.md).
        let path = wide("");
        let identifier = wide("netports name provider");
        let size = u32::try_from(size_of::<NAPI_PROVIDER_INSTALLATION_BLOB>()).unwrap_or(0);
        let mut napi = NAPI_PROVIDER_INSTALLATION_BLOB {
            dwVersion: 1,
            dwProviderType: crate::nsp::PROVIDER_TYPE_APPLICATION,
            fSupportsWildCard: 0,
            cDomains: 0,
            // Where domain descriptions would start, as the sample computes it.
            OffsetFirstDomain: size,
        };
        let blob = BLOB { cbSize: size, pBlobData: (&raw mut napi).cast() };
        // SAFETY: NUL-terminated strings, a valid GUID and blob, all alive for the call.
        let rc = unsafe {
            install(
                identifier.as_ptr(),
                path.as_ptr(),
                NAMESPACE,
                1,
                &raw const ID,
                &raw const blob,
            )
        };
        if rc != 0 {
            return Err(crate::nsp::install_error(last_code(), function));
        }
        Ok(match catalog {
            Catalog::Native => format!(
                "{function}; WSCInstallNameSpaceEx2 {}",
                if ex2 { "present, not used (undocumented)" } else { "absent" }
            ),
            Catalog::Wow64 => function.to_owned(),
        })
    }

    fn uninstall(&mut self, catalog: Catalog) -> Result<(), Error> {
        let (f, function) = match catalog {
            Catalog::Native => (wsc_uninstall_name_space()?, "WSCUnInstallNameSpace"),
            Catalog::Wow64 => (wsc_uninstall_name_space32()?, "WSCUnInstallNameSpace32"),
        };
        // SAFETY: a valid GUID.
        if unsafe { f(&raw const ID) } != 0 {
            return Err(crate::nsp::install_error(last_code(), function));
        }
        Ok(())
    }

    fn resolve(&mut self, name: &str) -> Result<Resolved, Error> {
        let (begin, next, end) = (
            wsa_lookup_service_begin_w()?,
            wsa_lookup_service_next_w()?,
            wsa_lookup_service_end()?,
        );
        startup()?;
        // The name, NS_EMAIL, the provider id and netports' service class
        // (`lpServiceClassId` is required): as any application would ask.
        let mut lookup = netports_nsp::client::Lookup::new(name);
        let restrictions = lookup.query_set();
        let mut lookup: HANDLE = std::ptr::null_mut();
        // SAFETY: a valid query set whose strings live for the call, a valid out-pointer.
        if unsafe { begin(&raw const restrictions, LUP_RETURN_ALL, &raw mut lookup) } != 0 {
            return Err(last_error("WSALookupServiceBeginW"));
        }
        let result = next_set(next, lookup);
        // SAFETY: the lookup begun above, ended once.
        unsafe { end(lookup) };
        result
    }

    fn sources(&self) -> Arc<dyn Sources> {
        Arc::new(WindowsSources)
    }

    fn names_file(&self) -> Result<PathBuf, Error> {
        Ok(local_app_data()?.join("netports").join("nsp-names.json"))
    }
}

/// The current user's `%LOCALAPPDATA%` (`SHGetKnownFolderPath(FOLDERID_LocalAppData)`): only
/// the user, SYSTEM and Administrators can write there, unlike `%ProgramData%`, where any user
/// can create (and so own) a folder before an administrator's first `nsp register`.
fn local_app_data() -> Result<PathBuf, Error> {
    use std::os::windows::ffi::OsStringExt;
    use windows_sys::Win32::System::Com::CoTaskMemFree;
    use windows_sys::Win32::UI::Shell::{FOLDERID_LocalAppData, SHGetKnownFolderPath};
    let mut p: windows_sys::core::PWSTR = std::ptr::null_mut();
    // SAFETY: a known-folder id, no flags, the current user (null token), a valid out-pointer.
    let hr = unsafe {
        SHGetKnownFolderPath(&FOLDERID_LocalAppData, 0, std::ptr::null_mut(), &raw mut p)
    };
    let path = if hr >= 0 && !p.is_null() {
        let mut len = 0;
        // SAFETY: a NUL-terminated string from SHGetKnownFolderPath; reading stops at the NUL.
        while len < 32_768 && unsafe { p.wrapping_add(len).read() } != 0 {
            len += 1;
        }
        // SAFETY: `len` units were just read.
        let units = unsafe { std::slice::from_raw_parts(p, len) };
        Some(PathBuf::from(std::ffi::OsString::from_wide(units)))
    } else {
        None
    };
    // SAFETY: allocated by SHGetKnownFolderPath (freed even when it failed), freed once.
    unsafe { CoTaskMemFree(p.cast()) };
    path.ok_or_else(|| Error::Os {
        code: hr.cast_unsigned(),
        function: "SHGetKnownFolderPath(FOLDERID_LocalAppData)",
    })
}

/// Whether `catalog` lists the provider.
fn installed(catalog: Catalog) -> Result<bool, Error> {
    let (enumerate, function) = match catalog {
        Catalog::Native => (wsa_enum_name_space_providers_w()?, "WSAEnumNameSpaceProvidersW"),
        Catalog::Wow64 => (wsc_enum_name_space_providers32()?, "WSCEnumNameSpaceProviders32"),
    };
    startup()?;
    let mut words = vec![0u64; 512];
    for _ in 0..3 {
        let mut len = u32::try_from(words.len() * 8).unwrap_or(u32::MAX);
        // SAFETY: an 8-aligned writable buffer of `len` bytes and a valid length pointer.
        let n = unsafe { enumerate(&raw mut len, words.as_mut_ptr().cast()) };
        if let Ok(n) = usize::try_from(n) {
            let entries = words.as_ptr().cast::<WSANAMESPACE_INFOW>();
            let ours = (0..n).any(|i| {
                // SAFETY: Winsock wrote `n` entries at the start of the buffer.
                let e = unsafe { entries.wrapping_add(i).read_unaligned() };
                netports_nsp::provider::same_guid(&e.NSProviderId, &PROVIDER_ID)
            });
            return Ok(ours);
        }
        // SAFETY: no arguments.
        let code = wsa_get_last_error().map_or(0, |f| unsafe { f() });
        if code != WSAEFAULT {
            return Err(last_error(function));
        }
        words = vec![0u64; (len as usize).div_ceil(8).max(words.len() + 1)];
    }
    Err(Error::Protocol("the provider list kept growing".into()))
}

type NextFn = unsafe extern "system" fn(HANDLE, u32, *mut u32, *mut WSAQUERYSETW) -> i32;

/// The first result set of `lookup`, with the two-call buffer protocol.
fn next_set(next: NextFn, lookup: HANDLE) -> Result<Resolved, Error> {
    let mut words = vec![0u64; 256];
    for _ in 0..3 {
        let mut len = u32::try_from(words.len() * 8).unwrap_or(u32::MAX);
        // SAFETY: an 8-aligned writable buffer of `len` bytes and a valid length pointer.
        let rc = unsafe { next(lookup, LUP_RETURN_ALL, &raw mut len, words.as_mut_ptr().cast()) };
        if rc == 0 {
            // SAFETY: Winsock wrote a self-contained WSAQUERYSETW at the start of the buffer.
            return Ok(unsafe { decode(words.as_ptr().cast()) });
        }
        // SAFETY: no arguments.
        let code = wsa_get_last_error().map_or(0, |f| unsafe { f() });
        if code != WSAEFAULT {
            return Err(last_error("WSALookupServiceNextW"));
        }
        words = vec![0u64; (len as usize).div_ceil(8).max(words.len() + 1)];
    }
    Err(Error::Protocol("the result set kept growing".into()))
}

/// Reads a NUL-terminated UTF-16 string (at most 1,024 units).
///
/// # Safety
/// `p` is null or a NUL-terminated string.
unsafe fn wide_str(p: *const u16) -> String {
    if p.is_null() {
        return String::new();
    }
    let mut units = Vec::new();
    for i in 0..1024 {
        // SAFETY: within the string (contract).
        let c = unsafe { p.wrapping_add(i).read_unaligned() };
        if c == 0 {
            break;
        }
        units.push(c);
    }
    String::from_utf16_lossy(&units)
}

/// A socket address as text.
///
/// # Safety
/// `p` is null or points to `len` readable bytes.
unsafe fn sockaddr(p: *const c_void, len: i32) -> String {
    let Ok(len) = usize::try_from(len) else { return "?".into() };
    if p.is_null() || len < 4 {
        return "?".into();
    }
    // SAFETY: `len` readable bytes (contract).
    let b = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) };
    let port = u16::from_be_bytes([b[2], b[3]]);
    match (u16::from_le_bytes([b[0], b[1]]), b.get(4..8), b.get(8..24)) {
        (2, Some(a), _) => format!("{}:{port}", std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3])),
        (23, _, Some(a)) => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(a);
            format!("[{}]:{port}", std::net::Ipv6Addr::from(octets))
        }
        (family, _, _) => format!("family {family} port {port}"),
    }
}

/// Decodes a result set.
///
/// # Safety
/// `qs` points to a self-contained `WSAQUERYSETW` whose pointers are null or valid.
unsafe fn decode(qs: *const WSAQUERYSETW) -> Resolved {
    // SAFETY: contract.
    let q = unsafe { qs.read_unaligned() };
    // SAFETY: null or NUL-terminated (contract).
    let name = unsafe { wide_str(q.lpszServiceInstanceName) };
    // SAFETY: as above.
    let comment = unsafe { wide_str(q.lpszComment) };
    let reservation = if q.lpBlob.is_null() {
        None
    } else {
        // SAFETY: a valid BLOB (contract).
        let b = unsafe { q.lpBlob.read_unaligned() };
        if b.pBlobData.is_null() || b.cbSize as usize > 64 {
            None
        } else {
            // SAFETY: the blob's `cbSize` bytes.
            Reservation::from_blob(unsafe {
                std::slice::from_raw_parts(b.pBlobData, b.cbSize as usize)
            })
            .ok()
        }
    };
    let mut addresses = Vec::new();
    for i in 0..(q.dwNumberOfCsAddrs as usize).min(16) {
        if q.lpcsaBuffer.is_null() {
            break;
        }
        // SAFETY: one of `dwNumberOfCsAddrs` entries.
        let cs: CSADDR_INFO = unsafe { q.lpcsaBuffer.wrapping_add(i).read_unaligned() };
        // SAFETY: the entry's addresses are valid for their lengths (contract).
        let local =
            unsafe { sockaddr(cs.LocalAddr.lpSockaddr.cast(), cs.LocalAddr.iSockaddrLength) };
        // SAFETY: as above.
        let remote =
            unsafe { sockaddr(cs.RemoteAddr.lpSockaddr.cast(), cs.RemoteAddr.iSockaddrLength) };
        let proto = match cs.iProtocol {
            6 => "tcp",
            17 => "udp",
            _ => "?",
        };
        addresses.push(format!("{proto} bind {local}, connect {remote}"));
    }
    Resolved { name, comment, reservation, addresses }
}
