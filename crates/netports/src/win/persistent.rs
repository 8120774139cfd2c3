//! Persistent port reservations through `iphlpapi`, resolved at run time.
//!
//! Ports are host order in the API and network order at the FFI boundary only (`StartPort` is
//! documented as network order; verify on Windows).

use super::dynload::{Dll, system_fn};
use crate::model::Reservations;
use crate::range::{PortBlock, Protocol};

system_fn!(fn create_tcp = Dll::Iphlpapi, c"CreatePersistentTcpPortReservation": fn(u16, u16, *mut u64) -> u32;);
system_fn!(fn create_udp = Dll::Iphlpapi, c"CreatePersistentUdpPortReservation": fn(u16, u16, *mut u64) -> u32;);
system_fn!(fn delete_tcp = Dll::Iphlpapi, c"DeletePersistentTcpPortReservation": fn(u16, u16) -> u32;);
system_fn!(fn delete_udp = Dll::Iphlpapi, c"DeletePersistentUdpPortReservation": fn(u16, u16) -> u32;);
system_fn!(fn lookup_tcp = Dll::Iphlpapi, c"LookupPersistentTcpPortReservation": fn(u16, u16, *mut u64) -> u32;);
system_fn!(fn lookup_udp = Dll::Iphlpapi, c"LookupPersistentUdpPortReservation": fn(u16, u16, *mut u64) -> u32;);

/// The Windows persistent-reservation API (the `Reservations` trait returns Win32 codes; a
/// missing export reports `ERROR_CALL_NOT_IMPLEMENTED`, mapped by the caller).
#[derive(Debug, Default)]
pub struct WindowsReservations;

/// What a missing export is reported as through the trait.
pub const MISSING_EXPORT: u32 = crate::error::win32::CALL_NOT_IMPLEMENTED;

impl Reservations for WindowsReservations {
    fn create(&mut self, proto: Protocol, block: PortBlock) -> Result<u64, u32> {
        let f = match proto {
            Protocol::Tcp => create_tcp(),
            Protocol::Udp => create_udp(),
        }
        .map_err(|_| MISSING_EXPORT)?;
        let mut token = 0u64;
        // SAFETY: the documented signature; valid out-pointer.
        let rc = unsafe { f(block.start.to_be(), block.count, &raw mut token) };
        if rc == 0 { Ok(token) } else { Err(rc) }
    }

    fn delete(&mut self, proto: Protocol, block: PortBlock) -> Result<(), u32> {
        let f = match proto {
            Protocol::Tcp => delete_tcp(),
            Protocol::Udp => delete_udp(),
        }
        .map_err(|_| MISSING_EXPORT)?;
        // SAFETY: the documented signature.
        let rc = unsafe { f(block.start.to_be(), block.count) };
        if rc == 0 { Ok(()) } else { Err(rc) }
    }

    fn lookup(&self, proto: Protocol, block: PortBlock) -> Result<u64, u32> {
        let f = match proto {
            Protocol::Tcp => lookup_tcp(),
            Protocol::Udp => lookup_udp(),
        }
        .map_err(|_| MISSING_EXPORT)?;
        let mut token = 0u64;
        // SAFETY: the documented signature; valid out-pointer.
        let rc = unsafe { f(block.start.to_be(), block.count, &raw mut token) };
        if rc == 0 { Ok(token) } else { Err(rc) }
    }
}
