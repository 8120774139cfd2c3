//! `netports teredo port|watch` and `netports teredo-exception`.

use clap::Subcommand;
use serde_json::json;

use super::output::Printer;
use crate::error::Error;
use crate::exception::{Applied, FilterSpec, NOTE, TeredoException};
use crate::firewall::{self, Store, TEREDO_RULES};
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
            let r = p.teredo_port()?;
            out.line(
                || json!({"teredo_port": r.first(), "teredo_ports": r.ports, "static_port": TEREDO_STATIC_PORT, "byte_order": r.order, "byte_order_basis": r.basis}),
                || {
                    if r.ports.is_empty() {
                        return "the Teredo client has no port (not qualified)".to_owned();
                    }
                    format!(
                        "teredo client port{}: {} (static port udp {TEREDO_STATIC_PORT}; byte order: {}, {})",
                        if r.ports.len() > 1 { "s" } else { "" },
                        udp_list(&r.ports),
                        r.order.name(),
                        r.basis.text()
                    )
                },
            )
        }
        TeredoCommand::Watch => {
            watch(p, out, false, |ev, out| out.line(|| json!(ev), || human_event(&ev)))
        }
    }
}

/// `netports teredo-exception [--check]`.
///
/// Host permit filters for the Teredo client, kept until interrupted (or the output closes);
/// with `check`, whether Windows Defender Firewall's own Teredo rules are enabled instead.
///
/// # Errors
/// Unsupported, access denied (filters need an administrator), the engine's errors;
/// [`Error::Reported`] (exit 6) when `check` finds the rules not enabled.
pub fn exception(p: &mut dyn Platform, out: &mut Printer<'_>, check: bool) -> Result<(), Error> {
    if check {
        return check_rules(p, out);
    }
    let mut keeper = TeredoException::new(p.host_filters()?);
    out.line(|| json!({ "note": NOTE }), || format!("note: {NOTE}"))?;
    watch(p, out, true, |ev, out| match keeper.on_event(&ev) {
        Ok(applied) => {
            let kept = keeper.filters();
            out.emit(
                || json!({"event": ev, "filters": kept, "added": applied.added, "removed": applied.removed}),
                || [applied_line(&ev, &kept, applied)],
            )
        }
        // Keep watching: what was kept stays, and the next event retries.
        Err(e) => out.line(
            || json!({"event": ev, "error": e.to_string()}),
            || format!("{}: not applied: {e}", human_event(&ev)),
        ),
    })
}

fn applied_line(ev: &TeredoEvent, kept: &[FilterSpec], applied: Applied) -> String {
    let filters: Vec<String> = kept.iter().map(ToString::to_string).collect();
    let mut line = format!(
        "{}; host permits (IPv4 UDP, the Teredo service only): {} (added {}, removed {})",
        human_event(ev),
        filters.join(", "),
        applied.added,
        applied.removed
    );
    if matches!(ev, TeredoEvent::Initial { .. }) {
        line.push_str("; kept until Ctrl-C");
    }
    line
}

/// `netports teredo-exception --check`.
fn check_rules(p: &mut dyn Platform, out: &mut Printer<'_>) -> Result<(), Error> {
    let mut rows = Vec::new();
    let mut enabled = true;
    for id in TEREDO_RULES {
        let found = p.firewall_rules(id)?;
        if found.is_empty() {
            enabled = false;
            rows.push((id, None::<Store>, None::<firewall::Rule>, String::new()));
            continue;
        }
        let mut through = false;
        for (store, value) in found {
            let rule = firewall::parse(&value);
            through |= rule.as_ref().is_some_and(firewall::Rule::lets_through);
            rows.push((id, Some(store), rule, value));
        }
        enabled &= through;
    }
    out.emit(
        || {
            let rules: Vec<_> = rows
                .iter()
                .map(|(id, store, rule, _)| match (store, rule) {
                    (Some(s), Some(r)) => json!({"id": id, "store": s, "enabled": r.active, "action": r.action, "direction": r.direction}),
                    (s, _) => json!({"id": id, "store": s, "enabled": false}),
                })
                .collect();
            json!({"enabled": enabled, "rules": rules})
        },
        || {
            let mut lines: Vec<String> = rows
                .iter()
                .map(|(id, store, rule, value)| match (store, rule) {
                    (None, _) => format!("{id}: not found in the firewall's rule stores"),
                    (Some(s), None) => format!("{id} ({}): not readable: {value}", s.name()),
                    (Some(s), Some(r)) => format!(
                        "{id} ({}): {}: {}",
                        s.name(),
                        if r.active { "enabled" } else { "disabled" },
                        r.describe()
                    ),
                })
                .collect();
            lines.push(if enabled {
                "Windows Defender Firewall lets Teredo through (its own rules are enabled)".to_owned()
            } else {
                format!(
                    "Windows Defender Firewall blocks Teredo unless these rules are enabled; netports' soft permits do not change that. Enable them (elevated PowerShell): {}",
                    firewall::ENABLE
                )
            });
            lines
        },
    )?;
    if enabled { Ok(()) } else { Err(Error::Reported(6)) }
}

/// Watches Teredo events, handing each to `on_event`; stops at the first output failure (a
/// closed pipe) and reports it. `wfp`: the caller holds WFP objects (see
/// [`Platform::teredo_watch`]).
fn watch(
    p: &mut dyn Platform,
    out: &mut Printer<'_>,
    wfp: bool,
    mut on_event: impl FnMut(TeredoEvent, &mut Printer<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut failed = None;
    p.teredo_watch(wfp, &mut |ev| match on_event(ev, out) {
        Ok(()) => true,
        Err(e) => {
            failed = Some(e);
            false
        }
    })?;
    failed.map_or(Ok(()), Err)
}

/// `udp 51234, udp 51235`.
fn udp_list(ports: &[u16]) -> String {
    ports.iter().map(|p| format!("udp {p}")).collect::<Vec<_>>().join(", ")
}

/// One line per event.
#[must_use]
pub fn human_event(ev: &TeredoEvent) -> String {
    let plural = if ev.ports().len() > 1 { "s" } else { "" };
    match ev {
        TeredoEvent::Initial { ports } if ports.is_empty() => {
            "watching; the Teredo client has no port".to_owned()
        }
        TeredoEvent::Initial { ports } => {
            format!("watching; teredo port{plural} {}", udp_list(ports))
        }
        TeredoEvent::Changed { ports } if ports.is_empty() => "teredo client stopped".to_owned(),
        TeredoEvent::Changed { ports } => {
            format!("teredo port{plural} changed: {}", udp_list(ports))
        }
    }
}
