//! Teredo: the client's UDP port, and what a watcher reports.

use serde::Serialize;

/// The static UDP port Teredo also listens on (multicast 224.0.0.253, RFC 4380).
pub const TEREDO_STATIC_PORT: u16 = 3544;

/// What a Teredo watcher reports, serialized (never two at once).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum TeredoEvent {
    /// Registration confirmed (`MibInitialNotification`); the port is looked up separately
    /// because the initial notification carries 0.
    Initial {
        /// The port at registration, if the client runs.
        port: Option<u16>,
    },
    /// The client's port changed (0 when the client stopped).
    Changed {
        /// The new port, `None` when the client stopped.
        port: Option<u16>,
    },
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
}

/// A port read from a Teredo source, with a warning when the cross-check disagreed with the
/// network-order assumption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    /// The port (`None`: 0, no port).
    pub port: Option<u16>,
    /// Set when the endpoint table contradicted network order.
    pub warning: Option<String>,
}

/// The byte order of one Teredo source, settled at run time.
///
/// Neither `GetTeredoPort`, the change callback nor `FWPM_SYSTEM_PORTS_BY_TYPE0` document the
/// byte order of their port. `GetExtendedUdpTable` does (network order): the Teredo client's
/// socket is a UDP endpoint of the Teredo service, so the raw value is read both ways and the
/// reading that names one of that service's UDP ports wins. Once one reading is confirmed it
/// is kept for the source; until then network order is assumed. A disagreement with the
/// assumption is reported (the caller logs it): docs/WINDOWS-VERIFICATION.md item 22.
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

    /// Reads `raw` from `source`; `teredo_udp_ports` gives the host-order local ports of the
    /// Teredo service's UDP endpoints (called only while the order is unsettled).
    pub fn read(
        &mut self,
        source: &str,
        raw: u16,
        teredo_udp_ports: &mut dyn FnMut() -> Vec<u16>,
    ) -> Reading {
        if raw == 0 {
            return Reading { port: None, warning: None };
        }
        if let Some(order) = self.settled {
            return Reading { port: Some(order.read(raw)), warning: None };
        }
        let (net, host) = (ByteOrder::Network.read(raw), raw);
        if net == host {
            return Reading { port: Some(net), warning: None };
        }
        let ports = teredo_udp_ports();
        match (ports.contains(&net), ports.contains(&host)) {
            (true, false) => {
                self.settled = Some(ByteOrder::Network);
                Reading { port: Some(net), warning: None }
            }
            (false, true) => {
                self.settled = Some(ByteOrder::Host);
                Reading {
                    port: Some(host),
                    warning: Some(format!(
                        "{source} reports the Teredo port in host order ({host}, not {net}): the Teredo service's UDP endpoint (GetExtendedUdpTable, network order) says so; using {host}"
                    )),
                }
            }
            // Neither or both: unconfirmed; the assumption stands.
            _ => Reading { port: Some(net), warning: None },
        }
    }
}

/// `MibInitialNotification`.
pub const MIB_INITIAL_NOTIFICATION: i32 = 3;

/// What one notification reports, whatever its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    /// `MibInitialNotification` of `NotifyTeredoPortChange`: carries no port (0).
    Registered,
    /// A port as the source reports it (`None`: the client stopped or has no port).
    Port(Option<u16>),
}

/// The `NotifyTeredoPortChange` callback arguments as an [`Observation`]; `port` is the
/// callback's port already read through the source's [`PortOrder`].
#[must_use]
pub const fn observation_from_callback(port: Option<u16>, notification_type: i32) -> Observation {
    if notification_type == MIB_INITIAL_NOTIFICATION {
        Observation::Registered
    } else {
        Observation::Port(port)
    }
}

/// Turns notifications into the events a watcher's user sees: one `Initial` first, then a
/// `Changed` only when the port really changed.
///
/// Both sources need this: `FwpmSystemPortsSubscribe0` fires for every system-port change
/// (IP-HTTPS, RPC, ...), not only Teredo's, and `NotifyTeredoPortChange` may report the port
/// it already reported. A notification that arrives before the initial event is folded into
/// it: the initial port is read after the subscription exists, so no change is lost between
/// reading the port and subscribing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WatchState {
    /// Nothing reported yet.
    #[default]
    Unreported,
    /// The port last reported to the user.
    Reported(Option<u16>),
}

impl WatchState {
    /// The initial event, with the port read after subscribing; `None` if it was already sent.
    pub const fn initial(&mut self, port: Option<u16>) -> Option<TeredoEvent> {
        if let Self::Reported(_) = self {
            return None;
        }
        *self = Self::Reported(port);
        Some(TeredoEvent::Initial { port })
    }

    /// The event a notification means, if any. `Registered` carries no port: it is answered
    /// by [`WatchState::initial`] with a port read separately.
    pub fn observe(&mut self, observation: Observation) -> Option<TeredoEvent> {
        let Observation::Port(port) = observation else { return None };
        match *self {
            Self::Unreported => None,
            Self::Reported(last) if last == port => None,
            Self::Reported(_) => {
                *self = Self::Reported(port);
                Some(TeredoEvent::Changed { port })
            }
        }
    }
}

/// The raw Teredo port in a `FWPM_SYSTEM_PORTS0` list, given as `(type, ports)` pairs.
///
/// The first port of the first `FWPM_SYSTEM_PORT_TEREDO` entry, as stored (its byte order is
/// settled by [`PortOrder`]). `None` when there is no Teredo entry or its port is 0.
#[must_use]
pub fn port_from_system_ports<'a>(
    entries: impl IntoIterator<Item = (i32, &'a [u16])>,
) -> Option<u16> {
    entries
        .into_iter()
        .find(|(t, _)| *t == FWPM_SYSTEM_PORT_TEREDO)
        .and_then(|(_, ports)| ports.first().copied())
        .filter(|p| *p != 0)
}

/// `FWPM_SYSTEM_PORT_TEREDO`.
pub const FWPM_SYSTEM_PORT_TEREDO: i32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_order_is_settled_by_the_teredo_services_udp_endpoint() {
        let raw = 51_234_u16.to_be();
        let mut calls = 0;
        let mut network = PortOrder::default();
        let r = network.read("GetTeredoPort", raw, &mut || {
            calls += 1;
            vec![3544, 51_234]
        });
        assert_eq!(r, Reading { port: Some(51_234), warning: None });
        assert_eq!(network.settled(), Some(ByteOrder::Network));
        let again = network.read("GetTeredoPort", 4000_u16.to_be(), &mut || {
            calls += 1;
            vec![]
        });
        assert_eq!(again.port, Some(4000), "settled: no second look-up");
        assert_eq!(calls, 1);

        let mut host = PortOrder::default();
        let r = host.read("GetTeredoPort", 51_234, &mut || vec![51_234]);
        assert_eq!(r.port, Some(51_234));
        assert!(r.warning.unwrap().contains("host order"), "a disagreement is reported");
        assert_eq!(host.settled(), Some(ByteOrder::Host));

        let mut unknown = PortOrder::default();
        assert_eq!(
            unknown.read("x", raw, &mut Vec::new).port,
            Some(51_234),
            "unconfirmed: network order assumed"
        );
        assert_eq!(unknown.settled(), None, "and not settled");
        assert_eq!(unknown.read("x", 0, &mut || unreachable!()).port, None);
        assert_eq!(
            unknown.read("x", 0x0101, &mut || unreachable!()).port,
            Some(0x0101),
            "same both ways"
        );
    }

    #[test]
    fn callbacks_become_observations() {
        assert_eq!(
            observation_from_callback(None, MIB_INITIAL_NOTIFICATION),
            Observation::Registered
        );
        assert_eq!(observation_from_callback(Some(4000), 0), Observation::Port(Some(4000)));
        assert_eq!(observation_from_callback(None, 0), Observation::Port(None));
    }

    #[test]
    fn the_initial_event_comes_first_and_only_real_changes_follow() {
        let mut w = WatchState::default();
        assert_eq!(w.observe(Observation::Port(Some(1))), None, "before the initial event");
        assert_eq!(w.observe(Observation::Registered), None);
        assert_eq!(w.initial(Some(2)), Some(TeredoEvent::Initial { port: Some(2) }));
        assert_eq!(w.initial(Some(3)), None, "only one initial event");
        assert_eq!(w.observe(Observation::Port(Some(2))), None, "no change");
        assert_eq!(
            w.observe(Observation::Port(Some(5))),
            Some(TeredoEvent::Changed { port: Some(5) })
        );
        assert_eq!(w.observe(Observation::Port(None)), Some(TeredoEvent::Changed { port: None }));
        assert_eq!(w.observe(Observation::Port(None)), None);
    }

    #[test]
    fn the_teredo_entry_is_found_among_system_ports() {
        let rpc: &[u16] = &[135];
        let teredo: &[u16] = &[51_000, 3544];
        assert_eq!(port_from_system_ports([(0, rpc), (1, teredo)]), Some(51_000));
        assert_eq!(port_from_system_ports([(0, rpc)]), None);
        assert_eq!(port_from_system_ports([(1, &[0u16][..])]), None);
        assert_eq!(port_from_system_ports([(1, &[][..])]), None);
    }

    proptest::proptest! {
        #[test]
        fn events_never_repeat_a_port_and_start_with_initial(
            initial in proptest::option::of(1u16..),
            seen in proptest::collection::vec(proptest::option::of(proptest::option::of(1u16..4)), 0..40),
        ) {
            let mut w = WatchState::default();
            let mut events = vec![w.initial(initial).unwrap()];
            for s in seen {
                let o = s.map_or(Observation::Registered, Observation::Port);
                events.extend(w.observe(o));
            }
            proptest::prop_assert!(matches!(events[0], TeredoEvent::Initial { .. }), "initial first");
            let ports: Vec<Option<u16>> = events.iter().map(|e| match e {
                TeredoEvent::Initial { port } | TeredoEvent::Changed { port } => *port,
            }).collect();
            for pair in ports.windows(2) {
                proptest::prop_assert_ne!(pair[0], pair[1]);
            }
            proptest::prop_assert!(
                events[1..].iter().all(|e| matches!(e, TeredoEvent::Changed { .. })),
                "then changes"
            );
        }
    }
}
