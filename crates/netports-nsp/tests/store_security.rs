//! The names file cannot be taken over by another local user (issue 19, item 1).
//!
//! Every user's `nsp serve` answers from its names file, so whoever can write that file (or the
//! folder it lives in, or a temporary file the writer uses) decides where `web` points. These
//! tests plant what a hostile user could plant and check that the store refuses to use it.
//! They run as root on the team's machine (chown to another uid needs it); as another user the
//! ownership case is skipped, the rest still run.
#![cfg(unix)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use netports_nsp::name::ServiceName;
use netports_nsp::reservation::{Reservation, Transport};
use netports_nsp::store::Store;

fn dir(tag: &str) -> PathBuf {
    let d =
        std::env::temp_dir().join(format!("netports-nsp-security-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
    d
}

fn web() -> (ServiceName, Reservation) {
    (ServiceName::parse("web").unwrap(), Reservation::new(Transport::Tcp, 50_000, 10).unwrap())
}

fn files_in(d: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    v.sort();
    v
}

#[test]
fn a_planted_temporary_file_is_never_written_through() {
    let d = dir("planted-tmp");
    let victim = d.join("victim.txt");
    fs::write(&victim, b"the attacker wants this overwritten").unwrap();
    // The old store wrote `<file>.tmp`: a symlink planted there sent the write elsewhere.
    std::os::unix::fs::symlink(&victim, d.join("names.json.tmp")).unwrap();
    let s = Store::new(d.join("names.json"));
    let (name, r) = web();
    s.register(&name, r).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"the attacker wants this overwritten");
    assert!(
        !fs::symlink_metadata(d.join("names.json")).unwrap().file_type().is_symlink(),
        "the names file is a new file, not the planted link renamed into place"
    );
    assert_eq!(Store::new(d.join("names.json")).get(&name).unwrap(), Some(r));
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn the_temporary_file_name_is_not_predictable() {
    let d = dir("tmp-names");
    let s = Store::new(d.join("names.json"));
    let (name, r) = web();
    // Pre-create every name the old store would use: a writer that insists on them fails or
    // writes through them; one that picks a fresh unpredictable name with create-new succeeds.
    for n in ["names.json.tmp", "names.json.new", "names.json~"] {
        fs::write(d.join(n), b"planted").unwrap();
    }
    s.register(&name, r).unwrap();
    for n in ["names.json.tmp", "names.json.new", "names.json~"] {
        assert_eq!(fs::read(d.join(n)).unwrap(), b"planted", "{n} untouched");
    }
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn a_folder_other_users_can_write_is_refused() {
    let d = dir("world-writable");
    let s = Store::new(d.join("names.json"));
    let (name, r) = web();
    s.register(&name, r).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
    let refused = s.register(&ServiceName::parse("dns").unwrap(), r);
    assert!(refused.is_err(), "a world-writable folder is refused for writing");
    assert!(refused.unwrap_err().to_string().contains("other users can change"));
    assert!(s.load().is_err(), "and for reading (the provider would answer from it)");
    assert!(s.get(&name).is_err());
    fs::set_permissions(&d, fs::Permissions::from_mode(0o770)).unwrap();
    assert!(s.load().is_err(), "group-writable too");
    fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(s.get(&name).unwrap(), Some(r), "a folder only its owner can write is used");
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn a_names_file_other_users_can_write_is_refused() {
    let d = dir("writable-file");
    let s = Store::new(d.join("names.json"));
    let (name, r) = web();
    s.register(&name, r).unwrap();
    fs::set_permissions(d.join("names.json"), fs::Permissions::from_mode(0o666)).unwrap();
    assert!(s.load().is_err(), "a names file anyone can edit is not trusted");
    let before = fs::read(d.join("names.json")).unwrap();
    assert!(s.register(&ServiceName::parse("dns").unwrap(), r).is_err());
    assert_eq!(fs::read(d.join("names.json")).unwrap(), before);
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn a_folder_or_file_owned_by_another_user_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot give a folder to another user here; skipped");
        return;
    }
    let d = dir("other-owner");
    let s = Store::new(d.join("names.json"));
    let (name, r) = web();
    s.register(&name, r).unwrap();
    std::os::unix::fs::chown(&d, Some(12_345), None).unwrap();
    assert!(s.load().is_err(), "a folder another user owns (and so controls) is refused");
    std::os::unix::fs::chown(&d, Some(0), None).unwrap();
    std::os::unix::fs::chown(d.join("names.json"), Some(12_345), None).unwrap();
    assert!(s.load().is_err(), "a names file another user owns is refused");
    std::os::unix::fs::chown(d.join("names.json"), Some(0), None).unwrap();
    assert_eq!(s.get(&name).unwrap(), Some(r));
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn a_missing_folder_is_created_for_its_owner_only() {
    let d = dir("created");
    let store_dir = d.join("netports");
    let s = Store::new(store_dir.join("names.json"));
    let (name, r) = web();
    s.register(&name, r).unwrap();
    let mode = fs::metadata(&store_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "only its owner may enter or change it: {mode:o}");
    assert_eq!(files_in(&store_dir), vec!["names.json", "names.json.lock"], "no temporary left");
    let _ = fs::remove_dir_all(&d);
}
