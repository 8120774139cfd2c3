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

    /// A classify of callout `id` starts.
    pub fn classify_started(&mut self, id: u32) {
        self.classify_calls += 1;
        match self.classify_in_flight.iter_mut().find(|e| e.0 == id) {
            Some(e) => e.1 += 1,
            None => self.classify_in_flight.push((id, 1)),
        }
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

/// A filter weight as the engine orders it (Filter Weight Assignment): `FWP_UINT64` as given,
/// `FWP_UINT8` n in the top four bits, `FWP_EMPTY` (automatic) 0.
///
/// # Safety
/// `v` is a valid `FWP_VALUE0` (its `uint64` pointer valid when the type is `FWP_UINT64`).
#[must_use]
pub unsafe fn filter_weight(v: &sys::FWP_VALUE0) -> u64 {
    match v.r#type {
        // SAFETY: the `uint64` arm, a valid pointer or null (caller's contract).
        sys::FWP_UINT64 => unsafe { v.u.uint64.as_ref() }.copied().unwrap_or(0),
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
/// Policy): every sublayer is evaluated, highest weight first, even after a block; the result
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
                (sys::FWP_ACTION_BLOCK, false, _) => cur,
                (sys::FWP_ACTION_PERMIT, false, sys::FWP_ACTION_BLOCK) if from_callout => {
                    Decision { action: sys::FWP_ACTION_BLOCK, overridable: false }
                }
                (sys::FWP_ACTION_PERMIT, false, _) => cur,
                (sys::FWP_ACTION_PERMIT, true, sys::FWP_ACTION_PERMIT) => d,
                (_, true, _) => d,
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
