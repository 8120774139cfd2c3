//! The provider's behaviour through its Rust API: names resolve to ports, the two-call buffer
//! protocol at every buffer size, end and rundown in the middle of a lookup, double rundown,
//! cross-session handles, registrations, a corrupt names file, and thousands of concurrent
//! sessions and lookups that leave nothing behind.

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use netports_nsp::provider::{NAMESPACE, PROVIDER_ID, RegInfo, Restrictions, SourceError, Sources};
use netports_nsp::queryset::encoded_len;
use netports_nsp::reservation::{Reservation, Transport};
use netports_nsp::sessions::{Limits, LookupHandle, SessionId, Stats};
use netports_nsp::store::Store;
use netports_nsp::wsa::WsaError;
use netports_nsp::{Provider, answer::Answer, name::ServiceName};
use windows_sys::Win32::Networking::WinSock::{
    LUP_FLUSHPREVIOUS, LUP_RETURN_ALL, LUP_RETURN_PREFERRED_NAMES, NS_ALL, NS_DNS,
    RNRSERVICE_DELETE, RNRSERVICE_DEREGISTER, RNRSERVICE_REGISTER,
};
use windows_sys::core::GUID;

/// A host whose Teredo port and reservations the test sets, and which can hold a resolution
/// at a barrier so the test can end or run down the lookup meanwhile.
struct Fake {
    teredo: AtomicU16,
    teredo_unsupported: AtomicBool,
    reservation_exists: AtomicBool,
    gate: Mutex<Option<Arc<Barrier>>>,
}

impl Fake {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            teredo: AtomicU16::new(51_234),
            teredo_unsupported: AtomicBool::new(false),
            reservation_exists: AtomicBool::new(true),
            gate: Mutex::new(None),
        })
    }
    fn pass_gate(&self) {
        let gate = self.gate.lock().unwrap().clone();
        if let Some(b) = gate {
            b.wait(); // resolution started
            b.wait(); // the test did its thing
        }
    }
}

impl Sources for Fake {
    fn teredo_port(&self) -> Result<Option<u16>, SourceError> {
        self.pass_gate();
        if self.teredo_unsupported.load(Ordering::SeqCst) {
            return Err(SourceError::Unsupported("GetTeredoPort".into()));
        }
        match self.teredo.load(Ordering::SeqCst) {
            0 => Err(SourceError::NotReady),
            p => Ok(Some(p)),
        }
    }
    fn reservation_exists(&self, _: &Reservation) -> Result<bool, SourceError> {
        self.pass_gate();
        Ok(self.reservation_exists.load(Ordering::SeqCst))
    }
}

fn temp_store(tag: &str) -> Store {
    let dir = std::env::temp_dir().join(format!("netports-nsp-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Store::new(dir.join("names.json"))
}

fn provider(tag: &str, limits: Limits) -> (Provider, Arc<Fake>) {
    let fake = Fake::new();
    (Provider::new(temp_store(tag), fake.clone(), limits), fake)
}

fn ask(name: &str) -> Restrictions {
    Restrictions { name: Some(name.into()), namespace: NAMESPACE, provider: Some(PROVIDER_ID) }
}

fn name(s: &str) -> ServiceName {
    ServiceName::parse(s).unwrap()
}

fn begin(p: &Provider, s: SessionId, n: &str) -> Result<LookupHandle, WsaError> {
    p.lookup_begin(&PROVIDER_ID, &ask(n), LUP_RETURN_ALL, Some(s))
}

/// The two-call protocol: the first call learns the size, the second gets the set.
fn next(p: &Provider, h: LookupHandle) -> Result<Vec<u8>, WsaError> {
    match p.lookup_next(h, LUP_RETURN_ALL, &mut []) {
        Err(WsaError::Fault { needed }) => {
            let mut buf = vec![0u8; needed];
            let n = p.lookup_next(h, LUP_RETURN_ALL, &mut buf)?;
            assert_eq!(n, needed);
            Ok(buf)
        }
        Ok(_) => panic!("an empty buffer cannot hold a result set"),
        Err(e) => Err(e),
    }
}

#[test]
fn teredo_resolves_to_the_current_port_then_no_more() {
    let (p, fake) = provider("teredo", Limits::default());
    let s = p.startup(&PROVIDER_ID).unwrap();
    let h = begin(&p, s, "Teredo").unwrap();
    let set = next(&p, h).unwrap();
    assert_eq!(set.len(), encoded_len(&Answer::teredo(51_234).unwrap(), LUP_RETURN_ALL));
    assert_eq!(p.lookup_next(h, LUP_RETURN_ALL, &mut [0; 4096]), Err(WsaError::NoMore));
    p.lookup_end(h).unwrap();

    fake.teredo.store(0, Ordering::SeqCst);
    let h = begin(&p, s, "teredo").unwrap();
    assert_eq!(next(&p, h), Err(WsaError::NoData), "client not started: known name, no data");
    p.lookup_end(h).unwrap();
    fake.teredo_unsupported.store(true, Ordering::SeqCst);
    let h = begin(&p, s, "teredo").unwrap();
    assert_eq!(next(&p, h), Err(WsaError::NotSupported));
    p.lookup_end(h).unwrap();
    p.rundown(&PROVIDER_ID, Some(s));
    assert_eq!(p.stats(), Stats::default());
}

#[test]
fn the_buffer_protocol_holds_at_every_buffer_size() {
    let (p, _) = provider("sizes", Limits::default());
    let s = p.startup(&PROVIDER_ID).unwrap();
    let need = encoded_len(&Answer::teredo(51_234).unwrap(), LUP_RETURN_ALL);
    for len in 0..=need + 16 {
        let h = begin(&p, s, "teredo").unwrap();
        let mut buf = vec![0u8; len];
        match p.lookup_next(h, LUP_RETURN_ALL, &mut buf) {
            Err(WsaError::Fault { needed }) => {
                assert!(len < need, "len {len}");
                assert_eq!(needed, need);
                // The set is kept: the retry with the size asked for gets it.
                let mut big = vec![0u8; needed];
                assert_eq!(p.lookup_next(h, LUP_RETURN_ALL, &mut big), Ok(need));
            }
            Ok(n) => assert!(len >= need && n == need, "len {len}"),
            Err(e) => panic!("len {len}: {e}"),
        }
        assert_eq!(p.lookup_next(h, LUP_RETURN_ALL, &mut buf), Err(WsaError::NoMore));
        p.lookup_end(h).unwrap();
    }
    // LUP_FLUSHPREVIOUS with a short buffer discards the set: there is no next one.
    let h = begin(&p, s, "teredo").unwrap();
    assert_eq!(
        p.lookup_next(h, LUP_RETURN_ALL | LUP_FLUSHPREVIOUS, &mut [0; 8]),
        Err(WsaError::NoMore)
    );
    assert_eq!(p.lookup_next(h, LUP_RETURN_ALL, &mut vec![0; need]), Err(WsaError::NoMore));
    // Flags at NextEx never add to what begin asked for.
    let h = p.lookup_begin(&PROVIDER_ID, &ask("teredo"), 0, Some(s)).unwrap();
    assert_eq!(p.lookup_next(h, LUP_RETURN_ALL, &mut vec![0; need]), Ok(112 + 16));
    p.rundown(&PROVIDER_ID, Some(s));
}

#[test]
fn begin_validates_the_question() {
    let (p, _) = provider("begin", Limits::default());
    let s = p.startup(&PROVIDER_ID).unwrap();
    let other = GUID::from_u128(1);
    assert_eq!(p.startup(&other), Err(WsaError::InvalidProvider));
    assert_eq!(p.lookup_begin(&other, &ask("teredo"), 0, Some(s)), Err(WsaError::InvalidProvider));
    let wrong_ns = Restrictions { namespace: NS_DNS, ..ask("teredo") };
    assert_eq!(p.lookup_begin(&PROVIDER_ID, &wrong_ns, 0, Some(s)), Err(WsaError::InvalidProvider));
    let all_ns = Restrictions { namespace: NS_ALL, provider: None, ..ask("teredo") };
    assert!(p.lookup_begin(&PROVIDER_ID, &all_ns, 0, Some(s)).is_ok());
    let foreign = Restrictions { provider: Some(other), ..ask("teredo") };
    assert_eq!(p.lookup_begin(&PROVIDER_ID, &foreign, 0, Some(s)), Err(WsaError::InvalidProvider));
    assert_eq!(begin(&p, s, "no such"), Err(WsaError::Invalid));
    assert_eq!(begin(&p, s, "unknown"), Err(WsaError::NotFound));
    let nameless = Restrictions { name: None, ..ask("x") };
    assert_eq!(p.lookup_begin(&PROVIDER_ID, &nameless, 0, Some(s)), Err(WsaError::NotSupported));
    assert_eq!(
        p.lookup_begin(&PROVIDER_ID, &ask("teredo"), LUP_RETURN_PREFERRED_NAMES, Some(s)),
        Err(WsaError::NotSupported)
    );
    assert_eq!(
        p.lookup_begin(&PROVIDER_ID, &ask("teredo"), 0, None),
        Err(WsaError::InvalidSession)
    );
    p.rundown(&PROVIDER_ID, Some(s));
    assert_eq!(begin(&p, s, "teredo"), Err(WsaError::InvalidSession), "run down");
}

fn reg(n: &str, r: Reservation) -> RegInfo {
    RegInfo { name: Some(n.into()), blob: Some(r.to_blob().to_vec()), first_address: None }
}

#[test]
fn set_service_registers_and_removes_names_that_then_resolve() {
    let (p, fake) = provider("setservice", Limits::default());
    let s = p.startup(&PROVIDER_ID).unwrap();
    let web = Reservation::new(Transport::Tcp, 50_000, 10).unwrap();
    p.set_service(&PROVIDER_ID, &reg("Web", web), RNRSERVICE_REGISTER, Some(s)).unwrap();
    assert_eq!(p.store().get(&name("web")).unwrap(), Some(web));
    // A single port through a CSADDR_INFO instead of the blob.
    let dns = RegInfo { name: Some("dns".into()), blob: None, first_address: Some((17, 5353)) };
    p.set_service(&PROVIDER_ID, &dns, RNRSERVICE_REGISTER, Some(s)).unwrap();
    assert_eq!(
        p.store().get(&name("dns")).unwrap(),
        Reservation::new(Transport::Udp, 5353, 1).ok()
    );

    let h = begin(&p, s, "WEB").unwrap();
    let set = next(&p, h).unwrap();
    assert_eq!(set.len(), encoded_len(&Answer::registered(name("web"), web), LUP_RETURN_ALL));
    p.lookup_end(h).unwrap();

    fake.reservation_exists.store(false, Ordering::SeqCst);
    let h = begin(&p, s, "web").unwrap();
    assert_eq!(next(&p, h), Err(WsaError::NoData), "the reservation was deleted");
    p.lookup_end(h).unwrap();

    let bad = [
        reg("teredo", web),
        RegInfo { name: None, ..reg("x", web) },
        RegInfo { blob: Some(vec![1, 2, 3]), ..reg("x", web) },
        RegInfo { name: Some("x".into()), blob: None, first_address: Some((47, 80)) },
        RegInfo { name: Some("x".into()), blob: None, first_address: None },
    ];
    for r in &bad {
        assert_eq!(
            p.set_service(&PROVIDER_ID, r, RNRSERVICE_REGISTER, Some(s)),
            Err(WsaError::Invalid),
            "{r:?}"
        );
    }
    assert_eq!(
        p.set_service(&PROVIDER_ID, &reg("web", web), 7, Some(s)),
        Err(WsaError::NotSupported)
    );
    assert_eq!(
        p.set_service(&PROVIDER_ID, &reg("web", web), RNRSERVICE_REGISTER, None),
        Err(WsaError::InvalidSession)
    );
    p.set_service(&PROVIDER_ID, &reg("web", web), RNRSERVICE_DEREGISTER, Some(s)).unwrap();
    assert_eq!(
        p.set_service(&PROVIDER_ID, &reg("web", web), RNRSERVICE_DELETE, Some(s)),
        Err(WsaError::NotFound)
    );
    assert_eq!(begin(&p, s, "web"), Err(WsaError::NotFound));
    p.rundown(&PROVIDER_ID, Some(s));
}

#[test]
fn a_corrupt_names_file_is_reported_kept_and_teredo_still_resolves() {
    let store = temp_store("corrupt");
    std::fs::create_dir_all(store.path().parent().unwrap()).unwrap();
    std::fs::write(store.path(), b"{oops").unwrap();
    let reports = Arc::new(Mutex::new(Vec::new()));
    let sink = reports.clone();
    let p = Provider::new(store.clone(), Fake::new(), Limits::default())
        .reporting(Box::new(move |m| sink.lock().unwrap().push(m.to_owned())));
    let s = p.startup(&PROVIDER_ID).unwrap();
    assert_eq!(begin(&p, s, "web"), Err(WsaError::Internal));
    let web = Reservation::new(Transport::Tcp, 50_000, 10).unwrap();
    assert_eq!(
        p.set_service(&PROVIDER_ID, &reg("web", web), RNRSERVICE_REGISTER, Some(s)),
        Err(WsaError::Internal)
    );
    assert_eq!(std::fs::read(store.path()).unwrap(), b"{oops", "preserved");
    assert!(reports.lock().unwrap().iter().all(|r| r.contains("is corrupt")));
    assert_eq!(reports.lock().unwrap().len(), 2);
    let h = begin(&p, s, "teredo").unwrap();
    assert!(next(&p, h).is_ok());
    p.rundown(&PROVIDER_ID, Some(s));
}

/// Starts a lookup's resolution on another thread and holds it at the gate.
fn resolve_held(
    p: &Arc<Provider>,
    fake: &Arc<Fake>,
    h: LookupHandle,
) -> (std::thread::JoinHandle<Result<usize, WsaError>>, Arc<Barrier>) {
    let gate = Arc::new(Barrier::new(2));
    *fake.gate.lock().unwrap() = Some(gate.clone());
    let p2 = p.clone();
    let t = std::thread::spawn(move || p2.lookup_next(h, LUP_RETURN_ALL, &mut vec![0u8; 4096]));
    gate.wait(); // the resolution is running now
    *fake.gate.lock().unwrap() = None;
    (t, gate)
}

#[test]
fn end_during_a_lookup_cancels_it() {
    let (p, fake) = provider("end-during", Limits::default());
    let p = Arc::new(p);
    let s = p.startup(&PROVIDER_ID).unwrap();
    let h = begin(&p, s, "teredo").unwrap();
    let (t, gate) = resolve_held(&p, &fake, h);
    p.lookup_end(h).unwrap();
    gate.wait();
    assert_eq!(t.join().unwrap(), Err(WsaError::Cancelled));
    assert_eq!(p.lookup_next(h, LUP_RETURN_ALL, &mut [0; 4096]), Err(WsaError::InvalidHandle));
    p.rundown(&PROVIDER_ID, Some(s));
    assert_eq!(p.stats(), Stats::default());
}

#[test]
fn rundown_during_a_lookup_frees_it_and_a_second_rundown_is_harmless() {
    let (p, fake) = provider("rundown-during", Limits::default());
    let p = Arc::new(p);
    let s = p.startup(&PROVIDER_ID).unwrap();
    let other = p.startup(&PROVIDER_ID).unwrap();
    let kept = begin(&p, other, "teredo").unwrap();
    let h = begin(&p, s, "teredo").unwrap();
    let _idle = begin(&p, s, "teredo").unwrap();
    let (t, gate) = resolve_held(&p, &fake, h);
    p.rundown(&PROVIDER_ID, Some(s));
    assert_eq!(p.stats().lookups, 1, "both of the session's lookups are freed at once");
    gate.wait();
    assert_eq!(t.join().unwrap(), Err(WsaError::Cancelled));
    p.rundown(&PROVIDER_ID, Some(s));
    p.rundown(&PROVIDER_ID, None);
    p.cleanup(&PROVIDER_ID, Some(s)).unwrap();
    assert!(next(&p, kept).is_ok(), "another session's lookup is untouched");
    assert_eq!(p.lookup_end(h), Err(WsaError::InvalidHandle));
    p.rundown(&PROVIDER_ID, Some(other));
    assert_eq!(p.stats(), Stats::default());
}

#[test]
fn limits_refuse_floods() {
    let (p, _) = provider("limits", Limits { sessions: 4, lookups_per_session: 8, lookups: 100 });
    let s: Vec<SessionId> = (0..4).map(|_| p.startup(&PROVIDER_ID).unwrap()).collect();
    assert_eq!(p.startup(&PROVIDER_ID), Err(WsaError::NoMemory));
    for _ in 0..8 {
        begin(&p, s[0], "teredo").unwrap();
    }
    assert_eq!(begin(&p, s[0], "teredo"), Err(WsaError::NoMemory));
    for id in s {
        p.rundown(&PROVIDER_ID, Some(id));
    }
    assert_eq!(p.stats(), Stats::default());
}

const THREADS: u64 = 8;
const SESSIONS: u64 = 250;

#[test]
fn thousands_of_concurrent_sessions_and_lookups_with_rundowns_leave_nothing() {
    let (p, _) = provider("concurrent", Limits::default());
    let web = Reservation::new(Transport::Tcp, 40_000, 4).unwrap();
    let admin = p.startup(&PROVIDER_ID).unwrap();
    p.set_service(&PROVIDER_ID, &reg("web", web), RNRSERVICE_REGISTER, Some(admin)).unwrap();
    let p = Arc::new(p);
    let outcomes = Arc::new(Mutex::new([0usize; 4]));
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let p = p.clone();
            let outcomes = outcomes.clone();
            scope.spawn(move || {
                let mut seen = [0usize; 4];
                for i in 0..SESSIONS {
                    let s = p.startup(&PROVIDER_ID).unwrap();
                    let lookups: Vec<LookupHandle> = (0..3)
                        .map(|k| {
                            begin(&p, s, if (i + k + t) % 2 == 0 { "teredo" } else { "web" })
                                .unwrap()
                        })
                        .collect();
                    for (k, h) in lookups.iter().enumerate() {
                        // Some sessions are run down in the middle; the rest end cleanly.
                        if (i + t) % 5 == 0 && k == 1 {
                            p.rundown(&PROVIDER_ID, Some(s));
                        }
                        match next(&p, *h) {
                            Ok(_) => seen[0] += 1,
                            Err(WsaError::InvalidHandle) => seen[1] += 1,
                            Err(WsaError::Cancelled) => seen[2] += 1,
                            Err(e) => panic!("unexpected {e}"),
                        }
                        let _ = p.lookup_end(*h);
                    }
                    p.rundown(&PROVIDER_ID, Some(s));
                    seen[3] += 1;
                }
                let mut o = outcomes.lock().unwrap();
                for (a, b) in o.iter_mut().zip(seen) {
                    *a += b;
                }
            });
        }
    });
    let o = *outcomes.lock().unwrap();
    assert_eq!(o[3] as u64, THREADS * SESSIONS, "every session ran");
    assert!(o[0] > 0 && o[1] > 0, "both delivered and run-down lookups happened: {o:?}");
    p.rundown(&PROVIDER_ID, Some(admin));
    assert_eq!(p.stats(), Stats::default(), "nothing is left after every session ran down");
}

#[test]
fn rundown_racing_the_sessions_own_calls_never_panics_or_leaks() {
    let (p, _) = provider("race", Limits::default());
    let p = Arc::new(p);
    for round in 0..200 {
        let s = p.startup(&PROVIDER_ID).unwrap();
        let handles: Vec<LookupHandle> = (0..4).map(|_| begin(&p, s, "teredo").unwrap()).collect();
        std::thread::scope(|scope| {
            for h in handles.clone() {
                let p = p.clone();
                scope.spawn(move || {
                    let _ = next(&p, h);
                    let _ = p.lookup_end(h);
                });
            }
            let p2 = p.clone();
            scope.spawn(move || {
                if round % 2 == 0 {
                    std::thread::yield_now();
                }
                p2.rundown(&PROVIDER_ID, Some(s));
                p2.rundown(&PROVIDER_ID, Some(s));
            });
        });
        assert_eq!(p.stats(), Stats::default(), "round {round}");
    }
}
