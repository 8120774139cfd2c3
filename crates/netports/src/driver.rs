//! Control of vsflow.sys over its IOCTL protocol (`vsflow-proto`). The transport is a trait:
//! `DeviceIoControl` on `\\.\vsflow` on Windows, the simulator's control device in tests.

use vsflow_core::codec::SavedFlow;
use vsflow_core::{AllowRule, Mode};
use vsflow_proto::request::{PortRef, Request, rule_list};
use vsflow_proto::response::{self, ConfigInfo, DRIVER_COUNTER_NAMES, PortInfo, VersionInfo};

use crate::error::Error;

/// `STATUS_BUFFER_TOO_SMALL`.
pub const STATUS_BUFFER_TOO_SMALL: i32 = 0xC000_0023_u32.cast_signed();
/// `STATUS_REVISION_MISMATCH`: the driver does not speak this protocol version.
pub const STATUS_REVISION_MISMATCH: i32 = 0xC000_0059_u32.cast_signed();
/// `STATUS_NOT_FOUND`.
pub const STATUS_NOT_FOUND: i32 = 0xC000_0225_u32.cast_signed();
/// How often [`DriverClient::edit_rules`] re-reads and re-applies an edit that raced
/// another.
pub const EDIT_ATTEMPTS: usize = 8;
/// Largest output buffer the client will offer.
const MAX_OUTPUT: usize = 16 << 20;

/// The answer to one IOCTL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoctlReply {
    /// NTSTATUS.
    pub status: i32,
    /// `IoStatus.Information`.
    pub information: usize,
    /// Output bytes copied back.
    pub output: Vec<u8>,
}

/// Sends IOCTLs to the driver's control device.
pub trait Transport {
    /// Sends one IOCTL with `input` and an output buffer of `output_len` bytes.
    ///
    /// # Errors
    /// The device cannot be reached.
    fn ioctl(&mut self, code: u32, input: &[u8], output_len: usize) -> Result<IoctlReply, Error>;
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn ioctl(&mut self, code: u32, input: &[u8], output_len: usize) -> Result<IoctlReply, Error> {
        (**self).ioctl(code, input, output_len)
    }
}

/// A client of the driver.
#[derive(Debug)]
pub struct DriverClient<T> {
    transport: T,
}

/// The version a replace request was based on (for the error).
const fn rules_read(req: &Request<'_>) -> u32 {
    match req {
        Request::ReplaceRules { expected_version, .. } => *expected_version,
        _ => 0,
    }
}

fn proto_err(e: vsflow_proto::ProtoError) -> Error {
    Error::Protocol(e.to_string())
}

impl<T: Transport> DriverClient<T> {
    /// A client over `transport`.
    pub const fn new(transport: T) -> Self {
        Self { transport }
    }

    /// Sends a request, growing the output buffer as the driver asks.
    fn call(&mut self, req: &Request<'_>, mut out_len: usize) -> Result<Vec<u8>, Error> {
        let mut input = vec![0u8; req.encoded_len()];
        req.encode(&mut input).map_err(proto_err)?;
        for _ in 0..4 {
            let reply = self.transport.ioctl(req.ioctl().code(), &input, out_len)?;
            match reply.status {
                s if s >= 0 => return Ok(reply.output),
                STATUS_BUFFER_TOO_SMALL => {
                    out_len = reply.information.max(out_len * 2).min(MAX_OUTPUT);
                }
                STATUS_NOT_FOUND => {
                    return Err(Error::Missing(
                        "the driver does not track that VM port (any more): see `netports driver ports`"
                            .into(),
                    ));
                }
                STATUS_REVISION_MISMATCH => {
                    return Err(Error::Protocol(format!(
                        "the driver does not speak control protocol {} (an older or newer vsflow.sys): install netports and the driver from the same release",
                        vsflow_proto::PROTOCOL_VERSION
                    )));
                }
                response::STATUS_RULES_CHANGED => {
                    return Err(Error::RulesChanged { read: rules_read(req) });
                }
                status => return Err(Error::Driver { status }),
            }
        }
        Err(Error::Protocol("the driver kept asking for a larger buffer".into()))
    }

    /// Protocol, driver and format versions.
    ///
    /// # Errors
    /// Transport or driver errors.
    pub fn version(&mut self) -> Result<VersionInfo, Error> {
        VersionInfo::decode(&self.call(&Request::GetVersion, VersionInfo::LEN)?).map_err(proto_err)
    }

    /// The driver's configuration.
    ///
    /// # Errors
    /// Transport or driver errors.
    pub fn config(&mut self) -> Result<ConfigInfo, Error> {
        ConfigInfo::decode(&self.call(&Request::GetConfig, ConfigInfo::LEN)?).map_err(proto_err)
    }

    /// Every tracked port.
    ///
    /// # Errors
    /// Transport or driver errors.
    pub fn ports(&mut self) -> Result<Vec<PortInfo>, Error> {
        let bytes = self.call(&Request::ListPorts, 16 + 8 * response::PORT_ENTRY_LEN)?;
        let mut v = Vec::new();
        response::decode_ports(&bytes, |p| v.push(p)).map_err(proto_err)?;
        Ok(v)
    }

    /// A port by name, `SWITCH:PORT` or port id (unique across switches).
    ///
    /// # Errors
    /// [`Error::Missing`] when no port matches, [`Error::Invalid`] when several do.
    pub fn find_port(&mut self, spec: &str) -> Result<PortInfo, Error> {
        let ports = self.ports()?;
        let by_ids = spec
            .split_once(':')
            .and_then(|(s, p)| Some((s.parse::<u32>().ok()?, p.parse::<u32>().ok()?)));
        let matches: Vec<PortInfo> = ports
            .into_iter()
            .filter(|p| {
                p.name.to_string() == spec
                    || by_ids == Some((p.port.switch_id, p.port.port_id))
                    || spec.parse::<u32>().is_ok_and(|id| id == p.port.port_id)
            })
            .collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::Missing(format!(
                "no VM port '{spec}' is tracked by the driver (see `netports driver ports`)"
            ))),
            _ => Err(Error::Invalid(format!("'{spec}' names several ports; use SWITCH:PORT"))),
        }
    }

    /// Up to `max` flows of a port, fetched page by page.
    ///
    /// # Errors
    /// Transport or driver errors.
    pub fn flows(&mut self, port: PortRef, max: usize) -> Result<Vec<SavedFlow>, Error> {
        let mut out = Vec::new();
        let mut start = 0u32;
        loop {
            let page_max = 256u32;
            let req = Request::GetFlows { port, start, max: page_max };
            let bytes = self.call(&req, response::FLOWS_FIXED + 64 * response::FLOW_ENTRY_LEN)?;
            let page = response::decode_flows(&bytes, |f| out.push(f)).map_err(proto_err)?;
            // The driver pages with a cursor: pass back the page's `next`.
            start = page.next;
            if page.next == response::FLOWS_END || out.len() >= max {
                break;
            }
        }
        out.truncate(max);
        Ok(out)
    }

    /// Counters with their names: a port's, or the driver's with `None`.
    ///
    /// # Errors
    /// Transport or driver errors.
    pub fn counters(&mut self, port: Option<PortRef>) -> Result<Vec<(&'static str, u64)>, Error> {
        let bytes = self.call(&Request::GetCounters { port }, 8 + 4 + 8 * 32)?;
        let mut values = [0u64; 32];
        let n = response::decode_counters(&bytes, &mut values).map_err(proto_err)?;
        let names: &[&'static str] =
            if port.is_some() { &vsflow_core::PortCounters::NAMES } else { &DRIVER_COUNTER_NAMES };
        Ok(names.iter().copied().zip(values.iter().copied()).take(n).collect())
    }

    /// Resets counters (a port's, or all).
    ///
    /// # Errors
    /// Transport or driver errors.
    pub fn clear_counters(&mut self, port: Option<PortRef>) -> Result<(), Error> {
        let bytes = self.call(&Request::ClearCounters { port }, 8)?;
        response::decode_empty(&bytes).map_err(proto_err)
    }

    /// Sets a port's mode.
    ///
    /// # Errors
    /// Transport or driver errors.
    pub fn set_mode(&mut self, port: PortRef, mode: Mode) -> Result<(), Error> {
        let bytes = self.call(&Request::SetPortMode { port, mode }, 8)?;
        response::decode_empty(&bytes).map_err(proto_err)
    }

    /// A port's allow rules and their version.
    ///
    /// # Errors
    /// Transport or driver errors.
    pub fn rules(&mut self, port: PortRef) -> Result<(u32, Vec<AllowRule>), Error> {
        let bytes =
            self.call(&Request::GetRules { port }, 16 + 16 * vsflow_core::codec::RULE_LEN)?;
        let mut v = Vec::new();
        let version = response::decode_rules(&bytes, |r| v.push(r)).map_err(proto_err)?;
        Ok((version, v))
    }

    /// Replaces a port's allow rules atomically if they are still at `read` (the version the
    /// caller read); returns the new rule-set version.
    ///
    /// # Errors
    /// [`Error::RulesChanged`] when someone replaced them since; transport or driver errors,
    /// or more than 256 rules.
    pub fn replace_rules(
        &mut self,
        port: PortRef,
        read: u32,
        rules: &[AllowRule],
    ) -> Result<u32, Error> {
        let mut space = vec![0u8; rules.len() * vsflow_core::codec::RULE_LEN];
        let list = rule_list(rules, &mut space).map_err(proto_err)?;
        let bytes =
            self.call(&Request::ReplaceRules { port, expected_version: read, rules: list }, 12)?;
        response::decode_rules_version(&bytes).map_err(proto_err)
    }

    /// Read-modify-write of a port's rules: reads them, applies `edit`, and replaces them if
    /// nobody changed them meanwhile; on a concurrent change it reads again and re-applies
    /// `edit` (up to [`EDIT_ATTEMPTS`] times), so no one's update is lost. Returns the new
    /// version and rules (`None` when `edit` changed nothing).
    ///
    /// # Errors
    /// [`Error::RulesChanged`] after [`EDIT_ATTEMPTS`] conflicts; what `edit` returns;
    /// transport or driver errors.
    pub fn edit_rules(
        &mut self,
        port: PortRef,
        mut edit: impl FnMut(&[AllowRule]) -> Result<Vec<AllowRule>, Error>,
    ) -> Result<Option<(u32, Vec<AllowRule>)>, Error> {
        let mut last = Error::RulesChanged { read: 0 };
        for _ in 0..EDIT_ATTEMPTS {
            let (read, rules) = self.rules(port)?;
            let next = edit(&rules)?;
            if next == rules {
                return Ok(None);
            }
            match self.replace_rules(port, read, &next) {
                Ok(version) => return Ok(Some((version, next))),
                Err(e @ Error::RulesChanged { .. }) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Refusing(i32);

    impl Transport for Refusing {
        fn ioctl(&mut self, _: u32, _: &[u8], _: usize) -> Result<IoctlReply, Error> {
            Ok(IoctlReply { status: self.0, information: 0, output: Vec::new() })
        }
    }

    #[test]
    fn driver_statuses_become_clear_errors() {
        let err = DriverClient::new(Refusing(STATUS_REVISION_MISMATCH)).version().unwrap_err();
        assert!(
            matches!(&err, Error::Protocol(m) if m.contains("does not speak control protocol 2")),
            "{err}"
        );
        let port = PortRef { switch_id: 1, port_id: 7 };
        let err = DriverClient::new(Refusing(STATUS_NOT_FOUND)).rules(port).unwrap_err();
        assert!(
            matches!(&err, Error::Missing(m) if m.contains("does not track that VM port")),
            "a port the driver no longer tracks, not a reservation: {err}"
        );
        assert_eq!(err.exit_code(), 6);
        assert_eq!(
            DriverClient::new(Refusing(response::STATUS_RULES_CHANGED)).replace_rules(port, 9, &[]),
            Err(Error::RulesChanged { read: 9 })
        );
    }
}
