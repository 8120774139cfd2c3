//! The trust decision on a Windows security descriptor, read as SDDL.
//!
//! Windows gives a folder's or file's owner and DACL as a string
//! (`ConvertSecurityDescriptorToStringSecurityDescriptorW`); deciding on that string keeps the
//! decision in plain Rust, tested on every system. Format ("Security Descriptor String
//! Format", "ACE Strings"): `O:owner D:flags(ace)(ace)...`, each ACE
//! `type;flags;rights;object_guid;inherit_object_guid;sid[;condition]`, rights as two-letter
//! codes or a hex mask, SIDs as two-letter aliases or `S-1-...`. A condition may hold string
//! literals in double quotes ([MS-DTYP] 2.5.1.1), which may contain parentheses, `;` or `:`:
//! the reader skips them, so a quoted `(` never makes one ACE swallow the next, and a string
//! left open makes the descriptor unreadable (refused).
//!
//! The rule: the owner (who can always rewrite the DACL) must be the current user, SYSTEM,
//! Administrators or `TrustedInstaller`, and no allow ACE may give anyone else a right that
//! changes the object or what is in it (write or append data, add a file or folder, delete,
//! delete a child, write attributes or extended attributes, write the DACL or owner, generic
//! write or all). Inherit-only ACEs count too (they are what the names file inherits), deny
//! ACEs are ignored (they never make a descriptor trusted), and anything this module cannot
//! read (a NULL DACL, an unknown ACE type or right) is refused: the safer reading.

/// `FILE_WRITE_DATA` / `FILE_ADD_FILE`.
const WRITE_DATA: u32 = 0x2;
/// `FILE_APPEND_DATA` / `FILE_ADD_SUBDIRECTORY`.
const APPEND_DATA: u32 = 0x4;
/// `FILE_WRITE_EA`.
const WRITE_EA: u32 = 0x10;
/// `FILE_DELETE_CHILD`.
const DELETE_CHILD: u32 = 0x40;
/// `FILE_WRITE_ATTRIBUTES`.
const WRITE_ATTRIBUTES: u32 = 0x100;
/// `DELETE`.
const DELETE: u32 = 0x1_0000;
/// `WRITE_DAC`.
const WRITE_DAC: u32 = 0x4_0000;
/// `WRITE_OWNER`.
const WRITE_OWNER: u32 = 0x8_0000;
/// `MAXIMUM_ALLOWED`.
const MAXIMUM_ALLOWED: u32 = 0x200_0000;
/// `GENERIC_ALL`.
const GENERIC_ALL: u32 = 0x1000_0000;
/// `GENERIC_WRITE`.
const GENERIC_WRITE: u32 = 0x4000_0000;

/// Every right that changes a file or folder or what it holds.
pub const CHANGE_RIGHTS: u32 = WRITE_DATA
    | APPEND_DATA
    | WRITE_EA
    | DELETE_CHILD
    | WRITE_ATTRIBUTES
    | DELETE
    | WRITE_DAC
    | WRITE_OWNER
    | MAXIMUM_ALLOWED
    | GENERIC_ALL
    | GENERIC_WRITE;

/// SYSTEM.
const SYSTEM: &str = "S-1-5-18";
/// BUILTIN\Administrators.
const ADMINISTRATORS: &str = "S-1-5-32-544";
/// NT SERVICE\TrustedInstaller.
const TRUSTED_INSTALLER: &str = "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464";
/// CREATOR OWNER: stands for whoever creates a child (the writer: trusted).
const CREATOR_OWNER: &str = "S-1-3-0";
/// OWNER RIGHTS: stands for the object's owner (checked separately).
const OWNER_RIGHTS: &str = "S-1-3-4";

/// The SDDL aliases of well-known SIDs that are the same in every domain ("SID Strings").
const ALIASES: &[(&str, &str)] = &[
    ("AN", "S-1-5-7"),
    ("AO", "S-1-5-32-548"),
    ("AU", "S-1-5-11"),
    ("BA", ADMINISTRATORS),
    ("BG", "S-1-5-32-546"),
    ("BO", "S-1-5-32-551"),
    ("BU", "S-1-5-32-545"),
    ("CO", CREATOR_OWNER),
    ("CG", "S-1-3-1"),
    ("IU", "S-1-5-4"),
    ("LS", "S-1-5-19"),
    ("NS", "S-1-5-20"),
    ("NU", "S-1-5-2"),
    ("OW", OWNER_RIGHTS),
    ("PS", "S-1-5-10"),
    ("PU", "S-1-5-32-547"),
    ("RC", "S-1-5-12"),
    ("SO", "S-1-5-32-549"),
    ("SU", "S-1-5-6"),
    ("SY", SYSTEM),
    ("WD", "S-1-1-0"),
    ("AC", "S-1-15-2-1"),
];

/// The DACL netports gives a folder it creates for the names file.
///
/// Protected (nothing inherited from the parent), full control for SYSTEM, Administrators and
/// `me` (the current user's SID string), inherited by what is created inside.
#[must_use]
pub fn protected_folder(me: &str) -> String {
    format!("D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;{me})")
}

/// A SID as written, and its canonical `S-1-...` form when it has one.
fn canonical(sid: &str) -> Option<&str> {
    if sid.starts_with("S-1-") && sid[4..].chars().all(|c| c.is_ascii_digit() || c == '-') {
        return Some(sid);
    }
    ALIASES.iter().find(|(alias, _)| *alias == sid).map(|(_, full)| *full)
}

/// True if `sid` (as written in the SDDL) is one of `me` (the current user, in every spelling
/// Windows may use for it).
fn is_me(sid: &str, me: &[&str]) -> bool {
    me.contains(&sid)
}

/// Whether `sid` may own the names file's folder or file.
fn trusted_owner(sid: &str, me: &[&str]) -> bool {
    is_me(sid, me) || matches!(canonical(sid), Some(SYSTEM | ADMINISTRATORS | TRUSTED_INSTALLER))
}

/// Whether `sid` may hold change rights.
fn trusted_holder(sid: &str, me: &[&str]) -> bool {
    trusted_owner(sid, me) || matches!(canonical(sid), Some(CREATOR_OWNER | OWNER_RIGHTS))
}

/// The mask an ACE's rights field stands for.
fn rights(field: &str) -> Option<u32> {
    if let Some(hex) = field.strip_prefix("0x").or_else(|| field.strip_prefix("0X")) {
        return u32::from_str_radix(hex, 16).ok();
    }
    if !field.is_empty() && field.chars().all(|c| c.is_ascii_digit()) {
        return field.parse().ok();
    }
    if !field.len().is_multiple_of(2) {
        return None;
    }
    let mut mask = 0u32;
    for i in (0..field.len()).step_by(2) {
        mask |= match field.get(i..i + 2)? {
            "GA" => GENERIC_ALL,
            "GR" => 0x8000_0000,
            "GW" => GENERIC_WRITE,
            "GX" => 0x2000_0000,
            "RC" => 0x2_0000,
            "SD" => DELETE,
            "WD" => WRITE_DAC,
            "WO" => WRITE_OWNER,
            "RP" => 0x10,
            "WP" => 0x20,
            "CC" => 0x1,
            "DC" => 0x2,
            "LC" => 0x4,
            "SW" => 0x8,
            "LO" => 0x80,
            "DT" => 0x40,
            "CR" => 0x100,
            "FA" => 0x1F_01FF,
            "FR" => 0x12_0089,
            "FW" => 0x12_0116,
            "FX" => 0x12_00A0,
            "KA" => 0xF_003F,
            "KR" | "KX" => 0x2_0019,
            "KW" => 0x2_0006,
            _ => return None,
        };
    }
    Some(mask)
}

/// The nesting of each character of `s`: its parenthesis depth, and whether it lies inside a
/// double-quoted string (conditional expressions hold string literals, which may contain
/// parentheses, semicolons or colons: [MS-DTYP] 2.5.1.1). `None` when a string is not closed.
fn nesting(s: &str) -> Option<Vec<(usize, char, i32, bool)>> {
    let (mut depth, mut quoted, mut out) = (0i32, false, Vec::with_capacity(s.len()));
    for (i, c) in s.char_indices() {
        let inside = quoted;
        match c {
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            _ => {}
        }
        out.push((i, c, depth, inside || c == '"'));
    }
    (!quoted).then_some(out)
}

/// Splits `s` at `sep` outside parentheses and strings (`None`: a string is not closed).
fn split_top(s: &str, sep: char) -> Option<Vec<&str>> {
    let (mut start, mut out) = (0, Vec::new());
    for (i, c, depth, quoted) in nesting(s)? {
        if c == sep && depth == 0 && !quoted {
            out.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&s[start..]);
    Some(out)
}

/// The `O:`, `G:`, `D:`, `S:` components of a descriptor string.
fn components(s: &str) -> Option<Vec<(char, &str)>> {
    let chars = nesting(s)?;
    let mut starts = Vec::new();
    for (n, &(i, c, depth, quoted)) in chars.iter().enumerate() {
        if matches!(c, 'O' | 'G' | 'D' | 'S')
            && depth == 0
            && !quoted
            && chars.get(n + 1).is_some_and(|&(_, next, _, _)| next == ':')
        {
            starts.push((i, c));
        }
    }
    if chars.last().is_some_and(|&(_, _, depth, _)| depth != 0)
        || starts.first().map(|&(i, _)| i) != Some(0)
    {
        return None;
    }
    let mut out = Vec::new();
    for (n, &(at, tag)) in starts.iter().enumerate() {
        let end = starts.get(n + 1).map_or(s.len(), |&(i, _)| i);
        out.push((tag, s.get(at + 2..end)?));
    }
    Some(out)
}

/// The ACEs of a DACL component (after its flags).
fn aces(dacl: &str) -> Result<Vec<&str>, String> {
    let open = dacl.find('(').unwrap_or(dacl.len());
    let flags = &dacl[..open];
    if flags.contains("NO_ACCESS_CONTROL") {
        return Err("it has no DACL (NO_ACCESS_CONTROL: everyone has full access)".into());
    }
    let unreadable = || format!("its DACL cannot be read ({dacl})");
    let rest = &dacl[open..];
    let mut out = Vec::new();
    let mut start = None;
    for (i, c, depth, quoted) in nesting(rest).ok_or_else(unreadable)? {
        match (c, depth, quoted, start) {
            // An ACE opens at depth 1 and closes when the depth is back at 0.
            ('(', 1, false, None) => start = Some(i + 1),
            (')', 0, false, Some(from)) => {
                out.push(&rest[from..i]);
                start = None;
            }
            (_, _, _, Some(_)) if depth > 0 => {}
            _ => return Err(unreadable()),
        }
    }
    if start.is_some() {
        return Err(unreadable());
    }
    Ok(out)
}

/// Decides whether a folder or file with this security descriptor may hold the names file.
///
/// `descriptor` is its owner and DACL in SDDL; `me` lists the current user's SID in every spelling Windows may
/// give it (its `S-1-...` string, and an alias such as `LA` when it has one).
///
/// # Errors
/// Why not: who owns it, who else may change it, or what could not be read.
pub fn check(descriptor: &str, me: &[&str]) -> Result<(), String> {
    let parts = components(descriptor)
        .ok_or_else(|| format!("its security descriptor cannot be read ({descriptor:?})"))?;
    let owner =
        parts.iter().find(|(t, _)| *t == 'O').map(|(_, v)| *v).ok_or("its owner cannot be read")?;
    if canonical(owner).is_none() && !is_me(owner, me) {
        return Err(format!("its owner cannot be read ({owner:?})"));
    }
    if !trusted_owner(owner, me) {
        return Err(format!("it is owned by {owner}, not by you, SYSTEM or Administrators"));
    }
    let dacl =
        parts.iter().find(|(t, _)| *t == 'D').map(|(_, v)| *v).ok_or("its DACL cannot be read")?;
    for ace in aces(dacl)? {
        let fields = split_top(ace, ';').ok_or_else(|| format!("an ACE cannot be read ({ace})"))?;
        let [kind, _flags, mask, _object, _inherited, sid, ..] = fields.as_slice() else {
            return Err(format!("an ACE cannot be read ({ace})"));
        };
        let allow = match *kind {
            "A" | "OA" | "XA" | "ZA" => true,
            "D" | "OD" | "XD" => false,
            other => return Err(format!("an ACE of type {other:?} cannot be judged ({ace})")),
        };
        let mask =
            rights(mask).ok_or_else(|| format!("the rights of an ACE cannot be read ({ace})"))?;
        if canonical(sid).is_none() && !is_me(sid, me) {
            return Err(format!("the SID of an ACE cannot be read ({ace})"));
        }
        if allow && mask & CHANGE_RIGHTS != 0 && !trusted_holder(sid, me) {
            return Err(format!("{sid} may change it (rights {mask:#x}: {ace})"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_read_as_codes_or_masks() {
        assert_eq!(rights("FA"), Some(0x1F_01FF));
        assert_eq!(rights("0x1200a9"), Some(0x12_00A9));
        assert_eq!(rights("DCLC"), Some(0x6));
        assert_eq!(rights("1179817"), Some(0x12_00A9));
        assert_eq!(rights("FAX"), None);
        assert_eq!(rights("ZZ"), None);
        assert_eq!(rights("FR").map(|m| m & CHANGE_RIGHTS), Some(0), "read is not change");
        assert_ne!(rights("FW").map(|m| m & CHANGE_RIGHTS), Some(0));
    }

    #[test]
    fn components_and_aces_split_at_the_top_level_only() {
        let s = "O:BAD:P(A;;FA;;;SY)(XA;;FA;;;WD;(@User.Dept==\"D:1\"))";
        let parts = components(s).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], ('O', "BA"));
        let aces = aces(parts[1].1).unwrap();
        assert_eq!(aces, ["A;;FA;;;SY", "XA;;FA;;;WD;(@User.Dept==\"D:1\")"]);
        assert!(components("D:(A;;FA;;;SY").is_none());
        assert!(components("X:BA").is_none());
    }
}
