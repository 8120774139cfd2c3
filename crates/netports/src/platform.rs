//! What the CLI needs from the operating system, behind one trait.
//!
//! Windows implements it with
//! the real APIs, [`Unsupported`] answers everywhere else, and tests use the model. The trait
//! speaks the library's types only (no CLI argument types).

use crate::diagnose::{BindOutcome, Owner, ProbeAddr};
use crate::driver::Transport;
use crate::error::Error;
use crate::exception::HostFilters;
use crate::excluded::{ExcludedRange, Family};
use crate::firewall::Store;
use crate::model::Reservations;
use crate::nsp::NspHost;
use crate::range::{PortBlock, Protocol};
use crate::teredo::{PortReading, TeredoEvent};

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
    /// The Teredo client's ports (none: no port), and how their byte order was decided.
    ///
    /// # Errors
    /// Unsupported, not ready, no IPv6.
    fn teredo_port(&mut self) -> Result<PortReading, Error>;
    /// Watches Teredo port changes, calling `on_event` (serialized) until it returns false.
    /// `wfp`: the caller holds WFP objects (the host exception), so a BFE stop, which drops
    /// them, ends the watch with [`Error::BfeStopped`] (as it does whenever the watch's own
    /// source is WFP's system-ports subscription).
    ///
    /// # Errors
    /// Unsupported, a registration failure, or BFE stopped.
    fn teredo_watch(
        &mut self,
        wfp: bool,
        on_event: &mut dyn FnMut(TeredoEvent) -> bool,
    ) -> Result<(), Error>;
    /// Host WFP permit filters (for the Teredo exception).
    ///
    /// # Errors
    /// Unsupported, access denied, or the engine cannot be opened.
    fn host_filters(&mut self) -> Result<Box<dyn HostFilters>, Error>;
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
    /// Excluded ranges of a family (including the dynamic ones without owner).
    ///
    /// # Errors
    /// Unsupported, or the source cannot be read or is not recognised.
    fn excluded(&mut self, proto: Protocol, family: Family) -> Result<Vec<ExcludedRange>, Error>;
    /// The dynamic (ephemeral) port range of a family.
    ///
    /// # Errors
    /// Unsupported, or the source cannot be read or is not recognised.
    fn dynamic_range(&mut self, proto: Protocol, family: Family) -> Result<PortBlock, Error>;
    /// Tries to bind the port on one address (and closes it again).
    fn try_bind(&mut self, proto: Protocol, addr: ProbeAddr, port: u16) -> BindOutcome;
    /// Tries to bind the port on one address with `SO_EXCLUSIVEADDRUSE` (Windows; elsewhere a
    /// plain bind, which already fails beside a socket on a specific address).
    fn try_bind_exclusive(&mut self, proto: Protocol, addr: ProbeAddr, port: u16) -> BindOutcome {
        self.try_bind(proto, addr, port)
    }
    /// The sockets holding `port` (the endpoint tables, both families).
    ///
    /// # Errors
    /// Unsupported or the tables cannot be read.
    fn owners(&mut self, proto: Protocol, port: u16) -> Result<Vec<Owner>, Error>;
    /// Every local port of `proto` the endpoint tables list (both families, any address).
    ///
    /// # Errors
    /// Unsupported or the tables cannot be read.
    fn endpoint_ports(&mut self, proto: Protocol) -> Result<Vec<u16>, Error>;
    /// Acquires a runtime reservation (a specific block, or any block of `count`) and keeps it
    /// until [`Platform::hold`] ends or the process exits.
    ///
    /// # Errors
    /// Unsupported, conflict, refused.
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
    /// Whether the service `name` runs (a service that does not exist does not run).
    ///
    /// # Errors
    /// Unsupported (the default), or the service control manager cannot be read.
    fn service_running(&mut self, name: &str) -> Result<bool, Error> {
        let _ = name;
        unsupported("the service control manager")
    }
    /// Where Windows Defender Firewall's rule `id` is defined, and its value in each store
    /// (`crate::firewall`).
    ///
    /// # Errors
    /// Unsupported (the default), or a store cannot be read.
    fn firewall_rules(&mut self, id: &str) -> Result<Vec<(Store, String)>, Error> {
        let _ = id;
        unsupported("reading Windows Defender Firewall's rules")
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
    fn teredo_port(&mut self) -> Result<PortReading, Error> {
        unsupported("the Teredo port")
    }
    fn teredo_watch(
        &mut self,
        _: bool,
        _: &mut dyn FnMut(TeredoEvent) -> bool,
    ) -> Result<(), Error> {
        unsupported("watching the Teredo port")
    }
    fn host_filters(&mut self) -> Result<Box<dyn HostFilters>, Error> {
        unsupported("host WFP filters")
    }
    fn reservations(&mut self) -> Result<&mut dyn Reservations, Error> {
        unsupported("persistent port reservations")
    }
    fn administered(&mut self, _: Protocol) -> Result<Vec<PortBlock>, Error> {
        unsupported("listing port reservations")
    }
    fn excluded(&mut self, _: Protocol, _: Family) -> Result<Vec<ExcludedRange>, Error> {
        unsupported("listing excluded port ranges")
    }
    fn dynamic_range(&mut self, _: Protocol, _: Family) -> Result<PortBlock, Error> {
        unsupported("the dynamic port range")
    }
    fn try_bind(&mut self, proto: Protocol, addr: ProbeAddr, port: u16) -> BindOutcome {
        // The bind itself is portable: std's sockets on every system.
        crate::diagnose::bind_once(proto, addr, port)
    }
    fn owners(&mut self, _: Protocol, _: u16) -> Result<Vec<Owner>, Error> {
        unsupported("the endpoint tables")
    }
    fn endpoint_ports(&mut self, _: Protocol) -> Result<Vec<u16>, Error> {
        unsupported("the endpoint tables")
    }
    fn acquire(&mut self, _: Protocol, _: Option<u16>, _: u16) -> Result<Acquired, Error> {
        unsupported("runtime port reservations")
    }
    fn hold(&mut self) {}
    fn driver(&mut self) -> Result<Box<dyn Transport>, Error> {
        unsupported("the vsflow driver")
    }
}
