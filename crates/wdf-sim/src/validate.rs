//! `WDF_OBJECT_ATTRIBUTES` validation, as KMDF does it on every object-creating DDI.
//!
//! Derived from the open-source framework (microsoft/Windows-Driver-Frameworks,
//! `src/framework/shared/object/fxvalidatefunctions.cpp`, `FxValidateObjectAttributes`, and
//! `src/framework/shared/inc/private/common/fxvalidatefunctions.hpp`, the option flags and
//! `FxValidateObjectAttributesForParentHandle`), read, not copied. Each DDI passes its own
//! options; the callers in [`crate::framework`] cite the DDI source they follow.

use core::mem::size_of;

use wdk_sys::{
    _WDF_EXECUTION_LEVEL, _WDF_SYNCHRONIZATION_SCOPE, WDF_OBJECT_ATTRIBUTES,
    WDF_OBJECT_CONTEXT_TYPE_INFO,
};

use crate::status::{self, Status};

/// What a DDI allows in the attributes it is given (KMDF's `FX_VALIDATE_OPTION_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools, reason = "one flag per KMDF validation option")]
pub struct Options {
    /// `FX_VALIDATE_OPTION_PARENT_NOT_ALLOWED`: `ParentObject` must be null.
    pub parent_not_allowed: bool,
    /// `FX_VALIDATE_OPTION_EXECUTION_LEVEL_ALLOWED`: an explicit execution level is allowed.
    pub execution_level_allowed: bool,
    /// `FX_VALIDATE_OPTION_SYNCHRONIZATION_SCOPE_ALLOWED`: an explicit scope is allowed.
    pub synchronization_scope_allowed: bool,
    /// `FX_VALIDATE_OPTION_PARENT_REQUIRED`: attributes and a parent are required.
    pub parent_required: bool,
}

/// `sizeof(WDF_OBJECT_ATTRIBUTES)` as the framework compares it.
#[must_use]
pub const fn attributes_size() -> usize {
    size_of::<WDF_OBJECT_ATTRIBUTES>()
}

/// Validates `attributes` (null is `None`) for a DDI with `options`.
///
/// # Errors
/// The status KMDF returns: `STATUS_WDF_PARENT_NOT_SPECIFIED` (missing attributes or parent
/// where required), `STATUS_INFO_LENGTH_MISMATCH` (`Size`), `STATUS_WDF_OBJECT_ATTRIBUTES_INVALID`
/// (context type info, `ExecutionLevel` or `SynchronizationScope` out of range: 0 is `Invalid`,
/// what a zeroed structure holds), `STATUS_WDF_PARENT_ASSIGNMENT_NOT_ALLOWED`,
/// `STATUS_WDF_SYNCHRONIZATION_SCOPE_INVALID`, `STATUS_WDF_EXECUTION_LEVEL_INVALID`.
pub fn attributes(
    attributes: Option<&WDF_OBJECT_ATTRIBUTES>,
    options: Options,
) -> Result<(), Status> {
    let Some(a) = attributes else {
        return if options.parent_required {
            Err(status::WDF_PARENT_NOT_SPECIFIED)
        } else {
            Ok(())
        };
    };
    if a.Size as usize != attributes_size() {
        return Err(status::INFO_LENGTH_MISMATCH);
    }
    // SAFETY: a non-null `ContextTypeInfo` points at the driver's static type information
    // (the caller's contract, as in KMDF, which dereferences it too).
    if let Some(info) = unsafe { a.ContextTypeInfo.as_ref() } {
        if info.Size as usize != size_of::<WDF_OBJECT_CONTEXT_TYPE_INFO>() {
            return Err(status::INFO_LENGTH_MISMATCH);
        }
        if info.ContextSize > 0 && info.ContextName.is_null() {
            return Err(status::WDF_OBJECT_ATTRIBUTES_INVALID);
        }
    }
    if a.ContextSizeOverride > 0 {
        // SAFETY: as above.
        match unsafe { a.ContextTypeInfo.as_ref() } {
            None => return Err(status::WDF_OBJECT_ATTRIBUTES_INVALID),
            Some(info) if a.ContextSizeOverride < info.ContextSize => {
                return Err(status::WDF_OBJECT_ATTRIBUTES_INVALID);
            }
            Some(_) => {}
        }
    }
    if options.parent_not_allowed {
        if !a.ParentObject.is_null() {
            return Err(status::WDF_PARENT_ASSIGNMENT_NOT_ALLOWED);
        }
    } else if options.parent_required && a.ParentObject.is_null() {
        return Err(status::WDF_PARENT_NOT_SPECIFIED);
    }
    let level = a.ExecutionLevel;
    if level == _WDF_EXECUTION_LEVEL::WdfExecutionLevelInvalid
        || level > _WDF_EXECUTION_LEVEL::WdfExecutionLevelDispatch
    {
        return Err(status::WDF_OBJECT_ATTRIBUTES_INVALID);
    }
    let scope = a.SynchronizationScope;
    if scope == _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInvalid
        || scope > _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeNone
    {
        return Err(status::WDF_OBJECT_ATTRIBUTES_INVALID);
    }
    if !options.synchronization_scope_allowed
        && scope != _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInheritFromParent
        && scope != _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeNone
    {
        return Err(status::WDF_SYNCHRONIZATION_SCOPE_INVALID);
    }
    if !options.execution_level_allowed
        && level != _WDF_EXECUTION_LEVEL::WdfExecutionLevelInheritFromParent
    {
        return Err(status::WDF_EXECUTION_LEVEL_INVALID);
    }
    Ok(())
}

/// `WDF_OBJECT_ATTRIBUTES_INIT` as wdfobject.h defines it: zeroed, `Size` set, both
/// `ExecutionLevel` and `SynchronizationScope` `InheritFromParent` (for tests of the double).
#[must_use]
pub fn attributes_init() -> WDF_OBJECT_ATTRIBUTES {
    #[allow(clippy::cast_possible_truncation, reason = "the structure is 56 bytes")]
    let size = attributes_size() as u32;
    WDF_OBJECT_ATTRIBUTES {
        Size: size,
        ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelInheritFromParent,
        SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInheritFromParent,
        ..WDF_OBJECT_ATTRIBUTES::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORK_ITEM: Options = Options {
        parent_not_allowed: false,
        execution_level_allowed: false,
        synchronization_scope_allowed: false,
        parent_required: true,
    };

    #[test]
    fn zeroed_attributes_with_only_size_and_parent_are_invalid() {
        // The original driver bug: `..Default::default()` leaves both enums at 0 (Invalid).
        let a = WDF_OBJECT_ATTRIBUTES {
            Size: attributes_init().Size,
            ParentObject: 0x1000 as wdk_sys::WDFOBJECT,
            ..WDF_OBJECT_ATTRIBUTES::default()
        };
        assert_eq!(attributes(Some(&a), WORK_ITEM), Err(status::WDF_OBJECT_ATTRIBUTES_INVALID));
    }

    #[test]
    fn initialized_attributes_with_a_parent_pass_for_a_work_item() {
        let a = WDF_OBJECT_ATTRIBUTES {
            ParentObject: 0x1000 as wdk_sys::WDFOBJECT,
            ..attributes_init()
        };
        assert_eq!(attributes(Some(&a), WORK_ITEM), Ok(()));
    }

    #[test]
    fn wrong_size_is_a_length_mismatch() {
        let a = WDF_OBJECT_ATTRIBUTES { Size: 8, ..attributes_init() };
        assert_eq!(attributes(Some(&a), Options::default()), Err(status::INFO_LENGTH_MISMATCH));
    }

    #[test]
    fn parent_rules() {
        assert_eq!(attributes(None, WORK_ITEM), Err(status::WDF_PARENT_NOT_SPECIFIED));
        assert_eq!(attributes(None, Options::default()), Ok(()));
        assert_eq!(
            attributes(Some(&attributes_init()), WORK_ITEM),
            Err(status::WDF_PARENT_NOT_SPECIFIED)
        );
        let with_parent = WDF_OBJECT_ATTRIBUTES {
            ParentObject: 0x1000 as wdk_sys::WDFOBJECT,
            ..attributes_init()
        };
        let device = Options { parent_not_allowed: true, ..Options::default() };
        assert_eq!(
            attributes(Some(&with_parent), device),
            Err(status::WDF_PARENT_ASSIGNMENT_NOT_ALLOWED)
        );
    }

    #[test]
    fn levels_and_scopes_need_the_ddi_to_allow_them() {
        let passive = WDF_OBJECT_ATTRIBUTES {
            ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelPassive,
            ..attributes_init()
        };
        assert_eq!(
            attributes(Some(&passive), Options::default()),
            Err(status::WDF_EXECUTION_LEVEL_INVALID)
        );
        let queue = Options {
            execution_level_allowed: true,
            synchronization_scope_allowed: true,
            ..Options::default()
        };
        assert_eq!(attributes(Some(&passive), queue), Ok(()));
        let device_scope = WDF_OBJECT_ATTRIBUTES {
            SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeDevice,
            ..attributes_init()
        };
        assert_eq!(
            attributes(Some(&device_scope), Options::default()),
            Err(status::WDF_SYNCHRONIZATION_SCOPE_INVALID)
        );
        let none_scope = WDF_OBJECT_ATTRIBUTES {
            SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeNone,
            ..attributes_init()
        };
        assert_eq!(attributes(Some(&none_scope), Options::default()), Ok(()));
        let out_of_range = WDF_OBJECT_ATTRIBUTES { ExecutionLevel: 4, ..attributes_init() };
        assert_eq!(
            attributes(Some(&out_of_range), queue),
            Err(status::WDF_OBJECT_ATTRIBUTES_INVALID)
        );
    }

    #[test]
    fn context_size_override_needs_type_info() {
        let a = WDF_OBJECT_ATTRIBUTES { ContextSizeOverride: 16, ..attributes_init() };
        assert_eq!(
            attributes(Some(&a), Options::default()),
            Err(status::WDF_OBJECT_ATTRIBUTES_INVALID)
        );
    }
}
