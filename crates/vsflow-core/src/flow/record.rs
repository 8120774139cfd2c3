//! What the table remembers about one flow.

use crate::packet::Direction;
use crate::time::Tick;

/// Connection state. TCP flows move through the first five; every other protocol is
/// [`FlowState::Active`] until it idles out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowState {
    /// TCP: the VM sent a SYN; no SYN-ACK seen yet.
    SynSent,
    /// TCP: a peer sent a SYN to the VM; the handshake has not completed.
    SynReceived,
    /// TCP: handshake complete (or picked up mid-stream).
    Established,
    /// TCP: a FIN was seen; the connection is closing.
    FinWait,
    /// TCP: closed by RST or by FINs in both directions.
    Closed,
    /// UDP and other protocols: traffic seen, not yet idle.
    Active,
}

impl FlowState {
    /// Wire value in the runtime-state format.
    #[must_use]
    pub const fn to_wire(self) -> u8 {
        match self {
            Self::SynSent => 1,
            Self::SynReceived => 2,
            Self::Established => 3,
            Self::FinWait => 4,
            Self::Closed => 5,
            Self::Active => 6,
        }
    }

    /// Parses a wire value.
    #[must_use]
    pub const fn from_wire(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::SynSent,
            2 => Self::SynReceived,
            3 => Self::Established,
            4 => Self::FinWait,
            5 => Self::Closed,
            6 => Self::Active,
            _ => return None,
        })
    }

    /// Human name, for tools.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::SynSent => "syn-sent",
            Self::SynReceived => "syn-received",
            Self::Established => "established",
            Self::FinWait => "fin-wait",
            Self::Closed => "closed",
            Self::Active => "active",
        }
    }

    /// How far a TCP connection has got: handshake 0, established 1, closing 2, closed 3
    /// (`Active` is 0).
    #[must_use]
    pub const fn progress(self) -> u8 {
        match self {
            Self::SynSent | Self::SynReceived | Self::Active => 0,
            Self::Established => 1,
            Self::FinWait => 2,
            Self::Closed => 3,
        }
    }

    /// True for the TCP states.
    #[must_use]
    pub const fn is_tcp(self) -> bool {
        !matches!(self, Self::Active)
    }
}

/// Who sent the first packet the table saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Opener {
    /// The VM (first packet outbound).
    Vm,
    /// A peer (first packet inbound).
    Remote,
}

impl Opener {
    /// Wire value.
    #[must_use]
    pub const fn to_wire(self) -> u8 {
        match self {
            Self::Vm => 1,
            Self::Remote => 2,
        }
    }

    /// Parses a wire value.
    #[must_use]
    pub const fn from_wire(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Vm),
            2 => Some(Self::Remote),
            _ => None,
        }
    }
}

/// Why inbound traffic of a flow is allowed in Enforce mode.
///
/// A peer-opened flow admitted under rule set version *n* is re-checked against the current
/// rules when the version changes (or when the port switches from Monitor to Enforce), so
/// removing a rule also stops the flows it let in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Admission {
    /// The VM opened it (or sent on it): return traffic is always allowed.
    Vm,
    /// Admitted while the port was in Monitor mode: not yet checked against rules.
    Monitor,
    /// Admitted in Enforce mode by the rule set with this version.
    Rule(u32),
}

/// Per-flow state and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowRecord {
    /// Connection state.
    pub state: FlowState,
    /// Who opened it.
    pub opener: Opener,
    /// Why inbound traffic is allowed (see [`Admission`]).
    pub admission: Admission,
    /// FIN seen, bit 0 from the VM, bit 1 from the peer.
    pub fin_seen: u8,
    /// Packets per direction, indexed by [`Direction::index`].
    pub packets: [u64; 2],
    /// Bytes per direction, indexed by [`Direction::index`].
    pub bytes: [u64; 2],
    /// When the first packet was seen.
    pub first_seen: Tick,
    /// When the latest packet was seen.
    pub last_seen: Tick,
}

impl FlowRecord {
    /// A record for a flow whose first packet is being seen now.
    #[must_use]
    pub const fn new(state: FlowState, opener: Opener, admission: Admission, now: Tick) -> Self {
        Self {
            state,
            opener,
            admission,
            fin_seen: 0,
            packets: [0; 2],
            bytes: [0; 2],
            first_seen: now,
            last_seen: now,
        }
    }

    /// True for an established TCP connection: the flows eviction spares (see
    /// [`crate::flow::Room`]).
    #[inline]
    #[must_use]
    pub const fn is_established(&self) -> bool {
        matches!(self.state, FlowState::Established)
    }

    /// The record of a flow that a restore carried (`self`, its admission already mapped to
    /// this host) and that this host also saw in the restore window (`window`).
    ///
    /// The carried opener and admission win (the source saw the flow start); the TCP state is
    /// the further of the two, FIN bits are united, counters summed, the first-seen time is the
    /// earlier and the last-seen time the later one. If the carried flow was closed and the window saw a new
    /// connection on the same 5-tuple, the window's record wins.
    #[must_use]
    pub fn merge_window(&self, window: &Self) -> Self {
        if self.state == FlowState::Closed && window.state != FlowState::Closed {
            return *window;
        }
        let fin_seen = self.fin_seen | window.fin_seen;
        let state = if !self.state.is_tcp() {
            self.state
        } else if fin_seen == 0b11 {
            FlowState::Closed
        } else if window.state.progress() > self.state.progress() {
            window.state
        } else {
            self.state
        };
        let add = |a: [u64; 2], b: [u64; 2]| [a[0].saturating_add(b[0]), a[1].saturating_add(b[1])];
        Self {
            state,
            opener: self.opener,
            admission: self.admission,
            fin_seen,
            packets: add(self.packets, window.packets),
            bytes: add(self.bytes, window.bytes),
            first_seen: self.first_seen.min(window.first_seen),
            last_seen: self.last_seen.max(window.last_seen),
        }
    }

    /// Counts one packet of `length` bytes in `direction` at `now`.
    #[inline]
    pub fn count(&mut self, direction: Direction, length: u32, now: Tick) {
        let i = direction.index();
        // Indexes 0 and 1 always exist: `Direction::index` returns only those.
        if let (Some(p), Some(b)) = (self.packets.get_mut(i), self.bytes.get_mut(i)) {
            *p = p.saturating_add(1);
            *b = b.saturating_add(u64::from(length));
        }
        if now > self.last_seen {
            self.last_seen = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(state: FlowState, opener: Opener, admission: Admission, t: Tick) -> FlowRecord {
        let mut r = FlowRecord::new(state, opener, admission, t);
        r.count(Direction::Inbound, 100, t);
        r
    }

    #[test]
    fn merge_keeps_the_carried_identity_and_the_further_state() {
        let carried = rec(FlowState::Established, Opener::Vm, Admission::Rule(3), 10);
        let window = rec(FlowState::FinWait, Opener::Remote, Admission::Monitor, 50);
        let m = carried.merge_window(&window);
        assert_eq!((m.opener, m.admission), (Opener::Vm, Admission::Rule(3)));
        assert_eq!(m.state, FlowState::FinWait);
        assert_eq!((m.first_seen, m.last_seen), (10, 50));
        assert_eq!((m.packets, m.bytes), ([0, 2], [0, 200]));
        let m = window.merge_window(&carried);
        assert_eq!(m.state, FlowState::FinWait, "a window pickup never rolls a state back");
    }

    fn arb_record() -> impl proptest::strategy::Strategy<Value = FlowRecord> {
        use proptest::prelude::*;
        let states = [
            FlowState::SynSent,
            FlowState::SynReceived,
            FlowState::Established,
            FlowState::FinWait,
            FlowState::Closed,
        ];
        (0usize..5, any::<bool>(), 0u8..4, any::<[u32; 4]>(), 0u64..1000, 0u64..1000).prop_map(
            move |(st, vm, fin, c, a, b)| {
                let (opener, admission) = if vm {
                    (Opener::Vm, Admission::Vm)
                } else {
                    (Opener::Remote, Admission::Rule(7))
                };
                let mut r = FlowRecord::new(states[st], opener, admission, a.min(b));
                r.fin_seen = fin;
                r.packets = [u64::from(c[0]), u64::from(c[1])];
                r.bytes = [u64::from(c[2]), u64::from(c[3])];
                r.last_seen = a.max(b);
                r
            },
        )
    }

    proptest::proptest! {
        #[test]
        fn merge_never_loses_traffic_time_or_progress(carried in arb_record(), window in arb_record()) {
            let m = carried.merge_window(&window);
            if carried.state == FlowState::Closed && window.state != FlowState::Closed {
                proptest::prop_assert_eq!(m, window);
                return Ok(());
            }
            proptest::prop_assert_eq!((m.opener, m.admission), (carried.opener, carried.admission));
            proptest::prop_assert_eq!(m.packets[0], carried.packets[0] + window.packets[0]);
            proptest::prop_assert_eq!(m.bytes[1], carried.bytes[1] + window.bytes[1]);
            proptest::prop_assert_eq!(m.last_seen, carried.last_seen.max(window.last_seen));
            proptest::prop_assert_eq!(m.first_seen, carried.first_seen.min(window.first_seen));
            proptest::prop_assert!(m.state.progress() >= carried.state.progress());
            proptest::prop_assert!(m.state.progress() >= window.state.progress());
            proptest::prop_assert_eq!(m.fin_seen, carried.fin_seen | window.fin_seen);
        }
    }

    #[test]
    fn merge_closes_on_fins_from_both_sides_and_lets_a_new_connection_win_over_a_closed_one() {
        let mut carried = rec(FlowState::FinWait, Opener::Vm, Admission::Vm, 10);
        carried.fin_seen = 0b01;
        let mut window = rec(FlowState::FinWait, Opener::Remote, Admission::Monitor, 20);
        window.fin_seen = 0b10;
        assert_eq!(carried.merge_window(&window).state, FlowState::Closed);
        let closed = rec(FlowState::Closed, Opener::Vm, Admission::Vm, 10);
        let fresh = rec(FlowState::SynReceived, Opener::Remote, Admission::Monitor, 20);
        assert_eq!(closed.merge_window(&fresh), fresh);
    }
}
