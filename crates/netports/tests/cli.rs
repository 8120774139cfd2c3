//! The CLI end to end: every command against the model of Windows' documented behaviour and,
//! for driver control, against vsflow running on the simulator. Output is compared exactly
//! (human and JSON), so a change in what users read shows up here.

use std::cell::RefCell;
use std::rc::Rc;

use netports::cli;
use netports::diagnose::{BindOutcome, Owner, ProbeAddr};
use netports::driver::{IoctlReply, Transport};
use netports::exception::{FilterSpec, HostFilters};
use netports::excluded::{ExcludedRange, Family};
use netports::model::{Model, Reservations};
use netports::nsp::{Catalog as WinsockCatalog, NspHost, Resolved};
use netports::platform::{Acquired, Platform, Unsupported};
use netports::teredo::{Basis, ByteOrder, PortReading, TeredoEvent};
use netports::{Error, PortBlock, Protocol};
use vsflow_proto::{Ioctl, Request};
use vsflow_sim::Host;
use vsflow_sim::host::EXTERNAL_PORT;

/// The simulator's control device; `race` replaces a port's rules behind the client's back
/// before the next `ReplaceRules` reaches the driver (a concurrent editor, one whole
/// read-modify-write through the driver per queued rule, one per `ReplaceRules`).
struct SimTransport {
    host: Rc<RefCell<Host>>,
    race: Rc<RefCell<Vec<vsflow_core::AllowRule>>>,
}

impl Transport for SimTransport {
    fn ioctl(&mut self, code: u32, input: &[u8], output_len: usize) -> Result<IoctlReply, Error> {
        let sneak: Vec<_> = if code == Ioctl::ReplaceRules.code() && !self.race.borrow().is_empty()
        {
            vec![self.race.borrow_mut().remove(0)]
        } else {
            Vec::new()
        };
        if let (false, Ok(Request::ReplaceRules { port, .. })) =
            (sneak.is_empty(), Request::decode(code, input))
        {
            let mut other = netports::driver::DriverClient::new(Self {
                host: Rc::clone(&self.host),
                race: Rc::new(RefCell::new(Vec::new())),
            });
            let (read, mut rules) = other.rules(port)?;
            rules.extend(sneak);
            other.replace_rules(port, read, &rules)?;
        }
        let (o, output) = self.host.borrow().ioctl(code, input, output_len);
        Ok(IoctlReply { status: o.status, information: o.information, output })
    }
}

/// The next filter id and the (id, filter) pairs.
type FilterTable = (u64, Vec<(u64, FilterSpec)>);

/// Host permit filters, shared with the test; each change applies whole.
#[derive(Clone, Default)]
struct Filters(Rc<RefCell<FilterTable>>);

impl HostFilters for Filters {
    fn apply(&mut self, add: &[FilterSpec], remove: &[u64]) -> Result<Vec<u64>, Error> {
        let mut f = self.0.borrow_mut();
        f.1.retain(|(id, _)| !remove.contains(id));
        let ids: Vec<u64> = (f.0..f.0 + add.len() as u64).collect();
        f.0 += add.len() as u64;
        f.1.extend(ids.iter().copied().zip(add.iter().copied()));
        Ok(ids)
    }
}

impl Filters {
    fn count(&self) -> usize {
        self.0.borrow().1.len()
    }
}

/// What `teredo-exception` says first: its permits are soft, Windows Defender Firewall's
/// block wins, and its own Teredo rules decide.
const NOTE: &str = "note: these are soft permits in netports' own sublayer: under Windows Defender Firewall they change nothing (its block wins); Teredo passes there only through its rules CoreNet-Teredo-In and CoreNet-Teredo-Out (check them: `netports teredo-exception --check`)";

/// The Winsock catalog: whether the provider is installed, and what an install returns.
#[derive(Default)]
struct Catalog {
    installed: bool,
    install_code: Option<u32>,
}

impl NspHost for Catalog {
    fn serve(
        &mut self,
        _: std::sync::Arc<netports_nsp::Provider>,
        _: &mut dyn FnMut(),
    ) -> Result<(), Error> {
        Err(Error::Unsupported { what: "model".into() })
    }
    fn installed(&mut self, _: WinsockCatalog) -> Result<bool, Error> {
        Ok(self.installed)
    }
    fn install(&mut self, _: WinsockCatalog) -> Result<String, Error> {
        if let Some(code) = self.install_code {
            return Err(netports::nsp::install_error(code, "WSCInstallNameSpaceEx"));
        }
        self.installed = true;
        Ok("WSCInstallNameSpaceEx".into())
    }
    fn uninstall(&mut self, _: WinsockCatalog) -> Result<(), Error> {
        self.installed = false;
        Ok(())
    }
    fn resolve(&mut self, _: &str) -> Result<Resolved, Error> {
        Err(Error::NotFound)
    }
    fn sources(&self) -> std::sync::Arc<dyn netports_nsp::Sources> {
        unreachable!("not served in these tests")
    }
    fn names_file(&self) -> Result<std::path::PathBuf, Error> {
        Ok(std::env::temp_dir().join("netports-model-names.json"))
    }
}

struct TestPlatform {
    teredo: Option<u16>,
    /// `false`: the Teredo client is not started (`ERROR_NOT_READY`).
    teredo_ready: bool,
    events: Vec<TeredoEvent>,
    model: Model,
    excluded: Vec<ExcludedRange>,
    excluded_v6: Vec<ExcludedRange>,
    dynamic: PortBlock,
    /// Ports held, and on which addresses.
    in_use: Vec<(u16, ProbeAddr)>,
    /// Ports the endpoint tables list on an address the probes do not try.
    table_only: Vec<u16>,
    /// The endpoint tables: who holds which port.
    owners: Vec<(u16, Owner)>,
    host: Option<Rc<RefCell<Host>>>,
    race: Rc<RefCell<Vec<vsflow_core::AllowRule>>>,
    filters: Filters,
    catalog: Catalog,
    /// BFE stops after the events (the watch then ends with `Error::BfeStopped`).
    bfe_stops: bool,
    /// What the last watch was told about WFP objects.
    watched_with_wfp: Option<bool>,
    /// Whether the winnat service runs.
    winnat_running: bool,
}

impl TestPlatform {
    fn new() -> Self {
        Self {
            teredo: Some(51_234),
            teredo_ready: true,
            events: Vec::new(),
            model: Model::elevated(),
            excluded: vec![ExcludedRange {
                block: PortBlock::new(49_709, 100).unwrap(),
                administered: false,
            }],
            excluded_v6: vec![],
            dynamic: PortBlock::new(49_152, 16_384).unwrap(),
            in_use: vec![(443, ProbeAddr::AnyV4), (1025, ProbeAddr::LoopbackV6)],
            table_only: Vec::new(),
            owners: vec![(
                443,
                Owner { pid: 4242, process: Some("web.exe".into()), local: "0.0.0.0".into() },
            )],
            host: None,
            race: Rc::new(RefCell::new(Vec::new())),
            filters: Filters::default(),
            catalog: Catalog::default(),
            bfe_stops: false,
            watched_with_wfp: None,
            winnat_running: false,
        }
    }
}

impl Platform for TestPlatform {
    fn os(&self) -> &'static str {
        "model"
    }
    fn teredo_port(&mut self) -> Result<PortReading, Error> {
        if !self.teredo_ready {
            return Err(Error::NotReady);
        }
        Ok(PortReading {
            ports: self.teredo.into_iter().collect(),
            order: ByteOrder::Network,
            basis: Basis::Confirmed,
            warning: None,
        })
    }
    fn teredo_watch(
        &mut self,
        wfp: bool,
        on_event: &mut dyn FnMut(TeredoEvent) -> bool,
    ) -> Result<(), Error> {
        self.watched_with_wfp = Some(wfp);
        for ev in std::iter::once(TeredoEvent::Initial { ports: self.teredo.into_iter().collect() })
            .chain(self.events.drain(..))
        {
            if !on_event(ev) {
                return Ok(());
            }
        }
        if self.bfe_stops { Err(Error::BfeStopped("stopped".into())) } else { Ok(()) }
    }
    fn host_filters(&mut self) -> Result<Box<dyn HostFilters>, Error> {
        Ok(Box::new(self.filters.clone()))
    }
    fn reservations(&mut self) -> Result<&mut dyn Reservations, Error> {
        Ok(&mut self.model)
    }
    fn administered(&mut self, proto: Protocol) -> Result<Vec<PortBlock>, Error> {
        Ok(self.model.list().filter(|(p, _)| *p == proto).map(|(_, b)| b).collect())
    }
    fn excluded(&mut self, proto: Protocol, family: Family) -> Result<Vec<ExcludedRange>, Error> {
        let list = if family == Family::Ipv4 { &self.excluded } else { &self.excluded_v6 };
        // Administered reservations show up with `*`, as netsh lists them.
        let mut v: Vec<ExcludedRange> =
            if proto == Protocol::Tcp { list.clone() } else { Vec::new() };
        if family == Family::Ipv4 {
            v.extend(
                self.model
                    .list()
                    .filter(|(p, _)| *p == proto)
                    .map(|(_, block)| ExcludedRange { block, administered: true }),
            );
        }
        Ok(v)
    }
    fn dynamic_range(&mut self, _: Protocol, _: Family) -> Result<PortBlock, Error> {
        Ok(self.dynamic)
    }
    fn try_bind(&mut self, _: Protocol, addr: ProbeAddr, port: u16) -> BindOutcome {
        let list = if addr.family() == Family::Ipv4 { &self.excluded } else { &self.excluded_v6 };
        if self.in_use.contains(&(port, addr)) {
            BindOutcome::InUse
        } else if list.iter().any(|e| !e.administered && e.block.contains(port)) {
            // Unowned exclusions refuse a bind; administered ones do not (KB 3039044).
            BindOutcome::AccessDenied
        } else {
            BindOutcome::Bound
        }
    }
    fn try_bind_exclusive(&mut self, proto: Protocol, addr: ProbeAddr, port: u16) -> BindOutcome {
        // A socket on a specific address (in the table only) refuses an exclusive wildcard
        // bind of its family (the model's are IPv4).
        if addr == ProbeAddr::AnyV4 && self.table_only.contains(&port) {
            BindOutcome::InUse
        } else {
            self.try_bind(proto, addr, port)
        }
    }
    fn owners(&mut self, _: Protocol, port: u16) -> Result<Vec<Owner>, Error> {
        Ok(self.owners.iter().filter(|(p, _)| *p == port).map(|(_, o)| o.clone()).collect())
    }
    fn endpoint_ports(&mut self, _: Protocol) -> Result<Vec<u16>, Error> {
        Ok(self
            .in_use
            .iter()
            .map(|(port, _)| *port)
            .chain(self.table_only.iter().copied())
            .collect())
    }
    fn acquire(&mut self, _: Protocol, start: Option<u16>, count: u16) -> Result<Acquired, Error> {
        Ok(Acquired { block: PortBlock::new(start.unwrap_or(61_000), count)?, token: 0xABCD })
    }
    fn hold(&mut self) {}
    fn driver(&mut self) -> Result<Box<dyn Transport>, Error> {
        let race = Rc::clone(&self.race);
        self.host
            .clone()
            .map(|host| Box::new(SimTransport { host, race }) as Box<dyn Transport>)
            .ok_or(Error::DriverNotInstalled)
    }
    fn nsp(&mut self) -> Result<&mut dyn NspHost, Error> {
        Ok(&mut self.catalog)
    }
    fn service_running(&mut self, name: &str) -> Result<bool, Error> {
        Ok(name == "winnat" && self.winnat_running)
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
fn teredo_port_and_watch() {
    let mut p = TestPlatform::new();
    assert_eq!(
        run(&mut p, &["teredo", "port"]),
        (
            0,
            "teredo client port: udp 51234 (static port udp 3544; byte order: network, confirmed by the Teredo service's socket)\n".into(),
            String::new()
        )
    );
    assert_eq!(
        run(&mut p, &["--json", "teredo", "port"]).1,
        "{\"byte_order\":\"network\",\"byte_order_basis\":\"confirmed\",\"static_port\":3544,\"teredo_port\":51234,\"teredo_ports\":[51234]}\n"
    );
    p.events =
        vec![TeredoEvent::Changed { ports: vec![52_000] }, TeredoEvent::Changed { ports: vec![] }];
    let (code, out, _) = run(&mut p, &["teredo", "watch"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "watching; teredo port udp 51234\nteredo port changed: udp 52000\nteredo client stopped\n"
    );
    p.events = vec![TeredoEvent::Changed { ports: vec![52_001] }];
    let out = run(&mut p, &["--json", "teredo", "watch"]).1;
    assert_eq!(
        out,
        "{\"event\":\"initial\",\"ports\":[51234]}\n{\"event\":\"changed\",\"ports\":[52001]}\n"
    );
}

#[test]
fn reservations_create_lookup_release_with_documented_errors() {
    let mut p = TestPlatform::new();
    let (code, out, _) = run(&mut p, &["reserve", "tcp", "50000", "10"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("reserved tcp 50000-50009 (token 0x0000000000001001;"), "{out}");
    assert_eq!(
        run(&mut p, &["lookup", "tcp", "50000", "10"]).1,
        "tcp 50000-50009: token 0x0000000000001001\n"
    );
    let (code, _, err) = run(&mut p, &["reserve", "tcp", "50005", "10"]);
    assert_eq!(code, 5);
    assert!(err.starts_with("netports: conflict: the block overlaps"), "{err}");
    let (code, _, err) = run(&mut p, &["lookup", "tcp", "50000", "9"]);
    assert_eq!((code, err.contains("not found")), (6, true));
    assert_eq!(run(&mut p, &["release", "tcp", "50000", "10"]).1, "released tcp 50000-50009\n");
    let (code, _, err) = run(&mut p, &["reserve", "udp", "65535", "2"]);
    assert_eq!(
        (code, err.as_str()),
        (2, "netports: invalid port block: the block runs past port 65535\n")
    );
    p.model.elevated = false;
    let (code, out, err) = run(&mut p, &["--json", "reserve", "udp", "7000", "1"]);
    assert_eq!(code, 4);
    assert!(err.contains("run from an elevated prompt"));
    assert!(out.contains("\"exit_code\":4"));
}

#[test]
fn list_shows_reservations_exclusions_of_both_families_and_the_dynamic_range() {
    let mut p = TestPlatform::new();
    p.excluded_v6 =
        vec![ExcludedRange { block: PortBlock::new(60_000, 10).unwrap(), administered: false }];
    run(&mut p, &["reserve", "tcp", "8000", "10"]);
    let (_, out, _) = run(&mut p, &["list"]);
    assert_eq!(
        out,
        "proto  family ports          kind\ntcp    ipv4   8000-8009      reserved\ntcp    ipv4   49709-49808    runtime reservation (no *)\ntcp    ipv6   60000-60009    runtime reservation (no *)\ntcp    ipv4   49152-65535    dynamic port range\ntcp    ipv6   49152-65535    dynamic port range\nudp    ipv4   49152-65535    dynamic port range\nudp    ipv6   49152-65535    dynamic port range\n"
    );
    let (_, out, _) = run(&mut p, &["--json", "list"]);
    assert!(
        out.starts_with(
            "{\"dynamic\":[{\"end\":65535,\"family\":\"ipv4\",\"protocol\":\"tcp\",\"start\":49152}"
        ),
        "{out}"
    );
    assert!(out.contains("{\"end\":60009,\"family\":\"ipv6\",\"kind\":\"runtime reservation (no *)\",\"protocol\":\"tcp\",\"start\":60000}"), "{out}");
}

#[test]
fn why_blocked_decides_from_the_bind_result_first() {
    let mut p = TestPlatform::new();
    run(&mut p, &["reserve", "tcp", "8000", "10"]);
    // An exclusion without `*` refuses the bind: a runtime reservation of some process (WinNAT's
    // for Hyper-V/WSL/Docker, or any other's, `netports acquire --hold` included). The WinNAT
    // remedy is offered only while the winnat service runs (it does not here).
    let out = run(&mut p, &["why-blocked", "49720"]).1;
    assert!(
        out.starts_with("tcp 49720 is in the ipv4 excluded range 49709-49808, a runtime reservation (no `*`): bind fails with WSAEACCES"),
        "{out}"
    );
    assert!(!out.contains("net stop winnat"), "winnat does not run: no WinNAT remedy: {out}");
    assert!(out.contains("it lasts while the process that acquired it keeps it"), "{out}");
    assert!(out.contains("ipv4 dynamic port range: 49152-65535"), "{out}");
    // While winnat runs, the range may be WinNAT's: the remedy is offered, as a possibility.
    p.winnat_running = true;
    let out = run(&mut p, &["why-blocked", "49720"]).1;
    assert!(out.contains("if it is WinNAT's, remedy (elevated): net stop winnat && netsh int ipv4 add excludedportrange protocol=tcp startport=49720 numberofports=1 && net start winnat"), "{out}");
    p.winnat_running = false;
    // An administered reservation does not refuse a plain bind: free, with a note.
    let out = run(&mut p, &["why-blocked", "8001"]).1;
    assert!(out.starts_with("tcp 8001 is free"), "{out}");
    assert!(
        out.contains("administered range 8000-8009: a plain bind succeeds there")
            && out.contains("on Windows Server 2008 R2, 2012 and 2012 R2 (KB 3039044)"),
        "{out}"
    );
    // In use, with the owner from the endpoint tables.
    assert_eq!(
        run(&mut p, &["why-blocked", "443"]).1,
        "tcp 443 is in use (bind fails with WSAEADDRINUSE on 0.0.0.0)\n  held by pid 4242 (web.exe) on 0.0.0.0\n  ipv4 dynamic port range: 49152-65535\n  ipv6 dynamic port range: 49152-65535\n"
    );
    // Held on [::1] only: still in use (every address is probed).
    assert!(
        run(&mut p, &["why-blocked", "1025"])
            .1
            .starts_with("tcp 1025 is in use (bind fails with WSAEADDRINUSE on [::1])")
    );
    assert!(run(&mut p, &["why-blocked", "444", "--udp"]).1.starts_with("udp 444 is free"));
    assert!(
        run(&mut p, &["why-blocked", "50000"])
            .1
            .contains("note: it is in the ipv4 dynamic port range 49152-65535")
    );
    let out = run(&mut p, &["--json", "why-blocked", "443"]).1;
    assert!(out.contains("\"result\":{\"on\":[\"0.0.0.0\"],\"owners\":[{\"local\":\"0.0.0.0\",\"pid\":4242,\"process\":\"web.exe\"}],\"verdict\":\"in-use\"}"), "{out}");
}

#[test]
fn a_port_held_on_a_specific_address_is_not_called_free() {
    let mut p = TestPlatform::new();
    // A server bound to 192.0.2.5:7070 only: a default bind to 0.0.0.0 succeeds beside it
    // (the SO_EXCLUSIVEADDRUSE tables), so every probe binds, but the endpoint table lists it.
    p.table_only = vec![7070];
    p.owners
        .push((7070, Owner { pid: 77, process: Some("db.exe".into()), local: "192.0.2.5".into() }));
    let (code, out, err) = run(&mut p, &["why-blocked", "7070"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("is free"), "{out}");
    assert!(
        out.starts_with("tcp 7070 is held by a socket on a specific address: a default bind to the wildcard succeeds beside it, but a server that binds the wildcard with SO_EXCLUSIVEADDRUSE, or that address, fails\n  held by pid 77 (db.exe) on 192.0.2.5\n"),
        "{out}"
    );
}

#[test]
fn find_free_avoids_exclusions_the_dynamic_range_and_busy_ports() {
    let mut p = TestPlatform::new();
    p.excluded =
        vec![ExcludedRange { block: PortBlock::new(1024, 5).unwrap(), administered: false }];
    // 1025 is excluded; 1029-1030 free, 1031 busy on 0.0.0.0.
    p.in_use = vec![(1031, ProbeAddr::AnyV4)];
    assert_eq!(
        run(&mut p, &["find-free", "3"]).1,
        "tcp 1032-1034 is free: outside every exclusion and the dynamic range, and not in use (reserve it: `netports reserve tcp 1032 3`, elevated)\n"
    );
    assert_eq!(
        run(&mut p, &["--json", "find-free", "2", "--udp"]).1,
        "{\"count\":2,\"end\":1030,\"protocol\":\"udp\",\"start\":1029}\n",
        "the refused ports are not free either"
    );
    let (code, _, err) = run(&mut p, &["find-free", "60000"]);
    assert_eq!(code, 6, "{err}");
    assert_eq!(run(&mut p, &["find-free", "0"]).0, 2);
    // A socket bound to one specific address (192.0.2.5:1029) lets the four probes bind
    // (Windows allows a wildcard bind beside it), but the endpoint table lists it: the port
    // is not free (a reservation of it would fail with ERROR_SHARING_VIOLATION).
    p.table_only = vec![1029];
    assert_eq!(
        run(&mut p, &["--json", "find-free", "2", "--udp"]).1,
        "{\"count\":2,\"end\":1033,\"protocol\":\"udp\",\"start\":1032}\n",
        "a port in the endpoint table is in use"
    );
}

#[test]
fn why_blocked_binds_for_real_off_windows() {
    // The bind probe is portable; the Windows-only sources are named as not consulted.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let (code, out, err) = run(&mut Unsupported, &["why-blocked", &port]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("tcp {port} is in use (bind fails with WSAEADDRINUSE on ")),
        "{out}"
    );
    assert!(out.contains("127.0.0.1"), "{out}");
    assert!(
        out.contains("(not consulted: ipv4 exclusions: listing excluded port ranges needs Windows"),
        "{out}"
    );
}

#[test]
fn acquire_reports_the_block_and_token() {
    let mut p = TestPlatform::new();
    assert_eq!(
        run(&mut p, &["acquire", "5"]).1,
        "acquired tcp 61000-61004 (token 0x000000000000abcd); released when netports exits\n"
    );
    assert!(
        run(&mut p, &["acquire", "7000", "2", "--udp", "--hold"])
            .1
            .starts_with("acquired udp 7000-7001")
    );
}

/// A platform whose driver is vsflow on the simulator, with one VM port (`vm-seven`).
fn with_driver() -> (Rc<RefCell<Host>>, TestPlatform) {
    let host = host_with_port();
    let mut p = TestPlatform::new();
    p.host = Some(Rc::clone(&host));
    (host, p)
}

/// Unloads the simulated driver and checks it broke none of the simulator's rules.
fn unload_cleanly(host: &Rc<RefCell<Host>>) {
    host.borrow_mut().unload_driver();
    assert!(host.borrow().violations().is_empty(), "{:?}", host.borrow().violations());
}

fn host_with_port() -> Rc<RefCell<Host>> {
    let mut h = Host::new(11);
    h.load_driver(vsflow_callout::DriverConfig::default()).unwrap();
    let sw = h.create_switch("SW", &[]);
    h.create_port(sw, 7, "vm-seven", false);
    h.nic_event(sw, 7, 1, fwps_sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT);
    for k in 0..3u16 {
        let syn = vsflow_sim::SimPacket::new(
            vsflow_core::IpFamily::V4,
            6,
            vsflow_core::packet::v4([10, 0, 0, 7]),
            40_000 + k,
            vsflow_core::packet::v4([198, 51, 100, 9]),
            443,
            0x02,
            0,
        );
        h.transmit(sw, 7, EXTERNAL_PORT, &syn);
    }
    Rc::new(RefCell::new(h))
}

#[test]
fn driver_commands_against_the_simulated_driver() {
    let mut p = TestPlatform::new();
    let (code, _, err) = run(&mut p, &["driver", "status"]);
    assert_eq!((code, err.contains("not installed")), (7, true));
    let host = host_with_port();
    p.host = Some(Rc::clone(&host));
    let (code, out, err) = run(&mut p, &["driver", "status"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "vsflow driver 0.1.0 (protocol 2, runtime-state format 1.2)\nrestore pended, unknown major strict, new ports monitor, 4096 flows per port, blob cap 61440 bytes\n1 VM port(s) tracked\n"
    );
    assert_eq!(
        run(&mut p, &["driver", "ports"]).1,
        "switch:port  mode     flows  nic           name\n1:7          monitor      3  connected     vm-seven\n"
    );
    let out = run(&mut p, &["driver", "flows", "vm-seven"]).1;
    assert!(out.starts_with("3 flow(s) on vm-seven\n  tcp    10.0.0.7:40000 -> 198.51.100.9:443  syn-sent  opened by vm  1/0 packets\n"), "{out}");
    assert_eq!(run(&mut p, &["driver", "mode", "1:7", "enforce"]).1, "vm-seven: mode enforce\n");
    let dir = std::env::temp_dir().join(format!("netports-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rules.txt");
    std::fs::write(&file, "allow tcp 22 from 203.0.113.0/24\nallow udp 3544\n").unwrap();
    assert_eq!(
        run(&mut p, &["driver", "rules", "7", file.to_str().unwrap()]).1,
        "vm-seven: 2 rule(s) installed (version 1)\n"
    );
    assert_eq!(
        run(&mut p, &["driver", "rules", "vm-seven"]).1,
        "# vm-seven rules, version 1\nallow tcp 22 from 203.0.113.0/24\nallow udp 3544\n"
    );
    std::fs::write(&file, "allow tcp 99-1\n").unwrap();
    // A malformed rules file is the user's input: exit 2, and not called a driver answer.
    let (code, _, err) = run(&mut p, &["driver", "rules", "7", file.to_str().unwrap()]);
    assert_eq!(
        (code, err),
        (
            2,
            format!(
                "netports: {}: line 1: port range end before start: 'allow tcp 99-1'\n",
                file.display()
            )
        )
    );
    let gone = dir.join("no-such-file.txt");
    let (code, _, err) = run(&mut p, &["driver", "rules", "7", gone.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with(&format!("netports: {}: ", gone.display())), "{err}");
    let out = run(&mut p, &["--json", "driver", "counters", "vm-seven", "--clear"]).1;
    assert!(out.contains("\"flows_created\":3"), "{out}");
    // The extended counters too: the migration split (exact, fingerprint, loose pickups).
    for name in ["restored_flows", "fingerprint_pickups", "picked_up_loose", "window_packets"] {
        assert!(out.contains(&format!("\"{name}\":")), "{name} in {out}");
    }
    assert!(
        run(&mut p, &["driver", "counters", "vm-seven"]).1.contains("flows_created            0")
    );
    // An unknown VM port is named as such, not as a missing reservation.
    let (code, _, err) = run(&mut p, &["driver", "flows", "nope"]);
    assert_eq!(
        (code, err.as_str()),
        (6, "netports: no VM port 'nope' is tracked by the driver (see `netports driver ports`)\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
    unload_cleanly(&host);
}

#[test]
fn teredo_exception_keeps_host_filters_and_leaves_vm_rules_alone() {
    let (host, mut p) = with_driver();
    p.events =
        vec![TeredoEvent::Changed { ports: vec![52_000] }, TeredoEvent::Changed { ports: vec![] }];
    let (code, out, err) = run(&mut p, &["teredo-exception"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!(
            "{NOTE}\nwatching; teredo port udp 51234; host permits (IPv4 UDP, the Teredo service only): in to 51234, out from 51234, out to 3544, in to 224.0.0.253:3544 (added 4, removed 0); kept until Ctrl-C\nteredo port changed: udp 52000; host permits (IPv4 UDP, the Teredo service only): in to 52000, out from 52000, out to 3544, in to 224.0.0.253:3544 (added 2, removed 2)\nteredo client stopped; host permits (IPv4 UDP, the Teredo service only): out to 3544, in to 224.0.0.253:3544 (added 0, removed 2)\n"
        )
    );
    assert_eq!(p.filters.count(), 2, "the two static permits stay while the command runs");
    assert_eq!(
        run(&mut p, &["driver", "rules", "vm-seven"]).1,
        "# vm-seven rules, version 0\n",
        "the VM's rules are not touched"
    );
    unload_cleanly(&host);
}

#[test]
fn a_bfe_stop_ends_the_exception_with_exit_1_and_the_reason() {
    let mut p = TestPlatform::new();
    p.bfe_stops = true;
    let (code, out, err) = run(&mut p, &["teredo-exception"]);
    assert_eq!(p.watched_with_wfp, Some(true), "the exception holds WFP objects");
    assert_eq!(code, 1);
    assert_eq!(out.lines().count(), 2, "the note and the initial event: {out}");
    assert_eq!(
        err,
        "netports: the Base Filtering Engine (BFE) stopped (stopped): Windows dropped netports' WFP filters and subscriptions with it; run the command again once BFE runs (`sc query bfe`)\n"
    );
    let (code, _, _) = run(&mut p, &["teredo", "watch"]);
    assert_eq!((code, p.watched_with_wfp), (1, Some(false)), "a plain watch holds none itself");
}

#[test]
fn a_stopped_teredo_client_says_so() {
    let mut p = TestPlatform::new();
    p.teredo_ready = false;
    let (code, out, err) = run(&mut p, &["teredo", "port"]);
    assert_eq!((code, out.as_str()), (6, ""));
    assert_eq!(
        err,
        "netports: the Teredo client is not started (it starts with IPv6 connectivity needs; `netsh interface teredo show state`)\n"
    );
    p.teredo = None;
    let out = run(&mut p, &["--json", "teredo-exception"]).1;
    assert_eq!(
        out,
        format!(
            "{{\"note\":\"{}\"}}\n{{\"added\":2,\"event\":{{\"event\":\"initial\",\"ports\":[]}},\"filters\":[{{\"direction\":\"out\",\"local_address\":null,\"local_port\":null,\"remote_port\":3544}},{{\"direction\":\"in\",\"local_address\":\"224.0.0.253\",\"local_port\":3544,\"remote_port\":null}}],\"removed\":0}}\n",
            NOTE.strip_prefix("note: ").unwrap()
        )
    );
}

#[test]
fn concurrent_rule_edits_never_lose_an_update() {
    let (host, mut p) = with_driver();
    let ssh = netports::rules_file::parse("allow tcp 22").unwrap()[0];
    // Someone adds ssh between our read and our replace: the driver refuses ours, netports
    // reads again and re-applies its edit.
    p.race.borrow_mut().push(ssh);
    let (code, out, err) = run(&mut p, &["driver", "allow", "vm-seven", "udp", "3544"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "vm-seven: allowed allow udp 3544 (version 2)\n");
    assert_eq!(
        run(&mut p, &["driver", "rules", "vm-seven"]).1,
        "# vm-seven rules, version 2\nallow tcp 22\nallow udp 3544\n",
        "both edits are there"
    );
    assert_eq!(
        run(&mut p, &["driver", "allow", "vm-seven", "udp", "3544"]).1,
        "vm-seven: already allowed: allow udp 3544\n"
    );
    assert_eq!(
        run(&mut p, &["driver", "disallow", "vm-seven", "allow", "tcp", "22"]).1,
        "vm-seven: removed allow tcp 22 (version 3)\n"
    );
    // A whole-file replace racing an edit is refused, not applied over it.
    let file = std::env::temp_dir().join(format!("netports-race-{}.txt", std::process::id()));
    std::fs::write(&file, "allow tcp 80\n").unwrap();
    p.race.borrow_mut().push(ssh);
    let (code, _, err) = run(&mut p, &["driver", "rules", "vm-seven", file.to_str().unwrap()]);
    assert_eq!(code, 5);
    assert!(err.contains("rules changed since they were read (version 3)"), "{err}");
    assert_eq!(
        run(&mut p, &["driver", "rules", "vm-seven"]).1,
        "# vm-seven rules, version 4\nallow udp 3544\nallow tcp 22\n"
    );
    let _ = std::fs::remove_file(&file);
    unload_cleanly(&host);
}

#[test]
fn an_edit_that_keeps_losing_the_race_gives_up_cleanly_and_every_other_edit_is_kept() {
    let (host, mut p) = with_driver();
    let other = |port: u16| netports::rules_file::parse(&format!("allow tcp {port}")).unwrap()[0];
    // Another editor lands a change before each of our replaces, EDIT_ATTEMPTS - 1 times: the
    // last attempt wins and nothing is lost.
    let n = u16::try_from(netports::driver::EDIT_ATTEMPTS).unwrap();
    p.race.borrow_mut().extend((1..n).map(other));
    let (code, out, err) = run(&mut p, &["driver", "allow", "vm-seven", "udp", "3544"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("vm-seven: allowed allow udp 3544 (version {n})\n"));
    let rules = run(&mut p, &["driver", "rules", "vm-seven"]).1;
    for port in 1..n {
        assert!(rules.contains(&format!("allow tcp {port}\n")), "{rules}");
    }
    // EDIT_ATTEMPTS times: netports gives up (exit 5) without replacing anything.
    p.race.borrow_mut().extend((100..100 + n).map(other));
    let (code, out, err) = run(&mut p, &["driver", "disallow", "vm-seven", "udp", "3544"]);
    assert_eq!((code, out.as_str()), (5, ""), "{err}");
    assert!(err.contains("rules changed since they were read"), "{err}");
    let rules = run(&mut p, &["driver", "rules", "vm-seven"]).1;
    assert!(rules.starts_with(&format!("# vm-seven rules, version {}\n", 2 * n)), "{rules}");
    assert!(rules.contains("allow udp 3544\n"), "our removal was not applied: {rules}");
    for port in 100..100 + n {
        assert!(rules.contains(&format!("allow tcp {port}\n")), "{rules}");
    }
    unload_cleanly(&host);
}

#[test]
fn a_port_name_two_switches_share_is_a_usage_error_that_names_the_way_out() {
    let (host, mut p) = with_driver();
    let sw2 = host.borrow_mut().create_switch("SW2", &[]);
    host.borrow_mut().create_port(sw2, 9, "vm-seven", false);
    let (code, out, err) = run(&mut p, &["driver", "rules", "vm-seven"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (2, "", "netports: 'vm-seven' names several ports; use SWITCH:PORT\n")
    );
    assert_eq!(run(&mut p, &["driver", "rules", "1:7"]).0, 0, "SWITCH:PORT picks one");
    unload_cleanly(&host);
}

#[test]
fn a_rules_file_dumped_from_another_port_is_refused_not_applied() {
    let (host, mut p) = with_driver();
    let file = std::env::temp_dir().join(format!("netports-other-{}.txt", std::process::id()));
    // A dump of another port's rules, applied to vm-seven by mistake: its header says so.
    std::fs::write(&file, "# vm-eight rules, version 3\nallow tcp 80\n").unwrap();
    let (code, out, err) = run(&mut p, &["driver", "rules", "vm-seven", file.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("is a dump of vm-eight's rules, not vm-seven's"), "{err}");
    assert_eq!(
        run(&mut p, &["driver", "rules", "vm-seven"]).1,
        "# vm-seven rules, version 0\n",
        "nothing replaced"
    );
    let _ = std::fs::remove_file(&file);
    unload_cleanly(&host);
}

#[test]
fn nsp_serve_before_install_says_not_installed() {
    let mut p = TestPlatform::new();
    let dir = std::env::temp_dir().join(format!("netports-serve-{}", std::process::id()));
    let names = dir.join("names.json");
    let (code, out, err) = run(&mut p, &["nsp", "serve", "--names-file", names.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (6, ""), "{err}");
    assert_eq!(
        err,
        "netports: the netports name provider is not installed: run `netports nsp install` from an elevated prompt first\n"
    );
}

#[test]
fn names_file_is_an_option_of_the_commands_that_use_it_only() {
    let mut p = TestPlatform::new();
    for args in [
        &["nsp", "install", "--names-file", "x.json"][..],
        &["nsp", "uninstall", "--names-file", "x.json"],
        &["nsp", "resolve", "web", "--names-file", "x.json"],
        &["nsp", "--names-file", "x.json", "install"],
    ] {
        let (code, _, err) = run(&mut p, args);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    assert!(!p.catalog.installed, "nothing was installed");
}

#[test]
fn a_rules_file_dumped_before_someone_elses_edit_is_refused_not_applied_over_it() {
    let (host, mut p) = with_driver();
    let file = std::env::temp_dir().join(format!("netports-dump-{}.txt", std::process::id()));
    // The usual workflow: dump, edit the file, apply it.
    let dump = run(&mut p, &["driver", "rules", "vm-seven"]).1;
    assert_eq!(dump, "# vm-seven rules, version 0\n");
    std::fs::write(&file, format!("{dump}allow tcp 80\n")).unwrap();
    // Meanwhile another administrator allows ssh.
    assert_eq!(
        run(&mut p, &["driver", "allow", "vm-seven", "tcp", "22"]).1,
        "vm-seven: allowed allow tcp 22 (version 1)\n"
    );
    let (code, out, err) = run(&mut p, &["driver", "rules", "vm-seven", file.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (5, ""), "{err}");
    assert!(err.contains("rules changed since they were read (version 0)"), "{err}");
    assert_eq!(
        run(&mut p, &["driver", "rules", "vm-seven"]).1,
        "# vm-seven rules, version 1\nallow tcp 22\n",
        "the other administrator's rule is kept"
    );
    // Dumped again (version 1) and edited, it applies.
    std::fs::write(&file, "# vm-seven rules, version 1\nallow tcp 22\nallow tcp 80\n").unwrap();
    assert_eq!(
        run(&mut p, &["driver", "rules", "vm-seven", file.to_str().unwrap()]).1,
        "vm-seven: 2 rule(s) installed (version 2)\n"
    );
    let _ = std::fs::remove_file(&file);
    unload_cleanly(&host);
}

#[test]
fn nsp_install_checks_the_catalog_and_explains_refusals() {
    let mut p = TestPlatform::new();
    p.catalog.install_code = Some(11_003);
    let (code, _, err) = run(&mut p, &["nsp", "install"]);
    assert_eq!(
        (code, err.as_str()),
        (
            4,
            "netports: WSCInstallNameSpaceEx: the Winsock catalog refused the change (WSANO_RECOVERY): changing the catalog needs an elevated prompt (Run as administrator)\n"
        )
    );
    p.catalog.install_code = Some(10_013);
    assert_eq!(run(&mut p, &["nsp", "install"]).0, 4);
    p.catalog.install_code = None;
    let (code, out, _) = run(&mut p, &["nsp", "install"]);
    assert_eq!(code, 0);
    assert!(out.contains("for clients of the same user and session"), "{out}");
    let (code, _, err) = run(&mut p, &["nsp", "install"]);
    assert_eq!(
        (code, err.as_str()),
        (
            5,
            "netports: the netports name provider is installed already (`netports nsp uninstall` first)\n"
        )
    );
    assert_eq!(run(&mut p, &["nsp", "uninstall"]).0, 0);
    assert_eq!(run(&mut p, &["nsp", "uninstall"]).0, 6, "not installed");
    assert_eq!(run(&mut p, &["nsp", "install", "--service"]).0, 2, "no --service");
}

#[test]
fn every_windows_only_command_says_so_off_windows() {
    let mut p = Unsupported;
    for args in [
        &["teredo", "port"][..],
        &["teredo", "watch"],
        &["teredo-exception"],
        &["reserve", "tcp", "5000", "1"],
        &["release", "udp", "5000", "1"],
        &["lookup", "tcp", "5000", "1"],
        &["list"],
        &["find-free", "4"],
        &["acquire", "4"],
        &["driver", "status"],
    ] {
        let (code, out, err) = run(&mut p, args);
        assert_eq!(code, 3, "{args:?}");
        assert!(out.is_empty());
        assert_eq!(err.lines().count(), 1, "one clear line: {err}");
        assert!(err.contains("needs Windows"), "{err}");
    }
    assert_eq!(run(&mut p, &["bogus"]).0, 2, "usage errors exit 2");
}

#[test]
fn nsp_names_are_registered_listed_and_removed_in_the_names_file() {
    let dir = std::env::temp_dir().join(format!("netports-cli-nsp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let file = dir.join("names.json");
    let f = file.to_str().unwrap();
    let mut p = Unsupported;
    let (code, out, err) =
        run(&mut p, &["nsp", "register", "Web", "tcp", "50000", "10", "--names-file", f]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("registered web -> tcp 50000-50009 (in {f})\n"));
    run(&mut p, &["nsp", "register", "dns", "udp", "5353", "1", "--names-file", f]);
    assert_eq!(
        run(&mut p, &["nsp", "names", "--names-file", f]).1,
        "name                     ports\nteredo                   udp (the Teredo client's port, built in)\ndns                      udp 5353\nweb                      tcp 50000-50009\n"
    );
    assert_eq!(
        run(&mut p, &["--json", "nsp", "names", "--names-file", f]).1,
        "{\"names\":[{\"count\":1,\"name\":\"dns\",\"protocol\":\"udp\",\"start\":5353},{\"count\":10,\"name\":\"web\",\"protocol\":\"tcp\",\"start\":50000}]}\n"
    );
    assert_eq!(
        run(&mut p, &["nsp", "unregister", "web", "--names-file", f]).1,
        "unregistered web (was tcp 50000-50009)\n"
    );
    let (code, _, err) = run(&mut p, &["nsp", "unregister", "web", "--names-file", f]);
    assert_eq!(
        (code, err.as_str()),
        (6, "netports: web is not registered (see `netports nsp names`)\n")
    );
    let (code, _, err) =
        run(&mut p, &["nsp", "register", "teredo", "udp", "1", "1", "--names-file", f]);
    assert_eq!(
        (code, err.as_str()),
        (2, "netports: 'teredo' is built in and cannot be registered or removed\n")
    );
    let (code, _, err) =
        run(&mut p, &["nsp", "register", "a b", "udp", "1", "1", "--names-file", f]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) =
        run(&mut p, &["nsp", "register", "x", "udp", "65535", "2", "--names-file", f]);
    assert_eq!(code, 2, "{err}");
    // A corrupt file is reported, kept, and blocks changes.
    std::fs::write(&file, "{broken").unwrap();
    let (code, _, err) = run(&mut p, &["nsp", "register", "x", "udp", "7", "1", "--names-file", f]);
    assert_eq!(code, 1);
    assert!(err.contains("is corrupt") && err.contains("move it aside"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "{broken");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nsp_winsock_commands_say_they_need_windows() {
    let mut p = Unsupported;
    for args in [
        &["nsp", "serve"][..],
        &["nsp", "install"],
        &["nsp", "uninstall"],
        &["nsp", "resolve", "teredo"],
        &["nsp", "names"],
    ] {
        let (code, out, err) = run(&mut p, args);
        assert_eq!((code, out.as_str()), (3, ""), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("Windows"), "{err}");
    }
}
