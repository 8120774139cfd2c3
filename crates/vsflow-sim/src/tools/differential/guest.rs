//! The guest: the VM's TCP stack as far as the harness needs it, to answer what a host
//! delivers to it. RFC 9293 section 3.10.7: a segment for no connection is answered with a RST
//! (an ACK'd segment by a bare RST, else RST+ACK), a SYN to a listening port with a SYN-ACK, to
//! a closed one with RST+ACK; RFC 5961 section 4: a SYN on a synchronized connection gets a
//! challenge ACK; data and FIN are acknowledged. Only TCP is answered (answers to other
//! protocols are not modelled).
//!
//! Fragments: a first fragment waits for the rest of its datagram; the next later fragment of
//! the same source and destination completes it (the double's datagrams share one IP
//! identification). Where the later fragment overlaps the first's TCP header up to its flags
//! (offset 1, byte 8), its bytes win: the guest takes the later fragment's flags. That is the
//! worse guest for vsflow (RFC 1858 section 3.3): RFC 5722 and RFC 8200 section 4.5 make IPv6
//! receivers drop overlapping datagrams and Linux drops overlapping IPv4 ones, but nothing
//! says every guest does (WINDOWS-VERIFICATION 62). The guest records every connection a peer
//! opened that it completed ([`Guest::accepted`]): B's guest completing one A's never had is a
//! new inbound connection B admitted, however its packets looked to vsflow.
//!
//! A *silent* guest drops what it does not expect without a word: segments of no connection
//! and SYNs to closed ports get no answer, as FreeBSD's `net.inet.tcp.blackhole=2` does
//! (blackhole(4): "any segment arriving on a closed port is dropped without returning a RST")
//! and a guest firewall that drops unsolicited inbound traffic would (Windows Defender
//! Firewall's stealth behaviour: verify on Windows). That is the worse guest for vsflow: a flow
//! B picked up by mistake is never refused, so only the pickup's own limits end it.

use std::collections::{HashMap, HashSet};

use vsflow_core::{FlowKey, protocol};

use super::{LISTENING, vm_key};
use crate::tools::traffic::tcp;
use crate::vswitch::packet::{Fragment, SimPacket};

/// The guest's TCP endpoints.
#[derive(Clone, Debug, Default)]
pub struct Guest {
    conns: HashMap<FlowKey, GuestConn>,
    /// First fragments waiting for the rest of their datagram, by source and destination.
    firsts: HashMap<([u8; 16], [u8; 16]), SimPacket>,
    /// Connections a peer opened that reached established here.
    pub accepted: HashSet<FlowKey>,
    /// Of those, the ones completed since the harness last took them.
    pub newly_accepted: Vec<FlowKey>,
    /// Drops unexpected segments without answering (see the module docs).
    pub silent: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GuestConn {
    SynSent,
    SynReceived,
    Established,
}

impl Guest {
    /// What the guest sends back when `p` reaches it, if anything (see the module docs).
    pub fn receive(&mut self, p: &SimPacket) -> Option<SimPacket> {
        if p.protocol != protocol::TCP {
            return None;
        }
        let whole;
        let p = match p.fragment {
            Fragment::Whole => p,
            Fragment::First => {
                self.firsts.insert((p.src, p.dst), p.clone());
                return None;
            }
            Fragment::NonFirst(offset) => {
                let mut first = self.firsts.remove(&(p.src, p.dst))?;
                if offset * 8 <= 13 {
                    // It overlaps the TCP flags (byte 13): the later bytes win.
                    first.flags = p.flags;
                }
                first.fragment = Fragment::Whole;
                first.transport_cut = None;
                whole = first;
                &whole
            }
        };
        let key = vm_key(p, true);
        let f = p.flags;
        if f & tcp::RST != 0 {
            self.conns.remove(&key);
            return None;
        }
        let syn = f & tcp::SYN != 0;
        let ack = f & tcp::ACK != 0;
        match self.conns.get_mut(&key) {
            Some(c @ GuestConn::SynSent) if syn && ack => {
                *c = GuestConn::Established;
                Some(p.reply(tcp::ACK, 0))
            }
            Some(c @ GuestConn::SynReceived) if ack && !syn => {
                *c = GuestConn::Established;
                if self.accepted.insert(key) {
                    self.newly_accepted.push(key);
                }
                None
            }
            // A SYN on a synchronized connection: a challenge ACK (RFC 5961 section 4).
            Some(_) if syn => Some(p.reply(tcp::ACK, 0)),
            Some(_) if p.payload > 0 || f & tcp::FIN != 0 => Some(p.reply(tcp::ACK, 0)),
            Some(_) => None,
            None if syn && !ack && LISTENING.contains(&p.dport) => {
                self.conns.insert(key, GuestConn::SynReceived);
                Some(p.reply(tcp::SYN_ACK, 0))
            }
            None if self.silent => None,
            None if ack => Some(p.reply(tcp::RST, 0)),
            None => Some(p.reply(tcp::RST | tcp::ACK, 0)),
        }
    }

    /// The guest sends `p` (its own packet, scripted).
    pub fn send(&mut self, p: &SimPacket) {
        if p.protocol != protocol::TCP {
            return;
        }
        let key = vm_key(p, false);
        if p.flags & tcp::RST != 0 {
            self.conns.remove(&key);
        } else if p.flags & tcp::SYN != 0 && p.flags & tcp::ACK == 0 {
            self.conns.insert(key, GuestConn::SynSent);
        }
    }
}
