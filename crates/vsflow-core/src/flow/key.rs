//! The 5-tuple that names a flow, normalised to the VM's point of view.

use core::hash::{Hash, Hasher};

use crate::packet::{Direction, IpFamily, PacketMeta};

/// A flow's identity: protocol and both endpoints, with *local* always the VM's side.
///
/// An outbound packet's source and an inbound packet's destination are the local endpoint, so
/// both directions of one connection map to the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    /// Address family.
    pub family: IpFamily,
    /// IP protocol number.
    pub protocol: u8,
    /// The VM's address (IPv4 in the first 4 bytes, rest zero).
    pub local_addr: [u8; 16],
    /// The peer's address.
    pub remote_addr: [u8; 16],
    /// The VM's port (host order; 0 for protocols without ports).
    pub local_port: u16,
    /// The peer's port.
    pub remote_port: u16,
}

impl FlowKey {
    /// The key of the flow a packet belongs to.
    #[must_use]
    pub const fn of(meta: &PacketMeta) -> Self {
        match meta.direction {
            Direction::Outbound => Self {
                family: meta.family,
                protocol: meta.protocol,
                local_addr: meta.src_addr,
                remote_addr: meta.dst_addr,
                local_port: meta.src_port,
                remote_port: meta.dst_port,
            },
            Direction::Inbound => Self {
                family: meta.family,
                protocol: meta.protocol,
                local_addr: meta.dst_addr,
                remote_addr: meta.src_addr,
                local_port: meta.dst_port,
                remote_port: meta.src_port,
            },
        }
    }
}

impl Hash for FlowKey {
    // Four fixed-width writes instead of one per field: the key is hashed on every packet.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let fam = match self.family {
            IpFamily::V4 => 4u64,
            IpFamily::V6 => 6u64,
        };
        state.write_u64(
            fam | (u64::from(self.protocol) << 8)
                | (u64::from(self.local_port) << 16)
                | (u64::from(self.remote_port) << 32),
        );
        state.write_u128(u128::from_ne_bytes(self.local_addr));
        state.write_u128(u128::from_ne_bytes(self.remote_addr));
    }
}

#[cfg(test)]
mod tests {
    use super::FlowKey;
    use crate::packet::{Direction, PacketMeta, protocol};

    #[test]
    fn both_directions_of_a_connection_share_one_key() {
        let out = PacketMeta::ipv4(
            Direction::Outbound,
            protocol::TCP,
            [10, 0, 0, 2],
            49152,
            [93, 184, 216, 34],
            443,
            0x02,
            60,
        );
        let back = out.reply(0x12);
        assert_eq!(FlowKey::of(&out), FlowKey::of(&back));
        let k = FlowKey::of(&back);
        assert_eq!(k.local_port, 49152);
        assert_eq!(k.remote_port, 443);
        assert_eq!(&k.local_addr[..4], &[10, 0, 0, 2]);
    }
}
