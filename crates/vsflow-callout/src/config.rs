//! Driver configuration (read by the driver from the service's `Parameters` key).

use vsflow_core::Mode;
use vsflow_core::codec::{ApplyConfig, DEFAULT_CAP, UnknownMajor};
use vsflow_core::port::PickupConfig;
use vsflow_core::time::secs;

use crate::error::CalloutError;

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

/// Everything configurable, with the documented defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverConfig {
    /// Restore completion mode (registry `RestoreMode`: 0 pending, 1 synchronous).
    pub restore_mode: RestoreMode,
    /// Policy for blobs of an unknown format major (registry `UnknownMajorPolicy`: 0 strict,
    /// the default, 1 lenient). Either way such a blob restores an empty port (the migration
    /// succeeds) unless `fail_bad_restores` is set; strict only reports it as a decode error.
    pub unknown_major: UnknownMajor,
    /// Flow-table bound per port (registry `FlowsPerPort`, 16..=1,048,576, default 4,096).
    pub flows_per_port: u32,
    /// Size cap of one port's blob (registry `BlobCap`, 1,024..=65,000 bytes, default 61,440).
    pub blob_cap: usize,
    /// Mode of new ports (registry `DefaultMode`: 0 monitor, 1 enforce; default monitor).
    pub default_mode: Mode,
    /// Fail a restore whose blob is empty, damaged, foreign or of an unknown major version
    /// (registry `FailBadRestores`: 0 no, the default: restore an empty port and succeed; 1 yes:
    /// Hyper-V then fails the VM's restore). Opt-in only: a migration never fails because of
    /// vsflow by default.
    pub fail_bad_restores: bool,
    /// Longest restore window (registry `RestoreWindowSeconds`, 1..=3,600, default 60; the
    /// default's reason: docs/INSTALL.md): a port created with `RESTORING_PORT` is in the
    /// restore window (which enforces, picking up mid-stream TCP tentatively: vsflow-core
    /// `port.rs`) until its restore is applied or cancelled, or this long if no restore comes
    /// (a source host without vsflow saves nothing, so no restore callback ever comes).
    pub restore_window_secs: u32,
    /// Fingerprint pickup window after a restore (registry `PickupWindowSeconds`, 0..=3,600,
    /// default 300; 0 disables fingerprint pickup): a packet of an unknown flow whose keyed
    /// fingerprint the blob carried is picked up as established within this long.
    pub pickup_window_secs: u32,
    /// Loose pickup (registry `LoosePickup`: 0 off, the default; 1 on): within
    /// `loose_window_secs` after a restore, an inbound non-SYN TCP packet of an unknown flow is
    /// picked up as established (Linux conntrack's loose mode; see docs/INSTALL.md for the
    /// trade-off).
    pub loose_pickup: bool,
    /// Loose pickup window (registry `LooseWindowSeconds`, 1..=3,600, default 60).
    pub loose_window_secs: u32,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            restore_mode: RestoreMode::Pending,
            unknown_major: UnknownMajor::Strict,
            flows_per_port: 4096,
            blob_cap: DEFAULT_CAP,
            default_mode: Mode::Monitor,
            fail_bad_restores: false,
            restore_window_secs: 60,
            pickup_window_secs: 300,
            loose_pickup: false,
            loose_window_secs: 60,
        }
    }
}

impl DriverConfig {
    /// Checks every value against its documented range.
    ///
    /// # Errors
    /// [`CalloutError::Core`] with `InvalidConfig`.
    pub const fn validate(&self) -> Result<(), CalloutError> {
        if self.flows_per_port < 16 || self.flows_per_port > 1 << 20 {
            return Err(CalloutError::Core(vsflow_core::Error::InvalidConfig("FlowsPerPort")));
        }
        if self.blob_cap < 1024 || self.blob_cap > 65_000 {
            return Err(CalloutError::Core(vsflow_core::Error::InvalidConfig("BlobCap")));
        }
        if self.restore_window_secs < 1 || self.restore_window_secs > 3_600 {
            return Err(CalloutError::Core(vsflow_core::Error::InvalidConfig(
                "RestoreWindowSeconds",
            )));
        }
        if self.pickup_window_secs > 3_600 {
            return Err(CalloutError::Core(vsflow_core::Error::InvalidConfig(
                "PickupWindowSeconds",
            )));
        }
        if self.loose_window_secs < 1 || self.loose_window_secs > 3_600 {
            return Err(CalloutError::Core(vsflow_core::Error::InvalidConfig(
                "LooseWindowSeconds",
            )));
        }
        Ok(())
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

    /// Reads the configuration through the kernel services: `RestoreMode`,
    /// `UnknownMajorPolicy`, `FlowsPerPort`, `BlobCap`, `DefaultMode`, `RestoreWindowSeconds`,
    /// `FailBadRestores`, `PickupWindowSeconds`, `LoosePickup`, `LooseWindowSeconds`.
    ///
    /// # Errors
    /// As [`DriverConfig::from_registry`].
    pub fn from_services<S: crate::services::KernelServices>(
        services: &S,
    ) -> Result<Self, CalloutError> {
        let mut cfg = Self::from_registry(
            services.config_value("RestoreMode"),
            services.config_value("UnknownMajorPolicy"),
            services.config_value("FlowsPerPort"),
            services.config_value("BlobCap"),
            services.config_value("DefaultMode"),
        )?;
        if let Some(secs) = services.config_value("RestoreWindowSeconds") {
            cfg.restore_window_secs = secs;
        }
        if let Some(secs) = services.config_value("PickupWindowSeconds") {
            cfg.pickup_window_secs = secs;
        }
        if let Some(secs) = services.config_value("LooseWindowSeconds") {
            cfg.loose_window_secs = secs;
        }
        cfg.loose_pickup = match services.config_value("LoosePickup") {
            None | Some(0) => false,
            Some(1) => true,
            Some(_) => {
                return Err(CalloutError::Core(vsflow_core::Error::InvalidConfig("LoosePickup")));
            }
        };
        cfg.validate()?;
        cfg.fail_bad_restores = match services.config_value("FailBadRestores") {
            None | Some(0) => false,
            Some(1) => true,
            Some(_) => {
                return Err(CalloutError::Core(vsflow_core::Error::InvalidConfig(
                    "FailBadRestores",
                )));
            }
        };
        Ok(cfg)
    }

    /// Builds a configuration from raw registry values (`None` = absent: default), rejecting
    /// out-of-range values.
    ///
    /// # Errors
    /// As [`DriverConfig::validate`], or for an unknown enumeration value.
    pub fn from_registry(
        restore_mode: Option<u32>,
        unknown_major: Option<u32>,
        flows_per_port: Option<u32>,
        blob_cap: Option<u32>,
        default_mode: Option<u32>,
    ) -> Result<Self, CalloutError> {
        let bad = |what| CalloutError::Core(vsflow_core::Error::InvalidConfig(what));
        let d = Self::default();
        let cfg = Self {
            restore_mode: match restore_mode {
                None | Some(0) => RestoreMode::Pending,
                Some(1) => RestoreMode::Synchronous,
                Some(_) => return Err(bad("RestoreMode")),
            },
            unknown_major: match unknown_major {
                None | Some(0) => UnknownMajor::Strict,
                Some(1) => UnknownMajor::Lenient,
                Some(_) => return Err(bad("UnknownMajorPolicy")),
            },
            flows_per_port: flows_per_port.unwrap_or(d.flows_per_port),
            blob_cap: blob_cap.map_or(d.blob_cap, |c| c as usize),
            default_mode: match default_mode {
                None | Some(0) => Mode::Monitor,
                Some(1) => Mode::Enforce,
                Some(_) => return Err(bad("DefaultMode")),
            },
            fail_bad_restores: d.fail_bad_restores,
            restore_window_secs: d.restore_window_secs,
            pickup_window_secs: d.pickup_window_secs,
            loose_pickup: d.loose_pickup,
            loose_window_secs: d.loose_window_secs,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_values_default_when_absent_and_are_range_checked() {
        assert_eq!(
            DriverConfig::from_registry(None, None, None, None, None),
            Ok(DriverConfig::default())
        );
        let c =
            DriverConfig::from_registry(Some(1), Some(1), Some(100), Some(2048), Some(1)).unwrap();
        assert_eq!(c.restore_mode, RestoreMode::Synchronous);
        assert_eq!(c.unknown_major, UnknownMajor::Lenient);
        assert_eq!((c.flows_per_port, c.blob_cap, c.default_mode), (100, 2048, Mode::Enforce));
        assert!(DriverConfig::from_registry(Some(2), None, None, None, None).is_err());
        assert!(DriverConfig::from_registry(None, None, Some(15), None, None).is_err());
        assert!(DriverConfig::from_registry(None, None, None, Some(70_000), None).is_err());
    }

    #[test]
    fn pickup_values_map_to_the_cores_configuration_and_are_range_checked() {
        let d = DriverConfig::default();
        assert_eq!(d.pickup_config(), PickupConfig::default(), "loose pickup is off by default");
        assert_eq!(d.apply_config(), ApplyConfig::default(), "the codec's 5-minute window");
        let c = DriverConfig {
            pickup_window_secs: 0,
            loose_pickup: true,
            loose_window_secs: 5,
            ..DriverConfig::default()
        };
        assert!(c.validate().is_ok());
        assert_eq!(c.apply_config().pickup_window, 0, "0 disables fingerprint pickup");
        assert_eq!(c.pickup_config(), PickupConfig { loose: true, loose_window: secs(5) });
        for bad in [
            DriverConfig { pickup_window_secs: 3_601, ..DriverConfig::default() },
            DriverConfig { loose_window_secs: 0, ..DriverConfig::default() },
            DriverConfig { loose_window_secs: 3_601, ..DriverConfig::default() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
