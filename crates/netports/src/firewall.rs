//! Windows Defender Firewall's own Teredo rules, read for `netports teredo-exception --check`.
//!
//! Under Windows Defender Firewall netports' soft permits change nothing (its block wins: WFP
//! Filter Arbitration), and Teredo passes only through the rules it ships,
//! `CoreNet-Teredo-In` (inbound UDP to the Teredo port, edge traversal) and
//! `CoreNet-Teredo-Out`, both for `svchost.exe` / service `iphlpsvc`. Whether they are enabled
//! is therefore the useful question.
//!
//! The rules are read from the registry, as values named by the rule id in two stores: the
//! local one (`HKLM\SYSTEM\CurrentControlSet\Services\SharedAccess\Parameters\FirewallPolicy\FirewallRules`)
//! and Group Policy's (`HKLM\SOFTWARE\Policies\Microsoft\WindowsFirewall\FirewallRules`). Each
//! value is a rule in the grammar of [MS-GPFAS] 2.2.2.19 (`v2.30|Action=Allow|Active=TRUE|Dir=In|...`),
//! documented for the Group Policy store; that the local store uses the same grammar is
//! observed, not documented (docs/WINDOWS-VERIFICATION.md P5). A rule counts as letting Teredo
//! through when some store holds it active with action Allow.

use serde::Serialize;

/// The rule ids `--check` reports.
pub const TEREDO_RULES: [&str; 2] = ["CoreNet-Teredo-In", "CoreNet-Teredo-Out"];

/// The remedy when they are not enabled (the rule ids are the `-Name` of
/// `Enable-NetFirewallRule`).
pub const ENABLE: &str = "Enable-NetFirewallRule -Name CoreNet-Teredo-In,CoreNet-Teredo-Out";

/// Where a rule is defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Store {
    /// The local store (`FirewallPolicy\FirewallRules`).
    Local,
    /// Group Policy's store (`Policies\Microsoft\WindowsFirewall\FirewallRules`).
    GroupPolicy,
}

impl Store {
    /// The store as text.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::GroupPolicy => "group policy",
        }
    }
}

/// A rule's fields that matter here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// `Action=Allow` (else block or bypass).
    pub allow: bool,
    /// `Action=` as written, lower case.
    pub action: String,
    /// `Active=TRUE`.
    pub active: bool,
    /// `Dir=In` / `Dir=Out`, lower case.
    pub direction: String,
    /// `Protocol=`.
    pub protocol: Option<u8>,
    /// `LPort=` (a port or a keyword such as `Teredo`).
    pub local_port: Option<String>,
    /// `RPort=`.
    pub remote_port: Option<String>,
    /// `App=`'s file name.
    pub app: Option<String>,
    /// `Svc=`.
    pub service: Option<String>,
}

/// Parses a rule value (`v<version>|Key=Value|...|`); `None` when it is not in that grammar.
#[must_use]
pub fn parse(value: &str) -> Option<Rule> {
    let mut fields = value.split('|');
    let version = fields.next()?;
    if !version.starts_with('v') || version.len() < 2 {
        return None;
    }
    let mut rule = Rule::default();
    for field in fields.filter(|f| !f.is_empty()) {
        let (key, v) = field.split_once('=')?;
        match key {
            "Action" => {
                rule.action = v.to_ascii_lowercase();
                rule.allow = v.eq_ignore_ascii_case("Allow");
            }
            "Active" => rule.active = v.eq_ignore_ascii_case("TRUE"),
            "Dir" => rule.direction = v.to_ascii_lowercase(),
            "Protocol" => rule.protocol = v.parse().ok(),
            "LPort" => rule.local_port = Some(v.to_owned()),
            "RPort" => rule.remote_port = Some(v.to_owned()),
            "App" => rule.app = Some(v.rsplit(['\\', '/']).next().unwrap_or(v).to_owned()),
            "Svc" => rule.service = Some(v.to_owned()),
            _ => {}
        }
    }
    (!rule.action.is_empty() && !rule.direction.is_empty()).then_some(rule)
}

impl Rule {
    /// One line for a person: `allow in, udp, local port Teredo, svchost.exe, service iphlpsvc`.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("{} {}", self.action, self.direction)];
        match self.protocol {
            Some(6) => parts.push("tcp".into()),
            Some(17) => parts.push("udp".into()),
            Some(p) => parts.push(format!("protocol {p}")),
            None => {}
        }
        if let Some(p) = &self.local_port {
            parts.push(format!("local port {p}"));
        }
        if let Some(p) = &self.remote_port {
            parts.push(format!("remote port {p}"));
        }
        if let Some(a) = &self.app {
            parts.push(a.clone());
        }
        if let Some(s) = &self.service {
            parts.push(format!("service {s}"));
        }
        parts.join(", ")
    }

    /// Lets its traffic through.
    #[must_use]
    pub const fn lets_through(&self) -> bool {
        self.active && self.allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_in_the_gpfas_grammar_are_read() {
        let r = parse("v2.30|Action=Allow|Active=TRUE|Dir=In|Protocol=17|LPort=Teredo|App=%SystemRoot%\\system32\\svchost.exe|Svc=iphlpsvc|Name=@FirewallAPI.dll,-29252|Edge=TRUE|").unwrap();
        assert!(r.lets_through());
        assert_eq!(r.describe(), "allow in, udp, local port Teredo, svchost.exe, service iphlpsvc");
        let off = parse("v2.10|Action=Allow|Active=FALSE|Dir=Out|").unwrap();
        assert!(!off.lets_through());
        let block = parse("v2.10|Action=Block|Active=TRUE|Dir=Out|").unwrap();
        assert!(!block.lets_through());
        assert_eq!(parse("garbage"), None);
        assert_eq!(parse("v2.10|Active=TRUE|"), None, "no action or direction");
        assert_eq!(parse("v2.10|Action|"), None);
    }
}
