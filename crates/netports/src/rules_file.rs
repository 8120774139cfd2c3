//! The allow-rules file `netports driver rules PORT FILE` reads: one rule a line.
//!
//! ```text
//! # comment
//! allow tcp 22 from 198.51.100.0/24
//! allow udp 3544
//! allow any 8000-8099 from 2001:db8::/32
//! allow 47 any from 10.0.0.0/8
//! ```
//! Protocol: `tcp`, `udp`, `any` or a number; local ports: a port, `start-end` or `any`;
//! remote: `from PREFIX` (address/length, or `any`), `any` when absent.
//!
//! `netports driver rules PORT` prints the rules under a [`header`] naming the port and the
//! rules version; a file that keeps that header is applied only if the port's rules are still
//! at that version (see [`dumped_version`]), so an edit made by someone else after the dump is
//! refused rather than overwritten, and only to that port (a dump of another port's rules is
//! refused: [`dump_header`]).

use std::net::IpAddr;

use vsflow_core::policy::{AllowRule, PortRange, Prefix};

/// Parses a rules file; errors name the line.
///
/// # Errors
/// The first malformed line.
pub fn parse(text: &str) -> Result<Vec<AllowRule>, String> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        out.push(parse_line(line).map_err(|e| format!("line {}: {e}: '{}'", n + 1, raw.trim()))?);
    }
    if out.len() > vsflow_core::policy::MAX_RULES {
        return Err(format!(
            "{} rules, at most {} allowed",
            out.len(),
            vsflow_core::policy::MAX_RULES
        ));
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<AllowRule, String> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let ["allow", proto, ports, rest @ ..] = w.as_slice() else {
        return Err("expected `allow PROTO PORTS [from PREFIX]`".into());
    };
    let protocol = match *proto {
        "any" => None,
        "tcp" => Some(vsflow_core::protocol::TCP),
        "udp" => Some(vsflow_core::protocol::UDP),
        n => Some(n.parse::<u8>().map_err(|_| format!("unknown protocol {n}"))?),
    };
    let local_ports = match *ports {
        "any" => PortRange::ANY,
        p => match p.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (
                    a.parse::<u16>().map_err(|_| "bad port")?,
                    b.parse::<u16>().map_err(|_| "bad port")?,
                );
                PortRange::new(a, b).ok_or("port range end before start")?
            }
            None => PortRange::single(p.parse::<u16>().map_err(|_| format!("bad port {p}"))?),
        },
    };
    let remote = match rest {
        [] | ["from", "any"] => Prefix::Any,
        ["from", prefix] => parse_prefix(prefix)?,
        _ => return Err("expected `from PREFIX` after the ports".into()),
    };
    Ok(AllowRule { protocol, local_ports, remote })
}

fn parse_prefix(s: &str) -> Result<Prefix, String> {
    let (addr, len) = s.split_once('/').map_or((s, None), |(a, l)| (a, Some(l)));
    let ip: IpAddr = addr.parse().map_err(|_| format!("bad address {addr}"))?;
    match ip {
        IpAddr::V4(a) => {
            let len = len.map_or(Ok(32), |l| l.parse::<u8>().map_err(|_| "bad prefix length"))?;
            Prefix::v4(a.octets(), len).ok_or_else(|| "IPv4 prefix length over 32".into())
        }
        IpAddr::V6(a) => {
            let len = len.map_or(Ok(128), |l| l.parse::<u8>().map_err(|_| "bad prefix length"))?;
            Prefix::v6(a.octets(), len).ok_or_else(|| "IPv6 prefix length over 128".into())
        }
    }
}

/// The first line of a dump: `# PORT rules, version N`.
#[must_use]
pub fn header(port: &str, version: u32) -> String {
    format!("# {port} rules, version {version}")
}

/// The port and rules version a file was dumped at, from its first [`header`] line; `None`
/// when it has none (it then replaces whatever rules the port has).
#[must_use]
pub fn dump_header(text: &str) -> Option<(String, u32)> {
    text.lines().find_map(|line| {
        let (name, version) = line.trim().strip_prefix("# ")?.rsplit_once(" rules, version ")?;
        Some((name.to_owned(), version.trim().parse().ok()?))
    })
}

/// The rules version a file was dumped at, from its [`header`] for `port`; `None` when its
/// header names another port or it has none.
#[must_use]
pub fn dumped_version(text: &str, port: &str) -> Option<u32> {
    dump_header(text).filter(|(name, _)| name == port).map(|(_, v)| v)
}

/// A rule as a line of the rules file.
#[must_use]
pub fn format(r: &AllowRule) -> String {
    let proto = match r.protocol {
        None => "any".to_owned(),
        Some(vsflow_core::protocol::TCP) => "tcp".to_owned(),
        Some(vsflow_core::protocol::UDP) => "udp".to_owned(),
        Some(n) => n.to_string(),
    };
    let ports = if r.local_ports == PortRange::ANY {
        "any".to_owned()
    } else if r.local_ports.start == r.local_ports.end {
        r.local_ports.start.to_string()
    } else {
        format!("{}-{}", r.local_ports.start, r.local_ports.end)
    };
    let from = match r.remote {
        Prefix::Any => String::new(),
        Prefix::V4 { addr, len } => format!(" from {}/{len}", std::net::Ipv4Addr::from(addr)),
        Prefix::V6 { addr, len } => format!(" from {}/{len}", std::net::Ipv6Addr::from(addr)),
    };
    format!("allow {proto} {ports}{from}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_format_back() {
        let text = "# ssh from the admin network\nallow tcp 22 from 198.51.100.0/24\nallow udp 3544\n\nallow any 8000-8099 from 2001:db8::/32\nallow 47 any from any\n";
        let rules = parse(text).unwrap();
        assert_eq!(rules.len(), 4);
        let lines: Vec<String> = rules.iter().map(format).collect();
        assert_eq!(
            lines,
            [
                "allow tcp 22 from 198.51.100.0/24",
                "allow udp 3544",
                "allow any 8000-8099 from 2001:db8::/32",
                "allow 47 any"
            ]
        );
        assert_eq!(parse(&lines.join("\n")).unwrap(), rules);
    }

    #[test]
    fn a_dump_header_gives_the_version_for_its_port_only() {
        let text = format!("{}\nallow tcp 22\n", header("vm one", 7));
        assert_eq!(dumped_version(&text, "vm one"), Some(7));
        assert_eq!(dumped_version(&text, "vm-two"), None, "another port's dump");
        assert_eq!(dumped_version("# ssh\nallow tcp 22\n", "vm one"), None);
        assert_eq!(dumped_version("# vm one rules, version x\n", "vm one"), None);
        assert_eq!(parse(&text).unwrap().len(), 1, "the header is a comment");
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            parse("allow tcp 22\nallow tcp 99-1").unwrap_err(),
            "line 2: port range end before start: 'allow tcp 99-1'"
        );
        assert!(parse("deny tcp 22").unwrap_err().starts_with("line 1"));
        assert!(parse("allow tcp 22 from 10.0.0.0/33").is_err());
        assert!(parse("allow sctp 22").is_err());
    }
}
