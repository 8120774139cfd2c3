//! The control device `\Device\vsflow` (`\\.\vsflow`), for SYSTEM and Administrators only,
//! with a sequential queue for IOCTLs handled by `vsflow_callout::control`.
//!
//! The sequence is the non-PnP one of Microsoft's samples (NONPNP): `WdfControlDeviceInitAllocate`
//! with the SDDL, `WdfDeviceInitAssignName`, `WdfDeviceCreate`, `WdfDeviceCreateSymbolicLink`,
//! the default queue (which KMDF only accepts before the next step), then
//! `WdfControlFinishInitializing` at once: until it is called the I/O manager does not open the
//! device. IOCTLs that arrive before the driver has started are answered
//! `STATUS_INVALID_DEVICE_STATE`.

use alloc::vec::Vec;
use core::ffi::c_void;
use core::ptr;
use vsflow_callout::wide::ascii as wide;

use wdk_sys::{
    _WDF_EXECUTION_LEVEL, _WDF_IO_QUEUE_DISPATCH_TYPE, _WDF_TRI_STATE, NTSTATUS, PVOID,
    STATUS_INSUFFICIENT_RESOURCES, ULONG, WDF_IO_QUEUE_CONFIG, WDF_NO_HANDLE,
    WDF_NO_OBJECT_ATTRIBUTES, WDF_OBJECT_ATTRIBUTES, WDFDEVICE, WDFDRIVER, WDFOBJECT, WDFQUEUE,
    WDFREQUEST, call_unsafe_wdf_function_binding,
};

use crate::entry::{driver, unicode};
use crate::wdf::{object_attributes, size_of_u32};

/// `SDDL_DEVOBJ_SYS_ALL_ADM_ALL`: SYSTEM and Administrators, full access; nobody else.
static SDDL: [u16; 27] = wide(b"D:P(A;;GA;;;SY)(A;;GA;;;BA)");
static DEVICE_NAME: [u16; 14] = wide(b"\\Device\\vsflow");
static LINK_NAME: [u16; 18] = wide(b"\\DosDevices\\vsflow");

const QUEUE_CONFIG_SIZE: ULONG = size_of_u32::<WDF_IO_QUEUE_CONFIG>();

/// Creates the control device, its symbolic link and its queue, and finishes its
/// initialization.
///
/// # Errors
/// The failing status; nothing is left behind.
///
/// # Safety
/// `PASSIVE_LEVEL`, from `DriverEntry`, with the driver's WDF handle.
pub unsafe fn create(driver: WDFDRIVER) -> Result<WDFDEVICE, NTSTATUS> {
    let sddl = unicode(&SDDL);
    // SAFETY: valid driver handle and SDDL string.
    let mut init = unsafe {
        call_unsafe_wdf_function_binding!(WdfControlDeviceInitAllocate, driver, &raw const sddl)
    };
    if init.is_null() {
        return Err(STATUS_INSUFFICIENT_RESOURCES);
    }
    let name = unicode(&DEVICE_NAME);
    // SAFETY: the init structure allocated above.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(WdfDeviceInitAssignName, init, &raw const name)
    };
    if !wdk::nt_success(status) {
        // SAFETY: not consumed by a device create.
        unsafe { call_unsafe_wdf_function_binding!(WdfDeviceInitFree, init) };
        return Err(status);
    }
    let mut device: WDFDEVICE = WDF_NO_HANDLE.cast();
    // SAFETY: valid init structure and out-pointer.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceCreate,
            &raw mut init,
            WDF_NO_OBJECT_ATTRIBUTES,
            &raw mut device
        )
    };
    if !wdk::nt_success(status) {
        // SAFETY: a failed create leaves the init structure to the caller.
        unsafe { call_unsafe_wdf_function_binding!(WdfDeviceInitFree, init) };
        return Err(status);
    }
    let link = unicode(&LINK_NAME);
    // SAFETY: the device created above.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(WdfDeviceCreateSymbolicLink, device, &raw const link)
    };
    if !wdk::nt_success(status) {
        // SAFETY: the device created above, deleted once.
        unsafe { call_unsafe_wdf_function_binding!(WdfObjectDelete, device as WDFOBJECT) };
        return Err(status);
    }
    let mut config = WDF_IO_QUEUE_CONFIG {
        Size: QUEUE_CONFIG_SIZE,
        PowerManaged: _WDF_TRI_STATE::WdfFalse,
        DefaultQueue: 1,
        DispatchType: _WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchSequential,
        EvtIoDeviceControl: Some(evt_io_device_control),
        ..WDF_IO_QUEUE_CONFIG::default()
    };
    // Requests at PASSIVE_LEVEL: `EvtIoDeviceControl` is otherwise documented for
    // IRQL <= DISPATCH_LEVEL.
    let mut attributes = WDF_OBJECT_ATTRIBUTES {
        ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelPassive,
        ..object_attributes()
    };
    let mut queue: WDFQUEUE = WDF_NO_HANDLE.cast();
    // SAFETY: the device created above; valid configuration, attributes and out-pointer.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfIoQueueCreate,
            device,
            &raw mut config,
            &raw mut attributes,
            &raw mut queue
        )
    };
    if !wdk::nt_success(status) {
        // SAFETY: as above.
        unsafe { call_unsafe_wdf_function_binding!(WdfObjectDelete, device as WDFOBJECT) };
        return Err(status);
    }
    // SAFETY: the device created above, fully set up (name, link, default queue).
    unsafe { call_unsafe_wdf_function_binding!(WdfControlFinishInitializing, device) };
    Ok(device)
}

/// `EvtIoDeviceControl` of the sequential queue (`PASSIVE_LEVEL`: the queue's execution level).
extern "C" fn evt_io_device_control(
    _queue: WDFQUEUE,
    request: WDFREQUEST,
    output_len: usize,
    input_len: usize,
    code: ULONG,
) {
    let (status, information) = handle(request, output_len, input_len, code);
    let information = information as u64;
    // SAFETY: the request this callback owns, completed once.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestCompleteWithInformation,
            request,
            status,
            information
        );
    }
}

fn handle(
    request: WDFREQUEST,
    output_len: usize,
    input_len: usize,
    code: ULONG,
) -> (NTSTATUS, usize) {
    let Some(d) = driver() else { return (wdk_sys::STATUS_INVALID_DEVICE_STATE, 0) };
    // METHOD_BUFFERED: input and output share one system buffer, so the input is copied out
    // before the output is written.
    let mut input: Vec<u8> = Vec::new();
    if input_len > 0 {
        let mut buffer: PVOID = ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: the request's buffer, valid until completion; valid out-pointers.
        let status = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRequestRetrieveInputBuffer,
                request,
                0,
                &raw mut buffer,
                &raw mut len
            )
        };
        if !wdk::nt_success(status) || buffer.is_null() {
            return (status, 0);
        }
        if input.try_reserve_exact(len).is_err() {
            return (STATUS_INSUFFICIENT_RESOURCES, 0);
        }
        // SAFETY: WDF returned `len` readable bytes at `buffer`.
        input.extend_from_slice(unsafe { core::slice::from_raw_parts(buffer.cast::<u8>(), len) });
    }
    let mut out_ptr: *mut c_void = ptr::null_mut();
    let mut out_len = 0usize;
    if output_len > 0 {
        // SAFETY: as above.
        let status = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRequestRetrieveOutputBuffer,
                request,
                0,
                &raw mut out_ptr,
                &raw mut out_len
            )
        };
        if !wdk::nt_success(status) {
            out_ptr = ptr::null_mut();
            out_len = 0;
        }
    }
    let output: &mut [u8] = if out_ptr.is_null() {
        &mut []
    } else {
        // SAFETY: WDF returned `out_len` writable bytes; the input was copied out first, so
        // nothing else refers to the system buffer while this slice lives.
        unsafe { core::slice::from_raw_parts_mut(out_ptr.cast::<u8>(), out_len) }
    };
    let outcome = d.handle_ioctl(code, &input, output);
    (outcome.status, outcome.information)
}
