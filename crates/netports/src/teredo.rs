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

/// The event a raw callback invocation means.
#[must_use]
pub const fn event_from_callback(
    raw_port: u16,
    notification_type: i32,
    current: Option<u16>,
) -> TeredoEvent {
    if notification_type == MIB_INITIAL_NOTIFICATION {
        TeredoEvent::Initial { port: current }
    } else {
        TeredoEvent::Changed { port: port_from_api(raw_port) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_converted_in_one_place() {
        assert_eq!(port_from_api(51_234_u16.to_be()), Some(51_234));
        assert_eq!(port_from_api(0), None);
        assert_eq!(
            event_from_callback(0, MIB_INITIAL_NOTIFICATION, Some(7)),
            TeredoEvent::Initial { port: Some(7) }
        );
        assert_eq!(
            event_from_callback(4000_u16.to_be(), 1, None),
            TeredoEvent::Changed { port: Some(4000) }
        );
    }
}
