//! The `fwpkclnt.sys` symbols, defined for the simulator: thin shims.
//!
//! Same names, same `extern "system"` signatures as `fwps-sys` declares. Each reads its
//! arguments, applies the fault plan and the IRQL check, and hands the work to the rules of the
//! calling thread's current host: [`crate::wfp::engine`] (sessions, transactions, objects, callouts,
//! arbitration) or [`crate::vswitch`] (subscriptions, notifications); breaches the rules report
//! are recorded as violations.
//!
//! Calls into the driver (notifyFn, BFE callbacks, vSwitch callbacks, classify) never happen
//! with the engine lock held.

#![allow(non_snake_case, reason = "the C names of the exports")]
#![allow(missing_docs, reason = "each export is documented under the same name in fwps-sys")]
#![allow(
    clippy::missing_safety_doc,
    reason = "each export's contract is the WDK's, cited in fwps-sys"
)]

use std::ffi::c_void;

use fwps_sys::{self as sys, GUID, HANDLE, NTSTATUS};

use crate::contract::Violation;
use crate::vswitch::Completed;
use crate::wfp::engine::{CalloutNotify, FilterObj, ObjectKind, RegisteredCallout};
use crate::world::{HostState, with_current};

/// Records a call made above `PASSIVE_LEVEL` to a service documented for `PASSIVE_LEVEL` only.
fn passive_only(call: &'static str) {
    if crate::kernel::irql::current() != crate::kernel::irql::Irql::Passive {
        with_current(|h| h.violate(Violation::WrongIrql { call }));
    }
}

/// A PASSIVE-only call that the fault plan may fail: true if it must fail.
fn enter(call: &'static str) -> bool {
    passive_only(call);
    crate::kernel::faults::engine_call()
}

/// Runs an engine rule on the current host and records the breaches it reports.
fn rule<R>(f: impl FnOnce(&mut HostState, &mut Vec<Violation>) -> R) -> R {
    with_current(|h| {
        let mut b = Vec::new();
        let r = f(h, &mut b);
        h.report(b);
        r
    })
}

/// BFE begins to stop right after `call` returned success, if a test armed it
/// (`Engine::stop_after`): `STOP_PENDING` reaches every state subscriber on another thread (the
/// service control manager's), as a state notification does, and this returns once they have
/// handled it. BFE keeps serving calls until it has stopped (`Host::finish_bfe_stop`).
fn stop_bfe_if_armed(call: &'static str) {
    let Some(id) = crate::world::current_id() else { return };
    let subs = with_current(|h| {
        if h.engine.stop_after != Some(call) {
            return None;
        }
        h.engine.stop_after = None;
        h.engine.bfe_state = sys::FWPM_SERVICE_STOP_PENDING;
        Some(h.engine.bfe_subscriptions.clone())
    });
    let Some(subs) = subs else { return };
    // The service control manager's thread is the simulator's, not the driver's: what
    // creating it allocates (its handle, its result packet, freed as it exits, possibly after
    // the join returns) is not the driver's heap.
    let _sim = crate::kernel::alloc::Attribution::enter(None);
    std::thread::scope(|s| {
        s.spawn(|| {
            let _cur = crate::world::CurrentHost::enter(id);
            let _drv = crate::kernel::alloc::Attribution::enter(Some(id));
            for sub in subs {
                if let Some(cb) = sub.callback {
                    // SAFETY: the driver's callback with the context it registered.
                    unsafe { cb(sub.context as *mut c_void, sys::FWPM_SERVICE_STOP_PENDING) };
                }
            }
        });
    });
}

fn filter_change_allowed(h: &mut HostState, call: &'static str) {
    if h.vswitch.in_callback > 0 || !h.vswitch.outstanding.is_empty() {
        h.violate(Violation::FilterChangeDuringNotification { call });
    }
}

/// # Safety
/// `p` is null or valid.
unsafe fn opt_guid(p: *const GUID) -> Option<GUID> {
    // SAFETY: caller's contract.
    unsafe { p.as_ref() }.copied()
}

/// Writes `v` through an optional out-pointer.
///
/// # Safety
/// `p` is null or valid for writes.
unsafe fn put<T>(p: *mut T, v: T) {
    if !p.is_null() {
        // SAFETY: non-null, valid for writes (caller's contract).
        unsafe { p.write(v) };
    }
}

const fn status_of<T>(r: &Result<T, NTSTATUS>) -> NTSTATUS {
    match r {
        Ok(_) => sys::STATUS_SUCCESS,
        Err(s) => *s,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpsCalloutRegister3(
    _device_object: *mut c_void,
    callout: *const sys::FWPS_CALLOUT3,
    callout_id: *mut u32,
) -> NTSTATUS {
    if enter("FwpsCalloutRegister3") {
        return sys::STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: the driver passes a valid callout or null.
    let Some(c) = (unsafe { callout.as_ref() }) else { return sys::STATUS_INVALID_PARAMETER };
    let r = with_current(|h| {
        h.engine.register(RegisteredCallout {
            id: 0,
            key: c.calloutKey,
            flags: c.flags,
            classify: c.classifyFn,
            notify: c.notifyFn,
        })
    });
    if let Ok(id) = r {
        // SAFETY: the optional out-pointer the driver passed.
        unsafe { put(callout_id, id) };
    }
    status_of(&r)
}

fn unregister(pred: impl Fn(&RegisteredCallout) -> bool) -> NTSTATUS {
    with_current(|h| {
        if !h.vswitch.subscriptions.is_empty() {
            h.violate(Violation::UnregisterBeforeUnsubscribe);
        }
        h.engine.unregister(pred)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpsCalloutUnregisterById0(callout_id: u32) -> NTSTATUS {
    passive_only("FwpsCalloutUnregisterById0");
    unregister(|c| c.id == callout_id)
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpsCalloutUnregisterByKey0(callout_key: *const GUID) -> NTSTATUS {
    passive_only("FwpsCalloutUnregisterByKey0");
    // SAFETY: valid or null key.
    let Some(key) = (unsafe { opt_guid(callout_key) }) else {
        return sys::STATUS_INVALID_PARAMETER;
    };
    unregister(|c| c.key == key)
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmEngineOpen0(
    _server_name: *const u16,
    _authn_service: u32,
    _auth_identity: *mut c_void,
    session: *const sys::FWPM_SESSION0,
    engine_handle: *mut HANDLE,
) -> NTSTATUS {
    if enter("FwpmEngineOpen0") {
        return sys::STATUS_INSUFFICIENT_RESOURCES;
    }
    if engine_handle.is_null() {
        return sys::STATUS_INVALID_PARAMETER;
    }
    // SAFETY: valid or null session.
    let dynamic =
        unsafe { session.as_ref() }.is_some_and(|s| s.flags & sys::FWPM_SESSION_FLAG_DYNAMIC != 0);
    let r = rule(|h, b| h.engine.open_session(dynamic, b));
    if let Ok(handle) = r {
        // SAFETY: non-null out-pointer.
        unsafe { put(engine_handle, handle as HANDLE) };
    }
    status_of(&r)
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmEngineClose0(engine_handle: HANDLE) -> NTSTATUS {
    passive_only("FwpmEngineClose0");
    match rule(|h, b| h.engine.close_session(engine_handle as usize, b)) {
        Ok(gone) => {
            for (f, notify) in gone {
                notify_deleted(&f, notify);
            }
            sys::STATUS_SUCCESS
        }
        Err(status) => status,
    }
}

/// Tells a deleted filter's registered callout (`FWPS_CALLOUT_NOTIFY_DELETE_FILTER`), outside
/// the engine lock.
fn notify_deleted(f: &FilterObj, notify: CalloutNotify) {
    if let Some((callout_id, Some(notify_fn))) = notify {
        let mut fs = fwps_filter(f, callout_id);
        // SAFETY: the driver's notifyFn with the filter key and a valid FWPS_FILTER3.
        let _ = unsafe {
            notify_fn(sys::FWPS_CALLOUT_NOTIFY_DELETE_FILTER, &raw const f.key, &raw mut fs)
        };
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmTransactionBegin0(
    engine_handle: HANDLE,
    _flags: u32,
) -> NTSTATUS {
    if enter("FwpmTransactionBegin0") {
        return sys::STATUS_INSUFFICIENT_RESOURCES;
    }
    rule(|h, b| h.engine.begin_transaction(engine_handle as usize, b))
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmTransactionCommit0(engine_handle: HANDLE) -> NTSTATUS {
    let call = "FwpmTransactionCommit0";
    if enter(call) {
        // A failed commit leaves nothing of the transaction behind.
        let _ = rule(|h, b| h.engine.end_transaction(engine_handle as usize, false, call, b));
        return sys::STATUS_INSUFFICIENT_RESOURCES;
    }
    let status = rule(|h, b| h.engine.end_transaction(engine_handle as usize, true, call, b));
    if sys::nt_success(status) {
        stop_bfe_if_armed(call);
    }
    status
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmTransactionAbort0(engine_handle: HANDLE) -> NTSTATUS {
    let call = "FwpmTransactionAbort0";
    passive_only(call);
    rule(|h, b| h.engine.end_transaction(engine_handle as usize, false, call, b))
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmProviderAdd0(
    engine_handle: HANDLE,
    provider: *const sys::FWPM_PROVIDER0,
    _sd: *mut c_void,
) -> NTSTATUS {
    if enter("FwpmProviderAdd0") {
        return sys::STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: valid or null.
    let Some(p) = (unsafe { provider.as_ref() }) else { return sys::STATUS_INVALID_PARAMETER };
    rule(|h, b| h.engine.add_provider(engine_handle as usize, p.providerKey, b))
}

fn delete_object(
    engine_handle: HANDLE,
    key: *const GUID,
    kind: ObjectKind,
    call: &'static str,
) -> NTSTATUS {
    passive_only(call);
    // SAFETY: valid or null key from the driver.
    let Some(key) = (unsafe { opt_guid(key) }) else { return sys::STATUS_INVALID_PARAMETER };
    rule(|h, b| h.engine.delete_object(engine_handle as usize, kind, key, call, b))
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmProviderDeleteByKey0(
    engine_handle: HANDLE,
    key: *const GUID,
) -> NTSTATUS {
    delete_object(engine_handle, key, ObjectKind::Provider, "FwpmProviderDeleteByKey0")
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmSubLayerAdd0(
    engine_handle: HANDLE,
    sublayer: *const sys::FWPM_SUBLAYER0,
    _sd: *mut c_void,
) -> NTSTATUS {
    if enter("FwpmSubLayerAdd0") {
        return sys::STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: valid or null.
    let Some(s) = (unsafe { sublayer.as_ref() }) else { return sys::STATUS_INVALID_PARAMETER };
    // SAFETY: valid or null.
    let provider = unsafe { opt_guid(s.providerKey) };
    rule(|h, b| h.engine.add_sublayer(engine_handle as usize, s.subLayerKey, provider, s.weight, b))
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmSubLayerDeleteByKey0(
    engine_handle: HANDLE,
    key: *const GUID,
) -> NTSTATUS {
    delete_object(engine_handle, key, ObjectKind::Sublayer, "FwpmSubLayerDeleteByKey0")
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmCalloutAdd0(
    engine_handle: HANDLE,
    callout: *const sys::FWPM_CALLOUT0,
    _sd: *mut c_void,
    id: *mut u32,
) -> NTSTATUS {
    if enter("FwpmCalloutAdd0") {
        return sys::STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: valid or null.
    let Some(c) = (unsafe { callout.as_ref() }) else { return sys::STATUS_INVALID_PARAMETER };
    // SAFETY: valid or null.
    let provider = unsafe { opt_guid(c.providerKey) };
    let r = rule(|h, b| {
        h.engine.add_callout(engine_handle as usize, c.calloutKey, provider, c.applicableLayer, b)
    });
    if let Ok(rid) = r {
        // SAFETY: the optional out-pointer the driver passed.
        unsafe { put(id, rid) };
    }
    status_of(&r)
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmCalloutDeleteByKey0(
    engine_handle: HANDLE,
    key: *const GUID,
) -> NTSTATUS {
    delete_object(engine_handle, key, ObjectKind::Callout, "FwpmCalloutDeleteByKey0")
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmFilterAdd0(
    engine_handle: HANDLE,
    filter: *const sys::FWPM_FILTER0,
    _sd: *mut c_void,
    id: *mut u64,
) -> NTSTATUS {
    if enter("FwpmFilterAdd0") {
        return sys::STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: valid or null.
    let Some(f) = (unsafe { filter.as_ref() }) else { return sys::STATUS_INVALID_PARAMETER };
    let callout = if f.action.r#type & sys::FWP_ACTION_FLAG_CALLOUT != 0 {
        // SAFETY: a callout action's union arm is `calloutKey`.
        Some(unsafe { f.action.u.calloutKey })
    } else {
        None
    };
    let obj = FilterObj {
        key: f.filterKey,
        id: 0,
        // SAFETY: valid or null.
        provider: unsafe { opt_guid(f.providerKey) },
        layer: f.layerKey,
        sublayer: f.subLayerKey,
        action: f.action.r#type,
        callout,
        flags: f.flags,
        // SAFETY: the caller's FWPM_FILTER0 holds a valid weight value.
        weight: unsafe { crate::wfp::engine::filter_weight(&f.weight) },
        // SAFETY: the `rawContext` arm (no FWPM_FILTER_FLAG_HAS_PROVIDER_CONTEXT is modelled).
        raw_context: unsafe { f.ctx.rawContext },
        session: 0,
    };
    let checked = rule(|h, b| {
        filter_change_allowed(h, "FwpmFilterAdd0");
        h.engine.check_filter(engine_handle as usize, obj, b)
    });
    let (obj, notify) = match checked {
        Ok(x) => x,
        Err(status) => return status,
    };
    // The engine tells the registered callout a filter names it, and does not add the filter
    // if notifyFn fails (FWPS_CALLOUT_NOTIFY_FN3). Without the engine lock: the driver may call
    // back into the engine.
    if let Some((callout_id, Some(notify_fn))) = notify {
        let mut fs = fwps_filter(&obj, callout_id);
        // SAFETY: the driver's notifyFn with the filter key and a valid FWPS_FILTER3.
        let status = unsafe {
            notify_fn(sys::FWPS_CALLOUT_NOTIFY_ADD_FILTER, &raw const obj.key, &raw mut fs)
        };
        if !sys::nt_success(status) {
            return status;
        }
    }
    let fid = obj.id;
    let status = with_current(|h| h.engine.insert_filter(obj));
    if sys::nt_success(status) {
        // SAFETY: the optional out-pointer the driver passed.
        unsafe { put(id, fid) };
    }
    status
}

/// The run-time view of a filter handed to a callout's notifyFn.
fn fwps_filter(f: &FilterObj, callout_id: u32) -> sys::FWPS_FILTER3 {
    // SAFETY: plain data, all zeroes valid.
    let mut fs: sys::FWPS_FILTER3 = unsafe { std::mem::zeroed() };
    fs.filterId = f.id;
    fs.flags = if f.flags & sys::FWPM_FILTER_FLAG_CLEAR_ACTION_RIGHT != 0 {
        sys::FWPS_FILTER_FLAG_CLEAR_ACTION_RIGHT
    } else {
        0
    };
    fs.action = sys::FWPS_ACTION0 { r#type: f.action, calloutId: callout_id };
    fs.context = f.raw_context;
    fs
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmFilterDeleteByKey0(
    engine_handle: HANDLE,
    key: *const GUID,
) -> NTSTATUS {
    passive_only("FwpmFilterDeleteByKey0");
    // SAFETY: valid or null key from the driver.
    let Some(key) = (unsafe { opt_guid(key) }) else { return sys::STATUS_INVALID_PARAMETER };
    let gone = rule(|h, b| {
        filter_change_allowed(h, "FwpmFilterDeleteByKey0");
        h.engine.delete_filter(engine_handle as usize, key, b)
    });
    match gone {
        Ok((f, notify)) => {
            notify_deleted(&f, notify);
            sys::STATUS_SUCCESS
        }
        Err(status) => status,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmBfeStateGet0() -> sys::FWPM_SERVICE_STATE {
    with_current(|h| h.engine.bfe_state)
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmBfeStateSubscribeChanges0(
    _device_object: *mut c_void,
    callback: sys::FWPM_SERVICE_STATE_CHANGE_CALLBACK0,
    context: *mut c_void,
    change_handle: *mut HANDLE,
) -> NTSTATUS {
    if enter("FwpmBfeStateSubscribeChanges0") {
        return sys::STATUS_INSUFFICIENT_RESOURCES;
    }
    if callback.is_none() || change_handle.is_null() {
        return sys::STATUS_INVALID_PARAMETER;
    }
    let handle = with_current(|h| h.engine.subscribe_bfe(callback, context as usize));
    // SAFETY: non-null out-pointer.
    unsafe { put(change_handle, handle as HANDLE) };
    sys::STATUS_SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmBfeStateUnsubscribeChanges0(change_handle: HANDLE) -> NTSTATUS {
    passive_only("FwpmBfeStateUnsubscribeChanges0");
    rule(|h, b| h.engine.unsubscribe_bfe(change_handle as usize, b))
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpsvSwitchEventsSubscribe0(
    provider_guid: *const GUID,
    notify_context: *mut c_void,
    flags: u32,
    reserved: *mut c_void,
    table: *const sys::FWPS_VSWITCH_EVENT_DISPATCH_TABLE0,
    subscription_id: *mut u32,
) -> NTSTATUS {
    if enter("FwpsvSwitchEventsSubscribe0") {
        return sys::STATUS_INSUFFICIENT_RESOURCES;
    }
    if flags != 0 || !reserved.is_null() || subscription_id.is_null() {
        return sys::STATUS_INVALID_PARAMETER;
    }
    // SAFETY: valid or null table.
    let Some(table) = (unsafe { table.as_ref() }).copied() else {
        return sys::STATUS_INVALID_PARAMETER;
    };
    // SAFETY: valid or null GUID.
    let provider = unsafe { opt_guid(provider_guid) };
    let id = with_current(|h| h.vswitch.subscribe(provider, notify_context as usize, table));
    // SAFETY: non-null out-pointer.
    unsafe { put(subscription_id, id) };
    sys::STATUS_SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpsvSwitchEventsUnsubscribe0(
    subscription_id: u32,
    _flags: u32,
    _reserved: *mut c_void,
) {
    passive_only("FwpsvSwitchEventsUnsubscribe0");
    rule(|h, b| h.vswitch.unsubscribe(subscription_id, b));
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpsvSwitchNotifyComplete0(
    completion_context: *mut c_void,
    status: NTSTATUS,
    _flags: u32,
    _reserved: *mut c_void,
) {
    rule(|h, b| {
        if let Completed::FailedRestore { port_id, status } =
            h.vswitch.complete(completion_context as usize, status, b)
        {
            // OID_SWITCH_NIC_RESTORE: an extension's failure fails the VM's whole restore.
            h.failed_vm_restores.push((port_id, status));
        }
    });
}

/// `NdisGetDataBuffer` as documented: see [`crate::vswitch::packet::get_data_buffer`].
#[unsafe(no_mangle)]
pub unsafe extern "system" fn NdisGetDataBuffer(
    net_buffer: *mut sys::NET_BUFFER,
    bytes_needed: u32,
    storage: *mut c_void,
    align_multiple: u32,
    align_offset: u32,
) -> *mut c_void {
    // SAFETY: the driver passes the NET_BUFFER the simulator built and storage of
    // `bytes_needed` bytes or null (NdisGetDataBuffer's contract).
    unsafe {
        crate::vswitch::packet::get_data_buffer(
            net_buffer,
            bytes_needed,
            storage,
            align_multiple,
            align_offset,
        )
    }
}
