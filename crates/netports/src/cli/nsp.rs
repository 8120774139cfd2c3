//! `netports nsp ...`: the Winsock name provider (netports-nsp) from the command line. See
//! `crate::nsp` for who can resolve names and how the provider is installed.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;
use netports_nsp::name::ServiceName;
use netports_nsp::reservation::Reservation;
use netports_nsp::sessions::Limits;
use netports_nsp::store::{Store, StoreError};
use netports_nsp::{PROVIDER_ID, Provider};
use serde_json::json;

use super::args::ProtoArg;
use super::output::Printer;
use crate::error::Error;
use crate::platform::Platform;
use crate::range::{Protocol, parse_count, parse_port};

/// The names file, for the commands that use it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NamesFile {
    /// The names file (default: %LOCALAPPDATA%\netports\nsp-names.json on Windows; any other
    /// system needs it).
    #[arg(long = "names-file")]
    pub path: Option<PathBuf>,
}

/// `netports nsp ...`.
#[derive(Subcommand, Debug)]
pub enum NspCommand {
    /// Host the provider in this process until interrupted (Ctrl-C). Names resolve while it
    /// runs, for clients of the same user and logon session.
    Serve {
        #[command(flatten)]
        /// Where the names are.
        names: NamesFile,
    },
    /// Install the provider in both Winsock catalogs (administrator; an application
    /// provider, the one hosting type Microsoft supports).
    Install,
    /// Remove the provider from the Winsock catalogs (administrator).
    Uninstall,
    /// Register NAME for a port block (replaces what NAME stood for).
    Register {
        /// The service name.
        name: String,
        /// tcp or udp.
        proto: ProtoArg,
        /// First port.
        start: String,
        /// Number of ports.
        count: String,
        #[command(flatten)]
        /// Where the names are.
        names: NamesFile,
    },
    /// Remove a registered name.
    Unregister {
        /// The service name.
        name: String,
        #[command(flatten)]
        /// Where the names are.
        names: NamesFile,
    },
    /// The registered names.
    Names {
        #[command(flatten)]
        /// Where the names are.
        names: NamesFile,
    },
    /// Resolve NAME through Winsock, as an application would.
    Resolve {
        /// The service name (`teredo` or a registered one).
        name: String,
    },
}

#[allow(clippy::needless_pass_by_value, reason = "used as a map_err function")]
fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::NotRegistered => Error::Missing(e.to_string()),
        StoreError::Reserved => Error::Invalid(e.to_string()),
        StoreError::Untrusted { .. } => Error::Untrusted(e.to_string()),
        StoreError::Full | StoreError::Io { .. } | StoreError::Corrupt { .. } => {
            Error::Protocol(e.to_string())
        }
    }
}

fn name_arg(s: &str) -> Result<ServiceName, Error> {
    ServiceName::parse(s).map_err(|e| Error::Invalid(e.to_string()))
}

/// Runs `netports nsp ...`.
///
/// # Errors
/// What the command met; see [`Error::exit_code`].
pub fn execute(
    command: &NspCommand,
    p: &mut dyn Platform,
    out: &mut Printer<'_>,
) -> Result<(), Error> {
    match command {
        NspCommand::Register { name, proto, start, count, names } => {
            let names_file = names.path.as_ref();
            let name = name_arg(name)?;
            let transport = Protocol::from(*proto);
            let r = Reservation::new(transport, parse_port(start)?, parse_count(count)?)
                .map_err(|e| Error::Invalid(e.to_string()))?;
            let store = store_for(names_file, p)?;
            store.register(&name, r).map_err(store_error)?;
            out.line(
                || json!({"registered": name.as_str(), "protocol": transport.name(), "start": r.start(), "count": r.count(), "file": store.path()}),
                || format!("registered {name} -> {r} (in {})", store.path().display()),
            )
        }
        NspCommand::Unregister { name, names } => {
            let names_file = names.path.as_ref();
            let name = name_arg(name)?;
            let r = store_for(names_file, p)?.unregister(&name).map_err(|e| match e {
                StoreError::NotRegistered => {
                    Error::Missing(format!("{name} is not registered (see `netports nsp names`)"))
                }
                e => store_error(e),
            })?;
            out.line(
                || json!({"unregistered": name.as_str()}),
                || format!("unregistered {name} (was {r})"),
            )
        }
        NspCommand::Names { names } => {
            let names = store_for(names.path.as_ref(), p)?.load().map_err(store_error)?;
            out.emit(
                || {
                    let list: Vec<_> = names
                        .iter()
                        .map(|(n, r)| json!({"name": n.as_str(), "protocol": r.transport().name(), "start": r.start(), "count": r.count()}))
                        .collect();
                    json!({"names": list})
                },
                || {
                    let mut lines = vec![
                        format!("{:<24} ports", "name"),
                        format!("{:<24} udp (the Teredo client's port, built in)", "teredo"),
                    ];
                    lines.extend(names.iter().map(|(n, r)| format!("{n:<24} {r}")));
                    lines
                },
            )
        }
        NspCommand::Serve { names } => serve(names.path.as_ref(), p, out),
        NspCommand::Install => {
            let done = crate::nsp::install(p.nsp()?)?;
            let catalogs: Vec<&str> = done.catalogs.iter().map(|c| c.name()).collect();
            out.line(
                || json!({"installed": catalogs, "notes": done.notes}),
                || format!("installed the netports name provider in the {} ({}); names resolve while `netports nsp serve` runs, for clients of the same user and session", crate::nsp::catalogs_text(&done.catalogs), done.notes.join("; ")),
            )
        }
        NspCommand::Uninstall => {
            let removed = crate::nsp::uninstall(p.nsp()?)?;
            let catalogs: Vec<&str> = removed.iter().map(|c| c.name()).collect();
            out.line(
                || json!({"uninstalled": catalogs}),
                || {
                    format!(
                        "uninstalled the netports name provider from the {}",
                        crate::nsp::catalogs_text(&removed)
                    )
                },
            )
        }
        NspCommand::Resolve { name } => {
            let name = name_arg(name)?;
            let r = p.nsp()?.resolve(name.as_str()).map_err(|e| match e {
                Error::NotFound => Error::Missing(format!(
                    "{name}: not found by the netports provider (registered? `netports nsp names`; serving? `netports nsp serve`, same user and session)"
                )),
                e => e,
            })?;
            out.emit(
                || json!({"name": r.name, "comment": r.comment, "protocol": r.reservation.map(|b| b.transport().name()), "start": r.reservation.map(|b| b.start()), "count": r.reservation.map(|b| b.count()), "addresses": r.addresses}),
                || {
                    let block = r.reservation.map_or_else(|| "?".to_owned(), |b| b.to_string());
                    let mut lines = vec![format!("{}: {block} ({})", r.name, r.comment)];
                    lines.extend(r.addresses.iter().map(|a| format!("  {a}")));
                    lines
                },
            )
        }
    }
}

/// `netports nsp serve`.
fn serve(
    names_file: Option<&PathBuf>,
    p: &mut dyn Platform,
    out: &mut Printer<'_>,
) -> Result<(), Error> {
    let host = p.nsp()?;
    // Winsock refuses to advertise a provider that is not in the catalog (WSAEINVALIDPROVIDER):
    // say so plainly, first.
    if !host.installed(crate::nsp::Catalog::Native)? {
        return Err(crate::nsp::not_installed());
    }
    let path = match names_file {
        Some(f) => f.clone(),
        None => host.names_file()?,
    };
    let store = Store::new(path);
    // Report a corrupt names file now, not at the first lookup.
    if let Err(e) = store.load() {
        out.line(
            || json!({"warning": e.to_string()}),
            || format!("warning: {e}; registered names are unavailable until it is fixed"),
        )?;
    }
    let provider = Arc::new(
        Provider::new(store.clone(), host.sources(), Limits::default())
            .reporting(Box::new(|m| eprintln!("netports nsp: {m}"))),
    );
    let mut ready = || {
        let _ = out.line(
            || json!({"serving": true, "names_file": store.path()}),
            || format!(
                "serving names (provider {{{:08x}-...}}, names in {}) for clients of this user and session; Ctrl-C to stop",
                PROVIDER_ID.data1,
                store.path().display()
            ),
        );
    };
    host.serve(provider, &mut ready)
}

fn store_for(names_file: Option<&PathBuf>, p: &mut dyn Platform) -> Result<Store, Error> {
    if let Some(f) = names_file {
        return Ok(Store::new(f.clone()));
    }
    let host = p.nsp().map_err(|_| Error::Unsupported {
        what: format!(
            "the default names file is a Windows path; on {} give --names-file",
            std::env::consts::OS
        ),
    })?;
    Ok(Store::new(host.names_file()?))
}
