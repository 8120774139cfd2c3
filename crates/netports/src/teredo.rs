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

/// Converts a port as the Teredo APIs return it to host order.
///
/// The byte order of `GetTeredoPort` and of the change callback is not documented; like the
/// other IP Helper ports it is taken to be network order (verify on Windows,
/// docs/WINDOWS-VERIFICATION.md). This is the one place that decides it.
#[must_use]
pub const fn port_from_api(raw: u16) -> Option<u16> {
    match u16::from_be(raw) {
        0 => None,
        p => Some(p),
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

/// The raw `NotifyTeredoPortChange` callback arguments as an [`Observation`].
#[must_use]
pub const fn observation_from_callback(raw_port: u16, notification_type: i32) -> Observation {
    if notification_type == MIB_INITIAL_NOTIFICATION {
        Observation::Registered
    } else {
        Observation::Port(port_from_api(raw_port))
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

/// The Teredo port in a `FWPM_SYSTEM_PORTS0` list, given as `(type, ports)` pairs.
///
/// The first port of the first `FWPM_SYSTEM_PORT_TEREDO` entry (ports are host order there;
/// verify on Windows). `None` when there is no Teredo entry or its port is 0.
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
    fn ports_are_converted_in_one_place() {
        assert_eq!(port_from_api(51_234_u16.to_be()), Some(51_234));
        assert_eq!(port_from_api(0), None);
        assert_eq!(observation_from_callback(0, MIB_INITIAL_NOTIFICATION), Observation::Registered);
        assert_eq!(observation_from_callback(4000_u16.to_be(), 1), Observation::Port(Some(4000)));
        assert_eq!(observation_from_callback(0, 1), Observation::Port(None));
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
