//! Per-port counters.
//!
//! The first [`PortCounters::COUNT`] counters are the ones the runtime-state format carries, in
//! their fixed wire order ([`PortCounters::to_array`]). The *extended* counters (flow expiry at
//! classify, refused inserts, the restore window, pickups, unreadable headers:
//! [`PortCounters::EXTRA_NAMES`]) stay on the host; [`PortCounters::to_all_array`] gives both,
//! for tools.

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
    /// Extended: flows found idle past their timeout by classify, and started afresh (or, for
    /// unsolicited inbound traffic, refused).
    pub expired_on_packet: u64,
    /// Extended: new flows not tracked because the table was full of established connections
    /// that an unestablished flow may not displace (the packet's verdict stands).
    pub refused_full: u64,
    /// Extended: unknown TCP flows picked up as established by loose pickup (a non-SYN packet
    /// within the loose window after a restore).
    pub picked_up_loose: u64,
    /// Extended: packets classified while the port was restoring (the restore window),
    /// counted when the window closes.
    pub window_packets: u64,
    /// Extended: flows seen in the restore window that the restore also carried (merged).
    pub window_flows_merged: u64,
    /// Extended: restores whose mode or rules were not installed because the operator changed
    /// them while the restore was pending (the operator's later change wins).
    pub restore_policy_kept: u64,
    /// Extended: ICMP errors permitted because the packet they quote belongs to a tracked flow
    /// (related).
    pub icmp_related: u64,
    /// Extended: inbound ICMP messages that belong to no flow (replies without a request,
    /// errors whose quote matches no flow, unknown or unreadable messages): blocked in Enforce
    /// unless an allow rule admits their type.
    pub icmp_unmatched: u64,
    /// Extended: IPv6 neighbor discovery and MLD messages permitted by the on-link default.
    pub icmp_link: u64,
    /// Extended: pickups (window, fingerprint, loose) the VM answered: now established flows.
    pub pickups_confirmed: u64,
    /// Extended: pickups the VM reset (it had no such connection: a false match or a dead
    /// connection); nothing more is admitted on their 5-tuples, no fingerprint is used up.
    pub pickups_refused: u64,
    /// Extended: inbound packets blocked in the restore window (initial SYNs, unsolicited UDP
    /// and other protocols: the peer retries).
    pub window_blocked: u64,
    /// Extended: packets whose TCP flags or ports could not be read (judged without them).
    pub headers_unreadable: u64,
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

    /// Number of extended counters, in [`PortCounters::extra_to_array`] order.
    pub const EXTRA_COUNT: usize = 13;

    /// Names of the extended counters.
    pub const EXTRA_NAMES: [&'static str; Self::EXTRA_COUNT] = [
        "expired_on_packet",
        "refused_full",
        "picked_up_loose",
        "window_packets",
        "window_flows_merged",
        "restore_policy_kept",
        "icmp_related",
        "icmp_unmatched",
        "icmp_link",
        "pickups_confirmed",
        "pickups_refused",
        "window_blocked",
        "headers_unreadable",
    ];

    /// Number of all counters.
    pub const ALL_COUNT: usize = Self::COUNT + Self::EXTRA_COUNT;

    /// Names of all counters, in [`PortCounters::to_all_array`] order.
    pub const ALL_NAMES: [&'static str; Self::ALL_COUNT] = {
        let mut names = [""; Self::ALL_COUNT];
        let mut i = 0;
        while i < Self::COUNT {
            names[i] = Self::NAMES[i];
            i += 1;
        }
        while i < Self::ALL_COUNT {
            names[i] = Self::EXTRA_NAMES[i - Self::COUNT];
            i += 1;
        }
        names
    };

    /// The extended counters.
    #[must_use]
    pub const fn extra_to_array(&self) -> [u64; Self::EXTRA_COUNT] {
        [
            self.expired_on_packet,
            self.refused_full,
            self.picked_up_loose,
            self.window_packets,
            self.window_flows_merged,
            self.restore_policy_kept,
            self.icmp_related,
            self.icmp_unmatched,
            self.icmp_link,
            self.pickups_confirmed,
            self.pickups_refused,
            self.window_blocked,
            self.headers_unreadable,
        ]
    }

    /// Every counter: the wire counters, then the extended ones.
    #[must_use]
    pub fn to_all_array(&self) -> [u64; Self::ALL_COUNT] {
        let (wire, extra) = (self.to_array(), self.extra_to_array());
        core::array::from_fn(|i| {
            wire.get(i).or_else(|| extra.get(i - Self::COUNT)).copied().unwrap_or(0)
        })
    }

    /// Builds counters from values in [`PortCounters::to_all_array`] order; missing trailing
    /// values are zero, extra values are ignored.
    #[must_use]
    pub fn from_all_values(mut values: impl Iterator<Item = u64>) -> Self {
        let mut c = Self::from_values(values.by_ref().take(Self::COUNT));
        let mut next = || values.next().unwrap_or(0);
        c.expired_on_packet = next();
        c.refused_full = next();
        c.picked_up_loose = next();
        c.window_packets = next();
        c.window_flows_merged = next();
        c.restore_policy_kept = next();
        c.icmp_related = next();
        c.icmp_unmatched = next();
        c.icmp_link = next();
        c.pickups_confirmed = next();
        c.pickups_refused = next();
        c.window_blocked = next();
        c.headers_unreadable = next();
        c
    }

    /// Every counter of `self` plus the same counter of `other`, saturating.
    #[must_use]
    pub fn saturating_add(&self, other: &Self) -> Self {
        let (a, b) = (self.to_all_array(), other.to_all_array());
        Self::from_all_values(a.iter().zip(b.iter()).map(|(x, y)| x.saturating_add(*y)))
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
            ..Self::default()
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

    #[test]
    fn all_counters_round_trip_and_add() {
        let c = PortCounters::from_all_values(1..);
        let all = c.to_all_array();
        assert_eq!(all, core::array::from_fn(|i| i as u64 + 1));
        assert_eq!(c.extra_to_array()[0], PortCounters::COUNT as u64 + 1);
        assert_eq!(PortCounters::ALL_NAMES[PortCounters::COUNT], "expired_on_packet");
        assert_eq!(PortCounters::ALL_NAMES[PortCounters::ALL_COUNT - 1], "headers_unreadable");
        let sum = c.saturating_add(&c);
        assert_eq!(sum.to_all_array(), core::array::from_fn(|i| 2 * (i as u64 + 1)));
        let max = PortCounters::from_all_values(core::iter::repeat(u64::MAX));
        assert_eq!(max.saturating_add(&c), max);
        // The wire form carries only the format-1 counters.
        assert_eq!(PortCounters::from_values(c.to_array().into_iter()).picked_up_loose, 0);
    }
}
