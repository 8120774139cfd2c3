//! netports-nsp: a Winsock namespace provider (NSPv2) that resolves service names to ports.
//!
//! Applications ask Winsock (`WSALookupServiceBegin` / `Next` / `End` with this provider's
//! id, [`provider::PROVIDER_ID`], and netports' service class, [`client::SERVICE_CLASS_ID`]:
//! [`client`]) instead of hard-coding ports:
//! - `teredo` → the Teredo client's current UDP port;
//! - a registered name → its persistent reservation (protocol, first port, count).
//!
//! Answers are `CSADDR_INFO` entries in a self-contained `WSAQUERYSET2W`
//! ([`queryset`]); unknown names are `WSASERVICE_NOT_FOUND`. Names are registered with
//! `WSASetService` (`NSPv2SetServiceEx`) or the netports CLI and kept in a small file
//! ([`store`]).
//!
//! - [`sessions`]: client sessions and their lookups (who owns what, what is in flight);
//! - [`provider`]: the behaviour, in plain Rust;
//! - [`routine`]: the seven `extern "system"` entry points and the `NSPV2_ROUTINE` table;
//! - [`name`], [`reservation`], [`answer`], [`wsa`]: the data.
//!
//! Nothing here calls the OS but the names file's I/O and its [`guard`] (who may change the
//! file: ownership and mode on Unix, owner and DACL on Windows). The host (`netports nsp serve`) resolves
//! `WSAAdvertiseProvider`, `WSAProviderCompleteAsyncCall` and `WSASetLastError` at run time
//! and hands the last two to [`routine::host`]. So the whole provider, entry points
//! included, builds and is tested on Linux.

pub mod answer;
pub mod client;
pub mod guard;
pub mod name;
pub mod provider;
pub mod queryset;
pub mod reservation;
pub mod routine;
pub mod sessions;
pub mod store;
pub mod wsa;

pub use provider::{PROVIDER_ID, Provider, Sources};
