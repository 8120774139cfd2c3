//! The CLI end to end: every command against the model of Windows' documented behaviour and,
//! for driver control, against vsflow running on the simulator. Output is compared exactly
//! (human and JSON), so a change in what users read shows up here.

use std::cell::RefCell;
use std::rc::Rc;

use netports::cli;
use netports::diagnose::BindOutcome;
use netports::driver::{IoctlReply, Transport};
use netports::excluded::ExcludedRange;
use netports::model::{Model, Reservations};
use netports::platform::{Acquired, Platform, Unsupported};
use netports::teredo::TeredoEvent;
use netports::{Error, PortBlock, Protocol};
use vsflow_sim::Host;
use vsflow_sim::host::EXTERNAL_PORT;

struct SimTransport(Rc<RefCell<Host>>);

impl Transport for SimTransport {
    fn ioctl(&mut self, code: u32, input: &[u8], output_len: usize) -> Result<IoctlReply, Error> {
        let (o, output) = self.0.borrow().ioctl(code, input, output_len);
        Ok(IoctlReply { status: o.status, information: o.information, output })
    }
}

struct TestPlatform {
    teredo: Option<u16>,
    /// `false`: the Teredo client is not started (`ERROR_NOT_READY`).
    teredo_ready: bool,
    events: Vec<TeredoEvent>,
    model: Model,
    excluded: Vec<ExcludedRange>,
    in_use: Vec<u16>,
    host: Option<Rc<RefCell<Host>>>,
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
            in_use: vec![443],
            host: None,
        }
    }
}

impl Platform for TestPlatform {
    fn os(&self) -> &'static str {
        "model"
    }
    fn teredo_port(&mut self) -> Result<Option<u16>, Error> {
        if self.teredo_ready { Ok(self.teredo) } else { Err(Error::NotReady) }
    }
    fn teredo_watch(&mut self, on_event: &mut dyn FnMut(TeredoEvent) -> bool) -> Result<(), Error> {
        for ev in
            std::iter::once(TeredoEvent::Initial { port: self.teredo }).chain(self.events.drain(..))
        {
            if !on_event(ev) {
                break;
            }
        }
        Ok(())
    }
    fn reservations(&mut self) -> Result<&mut dyn Reservations, Error> {
        Ok(&mut self.model)
    }
    fn administered(&mut self, proto: Protocol) -> Result<Vec<PortBlock>, Error> {
        Ok(self.model.list().filter(|(p, _)| *p == proto).map(|(_, b)| b).collect())
    }
    fn excluded(&mut self, proto: Protocol) -> Result<Vec<ExcludedRange>, Error> {
        Ok(if proto == Protocol::Tcp { self.excluded.clone() } else { Vec::new() })
    }
    fn try_bind(&mut self, _: Protocol, port: u16) -> BindOutcome {
        if self.in_use.contains(&port) {
            BindOutcome::InUse
        } else if self.excluded.iter().any(|e| e.block.contains(port)) {
            BindOutcome::AccessDenied
        } else {
            BindOutcome::Bound
        }
    }
    fn acquire(&mut self, _: Protocol, start: Option<u16>, count: u16) -> Result<Acquired, Error> {
        Ok(Acquired { block: PortBlock::new(start.unwrap_or(61_000), count)?, token: 0xABCD })
    }
    fn hold(&mut self) {}
    fn driver(&mut self) -> Result<Box<dyn Transport>, Error> {
        self.host
            .clone()
            .map(|h| Box::new(SimTransport(h)) as Box<dyn Transport>)
            .ok_or(Error::DriverNotInstalled)
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
        (0, "teredo client port: udp 51234 (static port udp 3544)\n".into(), String::new())
    );
    assert_eq!(
        run(&mut p, &["--json", "teredo", "port"]).1,
        "{\"static_port\":3544,\"teredo_port\":51234}\n"
    );
    p.events =
        vec![TeredoEvent::Changed { port: Some(52_000) }, TeredoEvent::Changed { port: None }];
    let (code, out, _) = run(&mut p, &["teredo", "watch"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "watching; teredo port udp 51234\nteredo port changed: udp 52000\nteredo client stopped\n"
    );
    p.events = vec![TeredoEvent::Changed { port: Some(52_001) }];
    let out = run(&mut p, &["--json", "teredo", "watch"]).1;
    assert_eq!(
        out,
        "{\"event\":\"initial\",\"port\":51234}\n{\"event\":\"changed\",\"port\":52001}\n"
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
fn list_and_why_blocked() {
    let mut p = TestPlatform::new();
    run(&mut p, &["reserve", "tcp", "8000", "10"]);
    let (_, out, _) = run(&mut p, &["list"]);
    assert_eq!(
        out,
        "proto  ports          kind\ntcp    8000-8009      reserved\ntcp    49709-49808    excluded (no owner: WinNAT/HNS)\n"
    );
    let (_, out, _) = run(&mut p, &["--json", "list"]);
    assert_eq!(
        out,
        "{\"ranges\":[{\"end\":8009,\"kind\":\"reserved\",\"protocol\":\"tcp\",\"start\":8000},{\"end\":49808,\"kind\":\"excluded (no owner: WinNAT/HNS)\",\"protocol\":\"tcp\",\"start\":49709}]}\n"
    );
    assert!(
        run(&mut p, &["why-blocked", "49720"])
            .1
            .starts_with("tcp 49720 is in the excluded range 49709-49808 with no owner")
    );
    assert!(
        run(&mut p, &["why-blocked", "8001"])
            .1
            .starts_with("tcp 8001 is in the persistent reservation 8000-8009")
    );
    assert_eq!(run(&mut p, &["why-blocked", "443"]).1, "tcp 443 is in use by another socket\n");
    assert_eq!(run(&mut p, &["why-blocked", "444", "--udp"]).1, "udp 444 is free\n");
    let out = run(&mut p, &["--json", "why-blocked", "443"]).1;
    assert!(out.contains("\"result\":{\"verdict\":\"in-use\"}"), "{out}");
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
        "vsflow driver 0.1.0 (protocol 1, runtime-state format 1.0)\nrestore pended, unknown major strict, new ports monitor, 4096 flows per port, blob cap 61440 bytes\n1 VM port(s) tracked\n"
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
    let (code, _, err) = run(&mut p, &["driver", "rules", "7", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("line 1: port range end before start"), "{err}");
    let out = run(&mut p, &["--json", "driver", "counters", "vm-seven", "--clear"]).1;
    assert!(out.contains("\"flows_created\":3"), "{out}");
    assert!(
        run(&mut p, &["driver", "counters", "vm-seven"]).1.contains("flows_created            0")
    );
    let (code, _, err) = run(&mut p, &["driver", "flows", "nope"]);
    assert_eq!((code, err.contains("not found")), (6, true));
    let _ = std::fs::remove_dir_all(&dir);
    host.borrow_mut().unload_driver();
    assert!(host.borrow().violations().is_empty());
}

#[test]
fn teredo_exception_follows_port_changes_in_the_driver() {
    let host = host_with_port();
    let mut p = TestPlatform::new();
    p.host = Some(Rc::clone(&host));
    std::fs::write(std::env::temp_dir().join("netports-ex.txt"), "allow tcp 22\n").unwrap();
    run(
        &mut p,
        &[
            "driver",
            "rules",
            "vm-seven",
            std::env::temp_dir().join("netports-ex.txt").to_str().unwrap(),
        ],
    );
    p.events = vec![
        TeredoEvent::Changed { port: Some(52_000) },
        TeredoEvent::Changed { port: Some(52_000) },
        TeredoEvent::Changed { port: None },
    ];
    let (code, out, _) = run(&mut p, &["teredo-exception", "--follow"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "allow rules for udp 3544 and udp 51234 kept on every VM port (1 updated)\nwatching; teredo port udp 51234: 0 port(s) updated\nteredo port changed: udp 52000: 1 port(s) updated\nteredo port changed: udp 52000: 0 port(s) updated\nteredo client stopped: 1 port(s) updated\n"
    );
    assert_eq!(
        run(&mut p, &["driver", "rules", "vm-seven"]).1,
        "# vm-seven rules, version 4\nallow tcp 22\nallow udp 3544\n"
    );
    host.borrow_mut().unload_driver();
}

#[test]
fn a_stopped_teredo_client_keeps_the_static_rule_and_says_so() {
    let mut p = TestPlatform::new();
    p.teredo_ready = false;
    let (code, out, err) = run(&mut p, &["teredo", "port"]);
    assert_eq!((code, out.as_str()), (6, ""));
    assert_eq!(
        err,
        "netports: the Teredo client is not started (it starts with IPv6 connectivity needs; `netsh interface teredo show state`)\n"
    );
    let (code, _, err) = run(&mut p, &["teredo-exception"]);
    assert_eq!((code, err.contains("driver is not installed")), (7, true), "driver first");
    let host = host_with_port();
    p.host = Some(Rc::clone(&host));
    let (code, out, err) = run(&mut p, &["teredo-exception"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "allow rules for udp 3544 and no teredo port kept on every VM port (1 updated)\n"
    );
    assert_eq!(
        run(&mut p, &["driver", "rules", "vm-seven"]).1,
        "# vm-seven rules, version 1\nallow udp 3544\n"
    );
    host.borrow_mut().unload_driver();
    assert!(host.borrow().violations().is_empty());
}

#[test]
fn every_windows_only_command_says_so_off_windows() {
    let mut p = Unsupported;
    for args in [
        &["teredo", "port"][..],
        &["teredo", "watch"],
        &["teredo-exception", "--follow"],
        &["reserve", "tcp", "5000", "1"],
        &["release", "udp", "5000", "1"],
        &["lookup", "tcp", "5000", "1"],
        &["list"],
        &["why-blocked", "80"],
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
        run(&mut p, &["nsp", "--names-file", f, "register", "Web", "tcp", "50000", "10"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("registered web -> tcp 50000-50009 (in {f})\n"));
    run(&mut p, &["nsp", "--names-file", f, "register", "dns", "udp", "5353", "1"]);
    assert_eq!(
        run(&mut p, &["nsp", "--names-file", f, "names"]).1,
        "name                     ports\nteredo                   udp (the Teredo client's port, built in)\ndns                      udp 5353\nweb                      tcp 50000-50009\n"
    );
    assert_eq!(
        run(&mut p, &["--json", "nsp", "--names-file", f, "names"]).1,
        "{\"names\":[{\"count\":1,\"name\":\"dns\",\"protocol\":\"udp\",\"start\":5353},{\"count\":10,\"name\":\"web\",\"protocol\":\"tcp\",\"start\":50000}]}\n"
    );
    assert_eq!(
        run(&mut p, &["nsp", "--names-file", f, "unregister", "web"]).1,
        "unregistered web (was tcp 50000-50009)\n"
    );
    let (code, _, err) = run(&mut p, &["nsp", "--names-file", f, "unregister", "web"]);
    assert_eq!(
        (code, err.as_str()),
        (6, "netports: web is not registered (see `netports nsp names`)\n")
    );
    let (code, _, err) =
        run(&mut p, &["nsp", "--names-file", f, "register", "teredo", "udp", "1", "1"]);
    assert_eq!(
        (code, err.as_str()),
        (2, "netports: 'teredo' is built in and cannot be registered or removed\n")
    );
    let (code, _, err) =
        run(&mut p, &["nsp", "--names-file", f, "register", "a b", "udp", "1", "1"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) =
        run(&mut p, &["nsp", "--names-file", f, "register", "x", "udp", "65535", "2"]);
    assert_eq!(code, 2, "{err}");
    // A corrupt file is reported, kept, and blocks changes.
    std::fs::write(&file, "{broken").unwrap();
    let (code, _, err) = run(&mut p, &["nsp", "--names-file", f, "register", "x", "udp", "7", "1"]);
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
