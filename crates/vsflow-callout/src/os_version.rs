//! Which optional callout flags the running Windows knows, from its build number.
//!
//! `FWP_CALLOUT_FLAG_ALLOW_USO` and `FWP_CALLOUT_FLAG_ALLOW_URO` (fwptypes.h) were added by
//! Windows 10 1903 (build 18362) and 2004 (build 19041); an older filter engine does not know
//! them. The driver asks `RtlGetVersion` for the build ([`crate::KernelServices::os_build`]) and
//! registers its callouts with [`callout_flags`]. vsflow supports Windows 11 and Windows Server
//! 2022 or later (docs/INSTALL.md), where both are always set; the check keeps an install on an
//! older build from registering flags its engine does not define.

use fwps_sys as sys;

/// First build with `FWP_CALLOUT_FLAG_ALLOW_USO` (Windows 10 1903).
pub const USO_MIN_BUILD: u32 = 18_362;
/// First build with `FWP_CALLOUT_FLAG_ALLOW_URO` (Windows 10 2004).
pub const URO_MIN_BUILD: u32 = 19_041;

/// The `FWPS_CALLOUT3::flags` for vsflow's header-only callouts on OS build `build`.
///
/// `None` (unknown) gives only the flag every supported build has. Allowing segment coalescing and
/// offload is safe for a callout that only reads headers (verify on Windows, item 12).
#[must_use]
pub const fn callout_flags(build: Option<u32>) -> u32 {
    let mut flags = sys::FWP_CALLOUT_FLAG_ALLOW_RSC;
    if let Some(build) = build {
        if build >= USO_MIN_BUILD {
            flags |= sys::FWP_CALLOUT_FLAG_ALLOW_USO;
        }
        if build >= URO_MIN_BUILD {
            flags |= sys::FWP_CALLOUT_FLAG_ALLOW_URO;
        }
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uso_and_uro_only_from_the_builds_that_define_them() {
        let rsc = sys::FWP_CALLOUT_FLAG_ALLOW_RSC;
        assert_eq!(callout_flags(None), rsc);
        assert_eq!(callout_flags(Some(17_763)), rsc);
        assert_eq!(callout_flags(Some(18_362)), rsc | sys::FWP_CALLOUT_FLAG_ALLOW_USO);
        let all = rsc | sys::FWP_CALLOUT_FLAG_ALLOW_USO | sys::FWP_CALLOUT_FLAG_ALLOW_URO;
        assert_eq!(callout_flags(Some(19_041)), all);
        assert_eq!(callout_flags(Some(26_100)), all);
    }
}
