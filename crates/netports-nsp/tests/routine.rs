//! The seven entry points driven the way Winsock drives them: through the `NSPV2_ROUTINE`
//! table, with raw `WSAQUERYSET2W` structures, async-call handles and out-pointers. Every
//! async call must be completed exactly once, `INT` failures must set the last error, and
//! panics must stop at the boundary.

#![allow(
    clippy::significant_drop_tightening,
    reason = "the fixture holds the serializing lock for the whole test on purpose"
)]
#![allow(
    clippy::borrow_as_ptr,
    clippy::semicolon_if_nothing_returned,
    reason = "calls through the table read like the C calls Winsock makes"
)]

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, MutexGuard};

use netports_nsp::provider::{NAMESPACE, PROVIDER_ID, SourceError, Sources};
use netports_nsp::reservation::{Reservation, Transport};
use netports_nsp::routine::{self, Hosting};
use netports_nsp::sessions::{Limits, Stats};
use netports_nsp::store::Store;
use netports_nsp::wsa::{
    SOCKET_ERROR, WSA_E_NO_MORE, WSA_INVALID_HANDLE, WSAEFAULT, WSAEINVAL, WSAEOPNOTSUPP,
    WSANO_RECOVERY, WSASERVICE_NOT_FOUND,
};
use netports_nsp::{Provider, provider::same_guid};
use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::Networking::WinSock::{
    CSADDR_INFO, LUP_RETURN_ALL, NSPV2_ROUTINE, RNRSERVICE_REGISTER, SOCKADDR, SOCKADDR_IN,
    SOCKET_ADDRESS, WSAQUERYSET2W,
};
use windows_sys::Win32::System::Com::BLOB;
use windows_sys::core::GUID;

/// The entry points are process-wide: one test hosts at a time.
static SERIAL: Mutex<()> = Mutex::new(());
/// Every completion: (async handle, code).
static COMPLETIONS: Mutex<Vec<(usize, i32)>> = Mutex::new(Vec::new());

thread_local! {
    static LAST_ERROR: Cell<i32> = const { Cell::new(0) };
}

unsafe extern "system" fn record_completion(call: HANDLE, code: i32) -> i32 {
    COMPLETIONS.lock().unwrap().push((call.addr(), code));
    0
}

unsafe extern "system" fn record_last_error(code: i32) {
    LAST_ERROR.with(|e| e.set(code));
}

struct Host(Option<u16>, bool);

impl Sources for Host {
    fn teredo_port(&self) -> Result<Option<u16>, SourceError> {
        assert!(!self.1, "a source that panics");
        Ok(self.0)
    }
    fn reservation_exists(&self, _: &Reservation) -> Result<bool, SourceError> {
        Ok(true)
    }
}

struct Fixture {
    _serial: MutexGuard<'static, ()>,
    provider: Arc<Provider>,
    hosting: Option<Hosting>,
    table: NSPV2_ROUTINE,
    next_call: usize,
}

impl Fixture {
    fn new(tag: &str, panicking: bool) -> Self {
        let serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        COMPLETIONS.lock().unwrap().clear();
        let dir =
            std::env::temp_dir().join(format!("netports-nsp-routine-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let provider = Arc::new(Provider::new(
            Store::new(dir.join("names.json")),
            Arc::new(Host(Some(51_234), panicking)),
            Limits::default(),
        ));
        let hosting =
            routine::host(provider.clone(), record_completion, record_last_error).unwrap();
        Self {
            _serial: serial,
            provider,
            hosting: Some(hosting),
            table: routine::routine(),
            next_call: 0x1000,
        }
    }

    fn call(&mut self) -> HANDLE {
        self.next_call += 8;
        std::ptr::without_provenance_mut(self.next_call)
    }

    fn startup(&self) -> *mut c_void {
        let mut session: *mut c_void = std::ptr::null_mut();
        // SAFETY: the table's entry with a valid id and out-pointer, as Winsock calls it.
        let rc = unsafe { self.table.NSPv2Startup.unwrap()(&PROVIDER_ID, &raw mut session) };
        assert_eq!(rc, 0);
        assert!(!session.is_null());
        session
    }

    fn begin(&self, qs: &WSAQUERYSET2W, session: *mut c_void) -> Result<HANDLE, i32> {
        let mut h: HANDLE = std::ptr::null_mut();
        // SAFETY: valid pointers, as Winsock passes them.
        let rc = unsafe {
            self.table.NSPv2LookupServiceBegin.unwrap()(
                &PROVIDER_ID,
                qs,
                LUP_RETURN_ALL,
                session,
                &raw mut h,
            )
        };
        if rc == 0 { Ok(h) } else { Err(last_error(rc)) }
    }

    /// One `NextEx` call; returns the completion code and the length as left by the call.
    fn next(&mut self, h: HANDLE, buf: &mut [u64]) -> (i32, u32) {
        let call = self.call();
        let mut len = u32::try_from(buf.len() * 8).unwrap();
        // SAFETY: a writable 8-aligned buffer of `len` bytes and a valid length pointer.
        unsafe {
            self.table.NSPv2LookupServiceNextEx.unwrap()(
                call,
                h,
                LUP_RETURN_ALL,
                &raw mut len,
                buf.as_mut_ptr().cast(),
            )
        };
        (completion_of(call), len)
    }

    /// One `SetServiceEx` call; returns its completion code.
    fn set_service(&mut self, reg: &WSAQUERYSET2W, op: i32, session: *mut c_void) -> i32 {
        let call = self.call();
        // SAFETY: a valid query set, as a client's WSASetService would send.
        unsafe { self.table.NSPv2SetServiceEx.unwrap()(call, &PROVIDER_ID, reg, op, 0, session) };
        completion_of(call)
    }

    fn end(&self, h: HANDLE) -> Result<(), i32> {
        // SAFETY: as Winsock calls it.
        let rc = unsafe { self.table.NSPv2LookupServiceEnd.unwrap()(h) };
        if rc == 0 { Ok(()) } else { Err(last_error(rc)) }
    }

    fn rundown(&self, session: *mut c_void) {
        // SAFETY: as Winsock calls it.
        unsafe { self.table.NSPv2ClientSessionRundown.unwrap()(&PROVIDER_ID, session) };
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        drop(self.hosting.take());
    }
}

fn last_error(rc: i32) -> i32 {
    assert_eq!(rc, SOCKET_ERROR, "an INT entry fails with SOCKET_ERROR");
    LAST_ERROR.with(Cell::get)
}

/// The code `call` was completed with, checking it was completed exactly once.
fn completion_of(call: HANDLE) -> i32 {
    let all = COMPLETIONS.lock().unwrap().clone();
    let mine: Vec<i32> = all.iter().filter(|(h, _)| *h == call.addr()).map(|(_, c)| *c).collect();
    assert_eq!(mine.len(), 1, "async call {call:?} completed {} times", mine.len());
    mine[0]
}

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

fn query(name: &[u16], provider: &GUID) -> WSAQUERYSET2W {
    WSAQUERYSET2W {
        dwSize: u32::try_from(size_of::<WSAQUERYSET2W>()).unwrap(),
        lpszServiceInstanceName: name.as_ptr().cast_mut(),
        dwNameSpace: NAMESPACE,
        lpNSProviderId: std::ptr::from_ref(provider).cast_mut(),
        ..WSAQUERYSET2W::default()
    }
}

#[test]
fn the_table_names_all_seven_entries_version_1_0() {
    let t = routine::routine();
    assert_eq!((t.cbSize, t.dwMajorVersion, t.dwMinorVersion), (72, 1, 0));
    assert!(
        t.NSPv2Startup.is_some() && t.NSPv2Cleanup.is_some() && t.NSPv2LookupServiceBegin.is_some()
    );
    assert!(t.NSPv2LookupServiceNextEx.is_some() && t.NSPv2LookupServiceEnd.is_some());
    assert!(t.NSPv2SetServiceEx.is_some() && t.NSPv2ClientSessionRundown.is_some());
    assert_eq!(std::mem::offset_of!(NSPV2_ROUTINE, NSPv2Startup), 16);
}

#[test]
fn a_lookup_through_the_entry_points_follows_the_two_call_protocol() {
    let mut f = Fixture::new("lookup", false);
    let session = f.startup();
    let name = wide("teredo");
    let qs = query(&name, &PROVIDER_ID);
    let h = f.begin(&qs, session).unwrap();
    // First call: no room. WSAEFAULT, and the needed size in *lpdwBufferLength.
    let (code, needed) = f.next(h, &mut []);
    assert_eq!(code, WSAEFAULT);
    assert!(needed as usize >= size_of::<WSAQUERYSET2W>());
    let mut buf = vec![0u64; (needed as usize).div_ceil(8)];
    let (code, _) = f.next(h, &mut buf);
    assert_eq!(code, 0);
    // SAFETY: the provider wrote a WSAQUERYSET2W at the start of the aligned buffer.
    let result: &WSAQUERYSET2W = unsafe { &*buf.as_ptr().cast() };
    assert_eq!(result.dwNumberOfCsAddrs, 2);
    // SAFETY: the first CSADDR_INFO, inside the buffer (proved by tests/queryset.rs).
    let cs: CSADDR_INFO = unsafe { result.lpcsaBuffer.read() };
    // SAFETY: the IPv4 local address, inside the buffer.
    let port = unsafe { cs.LocalAddr.lpSockaddr.cast::<[u8; 4]>().read() };
    assert_eq!(u16::from_be_bytes([port[2], port[3]]), 51_234);
    assert_eq!(f.next(h, &mut buf).0, WSA_E_NO_MORE);
    f.end(h).unwrap();
    assert_eq!(f.end(h), Err(WSA_INVALID_HANDLE), "stale handle");
    assert_eq!(f.next(h, &mut buf).0, WSA_INVALID_HANDLE);
    f.rundown(session);
    f.rundown(session);
    // SAFETY: as Winsock calls it.
    assert_eq!(unsafe { f.table.NSPv2Cleanup.unwrap()(&PROVIDER_ID, session) }, 0);
    assert_eq!(f.provider.stats(), Stats::default());
}

#[test]
fn malformed_int_calls_fail_with_socket_error_and_the_last_error() {
    let f = Fixture::new("malformed-int", false);
    let session = f.startup();
    let mut h: HANDLE = std::ptr::null_mut();
    let name = wide("teredo");
    let qs = query(&name, &PROVIDER_ID);
    let startup = f.table.NSPv2Startup.unwrap();
    let begin = f.table.NSPv2LookupServiceBegin.unwrap();
    // SAFETY: a null out-pointer; the entry point checks it.
    let rc = unsafe { startup(&PROVIDER_ID, std::ptr::null_mut()) };
    assert_eq!(last_error(rc), WSAEINVAL);
    // SAFETY: a null provider id; the entry point checks it.
    let rc = unsafe { startup(std::ptr::null(), &raw mut h) };
    assert_eq!(last_error(rc), WSAEINVAL);
    // SAFETY: null restrictions; the entry point checks them.
    let rc = unsafe { begin(&PROVIDER_ID, std::ptr::null(), 0, session, &raw mut h) };
    assert_eq!(last_error(rc), WSAEINVAL);
    // SAFETY: a null handle out-pointer; the entry point checks it.
    let rc = unsafe { begin(&PROVIDER_ID, &raw const qs, 0, session, std::ptr::null_mut()) };
    assert_eq!(last_error(rc), WSAEINVAL);
    let short = WSAQUERYSET2W { dwSize: 8, ..qs };
    assert_eq!(f.begin(&short, session), Err(WSAEINVAL), "dwSize too small");
    let mut long_name: Vec<u16> = vec![u16::from(b'a'); 300];
    long_name.push(0);
    assert_eq!(
        f.begin(&query(&long_name, &PROVIDER_ID), session),
        Err(WSAEINVAL),
        "over 256 units"
    );
    let unpaired = [0xD800u16, 0];
    assert_eq!(f.begin(&query(&unpaired, &PROVIDER_ID), session), Err(WSAEINVAL), "bad UTF-16");
    assert_eq!(f.begin(&query(&wide("nobody"), &PROVIDER_ID), session), Err(WSASERVICE_NOT_FOUND));
    f.rundown(session);
    assert!(COMPLETIONS.lock().unwrap().is_empty(), "INT entries complete nothing");
}

#[test]
fn malformed_async_calls_complete_exactly_once_with_the_error() {
    let mut f = Fixture::new("malformed-async", false);
    let session = f.startup();
    let name = wide("teredo");
    let qs = query(&name, &PROVIDER_ID);
    let h = f.begin(&qs, session).unwrap();
    let next = f.table.NSPv2LookupServiceNextEx.unwrap();
    let set = f.table.NSPv2SetServiceEx.unwrap();
    let call = f.call();
    // SAFETY: a null length pointer; the entry point checks it.
    unsafe { next(call, h, 0, std::ptr::null(), std::ptr::null_mut()) };
    assert_eq!(completion_of(call), WSAEINVAL);
    let call = f.call();
    let mut len = 0u32;
    // SAFETY: a handle Winsock never handed out.
    unsafe { next(call, std::ptr::null_mut(), 0, &raw mut len, std::ptr::null_mut()) };
    assert_eq!(completion_of(call), WSA_INVALID_HANDLE);
    let call = f.call();
    // SAFETY: a valid query set naming `teredo`.
    unsafe { set(call, &PROVIDER_ID, &raw const qs, 9, 0, session) };
    assert_eq!(
        completion_of(call),
        WSAEINVAL,
        "'teredo' cannot be registered, whatever the operation"
    );
    let other = wide("other");
    let other_qs = query(&other, &PROVIDER_ID);
    let call = f.call();
    // SAFETY: a valid query set and an operation the provider does not offer.
    unsafe { set(call, &PROVIDER_ID, &raw const other_qs, 9, 0, session) };
    assert_eq!(completion_of(call), WSAEOPNOTSUPP);
    f.end(h).unwrap();
    f.rundown(session);
    let all = COMPLETIONS.lock().unwrap().clone();
    let mut per_call: HashMap<usize, usize> = HashMap::new();
    for (c, _) in all {
        *per_call.entry(c).or_default() += 1;
    }
    assert!(per_call.values().all(|n| *n == 1), "{per_call:?}");
    assert_eq!(per_call.len(), 4);
}

#[test]
fn a_panic_stops_at_the_boundary_and_still_completes_the_call() {
    let mut f = Fixture::new("panic", true);
    let session = f.startup();
    let name = wide("teredo");
    let h = f.begin(&query(&name, &PROVIDER_ID), session).unwrap();
    let mut buf = vec![0u64; 64];
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let (code, _) = f.next(h, &mut buf);
    std::panic::set_hook(prev);
    assert_eq!(code, WSANO_RECOVERY);
    f.end(h).unwrap();
    f.rundown(session);
    assert_eq!(f.provider.stats(), Stats::default());
}

#[test]
fn set_service_through_the_entry_point_registers_a_name_that_then_resolves() {
    let mut f = Fixture::new("register", false);
    let session = f.startup();
    let name = wide("Web");
    let r = Reservation::new(Transport::Tcp, 50_000, 10).unwrap();
    let mut blob_bytes = r.to_blob();
    let mut blob = BLOB { cbSize: 8, pBlobData: blob_bytes.as_mut_ptr() };
    let reg = WSAQUERYSET2W { lpBlob: &raw mut blob, ..query(&name, &PROVIDER_ID) };
    assert_eq!(f.set_service(&reg, RNRSERVICE_REGISTER, session), 0);
    // A single port given as a CSADDR_INFO.
    let mut sa = SOCKADDR_IN { sin_family: 2, sin_port: 5353u16.to_be(), ..SOCKADDR_IN::default() };
    let mut cs = CSADDR_INFO {
        LocalAddr: SOCKET_ADDRESS {
            lpSockaddr: (&raw mut sa).cast::<SOCKADDR>(),
            iSockaddrLength: 16,
        },
        iSocketType: 2,
        iProtocol: 17,
        ..CSADDR_INFO::default()
    };
    let dns = wide("dns");
    let reg = WSAQUERYSET2W {
        dwNumberOfCsAddrs: 1,
        lpcsaBuffer: &raw mut cs,
        ..query(&dns, &PROVIDER_ID)
    };
    assert_eq!(f.set_service(&reg, RNRSERVICE_REGISTER, session), 0);
    assert_eq!(
        f.provider.store().get(&netports_nsp::name::ServiceName::parse("dns").unwrap()).unwrap(),
        Reservation::new(Transport::Udp, 5353, 1).ok()
    );
    let lookup_name = wide("web");
    let h = f.begin(&query(&lookup_name, &PROVIDER_ID), session).unwrap();
    let mut buf = vec![0u64; 128];
    assert_eq!(f.next(h, &mut buf).0, 0);
    // SAFETY: the result set at the start of the aligned buffer.
    let result: &WSAQUERYSET2W = unsafe { &*buf.as_ptr().cast() };
    // SAFETY: the provider id, inside the buffer.
    let id = unsafe { result.lpNSProviderId.read() };
    assert!(same_guid(&id, &PROVIDER_ID));
    // SAFETY: the blob, inside the buffer.
    let b = unsafe { result.lpBlob.read() };
    // SAFETY: its 8 bytes, inside the buffer.
    let data = unsafe { std::slice::from_raw_parts(b.pBlobData, b.cbSize as usize) };
    assert_eq!(Reservation::from_blob(data), Ok(r));
    f.end(h).unwrap();
    f.rundown(session);
}

#[test]
fn without_a_hosted_provider_the_entry_points_refuse_and_still_complete_async_calls() {
    let mut f = Fixture::new("unhosted", false);
    drop(f.hosting.take());
    let t = routine::routine();
    let mut session: *mut c_void = std::ptr::null_mut();
    LAST_ERROR.with(|e| e.set(0));
    // SAFETY: valid arguments; nothing is hosted.
    let rc = unsafe { t.NSPv2Startup.unwrap()(&PROVIDER_ID, &raw mut session) };
    assert_eq!(
        last_error(rc),
        WSANO_RECOVERY,
        "an INT entry sets the last error like every other failure"
    );
    let call = f.call();
    let mut len = 0u32;
    // SAFETY: as above.
    unsafe {
        t.NSPv2LookupServiceNextEx.unwrap()(
            call,
            std::ptr::null_mut(),
            0,
            &raw mut len,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(
        completion_of(call),
        WSANO_RECOVERY,
        "the no-provider path completes the async call like every other path"
    );
    let reg = query(&wide("web"), &PROVIDER_ID);
    let call = f.call();
    // SAFETY: as above.
    unsafe {
        t.NSPv2SetServiceEx.unwrap()(call, &PROVIDER_ID, &reg, RNRSERVICE_REGISTER, 0, session)
    };
    assert_eq!(completion_of(call), WSANO_RECOVERY);
    let again = routine::host(f.provider.clone(), record_completion, record_last_error).unwrap();
    assert_eq!(
        routine::host(f.provider.clone(), record_completion, record_last_error).unwrap_err(),
        routine::AlreadyHosted,
        "one provider per process"
    );
    drop(again);
}
