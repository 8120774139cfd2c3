//! The NTSTATUS values the double returns, from the headers that define them.

/// An NTSTATUS.
pub type Status = i32;

#[allow(clippy::cast_possible_wrap, reason = "NTSTATUS values are u32 bit patterns")]
const fn s(v: u32) -> Status {
    v as Status
}

/// `STATUS_SUCCESS` (ntstatus.h).
pub const SUCCESS: Status = 0;
/// `STATUS_UNSUCCESSFUL` (ntstatus.h).
pub const UNSUCCESSFUL: Status = s(0xC000_0001);
/// `STATUS_INFO_LENGTH_MISMATCH` (ntstatus.h): a structure's `Size` is wrong.
pub const INFO_LENGTH_MISMATCH: Status = s(0xC000_0004);
/// `STATUS_INVALID_PARAMETER` (ntstatus.h).
pub const INVALID_PARAMETER: Status = s(0xC000_000D);
/// `STATUS_INVALID_HANDLE` (ntstatus.h).
pub const INVALID_HANDLE: Status = s(0xC000_0008);
/// `STATUS_NO_SUCH_DEVICE` (ntstatus.h).
pub const NO_SUCH_DEVICE: Status = s(0xC000_000E);
/// `STATUS_INVALID_DEVICE_REQUEST` (ntstatus.h).
pub const INVALID_DEVICE_REQUEST: Status = s(0xC000_0010);
/// `STATUS_BUFFER_TOO_SMALL` (ntstatus.h).
pub const BUFFER_TOO_SMALL: Status = s(0xC000_0023);
/// `STATUS_OBJECT_TYPE_MISMATCH` (ntstatus.h).
pub const OBJECT_TYPE_MISMATCH: Status = s(0xC000_0024);
/// `STATUS_OBJECT_NAME_INVALID` (ntstatus.h).
pub const OBJECT_NAME_INVALID: Status = s(0xC000_0033);
/// `STATUS_OBJECT_NAME_NOT_FOUND` (ntstatus.h).
pub const OBJECT_NAME_NOT_FOUND: Status = s(0xC000_0034);
/// `STATUS_OBJECT_NAME_COLLISION` (ntstatus.h).
pub const OBJECT_NAME_COLLISION: Status = s(0xC000_0035);
/// `STATUS_INVALID_SECURITY_DESCR` (ntstatus.h).
pub const INVALID_SECURITY_DESCR: Status = s(0xC000_0079);
/// `STATUS_INSUFFICIENT_RESOURCES` (ntstatus.h).
pub const INSUFFICIENT_RESOURCES: Status = s(0xC000_009A);
/// `STATUS_NOT_SUPPORTED` (ntstatus.h).
pub const NOT_SUPPORTED: Status = s(0xC000_00BB);
/// `STATUS_DRIVER_INTERNAL_ERROR` (ntstatus.h).
pub const DRIVER_INTERNAL_ERROR: Status = s(0xC000_0183);
/// `STATUS_INVALID_DEVICE_STATE` (ntstatus.h).
pub const INVALID_DEVICE_STATE: Status = s(0xC000_0184);
/// `STATUS_WDF_OBJECT_ATTRIBUTES_INVALID` (wdfstatus.h, KMDF 1.33).
pub const WDF_OBJECT_ATTRIBUTES_INVALID: Status = s(0xC020_0209);
/// `STATUS_WDF_PARENT_ASSIGNMENT_NOT_ALLOWED` (wdfstatus.h).
pub const WDF_PARENT_ASSIGNMENT_NOT_ALLOWED: Status = s(0xC020_020F);
/// `STATUS_WDF_SYNCHRONIZATION_SCOPE_INVALID` (wdfstatus.h).
pub const WDF_SYNCHRONIZATION_SCOPE_INVALID: Status = s(0xC020_0210);
/// `STATUS_WDF_EXECUTION_LEVEL_INVALID` (wdfstatus.h).
pub const WDF_EXECUTION_LEVEL_INVALID: Status = s(0xC020_0211);
/// `STATUS_WDF_PARENT_NOT_SPECIFIED` (wdfstatus.h).
pub const WDF_PARENT_NOT_SPECIFIED: Status = s(0xC020_0212);

/// `NT_SUCCESS`.
#[must_use]
pub const fn nt_success(status: Status) -> bool {
    status >= 0
}
