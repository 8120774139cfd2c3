//! Per-port counters.

/// Counters of one port. They travel with the port's runtime state on live migration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortCounters {
    /// Packets permitted.
    pub packets_permitted: u64,
    /// Packets blocked.
    pub packets_blocked: u64,
    /// Flows created by classify.
    pub flows_created: u64,
    /// Closed flows reclaimed to make room.
    pub evicted_closed: u64,
    /// Idle flows reclaimed to make room.
    pub evicted_idle: u64,
    /// Live flows evicted (least recently used) to make room.
    pub evicted_lru: u64,
    /// Idle flows removed by the periodic sweep.
    pub expired: u64,
    /// Flows that could not be tracked because memory ran out.
    pub untracked: u64,
    /// Runtime-state saves of this port.
    pub saves: u64,
    /// Flows left out of saved blobs by the size cap.
    pub save_dropped: u64,
    /// Runtime-state restores applied to this port.
    pub restores: u64,
    /// Flows restored.
    pub restored_flows: u64,
    /// Flows in restored blobs beyond this host's table bound, left out.
    pub restore_dropped: u64,
    /// Restores of an unsupported format major version that restored an empty state
    /// (lenient mode).
    pub restores_empty: u64,
    /// Connections saved as fingerprints (not exact records) because of the size cap.
    pub save_fingerprinted: u64,
    /// Fingerprints armed for pickup by restores.
    pub restored_fingerprints: u64,
    /// Unknown flows picked up as established because their fingerprint matched.
    pub fingerprint_pickups: u64,
    /// Restores whose blob named another port or NIC than this one (restored all the same:
    /// restores are keyed by the destination's port id).
    pub identity_mismatches: u64,
}

impl PortCounters {
    /// Number of counters, in [`PortCounters::to_array`] order.
    pub const COUNT: usize = 18;

    /// Names in [`PortCounters::to_array`] order, for tools.
    pub const NAMES: [&'static str; Self::COUNT] = [
        "packets_permitted",
        "packets_blocked",
        "flows_created",
        "evicted_closed",
        "evicted_idle",
        "evicted_lru",
        "expired",
        "untracked",
        "saves",
        "save_dropped",
        "restores",
        "restored_flows",
        "restore_dropped",
        "restores_empty",
        "save_fingerprinted",
        "restored_fingerprints",
        "fingerprint_pickups",
        "identity_mismatches",
    ];

    /// The counters in their fixed wire order. New counters are only ever appended.
    #[must_use]
    pub const fn to_array(&self) -> [u64; Self::COUNT] {
        [
            self.packets_permitted,
            self.packets_blocked,
            self.flows_created,
            self.evicted_closed,
            self.evicted_idle,
            self.evicted_lru,
            self.expired,
            self.untracked,
            self.saves,
            self.save_dropped,
            self.restores,
            self.restored_flows,
            self.restore_dropped,
            self.restores_empty,
            self.save_fingerprinted,
            self.restored_fingerprints,
            self.fingerprint_pickups,
            self.identity_mismatches,
        ]
    }

    /// Builds counters from values in wire order; missing trailing values are zero, extra
    /// values (from a newer minor version) are ignored.
    #[must_use]
    pub fn from_values(mut values: impl Iterator<Item = u64>) -> Self {
        let mut next = || values.next().unwrap_or(0);
        Self {
            packets_permitted: next(),
            packets_blocked: next(),
            flows_created: next(),
            evicted_closed: next(),
            evicted_idle: next(),
            evicted_lru: next(),
            expired: next(),
            untracked: next(),
            saves: next(),
            save_dropped: next(),
            restores: next(),
            restored_flows: next(),
            restore_dropped: next(),
            restores_empty: next(),
            save_fingerprinted: next(),
            restored_fingerprints: next(),
            fingerprint_pickups: next(),
            identity_mismatches: next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PortCounters;

    #[test]
    fn array_round_trip_and_short_or_long_input() {
        let c = PortCounters::from_values(1..=18);
        assert_eq!(c.to_array(), core::array::from_fn(|i| i as u64 + 1));
        assert_eq!(PortCounters::from_values(c.to_array().into_iter()), c);
        let short = PortCounters::from_values([7u64, 8].into_iter());
        assert_eq!(short.packets_permitted, 7);
        assert_eq!(short.packets_blocked, 8);
        assert_eq!(short.restores_empty, 0);
        let long = PortCounters::from_values(1..=40);
        assert_eq!(long, c);
    }
}
