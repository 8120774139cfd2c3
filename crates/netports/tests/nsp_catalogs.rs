//! `netports nsp install|uninstall|serve` and the two Winsock catalogs (issue 19, item 5).
//!
//! `WSCInstallNameSpaceEx`, `WSCUnInstallNameSpace` and `WSAEnumNameSpaceProviders` touch the
//! 64-bit catalog only on 64-bit Windows; 32-bit processes read the 32-bit one, changed through
//! the `...32` functions. The provider must be in both, or 32-bit clients never see it.

use std::collections::BTreeSet;

use netports::cli;
use netports::diagnose::{BindOutcome, Owner, ProbeAddr};
use netports::driver::Transport;
use netports::exception::HostFilters;
use netports::excluded::{ExcludedRange, Family};
use netports::model::Reservations;
use netports::nsp::{Catalog, NspHost, Resolved};
use netports::platform::{Acquired, Platform, Unsupported};
use netports::teredo::TeredoEvent;
use netports::{Error, PortBlock, Protocol};

/// Both catalogs, and the code an install into one of them fails with.
#[derive(Default)]
struct Catalogs {
    installed: BTreeSet<&'static str>,
    refuse: Option<(Catalog, u32)>,
    calls: Vec<String>,
}

fn key(c: Catalog) -> &'static str {
    match c {
        Catalog::Native => "64",
        Catalog::Wow64 => "32",
    }
}

impl NspHost for Catalogs {
    fn serve(
        &mut self,
        _: std::sync::Arc<netports_nsp::Provider>,
        _: &mut dyn FnMut(),
    ) -> Result<(), Error> {
        self.calls.push("serve".into());
        Ok(())
    }
    fn installed(&mut self, c: Catalog) -> Result<bool, Error> {
        Ok(self.installed.contains(key(c)))
    }
    fn install(&mut self, c: Catalog) -> Result<String, Error> {
        self.calls.push(format!("install {}", key(c)));
        if let Some((refused, code)) = self.refuse
            && refused == c
        {
            return Err(netports::nsp::install_error(code, "WSCInstallNameSpaceEx32"));
        }
        self.installed.insert(key(c));
        Ok(format!("installed in {}", key(c)))
    }
    fn uninstall(&mut self, c: Catalog) -> Result<(), Error> {
        self.calls.push(format!("uninstall {}", key(c)));
        self.installed.remove(key(c));
        Ok(())
    }
    fn resolve(&mut self, _: &str) -> Result<Resolved, Error> {
        Err(Error::NotFound)
    }
    fn sources(&self) -> std::sync::Arc<dyn netports_nsp::Sources> {
        unreachable!("not served here")
    }
    fn names_file(&self) -> Result<std::path::PathBuf, Error> {
        Ok(std::env::temp_dir()
            .join(format!("netports-catalogs-{}", std::process::id()))
            .join("names.json"))
    }
}

struct Host(Catalogs);

impl Platform for Host {
    fn os(&self) -> &'static str {
        "model"
    }
    fn teredo_port(&mut self) -> Result<netports::teredo::PortReading, Error> {
        Unsupported.teredo_port()
    }
    fn teredo_watch(
        &mut self,
        w: bool,
        f: &mut dyn FnMut(TeredoEvent) -> bool,
    ) -> Result<(), Error> {
        Unsupported.teredo_watch(w, f)
    }
    fn host_filters(&mut self) -> Result<Box<dyn HostFilters>, Error> {
        Unsupported.host_filters()
    }
    fn reservations(&mut self) -> Result<&mut dyn Reservations, Error> {
        Err(Error::Unsupported { what: "model".into() })
    }
    fn administered(&mut self, p: Protocol) -> Result<Vec<PortBlock>, Error> {
        Unsupported.administered(p)
    }
    fn excluded(&mut self, p: Protocol, f: Family) -> Result<Vec<ExcludedRange>, Error> {
        Unsupported.excluded(p, f)
    }
    fn dynamic_range(&mut self, p: Protocol, f: Family) -> Result<PortBlock, Error> {
        Unsupported.dynamic_range(p, f)
    }
    fn try_bind(&mut self, p: Protocol, a: ProbeAddr, port: u16) -> BindOutcome {
        Unsupported.try_bind(p, a, port)
    }
    fn owners(&mut self, p: Protocol, port: u16) -> Result<Vec<Owner>, Error> {
        Unsupported.owners(p, port)
    }
    fn endpoint_ports(&mut self, p: Protocol) -> Result<Vec<u16>, Error> {
        Unsupported.endpoint_ports(p)
    }
    fn acquire(&mut self, p: Protocol, s: Option<u16>, c: u16) -> Result<Acquired, Error> {
        Unsupported.acquire(p, s, c)
    }
    fn hold(&mut self) {}
    fn driver(&mut self) -> Result<Box<dyn Transport>, Error> {
        Unsupported.driver()
    }
    fn nsp(&mut self) -> Result<&mut dyn NspHost, Error> {
        Ok(&mut self.0)
    }
}

fn run(p: &mut Host, args: &[&str]) -> (u8, String, String) {
    let args: Vec<String> =
        std::iter::once("netports").chain(args.iter().copied()).map(str::to_owned).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::run(&args, p, &mut out, &mut err);
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

#[test]
fn install_puts_the_provider_in_both_catalogs() {
    let mut p = Host(Catalogs::default());
    let (code, out, err) = run(&mut p, &["nsp", "install"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(p.0.installed, BTreeSet::from(["32", "64"]));
    assert!(out.contains("64-bit and 32-bit Winsock catalogs"), "{out}");
    let (code, _, err) = run(&mut p, &["nsp", "install"]);
    assert_eq!(code, 5, "installed in both already: {err}");
}

#[test]
fn install_completes_a_provider_found_in_one_catalog_only() {
    let mut p = Host(Catalogs { installed: BTreeSet::from(["64"]), ..Catalogs::default() });
    let (code, out, err) = run(&mut p, &["nsp", "install"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(p.0.calls, ["install 32"], "the 64-bit entry is kept");
    assert!(out.contains("32-bit Winsock catalog"), "{out}");
    assert_eq!(p.0.installed, BTreeSet::from(["32", "64"]));
}

#[test]
fn a_refused_32_bit_install_leaves_neither_catalog_changed() {
    let mut p = Host(Catalogs { refuse: Some((Catalog::Wow64, 11_003)), ..Catalogs::default() });
    let (code, _, err) = run(&mut p, &["nsp", "install"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("WSANO_RECOVERY"), "{err}");
    assert_eq!(p.0.calls, ["install 64", "install 32", "uninstall 64"], "rolled back");
    assert!(p.0.installed.is_empty());
}

#[test]
fn uninstall_removes_it_from_every_catalog_it_is_in() {
    let mut p = Host(Catalogs { installed: BTreeSet::from(["32", "64"]), ..Catalogs::default() });
    assert_eq!(run(&mut p, &["nsp", "uninstall"]).0, 0);
    assert!(p.0.installed.is_empty());
    p.0.installed.insert("32");
    p.0.calls.clear();
    assert_eq!(run(&mut p, &["nsp", "uninstall"]).0, 0);
    assert_eq!(p.0.calls, ["uninstall 32"]);
    let (code, _, err) = run(&mut p, &["nsp", "uninstall"]);
    assert_eq!(code, 6, "in neither: {err}");
}
