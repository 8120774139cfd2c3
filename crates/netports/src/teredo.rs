//! Teredo: the client's UDP port, and what a watcher reports.

use serde::Serialize;

/// The static UDP port Teredo also listens on (multicast 224.0.0.253, RFC 4380).
pub const TEREDO_STATIC_PORT: u16 = 3544;

/// What a Teredo watcher reports, serialized (never two at once).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum TeredoEvent {
    /// Registration confirmed (`MibInitialNotification`); the ports are looked up separately
    /// because the initial notification carries 0.
    Initial {
        /// The client's ports at registration (none: not running), ascending.
        ports: Vec<u16>,
    },
    /// The client's ports changed (none: the client stopped).
    Changed {
        /// The new ports, ascending.
        ports: Vec<u16>,
    },
}

impl TeredoEvent {
    /// The ports the event reports.
    #[must_use]
    pub fn ports(&self) -> &[u16] {
        match self {
            Self::Initial { ports } | Self::Changed { ports } => ports,
        }
    }
}

/// How a source reports the Teredo port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ByteOrder {
    /// Network order (the IP Helper convention; `GetExtendedUdpTable` documents it).
    Network,
    /// Host order.
    Host,
}

impl ByteOrder {
    /// `raw` read in this order.
    #[must_use]
    pub const fn read(self, raw: u16) -> u16 {
        match self {
            Self::Network => u16::from_be(raw),
            Self::Host => raw,
        }
    }

    /// `network` / `host`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::Host => "host",
        }
    }
}

/// How a reading's byte order was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Basis {
    /// An endpoint of the Teredo service's own process named one reading (now or before).
    Confirmed,
    /// A UDP socket of some process (the Teredo service's process was unknown) named one
    /// reading: used for this reading, never kept.
    Hint,
    /// No evidence: network order, assumed.
    Assumed,
    /// Every value reads the same both ways.
    Symmetric,
}

impl Basis {
    /// How a person reads it.
    #[must_use]
    pub const fn text(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed by the Teredo service's socket",
            Self::Hint => "from a UDP socket not known to be the Teredo service's (not confirmed)",
            Self::Assumed => "assumed (not confirmed)",
            Self::Symmetric => "either (the value reads the same both ways)",
        }
    }
}

/// What confirms or hints at a byte order: the local ports (host order) of UDP endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// The endpoints of the Teredo service's process (`iphlpsvc`'s): they confirm.
    TeredoService(Vec<u16>),
    /// Every process's endpoints (the service's process is unknown): a hint only.
    AnyProcess(Vec<u16>),
}

/// Ports read from a Teredo source, how their byte order was decided, and a warning when the
/// evidence contradicted the network-order assumption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortReading {
    /// The ports (host order, ascending; none: 0 or no entry).
    pub ports: Vec<u16>,
    /// The order used.
    pub order: ByteOrder,
    /// How it was decided.
    pub basis: Basis,
    /// Set when the evidence said host order.
    pub warning: Option<String>,
}

impl PortReading {
    /// No port.
    #[must_use]
    pub const fn none() -> Self {
        Self { ports: Vec::new(), order: ByteOrder::Network, basis: Basis::Assumed, warning: None }
    }

    /// The first port, if any.
    #[must_use]
    pub fn first(&self) -> Option<u16> {
        self.ports.first().copied()
    }
}

/// One port read from a Teredo source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    /// The port (`None`: 0, no port).
    pub port: Option<u16>,
    /// The order used.
    pub order: ByteOrder,
    /// How it was decided.
    pub basis: Basis,
    /// Set when the evidence said host order.
    pub warning: Option<String>,
}

/// The byte order of one Teredo source, decided at run time.
///
/// Neither `GetTeredoPort`, the change callback nor `FWPM_SYSTEM_PORTS_BY_TYPE0` document the
/// byte order of their port. `GetExtendedUdpTable` does (network order): the Teredo client's
/// socket is a UDP endpoint of the Teredo service, so the raw value is read both ways and the
/// reading that names one of its UDP ports wins. Only the Teredo service's own endpoints
/// ([`Evidence::TeredoService`]) confirm an order, which is then kept for the source; a match
/// among every process's sockets ([`Evidence::AnyProcess`], when the service's process is
/// unknown) is a hint for that reading only, because any socket may sit on the swapped value.
/// Without evidence network order is assumed. Every reading says which ([`Basis`]); a host
/// order is reported as a warning (docs/WINDOWS-VERIFICATION.md item 22).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortOrder {
    settled: Option<ByteOrder>,
}

impl PortOrder {
    /// Nothing settled yet.
    #[must_use]
    pub const fn new() -> Self {
        Self { settled: None }
    }

    /// The order confirmed so far, if any.
    #[must_use]
    pub const fn settled(&self) -> Option<ByteOrder> {
        self.settled
    }

    /// Reads one raw value from `source`; `evidence` is asked only while the order is not
    /// confirmed and the value reads differently both ways.
    pub fn read(
        &mut self,
        source: &str,
        raw: u16,
        evidence: &mut dyn FnMut() -> Evidence,
    ) -> Reading {
        let r = self.read_all(source, &[raw], evidence);
        Reading { port: r.first(), order: r.order, basis: r.basis, warning: r.warning }
    }

    /// Reads every raw value of one report from `source` in one order (zeros dropped).
    pub fn read_all(
        &mut self,
        source: &str,
        raws: &[u16],
        evidence: &mut dyn FnMut() -> Evidence,
    ) -> PortReading {
        let raws: Vec<u16> = raws.iter().copied().filter(|r| *r != 0).collect();
        let finish = |order: ByteOrder, basis: Basis, warning: Option<String>| {
            let mut ports: Vec<u16> = raws.iter().map(|r| order.read(*r)).collect();
            ports.sort_unstable();
            ports.dedup();
            PortReading { ports, order, basis, warning }
        };
        if raws.is_empty() {
            return PortReading::none();
        }
        if let Some(order) = self.settled {
            return finish(order, Basis::Confirmed, None);
        }
        let asymmetric: Vec<u16> = raws.iter().copied().filter(|r| r.swap_bytes() != *r).collect();
        if asymmetric.is_empty() {
            return finish(ByteOrder::Network, Basis::Symmetric, None);
        }
        let (ports, confirms) = match evidence() {
            Evidence::TeredoService(p) => (p, true),
            Evidence::AnyProcess(p) => (p, false),
        };
        let names = |order: ByteOrder| asymmetric.iter().any(|r| ports.contains(&order.read(*r)));
        let order = match (names(ByteOrder::Network), names(ByteOrder::Host)) {
            (true, false) => ByteOrder::Network,
            (false, true) => ByteOrder::Host,
            // Neither or both: no evidence either way; the assumption stands.
            _ => return finish(ByteOrder::Network, Basis::Assumed, None),
        };
        let basis = if confirms {
            self.settled = Some(order);
            Basis::Confirmed
        } else {
            Basis::Hint
        };
        let warning = (order == ByteOrder::Host).then(|| {
            let (host, net) = (asymmetric[0], asymmetric[0].swap_bytes());
            if confirms {
                format!(
                    "{source} reports the Teredo port in host order ({host}, not {net}): the Teredo service's UDP endpoint (GetExtendedUdpTable, network order) says so; using {host}"
                )
            } else {
                format!(
                    "{source} reports the Teredo port in host order ({host}, not {net}) by the evidence of a UDP socket not known to be the Teredo service's; using {host} for this reading, not confirmed"
                )
            }
        });
        finish(order, basis, warning)
    }
}

/// What one notification reports, whatever its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// `MibInitialNotification` of `NotifyTeredoPortChange`: carries no port (0).
    Registered,
    /// The ports as the source reports them (none: the client stopped or has no port).
    Ports(Vec<u16>),
}

/// The `NotifyTeredoPortChange` callback arguments as an [`Observation`]; `ports` is the
/// callback's port already read through the source's [`PortOrder`].
#[must_use]
pub fn observation_from_callback(ports: Vec<u16>, notification_type: i32) -> Observation {
    if notification_type == MIB_INITIAL_NOTIFICATION {
        Observation::Registered
    } else {
        Observation::Ports(ports)
    }
}

/// Turns notifications into the events a watcher's user sees: one `Initial` first, then a
/// `Changed` only when the ports really changed.
///
/// Both sources need this: `FwpmSystemPortsSubscribe0` fires for every system-port change
/// (IP-HTTPS, RPC, ...), not only Teredo's, and `NotifyTeredoPortChange` may report the port
/// it already reported. A notification that arrives before the initial event is folded into
/// it: the initial ports are read after the subscription exists, so no change is lost between
/// reading them and subscribing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WatchState {
    /// Nothing reported yet.
    #[default]
    Unreported,
    /// The ports last reported to the user.
    Reported(Vec<u16>),
}

impl WatchState {
    /// The initial event, with the ports read after subscribing; `None` if it was already
    /// sent.
    pub fn initial(&mut self, ports: Vec<u16>) -> Option<TeredoEvent> {
        if let Self::Reported(_) = self {
            return None;
        }
        *self = Self::Reported(ports.clone());
        Some(TeredoEvent::Initial { ports })
    }

    /// The event a notification means, if any. `Registered` carries no port: it is answered
    /// by [`WatchState::initial`] with ports read separately.
    pub fn observe(&mut self, observation: Observation) -> Option<TeredoEvent> {
        let Observation::Ports(ports) = observation else { return None };
        match self {
            Self::Unreported => None,
            Self::Reported(last) if *last == ports => None,
            Self::Reported(_) => {
                *self = Self::Reported(ports.clone());
                Some(TeredoEvent::Changed { ports })
            }
        }
    }
}

/// Every raw port of the `FWPM_SYSTEM_PORT_TEREDO` entries in a `FWPM_SYSTEM_PORTS0` list,
/// given as `(type, ports)` pairs, as stored (their byte order is decided by [`PortOrder`]);
/// zeros dropped.
#[must_use]
pub fn ports_from_system_ports<'a>(
    entries: impl IntoIterator<Item = (i32, &'a [u16])>,
) -> Vec<u16> {
    entries
        .into_iter()
        .filter(|(t, _)| *t == FWPM_SYSTEM_PORT_TEREDO)
        .flat_map(|(_, ports)| ports.iter().copied())
        .filter(|p| *p != 0)
        .collect()
}

/// `FWPM_SYSTEM_PORT_TEREDO` (windows-sys).
pub const FWPM_SYSTEM_PORT_TEREDO: i32 =
    windows_sys::Win32::NetworkManagement::WindowsFilteringPlatform::FWPM_SYSTEM_PORT_TEREDO;

/// `MibInitialNotification` (windows-sys).
pub const MIB_INITIAL_NOTIFICATION: i32 =
    windows_sys::Win32::NetworkManagement::IpHelper::MibInitialNotification;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_become_observations() {
        assert_eq!(
            observation_from_callback(vec![], MIB_INITIAL_NOTIFICATION),
            Observation::Registered
        );
        assert_eq!(observation_from_callback(vec![4000], 0), Observation::Ports(vec![4000]));
        assert_eq!(observation_from_callback(vec![], 0), Observation::Ports(vec![]));
    }

    #[test]
    fn the_initial_event_comes_first_and_only_real_changes_follow() {
        let mut w = WatchState::default();
        assert_eq!(w.observe(Observation::Ports(vec![1])), None, "before the initial event");
        assert_eq!(w.observe(Observation::Registered), None);
        assert_eq!(w.initial(vec![2]), Some(TeredoEvent::Initial { ports: vec![2] }));
        assert_eq!(w.initial(vec![3]), None, "only one initial event");
        assert_eq!(w.observe(Observation::Ports(vec![2])), None, "no change");
        assert_eq!(
            w.observe(Observation::Ports(vec![5])),
            Some(TeredoEvent::Changed { ports: vec![5] })
        );
        assert_eq!(
            w.observe(Observation::Ports(vec![])),
            Some(TeredoEvent::Changed { ports: vec![] })
        );
        assert_eq!(w.observe(Observation::Ports(vec![])), None);
    }

    #[test]
    fn several_raw_ports_are_read_in_one_order() {
        let mut order = PortOrder::new();
        let raws = [51_000u16.to_be(), 51_001u16.to_be(), 0];
        let r = order.read_all("x", &raws, &mut || Evidence::TeredoService(vec![51_001]));
        assert_eq!(r.ports, vec![51_000, 51_001]);
        assert_eq!((r.order, r.basis), (ByteOrder::Network, Basis::Confirmed));
        assert_eq!(order.read_all("x", &[], &mut || unreachable!()), PortReading::none());
    }

    proptest::proptest! {
        #[test]
        fn events_never_repeat_ports_and_start_with_initial(
            initial in proptest::collection::vec(1u16.., 0..2),
            seen in proptest::collection::vec(proptest::option::of(proptest::collection::vec(1u16..4, 0..2)), 0..40),
        ) {
            let mut w = WatchState::default();
            let mut events = vec![w.initial(initial).unwrap()];
            for s in seen {
                let o = s.map_or(Observation::Registered, Observation::Ports);
                events.extend(w.observe(o));
            }
            proptest::prop_assert!(matches!(events[0], TeredoEvent::Initial { .. }), "initial first");
            for pair in events.windows(2) {
                proptest::prop_assert_ne!(pair[0].ports(), pair[1].ports());
            }
            proptest::prop_assert!(
                events[1..].iter().all(|e| matches!(e, TeredoEvent::Changed { .. })),
                "then changes"
            );
        }
    }
}
