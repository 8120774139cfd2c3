//! Installing a decoded state into a port, all or nothing, idempotently.

use alloc::vec::Vec;
use core::cmp::Reverse;

use super::error::ApplyError;
use super::{PortState, SavedFlow};
use crate::counters::PortCounters;
use crate::fingerprint::{DEFAULT_PICKUP_WINDOW, Pickup};
use crate::flow::{Admission, FlowRecord, FlowState, FlowTable, Opener};
use crate::packet::protocol;
use crate::policy::RuleSet;
use crate::port::Port;
use crate::time::Tick;

/// Restore settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplyConfig {
    /// How long after the restore a packet of an unknown flow may be picked up by its
    /// fingerprint (default [`DEFAULT_PICKUP_WINDOW`], 5 minutes; 0 disables pickup).
    pub pickup_window: Tick,
}

impl Default for ApplyConfig {
    fn default() -> Self {
        Self { pickup_window: DEFAULT_PICKUP_WINDOW }
    }
}

/// What an apply did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Flows restored from the blob.
    pub restored: u32,
    /// Blob flows beyond this host's table bound, left out (least valuable first).
    pub dropped: u32,
    /// Flows the port already had (seen on this host before the restore) that were kept.
    pub kept_local: u32,
    /// Fingerprints armed for pickup.
    pub fingerprints: u32,
    /// Flows seen before the restore that matched a fingerprint and became carried
    /// connections.
    pub picked_up_local: u32,
    /// The blob names another port or NIC than this one (restored all the same).
    pub identity_mismatch: bool,
    /// The same blob was already applied to this port: nothing changed.
    pub repeated: bool,
}

/// What the latest restore of a port was, so that applying the same blob again is a no-op.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreMemo {
    digest: Option<u64>,
}

/// [`apply_with`] with the default [`ApplyConfig`].
///
/// # Errors
/// As [`apply_with`].
pub fn apply(port: &mut Port, state: &PortState, now: Tick) -> Result<ApplyReport, ApplyError> {
    apply_with(port, state, now, &ApplyConfig::default())
}

/// Installs `state` into `port` on a host whose clock reads `now`.
///
/// The new table, rules and counters are built completely first; only then are they swapped
/// in, so on error the port is exactly as before. The blob's mode and rules replace the
/// port's (the VM's policy migrates with it). Flows the port already tracks (seen in the
/// restore window) merge with the blob's: a flow in both keeps the blob's history and adds
/// the window's packets; one only on this host is kept while room remains, and if it matches
/// a fingerprint it becomes a carried connection. The blob's fingerprints are armed for
/// `config.pickup_window`. If the blob holds more flows than this host's bound, the most
/// valuable are kept ([`SavedFlow::value_rank`]).
///
/// Idempotent: applying a decoded blob that was already applied to this port (same
/// [`PortState::digest`], non-zero) changes nothing and reports `repeated`.
///
/// # Errors
/// [`ApplyError::DuplicateFlow`] if two saved flows share a key; [`ApplyError::Core`] for out of
/// memory.
#[allow(clippy::too_many_lines, reason = "one build-then-commit sequence")]
pub fn apply_with(
    port: &mut Port,
    state: &PortState,
    now: Tick,
    config: &ApplyConfig,
) -> Result<ApplyReport, ApplyError> {
    let digest = (state.digest != 0).then_some(state.digest);
    if digest.is_some() && port.restored.digest == digest {
        return Ok(ApplyReport { repeated: true, ..ApplyReport::default() });
    }
    let table_config = *port.table.config();
    let bound = table_config.max_flows as usize;
    let rules = RuleSet::try_from_slice(state.rules.version(), state.rules.rules())?;

    // Choose which saved flows to restore, and insert them oldest first so that each class's
    // LRU list ends up in recency order.
    let mut order: Vec<(Reverse<Tick>, u32)> = Vec::new();
    order.try_reserve_exact(state.flows.len()).map_err(crate::Error::from)?;
    for (i, s) in (0u32..).zip(state.flows.iter()) {
        order.push((Reverse(s.last_age), i));
    }
    let mut dropped = 0usize;
    if order.len() > bound {
        let flows = &state.flows;
        let rank =
            |&(_, i): &(Reverse<Tick>, u32)| flows.get(i as usize).map(SavedFlow::value_rank);
        order.sort_unstable_by_key(rank);
        dropped = order.len() - bound;
        order.truncate(bound);
    }
    order.sort_unstable();

    let mut table = FlowTable::try_new(table_config)?;
    #[allow(clippy::cast_possible_truncation, reason = "at most the bound, a u32")]
    table.reserve(order.len() as u32)?;
    for &(_, i) in &order {
        let Some(s) = state.flows.get(i as usize) else {
            continue;
        };
        if table.find(&s.key).is_some() {
            return Err(ApplyError::DuplicateFlow { index: i as usize });
        }
        let mut record = s.to_record(now);
        if let Some(local) = port.table.get(&s.key) {
            merge(&mut record, local);
        }
        table.insert(s.key, record, now)?;
    }

    let mut pickup = Pickup::try_new(
        state.fingerprints.try_clone()?,
        if config.pickup_window == 0 { 0 } else { now.saturating_add(config.pickup_window) },
    )?;
    let mut kept_local = 0u32;
    for (k, r) in port.table.iter() {
        if table.len() >= bound {
            break;
        }
        if table.find(k).is_none() {
            let mut r = *r;
            let resumed = k.protocol == protocol::TCP
                && !matches!(r.state, FlowState::SynSent | FlowState::SynReceived)
                && pickup.take(k, now);
            if resumed {
                // A carried connection whose packets arrived before the restore: it was
                // allowed on the source, so its traffic stays allowed both ways.
                r.opener = Opener::Vm;
                r.admission = Admission::Vm;
            }
            table.insert(*k, r, now)?;
            kept_local += 1;
        }
    }
    let picked_up_local = pickup.picked();

    // Commit: nothing below can fail.
    let restored = u32::try_from(order.len()).unwrap_or(u32::MAX);
    let dropped = u32::try_from(dropped).unwrap_or(u32::MAX);
    let fingerprints = u32::try_from(state.fingerprints.len()).unwrap_or(u32::MAX);
    let identity_mismatch = state.identity != port.identity
        || matches!((&state.nic, &port.nic), (Some(a), Some(b)) if a != b);
    let mut counters = add_counters(&port.counters, &state.counters);
    counters.restores = counters.restores.saturating_add(1);
    counters.restored_flows = counters.restored_flows.saturating_add(u64::from(restored));
    counters.restore_dropped = counters.restore_dropped.saturating_add(u64::from(dropped));
    counters.restored_fingerprints =
        counters.restored_fingerprints.saturating_add(u64::from(fingerprints));
    counters.fingerprint_pickups =
        counters.fingerprint_pickups.saturating_add(u64::from(picked_up_local));
    counters.identity_mismatches =
        counters.identity_mismatches.saturating_add(u64::from(identity_mismatch));
    port.table = table;
    port.rules = rules;
    port.mode = state.mode;
    port.counters = counters;
    port.pickup = pickup;
    port.restored = RestoreMemo { digest };
    if port.nic.is_none() {
        port.nic = state.nic;
    }
    Ok(ApplyReport {
        restored,
        dropped,
        kept_local,
        fingerprints,
        picked_up_local,
        identity_mismatch,
        repeated: false,
    })
}

/// A flow in both the blob and the port (seen in the restore window): the blob's history,
/// the window's packets added, the later activity, and a TCP state that only moves forward.
fn merge(record: &mut FlowRecord, local: &FlowRecord) {
    for (a, b) in record.packets.iter_mut().zip(local.packets) {
        *a = a.saturating_add(b);
    }
    for (a, b) in record.bytes.iter_mut().zip(local.bytes) {
        *a = a.saturating_add(b);
    }
    record.last_seen = record.last_seen.max(local.last_seen);
    if record.state.is_tcp() && local.state.is_tcp() {
        let progress = |s: FlowState| match s {
            FlowState::FinWait => 1,
            FlowState::Closed => 2,
            _ => 0,
        };
        if progress(local.state) > progress(record.state) {
            record.state = local.state;
        }
        record.fin_seen |= local.fin_seen;
    }
}

/// Records a lenient restore that carries nothing, emptying the port.
///
/// For a blob of an unknown major version, or a damaged or empty one under the lenient policy:
/// the port is emptied as documented (no flows, no fingerprints; its mode and rules stay as
/// configured on this host) and the event is counted.
pub fn apply_empty(port: &mut Port) {
    port.table.clear();
    port.pickup.clear();
    port.counters.restores_empty = port.counters.restores_empty.saturating_add(1);
}

fn add_counters(a: &PortCounters, b: &PortCounters) -> PortCounters {
    let (a, b) = (a.to_array(), b.to_array());
    PortCounters::from_values(a.iter().zip(b.iter()).map(|(x, y)| x.saturating_add(*y)))
}
