//! Flows picked up but not yet answered by the VM (issue 16: pickups admit no new
//! conversation).
//!
//! After a live migration a peer may speak first on a connection the destination does not know
//! exactly: in the restore window, by fingerprint, or by loose pickup ([`crate::port`],
//! "Pickups"). Such a segment is admitted, but the flow is only *tentative*: it lives here, not
//! in the port's [`crate::FlowTable`], until the VM answers on it.
//!
//! - The VM answers with anything but RST, SYN or SYN-ACK: it has the connection. The flow is
//!   *confirmed* and moves to the table as an established connection ([`Answer::Confirmed`]).
//! - The VM answers with RST (what a TCP stack does with a segment of a connection it does not
//!   have, RFC 9293 3.10.7.1): the flow is *refused* ([`Answer::Refused`]). It stays here, so
//!   that nothing more on its 5-tuple is picked up; the fingerprint that admitted it is not
//!   used up (the real connection with that fingerprint still resumes).
//! - The VM answers with a SYN-ACK: it accepted a SYN vsflow never judged as one (a later
//!   fragment that overlaps the first fragment's TCP flags, reassembled by the guest: RFC 1858
//!   section 3.3). A VM resuming a connection never sends one, so the flow is *refused* as
//!   for a reset; classify tracks the VM's SYN-ACK as the answer to a peer's SYN, whose
//!   return traffic the rules judge.
//! - The VM sends a SYN on it: it opens a connection of its own ([`Answer::Withdrawn`]).
//!
//! A tentative flow admits at most [`INBOUND_LIMIT`] inbound segments before the VM answers,
//! and only mid-stream ones (readable flags, ACK set, SYN and RST clear): an initial SYN on its
//! 5-tuple is judged by the rules as a new connection.
//!
//! **Bounded, and never in the way.** At most [`CAPACITY`] flows per port, allocated with the
//! port (no allocation on the packet path). Tentative flows never occupy the flow table, so an
//! outsider's spray can neither fill the table nor displace an established connection. When
//! full, a new tentative flow replaces the oldest one the VM has not refused (else the oldest
//! refused one). Replacing a real connection's tentative flow costs it nothing: the VM's own
//! answer on an unknown flow opens a flow anyway (the VM's traffic always does).

use alloc::vec::Vec;

use crate::error::Error;
use crate::flow::FlowKey;
use crate::packet::TcpFlags;
use crate::time::Tick;

/// Tentative flows one port holds at most.
pub const CAPACITY: usize = 32;

/// Inbound segments a tentative flow admits before the VM answers (the first included).
///
/// A peer resuming a connection sends a few segments before the VM's acknowledgement comes
/// back; past this it retransmits after the VM answers.
pub const INBOUND_LIMIT: u8 = 4;

/// What picked a flow up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PickupKind {
    /// Inbound mid-stream TCP in the restore window (before any restore).
    Window,
    /// The restored fingerprint at this position of the armed set matched.
    Fingerprint(u32),
    /// Loose pickup.
    Loose,
}

/// The VM's packet on a tentative flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Not RST, not SYN: the VM has the connection. The flow left this set; `inbound` segments
    /// were admitted while it was tentative.
    Confirmed {
        /// What had picked it up.
        kind: PickupKind,
        /// Inbound segments admitted while tentative.
        inbound: u8,
    },
    /// RST, or a SYN-ACK (the VM answers a SYN, it resumes no connection): the VM has no
    /// such connection. The flow stays, refused.
    Refused(PickupKind),
    /// A SYN: the VM opens a connection of its own on this 5-tuple. The flow left this set.
    Withdrawn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    key: FlowKey,
    since: Tick,
    kind: PickupKind,
    inbound: u8,
    refused: bool,
}

/// The tentative flows of one port. See the module docs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TentativeFlows {
    entries: Vec<Entry>,
}

impl TentativeFlows {
    /// An empty set with room for [`CAPACITY`] flows.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`].
    pub fn try_new() -> Result<Self, Error> {
        let mut entries = Vec::new();
        entries.try_reserve_exact(CAPACITY)?;
        Ok(Self { entries })
    }

    /// Flows held (tentative and refused).
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no flow is held.
    #[inline]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True if `key` is held and the VM refused it.
    #[must_use]
    pub fn is_refused(&self, key: &FlowKey) -> bool {
        self.find(key).is_some_and(|e| e.refused)
    }

    /// True if `key` is held, not refused.
    #[must_use]
    pub fn is_tentative(&self, key: &FlowKey) -> bool {
        self.find(key).is_some_and(|e| !e.refused)
    }

    fn find(&self, key: &FlowKey) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == *key)
    }

    /// An inbound mid-stream segment of `key`: `None` if the flow is not held; `Some(true)` if
    /// it is tentative and under [`INBOUND_LIMIT`] (the segment is admitted and counted),
    /// `Some(false)` if it is refused or at the limit.
    pub fn inbound(&mut self, key: &FlowKey) -> Option<bool> {
        let e = self.entries.iter_mut().find(|e| e.key == *key)?;
        if e.refused || e.inbound >= INBOUND_LIMIT {
            return Some(false);
        }
        e.inbound += 1;
        Some(true)
    }

    /// Holds `key` as a new tentative flow whose first inbound segment is admitted now. When
    /// full, replaces the oldest unrefused flow (else the oldest refused one). The caller knows
    /// `key` is not held. Never allocates.
    pub fn insert(&mut self, key: FlowKey, kind: PickupKind, now: Tick) {
        let entry = Entry { key, since: now, kind, inbound: 1, refused: false };
        if self.entries.len() < CAPACITY {
            // Within the capacity reserved by `try_new`: no allocation.
            self.entries.push(entry);
            return;
        }
        let oldest = |refused: bool| {
            self.entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.refused == refused)
                .min_by_key(|(_, e)| e.since)
                .map(|(i, _)| i)
        };
        if let Some(slot) =
            oldest(false).or_else(|| oldest(true)).and_then(|i| self.entries.get_mut(i))
        {
            *slot = entry;
        }
    }

    /// The VM's packet with `flags` on `key` (a flow the table does not hold). `None` if `key`
    /// is not held tentatively (a refused flow does not constrain the VM's own traffic).
    pub fn answer(&mut self, key: &FlowKey, flags: TcpFlags) -> Option<Answer> {
        let i = self.entries.iter().position(|e| e.key == *key && !e.refused)?;
        let e = self.entries.get_mut(i)?;
        if flags.has(TcpFlags::RST) || flags.has(TcpFlags::SYN | TcpFlags::ACK) {
            e.refused = true;
            return Some(Answer::Refused(e.kind));
        }
        let (kind, inbound) = (e.kind, e.inbound);
        self.entries.swap_remove(i);
        if flags.is_initial_syn() {
            Some(Answer::Withdrawn)
        } else {
            Some(Answer::Confirmed { kind, inbound })
        }
    }

    /// Re-decides what picked up each unrefused flow (`f` returns the new kind, or `None` to
    /// drop it): the restore window ended, or a new fingerprint set was armed.
    pub fn rekind(&mut self, mut f: impl FnMut(&FlowKey, PickupKind) -> Option<PickupKind>) {
        self.entries.retain_mut(|e| {
            if e.refused {
                return true;
            }
            match f(&e.key, e.kind) {
                Some(kind) => {
                    e.kind = kind;
                    true
                }
                None => false,
            }
        });
    }

    /// Drops every flow, keeping the storage.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Direction, PacketMeta, protocol};

    fn key(n: u16) -> FlowKey {
        FlowKey::of(&PacketMeta::ipv4(
            Direction::Inbound,
            protocol::TCP,
            [198, 51, 100, 1],
            n,
            [10, 0, 0, 2],
            3389,
            TcpFlags::ACK,
            60,
        ))
    }

    const ACK: TcpFlags = TcpFlags(TcpFlags::ACK);

    #[test]
    fn a_tentative_flow_admits_a_few_segments_until_the_vm_answers() {
        let mut t = TentativeFlows::try_new().unwrap();
        assert_eq!(t.inbound(&key(1)), None);
        t.insert(key(1), PickupKind::Loose, 5);
        for _ in 1..INBOUND_LIMIT {
            assert_eq!(t.inbound(&key(1)), Some(true));
        }
        assert_eq!(t.inbound(&key(1)), Some(false), "past the limit before the VM answers");
        assert_eq!(
            t.answer(&key(1), ACK),
            Some(Answer::Confirmed { kind: PickupKind::Loose, inbound: INBOUND_LIMIT })
        );
        assert!(t.is_empty(), "a confirmed flow leaves for the table");
    }

    #[test]
    fn a_refused_flow_stays_refused_and_a_syn_withdraws_one() {
        let mut t = TentativeFlows::try_new().unwrap();
        t.insert(key(1), PickupKind::Fingerprint(7), 5);
        t.insert(key(2), PickupKind::Window, 5);
        assert_eq!(
            t.answer(&key(1), TcpFlags(TcpFlags::RST | TcpFlags::ACK)),
            Some(Answer::Refused(PickupKind::Fingerprint(7)))
        );
        assert!(t.is_refused(&key(1)));
        assert_eq!(t.inbound(&key(1)), Some(false));
        assert_eq!(t.answer(&key(1), ACK), None, "the VM's own traffic is not constrained");
        assert_eq!(t.answer(&key(2), TcpFlags(TcpFlags::SYN)), Some(Answer::Withdrawn));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_syn_ack_from_the_vm_refuses_a_flow() {
        let mut t = TentativeFlows::try_new().unwrap();
        t.insert(key(1), PickupKind::Loose, 5);
        assert_eq!(
            t.answer(&key(1), TcpFlags(TcpFlags::SYN | TcpFlags::ACK)),
            Some(Answer::Refused(PickupKind::Loose))
        );
        assert!(t.is_refused(&key(1)));
        assert_eq!(t.inbound(&key(1)), Some(false));
    }

    #[test]
    fn a_full_set_replaces_the_oldest_unrefused_flow_and_never_grows() {
        let mut t = TentativeFlows::try_new().unwrap();
        let cap = t.entries.capacity();
        for n in 0..u16::try_from(CAPACITY).unwrap() {
            t.insert(key(n), PickupKind::Loose, u64::from(n));
        }
        // The oldest is refused: it is kept over unrefused ones.
        t.answer(&key(0), TcpFlags(TcpFlags::RST));
        t.insert(key(1000), PickupKind::Loose, 1000);
        assert_eq!(t.len(), CAPACITY);
        assert!(t.is_refused(&key(0)));
        assert!(!t.is_tentative(&key(1)), "the oldest unrefused flow was replaced");
        assert!(t.is_tentative(&key(1000)));
        for n in 2000..2100 {
            t.insert(key(n), PickupKind::Loose, u64::from(n));
        }
        assert_eq!(t.len(), CAPACITY);
        assert_eq!(t.entries.capacity(), cap, "the set grew");
        assert!(t.is_refused(&key(0)));
    }

    #[test]
    fn rekind_keeps_refused_flows_and_drops_what_it_is_told_to() {
        let mut t = TentativeFlows::try_new().unwrap();
        t.insert(key(1), PickupKind::Window, 1);
        t.insert(key(2), PickupKind::Window, 1);
        t.insert(key(3), PickupKind::Window, 1);
        t.answer(&key(3), TcpFlags(TcpFlags::RST));
        t.rekind(|k, _| (*k == key(1)).then_some(PickupKind::Loose));
        assert_eq!(t.len(), 2);
        assert!(t.is_tentative(&key(1)) && t.is_refused(&key(3)));
        assert_eq!(
            t.answer(&key(1), ACK),
            Some(Answer::Confirmed { kind: PickupKind::Loose, inbound: 1 })
        );
    }
}
