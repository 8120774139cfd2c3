//! ETW as vsflow.sys reaches it: the `tracelogging` crate's kernel-mode calls (`EtwRegister`,
//! `EtwSetInformation`, `EtwWriteTransfer`, `EtwUnregister`), decoded into the KMDF double's
//! ETW session (`wdf_sim::etw`), which applies its rules (a provider registered before use and
//! unregistered before unload).
//!
//! What the harness plays: one trace session listening to every provider at every level and
//! keyword, started before the driver loads (as an autologger would be, docs/TRACING.md), so
//! `EtwRegister` calls the provider's enable callback with `EVENT_CONTROL_CODE_ENABLE_PROVIDER`
//! before it returns; without that the crate writes nothing (`write_event!` checks the enable
//! state the callback sets). The provider's name is in its traits
//! (`EtwSetInformation(EventProviderSetTraits)`), each event's name, fields and field types in
//! its TraceLogging metadata (TraceLoggingProvider.h's layout: size, tags, name, then per field
//! its name, `InType` and optional `OutType`), its level and keyword in its descriptor. Field
//! values are read from the data descriptors in order. A metadata layout or field type the
//! decoder does not know is an error the test sees, never a dropped event.

#![allow(
    clippy::missing_safety_doc,
    reason = "each shim's contract is the Windows function's it stands for"
)]
#![allow(
    clippy::must_use_candidate,
    reason = "shims are called by the image, which ignores attributes"
)]
#![allow(non_snake_case, reason = "the kernel's names")]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};

use fwps_sys::GUID;
use wdf_sim::etw::{EtwEvent, EtwValue};
use wdk_sys::NTSTATUS;

const STATUS_SUCCESS: NTSTATUS = 0;
const STATUS_INVALID_PARAMETER: NTSTATUS = 0xC000_000D_u32.cast_signed();
const STATUS_INVALID_HANDLE: NTSTATUS = 0xC000_0008_u32.cast_signed();
const STATUS_NOT_SUPPORTED: NTSTATUS = 0xC000_00BB_u32.cast_signed();
/// `EventProviderSetTraits` (`EVENT_INFO_CLASS`, evntprov.h).
const EVENT_PROVIDER_SET_TRAITS: u32 = 2;
/// `EVENT_CONTROL_CODE_ENABLE_PROVIDER`.
const ENABLE_PROVIDER: u32 = 1;
/// `TRACE_LEVEL_VERBOSE`: the session listens at every level.
const LEVEL_VERBOSE: u8 = 5;
/// `EVENT_DATA_DESCRIPTOR_TYPE_EVENT_METADATA`.
const DESCRIPTOR_EVENT_METADATA: u32 = 1;
/// `EVENT_DATA_DESCRIPTOR_TYPE_PROVIDER_METADATA`.
const DESCRIPTOR_PROVIDER_METADATA: u32 = 2;

/// `EVENT_DESCRIPTOR` (evntprov.h).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventDescriptor {
    /// `Id`.
    pub Id: u16,
    /// `Version`.
    pub Version: u8,
    /// `Channel`.
    pub Channel: u8,
    /// `Level`.
    pub Level: u8,
    /// `Opcode`.
    pub Opcode: u8,
    /// `Task`.
    pub Task: u16,
    /// `Keyword`.
    pub Keyword: u64,
}

/// `EVENT_DATA_DESCRIPTOR` (evntprov.h).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventDataDescriptor {
    /// `Ptr`.
    pub Ptr: u64,
    /// `Size`.
    pub Size: u32,
    /// `Reserved`: the descriptor's type (`EVENT_DATA_DESCRIPTOR_TYPE_*`).
    pub Reserved: u32,
}

const _: () = assert!(size_of::<EventDescriptor>() == 16 && size_of::<EventDataDescriptor>() == 16);

/// The enable callback `EtwRegister` takes (`PETWENABLECALLBACK`), as the image implements it.
type EnableCallback =
    unsafe extern "win64" fn(*const GUID, u32, u8, u64, u64, *const core::ffi::c_void, usize);

#[derive(Debug)]
struct Registration {
    guid: [u8; 16],
    name: &'static str,
}

#[derive(Debug, Default)]
struct State {
    handles: BTreeMap<u64, Registration>,
    next: u64,
    strings: BTreeSet<&'static str>,
}

static STATE: Mutex<State> =
    Mutex::new(State { handles: BTreeMap::new(), next: 0, strings: BTreeSet::new() });

fn state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    f(&mut STATE.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Forgets every registration (a new image is being loaded).
pub fn reset() {
    state(|s| {
        s.handles.clear();
        s.next = 0;
    });
}

/// A `'static` copy of `s` (the double's events hold `&'static str`), kept once per text.
fn intern(s: &str) -> &'static str {
    state(|st| {
        if let Some(known) = st.strings.get(s) {
            return *known;
        }
        let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
        st.strings.insert(leaked);
        leaked
    })
}

fn violate(what: String) {
    wdf_sim::framework::with(|fw| {
        fw.violate(wdf_sim::Violation::BadArgument { call: "ETW", what });
    });
}

/// `EtwRegister(ProviderId, EnableCallback, CallbackContext, RegHandle)`.
pub unsafe extern "win64" fn EtwRegister(
    ProviderId: *const GUID,
    EnableCallback: Option<EnableCallback>,
    CallbackContext: usize,
    RegHandle: *mut u64,
) -> NTSTATUS {
    // SAFETY: the provider's GUID, valid for the call (or null).
    let Some(guid) = (unsafe { ProviderId.as_ref() }).copied() else {
        return STATUS_INVALID_PARAMETER;
    };
    if RegHandle.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let bytes = guid_bytes(&guid);
    // Named by its GUID until its traits name it.
    let name = intern(&format!("{{{}}}", hex(&bytes)));
    let handle = state(|s| {
        s.next += 1;
        s.handles.insert(s.next, Registration { guid: bytes, name });
        s.next
    });
    wdf_sim::etw::register(name, bytes);
    // SAFETY: non-null out-pointer of the call.
    unsafe { RegHandle.write(handle) };
    if let Some(callback) = EnableCallback {
        // SAFETY: the image's enable callback with the arguments ETW passes it: the provider,
        // enable, verbose, every keyword, no filter, its context.
        unsafe {
            callback(
                &raw const guid,
                ENABLE_PROVIDER,
                LEVEL_VERBOSE,
                u64::MAX,
                0,
                std::ptr::null(),
                CallbackContext,
            );
        }
    }
    STATUS_SUCCESS
}

/// `EtwSetInformation(RegHandle, InformationClass, Information, Length)`: provider traits name
/// the provider; another class is reported as not modelled (`STATUS_NOT_SUPPORTED`), never
/// accepted without effect.
pub unsafe extern "win64" fn EtwSetInformation(
    RegHandle: u64,
    InformationClass: u32,
    EventInformation: *const u8,
    InformationLength: u32,
) -> NTSTATUS {
    let Some(guid) = state(|s| s.handles.get(&RegHandle).map(|r| r.guid)) else {
        violate(format!("EtwSetInformation on handle {RegHandle}, not registered"));
        return STATUS_INVALID_HANDLE;
    };
    if InformationClass != EVENT_PROVIDER_SET_TRAITS {
        violate(format!("EtwSetInformation class {InformationClass}: not modelled"));
        return STATUS_NOT_SUPPORTED;
    }
    if EventInformation.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the image's traits, `InformationLength` bytes.
    let traits =
        unsafe { std::slice::from_raw_parts(EventInformation, InformationLength as usize) };
    match provider_name(traits) {
        Ok(name) => {
            let name = intern(&name);
            state(|s| {
                if let Some(r) = s.handles.get_mut(&RegHandle) {
                    r.name = name;
                }
            });
            wdf_sim::framework::with(|fw| {
                for entry in &mut fw.etw.registered {
                    if entry.1 == guid {
                        entry.0 = name;
                    }
                }
            });
            STATUS_SUCCESS
        }
        Err(e) => {
            violate(format!("provider traits: {e}"));
            STATUS_INVALID_PARAMETER
        }
    }
}

/// `EtwWriteTransfer(RegHandle, EventDescriptor, ActivityId, RelatedActivityId, UserDataCount,
/// UserData)`: the event decoded and written to the double's session.
pub unsafe extern "win64" fn EtwWriteTransfer(
    RegHandle: u64,
    Descriptor: *const EventDescriptor,
    _ActivityId: *const u8,
    _RelatedActivityId: *const u8,
    UserDataCount: u32,
    UserData: *const EventDataDescriptor,
) -> NTSTATUS {
    let Some(provider) = state(|s| s.handles.get(&RegHandle).map(|r| r.name)) else {
        violate(format!("EtwWriteTransfer on handle {RegHandle}, not registered"));
        return STATUS_INVALID_HANDLE;
    };
    // SAFETY: the image's descriptor, valid for the call (or null).
    let Some(d) = (unsafe { Descriptor.as_ref() }).copied() else {
        return STATUS_INVALID_PARAMETER;
    };
    let data: &[EventDataDescriptor] = if UserDataCount == 0 {
        &[]
    } else if UserData.is_null() {
        return STATUS_INVALID_PARAMETER;
    } else {
        // SAFETY: `UserDataCount` descriptors at `UserData` (the call's contract).
        unsafe { std::slice::from_raw_parts(UserData, UserDataCount as usize) }
    };
    // SAFETY: each descriptor points at `Size` readable bytes of the image's (the contract).
    let bytes = |e: &EventDataDescriptor| unsafe {
        std::slice::from_raw_parts(e.Ptr as *const u8, e.Size as usize)
    };
    match decode(provider, &d, data.iter().map(|e| (e.Reserved, bytes(e)))) {
        Ok(event) => {
            wdf_sim::etw::write(event);
            STATUS_SUCCESS
        }
        Err(e) => {
            violate(format!("event from {provider}: {e}"));
            STATUS_INVALID_PARAMETER
        }
    }
}

/// `EtwUnregister(RegHandle)`.
pub unsafe extern "win64" fn EtwUnregister(RegHandle: u64) -> NTSTATUS {
    if let Some(r) = state(|s| s.handles.remove(&RegHandle)) {
        wdf_sim::etw::unregister(r.name);
        STATUS_SUCCESS
    } else {
        violate(format!("EtwUnregister of handle {RegHandle}, not registered"));
        STATUS_INVALID_HANDLE
    }
}

fn guid_bytes(g: &GUID) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&g.data1.to_le_bytes());
    b[4..6].copy_from_slice(&g.data2.to_le_bytes());
    b[6..8].copy_from_slice(&g.data3.to_le_bytes());
    b[8..].copy_from_slice(&g.data4);
    b
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter().fold(String::new(), |mut out, x| {
        let _ = write!(out, "{x:02x}");
        out
    })
}

/// Reads bytes in order; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, String> {
        let b = *self.bytes.get(self.at).ok_or("metadata ends early")?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).ok_or("length overflows")?;
        let s = self.bytes.get(self.at..end).ok_or_else(|| format!("{n} bytes past the end"))?;
        self.at = end;
        Ok(s)
    }

    fn cstr(&mut self) -> Result<String, String> {
        let rest = self.bytes.get(self.at..).unwrap_or(&[]);
        let len = rest.iter().position(|b| *b == 0).ok_or("unterminated name")?;
        let s = String::from_utf8(rest[..len].to_vec()).map_err(|_| "name not UTF-8")?;
        self.at += len + 1;
        Ok(s)
    }

    /// Tag bytes: at least one, bit 7 set on all but the last.
    fn tags(&mut self) -> Result<(), String> {
        while self.u8()? & 0x80 != 0 {}
        Ok(())
    }
}

/// The provider name in TraceLogging provider traits: `u16` total size, the name, traits.
///
/// # Errors
/// The size does not match or the name is missing.
pub fn provider_name(traits: &[u8]) -> Result<String, String> {
    let mut r = Reader { bytes: traits, at: 0 };
    let size = u16::from_le_bytes([r.u8()?, r.u8()?]);
    if usize::from(size) != traits.len() {
        return Err(format!("traits size {size}, {} bytes given", traits.len()));
    }
    r.cstr()
}

/// `InType` values the driver's events use (TraceLoggingProvider.h, tracelogging's `InType`).
const IN_U16: u8 = 6;
const IN_I32: u8 = 7;
const IN_U32: u8 = 8;
const IN_U64: u8 = 10;
const IN_HEX32: u8 = 20;
const IN_STR8: u8 = 23;

/// One event: metadata, then the field values in the order the metadata declares them.
///
/// # Errors
/// Missing metadata, a malformed layout, a field type the decoder does not know, or data that
/// does not match the fields.
pub fn decode<'a>(
    provider: &'static str,
    d: &EventDescriptor,
    descriptors: impl IntoIterator<Item = (u32, &'a [u8])>,
) -> Result<EtwEvent, String> {
    let mut meta: Option<&[u8]> = None;
    let mut data = Vec::new();
    for (kind, bytes) in descriptors {
        match kind {
            DESCRIPTOR_EVENT_METADATA => meta = Some(bytes),
            DESCRIPTOR_PROVIDER_METADATA => {}
            _ => data.extend_from_slice(bytes),
        }
    }
    let meta = meta.ok_or("no event metadata descriptor")?;
    let mut m = Reader { bytes: meta, at: 0 };
    let size = u16::from_le_bytes([m.u8()?, m.u8()?]);
    if usize::from(size) != meta.len() {
        return Err(format!("event metadata size {size}, {} bytes given", meta.len()));
    }
    m.tags()?;
    let name = intern(&m.cstr()?);
    let mut values = Reader { bytes: &data, at: 0 };
    let mut fields = Vec::new();
    while m.at < meta.len() {
        let field = intern(&m.cstr()?);
        let in_type = m.u8()?;
        if in_type & 0x80 != 0 && m.u8()? & 0x80 != 0 {
            m.tags()?;
        }
        let le = |b: &[u8]| b.iter().rev().fold(0u64, |acc, x| acc << 8 | u64::from(*x));
        let value = match in_type & 0x1F {
            IN_U16 => EtwValue::U16(u16::try_from(le(values.take(2)?)).unwrap_or(u16::MAX)),
            IN_U32 => EtwValue::U32(u32::try_from(le(values.take(4)?)).unwrap_or(u32::MAX)),
            IN_U64 => EtwValue::U64(le(values.take(8)?)),
            #[allow(clippy::cast_possible_truncation, reason = "four bytes read")]
            IN_I32 | IN_HEX32 => EtwValue::I32((le(values.take(4)?) as u32).cast_signed()),
            IN_STR8 => {
                let n = usize::try_from(le(values.take(2)?)).unwrap_or(usize::MAX);
                let s = std::str::from_utf8(values.take(n)?).map_err(|_| "str8 not UTF-8")?;
                EtwValue::Str(intern(s))
            }
            other => return Err(format!("field {field}: InType {other} not decoded")),
        };
        if in_type & 0x60 != 0 {
            return Err(format!("field {field}: arrays are not decoded"));
        }
        fields.push((field, value));
    }
    if values.at != data.len() {
        return Err(format!("{} bytes of data after the last field", data.len() - values.at));
    }
    Ok(EtwEvent { provider, name, level: d.Level, keyword: d.Keyword, fields })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(level: u8, keyword: u64) -> EventDescriptor {
        EventDescriptor {
            Id: 0,
            Version: 0,
            Channel: 11,
            Level: level,
            Opcode: 0,
            Task: 0,
            Keyword: keyword,
        }
    }

    #[test]
    fn an_event_is_decoded_from_its_tracelogging_metadata_and_data() {
        // size, one tag byte, "Ev\0", "A\0" u32, "S\0" str8 (InType|0x80, OutType utf8),
        // "N\0" hex32 with OutType NTSTATUS.
        let mut meta = vec![0, 0, 0];
        meta.extend_from_slice(b"Ev\0A\0");
        meta.push(IN_U32);
        meta.extend_from_slice(b"S\0");
        meta.extend_from_slice(&[IN_STR8 | 0x80, 35]);
        meta.extend_from_slice(b"N\0");
        meta.extend_from_slice(&[IN_HEX32 | 0x80, 14]);
        let len = u16::try_from(meta.len()).expect("short");
        meta[..2].copy_from_slice(&len.to_le_bytes());
        let a = 7u32.to_le_bytes();
        let s_len = 2u16.to_le_bytes();
        let status = (-1_073_741_811i32).to_le_bytes();
        let event = decode(
            "P",
            &descriptor(4, 2),
            [
                (2, &b"\x05\x00P\0"[..]),
                (1, &meta[..]),
                (0, &a[..]),
                (0, &s_len[..]),
                (0, &b"ok"[..]),
                (0, &status[..]),
            ],
        )
        .expect("decodes");
        assert_eq!(event.name, "Ev");
        assert_eq!((event.level, event.keyword), (4, 2));
        assert_eq!(
            event.fields,
            [
                ("A", EtwValue::U32(7)),
                ("S", EtwValue::Str("ok")),
                ("N", EtwValue::I32(-1_073_741_811))
            ]
        );
    }

    #[test]
    fn unknown_types_short_data_and_bad_sizes_are_errors_not_dropped_events() {
        let meta = [8, 0, 0, b'E', 0, b'F', 0, 12];
        assert!(
            decode("P", &descriptor(4, 0), [(1, &meta[..]), (0, &[0u8; 8][..])])
                .unwrap_err()
                .contains("InType 12")
        );
        let meta = [8, 0, 0, b'E', 0, b'F', 0, IN_U32];
        assert!(decode("P", &descriptor(4, 0), [(1, &meta[..]), (0, &[0u8; 2][..])]).is_err());
        assert!(decode("P", &descriptor(4, 0), [(1, &meta[..]), (0, &[0u8; 6][..])]).is_err());
        assert!(decode("P", &descriptor(4, 0), [(0, &[0u8; 4][..])]).is_err(), "no metadata");
        assert!(provider_name(b"\x08\x00Vsflow\0").is_err(), "size mismatch");
        assert_eq!(provider_name(b"\x08\x00Vsflo\0").as_deref(), Ok("Vsflo"));
    }
}
