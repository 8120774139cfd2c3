//! IOCTL codes: `CTL_CODE(FILE_DEVICE_VSFLOW, function, METHOD_BUFFERED, access)`.

/// vsflow's device type (custom range, >= 0x8000).
pub const FILE_DEVICE_VSFLOW: u32 = 0x0000_8A5F;
/// `METHOD_BUFFERED`.
pub const METHOD_BUFFERED: u32 = 0;
/// `FILE_READ_DATA`.
pub const FILE_READ_DATA: u32 = 1;
/// `FILE_WRITE_DATA`.
pub const FILE_WRITE_DATA: u32 = 2;

/// `CTL_CODE` from `devioctl.h`.
#[must_use]
pub const fn ctl_code(device_type: u32, function: u32, method: u32, access: u32) -> u32 {
    (device_type << 16) | (access << 14) | (function << 2) | method
}

/// The operations of the control device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ioctl {
    /// Protocol, driver and blob-format versions.
    GetVersion,
    /// Every tracked port: identity, `PortId`, mode, flow count.
    ListPorts,
    /// One page of a port's flows.
    GetFlows,
    /// Driver-wide or per-port counters.
    GetCounters,
    /// Reset counters.
    ClearCounters,
    /// Set a port's mode.
    SetPortMode,
    /// Replace a port's allow rules atomically.
    ReplaceRules,
    /// The driver's configuration.
    GetConfig,
    /// A port's allow rules and their version.
    GetRules,
}

impl Ioctl {
    /// Every operation.
    pub const ALL: [Self; 9] = [
        Self::GetVersion,
        Self::ListPorts,
        Self::GetFlows,
        Self::GetCounters,
        Self::ClearCounters,
        Self::SetPortMode,
        Self::ReplaceRules,
        Self::GetConfig,
        Self::GetRules,
    ];

    /// The IOCTL code. Reads need `FILE_READ_DATA`; changes need `FILE_WRITE_DATA` too.
    #[must_use]
    pub const fn code(self) -> u32 {
        let (function, access) = match self {
            Self::GetVersion => (0x800, FILE_READ_DATA),
            Self::ListPorts => (0x801, FILE_READ_DATA),
            Self::GetFlows => (0x802, FILE_READ_DATA),
            Self::GetCounters => (0x803, FILE_READ_DATA),
            Self::ClearCounters => (0x804, FILE_READ_DATA | FILE_WRITE_DATA),
            Self::SetPortMode => (0x805, FILE_READ_DATA | FILE_WRITE_DATA),
            Self::ReplaceRules => (0x806, FILE_READ_DATA | FILE_WRITE_DATA),
            Self::GetConfig => (0x807, FILE_READ_DATA),
            Self::GetRules => (0x808, FILE_READ_DATA),
        };
        ctl_code(FILE_DEVICE_VSFLOW, function, METHOD_BUFFERED, access)
    }

    /// The operation of an IOCTL code, or `None` for a code vsflow does not define.
    #[must_use]
    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.code() == code)
    }

    /// Name, for tools and logs.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::GetVersion => "get-version",
            Self::ListPorts => "list-ports",
            Self::GetFlows => "get-flows",
            Self::GetCounters => "get-counters",
            Self::ClearCounters => "clear-counters",
            Self::SetPortMode => "set-port-mode",
            Self::ReplaceRules => "replace-rules",
            Self::GetConfig => "get-config",
            Self::GetRules => "get-rules",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_buffered_and_round_trip() {
        for (i, a) in Ioctl::ALL.iter().enumerate() {
            assert_eq!(a.code() & 3, METHOD_BUFFERED);
            assert_eq!(a.code() >> 16, FILE_DEVICE_VSFLOW);
            assert_eq!(Ioctl::from_code(a.code()), Some(*a));
            for b in &Ioctl::ALL[i + 1..] {
                assert_ne!(a.code(), b.code());
            }
        }
        assert_eq!(Ioctl::from_code(0x0022_0000), None);
        // CTL_CODE(0x8A5F, 0x800, METHOD_BUFFERED, FILE_READ_DATA) computed by hand.
        assert_eq!(Ioctl::GetVersion.code(), 0x8A5F_6000);
    }
}
