//! The WFP engine double.
//!
//! Base filtering engine state, kernel sessions, transactions, the management objects
//! (providers, sublayers, callout objects, filters), the run-time callouts, and the filters a
//! layer's classify dispatch runs.

use fwps_sys::{self as sys, FWPM_SERVICE_STATE_CHANGE_CALLBACK0, GUID};

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
    /// Committed (and in-transaction) objects.
    pub objects: Objects,
    /// Registered run-time callouts.
    pub registered: Vec<RegisteredCallout>,
    next_callout_id: u32,
    next_filter_id: u64,
}

impl Default for Engine {
    fn default() -> Self {
        Self {
            bfe_state: sys::FWPM_SERVICE_RUNNING,
            bfe_subscriptions: Vec::new(),
            sessions: Vec::new(),
            objects: Objects::default(),
            registered: Vec::new(),
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
    pub fn next_callout_id(&mut self) -> u32 {
        let id = self.next_callout_id;
        self.next_callout_id += 1;
        id
    }

    /// A fresh run-time filter id.
    pub fn next_filter_id(&mut self) -> u64 {
        let id = self.next_filter_id;
        self.next_filter_id += 1;
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

    /// The filters at a layer, highest weight first (sublayer weight; insertion order within).
    #[must_use]
    pub fn filters_at(&self, layer: &GUID) -> Vec<FilterObj> {
        let mut v: Vec<FilterObj> =
            self.objects.filters.iter().filter(|f| f.layer == *layer).cloned().collect();
        let weight = |f: &FilterObj| {
            self.objects.sublayers.iter().find(|s| s.key == f.sublayer).map_or(0, |s| s.weight)
        };
        v.sort_by_key(|f| std::cmp::Reverse(weight(f)));
        v
    }

    /// The registered callout with this key.
    #[must_use]
    pub fn registered_callout(&self, key: &GUID) -> Option<RegisteredCallout> {
        self.registered.iter().find(|c| c.key == *key).copied()
    }
}
