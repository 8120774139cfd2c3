//! "Why can't I bind port N?": the answer from the facts a host can gather.

use serde::Serialize;

use crate::excluded::ExcludedRange;
use crate::range::{PortBlock, Protocol};

/// What a bind attempt told us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindOutcome {
    /// The bind succeeded (and was closed again).
    Bound,
    /// `WSAEADDRINUSE`: a socket holds the port.
    InUse,
    /// `WSAEACCES`: an exclusion or reservation forbids it.
    AccessDenied,
    /// The bind was not tried (or failed otherwise).
    Unknown,
}

/// Why a port is (not) bindable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// A persistent reservation holds it: only applications using its token may bind.
    Reserved {
        /// The reservation.
        block: PortBlock,
    },
    /// An excluded range without an owner holds it: typically WinNAT/HNS for Hyper-V, WSL or
    /// Docker; it moves at reboot.
    Excluded {
        /// The range.
        block: PortBlock,
    },
    /// A socket is bound to it.
    InUse,
    /// Nothing holds it.
    Free,
    /// `bind` was refused but no source names the port (a filter, or an exclusion the
    /// sources do not show).
    Denied,
}

impl Verdict {
    /// One line for a person.
    #[must_use]
    pub fn explain(&self, proto: Protocol, port: u16) -> String {
        match self {
            Self::Reserved { block } => format!(
                "{proto} {port} is in the persistent reservation {block}: only sockets associated with its token can bind it (netports lookup {proto} {} {})",
                block.start, block.count
            ),
            Self::Excluded { block } => format!(
                "{proto} {port} is in the excluded range {block} with no owner (WinNAT/HNS for Hyper-V, WSL or Docker; it moves at reboot): reserve the port persistently (`netports reserve {proto} {port} 1`, elevated) while winnat is stopped"
            ),
            Self::InUse => format!("{proto} {port} is in use by another socket"),
            Self::Free => format!("{proto} {port} is free"),
            Self::Denied => format!(
                "{proto} {port} cannot be bound (access denied) but no reservation or exclusion names it: check firewall or security software"
            ),
        }
    }
}

/// Decides from the reservations, the excluded ranges and a bind attempt.
#[must_use]
pub fn why_blocked(
    port: u16,
    reservations: &[PortBlock],
    excluded: &[ExcludedRange],
    bind: BindOutcome,
) -> Verdict {
    if let Some(r) = reservations.iter().find(|b| b.contains(port)) {
        return Verdict::Reserved { block: *r };
    }
    if let Some(e) = excluded.iter().find(|e| e.block.contains(port)) {
        return if e.administered {
            Verdict::Reserved { block: e.block }
        } else {
            Verdict::Excluded { block: e.block }
        };
    }
    match bind {
        BindOutcome::InUse => Verdict::InUse,
        BindOutcome::AccessDenied => Verdict::Denied,
        BindOutcome::Bound | BindOutcome::Unknown => Verdict::Free,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: u16, n: u16) -> PortBlock {
        PortBlock::new(s, n).unwrap()
    }

    #[test]
    fn the_most_specific_reason_wins() {
        let reserved = [b(8000, 10)];
        let excluded = [
            ExcludedRange { block: b(50_000, 100), administered: false },
            ExcludedRange { block: b(9000, 1), administered: true },
        ];
        assert_eq!(
            why_blocked(8005, &reserved, &excluded, BindOutcome::AccessDenied),
            Verdict::Reserved { block: b(8000, 10) }
        );
        assert_eq!(
            why_blocked(50_010, &reserved, &excluded, BindOutcome::AccessDenied),
            Verdict::Excluded { block: b(50_000, 100) }
        );
        assert_eq!(
            why_blocked(9000, &reserved, &excluded, BindOutcome::AccessDenied),
            Verdict::Reserved { block: b(9000, 1) }
        );
        assert_eq!(why_blocked(443, &reserved, &excluded, BindOutcome::InUse), Verdict::InUse);
        assert_eq!(why_blocked(444, &reserved, &excluded, BindOutcome::Bound), Verdict::Free);
        assert_eq!(
            why_blocked(445, &reserved, &excluded, BindOutcome::AccessDenied),
            Verdict::Denied
        );
        assert!(
            Verdict::Excluded { block: b(50_000, 100) }
                .explain(Protocol::Tcp, 50_010)
                .contains("WinNAT")
        );
    }
}
