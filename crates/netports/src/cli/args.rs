//! Argument types of the command line (clap), converted to the library's types at once.

use clap::ValueEnum;
use vsflow_core::Mode;

use crate::range::Protocol;

/// `tcp` or `udp`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProtoArg {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl From<ProtoArg> for Protocol {
    fn from(p: ProtoArg) -> Self {
        match p {
            ProtoArg::Tcp => Self::Tcp,
            ProtoArg::Udp => Self::Udp,
        }
    }
}

/// `--udp` as a protocol.
#[must_use]
pub const fn udp_flag(udp: bool) -> Protocol {
    if udp { Protocol::Udp } else { Protocol::Tcp }
}

/// A port mode.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    /// Permit all, track all.
    Monitor,
    /// Stateful: unsolicited inbound only through allow rules.
    Enforce,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Monitor => Self::Monitor,
            ModeArg::Enforce => Self::Enforce,
        }
    }
}
