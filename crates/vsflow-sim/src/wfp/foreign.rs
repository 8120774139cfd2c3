//! Another elevated process on the host.
//!
//! It opens its own engine session and adds its own provider, sublayers and filters through the same management functions (`fwpmk.h`), as any
//! administrator's tool or another vendor's firewall can. Its filters may name vsflow's
//! callouts with any context: the engine then calls vsflow's notifyFn, and refuses the filter
//! if notifyFn fails (`FWPS_CALLOUT_NOTIFY_FN3`).

use std::ffi::c_void;

use fwps_sys::{self as sys, GUID, HANDLE, NTSTATUS};

use crate::wfp::exports;
use crate::world::CurrentHost;

/// What a foreign filter does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForeignAction {
    /// `FWP_ACTION_PERMIT`.
    Permit,
    /// `FWP_ACTION_BLOCK`.
    Block,
    /// `FWP_ACTION_CALLOUT_TERMINATING` naming this callout key.
    Callout(GUID),
}

/// A process with its own (dynamic) engine session on one host.
#[derive(Debug)]
pub struct ForeignProcess {
    host: usize,
    session: HANDLE,
    provider: GUID,
    next: u32,
}

impl ForeignProcess {
    /// Opens a dynamic session on host `host` (see [`crate::Host::id`]) and adds a provider.
    ///
    /// # Panics
    /// If the engine refuses the session (BFE not running: a scenario bug).
    #[must_use]
    pub fn open(host: usize) -> Self {
        let _cur = CurrentHost::enter(host);
        // SAFETY: plain data, all zeroes valid.
        let mut session: sys::FWPM_SESSION0 = unsafe { std::mem::zeroed() };
        session.flags = sys::FWPM_SESSION_FLAG_DYNAMIC;
        let mut handle: HANDLE = std::ptr::null_mut();
        // SAFETY: valid session and out-pointer.
        let status = unsafe {
            exports::FwpmEngineOpen0(
                std::ptr::null(),
                0,
                std::ptr::null_mut(),
                &raw const session,
                &raw mut handle,
            )
        };
        assert!(sys::nt_success(status), "foreign FwpmEngineOpen0: {status:#x}");
        let provider = GUID::from_parts(0x0f0e_1a2b, 0x3c4d, 0x4e5f, [0x80, 1, 2, 3, 4, 5, 6, 7]);
        // SAFETY: plain data, all zeroes valid.
        let mut p: sys::FWPM_PROVIDER0 = unsafe { std::mem::zeroed() };
        p.providerKey = provider;
        // SAFETY: valid handle and provider.
        let _ = unsafe { exports::FwpmProviderAdd0(handle, &raw const p, std::ptr::null_mut()) };
        Self { host, session: handle, provider, next: 1 }
    }

    fn key(&mut self) -> GUID {
        self.next += 1;
        GUID::from_parts(0x0f0e_0000 | self.next, 0x1111, 0x4222, [0x83, 3, 3, 3, 3, 3, 3, 3])
    }

    /// Adds a sublayer of this weight; returns its key.
    ///
    /// # Panics
    /// If the engine refuses it (a scenario bug: BFE stopped or the session closed).
    pub fn add_sublayer(&mut self, weight: u16) -> GUID {
        let key = self.key();
        let _cur = CurrentHost::enter(self.host);
        // SAFETY: plain data, all zeroes valid.
        let mut s: sys::FWPM_SUBLAYER0 = unsafe { std::mem::zeroed() };
        s.subLayerKey = key;
        s.providerKey = &raw mut self.provider;
        s.weight = weight;
        // SAFETY: valid handle and sublayer.
        let status =
            unsafe { exports::FwpmSubLayerAdd0(self.session, &raw const s, std::ptr::null_mut()) };
        assert!(sys::nt_success(status), "foreign FwpmSubLayerAdd0: {status:#x}");
        key
    }

    /// Adds a callout object with this key at `layer` (any process may add a management
    /// object naming another's callout key). Returns the engine's status.
    pub fn add_callout_object(&mut self, key: GUID, layer: GUID) -> NTSTATUS {
        let _cur = CurrentHost::enter(self.host);
        // SAFETY: plain data, all zeroes valid.
        let mut c: sys::FWPM_CALLOUT0 = unsafe { std::mem::zeroed() };
        c.calloutKey = key;
        c.providerKey = &raw mut self.provider;
        c.applicableLayer = layer;
        // SAFETY: valid handle and callout; the id out-pointer is optional.
        unsafe {
            exports::FwpmCalloutAdd0(
                self.session,
                &raw const c,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        }
    }

    /// Adds a filter at `layer` in `sublayer`; `flags` are `FWPM_FILTER_FLAG_*`, `raw_context`
    /// becomes the run-time filter's `context`. Returns the engine's status (a callout's
    /// notifyFn can refuse it).
    pub fn add_filter(
        &mut self,
        layer: GUID,
        sublayer: GUID,
        action: ForeignAction,
        flags: u32,
        raw_context: u64,
    ) -> NTSTATUS {
        let key = self.key();
        let _cur = CurrentHost::enter(self.host);
        // The callout's notifyFn runs inside this call: its allocations are the driver's.
        let _drv = crate::kernel::alloc::Attribution::enter(Some(self.host));
        // SAFETY: plain data, all zeroes valid.
        let mut f: sys::FWPM_FILTER0 = unsafe { std::mem::zeroed() };
        f.filterKey = key;
        f.flags = flags;
        f.providerKey = &raw mut self.provider;
        f.layerKey = layer;
        f.subLayerKey = sublayer;
        f.weight = sys::FWP_VALUE0::EMPTY;
        f.action.r#type = match action {
            ForeignAction::Permit => sys::FWP_ACTION_PERMIT,
            ForeignAction::Block => sys::FWP_ACTION_BLOCK,
            ForeignAction::Callout(c) => {
                f.action.u.calloutKey = c;
                sys::FWP_ACTION_CALLOUT_TERMINATING
            }
        };
        f.ctx.rawContext = raw_context;
        let mut id = 0u64;
        // SAFETY: valid handle, filter and out-pointer.
        unsafe {
            exports::FwpmFilterAdd0(
                self.session,
                &raw const f,
                std::ptr::null_mut::<c_void>(),
                &raw mut id,
            )
        }
    }
}

impl Drop for ForeignProcess {
    fn drop(&mut self) {
        let _cur = CurrentHost::enter(self.host);
        // Closing a dynamic session deletes everything it added.
        // SAFETY: the session this process opened.
        let _ = unsafe { exports::FwpmEngineClose0(self.session) };
    }
}
