//! The guest: the VM's TCP stack as far as the harness needs it, to answer what a host
//! delivers to it. RFC 9293 section 3.10.7: a segment for no connection is answered with a RST
//! (an ACK'd segment by a bare RST, else RST+ACK), a SYN to a listening port with a SYN-ACK, to
//! a closed one with RST+ACK; RFC 5961 section 4: a SYN on a synchronized connection gets a
//! challenge ACK; data and FIN are acknowledged. Only TCP whose header is whole is answered (a
//! fragment waits for the rest of its datagram; answers to other protocols are not modelled).
//!
//! A *silent* guest drops what it does not expect without a word: segments of no connection
//! and SYNs to closed ports get no answer, as FreeBSD's `net.inet.tcp.blackhole=2` does
//! (blackhole(4): "any segment arriving on a closed port is dropped without returning a RST")
//! and a guest firewall that drops unsolicited inbound traffic would (Windows Defender
//! Firewall's stealth behaviour: verify on Windows). That is the worse guest for vsflow: a flow
//! B picked up by mistake is never refused, so only the pickup's own limits end it.

use std::collections::HashMap;

use vsflow_core::{FlowKey, protocol};

use super::{LISTENING, vm_key};
use crate::tools::traffic::tcp;
use crate::vswitch::packet::{Fragment, SimPacket};

/// The guest's TCP endpoints.
#[derive(Clone, Debug, Default)]
pub struct Guest {
    conns: HashMap<FlowKey, GuestConn>,
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
        if p.protocol != protocol::TCP || p.fragment != Fragment::Whole {
            return None;
        }
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
