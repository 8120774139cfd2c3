//! `vsflow-sim replay`: a packet capture through vsflow, per flow what it would do and why.
//!
//! Reading order: [`read_capture`] (pcap or pcapng, every link type a capture of a VM's NIC
//! or a host interface gives) -> [`datagram`] (the link header stripped: at the vSwitch
//! transport layers the data starts at the IP header) -> [`replay`] (each IP datagram the VM
//! sent or received, in capture order with the capture's timestamps, sent across a simulated
//! switch between the VM's port and the external port, so the shipped callout classifies it at
//! the ingress and egress transport layers) -> [`Report`] (per packet and per flow, the
//! verdicts, the flow's final state in the driver's table, and why).
//!
//! The verdicts are the driver's own (the callout through the WFP double, one path); the
//! explanations are the tool's, from the packet's headers and the driver's flow table.
//! A save and restore to a second host can be put in the middle ([`ReplayOptions::migrate_at`]):
//! the packets after it are classified on the destination host.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use fwps_sys as sys;
use vsflow_callout::{DriverConfig, RestoreMode};
use vsflow_core::codec::SavedFlow;
use vsflow_core::policy::AllowRule;
use vsflow_core::{FlowKey, Icmp, IpFamily, Mode, icmp, protocol};

use crate::host::{EXTERNAL_PORT, Host, PacketFate};
use crate::vswitch::packet::SimPacket;

/// A captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Capture time, nanoseconds since the epoch.
    pub ts_ns: u64,
    /// The link type (`LINKTYPE_*`).
    pub link: u32,
    /// The captured bytes.
    pub data: Vec<u8>,
}

/// `LINKTYPE_ETHERNET`.
pub const LINK_ETHERNET: u32 = 1;
/// `LINKTYPE_RAW` (IPv4 or IPv6, no link header).
pub const LINK_RAW: u32 = 101;
/// `LINKTYPE_LINUX_SLL`.
pub const LINK_SLL: u32 = 113;
/// `LINKTYPE_IPV4`.
pub const LINK_IPV4: u32 = 228;
/// `LINKTYPE_IPV6`.
pub const LINK_IPV6: u32 = 229;
/// `LINKTYPE_LINUX_SLL2`.
pub const LINK_SLL2: u32 = 276;
/// `LINKTYPE_NULL` (BSD loopback: a 4-byte address family).
pub const LINK_NULL: u32 = 0;
/// `LINKTYPE_LOOP` (OpenBSD loopback).
pub const LINK_LOOP: u32 = 108;

/// A capture's frames, and the damage that ended the reading early, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capture {
    /// The frames read, in file order; each is whole (as the capture recorded it).
    pub frames: Vec<Frame>,
    /// Why the reading stopped before the end of the file: a record cut short (the writer
    /// was stopped in the middle of one: a killed tcpdump, a full disk) or damaged. The
    /// frames before it are in [`Capture::frames`], nothing after it is read.
    pub damaged: Option<String>,
}

/// Reads a pcap or pcapng file's frames.
///
/// A file that is cut or damaged after its header gives the frames before the damage and
/// says where ([`Capture::damaged`]): a customer's capture stopped mid-record is still worth
/// replaying, and the report must say it is incomplete. Nothing is guessed past the damage
/// (pcapfix's business, not a firewall's).
///
/// # Errors
/// Neither format: no readable file header.
pub fn read_capture(bytes: &[u8]) -> Result<Capture, String> {
    let magic = bytes.get(..4).ok_or("shorter than a capture header")?;
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] { read_pcapng(bytes) } else { read_pcap(bytes) }
}

/// The frames read before the damage, and which frame could not be read and why.
fn cut_short(frames: Vec<Frame>, why: &impl std::fmt::Display) -> Capture {
    let damaged =
        format!("frame {} unreadable ({why}); the rest of the file is not read", frames.len());
    Capture { frames, damaged: Some(damaged) }
}

fn read_pcap(bytes: &[u8]) -> Result<Capture, String> {
    let mut reader = pcap_file::pcap::PcapReader::new(bytes).map_err(|e| e.to_string())?;
    let header = reader.header();
    let link = u32::from(header.datalink);
    let nanos = header.ts_resolution == pcap_file::TsResolution::NanoSecond;
    let mut frames = Vec::new();
    // The raw records: pcap-file 2.0's checked path refuses a record whose original length
    // is over the snapshot length, which is every truncated capture.
    while let Some(p) = reader.next_raw_packet() {
        let p = match p {
            Ok(p) => p,
            Err(e) => return Ok(cut_short(frames, &e)),
        };
        let frac = u64::from(p.ts_frac) * if nanos { 1 } else { 1_000 };
        let ts_ns = u64::from(p.ts_sec) * 1_000_000_000 + frac;
        frames.push(Frame { ts_ns, link, data: p.data.into_owned() });
    }
    Ok(Capture { frames, damaged: None })
}

fn read_pcapng(bytes: &[u8]) -> Result<Capture, String> {
    use pcap_file::pcapng::{Block, PcapNgReader};
    let mut reader = PcapNgReader::new(bytes).map_err(|e| e.to_string())?;
    let mut frames = Vec::new();
    while let Some(block) = reader.next_block() {
        let block = match block {
            Ok(b) => b,
            Err(e) => return Ok(cut_short(frames, &e)),
        };
        let (iface, ts, data) = match block {
            Block::EnhancedPacket(p) => (Some(p.interface_id), p.timestamp, p.data.into_owned()),
            Block::SimplePacket(p) => (Some(0), std::time::Duration::ZERO, p.data.into_owned()),
            _ => (None, std::time::Duration::ZERO, Vec::new()),
        };
        let Some(iface) = iface else { continue };
        let Some(link) = reader.interfaces().get(iface as usize).map(|i| u32::from(i.linktype))
        else {
            let why = format!("a packet of interface {iface}, which no block declared");
            return Ok(cut_short(frames, &why));
        };
        let ts_ns = ts.as_secs() * 1_000_000_000 + u64::from(ts.subsec_nanos());
        frames.push(Frame { ts_ns, link, data });
    }
    Ok(Capture { frames, damaged: None })
}

/// Source and destination MAC of an Ethernet frame.
pub type Macs = Option<([u8; 6], [u8; 6])>;

/// The IP datagram a frame carries (link header stripped, Ethernet padding trimmed) and its
/// MAC addresses, or `None` for a frame that carries no IPv4 or IPv6 datagram (ARP, ...).
#[must_use]
pub fn datagram(frame: &Frame) -> Option<(&[u8], Macs)> {
    let d = &frame.data;
    let (ip, macs) = match frame.link {
        LINK_ETHERNET => {
            let mac = |at: usize| -> Option<[u8; 6]> { d.get(at..at + 6)?.try_into().ok() };
            let macs = Some((mac(6)?, mac(0)?));
            let mut at = 12;
            let mut ethertype = u16::from_be_bytes([*d.get(at)?, *d.get(at + 1)?]);
            // 802.1Q and 802.1ad tags.
            while ethertype == 0x8100 || ethertype == 0x88a8 {
                at += 4;
                ethertype = u16::from_be_bytes([*d.get(at)?, *d.get(at + 1)?]);
            }
            if ethertype != 0x0800 && ethertype != 0x86dd {
                return None;
            }
            (d.get(at + 2..)?, macs)
        }
        LINK_RAW | LINK_IPV4 | LINK_IPV6 => (&d[..], None),
        LINK_SLL => (d.get(16..)?, None),
        LINK_SLL2 => (d.get(20..)?, None),
        LINK_NULL | LINK_LOOP => (d.get(4..)?, None),
        _ => return None,
    };
    // A frame that says it carries IP but whose header is not one is the datagram all the
    // same: reading it is `SimPacket::from_datagram`'s (malformed, counted), not "not IP".
    let version = *ip.first()? >> 4;
    let field = |at: usize| Some(usize::from(u16::from_be_bytes([*ip.get(at)?, *ip.get(at + 1)?])));
    let len = match version {
        4 => field(2),
        6 => field(4).map(|n| n + 40),
        _ => None,
    };
    let Some(len) = len else { return Some((ip, macs)) };
    // Trim the link layer's padding; a truncated capture keeps what it has.
    Some((ip.get(..len.clamp(1, ip.len())).unwrap_or(ip), macs))
}

/// Which side of the capture is the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmSide {
    /// The frames from this MAC are the VM's; frames to it (or to a group address, from
    /// another MAC) are for the VM.
    Mac([u8; 6]),
    /// The packets from this address are the VM's; packets to it (or to a multicast or
    /// broadcast address, from another address) are for the VM.
    Ip(IpFamily, [u8; 16]),
    /// The source address of the first IP packet (the side that spoke first).
    FirstSender,
}

/// What to replay, and how.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// The VM's side.
    pub vm: VmSide,
    /// The port's mode.
    pub mode: Mode,
    /// The port's allow rules.
    pub rules: Vec<AllowRule>,
    /// Save the port's runtime state on one host and restore it on another before the
    /// packet with this index (0-based, counting the VM's packets only).
    pub migrate_at: Option<usize>,
    /// Restore mode of the destination host.
    pub restore_mode: RestoreMode,
    /// Loose pickup after a restore (the driver's `LoosePickup`).
    pub loose_pickup: bool,
    /// Capture times (nanoseconds) at which to record the driver's flow table: before the
    /// first frame later than each, or at the end.
    pub snapshots: Vec<u64>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            vm: VmSide::FirstSender,
            mode: Mode::Enforce,
            rules: Vec::new(),
            migrate_at: None,
            restore_mode: RestoreMode::Synchronous,
            loose_pickup: false,
            snapshots: Vec::new(),
        }
    }
}

/// Direction of a packet from the VM's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dir {
    /// Sent by the VM.
    Out,
    /// Sent to the VM.
    In,
}

/// The fate of one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Classified: permitted.
    Permitted,
    /// Classified: blocked.
    Blocked,
    /// No IP datagram (ARP, other link types).
    NotIp,
    /// An IP datagram the double cannot read as one (the vSwitch would not present it at
    /// the transport layers); the reason.
    Malformed(String),
    /// Neither from nor to the VM.
    NotTheVms,
}

/// One frame of the capture.
#[derive(Clone, Debug)]
pub struct PacketResult {
    /// Frame index in the capture (0-based).
    pub index: usize,
    /// Capture time, nanoseconds.
    pub ts_ns: u64,
    /// Direction, for the VM's packets.
    pub dir: Option<Dir>,
    /// What happened.
    pub fate: Fate,
    /// The conversation the packet belongs to (see [`Conversation`]).
    pub conversation: Option<Conversation>,
    /// Why it was blocked (the tool's explanation).
    pub why: Option<String>,
    /// An ICMP error about [`PacketResult::conversation`].
    pub error: bool,
}

/// A conversation as the tool groups packets, from the VM's point of view.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Conversation {
    /// Address family.
    pub family: IpFamily,
    /// IP protocol of the flow (of the quoted packet for an ICMP error).
    pub protocol: u8,
    /// What it is: `tcp`, `udp`, `icmp echo`, `neighbor discovery`, `proto 47`, ...
    pub kind: String,
    /// The VM's address.
    pub local: [u8; 16],
    /// The peer's address.
    pub remote: [u8; 16],
    /// The VM's port (an ICMP query's identifier).
    pub local_port: u16,
    /// The peer's port.
    pub remote_port: u16,
}

impl Conversation {
    /// `kind local:port <-> remote:port`.
    #[must_use]
    pub fn label(&self) -> String {
        let a = |x: &[u8; 16]| addr_text(self.family, x);
        let ports = self.kind == "tcp" || self.kind == "udp";
        if ports {
            format!(
                "{} {}:{} <-> {}:{}",
                self.kind,
                a(&self.local),
                self.local_port,
                a(&self.remote),
                self.remote_port
            )
        } else {
            format!("{} {} <-> {}", self.kind, a(&self.local), a(&self.remote))
        }
    }
}

/// An address for a person.
#[must_use]
pub fn addr_text(family: IpFamily, a: &[u8; 16]) -> String {
    match family {
        IpFamily::V4 => std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string(),
        IpFamily::V6 => format!("[{}]", std::net::Ipv6Addr::from(*a)),
    }
}

/// What the replay found for one conversation.
#[derive(Clone, Debug, Default)]
pub struct FlowSummary {
    /// Packets out, in.
    pub packets: [u64; 2],
    /// Blocked out, in.
    pub blocked: [u64; 2],
    /// Who spoke first.
    pub first: Option<Dir>,
    /// The driver's record of the flow at the end, if it tracks one.
    pub record: Option<SavedFlow>,
    /// ICMP errors related to this conversation (permitted, blocked).
    pub related_errors: [u64; 2],
    /// Why packets were blocked (the first explanation).
    pub why: Option<String>,
}

/// The replay's findings.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Per frame.
    pub packets: Vec<PacketResult>,
    /// Per conversation.
    pub flows: BTreeMap<Conversation, FlowSummary>,
    /// The port's counters at the end (`PortCounters::ALL_NAMES` order).
    pub counters: Vec<(String, u64)>,
    /// The migration happened before this frame index.
    pub migrated_before: Option<usize>,
    /// The driver's flows at each of [`ReplayOptions::snapshots`].
    pub snapshots: Vec<(u64, Vec<SavedFlow>)>,
}

impl Report {
    /// Frames with this fate.
    #[must_use]
    pub fn count(&self, f: impl Fn(&Fate) -> bool) -> usize {
        self.packets.iter().filter(|p| f(&p.fate)).count()
    }

    /// Permitted and blocked packets.
    #[must_use]
    pub fn classified(&self) -> (usize, usize) {
        (self.count(|f| *f == Fate::Permitted), self.count(|f| *f == Fate::Blocked))
    }

    /// A counter of the port, by name.
    #[must_use]
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v)
    }

    /// The report for a person: totals, then one line per conversation.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let (permitted, blocked) = self.classified();
        let _ = writeln!(
            s,
            "frames {}: classified {} (permitted {permitted}, blocked {blocked}), not IP {}, malformed {}, not the VM's {}",
            self.packets.len(),
            permitted + blocked,
            self.count(|f| *f == Fate::NotIp),
            self.count(|f| matches!(f, Fate::Malformed(_))),
            self.count(|f| *f == Fate::NotTheVms),
        );
        if let Some(at) = self.migrated_before {
            let _ = writeln!(s, "migrated to a second host before frame {at}");
        }
        for (c, f) in &self.flows {
            let state = f.record.map_or_else(
                || "not tracked".to_owned(),
                |r| format!("{} (opened by {:?})", r.state.name(), r.opener),
            );
            let first = match f.first {
                Some(Dir::Out) => "VM spoke first",
                Some(Dir::In) => "peer spoke first",
                None => "",
            };
            let _ = write!(
                s,
                "{}: out {} in {}, blocked out {} in {}; {state}; {first}",
                c.label(),
                f.packets[0],
                f.packets[1],
                f.blocked[0],
                f.blocked[1],
            );
            if f.related_errors != [0, 0] {
                let _ = write!(
                    s,
                    "; related ICMP errors permitted {} blocked {}",
                    f.related_errors[0], f.related_errors[1]
                );
            }
            if let Some(why) = &f.why {
                let _ = write!(s, "; blocked because {why}");
            }
            s.push('\n');
        }
        for p in &self.packets {
            if let Fate::Malformed(why) = &p.fate {
                let _ = writeln!(s, "frame {}: malformed ({why})", p.index);
            }
        }
        s
    }
}

/// The switch port the VM is on in the replay.
pub const VM_PORT: u32 = 2;
const PORT_NAME: &str = "replay-vm";

fn host(seed: u64, config: DriverConfig, restoring: bool) -> (Host, usize) {
    let mut h = Host::new(seed);
    // A driver that does not load is a bug of the tool's configuration, not of the capture.
    h.load_driver(config).unwrap_or_else(|s| panic!("driver does not load: {s:#x}"));
    let sw = h.create_switch("replay", &[]);
    let _ = h.create_port(sw, VM_PORT, PORT_NAME, restoring);
    let _ = h.nic_event(sw, VM_PORT, 1, sys::FWPS_VSWITCH_EVENT_INTERFACE_CREATE);
    let _ = h.nic_event(sw, VM_PORT, 1, sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT);
    (h, sw)
}

/// Replays `frames` through vsflow (see the module docs).
#[must_use]
pub fn replay(frames: &[Frame], opts: &ReplayOptions) -> Report {
    let config = DriverConfig {
        default_mode: opts.mode,
        restore_mode: opts.restore_mode,
        loose_pickup: opts.loose_pickup,
        ..DriverConfig::default()
    };
    let mut pending_snapshots: Vec<u64> = opts.snapshots.clone();
    pending_snapshots.sort_unstable();
    pending_snapshots.reverse();
    let (mut h, mut sw) = host(1, config, false);
    let _ = h.replace_rules_everywhere(&opts.rules);
    let mut report = Report::default();
    let mut vm = opts.vm;
    let mut last_ts: Option<u64> = None;
    let mut vm_packets = 0usize;
    let mut old_hosts = Vec::new();
    for (index, frame) in frames.iter().enumerate() {
        while pending_snapshots.last().is_some_and(|&t| t < frame.ts_ns) {
            let t = pending_snapshots.pop().unwrap_or_default();
            report.snapshots.push((t, flows(&h)));
        }
        let mut result = PacketResult {
            index,
            ts_ns: frame.ts_ns,
            dir: None,
            fate: Fate::NotIp,
            conversation: None,
            why: None,
            error: false,
        };
        let Some((ip, macs)) = datagram(frame) else {
            report.packets.push(result);
            continue;
        };
        let packet = match SimPacket::from_datagram(ip.to_vec()) {
            Ok(p) => p,
            Err(why) => {
                result.fate = Fate::Malformed(why);
                report.packets.push(result);
                continue;
            }
        };
        if vm == VmSide::FirstSender {
            vm = VmSide::Ip(packet.family, packet.src);
        }
        let Some(dir) = direction(vm, &packet, macs) else {
            result.fate = Fate::NotTheVms;
            report.packets.push(result);
            continue;
        };
        if opts.migrate_at == Some(vm_packets) {
            let (blobs, _) = h.save(sw, VM_PORT);
            let (b, sb) = host(2, config, true);
            b.advance(h.now());
            let _ = b.restore(sb, VM_PORT, &blobs);
            b.run_deferred();
            old_hosts.push(std::mem::replace(&mut h, b));
            sw = sb;
            report.migrated_before = Some(index);
        }
        vm_packets += 1;
        // The frames' own time: the host's clock moves by the capture's gaps (100 ns ticks).
        if let Some(prev) = last_ts
            && frame.ts_ns > prev
        {
            h.advance((frame.ts_ns - prev) / 100);
        }
        last_ts = Some(last_ts.map_or(frame.ts_ns, |p| p.max(frame.ts_ns)));
        let fate = match dir {
            Dir::Out => h.transmit(sw, VM_PORT, EXTERNAL_PORT, &packet),
            Dir::In => h.transmit(sw, EXTERNAL_PORT, VM_PORT, &packet),
        };
        result.dir = Some(dir);
        result.fate = if fate == PacketFate::Delivered { Fate::Permitted } else { Fate::Blocked };
        let conv = conversation(dir, &packet);
        if result.fate == Fate::Blocked {
            result.why = Some(explain(&h, dir, &packet));
        }
        result.conversation = Some(conv);
        result.error = is_error(&packet);
        report.packets.push(result);
    }
    while let Some(t) = pending_snapshots.pop() {
        report.snapshots.push((t, flows(&h)));
    }
    summarize(&h, &mut report);
    drop(old_hosts);
    report
}

fn is_group(family: IpFamily, a: &[u8; 16]) -> bool {
    match family {
        IpFamily::V4 => a[0] >= 224 || a[..4] == [255; 4],
        IpFamily::V6 => a[0] == 0xff,
    }
}

fn direction(vm: VmSide, p: &SimPacket, macs: Macs) -> Option<Dir> {
    match vm {
        VmSide::Mac(m) => {
            let (src, dst) = macs?;
            if src == m {
                Some(Dir::Out)
            } else if dst == m || dst[0] & 1 == 1 {
                Some(Dir::In)
            } else {
                None
            }
        }
        VmSide::Ip(family, a) => {
            if p.family != family {
                None
            } else if p.src == a {
                Some(Dir::Out)
            } else if p.dst == a || is_group(family, &p.dst) {
                Some(Dir::In)
            } else {
                None
            }
        }
        VmSide::FirstSender => None,
    }
}

/// The conversation of a packet: ICMP errors belong to the conversation they quote.
fn conversation(dir: Dir, p: &SimPacket) -> Conversation {
    let (local, remote) = if dir == Dir::Out { (p.src, p.dst) } else { (p.dst, p.src) };
    let base = |kind: String, lp: u16, rp: u16| Conversation {
        family: p.family,
        protocol: p.protocol,
        kind,
        local,
        remote,
        local_port: lp,
        remote_port: rp,
    };
    if icmp::is_icmp(p.family, p.protocol) {
        return match icmp::read(&p.datagram) {
            Icmp::Query { kind, id, request } => {
                let asked = if (dir == Dir::Out) == request { "VM asks" } else { "peer asks" };
                base(format!("icmp query type {kind} id {id} ({asked})"), id, u16::from(kind))
            }
            Icmp::Error(q) => {
                let (qlocal, qremote) =
                    if dir == Dir::In { (p.dst, q.dst_addr) } else { (q.dst_addr, p.dst) };
                let kind = match q.protocol {
                    protocol::TCP => "tcp".to_owned(),
                    protocol::UDP => "udp".to_owned(),
                    n => format!("proto {n}"),
                };
                let (lp, rp) = if dir == Dir::In {
                    (q.src_port, q.dst_port)
                } else {
                    (q.dst_port, q.src_port)
                };
                match q.query {
                    Some((request, kind, id)) => {
                        let asked =
                            if (dir == Dir::In) == request { "VM asks" } else { "peer asks" };
                        Conversation {
                            protocol: q.protocol,
                            kind: format!("icmp query type {kind} id {id} ({asked})"),
                            local: qlocal,
                            remote: qremote,
                            local_port: id,
                            remote_port: u16::from(kind),
                            family: p.family,
                        }
                    }
                    None => Conversation {
                        family: p.family,
                        protocol: q.protocol,
                        kind,
                        local: qlocal,
                        remote: qremote,
                        local_port: lp,
                        remote_port: rp,
                    },
                }
            }
            Icmp::Link { .. } => base("neighbor discovery and MLD".to_owned(), 0, 0),
            _ => base(format!("icmp type {}", p.sport), 0, 0),
        };
    }
    let (lp, rp) = if dir == Dir::Out { (p.sport, p.dport) } else { (p.dport, p.sport) };
    match p.protocol {
        protocol::TCP => base("tcp".to_owned(), lp, rp),
        protocol::UDP => base("udp".to_owned(), lp, rp),
        n => base(format!("proto {n}"), lp, rp),
    }
}

fn is_error(p: &SimPacket) -> bool {
    icmp::is_icmp(p.family, p.protocol) && matches!(icmp::read(&p.datagram), Icmp::Error(_))
}

/// The tool's explanation of a block: from the packet's headers and whether the driver tracks
/// its flow.
fn explain(h: &Host, dir: Dir, p: &SimPacket) -> String {
    if dir == Dir::Out {
        return "the VM's own packet was blocked (vsflow never blocks those: a bug)".to_owned();
    }
    if icmp::is_icmp(p.family, p.protocol) {
        return match icmp::read(&p.datagram) {
            Icmp::Query { request: false, .. } => {
                "an ICMP reply without a tracked request".to_owned()
            }
            Icmp::Query { request: true, .. } => {
                "a peer's ICMP request that no allow rule admits".to_owned()
            }
            Icmp::Error(q) if !q.to_sender => {
                "an ICMP error not addressed to the sender of the packet it quotes".to_owned()
            }
            Icmp::Error(_) => {
                "an ICMP error whose quoted packet belongs to no tracked flow".to_owned()
            }
            Icmp::Link { .. } => {
                "neighbor discovery or MLD not from the link (hop limit or source address)"
                    .to_owned()
            }
            Icmp::LaterFragment => "a later ICMP fragment (not expected to be blocked)".to_owned(),
            Icmp::OverlappingFragment => {
                "a later ICMP fragment within the bytes read of its first fragment (it may rewrite an error's quote, RFC 1858 3.3) that no rule admitting every type admits"
                    .to_owned()
            }
            _ => {
                "an ICMP message of no flow (unknown type or unreadable) that no allow rule admits"
                    .to_owned()
            }
        };
    }
    let key = FlowKey {
        family: p.family,
        protocol: p.protocol,
        local_addr: p.dst,
        remote_addr: p.src,
        local_port: p.dport,
        remote_port: p.sport,
    };
    if flows(h).iter().any(|f| f.key == key) {
        "its flow is tracked but was admitted by rules that no longer admit it".to_owned()
    } else {
        "unsolicited: no tracked flow, and no allow rule admits it".to_owned()
    }
}

/// The driver's flows of the VM's port, through the `GetFlows` IOCTL.
fn flows(h: &Host) -> Vec<SavedFlow> {
    use vsflow_proto::request::Request;
    let Some(port) = h.list_ports().into_iter().find(|p| p.name.to_string() == PORT_NAME) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut start = 0;
    loop {
        let (status, bytes) =
            h.control(&Request::GetFlows { port: port.port, start, max: 256 }, 1 << 20);
        if status != 0 {
            break;
        }
        let Ok(page) = vsflow_proto::response::decode_flows(&bytes, |f| found.push(f)) else {
            break;
        };
        start = page.next;
        if page.next == vsflow_proto::response::FLOWS_END {
            break;
        }
    }
    found
}

fn counters(h: &Host) -> Vec<(String, u64)> {
    use vsflow_proto::request::Request;
    let Some(port) = h.list_ports().into_iter().find(|p| p.name.to_string() == PORT_NAME) else {
        return Vec::new();
    };
    let (status, bytes) = h.control(&Request::GetCounters { port: Some(port.port) }, 1 << 16);
    let mut values = vec![0u64; vsflow_core::PortCounters::ALL_COUNT];
    if status != 0 || vsflow_proto::response::decode_counters(&bytes, &mut values).is_err() {
        return Vec::new();
    }
    vsflow_core::PortCounters::ALL_NAMES.iter().map(|n| (*n).to_owned()).zip(values).collect()
}

/// The flow key the driver keeps a conversation under.
fn key_of(c: &Conversation) -> FlowKey {
    let remote_port = if c.kind.contains("peer asks") {
        c.remote_port | icmp::PEER_REQUESTER
    } else {
        c.remote_port
    };
    FlowKey {
        family: c.family,
        protocol: c.protocol,
        local_addr: c.local,
        remote_addr: c.remote,
        local_port: c.local_port,
        remote_port,
    }
}

fn summarize(h: &Host, report: &mut Report) {
    let table = flows(h);
    report.counters = counters(h);
    let mut flows: BTreeMap<Conversation, FlowSummary> = BTreeMap::new();
    for p in &report.packets {
        let (Some(c), Some(dir)) = (&p.conversation, p.dir) else { continue };
        let f = flows.entry(c.clone()).or_default();
        let blocked = p.fate == Fate::Blocked;
        let i = usize::from(dir == Dir::In);
        if let Some(why) = &p.why {
            f.why.get_or_insert_with(|| why.clone());
        }
        if p.error {
            f.related_errors[usize::from(blocked)] += 1;
            continue;
        }
        f.first.get_or_insert(dir);
        f.packets[i] += 1;
        if blocked {
            f.blocked[i] += 1;
        }
    }
    for (c, f) in &mut flows {
        let key = key_of(c);
        f.record = table.iter().find(|f| f.key == key).copied();
    }
    report.flows = flows;
}
