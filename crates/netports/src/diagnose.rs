//! "Why can't I bind port N?", and "which ports can I use?": answers from the facts a host can
//! gather, decided from the bind result first.
//!
//! What Windows does, and where it is written:
//! - `bind` fails with `WSAEADDRINUSE` when a socket holds the port; the owner is in
//!   `GetExtendedTcpTable` / `GetExtendedUdpTable` (`dwOwningPid`, ports in network order).
//! - `bind` fails with `WSAEACCES` inside an excluded range without `*`: a runtime reservation
//!   (`SIO_ACQUIRE_PORT_RESERVATION`) some process holds. WinNAT/HNS take such ranges for
//!   Hyper-V, WSL and Docker (docker/for-win#3171, microsoft/WSL#5306), but so does any process
//!   (`netports acquire --hold` included), and netsh shows them alike; so the WinNAT remedy is
//!   offered only while the `winnat` service runs.
//! - An administered range (`*` in netsh: a persistent reservation or `netsh add
//!   excludedportrange`) does not refuse a plain bind: KB 3039044 (which applies to Windows
//!   Server 2008 R2, 2012 and 2012 R2: the first bind to an excluded port succeeds, a second
//!   `SO_REUSEADDR` bind fails with `WSAEACCES`), and users report a plain listen succeeding on a
//!   `*` range on later versions. So a port there is "free" for a single listener, with a note
//!   that scopes the KB to the versions it names (later ones: docs/WINDOWS-VERIFICATION.md P9).
//! - The ports are probed on 0.0.0.0, 127.0.0.1, `[::]` and `[::1]`: a socket bound to one
//!   address (say 127.0.0.1) makes the port busy there only.
//! - A socket bound to a specific non-loopback address leaves all four probes free: a default
//!   bind to the wildcard succeeds beside it, while one with `SO_EXCLUSIVEADDRUSE` (what many
//!   servers set) fails ("Using `SO_REUSEADDR` and `SO_EXCLUSIVEADDRUSE`", its tables). So the
//!   endpoint tables are always read, and the wildcards are also probed with
//!   `SO_EXCLUSIVEADDRUSE`; either naming the port makes it "held on a specific address".
//! - The usual remedy for a WinNAT exclusion that keeps landing on a needed port (the recipe
//!   users share): stop winnat, add an administered exclusion for the port, start winnat
//!   (offered only when winnat runs).

use serde::Serialize;

use crate::excluded::{ExcludedRange, Family};
use crate::range::{PortBlock, Protocol};

/// An address `bind` is tried on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ProbeAddr {
    /// `0.0.0.0`.
    #[serde(rename = "0.0.0.0")]
    AnyV4,
    /// `127.0.0.1`.
    #[serde(rename = "127.0.0.1")]
    LoopbackV4,
    /// `[::]`.
    #[serde(rename = "[::]")]
    AnyV6,
    /// `[::1]`.
    #[serde(rename = "[::1]")]
    LoopbackV6,
}

impl ProbeAddr {
    /// Every address, in probing order.
    pub const ALL: [Self; 4] = [Self::AnyV4, Self::LoopbackV4, Self::AnyV6, Self::LoopbackV6];

    /// The address family.
    #[must_use]
    pub const fn family(self) -> Family {
        match self {
            Self::AnyV4 | Self::LoopbackV4 => Family::Ipv4,
            Self::AnyV6 | Self::LoopbackV6 => Family::Ipv6,
        }
    }

    /// The address as text.
    #[must_use]
    pub const fn text(self) -> &'static str {
        match self {
            Self::AnyV4 => "0.0.0.0",
            Self::LoopbackV4 => "127.0.0.1",
            Self::AnyV6 => "[::]",
            Self::LoopbackV6 => "[::1]",
        }
    }

    /// The address as a socket address with `port`.
    #[must_use]
    pub fn socket_addr(self, port: u16) -> std::net::SocketAddr {
        use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
        match self {
            Self::AnyV4 => SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
            Self::LoopbackV4 => SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            Self::AnyV6 => SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
            Self::LoopbackV6 => SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        }
    }
}

/// What one bind attempt told us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BindOutcome {
    /// The bind succeeded (and was closed again).
    Bound,
    /// `WSAEADDRINUSE`: a socket holds the port on this address.
    InUse,
    /// `WSAEACCES`: an exclusion forbids it (or a filter).
    AccessDenied,
    /// The address family or address is not available (no IPv6 stack, no loopback).
    NoStack,
    /// Another error (the Winsock code).
    Failed(u32),
}

impl BindOutcome {
    /// The outcome of a bind error's Winsock/OS code.
    #[must_use]
    pub const fn from_code(code: u32) -> Self {
        match code {
            10_048 | 98 => Self::InUse,
            10_013 | 13 => Self::AccessDenied,
            // WSAEAFNOSUPPORT, WSAEADDRNOTAVAIL, WSAEPROTONOSUPPORT (and the Linux codes).
            10_047 | 10_049 | 10_043 | 97 | 99 => Self::NoStack,
            c => Self::Failed(c),
        }
    }
}

/// Binds `port` on `addr` with std's sockets and closes it again (IPv6 sockets are
/// IPv6-only, the Windows default, so `[::]` does not test 0.0.0.0).
#[must_use]
pub fn bind_once(proto: Protocol, addr: ProbeAddr, port: u16) -> BindOutcome {
    let sa = addr.socket_addr(port);
    let result = match proto {
        Protocol::Tcp => std::net::TcpListener::bind(sa).map(drop),
        Protocol::Udp => std::net::UdpSocket::bind(sa).map(drop),
    };
    match result {
        Ok(()) => BindOutcome::Bound,
        Err(e) => match e.raw_os_error().and_then(|c| u32::try_from(c).ok()) {
            Some(code) => BindOutcome::from_code(code),
            None if e.kind() == std::io::ErrorKind::AddrInUse => BindOutcome::InUse,
            None => BindOutcome::Failed(0),
        },
    }
}

/// Probes `port` on every address.
pub fn probe_all(mut bind: impl FnMut(ProbeAddr) -> BindOutcome) -> Vec<Probe> {
    ProbeAddr::ALL.iter().map(|&addr| Probe { addr, outcome: bind(addr) }).collect()
}

/// One probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// Where.
    pub addr: ProbeAddr,
    /// What happened.
    pub outcome: BindOutcome,
}

/// A socket holding a port, from the endpoint tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Owner {
    /// The owning process id (0: unavailable).
    pub pid: u32,
    /// The process's image name, when it could be read.
    pub process: Option<String>,
    /// The local address.
    pub local: String,
}

/// What the host knows about ranges, each source optional (a missing one is named in
/// `unavailable`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Ranges {
    /// Administered reservations (the NSI store).
    pub administered: Vec<PortBlock>,
    /// Excluded ranges per family.
    pub excluded: Vec<(Family, ExcludedRange)>,
    /// The dynamic port range per family.
    pub dynamic: Vec<(Family, PortBlock)>,
    /// Sources that could not be read, and why.
    pub unavailable: Vec<String>,
    /// Whether the `winnat` service runs (`None`: unknown).
    pub winnat_running: Option<bool>,
}

/// Something worth knowing about a port that binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "note", rename_all = "kebab-case")]
pub enum Note {
    /// In an administered range: a plain bind succeeds there (KB 3039044).
    Administered {
        /// The range.
        block: PortBlock,
    },
    /// In the dynamic range: Windows may give it to an outgoing connection at any time.
    Dynamic {
        /// The range.
        block: PortBlock,
        /// Its family.
        family: Family,
    },
}

/// Why a port is (not) bindable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// Every probe bound.
    Free {
        /// What else is true of the port.
        notes: Vec<Note>,
    },
    /// A socket holds it on these addresses.
    InUse {
        /// Where the bind failed with `WSAEADDRINUSE`.
        on: Vec<ProbeAddr>,
        /// Who holds it (empty when the tables do not say).
        owners: Vec<Owner>,
    },
    /// Every plain probe bound, but a socket holds the port on another address: the endpoint
    /// tables list it, or an exclusive (`SO_EXCLUSIVEADDRUSE`) bind to the wildcard failed.
    /// A default wildcard bind succeeds beside a specific-address socket; an exclusive one, or
    /// one to that address, fails ("Using `SO_REUSEADDR` and `SO_EXCLUSIVEADDRUSE`").
    HeldOnAddress {
        /// Who holds it (empty when the tables do not say).
        owners: Vec<Owner>,
        /// The wildcard addresses where the exclusive bind failed with `WSAEADDRINUSE`.
        exclusive: Vec<ProbeAddr>,
    },
    /// Refused (`WSAEACCES`), and an excluded range without `*` holds it: a runtime
    /// reservation of some process (WinNAT's, or any other's).
    Excluded {
        /// The range.
        block: PortBlock,
        /// Its family.
        family: Family,
        /// The dynamic range of that family, when the exclusion lies inside it.
        dynamic: Option<PortBlock>,
        /// Whether the `winnat` service runs (only then is the WinNAT remedy offered).
        winnat_running: Option<bool>,
    },
    /// Refused, and only an administered range names it (unusual: a plain bind normally
    /// succeeds there).
    Reserved {
        /// The range.
        block: PortBlock,
    },
    /// Refused, and no source names the port (a filter, or a source that was unavailable).
    Denied,
    /// The binds failed otherwise.
    Failed {
        /// The first Winsock code.
        code: u32,
    },
}

/// Decides from the probes first, then the owners and ranges.
///
/// `exclusive` are the exclusive wildcard probes (`SO_EXCLUSIVEADDRUSE`), `owners` the endpoint tables' sockets on the port
/// (read whatever the probes gave).
#[must_use]
pub fn decide(
    port: u16,
    probes: &[Probe],
    exclusive: &[Probe],
    owners: &[Owner],
    ranges: &Ranges,
) -> Verdict {
    let on: Vec<ProbeAddr> =
        probes.iter().filter(|p| p.outcome == BindOutcome::InUse).map(|p| p.addr).collect();
    if !on.is_empty() {
        return Verdict::InUse { on, owners: owners.to_vec() };
    }
    let denied: Vec<Family> = probes
        .iter()
        .filter(|p| p.outcome == BindOutcome::AccessDenied)
        .map(|p| p.addr.family())
        .collect();
    if !denied.is_empty() {
        let named = |administered: bool| {
            ranges.excluded.iter().find(|(f, e)| {
                denied.contains(f) && e.administered == administered && e.block.contains(port)
            })
        };
        if let Some((family, e)) = named(false) {
            let dynamic = ranges
                .dynamic
                .iter()
                .find(|(f, d)| f == family && d.overlaps(&e.block))
                .map(|(_, d)| *d);
            return Verdict::Excluded {
                block: e.block,
                family: *family,
                dynamic,
                winnat_running: ranges.winnat_running,
            };
        }
        if let Some(block) = named(true)
            .map(|(_, e)| e.block)
            .or_else(|| ranges.administered.iter().find(|b| b.contains(port)).copied())
        {
            return Verdict::Reserved { block };
        }
        return Verdict::Denied;
    }
    if let Some(code) = probes.iter().find_map(|p| match p.outcome {
        BindOutcome::Failed(c) => Some(c),
        _ => None,
    }) {
        return Verdict::Failed { code };
    }
    let exclusive: Vec<ProbeAddr> =
        exclusive.iter().filter(|p| p.outcome == BindOutcome::InUse).map(|p| p.addr).collect();
    if !owners.is_empty() || !exclusive.is_empty() {
        return Verdict::HeldOnAddress { owners: owners.to_vec(), exclusive };
    }
    if !probes.iter().any(|p| p.outcome == BindOutcome::Bound) {
        // Nothing bound and nothing refused: no stack at all.
        return Verdict::Failed { code: 10_047 };
    }
    let mut notes = Vec::new();
    let administered = ranges
        .excluded
        .iter()
        .filter(|(_, e)| e.administered)
        .map(|(_, e)| e.block)
        .chain(ranges.administered.iter().copied())
        .find(|b| b.contains(port));
    if let Some(block) = administered {
        notes.push(Note::Administered { block });
    }
    for (family, block) in &ranges.dynamic {
        if block.contains(port) {
            notes.push(Note::Dynamic { block: *block, family: *family });
        }
    }
    Verdict::Free { notes }
}

/// The usual remedy for a WinNAT exclusion on a port you need (elevated).
#[must_use]
pub fn winnat_remedy(proto: Protocol, family: Family, port: u16) -> String {
    format!(
        "net stop winnat && netsh int {} add excludedportrange protocol={proto} startport={port} numberofports=1 && net start winnat",
        family.name()
    )
}

impl Verdict {
    /// Lines for a person.
    #[must_use]
    pub fn explain(&self, proto: Protocol, port: u16) -> Vec<String> {
        match self {
            Self::Free { notes } => {
                let mut lines = vec![format!(
                    "{proto} {port} is free (bound on 0.0.0.0, 127.0.0.1 and, where IPv6 runs, [::] and [::1])"
                )];
                for n in notes {
                    lines.push(match n {
                        Note::Administered { block } => format!("  note: it is in the administered range {block}: a plain bind succeeds there; a second SO_REUSEADDR bind fails with WSAEACCES on Windows Server 2008 R2, 2012 and 2012 R2 (KB 3039044)"),
                        Note::Dynamic { block, family } => format!("  note: it is in the {} dynamic port range {block}: Windows may give it to an outgoing connection at any time; reserve it (`netports reserve {proto} {port} 1`, elevated)", family.name()),
                    });
                }
                lines
            }
            Self::InUse { on, owners } => {
                let addrs: Vec<&str> = on.iter().map(|a| a.text()).collect();
                let mut lines = vec![format!(
                    "{proto} {port} is in use (bind fails with WSAEADDRINUSE on {})",
                    addrs.join(", ")
                )];
                if owners.is_empty() {
                    lines.push("  the endpoint tables name no owner (a socket of another user, or one that just closed)".to_owned());
                }
                for o in owners {
                    let name = o.process.as_deref().unwrap_or("?");
                    lines.push(format!("  held by pid {} ({name}) on {}", o.pid, o.local));
                }
                lines
            }
            Self::HeldOnAddress { owners, exclusive } => {
                let mut lines = vec![format!(
                    "{proto} {port} is held by a socket on a specific address: a default bind to the wildcard succeeds beside it, but a server that binds the wildcard with SO_EXCLUSIVEADDRUSE, or that address, fails"
                )];
                for o in owners {
                    let name = o.process.as_deref().unwrap_or("?");
                    lines.push(format!("  held by pid {} ({name}) on {}", o.pid, o.local));
                }
                if owners.is_empty() {
                    lines.push("  the endpoint tables name no owner (a socket of another user, or one that just closed)".to_owned());
                }
                if !exclusive.is_empty() {
                    let addrs: Vec<&str> = exclusive.iter().map(|a| a.text()).collect();
                    lines.push(format!(
                        "  an exclusive bind (SO_EXCLUSIVEADDRUSE) to {} fails with WSAEADDRINUSE",
                        addrs.join(" and ")
                    ));
                }
                lines
            }
            Self::Excluded { block, family, dynamic, winnat_running } => {
                let mut lines = vec![format!(
                    "{proto} {port} is in the {} excluded range {block}, a runtime reservation (no `*`): bind fails with WSAEACCES",
                    family.name()
                )];
                if let Some(d) = dynamic {
                    lines.push(format!(
                        "  the range lies in the {} dynamic port range {d}, from which runtime reservations are taken",
                        family.name()
                    ));
                }
                match winnat_running {
                    Some(true) => {
                        lines.push("  the winnat service runs, and WinNAT takes such ranges for Hyper-V, WSL and Docker (they move at reboot)".to_owned());
                        lines.push(format!(
                            "  if it is WinNAT's, remedy (elevated): {}",
                            winnat_remedy(proto, *family, port)
                        ));
                    }
                    Some(false) => lines.push("  it lasts while the process that acquired it keeps it (the winnat service is not running, so it is not WinNAT's)".to_owned()),
                    None => lines.push("  it lasts while the process that acquired it keeps it (whether the winnat service runs could not be read)".to_owned()),
                }
                lines
            }
            Self::Reserved { block } => vec![format!(
                "{proto} {port} is refused (WSAEACCES) and lies in the administered range {block}; a plain bind normally succeeds there, so check for a filter, or (on Windows Server 2008 R2 to 2012 R2, KB 3039044) a second bind with SO_REUSEADDR; `netports lookup {proto} {} {}` shows whether it is a persistent reservation",
                block.start, block.count
            )],
            Self::Denied => vec![format!(
                "{proto} {port} cannot be bound (WSAEACCES) but no reservation or exclusion names it: check firewall or security software"
            )],
            Self::Failed { code } => {
                vec![format!("{proto} {port}: bind failed with Winsock error {code}")]
            }
        }
    }
}

/// The first block of `count` ports from 1024 up that lies outside every range in `avoid` and
/// whose ports `in_use` calls free.
#[must_use]
pub fn find_free(
    count: u16,
    avoid: &[PortBlock],
    mut in_use: impl FnMut(u16) -> bool,
) -> Option<PortBlock> {
    let mut start: u32 = 1024;
    'search: while start + u32::from(count) <= 65_536 {
        let Ok(candidate) = PortBlock::new(u16::try_from(start).ok()?, count) else { return None };
        if let Some(hit) = avoid.iter().filter(|b| b.overlaps(&candidate)).map(PortBlock::end).max()
        {
            start = u32::from(hit) + 1;
            continue;
        }
        for port in candidate.start..=candidate.end() {
            if in_use(port) {
                start = u32::from(port) + 1;
                continue 'search;
            }
        }
        return Some(candidate);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(s: u16, n: u16) -> PortBlock {
        PortBlock::new(s, n).unwrap()
    }

    fn probes(v4: BindOutcome, v6: BindOutcome) -> Vec<Probe> {
        ProbeAddr::ALL
            .iter()
            .map(|&addr| Probe {
                addr,
                outcome: if addr.family() == Family::Ipv4 { v4 } else { v6 },
            })
            .collect()
    }

    fn ranges() -> Ranges {
        Ranges {
            administered: vec![b(8000, 10)],
            excluded: vec![
                (Family::Ipv4, ExcludedRange { block: b(50_000, 100), administered: false }),
                (Family::Ipv4, ExcludedRange { block: b(9000, 1), administered: true }),
                (Family::Ipv6, ExcludedRange { block: b(60_000, 10), administered: false }),
            ],
            dynamic: vec![(Family::Ipv4, b(49_152, 16_384)), (Family::Ipv6, b(49_152, 16_384))],
            unavailable: vec![],
            winnat_running: Some(true),
        }
    }

    #[test]
    fn the_bind_result_decides_first() {
        use BindOutcome::{AccessDenied, Bound, InUse};
        // A port in a range that binds is free, with a note: ranges do not override the bind.
        assert_eq!(
            decide(9000, &probes(Bound, Bound), &[], &[], &ranges()),
            Verdict::Free { notes: vec![Note::Administered { block: b(9000, 1) }] }
        );
        assert_eq!(
            decide(8005, &probes(Bound, Bound), &[], &[], &ranges()),
            Verdict::Free { notes: vec![Note::Administered { block: b(8000, 10) }] }
        );
        let owner = Owner { pid: 42, process: Some("svc.exe".into()), local: "127.0.0.1".into() };
        assert_eq!(
            decide(50_010, &probes(InUse, Bound), &[], std::slice::from_ref(&owner), &ranges()),
            Verdict::InUse {
                on: vec![ProbeAddr::AnyV4, ProbeAddr::LoopbackV4],
                owners: vec![owner]
            },
            "in use wins even inside an exclusion"
        );
        assert_eq!(
            decide(50_010, &probes(AccessDenied, Bound), &[], &[], &ranges()),
            Verdict::Excluded {
                block: b(50_000, 100),
                family: Family::Ipv4,
                dynamic: Some(b(49_152, 16_384)),
                winnat_running: Some(true),
            }
        );
        assert_eq!(
            decide(60_005, &probes(Bound, AccessDenied), &[], &[], &ranges()),
            Verdict::Excluded {
                block: b(60_000, 10),
                family: Family::Ipv6,
                dynamic: Some(b(49_152, 16_384)),
                winnat_running: Some(true),
            },
            "IPv6 exclusions count for IPv6 refusals"
        );
        assert_eq!(
            decide(60_005, &probes(AccessDenied, Bound), &[], &[], &ranges()),
            Verdict::Denied,
            "an IPv6 exclusion does not explain an IPv4 refusal"
        );
        assert_eq!(
            decide(9000, &probes(AccessDenied, Bound), &[], &[], &ranges()),
            Verdict::Reserved { block: b(9000, 1) }
        );
        assert_eq!(
            decide(445, &probes(AccessDenied, AccessDenied), &[], &[], &ranges()),
            Verdict::Denied
        );
        assert_eq!(
            decide(444, &probes(Bound, BindOutcome::NoStack), &[], &[], &Ranges::default()),
            Verdict::Free { notes: vec![] },
            "no IPv6 stack is not a failure"
        );
        assert_eq!(
            decide(444, &probes(BindOutcome::Failed(10_055), Bound), &[], &[], &Ranges::default()),
            Verdict::Failed { code: 10_055 }
        );
    }

    #[test]
    fn a_socket_on_another_address_or_a_failed_exclusive_bind_means_held() {
        let bound = probes(BindOutcome::Bound, BindOutcome::Bound);
        let owner = Owner { pid: 7, process: None, local: "192.0.2.5".into() };
        assert_eq!(
            decide(7070, &bound, &[], std::slice::from_ref(&owner), &Ranges::default()),
            Verdict::HeldOnAddress { owners: vec![owner], exclusive: vec![] }
        );
        let excl = [Probe { addr: ProbeAddr::AnyV4, outcome: BindOutcome::InUse }];
        let v = decide(7070, &bound, &excl, &[], &Ranges::default());
        assert_eq!(v, Verdict::HeldOnAddress { owners: vec![], exclusive: vec![ProbeAddr::AnyV4] });
        assert!(
            v.explain(Protocol::Tcp, 7070)
                .join("\n")
                .contains("SO_EXCLUSIVEADDRUSE) to 0.0.0.0 fails")
        );
        let free = [Probe { addr: ProbeAddr::AnyV4, outcome: BindOutcome::Bound }];
        assert_eq!(
            decide(7070, &bound, &free, &[], &Ranges::default()),
            Verdict::Free { notes: vec![] }
        );
    }

    #[test]
    fn a_port_held_on_loopback_only_is_in_use() {
        let mut p = probes(BindOutcome::Bound, BindOutcome::Bound);
        p[1].outcome = BindOutcome::InUse;
        assert_eq!(
            decide(7000, &p, &[], &[], &Ranges::default()),
            Verdict::InUse { on: vec![ProbeAddr::LoopbackV4], owners: vec![] }
        );
    }

    #[test]
    fn the_explanations_carry_the_remedy_and_the_dynamic_range() {
        let v = decide(
            50_010,
            &probes(BindOutcome::AccessDenied, BindOutcome::Bound),
            &[],
            &[],
            &ranges(),
        );
        let text = v.explain(Protocol::Tcp, 50_010).join("\n");
        assert!(text.contains("runtime reservation"), "{text}");
        assert!(text.contains("dynamic port range 49152-65535"), "{text}");
        assert!(text.contains("net stop winnat && netsh int ipv4 add excludedportrange protocol=tcp startport=50010 numberofports=1 && net start winnat"), "{text}");
        let Verdict::Excluded { block, family, dynamic, .. } = v else { unreachable!() };
        for winnat_running in [Some(false), None] {
            let text = Verdict::Excluded { block, family, dynamic, winnat_running }
                .explain(Protocol::Tcp, 50_010)
                .join("\n");
            assert!(!text.contains("net stop winnat"), "no WinNAT remedy unless it runs: {text}");
            assert!(text.contains("lasts while the process that acquired it keeps it"), "{text}");
        }
        let free = decide(
            50_000,
            &probes(BindOutcome::Bound, BindOutcome::Bound),
            &[],
            &[],
            &Ranges { dynamic: vec![(Family::Ipv4, b(49_152, 16_384))], ..Ranges::default() },
        );
        assert!(
            free.explain(Protocol::Udp, 50_000)
                .join("\n")
                .contains("dynamic port range 49152-65535")
        );
    }

    #[test]
    fn find_free_skips_ranges_and_busy_ports() {
        let avoid = [b(1024, 10), b(1040, 5), b(49_152, 16_384)];
        assert_eq!(find_free(5, &avoid, |_| false), Some(b(1034, 5)));
        assert_eq!(find_free(6, &avoid, |_| false), Some(b(1034, 6)));
        assert_eq!(find_free(7, &avoid, |_| false), Some(b(1045, 7)));
        assert_eq!(find_free(5, &avoid, |p| p == 1036), Some(b(1045, 5)));
        assert_eq!(find_free(20_000, &avoid, |_| false), Some(b(1045, 20_000)));
        assert_eq!(find_free(50_000, &avoid, |_| false), None);
    }

    proptest! {
        #[test]
        fn a_found_block_avoids_every_range_and_busy_port(
            count in 1u16..50,
            ranges in proptest::collection::vec((1024u16..3000, 1u16..200), 0..10),
            busy in proptest::collection::vec(1024u16..3500, 0..30),
        ) {
            let avoid: Vec<PortBlock> = ranges.iter().filter_map(|&(s, n)| PortBlock::new(s, n).ok()).collect();
            if let Some(found) = find_free(count, &avoid, |p| busy.contains(&p)) {
                prop_assert_eq!(found.count, count);
                prop_assert!(avoid.iter().all(|a| !a.overlaps(&found)));
                prop_assert!(busy.iter().all(|p| !found.contains(*p)));
            }
        }
    }
}
