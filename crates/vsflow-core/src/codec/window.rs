//! The restore window's flows checked against a blob's fingerprints in short lock holds
//! (issue 18 item 1, what window s6 left: a blob that arms fingerprints into a full window).
//!
//! # The problem
//!
//! A restore's apply runs under the port's lock (in the driver at `DISPATCH_LEVEL`). When the
//! blob arms fingerprints, every TCP connection the restore window created must be checked
//! against them: one the VM spoke on resumes as a carried connection (its fingerprint used
//! up), one only a peer spoke on is left out (issue 16), every other stays as it is. That is a
//! `SipHash` and a binary search per window flow, and the apply copied the whole window into
//! the carried table to do it: 30.6-48.6 M instructions, 6-12 ms under the lock with a full
//! window (60,437 flows; a hostile VM controls both ends, so it can choose this).
//!
//! # The design
//!
//! Whether a window flow's fingerprint is in the blob's set depends on its **key only** (the
//! set is the blob's; every fingerprint is unused when the apply arms it). So the check is done
//! ahead of the apply, [`WindowCheck::step`] by step, each step under the port's lock for a
//! bounded number of slots ([`CHECK_STEP`]), the lock released between steps so that packets
//! are judged meanwhile. A step only reads: it changes nothing classify reads, so a packet
//! judged between steps is judged exactly as before the apply (the restore window's rules: no
//! packet gets more than it would have without the check).
//!
//! Packets change the table between steps: a flow placed in a free slot (or pushed at the
//! slab's end) was not read by the step that passed that slot. The table itself remembers
//! which slots the check has read since it armed it (`SlotWatch`, one bit a slot: set by a
//! step, cleared whenever the slot takes another flow, O(1) on the insert path and only a
//! bounds check when no check is armed). A flow whose record changed in place (its state, its
//! packets) keeps its key, so what was read about it stays true; its state and the VM's packets
//! are read at the apply, under the lock, as the apply always read them.
//!
//! Once every slot has been read, the steps catch up: each reads the flows placed since in
//! slots already read (found a word of bits at a time), its matches in slots that took another
//! flow dropped first, until a step finds at most [`CAUGHT_UP`]; a VM that opens flows as fast
//! as the steps read them is stopped by the driver's bound on the holds (`CHECK_HOLDS` in
//! vsflow-callout), the rest then read by the apply.
//!
//! The apply ([`super::apply_staged_checked`]) then, in its one lock hold:
//! 1. reads the slots the check has not read (placed since, or left when the steps ran out):
//!    found a word of bits at a time, one load per 64 slots read;
//! 2. takes the flows the check found matching (the blob bounds them: a window flow matches
//!    only if its key is a fingerprinted connection's, or by a chance of `n / 2^32`), and
//!    decides for each in slot order what the copying apply decided (kept as it is, left out,
//!    or resumed), the carried flows merged into the window's table
//!    (`FlowTable::merge_carried`) as for a blob without fingerprints (window s6).
//!
//! So the work under the lock is the carried flows', the matching ones' and the unread
//! slots', plus a 64th of the slots: not the window's. A check that could not be completed
//! (no memory for its bits or its matches, or the port's table replaced more than
//! [`MAX_RESTARTS`] times between steps) is simply not used: the apply checks the window in its
//! own hold (the same result), or copies it as before.

use alloc::vec::Vec;

use super::PortState;
use crate::flow::MAX_FLOWS_LIMIT;
use crate::packet::protocol;
use crate::port::Port;

/// Slots one [`WindowCheck::step`] reads: about 1,024 `SipHash`es and as many slot reads, tens
/// of microseconds (docs/PERFORMANCE.md, "Issue 18: the fingerprint window's hold bounded").
pub const CHECK_STEP: u32 = 1024;

/// A catch-up step that read at most this many flows ends the check: the apply reads the rest
/// (those placed after it) in its own hold.
pub const CAUGHT_UP: u32 = 64;

/// Matches a check makes room for beyond one per fingerprint, before any lock.
const MATCH_SLACK: usize = 64;

/// Times a check starts over because the port's table was replaced between its steps (a merge
/// of a split port's shards, another restore): after that it gives up (the apply checks in its
/// own hold).
pub const MAX_RESTARTS: u32 = 2;

/// A match: slot `slot` holds a flow whose key's fingerprint is at position `at` of the set,
/// in one `u32` (the slot in the high half: they sort by slot; the driver image has the `u32`
/// sort already, a sort of pairs cost it 8.7 KB). `None` past 16 bits (never: a table has at
/// most `MAX_FLOWS_LIMIT` = 2^16 slots, a set at most `MAX_FINGERPRINTS` < 2^16).
fn pack(slot: u32, at: usize) -> Option<u32> {
    let at = u16::try_from(at).ok()?;
    let slot = u16::try_from(slot).ok()?;
    Some(u32::from(slot) << 16 | u32::from(at))
}

/// A [`pack`]ed match's slot and fingerprint position.
pub const fn unpack(m: u32) -> (u32, u32) {
    (m >> 16, m & 0xffff)
}

/// The check of a restore window's flows against a blob's fingerprints, ahead of the apply; see
/// the module docs.
#[derive(Debug)]
pub struct WindowCheck {
    /// The table watch's token while armed (0: not armed yet).
    token: u32,
    /// The next slot to read.
    next: u32,
    /// The watch's bits while it is not armed (moved into the table when it is).
    bits: Vec<u64>,
    /// Bit words the table's watch needs.
    words: usize,
    /// Each TCP flow read whose key's fingerprint is in the set: its slot and the
    /// fingerprint's position, [`pack`]ed (ascending by slot in the first reading).
    matched: Vec<u32>,
    restarts: u32,
    /// Slots the apply read itself (those the steps had not).
    read_by_apply: u32,
    /// No memory, or too many restarts: the apply does not use this check.
    failed: bool,
}

impl WindowCheck {
    /// A check of `state`'s fingerprints for a port whose table has the bound `max_flows`
    /// (room is made for as many matches as that or the fingerprints allow);
    /// `None` if the blob arms none (nothing to check) or there is no memory for it (the apply
    /// then checks in its own hold, as it does without a check). Allocates outside every lock:
    /// a bit per slot and room for a match per fingerprint.
    #[must_use]
    pub fn try_new(state: &PortState, max_flows: u32) -> Option<Self> {
        if state.fingerprints.is_empty() {
            return None;
        }
        // Every slot a table may have (a merge of shards may raise a port's bound): 8 KiB.
        let words = (MAX_FLOWS_LIMIT as usize).div_ceil(64);
        let mut bits = Vec::new();
        bits.try_reserve_exact(words).ok()?;
        bits.resize(words, 0);
        // A match per fingerprint, and room for a few more (a key matching by chance, a match
        // in a slot that took another flow since, dropped at the apply).
        let mut matched = Vec::new();
        let room = state.fingerprints.len().min(max_flows as usize) + MATCH_SLACK;
        matched.try_reserve_exact(room).ok()?;
        Some(Self {
            token: 0,
            next: 0,
            bits,
            words,
            matched,
            restarts: 0,
            read_by_apply: 0,
            failed: false,
        })
    }

    /// Reads at most `budget` more of `port`'s slots (under its lock): notes each read in the
    /// table's watch (armed by the first step) and each TCP flow whose key's fingerprint is in
    /// `state`'s set. Changes nothing classify reads. Once every slot has been read, a step
    /// reads the flows placed since in slots it had read (catching up with the packets between
    /// the holds). Returns true when the apply may run: a catch-up step found at most
    /// [`CAUGHT_UP`] such flows (the apply reads those placed after it), or the check was
    /// given up.
    #[inline(never)]
    pub fn step(&mut self, port: &mut Port, state: &PortState, budget: u32) -> bool {
        if self.failed {
            return true;
        }
        if self.token == 0 || port.table.watch_token() != self.token {
            if self.token != 0 {
                // The table was replaced since the last step: start over on this one.
                self.restarts += 1;
                if self.restarts > MAX_RESTARTS || !self.refill() {
                    self.failed = true;
                    return true;
                }
            }
            self.token = port.table.arm_watch(core::mem::take(&mut self.bits));
            self.next = 0;
            self.matched.clear();
        }
        #[allow(clippy::cast_possible_truncation, reason = "bounded by MAX_FLOWS_LIMIT")]
        let end = port.table.slot_count() as u32;
        if self.next < end {
            // The first reading, in slot order.
            let stop = self.next.saturating_add(budget).min(end);
            for i in self.next..stop {
                if !self.read(port, state, i) {
                    return true;
                }
            }
            self.next = stop;
            return false;
        }
        self.catch_up(port, state, budget).is_none_or(|read| read <= CAUGHT_UP)
    }

    /// Reads at most `budget` flows in slots the check has not read (placed since it read the
    /// slot, or never read), the matches in slots that took another flow since dropped first
    /// (their bit is clear: read again if still unread, never kept for the flow there now).
    /// Returns how many it read; `None` (the check given up) without memory for a match.
    fn catch_up(&mut self, port: &mut Port, state: &PortState, budget: u32) -> Option<u32> {
        let table = &port.table;
        self.matched.retain(|&m| table.watch_was_read(unpack(m).0));
        let (mut at, mut read) = (0, 0);
        while read < budget {
            let Some(i) = port.table.watch_next_unread(at) else { break };
            if !self.read(port, state, i) {
                return None;
            }
            read += 1;
            at = i + 1;
        }
        Some(read)
    }

    /// Completes the check for the apply, under the lock of the apply's hold: the flows the
    /// steps have not read are read (counted, [`WindowCheck::read_by_apply`]), the matches put
    /// in slot order. False (the check given up) without memory for a match.
    pub(crate) fn complete(&mut self, port: &mut Port, state: &PortState) -> bool {
        let Some(read) = self.catch_up(port, state, u32::MAX) else { return false };
        self.read_by_apply = self.read_by_apply.saturating_add(read);
        // In slot order already unless flows were placed behind the steps' reading (a check of
        // the sorted list costs a twentieth of a sort that finds it sorted).
        if !self.matched.is_sorted() {
            self.matched.sort_unstable();
        }
        true
    }

    /// Reads slot `i`: notes a match, and the slot read. False (the check given up) without
    /// memory for a match.
    fn read(&mut self, port: &mut Port, state: &PortState, i: u32) -> bool {
        let found = port
            .table
            .slot_flow(i)
            .filter(|(k, _)| k.protocol == protocol::TCP)
            .and_then(|(k, _)| state.fingerprints.position(k));
        if let Some(at) = found {
            let Some(m) = pack(i, at).filter(|_| self.matched.try_reserve(1).is_ok()) else {
                self.failed = true;
                return false;
            };
            self.matched.push(m);
        }
        port.table.watch_read(i);
        true
    }

    /// New bits for a restart (the old ones went with the replaced table); false without
    /// memory.
    fn refill(&mut self) -> bool {
        let mut bits = Vec::new();
        if bits.try_reserve_exact(self.words).is_err() {
            return false;
        }
        bits.resize(self.words, 0);
        self.bits = bits;
        true
    }

    /// True if the apply may use this check on `port` (under its lock): armed on its table,
    /// nothing refused.
    pub(crate) fn usable(&self, port: &Port) -> bool {
        !self.failed && self.token != 0 && port.table.watch_token() == self.token
    }

    /// The matches found, [`pack`]ed, in slot order once [`WindowCheck::complete`]d.
    pub(crate) fn matched(&self) -> &[u32] {
        &self.matched
    }

    /// Flows the apply read itself (placed after the steps passed their slots, or left when the
    /// steps ran out): its work under the lock beyond what the blob bounds.
    #[must_use]
    pub const fn read_by_apply(&self) -> u32 {
        self.read_by_apply
    }

    /// True if the check was given up (no memory for its matches or its bits, or the table
    /// replaced too often): the apply checks in its own hold.
    #[must_use]
    pub const fn is_failed(&self) -> bool {
        self.failed
    }

    /// Ends the check on `port` (under its lock): the table's watch, if still this check's, is
    /// disarmed and its bits freed. Idempotent; every restore that made a check calls it, however
    /// the restore ended.
    pub fn disarm(&mut self, port: &mut Port) {
        if port.table.disarm_watch(self.token).is_some() {
            self.token = 0;
        }
    }
}
