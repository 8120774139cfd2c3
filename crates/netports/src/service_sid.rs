//! Service SIDs (`NT SERVICE\<name>`), for conditions that must match one Windows service.
//!
//! A Windows service's SID is not allocated but derived from its name: `S-1-5-80-` followed by
//! the SHA-1 digest of the upper-cased name in UTF-16LE, read as five little-endian 32-bit
//! sub-authorities (the service need not exist for its SID to be meaningful). Microsoft
//! documents the account (`NT SERVICE\SvcName`, `SERVICE_SID_INFO` remarks, which convert it
//! with `LookupAccountName`) but not the derivation; the derivation is checked here against the
//! SID Windows publishes for `NT SERVICE\TrustedInstaller`, the owner of system files. Whether
//! `iphlpsvc`'s comes out as Windows prints it (`sc showsid iphlpsvc`) is listed as "verify on
//! Windows" (docs/WINDOWS-VERIFICATION.md, P2).
//!
//! Only ASCII names are accepted: Windows upper-cases with its own Unicode table, which this
//! code does not reproduce, and the services netports names are ASCII.

use std::fmt::Write as _;

/// The service that runs the Teredo client (the IP Helper service).
pub const TEREDO_SERVICE: &str = "iphlpsvc";

/// `FWP_ACTRL_MATCH_FILTER` (fwpmtypes.h: 0x00000001), the right the filter engine checks in a
/// security-descriptor condition; SDDL writes the access right 0x1 as `CC`.
const MATCH_FILTER_SDDL: &str = "CC";

/// The SID of `NT SERVICE\<name>` in string form (`S-1-5-80-...`), or `None` for a name that
/// is empty or not ASCII.
#[must_use]
pub fn service_sid(name: &str) -> Option<String> {
    if name.is_empty() || !name.is_ascii() {
        return None;
    }
    let utf16le: Vec<u8> =
        name.to_ascii_uppercase().encode_utf16().flat_map(u16::to_le_bytes).collect();
    let digest = sha1_smol::Sha1::from(utf16le).digest().bytes();
    let mut sid = String::from("S-1-5-80");
    for chunk in digest.chunks_exact(4) {
        let mut word = [0u8; 4];
        word.copy_from_slice(chunk);
        let _ = write!(sid, "-{}", u32::from_le_bytes(word));
    }
    Some(sid)
}

/// The SDDL of an `FWPM_CONDITION_ALE_USER_ID` descriptor matching service `name` alone.
///
/// A DACL granting `FWP_ACTRL_MATCH_FILTER` to its service SID and to nobody else
/// ("Permitting and Blocking Applications and Users": the condition is true when the DACL
/// grants that right to the socket owner's token).
#[must_use]
pub fn service_only_sddl(name: &str) -> Option<String> {
    service_sid(name).map(|sid| format!("D:(A;;{MATCH_FILTER_SDDL};;;{sid})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_derivation_gives_the_sid_windows_publishes_for_trusted_installer() {
        assert_eq!(
            service_sid("TrustedInstaller").as_deref(),
            Some("S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464")
        );
    }

    #[test]
    fn the_name_is_upper_cased_first() {
        assert_eq!(service_sid("iphlpsvc"), service_sid("IPHLPSVC"));
        assert_eq!(service_sid("iphlpsvc"), service_sid("IpHlpSvc"));
    }

    #[test]
    fn the_teredo_service_only_descriptor_grants_match_filter_to_iphlpsvc_alone() {
        assert_eq!(
            service_only_sddl(TEREDO_SERVICE).as_deref(),
            Some("D:(A;;CC;;;S-1-5-80-62724632-2456781206-3863850748-1496050881-1042387526)")
        );
    }

    #[test]
    fn empty_and_non_ascii_names_have_no_sid() {
        assert_eq!(service_sid(""), None);
        assert_eq!(service_sid("dienstß"), None);
    }
}
