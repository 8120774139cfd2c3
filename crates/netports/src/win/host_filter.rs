//! Host WFP permit filters for the Teredo exception (`crate::exception` says which).
//!
//! User-mode `fwpuclnt`, resolved at run time. Each run opens a dynamic session
//! (`FWPM_SESSION_FLAG_DYNAMIC`: everything added through it is deleted when it closes, so the
//! filters live exactly as long as `netports teredo-exception`) and adds, in one transaction,
//! its own provider and sublayer under fresh keys (`UuidCreate`): WFP forbids a dynamic object
//! to refer to another session's dynamic object ("Object Management"; `FWP_E_LIFETIME_MISMATCH`),
//! so two runs must never share them. Each change of filters is one transaction
//! (`FwpmTransactionBegin0` / `Commit0`, `Abort0` on any error): all of it or none of it.
//!
//! Every filter is IPv4 (`FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V4` in, `FWPM_LAYER_ALE_AUTH_CONNECT_V4`
//! out), UDP, for the Teredo service: `FWPM_CONDITION_ALE_APP_ID` equal to
//! `FwpmGetAppIdFromFileName0(%SystemRoot%\System32\svchost.exe)` (the process hosting
//! `iphlpsvc`) and, because every `svchost.exe` has that app id whichever services it hosts,
//! `FWPM_CONDITION_ALE_USER_ID` with a security descriptor granting `FWP_ACTRL_MATCH_FILTER`
//! to `NT SERVICE\iphlpsvc` alone ([`crate::service_sid`]; the form of Microsoft's
//! "Permitting and Blocking Applications and Users" sample); then the filter's port and
//! address conditions. Adding needs an administrator (`ERROR_ACCESS_DENIED` otherwise).

use std::ffi::c_void;

use windows_sys::Win32::Foundation::{GetLastError, HANDLE, LocalFree};
use windows_sys::Win32::NetworkManagement::WindowsFilteringPlatform::{
    FWP_ACTION_PERMIT, FWP_BYTE_BLOB, FWP_BYTE_BLOB_TYPE, FWP_MATCH_EQUAL,
    FWP_SECURITY_DESCRIPTOR_TYPE, FWP_UINT8, FWP_UINT16, FWP_UINT32, FWPM_CONDITION_ALE_APP_ID,
    FWPM_CONDITION_ALE_USER_ID, FWPM_CONDITION_IP_LOCAL_ADDRESS, FWPM_CONDITION_IP_LOCAL_PORT,
    FWPM_CONDITION_IP_PROTOCOL, FWPM_CONDITION_IP_REMOTE_PORT, FWPM_DISPLAY_DATA0,
    FWPM_FILTER_CONDITION0, FWPM_FILTER0, FWPM_LAYER_ALE_AUTH_CONNECT_V4,
    FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V4, FWPM_PROVIDER0, FWPM_SESSION_FLAG_DYNAMIC, FWPM_SESSION0,
    FWPM_SUBLAYER0,
};
use windows_sys::Win32::Networking::WinSock::IPPROTO_UDP;
use windows_sys::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::PSECURITY_DESCRIPTOR;
use windows_sys::Win32::System::Rpc::{
    RPC_C_AUTHN_WINNT, RPC_S_UUID_LOCAL_ONLY, SEC_WINNT_AUTH_IDENTITY_W, UuidCreate,
};
use windows_sys::core::{GUID, PCWSTR};

use super::dynload::{Dll, system_fn};
use crate::error::Error;
use crate::exception::{Direction, FilterSpec, HostFilters};
use crate::service_sid::{TEREDO_SERVICE, service_only_sddl};

system_fn!(fn fwpm_engine_open0 = Dll::Fwpuclnt, c"FwpmEngineOpen0": fn(PCWSTR, u32, *const SEC_WINNT_AUTH_IDENTITY_W, *const FWPM_SESSION0, *mut HANDLE) -> u32;);
system_fn!(fn fwpm_engine_close0 = Dll::Fwpuclnt, c"FwpmEngineClose0": fn(HANDLE) -> u32;);
system_fn!(fn fwpm_transaction_begin0 = Dll::Fwpuclnt, c"FwpmTransactionBegin0": fn(HANDLE, u32) -> u32;);
system_fn!(fn fwpm_transaction_commit0 = Dll::Fwpuclnt, c"FwpmTransactionCommit0": fn(HANDLE) -> u32;);
system_fn!(fn fwpm_transaction_abort0 = Dll::Fwpuclnt, c"FwpmTransactionAbort0": fn(HANDLE) -> u32;);
system_fn!(fn fwpm_provider_add0 = Dll::Fwpuclnt, c"FwpmProviderAdd0": fn(HANDLE, *const FWPM_PROVIDER0, PSECURITY_DESCRIPTOR) -> u32;);
system_fn!(fn fwpm_sublayer_add0 = Dll::Fwpuclnt, c"FwpmSubLayerAdd0": fn(HANDLE, *const FWPM_SUBLAYER0, PSECURITY_DESCRIPTOR) -> u32;);
system_fn!(fn fwpm_filter_add0 = Dll::Fwpuclnt, c"FwpmFilterAdd0": fn(HANDLE, *const FWPM_FILTER0, PSECURITY_DESCRIPTOR, *mut u64) -> u32;);
system_fn!(fn fwpm_filter_delete_by_id0 = Dll::Fwpuclnt, c"FwpmFilterDeleteById0": fn(HANDLE, u64) -> u32;);
system_fn!(fn fwpm_get_app_id_from_file_name0 = Dll::Fwpuclnt, c"FwpmGetAppIdFromFileName0": fn(*const u16, *mut *mut FWP_BYTE_BLOB) -> u32;);
system_fn!(fn fwpm_free_memory0 = Dll::Fwpuclnt, c"FwpmFreeMemory0": fn(*mut *mut c_void););

/// The sublayer's weight: low, as Filter Arbitration advises for applications' permits.
const SUBLAYER_WEIGHT: u16 = 0x100;

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

fn check(rc: u32, function: &'static str) -> Result<(), Error> {
    if rc == 0 { Ok(()) } else { Err(Error::from_win32(rc, function)) }
}

/// A fresh GUID (`UuidCreate`; a local-only uuid is as good here).
fn fresh_key() -> Result<GUID, Error> {
    let mut g = GUID::from_u128(0);
    // SAFETY: a valid out-pointer.
    let rc = unsafe { UuidCreate(&raw mut g) };
    // RPC_S_OK, or RPC_S_UUID_LOCAL_ONLY (unique on this computer, which is all a key needs).
    if rc == 0 || rc == RPC_S_UUID_LOCAL_ONLY {
        Ok(g)
    } else {
        Err(Error::from_win32(rc.cast_unsigned(), "UuidCreate"))
    }
}

/// The application id of the Teredo service's process: `svchost.exe` in the system directory.
fn teredo_app_id() -> Result<Vec<u8>, Error> {
    let (get, free) = (fwpm_get_app_id_from_file_name0()?, fwpm_free_memory0()?);
    let name = wide(&super::system_directory()?.join("svchost.exe").to_string_lossy());
    let mut blob: *mut FWP_BYTE_BLOB = std::ptr::null_mut();
    // SAFETY: a NUL-terminated file name and a valid out-pointer.
    check(unsafe { get(name.as_ptr(), &raw mut blob) }, "FwpmGetAppIdFromFileName0")?;
    // SAFETY: WFP returned a blob (or null) valid until freed below.
    let copy = unsafe { blob.as_ref() }.and_then(|b| {
        (!b.data.is_null() && b.size > 0).then(|| {
            // SAFETY: `data` holds `size` bytes.
            unsafe { std::slice::from_raw_parts(b.data, b.size as usize) }.to_vec()
        })
    });
    // SAFETY: allocated by FwpmGetAppIdFromFileName0, freed once.
    unsafe { free((&raw mut blob).cast()) };
    copy.ok_or_else(|| Error::Protocol("FwpmGetAppIdFromFileName0 returned no id".into()))
}

/// The self-relative security descriptor of the `FWPM_CONDITION_ALE_USER_ID` condition that
/// holds for the Teredo service's sockets only (`service_only_sddl`, converted by
/// `ConvertStringSecurityDescriptorToSecurityDescriptorW`, whose result is self-relative).
fn teredo_user_sd() -> Result<Vec<u8>, Error> {
    let sddl = service_only_sddl(TEREDO_SERVICE)
        .ok_or_else(|| Error::Protocol(format!("{TEREDO_SERVICE} has no service SID")))?;
    let text = wide(&sddl);
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    let mut len = 0u32;
    // SAFETY: a NUL-terminated SDDL string and valid out-pointers.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            text.as_ptr(),
            SDDL_REVISION_1,
            &raw mut sd,
            &raw mut len,
        )
    };
    if ok == 0 || sd.is_null() {
        // SAFETY: reads this thread's last error, set by the failed conversion.
        let code = unsafe { GetLastError() };
        return Err(Error::from_win32(
            code,
            "ConvertStringSecurityDescriptorToSecurityDescriptorW",
        ));
    }
    // SAFETY: the conversion returned a descriptor of `len` bytes at `sd`.
    let copy = unsafe { std::slice::from_raw_parts(sd.cast::<u8>(), len as usize) }.to_vec();
    // SAFETY: allocated by the conversion with LocalAlloc, freed once.
    unsafe { LocalFree(sd) };
    Ok(copy)
}

/// A dynamic engine session holding this run's provider, sublayer and filters.
pub struct WfpHostFilters {
    engine: HANDLE,
    close: unsafe extern "system" fn(HANDLE) -> u32,
    provider: GUID,
    sublayer: GUID,
    app_id: Vec<u8>,
    /// `FWPM_CONDITION_ALE_USER_ID`'s security descriptor (self-relative).
    user_sd: Vec<u8>,
}

impl std::fmt::Debug for WfpHostFilters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WfpHostFilters")
            .field("provider", &self.provider.data1)
            .finish_non_exhaustive()
    }
}

impl WfpHostFilters {
    /// Opens a dynamic session and adds this run's provider and sublayer (fresh keys), in one
    /// transaction.
    ///
    /// # Errors
    /// Unsupported (no `fwpuclnt` export), access denied, the engine's error.
    pub fn open() -> Result<Self, Error> {
        let (open, close) = (fwpm_engine_open0()?, fwpm_engine_close0()?);
        let app_id = teredo_app_id()?;
        let user_sd = teredo_user_sd()?;
        let name = wide("netports");
        let session = FWPM_SESSION0 {
            displayData: FWPM_DISPLAY_DATA0 {
                name: name.as_ptr().cast_mut(),
                description: std::ptr::null_mut(),
            },
            flags: FWPM_SESSION_FLAG_DYNAMIC,
            ..FWPM_SESSION0::default()
        };
        let mut engine: HANDLE = std::ptr::null_mut();
        // SAFETY: local engine (null server), a valid session whose strings outlive the call,
        // a valid out-pointer.
        let rc = unsafe {
            open(
                std::ptr::null(),
                RPC_C_AUTHN_WINNT,
                std::ptr::null(),
                &raw const session,
                &raw mut engine,
            )
        };
        check(rc, "FwpmEngineOpen0")?;
        let this =
            Self { engine, close, provider: fresh_key()?, sublayer: fresh_key()?, app_id, user_sd };
        this.transaction(Self::add_provider_and_sublayer)?;
        Ok(this)
    }

    /// Runs `change` in one transaction: committed if it succeeds, aborted otherwise.
    fn transaction<T>(&self, change: impl FnOnce(&Self) -> Result<T, Error>) -> Result<T, Error> {
        let (begin, commit, abort) =
            (fwpm_transaction_begin0()?, fwpm_transaction_commit0()?, fwpm_transaction_abort0()?);
        // SAFETY: an open session; a read/write transaction.
        check(unsafe { begin(self.engine, 0) }, "FwpmTransactionBegin0")?;
        match change(self) {
            Ok(v) => {
                // SAFETY: the transaction begun above.
                check(unsafe { commit(self.engine) }, "FwpmTransactionCommit0")?;
                Ok(v)
            }
            Err(e) => {
                // SAFETY: the transaction begun above, rolled back.
                unsafe { abort(self.engine) };
                Err(e)
            }
        }
    }

    fn add_provider_and_sublayer(&self) -> Result<(), Error> {
        let (add_provider, add_sublayer) = (fwpm_provider_add0()?, fwpm_sublayer_add0()?);
        let name = wide(&format!("netports Teredo exception (pid {})", std::process::id()));
        let provider = FWPM_PROVIDER0 {
            providerKey: self.provider,
            displayData: FWPM_DISPLAY_DATA0 {
                name: name.as_ptr().cast_mut(),
                description: std::ptr::null_mut(),
            },
            ..FWPM_PROVIDER0::default()
        };
        // SAFETY: an open session and a valid provider; no security descriptor.
        let rc = unsafe { add_provider(self.engine, &raw const provider, std::ptr::null_mut()) };
        check(rc, "FwpmProviderAdd0")?;
        let mut key = self.provider;
        let sublayer = FWPM_SUBLAYER0 {
            subLayerKey: self.sublayer,
            displayData: FWPM_DISPLAY_DATA0 {
                name: name.as_ptr().cast_mut(),
                description: std::ptr::null_mut(),
            },
            providerKey: &raw mut key,
            weight: SUBLAYER_WEIGHT,
            ..FWPM_SUBLAYER0::default()
        };
        // SAFETY: an open session and a valid sublayer whose pointers outlive the call.
        let rc = unsafe { add_sublayer(self.engine, &raw const sublayer, std::ptr::null_mut()) };
        check(rc, "FwpmSubLayerAdd0")
    }

    /// Adds one filter; its id.
    fn add(&self, spec: &FilterSpec) -> Result<u64, Error> {
        let add = fwpm_filter_add0()?;
        let name = wide(&format!("netports: Teredo exception, {spec}"));
        let mut app_id = FWP_BYTE_BLOB {
            size: u32::try_from(self.app_id.len()).unwrap_or(0),
            data: self.app_id.as_ptr().cast_mut(),
        };
        let mut user_sd = FWP_BYTE_BLOB {
            size: u32::try_from(self.user_sd.len()).unwrap_or(0),
            data: self.user_sd.as_ptr().cast_mut(),
        };
        let mut conditions = Vec::with_capacity(6);
        let mut condition = |field: GUID, set: &dyn Fn(&mut FWPM_FILTER_CONDITION0)| {
            let mut c = FWPM_FILTER_CONDITION0 {
                fieldKey: field,
                matchType: FWP_MATCH_EQUAL,
                ..FWPM_FILTER_CONDITION0::default()
            };
            set(&mut c);
            conditions.push(c);
        };
        condition(FWPM_CONDITION_IP_PROTOCOL, &|c| {
            c.conditionValue.r#type = FWP_UINT8;
            c.conditionValue.Anonymous.uint8 = u8::try_from(IPPROTO_UDP).unwrap_or(17);
        });
        let app_id_ptr = &raw mut app_id;
        condition(FWPM_CONDITION_ALE_APP_ID, &|c| {
            c.conditionValue.r#type = FWP_BYTE_BLOB_TYPE;
            c.conditionValue.Anonymous.byteBlob = app_id_ptr;
        });
        // Every svchost.exe has the app id above: the Teredo service's SID tells its sockets
        // apart from those of the other services svchost runs.
        let user_sd_ptr = &raw mut user_sd;
        condition(FWPM_CONDITION_ALE_USER_ID, &|c| {
            c.conditionValue.r#type = FWP_SECURITY_DESCRIPTOR_TYPE;
            c.conditionValue.Anonymous.sd = user_sd_ptr;
        });
        if let Some(p) = spec.local_port {
            condition(FWPM_CONDITION_IP_LOCAL_PORT, &|c| {
                c.conditionValue.r#type = FWP_UINT16;
                c.conditionValue.Anonymous.uint16 = p;
            });
        }
        if let Some(p) = spec.remote_port {
            condition(FWPM_CONDITION_IP_REMOTE_PORT, &|c| {
                c.conditionValue.r#type = FWP_UINT16;
                c.conditionValue.Anonymous.uint16 = p;
            });
        }
        if let Some(a) = spec.local_address {
            // An IPv4 address condition is an FWP_UINT32 in host byte order.
            condition(FWPM_CONDITION_IP_LOCAL_ADDRESS, &|c| {
                c.conditionValue.r#type = FWP_UINT32;
                c.conditionValue.Anonymous.uint32 = u32::from(a);
            });
        }
        let mut provider = self.provider;
        let mut filter = FWPM_FILTER0 {
            displayData: FWPM_DISPLAY_DATA0 {
                name: name.as_ptr().cast_mut(),
                description: std::ptr::null_mut(),
            },
            providerKey: &raw mut provider,
            layerKey: match spec.direction {
                Direction::In => FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V4,
                Direction::Out => FWPM_LAYER_ALE_AUTH_CONNECT_V4,
            },
            subLayerKey: self.sublayer,
            numFilterConditions: u32::try_from(conditions.len()).unwrap_or(0),
            filterCondition: conditions.as_mut_ptr(),
            ..FWPM_FILTER0::default()
        };
        filter.action.r#type = FWP_ACTION_PERMIT;
        let mut id = 0u64;
        // SAFETY: an open session, a filter whose pointers (name, provider key, conditions, the
        // app id and security descriptor blobs) outlive the call, a valid out-pointer.
        let rc = unsafe { add(self.engine, &raw const filter, std::ptr::null_mut(), &raw mut id) };
        check(rc, "FwpmFilterAdd0")?;
        Ok(id)
    }
}

impl HostFilters for WfpHostFilters {
    fn apply(&mut self, add: &[FilterSpec], remove: &[u64]) -> Result<Vec<u64>, Error> {
        let delete = fwpm_filter_delete_by_id0()?;
        self.transaction(|t| {
            let ids = add.iter().map(|spec| t.add(spec)).collect::<Result<Vec<u64>, Error>>()?;
            for id in remove {
                // SAFETY: an open session and a filter id it returned.
                check(unsafe { delete(t.engine, *id) }, "FwpmFilterDeleteById0")?;
            }
            Ok(ids)
        })
    }
}

impl Drop for WfpHostFilters {
    fn drop(&mut self) {
        // SAFETY: the session opened in `open`, closed once; being dynamic, its objects go
        // with it.
        unsafe { (self.close)(self.engine) };
    }
}
