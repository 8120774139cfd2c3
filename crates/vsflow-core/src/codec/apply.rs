//! Installing a decoded state into a port, all or nothing.

use alloc::vec::Vec;
use core::cmp::Reverse;

use super::error::ApplyError;
use super::{PortState, SavedFlow};
use crate::flow::FlowTable;
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
/// port's (the VM's policy migrates with it) unless the operator changed them while the port
/// was restoring, and rule versions stay this host's ([`Port::plan_restore`]). Flows the port
/// already tracks (seen in the restore window) are kept while room remains and merged with
/// the carried flow of the same key ([`Port::merge_window_flows`]). If the blob holds more
/// flows than this host's bound, the most valuable are kept ([`SavedFlow::value_rank`]).
///
/// # Errors
/// [`ApplyError::DuplicateFlow`] if two saved flows share a key; [`ApplyError::Core`] for out of
/// memory.
pub fn apply(port: &mut Port, state: &PortState, now: Tick) -> Result<ApplyReport, ApplyError> {
    let config = *port.table.config();
    let bound = config.max_flows as usize;
    let mut plan = port.plan_restore(state.mode, &state.rules)?;

    // Choose which saved flows to restore, and insert them oldest first so that each class's
    // LRU list ends up in recency order.
    let mut order: Vec<(Reverse<Tick>, u32)> = Vec::new();
    order.try_reserve_exact(state.flows.len()).map_err(crate::Error::from)?;
    // Flows idle past their timeout at the save admit nothing: not restored, counted expired.
    let mut expired = 0u64;
    for (i, s) in (0u32..).zip(state.flows.iter()) {
        if config.timeouts.expired(s.key.protocol, s.state, s.last_age) {
            expired += 1;
            continue;
        }
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
        let mut record = s.to_record(now);
        record.admission = plan.admission(record.admission);
        table.insert(s.key, record, now)?;
    }
    let kept_local = port.merge_window_flows(&mut plan, &mut table, now)?;

    // Commit: nothing below can fail.
    let restored = u32::try_from(order.len()).unwrap_or(u32::MAX);
    let dropped = u32::try_from(dropped).unwrap_or(u32::MAX);
    let mut counters = port.counters.saturating_add(&state.counters);
    counters.restores = counters.restores.saturating_add(1);
    counters.expired = counters.expired.saturating_add(expired);
    counters.restored_flows = counters.restored_flows.saturating_add(u64::from(restored));
    counters.restore_dropped = counters.restore_dropped.saturating_add(u64::from(dropped));
    port.commit_restore(plan, table, counters, now);
    Ok(ApplyReport { restored, dropped, kept_local })
}

/// Records a lenient restore of a blob whose major version this build cannot read: the port
/// keeps what it has (normally nothing), leaves the restoring state and counts the event.
pub fn apply_empty(port: &mut Port) {
    port.counters.restores_empty = port.counters.restores_empty.saturating_add(1);
    port.cancel_restore();
}
