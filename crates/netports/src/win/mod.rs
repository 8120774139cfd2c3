//! The Windows implementations. Every `iphlpapi`, `ws2_32` and `fwpuclnt` function is resolved at
//! run time ([`dynload`]): a missing export (Wine, trimmed editions) is `Error::Unsupported`.

pub mod device;
pub mod dynload;
pub mod host_filter;
pub mod interrupt;
pub mod nsp;
pub mod persistent;
pub mod registry;
pub mod runtime;
pub mod service;
#[cfg(clippy)]
mod signatures;
pub mod tables;
pub mod teredo;

use std::path::PathBuf;
use std::sync::mpsc;

use crate::diagnose::{self, BindOutcome, Owner, ProbeAddr};
use crate::driver::Transport;
use crate::error::Error;
use crate::exception::HostFilters;
use crate::excluded::{self, ExcludedRange, Family};
use crate::firewall::Store;
use crate::model::Reservations;
use crate::platform::{Acquired, Platform};
use crate::range::{PortBlock, Protocol};
use crate::teredo::TeredoEvent;

/// The real Windows platform.
#[derive(Default)]
pub struct WindowsPlatform {
    reservations: persistent::WindowsReservations,
    nsp: nsp::WindowsNsp,
    held: Vec<runtime::RuntimeReservation>,
}

impl std::fmt::Debug for WindowsPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowsPlatform").field("held", &self.held.len()).finish_non_exhaustive()
    }
}

/// `%SystemRoot%\System32`, from `GetSystemDirectoryW` (never a path found on `PATH` or in
/// the current directory).
pub(crate) fn system_directory() -> Result<PathBuf, Error> {
    use windows_sys::Win32::System::SystemInformation::GetSystemDirectoryW;
    let mut buf = [0u16; 260];
    // SAFETY: a buffer of the length given.
    let n = unsafe { GetSystemDirectoryW(buf.as_mut_ptr(), u32::try_from(buf.len()).unwrap_or(0)) };
    let n = n as usize;
    if n == 0 || n >= buf.len() {
        return Err(Error::Os { code: 0, function: "GetSystemDirectoryW" });
    }
    Ok(PathBuf::from(String::from_utf16_lossy(buf.get(..n).unwrap_or(&[]))))
}

/// `%SystemRoot%\System32\netsh.exe`.
fn netsh_path() -> Result<PathBuf, Error> {
    Ok(system_directory()?.join("netsh.exe"))
}

/// Runs `System32\netsh.exe` with `args`; its stdout.
fn netsh(args: &[&str]) -> Result<String, Error> {
    let path = netsh_path()?;
    let output = std::process::Command::new(&path).args(args).output().map_err(|e| Error::Os {
        code: u32::try_from(e.raw_os_error().unwrap_or(0)).unwrap_or(0),
        function: "netsh",
    })?;
    if !output.status.success() {
        return Err(Error::Protocol(format!(
            "{} {} exited with {}",
            path.display(),
            args.join(" "),
            output.status
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Binds `port` on `addr` with `SO_EXCLUSIVEADDRUSE` (set before `bind`, as documented) and
/// closes it again; IPv6 sockets are IPv6-only.
fn bind_exclusive(proto: Protocol, addr: ProbeAddr, port: u16) -> BindOutcome {
    use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
    use std::os::windows::io::AsRawSocket;
    use windows_sys::Win32::Networking::WinSock::{
        SO_EXCLUSIVEADDRUSE, SOCKET, SOL_SOCKET, setsockopt,
    };
    let sa = addr.socket_addr(port);
    let (ty, p) = match proto {
        Protocol::Tcp => (Type::STREAM, SockProtocol::TCP),
        Protocol::Udp => (Type::DGRAM, SockProtocol::UDP),
    };
    let outcome = |e: &std::io::Error| {
        e.raw_os_error()
            .and_then(|c| u32::try_from(c).ok())
            .map_or(BindOutcome::Failed(0), BindOutcome::from_code)
    };
    let socket = match Socket::new(Domain::for_address(sa), ty, Some(p)) {
        Ok(s) => s,
        Err(e) => return outcome(&e),
    };
    if sa.is_ipv6() && socket.set_only_v6(true).is_err() {
        return BindOutcome::Failed(0);
    }
    let on: i32 = 1;
    let raw = SOCKET::try_from(socket.as_raw_socket())
        .unwrap_or(windows_sys::Win32::Networking::WinSock::INVALID_SOCKET);
    // SAFETY: an open socket and a 4-byte BOOL option value.
    let rc = unsafe { setsockopt(raw, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, (&raw const on).cast(), 4) };
    if rc != 0 {
        return BindOutcome::Failed(0);
    }
    match socket.bind(&sa.into()) {
        Ok(()) => BindOutcome::Bound,
        Err(e) => outcome(&e),
    }
}

impl Platform for WindowsPlatform {
    fn os(&self) -> &'static str {
        "windows"
    }

    fn teredo_port(&mut self) -> Result<crate::teredo::PortReading, Error> {
        teredo::teredo_port()
    }

    fn teredo_watch(
        &mut self,
        wfp: bool,
        on_event: &mut dyn FnMut(TeredoEvent) -> bool,
    ) -> Result<(), Error> {
        enum Msg {
            Event(TeredoEvent),
            BfeStopped(String),
        }
        // Ctrl-C ends the watch normally: the caller releases what it holds and exits 0.
        // (Installed first, so no interruption falls between registering and waiting.)
        let interrupt = interrupt::Interrupt::install();
        // Events arrive on the OS's notification threads; hand them to this thread, which
        // runs the caller's code (never a notification thread).
        let (tx, rx) = mpsc::channel();
        let events = tx.clone();
        let watcher = teredo::TeredoWatcher::start(move |ev| {
            let _ = events.send(Msg::Event(ev));
        })?;
        // BFE takes every WFP handle with it: the caller's filters, and the system-ports
        // subscription when that is the watch's source.
        let bfe = if wfp || watcher.uses_wfp() {
            Some(service::StopWatch::start("BFE", move |why| {
                let _ = tx.send(Msg::BfeStopped(why));
            })?)
        } else {
            drop(tx);
            None
        };
        let mut result = Ok(());
        while !interrupt.requested() {
            match rx.recv_timeout(interrupt::POLL) {
                Ok(Msg::Event(ev)) => {
                    if !on_event(ev) {
                        break;
                    }
                }
                Ok(Msg::BfeStopped(why)) => {
                    result = Err(Error::BfeStopped(why));
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        drop(bfe);
        drop(watcher);
        result
    }

    fn host_filters(&mut self) -> Result<Box<dyn HostFilters>, Error> {
        Ok(Box::new(host_filter::WfpHostFilters::open()?))
    }

    fn reservations(&mut self) -> Result<&mut dyn Reservations, Error> {
        Ok(&mut self.reservations)
    }

    fn administered(&mut self, proto: Protocol) -> Result<Vec<PortBlock>, Error> {
        registry::administered(proto)
    }

    fn excluded(&mut self, proto: Protocol, family: Family) -> Result<Vec<ExcludedRange>, Error> {
        excluded::parse_netsh(&netsh(&[
            "int",
            family.name(),
            "show",
            "excludedportrange",
            &format!("protocol={}", proto.name()),
        ])?)
    }

    fn dynamic_range(&mut self, proto: Protocol, family: Family) -> Result<PortBlock, Error> {
        excluded::parse_dynamic_port(&netsh(&[
            "int",
            family.name(),
            "show",
            "dynamicport",
            proto.name(),
        ])?)
    }

    fn try_bind(&mut self, proto: Protocol, addr: ProbeAddr, port: u16) -> BindOutcome {
        diagnose::bind_once(proto, addr, port)
    }

    fn try_bind_exclusive(&mut self, proto: Protocol, addr: ProbeAddr, port: u16) -> BindOutcome {
        bind_exclusive(proto, addr, port)
    }

    fn owners(&mut self, proto: Protocol, port: u16) -> Result<Vec<Owner>, Error> {
        tables::owners(proto, port)
    }

    fn endpoint_ports(&mut self, proto: Protocol) -> Result<Vec<u16>, Error> {
        Ok(tables::endpoints(proto)?.into_iter().map(|e| e.port).collect())
    }

    fn acquire(
        &mut self,
        proto: Protocol,
        start: Option<u16>,
        count: u16,
    ) -> Result<Acquired, Error> {
        let r = runtime::RuntimeReservation::acquire(proto, start, count)?;
        let acquired = Acquired { block: r.block(), token: r.token() };
        self.held.push(r);
        Ok(acquired)
    }

    fn hold(&mut self) {
        // Held until interrupted (Ctrl-C); then released, each with its socket.
        interrupt::Interrupt::install().wait();
        self.held.clear();
    }

    fn driver(&mut self) -> Result<Box<dyn Transport>, Error> {
        Ok(Box::new(device::DeviceTransport::open()?))
    }

    fn nsp(&mut self) -> Result<&mut dyn crate::nsp::NspHost, Error> {
        Ok(&mut self.nsp)
    }

    fn service_running(&mut self, name: &str) -> Result<bool, Error> {
        service::running(name)
    }

    fn firewall_rules(&mut self, id: &str) -> Result<Vec<(Store, String)>, Error> {
        let mut found = Vec::new();
        for (store, key) in [
            (Store::Local, registry::FIREWALL_RULES),
            (Store::GroupPolicy, registry::POLICY_FIREWALL_RULES),
        ] {
            if let Some(value) = registry::string_value(key, id)? {
                found.push((store, value));
            }
        }
        Ok(found)
    }
}
