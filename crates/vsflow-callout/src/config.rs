//! Driver configuration: the registry values under the service's `Parameters` key.
//!
//! [`SETTINGS`] is the one list of them (name, type, range, default, meaning). The driver
//! (driver/src/entry.rs) reads every value it names with `WdfRegistryQueryULong`, the
//! simulator reads its registry double for the same names, and both hand the raw values to
//! [`DriverConfig::from_services`]: what a test configures is what the shipped driver reads.
//! docs/INSTALL.md and inf/vsflow.inx list the same values (checked by `tests/settings.rs`).
//!
//! A value out of its range, or not a `REG_DWORD`, is refused at load: the driver uses the
//! documented default, says so with an error-level ETW event ([`TraceEvent::SettingRefused`]),
//! a debugger line and the driver counter `settings_refused`, and loads. A typo in one value
//! must not leave a host unfiltered (a driver that fails to load filters nothing).

use vsflow_core::Mode;
use vsflow_core::codec::{ApplyConfig, DEFAULT_CAP, UnknownMajor};
use vsflow_core::port::PickupConfig;
use vsflow_core::time::secs;

use crate::error::CalloutError;
use crate::services::{ConfigValue, KernelServices, LogLevel};
use crate::trace::TraceEvent;

/// How a runtime-state restore completes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestoreMode {
    /// Copy the blob, return `STATUS_PENDING`, decode and apply at `PASSIVE_LEVEL` on a work
    /// item, then call `FwpsvSwitchNotifyComplete0` (the default: keeps the OID path short).
    #[default]
    Pending,
    /// Decode and apply inside the callback and return the final status.
    Synchronous,
}

/// The registry type of a setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegType {
    /// `REG_DWORD` (read with `WdfRegistryQueryULong`).
    Dword,
}

/// One registry value under `HKLM\SYSTEM\CurrentControlSet\Services\vsflow\Parameters`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The value's name.
    pub name: &'static str,
    /// Its registry type.
    pub reg_type: RegType,
    /// Smallest accepted value.
    pub min: u32,
    /// Largest accepted value.
    pub max: u32,
    /// The value used when it is absent or refused.
    pub default: u32,
    /// What it does (docs/INSTALL.md says the same at more length).
    pub doc: &'static str,
}

/// Which setting: an index into [`SETTINGS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs, reason = "each variant is the setting of the same name in SETTINGS")]
pub enum Key {
    RestoreMode,
    UnknownMajorPolicy,
    FlowsPerPort,
    BlobCap,
    DefaultMode,
    RestoreWindowSeconds,
    FailBadRestores,
    PickupWindowSeconds,
    LoosePickup,
    LooseWindowSeconds,
    FlowMemoryMB,
}

const fn dword(
    name: &'static str,
    (min, max): (u32, u32),
    default: u32,
    doc: &'static str,
) -> Setting {
    Setting { name, reg_type: RegType::Dword, min, max, default, doc }
}

/// Every setting, in [`Key`] order.
pub const SETTINGS: [Setting; 11] = [
    dword(
        "RestoreMode",
        (0, 1),
        0,
        "0 pend each restore and finish it on a work item; 1 restore inside the callback",
    ),
    dword(
        "UnknownMajorPolicy",
        (0, 1),
        0,
        "0 strict: a blob of an unknown format major is a bad restore (failed only if \
         FailBadRestores is 1); 1 lenient: it restores without flows even then",
    ),
    dword(
        "FlowsPerPort",
        (16, vsflow_core::flow::MAX_FLOWS_LIMIT),
        4096,
        "flow-table bound per VM port",
    ),
    dword("BlobCap", (1024, 65_000), 61_440, "runtime-state blob size cap, bytes"),
    dword(
        "DefaultMode",
        (0, 1),
        0,
        "mode of a new port: 0 monitor, 1 enforce (a restore never falls back to it)",
    ),
    dword(
        "RestoreWindowSeconds",
        (1, 3_600),
        60,
        "longest restore window of a port created to receive a restore, if none comes",
    ),
    dword(
        "FailBadRestores",
        (0, 1),
        0,
        "1 fails a restore whose blob is unusable (Hyper-V then fails the VM's migration); \
         0 restores it without flows and succeeds",
    ),
    dword(
        "PickupWindowSeconds",
        (0, 3_600),
        300,
        "how long after a restore fingerprinted connections are picked up (0: off)",
    ),
    dword("LoosePickup", (0, 1), 0, "1 turns on loose pickup of mid-stream TCP after a restore"),
    dword("LooseWindowSeconds", (1, 3_600), 60, "the loose pickup window"),
    dword(
        "FlowMemoryMB",
        (0, MAX_FLOW_MEMORY_MB),
        0,
        "host-wide flow-memory budget, MB (0: 1/64 of the host's physical memory, 16 MB to \
         4,096 MB); new flows past it are refused, established ones kept",
    ),
];

/// Largest `FlowMemoryMB` (64 GiB).
pub const MAX_FLOW_MEMORY_MB: u32 = 65_536;
/// The derived budget's share of the host's physical memory: 1/64 (see [`flow_memory_budget`]).
pub const FLOW_MEMORY_SHARE: u64 = 64;
/// The derived budget's floor (16 MiB: 4 ports at the default bound, with room).
pub const FLOW_MEMORY_MIN: u64 = 16 << 20;
/// The derived budget's ceiling (4 GiB).
pub const FLOW_MEMORY_MAX: u64 = 4 << 30;
/// The budget when the host's memory size cannot be read: 256 MiB (what 1/64 gives a 16 GiB
/// host).
pub const FLOW_MEMORY_UNKNOWN: u64 = 256 << 20;

/// The host-wide flow-memory budget in bytes.
///
/// `FlowMemoryMB` if set; otherwise derived from the host's physical memory (`physical`,
/// bytes, read at `PASSIVE_LEVEL` at load:
/// [`KernelServices::physical_memory_bytes`]): 1/64 of it, at least 16 MiB and at most 4 GiB,
/// or 256 MiB if unknown.
///
/// Why 1/64: flow state lives in non-paged pool, which is never paged out; a host running VMs
/// needs its memory for them. 1/64 of a 64 GiB Hyper-V host is 1 GiB, about eight million
/// flows at about 132 bytes each (a slot and its bucket head, docs/PERFORMANCE.md): far past what its
/// VMs legitimately open, small beside the host's memory.
#[must_use]
pub fn flow_memory_budget(flow_memory_mb: u32, physical: Option<u64>) -> usize {
    let bytes = if flow_memory_mb != 0 {
        u64::from(flow_memory_mb) << 20
    } else {
        physical.map_or(FLOW_MEMORY_UNKNOWN, |p| {
            (p / FLOW_MEMORY_SHARE).clamp(FLOW_MEMORY_MIN, FLOW_MEMORY_MAX)
        })
    };
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

const _: () = assert!(DEFAULT_CAP == 61_440, "BlobCap's default is the codec's default cap");

impl Key {
    /// Every key, in [`SETTINGS`] order.
    pub const ALL: [Self; 11] = [
        Self::RestoreMode,
        Self::UnknownMajorPolicy,
        Self::FlowsPerPort,
        Self::BlobCap,
        Self::DefaultMode,
        Self::RestoreWindowSeconds,
        Self::FailBadRestores,
        Self::PickupWindowSeconds,
        Self::LoosePickup,
        Self::LooseWindowSeconds,
        Self::FlowMemoryMB,
    ];

    /// Its entry in [`SETTINGS`].
    #[must_use]
    pub const fn setting(self) -> &'static Setting {
        match self {
            Self::RestoreMode => &SETTINGS[0],
            Self::UnknownMajorPolicy => &SETTINGS[1],
            Self::FlowsPerPort => &SETTINGS[2],
            Self::BlobCap => &SETTINGS[3],
            Self::DefaultMode => &SETTINGS[4],
            Self::RestoreWindowSeconds => &SETTINGS[5],
            Self::FailBadRestores => &SETTINGS[6],
            Self::PickupWindowSeconds => &SETTINGS[7],
            Self::LoosePickup => &SETTINGS[8],
            Self::LooseWindowSeconds => &SETTINGS[9],
            Self::FlowMemoryMB => &SETTINGS[10],
        }
    }
}

impl Setting {
    /// True if `value` is in the documented range.
    #[must_use]
    pub const fn accepts(&self, value: u32) -> bool {
        self.min <= value && value <= self.max
    }
}

/// Everything configurable, with the documented defaults ([`SETTINGS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverConfig {
    /// Restore completion mode (`RestoreMode`).
    pub restore_mode: RestoreMode,
    /// Policy for blobs of an unknown format major (`UnknownMajorPolicy`). Such a blob never
    /// carries flows; strict counts it as a bad restore (failed if `fail_bad_restores`),
    /// lenient restores it without flows even under `fail_bad_restores` (a rolling downgrade
    /// is expected, not bad).
    pub unknown_major: UnknownMajor,
    /// Flow-table bound per port (`FlowsPerPort`).
    pub flows_per_port: u32,
    /// Size cap of one port's blob (`BlobCap`).
    pub blob_cap: usize,
    /// Mode of new ports (`DefaultMode`). A degraded restore never falls back to it: a port
    /// whose restore carries no policy enforces (vsflow-core's `Port::plan_uncarried`).
    pub default_mode: Mode,
    /// Fail a restore whose blob is unusable (`FailBadRestores`): Hyper-V then fails the VM's
    /// restore. Opt-in only: a migration never fails because of vsflow by default.
    pub fail_bad_restores: bool,
    /// Longest restore window (`RestoreWindowSeconds`; the default's reason: docs/INSTALL.md):
    /// a port created with `RESTORING_PORT` waits for its restore at most this long if none
    /// comes (a source host without vsflow saves nothing, so no restore callback ever comes);
    /// a pended restore keeps it open. The window enforces, picking up mid-stream TCP
    /// tentatively (vsflow-core `port.rs`, "Restoring").
    pub restore_window_secs: u32,
    /// Fingerprint pickup window after a restore (`PickupWindowSeconds`; 0 disables
    /// fingerprint pickup).
    pub pickup_window_secs: u32,
    /// Loose pickup (`LoosePickup`; see docs/INSTALL.md for the trade-off).
    pub loose_pickup: bool,
    /// Loose pickup window (`LooseWindowSeconds`).
    pub loose_window_secs: u32,
    /// Host-wide flow-memory budget in MB (`FlowMemoryMB`; 0: derived from the host's
    /// memory, [`flow_memory_budget`]).
    pub flow_memory_mb: u32,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self::from_values(|key| key.setting().default)
    }
}

impl DriverConfig {
    /// The configuration from one in-range value per setting.
    fn from_values(value: impl Fn(Key) -> u32) -> Self {
        let flag = |key| value(key) == 1;
        Self {
            restore_mode: if flag(Key::RestoreMode) {
                RestoreMode::Synchronous
            } else {
                RestoreMode::Pending
            },
            unknown_major: if flag(Key::UnknownMajorPolicy) {
                UnknownMajor::Lenient
            } else {
                UnknownMajor::Strict
            },
            flows_per_port: value(Key::FlowsPerPort),
            blob_cap: value(Key::BlobCap) as usize,
            default_mode: if flag(Key::DefaultMode) { Mode::Enforce } else { Mode::Monitor },
            restore_window_secs: value(Key::RestoreWindowSeconds),
            fail_bad_restores: flag(Key::FailBadRestores),
            pickup_window_secs: value(Key::PickupWindowSeconds),
            loose_pickup: flag(Key::LoosePickup),
            loose_window_secs: value(Key::LooseWindowSeconds),
            flow_memory_mb: value(Key::FlowMemoryMB),
        }
    }

    /// The registry value of `key` that gives this configuration.
    #[must_use]
    pub fn registry_value(&self, key: Key) -> u32 {
        match key {
            Key::RestoreMode => u32::from(self.restore_mode == RestoreMode::Synchronous),
            Key::UnknownMajorPolicy => u32::from(self.unknown_major == UnknownMajor::Lenient),
            Key::FlowsPerPort => self.flows_per_port,
            Key::BlobCap => u32::try_from(self.blob_cap).unwrap_or(u32::MAX),
            Key::DefaultMode => u32::from(self.default_mode == Mode::Enforce),
            Key::RestoreWindowSeconds => self.restore_window_secs,
            Key::FailBadRestores => u32::from(self.fail_bad_restores),
            Key::PickupWindowSeconds => self.pickup_window_secs,
            Key::LoosePickup => u32::from(self.loose_pickup),
            Key::LooseWindowSeconds => self.loose_window_secs,
            Key::FlowMemoryMB => self.flow_memory_mb,
        }
    }

    /// Checks every value against its documented range ([`SETTINGS`]).
    ///
    /// # Errors
    /// [`CalloutError::Core`] with `InvalidConfig` naming the first value out of range.
    pub fn validate(&self) -> Result<(), CalloutError> {
        for key in Key::ALL {
            let s = key.setting();
            if !s.accepts(self.registry_value(key)) {
                return Err(CalloutError::Core(vsflow_core::Error::InvalidConfig(s.name)));
            }
        }
        Ok(())
    }

    /// Reads every value of [`SETTINGS`] through [`KernelServices::config_value`] (what
    /// `DriverEntry` does with the `Parameters` key). An absent value takes its default; a
    /// value out of range, or not a `REG_DWORD`, is refused: its default applies, an
    /// error-level [`TraceEvent::SettingRefused`] and a debugger line say so. Never fails: a
    /// driver that does not load filters nothing.
    #[must_use]
    pub fn from_services<S: KernelServices>(services: &S) -> Self {
        Self::read(services).0
    }

    /// [`DriverConfig::from_services`], and how many values were refused (the driver counts
    /// them: `settings_refused`).
    #[must_use]
    pub fn read<S: KernelServices>(services: &S) -> (Self, u32) {
        let refusals = core::cell::Cell::new(0u32);
        let config = Self::from_values(|key| {
            let s = key.setting();
            let refused = |value: u32, reason: &'static str| {
                refusals.set(refusals.get().saturating_add(1));
                services.log(
                    LogLevel::Error,
                    format_args!(
                        "registry value {} refused ({reason}: {value}); using its default {}",
                        s.name, s.default
                    ),
                );
                services.trace(&TraceEvent::SettingRefused {
                    name: s.name,
                    value,
                    default: s.default,
                    reason,
                });
                s.default
            };
            match services.config_value(s.name) {
                ConfigValue::Absent => s.default,
                ConfigValue::Dword(v) if s.accepts(v) => v,
                ConfigValue::Dword(v) => refused(v, "out of range"),
                ConfigValue::Unreadable => refused(0, "not a REG_DWORD"),
            }
        });
        (config, refusals.get())
    }

    /// The loose-pickup configuration every port gets.
    #[must_use]
    pub const fn pickup_config(&self) -> PickupConfig {
        PickupConfig { loose: self.loose_pickup, loose_window: secs(self.loose_window_secs as u64) }
    }

    /// The codec's apply configuration (the fingerprint pickup window).
    #[must_use]
    pub const fn apply_config(&self) -> ApplyConfig {
        ApplyConfig { pickup_window: secs(self.pickup_window_secs as u64) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_settings_defaults_and_in_range() {
        let d = DriverConfig::default();
        assert!(d.validate().is_ok());
        for key in Key::ALL {
            assert_eq!(d.registry_value(key), key.setting().default, "{key:?}");
        }
        assert_eq!(d.restore_mode, RestoreMode::Pending);
        assert_eq!(d.unknown_major, UnknownMajor::Strict);
        assert_eq!(
            (d.flows_per_port, d.blob_cap, d.default_mode),
            (4096, DEFAULT_CAP, Mode::Monitor)
        );
        assert_eq!(d.pickup_config(), PickupConfig::default(), "loose pickup is off by default");
        assert_eq!(d.apply_config(), ApplyConfig::default(), "the codec's 5-minute window");
        assert_eq!(d.flow_memory_mb, 0, "the budget is derived from the host's memory");
    }

    #[test]
    fn the_flow_memory_budget_is_the_setting_or_a_64th_of_the_hosts_memory_within_bounds() {
        const GIB: u64 = 1 << 30;
        assert_eq!(flow_memory_budget(3, Some(64 * GIB)), 3 << 20, "the setting wins");
        assert_eq!(flow_memory_budget(0, Some(64 * GIB)), 1 << 30, "1/64 of 64 GiB");
        assert_eq!(flow_memory_budget(0, Some(GIB / 2)), 16 << 20, "the floor");
        assert_eq!(flow_memory_budget(0, Some(1024 * GIB)), 4 << 30, "the ceiling");
        assert_eq!(flow_memory_budget(0, None), 256 << 20, "unknown memory size");
    }

    #[test]
    fn keys_and_settings_line_up_and_every_value_maps_back() {
        for (i, key) in Key::ALL.iter().enumerate() {
            assert_eq!(key.setting(), &SETTINGS[i]);
            assert!(SETTINGS[i].accepts(SETTINGS[i].default));
        }
        let c = DriverConfig {
            restore_mode: RestoreMode::Synchronous,
            unknown_major: UnknownMajor::Lenient,
            flows_per_port: 100,
            blob_cap: 2048,
            default_mode: Mode::Enforce,
            fail_bad_restores: true,
            restore_window_secs: 7,
            pickup_window_secs: 0,
            loose_pickup: true,
            loose_window_secs: 5,
            flow_memory_mb: 3,
        };
        assert!(c.validate().is_ok());
        assert_eq!(DriverConfig::from_values(|k| c.registry_value(k)), c);
        assert_eq!(c.apply_config().pickup_window, 0, "0 disables fingerprint pickup");
        assert_eq!(c.pickup_config(), PickupConfig { loose: true, loose_window: secs(5) });
        for bad in [
            DriverConfig { pickup_window_secs: 3_601, ..DriverConfig::default() },
            DriverConfig { loose_window_secs: 0, ..DriverConfig::default() },
            DriverConfig { flows_per_port: 15, ..DriverConfig::default() },
            DriverConfig { blob_cap: 70_000, ..DriverConfig::default() },
            DriverConfig { flows_per_port: 65_537, ..DriverConfig::default() },
            DriverConfig { flow_memory_mb: 65_537, ..DriverConfig::default() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
