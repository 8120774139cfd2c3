//! What a case found: per class of traffic, the packets, the verdicts that differ and how each
//! difference is judged (see the parent module).

use std::collections::HashSet;
use std::fmt::Write as _;

use vsflow_core::FlowKey;

use super::Origin;

/// What explains B admitting a packet A blocked, when something documented does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Documented {
    /// Nothing: the packet opened the firewall.
    No,
    /// A mid-stream TCP segment whose key matches a carried fingerprint, in the pickup window.
    Fingerprint,
    /// A mid-stream TCP segment in the restore window (admitted and tracked, re-checked once
    /// the restore is applied).
    Window,
    /// A mid-stream TCP segment with loose pickup on (opt-in).
    Loose,
}

/// One packet judged on both hosts.
#[derive(Clone, Copy)]
#[allow(clippy::struct_excessive_bools, reason = "two verdicts and two facts about one packet")]
pub struct Judged<'a> {
    /// Host A delivered it.
    pub a: bool,
    /// Host B delivered it.
    pub b: bool,
    /// Who sent it.
    pub origin: Origin,
    /// Its flow's key (the VM's side local).
    pub key: FlowKey,
    /// What documents B admitting it, if B admits and A blocks.
    pub documented: Documented,
    /// An initial SYN.
    pub initial_syn: bool,
    /// Not TCP.
    pub non_tcp: bool,
    /// Describes the packet, for the examples.
    pub describe: &'a dyn Fn() -> String,
}

/// One class of traffic, compared.
#[derive(Clone, Debug, Default)]
pub struct ClassReport {
    /// The class.
    pub name: String,
    /// Packets judged on both hosts.
    pub packets: u64,
    /// Of those, packets whose verdicts differ.
    pub differing: u64,
    /// B admits, A blocks: mid-stream TCP segments a carried fingerprint explains (documented).
    pub fingerprint_admissions: u64,
    /// The distinct flows of those admissions.
    pub fingerprint_flows: u64,
    /// B admits, A blocks: mid-stream TCP segments in the restore window (documented).
    pub window_admissions: u64,
    /// B admits, A blocks: mid-stream TCP segments loose pickup admits (opt-in, documented).
    pub loose_admissions: u64,
    /// B admits, A blocks, nothing documents it: failures.
    pub opened: u64,
    /// Of `opened`: initial SYNs (new inbound connections).
    pub new_inbound_connections: u64,
    /// Of `opened`: packets that are not TCP (UDP and other flows).
    pub udp_other_opened: u64,
    /// A admits, B blocks, legitimate packets.
    pub lost_packets: u64,
    /// Of those, packets of no carried connection (the VM's new traffic).
    pub lost_unattached: u64,
    /// The distinct connections of the lost packets.
    pub lost_connections: u64,
    /// A admits, B blocks, adversarial packets (B fails closed).
    pub tightened: u64,
    /// Adversarial packets host A itself admits (the reference is no judge of these).
    pub reference_admitted: u64,
    /// Fingerprint matches a spray of this size may make: `N n / 2^32`.
    pub expected_fingerprint_matches: f64,
    /// Sent on keys not drawn by chance (chosen to match fingerprints by a white-box search, or
    /// tuples a spray's match admitted already): the bound on chance matches does not apply.
    pub chosen_keys: bool,
    /// Why losing packets is the documented outcome here, if it is.
    pub loss_documented: Option<&'static str>,
    /// The first failures, described.
    pub examples: Vec<String>,
    fingerprint_keys: HashSet<FlowKey>,
    lost_keys: HashSet<usize>,
}

impl ClassReport {
    /// A class named `name`, empty.
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self { name: name.to_owned(), ..Self::default() }
    }

    /// Counts one packet judged on both hosts.
    pub fn record(&mut self, j: &Judged<'_>) {
        self.packets += 1;
        if j.origin == Origin::Adversary && j.a {
            self.reference_admitted += 1;
        }
        if j.a == j.b {
            return;
        }
        self.differing += 1;
        if j.b {
            match j.documented {
                Documented::Fingerprint => {
                    self.fingerprint_admissions += 1;
                    if self.fingerprint_keys.insert(j.key) {
                        self.fingerprint_flows += 1;
                    }
                }
                Documented::Window => self.window_admissions += 1,
                Documented::Loose => self.loose_admissions += 1,
                Documented::No => {
                    self.opened += 1;
                    self.new_inbound_connections += u64::from(j.initial_syn);
                    self.udp_other_opened += u64::from(j.non_tcp);
                    self.example("OPENED", j);
                }
            }
            return;
        }
        match j.origin {
            Origin::Adversary | Origin::Peer => self.tightened += 1,
            Origin::Legit(conn) => {
                self.lost_packets += 1;
                if let Some(i) = conn {
                    if self.lost_keys.insert(i) {
                        self.lost_connections += 1;
                        self.example("LOST", j);
                    }
                } else {
                    self.lost_unattached += 1;
                    self.example("LOST", j);
                }
            }
        }
    }

    /// B's guest completed a connection a peer opened that A's guest never had (the packet
    /// `what` completed it): a new inbound connection B admitted, counted as opened whatever
    /// the verdicts on its packets were judged to be.
    pub fn record_accepted(&mut self, what: &str) {
        self.opened += 1;
        self.new_inbound_connections += 1;
        if self.examples.len() < 6 {
            self.examples
                .push(format!("OPENED (B's guest accepted a connection A's never had): {what}"));
        }
    }

    fn example(&mut self, what: &str, j: &Judged<'_>) {
        if self.examples.len() < 6 {
            self.examples.push(format!("{what}: {}", (j.describe)()));
        }
    }

    /// True if nothing in the class breaks the invariant.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.opened == 0
            && (self.lost_packets == 0 || self.loss_documented.is_some())
            && self.within_bound()
    }

    /// Documented fingerprint admissions (flows) within the bound's Poisson tail.
    #[must_use]
    pub fn within_bound(&self) -> bool {
        if self.chosen_keys {
            return true;
        }
        let x = self.expected_fingerprint_matches;
        #[allow(clippy::cast_precision_loss, reason = "a count compared with a bound")]
        let flows = self.fingerprint_flows as f64;
        flows <= 6.0f64.mul_add(x.sqrt(), x) + 6.0
    }
}

/// Everything one case found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The case.
    pub case: String,
    /// How the state reached the destination.
    pub arrival: String,
    /// Connections carried exactly / as fingerprints / neither.
    pub carried: (usize, usize, usize),
    /// Fingerprints the destination armed (distinct values in the blob).
    pub fingerprints: usize,
    /// The classes, in the order first used.
    pub classes: Vec<ClassReport>,
    /// History packets whose verdicts differ between A and A' (must be 0: same code, same
    /// packets).
    pub history_divergence: u64,
    /// Contract violations on any host.
    pub violations: Vec<String>,
    /// Restores that failed (a failed VM migration).
    pub failed_restores: usize,
}

impl Report {
    /// True if every class passed, the history agreed, no contract was broken and no
    /// migration failed.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.classes.iter().all(ClassReport::passed)
            && self.history_divergence == 0
            && self.violations.is_empty()
            && self.failed_restores == 0
    }

    /// Classes no packet was judged in (the history is never judged): a case whose traffic
    /// went nowhere proves nothing.
    #[must_use]
    pub fn empty_classes(&self) -> Vec<&str> {
        self.classes
            .iter()
            .filter(|c| c.packets == 0 && c.name != "history")
            .map(|c| c.name.as_str())
            .collect()
    }

    /// The class named `name`.
    ///
    /// # Panics
    /// If the case has no such class (a test's typo).
    #[must_use]
    pub fn class(&self, name: &str) -> &ClassReport {
        self.classes.iter().find(|c| c.name == name).unwrap_or_else(|| {
            panic!("no class '{name}' in case '{}':\n{}", self.case, self.to_text())
        })
    }

    /// The report for a person.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "case {} (arrival: {}; carried exactly {}, as fingerprints {}, neither {}; {} fingerprints armed)",
            self.case,
            self.arrival,
            self.carried.0,
            self.carried.1,
            self.carried.2,
            self.fingerprints
        );
        let _ = writeln!(
            s,
            "  {:<52} {:>9} {:>7} {:>9} {:>6} {:>6} {:>6} {:>4} {:>4} {:>5} {:>6}",
            "class",
            "packets",
            "differ",
            "fp adm/fl",
            "window",
            "loose",
            "OPENED",
            "syn",
            "u/o",
            "LOST",
            "tight"
        );
        for c in &self.classes {
            let _ = writeln!(
                s,
                "  {:<52} {:>9} {:>7} {:>9} {:>6} {:>6} {:>6} {:>4} {:>4} {:>5} {:>6}  {}",
                c.name,
                c.packets,
                c.differing,
                format!("{}/{}", c.fingerprint_admissions, c.fingerprint_flows),
                c.window_admissions,
                c.loose_admissions,
                c.opened,
                c.new_inbound_connections,
                c.udp_other_opened,
                c.lost_connections + c.lost_unattached,
                c.tightened,
                if c.passed() { "ok" } else { "FAIL" },
            );
            if let Some(why) = c.loss_documented
                && c.lost_packets > 0
            {
                let _ = writeln!(s, "      loss documented: {why}");
            }
            if c.expected_fingerprint_matches > 0.0 {
                let _ = writeln!(
                    s,
                    "      fingerprint bound: {:.3} matches expected (N n / 2^32); {} flows admitted{}",
                    c.expected_fingerprint_matches,
                    c.fingerprint_flows,
                    if c.within_bound() { "" } else { ": BEYOND THE BOUND" }
                );
            }
            if c.reference_admitted > 0 {
                let _ = writeln!(
                    s,
                    "      host A itself admits {} of these adversarial packets",
                    c.reference_admitted
                );
            }
            for e in &c.examples {
                let _ = writeln!(s, "      - {e}");
            }
        }
        if self.history_divergence > 0 {
            let _ = writeln!(
                s,
                "  history: {} packets judged differently on A and A'",
                self.history_divergence
            );
        }
        if self.failed_restores > 0 {
            let _ = writeln!(s, "  failed restores (failed migrations): {}", self.failed_restores);
        }
        for v in &self.violations {
            let _ = writeln!(s, "  contract violation: {v}");
        }
        let _ = writeln!(s, "  result: {}", if self.passed() { "PASS" } else { "FAIL" });
        s
    }

    /// The report as JSON.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "case": self.case,
            "arrival": self.arrival,
            "carried": {"exact": self.carried.0, "fingerprint": self.carried.1, "neither": self.carried.2},
            "fingerprints": self.fingerprints,
            "classes": self.classes.iter().map(|c| serde_json::json!({
                "name": c.name,
                "packets": c.packets,
                "differing": c.differing,
                "fingerprint_admissions": c.fingerprint_admissions,
                "fingerprint_flows": c.fingerprint_flows,
                "expected_fingerprint_matches": c.expected_fingerprint_matches,
                "window_admissions": c.window_admissions,
                "loose_admissions": c.loose_admissions,
                "opened": c.opened,
                "new_inbound_connections": c.new_inbound_connections,
                "udp_other_opened": c.udp_other_opened,
                "lost_packets": c.lost_packets,
                "lost_connections": c.lost_connections,
                "lost_unattached": c.lost_unattached,
                "loss_documented": c.loss_documented,
                "tightened": c.tightened,
                "reference_admitted": c.reference_admitted,
                "examples": c.examples,
                "passed": c.passed(),
            })).collect::<Vec<_>>(),
            "history_divergence": self.history_divergence,
            "violations": self.violations,
            "failed_restores": self.failed_restores,
            "passed": self.passed(),
        })
    }
}
