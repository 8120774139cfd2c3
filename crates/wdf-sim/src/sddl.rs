//! The SDDL subset `IoCreateDeviceSecure` accepts for a device object.
//!
//! "SDDL for Device Objects" (Microsoft's kernel-mode driver docs): INF files take the full
//! language, `IoCreateDeviceSecure` only this subset: `"D:P"` followed by one or more
//! `"(A;;Access;;;SID)"`, where Access is `0x` and a hexadecimal `ACCESS_MASK` or a sequence
//! of the two-letter codes `GA GR GW GX` (generic) and `RC SD WD WO` (specific), and SID one of
//! the page's well-known aliases. KMDF stores the string at `WdfControlDeviceInitAllocate`
//! (fxdeviceinit.cpp, `_AllocateControlDeviceInit`: only `FxValidateUnicodeString`) and hands
//! it to `IoCreateDeviceSecure` in `WdfDeviceCreate` (fxdevice.cpp, `FxDevice::CreateDevice`),
//! which is where a string outside the subset fails. What the page does not list is refused
//! (the stricter reading); which status `IoCreateDeviceSecure` returns for it the page does not
//! say: the double returns `STATUS_INVALID_PARAMETER` (docs/WINDOWS-VERIFICATION.md).

/// Access-right codes the page lists.
const ACCESS_CODES: [&str; 8] = ["GA", "GR", "GW", "GX", "RC", "SD", "WD", "WO"];

/// SID aliases the page lists: accounts, groups, how the user authenticated and logged on,
/// everyone and restricted code.
const SIDS: [&str; 13] =
    ["SY", "LS", "NS", "BA", "BU", "BG", "AU", "AN", "IU", "NU", "SU", "WD", "RC"];

/// Whether `sddl` is in the device-object subset.
#[must_use]
pub fn device_object_sddl_valid(sddl: &str) -> bool {
    let Some(mut rest) = sddl.strip_prefix("D:P") else { return false };
    let mut aces = 0;
    while !rest.is_empty() {
        let Some(body) = rest.strip_prefix('(') else { return false };
        let Some(end) = body.find(')') else { return false };
        if !ace_valid(&body[..end]) {
            return false;
        }
        rest = &body[end + 1..];
        aces += 1;
    }
    aces > 0
}

/// `A;;Access;;;SID`.
fn ace_valid(ace: &str) -> bool {
    let fields: Vec<&str> = ace.split(';').collect();
    let [kind, flags, access, object, inherit, sid] = fields.as_slice() else { return false };
    *kind == "A"
        && flags.is_empty()
        && object.is_empty()
        && inherit.is_empty()
        && access_valid(access)
        && SIDS.contains(sid)
}

fn access_valid(access: &str) -> bool {
    if let Some(hex) = access.strip_prefix("0x").or_else(|| access.strip_prefix("0X")) {
        return !hex.is_empty() && hex.len() <= 8 && hex.chars().all(|c| c.is_ascii_hexdigit());
    }
    !access.is_empty()
        && access.len().is_multiple_of(2)
        && access
            .as_bytes()
            .chunks(2)
            .all(|c| std::str::from_utf8(c).is_ok_and(|code| ACCESS_CODES.contains(&code)))
}

#[cfg(test)]
mod tests {
    use super::device_object_sddl_valid as ok;

    #[test]
    fn the_pages_examples_and_vsflows_string_are_valid() {
        assert!(ok("D:P(A;;GA;;;SY)(A;;GA;;;BA)"));
        assert!(ok("D:P(A;;GA;;;SY)(A;;GRGWGX;;;BA)(A;;GR;;;WD)"));
        assert!(ok("D:P(A;;0x1F01FF;;;SY)"));
    }

    #[test]
    fn strings_outside_the_subset_are_not() {
        for bad in [
            "",
            "not sddl",
            "D:P",
            "D:(A;;GA;;;SY)",
            "D:P(A;;GA;;;SY",
            "D:P(D;;GA;;;SY)",
            "D:P(A;CI;GA;;;SY)",
            "D:P(A;;GZ;;;SY)",
            "D:P(A;;G;;;SY)",
            "D:P(A;;GA;;;XX)",
            "D:P(A;;0x;;;SY)",
            "D:P(A;;GA;;;SY)x",
            "O:BAD:P(A;;GA;;;SY)",
        ] {
            assert!(!ok(bad), "{bad:?}");
        }
    }
}
