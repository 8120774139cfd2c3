//! `netports teredo port|watch` and `netports teredo-exception`.

use std::fmt::Write as _;

use clap::Subcommand;
use serde_json::json;

use super::output::Printer;
use crate::error::Error;
use crate::exception::{Applied, TeredoException};
use crate::platform::Platform;
use crate::teredo::{TEREDO_STATIC_PORT, TeredoEvent};

/// `netports teredo ...`.
#[derive(Subcommand, Debug)]
pub enum TeredoCommand {
    /// Print the current port.
    Port,
    /// Print port changes as they happen.
    Watch,
}

/// Runs `netports teredo ...`.
///
/// # Errors
/// What the platform reports.
pub fn execute(
    command: &TeredoCommand,
    p: &mut dyn Platform,
    out: &mut Printer<'_>,
) -> Result<(), Error> {
    match command {
        TeredoCommand::Port => {
            let port = p.teredo_port()?;
            out.line(
                || json!({"teredo_port": port, "static_port": TEREDO_STATIC_PORT}),
                || match port {
                    Some(port) => format!("teredo client port: udp {port} (static port udp 3544)"),
                    None => "the Teredo client has no port (not qualified)".to_owned(),
                },
            )
        }
        TeredoCommand::Watch => watch(p, out, |ev, out| out.line(|| json!(ev), || human_event(ev))),
    }
}

/// `netports teredo-exception`: host permit filters for 3544 and the current port, kept
/// until interrupted (or the output closes).
///
/// # Errors
/// Unsupported, access denied (filters need an administrator), the engine's errors.
pub fn exception(p: &mut dyn Platform, out: &mut Printer<'_>) -> Result<(), Error> {
    let mut keeper = TeredoException::new(p.host_filters()?);
    watch(p, out, |ev, out| match keeper.on_event(ev) {
        Ok(applied) => {
            let kept = keeper.ports();
            out.emit(
                || json!({"event": ev, "filters": kept, "added": applied.added, "removed": applied.removed}),
                || [applied_line(ev, &kept, &applied)],
            )
        }
        // Keep watching: what was kept stays, and the next event retries.
        Err(e) => out.line(
            || json!({"event": ev, "error": e.to_string()}),
            || format!("{}: not applied: {e}", human_event(ev)),
        ),
    })
}

fn applied_line(ev: TeredoEvent, kept: &[u16], applied: &Applied) -> String {
    let ports: Vec<String> = kept.iter().map(|p| format!("udp {p}")).collect();
    let mut line = format!(
        "{}; host permit filters (inbound, IPv4 and IPv6) for {}",
        human_event(ev),
        ports.join(" and ")
    );
    if !applied.added.is_empty() || !applied.removed.is_empty() {
        let _ = write!(line, " (added {:?}, removed {:?})", applied.added, applied.removed);
    }
    if matches!(ev, TeredoEvent::Initial { .. }) {
        line.push_str("; kept until Ctrl-C");
    }
    line
}

/// Watches Teredo events, handing each to `on_event`; stops at the first output failure (a
/// closed pipe) and reports it.
fn watch(
    p: &mut dyn Platform,
    out: &mut Printer<'_>,
    mut on_event: impl FnMut(TeredoEvent, &mut Printer<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut failed = None;
    p.teredo_watch(&mut |ev| match on_event(ev, out) {
        Ok(()) => true,
        Err(e) => {
            failed = Some(e);
            false
        }
    })?;
    failed.map_or(Ok(()), Err)
}

/// One line per event.
#[must_use]
pub fn human_event(ev: TeredoEvent) -> String {
    match ev {
        TeredoEvent::Initial { port: Some(p) } => format!("watching; teredo port udp {p}"),
        TeredoEvent::Initial { port: None } => "watching; the Teredo client has no port".to_owned(),
        TeredoEvent::Changed { port: Some(p) } => format!("teredo port changed: udp {p}"),
        TeredoEvent::Changed { port: None } => "teredo client stopped".to_owned(),
    }
}
