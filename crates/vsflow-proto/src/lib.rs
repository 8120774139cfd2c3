//! vsflow-proto: the IOCTL protocol between the driver and user mode.
//!
//! One control device, `\\.\vsflow` (kernel name `\Device\vsflow`), `METHOD_BUFFERED` IOCTLs
//! ([`codes`]). Every request starts with an 8-byte [`wire::Header`] (magic `VSFP`, protocol
//! version, flags) followed by the request's fixed fields; every response starts with the same
//! header. All integers little-endian, no padding, no pointers. The driver validates a request
//! completely before acting on it ([`request::Request::decode`]); user mode builds requests with
//! [`request::Request::encode`] and reads answers with [`response`].
//!
//! Errors and their NTSTATUS (mapped by the driver): unknown IOCTL code ->
//! `STATUS_INVALID_DEVICE_REQUEST`; malformed request -> `STATUS_INVALID_PARAMETER`; output
//! buffer too small -> `STATUS_BUFFER_TOO_SMALL` with the needed size in `Information`.

#![no_std]
#![forbid(unsafe_code)]

pub mod codes;
pub mod error;
pub mod request;
pub mod response;
pub mod wire;

pub use codes::Ioctl;
pub use error::ProtoError;
pub use request::{PortRef, Request};
pub use wire::{Header, PROTOCOL_VERSION};
