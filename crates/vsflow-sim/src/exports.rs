//! The `fwpkclnt.sys` symbols, defined for the simulator.
//!
//! Same names, same `extern "system"` signatures as `fwps-sys` declares. Each acts on the
//! calling thread's current host and records contract violations.
//!
//! Calls into the driver (BFE callbacks, vSwitch callbacks, classify) never happen from inside
//! these functions: the engine lock is not held while driver code runs.

#![allow(non_snake_case, reason = "the C names of the exports")]
#![allow(missing_docs, reason = "each export is documented under the same name in fwps-sys")]
#![allow(
    clippy::missing_safety_doc,
    reason = "each export's contract is the WDK's, cited in fwps-sys"
)]

use std::ffi::c_void;

use fwps_sys::{self as sys, GUID, HANDLE, NTSTATUS};

use crate::contract::Violation;
use crate::engine::{CalloutObj, FilterObj, ProviderObj, RegisteredCallout, Session, SublayerObj};
use crate::world::{HostState, next_handle, with_current};

fn bfe_running(h: &mut HostState, call: &'static str) -> bool {
    if h.engine.bfe_state == sys::FWPM_SERVICE_RUNNING {
        true
    } else {
        h.violate(Violation::BfeNotRunning { call });
        false
    }
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

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpsCalloutRegister3(
    _device_object: *mut c_void,
    callout: *const sys::FWPS_CALLOUT3,
    callout_id: *mut u32,
) -> NTSTATUS {
    // SAFETY: the driver passes a valid callout.
    let Some(c) = (unsafe { callout.as_ref() }) else { return sys::STATUS_INVALID_PARAMETER };
    with_current(|h| {
        if h.engine.registered_callout(&c.calloutKey).is_some() {
            return sys::STATUS_FWP_ALREADY_EXISTS;
        }
        if c.classifyFn.is_none() {
            return sys::STATUS_INVALID_PARAMETER;
        }
        let id = h.engine.next_callout_id();
        h.engine.registered.push(RegisteredCallout {
            id,
            key: c.calloutKey,
            flags: c.flags,
            classify: c.classifyFn,
            notify: c.notifyFn,
        });
        if !callout_id.is_null() {
            // SAFETY: non-null out-pointer.
            unsafe { callout_id.write(id) };
        }
        sys::STATUS_SUCCESS
    })
}

fn unregister(h: &mut HostState, pred: impl Fn(&RegisteredCallout) -> bool) -> NTSTATUS {
    if !h.vswitch.subscriptions.is_empty() {
        h.violate(Violation::UnregisterBeforeUnsubscribe);
    }
    // STATUS_DEVICE_BUSY is documented for flow contexts still associated (vsflow associates
    // none); filters that still name the callout do not stop it ("succeeds even if there are
    // filters"). A classify still running is not documented: the double answers busy, the
    // choice worse for the driver (WINDOWS-VERIFICATION), so the driver must retry.
    if h.engine.registered.iter().any(|c| pred(c) && h.engine.classifies_running(c.id) > 0) {
        return sys::STATUS_DEVICE_BUSY;
    }
    let before = h.engine.registered.len();
    h.engine.registered.retain(|c| !pred(c));
    if h.engine.registered.len() == before {
        sys::STATUS_FWP_CALLOUT_NOT_FOUND
    } else {
        sys::STATUS_SUCCESS
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpsCalloutUnregisterById0(callout_id: u32) -> NTSTATUS {
    with_current(|h| unregister(h, |c| c.id == callout_id))
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpsCalloutUnregisterByKey0(callout_key: *const GUID) -> NTSTATUS {
    // SAFETY: valid or null key.
    let Some(key) = (unsafe { opt_guid(callout_key) }) else {
        return sys::STATUS_INVALID_PARAMETER;
    };
    with_current(|h| unregister(h, |c| c.key == key))
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmEngineOpen0(
    _server_name: *const u16,
    _authn_service: u32,
    _auth_identity: *mut c_void,
    session: *const sys::FWPM_SESSION0,
    engine_handle: *mut HANDLE,
) -> NTSTATUS {
    if engine_handle.is_null() {
        return sys::STATUS_INVALID_PARAMETER;
    }
    // SAFETY: valid or null session.
    let dynamic =
        unsafe { session.as_ref() }.is_some_and(|s| s.flags & sys::FWPM_SESSION_FLAG_DYNAMIC != 0);
    with_current(|h| {
        if !bfe_running(h, "FwpmEngineOpen0") {
            return sys::STATUS_UNSUCCESSFUL;
        }
        let handle = next_handle();
        h.engine.sessions.push(Session { handle, dynamic, txn: None });
        // SAFETY: non-null out-pointer.
        unsafe { engine_handle.write(handle as HANDLE) };
        sys::STATUS_SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmEngineClose0(engine_handle: HANDLE) -> NTSTATUS {
    let handle = engine_handle as usize;
    with_current(|h| {
        let Some(i) = h.engine.sessions.iter().position(|s| s.handle == handle) else {
            h.violate(Violation::BadHandle { call: "FwpmEngineClose0" });
            return sys::STATUS_INVALID_PARAMETER;
        };
        let s = h.engine.sessions.remove(i);
        if let Some(snapshot) = s.txn {
            h.engine.objects = *snapshot;
        }
        if s.dynamic {
            h.engine.drop_session_objects(handle);
        }
        sys::STATUS_SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmTransactionBegin0(
    engine_handle: HANDLE,
    _flags: u32,
) -> NTSTATUS {
    with_current(|h| {
        let snapshot = h.engine.objects.clone();
        let Some(s) = h.engine.session_mut(engine_handle as usize) else {
            h.violate(Violation::BadHandle { call: "FwpmTransactionBegin0" });
            return sys::STATUS_INVALID_PARAMETER;
        };
        if s.txn.is_some() {
            h.violate(Violation::Transaction { what: "nested FwpmTransactionBegin0" });
            return sys::STATUS_FWP_TXN_IN_PROGRESS;
        }
        s.txn = Some(Box::new(snapshot));
        sys::STATUS_SUCCESS
    })
}

fn end_txn(engine_handle: HANDLE, commit: bool, call: &'static str) -> NTSTATUS {
    with_current(|h| {
        let Some(s) = h.engine.session_mut(engine_handle as usize) else {
            h.violate(Violation::BadHandle { call });
            return sys::STATUS_INVALID_PARAMETER;
        };
        let Some(snapshot) = s.txn.take() else {
            h.violate(Violation::Transaction { what: "commit or abort without a transaction" });
            return sys::STATUS_FWP_NO_TXN_IN_PROGRESS;
        };
        if !commit {
            h.engine.objects = *snapshot;
        }
        sys::STATUS_SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmTransactionCommit0(engine_handle: HANDLE) -> NTSTATUS {
    end_txn(engine_handle, true, "FwpmTransactionCommit0")
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmTransactionAbort0(engine_handle: HANDLE) -> NTSTATUS {
    end_txn(engine_handle, false, "FwpmTransactionAbort0")
}

fn session_ok(h: &mut HostState, engine_handle: HANDLE, call: &'static str) -> bool {
    if !bfe_running(h, call) {
        return false;
    }
    if h.engine.session_mut(engine_handle as usize).is_none() {
        h.violate(Violation::BadHandle { call });
        return false;
    }
    true
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmProviderAdd0(
    engine_handle: HANDLE,
    provider: *const sys::FWPM_PROVIDER0,
    _sd: *mut c_void,
) -> NTSTATUS {
    // SAFETY: valid or null.
    let Some(p) = (unsafe { provider.as_ref() }) else { return sys::STATUS_INVALID_PARAMETER };
    with_current(|h| {
        if !session_ok(h, engine_handle, "FwpmProviderAdd0") {
            return sys::STATUS_INVALID_PARAMETER;
        }
        if h.engine.objects.providers.iter().any(|x| x.key == p.providerKey) {
            return sys::STATUS_FWP_ALREADY_EXISTS;
        }
        h.engine
            .objects
            .providers
            .push(ProviderObj { key: p.providerKey, session: engine_handle as usize });
        sys::STATUS_SUCCESS
    })
}

fn delete_by_key(
    engine_handle: HANDLE,
    key: *const GUID,
    call: &'static str,
    f: impl FnOnce(&mut HostState, GUID) -> bool,
) -> NTSTATUS {
    // SAFETY: valid or null key from the driver.
    let Some(key) = (unsafe { opt_guid(key) }) else { return sys::STATUS_INVALID_PARAMETER };
    with_current(|h| {
        if !session_ok(h, engine_handle, call) {
            return sys::STATUS_INVALID_PARAMETER;
        }
        if f(h, key) { sys::STATUS_SUCCESS } else { sys::STATUS_FWP_NOT_FOUND }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmProviderDeleteByKey0(
    engine_handle: HANDLE,
    key: *const GUID,
) -> NTSTATUS {
    delete_by_key(engine_handle, key, "FwpmProviderDeleteByKey0", |h, k| {
        let n = h.engine.objects.providers.len();
        h.engine.objects.providers.retain(|x| x.key != k);
        n != h.engine.objects.providers.len()
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmSubLayerAdd0(
    engine_handle: HANDLE,
    sublayer: *const sys::FWPM_SUBLAYER0,
    _sd: *mut c_void,
) -> NTSTATUS {
    // SAFETY: valid or null.
    let Some(s) = (unsafe { sublayer.as_ref() }) else { return sys::STATUS_INVALID_PARAMETER };
    // SAFETY: valid or null.
    let provider = unsafe { opt_guid(s.providerKey) };
    with_current(|h| {
        if !session_ok(h, engine_handle, "FwpmSubLayerAdd0") {
            return sys::STATUS_INVALID_PARAMETER;
        }
        if provider.is_none() {
            h.violate(Violation::ObjectWithoutProvider { kind: "sublayer" });
        }
        if h.engine.objects.sublayers.iter().any(|x| x.key == s.subLayerKey) {
            return sys::STATUS_FWP_ALREADY_EXISTS;
        }
        h.engine.objects.sublayers.push(SublayerObj {
            key: s.subLayerKey,
            provider,
            weight: s.weight,
            session: engine_handle as usize,
        });
        sys::STATUS_SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmSubLayerDeleteByKey0(
    engine_handle: HANDLE,
    key: *const GUID,
) -> NTSTATUS {
    delete_by_key(engine_handle, key, "FwpmSubLayerDeleteByKey0", |h, k| {
        let n = h.engine.objects.sublayers.len();
        h.engine.objects.sublayers.retain(|x| x.key != k);
        n != h.engine.objects.sublayers.len()
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmCalloutAdd0(
    engine_handle: HANDLE,
    callout: *const sys::FWPM_CALLOUT0,
    _sd: *mut c_void,
    id: *mut u32,
) -> NTSTATUS {
    // SAFETY: valid or null.
    let Some(c) = (unsafe { callout.as_ref() }) else { return sys::STATUS_INVALID_PARAMETER };
    // SAFETY: valid or null.
    let provider = unsafe { opt_guid(c.providerKey) };
    with_current(|h| {
        if !session_ok(h, engine_handle, "FwpmCalloutAdd0") {
            return sys::STATUS_INVALID_PARAMETER;
        }
        if provider.is_none() {
            h.violate(Violation::ObjectWithoutProvider { kind: "callout" });
        }
        if h.engine.objects.callouts.iter().any(|x| x.key == c.calloutKey) {
            return sys::STATUS_FWP_ALREADY_EXISTS;
        }
        h.engine.objects.callouts.push(CalloutObj {
            key: c.calloutKey,
            provider,
            layer: c.applicableLayer,
            session: engine_handle as usize,
        });
        if !id.is_null() {
            let rid = h.engine.registered_callout(&c.calloutKey).map_or(0, |r| r.id);
            // SAFETY: non-null out-pointer.
            unsafe { id.write(rid) };
        }
        sys::STATUS_SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmCalloutDeleteByKey0(
    engine_handle: HANDLE,
    key: *const GUID,
) -> NTSTATUS {
    delete_by_key(engine_handle, key, "FwpmCalloutDeleteByKey0", |h, k| {
        if h.engine.objects.filters.iter().any(|f| f.callout == Some(k)) {
            return false;
        }
        let n = h.engine.objects.callouts.len();
        h.engine.objects.callouts.retain(|x| x.key != k);
        n != h.engine.objects.callouts.len()
    })
}

const BUILTIN_SUBLAYER_UNIVERSAL: GUID =
    GUID::from_parts(0xeebe_cc03, 0xced4, 0x4380, [0x81, 0x9a, 0x27, 0x34, 0x39, 0x7b, 0x2b, 0x74]);

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmFilterAdd0(
    engine_handle: HANDLE,
    filter: *const sys::FWPM_FILTER0,
    _sd: *mut c_void,
    id: *mut u64,
) -> NTSTATUS {
    // SAFETY: valid or null.
    let Some(f) = (unsafe { filter.as_ref() }) else { return sys::STATUS_INVALID_PARAMETER };
    // SAFETY: valid or null.
    let provider = unsafe { opt_guid(f.providerKey) };
    let callout = if f.action.r#type & sys::FWP_ACTION_FLAG_CALLOUT != 0 {
        // SAFETY: a callout action's union arm is `calloutKey`.
        Some(unsafe { f.action.u.calloutKey })
    } else {
        None
    };
    // SAFETY: the driver uses the `rawContext` arm (no FWPM_FILTER_FLAG_HAS_PROVIDER_CONTEXT).
    let raw_context = unsafe { f.ctx.rawContext };
    // SAFETY: the caller's FWPM_FILTER0 holds a valid weight value.
    let weight = unsafe { crate::engine::filter_weight(&f.weight) };
    let added =
        with_current(|h| {
            filter_change_allowed(h, "FwpmFilterAdd0");
            if !session_ok(h, engine_handle, "FwpmFilterAdd0") {
                return Err(sys::STATUS_INVALID_PARAMETER);
            }
            if provider.is_none() {
                h.violate(Violation::ObjectWithoutProvider { kind: "filter" });
            }
            let own_sublayer =
                h.engine.objects.sublayers.iter().any(|s| {
                    s.key == f.subLayerKey && s.provider.is_some() && s.provider == provider
                });
            if !own_sublayer && f.subLayerKey != BUILTIN_SUBLAYER_UNIVERSAL {
                h.violate(Violation::BadSublayer);
                return Err(sys::STATUS_FWP_NOT_FOUND);
            }
            if let Some(c) = callout
                && !h.engine.objects.callouts.iter().any(|x| x.key == c)
            {
                h.violate(Violation::FilterWithoutCalloutObject);
                return Err(sys::STATUS_FWP_CALLOUT_NOT_FOUND);
            }
            if h.engine.objects.filters.iter().any(|x| x.key == f.filterKey) {
                return Err(sys::STATUS_FWP_ALREADY_EXISTS);
            }
            let fid = h.engine.next_filter_id();
            let obj = FilterObj {
                key: f.filterKey,
                id: fid,
                provider,
                layer: f.layerKey,
                sublayer: f.subLayerKey,
                action: f.action.r#type,
                callout,
                flags: f.flags,
                weight,
                raw_context,
                session: engine_handle as usize,
            };
            let notify =
                callout.and_then(|c| h.engine.registered_callout(&c)).map(|r| (r.id, r.notify));
            Ok((obj, notify))
        });
    let (obj, notify) = match added {
        Ok(x) => x,
        Err(status) => return status,
    };
    // The engine tells the registered callout a filter names it, and does not add the filter
    // if notifyFn fails (FWPS_CALLOUT_NOTIFY_FN3: "the filter engine does not add the filter").
    // Called without the engine lock: the driver may call back into the engine.
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
    with_current(|h| {
        if h.engine.objects.filters.iter().any(|x| x.key == obj.key) {
            return sys::STATUS_FWP_ALREADY_EXISTS;
        }
        h.engine.objects.filters.push(obj);
        if !id.is_null() {
            // SAFETY: non-null out-pointer.
            unsafe { id.write(fid) };
        }
        sys::STATUS_SUCCESS
    })
}

/// The run-time view of a filter handed to a callout's notifyFn and classifyFn.
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
    with_current(|h| filter_change_allowed(h, "FwpmFilterDeleteByKey0"));
    let mut gone = None;
    let status = delete_by_key(engine_handle, key, "FwpmFilterDeleteByKey0", |h, k| {
        let Some(i) = h.engine.objects.filters.iter().position(|x| x.key == k) else {
            return false;
        };
        let f = h.engine.objects.filters.remove(i);
        let notify =
            f.callout.and_then(|c| h.engine.registered_callout(&c)).map(|r| (r.id, r.notify));
        gone = Some((f, notify));
        true
    });
    // The callout hears of the deletion (FWPS_CALLOUT_NOTIFY_DELETE_FILTER), outside the lock.
    if let Some((f, Some((callout_id, Some(notify_fn))))) = gone {
        let mut fs = fwps_filter(&f, callout_id);
        // SAFETY: the driver's notifyFn with the filter key and a valid FWPS_FILTER3.
        let _ = unsafe {
            notify_fn(sys::FWPS_CALLOUT_NOTIFY_DELETE_FILTER, &raw const f.key, &raw mut fs)
        };
    }
    status
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
    if callback.is_none() || change_handle.is_null() {
        return sys::STATUS_INVALID_PARAMETER;
    }
    with_current(|h| {
        let handle = next_handle();
        h.engine.bfe_subscriptions.push(crate::engine::BfeSubscription {
            handle,
            callback,
            context: context as usize,
        });
        // SAFETY: non-null out-pointer.
        unsafe { change_handle.write(handle as HANDLE) };
        sys::STATUS_SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpmBfeStateUnsubscribeChanges0(change_handle: HANDLE) -> NTSTATUS {
    with_current(|h| {
        let n = h.engine.bfe_subscriptions.len();
        h.engine.bfe_subscriptions.retain(|s| s.handle != change_handle as usize);
        if n == h.engine.bfe_subscriptions.len() {
            h.violate(Violation::BadHandle { call: "FwpmBfeStateUnsubscribeChanges0" });
            return sys::STATUS_INVALID_PARAMETER;
        }
        sys::STATUS_SUCCESS
    })
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
    if flags != 0 || !reserved.is_null() || subscription_id.is_null() {
        return sys::STATUS_INVALID_PARAMETER;
    }
    // SAFETY: valid or null table.
    let Some(table) = (unsafe { table.as_ref() }).copied() else {
        return sys::STATUS_INVALID_PARAMETER;
    };
    // SAFETY: valid or null GUID.
    let provider = unsafe { opt_guid(provider_guid) };
    with_current(|h| {
        h.vswitch.next_subscription += 1;
        let id = h.vswitch.next_subscription;
        h.vswitch.subscriptions.push(crate::vswitch::Subscription {
            id,
            provider,
            context: notify_context as usize,
            table,
        });
        // SAFETY: non-null out-pointer.
        unsafe { subscription_id.write(id) };
        sys::STATUS_SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpsvSwitchEventsUnsubscribe0(
    subscription_id: u32,
    _flags: u32,
    _reserved: *mut c_void,
) {
    with_current(|h| {
        let n = h.vswitch.subscriptions.len();
        h.vswitch.subscriptions.retain(|s| s.id != subscription_id);
        if n == h.vswitch.subscriptions.len() {
            h.violate(Violation::BadHandle { call: "FwpsvSwitchEventsUnsubscribe0" });
        }
    });
}

#[unsafe(no_mangle)]
pub unsafe extern "system" fn FwpsvSwitchNotifyComplete0(
    completion_context: *mut c_void,
    status: NTSTATUS,
    _flags: u32,
    _reserved: *mut c_void,
) {
    let ctx = completion_context as usize;
    with_current(|h| {
        if status == sys::STATUS_PENDING {
            h.violate(Violation::CompletedWithPending);
            return;
        }
        let Some(o) = h.vswitch.outstanding.remove(&ctx) else {
            h.violate(Violation::UnknownCompletion { context: ctx });
            return;
        };
        if o.callback == "vSwitchRuntimeStateRestoreNotifyFn" && !sys::nt_success(status) {
            // OID_SWITCH_NIC_RESTORE: an extension's failure fails the VM's whole restore.
            h.failed_vm_restores.push((o.port_id, status));
        }
        h.vswitch.completed.insert(ctx, status);
    });
}

/// `NdisGetDataBuffer` as documented: see [`crate::packet::get_data_buffer`].
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
        crate::packet::get_data_buffer(
            net_buffer,
            bytes_needed,
            storage,
            align_multiple,
            align_offset,
        )
    }
}
