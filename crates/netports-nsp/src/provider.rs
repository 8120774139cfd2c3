//! The provider: names → ports.
//!
//! Built on the session table, the names file and the host's sources (Teredo port,
//! reservation lookup). Plain Rust in and out; [`crate::routine`] turns the Winsock calls
//! into these.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use windows_sys::Win32::Networking::WinSock::{
    LUP_FLUSHPREVIOUS, LUP_RETURN_PREFERRED_NAMES, NS_ALL, NS_EMAIL, RNRSERVICE_DELETE,
    RNRSERVICE_DEREGISTER, RNRSERVICE_REGISTER,
};
use windows_sys::core::GUID;

use crate::answer::Answer;
use crate::name::ServiceName;
use crate::queryset;
use crate::reservation::{Reservation, Transport};
use crate::sessions::{Limits, LookupHandle, SessionId, Stats, Table, Work};
use crate::store::{Store, StoreError};
use crate::wsa::WsaError;

/// netports-nsp's provider id (also its `WSCInstallNameSpaceEx` id):
/// `{6f1c3b52-8d0e-4a8f-9c2b-5e7a1d40b3c9}`.
pub const PROVIDER_ID: GUID = GUID::from_u128(0x6f1c_3b52_8d0e_4a8f_9c2b_5e7a_1d40_b3c9);

/// The namespace the provider is installed in and answers for: `NS_EMAIL`.
///
/// It is the one namespace NSPv2 serves on every Windows version since Vista. Clients select
/// the provider by its id, so other `NS_EMAIL` providers are not disturbed. Queries for
/// `NS_ALL` are answered too.
pub const NAMESPACE: u32 = NS_EMAIL;

/// True if two GUIDs are equal.
#[must_use]
pub fn same_guid(a: &GUID, b: &GUID) -> bool {
    a.data1 == b.data1 && a.data2 == b.data2 && a.data3 == b.data3 && a.data4 == b.data4
}

/// Why a source could not answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceError {
    /// The system lacks the function (Wine, trimmed editions).
    Unsupported(String),
    /// The Teredo client is not started.
    NotReady,
    /// Anything else.
    Failed(String),
}

/// What the host knows that the provider needs.
pub trait Sources: Send + Sync {
    /// The Teredo client's UDP port, `None` when it has none.
    ///
    /// # Errors
    /// [`SourceError`].
    fn teredo_port(&self) -> Result<Option<u16>, SourceError>;

    /// Whether the persistent reservation exists now (`Lookup*PortReservation`).
    ///
    /// # Errors
    /// [`SourceError`]; `Unsupported` means "cannot tell" and the registration is answered.
    fn reservation_exists(&self, r: &Reservation) -> Result<bool, SourceError>;
}

/// What `LookupServiceBegin` was asked, read from the caller's `WSAQUERYSET2W`.
#[derive(Clone, Default)]
pub struct Restrictions {
    /// `lpszServiceInstanceName`.
    pub name: Option<String>,
    /// `dwNameSpace`.
    pub namespace: u32,
    /// `lpNSProviderId`.
    pub provider: Option<GUID>,
}

impl fmt::Debug for Restrictions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Restrictions")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("provider", &self.provider.as_ref().map(|g| g.data1))
            .finish()
    }
}

impl fmt::Debug for dyn Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sources")
    }
}

/// What `SetServiceEx` was given, read from the caller's `WSAQUERYSET2W`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegInfo {
    /// `lpszServiceInstanceName`.
    pub name: Option<String>,
    /// The bytes of `lpBlob`, if any.
    pub blob: Option<Vec<u8>>,
    /// The first `CSADDR_INFO`: `iProtocol` and the port of `LocalAddr`.
    pub first_address: Option<(i32, u16)>,
}

/// Diagnostics the provider reports (a corrupt names file, a failing source).
pub type Reporter = Box<dyn Fn(&str) + Send + Sync>;

/// The provider.
pub struct Provider {
    id: GUID,
    table: Mutex<Table>,
    store: Store,
    sources: Arc<dyn Sources>,
    report: Reporter,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider").field("store", &self.store).finish_non_exhaustive()
    }
}

/// The `NSPv2SetServiceEx` operations.
const REGISTER: i32 = RNRSERVICE_REGISTER;
const DEREGISTER: i32 = RNRSERVICE_DEREGISTER;
const DELETE: i32 = RNRSERVICE_DELETE;

impl Provider {
    /// A provider with id [`PROVIDER_ID`], names kept in `store`, answering from `sources`.
    pub fn new(store: Store, sources: Arc<dyn Sources>, limits: Limits) -> Self {
        Self::with_id(PROVIDER_ID, store, sources, limits)
    }

    /// The same with another provider id (tests, side-by-side installs).
    pub fn with_id(id: GUID, store: Store, sources: Arc<dyn Sources>, limits: Limits) -> Self {
        Self { id, table: Mutex::new(Table::new(limits)), store, sources, report: Box::new(|_| {}) }
    }

    /// Sends diagnostics to `report`.
    #[must_use]
    pub fn reporting(mut self, report: Reporter) -> Self {
        self.report = report;
        self
    }

    /// The provider id.
    #[must_use]
    pub const fn id(&self) -> &GUID {
        &self.id
    }

    /// The names file.
    #[must_use]
    pub const fn store(&self) -> &Store {
        &self.store
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while the table is locked is caught at the FFI boundary; the table's
        // operations leave it consistent at every step, so it stays usable.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_id(&self, id: &GUID) -> Result<(), WsaError> {
        if same_guid(id, &self.id) { Ok(()) } else { Err(WsaError::InvalidProvider) }
    }

    fn store_failure(&self, e: &StoreError) -> WsaError {
        (self.report)(&format!("names file: {e}"));
        match e {
            StoreError::Reserved => WsaError::Invalid,
            StoreError::NotRegistered => WsaError::NotFound,
            StoreError::Full => WsaError::NoMemory,
            StoreError::Io { .. } | StoreError::Corrupt { .. } | StoreError::Untrusted { .. } => {
                WsaError::Internal
            }
        }
    }

    /// `NSPv2Startup`.
    ///
    /// # Errors
    /// [`WsaError::InvalidProvider`], [`WsaError::NoMemory`].
    pub fn startup(&self, id: &GUID) -> Result<SessionId, WsaError> {
        self.check_id(id)?;
        self.table().start()
    }

    /// `NSPv2Cleanup`: the client is done with the provider; frees its session like a
    /// rundown (idempotent).
    ///
    /// # Errors
    /// [`WsaError::InvalidProvider`].
    pub fn cleanup(&self, id: &GUID, session: Option<SessionId>) -> Result<(), WsaError> {
        self.check_id(id)?;
        if let Some(s) = session {
            self.table().rundown(s);
        }
        Ok(())
    }

    /// `NSPv2ClientSessionRundown`: frees everything `session` owns, including lookups in
    /// progress. Safe to run concurrently with the session's calls and more than once.
    pub fn rundown(&self, id: &GUID, session: Option<SessionId>) {
        if self.check_id(id).is_ok()
            && let Some(s) = session
        {
            self.table().rundown(s);
        }
    }

    /// `NSPv2LookupServiceBegin`.
    ///
    /// # Errors
    /// `InvalidProvider` (another provider or namespace), `Invalid` (no or bad name),
    /// `NotSupported` (`LUP_RETURN_PREFERRED_NAMES`), `NotFound` (unknown name),
    /// `InvalidSession`, `NoMemory`, `Internal` (names file unreadable).
    pub fn lookup_begin(
        &self,
        id: &GUID,
        r: &Restrictions,
        flags: u32,
        session: Option<SessionId>,
    ) -> Result<LookupHandle, WsaError> {
        self.check_id(id)?;
        if r.namespace != NAMESPACE && r.namespace != NS_ALL {
            return Err(WsaError::InvalidProvider);
        }
        if r.provider.is_some_and(|p| !same_guid(&p, &self.id)) {
            return Err(WsaError::InvalidProvider);
        }
        if flags & LUP_RETURN_PREFERRED_NAMES != 0 {
            return Err(WsaError::NotSupported);
        }
        let session = session.ok_or(WsaError::InvalidSession)?;
        let raw = r.name.as_deref().ok_or(WsaError::NotSupported)?;
        let name = ServiceName::parse(raw).map_err(|_| WsaError::Invalid)?;
        if !name.is_teredo() {
            match self.store.get(&name) {
                Ok(Some(_)) => {}
                Ok(None) => return Err(WsaError::NotFound),
                Err(e) => return Err(self.store_failure(&e)),
            }
        }
        self.table().begin(session, name, flags)
    }

    /// Looks `name` up now.
    fn resolve(&self, name: &ServiceName) -> Result<Answer, WsaError> {
        if name.is_teredo() {
            return match self.sources.teredo_port() {
                Ok(Some(port)) => Answer::teredo(port).map_err(|_| WsaError::NoData),
                Ok(None) | Err(SourceError::NotReady) => Err(WsaError::NoData),
                Err(SourceError::Unsupported(what)) => {
                    (self.report)(&format!("teredo: {what}"));
                    Err(WsaError::NotSupported)
                }
                Err(SourceError::Failed(why)) => {
                    (self.report)(&format!("teredo: {why}"));
                    Err(WsaError::Internal)
                }
            };
        }
        let r = match self.store.get(name) {
            Ok(Some(r)) => r,
            Ok(None) => return Err(WsaError::NotFound),
            Err(e) => return Err(self.store_failure(&e)),
        };
        match self.sources.reservation_exists(&r) {
            Ok(true) | Err(SourceError::Unsupported(_)) => Ok(Answer::registered(name.clone(), r)),
            Ok(false) => Err(WsaError::NoData),
            Err(SourceError::NotReady | SourceError::Failed(_)) => Err(WsaError::Internal),
        }
    }

    /// `NSPv2LookupServiceNextEx`: writes the next result set into `buf`.
    ///
    /// Returns the bytes written. `flags` restrict what was asked at begin (they never add
    /// to it); `LUP_FLUSHPREVIOUS` with a buffer too small discards the result set.
    ///
    /// # Errors
    /// `Fault { needed }` (call again with `needed` bytes; the result set is kept),
    /// `NoMore`, `Cancelled` (the lookup was ended meanwhile), `InvalidHandle`, and the
    /// resolution's `NotFound` / `NoData` / `NotSupported` / `Internal`.
    pub fn lookup_next(
        &self,
        handle: LookupHandle,
        flags: u32,
        buf: &mut [u8],
    ) -> Result<usize, WsaError> {
        let work = self.table().claim(handle, None)?;
        let (answer, begin_flags) = match work {
            Work::Deliver { answer, flags } => (answer, flags),
            Work::Resolve { name, flags } => {
                let resolved = self.resolve(&name);
                (self.table().finish(handle, resolved)?, flags)
            }
        };
        let effective = begin_flags & flags;
        match queryset::encode(&answer, effective, NAMESPACE, &self.id, buf) {
            // Ended (or run down) while the set was written: the data is undefined.
            Ok(n) => {
                if self.table().delivered(handle) {
                    Ok(n)
                } else {
                    Err(WsaError::Cancelled)
                }
            }
            Err(_) if flags & LUP_FLUSHPREVIOUS != 0 => {
                if self.table().delivered(handle) {
                    Err(WsaError::NoMore)
                } else {
                    Err(WsaError::Cancelled)
                }
            }
            Err(needed) => Err(WsaError::Fault { needed }),
        }
    }

    /// `NSPv2LookupServiceEnd`.
    ///
    /// # Errors
    /// [`WsaError::InvalidHandle`].
    pub fn lookup_end(&self, handle: LookupHandle) -> Result<(), WsaError> {
        self.table().end(handle, None)
    }

    /// `NSPv2SetServiceEx`: register (`RNRSERVICE_REGISTER`) or remove
    /// (`RNRSERVICE_DEREGISTER`, `RNRSERVICE_DELETE`) a name.
    ///
    /// # Errors
    /// `InvalidProvider`, `InvalidSession`, `Invalid` (bad name, `teredo`, no or bad port
    /// block), `NotSupported` (another operation), `NotFound`, `NoMemory`, `Internal`.
    pub fn set_service(
        &self,
        id: &GUID,
        reg: &RegInfo,
        op: i32,
        session: Option<SessionId>,
    ) -> Result<(), WsaError> {
        self.check_id(id)?;
        match session {
            Some(s) if self.table().is_alive(s) => {}
            _ => return Err(WsaError::InvalidSession),
        }
        let raw = reg.name.as_deref().ok_or(WsaError::Invalid)?;
        let name = ServiceName::parse(raw).map_err(|_| WsaError::Invalid)?;
        if name.is_teredo() {
            return Err(WsaError::Invalid);
        }
        match op {
            REGISTER => {
                let r = match (&reg.blob, reg.first_address) {
                    (Some(blob), _) => Reservation::from_blob(blob),
                    (None, Some((protocol, port))) => Transport::from_protocol(protocol)
                        .ok_or(crate::reservation::InvalidBlock)
                        .and_then(|t| Reservation::new(t, port, 1)),
                    (None, None) => Err(crate::reservation::InvalidBlock),
                }
                .map_err(|_| WsaError::Invalid)?;
                self.store.register(&name, r).map_err(|e| self.store_failure(&e))
            }
            DEREGISTER | DELETE => match self.store.unregister(&name) {
                Ok(_) => Ok(()),
                Err(StoreError::NotRegistered) => Err(WsaError::NotFound),
                Err(e) => Err(self.store_failure(&e)),
            },
            _ => Err(WsaError::NotSupported),
        }
    }

    /// Session and lookup counts.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.table().stats()
    }
}
