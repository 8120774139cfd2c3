//! Mirror of wdk 0.5: the items vsflow's driver uses.

#![no_std]

/// `NT_SUCCESS`.
#[must_use]
pub const fn nt_success(nt_status: wdk_sys::NTSTATUS) -> bool {
    nt_status >= 0
}
