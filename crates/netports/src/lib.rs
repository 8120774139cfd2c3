//! netports: what firewall software and services need around vsflow on a Hyper-V host.
//!
//! - [`teredo`]: the Teredo client's UDP port, and a watcher for its changes (firewalls keep an
//!   exception for it).
//! - [`range`], [`model`]: persistent port reservations (blocks nobody else may take) and the
//!   documented behaviour of the Windows APIs that manage them.
//! - [`diagnose`], [`excluded`]: why `bind` fails with `WSAEACCES` although nothing listens
//!   (reserved, excluded by WinNAT/HNS, in use).
//! - [`driver`]: control of vsflow.sys over its IOCTL protocol; [`exception`]: the host's
//!   Teredo exception (WFP permits for the Teredo service, moved as its port changes);
//!   [`firewall`]: Windows Defender Firewall's own Teredo rules.
//! - [`service_sid`]: the SID of `NT SERVICE\<name>`, which scopes the Teredo exception to
//!   the Teredo service.
//! - [`stop_watch`]: what the watch on BFE's state concludes from each look (the Windows watch
//!   is `win::service::StopWatch`).
//! - [`nsp`]: hosting, installing and querying the Winsock name provider (netports-nsp), and
//!   its names file.
//! - `win` (Windows only): the Windows implementations, every `iphlpapi`/`ws2_32`/`fwpuclnt` function
//!   resolved at run time (a missing export is [`Error::Unsupported`], never a crash).
//!
//! Everything but `win` is platform-independent and tested on Linux.

pub mod cli;
pub mod diagnose;
pub mod driver;
pub mod endpoints;
pub mod error;
pub mod exception;
pub mod excluded;
pub mod firewall;
pub mod model;
pub mod nsp;
pub mod platform;
pub mod range;
pub mod rules_file;
pub mod service_sid;
pub mod stop_watch;
pub mod teredo;
#[cfg(windows)]
pub mod win;

pub use error::Error;
pub use range::{PortBlock, Protocol};
