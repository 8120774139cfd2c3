//! Everything netports-nsp reads from outside: a names file (an operator may edit it), a
//! registration blob and a service name (a client sends them). None may panic; what parses
//! must round-trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netports_nsp::name::ServiceName;
use netports_nsp::reservation::Reservation;
use netports_nsp::store::parse;

fuzz_target!(|data: &[u8]| {
    if let Ok(names) = parse(data) {
        for (name, r) in &names {
            assert!(!name.is_teredo());
            assert_eq!(Reservation::from_blob(&r.to_blob()), Ok(*r));
        }
    }
    if let Ok(r) = Reservation::from_blob(data) {
        assert_eq!(r.to_blob().as_slice(), data);
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(n) = ServiceName::parse(&text) {
        assert_eq!(ServiceName::parse(n.as_str()).as_ref(), Ok(&n));
    }
});
