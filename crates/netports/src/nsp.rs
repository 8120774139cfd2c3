//! `netports nsp ...`: the Winsock name provider (netports-nsp) from the command line.
//!
//! - `serve`: host the provider in this process and advertise it (`WSAAdvertiseProvider`)
//!   until interrupted;
//! - `install [--service]` / `uninstall`: add or remove the provider in the Winsock catalog
//!   (`WSCInstallNameSpaceEx` / `WSCUnInstallNameSpace`, administrator);
//! - `register NAME tcp|udp START COUNT` / `unregister NAME` / `names`: the names file, which
//!   the serving provider reads on every lookup (no restart needed);
//! - `resolve NAME`: ask Winsock, as any application would (`WSALookupServiceBegin` / `Next`
//!   / `End` with the provider's id).
//!
//! The names file is `%ProgramData%\netports\nsp-names.json` on Windows, or `--names-file`.
//! Registering, removing and listing names work on any system given `--names-file`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;
use netports_nsp::name::ServiceName;
use netports_nsp::provider::Sources;
use netports_nsp::reservation::{Reservation, Transport};
use netports_nsp::sessions::Limits;
use netports_nsp::store::{Store, StoreError};
use netports_nsp::{PROVIDER_ID, Provider};
use serde_json::json;

use crate::cli::ProtoArg;
use crate::error::Error;
use crate::platform::Platform;
use crate::range::{parse_count, parse_port};

/// `netports nsp ...`.
#[derive(Subcommand, Debug)]
pub enum NspCommand {
    /// Host the provider in this process until interrupted (Ctrl-C).
    Serve,
    /// Install the provider in the Winsock catalog (administrator).
    Install {
        /// Visible to every user and session (a provider hosted by a service); otherwise to
        /// the installing user's session only.
        #[arg(long)]
        service: bool,
    },
    /// Remove the provider from the Winsock catalog (administrator).
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
    },
    /// Remove a registered name.
    Unregister {
        /// The service name.
        name: String,
    },
    /// The registered names.
    Names,
    /// Resolve NAME through Winsock, as an application would.
    Resolve {
        /// The service name (`teredo` or a registered one).
        name: String,
    },
}

/// How the provider is installed (`NAPI_PROVIDER_INSTALLATION_BLOB::dwProviderType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderType {
    /// `ProviderType_Application` (1): the installing user's session.
    Application,
    /// `ProviderType_Service` (2): every user and session.
    Service,
}

/// What `resolve` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The name as answered.
    pub name: String,
    /// The comment.
    pub comment: String,
    /// The block, from the answer's blob.
    pub reservation: Option<Reservation>,
    /// The addresses (`local -> remote` per `CSADDR_INFO`).
    pub addresses: Vec<String>,
}

/// The Windows side of `netports nsp`.
pub trait NspHost {
    /// Hosts `provider` and advertises it; calls `ready` once serving; returns when
    /// interrupted, after unadvertising.
    ///
    /// # Errors
    /// Unsupported (Wine lacks `WSAAdvertiseProvider`), or Winsock's error.
    fn serve(&mut self, provider: Arc<Provider>, ready: &mut dyn FnMut()) -> Result<(), Error>;
    /// Installs the provider.
    ///
    /// # Errors
    /// Unsupported, access denied, already installed.
    fn install(&mut self, kind: ProviderType) -> Result<String, Error>;
    /// Uninstalls the provider.
    ///
    /// # Errors
    /// Unsupported, access denied, not installed.
    fn uninstall(&mut self) -> Result<(), Error>;
    /// Resolves `name` through Winsock.
    ///
    /// # Errors
    /// Unsupported, not found, no data, Winsock's error.
    fn resolve(&mut self, name: &str) -> Result<Resolved, Error>;
    /// What the provider answers from (Teredo port, reservation lookup).
    fn sources(&self) -> Arc<dyn Sources>;
    /// The default names file.
    fn names_file(&self) -> PathBuf;
}

#[allow(clippy::needless_pass_by_value, reason = "used as a map_err function")]
fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::NotRegistered => Error::Missing(e.to_string()),
        StoreError::Reserved => Error::Invalid(e.to_string()),
        StoreError::Full | StoreError::Io { .. } | StoreError::Corrupt { .. } => {
            Error::Protocol(e.to_string())
        }
    }
}

fn io(e: &std::io::Error) -> Error {
    Error::Protocol(format!("output: {e}"))
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
    names_file: Option<&PathBuf>,
    p: &mut dyn Platform,
    out: &mut dyn Write,
    json: bool,
) -> Result<(), Error> {
    match command {
        NspCommand::Register { name, proto, start, count } => {
            let name = name_arg(name)?;
            let transport = match proto {
                ProtoArg::Tcp => Transport::Tcp,
                ProtoArg::Udp => Transport::Udp,
            };
            let r = Reservation::new(transport, parse_port(start)?, parse_count(count)?)
                .map_err(|e| Error::Invalid(e.to_string()))?;
            let store = store_for(names_file, p)?;
            store.register(&name, r).map_err(store_error)?;
            if json {
                writeln!(out, "{}", json!({"registered": name.as_str(), "protocol": transport.name(), "start": r.start(), "count": r.count(), "file": store.path()})).map_err(|e| io(&e))?;
            } else {
                writeln!(out, "registered {name} -> {r} (in {})", store.path().display())
                    .map_err(|e| io(&e))?;
            }
        }
        NspCommand::Unregister { name } => {
            let name = name_arg(name)?;
            let r = store_for(names_file, p)?.unregister(&name).map_err(|e| match e {
                StoreError::NotRegistered => {
                    Error::Missing(format!("{name} is not registered (see `netports nsp names`)"))
                }
                e => store_error(e),
            })?;
            if json {
                writeln!(out, "{}", json!({"unregistered": name.as_str()})).map_err(|e| io(&e))?;
            } else {
                writeln!(out, "unregistered {name} (was {r})").map_err(|e| io(&e))?;
            }
        }
        NspCommand::Names => {
            let names = store_for(names_file, p)?.load().map_err(store_error)?;
            if json {
                let list: Vec<_> = names
                    .iter()
                    .map(|(n, r)| json!({"name": n.as_str(), "protocol": r.transport().name(), "start": r.start(), "count": r.count()}))
                    .collect();
                writeln!(out, "{}", json!({"names": list})).map_err(|e| io(&e))?;
            } else {
                writeln!(out, "{:<24} ports", "name").map_err(|e| io(&e))?;
                writeln!(out, "{:<24} udp (the Teredo client's port, built in)", "teredo")
                    .map_err(|e| io(&e))?;
                for (n, r) in &names {
                    writeln!(out, "{n:<24} {r}").map_err(|e| io(&e))?;
                }
            }
        }
        NspCommand::Serve => serve(names_file, p, out)?,
        NspCommand::Install { service } => {
            let kind = if *service { ProviderType::Service } else { ProviderType::Application };
            let note = p.nsp()?.install(kind)?;
            writeln!(out, "installed the netports name provider ({note}); start `netports nsp serve` to answer lookups").map_err(|e| io(&e))?;
        }
        NspCommand::Uninstall => {
            p.nsp()?.uninstall()?;
            writeln!(out, "uninstalled the netports name provider").map_err(|e| io(&e))?;
        }
        NspCommand::Resolve { name } => {
            let name = name_arg(name)?;
            let r = p.nsp()?.resolve(name.as_str()).map_err(|e| match e {
                Error::NotFound => Error::Missing(format!(
                    "{name}: not found by the netports provider (registered? `netports nsp names`; serving? `netports nsp serve`)"
                )),
                e => e,
            })?;
            if json {
                writeln!(out, "{}", json!({"name": r.name, "comment": r.comment, "protocol": r.reservation.map(|b| b.transport().name()), "start": r.reservation.map(|b| b.start()), "count": r.reservation.map(|b| b.count()), "addresses": r.addresses})).map_err(|e| io(&e))?;
            } else {
                let block = r.reservation.map_or_else(|| "?".to_owned(), |b| b.to_string());
                writeln!(out, "{}: {block} ({})", r.name, r.comment).map_err(|e| io(&e))?;
                for a in &r.addresses {
                    writeln!(out, "  {a}").map_err(|e| io(&e))?;
                }
            }
        }
    }
    Ok(())
}

/// `netports nsp serve`.
fn serve(
    names_file: Option<&PathBuf>,
    p: &mut dyn Platform,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let host = p.nsp()?;
    let path = names_file.cloned().unwrap_or_else(|| host.names_file());
    let store = Store::new(path);
    // Report a corrupt names file now, not at the first lookup.
    if let Err(e) = store.load() {
        writeln!(out, "warning: {e}; registered names are unavailable until it is fixed")
            .map_err(|e| io(&e))?;
    }
    let provider = Arc::new(
        Provider::new(store.clone(), host.sources(), Limits::default())
            .reporting(Box::new(|m| eprintln!("netports nsp: {m}"))),
    );
    let mut ready = || {
        let _ = writeln!(
            out,
            "serving names (provider {{{:08x}-...}}, names in {}); Ctrl-C to stop",
            PROVIDER_ID.data1,
            store.path().display()
        );
        let _ = out.flush();
    };
    host.serve(provider, &mut ready)
}

fn store_for(names_file: Option<&PathBuf>, p: &mut dyn Platform) -> Result<Store, Error> {
    if let Some(f) = names_file {
        return Ok(Store::new(f.clone()));
    }
    p.nsp().map(|h| Store::new(h.names_file())).map_err(|_| Error::Unsupported {
        what: format!(
            "the default names file is a Windows path; on {} give --names-file",
            std::env::consts::OS
        ),
    })
}
