//! `netports teredo-exception`: the host's Teredo exception, as firewalls keep it.
//!
//! `GetTeredoPort`, `NotifyTeredoPortChange` and `FwpmSystemPortsGet0` report the Teredo client
//! *of the local computer* (seeds 000, 001), and are "used by firewall applications to configure
//! the appropriate exceptions". What the exception must let through (`GetTeredoPort` remarks;
//! RFC 4380; KB 968510): Teredo is UDP over **IPv4**; the client qualifies with the Teredo
//! server's *remote* UDP 3544 and then talks to servers, relays and peers from its own dynamic
//! port; local UDP 3544 is only the IPv4 multicast discovery group 224.0.0.253. So the filters
//! ([`filters_for`]) are IPv4 and UDP only, each restricted to the Teredo service: its process's
//! application id (`svchost.exe`, which hosts `iphlpsvc`) and, since every `svchost.exe` shares
//! that id, its service SID `NT SERVICE\iphlpsvc` ([`crate::service_sid`]):
//! - outbound to remote port 3544 (qualification, before the client has a port);
//! - inbound to local port 3544 at 224.0.0.253 only;
//! - for each of the client's ports P (every port of the Teredo entry): inbound to local port
//!   P, outbound from local port P.
//!
//! They do not touch vsflow's VM port rules: a VM runs its own Teredo client with its own port.
//!
//! The filters live in netports' own provider and sublayer, created with fresh keys by each run
//! in its dynamic WFP session (`FWPM_SESSION_FLAG_DYNAMIC`): they exist while the command runs
//! and disappear when it ends, and two runs never share an object (WFP refuses a reference to
//! another session's dynamic object). Every port change is one WFP transaction
//! ([`HostFilters::apply`]): the new port's filters are added and the old port's deleted
//! together, or nothing changes.
//!
//! They are soft permits (the default for a filter permit) in a low-priority sublayer, the form
//! Microsoft's Filter Arbitration page gives applications that request open ports. A soft
//! permit does not override another sublayer's block, so **under Windows Defender Firewall they
//! change nothing**: its block wins, and Teredo passes only through its own rules
//! CoreNet-Teredo-In and CoreNet-Teredo-Out. The command says so ([`NOTE`]), and
//! `teredo-exception --check` reports whether those rules are enabled (`crate::firewall`).

use std::fmt;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::error::Error;
use crate::teredo::{TEREDO_STATIC_PORT, TeredoEvent};

/// The IPv4 multicast group of Teredo's local discovery (RFC 4380 section 5.2.8).
pub const TEREDO_DISCOVERY_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 253);

/// What the command says before anything else.
pub const NOTE: &str = "these are soft permits in netports' own sublayer: under Windows Defender Firewall they change nothing (its block wins); Teredo passes there only through its rules CoreNet-Teredo-In and CoreNet-Teredo-Out (check them: `netports teredo-exception --check`)";

/// Which way the traffic a filter permits goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Received (`FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V4`).
    In,
    /// Sent (`FWPM_LAYER_ALE_AUTH_CONNECT_V4`).
    Out,
}

/// One host permit filter: IPv4, UDP, the Teredo service (its app id and service SID), and these
/// conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FilterSpec {
    /// In or out.
    pub direction: Direction,
    /// `FWPM_CONDITION_IP_LOCAL_PORT`, if any.
    pub local_port: Option<u16>,
    /// `FWPM_CONDITION_IP_REMOTE_PORT`, if any.
    pub remote_port: Option<u16>,
    /// `FWPM_CONDITION_IP_LOCAL_ADDRESS`, if any.
    pub local_address: Option<Ipv4Addr>,
}

impl fmt::Display for FilterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = match self.direction {
            Direction::In => "in",
            Direction::Out => "out",
        };
        match (self.local_address, self.local_port, self.remote_port) {
            (Some(a), Some(p), _) => write!(f, "{dir} to {a}:{p}"),
            (None, Some(p), _) if self.direction == Direction::In => write!(f, "{dir} to {p}"),
            (None, Some(p), _) => write!(f, "{dir} from {p}"),
            (_, None, Some(r)) => write!(f, "{dir} to {r}"),
            _ => f.write_str(dir),
        }
    }
}

/// The filters the Teredo exception needs while the client has the ports `ports` (every port
/// of the Teredo entry; in this order: each client port's, then the static ones).
#[must_use]
pub fn filters_for(ports: &[u16]) -> Vec<FilterSpec> {
    let mut v = Vec::with_capacity(2 * ports.len() + 2);
    for &p in ports {
        v.push(FilterSpec {
            direction: Direction::In,
            local_port: Some(p),
            remote_port: None,
            local_address: None,
        });
        v.push(FilterSpec {
            direction: Direction::Out,
            local_port: Some(p),
            remote_port: None,
            local_address: None,
        });
    }
    v.push(FilterSpec {
        direction: Direction::Out,
        local_port: None,
        remote_port: Some(TEREDO_STATIC_PORT),
        local_address: None,
    });
    v.push(FilterSpec {
        direction: Direction::In,
        local_port: Some(TEREDO_STATIC_PORT),
        remote_port: None,
        local_address: Some(TEREDO_DISCOVERY_GROUP),
    });
    v
}

/// What keeps host permit filters (user-mode WFP on Windows, a model in tests).
pub trait HostFilters {
    /// Adds `add` and deletes the filters `remove` (ids it returned) as one change: all of it
    /// or, on error, none of it (one WFP transaction). Returns the new filters' ids, in order.
    ///
    /// # Errors
    /// Access denied (filters need an administrator), or the engine's error; nothing changed.
    fn apply(&mut self, add: &[FilterSpec], remove: &[u64]) -> Result<Vec<u64>, Error>;
}

impl<T: HostFilters + ?Sized> HostFilters for Box<T> {
    fn apply(&mut self, add: &[FilterSpec], remove: &[u64]) -> Result<Vec<u64>, Error> {
        (**self).apply(add, remove)
    }
}

/// What one event changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Filters added.
    pub added: usize,
    /// Filters removed.
    pub removed: usize,
}

/// Keeps the Teredo exception's filters for the current port.
#[derive(Debug)]
pub struct TeredoException<F> {
    filters: F,
    kept: Vec<(FilterSpec, u64)>,
}

impl<F: HostFilters> TeredoException<F> {
    /// An exception kept through `filters`; nothing is added before the first event.
    pub const fn new(filters: F) -> Self {
        Self { filters, kept: Vec::new() }
    }

    /// The filter engine (to inspect or configure it).
    pub const fn filters_mut(&mut self) -> &mut F {
        &mut self.filters
    }

    /// The filters kept, in [`filters_for`] order.
    #[must_use]
    pub fn filters(&self) -> Vec<FilterSpec> {
        self.kept.iter().map(|(f, _)| *f).collect()
    }

    /// Applies an event as one change: the new port's filters are added and the old port's
    /// removed together (no moment without an exception for the current port, and never half
    /// of a change).
    ///
    /// # Errors
    /// The engine's error; what was kept stays kept, so the next event retries.
    pub fn on_event(&mut self, event: &TeredoEvent) -> Result<Applied, Error> {
        let wanted = filters_for(event.ports());
        let add: Vec<FilterSpec> =
            wanted.iter().filter(|w| !self.kept.iter().any(|(k, _)| k == *w)).copied().collect();
        let remove: Vec<u64> =
            self.kept.iter().filter(|(k, _)| !wanted.contains(k)).map(|(_, id)| *id).collect();
        if add.is_empty() && remove.is_empty() {
            return Ok(Applied::default());
        }
        let ids = self.filters.apply(&add, &remove)?;
        if ids.len() != add.len() {
            return Err(Error::Protocol(format!(
                "{} filter ids for {} filters added",
                ids.len(),
                add.len()
            )));
        }
        let mut added = add.iter().zip(ids);
        self.kept = wanted
            .iter()
            .filter_map(|w| {
                self.kept
                    .iter()
                    .find(|(k, _)| k == w)
                    .copied()
                    .or_else(|| added.find(|(a, _)| *a == w).map(|(a, id)| (*a, id)))
            })
            .collect();
        Ok(Applied { added: add.len(), removed: remove.len() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A filter engine with transactions: ids per filter, failures on demand.
    #[derive(Debug, Default)]
    struct Engine {
        filters: Vec<(u64, FilterSpec)>,
        next: u64,
        fail: bool,
        changes: usize,
    }

    impl HostFilters for &mut Engine {
        fn apply(&mut self, add: &[FilterSpec], remove: &[u64]) -> Result<Vec<u64>, Error> {
            if self.fail {
                return Err(Error::AccessDenied);
            }
            self.filters.retain(|(id, _)| !remove.contains(id));
            let ids: Vec<u64> = (self.next..self.next + add.len() as u64).collect();
            self.next += add.len() as u64;
            self.filters.extend(ids.iter().copied().zip(add.iter().copied()));
            self.changes += 1;
            Ok(ids)
        }
    }

    fn specs(e: &Engine) -> Vec<String> {
        let mut v: Vec<String> = e.filters.iter().map(|(_, f)| f.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn the_filters_are_ipv4_teredo_traffic_only() {
        let all: Vec<String> = filters_for(&[51_000]).iter().map(ToString::to_string).collect();
        assert_eq!(all, ["in to 51000", "out from 51000", "out to 3544", "in to 224.0.0.253:3544"]);
        let none: Vec<String> = filters_for(&[]).iter().map(ToString::to_string).collect();
        assert_eq!(
            none,
            ["out to 3544", "in to 224.0.0.253:3544"],
            "no inbound 3544 from anywhere"
        );
    }

    #[test]
    fn each_port_change_is_one_change_and_the_static_filters_stay() {
        let mut engine = Engine::default();
        let mut x = TeredoException::new(&mut engine);
        assert_eq!(
            x.on_event(&TeredoEvent::Initial { ports: vec![51_000] }).unwrap(),
            Applied { added: 4, removed: 0 }
        );
        assert_eq!(
            x.on_event(&TeredoEvent::Changed { ports: vec![52_000] }).unwrap(),
            Applied { added: 2, removed: 2 }
        );
        assert_eq!(x.filters(), filters_for(&[52_000]), "kept in order");
        assert_eq!(
            x.on_event(&TeredoEvent::Changed { ports: vec![] }).unwrap(),
            Applied { added: 0, removed: 2 }
        );
        assert_eq!(
            x.on_event(&TeredoEvent::Changed { ports: vec![] }).unwrap(),
            Applied::default()
        );
        drop(x);
        assert_eq!(specs(&engine), ["in to 224.0.0.253:3544", "out to 3544"]);
        assert_eq!(engine.changes, 3, "one change per event that changes something");
    }

    #[test]
    fn a_failed_change_keeps_the_old_filters_so_the_next_event_retries() {
        let mut engine = Engine::default();
        let mut x = TeredoException::new(&mut engine);
        x.on_event(&TeredoEvent::Initial { ports: vec![51_000] }).unwrap();
        x.filters.fail = true;
        assert_eq!(
            x.on_event(&TeredoEvent::Changed { ports: vec![52_000] }),
            Err(Error::AccessDenied)
        );
        assert_eq!(x.filters(), filters_for(&[51_000]), "nothing removed");
        x.filters.fail = false;
        let a = x.on_event(&TeredoEvent::Changed { ports: vec![52_000] }).unwrap();
        assert_eq!(a, Applied { added: 2, removed: 2 });
        assert_eq!(x.filters(), filters_for(&[52_000]));
    }
}
