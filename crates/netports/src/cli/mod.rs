//! The `netports` command line.
//!
//! - [`args`]: argument types; [`output`]: the one printer (text or `--json`);
//! - one file per command family: [`teredo`] (port, watch, host exception), [`ports`]
//!   (reservations, listing, why-blocked, find-free, acquire), [`driver`] (vsflow control),
//!   [`nsp`] (the Winsock name provider).
//!
//! Everything writes to the given streams and returns the exit code, so tests run the CLI
//! against the model and the simulator.
//!
//! Exit codes: 0 success (also after Ctrl-C, once what a command holds is released); 1 an
//! operating-system or driver error (BFE stopping included); 2 a usage error or invalid port
//! block; 3 not available on this system (a Windows-only command elsewhere, a missing API, or
//! no IPv6 stack; `why-blocked` binds on any system); 4 access denied (run elevated; a names
//! file others can change); 5 conflict (overlap, ports excluded, provider installed already,
//! rules changed meanwhile); 6 not found (or Teredo not running, provider not installed,
//! firewall rules not enabled); 7 the vsflow driver is not installed.

pub mod args;
pub mod driver;
pub mod nsp;
pub mod output;
pub mod ports;
pub mod teredo;

use std::io::Write;

use clap::{Parser, Subcommand};

use crate::error::Error;
use crate::platform::Platform;
use output::Printer;

/// `netports`: Teredo port, port reservations, bind diagnosis and vsflow driver control.
#[derive(Parser, Debug)]
#[command(
    name = "netports",
    version,
    about,
    after_help = "Exit codes: 0 ok (also after Ctrl-C), 1 OS/driver error, 2 usage, 3 not available here (needs Windows, an API or IPv6), 4 access denied (run elevated), 5 conflict, 6 not found, 7 driver not installed."
)]
pub struct Cli {
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// The Teredo client's UDP port.
    Teredo {
        /// What to do.
        #[command(subcommand)]
        command: teredo::TeredoCommand,
    },
    /// Keep host firewall (WFP) permit filters for the Teredo client (IPv4 UDP, the Teredo
    /// service only: its port in and out, out to the server's 3544, in to 224.0.0.253:3544),
    /// moved as the port changes, until interrupted (administrator). Soft permits: under Windows
    /// Defender Firewall they change nothing; see `--check`.
    TeredoException {
        /// Only report whether Windows Defender Firewall's own Teredo rules
        /// (CoreNet-Teredo-In/Out) are enabled (exit 6 if not).
        #[arg(long)]
        check: bool,
    },
    /// Persistent reservations, listings and bind diagnosis.
    #[command(flatten)]
    Ports(ports::PortsCommand),
    /// Control the vsflow driver.
    Driver {
        /// What to do.
        #[command(subcommand)]
        command: driver::DriverCommand,
    },
    /// The Winsock name provider: serve, install, names, resolve.
    Nsp {
        /// What to do.
        #[command(subcommand)]
        command: nsp::NspCommand,
    },
}

/// Runs the CLI with `args` (the first is the program name); returns the exit code.
pub fn run(
    args: &[String],
    platform: &mut dyn Platform,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            if e.use_stderr() {
                let _ = write!(err, "{e}");
                return 2;
            }
            let _ = write!(out, "{e}");
            return 0;
        }
    };
    let mut printer = Printer::new(out, cli.json);
    let result = match &cli.command {
        Command::Teredo { command } => teredo::execute(command, platform, &mut printer),
        Command::TeredoException { check } => teredo::exception(platform, &mut printer, *check),
        Command::Ports(command) => ports::execute(command, platform, &mut printer),
        Command::Driver { command } => driver::execute(command, platform, &mut printer),
        Command::Nsp { command } => nsp::execute(command, platform, &mut printer),
    };
    match result {
        Ok(()) => 0,
        // The command printed its own answer.
        Err(Error::Reported(code)) => code,
        Err(e) => {
            printer.error(&e);
            let _ = writeln!(err, "netports: {e}");
            e.exit_code()
        }
    }
}
