//! The `netports` command line.
//!
//! Argument parsing, the commands, and their human and JSON output. Everything writes to the
//! given streams and returns the exit code, so tests run the CLI against the model and the
//! simulator.
//!
//! Exit codes: 0 success; 1 an operating-system or driver error; 2 a usage error or invalid
//! port block; 3 not available on this system (not Windows, or the API is missing); 4 access
//! denied (run elevated); 5 conflict; 6 not found (or Teredo not running); 7 the vsflow driver
//! is not installed.

use std::io::Write;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use vsflow_core::Mode;

use crate::diagnose;
use crate::driver::DriverClient;
use crate::error::Error;
use crate::exception::Follower;
use crate::platform::Platform;
use crate::range::{PortBlock, Protocol, ReservationCall, parse_count, parse_port};
use crate::rules_file;
use crate::teredo::TeredoEvent;

/// `netports`: Teredo port, port reservations, bind diagnosis and vsflow driver control.
#[derive(Parser, Debug)]
#[command(
    name = "netports",
    version,
    about,
    after_help = "Exit codes: 0 ok, 1 OS/driver error, 2 usage, 3 needs Windows, 4 access denied (run elevated), 5 conflict, 6 not found, 7 driver not installed."
)]
pub struct Cli {
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// `tcp` or `udp`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProtoArg {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl From<ProtoArg> for Protocol {
    fn from(p: ProtoArg) -> Self {
        match p {
            ProtoArg::Tcp => Self::Tcp,
            ProtoArg::Udp => Self::Udp,
        }
    }
}

/// A port mode.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    /// Permit all, track all.
    Monitor,
    /// Stateful: unsolicited inbound only through allow rules.
    Enforce,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// The Teredo client's UDP port.
    Teredo {
        /// What to do.
        #[command(subcommand)]
        command: TeredoCommand,
    },
    /// Keep an allow rule for the current Teredo port (and 3544) on every VM port in vsflow.
    TeredoException {
        /// Keep following port changes until interrupted.
        #[arg(long)]
        follow: bool,
    },
    /// Create a persistent reservation (administrator).
    Reserve {
        /// tcp or udp.
        proto: ProtoArg,
        /// First port.
        start: String,
        /// Number of ports.
        count: String,
    },
    /// Delete a persistent reservation (administrator).
    Release {
        /// tcp or udp.
        proto: ProtoArg,
        /// First port.
        start: String,
        /// Number of ports.
        count: String,
    },
    /// Look a persistent reservation up (exact start and count).
    Lookup {
        /// tcp or udp.
        proto: ProtoArg,
        /// First port.
        start: String,
        /// Number of ports.
        count: String,
    },
    /// Administered reservations and excluded ranges.
    List,
    /// Why binding a port fails.
    WhyBlocked {
        /// The port.
        port: String,
        /// UDP instead of TCP.
        #[arg(long)]
        udp: bool,
    },
    /// Acquire a runtime reservation (any block of COUNT, or START COUNT).
    Acquire {
        /// `[START] COUNT`.
        #[arg(num_args = 1..=2)]
        ports: Vec<String>,
        /// UDP instead of TCP.
        #[arg(long)]
        udp: bool,
        /// Keep it until interrupted (it ends with the process otherwise).
        #[arg(long)]
        hold: bool,
    },
    /// Control the vsflow driver.
    Driver {
        /// What to do.
        #[command(subcommand)]
        command: DriverCommand,
    },
    /// The Winsock name provider: serve, install, names, resolve.
    Nsp {
        /// The names file (default: %ProgramData%\netports\nsp-names.json on Windows).
        #[arg(long, global = true)]
        names_file: Option<std::path::PathBuf>,
        /// What to do.
        #[command(subcommand)]
        command: crate::nsp::NspCommand,
    },
}

/// `netports teredo ...`.
#[derive(Subcommand, Debug)]
pub enum TeredoCommand {
    /// Print the current port.
    Port,
    /// Print port changes as they happen.
    Watch,
}

/// `netports driver ...`.
#[derive(Subcommand, Debug)]
pub enum DriverCommand {
    /// Versions, configuration, ports.
    Status,
    /// Tracked VM ports.
    Ports,
    /// Flows of a port.
    Flows {
        /// Port name, SWITCH:PORT or port id.
        port: String,
        /// Most flows to print.
        #[arg(long, default_value_t = 1000)]
        max: usize,
    },
    /// Set a port's mode.
    Mode {
        /// Port name, SWITCH:PORT or port id.
        port: String,
        /// monitor or enforce.
        mode: ModeArg,
    },
    /// Show a port's allow rules, or replace them with the rules in FILE (atomically).
    Rules {
        /// Port name, SWITCH:PORT or port id.
        port: String,
        /// A rules file (see `netports::rules_file`).
        file: Option<std::path::PathBuf>,
    },
    /// Driver-wide counters, or a port's.
    Counters {
        /// Port name, SWITCH:PORT or port id.
        port: Option<String>,
        /// Reset them.
        #[arg(long)]
        clear: bool,
    },
}

/// Runs the CLI with `args` (the first is the program name); returns the exit code.
pub fn run(
    args: &[String],
    platform: &mut dyn Platform,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            if e.use_stderr() {
                let _ = write!(err, "{e}");
                return 2;
            }
            let _ = write!(out, "{e}");
            return 0;
        }
    };
    match execute(&cli, platform, out) {
        Ok(()) => 0,
        Err(e) => {
            if cli.json {
                let _ = writeln!(
                    out,
                    "{}",
                    json!({"error": e.to_string(), "exit_code": e.exit_code()})
                );
            }
            let _ = writeln!(err, "netports: {e}");
            e.exit_code()
        }
    }
}

/// Watches Teredo events, writing the line `line` makes of each; stops when the output
/// fails (a closed pipe) and reports that failure.
fn watch_lines(
    p: &mut dyn Platform,
    out: &mut dyn Write,
    mut line: impl FnMut(TeredoEvent) -> String,
) -> Result<(), Error> {
    let mut write_err = None;
    p.teredo_watch(&mut |ev| {
        let text = line(ev);
        match writeln!(out, "{text}").and_then(|()| out.flush()) {
            Ok(()) => true,
            Err(e) => {
                write_err = Some(e);
                false
            }
        }
    })?;
    write_err.map_or(Ok(()), |e| Err(io(e)))
}

fn block(start: &str, count: &str) -> Result<PortBlock, Error> {
    PortBlock::new(parse_port(start)?, parse_count(count)?)
}

#[allow(clippy::needless_pass_by_value, reason = "used as a map_err function")]
fn io(e: std::io::Error) -> Error {
    Error::Protocol(format!("output: {e}"))
}

#[allow(clippy::too_many_lines, reason = "one arm per command")]
fn execute(cli: &Cli, p: &mut dyn Platform, out: &mut dyn Write) -> Result<(), Error> {
    let json = cli.json;
    match &cli.command {
        Command::Nsp { names_file, command } => {
            crate::nsp::execute(command, names_file.as_ref(), p, out, json)?;
        }
        Command::Teredo { command: TeredoCommand::Port } => {
            let port = p.teredo_port()?;
            if json {
                writeln!(
                    out,
                    "{}",
                    json!({"teredo_port": port, "static_port": crate::teredo::TEREDO_STATIC_PORT})
                )
                .map_err(io)?;
            } else {
                match port {
                    Some(port) => {
                        writeln!(out, "teredo client port: udp {port} (static port udp 3544)")
                            .map_err(io)?;
                    }
                    None => writeln!(out, "the Teredo client has no port (not qualified)")
                        .map_err(io)?,
                }
            }
        }
        Command::Teredo { command: TeredoCommand::Watch } => {
            watch_lines(p, out, |ev| {
                if json { serde_json::to_string(&ev).unwrap_or_default() } else { human_event(ev) }
            })?;
        }
        Command::TeredoException { follow } => {
            // The driver first: without it there is nothing to keep up to date.
            let mut follower = Follower::new(DriverClient::new(p.driver()?));
            // A stopped Teredo client has no port: keep the static 3544 rule only (and follow
            // until it starts).
            let current = match p.teredo_port() {
                Err(Error::NotReady) => None,
                other => other?,
            };
            let first = follower.on_event(TeredoEvent::Initial { port: current })?;
            let port_text =
                current.map_or_else(|| "no teredo port".to_owned(), |c| format!("udp {c}"));
            if json {
                writeln!(
                    out,
                    "{}",
                    json!({"event": "applied", "teredo_port": current, "ports_updated": first})
                )
                .map_err(io)?;
            } else {
                writeln!(out, "allow rules for udp 3544 and {port_text} kept on every VM port ({first} updated)").map_err(io)?;
            }
            if *follow {
                watch_lines(p, out, |ev| match follower.on_event(ev) {
                    Ok(n) if json => json!({"event": ev, "ports_updated": n}).to_string(),
                    Ok(n) => format!("{}: {n} port(s) updated", human_event(ev)),
                    // Keep following: the next event retries from the last applied port.
                    Err(e) if json => json!({"event": ev, "error": e.to_string()}).to_string(),
                    Err(e) => format!("{}: not applied: {e}", human_event(ev)),
                })?;
            }
        }
        Command::Reserve { proto, start, count } => {
            let b = block(start, count)?;
            let proto = Protocol::from(*proto);
            let token = p
                .reservations()?
                .create(proto, b)
                .map_err(|c| Error::from_win32(c, proto.persistent_api(ReservationCall::Create)))?;
            if json {
                writeln!(out, "{}", json!({"reserved": {"protocol": proto, "start": b.start, "count": b.count, "token": format!("{token:#018x}")}})).map_err(io)?;
            } else {
                writeln!(out, "reserved {proto} {b} (token {token:#018x}; tokens change at reboot, look them up with `netports lookup`)").map_err(io)?;
            }
        }
        Command::Release { proto, start, count } => {
            let b = block(start, count)?;
            let proto = Protocol::from(*proto);
            p.reservations()?
                .delete(proto, b)
                .map_err(|c| Error::from_win32(c, proto.persistent_api(ReservationCall::Delete)))?;
            writeln!(
                out,
                "{}",
                if json {
                    json!({"released": {"protocol": proto, "start": b.start, "count": b.count}})
                        .to_string()
                } else {
                    format!("released {proto} {b}")
                }
            )
            .map_err(io)?;
        }
        Command::Lookup { proto, start, count } => {
            let b = block(start, count)?;
            let proto = Protocol::from(*proto);
            let token = p
                .reservations()?
                .lookup(proto, b)
                .map_err(|c| Error::from_win32(c, proto.persistent_api(ReservationCall::Lookup)))?;
            writeln!(out, "{}", if json { json!({"protocol": proto, "start": b.start, "count": b.count, "token": format!("{token:#018x}")}).to_string() } else { format!("{proto} {b}: token {token:#018x}") }).map_err(io)?;
        }
        Command::List => {
            let mut rows = Vec::new();
            for proto in [Protocol::Tcp, Protocol::Udp] {
                let reserved = p.administered(proto)?;
                let excluded = p.excluded(proto)?;
                for b in &reserved {
                    rows.push((proto, *b, "reserved"));
                }
                for e in excluded.iter().filter(|e| !reserved.contains(&e.block)) {
                    rows.push((
                        proto,
                        e.block,
                        if e.administered { "reserved" } else { "excluded (no owner: WinNAT/HNS)" },
                    ));
                }
            }
            rows.sort();
            if json {
                let v: Vec<_> = rows.iter().map(|(proto, b, kind)| json!({"protocol": proto, "start": b.start, "end": b.end(), "kind": kind})).collect();
                writeln!(out, "{}", json!({"ranges": v})).map_err(io)?;
            } else {
                writeln!(out, "proto  ports          kind").map_err(io)?;
                for (proto, b, kind) in rows {
                    writeln!(out, "{:<6} {:<14} {kind}", proto.name(), b.to_string())
                        .map_err(io)?;
                }
            }
        }
        Command::WhyBlocked { port, udp } => {
            let port = parse_port(port)?;
            let proto = if *udp { Protocol::Udp } else { Protocol::Tcp };
            let reserved = p.administered(proto)?;
            let excluded = p.excluded(proto)?;
            let bind = p.try_bind(proto, port);
            let verdict = diagnose::why_blocked(port, &reserved, &excluded, bind);
            if json {
                writeln!(out, "{}", json!({"protocol": proto, "port": port, "result": verdict, "explanation": verdict.explain(proto, port)})).map_err(io)?;
            } else {
                writeln!(out, "{}", verdict.explain(proto, port)).map_err(io)?;
            }
        }
        Command::Acquire { ports, udp, hold } => {
            let (start, count) = match ports.as_slice() {
                [count] => (None, parse_count(count)?),
                [start, count] => {
                    let b = block(start, count)?;
                    (Some(b.start), b.count)
                }
                _ => return Err(Error::InvalidRange { why: "expected [START] COUNT" }),
            };
            let proto = if *udp { Protocol::Udp } else { Protocol::Tcp };
            let a = p.acquire(proto, start, count)?;
            writeln!(out, "{}", if json { json!({"acquired": {"protocol": proto, "start": a.block.start, "count": a.block.count, "token": format!("{:#018x}", a.token)}}).to_string() } else { format!("acquired {proto} {} (token {:#018x}){}", a.block, a.token, if *hold { "; holding until Ctrl-C" } else { "; released when netports exits" }) }).map_err(io)?;
            out.flush().map_err(io)?;
            if *hold {
                p.hold();
            }
        }
        Command::Driver { command } => driver_command(command, json, p, out)?,
    }
    Ok(())
}

fn human_event(ev: TeredoEvent) -> String {
    match ev {
        TeredoEvent::Initial { port: Some(p) } => format!("watching; teredo port udp {p}"),
        TeredoEvent::Initial { port: None } => "watching; the Teredo client has no port".to_owned(),
        TeredoEvent::Changed { port: Some(p) } => format!("teredo port changed: udp {p}"),
        TeredoEvent::Changed { port: None } => "teredo client stopped".to_owned(),
    }
}

fn mode_name(m: Mode) -> &'static str {
    m.name()
}

#[allow(clippy::too_many_lines, reason = "one arm per driver command")]
fn driver_command(
    command: &DriverCommand,
    json: bool,
    p: &mut dyn Platform,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let mut client = DriverClient::new(p.driver()?);
    match command {
        DriverCommand::Status => {
            let v = client.version()?;
            let c = client.config()?;
            let ports = client.ports()?;
            if json {
                writeln!(out, "{}", json!({
                    "protocol": v.protocol,
                    "driver_version": format!("{}.{}.{}", v.driver[0], v.driver[1], v.driver[2]),
                    "blob_format": format!("{}.{}", v.format[0], v.format[1]),
                    "config": {"restore_mode": if c.restore_mode == 0 { "pending" } else { "sync" }, "unknown_major": if c.unknown_major == 0 { "strict" } else { "lenient" }, "default_mode": mode_name(c.default_mode), "flows_per_port": c.flows_per_port, "blob_cap": c.blob_cap},
                    "ports": ports.len(),
                })).map_err(io)?;
            } else {
                writeln!(
                    out,
                    "vsflow driver {}.{}.{} (protocol {}, runtime-state format {}.{})",
                    v.driver[0], v.driver[1], v.driver[2], v.protocol, v.format[0], v.format[1]
                )
                .map_err(io)?;
                writeln!(out, "restore {}, unknown major {}, new ports {}, {} flows per port, blob cap {} bytes", if c.restore_mode == 0 { "pended" } else { "synchronous" }, if c.unknown_major == 0 { "strict" } else { "lenient" }, mode_name(c.default_mode), c.flows_per_port, c.blob_cap).map_err(io)?;
                writeln!(out, "{} VM port(s) tracked", ports.len()).map_err(io)?;
            }
        }
        DriverCommand::Ports => {
            let ports = client.ports()?;
            if json {
                let v: Vec<_> = ports.iter().map(|p| json!({"name": p.name.to_string(), "switch_id": p.port.switch_id, "port_id": p.port.port_id, "mode": mode_name(p.mode), "flows": p.flow_count, "rules_version": p.rules_version, "nic_connected": p.nic_connected})).collect();
                writeln!(out, "{}", json!({"ports": v})).map_err(io)?;
            } else {
                writeln!(out, "switch:port  mode     flows  nic           name").map_err(io)?;
                for p in ports {
                    writeln!(
                        out,
                        "{:<12} {:<8} {:>5}  {:<13} {}",
                        format!("{}:{}", p.port.switch_id, p.port.port_id),
                        mode_name(p.mode),
                        p.flow_count,
                        if p.nic_connected { "connected" } else { "disconnected" },
                        p.name
                    )
                    .map_err(io)?;
                }
            }
        }
        DriverCommand::Flows { port, max } => {
            let info = client.find_port(port)?;
            let flows = client.flows(info.port, *max)?;
            if json {
                let v: Vec<_> = flows.iter().map(flow_json).collect();
                writeln!(out, "{}", json!({"port": info.name.to_string(), "flows": v}))
                    .map_err(io)?;
            } else {
                writeln!(out, "{} flow(s) on {}", flows.len(), info.name).map_err(io)?;
                for f in &flows {
                    writeln!(out, "  {}", flow_line(f)).map_err(io)?;
                }
            }
        }
        DriverCommand::Mode { port, mode } => {
            let info = client.find_port(port)?;
            let m = match mode {
                ModeArg::Monitor => Mode::Monitor,
                ModeArg::Enforce => Mode::Enforce,
            };
            client.set_mode(info.port, m)?;
            writeln!(
                out,
                "{}",
                if json {
                    json!({"port": info.name.to_string(), "mode": mode_name(m)}).to_string()
                } else {
                    format!("{}: mode {}", info.name, mode_name(m))
                }
            )
            .map_err(io)?;
        }
        DriverCommand::Rules { port, file } => {
            let info = client.find_port(port)?;
            if let Some(file) = file {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| Error::Protocol(format!("{}: {e}", file.display())))?;
                let rules = rules_file::parse(&text)
                    .map_err(|e| Error::Protocol(format!("{}: {e}", file.display())))?;
                let version = client.replace_rules(info.port, &rules)?;
                writeln!(out, "{}", if json { json!({"port": info.name.to_string(), "rules": rules.len(), "version": version}).to_string() } else { format!("{}: {} rule(s) installed (version {version})", info.name, rules.len()) }).map_err(io)?;
            } else {
                let (version, rules) = client.rules(info.port)?;
                if json {
                    let v: Vec<_> = rules.iter().map(rules_file::format).collect();
                    writeln!(
                        out,
                        "{}",
                        json!({"port": info.name.to_string(), "version": version, "rules": v})
                    )
                    .map_err(io)?;
                } else {
                    writeln!(out, "# {} rules, version {version}", info.name).map_err(io)?;
                    for r in &rules {
                        writeln!(out, "{}", rules_file::format(r)).map_err(io)?;
                    }
                }
            }
        }
        DriverCommand::Counters { port, clear } => {
            let target = match port {
                Some(spec) => Some(client.find_port(spec)?.port),
                None => None,
            };
            let values = client.counters(target)?;
            if *clear {
                client.clear_counters(target)?;
            }
            if json {
                let map: serde_json::Map<String, serde_json::Value> =
                    values.iter().map(|(n, v)| ((*n).to_owned(), json!(v))).collect();
                writeln!(out, "{}", serde_json::Value::Object(map)).map_err(io)?;
            } else {
                for (n, v) in values {
                    writeln!(out, "{n:<24} {v}").map_err(io)?;
                }
                if *clear {
                    writeln!(out, "(cleared)").map_err(io)?;
                }
            }
        }
    }
    Ok(())
}

fn addr(f: vsflow_core::IpFamily, a: &[u8; 16]) -> String {
    match f {
        vsflow_core::IpFamily::V4 => std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string(),
        vsflow_core::IpFamily::V6 => std::net::Ipv6Addr::from(*a).to_string(),
    }
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        n => n.to_string(),
    }
}

fn flow_line(f: &vsflow_core::codec::SavedFlow) -> String {
    let k = &f.key;
    let opener = if f.opener == vsflow_core::Opener::Vm { "vm" } else { "remote" };
    format!(
        "{:<6} {}:{} -> {}:{}  {}  opened by {opener}  {}/{} packets",
        proto_name(k.protocol),
        addr(k.family, &k.local_addr),
        k.local_port,
        addr(k.family, &k.remote_addr),
        k.remote_port,
        f.state.name(),
        f.packets[0],
        f.packets[1]
    )
}

fn flow_json(f: &vsflow_core::codec::SavedFlow) -> serde_json::Value {
    let k = &f.key;
    json!({
        "protocol": proto_name(k.protocol),
        "local": format!("{}:{}", addr(k.family, &k.local_addr), k.local_port),
        "remote": format!("{}:{}", addr(k.family, &k.remote_addr), k.remote_port),
        "state": f.state.name(),
        "opener": if f.opener == vsflow_core::Opener::Vm { "vm" } else { "remote" },
        "packets": {"out": f.packets[0], "in": f.packets[1]},
        "bytes": {"out": f.bytes[0], "in": f.bytes[1]},
        "idle_ms": f.last_age / 10_000,
    })
}
