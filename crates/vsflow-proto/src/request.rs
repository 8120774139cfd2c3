//! Requests: what user mode sends, and the driver's complete validation of them.

use vsflow_core::codec::{RULE_LEN, rule_from_bytes, rule_to_bytes};
use vsflow_core::policy::MAX_RULES;
use vsflow_core::{AllowRule, Mode};

use crate::codes::Ioctl;
use crate::error::ProtoError;
use crate::wire::{HEADER_LEN, Header, Reader, Writer, ensure};

/// A port as the driver names it on this host: the switch id vsflow assigned and the vSwitch
/// `PortId` (both from [`Ioctl::ListPorts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRef {
    /// vsflow's switch id.
    pub switch_id: u32,
    /// `NDIS_SWITCH_PORT_ID`.
    pub port_id: u32,
}

/// The allow rules of a [`Request::ReplaceRules`], validated and borrowed from the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleList<'a> {
    bytes: &'a [u8],
}

impl<'a> RuleList<'a> {
    /// Number of rules.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.bytes.len() / RULE_LEN
    }

    /// True if there are none (a replace with no rules removes them all).
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The rules (every entry was validated by [`Request::decode`]).
    pub fn iter(&self) -> impl Iterator<Item = AllowRule> + 'a {
        let bytes = self.bytes;
        (0u32..).zip(bytes.chunks_exact(RULE_LEN)).filter_map(|(i, e)| rule_from_bytes(e, i).ok())
    }
}

/// A request to the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// [`Ioctl::GetVersion`].
    GetVersion,
    /// [`Ioctl::ListPorts`].
    ListPorts,
    /// [`Ioctl::GetFlows`]: up to `max` flows of a port from cursor `start` (0 for the first
    /// page, then the previous page's `next`: see `response::FlowsPage`).
    GetFlows {
        /// The port.
        port: PortRef,
        /// The cursor: 0, or the `next` of the previous page.
        start: u32,
        /// Most flows to return.
        max: u32,
    },
    /// [`Ioctl::GetCounters`]: a port's, or the driver's with `None`.
    GetCounters {
        /// The port, or `None` for driver-wide counters.
        port: Option<PortRef>,
    },
    /// [`Ioctl::ClearCounters`]: a port's, or every port's and the driver's with `None`.
    ClearCounters {
        /// The port, or `None` for all.
        port: Option<PortRef>,
    },
    /// [`Ioctl::SetPortMode`].
    SetPortMode {
        /// The port.
        port: PortRef,
        /// The new mode.
        mode: Mode,
    },
    /// [`Ioctl::ReplaceRules`]: all of a port's rules at once, if they are still at
    /// `expected_version` (the version the caller read; protocol version 2).
    ReplaceRules {
        /// The port.
        port: PortRef,
        /// The rule-set version the new rules are based on (`GetRules`, `ListPorts`).
        expected_version: u32,
        /// The new rules.
        rules: RuleList<'a>,
    },
    /// [`Ioctl::GetConfig`].
    GetConfig,
    /// [`Ioctl::GetRules`].
    GetRules {
        /// The port.
        port: PortRef,
    },
}

fn port(r: &mut Reader<'_>) -> Result<PortRef, ProtoError> {
    Ok(PortRef { switch_id: r.u32()?, port_id: r.u32()? })
}

fn optional_port(r: &mut Reader<'_>) -> Result<Option<PortRef>, ProtoError> {
    let p = port(r)?;
    Ok(if p.switch_id == 0 && p.port_id == 0 { None } else { Some(p) })
}

impl<'a> Request<'a> {
    /// The IOCTL that carries this request.
    #[must_use]
    pub const fn ioctl(&self) -> Ioctl {
        match self {
            Self::GetVersion => Ioctl::GetVersion,
            Self::ListPorts => Ioctl::ListPorts,
            Self::GetFlows { .. } => Ioctl::GetFlows,
            Self::GetCounters { .. } => Ioctl::GetCounters,
            Self::ClearCounters { .. } => Ioctl::ClearCounters,
            Self::SetPortMode { .. } => Ioctl::SetPortMode,
            Self::ReplaceRules { .. } => Ioctl::ReplaceRules,
            Self::GetConfig => Ioctl::GetConfig,
            Self::GetRules { .. } => Ioctl::GetRules,
        }
    }

    /// Decodes and validates the input buffer of IOCTL `code` completely: header, exact
    /// length, every field.
    ///
    /// # Errors
    /// [`ProtoError::UnknownIoctl`] for a code vsflow does not define; any other variant for a
    /// malformed request.
    pub fn decode(code: u32, input: &'a [u8]) -> Result<Self, ProtoError> {
        let ioctl = Ioctl::from_code(code).ok_or(ProtoError::UnknownIoctl(code))?;
        let mut r = Reader::new(input);
        let header = Header::read(&mut r)?;
        let req = match ioctl {
            Ioctl::GetVersion => Self::GetVersion,
            Ioctl::ListPorts => Self::ListPorts,
            Ioctl::GetConfig => Self::GetConfig,
            Ioctl::GetFlows => {
                let port = port(&mut r)?;
                let start = r.u32()?;
                let max = r.u32()?;
                if max == 0 {
                    return Err(ProtoError::InvalidField("max flows (0)"));
                }
                Self::GetFlows { port, start, max }
            }
            Ioctl::GetCounters => Self::GetCounters { port: optional_port(&mut r)? },
            Ioctl::GetRules => Self::GetRules { port: port(&mut r)? },
            Ioctl::ClearCounters => Self::ClearCounters { port: optional_port(&mut r)? },
            Ioctl::SetPortMode => {
                let port = port(&mut r)?;
                let mode = Mode::from_wire(r.u8()?).ok_or(ProtoError::InvalidField("mode"))?;
                let reserved = [r.u8()?, r.u8()?, r.u8()?];
                if reserved != [0; 3] {
                    return Err(ProtoError::InvalidField("reserved bytes"));
                }
                Self::SetPortMode { port, mode }
            }
            Ioctl::ReplaceRules => {
                if header.version < 2 {
                    // A version 1 replace cannot say what it read: refused, never applied
                    // blindly over someone else's edit.
                    return Err(ProtoError::UnsupportedVersion(header.version));
                }
                let port = port(&mut r)?;
                let expected_version = r.u32()?;
                let count = r.u16()?;
                let entry_len = r.u16()?;
                if usize::from(entry_len) != RULE_LEN {
                    return Err(ProtoError::InvalidField("rule entry length"));
                }
                if usize::from(count) > MAX_RULES {
                    return Err(ProtoError::InvalidField("rule count (over 256)"));
                }
                let bytes = r.take(usize::from(count) * RULE_LEN)?;
                for (i, e) in (0u32..).zip(bytes.chunks_exact(RULE_LEN)) {
                    rule_from_bytes(e, i).map_err(|_| ProtoError::InvalidField("rule"))?;
                }
                Self::ReplaceRules { port, expected_version, rules: RuleList { bytes } }
            }
        };
        r.finish()?;
        Ok(req)
    }

    /// Bytes [`Request::encode`] writes.
    #[must_use]
    pub const fn encoded_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Self::GetVersion | Self::ListPorts | Self::GetConfig => 0,
                Self::GetFlows { .. } => 16,
                Self::GetCounters { .. } | Self::ClearCounters { .. } | Self::GetRules { .. } => 8,
                Self::SetPortMode { .. } => 12,
                Self::ReplaceRules { rules, .. } => 16 + rules.bytes.len(),
            }
    }

    /// Encodes the request into `out`; returns the length.
    ///
    /// # Errors
    /// [`ProtoError::BufferTooSmall`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, ProtoError> {
        ensure(out, self.encoded_len())?;
        let mut w = Writer::new(out);
        Header::CURRENT.write(&mut w);
        let put_port = |w: &mut Writer<'_>, p: Option<PortRef>| {
            let p = p.unwrap_or(PortRef { switch_id: 0, port_id: 0 });
            w.u32(p.switch_id);
            w.u32(p.port_id);
        };
        match *self {
            Self::GetVersion | Self::ListPorts | Self::GetConfig => {}
            Self::GetFlows { port, start, max } => {
                put_port(&mut w, Some(port));
                w.u32(start);
                w.u32(max);
            }
            Self::GetCounters { port } | Self::ClearCounters { port } => put_port(&mut w, port),
            Self::GetRules { port } => put_port(&mut w, Some(port)),
            Self::SetPortMode { port, mode } => {
                put_port(&mut w, Some(port));
                w.bytes(&[mode.to_wire(), 0, 0, 0]);
            }
            Self::ReplaceRules { port, expected_version, rules } => {
                put_port(&mut w, Some(port));
                w.u32(expected_version);
                w.u16(crate::wire::count32(rules.len()).try_into().unwrap_or(u16::MAX));
                w.u16(u16::try_from(RULE_LEN).unwrap_or(0));
                w.bytes(rules.bytes);
            }
        }
        Ok(w.len())
    }
}

/// Encodes rules into `out` (24 bytes each) for a [`Request::ReplaceRules`]; returns the list.
///
/// # Errors
/// [`ProtoError::BufferTooSmall`] if `out` cannot hold them; [`ProtoError::InvalidField`] for
/// more than 256 rules.
pub fn rule_list<'a>(rules: &[AllowRule], out: &'a mut [u8]) -> Result<RuleList<'a>, ProtoError> {
    if rules.len() > MAX_RULES {
        return Err(ProtoError::InvalidField("rule count (over 256)"));
    }
    let len = rules.len() * RULE_LEN;
    ensure(out, len)?;
    for (r, dst) in rules.iter().zip(out.chunks_exact_mut(RULE_LEN)) {
        dst.copy_from_slice(&rule_to_bytes(r));
    }
    Ok(RuleList { bytes: out.get(..len).unwrap_or(&[]) })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;
    use vsflow_core::policy::{PortRange, Prefix};

    const P: PortRef = PortRef { switch_id: 1, port_id: 7 };

    fn round_trip(req: Request<'_>) {
        let mut buf = [0u8; 8192];
        let n = req.encode(&mut buf).unwrap();
        assert_eq!(n, req.encoded_len());
        assert_eq!(Request::decode(req.ioctl().code(), &buf[..n]).unwrap(), req);
    }

    #[test]
    fn every_request_round_trips() {
        round_trip(Request::GetVersion);
        round_trip(Request::ListPorts);
        round_trip(Request::GetConfig);
        round_trip(Request::GetRules { port: P });
        round_trip(Request::GetFlows { port: P, start: 10, max: 100 });
        round_trip(Request::GetCounters { port: Some(P) });
        round_trip(Request::GetCounters { port: None });
        round_trip(Request::ClearCounters { port: None });
        round_trip(Request::SetPortMode { port: P, mode: Mode::Enforce });
        let rules = [
            AllowRule {
                protocol: Some(6),
                local_ports: PortRange::single(22),
                remote: Prefix::v4([10, 0, 0, 0], 8).unwrap(),
            },
            AllowRule { protocol: None, local_ports: PortRange::ANY, remote: Prefix::Any },
        ];
        let mut space = [0u8; 64];
        let list = rule_list(&rules, &mut space).unwrap();
        assert_eq!(list.iter().collect::<Vec<_>>(), rules.to_vec());
        round_trip(Request::ReplaceRules { port: P, expected_version: 7, rules: list });
    }

    #[test]
    fn malformed_requests_are_rejected_with_the_reason() {
        let mut buf = [0u8; 64];
        let n = Request::GetFlows { port: P, start: 0, max: 5 }.encode(&mut buf).unwrap();
        let code = Ioctl::GetFlows.code();
        assert_eq!(
            Request::decode(0x0022_0003, &buf[..n]),
            Err(ProtoError::UnknownIoctl(0x0022_0003))
        );
        assert!(matches!(Request::decode(code, &buf[..n - 1]), Err(ProtoError::Truncated { .. })));
        let mut longer = buf;
        assert_eq!(Request::decode(code, &longer[..=n]), Err(ProtoError::TrailingBytes));
        longer[0] = b'X';
        assert_eq!(Request::decode(code, &longer[..n]), Err(ProtoError::BadMagic));
        let mut v3 = buf;
        v3[4] = 3;
        assert_eq!(Request::decode(code, &v3[..n]), Err(ProtoError::UnsupportedVersion(3)));
        let mut v1 = buf;
        v1[4] = 1;
        assert!(Request::decode(code, &v1[..n]).is_ok(), "version 1 requests are still understood");
        let mut flags = buf;
        flags[6] = 1;
        assert_eq!(Request::decode(code, &flags[..n]), Err(ProtoError::BadFlags(1)));
        let mut zero = buf;
        zero[20..24].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            Request::decode(code, &zero[..n]),
            Err(ProtoError::InvalidField("max flows (0)"))
        );
        let n = Request::SetPortMode { port: P, mode: Mode::Monitor }.encode(&mut buf).unwrap();
        buf[16] = 7;
        assert_eq!(
            Request::decode(Ioctl::SetPortMode.code(), &buf[..n]),
            Err(ProtoError::InvalidField("mode"))
        );
        assert_eq!(
            Request::GetVersion.encode(&mut [0u8; 4]),
            Err(ProtoError::BufferTooSmall { needed: 8 })
        );
    }

    #[test]
    fn a_bad_rule_anywhere_rejects_the_whole_replace() {
        let rules = [AllowRule {
            protocol: Some(17),
            local_ports: PortRange::single(53),
            remote: Prefix::Any,
        }; 3];
        let mut space = [0u8; 72];
        let list = rule_list(&rules, &mut space).unwrap();
        let mut buf = [0u8; 128];
        let n = Request::ReplaceRules { port: P, expected_version: 0, rules: list }
            .encode(&mut buf)
            .unwrap();
        // Third rule: port range end below start.
        let third = 8 + 16 + 2 * 24;
        buf[third + 6..third + 8].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(
            Request::decode(Ioctl::ReplaceRules.code(), &buf[..n]),
            Err(ProtoError::InvalidField("rule"))
        );
    }

    #[test]
    fn a_version_1_replace_is_refused_and_version_2_carries_what_was_read() {
        let rule = AllowRule {
            protocol: Some(17),
            local_ports: PortRange::single(53),
            remote: Prefix::Any,
        };
        let mut space = [0u8; 24];
        let list = rule_list(&[rule], &mut space).unwrap();
        let mut buf = [0u8; 64];
        let n = Request::ReplaceRules { port: P, expected_version: 41, rules: list }
            .encode(&mut buf)
            .unwrap();
        let code = Ioctl::ReplaceRules.code();
        assert_eq!(
            Request::decode(code, &buf[..n]),
            Ok(Request::ReplaceRules { port: P, expected_version: 41, rules: list })
        );
        // A version 1 client's replace (no version field) is refused clearly.
        let mut v1 = [0u8; 64];
        v1[..16].copy_from_slice(&buf[..16]);
        v1[4] = 1;
        v1[16..n - 4].copy_from_slice(&buf[20..n]);
        assert_eq!(Request::decode(code, &v1[..n - 4]), Err(ProtoError::UnsupportedVersion(1)));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_input_never_panics(code_ix in 0usize..9, bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let code = Ioctl::ALL.get(code_ix).map_or(0x1234, |i| i.code());
            let _ = Request::decode(code, &bytes);
        }
    }
}
