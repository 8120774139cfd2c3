//! Packets as the simulator sends them: a real Ethernet frame (what the driver reads TCP flags
//! from) plus the 5-tuple, and the WFP incoming values and metadata built from them.

use std::ffi::c_void;

use fwps_sys::{
    self as sys, FWP_VALUE0, FWP_VALUE0_u, FWPS_INCOMING_METADATA_VALUES0, FWPS_INCOMING_VALUE0,
};
use vsflow_core::{IpFamily, protocol};

/// A packet on the simulated wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimPacket {
    /// Address family.
    pub family: IpFamily,
    /// IP protocol.
    pub protocol: u8,
    /// Source address (IPv4 in the first 4 bytes).
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TCP flags.
    pub flags: u8,
    /// The Ethernet frame.
    pub frame: Vec<u8>,
}

impl SimPacket {
    /// A packet with a frame built from its fields and `payload` bytes of payload.
    #[must_use]
    #[allow(clippy::too_many_arguments, reason = "a packet has this many header fields")]
    pub fn new(
        family: IpFamily,
        protocol: u8,
        src: [u8; 16],
        sport: u16,
        dst: [u8; 16],
        dport: u16,
        flags: u8,
        payload: usize,
    ) -> Self {
        let mut p = Self { family, protocol, src, dst, sport, dport, flags, frame: Vec::new() };
        p.frame = p.build_frame(payload);
        p
    }

    /// The reply: addresses and ports swapped, new flags.
    #[must_use]
    pub fn reply(&self, flags: u8, payload: usize) -> Self {
        Self::new(
            self.family,
            self.protocol,
            self.dst,
            self.dport,
            self.src,
            self.sport,
            flags,
            payload,
        )
    }

    fn build_frame(&self, payload: usize) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        let l4_len = match self.protocol {
            protocol::TCP => 20,
            _ => 8,
        } + payload;
        match self.family {
            IpFamily::V4 => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let total = u16::try_from(20 + l4_len).unwrap_or(u16::MAX);
                f.extend_from_slice(&[0x45, 0]);
                f.extend_from_slice(&total.to_be_bytes());
                f.extend_from_slice(&[0, 0, 0x40, 0, 64, self.protocol, 0, 0]);
                f.extend_from_slice(&self.src[..4]);
                f.extend_from_slice(&self.dst[..4]);
            }
            IpFamily::V6 => {
                f.extend_from_slice(&0x86DDu16.to_be_bytes());
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&u16::try_from(l4_len).unwrap_or(u16::MAX).to_be_bytes());
                f.extend_from_slice(&[self.protocol, 64]);
                f.extend_from_slice(&self.src);
                f.extend_from_slice(&self.dst);
            }
        }
        f.extend_from_slice(&self.sport.to_be_bytes());
        f.extend_from_slice(&self.dport.to_be_bytes());
        if self.protocol == protocol::TCP {
            f.extend_from_slice(&[
                0, 0, 0, 1, 0, 0, 0, 0, 0x50, self.flags, 0xff, 0xff, 0, 0, 0, 0,
            ]);
        } else {
            f.extend_from_slice(&[0, 8, 0, 0]);
        }
        f.resize(f.len() + payload, 0xAB);
        f
    }
}

/// The values, metadata and `NET_BUFFER_LIST` of one classify call, kept alive while the call
/// runs.
pub struct ClassifyInput {
    /// The incoming values, indexed by field.
    pub values: Vec<FWPS_INCOMING_VALUE0>,
    /// The `NET_BUFFER_LIST` handed to classify as `layerData`.
    pub nbl: Box<sys::NET_BUFFER_LIST>,
    nb: Box<sys::NET_BUFFER>,
    /// The metadata.
    pub meta: FWPS_INCOMING_METADATA_VALUES0,
    v6_src: Box<sys::FWP_BYTE_ARRAY16>,
    v6_dst: Box<sys::FWP_BYTE_ARRAY16>,
    switch_blob: Box<sys::FWP_BYTE_BLOB>,
    switch_bytes: Vec<u8>,
}

fn val(t: u32, u: FWP_VALUE0_u) -> FWPS_INCOMING_VALUE0 {
    FWPS_INCOMING_VALUE0 { value: FWP_VALUE0 { r#type: t, u } }
}

impl ClassifyInput {
    /// The incoming values and metadata WFP would pass at an ingress or egress vSwitch
    /// transport layer for `p`, travelling from port `src_port` to port `dst_port` of the
    /// switch named `switch_name`.
    #[must_use]
    pub fn new(
        p: &SimPacket,
        ingress: bool,
        src_port: u32,
        dst_port: u32,
        switch_name: &[u16],
    ) -> Box<Self> {
        let mut me = Box::new(Self {
            values: Vec::new(),
            nbl: Box::new(sys::NET_BUFFER_LIST {
                Next: std::ptr::null_mut(),
                FirstNetBuffer: std::ptr::null_mut(),
            }),
            // The simulator's NdisGetDataBuffer reads the packet through `CurrentMdl`. At the
            // vSwitch transport layers the data starts at the IP header (WFP "Data offset
            // positions"), past the 14-byte Ethernet header.
            nb: Box::new(sys::NET_BUFFER {
                Next: std::ptr::null_mut(),
                CurrentMdl: p.frame.get(14..).unwrap_or(&[]).as_ptr().cast_mut().cast(),
                CurrentMdlOffset: 0,
                DataLength: p.frame.len().saturating_sub(14),
            }),
            // SAFETY: the metadata struct is plain data (integers and nullable pointers); all
            // zeroes is a valid value.
            meta: unsafe { std::mem::zeroed() },
            v6_src: Box::new(sys::FWP_BYTE_ARRAY16 { byteArray16: p.src }),
            v6_dst: Box::new(sys::FWP_BYTE_ARRAY16 { byteArray16: p.dst }),
            switch_blob: Box::new(sys::FWP_BYTE_BLOB { size: 0, data: std::ptr::null_mut() }),
            switch_bytes: switch_name.iter().flat_map(|u| u.to_le_bytes()).collect(),
        });
        me.nbl.FirstNetBuffer = &raw mut *me.nb;
        me.switch_blob.size = u32::try_from(me.switch_bytes.len()).unwrap_or(0);
        me.switch_blob.data = me.switch_bytes.as_mut_ptr();
        let (src, dst) = match p.family {
            IpFamily::V4 => (
                val(
                    sys::FWP_UINT32,
                    FWP_VALUE0_u {
                        uint32: u32::from_be_bytes([p.src[0], p.src[1], p.src[2], p.src[3]]),
                    },
                ),
                val(
                    sys::FWP_UINT32,
                    FWP_VALUE0_u {
                        uint32: u32::from_be_bytes([p.dst[0], p.dst[1], p.dst[2], p.dst[3]]),
                    },
                ),
            ),
            IpFamily::V6 => (
                val(sys::FWP_BYTE_ARRAY16_TYPE, FWP_VALUE0_u { byteArray16: &raw mut *me.v6_src }),
                val(sys::FWP_BYTE_ARRAY16_TYPE, FWP_VALUE0_u { byteArray16: &raw mut *me.v6_dst }),
            ),
        };
        let count = if ingress {
            sys::INGRESS_TRANSPORT_FIELD_COUNT
        } else {
            sys::EGRESS_TRANSPORT_FIELD_COUNT
        };
        let empty = val(sys::FWP_EMPTY, FWP_VALUE0_u { uint64: std::ptr::null_mut() });
        let mut values = vec![empty; count as usize];
        values[sys::FIELD_IP_SOURCE_ADDRESS] = src;
        values[sys::FIELD_IP_DESTINATION_ADDRESS] = dst;
        values[sys::FIELD_IP_PROTOCOL] = val(sys::FWP_UINT8, FWP_VALUE0_u { uint8: p.protocol });
        values[sys::FIELD_IP_SOURCE_PORT] = val(sys::FWP_UINT16, FWP_VALUE0_u { uint16: p.sport });
        values[sys::FIELD_IP_DESTINATION_PORT] =
            val(sys::FWP_UINT16, FWP_VALUE0_u { uint16: p.dport });
        values[sys::FIELD_VSWITCH_ID] =
            val(sys::FWP_BYTE_BLOB_TYPE, FWP_VALUE0_u { byteBlob: &raw mut *me.switch_blob });
        me.values = values;
        me.meta.currentL2MetadataValues = sys::FWPS_L2_METADATA_FIELD_VSWITCH_SOURCE_PORT_ID
            | sys::FWPS_L2_METADATA_FIELD_VSWITCH_DESTINATION_PORT_ID;
        me.meta.vSwitchSourcePortId = src_port;
        me.meta.vSwitchDestinationPortId = dst_port;
        me.meta.ethernetMacHeaderSize = 14;
        me
    }

    /// `FWPS_INCOMING_VALUES0` for layer `layer_id` (valid while `self` lives).
    #[must_use]
    pub fn incoming(&mut self, layer_id: u16) -> sys::FWPS_INCOMING_VALUES0 {
        sys::FWPS_INCOMING_VALUES0 {
            layerId: layer_id,
            valueCount: u32::try_from(self.values.len()).unwrap_or(0),
            incomingValue: self.values.as_mut_ptr(),
        }
    }
}

impl ClassifyInput {
    /// The `layerData` pointer for classify: the `NET_BUFFER_LIST`.
    #[must_use]
    pub fn layer_data(&mut self) -> *mut c_void {
        (&raw mut *self.nbl).cast()
    }
}
