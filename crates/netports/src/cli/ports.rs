//! `netports reserve|release|lookup|list|why-blocked|find-free|acquire`: port reservations and
//! why a port cannot be bound.

use clap::Subcommand;
use serde_json::json;

use super::args::{ProtoArg, udp_flag};
use super::output::Printer;
use crate::diagnose::{self, BindOutcome, Owner, ProbeAddr, Ranges};
use crate::error::Error;
use crate::excluded::Family;
use crate::platform::Platform;
use crate::range::{
    PortBlock, Protocol, ReservationCall, block, parse_count, parse_port, persistent_api,
};

/// The port commands.
#[derive(Subcommand, Debug)]
pub enum PortsCommand {
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
    /// Administered reservations, excluded ranges (IPv4 and IPv6) and the dynamic port range.
    List,
    /// Why binding a port fails: binds it on the IPv4 and IPv6 wildcard and loopback addresses, then names
    /// the socket, exclusion or reservation responsible.
    WhyBlocked {
        /// The port.
        port: String,
        /// UDP instead of TCP.
        #[arg(long)]
        udp: bool,
    },
    /// A block of COUNT ports outside every exclusion and the dynamic range, and not in use.
    FindFree {
        /// Number of ports.
        count: String,
        /// UDP instead of TCP.
        #[arg(long)]
        udp: bool,
    },
    /// Acquire a runtime reservation: `acquire COUNT` (any block of COUNT ports) or
    /// `acquire START COUNT` (that block). It lasts while netports runs.
    #[command(override_usage = "netports acquire [--udp] [--hold] [START] COUNT")]
    Acquire {
        /// `[START] COUNT`: the first port (optional) and the number of ports.
        #[arg(num_args = 1..=2, required = true, value_name = "[START] COUNT")]
        ports: Vec<String>,
        /// UDP instead of TCP.
        #[arg(long)]
        udp: bool,
        /// Keep it until interrupted (Ctrl-C).
        #[arg(long)]
        hold: bool,
    },
}

/// Runs a port command.
///
/// # Errors
/// What the command met; see [`Error::exit_code`].
pub fn execute(
    command: &PortsCommand,
    p: &mut dyn Platform,
    out: &mut Printer<'_>,
) -> Result<(), Error> {
    match command {
        PortsCommand::Reserve { proto, start, count } => {
            let (proto, b) = (Protocol::from(*proto), block(start, count)?);
            let token = p.reservations()?.create(proto, b).map_err(|c| {
                Error::from_win32(c, persistent_api(proto, ReservationCall::Create))
            })?;
            out.line(
                || json!({"reserved": {"protocol": proto, "start": b.start, "count": b.count, "token": format!("{token:#018x}")}}),
                || format!("reserved {proto} {b} (token {token:#018x}; tokens change at reboot, look them up with `netports lookup`)"),
            )
        }
        PortsCommand::Release { proto, start, count } => {
            let (proto, b) = (Protocol::from(*proto), block(start, count)?);
            p.reservations()?.delete(proto, b).map_err(|c| {
                Error::from_win32(c, persistent_api(proto, ReservationCall::Delete))
            })?;
            out.line(
                || json!({"released": {"protocol": proto, "start": b.start, "count": b.count}}),
                || format!("released {proto} {b}"),
            )
        }
        PortsCommand::Lookup { proto, start, count } => {
            let (proto, b) = (Protocol::from(*proto), block(start, count)?);
            let token = p.reservations()?.lookup(proto, b).map_err(|c| {
                Error::from_win32(c, persistent_api(proto, ReservationCall::Lookup))
            })?;
            out.line(
                || json!({"protocol": proto, "start": b.start, "count": b.count, "token": format!("{token:#018x}")}),
                || format!("{proto} {b}: token {token:#018x}"),
            )
        }
        PortsCommand::List => list(p, out),
        PortsCommand::WhyBlocked { port, udp } => {
            why_blocked(p, out, udp_flag(*udp), parse_port(port)?)
        }
        PortsCommand::FindFree { count, udp } => {
            find_free(p, out, udp_flag(*udp), parse_count(count)?)
        }
        PortsCommand::Acquire { ports, udp, hold } => {
            let (start, count) = match ports.as_slice() {
                [count] => (None, parse_count(count)?),
                [start, count] => {
                    let b = block(start, count)?;
                    (Some(b.start), b.count)
                }
                _ => return Err(Error::InvalidRange { why: "expected [START] COUNT" }),
            };
            let proto = udp_flag(*udp);
            let a = p.acquire(proto, start, count)?;
            out.line(
                || json!({"acquired": {"protocol": proto, "start": a.block.start, "count": a.block.count, "token": format!("{:#018x}", a.token)}}),
                || format!("acquired {proto} {} (token {:#018x}){}", a.block, a.token, if *hold { "; holding until Ctrl-C" } else { "; released when netports exits" }),
            )?;
            if *hold {
                p.hold();
            }
            Ok(())
        }
    }
}

const FAMILIES: [Family; 2] = [Family::Ipv4, Family::Ipv6];

fn list(p: &mut dyn Platform, out: &mut Printer<'_>) -> Result<(), Error> {
    let mut rows: Vec<(Protocol, Family, PortBlock, &str)> = Vec::new();
    let mut dynamic = Vec::new();
    for proto in [Protocol::Tcp, Protocol::Udp] {
        let reserved = p.administered(proto)?;
        for b in &reserved {
            rows.push((proto, Family::Ipv4, *b, "reserved"));
        }
        for family in FAMILIES {
            for e in p.excluded(proto, family)? {
                if family == Family::Ipv4 && reserved.contains(&e.block) {
                    continue;
                }
                let kind =
                    if e.administered { "administered (*)" } else { "runtime reservation (no *)" };
                rows.push((proto, family, e.block, kind));
            }
            if let Ok(d) = p.dynamic_range(proto, family) {
                dynamic.push((proto, family, d));
            }
        }
    }
    rows.sort();
    out.emit(
        || {
            let ranges: Vec<_> = rows.iter().map(|(proto, family, b, kind)| json!({"protocol": proto, "family": family, "start": b.start, "end": b.end(), "kind": kind})).collect();
            let dynamic: Vec<_> = dynamic.iter().map(|(proto, family, b)| json!({"protocol": proto, "family": family, "start": b.start, "end": b.end()})).collect();
            json!({"ranges": ranges, "dynamic": dynamic})
        },
        || {
            let mut lines = vec!["proto  family ports          kind".to_owned()];
            for (proto, family, b, kind) in &rows {
                lines.push(format!("{:<6} {:<6} {:<14} {kind}", proto.name(), family.name(), b.to_string()));
            }
            for (proto, family, b) in &dynamic {
                lines.push(format!("{:<6} {:<6} {:<14} dynamic port range", proto.name(), family.name(), b.to_string()));
            }
            lines
        },
    )
}

/// The ranges a diagnosis needs, each source optional.
fn ranges(p: &mut dyn Platform, proto: Protocol, with_exclusions: bool) -> Ranges {
    let mut r = Ranges::default();
    if with_exclusions {
        match p.administered(proto) {
            Ok(a) => r.administered = a,
            Err(e) => r.unavailable.push(format!("administered reservations: {e}")),
        }
        for family in FAMILIES {
            match p.excluded(proto, family) {
                Ok(list) => r.excluded.extend(list.into_iter().map(|e| (family, e))),
                Err(e) => r.unavailable.push(format!("{} exclusions: {e}", family.name())),
            }
        }
    }
    for family in FAMILIES {
        match p.dynamic_range(proto, family) {
            Ok(d) => r.dynamic.push((family, d)),
            Err(e) => r.unavailable.push(format!("{} dynamic port range: {e}", family.name())),
        }
    }
    if with_exclusions {
        r.winnat_running = p.service_running("winnat").ok();
    }
    r
}

fn why_blocked(
    p: &mut dyn Platform,
    out: &mut Printer<'_>,
    proto: Protocol,
    port: u16,
) -> Result<(), Error> {
    let probes = diagnose::probe_all(|addr| p.try_bind(proto, addr, port));
    // An exclusive bind to each wildcard: it fails beside a socket on a specific address,
    // which a default bind does not notice.
    let exclusive: Vec<diagnose::Probe> = [ProbeAddr::AnyV4, ProbeAddr::AnyV6]
        .into_iter()
        .map(|addr| diagnose::Probe { addr, outcome: p.try_bind_exclusive(proto, addr, port) })
        .collect();
    let mut ranges = ranges(p, proto, true);
    // The endpoint tables are read whatever the probes gave: a socket on one specific address
    // leaves every probe free.
    let owners: Vec<Owner> = p.owners(proto, port).unwrap_or_else(|e| {
        ranges.unavailable.push(format!("socket owners: {e}"));
        Vec::new()
    });
    let verdict = diagnose::decide(port, &probes, &exclusive, &owners, &ranges);
    out.emit(
        || json!({"protocol": proto, "port": port, "probes": probes, "exclusive_probes": exclusive, "result": verdict, "dynamic": ranges.dynamic, "unavailable": ranges.unavailable, "explanation": verdict.explain(proto, port)}),
        || {
            let mut lines = verdict.explain(proto, port);
            for (family, d) in &ranges.dynamic {
                lines.push(format!("  {} dynamic port range: {d}", family.name()));
            }
            for u in &ranges.unavailable {
                lines.push(format!("  (not consulted: {u})"));
            }
            lines
        },
    )
}

fn find_free(
    p: &mut dyn Platform,
    out: &mut Printer<'_>,
    proto: Protocol,
    count: u16,
) -> Result<(), Error> {
    // Every source is needed here: an unreadable one is an error, not a guess.
    let mut avoid = p.administered(proto)?;
    for family in FAMILIES {
        avoid.extend(p.excluded(proto, family)?.into_iter().map(|e| e.block));
        avoid.push(p.dynamic_range(proto, family)?);
    }
    // A socket bound to one specific address leaves the four probes free (a wildcard bind
    // beside it succeeds) but is listed in the endpoint tables: its port is in use too.
    let listed: std::collections::BTreeSet<u16> = p.endpoint_ports(proto)?.into_iter().collect();
    let found = diagnose::find_free(count, &avoid, |port| {
        listed.contains(&port)
            || ProbeAddr::ALL.iter().any(|&addr| {
                !matches!(p.try_bind(proto, addr, port), BindOutcome::Bound | BindOutcome::NoStack)
            })
    })
    .ok_or_else(|| {
        Error::Missing(format!(
            "no block of {count} {proto} ports outside the exclusions and the dynamic range is free"
        ))
    })?;
    out.line(
        || json!({"protocol": proto, "start": found.start, "count": found.count, "end": found.end()}),
        || format!("{proto} {found} is free: outside every exclusion and the dynamic range, and not in use (reserve it: `netports reserve {proto} {} {}`, elevated)", found.start, found.count),
    )
}
