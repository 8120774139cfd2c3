//! The WFP engine double.
//!
//! Base filtering engine state, kernel sessions, transactions, the management objects
//! (providers, sublayers, callout objects, filters), the run-time callouts, and the filters a
//! layer's classify dispatch runs.

use fwps_sys::{self as sys, FWPM_SERVICE_STATE_CHANGE_CALLBACK0, GUID, NTSTATUS};

use crate::contract::Violation;

/// A provider.
#[derive(Clone, Debug)]
pub struct ProviderObj {
    /// Object key.
    pub key: GUID,
    /// Engine session that added it.
    pub session: usize,
}

/// A sublayer.
#[derive(Clone, Debug)]
pub struct SublayerObj {
    /// Object key.
    pub key: GUID,
    /// Provider GUID (routes restores).
    pub provider: Option<GUID>,
    /// Sublayer weight.
    pub weight: u16,
    /// Engine session that added it.
    pub session: usize,
}

/// A callout object (management side).
#[derive(Clone, Debug)]
pub struct CalloutObj {
    /// Object key.
    pub key: GUID,
    /// Provider GUID (routes restores).
    pub provider: Option<GUID>,
    /// Layer key.
    pub layer: GUID,
    /// Engine session that added it.
    pub session: usize,
}

/// A filter.
#[derive(Clone, Debug)]
pub struct FilterObj {
    /// Object key.
    pub key: GUID,
    /// Run-time filter id.
    pub id: u64,
    /// Provider GUID (routes restores).
    pub provider: Option<GUID>,
    /// Layer key.
    pub layer: GUID,
    /// Sublayer key.
    pub sublayer: GUID,
    /// `FWP_ACTION_*` type.
    pub action: u32,
    /// Callout key of a callout action.
    pub callout: Option<GUID>,
    /// Flags.
    pub flags: u32,
    /// Weight within its sublayer (`FWP_UINT64` as given; `FWP_UINT8` n as the top four bits
    /// n << 60; `FWP_EMPTY` 0: Filter Weight Assignment).
    pub weight: u64,
    /// `rawContext`, handed to classify as `filter->context`.
    pub raw_context: u64,
    /// Engine session that added it.
    pub session: usize,
}

/// A registered run-time callout.
#[derive(Clone, Copy, Debug)]
pub struct RegisteredCallout {
    /// Run-time id.
    pub id: u32,
    /// Object key.
    pub key: GUID,
    /// Flags.
    pub flags: u32,
    /// Classify function.
    pub classify: sys::FWPS_CALLOUT_CLASSIFY_FN3,
    /// Notify function (filters that name this callout are added or deleted).
    pub notify: sys::FWPS_CALLOUT_NOTIFY_FN3,
}

/// A kernel engine session.
#[derive(Clone, Debug)]
pub struct Session {
    /// Handle value.
    pub handle: usize,
    /// `FWPM_SESSION_FLAG_DYNAMIC`.
    pub dynamic: bool,
    /// Rollback point of the open transaction.
    pub txn: Option<Box<Objects>>,
}

/// The management objects (cloned as a transaction's rollback point).
#[derive(Clone, Debug, Default)]
pub struct Objects {
    /// Providers.
    pub providers: Vec<ProviderObj>,
    /// Sublayers.
    pub sublayers: Vec<SublayerObj>,
    /// Callout objects.
    pub callouts: Vec<CalloutObj>,
    /// Filters.
    pub filters: Vec<FilterObj>,
}

/// A BFE state subscription.
#[derive(Clone, Copy, Debug)]
pub struct BfeSubscription {
    /// Handle value.
    pub handle: usize,
    /// The driver's callback.
    pub callback: FWPM_SERVICE_STATE_CHANGE_CALLBACK0,
    /// The driver's context.
    pub context: usize,
}

/// One host's engine.
#[derive(Debug)]
pub struct Engine {
    /// `FWPM_SERVICE_STATE` of BFE.
    pub bfe_state: u32,
    /// BFE state subscriptions.
    pub bfe_subscriptions: Vec<BfeSubscription>,
    /// Open sessions.
    pub sessions: Vec<Session>,
    /// Handles of sessions BFE's stop invalidated.
    pub stale_handles: Vec<usize>,
    /// Committed (and in-transaction) objects.
    pub objects: Objects,
    /// Registered run-time callouts.
    pub registered: Vec<RegisteredCallout>,
    /// Classify calls running, by callout id.
    pub classify_in_flight: Vec<(u32, usize)>,
    /// Classify calls made.
    pub classify_calls: u64,
    /// Unregister calls still to answer `STATUS_DEVICE_BUSY` as if a classify of the callout
    /// were running on another processor at that moment (a test's choice).
    pub busy_unregisters: u32,
    /// BFE begins to stop (`STOP_PENDING` to every subscriber) right after the next successful
    /// call of this function returns: the service control manager stops BFE whenever it is
    /// told to, registration or not (a test's choice; `Host::stop_bfe_after`).
    pub stop_after: Option<&'static str>,
    next_callout_id: u32,
    next_filter_id: u64,
}

impl Default for Engine {
    fn default() -> Self {
        Self {
            bfe_state: sys::FWPM_SERVICE_RUNNING,
            bfe_subscriptions: Vec::new(),
            sessions: Vec::new(),
            stale_handles: Vec::new(),
            objects: Objects::default(),
            registered: Vec::new(),
            classify_in_flight: Vec::new(),
            classify_calls: 0,
            stop_after: None,
            busy_unregisters: 0,
            next_callout_id: 1,
            next_filter_id: 1,
        }
    }
}

impl Engine {
    /// The session with this handle.
    pub fn session_mut(&mut self, handle: usize) -> Option<&mut Session> {
        self.sessions.iter_mut().find(|s| s.handle == handle)
    }

    /// A fresh run-time callout id.
    ///
    /// Run-time ids are the kernel's: unique across every simulated host of the process, as
    /// they are across a machine (several hosts share one process and one driver-side table).
    pub fn next_callout_id(&mut self) -> u32 {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.next_callout_id = id + 1;
        id
    }

    /// A fresh run-time filter id.
    ///
    /// Unique across every simulated host of the process (see [`Engine::next_callout_id`]).
    pub fn next_filter_id(&mut self) -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.next_filter_id = id + 1;
        id
    }

    /// Deletes the objects a dynamic session added (at session close).
    pub fn drop_session_objects(&mut self, session: usize) {
        let o = &mut self.objects;
        o.filters.retain(|x| x.session != session);
        o.callouts.retain(|x| x.session != session);
        o.sublayers.retain(|x| x.session != session);
        o.providers.retain(|x| x.session != session);
    }

    /// The filters at a layer grouped by sublayer: sublayers from the highest weight to the
    /// lowest, filters within each from the highest weight to the lowest (Filter
    /// Arbitration: "Filtering Model"). Each group carries its sublayer's weight.
    #[must_use]
    pub fn sublayers_at(&self, layer: &GUID) -> Vec<(u16, Vec<FilterObj>)> {
        let weight_of = |key: &GUID| {
            self.objects.sublayers.iter().find(|s| s.key == *key).map_or(0, |s| s.weight)
        };
        let mut groups: Vec<(GUID, u16, Vec<FilterObj>)> = Vec::new();
        for f in self.objects.filters.iter().filter(|f| f.layer == *layer) {
            if let Some(g) = groups.iter_mut().find(|g| g.0 == f.sublayer) {
                g.2.push(f.clone());
            } else {
                groups.push((f.sublayer, weight_of(&f.sublayer), vec![f.clone()]));
            }
        }
        groups.sort_by_key(|g| std::cmp::Reverse(g.1));
        groups
            .into_iter()
            .map(|(_, w, mut fs)| {
                fs.sort_by_key(|f| std::cmp::Reverse(f.weight));
                (w, fs)
            })
            .collect()
    }

    /// A classify of callout `id` starts, if the callout is still registered (false: it was
    /// unregistered, the engine does not call it).
    pub fn classify_started(&mut self, id: u32) -> bool {
        if !self.registered.iter().any(|c| c.id == id) {
            return false;
        }
        self.classify_calls += 1;
        match self.classify_in_flight.iter_mut().find(|e| e.0 == id) {
            Some(e) => e.1 += 1,
            None => self.classify_in_flight.push((id, 1)),
        }
        true
    }

    /// A classify of callout `id` returned.
    pub fn classify_finished(&mut self, id: u32) {
        if let Some(e) = self.classify_in_flight.iter_mut().find(|e| e.0 == id) {
            e.1 = e.1.saturating_sub(1);
        }
    }

    /// Classify calls of callout `id` running now.
    #[must_use]
    pub fn classifies_running(&self, id: u32) -> usize {
        self.classify_in_flight.iter().find(|e| e.0 == id).map_or(0, |e| e.1)
    }

    /// The registered callout with this key.
    #[must_use]
    pub fn registered_callout(&self, key: &GUID) -> Option<RegisteredCallout> {
        self.registered.iter().find(|c| c.key == *key).copied()
    }
}

/// WFP's rules for management calls, enforced by the engine. Each method returns the status
/// the call returns and pushes onto `b` the contract breaches it saw (the host records them).
impl Engine {
    /// A management call needs BFE running and a session this engine issued.
    fn session_ok(&self, handle: usize, call: &'static str, b: &mut Vec<Violation>) -> bool {
        if self.bfe_state != sys::FWPM_SERVICE_RUNNING {
            b.push(Violation::BfeNotRunning { call });
            return false;
        }
        if !self.sessions.iter().any(|s| s.handle == handle) {
            b.push(Violation::BadHandle { call });
            return false;
        }
        true
    }

    /// `FwpmEngineOpen0`: a session (BFE must be running).
    ///
    /// # Errors
    /// `STATUS_UNSUCCESSFUL` when BFE is not running.
    pub fn open_session(
        &mut self,
        dynamic: bool,
        b: &mut Vec<Violation>,
    ) -> Result<usize, NTSTATUS> {
        if self.bfe_state != sys::FWPM_SERVICE_RUNNING {
            b.push(Violation::BfeNotRunning { call: "FwpmEngineOpen0" });
            return Err(sys::STATUS_UNSUCCESSFUL);
        }
        let handle = crate::world::next_handle();
        self.sessions.push(Session { handle, dynamic, txn: None });
        Ok(handle)
    }

    /// `FwpmEngineClose0`: an open transaction is aborted; a dynamic session's objects go.
    /// Returns the filters deleted with it and the notifyFn of each one's registered callout
    /// (a deleted filter is notified: "Processing Notify Callouts", Filter Deletion).
    ///
    /// # Errors
    /// The status the call fails with.
    pub fn close_session(
        &mut self,
        handle: usize,
        b: &mut Vec<Violation>,
    ) -> Result<Vec<(FilterObj, CalloutNotify)>, NTSTATUS> {
        let Some(i) = self.sessions.iter().position(|s| s.handle == handle) else {
            b.push(Violation::BadHandle { call: "FwpmEngineClose0" });
            return Err(sys::STATUS_INVALID_PARAMETER);
        };
        let s = self.sessions.remove(i);
        if let Some(snapshot) = s.txn {
            self.objects = *snapshot;
        }
        if !s.dynamic {
            return Ok(Vec::new());
        }
        let gone: Vec<_> = self
            .objects
            .filters
            .iter()
            .filter(|f| f.session == handle)
            .map(|f| {
                let notify =
                    f.callout.and_then(|c| self.registered_callout(&c)).map(|r| (r.id, r.notify));
                (f.clone(), notify)
            })
            .collect();
        self.drop_session_objects(handle);
        Ok(gone)
    }

    /// `FwpmTransactionBegin0`: no nesting.
    pub fn begin_transaction(&mut self, handle: usize, b: &mut Vec<Violation>) -> NTSTATUS {
        let snapshot = self.objects.clone();
        let Some(s) = self.session_mut(handle) else {
            b.push(Violation::BadHandle { call: "FwpmTransactionBegin0" });
            return sys::STATUS_INVALID_PARAMETER;
        };
        if s.txn.is_some() {
            b.push(Violation::Transaction { what: "nested FwpmTransactionBegin0" });
            return sys::STATUS_FWP_TXN_IN_PROGRESS;
        }
        s.txn = Some(Box::new(snapshot));
        sys::STATUS_SUCCESS
    }

    /// `FwpmTransactionCommit0` (`commit`) or `FwpmTransactionAbort0`: abort restores the
    /// objects as they were at begin.
    pub fn end_transaction(
        &mut self,
        handle: usize,
        commit: bool,
        call: &'static str,
        b: &mut Vec<Violation>,
    ) -> NTSTATUS {
        let Some(s) = self.session_mut(handle) else {
            b.push(Violation::BadHandle { call });
            return sys::STATUS_INVALID_PARAMETER;
        };
        let Some(snapshot) = s.txn.take() else {
            b.push(Violation::Transaction { what: "commit or abort without a transaction" });
            return sys::STATUS_FWP_NO_TXN_IN_PROGRESS;
        };
        if !commit {
            self.objects = *snapshot;
        }
        sys::STATUS_SUCCESS
    }

    /// `FwpmProviderAdd0`: keys are unique.
    pub fn add_provider(&mut self, handle: usize, key: GUID, b: &mut Vec<Violation>) -> NTSTATUS {
        if !self.session_ok(handle, "FwpmProviderAdd0", b) {
            return sys::STATUS_INVALID_PARAMETER;
        }
        if self.objects.providers.iter().any(|x| x.key == key) {
            return sys::STATUS_FWP_ALREADY_EXISTS;
        }
        self.objects.providers.push(ProviderObj { key, session: handle });
        sys::STATUS_SUCCESS
    }

    /// `FwpmSubLayerAdd0`: keys are unique; an object without a provider breaks HLK
    /// `FwpmProviders.AssociateWithObjects`.
    pub fn add_sublayer(
        &mut self,
        handle: usize,
        key: GUID,
        provider: Option<GUID>,
        weight: u16,
        b: &mut Vec<Violation>,
    ) -> NTSTATUS {
        if !self.session_ok(handle, "FwpmSubLayerAdd0", b) {
            return sys::STATUS_INVALID_PARAMETER;
        }
        if provider.is_none() {
            b.push(Violation::ObjectWithoutProvider { kind: "sublayer" });
        }
        if self.objects.sublayers.iter().any(|x| x.key == key) {
            return sys::STATUS_FWP_ALREADY_EXISTS;
        }
        self.objects.sublayers.push(SublayerObj { key, provider, weight, session: handle });
        sys::STATUS_SUCCESS
    }

    /// `FwpmCalloutAdd0`: keys are unique. Returns the run-time id of the registered callout
    /// with that key (0 if none).
    ///
    /// # Errors
    /// The status the call fails with.
    pub fn add_callout(
        &mut self,
        handle: usize,
        key: GUID,
        provider: Option<GUID>,
        layer: GUID,
        b: &mut Vec<Violation>,
    ) -> Result<u32, NTSTATUS> {
        if !self.session_ok(handle, "FwpmCalloutAdd0", b) {
            return Err(sys::STATUS_INVALID_PARAMETER);
        }
        if provider.is_none() {
            b.push(Violation::ObjectWithoutProvider { kind: "callout" });
        }
        if self.objects.callouts.iter().any(|x| x.key == key) {
            return Err(sys::STATUS_FWP_ALREADY_EXISTS);
        }
        self.objects.callouts.push(CalloutObj { key, provider, layer, session: handle });
        Ok(self.registered_callout(&key).map_or(0, |r| r.id))
    }

    /// `FwpmFilterAdd0`, before the callout's notifyFn is asked: the sublayer must be the
    /// adder's own (its provider) or the built-in universal one (HLK
    /// `FwpmSublayers.UseOwnOrBuiltIn`); a callout action needs the callout object; keys are
    /// unique. Returns the filter to insert and the notifyFn of its registered callout.
    ///
    /// # Errors
    /// The status the call fails with.
    pub fn check_filter(
        &mut self,
        handle: usize,
        mut f: FilterObj,
        b: &mut Vec<Violation>,
    ) -> Result<(FilterObj, CalloutNotify), NTSTATUS> {
        if !self.session_ok(handle, "FwpmFilterAdd0", b) {
            return Err(sys::STATUS_INVALID_PARAMETER);
        }
        if f.provider.is_none() {
            b.push(Violation::ObjectWithoutProvider { kind: "filter" });
        }
        let own_sublayer = self
            .objects
            .sublayers
            .iter()
            .any(|s| s.key == f.sublayer && s.provider.is_some() && s.provider == f.provider);
        if !own_sublayer && f.sublayer != BUILTIN_SUBLAYER_UNIVERSAL {
            b.push(Violation::BadSublayer);
            return Err(sys::STATUS_FWP_NOT_FOUND);
        }
        if let Some(c) = f.callout
            && !self.objects.callouts.iter().any(|x| x.key == c)
        {
            b.push(Violation::FilterWithoutCalloutObject);
            return Err(sys::STATUS_FWP_CALLOUT_NOT_FOUND);
        }
        if self.objects.filters.iter().any(|x| x.key == f.key) {
            return Err(sys::STATUS_FWP_ALREADY_EXISTS);
        }
        f.id = self.next_filter_id();
        f.session = handle;
        let notify = f.callout.and_then(|c| self.registered_callout(&c)).map(|r| (r.id, r.notify));
        Ok((f, notify))
    }

    /// Inserts a filter [`Engine::check_filter`] accepted (and notifyFn did not refuse).
    pub fn insert_filter(&mut self, f: FilterObj) -> NTSTATUS {
        if self.objects.filters.iter().any(|x| x.key == f.key) {
            return sys::STATUS_FWP_ALREADY_EXISTS;
        }
        self.objects.filters.push(f);
        sys::STATUS_SUCCESS
    }

    /// `Fwpm*DeleteByKey0` of a provider, sublayer or callout object. A callout object that a
    /// filter still names is in use (`FwpmCalloutDeleteById0`: `STATUS_FWP_IN_USE`).
    pub fn delete_object(
        &mut self,
        handle: usize,
        kind: ObjectKind,
        key: GUID,
        call: &'static str,
        b: &mut Vec<Violation>,
    ) -> NTSTATUS {
        if !self.session_ok(handle, call, b) {
            return sys::STATUS_INVALID_PARAMETER;
        }
        let o = &mut self.objects;
        let found = match kind {
            ObjectKind::Provider => remove_first(&mut o.providers, |x| x.key == key),
            ObjectKind::Sublayer => remove_first(&mut o.sublayers, |x| x.key == key),
            ObjectKind::Callout => {
                if o.filters.iter().any(|f| f.callout == Some(key)) {
                    return sys::STATUS_FWP_IN_USE;
                }
                remove_first(&mut o.callouts, |x| x.key == key)
            }
        };
        if found { sys::STATUS_SUCCESS } else { sys::STATUS_FWP_NOT_FOUND }
    }

    /// `FwpmFilterDeleteByKey0`: the deleted filter and the notifyFn of its registered callout.
    ///
    /// # Errors
    /// The status the call fails with.
    pub fn delete_filter(
        &mut self,
        handle: usize,
        key: GUID,
        b: &mut Vec<Violation>,
    ) -> Result<(FilterObj, CalloutNotify), NTSTATUS> {
        if !self.session_ok(handle, "FwpmFilterDeleteByKey0", b) {
            return Err(sys::STATUS_INVALID_PARAMETER);
        }
        let Some(i) = self.objects.filters.iter().position(|x| x.key == key) else {
            return Err(sys::STATUS_FWP_NOT_FOUND);
        };
        let f = self.objects.filters.remove(i);
        let notify = f.callout.and_then(|c| self.registered_callout(&c)).map(|r| (r.id, r.notify));
        Ok((f, notify))
    }

    /// `FwpsCalloutRegister3`: one registration per key; a classify function is required.
    ///
    /// # Errors
    /// The status the call fails with.
    pub fn register(&mut self, mut c: RegisteredCallout) -> Result<u32, NTSTATUS> {
        if self.registered_callout(&c.key).is_some() {
            return Err(sys::STATUS_FWP_ALREADY_EXISTS);
        }
        if c.classify.is_none() {
            return Err(sys::STATUS_INVALID_PARAMETER);
        }
        c.id = self.next_callout_id();
        self.registered.push(c);
        Ok(c.id)
    }

    /// `FwpsCalloutUnregisterById0`/`ByKey0`. `STATUS_DEVICE_BUSY` is documented for flow
    /// contexts still associated (the double models none); filters that still name the callout
    /// do not stop it ("succeeds even if there are filters"). A classify still running is not
    /// documented: the double answers busy, the choice worse for the driver.
    pub fn unregister(&mut self, pred: impl Fn(&RegisteredCallout) -> bool) -> NTSTATUS {
        if self.registered.iter().any(|c| pred(c) && self.classifies_running(c.id) > 0) {
            return sys::STATUS_DEVICE_BUSY;
        }
        if self.busy_unregisters > 0 && self.registered.iter().any(&pred) {
            self.busy_unregisters -= 1;
            return sys::STATUS_DEVICE_BUSY;
        }
        if remove_first(&mut self.registered, pred) {
            sys::STATUS_SUCCESS
        } else {
            sys::STATUS_FWP_CALLOUT_NOT_FOUND
        }
    }

    /// `FwpmBfeStateSubscribeChanges0`.
    pub fn subscribe_bfe(
        &mut self,
        callback: FWPM_SERVICE_STATE_CHANGE_CALLBACK0,
        context: usize,
    ) -> usize {
        let handle = crate::world::next_handle();
        self.bfe_subscriptions.push(BfeSubscription { handle, callback, context });
        handle
    }

    /// `FwpmBfeStateUnsubscribeChanges0`.
    pub fn unsubscribe_bfe(&mut self, handle: usize, b: &mut Vec<Violation>) -> NTSTATUS {
        if remove_first(&mut self.bfe_subscriptions, |s| s.handle == handle) {
            sys::STATUS_SUCCESS
        } else {
            b.push(Violation::BadHandle { call: "FwpmBfeStateUnsubscribeChanges0" });
            sys::STATUS_INVALID_PARAMETER
        }
    }
}

/// The run-time id and notifyFn of the registered callout a filter names, if registered.
pub type CalloutNotify = Option<(u32, sys::FWPS_CALLOUT_NOTIFY_FN3)>;

/// The kinds of management object deleted by key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    /// A provider.
    Provider,
    /// A sublayer.
    Sublayer,
    /// A callout object.
    Callout,
}

/// `FWPM_SUBLAYER_UNIVERSAL`, the built-in sublayer any filter may use.
pub const BUILTIN_SUBLAYER_UNIVERSAL: GUID =
    GUID::from_parts(0xeebe_cc03, 0xced4, 0x4380, [0x81, 0x9a, 0x27, 0x34, 0x39, 0x7b, 0x2b, 0x74]);

/// Removes the first element matching `pred`; true if one was removed.
fn remove_first<T>(v: &mut Vec<T>, pred: impl Fn(&T) -> bool) -> bool {
    v.iter().position(pred).is_some_and(|i| {
        v.remove(i);
        true
    })
}

/// A filter weight as the engine orders it (Filter Weight Assignment): `FWP_UINT64` as given,
/// `FWP_UINT8` n in the top four bits, `FWP_EMPTY` (automatic) 0.
///
/// # Safety
/// `v` is a valid `FWP_VALUE0` (its `uint64` pointer valid when the type is `FWP_UINT64`).
#[must_use]
pub unsafe fn filter_weight(v: &sys::FWP_VALUE0) -> u64 {
    match v.r#type {
        sys::FWP_UINT64 => {
            // SAFETY: the type says the `uint64` arm is the live one.
            let p = unsafe { v.u.uint64 };
            // SAFETY: a valid pointer or null (caller's contract).
            unsafe { p.as_ref() }.copied().unwrap_or(0)
        }
        // SAFETY: the `uint8` arm.
        sys::FWP_UINT8 => u64::from(unsafe { v.u.uint8 } & 0x0f) << 60,
        _ => 0,
    }
}

/// One decision of arbitration: the action and whether a lower sublayer may override it
/// (`FWPS_RIGHT_ACTION_WRITE` still set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// `FWP_ACTION_PERMIT` or `FWP_ACTION_BLOCK`.
    pub action: u32,
    /// True when the write right was kept (soft); false when cleared (hard).
    pub overridable: bool,
}

/// WFP's filter arbitration within a layer ("Filter Arbitration", Configurable Override
/// Policy).
///
/// Every sublayer is evaluated, highest weight first, even after a block; the result
/// is kept with its `FWPS_RIGHT_ACTION_WRITE` flag:
///
/// | current | a lower sublayer returns | result |
/// |---|---|---|
/// | none | anything | that |
/// | soft permit | block | block ("can be blocked in another sublayer") |
/// | hard permit | block from a callout | block: a **veto** ("only a callout veto can block") |
/// | hard permit | static block | permit |
/// | soft block | permit | permit ("can be permitted in another sublayer") |
/// | hard block | anything | block ("cannot be overridden") |
///
/// A permit that follows a soft permit keeps the stronger right (hard if either cleared it).
/// With no decision the layer permits.
#[derive(Clone, Copy, Debug, Default)]
pub struct Arbiter {
    current: Option<Decision>,
}

impl Arbiter {
    /// The rights a callout's classify gets: the write right unless the current decision is
    /// hard ("Filter Arbitration": the flag controls whether lower sublayers may override).
    #[must_use]
    pub const fn rights(&self) -> u32 {
        match self.current {
            Some(Decision { overridable: false, .. }) => 0,
            _ => sys::FWPS_RIGHT_ACTION_WRITE,
        }
    }

    /// Combines one sublayer's decision; `from_callout` marks a callout's (a veto can only
    /// come from a callout).
    pub fn sublayer(&mut self, d: Decision, from_callout: bool) {
        self.current = Some(match self.current {
            None => d,
            Some(cur) => match (cur.action, cur.overridable, d.action) {
                // A callout's block vetoes a hard permit.
                (sys::FWP_ACTION_PERMIT, false, sys::FWP_ACTION_BLOCK) if from_callout => {
                    Decision { action: sys::FWP_ACTION_BLOCK, overridable: false }
                }
                // Soft decisions are overridden by the next sublayer's.
                (_, true, _) => d,
                // A hard block is final; a hard permit stands against static filters.
                _ => cur,
            },
        });
    }

    /// The layer's verdict: true to permit.
    #[must_use]
    pub fn permits(&self) -> bool {
        self.current.is_none_or(|d| d.action == sys::FWP_ACTION_PERMIT)
    }

    /// Whether a decision was made (a sublayer matched).
    #[must_use]
    pub const fn decided(&self) -> Option<Decision> {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn d(action: u32, overridable: bool) -> Decision {
        Decision { action, overridable }
    }
    const P: u32 = sys::FWP_ACTION_PERMIT;
    const B: u32 = sys::FWP_ACTION_BLOCK;

    fn run(steps: &[(Decision, bool)]) -> bool {
        let mut a = Arbiter::default();
        for (x, c) in steps {
            a.sublayer(*x, *c);
        }
        a.permits()
    }

    #[test]
    fn the_documented_override_policy() {
        assert!(run(&[]), "no decision: permit");
        assert!(!run(&[(d(P, true), false), (d(B, true), false)]), "soft permit is blocked below");
        assert!(!run(&[(d(P, true), false), (d(B, false), true)]));
        assert!(
            run(&[(d(P, false), false), (d(B, true), false)]),
            "hard permit: a static block cannot"
        );
        assert!(
            !run(&[(d(P, false), false), (d(B, false), true)]),
            "hard permit: a callout veto can"
        );
        assert!(run(&[(d(B, true), false), (d(P, true), false)]), "soft block is permitted below");
        assert!(!run(&[(d(B, false), false), (d(P, false), true)]), "hard block is final");
        let mut a = Arbiter::default();
        a.sublayer(d(P, false), false);
        assert_eq!(a.rights(), 0, "classify below a hard decision gets no write right");
    }
}
