//! Client sessions and their lookups: who owns what, and what is in flight.
//!
//! Winsock calls `NSPv2Startup` once per client process and hands the value the provider
//! stores in `*ppvClientSessionArg` back to `LookupServiceBegin`, `SetServiceEx`, `Cleanup`
//! and `ClientSessionRundown`. vsflow's provider stores a [`SessionId`], not a pointer: a
//! stale or repeated rundown is a table miss, never a use after free. Lookup handles are
//! [`LookupHandle`]s from the same never-reused counter, owned by the session that began
//! them.
//!
//! A lookup's resolution (reading the Teredo port, the names file, a reservation) runs
//! outside the table's lock: [`Table::claim`] marks it in flight, [`Table::finish`] stores
//! the result, and if `LookupServiceEnd` or the session's rundown ran meanwhile, `finish`
//! reports [`WsaError::Cancelled`] and drops the result. Ending frees the lookup at once;
//! nothing waits for a resolution in flight.
//!
//! `NSPv2LookupServiceNextEx` and `LookupServiceEnd` receive no session: there a handle is
//! valid when it is live (its session alive, not ended). Where the caller's session is known
//! a handle of another session is refused like a stale one.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, DefaultHasher};
use std::num::NonZeroU64;

use crate::answer::Answer;
use crate::name::ServiceName;
use crate::wsa::WsaError;

/// Maps keyed by ids this table hands out itself (sequential, never chosen by a client), so
/// a fixed-key hasher is enough: no per-process random seed. (A random seed would make the
/// binary import `ProcessPrng` from bcryptprimitives.dll, which Wine 8 lacks; the Wine run
/// of the real binary in the test command depends on not importing it.)
type Map<K, V> = HashMap<K, V, BuildHasherDefault<DefaultHasher>>;
type Set<K> = HashSet<K, BuildHasherDefault<DefaultHasher>>;

/// A client session (what `NSPv2Startup` returns through `ppvClientSessionArg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(NonZeroU64);

/// A lookup (what `LookupServiceBegin` returns through `lphLookup`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LookupHandle(NonZeroU64);

macro_rules! raw_id {
    ($t:ident) => {
        impl $t {
            /// The value handed to Winsock.
            #[must_use]
            pub const fn raw(self) -> u64 {
                self.0.get()
            }
            /// The id Winsock handed back (`None` for 0).
            #[must_use]
            pub const fn from_raw(v: u64) -> Option<Self> {
                match NonZeroU64::new(v) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }
        }
    };
}
raw_id!(SessionId);
raw_id!(LookupHandle);

/// Bounds on what clients can make the provider hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Live sessions.
    pub sessions: usize,
    /// Live lookups per session.
    pub lookups_per_session: usize,
    /// Live lookups in all (so memory stays bounded whatever the clients do).
    pub lookups: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { sessions: 4_096, lookups_per_session: 256, lookups: 65_536 }
    }
}

/// Where a lookup is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    /// Begun; nothing resolved yet (or a resolution in flight).
    Open,
    /// Resolved; the result set waits for a buffer large enough.
    Ready(Answer),
    /// The result set was returned (or flushed): the next call gets `WSA_E_NO_MORE`.
    Done,
}

#[derive(Debug)]
struct Lookup {
    session: SessionId,
    name: ServiceName,
    flags: u32,
    stage: Stage,
    /// Resolutions in flight.
    resolving: u32,
}

#[derive(Debug, Default)]
struct Session {
    lookups: Set<LookupHandle>,
}

/// What the caller of [`Table::claim`] does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    /// Resolve `name` (outside the lock), then call [`Table::finish`].
    Resolve {
        /// The name.
        name: ServiceName,
        /// The `LUP_*` flags given at begin.
        flags: u32,
    },
    /// Return this result set.
    Deliver {
        /// The answer.
        answer: Answer,
        /// The `LUP_*` flags given at begin.
        flags: u32,
    },
}

/// Counts for tests and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Live sessions.
    pub sessions: usize,
    /// Live lookups.
    pub lookups: usize,
    /// Lookups with a cached result set.
    pub cached_answers: usize,
    /// Resolutions in flight.
    pub resolving: usize,
}

/// Every session and lookup; the provider keeps it behind one lock.
#[derive(Debug, Default)]
pub struct Table {
    limits: Limits,
    next: u64,
    sessions: Map<SessionId, Session>,
    lookups: Map<LookupHandle, Lookup>,
}

impl Table {
    /// An empty table with `limits`.
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        Self { limits, ..Self::default() }
    }

    fn fresh(&mut self) -> NonZeroU64 {
        self.next += 1;
        // The counter starts at 1 and a u64 does not wrap in practice; 0 is never handed out.
        NonZeroU64::new(self.next).unwrap_or(NonZeroU64::MIN)
    }

    /// `NSPv2Startup`: a new session.
    ///
    /// # Errors
    /// [`WsaError::NoMemory`] over the session limit.
    pub fn start(&mut self) -> Result<SessionId, WsaError> {
        if self.sessions.len() >= self.limits.sessions {
            return Err(WsaError::NoMemory);
        }
        let id = SessionId(self.fresh());
        self.sessions.insert(id, Session::default());
        Ok(id)
    }

    /// True while `session` is alive.
    #[must_use]
    pub fn is_alive(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    /// `LookupServiceBegin`: a lookup owned by `session`.
    ///
    /// # Errors
    /// [`WsaError::InvalidSession`], [`WsaError::NoMemory`] over the per-session limit.
    pub fn begin(
        &mut self,
        session: SessionId,
        name: ServiceName,
        flags: u32,
    ) -> Result<LookupHandle, WsaError> {
        let limit = self.limits.lookups_per_session;
        let live = self.sessions.get(&session).ok_or(WsaError::InvalidSession)?.lookups.len();
        if live >= limit || self.lookups.len() >= self.limits.lookups {
            return Err(WsaError::NoMemory);
        }
        let handle = LookupHandle(self.fresh());
        self.lookups
            .insert(handle, Lookup { session, name, flags, stage: Stage::Open, resolving: 0 });
        if let Some(s) = self.sessions.get_mut(&session) {
            s.lookups.insert(handle);
        }
        Ok(handle)
    }

    fn lookup_mut(
        &mut self,
        handle: LookupHandle,
        caller: Option<SessionId>,
    ) -> Result<&mut Lookup, WsaError> {
        match self.lookups.get_mut(&handle) {
            Some(l) if caller.is_none_or(|c| c == l.session) => Ok(l),
            _ => Err(WsaError::InvalidHandle),
        }
    }

    /// `LookupServiceNextEx`, first half: what to do for `handle`.
    ///
    /// # Errors
    /// [`WsaError::InvalidHandle`]; [`WsaError::NoMore`] once the result set was returned.
    pub fn claim(
        &mut self,
        handle: LookupHandle,
        caller: Option<SessionId>,
    ) -> Result<Work, WsaError> {
        let l = self.lookup_mut(handle, caller)?;
        match &l.stage {
            Stage::Done => Err(WsaError::NoMore),
            Stage::Ready(answer) => Ok(Work::Deliver { answer: answer.clone(), flags: l.flags }),
            Stage::Open => {
                l.resolving += 1;
                Ok(Work::Resolve { name: l.name.clone(), flags: l.flags })
            }
        }
    }

    /// `LookupServiceNextEx`, after resolving: stores the answer (or ends the lookup on an
    /// error that is final for it) and returns what to deliver.
    ///
    /// # Errors
    /// [`WsaError::Cancelled`] when the lookup was ended or its session run down meanwhile;
    /// otherwise the resolution's own error.
    pub fn finish(
        &mut self,
        handle: LookupHandle,
        resolved: Result<Answer, WsaError>,
    ) -> Result<Answer, WsaError> {
        let Some(l) = self.lookups.get_mut(&handle) else {
            return Err(WsaError::Cancelled);
        };
        l.resolving = l.resolving.saturating_sub(1);
        match resolved {
            Ok(answer) => {
                if l.stage == Stage::Open {
                    l.stage = Stage::Ready(answer.clone());
                }
                Ok(answer)
            }
            Err(e) => Err(e),
        }
    }

    /// `LookupServiceNextEx`, last step: the result set was written (or, with
    /// `LUP_FLUSHPREVIOUS`, discarded): the next call gets `WSA_E_NO_MORE`. False if the
    /// lookup was ended meanwhile.
    pub fn delivered(&mut self, handle: LookupHandle) -> bool {
        self.lookups.get_mut(&handle).map(|l| l.stage = Stage::Done).is_some()
    }

    /// `LookupServiceEnd`: frees the lookup (a resolution in flight finds it gone).
    ///
    /// # Errors
    /// [`WsaError::InvalidHandle`] for an unknown, ended or foreign handle.
    pub fn end(&mut self, handle: LookupHandle, caller: Option<SessionId>) -> Result<(), WsaError> {
        let session = self.lookup_mut(handle, caller)?.session;
        self.lookups.remove(&handle);
        if let Some(s) = self.sessions.get_mut(&session) {
            s.lookups.remove(&handle);
        }
        Ok(())
    }

    /// `NSPv2ClientSessionRundown` / `NSPv2Cleanup`: frees the session and every lookup it
    /// owns, including lookups in flight. Returns how many lookups were freed; a second call
    /// (or an unknown session) frees nothing.
    pub fn rundown(&mut self, session: SessionId) -> usize {
        let Some(s) = self.sessions.remove(&session) else { return 0 };
        let n = s.lookups.len();
        for h in s.lookups {
            self.lookups.remove(&h);
        }
        n
    }

    /// Counts.
    #[must_use]
    pub fn stats(&self) -> Stats {
        Stats {
            sessions: self.sessions.len(),
            lookups: self.lookups.len(),
            cached_answers: self
                .lookups
                .values()
                .filter(|l| matches!(l.stage, Stage::Ready(_)))
                .count(),
            resolving: self.lookups.values().map(|l| l.resolving as usize).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reservation::{Reservation, Transport};

    fn name(s: &str) -> ServiceName {
        ServiceName::parse(s).unwrap()
    }

    fn answer(s: &str) -> Answer {
        Answer::registered(name(s), Reservation::new(Transport::Tcp, 8000, 2).unwrap())
    }

    #[test]
    fn a_lookup_resolves_delivers_then_reports_no_more() {
        let mut t = Table::new(Limits::default());
        let s = t.start().unwrap();
        let h = t.begin(s, name("web"), 0x10).unwrap();
        assert_eq!(t.claim(h, None), Ok(Work::Resolve { name: name("web"), flags: 0x10 }));
        assert_eq!(t.finish(h, Ok(answer("web"))), Ok(answer("web")));
        // A buffer too small: the answer stays cached for the retry.
        assert_eq!(t.claim(h, Some(s)), Ok(Work::Deliver { answer: answer("web"), flags: 0x10 }));
        t.delivered(h);
        assert_eq!(t.claim(h, None), Err(WsaError::NoMore));
        assert_eq!(t.end(h, None), Ok(()));
        assert_eq!(t.claim(h, None), Err(WsaError::InvalidHandle), "stale after end");
        assert_eq!(t.end(h, None), Err(WsaError::InvalidHandle), "double end");
    }

    #[test]
    fn handles_of_another_session_are_refused_where_the_caller_is_known() {
        let mut t = Table::new(Limits::default());
        let (a, b) = (t.start().unwrap(), t.start().unwrap());
        let h = t.begin(a, name("web"), 0).unwrap();
        assert_eq!(t.claim(h, Some(b)), Err(WsaError::InvalidHandle));
        assert_eq!(t.end(h, Some(b)), Err(WsaError::InvalidHandle));
        assert_eq!(t.rundown(b), 0, "b owns nothing");
        assert!(t.claim(h, Some(a)).is_ok(), "a's lookup survives b's rundown");
    }

    #[test]
    fn rundown_frees_lookups_in_flight_and_is_idempotent() {
        let mut t = Table::new(Limits::default());
        let s = t.start().unwrap();
        let h1 = t.begin(s, name("a"), 0).unwrap();
        let h2 = t.begin(s, name("b"), 0).unwrap();
        assert!(matches!(t.claim(h1, None), Ok(Work::Resolve { .. })));
        assert_eq!(t.stats().resolving, 1);
        assert_eq!(t.rundown(s), 2);
        assert_eq!(t.finish(h1, Ok(answer("a"))), Err(WsaError::Cancelled));
        assert_eq!(t.claim(h2, None), Err(WsaError::InvalidHandle));
        assert_eq!(t.rundown(s), 0);
        assert_eq!(t.stats(), Stats::default());
        assert_eq!(t.begin(s, name("c"), 0), Err(WsaError::InvalidSession));
    }

    #[test]
    fn limits_bound_sessions_and_lookups() {
        let mut t = Table::new(Limits { sessions: 2, lookups_per_session: 3, lookups: 4 });
        let s = t.start().unwrap();
        let s2 = t.start().unwrap();
        assert_eq!(t.start(), Err(WsaError::NoMemory));
        for _ in 0..3 {
            t.begin(s, name("a"), 0).unwrap();
        }
        assert_eq!(t.begin(s, name("a"), 0), Err(WsaError::NoMemory), "per session");
        t.begin(s2, name("a"), 0).unwrap();
        assert_eq!(t.begin(s2, name("a"), 0), Err(WsaError::NoMemory), "in all");
        t.rundown(s);
        assert!(t.begin(s2, name("a"), 0).is_ok(), "a run-down session frees its lookups");
        assert!(t.start().is_ok(), "and its slot");
    }

    #[test]
    fn ids_are_never_reused() {
        let mut t = Table::new(Limits::default());
        let s = t.start().unwrap();
        let h = t.begin(s, name("a"), 0).unwrap();
        t.rundown(s);
        let s2 = t.start().unwrap();
        let h2 = t.begin(s2, name("a"), 0).unwrap();
        assert_ne!(s, s2);
        assert_ne!(h, h2);
        assert_eq!(t.claim(h, None), Err(WsaError::InvalidHandle));
    }
}
