//! The one line a user reads for an error (issue 19, item 11): WFP's `FWP_E_*` codes in hex
//! with their names and meaning, never a decimal number.

use netports::Error;

#[test]
fn wfp_errors_are_shown_in_hex_with_their_names() {
    assert_eq!(
        Error::from_win32(0x8032_0009, "FwpmFilterAdd0").to_string(),
        "FwpmFilterAdd0 failed with 0x80320009 (FWP_E_ALREADY_EXISTS: an object with that GUID or LUID already exists)"
    );
    assert_eq!(
        Error::from_win32(0x8032_0016, "FwpmSubLayerAdd0").to_string(),
        "FwpmSubLayerAdd0 failed with 0x80320016 (FWP_E_LIFETIME_MISMATCH: the call tried to associate two objects with incompatible lifetimes)"
    );
    // Other HRESULTs in hex too; Win32 codes stay decimal.
    assert_eq!(
        Error::from_win32(0x8001_0108, "FwpmEngineOpen0").to_string(),
        "FwpmEngineOpen0 failed with 0x80010108"
    );
    assert_eq!(Error::from_win32(1234, "f").to_string(), "f failed with Windows error 1234");
}
