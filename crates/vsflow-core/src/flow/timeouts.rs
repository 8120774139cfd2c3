//! Idle timeouts per protocol and state.

use crate::flow::FlowState;
use crate::packet::protocol;
use crate::time::{Tick, secs};

/// The idle-timeout class of a flow: flows of one class share a timeout and an LRU list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeoutClass {
    /// TCP SYN-SENT / SYN-RECEIVED.
    TcpHandshake = 0,
    /// TCP ESTABLISHED.
    TcpEstablished = 1,
    /// TCP FIN-WAIT.
    TcpClosing = 2,
    /// TCP CLOSED: reclaimed before anything else.
    Closed = 3,
    /// UDP.
    Udp = 4,
    /// Any other protocol (ICMP, GRE, ...).
    Other = 5,
}

impl TimeoutClass {
    /// Number of classes.
    pub const COUNT: usize = 6;
    /// All classes, in index order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::TcpHandshake,
        Self::TcpEstablished,
        Self::TcpClosing,
        Self::Closed,
        Self::Udp,
        Self::Other,
    ];

    /// The class of a flow in `state` for `proto`.
    #[must_use]
    pub const fn of(proto: u8, state: FlowState) -> Self {
        match state {
            FlowState::SynSent | FlowState::SynReceived => Self::TcpHandshake,
            FlowState::Established => Self::TcpEstablished,
            FlowState::FinWait => Self::TcpClosing,
            FlowState::Closed => Self::Closed,
            FlowState::Active => {
                if proto == protocol::UDP {
                    Self::Udp
                } else {
                    Self::Other
                }
            }
        }
    }

    /// Index into per-class arrays.
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Idle timeouts in ticks. A flow idle for at least its class's timeout is *expired*: it is
/// reclaimed before any live flow when room is needed, and by [`crate::FlowTable::expire`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP handshake in progress (default 60 s).
    pub tcp_handshake: Tick,
    /// TCP established (default 2 h, the Windows keep-alive period).
    pub tcp_established: Tick,
    /// TCP closing (default 120 s, 2 MSL).
    pub tcp_closing: Tick,
    /// TCP closed (default 10 s).
    pub tcp_closed: Tick,
    /// UDP (default 60 s).
    pub udp: Tick,
    /// Other protocols (default 30 s).
    pub other: Tick,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp_handshake: secs(60),
            tcp_established: secs(2 * 60 * 60),
            tcp_closing: secs(120),
            tcp_closed: secs(10),
            udp: secs(60),
            other: secs(30),
        }
    }
}

impl Timeouts {
    /// The timeout of one class.
    #[must_use]
    pub const fn of(&self, class: TimeoutClass) -> Tick {
        match class {
            TimeoutClass::TcpHandshake => self.tcp_handshake,
            TimeoutClass::TcpEstablished => self.tcp_established,
            TimeoutClass::TcpClosing => self.tcp_closing,
            TimeoutClass::Closed => self.tcp_closed,
            TimeoutClass::Udp => self.udp,
            TimeoutClass::Other => self.other,
        }
    }

    /// True if a flow of `proto` in `state`, idle for `idle` ticks, is expired (admits
    /// nothing).
    #[must_use]
    pub const fn expired(&self, proto: u8, state: FlowState, idle: Tick) -> bool {
        idle >= self.of(TimeoutClass::of(proto, state))
    }

    /// All timeouts must be non-zero.
    pub(crate) const fn is_valid(&self) -> bool {
        self.tcp_handshake > 0
            && self.tcp_established > 0
            && self.tcp_closing > 0
            && self.tcp_closed > 0
            && self.udp > 0
            && self.other > 0
    }
}
