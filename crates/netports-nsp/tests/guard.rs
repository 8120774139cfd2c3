//! The decision whether a Windows folder or file may hold the names file, made from its
//! security descriptor in SDDL (what `GetNamedSecurityInfoW` +
//! `ConvertSecurityDescriptorToStringSecurityDescriptorW` give on Windows). Issue 19, item 1.
//!
//! Trusted: the current user, SYSTEM, Administrators (and the CREATOR OWNER / OWNER RIGHTS
//! placeholders, which stand for the owner). The owner must be one of the first three, and no
//! allow ACE may give anyone else a right that changes the object or what is in it.

use netports_nsp::guard::sddl;

const ME: &str = "S-1-5-21-1111111111-2222222222-3333333333-1001";
const OTHER: &str = "S-1-5-21-1111111111-2222222222-3333333333-1002";

fn me() -> Vec<&'static str> {
    vec![ME]
}

#[test]
fn the_folder_netports_creates_passes() {
    let created = format!("O:{ME}{}", sddl::protected_folder(ME));
    assert_eq!(
        sddl::protected_folder(ME),
        format!("D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;{ME})")
    );
    assert_eq!(sddl::check(&created, &me()), Ok(()));
    // Created by an elevated administrator: owned by Administrators.
    assert_eq!(sddl::check(&format!("O:BA{}", sddl::protected_folder(ME)), &me()), Ok(()));
    assert_eq!(sddl::check(&format!("O:SY{}", sddl::protected_folder(ME)), &me()), Ok(()));
}

#[test]
fn a_users_profile_folder_passes() {
    // %LOCALAPPDATA% on Windows: the user, SYSTEM and Administrators, inherited.
    let local = format!("O:{ME}D:(A;OICIID;FA;;;SY)(A;OICIID;FA;;;BA)(A;OICIID;FA;;;{ME})");
    assert_eq!(sddl::check(&local, &me()), Ok(()));
    // Wine synthesizes a folder's descriptor from its mode bits: 0755 gives Everyone read.
    let wine = format!("O:{ME}D:(A;OICI;FA;;;SY)(A;OICI;FA;;;{ME})(A;OICI;0x1200a9;;;WD)");
    assert_eq!(sddl::check(&wine, &me()), Ok(()));
}

#[test]
fn programdata_where_any_user_creates_folders_is_refused() {
    // %ProgramData%'s default DACL: BUILTIN\Users may create files and folders there
    // (DC = add file, LC = add subdirectory), so any user can create netports\ and own it.
    let programdata = "O:SYD:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICIIO;GA;;;CO)(A;OICI;0x1200a9;;;BU)(A;CI;DCLCRPCR;;;BU)";
    let why = sddl::check(programdata, &me()).unwrap_err();
    assert!(why.contains("BU"), "{why}");
    // The folder such a user created: owned by them.
    let planted = format!(
        "O:{OTHER}D:(A;OICIID;FA;;;SY)(A;OICIID;FA;;;BA)(A;OICIIOID;GA;;;CO)(A;OICIID;0x1200a9;;;BU)(A;CIID;DCLCRPCR;;;BU)(A;OICIID;FA;;;{OTHER})"
    );
    let why = sddl::check(&planted, &me()).unwrap_err();
    assert!(why.contains("owned by"), "{why}");
}

#[test]
fn another_owner_is_refused_even_with_a_tight_dacl() {
    let s = format!("O:{OTHER}D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;{ME})");
    let why = sddl::check(&s, &me()).unwrap_err();
    assert!(why.contains(OTHER), "the owner can rewrite the DACL: {why}");
}

#[test]
fn write_rights_for_anyone_else_are_refused_in_every_spelling() {
    for ace in [
        "(A;;FA;;;WD)",
        "(A;;FW;;;AU)",
        "(A;;GW;;;BU)",
        "(A;;GA;;;IU)",
        "(A;;0x1301bf;;;AU)",   // Modify
        "(A;;0x2;;;BU)",        // FILE_WRITE_DATA / FILE_ADD_FILE
        "(A;;0x40000000;;;BU)", // GENERIC_WRITE in hex
        "(A;;SD;;;BU)",         // DELETE: replace by delete + create
        "(A;;WD;;;BU)",         // WRITE_DAC
        "(A;;WO;;;BU)",         // WRITE_OWNER
        "(A;;DT;;;BU)",         // FILE_DELETE_CHILD
        "(A;OICIIO;FA;;;BU)",   // inherit-only: every file created inside gets it
        "(XA;;FA;;;WD;(Member_of {SID(BA)}))",
        "(OA;;FA;;;WD)",
    ] {
        let s = format!("O:{ME}D:(A;;FA;;;{ME}){ace}");
        assert!(sddl::check(&s, &me()).is_err(), "{ace} must be refused");
    }
    // Read and execute only, for anyone: fine.
    for ace in ["(A;;FR;;;WD)", "(A;;FRFX;;;BU)", "(A;;0x1200a9;;;AU)", "(A;;GR;;;BU)"] {
        let s = format!("O:{ME}D:(A;;FA;;;{ME}){ace}");
        assert_eq!(sddl::check(&s, &me()), Ok(()), "{ace}");
    }
    // A deny ACE never makes a descriptor trusted, but does not refuse one either.
    let deny = format!("O:{ME}D:(D;;FW;;;WD)(A;;FA;;;{ME})");
    assert_eq!(sddl::check(&deny, &me()), Ok(()));
}

#[test]
fn no_dacl_or_one_that_cannot_be_read_is_refused() {
    for s in [
        format!("O:{ME}D:NO_ACCESS_CONTROL"),
        format!("O:{ME}"),
        format!("D:(A;;FA;;;{ME})"),
        format!("O:{ME}D:(A;;FA;;;{ME}"),
        format!("O:{ME}D:(A;;QQ;;;{ME})"),
        format!("O:{ME}D:(Z;;FA;;;{ME})"),
        String::new(),
    ] {
        assert!(sddl::check(&s, &me()).is_err(), "{s:?}");
    }
}

#[test]
fn the_current_user_is_recognised_by_its_sddl_alias_too() {
    // The built-in Administrator account's SID is written "LA" in SDDL.
    let admin = "S-1-5-21-1111111111-2222222222-3333333333-500";
    let s = "O:LAD:(A;;FA;;;LA)(A;;FA;;;SY)";
    assert!(sddl::check(s, &[admin]).is_err(), "LA unknown without the alias");
    assert_eq!(sddl::check(s, &[admin, "LA"]), Ok(()));
    // Owner-rights and creator-owner placeholders stand for the (trusted) owner.
    let s = format!("O:{ME}D:(A;;FA;;;OW)(A;OICIIO;GA;;;CO)");
    assert_eq!(sddl::check(&s, &me()), Ok(()));
    // A well-known SID written in full is the same principal as its abbreviation.
    let s = format!("O:S-1-5-32-544D:(A;;FA;;;S-1-5-18)(A;;FA;;;{ME})");
    assert_eq!(sddl::check(&s, &me()), Ok(()));
}

#[test]
fn a_quoted_parenthesis_in_a_condition_never_hides_the_next_ace() {
    // A conditional ACE's expression may hold string literals in double quotes ([MS-DTYP]
    // 2.5.1.1; "Security Descriptor Definition Language for Conditional ACEs"), and a string
    // may contain parentheses. Counting them would end the first ACE too late and swallow the
    // next one: here Users' full control would be read as part of a read-only condition
    // (a later quoted ')' balances the count, so nothing looks malformed).
    let hidden = format!(
        "O:{ME}D:(A;;FA;;;{ME})(XA;;FR;;;WD;(@User.Title == \"a(\"))(A;;FA;;;BU)(XA;;FR;;;WD;(@User.Title == \"b)\"))"
    );
    let why = sddl::check(&hidden, &me()).expect_err("Users may change it");
    assert!(why.starts_with("BU may change it"), "{why}");
    // A closing parenthesis in a string: the ACE goes on to its real end.
    let closing =
        format!("O:{ME}D:(XA;;FR;;;WD;(@User.Title == \"a)\"))(A;;FA;;;{ME})(A;;FW;;;AU)");
    let why = sddl::check(&closing, &me()).expect_err("Authenticated Users may change it");
    assert!(why.starts_with("AU may change it"), "{why}");
    // Well-formed conditions with strings are still read.
    let fine = format!("O:{ME}D:(A;;FA;;;{ME})(XA;;FR;;;WD;(@User.Title == \"(x)\"))");
    assert_eq!(sddl::check(&fine, &me()), Ok(()));
    // An unterminated string is unreadable, so refused.
    let open = format!("O:{ME}D:(A;;FA;;;{ME})(XA;;FR;;;WD;(@User.Title == \"x))");
    assert!(sddl::check(&open, &me()).is_err());
}
