//! Host WFP permit filters for the Teredo exception.
//!
//! User-mode `fwpuclnt`, resolved at run time: netports' own provider and sublayer, inbound UDP to one local port permitted at
//! `FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V4` and `_V6`.
//!
//! The engine session is dynamic (`FWPM_SESSION_FLAG_DYNAMIC`): everything added through it is
//! deleted when it closes, so the filters live exactly as long as `netports teredo-exception`.
//! Adding needs an administrator (`ERROR_ACCESS_DENIED` otherwise).
//!
//! The provider and sublayer belong to the session of the instance that added them first;
//! when that instance exits they go, and a second instance adds them again in its own session
//! the next time a filter add reports them missing (docs/WINDOWS-VERIFICATION.md: what Windows
//! does to the second instance's filters then).

use std::ffi::c_void;

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::NetworkManagement::WindowsFilteringPlatform::{
    FWP_ACTION_PERMIT, FWP_MATCH_EQUAL, FWP_UINT8, FWP_UINT16, FWPM_CONDITION_IP_LOCAL_PORT,
    FWPM_CONDITION_IP_PROTOCOL, FWPM_DISPLAY_DATA0, FWPM_FILTER_CONDITION0, FWPM_FILTER0,
    FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V4, FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V6, FWPM_PROVIDER0,
    FWPM_SESSION_FLAG_DYNAMIC, FWPM_SESSION0, FWPM_SUBLAYER0,
};
use windows_sys::core::GUID;

use super::dynload::{Dll, system_fn};
use crate::error::Error;
use crate::exception::HostFilters;

system_fn!(fn fwpm_engine_open0 = Dll::Fwpuclnt, c"FwpmEngineOpen0": fn(*const u16, u32, *const c_void, *const FWPM_SESSION0, *mut HANDLE) -> u32;);
system_fn!(fn fwpm_engine_close0 = Dll::Fwpuclnt, c"FwpmEngineClose0": fn(HANDLE) -> u32;);
system_fn!(fn fwpm_provider_add0 = Dll::Fwpuclnt, c"FwpmProviderAdd0": fn(HANDLE, *const FWPM_PROVIDER0, *const c_void) -> u32;);
system_fn!(fn fwpm_sublayer_add0 = Dll::Fwpuclnt, c"FwpmSubLayerAdd0": fn(HANDLE, *const FWPM_SUBLAYER0, *const c_void) -> u32;);
system_fn!(fn fwpm_filter_add0 = Dll::Fwpuclnt, c"FwpmFilterAdd0": fn(HANDLE, *const FWPM_FILTER0, *const c_void, *mut u64) -> u32;);
system_fn!(fn fwpm_filter_delete_by_id0 = Dll::Fwpuclnt, c"FwpmFilterDeleteById0": fn(HANDLE, u64) -> u32;);

/// `RPC_C_AUTHN_WINNT`.
const RPC_C_AUTHN_WINNT: u32 = 10;
/// `FWP_E_ALREADY_EXISTS`: the provider or sublayer is there (another netports instance).
const FWP_E_ALREADY_EXISTS: u32 = 0x8032_0009;
/// `FWP_E_PROVIDER_NOT_FOUND`.
const FWP_E_PROVIDER_NOT_FOUND: u32 = 0x8032_0005;
/// `FWP_E_SUBLAYER_NOT_FOUND`.
const FWP_E_SUBLAYER_NOT_FOUND: u32 = 0x8032_0007;
/// `IPPROTO_UDP`.
const IPPROTO_UDP: u8 = 17;

/// netports' WFP provider.
pub const PROVIDER_KEY: GUID = GUID::from_u128(0x6e657470_6f72_7473_8001_746572656430);
/// netports' sublayer (the Teredo exception's filters).
pub const SUBLAYER_KEY: GUID = GUID::from_u128(0x6e657470_6f72_7473_8002_746572656430);

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// A dynamic engine session holding netports' provider, sublayer and filters.
pub struct WfpHostFilters {
    engine: HANDLE,
    close: unsafe extern "system" fn(HANDLE) -> u32,
}

impl std::fmt::Debug for WfpHostFilters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WfpHostFilters").finish_non_exhaustive()
    }
}

fn check(rc: u32, function: &'static str) -> Result<(), Error> {
    if rc == 0 { Ok(()) } else { Err(Error::from_win32(rc, function)) }
}

impl WfpHostFilters {
    /// Opens a dynamic session and adds the provider and sublayer (tolerating ones that
    /// exist).
    ///
    /// # Errors
    /// Unsupported (no `fwpuclnt` export), access denied, the engine's error.
    pub fn open() -> Result<Self, Error> {
        let (open, close) = (fwpm_engine_open0()?, fwpm_engine_close0()?);
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
        let this = Self { engine, close };
        this.add_provider_and_sublayer()?;
        Ok(this)
    }

    /// Adds netports' provider and sublayer in this session, tolerating ones another
    /// instance's session holds.
    ///
    /// # Errors
    /// Unsupported, access denied, the engine's error.
    fn add_provider_and_sublayer(&self) -> Result<(), Error> {
        let (add_provider, add_sublayer) = (fwpm_provider_add0()?, fwpm_sublayer_add0()?);
        let provider_name = wide("netports (Teredo exception)");
        let provider = FWPM_PROVIDER0 {
            providerKey: PROVIDER_KEY,
            displayData: FWPM_DISPLAY_DATA0 {
                name: provider_name.as_ptr().cast_mut(),
                description: std::ptr::null_mut(),
            },
            ..FWPM_PROVIDER0::default()
        };
        // SAFETY: an open session and a valid provider; no security descriptor.
        let rc = unsafe { add_provider(self.engine, &raw const provider, std::ptr::null()) };
        if rc != FWP_E_ALREADY_EXISTS {
            check(rc, "FwpmProviderAdd0")?;
        }
        let mut key = PROVIDER_KEY;
        let sublayer = FWPM_SUBLAYER0 {
            subLayerKey: SUBLAYER_KEY,
            displayData: FWPM_DISPLAY_DATA0 {
                name: provider_name.as_ptr().cast_mut(),
                description: std::ptr::null_mut(),
            },
            providerKey: &raw mut key,
            weight: 0x100,
            ..FWPM_SUBLAYER0::default()
        };
        // SAFETY: an open session and a valid sublayer whose pointers outlive the call.
        let rc = unsafe { add_sublayer(self.engine, &raw const sublayer, std::ptr::null()) };
        if rc != FWP_E_ALREADY_EXISTS {
            check(rc, "FwpmSubLayerAdd0")?;
        }
        Ok(())
    }
}

impl HostFilters for WfpHostFilters {
    fn permit_udp(&mut self, port: u16) -> Result<Vec<u64>, Error> {
        let add = fwpm_filter_add0()?;
        let name = wide(&format!("netports: Teredo exception, inbound udp {port}"));
        let mut conditions = [FWPM_FILTER_CONDITION0::default(), FWPM_FILTER_CONDITION0::default()];
        conditions[0].fieldKey = FWPM_CONDITION_IP_PROTOCOL;
        conditions[0].matchType = FWP_MATCH_EQUAL;
        conditions[0].conditionValue.r#type = FWP_UINT8;
        conditions[0].conditionValue.Anonymous.uint8 = IPPROTO_UDP;
        conditions[1].fieldKey = FWPM_CONDITION_IP_LOCAL_PORT;
        conditions[1].matchType = FWP_MATCH_EQUAL;
        conditions[1].conditionValue.r#type = FWP_UINT16;
        conditions[1].conditionValue.Anonymous.uint16 = port;
        let mut key = PROVIDER_KEY;
        let mut ids = Vec::new();
        for layer in [FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V4, FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V6] {
            let mut filter = FWPM_FILTER0::default();
            filter.displayData.name = name.as_ptr().cast_mut();
            filter.providerKey = &raw mut key;
            filter.layerKey = layer;
            filter.subLayerKey = SUBLAYER_KEY;
            filter.numFilterConditions = 2;
            filter.filterCondition = conditions.as_mut_ptr();
            filter.action.r#type = FWP_ACTION_PERMIT;
            let mut id = 0u64;
            // SAFETY: an open session, a filter whose pointers (name, provider key,
            // conditions) outlive the call, a valid out-pointer.
            let mut rc =
                unsafe { add(self.engine, &raw const filter, std::ptr::null(), &raw mut id) };
            if rc == FWP_E_SUBLAYER_NOT_FOUND || rc == FWP_E_PROVIDER_NOT_FOUND {
                // The provider and sublayer were another instance's, whose dynamic session
                // ended: add them in this session and try again.
                self.add_provider_and_sublayer()?;
                // SAFETY: as above.
                rc = unsafe { add(self.engine, &raw const filter, std::ptr::null(), &raw mut id) };
            }
            if let Err(e) = check(rc, "FwpmFilterAdd0") {
                // Nothing half-added stays behind.
                let _ = self.remove(&ids);
                return Err(e);
            }
            ids.push(id);
        }
        Ok(ids)
    }

    fn remove(&mut self, ids: &[u64]) -> Result<(), Error> {
        let delete = fwpm_filter_delete_by_id0()?;
        for id in ids {
            // SAFETY: an open session and a filter id it returned.
            check(unsafe { delete(self.engine, *id) }, "FwpmFilterDeleteById0")?;
        }
        Ok(())
    }
}

impl Drop for WfpHostFilters {
    fn drop(&mut self) {
        // SAFETY: the session opened in `open`, closed once; being dynamic, its objects go
        // with it.
        unsafe { (self.close)(self.engine) };
    }
}
