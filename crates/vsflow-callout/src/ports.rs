//! The host's switches and ports, and how a packet finds its port without a host-wide lock.
//!
//! Every port has its own spin lock ([`PortSlot::state`]): classify, save, restore and the
//! IOCTLs of one port never wait for another port. Finding a port is lock-free for readers: the
//! writers (switch and port create/delete, at `PASSIVE_LEVEL`, serialized by a passive mutex)
//! build a new immutable [`Index`] and publish it; readers take a cache-aware rundown
//! reference (`EX_RUNDOWN_REF_CACHE_AWARE`: a per-processor counter, no shared cache line) on
//! the published index and look the port up in it.
//!
//! Two index slots alternate. The protocol, and why a port is never freed under a reader:
//! 1. A reader loads the generation `g`, acquires slot `g & 1`'s rundown, and reads the slot's
//!    index. A slot's index is replaced only while its rundown is run down, so it is stable
//!    for as long as the reader holds the reference. If the acquire fails (the writer ran the
//!    slot down), the reader reloads `g` and tries the other slot.
//! 2. A writer fills the stale slot (run down by the previous update, so no reader holds it)
//!    with the new index, reinitializes its rundown and publishes `g + 1`; then it runs the
//!    old slot down, which waits for every reader that may still see the old index. Only then
//!    does it free the ports the new index no longer holds (their slots are unreachable).
//! 3. At stop, both slots are run down and never reinitialized: every reader fails and
//!    permits; the wait also drains every classify call in flight.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use foldhash::fast::FixedState;
use hashbrown::HashMap;
use vsflow_core::{Port, PortIdentity};

use crate::alloc_util::try_box;
use crate::error::CalloutError;
use crate::services::{KernelServices, RawRundown, RawSpinLock};
use crate::sync::{PassiveMutex, RundownGuard, SpinMutex};

/// A port of a switch: `(switch, PortId)`. `PortId`s are unique only within a switch and change
/// across live migration; the port's durable identity lives in its [`PortState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortKey {
    /// The switch's id (assigned by vsflow at switch create).
    pub switch: u32,
    /// The current host's `NDIS_SWITCH_PORT_ID`.
    pub port: u32,
}

/// A virtual switch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SwitchEntry {
    /// vsflow's id for it.
    pub(crate) id: u32,
    /// `SwitchName` (the switch GUID string).
    pub(crate) name: PortIdentity,
}

/// Everything vsflow keeps for one switch port, under the port's own lock.
#[derive(Debug)]
pub(crate) struct PortState {
    /// Flow table, policy, counters, durable identity.
    pub(crate) port: Port,
    /// `NDIS_SWITCH_PORT_TYPE`.
    pub(crate) port_type: u32,
    /// The VM NIC connected to the port, if any (`NicIndex`).
    pub(crate) nic: Option<u16>,
    /// A NIC is connected (`NicState` connected, or between `INTERFACE_CONNECT` and
    /// `INTERFACE_DISCONNECT`).
    pub(crate) nic_connected: bool,
    /// A VM NIC (synthetic or emulated) is on the port. A generic port is judged only then.
    pub(crate) vm_nic: bool,
    /// The buffer handed to WFP by the last runtime-state save of this port. Owned by the
    /// driver: replaced by the next save, freed with the port or at stop.
    pub(crate) save_buffer: Vec<u8>,
    /// Digest of the last blob applied to this port (a second restore of the same blob
    /// changes nothing).
    pub(crate) last_restore: Option<u64>,
    /// Classify calls that reached this port (summed into the driver's count on read).
    pub(crate) classify_calls: u64,
}

impl PortState {
    /// Whether packets of this port are judged (generic ports only with a VM NIC on them).
    pub(crate) const fn judged(&self) -> bool {
        self.port_type != fwps_sys::NdisSwitchPortTypeGeneric || self.vm_nic
    }
}

/// A port and its lock. Lives in a box owned by the writer's map; readers reach it through the
/// published [`Index`] and never past the index's rundown reference.
pub(crate) struct PortSlot<L: RawSpinLock> {
    pub(crate) key: PortKey,
    /// `PortName`: never changes for a slot (a new name is a new port).
    pub(crate) identity: PortIdentity,
    pub(crate) state: SpinMutex<L, PortState>,
}

/// An immutable view of the switches and ports, published to readers.
pub(crate) struct Index<L: RawSpinLock> {
    switches: Vec<SwitchEntry>,
    ports: HashMap<PortKey, *const PortSlot<L>, FixedState>,
}

impl<L: RawSpinLock> Index<L> {
    /// The id of the switch named `name`.
    pub(crate) fn switch_id(&self, name: &[u16]) -> Option<u32> {
        self.switches.iter().find(|s| s.name.as_utf16() == name).map(|s| s.id)
    }

    /// The id of the switch whose name is `bytes` (UTF-16LE, up to an optional NUL unit),
    /// compared in place.
    pub(crate) fn switch_id_le(&self, bytes: &[u8]) -> Option<u32> {
        let units = bytes.chunks_exact(2).map(|p| match p {
            [lo, hi] => u16::from_le_bytes([*lo, *hi]),
            _ => 0,
        });
        let len = units.clone().position(|u| u == 0).unwrap_or(bytes.len() / 2);
        self.switches
            .iter()
            .find(|s| {
                let name = s.name.as_utf16();
                name.len() == len && name.iter().copied().eq(units.clone().take(len))
            })
            .map(|s| s.id)
    }

    /// The port `key`, valid while the index is (the caller holds its reference).
    pub(crate) fn port(&self, key: &PortKey) -> Option<&PortSlot<L>> {
        let p = *self.ports.get(key)?;
        // SAFETY: every pointer in a published index is a live boxed slot: slots are freed
        // only after an index without them is published and this index's readers drained.
        Some(unsafe { &*p })
    }

    /// Every port.
    pub(crate) fn ports(&self) -> impl ExactSizeIterator<Item = &PortSlot<L>> + '_ {
        // SAFETY: as in `port`.
        self.ports.values().map(|p| unsafe { &**p })
    }

    /// Number of ports.
    pub(crate) fn len(&self) -> usize {
        self.ports.len()
    }

    /// Number of switches.
    pub(crate) fn switch_count(&self) -> usize {
        self.switches.len()
    }
}

/// The writers' copy: owns the port boxes.
pub(crate) struct Master<L: RawSpinLock> {
    pub(crate) switches: Vec<SwitchEntry>,
    pub(crate) ports: HashMap<PortKey, Box<PortSlot<L>>, FixedState>,
    /// Slots removed by this update: freed once no reader can reach them.
    pub(crate) garbage: Vec<Box<PortSlot<L>>>,
    next_switch_id: u32,
    /// The stale index slot is run down (true after the first update).
    stale_run_down: bool,
    seed: u64,
}

impl<L: RawSpinLock> Master<L> {
    /// The switch named `name`, creating it if needed.
    ///
    /// # Errors
    /// Out of memory.
    pub(crate) fn switch_id_or_insert(&mut self, name: &PortIdentity) -> Result<u32, CalloutError> {
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
    pub(crate) fn switch_id(&self, name: &[u16]) -> Option<u32> {
        self.switches.iter().find(|s| s.name.as_utf16() == name).map(|s| s.id)
    }

    /// Removes a port; its slot is freed after the update is published and drained.
    ///
    /// # Errors
    /// Out of memory (nothing removed).
    pub(crate) fn remove_port(&mut self, key: PortKey) -> Result<(), CalloutError> {
        if self.ports.contains_key(&key) {
            self.garbage.try_reserve(1)?;
            if let Some(slot) = self.ports.remove(&key) {
                self.garbage.push(slot);
            }
        }
        Ok(())
    }

    /// Inserts (or replaces) a port.
    ///
    /// # Errors
    /// Out of memory (nothing changed).
    pub(crate) fn insert_port(&mut self, slot: Box<PortSlot<L>>) -> Result<(), CalloutError> {
        self.ports.try_reserve(1)?;
        self.garbage.try_reserve(1)?;
        if let Some(old) = self.ports.insert(slot.key, slot) {
            self.garbage.push(old);
        }
        Ok(())
    }

    /// Forgets a switch and its ports.
    ///
    /// # Errors
    /// Out of memory (nothing removed).
    pub(crate) fn remove_switch(&mut self, id: u32) -> Result<(), CalloutError> {
        let n = self.ports.keys().filter(|k| k.switch == id).count();
        self.garbage.try_reserve(n)?;
        let keys = self.ports.extract_if(|k, _| k.switch == id);
        for (_, slot) in keys {
            self.garbage.push(slot);
        }
        self.switches.retain(|s| s.id != id);
        Ok(())
    }

    fn build_index(&self) -> Result<Box<Index<L>>, CalloutError> {
        let mut switches = Vec::new();
        switches.try_reserve_exact(self.switches.len())?;
        switches.extend_from_slice(&self.switches);
        let mut ports = HashMap::with_hasher(FixedState::with_seed(self.seed));
        ports.try_reserve(self.ports.len())?;
        for (k, slot) in &self.ports {
            ports.insert(*k, ptr::from_ref::<PortSlot<L>>(slot));
        }
        try_box(Index { switches, ports })
    }
}

struct IndexSlot<R> {
    rundown: R,
    index: AtomicPtr<()>,
}

/// The port map: a writer-owned master copy and the published index readers use.
pub(crate) struct PortMap<S: KernelServices> {
    writer: PassiveMutex<S::Mutex, Master<S::Lock>>,
    generation: AtomicUsize,
    slots: [IndexSlot<S::Rundown>; 2],
    closed: AtomicBool,
}

impl<S: KernelServices> PortMap<S> {
    /// An empty map.
    ///
    /// # Errors
    /// Out of memory.
    pub(crate) fn try_new(services: &S) -> Result<Self, CalloutError> {
        let seed = services.hash_seed();
        let master = Master {
            switches: Vec::new(),
            ports: HashMap::with_hasher(FixedState::with_seed(seed)),
            garbage: Vec::new(),
            next_switch_id: 1,
            stale_run_down: false,
            seed,
        };
        let first = Box::into_raw(master.build_index()?).cast::<()>();
        let slots = [
            IndexSlot { rundown: services.new_rundown()?, index: AtomicPtr::new(first) },
            IndexSlot { rundown: services.new_rundown()?, index: AtomicPtr::new(ptr::null_mut()) },
        ];
        Ok(Self {
            writer: PassiveMutex::new(services.new_mutex(), master),
            generation: AtomicUsize::new(0),
            slots,
            closed: AtomicBool::new(false),
        })
    }

    /// Runs `f` on the published index; `None` once the map is closed (stop). Any IRQL
    /// `<= DISPATCH_LEVEL`; takes no lock.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&Index<S::Lock>) -> R) -> Option<R> {
        loop {
            let g = self.generation.load(Ordering::Acquire);
            let slot = self.slot(g);
            if let Some(_held) = RundownGuard::acquire(&slot.rundown) {
                let p = slot.index.load(Ordering::Acquire).cast::<Index<S::Lock>>();
                // SAFETY: a slot's index is replaced or freed only while the slot is run down,
                // and this reader holds a reference on it (module protocol, step 1).
                let index = unsafe { p.as_ref() }?;
                return Some(f(index));
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            core::hint::spin_loop();
        }
    }

    fn slot(&self, generation: usize) -> &IndexSlot<S::Rundown> {
        let [even, odd] = &self.slots;
        if generation & 1 == 0 { even } else { odd }
    }

    /// Changes the master copy with `f` and publishes the result (`PASSIVE_LEVEL`: waits for
    /// readers of the previous index). If `f` fails nothing is published, and `f` must have
    /// left the master unchanged.
    ///
    /// # Errors
    /// What `f` returns, `InvalidState` once closed, or out of memory building the index
    /// (then the master is changed but readers keep the previous index until the next update;
    /// removed slots stay alive until then).
    pub(crate) fn update<R>(
        &self,
        f: impl FnOnce(&mut Master<S::Lock>) -> Result<R, CalloutError>,
    ) -> Result<R, CalloutError> {
        let mut m = self.writer.lock();
        if self.closed.load(Ordering::Acquire) {
            return Err(CalloutError::InvalidState);
        }
        let r = f(&mut m)?;
        let index = m.build_index()?;
        let g = self.generation.load(Ordering::Acquire);
        let stale = self.slot(g.wrapping_add(1));
        if !m.stale_run_down {
            stale.rundown.wait_for_release();
        }
        let old = stale.index.swap(Box::into_raw(index).cast(), Ordering::AcqRel);
        free_index::<S::Lock>(old);
        stale.rundown.reinitialize();
        self.generation.store(g.wrapping_add(1), Ordering::Release);
        // Step 2: drain every reader that may still see the previous index.
        self.slot(g).rundown.wait_for_release();
        m.stale_run_down = true;
        m.garbage.clear();
        Ok(r)
    }

    /// Runs `f` on the master copy without publishing (`PASSIVE_LEVEL`; writers' reads).
    pub(crate) fn with_master<R>(&self, f: impl FnOnce(&Master<S::Lock>) -> R) -> R {
        f(&self.writer.lock())
    }

    /// Closes the map (stop): drains every reader, then frees every index and port. Readers
    /// get `None` from then on.
    pub(crate) fn close(&self) {
        let mut m = self.writer.lock();
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let g = self.generation.load(Ordering::Acquire);
        if !m.stale_run_down {
            self.slot(g.wrapping_add(1)).rundown.wait_for_release();
        }
        self.slot(g).rundown.wait_for_release();
        m.stale_run_down = true;
        for s in &self.slots {
            free_index::<S::Lock>(s.index.swap(ptr::null_mut(), Ordering::AcqRel));
        }
        m.ports.clear();
        m.switches.clear();
        m.garbage.clear();
    }
}

fn free_index<L: RawSpinLock>(p: *mut ()) {
    if !p.is_null() {
        // SAFETY: `p` came from `Box::into_raw` of an `Index<L>` in `update`/`try_new` and was
        // swapped out of its slot while the slot was run down: no reader holds it, and it is
        // freed once.
        drop(unsafe { Box::from_raw(p.cast::<Index<L>>()) });
    }
}

impl<S: KernelServices> Drop for PortMap<S> {
    fn drop(&mut self) {
        for s in &self.slots {
            free_index::<S::Lock>(s.index.swap(ptr::null_mut(), Ordering::AcqRel));
        }
    }
}
