//! Start and stop: the WFP objects, the callouts and the vSwitch subscription, and their exact
//! reverse.
//!
//! Start (PASSIVE): subscribe to BFE state; once BFE runs: register the four FWPS callouts,
//! open a dynamic kernel engine session, add provider, sublayer, callout objects and filters in
//! one transaction (all associated with the provider), then subscribe to vSwitch events with
//! the provider GUID. Filters carry `PERMIT_IF_CALLOUT_UNREGISTERED`, so traffic never fails
//! closed because vsflow is not loaded.
//!
//! BFE stop and restart (`FwpmBfeStateSubscribeChanges0` remarks; WFPSampler): on
//! `STOP_PENDING` the engine handle is closed (BFE drops dynamic objects and invalidates
//! handles) and the driver goes back to waiting; on `RUNNING` every object is added again.
//! Run-time callouts and the vSwitch subscription are kernel objects and stay. Before adding
//! objects again the driver finishes every pended restore and holds new ones off (they complete
//! synchronously until the objects are in): "Using Virtual Switch Filtering" — a callout must
//! not add or delete filters before completing a pended vSwitch notification. A BFE state change
//! that arrives while a registration runs is remembered, not dropped: a `STOP_PENDING` seen
//! then makes the registration close its engine handle when it ends and wait for `RUNNING`
//! again (or register again at once if BFE already runs again), so the driver never believes
//! it runs on an engine that is gone.
//!
//! Stop (PASSIVE), in this order: unsubscribe BFE state; close the pending set, finish every
//! pended restore (decode, apply, complete: never cancelled, so unloading during a migration
//! fails no VM) and flush the work item; unsubscribe vSwitch events; wait for vSwitch
//! callbacks in flight; delete the objects and close the engine (dynamic filters go); unregister
//! the callouts (on `STATUS_DEVICE_BUSY`, wait and retry: a driver cannot unload until its
//! callouts are unregistered); close the port map (waits for classify calls in flight, frees
//! every port); forget the driver in [`crate::instances`].

use crate::wide::ascii as wide;
use core::ffi::c_void;
use core::ptr;

use fwps_sys as sys;
use fwps_sys::{GUID, HANDLE, NTSTATUS, nt_success};

use crate::classify;
use crate::driver::Driver;
use crate::error::CalloutError;
use crate::instances;
use crate::keys::{self, HOOKS};
use crate::percpu::Counter;
use crate::services::{KernelServices, LogLevel, RawRundown};
use crate::trace::TraceEvent;

/// Lifecycle of the driver's WFP registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Created, `start` not called.
    Created,
    /// Waiting for the base filtering engine to report RUNNING.
    WaitingForBfe,
    /// Callouts, objects and vSwitch subscription in place.
    Running,
    /// Stopped (terminal).
    Stopped,
}

/// Registration handles. Only touched at `PASSIVE_LEVEL` by start, the BFE callback and stop.
#[derive(Debug)]
pub struct Registration {
    /// Current phase.
    pub(crate) phase: Phase,
    /// Engine session handle.
    pub(crate) engine: usize,
    /// Run-time ids of the registered callouts (0 = not registered).
    pub(crate) callout_ids: [u32; 4],
    /// vSwitch subscription id.
    pub(crate) subscription: Option<u32>,
    /// BFE state-change subscription handle.
    pub(crate) bfe: usize,
    /// A registration attempt is running (guards against a BFE callback racing stop).
    pub(crate) busy: bool,
    /// BFE reported `STOP_PENDING` while a registration was running: it closes its handle
    /// when it ends.
    pub(crate) stop_seen: bool,
    /// BFE reported `RUNNING` while a registration was running: it tries again if it ends
    /// without being registered.
    pub(crate) running_seen: bool,
}

impl Default for Registration {
    fn default() -> Self {
        Self {
            phase: Phase::Created,
            engine: 0,
            callout_ids: [0; 4],
            subscription: None,
            bfe: 0,
            busy: false,
            stop_seen: false,
            running_seen: false,
        }
    }
}

/// How long stop waits before retrying a callout unregistration that reports
/// `STATUS_DEVICE_BUSY`.
const UNREGISTER_RETRY_MICROS: u32 = 1_000;
/// A busy callout is logged once per this many retries.
const UNREGISTER_LOG_EVERY: u32 = 1_000;

fn check(status: NTSTATUS) -> Result<(), CalloutError> {
    if nt_success(status) { Ok(()) } else { Err(CalloutError::Status(status)) }
}

fn check_add(status: NTSTATUS) -> Result<(), CalloutError> {
    // Our own object left by an earlier instance (same keys): treat as success (verify on
    // Windows, item 15).
    if status == sys::STATUS_FWP_ALREADY_EXISTS { Ok(()) } else { check(status) }
}

unsafe extern "system" fn bfe_state_changed<S: KernelServices>(
    context: *mut c_void,
    new_state: sys::FWPM_SERVICE_STATE,
) {
    if context.is_null() {
        return;
    }
    // SAFETY: `context` is the driver pointer given at subscription; stop unsubscribes (which
    // waits for running callbacks) before the driver can go away.
    let driver = unsafe { &*context.cast::<Driver<S>>() };
    driver.on_bfe_state(new_state);
}

impl<S: KernelServices> Driver<S> {
    /// Starts the driver: registers now if BFE runs, or as soon as it does.
    ///
    /// # Errors
    /// The failing WFP status; everything done so far is undone.
    ///
    /// # Safety
    /// `self` must stay at its address and alive until [`Driver::stop`] has returned: WFP keeps
    /// pointers to it (callout filter contexts, subscription contexts).
    pub unsafe fn start(&self) -> Result<(), CalloutError> {
        {
            let mut reg = self.reg.lock();
            if reg.phase != Phase::Created {
                return Err(CalloutError::InvalidState);
            }
            reg.phase = Phase::WaitingForBfe;
        }
        let mut handle: HANDLE = ptr::null_mut();
        // SAFETY: valid out-pointer; the callback and context stay valid until stop
        // unsubscribes (the caller's contract).
        let status = unsafe {
            sys::FwpmBfeStateSubscribeChanges0(
                self.device_object as *mut c_void,
                Some(bfe_state_changed::<S>),
                ptr::from_ref(self).cast_mut().cast(),
                &raw mut handle,
            )
        };
        if let Err(e) = check(status) {
            self.reg.lock().phase = Phase::Created;
            return Err(self.fail_step("FwpmBfeStateSubscribeChanges0", e));
        }
        self.reg.lock().bfe = handle as usize;
        // SAFETY: no preconditions.
        let bfe = unsafe { sys::FwpmBfeStateGet0() };
        if bfe == sys::FWPM_SERVICE_RUNNING {
            if let Err(e) = self.register_all() {
                self.unsubscribe_bfe();
                self.reg.lock().phase = Phase::Created;
                return Err(e);
            }
        } else {
            self.log(
                LogLevel::Info,
                format_args!(
                    "base filtering engine not running (state {bfe}); registering when it starts"
                ),
            );
        }
        Ok(())
    }

    /// The base filtering engine changed state.
    pub(crate) fn on_bfe_state(&self, state: sys::FWPM_SERVICE_STATE) {
        self.trace(&TraceEvent::BfeState { state });
        match state {
            sys::FWPM_SERVICE_RUNNING => {
                if let Err(e) = self.register_all() {
                    self.log(
                        LogLevel::Error,
                        format_args!("registration after BFE start failed: {e}"),
                    );
                }
            }
            sys::FWPM_SERVICE_STOP_PENDING => {
                let mut reg = self.reg.lock();
                if reg.busy {
                    // A registration is adding objects to the engine that is going away: it
                    // acts on this when it ends (`register_all`).
                    reg.stop_seen = true;
                    return;
                }
                if reg.phase != Phase::Running {
                    return;
                }
                reg.phase = Phase::WaitingForBfe;
                drop(reg);
                // BFE drops dynamic objects and invalidates engine handles: close ours and
                // add everything again when it runs.
                self.close_engine();
                self.log(
                    LogLevel::Warning,
                    format_args!("base filtering engine stopping; waiting for it to run again"),
                );
            }
            _ => {}
        }
    }

    /// The run-time id of callout number `i` (0 if not registered).
    pub(crate) fn callout_id(&self, i: usize) -> u32 {
        self.reg.lock().callout_ids.get(i).copied().unwrap_or(0)
    }

    fn address(&self) -> usize {
        ptr::from_ref(self) as usize
    }

    fn fail_step(&self, step: &'static str, e: CalloutError) -> CalloutError {
        self.trace(&TraceEvent::RegistrationFailed { step, status: e.to_ntstatus() });
        e
    }

    /// Registers callouts, objects and the vSwitch subscription (idempotent). `PASSIVE_LEVEL`.
    ///
    /// With the vSwitch subscription already in place (a re-registration after a BFE
    /// restart), pended restores are finished first and new ones held off until the objects
    /// are in. A BFE state change reported meanwhile is acted on when the attempt ends.
    pub(crate) fn register_all(&self) -> Result<(), CalloutError> {
        {
            let mut reg = self.reg.lock();
            if reg.busy {
                reg.running_seen = true;
                return Ok(());
            }
            if reg.phase != Phase::WaitingForBfe {
                return Ok(());
            }
            reg.busy = true;
            reg.stop_seen = false;
            reg.running_seen = false;
        }
        let subscribed = self.reg.lock().subscription.is_some();
        if subscribed {
            self.pending.lock().hold(true);
            self.run_deferred();
            self.services.flush_deferred_work();
        }
        let result = loop {
            let result = self.register_inner();
            let stop_seen = core::mem::take(&mut self.reg.lock().stop_seen);
            if stop_seen {
                // BFE began to stop while the objects went in: they go with it. Close the
                // handle as on STOP_PENDING and wait for RUNNING, unless BFE runs again already.
                self.close_engine();
                self.log(
                    LogLevel::Warning,
                    format_args!("base filtering engine stopping during registration; waiting"),
                );
            }
            // SAFETY: no preconditions.
            let running = unsafe { sys::FwpmBfeStateGet0() } == sys::FWPM_SERVICE_RUNNING;
            let mut reg = self.reg.lock();
            let retry = core::mem::take(&mut reg.running_seen);
            if result.is_ok() && !stop_seen {
                reg.phase = Phase::Running;
            } else if stop_seen && (running || retry) {
                // Registered into an engine that stopped and runs again: once more.
                continue;
            }
            reg.busy = false;
            break if stop_seen { Ok(()) } else { result };
        };
        if subscribed {
            self.pending.lock().hold(false);
        }
        match &result {
            Err(e) => self.log(LogLevel::Error, format_args!("registration failed: {e}")),
            Ok(()) if self.phase() == Phase::Running => {
                self.log(
                    LogLevel::Info,
                    format_args!("registered at the vSwitch transport layers"),
                );
            }
            Ok(()) => {}
        }
        result
    }

    fn register_inner(&self) -> Result<(), CalloutError> {
        // 0. Known to classify before any filter can name it.
        instances::register(self.address()).map_err(|e| self.fail_step("instances", e))?;
        // 1. Run-time callouts first, so filters take effect the moment they exist (kept
        //    across a BFE restart).
        for (i, hook) in HOOKS.iter().enumerate() {
            if self.callout_id(i) != 0 {
                continue;
            }
            let callout = sys::FWPS_CALLOUT3 {
                calloutKey: hook.callout,
                // Only the flags the running build defines (os_version).
                flags: crate::os_version::callout_flags(self.services.os_build()),
                classifyFn: Some(classify::classify_fn::<S>),
                notifyFn: Some(classify::notify_fn::<S>),
                flowDeleteFn: None,
            };
            let mut id = 0u32;
            // SAFETY: valid struct and out-pointer; the device object outlives registration.
            let status = unsafe {
                sys::FwpsCalloutRegister3(
                    self.device_object as *mut c_void,
                    &raw const callout,
                    &raw mut id,
                )
            };
            if let Err(e) = check(status) {
                self.undo_registration();
                return Err(self.fail_step("FwpsCalloutRegister3", e));
            }
            if let Some(slot) = self.reg.lock().callout_ids.get_mut(i) {
                *slot = id;
            }
            instances::set_callout(self.address(), i, id);
        }
        // 2. Management objects in one transaction of a dynamic session.
        if let Err(e) = self.add_objects() {
            self.undo_registration();
            return Err(e);
        }
        // 3. vSwitch events, routed by our provider GUID (kept across a BFE restart).
        if self.reg.lock().subscription.is_some() {
            return Ok(());
        }
        let mut id = 0u32;
        // SAFETY: the dispatch table and context live in `self`, which outlives the
        // subscription (start's contract); valid out-pointer.
        let status = unsafe {
            sys::FwpsvSwitchEventsSubscribe0(
                &raw const keys::PROVIDER_KEY,
                ptr::from_ref(self).cast_mut().cast(),
                0,
                ptr::null_mut(),
                &raw const self.dispatch,
                &raw mut id,
            )
        };
        if let Err(e) = check(status) {
            self.delete_objects();
            self.undo_registration();
            return Err(self.fail_step("FwpsvSwitchEventsSubscribe0", e));
        }
        self.reg.lock().subscription = Some(id);
        Ok(())
    }

    /// Undoes a failed first registration (callouts; the instance entry).
    fn undo_registration(&self) {
        if self.reg.lock().subscription.is_none() {
            self.unregister_callouts();
            instances::unregister(self.address());
        }
    }

    fn add_objects(&self) -> Result<(), CalloutError> {
        let session = sys::FWPM_SESSION0 {
            sessionKey: GUID::default(),
            displayData: display(&NAME_SESSION),
            flags: sys::FWPM_SESSION_FLAG_DYNAMIC,
            txnWaitTimeoutInMSec: 0,
            processId: 0,
            sid: ptr::null_mut(),
            username: ptr::null_mut(),
            kernelMode: 0,
        };
        let mut engine: HANDLE = ptr::null_mut();
        // SAFETY: valid session struct and out-pointer.
        let opened = check(unsafe {
            sys::FwpmEngineOpen0(
                ptr::null(),
                sys::RPC_C_AUTHN_DEFAULT,
                ptr::null_mut(),
                &raw const session,
                &raw mut engine,
            )
        });
        opened.map_err(|e| self.fail_step("FwpmEngineOpen0", e))?;
        self.reg.lock().engine = engine as usize;
        // SAFETY: `engine` is the open session.
        if let Err(e) = check(unsafe { sys::FwpmTransactionBegin0(engine, 0) }) {
            self.close_engine();
            return Err(self.fail_step("FwpmTransactionBegin0", e));
        }
        match self.add_objects_in_txn(engine) {
            Ok(()) => {
                // SAFETY: a transaction is open on `engine`.
                let status = unsafe { sys::FwpmTransactionCommit0(engine) };
                if let Err(e) = check(status) {
                    self.close_engine();
                    return Err(self.fail_step("FwpmTransactionCommit0", e));
                }
                Ok(())
            }
            Err((step, e)) => {
                // SAFETY: a transaction is open on `engine`.
                let _ = unsafe { sys::FwpmTransactionAbort0(engine) };
                self.close_engine();
                Err(self.fail_step(step, e))
            }
        }
    }

    fn add_objects_in_txn(&self, engine: HANDLE) -> Result<(), (&'static str, CalloutError)> {
        let mut provider_key = keys::PROVIDER;
        let provider = sys::FWPM_PROVIDER0 {
            providerKey: keys::PROVIDER,
            displayData: display(&NAME_PROVIDER),
            flags: 0,
            providerData: empty_blob(),
            serviceName: ptr::null_mut(),
        };
        // SAFETY: valid engine and struct; no security descriptor.
        check_add(unsafe { sys::FwpmProviderAdd0(engine, &raw const provider, ptr::null_mut()) })
            .map_err(|e| ("FwpmProviderAdd0", e))?;
        let sublayer = sys::FWPM_SUBLAYER0 {
            subLayerKey: keys::SUBLAYER,
            displayData: display(&NAME_SUBLAYER),
            flags: 0,
            providerKey: &raw mut provider_key,
            providerData: empty_blob(),
            weight: 0x100,
        };
        // SAFETY: as above; `provider_key` outlives the call.
        check_add(unsafe { sys::FwpmSubLayerAdd0(engine, &raw const sublayer, ptr::null_mut()) })
            .map_err(|e| ("FwpmSubLayerAdd0", e))?;
        for (n, hook) in HOOKS.iter().enumerate() {
            let callout = sys::FWPM_CALLOUT0 {
                calloutKey: hook.callout,
                displayData: display(&NAME_CALLOUT),
                flags: 0,
                providerKey: &raw mut provider_key,
                providerData: empty_blob(),
                applicableLayer: hook.layer,
                calloutId: 0,
            };
            // SAFETY: as above.
            check_add(unsafe {
                sys::FwpmCalloutAdd0(engine, &raw const callout, ptr::null_mut(), ptr::null_mut())
            })
            .map_err(|e| ("FwpmCalloutAdd0", e))?;
            let filter = sys::FWPM_FILTER0 {
                filterKey: hook.filter,
                displayData: display(&NAME_FILTER),
                flags: sys::FWPM_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED,
                providerKey: &raw mut provider_key,
                providerData: empty_blob(),
                layerKey: hook.layer,
                subLayerKey: keys::SUBLAYER,
                weight: sys::FWP_VALUE0::EMPTY,
                numFilterConditions: 0,
                filterCondition: ptr::null_mut(),
                action: sys::FWPM_ACTION0 {
                    r#type: sys::FWP_ACTION_CALLOUT_TERMINATING,
                    u: sys::FWPM_ACTION0_u { calloutKey: hook.callout },
                },
                ctx: sys::FWPM_FILTER0_ctx { rawContext: ptr::from_ref(self) as u64 },
                reserved: ptr::null_mut(),
                filterId: 0,
                effectiveWeight: sys::FWP_VALUE0::EMPTY,
            };
            let mut filter_id = 0u64;
            // SAFETY: as above; valid out-pointer.
            check_add(unsafe {
                sys::FwpmFilterAdd0(engine, &raw const filter, ptr::null_mut(), &raw mut filter_id)
            })
            .map_err(|e| ("FwpmFilterAdd0", e))?;
            // classify accepts only the filters the driver added itself.
            instances::set_filter(self.address(), n, filter_id);
        }
        Ok(())
    }

    /// Stops the driver in the documented order (idempotent). After it returns, WFP holds no
    /// pointer to `self`, every pended notification has been completed once, no callback is
    /// running, and every port is freed.
    pub fn stop(&self) {
        {
            let mut reg = self.reg.lock();
            if matches!(reg.phase, Phase::Stopped | Phase::Created) {
                reg.phase = Phase::Stopped;
                return;
            }
        }
        // 1. No more registration attempts from BFE callbacks (assumes unsubscribe waits for a
        //    running callback: verify on Windows, item 8).
        self.unsubscribe_bfe();
        // 2. Refuse new pended work (restores arriving from now on are handled synchronously),
        //    finish everything pended (decode, apply, complete: a cancelled restore fails the
        //    VM's whole restore) and flush the work item.
        self.finish_all();
        self.services.flush_deferred_work();
        // 3. No more vSwitch callbacks, then wait for those in flight.
        let subscription = self.reg.lock().subscription.take();
        if let Some(id) = subscription {
            // SAFETY: `id` came from a successful subscribe and is unsubscribed once.
            unsafe { sys::FwpsvSwitchEventsUnsubscribe0(id, 0, ptr::null_mut()) };
        }
        self.callbacks.wait_for_release();
        // 4. Objects and the engine (dynamic filters go with it) before the callouts.
        self.delete_objects();
        // 5. Callouts (waits and retries while busy).
        self.unregister_callouts();
        // 6. Classify calls in flight drained, every port (and its save buffer) freed.
        let calls = self.ports.close();
        self.counters.add(self.services.current_processor(), Counter::ClassifyCalls, calls);
        instances::unregister(self.address());
        self.reg.lock().phase = Phase::Stopped;
        self.log(LogLevel::Info, format_args!("stopped"));
    }

    fn unsubscribe_bfe(&self) {
        let handle = core::mem::take(&mut self.reg.lock().bfe);
        if handle != 0 {
            // SAFETY: `handle` came from a successful subscription and is released once.
            let _ = unsafe { sys::FwpmBfeStateUnsubscribeChanges0(handle as HANDLE) };
        }
    }

    fn unregister_callouts(&self) {
        let ids = core::mem::take(&mut self.reg.lock().callout_ids);
        for id in ids.into_iter().filter(|&id| id != 0) {
            let mut attempt = 0u32;
            loop {
                // SAFETY: `id` is a callout this driver registered.
                let status = unsafe { sys::FwpsCalloutUnregisterById0(id) };
                if status != sys::STATUS_DEVICE_BUSY {
                    break;
                }
                // A driver cannot unload while its callout is registered: wait and retry.
                if attempt.is_multiple_of(UNREGISTER_LOG_EVERY) {
                    self.log(
                        LogLevel::Warning,
                        format_args!("callout {id} busy; retrying (attempt {attempt})"),
                    );
                }
                attempt = attempt.wrapping_add(1);
                self.services.delay(UNREGISTER_RETRY_MICROS);
            }
        }
    }

    fn delete_objects(&self) {
        let engine = self.reg.lock().engine;
        if engine == 0 {
            return;
        }
        let engine = engine as HANDLE;
        // SAFETY: `engine` is the open session.
        let txn = nt_success(unsafe { sys::FwpmTransactionBegin0(engine, 0) });
        for hook in &HOOKS {
            // SAFETY: valid engine and key; "not found" is fine (never added).
            let _ = unsafe { sys::FwpmFilterDeleteByKey0(engine, &raw const hook.filter) };
            // SAFETY: as above.
            let _ = unsafe { sys::FwpmCalloutDeleteByKey0(engine, &raw const hook.callout) };
        }
        // SAFETY: as above.
        let _ = unsafe { sys::FwpmSubLayerDeleteByKey0(engine, &raw const keys::SUBLAYER_KEY) };
        // SAFETY: as above.
        let _ = unsafe { sys::FwpmProviderDeleteByKey0(engine, &raw const keys::PROVIDER_KEY) };
        if txn {
            // SAFETY: the transaction begun above.
            let _ = unsafe { sys::FwpmTransactionCommit0(engine) };
        }
        self.close_engine();
    }

    fn close_engine(&self) {
        let engine = core::mem::take(&mut self.reg.lock().engine);
        if engine != 0 {
            // SAFETY: the session is open and closed once.
            let _ = unsafe { sys::FwpmEngineClose0(engine as HANDLE) };
        }
    }
}

static NAME_SESSION: [u16; 15] = wide(b"vsflow session\0");
static NAME_PROVIDER: [u16; 7] = wide(b"vsflow\0");
static NAME_SUBLAYER: [u16; 16] = wide(b"vsflow sublayer\0");
static NAME_CALLOUT: [u16; 25] = wide(b"vsflow vSwitch transport\0");
static NAME_FILTER: [u16; 14] = wide(b"vsflow filter\0");

fn display(name: &'static [u16]) -> sys::FWPM_DISPLAY_DATA0 {
    // WFP copies display data and never writes through these pointers.
    sys::FWPM_DISPLAY_DATA0 { name: name.as_ptr().cast_mut(), description: ptr::null_mut() }
}

const fn empty_blob() -> sys::FWP_BYTE_BLOB {
    sys::FWP_BYTE_BLOB { size: 0, data: ptr::null_mut() }
}
