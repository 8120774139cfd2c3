//! The fixed GUIDs that identify vsflow's WFP objects.
//!
//! They never change across versions: the provider GUID also routes runtime-state restores
//! between hosts (source and destination must subscribe with the same `providerGuid`; verify
//! on Windows: docs/WINDOWS-VERIFICATION.md item 4).

use fwps_sys::{
    FWPM_LAYER_EGRESS_VSWITCH_TRANSPORT_V4, FWPM_LAYER_EGRESS_VSWITCH_TRANSPORT_V6,
    FWPM_LAYER_INGRESS_VSWITCH_TRANSPORT_V4, FWPM_LAYER_INGRESS_VSWITCH_TRANSPORT_V6,
    FWPS_LAYER_EGRESS_VSWITCH_TRANSPORT_V4, FWPS_LAYER_EGRESS_VSWITCH_TRANSPORT_V6,
    FWPS_LAYER_INGRESS_VSWITCH_TRANSPORT_V4, FWPS_LAYER_INGRESS_VSWITCH_TRANSPORT_V6, GUID,
};

/// vsflow's provider {7673666c-6f77-4d31-a001-76736677500d} (FWPM provider and vSwitch
/// subscription `providerGuid`).
pub const PROVIDER: GUID =
    GUID::from_parts(0x7673_666c, 0x6f77, 0x4d31, [0xa0, 0x01, 0x76, 0x73, 0x66, 0x77, 0x50, 0x0d]);
/// [`PROVIDER`] at a fixed address, for the APIs that take a pointer.
pub static PROVIDER_KEY: GUID = PROVIDER;
/// [`SUBLAYER`] at a fixed address.
pub static SUBLAYER_KEY: GUID = SUBLAYER;
/// vsflow's own sublayer.
pub const SUBLAYER: GUID =
    GUID::from_parts(0x7673_666c, 0x6f77, 0x4d31, [0xa0, 0x02, 0x76, 0x73, 0x66, 0x77, 0x50, 0x0d]);

/// One vSwitch transport layer vsflow hooks: its management GUID, run-time id, and the keys of
/// vsflow's callout and filter there.
#[derive(Clone, Copy, Debug)]
pub struct LayerHook {
    /// `FWPM_LAYER_*` GUID.
    pub layer: GUID,
    /// `FWPS_LAYER_*` run-time id.
    pub layer_id: u16,
    /// Callout key.
    pub callout: GUID,
    /// Filter key.
    pub filter: GUID,
    /// Ingress (packet entering the switch from a port) or egress.
    pub ingress: bool,
}

const fn key(n: u8) -> GUID {
    GUID::from_parts(0x7673_666c, 0x6f77, 0x4d31, [0xa0, n, 0x76, 0x73, 0x66, 0x77, 0x50, 0x0d])
}

/// The four hooks, in registration order.
pub const HOOKS: [LayerHook; 4] = [
    LayerHook {
        layer: FWPM_LAYER_INGRESS_VSWITCH_TRANSPORT_V4,
        layer_id: FWPS_LAYER_INGRESS_VSWITCH_TRANSPORT_V4,
        callout: key(0x10),
        filter: key(0x20),
        ingress: true,
    },
    LayerHook {
        layer: FWPM_LAYER_INGRESS_VSWITCH_TRANSPORT_V6,
        layer_id: FWPS_LAYER_INGRESS_VSWITCH_TRANSPORT_V6,
        callout: key(0x11),
        filter: key(0x21),
        ingress: true,
    },
    LayerHook {
        layer: FWPM_LAYER_EGRESS_VSWITCH_TRANSPORT_V4,
        layer_id: FWPS_LAYER_EGRESS_VSWITCH_TRANSPORT_V4,
        callout: key(0x12),
        filter: key(0x22),
        ingress: false,
    },
    LayerHook {
        layer: FWPM_LAYER_EGRESS_VSWITCH_TRANSPORT_V6,
        layer_id: FWPS_LAYER_EGRESS_VSWITCH_TRANSPORT_V6,
        callout: key(0x13),
        filter: key(0x23),
        ingress: false,
    },
];

/// The provider as the core's GUID type (written into blobs).
#[must_use]
pub const fn provider_core() -> vsflow_core::Guid {
    vsflow_core::Guid::from_parts(PROVIDER.data1, PROVIDER.data2, PROVIDER.data3, PROVIDER.data4)
}
