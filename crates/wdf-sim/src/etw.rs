//! The ETW session the double records: TraceLogging providers the driver registers and the
//! events it writes through them.
//!
//! On Windows the driver's provider goes through the `tracelogging` crate (`EtwRegister`,
//! `EtwSetInformation`, `EtwWriteTransfer`, `EtwUnregister`); that crate compiles to no-ops on
//! other hosts, so under the double the driver's event macro hands the same provider, event name,
//! level, keyword and fields to [`register`], [`write`] and [`unregister`] here. The rule the
//! double enforces is the one the crate documents: a provider is registered before use and
//! unregistered before the image unloads.

use crate::framework;
use crate::violation::Violation;

/// A field value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EtwValue {
    /// `u32` field.
    U32(u32),
    /// `u64` field.
    U64(u64),
    /// `i32` field (NTSTATUS values are written as `hresult`/`i32`).
    I32(i32),
    /// `u16` field.
    U16(u16),
    /// `str8` field.
    Str(&'static str),
}

/// One event written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtwEvent {
    /// Provider name.
    pub provider: &'static str,
    /// Event name.
    pub name: &'static str,
    /// Level (1 critical .. 5 verbose).
    pub level: u8,
    /// Keyword bits.
    pub keyword: u64,
    /// Fields in order.
    pub fields: Vec<(&'static str, EtwValue)>,
}

impl EtwEvent {
    /// The value of field `name`.
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&EtwValue> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

/// Providers and events.
#[derive(Debug, Default)]
pub struct EtwSession {
    /// Registered providers: name and GUID bytes.
    pub registered: Vec<(&'static str, [u8; 16])>,
    /// Events written, in order.
    pub events: Vec<EtwEvent>,
}

/// `EtwRegister` of a TraceLogging provider.
pub fn register(provider: &'static str, guid: [u8; 16]) {
    framework::with(|fw| {
        fw.calls.push("EtwRegister");
        if fw.etw.registered.iter().any(|(n, _)| *n == provider) {
            fw.violate(Violation::BadArgument {
                call: "EtwRegister",
                what: format!("provider {provider} registered twice"),
            });
        } else {
            fw.etw.registered.push((provider, guid));
        }
    });
}

/// `EtwUnregister`.
pub fn unregister(provider: &'static str) {
    framework::with(|fw| {
        fw.calls.push("EtwUnregister");
        fw.etw.registered.retain(|(n, _)| *n != provider);
    });
}

/// `EtwWriteTransfer` of one event.
pub fn write(event: EtwEvent) {
    framework::with(|fw| {
        if fw.etw.registered.iter().any(|(n, _)| *n == event.provider) {
            fw.etw.events.push(event);
        } else {
            fw.violate(Violation::EtwNotRegistered);
        }
    });
}
