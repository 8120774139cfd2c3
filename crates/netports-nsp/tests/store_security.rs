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

/// An attacker who can replace the names folder in its parent (the parent is theirs, or
/// the folder is a link they own) swaps it between the guard's check and the read: first
/// their own folder (their file, their port for `web`), then the victim's again before the
/// file is checked. What is checked must be what is read: the attacker's names are never
/// returned (issue 19 review: check-then-use by path).
#[derive(Debug)]
struct Swapping {
    os: std::sync::Arc<dyn netports_nsp::guard::Guard>,
    /// The names folder the store uses.
    folder: PathBuf,
    /// The attacker's folder, swapped in after the folder check.
    attacker: PathBuf,
    /// Where the victim's folder waits meanwhile.
    parked: PathBuf,
}

impl Swapping {
    fn attack(&self) {
        if self.attacker.exists() {
            fs::rename(&self.folder, &self.parked).unwrap();
            fs::rename(&self.attacker, &self.folder).unwrap();
        }
    }

    fn undo(&self) {
        if self.parked.exists() {
            fs::rename(&self.folder, &self.attacker).unwrap();
            fs::rename(&self.parked, &self.folder).unwrap();
        }
    }
}

impl netports_nsp::guard::Guard for Swapping {
    fn check(&self, opened: &fs::File, kind: netports_nsp::guard::Kind) -> Result<(), String> {
        match kind {
            netports_nsp::guard::Kind::Folder => {
                let verdict = self.os.check(opened, kind);
                self.attack();
                verdict
            }
            netports_nsp::guard::Kind::File => {
                self.undo();
                self.os.check(opened, kind)
            }
        }
    }
    fn create_folder(&self, dir: &Path) -> std::io::Result<()> {
        self.os.create_folder(dir)
    }
    fn nonce(&self) -> std::io::Result<u64> {
        self.os.nonce()
    }
}

#[test]
fn a_folder_swapped_between_check_and_read_never_serves_the_attackers_names() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot give the attacker's file to another user here; skipped");
        return;
    }
    let d = dir("swapped");
    let folder = d.join("netports");
    let (name, mine) = web();
    Store::new(folder.join("names.json")).register(&name, mine).unwrap();
    // The attacker's folder and file: theirs (uid 12345), `web` pointed at their port.
    let attacker = d.join("attacker");
    fs::create_dir(&attacker).unwrap();
    let theirs = Reservation::new(Transport::Tcp, 31_337, 1).unwrap();
    fs::write(
        attacker.join("names.json"),
        br#"{"format":"netports-nsp-names","version":1,"names":[{"name":"web","protocol":"tcp","start":31337,"count":1}]}"#,
    )
    .unwrap();
    std::os::unix::fs::chown(&attacker, Some(12_345), None).unwrap();
    std::os::unix::fs::chown(attacker.join("names.json"), Some(12_345), None).unwrap();
    let guard = Swapping {
        os: netports_nsp::guard::os(),
        folder: folder.clone(),
        attacker,
        parked: d.join("parked"),
    };
    let s = Store::with_guard(folder.join("names.json"), std::sync::Arc::new(guard));
    match s.load() {
        Ok(names) => {
            let got = names.get(&name).copied();
            assert_ne!(got, Some(theirs), "the attacker's file was read after the check");
            assert_eq!(got, Some(mine));
        }
        Err(e) => assert!(e.to_string().contains("other users can change"), "{e}"),
    }
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn a_names_folder_that_is_a_symbolic_link_is_refused() {
    // A link is owned by whoever made it and can be pointed elsewhere at any moment, so
    // checking what it points to now proves nothing about what is read next (the Windows
    // counterpart: a junction planted in %ProgramData%). Only the folder and the file are
    // refused as links; the folders above them are the user's own choice.
    let d = dir("linked-folder");
    let real = d.join("real");
    let (name, r) = web();
    Store::new(real.join("names.json")).register(&name, r).unwrap();
    std::os::unix::fs::symlink(&real, d.join("link")).unwrap();
    let s = Store::new(d.join("link").join("names.json"));
    let refused = s.load();
    assert!(refused.is_err(), "a linked folder is refused for reading: {refused:?}");
    assert!(refused.unwrap_err().to_string().contains("link"));
    assert!(s.register(&ServiceName::parse("dns").unwrap(), r).is_err(), "and for writing");
    assert_eq!(Store::new(real.join("names.json")).load().unwrap().len(), 1, "nothing written");
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn a_names_file_that_is_a_symbolic_link_is_refused() {
    let d = dir("linked-file");
    let (name, r) = web();
    let other = d.join("other");
    Store::new(other.join("names.json")).register(&name, r).unwrap();
    let folder = d.join("netports");
    fs::create_dir(&folder).unwrap();
    fs::set_permissions(&folder, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(other.join("names.json"), folder.join("names.json")).unwrap();
    let refused = Store::new(folder.join("names.json")).load();
    assert!(refused.is_err(), "a linked names file is refused: {refused:?}");
    assert!(refused.unwrap_err().to_string().contains("link"));
    let _ = fs::remove_dir_all(&d);
}
