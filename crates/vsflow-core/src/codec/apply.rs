//! Installing a decoded state into a port, all or nothing.

use alloc::vec::Vec;
use core::cmp::Reverse;

use super::error::ApplyError;
use super::{PortState, SavedFlow};
use crate::counters::PortCounters;
use crate::flow::FlowTable;
use crate::policy::RuleSet;
use crate::port::Port;
use crate::time::Tick;

/// What an apply did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Flows restored from the blob.
    pub restored: u32,
    /// Blob flows beyond this host's table bound, left out (least valuable first).
    pub dropped: u32,
    /// Flows the port already had (seen on this host before the restore) that were kept.
    pub kept_local: u32,
}

/// Installs `state` into `port` on a host whose clock reads `now`.
///
/// The new table, rules and counters are built completely first; only then are they swapped
/// in, so on error the port is exactly as before. The blob's mode and rules replace the
/// port's (the VM's policy migrates with it). Flows the port already tracks and the blob does
/// not carry are kept while room remains. If the blob holds more flows than this host's
/// bound, the most valuable are kept ([`SavedFlow::value_rank`]).
///
/// # Errors
/// [`ApplyError::DuplicateFlow`] if two saved flows share a key; [`ApplyError::Core`] for out of
/// memory.
pub fn apply(port: &mut Port, state: &PortState, now: Tick) -> Result<ApplyReport, ApplyError> {
    let config = *port.table.config();
    let bound = config.max_flows as usize;
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

    let mut table = FlowTable::try_new(config)?;
    #[allow(clippy::cast_possible_truncation, reason = "at most the bound, a u32")]
    table.reserve(order.len() as u32)?;
    for &(_, i) in &order {
        let Some(s) = state.flows.get(i as usize) else {
            continue;
        };
        if table.find(&s.key).is_some() {
            return Err(ApplyError::DuplicateFlow { index: i as usize });
        }
        table.insert(s.key, s.to_record(now), now)?;
    }
    let mut kept_local = 0u32;
    for (k, r) in port.table.iter() {
        if table.len() >= bound {
            break;
        }
        if table.find(k).is_none() {
            table.insert(*k, *r, now)?;
            kept_local += 1;
        }
    }

    // Commit: nothing below can fail.
    let restored = u32::try_from(order.len()).unwrap_or(u32::MAX);
    let dropped = u32::try_from(dropped).unwrap_or(u32::MAX);
    let mut counters = add_counters(&port.counters, &state.counters);
    counters.restores = counters.restores.saturating_add(1);
    counters.restored_flows = counters.restored_flows.saturating_add(u64::from(restored));
    counters.restore_dropped = counters.restore_dropped.saturating_add(u64::from(dropped));
    port.table = table;
    port.rules = rules;
    port.mode = state.mode;
    port.counters = counters;
    Ok(ApplyReport { restored, dropped, kept_local })
}

/// Records a lenient restore of a blob whose major version this build cannot read: the port
/// keeps what it has (normally nothing) and counts the event.
pub fn apply_empty(port: &mut Port) {
    port.counters.restores_empty = port.counters.restores_empty.saturating_add(1);
}

fn add_counters(a: &PortCounters, b: &PortCounters) -> PortCounters {
    let (a, b) = (a.to_array(), b.to_array());
    PortCounters::from_values(a.iter().zip(b.iter()).map(|(x, y)| x.saturating_add(*y)))
}
