//! `netports teredo-exception --follow`: keep an allow rule for the current Teredo port (and
//! the static 3544) in the driver, on every VM port, as the port changes.

use vsflow_core::policy::{AllowRule, PortRange, Prefix};
use vsflow_core::protocol;

use crate::driver::{DriverClient, Transport};
use crate::error::Error;
use crate::teredo::{TEREDO_STATIC_PORT, TeredoEvent};

fn teredo_rule(port: u16) -> AllowRule {
    AllowRule {
        protocol: Some(protocol::UDP),
        local_ports: PortRange::single(port),
        remote: Prefix::Any,
    }
}

/// The rules to install: `existing` without the rule for the previous Teredo port (unless it
/// is the static one), plus rules for 3544 and the current port, without duplicates.
#[must_use]
pub fn merge(
    existing: &[AllowRule],
    previous: Option<u16>,
    current: Option<u16>,
) -> Vec<AllowRule> {
    let stale =
        previous.filter(|p| *p != TEREDO_STATIC_PORT && Some(*p) != current).map(teredo_rule);
    let mut out: Vec<AllowRule> = existing.iter().copied().filter(|r| Some(*r) != stale).collect();
    for p in [Some(TEREDO_STATIC_PORT), current].into_iter().flatten() {
        let r = teredo_rule(p);
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// Follows Teredo events and keeps the driver's rules current.
#[derive(Debug)]
pub struct Follower<T> {
    client: DriverClient<T>,
    current: Option<u16>,
}

impl<T: Transport> Follower<T> {
    /// A follower driving `client`.
    pub const fn new(client: DriverClient<T>) -> Self {
        Self { client, current: None }
    }

    /// The port rules are currently kept for.
    #[must_use]
    pub const fn current(&self) -> Option<u16> {
        self.current
    }

    /// Applies an event: reads every VM port's rules, swaps the rule of the previous Teredo port
    /// for the current one (keeping 3544 and every other rule), and replaces them atomically
    /// where they changed. Returns how many ports were updated.
    ///
    /// # Errors
    /// Driver errors; the previous port stays current so the next event retries.
    pub fn on_event(&mut self, event: TeredoEvent) -> Result<usize, Error> {
        let port = match event {
            TeredoEvent::Initial { port } | TeredoEvent::Changed { port } => port,
        };
        if matches!(event, TeredoEvent::Changed { .. }) && port == self.current {
            return Ok(0);
        }
        let mut updated = 0;
        for p in self.client.ports()? {
            let (_, rules) = self.client.rules(p.port)?;
            let next = merge(&rules, self.current, port);
            if next != rules {
                self.client.replace_rules(p.port, &next)?;
                updated += 1;
            }
        }
        self.current = port;
        Ok(updated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_replaces_the_old_port_and_keeps_the_static_one() {
        let ssh = AllowRule {
            protocol: Some(6),
            local_ports: PortRange::single(22),
            remote: Prefix::Any,
        };
        let first = merge(&[ssh], None, Some(51_000));
        assert_eq!(first, vec![ssh, teredo_rule(3544), teredo_rule(51_000)]);
        let second = merge(&first, Some(51_000), Some(52_000));
        assert_eq!(second, vec![ssh, teredo_rule(3544), teredo_rule(52_000)]);
        let stopped = merge(&second, Some(52_000), None);
        assert_eq!(stopped, vec![ssh, teredo_rule(3544)]);
        assert_eq!(merge(&stopped, None, None), stopped, "idempotent");
        assert_eq!(merge(&[], Some(3544), Some(3544)), vec![teredo_rule(3544)]);
    }
}
