//! `netports teredo-exception --check`: whether Windows Defender Firewall's own Teredo rules
//! (CoreNet-Teredo-In / -Out) are enabled. Under Windows Defender Firewall netports' soft
//! permits change nothing (its block wins), so these rules decide (issue 19, item 2).

use netports::cli;
use netports::diagnose::{BindOutcome, Owner, ProbeAddr};
use netports::driver::Transport;
use netports::exception::HostFilters;
use netports::excluded::{ExcludedRange, Family};
use netports::firewall::Store;
use netports::model::Reservations;
use netports::platform::{Acquired, Platform, Unsupported};
use netports::teredo::TeredoEvent;
use netports::{Error, PortBlock, Protocol};

/// The firewall's rule stores, as the registry holds them ([MS-GPFAS] 2.2.2.19 grammar).
#[derive(Default)]
struct Rules(Vec<(&'static str, Store, String)>);

const IN: &str = "v2.30|Action=Allow|Active=TRUE|Dir=In|Protocol=17|LPort=Teredo|App=%SystemRoot%\\system32\\svchost.exe|Svc=iphlpsvc|Name=@FirewallAPI.dll,-29252|Desc=@FirewallAPI.dll,-29253|EmbedCtxt=@FirewallAPI.dll,-25000|Edge=TRUE|";
const OUT: &str = "v2.30|Action=Allow|Active=TRUE|Dir=Out|Protocol=17|App=%SystemRoot%\\system32\\svchost.exe|Svc=iphlpsvc|Name=@FirewallAPI.dll,-29256|Desc=@FirewallAPI.dll,-29257|EmbedCtxt=@FirewallAPI.dll,-25000|";

impl Platform for Rules {
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
    fn firewall_rules(&mut self, id: &str) -> Result<Vec<(Store, String)>, Error> {
        Ok(self.0.iter().filter(|(i, _, _)| *i == id).map(|(_, s, v)| (*s, v.clone())).collect())
    }
}

fn run(p: &mut dyn Platform, args: &[&str]) -> (u8, String, String) {
    let args: Vec<String> =
        std::iter::once("netports").chain(args.iter().copied()).map(str::to_owned).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::run(&args, p, &mut out, &mut err);
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

#[test]
fn both_rules_enabled_is_success() {
    let mut p = Rules(vec![
        ("CoreNet-Teredo-In", Store::Local, IN.into()),
        ("CoreNet-Teredo-Out", Store::Local, OUT.into()),
    ]);
    let (code, out, err) = run(&mut p, &["teredo-exception", "--check"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "CoreNet-Teredo-In (local): enabled: allow in, udp, local port Teredo, svchost.exe, service iphlpsvc\nCoreNet-Teredo-Out (local): enabled: allow out, udp, svchost.exe, service iphlpsvc\nWindows Defender Firewall lets Teredo through (its own rules are enabled)\n"
    );
}

#[test]
fn a_disabled_or_missing_rule_is_reported_with_the_remedy() {
    let mut p =
        Rules(vec![("CoreNet-Teredo-In", Store::Local, IN.replace("Active=TRUE", "Active=FALSE"))]);
    let (code, out, _) = run(&mut p, &["teredo-exception", "--check"]);
    assert_eq!(code, 6);
    assert_eq!(
        out,
        "CoreNet-Teredo-In (local): disabled: allow in, udp, local port Teredo, svchost.exe, service iphlpsvc\nCoreNet-Teredo-Out: not found in the firewall's rule stores\nWindows Defender Firewall blocks Teredo unless these rules are enabled; netports' soft permits do not change that. Enable them (elevated PowerShell): Enable-NetFirewallRule -Name CoreNet-Teredo-In,CoreNet-Teredo-Out\n"
    );
    let (_, json, _) = run(&mut p, &["--json", "teredo-exception", "--check"]);
    assert_eq!(
        json,
        "{\"enabled\":false,\"rules\":[{\"action\":\"allow\",\"direction\":\"in\",\"enabled\":false,\"id\":\"CoreNet-Teredo-In\",\"store\":\"local\"},{\"enabled\":false,\"id\":\"CoreNet-Teredo-Out\",\"store\":null}]}\n"
    );
}

#[test]
fn a_group_policy_rule_counts_and_a_block_rule_does_not() {
    let mut p = Rules(vec![
        ("CoreNet-Teredo-In", Store::Local, IN.replace("Active=TRUE", "Active=FALSE")),
        ("CoreNet-Teredo-In", Store::GroupPolicy, IN.into()),
        ("CoreNet-Teredo-Out", Store::Local, OUT.replace("Action=Allow", "Action=Block")),
    ]);
    let (code, out, _) = run(&mut p, &["teredo-exception", "--check"]);
    assert_eq!(code, 6);
    assert!(out.contains("CoreNet-Teredo-In (group policy): enabled"), "{out}");
    assert!(out.contains("CoreNet-Teredo-Out (local): enabled: block out"), "{out}");
    assert!(out.contains("blocks Teredo"), "{out}");
}

#[test]
fn off_windows_the_check_says_it_needs_windows() {
    let (code, _, err) = run(&mut Unsupported, &["teredo-exception", "--check"]);
    assert_eq!(code, 3);
    assert!(err.contains("needs Windows"), "{err}");
}
