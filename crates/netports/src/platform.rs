//! What the CLI needs from the operating system, behind one trait: Windows implements it with
//! the real APIs, [`Unsupported`] answers everywhere else, and tests use the model.

use crate::diagnose::BindOutcome;
use crate::driver::Transport;
use crate::error::Error;
use crate::excluded::ExcludedRange;
use crate::model::Reservations;
use crate::nsp::NspHost;
use crate::range::{PortBlock, Protocol};
use crate::teredo::TeredoEvent;

/// A runtime reservation the platform acquired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acquired {
    /// The ports.
    pub block: PortBlock,
    /// The token sockets associate with.
    pub token: u64,
}

/// The operating-system side of the CLI.
pub trait Platform {
    /// `windows`, `linux`, ...
    fn os(&self) -> &'static str;
    /// The Teredo client's port (`None`: client not running).
    ///
    /// # Errors
    /// Unsupported, not ready, no IPv6.
    fn teredo_port(&mut self) -> Result<Option<u16>, Error>;
    /// Watches Teredo port changes, calling `on_event` (serialized) until it returns false.
    ///
    /// # Errors
    /// Unsupported or a registration failure.
    fn teredo_watch(&mut self, on_event: &mut dyn FnMut(TeredoEvent) -> bool) -> Result<(), Error>;
    /// The persistent-reservation API.
    ///
    /// # Errors
    /// Unsupported.
    fn reservations(&mut self) -> Result<&mut dyn Reservations, Error>;
    /// Administered (persistent) reservations.
    ///
    /// # Errors
    /// Unsupported or the source cannot be read.
    fn administered(&mut self, proto: Protocol) -> Result<Vec<PortBlock>, Error>;
    /// Excluded ranges (including the dynamic ones without owner).
    ///
    /// # Errors
    /// Unsupported or the source cannot be read.
    fn excluded(&mut self, proto: Protocol) -> Result<Vec<ExcludedRange>, Error>;
    /// Tries to bind the port on all addresses (and closes it again).
    fn try_bind(&mut self, proto: Protocol, port: u16) -> BindOutcome;
    /// Acquires a runtime reservation (a specific block, or any block of `count`) and keeps it
    /// until [`Platform::release_held`] or exit.
    ///
    /// # Errors
    /// Unsupported, conflict, access denied.
    fn acquire(
        &mut self,
        proto: Protocol,
        start: Option<u16>,
        count: u16,
    ) -> Result<Acquired, Error>;
    /// Blocks until the user interrupts (Ctrl-C), then releases what was acquired.
    fn hold(&mut self);
    /// The driver's control device.
    ///
    /// # Errors
    /// Unsupported, driver not installed, access denied.
    fn driver(&mut self) -> Result<Box<dyn Transport>, Error>;
    /// Hosting, installing and querying the Winsock name provider.
    ///
    /// # Errors
    /// Unsupported (the default: only Windows has Winsock).
    fn nsp(&mut self) -> Result<&mut dyn NspHost, Error> {
        unsupported("the Winsock name provider")
    }
}

/// A platform without the Windows APIs: every operation says so.
#[derive(Debug, Default)]
pub struct Unsupported;

fn unsupported<T>(what: &str) -> Result<T, Error> {
    Err(Error::Unsupported {
        what: format!("{what} needs Windows; this is {}", std::env::consts::OS),
    })
}

impl Platform for Unsupported {
    fn os(&self) -> &'static str {
        std::env::consts::OS
    }
    fn teredo_port(&mut self) -> Result<Option<u16>, Error> {
        unsupported("the Teredo port")
    }
    fn teredo_watch(&mut self, _: &mut dyn FnMut(TeredoEvent) -> bool) -> Result<(), Error> {
        unsupported("watching the Teredo port")
    }
    fn reservations(&mut self) -> Result<&mut dyn Reservations, Error> {
        unsupported("persistent port reservations")
    }
    fn administered(&mut self, _: Protocol) -> Result<Vec<PortBlock>, Error> {
        unsupported("listing port reservations")
    }
    fn excluded(&mut self, _: Protocol) -> Result<Vec<ExcludedRange>, Error> {
        unsupported("listing excluded port ranges")
    }
    fn try_bind(&mut self, _: Protocol, _: u16) -> BindOutcome {
        BindOutcome::Unknown
    }
    fn acquire(&mut self, _: Protocol, _: Option<u16>, _: u16) -> Result<Acquired, Error> {
        unsupported("runtime port reservations")
    }
    fn hold(&mut self) {}
    fn driver(&mut self) -> Result<Box<dyn Transport>, Error> {
        unsupported("the vsflow driver")
    }
}
