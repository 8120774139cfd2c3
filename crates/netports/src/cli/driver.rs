//! `netports driver ...`: vsflow.sys control over its IOCTL protocol.

use clap::Subcommand;
use serde_json::json;
use vsflow_core::{AllowRule, Mode};

use super::args::ModeArg;
use super::output::Printer;
use crate::driver::DriverClient;
use crate::error::Error;
use crate::platform::Platform;
use crate::rules_file;

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
    /// Show a port's allow rules, or replace them with the rules in FILE (atomically, and only
    /// if nobody changed them since they were read: since the dump whose header FILE keeps,
    /// else since just now).
    Rules {
        /// Port name, SWITCH:PORT or port id.
        port: String,
        /// A rules file (see `netports::rules_file`).
        file: Option<std::path::PathBuf>,
    },
    /// Add one allow rule to a port's rules (kept if someone edits them at the same time).
    Allow {
        /// Port name, SWITCH:PORT or port id.
        port: String,
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
        /// The rule, in the rules-file syntax (for example `tcp 22 from 203.0.113.0/24`; a leading `allow` is optional).
        rule: Vec<String>,
    },
    /// Remove one allow rule from a port's rules (kept if someone edits them at the same time).
    Disallow {
        /// Port name, SWITCH:PORT or port id.
        port: String,
        /// The rule, in the rules-file syntax.
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
        rule: Vec<String>,
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

fn one_rule(words: &[String]) -> Result<AllowRule, Error> {
    let mut text = words.join(" ");
    if !text.trim_start().starts_with("allow") {
        text = format!("allow {text}");
    }
    match rules_file::parse(&text)
        .map_err(|e| Error::Invalid(format!("rule '{text}': {e}")))?
        .as_slice()
    {
        [rule] => Ok(*rule),
        _ => Err(Error::Invalid(format!("'{text}' is not one rule (see `netports::rules_file`)"))),
    }
}

/// Runs `netports driver ...`.
///
/// # Errors
/// What the command met; see [`Error::exit_code`].
#[allow(clippy::too_many_lines, reason = "one arm per driver command")]
pub fn execute(
    command: &DriverCommand,
    p: &mut dyn Platform,
    out: &mut Printer<'_>,
) -> Result<(), Error> {
    let mut client = DriverClient::new(p.driver()?);
    match command {
        DriverCommand::Status => {
            let v = client.version()?;
            let c = client.config()?;
            let ports = client.ports()?;
            let restore = if c.restore_mode == 0 { "pending" } else { "sync" };
            let unknown = if c.unknown_major == 0 { "strict" } else { "lenient" };
            out.emit(
                || json!({
                    "protocol": v.protocol,
                    "driver_version": format!("{}.{}.{}", v.driver[0], v.driver[1], v.driver[2]),
                    "blob_format": format!("{}.{}", v.format[0], v.format[1]),
                    "config": {"restore_mode": restore, "unknown_major": unknown, "default_mode": c.default_mode.name(), "flows_per_port": c.flows_per_port, "blob_cap": c.blob_cap},
                    "ports": ports.len(),
                }),
                || [
                    format!("vsflow driver {}.{}.{} (protocol {}, runtime-state format {}.{})", v.driver[0], v.driver[1], v.driver[2], v.protocol, v.format[0], v.format[1]),
                    format!("restore {}, unknown major {unknown}, new ports {}, {} flows per port, blob cap {} bytes", if c.restore_mode == 0 { "pended" } else { "synchronous" }, c.default_mode.name(), c.flows_per_port, c.blob_cap),
                    format!("{} VM port(s) tracked", ports.len()),
                ],
            )
        }
        DriverCommand::Ports => {
            let ports = client.ports()?;
            out.emit(
                || {
                    let v: Vec<_> = ports.iter().map(|p| json!({"name": p.name.to_string(), "switch_id": p.port.switch_id, "port_id": p.port.port_id, "mode": p.mode.name(), "flows": p.flow_count, "rules_version": p.rules_version, "nic_connected": p.nic_connected})).collect();
                    json!({"ports": v})
                },
                || {
                    let mut lines = vec!["switch:port  mode     flows  nic           name".to_owned()];
                    lines.extend(ports.iter().map(|p| {
                        format!(
                            "{:<12} {:<8} {:>5}  {:<13} {}",
                            format!("{}:{}", p.port.switch_id, p.port.port_id),
                            p.mode.name(),
                            p.flow_count,
                            if p.nic_connected { "connected" } else { "disconnected" },
                            p.name
                        )
                    }));
                    lines
                },
            )
        }
        DriverCommand::Flows { port, max } => {
            let info = client.find_port(port)?;
            let flows = client.flows(info.port, *max)?;
            out.emit(
                || json!({"port": info.name.to_string(), "flows": flows.iter().map(flow_json).collect::<Vec<_>>()}),
                || {
                    let mut lines = vec![format!("{} flow(s) on {}", flows.len(), info.name)];
                    lines.extend(flows.iter().map(|f| format!("  {}", flow_line(f))));
                    lines
                },
            )
        }
        DriverCommand::Mode { port, mode } => {
            let info = client.find_port(port)?;
            let m = Mode::from(*mode);
            client.set_mode(info.port, m)?;
            out.line(
                || json!({"port": info.name.to_string(), "mode": m.name()}),
                || format!("{}: mode {}", info.name, m.name()),
            )
        }
        DriverCommand::Rules { port, file: Some(file) } => {
            let info = client.find_port(port)?;
            // The file is the user's input: unreadable or malformed is exit 2.
            let text = std::fs::read_to_string(file)
                .map_err(|e| Error::Invalid(format!("{}: {e}", file.display())))?;
            let rules = rules_file::parse(&text)
                .map_err(|e| Error::Invalid(format!("{}: {e}", file.display())))?;
            // A dump's header names the version it was read at: someone else's edit since
            // then is refused, not overwritten. Without one, replace what is there now (a
            // concurrent edit between this read and the replace is still refused).
            let name = info.name.to_string();
            let read = match rules_file::dump_header(&text) {
                Some((port, version)) if port == name => version,
                Some((other, _)) => {
                    return Err(Error::Invalid(format!(
                        "{}: is a dump of {other}'s rules, not {name}'s: nothing replaced (dump {name}'s with `netports driver rules {name}`)",
                        file.display()
                    )));
                }
                None => client.rules(info.port)?.0,
            };
            let version = client.replace_rules(info.port, read, &rules)?;
            out.line(
                || json!({"port": info.name.to_string(), "rules": rules.len(), "version": version}),
                || format!("{}: {} rule(s) installed (version {version})", info.name, rules.len()),
            )
        }
        DriverCommand::Rules { port, file: None } => {
            let info = client.find_port(port)?;
            let (version, rules) = client.rules(info.port)?;
            out.emit(
                || json!({"port": info.name.to_string(), "version": version, "rules": rules.iter().map(rules_file::format).collect::<Vec<_>>()}),
                || {
                    let mut lines = vec![rules_file::header(&info.name.to_string(), version)];
                    lines.extend(rules.iter().map(rules_file::format));
                    lines
                },
            )
        }
        DriverCommand::Allow { port, rule } | DriverCommand::Disallow { port, rule } => {
            let add = matches!(command, DriverCommand::Allow { .. });
            let rule = one_rule(rule)?;
            let info = client.find_port(port)?;
            let result = client.edit_rules(info.port, |rules| {
                let mut next: Vec<AllowRule> =
                    rules.iter().copied().filter(|r| *r != rule).collect();
                if add {
                    next.push(rule);
                }
                Ok(next)
            })?;
            let text = rules_file::format(&rule);
            let (verb, version) = match (add, result) {
                (true, Some((v, _))) => ("allowed", Some(v)),
                (false, Some((v, _))) => ("removed", Some(v)),
                (true, None) => ("already allowed", None),
                (false, None) => ("was not allowed", None),
            };
            out.line(
                || json!({"port": info.name.to_string(), "rule": text, "result": verb, "version": version}),
                || match version {
                    Some(v) => format!("{}: {verb} {text} (version {v})", info.name),
                    None => format!("{}: {verb}: {text}", info.name),
                },
            )
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
            out.emit(
                || {
                    let map: serde_json::Map<String, serde_json::Value> =
                        values.iter().map(|(n, v)| ((*n).to_owned(), json!(v))).collect();
                    serde_json::Value::Object(map)
                },
                || {
                    let mut lines: Vec<String> =
                        values.iter().map(|(n, v)| format!("{n:<24} {v}")).collect();
                    if *clear {
                        lines.push("(cleared)".to_owned());
                    }
                    lines
                },
            )
        }
    }
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
