//! What an application passes to Winsock to ask the provider for a name.
//!
//! `WSALookupServiceBeginW(restrictions, LUP_RETURN_ALL, &handle)`, then
//! `WSALookupServiceNextW` until `WSA_E_NO_MORE`, then `WSALookupServiceEnd`. The restrictions
//! ([`Lookup::query_set`]): `dwSize`, the service name, `dwNameSpace` = `NS_EMAIL`
//! ([`NAMESPACE`]), `lpNSProviderId` = [`PROVIDER_ID`], and `lpServiceClassId` =
//! [`SERVICE_CLASS_ID`]. `WSALookupServiceBegin` documents `lpServiceClassId` as required; it
//! does not reach an NSPv2 provider (`WSAQUERYSET2W` has no such member), so any GUID would
//! satisfy Winsock, but applications should pass netports' own, which names what they ask
//! for and leaves room for a later version to tell classes apart.
//!
//! ```text
//! netports service class: {4ddde04d-71c7-4fc8-bd04-943e7db21b27}
//! netports provider id:   {6f1c3b52-8d0e-4a8f-9c2b-5e7a1d40b3c9}
//! namespace:              NS_EMAIL (37)
//! ```

use windows_sys::Win32::Networking::WinSock::WSAQUERYSETW;
use windows_sys::core::GUID;

use crate::provider::{NAMESPACE, PROVIDER_ID};

/// netports' service class: `{4ddde04d-71c7-4fc8-bd04-943e7db21b27}`.
pub const SERVICE_CLASS_ID: GUID = GUID::from_u128(0x4ddd_e04d_71c7_4fc8_bd04_943e_7db2_1b27);

/// The restrictions of one lookup, and what they point to.
pub struct Lookup {
    name: Vec<u16>,
    /// The service class and the provider id, at stable addresses (boxed).
    ids: Box<[GUID; 2]>,
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookup")
            .field("name", &String::from_utf16_lossy(&self.name))
            .finish_non_exhaustive()
    }
}

impl Lookup {
    /// A lookup of the service `name`.
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self {
            name: name.encode_utf16().chain(std::iter::once(0)).collect(),
            ids: Box::new([SERVICE_CLASS_ID, PROVIDER_ID]),
        }
    }

    /// The `WSAQUERYSETW` for `WSALookupServiceBeginW`. Its pointers point into `self` (into
    /// heap allocations, so moving `self` keeps them valid); use it while `self` lives.
    #[must_use]
    pub fn query_set(&mut self) -> WSAQUERYSETW {
        WSAQUERYSETW {
            dwSize: u32::try_from(size_of::<WSAQUERYSETW>()).unwrap_or(0),
            lpszServiceInstanceName: self.name.as_mut_ptr(),
            lpServiceClassId: &raw mut self.ids[0],
            dwNameSpace: NAMESPACE,
            lpNSProviderId: &raw mut self.ids[1],
            ..WSAQUERYSETW::default()
        }
    }
}
