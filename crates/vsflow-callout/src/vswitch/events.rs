//! Switch lifetime, port, interface, filter-engine reorder and policy events.

use core::ffi::c_void;
use core::mem::{offset_of, size_of};
use core::ptr;
use core::sync::atomic::Ordering;

use fwps_sys as sys;
use fwps_sys::{
    BOOLEAN, NDIS_ENUM_FILTERS, NDIS_SWITCH_NIC_ARRAY, NDIS_SWITCH_NIC_PARAMETERS,
    NDIS_SWITCH_PARAMETERS, NDIS_SWITCH_PORT_ARRAY, NDIS_SWITCH_PORT_PARAMETERS,
    NDIS_SWITCH_PORT_PROPERTY_DELETE_PARAMETERS, NDIS_SWITCH_PORT_PROPERTY_PARAMETERS, NTSTATUS,
    STATUS_INVALID_PARAMETER, STATUS_SUCCESS,
};
use vsflow_core::flow::TableConfig;
use vsflow_core::port::shards;
use vsflow_core::{Port, PortConfig, PortIdentity};

use super::{driver, identity};
use crate::driver::Driver;
use crate::error::CalloutError;
use crate::percpu::Counter;
use crate::ports::{PortKey, PortRef, PortSlot, PortState, ShardSlot, Sharding};
use crate::services::{KernelServices, LogLevel};
use crate::sync::SpinMutex;

/// Most elements vsflow reads from an OS-provided port or NIC array.
const MAX_ARRAY_ELEMENTS: u32 = 1 << 16;

/// `NDIS_SWITCH_NIC_TYPE` values (ntddndis.h).
const NIC_TYPE_SYNTHETIC: u32 = 1;
const NIC_TYPE_EMULATED: u32 = 2;
/// `NDIS_SWITCH_NIC_STATE` values (ntddndis.h).
const NIC_STATE_CREATED: u32 = 1;
const NIC_STATE_CONNECTED: u32 = 2;
const NIC_STATE_DISCONNECTED: u32 = 3;

/// Bytes of an `NDIS_SWITCH_PORT_PARAMETERS` vsflow reads (revision 1, through `PortState`).
const PORT_FIELDS: usize = offset_of!(NDIS_SWITCH_PORT_PARAMETERS, PortState) + 4;
/// Bytes of an `NDIS_SWITCH_NIC_PARAMETERS` vsflow reads (revision 1 fields, through
/// `NicState`): an array of revision-1 elements is accepted even though the structure
/// vsflow declares is revision 2.
const NIC_FIELDS: usize = offset_of!(NDIS_SWITCH_NIC_PARAMETERS, NicState) + 4;

/// Calls `f` on every element of an NDIS switch array (ports or NICs), copying the first
/// `min(ElementSize, size_of::<T>())` bytes of each into a zeroed `T`. Elements smaller than
/// `needed` bytes (the fields vsflow reads) make the whole array unreadable: `false`.
///
/// # Safety
/// `array` is null or a valid array WFP passed, whose elements follow at `FirstElementOffset`
/// with stride `ElementSize`; `T` is plain data (all zeroes valid).
unsafe fn for_each_element<T: Copy>(
    array: *const NDIS_SWITCH_PORT_ARRAY,
    needed: usize,
    mut f: impl FnMut(&T),
) -> bool {
    // SAFETY: caller's contract.
    let Some(a) = (unsafe { array.as_ref() }) else { return true };
    let stride = a.ElementSize as usize;
    if stride < needed || a.NumElements > MAX_ARRAY_ELEMENTS {
        return false;
    }
    let copy = stride.min(size_of::<T>());
    for i in 0..a.NumElements as usize {
        let offset = usize::from(a.FirstElementOffset) + i * stride;
        // SAFETY: inside the array by the caller's contract.
        let p = unsafe { array.cast::<u8>().add(offset) };
        let mut element = core::mem::MaybeUninit::<T>::zeroed();
        // SAFETY: `copy` bytes are readable at `p` (one element) and fit in `element`.
        unsafe { ptr::copy_nonoverlapping(p, element.as_mut_ptr().cast::<u8>(), copy) };
        // SAFETY: `T` is plain data: zeroes plus the copied prefix are a valid `T`.
        let element = unsafe { element.assume_init() };
        f(&element);
    }
    true
}

/// Whether vsflow tracks a port of this type: every VM port (synthetic, emulated, and
/// generic: a port created with the older WMI API, judged once a VM NIC is on it); never the
/// external or internal port, nor a validation port.
const fn tracked_port(p: &NDIS_SWITCH_PORT_PARAMETERS) -> bool {
    p.IsValidationPort == 0
        && matches!(
            p.PortType,
            sys::NdisSwitchPortTypeSynthetic
                | sys::NdisSwitchPortTypeEmulated
                | sys::NdisSwitchPortTypeGeneric
        )
}

impl<S: KernelServices> Driver<S> {
    pub(crate) fn port_config(&self) -> PortConfig {
        PortConfig {
            table: TableConfig {
                max_flows: self.config.flows_per_port,
                hash_seed: self.services.hash_seed(),
                budget: Some(self.budget.handle()),
                ..TableConfig::default()
            },
            initial_mode: self.config.default_mode,
        }
    }

    /// A new, empty port with this driver's table bound, default mode and pickup windows
    /// (every port gets the configured [`crate::DriverConfig::pickup_config`]).
    pub(crate) fn new_port(&self, identity: &PortIdentity) -> Result<Port, vsflow_core::Error> {
        let mut port = Port::try_new(*identity, self.port_config())?;
        port.set_pickup_config(self.config.pickup_config());
        Ok(port)
    }

    /// A new port's processor shards (issue 18 §2; `crate::ports`): one per processor up to
    /// `shards::MAX_SHARDS`, each table with the port's bound (one processor may judge all of
    /// the port's connections; the port's total is kept by the slow path) and no slot reserved.
    /// None on one processor, or if memory is short: the port then keeps one lock, as it works
    /// unsplit anyway.
    pub(crate) fn new_sharding(&self, identity: &PortIdentity) -> Sharding<S::Lock> {
        let config = self.port_config();
        let n = (self.services.processor_count() as usize).clamp(1, shards::MAX_SHARDS);
        let mut list = alloc::vec::Vec::new();
        if n > 1 && list.try_reserve_exact(n).is_ok() {
            let table = TableConfig { initial_capacity: 0, ..config.table };
            for _ in 0..n {
                let Ok(port) = Port::try_new(*identity, PortConfig { table, ..config }) else {
                    list.clear();
                    break;
                };
                list.push(ShardSlot::new(SpinMutex::new(self.services.new_lock(), port)));
            }
        }
        Sharding { shards: list, full: config.table }
    }

    /// Switch created or deleted (its initial ports and NICs are reported separately).
    pub fn on_switch(&self, event: u32, switch: &NDIS_SWITCH_PARAMETERS) -> NTSTATUS {
        let Some(name) = identity(&switch.SwitchName) else { return STATUS_INVALID_PARAMETER };
        match event {
            sys::FWPS_VSWITCH_EVENT_VSWITCH_CREATE => {
                match self.ports.update(|m| m.switch_id_or_insert(&name)) {
                    Ok(_) => STATUS_SUCCESS,
                    Err(e) => e.to_ntstatus(),
                }
            }
            sys::FWPS_VSWITCH_EVENT_VSWITCH_DELETE => {
                let id = self.read_ports(|m| m.switch_id(name.as_utf16())).flatten();
                if let Some(id) = id {
                    self.cancel_switch(id);
                    match self.ports.update(|m| m.remove_switch(id)) {
                        // Freed here, after the map's locks are released.
                        Ok(gone) => gone.into_iter().for_each(|slot| self.retire(slot)),
                        Err(e) => self.log(LogLevel::Error, format_args!("switch delete: {e}")),
                    }
                }
                STATUS_SUCCESS
            }
            _ => STATUS_SUCCESS,
        }
    }

    /// Creates a port, idempotently: the same `PortId` with the same `PortName` keeps its
    /// state (a replayed `VSWITCH_CREATE` after a pause, or a duplicate notification); a
    /// `PortId` now naming another port is a new port (the old one's pended restores are
    /// cancelled).
    fn add_port(&self, switch: u32, p: &NDIS_SWITCH_PORT_PARAMETERS) -> Result<(), CalloutError> {
        if !tracked_port(p) {
            return Ok(());
        }
        let name = identity(&p.PortName).ok_or(CalloutError::Status(STATUS_INVALID_PARAMETER))?;
        let key = PortKey { switch, port: p.PortId };
        let restoring = p.Flags & sys::NDIS_SWITCH_PORT_PARAMETERS_FLAG_RESTORING_PORT != 0;
        let existing = self.read_ports(|m| m.port(key).map(|s| s.identity)).flatten();
        match existing {
            Some(old) if old == name => return Ok(()),
            Some(_) => self.cancel_port(key),
            None => {}
        }
        // Allocate outside every lock: a port's table reserves its initial slots.
        let mut port = self.new_port(&name)?;
        // The restore window until the restore is applied or cancelled: it enforces, but
        // carried connections' mid-stream segments pass (picked up tentatively) so they are not
        // blocked meanwhile; flows seen in the window merge with the restored ones
        // (vsflow-core's restore API).
        if restoring {
            port.begin_restore();
        }
        let state = PortState {
            port,
            port_type: p.PortType,
            nic: None,
            nic_connected: false,
            vm_nic: false,
            save_buffer: crate::save_buffer::SaveBuffer::new(),
            encoder: vsflow_core::codec::Encoder::new(),
            last_save: vsflow_core::Tick::MAX,
            last_listed: vsflow_core::Tick::MAX,
            last_restore: None,
            window_deadline: if restoring {
                self.now().saturating_add(vsflow_core::time::secs(u64::from(
                    self.config.restore_window_secs,
                )))
            } else {
                vsflow_core::Tick::MAX
            },
            classify_calls: 0,
            spread: 0,
        };
        let sharding = self.new_sharding(&name);
        // A new instance, even under the key and name of a port deleted a moment ago: a restore
        // received for that port is not this one's (`vswitch::restore`).
        let instance = self.port_instances.fetch_add(1, core::sync::atomic::Ordering::Relaxed) + 1;
        let slot = PortRef::try_new(PortSlot::new(
            key,
            &name,
            instance,
            SpinMutex::new(self.services.new_lock(), state),
            sharding,
        ))?;
        let replaced = self.ports.update(move |m| m.insert_port(slot).map_err(|(e, _slot)| e))?;
        // A port this one replaced is freed here, after the map's locks are released.
        if let Some(slot) = replaced {
            self.retire(slot);
        }
        Ok(())
    }

    /// Drops the map's reference to a port taken out of the map (the port is freed now, or by
    /// whoever holds the last reference), keeping its classify count in the driver's: no
    /// classify can reach it any more (classify runs under the map lock it was removed under).
    fn retire(&self, slot: PortRef<S::Lock>) {
        let calls = slot.classify_calls(&mut slot.state.lock(), true);
        self.counters.add(self.services.current_processor(), Counter::ClassifyCalls, calls);
        drop(slot);
    }

    /// Port created or deleted.
    pub fn on_port(
        &self,
        event: u32,
        switch: &NDIS_SWITCH_PARAMETERS,
        port: &NDIS_SWITCH_PORT_PARAMETERS,
    ) -> NTSTATUS {
        let Some(name) = identity(&switch.SwitchName) else { return STATUS_INVALID_PARAMETER };
        match event {
            sys::FWPS_VSWITCH_EVENT_PORT_CREATE => {
                let id = match self.ports.update(|m| m.switch_id_or_insert(&name)) {
                    Ok(id) => id,
                    Err(e) => return e.to_ntstatus(),
                };
                match self.add_port(id, port) {
                    Ok(()) => STATUS_SUCCESS,
                    Err(e) => {
                        self.log(LogLevel::Error, format_args!("port {} create: {e}", port.PortId));
                        e.to_ntstatus()
                    }
                }
            }
            sys::FWPS_VSWITCH_EVENT_PORT_DELETE => {
                let id = self.read_ports(|m| m.switch_id(name.as_utf16())).flatten();
                if let Some(id) = id {
                    let key = PortKey { switch: id, port: port.PortId };
                    self.cancel_port(key);
                    // Out of the map under every processor's lock (no reader inside), then its
                    // table and save buffer are freed here.
                    match self.ports.update(|m| Ok(m.remove_port(key))) {
                        Ok(gone) => gone.into_iter().for_each(|slot| self.retire(slot)),
                        Err(e) => {
                            self.log(
                                LogLevel::Error,
                                format_args!("port {} delete: {e}", port.PortId),
                            );
                        }
                    }
                }
                STATUS_SUCCESS
            }
            _ => STATUS_SUCCESS,
        }
    }

    fn nic_event(&self, switch: u32, event: u32, nic: &NDIS_SWITCH_NIC_PARAMETERS) {
        let vm_nic = matches!(nic.NicType, NIC_TYPE_SYNTHETIC | NIC_TYPE_EMULATED);
        let nic_name = identity(&nic.NicName).filter(|n| !n.as_utf16().is_empty());
        let key = PortKey { switch, port: nic.PortId };
        if let Some(slot) = self.port_ref(|_| Some(key)) {
            // The port whole: whether it is judged (a VM NIC on it) changes here.
            let mut e = slot.lock_whole(self.now());
            match event {
                sys::FWPS_VSWITCH_EVENT_INTERFACE_CREATE => {
                    e.nic = Some(nic.NicIndex);
                    e.vm_nic = vm_nic;
                    // The NIC's durable name travels in the runtime state (format 1.1).
                    e.port.set_nic_identity(nic_name);
                }
                sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT => {
                    e.nic = Some(nic.NicIndex);
                    e.vm_nic = vm_nic;
                    e.nic_connected = true;
                    if nic_name.is_some() {
                        e.port.set_nic_identity(nic_name);
                    }
                }
                sys::FWPS_VSWITCH_EVENT_INTERFACE_DISCONNECT => e.nic_connected = false,
                sys::FWPS_VSWITCH_EVENT_INTERFACE_DELETE => {
                    e.nic = None;
                    e.vm_nic = false;
                    e.nic_connected = false;
                }
                _ => {}
            }
        }
    }

    /// A NIC of the `VSWITCH_CREATE` array, applied by its `NicState`.
    fn nic_from_array(&self, switch: u32, nic: &NDIS_SWITCH_NIC_PARAMETERS) {
        match nic.NicState {
            NIC_STATE_CONNECTED => {
                self.nic_event(switch, sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT, nic);
            }
            NIC_STATE_CREATED | NIC_STATE_DISCONNECTED => {
                self.nic_event(switch, sys::FWPS_VSWITCH_EVENT_INTERFACE_CREATE, nic);
                self.nic_event(switch, sys::FWPS_VSWITCH_EVENT_INTERFACE_DISCONNECT, nic);
            }
            // Unknown or deleted: not on the port.
            _ => {}
        }
    }

    /// NIC created, connected, disconnected or deleted.
    pub fn on_interface(
        &self,
        event: u32,
        switch: &NDIS_SWITCH_PARAMETERS,
        nic: &NDIS_SWITCH_NIC_PARAMETERS,
    ) -> NTSTATUS {
        let Some(name) = identity(&switch.SwitchName) else { return STATUS_INVALID_PARAMETER };
        let id = self.read_ports(|ix| ix.switch_id(name.as_utf16())).flatten();
        if let Some(id) = id {
            self.nic_event(id, event, nic);
        }
        STATUS_SUCCESS
    }

    /// Filter-engine reorder: record the position; never pends.
    pub fn on_reorder(&self, in_required_position: bool) -> NTSTATUS {
        self.count(Counter::ReorderEvents);
        self.reorder_position.store(if in_required_position { 2 } else { 1 }, Ordering::Relaxed);
        if !in_required_position {
            self.log(
                LogLevel::Warning,
                format_args!(
                    "WFP filter engine is not in its required position in the extension stack"
                ),
            );
        }
        STATUS_SUCCESS
    }
}

/// `vSwitchLifetimeNotifyFn`.
///
/// # Safety
/// Called by WFP with valid (or null optional) pointers.
pub unsafe extern "system" fn lifetime_fn<S: KernelServices>(
    notify_context: *mut c_void,
    event_type: u32,
    v_switch: *const NDIS_SWITCH_PARAMETERS,
    ports: *const NDIS_SWITCH_PORT_ARRAY,
    nics: *const NDIS_SWITCH_NIC_ARRAY,
) -> NTSTATUS {
    // SAFETY: WFP passes the subscription's context.
    let Some(d) = (unsafe { driver::<S>(notify_context) }) else { return STATUS_SUCCESS };
    let Some(_in_flight) = d.enter_callback() else { return STATUS_SUCCESS };
    // SAFETY: WFP's pointer, valid for the call.
    let Some(sw) = (unsafe { v_switch.as_ref() }) else { return STATUS_INVALID_PARAMETER };
    let mut status = d.on_switch(event_type, sw);
    if event_type == sys::FWPS_VSWITCH_EVENT_VSWITCH_CREATE && fwps_sys::nt_success(status) {
        // Also a replay after a pause/restart, with the ports and NICs that exist: port
        // create is idempotent, NICs are applied by their state.
        // SAFETY: WFP's arrays, valid for the call; the parameters are plain data.
        let ports_ok = unsafe {
            for_each_element::<NDIS_SWITCH_PORT_PARAMETERS>(ports, PORT_FIELDS, |p| {
                if fwps_sys::nt_success(status) {
                    status = d.on_port(sys::FWPS_VSWITCH_EVENT_PORT_CREATE, sw, p);
                }
            })
        };
        let switch = identity(&sw.SwitchName)
            .and_then(|n| d.read_ports(|ix| ix.switch_id(n.as_utf16())).flatten());
        // SAFETY: as above.
        let nics_ok = unsafe {
            for_each_element::<NDIS_SWITCH_NIC_PARAMETERS>(nics, NIC_FIELDS, |n| {
                if let Some(id) = switch {
                    d.nic_from_array(id, n);
                }
            })
        };
        if !(ports_ok && nics_ok) {
            d.log(LogLevel::Error, format_args!("switch create: port or NIC array elements smaller than their revision-1 fields; ignored"));
        }
    }
    status
}

/// `vSwitchPortEventNotifyFn`.
///
/// # Safety
/// Called by WFP with valid pointers.
pub unsafe extern "system" fn port_fn<S: KernelServices>(
    notify_context: *mut c_void,
    _completion_context: *mut c_void,
    event_type: u32,
    v_switch: *const NDIS_SWITCH_PARAMETERS,
    port: *const NDIS_SWITCH_PORT_PARAMETERS,
) -> NTSTATUS {
    // SAFETY: WFP passes the subscription's context.
    let Some(d) = (unsafe { driver::<S>(notify_context) }) else { return STATUS_SUCCESS };
    let Some(_in_flight) = d.enter_callback() else { return STATUS_SUCCESS };
    // SAFETY: WFP's pointers, valid for the call.
    let (Some(sw), Some(p)) = (unsafe { v_switch.as_ref() }, unsafe { port.as_ref() }) else {
        return STATUS_INVALID_PARAMETER;
    };
    d.on_port(event_type, sw, p)
}

/// `vSwitchInterfaceEventNotifyFn`.
///
/// # Safety
/// Called by WFP with valid pointers.
pub unsafe extern "system" fn interface_fn<S: KernelServices>(
    notify_context: *mut c_void,
    _completion_context: *mut c_void,
    event_type: u32,
    v_switch: *const NDIS_SWITCH_PARAMETERS,
    nic: *const NDIS_SWITCH_NIC_PARAMETERS,
) -> NTSTATUS {
    // SAFETY: WFP passes the subscription's context.
    let Some(d) = (unsafe { driver::<S>(notify_context) }) else { return STATUS_SUCCESS };
    let Some(_in_flight) = d.enter_callback() else { return STATUS_SUCCESS };
    // SAFETY: WFP's pointers, valid for the call.
    let (Some(sw), Some(n)) = (unsafe { v_switch.as_ref() }, unsafe { nic.as_ref() }) else {
        return STATUS_INVALID_PARAMETER;
    };
    d.on_interface(event_type, sw, n)
}

/// `vSwitchFilterEngineReorderNotifyRn`.
///
/// # Safety
/// Called by WFP.
pub unsafe extern "system" fn reorder_fn<S: KernelServices>(
    notify_context: *mut c_void,
    _completion_context: *mut c_void,
    is_in_required_position: BOOLEAN,
    _extensions: *const NDIS_ENUM_FILTERS,
) -> NTSTATUS {
    // SAFETY: WFP passes the subscription's context.
    let Some(d) = (unsafe { driver::<S>(notify_context) }) else { return STATUS_SUCCESS };
    let Some(_in_flight) = d.enter_callback() else { return STATUS_SUCCESS };
    d.on_reorder(is_in_required_position != 0)
}

/// `vSwitchPolicyEventNotifyFn`: vsflow keeps no switch port policy; it accepts every change.
///
/// # Safety
/// Called by WFP.
pub unsafe extern "system" fn policy_fn<S: KernelServices>(
    _notify_context: *mut c_void,
    _completion_context: *mut c_void,
    _event_type: u32,
    _v_switch: *const NDIS_SWITCH_PARAMETERS,
    _property: *const NDIS_SWITCH_PORT_PROPERTY_PARAMETERS,
    _property_delete: *const NDIS_SWITCH_PORT_PROPERTY_DELETE_PARAMETERS,
) -> NTSTATUS {
    STATUS_SUCCESS
}
