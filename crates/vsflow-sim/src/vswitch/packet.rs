//! Packets as the vSwitch transport layers hand them to a callout.
//!
//! At `FWPS_LAYER_{INGRESS,EGRESS}_VSWITCH_TRANSPORT_V4/V6` the `NET_BUFFER_LIST`'s data starts
//! at the **IP header** ("Data offset positions" in the WFP docs: only the
//! `*_VSWITCH_ETHERNET` layers start at the MAC header; `WFPSampler`'s basic packet examination
//! callouts: "Initial offset is at the IP Header"). The double builds a real IP datagram
//! (IPv4 with options, IPv6 with extension headers, fragments) and lays it out in an MDL chain
//! as NDIS would: the MAC header still in the first MDL before `CurrentMdlOffset`, the chain
//! split wherever a test asks, even inside the headers (`NET_BUFFER` and `MDL`, `ndis/nbl.h`,
//! `wdm.h`). `NET_BUFFER`'s `DataLength` is the 32-bit `ULONG` of its union; the upper half of
//! the `SIZE_T` is left as garbage, as NDIS never writes it.

use std::ffi::c_void;

use fwps_sys::{
    self as sys, FWP_VALUE0, FWP_VALUE0_u, FWPS_INCOMING_METADATA_VALUES0, FWPS_INCOMING_VALUE0,
};
use vsflow_core::{IpFamily, protocol};

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented.
    #[default]
    Whole,
    /// The first fragment: transport header present, more fragments follow.
    First,
    /// A later fragment at this offset (in 8-byte units): no transport header, so WFP has no
    /// ports to report (the double gives `FWP_EMPTY` for both port values).
    NonFirst(u16),
}

/// An IPv6 extension header the double can put before the transport header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Ext {
    /// Hop-by-hop options (next header 0), 8 bytes.
    HopByHop,
    /// Routing header type 0 with no segments left (next header 43), 8 bytes.
    Routing,
    /// Destination options (next header 60), 16 bytes.
    DestinationOptions,
    /// Authentication header (next header 51), 24 bytes: RFC 4302 section 2 (12 fixed bytes
    /// and a 96-bit ICV, RFC 2404); its length field counts 4-octet units minus 2, unlike the
    /// other extension headers' 8-octet units minus 1.
    Authentication,
}

impl Ipv6Ext {
    const fn number(self) -> u8 {
        match self {
            Self::HopByHop => 0,
            Self::Routing => 43,
            Self::DestinationOptions => 60,
            Self::Authentication => 51,
        }
    }
}

/// How the double lays a datagram out in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Offsets into the datagram where a new MDL begins (each MDL is a separate allocation,
    /// so the bytes are not contiguous across a cut).
    pub cuts: Vec<usize>,
    /// Put no MAC header before the datagram in the first MDL (`CurrentMdlOffset` 0).
    pub no_mac_prefix: bool,
}

/// A packet on the simulated wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimPacket {
    /// Address family.
    pub family: IpFamily,
    /// IP protocol (the transport protocol, after any IPv6 extension headers).
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
    /// Payload bytes after the transport header.
    pub payload: usize,
    /// IPv4 option words (IHL = 5 + this).
    pub ipv4_option_words: u8,
    /// IPv6 extension headers, in order.
    pub ipv6_ext: Vec<Ipv6Ext>,
    /// Fragment position.
    pub fragment: Fragment,
    /// An authentication header (`IPsec` AH, RFC 4302, 24 bytes) between the IPv4 header and
    /// the transport header (IPv6: [`Ipv6Ext::Authentication`]). WFP's `IP_PROTOCOL` value is
    /// still the transport protocol (the double's choice, the worse one for the driver: its
    /// flags sit behind the AH; WINDOWS-VERIFICATION 56).
    pub ipv4_ah: bool,
    /// A first fragment that carries only this many bytes of the transport header (RFC 1858's
    /// tiny fragment): `None` for a whole header.
    pub transport_cut: Option<usize>,
    /// Memory layout.
    pub layout: Layout,
    /// The IP datagram, IP header first: what classify's `NET_BUFFER` describes.
    pub datagram: Vec<u8>,
}

impl SimPacket {
    /// An unfragmented packet with a datagram built from its fields and `payload` bytes.
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
        let mut p = Self {
            family,
            protocol,
            src,
            dst,
            sport,
            dport,
            flags,
            payload,
            ipv4_option_words: 0,
            ipv6_ext: Vec::new(),
            fragment: Fragment::Whole,
            ipv4_ah: false,
            transport_cut: None,
            layout: Layout::default(),
            datagram: Vec::new(),
        };
        p.rebuild();
        p
    }

    /// The reply: addresses and ports swapped, new flags, plain headers.
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

    /// The same packet with `words` 32-bit IPv4 option words (IHL 5 + `words`, at most 10).
    #[must_use]
    pub fn with_ipv4_options(mut self, words: u8) -> Self {
        self.ipv4_option_words = words.min(10);
        self.rebuild();
        self
    }

    /// The same packet with IPv6 extension headers before the transport header.
    #[must_use]
    pub fn with_ipv6_ext(mut self, ext: &[Ipv6Ext]) -> Self {
        self.ipv6_ext = ext.to_vec();
        self.rebuild();
        self
    }

    /// The same packet as a fragment.
    #[must_use]
    pub fn as_fragment(mut self, f: Fragment) -> Self {
        self.fragment = f;
        self.rebuild();
        self
    }

    /// The same packet as a first fragment carrying only `bytes` bytes of its transport header
    /// (RFC 1858's tiny fragment: under 14 bytes of TCP the flags are in the next fragment,
    /// under 4 the ports are too).
    #[must_use]
    pub fn tiny_first_fragment(mut self, bytes: usize) -> Self {
        self.fragment = Fragment::First;
        self.transport_cut = Some(bytes);
        self.rebuild();
        self
    }

    /// The same packet with an authentication header (`IPsec` AH) before the transport header:
    /// after the IPv4 header, or as the last IPv6 extension header.
    #[must_use]
    pub fn with_ah(mut self) -> Self {
        match self.family {
            IpFamily::V4 => self.ipv4_ah = true,
            IpFamily::V6 => self.ipv6_ext.push(Ipv6Ext::Authentication),
        }
        self.rebuild();
        self
    }

    /// True if the packet holds its transport ports: not a later fragment, and a first fragment
    /// cut before them has none. WFP can report only ports the packet has (the double gives
    /// `FWP_EMPTY` otherwise).
    #[must_use]
    pub fn has_ports(&self) -> bool {
        !matches!(self.fragment, Fragment::NonFirst(_)) && self.transport_cut.is_none_or(|n| n >= 4)
    }

    /// The same bytes laid out in MDLs cut at these datagram offsets.
    #[must_use]
    pub fn split_at(mut self, cuts: &[usize]) -> Self {
        self.layout.cuts = cuts.to_vec();
        self
    }

    /// The same bytes with the data starting at offset 0 of the first MDL.
    #[must_use]
    pub fn without_mac_prefix(mut self) -> Self {
        self.layout.no_mac_prefix = true;
        self
    }

    /// Length of the IP header including IPv4 options or IPv6 extension headers (where the
    /// transport header starts).
    #[must_use]
    pub fn ip_header_len(&self) -> usize {
        match self.family {
            IpFamily::V4 => {
                20 + 4 * usize::from(self.ipv4_option_words)
                    + if self.ipv4_ah { ext_len(Ipv6Ext::Authentication) } else { 0 }
            }
            IpFamily::V6 => {
                40 + self.ipv6_ext.iter().map(|e| ext_len(*e)).sum::<usize>()
                    + if self.fragment == Fragment::Whole { 0 } else { 8 }
            }
        }
    }

    /// A packet from the bytes of its IP datagram (a capture's, or one built by a test),
    /// used as they are. The fields are what WFP reports in its values at the vSwitch
    /// transport layers, read by the double itself (etherparse), not by the callout's code:
    /// the upper-layer protocol after IPv6 extension headers; TCP and UDP ports; for ICMP and
    /// ICMPv6 the type in the source-port value and the code in the destination-port value
    /// (fwpsk.h: `FWPS_FIELD_*_VSWITCH_TRANSPORT_V4_ICMP_TYPE` is `..._IP_SOURCE_PORT`,
    /// `..._ICMP_CODE` is `..._IP_DESTINATION_PORT`); no ports for other protocols. A
    /// non-first fragment, or a first fragment too short to hold the ports, carries no port
    /// values (`FWP_EMPTY`: the documents are silent; the worse choice for the driver).
    ///
    /// # Errors
    /// The bytes do not start with an IPv4 or IPv6 header that etherparse can read: such a
    /// packet is not presented at the transport layers (verify on Windows).
    pub fn from_datagram(datagram: Vec<u8>) -> Result<Self, String> {
        let mut p = Self::read_values(&datagram)?;
        p.datagram = datagram;
        Ok(p)
    }

    fn read_values(datagram: &[u8]) -> Result<Self, String> {
        use etherparse::{LaxNetSlice, LaxSlicedPacket};
        let sliced = LaxSlicedPacket::from_ip(datagram).map_err(|e| e.to_string())?;
        let (family, src, dst, payload, first) = match &sliced.net {
            Some(LaxNetSlice::Ipv4(ip)) => {
                let h = ip.header();
                let src = vsflow_core::packet::v4(h.source());
                let dst = vsflow_core::packet::v4(h.destination());
                let first = h.fragments_offset().value() == 0;
                (IpFamily::V4, src, dst, ip.payload().clone(), first)
            }
            Some(LaxNetSlice::Ipv6(ip)) => {
                let h = ip.header();
                let first = first_fragment_v6(ip.extensions());
                (IpFamily::V6, h.source(), h.destination(), ip.payload().clone(), first)
            }
            _ => return Err("not an IP datagram".into()),
        };
        let proto = payload.ip_number.0;
        let l4 = payload.payload;
        let be16 = |at: usize| l4.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let icmp = match family {
            IpFamily::V4 => proto == protocol::ICMP,
            IpFamily::V6 => proto == protocol::ICMPV6,
        };
        let (ports, flags) = if !first {
            (None, 0)
        } else if proto == protocol::TCP || proto == protocol::UDP {
            let flags = if proto == protocol::TCP { l4.get(13).copied().unwrap_or(0) } else { 0 };
            (be16(0).zip(be16(2)), flags)
        } else if icmp {
            (l4.first().zip(l4.get(1)).map(|(t, c)| (u16::from(*t), u16::from(*c))), 0)
        } else {
            (Some((0, 0)), 0)
        };
        let fragment = match (first, payload.fragmented, ports) {
            (true, false, Some(_)) => Fragment::Whole,
            (true, true, Some(_)) => Fragment::First,
            // No port values: presented as a later fragment is.
            (_, _, _) => Fragment::NonFirst(1),
        };
        let (sport, dport) = ports.unwrap_or((0, 0));
        Ok(Self {
            family,
            protocol: proto,
            src,
            dst,
            sport,
            dport,
            flags,
            payload: l4.len(),
            ipv4_option_words: 0,
            ipv6_ext: Vec::new(),
            fragment,
            ipv4_ah: false,
            transport_cut: None,
            layout: Layout::default(),
            datagram: Vec::new(),
        })
    }

    fn transport(&self) -> Vec<u8> {
        let mut t = Vec::new();
        if let Fragment::NonFirst(_) = self.fragment {
            t.resize(self.payload.max(8), 0xCD);
            return t;
        }
        if matches!(self.protocol, protocol::ICMP | protocol::ICMPV6) {
            // Type and code (WFP's port values), checksum, and 4 zero bytes (identifier and
            // sequence of a query).
            let (ty, code) = (self.sport.to_be_bytes()[1], self.dport.to_be_bytes()[1]);
            t.extend_from_slice(&[ty, code, 0, 0, 0, 0, 0, 0]);
            t.resize(t.len() + self.payload, 0xAB);
            return t;
        }
        t.extend_from_slice(&self.sport.to_be_bytes());
        t.extend_from_slice(&self.dport.to_be_bytes());
        if self.protocol == protocol::TCP {
            // seq, ack, data offset 5 words, flags, window, checksum, urgent.
            t.extend_from_slice(&[
                0, 0, 0, 1, 0, 0, 0, 0, 0x50, self.flags, 0xff, 0xff, 0, 0, 0, 0,
            ]);
        } else {
            let len = u16::try_from(8 + self.payload).unwrap_or(u16::MAX);
            t.extend_from_slice(&len.to_be_bytes());
            t.extend_from_slice(&[0, 0]);
        }
        t.resize(t.len() + self.payload, 0xAB);
        if let Some(n) = self.transport_cut {
            t.truncate(n);
        }
        t
    }

    fn rebuild(&mut self) {
        let l4 = self.transport();
        let mut d = Vec::with_capacity(80 + l4.len());
        match self.family {
            IpFamily::V4 => {
                let ihl = 5 + self.ipv4_option_words;
                let hlen = usize::from(ihl) * 4;
                let ah = if self.ipv4_ah { ext_len(Ipv6Ext::Authentication) } else { 0 };
                let total = u16::try_from(hlen + ah + l4.len()).unwrap_or(u16::MAX);
                let frag: u16 = match self.fragment {
                    Fragment::Whole => 0x4000, // DF
                    Fragment::First => 0x2000, // MF, offset 0
                    Fragment::NonFirst(off) => off & 0x1fff,
                };
                d.extend_from_slice(&[0x40 | ihl, 0]);
                d.extend_from_slice(&total.to_be_bytes());
                d.extend_from_slice(&[0x12, 0x34]);
                d.extend_from_slice(&frag.to_be_bytes());
                let ip_protocol =
                    if self.ipv4_ah { Ipv6Ext::Authentication.number() } else { self.protocol };
                d.extend_from_slice(&[64, ip_protocol, 0, 0]);
                d.extend_from_slice(&self.src[..4]);
                d.extend_from_slice(&self.dst[..4]);
                for w in 0..self.ipv4_option_words {
                    // Router alert first (a real option with a length), NOPs after.
                    if w == 0 {
                        d.extend_from_slice(&[0x94, 0x04, 0, 0]);
                    } else {
                        d.extend_from_slice(&[0x01; 4]);
                    }
                }
                let sum = checksum(&d[..hlen]);
                d[10..12].copy_from_slice(&sum.to_be_bytes());
                if self.ipv4_ah {
                    // Next header, payload length (4-octet units minus 2), reserved, SPI,
                    // sequence number, a 96-bit ICV (RFC 4302 section 2).
                    d.extend_from_slice(&[self.protocol, 4, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 1]);
                    d.resize(d.len() + 12, 0x5A);
                }
            }
            IpFamily::V6 => {
                let mut chain: Vec<u8> = self.ipv6_ext.iter().map(|e| e.number()).collect();
                if self.fragment != Fragment::Whole {
                    chain.push(44);
                }
                let first = chain.first().copied().unwrap_or(self.protocol);
                let ext_bytes = self.ip_header_len() - 40;
                let payload_len = u16::try_from(ext_bytes + l4.len()).unwrap_or(u16::MAX);
                d.extend_from_slice(&[0x60, 0, 0, 0]);
                d.extend_from_slice(&payload_len.to_be_bytes());
                d.extend_from_slice(&[first, 64]);
                d.extend_from_slice(&self.src);
                d.extend_from_slice(&self.dst);
                for (i, e) in self.ipv6_ext.iter().enumerate() {
                    let next = chain.get(i + 1).copied().unwrap_or(self.protocol);
                    let len = ext_len(*e);
                    d.push(next);
                    if *e == Ipv6Ext::Authentication {
                        // Payload Len in 4-octet units minus 2, reserved, SPI, sequence, ICV.
                        d.push(u8::try_from(len / 4 - 2).unwrap_or(0));
                        d.extend_from_slice(&[0, 0, 0, 0, 0x01, 0x00, 0, 0, 0, 1]);
                        d.resize(d.len() + len - 12, 0x5A);
                        continue;
                    }
                    d.push(u8::try_from(len / 8 - 1).unwrap_or(0));
                    if *e == Ipv6Ext::Routing {
                        d.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // type 0, 0 segments left
                    } else {
                        // PadN covering the rest.
                        d.push(1);
                        d.push(u8::try_from(len - 4).unwrap_or(0));
                        d.resize(d.len() + len - 4, 0);
                    }
                }
                if self.fragment != Fragment::Whole {
                    let (off, more) = match self.fragment {
                        Fragment::NonFirst(off) => (off, 0),
                        _ => (0, 1),
                    };
                    d.push(self.protocol);
                    d.push(0);
                    d.extend_from_slice(&((off << 3) | more).to_be_bytes());
                    d.extend_from_slice(&0x1234_5678u32.to_be_bytes());
                }
            }
        }
        d.extend_from_slice(&l4);
        self.datagram = d;
    }
}

const fn ext_len(e: Ipv6Ext) -> usize {
    match e {
        Ipv6Ext::HopByHop | Ipv6Ext::Routing => 8,
        Ipv6Ext::DestinationOptions => 16,
        Ipv6Ext::Authentication => 24,
    }
}

fn checksum(h: &[u8]) -> u16 {
    let mut sum: u32 =
        h.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0)
}

/// The garbage the double leaves in the upper half of `NET_BUFFER`'s `SIZE_T stDataLength`.
pub const DATA_LENGTH_HIGH_GARBAGE: u32 = 0xA5A5_A5A5;

/// The MAC header the double leaves before `CurrentMdlOffset` in the first MDL.
const MAC_PREFIX: usize = 14;

/// A `NET_BUFFER_LIST` with one `NET_BUFFER` over an MDL chain, built from a datagram.
pub struct NetBufferList {
    /// The list.
    pub nbl: Box<sys::NET_BUFFER_LIST>,
    nb: Box<sys::NET_BUFFER>,
    #[allow(clippy::vec_box, reason = "each MDL at a fixed address the chain points to")]
    mdls: Vec<Box<sys::MDL>>,
    buffers: Vec<Vec<u8>>,
}

impl NetBufferList {
    /// Lays `p`'s datagram out as its [`Layout`] says.
    #[must_use]
    pub fn new(p: &SimPacket) -> Self {
        let prefix = if p.layout.no_mac_prefix { 0 } else { MAC_PREFIX };
        let mut cuts: Vec<usize> =
            p.layout.cuts.iter().copied().filter(|&c| c > 0 && c < p.datagram.len()).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut buffers = Vec::new();
        let mut start = 0;
        for end in cuts.into_iter().chain(std::iter::once(p.datagram.len())) {
            let mut b = Vec::with_capacity(end - start + prefix);
            if buffers.is_empty() {
                b.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2][..prefix.min(12)]);
                if prefix == MAC_PREFIX {
                    b.extend_from_slice(match p.family {
                        IpFamily::V4 => &[0x08, 0x00],
                        IpFamily::V6 => &[0x86, 0xDD],
                    });
                }
            }
            b.extend_from_slice(&p.datagram[start..end]);
            buffers.push(b);
            start = end;
        }
        let mut mdls: Vec<Box<sys::MDL>> = buffers
            .iter_mut()
            .map(|b| {
                let va = b.as_mut_ptr() as usize;
                Box::new(sys::MDL {
                    Next: std::ptr::null_mut(),
                    Size: 48 + 8,
                    MdlFlags: sys::MDL_SOURCE_IS_NONPAGED_POOL,
                    Process: std::ptr::null_mut(),
                    MappedSystemVa: b.as_mut_ptr().cast(),
                    StartVa: b.as_mut_ptr().wrapping_sub(va & 0xfff).cast(),
                    ByteCount: u32::try_from(b.len()).unwrap_or(0),
                    ByteOffset: u32::try_from(va & 0xfff).unwrap_or(0),
                })
            })
            .collect();
        for i in (1..mdls.len()).rev() {
            let next: *mut sys::MDL = &raw mut *mdls[i];
            mdls[i - 1].Next = next;
        }
        let first: *mut sys::MDL = &raw mut *mdls[0];
        let mut nb = Box::new(sys::NET_BUFFER {
            Next: std::ptr::null_mut(),
            CurrentMdl: first,
            CurrentMdlOffset: u32::try_from(prefix).unwrap_or(0),
            Padding0: 0,
            DataLength: u32::try_from(p.datagram.len()).unwrap_or(u32::MAX),
            stDataLengthHigh: DATA_LENGTH_HIGH_GARBAGE,
            MdlChain: first,
            DataOffset: u32::try_from(prefix).unwrap_or(0),
        });
        let nbl = Box::new(sys::NET_BUFFER_LIST {
            Next: std::ptr::null_mut(),
            FirstNetBuffer: &raw mut *nb,
        });
        Self { nbl, nb, mdls, buffers }
    }

    /// Every byte of every MDL (to detect a callout writing to the packet).
    #[must_use]
    pub fn bytes(&self) -> Vec<u8> {
        self.buffers.concat()
    }

    /// MDLs in the chain.
    #[must_use]
    pub fn mdl_count(&self) -> usize {
        self.mdls.len()
    }

    /// The `NET_BUFFER`.
    #[must_use]
    pub fn net_buffer(&mut self) -> *mut sys::NET_BUFFER {
        &raw mut *self.nb
    }
}

/// `NdisGetDataBuffer` as documented (ndis/nblapi.h).
///
/// Null if `DataLength` is less than
/// `bytes_needed`; a pointer into the buffer if the bytes are contiguous (and meet the
/// alignment asked for); otherwise a copy into `storage`, or null when `storage` is null.
///
/// # Safety
/// `nb` is null or a `NET_BUFFER` whose MDL chain is valid; `storage` is null or has
/// `bytes_needed` writable bytes.
pub unsafe fn get_data_buffer(
    nb: *mut sys::NET_BUFFER,
    bytes_needed: u32,
    storage: *mut c_void,
    align_multiple: u32,
    align_offset: u32,
) -> *mut c_void {
    // SAFETY: caller's contract.
    let Some(nb) = (unsafe { nb.as_ref() }) else { return std::ptr::null_mut() };
    if bytes_needed > nb.DataLength {
        return std::ptr::null_mut();
    }
    let needed = bytes_needed as usize;
    let mut mdl = nb.CurrentMdl;
    let mut off = nb.CurrentMdlOffset as usize;
    // SAFETY: the MDL chain is valid (caller's contract).
    let Some(first) = (unsafe { mdl.as_ref() }) else { return std::ptr::null_mut() };
    let in_first = (first.ByteCount as usize).saturating_sub(off);
    let here = first.MappedSystemVa.cast::<u8>().wrapping_add(off);
    let aligned =
        align_multiple <= 1 || (here as usize) % (align_multiple as usize) == align_offset as usize;
    if in_first >= needed && aligned {
        return here.cast();
    }
    if storage.is_null() {
        return std::ptr::null_mut();
    }
    let out = storage.cast::<u8>();
    let mut copied = 0;
    while copied < needed {
        // SAFETY: the chain is valid; a null link ends it.
        let Some(m) = (unsafe { mdl.as_ref() }) else { return std::ptr::null_mut() };
        let avail = (m.ByteCount as usize).saturating_sub(off);
        let n = avail.min(needed - copied);
        let src = m.MappedSystemVa.cast::<u8>().wrapping_add(off);
        let dst = out.wrapping_add(copied);
        // SAFETY: `n` bytes readable at `src` (inside the MDL's bytes); `dst` has room for them
        // (`storage` has `needed` writable bytes: caller's contract); no overlap.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, n) };
        copied += n;
        mdl = m.Next;
        off = 0;
    }
    storage
}

/// The values, metadata and `NET_BUFFER_LIST` of one classify call, kept alive while the call
/// runs.
pub struct ClassifyInput {
    /// The incoming values, indexed by field.
    pub values: Vec<FWPS_INCOMING_VALUE0>,
    /// The `NET_BUFFER_LIST` handed to classify as `layerData`.
    pub list: NetBufferList,
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
    /// switch named `switch_name`. A non-first fragment carries no ports: both port values
    /// are `FWP_EMPTY` (documents are silent on these layers; see WINDOWS-VERIFICATION).
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
            list: NetBufferList::new(p),
            // SAFETY: the metadata struct is plain data (integers and nullable pointers); all
            // zeroes is a valid value.
            meta: unsafe { std::mem::zeroed() },
            v6_src: Box::new(sys::FWP_BYTE_ARRAY16 { byteArray16: p.src }),
            v6_dst: Box::new(sys::FWP_BYTE_ARRAY16 { byteArray16: p.dst }),
            switch_blob: Box::new(sys::FWP_BYTE_BLOB { size: 0, data: std::ptr::null_mut() }),
            switch_bytes: switch_name.iter().flat_map(|u| u.to_le_bytes()).collect(),
        });
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
        if p.has_ports() {
            values[sys::FIELD_IP_SOURCE_PORT] =
                val(sys::FWP_UINT16, FWP_VALUE0_u { uint16: p.sport });
            values[sys::FIELD_IP_DESTINATION_PORT] =
                val(sys::FWP_UINT16, FWP_VALUE0_u { uint16: p.dport });
        }
        values[sys::FIELD_VSWITCH_ID] =
            val(sys::FWP_BYTE_BLOB_TYPE, FWP_VALUE0_u { byteBlob: &raw mut *me.switch_blob });
        me.values = values;
        me.meta.currentL2MetadataValues = sys::FWPS_L2_METADATA_FIELD_VSWITCH_SOURCE_PORT_ID
            | sys::FWPS_L2_METADATA_FIELD_VSWITCH_DESTINATION_PORT_ID;
        me.meta.vSwitchSourcePortId = src_port;
        me.meta.vSwitchDestinationPortId = dst_port;
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

    /// The `layerData` pointer for classify: the `NET_BUFFER_LIST`.
    #[must_use]
    pub fn layer_data(&mut self) -> *mut c_void {
        (&raw mut *self.list.nbl).cast()
    }
}

/// True unless a Fragment header among `exts` has a non-zero offset.
///
/// Walks only the headers etherparse validated (`exts.slice()`): its iterator assumes the
/// whole chain was, and when its lax parse stopped early (an AH shorter than RFC 4302's 12
/// bytes, say) it reads past the slice for the next header the chain names (etherparse
/// 0.21.0 `Ipv6ExtensionSliceIter`: `from_slice_unchecked`, a debug UB check aborts the test
/// process).
fn first_fragment_v6(exts: &etherparse::Ipv6ExtensionsSlice<'_>) -> bool {
    use etherparse::Ipv6ExtensionSlice as E;
    let total = exts.slice().len();
    let mut seen = 0;
    let mut iter = exts.clone().into_iter();
    while seen < total {
        let Some(e) = iter.next() else { break };
        seen += match e {
            E::HopByHop(x) | E::Routing(x) | E::DestinationOptions(x) => x.slice().len(),
            E::Authentication(a) => a.slice().len(),
            E::Fragment(f) => {
                if f.fragment_offset().value() != 0 {
                    return false;
                }
                f.slice().len()
            }
        };
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(family: IpFamily) -> SimPacket {
        let (s, d) = match family {
            IpFamily::V4 => {
                (vsflow_core::packet::v4([10, 0, 0, 2]), vsflow_core::packet::v4([10, 0, 0, 3]))
            }
            IpFamily::V6 => ([0xfd; 16], [0x20; 16]),
        };
        SimPacket::new(family, protocol::TCP, s, 1000, d, 22, 0x02, 10)
    }

    fn read(p: &SimPacket, needed: u32, with_storage: bool) -> (Option<Vec<u8>>, bool) {
        let mut l = NetBufferList::new(p);
        let mut storage = vec![0u8; needed as usize];
        let sp: *mut c_void =
            if with_storage { storage.as_mut_ptr().cast() } else { std::ptr::null_mut() };
        // SAFETY: the list is valid; storage has `needed` bytes or is null.
        let r = unsafe { get_data_buffer(l.net_buffer(), needed, sp, 1, 0) };
        if r.is_null() {
            return (None, false);
        }
        let copied = r == sp;
        // SAFETY: NDIS's contract: `needed` readable bytes at `r`.
        let v = unsafe { std::slice::from_raw_parts(r.cast::<u8>(), needed as usize) }.to_vec();
        (Some(v), copied)
    }

    #[test]
    fn data_starts_at_the_ip_header_after_a_mac_prefix_in_the_first_mdl() {
        let p = tcp(IpFamily::V4);
        let l = NetBufferList::new(&p);
        assert_eq!(l.nb.CurrentMdlOffset, 14);
        assert_eq!(l.nb.DataOffset, 14);
        assert_eq!(l.nb.stDataLengthHigh, DATA_LENGTH_HIGH_GARBAGE);
        let (v, copied) = read(&p, 20, true);
        assert_eq!(v.as_deref(), Some(&p.datagram[..20]));
        assert!(!copied, "contiguous data is returned in place");
        assert_eq!(p.datagram[0] >> 4, 4);
    }

    #[test]
    fn a_chain_split_inside_the_headers_is_copied_into_storage_or_null_without_it() {
        let p = tcp(IpFamily::V4).split_at(&[7, 23]);
        assert_eq!(NetBufferList::new(&p).mdl_count(), 3);
        let (v, copied) = read(&p, 40, true);
        assert_eq!(v.as_deref(), Some(&p.datagram[..40]));
        assert!(copied);
        assert_eq!(read(&p, 40, false).0, None);
        // Within the first MDL it is still in place.
        assert_eq!(read(&p, 7, false).0.as_deref(), Some(&p.datagram[..7]));
    }

    #[test]
    fn asking_for_more_than_data_length_returns_null() {
        let p = tcp(IpFamily::V6);
        let n = u32::try_from(p.datagram.len()).unwrap_or(0);
        assert!(read(&p, n, true).0.is_some());
        assert_eq!(read(&p, n + 1, true).0, None);
    }

    #[test]
    fn ipv4_options_and_ipv6_extension_headers_move_the_transport_header() {
        let p = tcp(IpFamily::V4).with_ipv4_options(3);
        assert_eq!(p.datagram[0], 0x48);
        assert_eq!(p.ip_header_len(), 32);
        assert_eq!(p.datagram[32 + 13], 0x02, "TCP flags after the options");
        assert_eq!(checksum(&p.datagram[..32]), 0, "header checksum is valid");
        let p6 = tcp(IpFamily::V6).with_ipv6_ext(&[Ipv6Ext::HopByHop, Ipv6Ext::DestinationOptions]);
        assert_eq!(p6.datagram[6], 0, "next header: hop-by-hop");
        assert_eq!(p6.datagram[40], 60, "then destination options");
        assert_eq!(p6.datagram[48], protocol::TCP, "then TCP");
        assert_eq!(p6.ip_header_len(), 64);
        assert_eq!(p6.datagram[64 + 13], 0x02);
    }

    #[test]
    fn a_non_first_fragment_has_no_transport_header_and_no_port_values() {
        let p = tcp(IpFamily::V4).as_fragment(Fragment::NonFirst(185));
        assert_eq!(u16::from_be_bytes([p.datagram[6], p.datagram[7]]) & 0x1fff, 185);
        let mut input = ClassifyInput::new(&p, true, 1, 2, &[]);
        let v = input.incoming(sys::FWPS_LAYER_INGRESS_VSWITCH_TRANSPORT_V4);
        // SAFETY: `valueCount` values at `incomingValue`.
        let vals = unsafe { std::slice::from_raw_parts(v.incomingValue, v.valueCount as usize) };
        assert_eq!(vals[sys::FIELD_IP_SOURCE_PORT].value.r#type, sys::FWP_EMPTY);
        assert_eq!(vals[sys::FIELD_IP_DESTINATION_PORT].value.r#type, sys::FWP_EMPTY);
        let f6 = tcp(IpFamily::V6).as_fragment(Fragment::NonFirst(3));
        assert_eq!(f6.datagram[6], 44, "fragment header");
    }

    #[test]
    fn a_tiny_first_fragment_cut_before_the_ports_has_no_port_values() {
        let port_values = |p: &SimPacket| {
            let mut input = ClassifyInput::new(p, true, 1, 2, &[]);
            let v = input.incoming(sys::FWPS_LAYER_INGRESS_VSWITCH_TRANSPORT_V4);
            // SAFETY: `valueCount` values at `incomingValue`.
            let vals =
                unsafe { std::slice::from_raw_parts(v.incomingValue, v.valueCount as usize) };
            (
                vals[sys::FIELD_IP_SOURCE_PORT].value.r#type,
                vals[sys::FIELD_IP_DESTINATION_PORT].value.r#type,
            )
        };
        // 8 bytes of TCP: ports, no flags (RFC 1858).
        let p = tcp(IpFamily::V4).tiny_first_fragment(8);
        assert_eq!(p.datagram.len(), 28);
        assert_eq!(u16::from_be_bytes([p.datagram[2], p.datagram[3]]), 28, "total length");
        assert_eq!(u16::from_be_bytes([p.datagram[6], p.datagram[7]]), 0x2000, "MF, offset 0");
        assert_eq!(checksum(&p.datagram[..20]), 0);
        assert_eq!(port_values(&p), (sys::FWP_UINT16, sys::FWP_UINT16));
        // 2 bytes: not even the destination port.
        let q = tcp(IpFamily::V4).tiny_first_fragment(2);
        assert!(!q.has_ports());
        assert_eq!(port_values(&q), (sys::FWP_EMPTY, sys::FWP_EMPTY));
    }

    #[test]
    fn an_ipv4_authentication_header_sits_between_the_ip_and_transport_headers() {
        let p = tcp(IpFamily::V4).with_ah();
        assert_eq!(p.datagram[9], 51, "IPv4 protocol: AH");
        assert_eq!(p.datagram[20], protocol::TCP, "AH next header");
        assert_eq!(usize::from(p.datagram[21] + 2) * 4, 24, "AH length (RFC 4302)");
        assert_eq!(p.ip_header_len(), 44);
        assert_eq!(p.datagram[44 + 13], 0x02, "TCP flags after the AH");
        assert_eq!(
            usize::from(u16::from_be_bytes([p.datagram[2], p.datagram[3]])),
            p.datagram.len()
        );
        assert_eq!(checksum(&p.datagram[..20]), 0);
        let p6 = tcp(IpFamily::V6).with_ipv6_ext(&[Ipv6Ext::HopByHop]).with_ah();
        assert_eq!(p6.datagram[40], 51, "hop-by-hop, then AH");
        assert_eq!(p6.datagram[48], protocol::TCP);
        assert_eq!(p6.datagram[p6.ip_header_len() + 13], 0x02);
    }

    #[test]
    fn an_ipv6_authentication_header_counts_its_length_in_4_octet_units() {
        let p = tcp(IpFamily::V6).with_ipv6_ext(&[Ipv6Ext::Authentication]);
        assert_eq!(p.datagram[6], 51, "next header: AH");
        assert_eq!(p.datagram[40], protocol::TCP, "then TCP");
        assert_eq!(p.datagram[41], 4, "24 bytes = (4 + 2) x 4 (RFC 4302)");
        assert_eq!(p.ip_header_len(), 64);
        assert_eq!(p.datagram[64 + 13], 0x02, "the TCP flags after the AH");
    }
}
