//! The classify decision: one packet in, a verdict out, the port's flow table updated.
//!
//! Monitor mode permits everything and tracks every flow. Enforce mode is stateful: the VM's
//! own traffic is always permitted and opens a flow whose return traffic is permitted;
//! unsolicited inbound traffic is permitted only when an allow rule admits it. Peer-opened
//! flows remember the rule-set version that admitted them and are re-checked when it changes.
//! A port that is restoring enforces, and picks up inbound mid-stream TCP tentatively (see
//! [`crate::port`], "Restoring").
//!
//! **An inbound SYN is always a new connection** (issue 16): in Enforce (and the restore
//! window) an inbound initial SYN, or a TCP segment whose flags could not be read
//! ([`crate::packet::Headers`]), is admitted only by the rules, whatever flow its 5-tuple
//! names (a picked-up flow, an established one), except the SYN answering the VM's own SYN
//! (simultaneous open). On a flow the VM really has, its TCP stack answers such a SYN with a
//! challenge ACK (RFC 5961 4), so blocking it costs nothing; on a flow picked up by mistake it
//! would have opened a connection.
//!
//! A flow idle for at least its timeout admits nothing: classify treats it as absent (removes
//! it and handles the packet as the first of a new flow), so a peer cannot use a long-silent
//! flow, before or after a migration, as return traffic.
//!
//! A new flow that needs room never displaces an established TCP connection unless it is
//! established itself and the VM sent it ([`crate::flow::Room`]); otherwise it is refused,
//! counted, and its verdict stands. Pickups the VM has not answered never take a table slot
//! ([`crate::flow::tentative`]).
//!
//! After a restore, unknown flows may be picked up by fingerprint or loosely
//! ([`crate::port`], "Pickups").
//!
//! ICMP and ICMPv6 are decided by [`crate::icmp`]: queries are tracked here under their own
//! key ([`track`]), errors are admitted as related to a tracked flow, neighbor discovery by a
//! default. None is ever picked up (only TCP is).
//!
//! Allocation-free whenever the flow exists or the table has room (see
//! [`crate::FlowTable::capacity`]); a flood at the bound recycles slots.

use crate::flow::tentative::Answer;
use crate::flow::{
    Admission, Eviction, FlowIndex, FlowKey, FlowRecord, FlowState, Opener, PickupKind, Room,
};
use crate::packet::{Direction, Headers, PacketMeta, TcpFlags, protocol};
use crate::port::{Judging, Port};
use crate::time::Tick;

/// What to do with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Permit,
    /// Drop it.
    Block(BlockReason),
}

/// Why a packet was blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockReason {
    /// Inbound, no flow (or a packet that may open a connection), no allow rule admits it.
    Unsolicited,
    /// Inbound on a peer-opened flow that the current rules no longer admit.
    NotAdmitted,
    /// Inbound IPv6 neighbor discovery or MLD that may not have come from the link (hop
    /// limit or source address; see [`crate::icmp`]) and that no allow rule admits.
    NotOnLink,
}

/// Classifies `meta` on `port` at `now`. See the module docs.
#[inline]
pub fn classify(port: &mut Port, meta: &PacketMeta, now: Tick) -> Verdict {
    // TCP and UDP pay two compares of the protocol; the family is read only for the rest.
    let maybe_icmp = meta.protocol != protocol::TCP && meta.protocol != protocol::UDP;
    let verdict = if !matches!(meta.headers, Headers::Complete) {
        unreadable(port, meta, now)
    } else if maybe_icmp && crate::icmp::is_icmp(meta.family, meta.protocol) {
        crate::icmp::classify(port, meta, now)
    } else {
        track(port, FlowKey::of(meta), meta, now)
    };
    count(port, verdict);
    verdict
}

/// [`classify`] for a packet of a flow `port` holds, or `None` with nothing changed.
///
/// Judged here: a TCP or UDP packet with complete headers of a flow the port holds, live and
/// not restarted by this packet (an initial SYN on a closed flow): the same verdict, flow
/// update and counts as [`classify`]. Anything else is `None`: what a processor's shard of a
/// port judges on its own (see [`crate::port::shards`]).
#[inline]
pub fn classify_existing(port: &mut Port, meta: &PacketMeta, now: Tick) -> Option<Verdict> {
    let maybe_icmp = meta.protocol != protocol::TCP && meta.protocol != protocol::UDP;
    if !matches!(meta.headers, Headers::Complete)
        || (maybe_icmp && crate::icmp::is_icmp(meta.family, meta.protocol))
    {
        return None;
    }
    let key = FlowKey::of(meta);
    let at = port.table.find(&key)?;
    if port.table.is_expired(at, now) || restarts(port, at, meta) {
        return None;
    }
    let verdict = existing_flow(port, at, meta, now);
    count(port, verdict);
    Some(verdict)
}

/// Counts a verdict in the port's counters.
#[inline]
fn count(port: &mut Port, verdict: Verdict) {
    let c = &mut port.counters;
    match verdict {
        Verdict::Permit => c.packets_permitted = c.packets_permitted.wrapping_add(1),
        Verdict::Block(_) => {
            c.packets_blocked = c.packets_blocked.wrapping_add(1);
            if matches!(port.judging, Judging::Restoring) {
                c.window_blocked = c.window_blocked.wrapping_add(1);
            }
        }
    }
}

/// True if `meta` starts a new connection on the 5-tuple of the flow at `at` (an initial SYN on
/// a closed flow): the flow is replaced.
#[inline]
fn restarts(port: &Port, at: FlowIndex, meta: &PacketMeta) -> bool {
    meta.protocol == protocol::TCP
        && meta.tcp_flags.is_initial_syn()
        && port.table.record(at).state == FlowState::Closed
}

/// A packet whose TCP flags or ports could not be read ([`Headers`]): counted, then judged
/// without them.
#[cold]
fn unreadable(port: &mut Port, meta: &PacketMeta, now: Tick) -> Verdict {
    let c = &mut port.counters;
    c.headers_unreadable = c.headers_unreadable.wrapping_add(1);
    match meta.headers {
        Headers::NoPorts => portless(port, meta),
        Headers::Unknown => unknown(port, meta),
        Headers::NoFlags | Headers::Complete => track(port, FlowKey::of(meta), meta, now),
    }
}

/// A packet whose protocol and ports cannot be relied on ([`Headers::Unknown`]): the VM's own
/// and Monitor's pass; inbound in Enforce (the restore window included) only a rule admitting
/// every protocol and port from its source admits it.
fn unknown(port: &Port, meta: &PacketMeta) -> Verdict {
    match (meta.direction, port.judging) {
        (Direction::Outbound, _) | (Direction::Inbound, Judging::Monitor) => Verdict::Permit,
        (Direction::Inbound, Judging::Enforce | Judging::Restoring) => {
            if port.rules.admits_everything(meta.family, &meta.src_addr) {
                Verdict::Permit
            } else {
                Verdict::Block(BlockReason::Unsolicited)
            }
        }
    }
}

/// The verdict on a packet of the flow `key`, the flow created or updated. Counting permits
/// and blocks is the caller's.
#[inline]
pub(crate) fn track(port: &mut Port, key: FlowKey, meta: &PacketMeta, now: Tick) -> Verdict {
    let hash = port.table.hash(&key);
    match port.table.find_hashed(hash, &key) {
        Some(at) if port.table.is_expired(at, now) => {
            // Idle past its timeout: the flow is gone; this packet starts afresh.
            port.table.remove_hashed(hash, at);
            let c = &mut port.counters;
            c.expired_on_packet = c.expired_on_packet.wrapping_add(1);
            new_flow(port, hash, key, meta, now)
        }
        Some(at) => {
            if restarts(port, at, meta) {
                // A new connection reusing the 5-tuple of a closed one starts from scratch.
                port.table.remove_hashed(hash, at);
                new_flow(port, hash, key, meta, now)
            } else {
                existing_flow(port, at, meta, now)
            }
        }
        None => new_flow(port, hash, key, meta, now),
    }
}

/// A TCP or UDP packet whose ports could not be read (a first fragment too short to hold
/// them; see [`Headers::NoPorts`]): it names no flow. The VM's own is permitted; inbound in
/// Enforce only a rule admitting every port of its protocol from its source admits it.
fn portless(port: &Port, meta: &PacketMeta) -> Verdict {
    match (meta.direction, port.judging) {
        (Direction::Outbound, _) | (Direction::Inbound, Judging::Monitor) => Verdict::Permit,
        (Direction::Inbound, Judging::Enforce | Judging::Restoring) => {
            if port.rules.admits_every_port(meta.protocol, meta.family, &meta.src_addr) {
                Verdict::Permit
            } else {
                Verdict::Block(BlockReason::Unsolicited)
            }
        }
    }
}

#[inline]
fn existing_flow(port: &mut Port, at: FlowIndex, meta: &PacketMeta, now: Tick) -> Verdict {
    if meta.direction == Direction::Inbound
        && !matches!(port.judging, Judging::Monitor)
        && let Err(why) = inbound_admitted(port, at, meta)
    {
        return Verdict::Block(why);
    }
    let record = port.table.record_mut(at);
    record.count(meta.direction, meta.length, now);
    if meta.protocol == protocol::TCP {
        let (state, fin) =
            tcp_transition(record.state, meta.direction, meta.tcp_flags, record.fin_seen);
        record.fin_seen = fin;
        if state != record.state {
            port.table.set_state(at, state);
        }
    }
    port.table.touch(at);
    Verdict::Permit
}

/// Whether an inbound packet of the flow at `at` passes in Enforce or the restore window.
#[inline]
fn inbound_admitted(port: &mut Port, at: FlowIndex, meta: &PacketMeta) -> Result<(), BlockReason> {
    if meta.may_open_connection() {
        return opening_admitted(port, at);
    }
    if admitted(port, at) { Ok(()) } else { Err(BlockReason::NotAdmitted) }
}

/// True if the current rules still admit inbound traffic of the flow at `at` (Enforce or the
/// restore window): a flow the VM opened always, a peer-opened one re-checked when the rules
/// changed since it was admitted (its admission updated when they admit it); in the restore
/// window a flow seen in it ([`Admission::Monitor`]) passes until the restore re-checks it,
/// except a half-open one (the VM's SYN-ACK to a SYN the table does not hold, see `vm_flow`:
/// the handshake a peer completes is judged by the rules, in the window as after it).
#[inline]
pub(crate) fn admitted(port: &mut Port, at: FlowIndex) -> bool {
    let version = port.rules.version();
    let record = port.table.record(at);
    match record.admission {
        Admission::Vm => true,
        Admission::Rule(v) if v == version => true,
        Admission::Monitor
            if matches!(port.judging, Judging::Restoring)
                && record.state != FlowState::SynReceived =>
        {
            true
        }
        Admission::Rule(_) | Admission::Monitor => {
            let key = port.table.key(at);
            let local_port = crate::icmp::rule_port(key);
            let ok = port.rules.admits(key.protocol, key.family, local_port, &key.remote_addr);
            if ok {
                port.table.record_mut(at).admission = Admission::Rule(version);
            }
            ok
        }
    }
}

/// An inbound packet that may open a connection (an initial SYN, or unreadable flags) on the
/// flow at `at`: a new connection on this 5-tuple, whatever the flow, so the rules decide,
/// unless it answers the VM's own SYN (simultaneous open).
fn opening_admitted(port: &Port, at: FlowIndex) -> Result<(), BlockReason> {
    let record = port.table.record(at);
    let answers_vm = record.state == FlowState::SynSent && record.opener == Opener::Vm;
    let key = port.table.key(at);
    let local_port = crate::icmp::rule_port(key);
    if answers_vm || port.rules.admits(key.protocol, key.family, local_port, &key.remote_addr) {
        Ok(())
    } else {
        Err(BlockReason::Unsolicited)
    }
}

fn new_flow(port: &mut Port, hash: u64, key: FlowKey, meta: &PacketMeta, now: Tick) -> Verdict {
    let flow = match (meta.direction, port.judging) {
        (Direction::Outbound, _) => Ok(vm_flow(port, &key, meta, now)),
        (Direction::Inbound, Judging::Monitor) => Ok(Flow::MONITOR),
        (Direction::Inbound, Judging::Enforce | Judging::Restoring) => {
            inbound_flow(port, &key, meta, now)
        }
    };
    match flow {
        Ok(flow) => open(port, hash, key, meta, now, flow),
        Err(verdict) => verdict,
    }
}

/// The VM's packet of a flow the table does not hold: permitted, and it opens the flow. If a
/// pickup admitted the flow tentatively, this packet is the VM's answer.
#[inline]
fn vm_flow(port: &mut Port, key: &FlowKey, meta: &PacketMeta, now: Tick) -> Flow {
    if !port.tentative.is_empty() && matches!(meta.headers, Headers::Complete) {
        match port.tentative.answer(key, meta.tcp_flags) {
            Some(Answer::Confirmed { kind, inbound }) => return confirmed(port, kind, inbound),
            Some(Answer::Refused(kind)) => {
                // The VM has no such connection: its reset passes (untracked, see `open`),
                // nothing more is picked up on this 5-tuple, no fingerprint is used up.
                if let PickupKind::Fingerprint(i) = kind {
                    port.pickup.refuse(i, key);
                }
                let c = &mut port.counters;
                c.pickups_refused = c.pickups_refused.wrapping_add(1);
            }
            Some(Answer::Withdrawn) | None => {}
        }
    }
    if meta.protocol == protocol::TCP && meta.tcp_flags.has(TcpFlags::SYN | TcpFlags::ACK) {
        // The VM answers a peer's SYN the table does not hold (one vsflow never judged as a
        // SYN: an overlapping later fragment reassembled by the guest; or one admitted but not
        // tracked). The connection is the peer's: its return traffic is judged by the rules
        // (on A the SYN was), also in the restore window (a half-open flow, see `admitted`).
        return Flow::JUDGED;
    }
    // The VM resuming a fingerprinted connection: picked up at once, the fingerprint used.
    let armed = port.pickup.is_armed(now) && meta.is_midstream_tcp();
    let fingerprint = armed && port.pickup.take(key, now);
    if fingerprint {
        let c = &mut port.counters;
        c.fingerprint_pickups = c.fingerprint_pickups.wrapping_add(1);
        c.pickups_confirmed = c.pickups_confirmed.wrapping_add(1);
    }
    // In the restore window nothing is known yet: the restore decides (carried exactly: the
    // blob's admission; by the VM's fingerprint: the VM's; neither: the rules judge). Loose
    // pickup, when on, makes such connections the VM's anyway (see `confirmed`).
    let window = matches!(port.judging, Judging::Restoring) && !port.restore_loose();
    let uncarried = port.judges_uncarried(now) && !port.loose_open(now);
    if meta.is_midstream_tcp() && !fingerprint && (armed || window || uncarried) {
        // While a restore's fingerprints are armed, a mid-stream segment of a connection the
        // blob carried neither exactly nor as the VM's fingerprint may be one a peer opened
        // (those are never fingerprinted: a rule or Monitor admitted them on the source). It
        // passes, as the VM's traffic always does, but its return traffic is judged by the
        // rules (re-checked on the next inbound packet) instead of admitted as the VM's: a
        // rule-admitted connection never becomes VM-admitted by a migration. Likewise in the
        // restore window, and for the pickup window after any restore, degraded or one that
        // armed no fingerprint (a connection the blob left out may be a peer's), except while
        // loose pickup (the opt-in that takes such connections as the VM's) is open.
        Flow::JUDGED
    } else {
        Flow::VM
    }
}

/// The VM answered a tentative pickup: the flow it opens is established (`inbound` segments
/// were admitted while it was tentative).
fn confirmed(port: &mut Port, kind: PickupKind, inbound: u8) -> Flow {
    let admission = match kind {
        // Not known from a restore: re-checked against the restored rules after the commit,
        // unless loose pickup (which admits such connections anyway) is on.
        PickupKind::Window if !port.restore_loose() => Admission::Monitor,
        PickupKind::Fingerprint(i) => {
            port.pickup.confirm(i);
            Admission::Vm
        }
        PickupKind::Window | PickupKind::Loose => Admission::Vm,
    };
    let c = &mut port.counters;
    c.pickups_confirmed = c.pickups_confirmed.wrapping_add(1);
    Flow { opener: Opener::Remote, admission, vouched: true, inbound }
}

/// An inbound packet of a flow the table does not hold, in Enforce or the restore window.
fn inbound_flow(
    port: &mut Port,
    key: &FlowKey,
    meta: &PacketMeta,
    now: Tick,
) -> Result<Flow, Verdict> {
    let local_port = crate::icmp::rule_port(key);
    if port.rules.admits(key.protocol, key.family, local_port, &key.remote_addr) {
        let admission = Admission::Rule(port.rules.version());
        return Ok(Flow { opener: Opener::Remote, admission, vouched: false, inbound: 0 });
    }
    if meta.is_midstream_tcp() && port.pickups_open(now) {
        return Err(pickup(port, *key, now));
    }
    Err(Verdict::Block(BlockReason::Unsolicited))
}

/// An inbound mid-stream TCP segment of an unknown flow no rule admits, while some pickup is
/// open: admitted to a tentative flow (or refused), see [`crate::flow::tentative`].
fn pickup(port: &mut Port, key: FlowKey, now: Tick) -> Verdict {
    match port.tentative.inbound(&key) {
        Some(true) => return Verdict::Permit,
        Some(false) => return Verdict::Block(BlockReason::Unsolicited),
        None => {}
    }
    let kind = if matches!(port.judging, Judging::Restoring) {
        PickupKind::Window
    } else if let Some(i) = port.pickup.lookup(&key, now) {
        PickupKind::Fingerprint(i)
    } else if port.loose_open(now) {
        PickupKind::Loose
    } else {
        return Verdict::Block(BlockReason::Unsolicited);
    };
    port.tentative.insert(key, kind, now);
    let c = &mut port.counters;
    match kind {
        PickupKind::Fingerprint(_) => c.fingerprint_pickups = c.fingerprint_pickups.wrapping_add(1),
        PickupKind::Loose => c.picked_up_loose = c.picked_up_loose.wrapping_add(1),
        PickupKind::Window => {}
    }
    Verdict::Permit
}

/// Who opened a flow classify is about to track, why its inbound traffic passes, whether the
/// VM vouches for it (may displace an established connection when the table is full), and
/// the inbound segments it had while tentative.
#[derive(Clone, Copy)]
struct Flow {
    opener: Opener,
    admission: Admission,
    vouched: bool,
    inbound: u8,
}

impl Flow {
    /// The VM's own flow.
    const VM: Self =
        Self { opener: Opener::Vm, admission: Admission::Vm, vouched: true, inbound: 0 };
    /// The VM's packet of a connection that may be a peer's (see `vm_flow`): the VM's
    /// packet vouches for it, its return traffic is judged by the rules.
    const JUDGED: Self =
        Self { opener: Opener::Remote, admission: Admission::Monitor, vouched: true, inbound: 0 };
    /// A peer's flow in Monitor mode.
    const MONITOR: Self =
        Self { opener: Opener::Remote, admission: Admission::Monitor, vouched: false, inbound: 0 };
}

/// Opens (tracks) a new flow whose packet is permitted: the verdict stands whether or not the
/// table takes it.
#[inline]
fn open(
    port: &mut Port,
    hash: u64,
    key: FlowKey,
    meta: &PacketMeta,
    now: Tick,
    flow: Flow,
) -> Verdict {
    let tcp = meta.protocol == protocol::TCP;
    let flags = meta.tcp_flags;
    if tcp && (flags.has(TcpFlags::RST) || !matches!(meta.headers, Headers::Complete)) {
        // A reset for a flow we do not know, or flags we could not read: let the verdict
        // stand, but do not let such packets churn the table.
        return Verdict::Permit;
    }
    let state = if !tcp {
        FlowState::Active
    } else if flags.is_initial_syn() {
        match flow.opener {
            Opener::Vm => FlowState::SynSent,
            Opener::Remote => FlowState::SynReceived,
        }
    } else if flags.has(TcpFlags::SYN) && meta.direction == Direction::Outbound {
        // The VM's SYN-ACK answering a SYN the table does not hold: half-open (see `vm_flow`).
        FlowState::SynReceived
    } else {
        // Mid-stream (the driver started, the flow was evicted or expired after the SYN, or a
        // pickup the VM confirmed).
        FlowState::Established
    };
    let mut record = FlowRecord::new(state, flow.opener, flow.admission, now);
    record.count(meta.direction, meta.length, now);
    record.packets[Direction::Inbound.index()] += u64::from(flow.inbound);
    if tcp && flags.has(TcpFlags::FIN) {
        let (s, fin) = tcp_transition(state, meta.direction, flags, 0);
        record.state = s;
        record.fin_seen = fin;
    }
    // Only the VM's own packets may displace an established connection, and only when they
    // are established themselves.
    let room = if flow.vouched { Room::for_record(&record) } else { Room::SpareEstablished };
    let c = &mut port.counters;
    match port.table.insert_with(hash, key, record, now, room) {
        Ok((_, evicted)) => {
            c.flows_created = c.flows_created.wrapping_add(1);
            match evicted {
                None => {}
                Some(Eviction::Closed) => c.evicted_closed = c.evicted_closed.wrapping_add(1),
                Some(Eviction::Idle) => c.evicted_idle = c.evicted_idle.wrapping_add(1),
                Some(Eviction::LeastRecentlyUsed) => {
                    c.evicted_lru = c.evicted_lru.wrapping_add(1);
                }
            }
        }
        // The table holds only connections this flow may not displace: the verdict stands,
        // the flow is not tracked.
        Err(crate::Error::TableFull) => c.refused_full = c.refused_full.wrapping_add(1),
        // Out of memory: the verdict stands, the flow is not tracked.
        Err(_) => c.untracked = c.untracked.wrapping_add(1),
    }
    Verdict::Permit
}

/// The TCP state after a packet with `flags` travelling in `dir`, and the new FIN bits.
#[must_use]
pub const fn tcp_transition(
    state: FlowState,
    dir: Direction,
    flags: TcpFlags,
    fin_seen: u8,
) -> (FlowState, u8) {
    if flags.has(TcpFlags::RST) {
        return (FlowState::Closed, fin_seen);
    }
    if flags.has(TcpFlags::FIN) {
        let fin = fin_seen | (1 << dir.index());
        let next = match state {
            FlowState::Closed => FlowState::Closed,
            _ if fin == 0b11 => FlowState::Closed,
            _ => FlowState::FinWait,
        };
        return (next, fin);
    }
    let synack = flags.has(TcpFlags::SYN | TcpFlags::ACK);
    let next = match (state, dir) {
        (FlowState::SynSent, Direction::Inbound) if synack => FlowState::Established,
        (FlowState::SynReceived, Direction::Inbound)
            if flags.has(TcpFlags::ACK) && !flags.has(TcpFlags::SYN) =>
        {
            FlowState::Established
        }
        // The VM goes on sending on a connection an RST closed: its stack did not accept the
        // reset (RFC 5961 accepts only one at the exact next sequence; vsflow cannot tell), so
        // the connection is not over. FINs from both sides stay closed.
        (FlowState::Closed, Direction::Outbound)
            if flags.has(TcpFlags::ACK) && !flags.has(TcpFlags::SYN) && fin_seen != 0b11 =>
        {
            FlowState::Established
        }
        (s, _) => s,
    };
    (next, fin_seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::TableConfig;
    use crate::policy::{AllowRule, Mode, PortRange, Prefix};
    use crate::port::{PortConfig, PortIdentity};

    const SYN: u8 = TcpFlags::SYN;
    const SYNACK: u8 = TcpFlags::SYN | TcpFlags::ACK;
    const ACK: u8 = TcpFlags::ACK;
    const FIN: u8 = TcpFlags::FIN | TcpFlags::ACK;
    const RST: u8 = TcpFlags::RST;

    fn port(mode: Mode, max_flows: u32) -> Port {
        let cfg = PortConfig {
            table: TableConfig { max_flows, ..TableConfig::default() },
            initial_mode: mode,
        };
        Port::try_new(PortIdentity::try_from_str("p").unwrap(), cfg).unwrap()
    }

    fn out_tcp(sport: u16, flags: u8) -> PacketMeta {
        PacketMeta::ipv4(
            Direction::Outbound,
            protocol::TCP,
            [10, 0, 0, 2],
            sport,
            [8, 8, 8, 8],
            443,
            flags,
            100,
        )
    }

    fn in_tcp(dport: u16, flags: u8) -> PacketMeta {
        PacketMeta::ipv4(
            Direction::Inbound,
            protocol::TCP,
            [7, 7, 7, 7],
            50000,
            [10, 0, 0, 2],
            dport,
            flags,
            100,
        )
    }

    /// The VM's DNS query: UDP 10.0.0.2:5353 -> 1.1.1.1:53.
    fn dns_query() -> PacketMeta {
        PacketMeta::ipv4(
            Direction::Outbound,
            protocol::UDP,
            [10, 0, 0, 2],
            5353,
            [1, 1, 1, 1],
            53,
            0,
            60,
        )
    }

    fn state_of(p: &Port, m: &PacketMeta) -> Option<FlowState> {
        p.table().get(&FlowKey::of(m)).map(|r| r.state)
    }

    #[test]
    fn vm_opened_tcp_handshake_reaches_established_and_counts_both_directions() {
        let mut p = port(Mode::Enforce, 16);
        let syn = out_tcp(40000, SYN);
        assert_eq!(p.classify(&syn, 1), Verdict::Permit);
        assert_eq!(state_of(&p, &syn), Some(FlowState::SynSent));
        assert_eq!(p.classify(&syn.reply(SYNACK), 2), Verdict::Permit);
        assert_eq!(state_of(&p, &syn), Some(FlowState::Established));
        assert_eq!(p.classify(&out_tcp(40000, ACK), 3), Verdict::Permit);
        let r = *p.table().get(&FlowKey::of(&syn)).unwrap();
        assert_eq!(r.opener, Opener::Vm);
        assert_eq!(r.packets, [2, 1]);
        assert_eq!(r.bytes, [200, 100]);
        assert_eq!((r.first_seen, r.last_seen), (1, 3));
    }

    #[test]
    fn fin_both_ways_closes_and_rst_closes_at_once() {
        let mut p = port(Mode::Monitor, 16);
        let syn = out_tcp(40001, SYN);
        p.classify(&syn, 1);
        p.classify(&syn.reply(SYNACK), 2);
        p.classify(&out_tcp(40001, FIN), 3);
        assert_eq!(state_of(&p, &syn), Some(FlowState::FinWait));
        p.classify(&syn.reply(FIN), 4);
        assert_eq!(state_of(&p, &syn), Some(FlowState::Closed));

        let syn2 = out_tcp(40002, SYN);
        p.classify(&syn2, 5);
        p.classify(&syn2.reply(RST), 6);
        assert_eq!(state_of(&p, &syn2), Some(FlowState::Closed));
    }

    #[test]
    fn enforce_blocks_unsolicited_inbound_without_tracking_it() {
        let mut p = port(Mode::Enforce, 16);
        let m = in_tcp(22, SYN);
        assert_eq!(p.classify(&m, 1), Verdict::Block(BlockReason::Unsolicited));
        assert!(p.table().is_empty());
        assert_eq!(p.counters().packets_blocked, 1);
    }

    #[test]
    fn monitor_permits_and_tracks_unsolicited_inbound() {
        let mut p = port(Mode::Monitor, 16);
        let m = in_tcp(22, SYN);
        assert_eq!(p.classify(&m, 1), Verdict::Permit);
        let r = p.table().get(&FlowKey::of(&m)).unwrap();
        assert_eq!(
            (r.state, r.opener, r.admission),
            (FlowState::SynReceived, Opener::Remote, Admission::Monitor)
        );
        p.classify(&m.reply(SYNACK), 2);
        p.classify(&in_tcp(22, ACK), 3);
        assert_eq!(state_of(&p, &m), Some(FlowState::Established));
    }

    #[test]
    fn allow_rule_admits_inbound_and_removing_it_revokes_the_flow() {
        let mut p = port(Mode::Enforce, 16);
        let rule = AllowRule {
            protocol: Some(protocol::TCP),
            local_ports: PortRange::single(22),
            remote: Prefix::v4([7, 0, 0, 0], 8).unwrap(),
        };
        p.replace_rules(&[rule]).unwrap();
        let m = in_tcp(22, SYN);
        assert_eq!(p.classify(&m, 1), Verdict::Permit);
        assert_eq!(p.classify(&in_tcp(23, SYN), 1), Verdict::Block(BlockReason::Unsolicited));
        p.replace_rules(&[]).unwrap();
        assert_eq!(p.classify(&in_tcp(22, ACK), 2), Verdict::Block(BlockReason::NotAdmitted));
        // The VM's own replies are never blocked.
        assert_eq!(p.classify(&m.reply(ACK), 3), Verdict::Permit);
    }

    #[test]
    fn switching_monitor_to_enforce_rechecks_peer_opened_flows() {
        let mut p = port(Mode::Monitor, 16);
        let inbound = in_tcp(80, SYN);
        p.classify(&inbound, 1);
        let vm = out_tcp(40003, SYN);
        p.classify(&vm, 1);
        p.set_mode(Mode::Enforce);
        assert_eq!(p.classify(&in_tcp(80, ACK), 2), Verdict::Block(BlockReason::NotAdmitted));
        assert_eq!(p.classify(&vm.reply(SYNACK), 2), Verdict::Permit);
        let rule =
            AllowRule { protocol: None, local_ports: PortRange::single(80), remote: Prefix::Any };
        let v = p.replace_rules(&[rule]).unwrap();
        assert_eq!(p.classify(&in_tcp(80, ACK), 3), Verdict::Permit);
        assert_eq!(p.table().get(&FlowKey::of(&inbound)).unwrap().admission, Admission::Rule(v));
    }

    #[test]
    fn udp_return_traffic_is_permitted_in_enforce() {
        let mut p = port(Mode::Enforce, 16);
        let q = dns_query();
        assert_eq!(p.classify(&q, 1), Verdict::Permit);
        assert_eq!(p.classify(&q.reply(0), 2), Verdict::Permit);
        assert_eq!(state_of(&p, &q), Some(FlowState::Active));
        let stray = PacketMeta::ipv4(
            Direction::Inbound,
            protocol::UDP,
            [1, 1, 1, 1],
            53,
            [10, 0, 0, 2],
            5354,
            0,
            60,
        );
        assert_eq!(p.classify(&stray, 2), Verdict::Block(BlockReason::Unsolicited));
    }

    #[test]
    fn syn_on_a_closed_tuple_starts_a_new_connection() {
        let mut p = port(Mode::Enforce, 16);
        let syn = out_tcp(40004, SYN);
        p.classify(&syn, 1);
        p.classify(&syn.reply(RST), 2);
        assert_eq!(state_of(&p, &syn), Some(FlowState::Closed));
        p.classify(&syn, 3);
        let r = p.table().get(&FlowKey::of(&syn)).unwrap();
        assert_eq!((r.state, r.first_seen, r.packets), (FlowState::SynSent, 3, [1, 0]));
    }

    #[test]
    fn unknown_rst_is_not_tracked() {
        let mut p = port(Mode::Monitor, 16);
        assert_eq!(p.classify(&in_tcp(9, RST), 1), Verdict::Permit);
        assert!(p.table().is_empty());
    }

    #[test]
    fn midstream_pickup_is_established() {
        let mut p = port(Mode::Monitor, 16);
        p.classify(&out_tcp(40005, ACK), 1);
        assert_eq!(state_of(&p, &out_tcp(40005, ACK)), Some(FlowState::Established));
    }

    #[test]
    fn a_udp_flow_idle_past_its_timeout_admits_nothing() {
        let mut p = port(Mode::Enforce, 16);
        let q = dns_query();
        let t0 = crate::time::secs(10);
        assert_eq!(p.classify(&q, t0), Verdict::Permit);
        // Within the UDP timeout (60 s) the peer's reply is return traffic.
        assert_eq!(p.classify(&q.reply(0), t0 + crate::time::secs(59)), Verdict::Permit);
        // An hour of silence later the flow is gone: the peer's packet is unsolicited.
        let late = t0 + crate::time::secs(59 + 3600);
        assert_eq!(p.classify(&q.reply(0), late), Verdict::Block(BlockReason::Unsolicited));
        assert!(p.table().get(&FlowKey::of(&q)).is_none(), "the expired flow is reclaimed");
        // The VM speaking again opens a fresh flow.
        assert_eq!(p.classify(&q, late + 1), Verdict::Permit);
        let r = p.table().get(&FlowKey::of(&q)).unwrap();
        assert_eq!((r.first_seen, r.packets), (late + 1, [1, 0]));
    }

    #[test]
    fn an_expired_established_tcp_flow_admits_nothing_inbound() {
        let mut p = port(Mode::Enforce, 16);
        let syn = out_tcp(40010, SYN);
        p.classify(&syn, 1);
        p.classify(&syn.reply(SYNACK), 2);
        let timeout = TableConfig::default().timeouts.tcp_established;
        assert_eq!(p.classify(&syn.reply(ACK), 2 + timeout - 1), Verdict::Permit);
        assert_eq!(
            p.classify(&syn.reply(ACK), 2 + 2 * timeout),
            Verdict::Block(BlockReason::Unsolicited)
        );
    }

    #[test]
    fn a_syn_burst_through_an_allow_rule_never_evicts_established_connections() {
        let mut p = port(Mode::Enforce, 8);
        let web = AllowRule {
            protocol: Some(protocol::TCP),
            local_ports: PortRange::single(80),
            remote: Prefix::Any,
        };
        p.replace_rules(&[web]).unwrap();
        // Four quiet connections the VM opened.
        let conns: alloc::vec::Vec<PacketMeta> = (0..4).map(|i| out_tcp(41000 + i, SYN)).collect();
        for c in &conns {
            p.classify(c, 1);
            p.classify(&c.reply(SYNACK), 2);
        }
        // A burst of SYNs from many peers to the allowed port.
        for i in 0..200u16 {
            let [hi, lo] = i.to_be_bytes();
            let m = PacketMeta::ipv4(
                Direction::Inbound,
                protocol::TCP,
                [203, 0, hi, lo],
                1024 + i,
                [10, 0, 0, 2],
                80,
                SYN,
                60,
            );
            assert_eq!(p.classify(&m, 1_000_000 + u64::from(i)), Verdict::Permit);
        }
        for c in &conns {
            assert_eq!(
                p.classify(&c.reply(ACK), 3_000_000),
                Verdict::Permit,
                "an established connection was evicted by a SYN"
            );
        }
        p.table().check_invariants().unwrap();
    }

    #[test]
    fn unreadable_headers_are_judged_never_mid_stream_and_counted() {
        use crate::packet::Headers;
        let mut p = port(Mode::Enforce, 16);
        // The VM's connection to 443 is established.
        let syn = out_tcp(40020, SYN);
        p.classify(&syn, 1);
        p.classify(&syn.reply(SYNACK), 2);
        // Flags that cannot be read on that flow may hide a SYN: judged by the rules.
        let hidden =
            PacketMeta { headers: Headers::NoFlags, tcp_flags: TcpFlags(0), ..syn.reply(0) };
        assert_eq!(p.classify(&hidden, 3), Verdict::Block(BlockReason::Unsolicited));
        assert_eq!(state_of(&p, &syn), Some(FlowState::Established), "the flow is untouched");
        // No ports: only a rule admitting every port admits it; it never makes a flow.
        let portless =
            PacketMeta { headers: Headers::NoPorts, src_port: 0, dst_port: 0, ..in_tcp(0, 0) };
        assert_eq!(p.classify(&portless, 4), Verdict::Block(BlockReason::Unsolicited));
        let one = AllowRule {
            protocol: Some(protocol::TCP),
            local_ports: PortRange::new(0, 1024).unwrap(),
            remote: Prefix::Any,
        };
        p.replace_rules(&[one]).unwrap();
        assert_eq!(p.classify(&portless, 5), Verdict::Block(BlockReason::Unsolicited));
        let every = AllowRule { local_ports: PortRange::ANY, ..one };
        p.replace_rules(&[every]).unwrap();
        assert_eq!(p.classify(&portless, 6), Verdict::Permit);
        assert_eq!(
            p.classify(&PacketMeta { direction: Direction::Outbound, ..portless }, 7),
            Verdict::Permit
        );
        assert_eq!(p.table().len(), 1);
        assert_eq!(p.counters().headers_unreadable, 5);
    }

    #[test]
    fn transition_table() {
        use Direction::{Inbound, Outbound};
        let t = |s, d, f, fin| tcp_transition(s, d, TcpFlags(f), fin);
        assert_eq!(t(FlowState::SynSent, Inbound, SYNACK, 0), (FlowState::Established, 0));
        assert_eq!(t(FlowState::SynSent, Outbound, SYNACK, 0), (FlowState::SynSent, 0));
        assert_eq!(t(FlowState::SynReceived, Outbound, SYNACK, 0), (FlowState::SynReceived, 0));
        assert_eq!(t(FlowState::SynReceived, Inbound, ACK, 0), (FlowState::Established, 0));
        assert_eq!(t(FlowState::Established, Outbound, FIN, 0), (FlowState::FinWait, 1));
        assert_eq!(t(FlowState::FinWait, Outbound, FIN, 1), (FlowState::FinWait, 1));
        assert_eq!(t(FlowState::FinWait, Inbound, FIN, 1), (FlowState::Closed, 3));
        assert_eq!(t(FlowState::Established, Inbound, RST, 0), (FlowState::Closed, 0));
        assert_eq!(t(FlowState::Closed, Inbound, ACK, 3), (FlowState::Closed, 3));
        // Closed by an RST the VM ignored: its next segment re-establishes; after FINs from
        // both sides, or from the peer, nothing does.
        assert_eq!(t(FlowState::Closed, Outbound, ACK, 0), (FlowState::Established, 0));
        assert_eq!(t(FlowState::Closed, Outbound, ACK, 3), (FlowState::Closed, 3));
        assert_eq!(t(FlowState::Closed, Inbound, ACK, 0), (FlowState::Closed, 0));
    }
}
