//! The Windows implementations. Every `iphlpapi`, `ws2_32` and `fwpuclnt` function is resolved at
//! run time ([`dynload`]): a missing export (Wine, trimmed editions) is `Error::Unsupported`.

pub mod device;
pub mod dynload;
pub mod nsp;
pub mod persistent;
pub mod registry;
pub mod runtime;
pub mod teredo;

use std::io::ErrorKind;
use std::sync::mpsc;

use crate::diagnose::BindOutcome;
use crate::driver::Transport;
use crate::error::{Error, win32};
use crate::excluded::{self, ExcludedRange};
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

impl Platform for WindowsPlatform {
    fn os(&self) -> &'static str {
        "windows"
    }

    fn teredo_port(&mut self) -> Result<Option<u16>, Error> {
        teredo::teredo_port()
    }

    fn teredo_watch(&mut self, on_event: &mut dyn FnMut(TeredoEvent) -> bool) -> Result<(), Error> {
        // Events arrive on the OS's notification thread; hand them to this thread, which runs
        // the caller's code (never the notification thread).
        let (tx, rx) = mpsc::channel();
        let watcher = teredo::TeredoWatcher::start(move |ev| {
            let _ = tx.send(ev);
        })?;
        while let Ok(ev) = rx.recv() {
            if !on_event(ev) {
                break;
            }
        }
        drop(watcher);
        Ok(())
    }

    fn reservations(&mut self) -> Result<&mut dyn Reservations, Error> {
        Ok(&mut self.reservations)
    }

    fn administered(&mut self, proto: Protocol) -> Result<Vec<PortBlock>, Error> {
        registry::administered(proto)
    }

    fn excluded(&mut self, proto: Protocol) -> Result<Vec<ExcludedRange>, Error> {
        let output = std::process::Command::new("netsh")
            .args([
                "int",
                "ipv4",
                "show",
                "excludedportrange",
                &format!("protocol={}", proto.name()),
            ])
            .output()
            .map_err(|e| Error::Os {
                code: u32::try_from(e.raw_os_error().unwrap_or(0)).unwrap_or(0),
                function: "netsh",
            })?;
        Ok(excluded::parse_netsh(&String::from_utf8_lossy(&output.stdout)))
    }

    fn try_bind(&mut self, proto: Protocol, port: u16) -> BindOutcome {
        let result = match proto {
            Protocol::Tcp => std::net::TcpListener::bind(("0.0.0.0", port)).map(drop),
            Protocol::Udp => std::net::UdpSocket::bind(("0.0.0.0", port)).map(drop),
        };
        match result {
            Ok(()) => BindOutcome::Bound,
            Err(e) if e.kind() == ErrorKind::AddrInUse || e.raw_os_error() == Some(10048) => {
                BindOutcome::InUse
            }
            Err(e) if e.raw_os_error() == i32::try_from(win32::WSAEACCES).ok() => {
                BindOutcome::AccessDenied
            }
            Err(_) => BindOutcome::Unknown,
        }
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
        // Held until the process is interrupted (Ctrl-C ends it; the reservations die with
        // their sockets).
        loop {
            std::thread::park();
        }
    }

    fn driver(&mut self) -> Result<Box<dyn Transport>, Error> {
        Ok(Box::new(device::DeviceTransport::open()?))
    }

    fn nsp(&mut self) -> Result<&mut dyn crate::nsp::NspHost, Error> {
        Ok(&mut self.nsp)
    }
}
