//! WDF structure initialization, as the `WDF_*_INIT` functions of the KMDF headers do it.

use wdk_sys::{
    _WDF_EXECUTION_LEVEL, _WDF_SYNCHRONIZATION_SCOPE, ULONG, WDF_OBJECT_ATTRIBUTES, WDFOBJECT,
};

/// `sizeof(T)` as the `ULONG` the WDF `Size` fields hold.
///
/// # Panics
/// At compile time (const evaluation) for a type larger than 4 GiB.
#[allow(
    clippy::cast_possible_truncation,
    reason = "WDF structure sizes fit a ULONG (const-asserted)"
)]
#[must_use]
pub const fn size_of_u32<T>() -> ULONG {
    let s = core::mem::size_of::<T>();
    assert!(s <= u32::MAX as usize);
    s as ULONG
}

/// `WDF_OBJECT_ATTRIBUTES_INIT` (wdfobject.h).
///
/// Zeroed, `Size` set, `ExecutionLevel` and `SynchronizationScope` `InheritFromParent`. Zero is `Invalid` for both, and KMDF rejects
/// it with `STATUS_WDF_OBJECT_ATTRIBUTES_INVALID`: every attributes value the driver passes
/// starts here, never at `Default::default()`.
#[must_use]
pub fn object_attributes() -> WDF_OBJECT_ATTRIBUTES {
    WDF_OBJECT_ATTRIBUTES {
        Size: size_of_u32::<WDF_OBJECT_ATTRIBUTES>(),
        ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelInheritFromParent,
        SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInheritFromParent,
        ..WDF_OBJECT_ATTRIBUTES::default()
    }
}

/// [`object_attributes`] with a parent (`WDF_OBJECT_ATTRIBUTES_INIT` + `ParentObject`).
#[must_use]
pub fn parented(parent: WDFOBJECT) -> WDF_OBJECT_ATTRIBUTES {
    WDF_OBJECT_ATTRIBUTES { ParentObject: parent, ..object_attributes() }
}
