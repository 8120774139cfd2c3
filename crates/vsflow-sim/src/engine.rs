//! The WFP engine double: base filtering engine state, kernel sessions, transactions, the
//! management objects (providers, sublayers, callout objects, filters) and the run-time
//! callouts, and classify dispatch at a layer.

use fwps_sys::{self as sys, FWPM_SERVICE_STATE_CHANGE_CALLBACK0, GUID};

/// A provider.
#[derive(Clone, Debug)]
pub struct ProviderObj {
    pub key: GUID,
    pub session: usize,
}

/// A sublayer.
#[derive(Clone, Debug)]
pub struct SublayerObj {
    pub key: GUID,
    pub provider: Option<GUID>,
    pub weight: u16,
    pub session: usize,
}

/// A callout object (management side).
#[derive(Clone, Debug)]
pub struct CalloutObj {
    pub key: GUID,
    pub provider: Option<GUID>,
    pub layer: GUID,
    pub session: usize,
}

/// A filter.
#[derive(Clone, Debug)]
pub struct FilterObj {
    pub key: GUID,
    pub id: u64,
    pub provider: Option<GUID>,
    pub layer: GUID,
    pub sublayer: GUID,
    pub action: u32,
    pub callout: Option<GUID>,
    pub flags: u32,
    pub raw_context: u64,
    pub session: usize,
}

/// A registered run-time callout.
#[derive(Clone, Copy, Debug)]
pub struct RegisteredCallout {
    pub id: u32,
    pub key: GUID,
    pub flags: u32,
    pub classify: sys::FWPS_CALLOUT_CLASSIFY_FN3,
}

/// A kernel engine session.
#[derive(Clone, Debug)]
pub struct Session {
    pub handle: usize,
    pub dynamic: bool,
    pub txn: Option<Box<Objects>>,
}

/// The management objects (cloned as a transaction's rollback point).
#[derive(Clone, Debug, Default)]
pub struct Objects {
    pub providers: Vec<ProviderObj>,
    pub sublayers: Vec<SublayerObj>,
    pub callouts: Vec<CalloutObj>,
    pub filters: Vec<FilterObj>,
}

/// A BFE state subscription.
#[derive(Clone, Copy, Debug)]
pub struct BfeSubscription {
    pub handle: usize,
    pub callback: FWPM_SERVICE_STATE_CHANGE_CALLBACK0,
    pub context: usize,
}

/// One host's engine.
#[derive(Debug)]
pub struct Engine {
    pub bfe_state: u32,
    pub bfe_subscriptions: Vec<BfeSubscription>,
    pub sessions: Vec<Session>,
    pub objects: Objects,
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
    pub fn session_mut(&mut self, handle: usize) -> Option<&mut Session> {
        self.sessions.iter_mut().find(|s| s.handle == handle)
    }

    pub fn next_callout_id(&mut self) -> u32 {
        let id = self.next_callout_id;
        self.next_callout_id += 1;
        id
    }

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
    pub fn filters_at(&self, layer: &GUID) -> Vec<FilterObj> {
        let mut v: Vec<FilterObj> =
            self.objects.filters.iter().filter(|f| f.layer == *layer).cloned().collect();
        let weight = |f: &FilterObj| {
            self.objects.sublayers.iter().find(|s| s.key == f.sublayer).map_or(0, |s| s.weight)
        };
        v.sort_by_key(|f| std::cmp::Reverse(weight(f)));
        v
    }

    pub fn registered_callout(&self, key: &GUID) -> Option<RegisteredCallout> {
        self.registered.iter().find(|c| c.key == *key).copied()
    }
}
