//! A switch port: its durable identity and everything vsflow keeps for it.

use core::fmt;

use crate::classify::{Verdict, classify};
use crate::codec::RestoreMemo;
use crate::counters::PortCounters;
use crate::error::Error;
use crate::fingerprint::Pickup;
use crate::flow::{FlowTable, TableConfig};
use crate::packet::PacketMeta;
use crate::policy::{AllowRule, Mode, RuleSet};
use crate::time::Tick;

/// Longest name the vSwitch reports (`IF_MAX_STRING_SIZE` UTF-16 code units).
pub const MAX_NAME_UNITS: usize = 256;

/// The durable identity of a port: the name the vSwitch gives it (`PortName` of
/// `NDIS_SWITCH_PORT_PARAMETERS`), in UTF-16 as reported.
///
/// The numeric `NDIS_SWITCH_PORT_ID` is only the current host's alias: it changes across a
/// live migration, the name does not. Kept inline (no allocation) so ports can be compared
/// at `DISPATCH_LEVEL`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortIdentity {
    len: u16,
    units: [u16; MAX_NAME_UNITS],
}

impl PortIdentity {
    /// From UTF-16 code units (not necessarily valid UTF-16: compared as given).
    ///
    /// # Errors
    /// [`Error::NameTooLong`] past [`MAX_NAME_UNITS`].
    pub fn try_from_utf16(units: &[u16]) -> Result<Self, Error> {
        let mut id = Self { len: 0, units: [0; MAX_NAME_UNITS] };
        let dst = id.units.get_mut(..units.len()).ok_or(Error::NameTooLong)?;
        dst.copy_from_slice(units);
        #[allow(clippy::cast_possible_truncation, reason = "len <= MAX_NAME_UNITS")]
        let len = units.len() as u16;
        id.len = len;
        Ok(id)
    }

    /// From a Rust string.
    ///
    /// # Errors
    /// [`Error::NameTooLong`].
    pub fn try_from_str(s: &str) -> Result<Self, Error> {
        let mut id = Self { len: 0, units: [0; MAX_NAME_UNITS] };
        for (n, u) in s.encode_utf16().enumerate() {
            *id.units.get_mut(n).ok_or(Error::NameTooLong)? = u;
            #[allow(clippy::cast_possible_truncation, reason = "n < MAX_NAME_UNITS")]
            let len = n as u16 + 1;
            id.len = len;
        }
        Ok(id)
    }

    /// The code units.
    #[must_use]
    pub fn as_utf16(&self) -> &[u16] {
        self.units.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl fmt::Display for PortIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in char::decode_utf16(self.as_utf16().iter().copied()) {
            fmt::Write::write_char(f, c.unwrap_or(char::REPLACEMENT_CHARACTER))?;
        }
        Ok(())
    }
}

impl fmt::Debug for PortIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortIdentity({self})")
    }
}

/// Configuration of a port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortConfig {
    /// Flow table sizing, timeouts and hash seed.
    pub table: TableConfig,
    /// Mode of a newly created port.
    pub initial_mode: Mode,
}

/// Everything vsflow keeps for one switch port.
#[derive(Debug)]
pub struct Port {
    pub(crate) identity: PortIdentity,
    pub(crate) mode: Mode,
    pub(crate) rules: RuleSet,
    pub(crate) table: FlowTable,
    pub(crate) counters: PortCounters,
    /// The VM network adapter's durable name (`NicName`), once the NIC events have named it.
    pub(crate) nic: Option<PortIdentity>,
    /// Fingerprints armed by the latest restore, for the classify pickup hook.
    pub(crate) pickup: Pickup,
    /// What the latest restore added, so that applying the same blob again changes nothing.
    pub(crate) restored: RestoreMemo,
}

impl Port {
    /// A new port with an empty table.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`], [`Error::OutOfMemory`].
    pub fn try_new(identity: PortIdentity, config: PortConfig) -> Result<Self, Error> {
        Ok(Self {
            identity,
            mode: config.initial_mode,
            rules: RuleSet::default(),
            table: FlowTable::try_new(config.table)?,
            counters: PortCounters::default(),
            nic: None,
            pickup: Pickup::default(),
            restored: RestoreMemo::default(),
        })
    }

    /// The durable identity.
    #[must_use]
    pub const fn identity(&self) -> &PortIdentity {
        &self.identity
    }

    /// The current mode.
    #[must_use]
    pub const fn mode(&self) -> Mode {
        self.mode
    }

    /// Switches mode. Peer-opened flows admitted in Monitor mode are re-checked against the
    /// rules on their next inbound packet once in Enforce mode.
    pub const fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// The allow rules.
    #[must_use]
    pub const fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Replaces the allow rules atomically; returns the new version.
    ///
    /// # Errors
    /// [`Error::TooManyRules`], [`Error::OutOfMemory`]; the old rules stay on error.
    pub fn replace_rules(&mut self, rules: &[AllowRule]) -> Result<u32, Error> {
        self.rules.replace(rules)
    }

    /// The flow table.
    #[must_use]
    pub const fn table(&self) -> &FlowTable {
        &self.table
    }

    /// The counters.
    #[must_use]
    pub const fn counters(&self) -> &PortCounters {
        &self.counters
    }

    /// The VM network adapter's name (`NicName`), if known.
    #[must_use]
    pub const fn nic_identity(&self) -> Option<&PortIdentity> {
        self.nic.as_ref()
    }

    /// Records the VM network adapter's name (`NicName`) from the NIC events; it travels in
    /// the runtime state beside the port's name.
    pub const fn set_nic_identity(&mut self, nic: Option<PortIdentity>) {
        self.nic = nic;
    }

    /// Fingerprints armed by the latest restore (see [`crate::fingerprint`]).
    #[must_use]
    pub const fn pickup(&self) -> &Pickup {
        &self.pickup
    }

    /// Resets the counters to zero.
    pub fn clear_counters(&mut self) {
        self.counters = PortCounters::default();
    }

    /// Classifies one packet: see [`classify`].
    #[inline]
    pub fn classify(&mut self, meta: &PacketMeta, now: Tick) -> Verdict {
        classify(self, meta, now)
    }

    /// Counts a runtime-state save of this port that left `dropped` flows out.
    pub const fn note_saved(&mut self, dropped: u32) {
        self.counters.saves = self.counters.saves.saturating_add(1);
        self.counters.save_dropped = self.counters.save_dropped.saturating_add(dropped as u64);
    }

    /// Removes up to `budget` idle flows; returns how many.
    pub fn expire(&mut self, now: Tick, budget: usize) -> usize {
        let n = self.table.expire(now, budget);
        self.counters.expired = self.counters.expired.saturating_add(n as u64);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    #[test]
    fn identity_round_trips_utf16_and_rejects_long_names() {
        let id = PortIdentity::try_from_str("B4A1E0A7-3F2C-4D7E-9C11-0A2B3C4D5E6F").unwrap();
        assert_eq!(id.to_string(), "B4A1E0A7-3F2C-4D7E-9C11-0A2B3C4D5E6F");
        let units: Vec<u16> = "port-ä".encode_utf16().collect();
        assert_eq!(PortIdentity::try_from_utf16(&units).unwrap().as_utf16(), &units[..]);
        assert_eq!(PortIdentity::try_from_utf16(&[0u16; 257]), Err(Error::NameTooLong));
        let long: alloc::string::String = core::iter::repeat_n('x', 257).collect();
        assert_eq!(PortIdentity::try_from_str(&long), Err(Error::NameTooLong));
        assert!(PortIdentity::try_from_utf16(&[0u16; 256]).is_ok());
    }
}
