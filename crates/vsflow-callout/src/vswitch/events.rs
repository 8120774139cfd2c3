//! Switch lifetime, port, interface, filter-engine reorder and policy events.

use core::ffi::c_void;
use core::mem::size_of;
use core::ptr;

use fwps_sys as sys;
use fwps_sys::{
    BOOLEAN, NDIS_ENUM_FILTERS, NDIS_SWITCH_NIC_ARRAY, NDIS_SWITCH_NIC_PARAMETERS,
    NDIS_SWITCH_PARAMETERS, NDIS_SWITCH_PORT_ARRAY, NDIS_SWITCH_PORT_PARAMETERS,
    NDIS_SWITCH_PORT_PROPERTY_DELETE_PARAMETERS, NDIS_SWITCH_PORT_PROPERTY_PARAMETERS, NTSTATUS,
    STATUS_INVALID_PARAMETER, STATUS_SUCCESS,
};
use vsflow_core::flow::TableConfig;
use vsflow_core::{Port, PortConfig};

use super::{driver, identity};
use crate::driver::Driver;
use crate::error::CalloutError;
use crate::services::{KernelServices, LogLevel};
use crate::state::{PortEntry, PortKey};

/// Most elements vsflow reads from an OS-provided port or NIC array.
const MAX_ARRAY_ELEMENTS: u32 = 1 << 16;

/// Calls `f` on every element of an NDIS switch array (ports or NICs).
///
/// # Safety
/// `array` is null or a valid array WFP passed, whose elements follow at `FirstElementOffset`
/// with stride `ElementSize`.
unsafe fn for_each_element<T>(array: *const NDIS_SWITCH_PORT_ARRAY, mut f: impl FnMut(&T)) {
    // SAFETY: caller's contract.
    let Some(a) = (unsafe { array.as_ref() }) else { return };
    if (a.ElementSize as usize) < size_of::<T>() || a.NumElements > MAX_ARRAY_ELEMENTS {
        return;
    }
    for i in 0..a.NumElements as usize {
        let offset = usize::from(a.FirstElementOffset) + i * a.ElementSize as usize;
        // SAFETY: inside the array by the caller's contract.
        let p = unsafe { array.cast::<u8>().add(offset) }.cast::<T>();
        // SAFETY: `p` points to a full element (ElementSize >= size_of::<T>()).
        let element = unsafe { ptr::read_unaligned(p) };
        f(&element);
    }
}

impl<S: KernelServices> Driver<S> {
    fn port_config(&self) -> PortConfig {
        PortConfig {
            table: TableConfig {
                max_flows: self.config.flows_per_port,
                hash_seed: self.services.hash_seed(),
                ..TableConfig::default()
            },
            initial_mode: self.config.default_mode,
        }
    }

    /// Switch created or deleted (its initial ports and NICs are reported separately).
    pub fn on_switch(&self, event: u32, switch: &NDIS_SWITCH_PARAMETERS) -> NTSTATUS {
        let Some(name) = identity(&switch.SwitchName) else { return STATUS_INVALID_PARAMETER };
        match event {
            sys::FWPS_VSWITCH_EVENT_VSWITCH_CREATE => {
                match self.state.lock().switch_id_or_insert(&name) {
                    Ok(_) => STATUS_SUCCESS,
                    Err(e) => e.to_ntstatus(),
                }
            }
            sys::FWPS_VSWITCH_EVENT_VSWITCH_DELETE => {
                let id = self.state.lock().switch_id(name.as_utf16());
                if let Some(id) = id {
                    self.cancel_pending(|k| k.switch == id);
                    self.state.lock().remove_switch(id);
                }
                STATUS_SUCCESS
            }
            _ => STATUS_SUCCESS,
        }
    }

    fn add_port(&self, switch: u32, p: &NDIS_SWITCH_PORT_PARAMETERS) -> Result<(), CalloutError> {
        // Only VM ports carry VM flows. The external port (the physical NIC) and internal port
        // (the host's vNIC) are never tracked, so vsflow never blocks traffic on them.
        if !matches!(p.PortType, sys::NdisSwitchPortTypeSynthetic | sys::NdisSwitchPortTypeEmulated)
        {
            return Ok(());
        }
        let name = identity(&p.PortName).ok_or(CalloutError::Status(STATUS_INVALID_PARAMETER))?;
        let key = PortKey { switch, port: p.PortId };
        // Allocate outside the lock: a port's table reserves its initial slots.
        let port = Port::try_new(name, self.port_config())?;
        let entry = PortEntry {
            port,
            port_type: p.PortType,
            nic: None,
            nic_connected: false,
            save_buffer: alloc::vec::Vec::new(),
            restoring: p.Flags & sys::NDIS_SWITCH_PORT_PARAMETERS_FLAG_RESTORING_PORT != 0,
        };
        let mut st = self.state.lock();
        st.ports.try_reserve(1)?;
        st.ports.insert(key, entry);
        Ok(())
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
                let id = match self.state.lock().switch_id_or_insert(&name) {
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
                let id = self.state.lock().switch_id(name.as_utf16());
                if let Some(id) = id {
                    let key = PortKey { switch: id, port: port.PortId };
                    self.cancel_pending(|k| *k == key);
                    // Frees the port's table and its save buffer.
                    self.state.lock().ports.remove(&key);
                }
                STATUS_SUCCESS
            }
            _ => STATUS_SUCCESS,
        }
    }

    fn nic_event(&self, switch: u32, event: u32, nic: &NDIS_SWITCH_NIC_PARAMETERS) {
        let mut st = self.state.lock();
        if let Some(e) = st.ports.get_mut(&PortKey { switch, port: nic.PortId }) {
            match event {
                sys::FWPS_VSWITCH_EVENT_INTERFACE_CREATE => e.nic = Some(nic.NicIndex),
                sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT => {
                    e.nic = Some(nic.NicIndex);
                    e.nic_connected = true;
                }
                sys::FWPS_VSWITCH_EVENT_INTERFACE_DISCONNECT => e.nic_connected = false,
                sys::FWPS_VSWITCH_EVENT_INTERFACE_DELETE => {
                    e.nic = None;
                    e.nic_connected = false;
                }
                _ => {}
            }
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
        let id = self.state.lock().switch_id(name.as_utf16());
        if let Some(id) = id {
            self.nic_event(id, event, nic);
        }
        STATUS_SUCCESS
    }

    /// Filter-engine reorder: record the position; never pends.
    pub fn on_reorder(&self, in_required_position: bool) -> NTSTATUS {
        let mut st = self.state.lock();
        st.stats.reorder_events += 1;
        st.reorder_in_position = Some(in_required_position);
        drop(st);
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
    // SAFETY: WFP's pointer, valid for the call.
    let Some(sw) = (unsafe { v_switch.as_ref() }) else { return STATUS_INVALID_PARAMETER };
    let mut status = d.on_switch(event_type, sw);
    if event_type == sys::FWPS_VSWITCH_EVENT_VSWITCH_CREATE && fwps_sys::nt_success(status) {
        // SAFETY: WFP's arrays, valid for the call.
        unsafe {
            for_each_element::<NDIS_SWITCH_PORT_PARAMETERS>(ports, |p| {
                if fwps_sys::nt_success(status) {
                    status = d.on_port(sys::FWPS_VSWITCH_EVENT_PORT_CREATE, sw, p);
                }
            });
        }
        // SAFETY: as above.
        unsafe {
            for_each_element::<NDIS_SWITCH_NIC_PARAMETERS>(nics, |n| {
                let _ = d.on_interface(sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT, sw, n);
            });
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
