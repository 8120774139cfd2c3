//! What a client passes to `WSALookupServiceBeginW` to reach the provider (issue 19, item 6):
//! "lpServiceClassId ... is required" (`WSALookupServiceBegin`), so the query names netports'
//! service class as well as its provider, namespace and the service name.

use netports_nsp::client::{Lookup, SERVICE_CLASS_ID};
use netports_nsp::provider::{NAMESPACE, PROVIDER_ID, same_guid};
use windows_sys::Win32::Networking::WinSock::WSAQUERYSETW;

#[test]
fn the_lookup_names_the_service_class_the_provider_and_the_name() {
    let mut lookup = Lookup::new("web");
    let q = lookup.query_set();
    assert_eq!(q.dwSize as usize, size_of::<WSAQUERYSETW>());
    assert!(!q.lpServiceClassId.is_null(), "lpServiceClassId is required");
    // SAFETY: points into `lookup`, alive here.
    assert!(same_guid(unsafe { &*q.lpServiceClassId }, &SERVICE_CLASS_ID));
    assert!(!q.lpNSProviderId.is_null());
    // SAFETY: as above.
    assert!(same_guid(unsafe { &*q.lpNSProviderId }, &PROVIDER_ID));
    assert_eq!(q.dwNameSpace, NAMESPACE);
    let mut units = Vec::new();
    for i in 0..64 {
        // SAFETY: a NUL-terminated string inside `lookup`.
        let c = unsafe { q.lpszServiceInstanceName.wrapping_add(i).read() };
        if c == 0 {
            break;
        }
        units.push(c);
    }
    assert_eq!(String::from_utf16_lossy(&units), "web");
    assert!(q.lpVersion.is_null() && q.lpszComment.is_null() && q.lpafpProtocols.is_null());
    assert!(q.lpcsaBuffer.is_null() && q.lpBlob.is_null() && q.lpszContext.is_null());
    assert_eq!((q.dwNumberOfProtocols, q.dwNumberOfCsAddrs), (0, 0));
}

#[test]
fn the_query_set_stays_valid_when_the_lookup_moves() {
    let lookup = Lookup::new("teredo");
    let mut moved = Box::new(lookup);
    let q = moved.query_set();
    // SAFETY: points into `moved`, alive here.
    assert!(same_guid(unsafe { &*q.lpServiceClassId }, &SERVICE_CLASS_ID));
    // SAFETY: as above; the first unit of "teredo".
    assert_eq!(unsafe { q.lpszServiceInstanceName.read() }, u16::from(b't'));
}
