//! `vsflow-sim blob inspect`: a saved runtime-state blob, decoded for a person. On a damaged
//! blob it says precisely what is wrong.

use std::fmt::Write as _;

use vsflow_core::codec::{self, DecodeConfig, Decoded, UnknownMajor};
use vsflow_core::policy::Prefix;
use vsflow_core::{IpFamily, Port, PortConfig};

fn addr(family: IpFamily, a: &[u8; 16]) -> String {
    match family {
        IpFamily::V4 => std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string(),
        IpFamily::V6 => std::net::Ipv6Addr::from(*a).to_string(),
    }
}

fn secs(ticks: u64) -> String {
    #[allow(clippy::cast_precision_loss, reason = "display only")]
    let s = ticks as f64 / 1e7;
    format!("{s:.1}s")
}

/// Decodes `bytes` and renders it, or the precise reason it is invalid.
///
/// # Errors
/// The rendered reason the blob is invalid.
#[allow(clippy::too_many_lines, reason = "one section of output after another")]
pub fn inspect(bytes: &[u8]) -> Result<String, String> {
    let mut out = String::new();
    let (major, minor) = codec::peek_version(bytes, usize::MAX)
        .map_err(|e| format!("invalid runtime-state blob: {e}"))?;
    let _ = writeln!(
        out,
        "runtime-state blob, {} bytes, format {major}.{minor}, CRC-32C ok",
        bytes.len()
    );
    let lenient = DecodeConfig {
        unknown_major: UnknownMajor::Lenient,
        max_len: usize::MAX,
        ..DecodeConfig::default()
    };
    let state = match codec::decode(bytes, &lenient)
        .map_err(|e| format!("invalid runtime-state blob: {e}"))?
    {
        Decoded::UnsupportedMajor { major, minor } => {
            return Err(format!(
                "format {major}.{minor} is newer than this tool reads (1.x); a destination restores no flows from it and keeps or closes its own policy (fails it only with FailBadRestores = 1 and UnknownMajorPolicy = 0)"
            ));
        }
        Decoded::NoState { reason } => {
            let why = match reason {
                codec::format::no_state::UNTRACKED => "the source did not track the port",
                codec::format::no_state::ENCODE_FAILED => "the source's encode failed",
                codec::format::no_state::UNAVAILABLE => {
                    "the source was stopping or still restoring the port"
                }
                _ => "unspecified",
            };
            let _ = writeln!(out, "no state      {why} (reason {reason}): no policy, no flows");
            return Ok(out);
        }
        Decoded::State(s) => s,
    };
    let _ = writeln!(out, "provider      {}", state.provider);
    let _ = writeln!(out, "port          {}", state.identity);
    let _ = writeln!(out, "mode          {}", state.mode.name());
    let _ = writeln!(
        out,
        "flows         {} carried, {} dropped by the size cap ({} in the table at save)",
        state.flows.len(),
        state.save_info.flows_dropped,
        state.save_info.flows_in_table
    );
    if state.skipped_records > 0 {
        let _ = writeln!(
            out,
            "skipped       {} record(s) of a newer minor version",
            state.skipped_records
        );
    }
    let _ = writeln!(
        out,
        "rules         version {}, {} rule(s)",
        state.rules.version(),
        state.rules.rules().len()
    );
    for r in state.rules.rules() {
        let proto = r.protocol.map_or_else(|| "any".to_owned(), |p| p.to_string());
        let remote = match r.remote {
            Prefix::Any => "any".to_owned(),
            Prefix::V4 { addr: a, len } => format!("{}/{len}", std::net::Ipv4Addr::from(a)),
            Prefix::V6 { addr: a, len } => format!("{}/{len}", std::net::Ipv6Addr::from(a)),
        };
        let _ = writeln!(
            out,
            "  allow proto {proto} local ports {}-{} from {remote}",
            r.local_ports.start, r.local_ports.end
        );
    }
    let c = state.counters;
    let _ = writeln!(
        out,
        "counters      permitted {} blocked {} created {} evicted {}/{}/{} saves {} restores {}",
        c.packets_permitted,
        c.packets_blocked,
        c.flows_created,
        c.evicted_closed,
        c.evicted_idle,
        c.evicted_lru,
        c.saves,
        c.restores
    );
    let _ = writeln!(
        out,
        "\n  proto  state          opener  local                                   remote                                  pkts out/in   bytes out/in     first   last"
    );
    for f in &state.flows {
        let k = &f.key;
        let local = format!("{}:{}", addr(k.family, &k.local_addr), k.local_port);
        let remote = format!("{}:{}", addr(k.family, &k.remote_addr), k.remote_port);
        let opener = match f.opener {
            vsflow_core::Opener::Vm => "vm",
            vsflow_core::Opener::Remote => "remote",
        };
        let _ = writeln!(
            out,
            "  {:<6} {:<14} {:<7} {local:<39} {remote:<39} {:>5}/{:<6} {:>7}/{:<8} {:>7} {:>6}",
            k.protocol,
            f.state.name(),
            opener,
            f.packets[0],
            f.packets[1],
            f.bytes[0],
            f.bytes[1],
            secs(f.first_age),
            secs(f.last_age)
        );
    }
    // A key carried twice decodes (the restore then carries neither record: faults s7), but
    // only a buggy or hostile source writes one: said so.
    let mut keys: Vec<String> = state.flows.iter().map(|f| format!("{:?}", f.key)).collect();
    keys.sort_unstable();
    if let Some(twice) = keys.windows(2).find_map(|w| match w {
        [a, b] if a == b => Some(a),
        _ => None,
    }) {
        return Err(format!(
            "invalid runtime-state blob: flow key carried twice ({twice}); a restore carries neither"
        ));
    }
    let mut scratch =
        Port::try_new(state.identity, PortConfig::default()).map_err(|e| e.to_string())?;
    if let Err(e) = codec::apply(&mut scratch, &state, 0) {
        return Err(format!("invalid runtime-state blob: {e}"));
    }
    Ok(out)
}
