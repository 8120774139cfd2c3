//! `netports teredo-exception`: the host's Teredo exception, as firewalls keep it.
//!
//! `GetTeredoPort`, `NotifyTeredoPortChange` and `FwpmSystemPortsGet0` report the Teredo client
//! *of the local computer* (seeds 000, 001), and are "used by firewall applications to configure
//! the appropriate exceptions". So netports keeps host WFP permit filters, in its own provider
//! and sublayer, at the ALE receive/accept layers (IPv4 and IPv6), for UDP local port 3544 and
//! the client's current port, and moves them when the port changes. It does not touch vsflow's
//! VM port rules: a VM runs its own Teredo client with its own port.
//!
//! The filters belong to a dynamic WFP session (`FWPM_SESSION_FLAG_DYNAMIC`): they exist while
//! the command runs and disappear when it ends, so a stale port is never left open.
//!
//! They are soft permits (the default for a filter permit) in a low-priority sublayer, the form
//! Microsoft's Filter Arbitration page gives applications that request open ports: "overridable
//! filters to a low priority sub-layer" that a firewall may match after validation. They do
//! not override another sublayer's block (a filter block is a hard block by default).

use crate::error::Error;
use crate::teredo::{TEREDO_STATIC_PORT, TeredoEvent};

/// What keeps host permit filters (user-mode WFP on Windows, a model in tests).
pub trait HostFilters {
    /// Adds permit filters for inbound UDP to local port `port` (IPv4 and IPv6); returns their
    /// ids.
    ///
    /// # Errors
    /// Access denied (filters need an administrator), or the engine's error.
    fn permit_udp(&mut self, port: u16) -> Result<Vec<u64>, Error>;
    /// Deletes filters by id.
    ///
    /// # Errors
    /// The engine's error.
    fn remove(&mut self, ids: &[u64]) -> Result<(), Error>;
}

impl<T: HostFilters + ?Sized> HostFilters for Box<T> {
    fn permit_udp(&mut self, port: u16) -> Result<Vec<u64>, Error> {
        (**self).permit_udp(port)
    }
    fn remove(&mut self, ids: &[u64]) -> Result<(), Error> {
        (**self).remove(ids)
    }
}

/// What one event changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Ports whose filters were added.
    pub added: Vec<u16>,
    /// Ports whose filters were removed.
    pub removed: Vec<u16>,
}

/// Keeps the filters for 3544 and the current Teredo port.
#[derive(Debug)]
pub struct TeredoException<F> {
    filters: F,
    kept: Vec<(u16, Vec<u64>)>,
}

impl<F: HostFilters> TeredoException<F> {
    /// An exception kept through `filters`; nothing is added before the first event.
    pub const fn new(filters: F) -> Self {
        Self { filters, kept: Vec::new() }
    }

    /// The ports filters are kept for, in the order they were added.
    #[must_use]
    pub fn ports(&self) -> Vec<u16> {
        self.kept.iter().map(|(p, _)| *p).collect()
    }

    /// Applies an event: filters for the new port are added before the old port's are
    /// removed (no moment without an exception for the current port).
    ///
    /// # Errors
    /// The engine's error; what was kept stays kept, so the next event retries.
    pub fn on_event(&mut self, event: TeredoEvent) -> Result<Applied, Error> {
        let port = match event {
            TeredoEvent::Initial { port } | TeredoEvent::Changed { port } => port,
        };
        let wanted: Vec<u16> =
            [Some(TEREDO_STATIC_PORT), port.filter(|p| *p != TEREDO_STATIC_PORT)]
                .into_iter()
                .flatten()
                .collect();
        let mut applied = Applied::default();
        for &p in &wanted {
            if !self.kept.iter().any(|(k, _)| *k == p) {
                let ids = self.filters.permit_udp(p)?;
                self.kept.push((p, ids));
                applied.added.push(p);
            }
        }
        while let Some(i) = self.kept.iter().position(|(k, _)| !wanted.contains(k)) {
            self.filters.remove(&self.kept[i].1)?;
            let (p, _) = self.kept.remove(i);
            applied.removed.push(p);
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A filter engine: ids per port, failures on demand.
    #[derive(Debug, Default)]
    struct Engine {
        filters: Vec<(u64, u16)>,
        next: u64,
        fail_add: bool,
    }

    impl HostFilters for &mut Engine {
        fn permit_udp(&mut self, port: u16) -> Result<Vec<u64>, Error> {
            if self.fail_add {
                return Err(Error::AccessDenied);
            }
            let ids = vec![self.next, self.next + 1];
            self.next += 2;
            self.filters.extend(ids.iter().map(|id| (*id, port)));
            Ok(ids)
        }
        fn remove(&mut self, ids: &[u64]) -> Result<(), Error> {
            self.filters.retain(|(id, _)| !ids.contains(id));
            Ok(())
        }
    }

    fn ports(e: &Engine) -> Vec<u16> {
        let mut p: Vec<u16> = e.filters.iter().map(|(_, p)| *p).collect();
        p.dedup();
        p
    }

    #[test]
    fn the_filters_follow_the_port_and_keep_3544() {
        let mut engine = Engine::default();
        let mut x = TeredoException::new(&mut engine);
        let a = x.on_event(TeredoEvent::Initial { port: Some(51_000) }).unwrap();
        assert_eq!(a, Applied { added: vec![3544, 51_000], removed: vec![] });
        let a = x.on_event(TeredoEvent::Changed { port: Some(52_000) }).unwrap();
        assert_eq!(a, Applied { added: vec![52_000], removed: vec![51_000] });
        let a = x.on_event(TeredoEvent::Changed { port: None }).unwrap();
        assert_eq!(a, Applied { added: vec![], removed: vec![52_000] });
        assert_eq!(x.ports(), vec![3544]);
        let a = x.on_event(TeredoEvent::Changed { port: Some(3544) }).unwrap();
        assert_eq!(a, Applied::default(), "the static port is kept once");
        drop(x);
        assert_eq!(ports(&engine), vec![3544], "two filters (IPv4, IPv6) for 3544 only");
        assert_eq!(engine.filters.len(), 2);
    }

    #[test]
    fn a_failed_add_keeps_the_old_filters_so_the_next_event_retries() {
        let mut engine = Engine::default();
        {
            let mut x = TeredoException::new(&mut engine);
            x.on_event(TeredoEvent::Initial { port: Some(51_000) }).unwrap();
        }
        let mut x = TeredoException::new(&mut engine);
        x.on_event(TeredoEvent::Initial { port: Some(51_000) }).unwrap();
        x.filters.fail_add = true;
        assert_eq!(
            x.on_event(TeredoEvent::Changed { port: Some(52_000) }),
            Err(Error::AccessDenied)
        );
        assert_eq!(x.ports(), vec![3544, 51_000], "nothing removed");
        x.filters.fail_add = false;
        let a = x.on_event(TeredoEvent::Changed { port: Some(52_000) }).unwrap();
        assert_eq!(a.added, vec![52_000]);
    }
}
