//! Property tests of netports' platform-independent logic: the parsers never panic and read
//! back what the formatters (or Windows) write, the reservation model keeps its documented
//! invariants under any sequence of calls, the host Teredo exception keeps exactly 3544 and the
//! current port, and the diagnosis follows the bind result.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use netports::diagnose::{BindOutcome, Probe, ProbeAddr, Ranges, Verdict, decide};
use netports::exception::{FilterSpec, HostFilters, TeredoException, filters_for};
use netports::excluded::{ExcludedRange, Family, parse_netsh, parse_nsi_value_name};
use netports::model::{Model, Reservations};
use netports::rules_file;
use netports::teredo::TeredoEvent;
use netports::{PortBlock, Protocol};
use proptest::prelude::*;
use vsflow_core::policy::{AllowRule, PortRange, Prefix};

fn block() -> impl Strategy<Value = PortBlock> {
    (1u16..=65_535).prop_flat_map(|start| {
        let max = u16::try_from(65_536 - u32::from(start)).unwrap_or(u16::MAX);
        (Just(start), 1..=max).prop_map(|(s, n)| PortBlock::new(s, n).unwrap())
    })
}

fn small_block() -> impl Strategy<Value = PortBlock> {
    (1u16..200, 1u16..20).prop_map(|(s, n)| PortBlock::new(s, n).unwrap())
}

fn rule() -> impl Strategy<Value = AllowRule> {
    let protocol = prop_oneof![Just(None), any::<u8>().prop_map(Some)];
    let ports = prop_oneof![
        Just(PortRange::ANY),
        (any::<u16>(), any::<u16>()).prop_map(|(a, b)| PortRange::new(a.min(b), a.max(b)).unwrap()),
    ];
    let remote = prop_oneof![
        Just(Prefix::Any),
        (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, l)| Prefix::v4(a, l).unwrap()),
        (any::<[u8; 16]>(), 0u8..=128).prop_map(|(a, l)| Prefix::v6(a, l).unwrap()),
    ];
    (protocol, ports, remote).prop_map(|(protocol, local_ports, remote)| AllowRule {
        protocol,
        local_ports,
        remote,
    })
}

#[derive(Clone, Debug)]
enum Call {
    Create(Protocol, PortBlock),
    Delete(Protocol, PortBlock),
    Lookup(Protocol, PortBlock),
    Restart,
    Elevated(bool),
}

fn call() -> impl Strategy<Value = Call> {
    let proto = prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)];
    prop_oneof![
        4 => (proto.clone(), small_block()).prop_map(|(p, b)| Call::Create(p, b)),
        2 => (proto.clone(), small_block()).prop_map(|(p, b)| Call::Delete(p, b)),
        2 => (proto, small_block()).prop_map(|(p, b)| Call::Lookup(p, b)),
        1 => Just(Call::Restart),
        1 => any::<bool>().prop_map(Call::Elevated),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn netsh_parsing_never_panics_on_any_text(text in ".{0,400}") {
        let _ = parse_netsh(&text);
    }

    #[test]
    fn netsh_tables_read_back_whatever_the_header_says(
        header in "[^0-9\n]{0,40}",
        ranges in proptest::collection::vec((block(), any::<bool>()), 0..20),
    ) {
        let mut text = format!("\n{header}\n\n----------    --------\n");
        for (b, admin) in &ranges {
            let mark = if *admin { "     *" } else { "" };
            writeln!(text, "{:>10}  {:>10}{mark}", b.start, b.end()).unwrap();
        }
        text.push_str("\n* - ...\n");
        let parsed = parse_netsh(&text).unwrap();
        let expected: Vec<ExcludedRange> =
            ranges.iter().map(|(block, administered)| ExcludedRange { block: *block, administered: *administered }).collect();
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn nsi_value_names_read_back_the_inet_port_range_they_encode(b in block()) {
        // The name is the hex of the INET_PORT_RANGE bytes: start in network order, count
        // little-endian, as the registry shows it.
        let [s0, s1] = b.start.to_be_bytes();
        let [c0, c1] = b.count.to_le_bytes();
        let name = format!("{s0:02X}{s1:02X}{c0:02X}{c1:02X}");
        prop_assert_eq!(parse_nsi_value_name(&name), Some(b));
        prop_assert_eq!(parse_nsi_value_name(&name.to_lowercase()), Some(b));
    }

    #[test]
    fn nsi_value_name_parsing_never_panics(name in ".{0,12}") {
        let _ = parse_nsi_value_name(&name);
    }

    #[test]
    fn every_rule_formats_to_a_line_that_parses_back_to_it(rules in proptest::collection::vec(rule(), 0..30)) {
        let text: Vec<String> = rules.iter().map(rules_file::format).collect();
        prop_assert_eq!(rules_file::parse(&text.join("\n")).unwrap(), rules);
    }

    #[test]
    fn rules_file_parsing_never_panics_on_any_text(text in "(allow|tcp|udp|any|from|[0-9./:a-f-]{1,12}| |\n|#){0,60}") {
        let _ = rules_file::parse(&text);
    }

    #[test]
    fn the_reservation_model_keeps_its_documented_invariants(calls in proptest::collection::vec(call(), 1..60)) {
        let mut m = Model::elevated();
        let mut tokens: BTreeMap<(Protocol, PortBlock), u64> = BTreeMap::new();
        for c in calls {
            match c {
                Call::Create(p, b) => {
                    let clash = tokens.keys().any(|(q, x)| *q == p && x.overlaps(&b));
                    match m.create(p, b) {
                        Ok(t) => {
                            prop_assert!(m.elevated && !clash);
                            prop_assert!(!tokens.values().any(|v| *v == t), "tokens are unique");
                            tokens.insert((p, b), t);
                        }
                        Err(e) => prop_assert!(!m.elevated || clash, "refused with {e} without a reason"),
                    }
                }
                Call::Delete(p, b) => {
                    let had = tokens.contains_key(&(p, b));
                    let r = m.delete(p, b);
                    prop_assert_eq!(r.is_ok(), m.elevated && had);
                    if r.is_ok() {
                        tokens.remove(&(p, b));
                    }
                }
                Call::Lookup(p, b) => {
                    let r = m.lookup(p, b).ok();
                    prop_assert_eq!(r, tokens.get(&(p, b)).copied(), "exact match only");
                }
                Call::Restart => {
                    m.restart();
                    for (k, old) in &mut tokens {
                        let new = m.lookup(k.0, k.1).unwrap();
                        prop_assert_ne!(new, *old, "tokens change at restart");
                        *old = new;
                    }
                }
                Call::Elevated(e) => m.elevated = e,
            }
            // No two reservations of one protocol ever overlap.
            let list: Vec<(Protocol, PortBlock)> = m.list().collect();
            for (i, a) in list.iter().enumerate() {
                for b in &list[i + 1..] {
                    prop_assert!(a.0 != b.0 || !a.1.overlaps(&b.1));
                }
            }
        }
    }

    #[test]
    fn the_host_exception_keeps_exactly_the_current_ports_filters(
        ports in proptest::collection::vec(proptest::collection::btree_set(prop_oneof![Just(3544u16), 1u16..], 0..3), 1..20),
        failures in proptest::collection::vec(any::<bool>(), 20),
    ) {
        let mut engine = Engine::default();
        let mut x = TeredoException::new(&mut engine);
        let mut current: Vec<u16> = Vec::new();
        for (i, set) in ports.iter().enumerate() {
            let p: Vec<u16> = set.iter().copied().collect();
            let ev = if i == 0 { TeredoEvent::Initial { ports: p.clone() } } else { TeredoEvent::Changed { ports: p.clone() } };
            x.filters_mut().2 = failures[i] && i > 0;
            if x.on_event(&ev).is_ok() {
                current = p;
            }
            prop_assert_eq!(x.filters(), filters_for(&current), "a failed change leaves the previous ports' filters");
        }
        drop(x);
        let mut kept: Vec<FilterSpec> = engine.0.iter().map(|(_, f)| *f).collect();
        let mut want = filters_for(&current);
        kept.sort_by_key(ToString::to_string);
        want.sort_by_key(ToString::to_string);
        prop_assert_eq!(kept, want, "the engine holds exactly those, no leftovers");
    }

    #[test]
    fn the_diagnosis_follows_the_bind_result(
        port in 1u16..300,
        reserved in proptest::collection::vec(small_block(), 0..4),
        excluded in proptest::collection::vec((small_block(), any::<bool>(), any::<bool>()), 0..4),
        outcomes in proptest::collection::vec(prop_oneof![Just(BindOutcome::Bound), Just(BindOutcome::InUse), Just(BindOutcome::AccessDenied), Just(BindOutcome::NoStack)], 4),
    ) {
        let ranges = Ranges {
            administered: reserved,
            excluded: excluded.into_iter().map(|(block, administered, v6)| (if v6 { Family::Ipv6 } else { Family::Ipv4 }, ExcludedRange { block, administered })).collect(),
            dynamic: vec![],
            unavailable: vec![],
            winnat_running: None,
        };
        let probes: Vec<Probe> = ProbeAddr::ALL.iter().zip(&outcomes).map(|(&addr, &outcome)| Probe { addr, outcome }).collect();
        let v = decide(port, &probes, &[], &[], &ranges);
        let any = |o: BindOutcome| outcomes.contains(&o);
        match v {
            Verdict::InUse { on, .. } => prop_assert!(!on.is_empty() && any(BindOutcome::InUse)),
            Verdict::Excluded { block, family, .. } => {
                prop_assert!(!any(BindOutcome::InUse) && block.contains(port));
                prop_assert!(probes.iter().any(|p| p.outcome == BindOutcome::AccessDenied && p.addr.family() == family), "the refused family's exclusion");
            }
            Verdict::Reserved { block } => prop_assert!(!any(BindOutcome::InUse) && any(BindOutcome::AccessDenied) && block.contains(port)),
            Verdict::Denied => prop_assert!(!any(BindOutcome::InUse) && any(BindOutcome::AccessDenied)),
            Verdict::Free { .. } => prop_assert!(any(BindOutcome::Bound) && !any(BindOutcome::InUse) && !any(BindOutcome::AccessDenied), "free only when nothing refused"),
            Verdict::HeldOnAddress { .. } => prop_assert!(false, "no owners, no exclusive probes here"),
            Verdict::Failed { .. } => prop_assert!(!any(BindOutcome::Bound) && !any(BindOutcome::InUse) && !any(BindOutcome::AccessDenied)),
        }
    }
}

/// A filter engine for the exception property: (id, filter), the next id, fail the next change.
#[derive(Debug, Default)]
struct Engine(Vec<(u64, FilterSpec)>, u64, bool);

impl HostFilters for &mut Engine {
    fn apply(&mut self, add: &[FilterSpec], remove: &[u64]) -> Result<Vec<u64>, netports::Error> {
        if self.2 {
            return Err(netports::Error::AccessDenied);
        }
        self.0.retain(|(id, _)| !remove.contains(id));
        let ids: Vec<u64> = (self.1..self.1 + add.len() as u64).collect();
        self.1 += add.len() as u64;
        self.0.extend(ids.iter().copied().zip(add.iter().copied()));
        Ok(ids)
    }
}
