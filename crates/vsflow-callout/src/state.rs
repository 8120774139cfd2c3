//! What the driver knows about the host's virtual switches.
//!
//! Switches, their ports (keyed by the current host's `PortId`, each holding its durable
//! identity and its vsflow-core state), the notifications in flight, and driver-wide counters.
//! Guarded by one spin lock in [`crate::Driver`].

use alloc::vec::Vec;

use foldhash::fast::FixedState;
use hashbrown::HashMap;
use vsflow_core::{Port, PortIdentity};

use crate::driver::DriverStats;
use crate::error::CalloutError;
use crate::pending::PendingSet;

/// A port of a switch: `(switch, PortId)`. `PortId`s are unique only within a switch and change
/// across live migration; the port's durable identity lives in its [`PortEntry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortKey {
    /// The switch's id (assigned by vsflow at switch create).
    pub switch: u32,
    /// The current host's `NDIS_SWITCH_PORT_ID`.
    pub port: u32,
}

/// A virtual switch.
#[derive(Clone, Copy, Debug)]
pub struct SwitchEntry {
    /// vsflow's id for it.
    pub id: u32,
    /// `SwitchName` (the switch GUID string).
    pub name: PortIdentity,
}

/// Everything vsflow keeps for one switch port.
#[derive(Debug)]
pub struct PortEntry {
    /// Flow table, policy, counters, durable identity.
    pub port: Port,
    /// `NDIS_SWITCH_PORT_TYPE`.
    pub port_type: u32,
    /// The NIC connected to the port, if any (`NicIndex`).
    pub nic: Option<u16>,
    /// A NIC is connected (between `INTERFACE_CONNECT` and `INTERFACE_DISCONNECT`).
    pub nic_connected: bool,
    /// The buffer handed to WFP by the last runtime-state save of this port. Owned by the
    /// driver: replaced by the next save, freed with the port or at unsubscribe.
    pub save_buffer: Vec<u8>,
    /// The port was created with `NDIS_SWITCH_PORT_PARAMETERS_FLAG_RESTORING_PORT`.
    pub restoring: bool,
}

/// All switch state.
#[derive(Debug)]
pub struct SwitchState {
    /// Known switches.
    pub switches: Vec<SwitchEntry>,
    /// Ports of all switches.
    pub ports: HashMap<PortKey, PortEntry, FixedState>,
    /// Notifications returned `STATUS_PENDING` and not yet completed.
    pub pending: PendingSet,
    /// Last filter-engine reorder report: whether vsflow's filter engine is in the position it
    /// requires in the extension stack.
    pub reorder_in_position: Option<bool>,
    /// Counters.
    pub stats: DriverStats,
    /// Set once stop has begun: new pended work is refused.
    pub stopping: bool,
    next_switch_id: u32,
}

impl SwitchState {
    /// Empty state.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self {
            switches: Vec::new(),
            ports: HashMap::with_hasher(FixedState::with_seed(seed)),
            pending: PendingSet::default(),
            reorder_in_position: None,
            stats: DriverStats::default(),
            stopping: false,
            next_switch_id: 1,
        }
    }

    /// The switch named `name`, creating it if needed.
    ///
    /// # Errors
    /// Out of memory.
    pub fn switch_id_or_insert(&mut self, name: &PortIdentity) -> Result<u32, CalloutError> {
        if let Some(s) = self.switches.iter().find(|s| s.name == *name) {
            return Ok(s.id);
        }
        self.switches.try_reserve(1)?;
        let id = self.next_switch_id;
        self.next_switch_id = self.next_switch_id.wrapping_add(1).max(1);
        self.switches.push(SwitchEntry { id, name: *name });
        Ok(id)
    }

    /// The id of the switch named `name`.
    #[must_use]
    pub fn switch_id(&self, name: &[u16]) -> Option<u32> {
        self.switches.iter().find(|s| s.name.as_utf16() == name).map(|s| s.id)
    }

    /// The only switch, if there is exactly one (classify's fast path).
    #[must_use]
    pub fn single_switch(&self) -> Option<u32> {
        match self.switches.as_slice() {
            [only] => Some(only.id),
            _ => None,
        }
    }

    /// Forgets a switch and all its ports (their pending notifications must be completed by
    /// the caller first).
    pub fn remove_switch(&mut self, id: u32) {
        self.ports.retain(|k, _| k.switch != id);
        self.switches.retain(|s| s.id != id);
    }
}
