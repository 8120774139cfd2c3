//! `vsflow-sim`: the two-host live-migration simulator (the README's main job), the blob
//! inspector, and the capture replay for support engineers.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use vsflow_callout::RestoreMode;
use vsflow_sim::tools::differential;
use vsflow_sim::tools::migrate::{self, MigrateOptions};

#[derive(Parser)]
#[command(name = "vsflow-sim", version, about = "vsflow's WFP + Hyper-V vSwitch simulator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Restore {
    /// Return `STATUS_PENDING`, finish on a work item (default).
    Pending,
    /// Decode and apply inside the callback.
    Sync,
}

#[derive(Subcommand)]
enum Command {
    /// Live-migrate every VM port from host A to host B with live traffic and report.
    Migrate {
        /// VM ports to migrate.
        #[arg(long, default_value_t = 64)]
        ports: u32,
        /// Flows opened per port before migration.
        #[arg(long, default_value_t = 1000)]
        flows_per_port: u32,
        /// Restore completion mode.
        #[arg(long, value_enum, default_value_t = Restore::Pending)]
        restore: Restore,
        /// Seed of traffic and event order.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Shuffle the destination's event order and the port order.
        #[arg(long)]
        shuffle: bool,
        /// Write each port's blob here as migrated.
        #[arg(long)]
        save_dir: Option<PathBuf>,
        /// Flow-table bound per port on both hosts (the driver's `FlowsPerPort`, 16..=65536;
        /// default 4096). Raise it to migrate tables larger than the default.
        #[arg(long)]
        max_flows: Option<u32>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure the callback paths against their targets (docs/PERFORMANCE.md).
    Bench {
        /// Samples per measurement (callbacks mode).
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
        /// `callbacks` (save, restore, per-port, classify vs core), `scaling` (threads and
        /// ports, classify latency during saves: issue 11), `classify` (callout vs core
        /// only), `classify-split` / `classify-whole` / `classify-elsewhere` (one thread on one
        /// port split over processor shards, kept whole, or split with its flows in another
        /// processor's shard: issue 18 §2), or `all`.
        #[arg(long, default_value = "all")]
        mode: String,
        /// Seconds per throughput point (scaling mode).
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Trials per throughput point (scaling mode; medians reported).
        #[arg(long, default_value_t = 5)]
        trials: usize,
    },
    /// The same traffic through the host a VM left (as if it had stayed) and the host it
    /// migrated to, packet by packet; prints per class the verdicts that differ (issue 16).
    /// Exits 1 if any case breaks the invariant.
    Differential {
        /// Cases to run (default: all); `--list` names them.
        #[arg(long = "case")]
        cases: Vec<String>,
        /// List the cases and exit.
        #[arg(long)]
        list: bool,
        /// Outsider packets sprayed per port in the pickup window (spray case), split 60% TCP
        /// ACK, 15% other TCP flags, 15% UDP, 10% other protocols.
        #[arg(long, default_value_t = 20_000)]
        spray: u64,
        /// Established connections of the port in the fingerprint cases (about 1,450 travel
        /// exactly in the default 60 KiB blob, the rest as fingerprints).
        #[arg(long, default_value_t = 3_000)]
        connections: u32,
        /// Blob size cap (registry `BlobCap`, bytes) in the fingerprint cases: the connections
        /// beyond what fits exactly travel as fingerprints.
        #[arg(long, default_value_t = 16_384)]
        blob_cap: u32,
        /// A registry value (`Parameters`) set last on every host of every case, e.g.
        /// `--set RestoreMode=1 --set PickupWindowSeconds=0` (docs/INSTALL.md lists them).
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = setting)]
        settings: Vec<(String, u32)>,
        /// Seed of the hosts and the traffic.
        #[arg(long, default_value_t = 16)]
        seed: u64,
        /// Print the reports as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Saved blobs.
    Blob {
        #[command(subcommand)]
        command: BlobCommand,
    },
    /// Replay a packet capture (pcap or pcapng) through vsflow as one VM's port: per flow,
    /// what vsflow would do and why. Exits 1 if any packet was blocked, 2 on a usage or file
    /// error; a capture cut or damaged mid-file is replayed up to the damage, reported, and
    /// exits 2.
    Replay {
        /// The capture.
        file: PathBuf,
        /// The VM's MAC address (aa:bb:cc:dd:ee:ff): its frames are outbound.
        #[arg(long, conflicts_with = "vm_ip")]
        vm_mac: Option<String>,
        /// The VM's IP address (default: the source of the first IP packet).
        #[arg(long)]
        vm_ip: Option<std::net::IpAddr>,
        /// The port's mode.
        #[arg(long, value_enum, default_value_t = ReplayMode::Enforce)]
        mode: ReplayMode,
        /// Allow rules, in the format `netports driver rules PORT FILE` reads.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Save the port's state on one host and restore it on another before the VM's
        /// N-th packet (0-based).
        #[arg(long)]
        migrate_at: Option<usize>,
        /// Loose pickup after the restore (the driver's `LoosePickup`).
        #[arg(long)]
        loose_pickup: bool,
        /// Also print every frame.
        #[arg(long)]
        packets: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ReplayMode {
    /// Stateful: inbound only on the VM's flows or by an allow rule.
    Enforce,
    /// Permit and track everything.
    Monitor,
}

#[derive(Subcommand)]
enum BlobCommand {
    /// Decode a saved blob and print it; exits 1 and says what is wrong if it is damaged.
    Inspect {
        /// The blob file.
        file: PathBuf,
    },
}

/// `bench --mode classify-split` / `classify-whole` / `classify-elsewhere`: one thread on one
/// port split over processor shards or kept whole, or split with every flow held by another
/// processor's shard (issue 18 §2; docs/PERFORMANCE.md).
fn bench_one_port(split: bool, elsewhere: bool, trials: usize) -> ExitCode {
    let cfg = vsflow_callout::DriverConfig {
        default_mode: vsflow_core::Mode::Enforce,
        restore_mode: vsflow_callout::RestoreMode::Synchronous,
        ..vsflow_callout::DriverConfig::default()
    };
    let ns =
        vsflow_sim::tools::bench::one_port_one_thread(cfg, split, elsewhere, trials.max(1) * 3);
    let how = match (split, elsewhere) {
        (true, false) => "split over processor shards",
        (true, true) => "split, every flow in another processor's shard",
        (false, _) => "kept whole",
    };
    println!("classify via callout, one thread on one port {how}: {ns:.1} CPU ns/packet");
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Migrate {
            ports,
            flows_per_port,
            restore,
            seed,
            shuffle,
            save_dir,
            max_flows,
            json,
        } => {
            let opts = MigrateOptions {
                ports,
                flows_per_port,
                restore_mode: match restore {
                    Restore::Pending => RestoreMode::Pending,
                    Restore::Sync => RestoreMode::Synchronous,
                },
                seed,
                shuffle,
                save_dir,
                save_restore: true,
                max_flows,
            };
            let report = migrate::run(&opts);
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Command::Bench { iterations, mode, seconds, trials } => {
            let (callbacks, scaling) = match mode.as_str() {
                "classify" => {
                    let cfg = vsflow_callout::DriverConfig {
                        default_mode: vsflow_core::Mode::Enforce,
                        restore_mode: vsflow_callout::RestoreMode::Synchronous,
                        ..vsflow_callout::DriverConfig::default()
                    };
                    let r = vsflow_sim::tools::bench::callout_vs_core(cfg, trials.max(1) * 3);
                    println!(
                        "vsflow-sim bench --mode classify (load average {:.1} at start; {} rounds of 10,000 packets, medians)",
                        vsflow_sim::tools::bench::load_average(),
                        trials.max(1) * 3
                    );
                    println!("  {}", r.to_line());
                    return ExitCode::SUCCESS;
                }
                "classify-split" => return bench_one_port(true, false, trials),
                "classify-whole" => return bench_one_port(false, false, trials),
                "classify-elsewhere" => return bench_one_port(true, true, trials),
                "callbacks" => (true, false),
                "scaling" => (false, true),
                "all" => (true, true),
                other => {
                    eprintln!(
                        "vsflow-sim bench: unknown mode '{other}' (callbacks, scaling, classify, classify-split, classify-whole, classify-elsewhere, all)"
                    );
                    return ExitCode::from(2);
                }
            };
            if callbacks {
                print!("{}", vsflow_sim::tools::bench::run(iterations).to_text());
            }
            if scaling {
                print!("{}", vsflow_sim::tools::bench::scaling(seconds, trials).to_text());
            }
            ExitCode::SUCCESS
        }
        Command::Replay { file, vm_mac, vm_ip, mode, rules, migrate_at, loose_pickup, packets } => {
            replay(
                &file,
                vm_mac.as_deref(),
                vm_ip,
                mode,
                rules.as_deref(),
                migrate_at,
                loose_pickup,
                packets,
            )
        }
        Command::Differential {
            cases,
            list,
            spray,
            connections,
            blob_cap,
            settings,
            seed,
            json,
        } => {
            let opts = differential::Options { spray, connections, blob_cap, settings, seed };
            differential(&cases, list, &opts, json)
        }
        Command::Blob { command: BlobCommand::Inspect { file } } => inspect(&file),
    }
}

/// `vsflow-sim blob inspect FILE`: prints what a saved blob holds.
fn inspect(file: &std::path::Path) -> ExitCode {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("vsflow-sim: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    match vsflow_sim::tools::inspect::inspect(&bytes) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("{}: {why}", file.display());
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::too_many_arguments, reason = "the command's options")]
#[allow(clippy::fn_params_excessive_bools, reason = "the command's flags")]
fn replay(
    file: &std::path::Path,
    vm_mac: Option<&str>,
    vm_ip: Option<std::net::IpAddr>,
    mode: ReplayMode,
    rules: Option<&std::path::Path>,
    migrate_at: Option<usize>,
    loose_pickup: bool,
    packets: bool,
) -> ExitCode {
    use vsflow_sim::tools::replay::{self, Fate, ReplayOptions, VmSide};
    let fail = |why: String| {
        eprintln!("vsflow-sim replay: {why}");
        ExitCode::from(2)
    };
    let vm = match (vm_mac, vm_ip) {
        (Some(m), _) => {
            let parts: Vec<u8> =
                m.split([':', '-']).filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
            match <[u8; 6]>::try_from(parts) {
                Ok(mac) => VmSide::Mac(mac),
                Err(_) => return fail(format!("--vm-mac {m}: not a MAC address")),
            }
        }
        (None, Some(std::net::IpAddr::V4(a))) => {
            VmSide::Ip(vsflow_core::IpFamily::V4, vsflow_core::packet::v4(a.octets()))
        }
        (None, Some(std::net::IpAddr::V6(a))) => VmSide::Ip(vsflow_core::IpFamily::V6, a.octets()),
        (None, None) => VmSide::FirstSender,
    };
    let rules = match rules.map(std::fs::read_to_string) {
        None => Vec::new(),
        Some(Ok(text)) => match netports::rules_file::parse(&text) {
            Ok(r) => r,
            Err(e) => return fail(format!("rules: {e}")),
        },
        Some(Err(e)) => return fail(format!("rules: {e}")),
    };
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => return fail(format!("{}: {e}", file.display())),
    };
    let capture = match replay::read_capture(&bytes) {
        Ok(c) => c,
        Err(e) => return fail(format!("{}: {e}", file.display())),
    };
    let mode = match mode {
        ReplayMode::Enforce => vsflow_core::Mode::Enforce,
        ReplayMode::Monitor => vsflow_core::Mode::Monitor,
    };
    let opts =
        ReplayOptions { vm, mode, rules, migrate_at, loose_pickup, ..ReplayOptions::default() };
    let report = replay::replay(&capture.frames, &opts);
    if packets {
        for p in &report.packets {
            let what = match &p.fate {
                Fate::Permitted => "permitted".to_owned(),
                Fate::Blocked => format!("BLOCKED: {}", p.why.clone().unwrap_or_default()),
                Fate::NotIp => "not IP".to_owned(),
                Fate::Malformed(why) => format!("malformed: {why}"),
                Fate::NotTheVms => "not the VM's".to_owned(),
            };
            let conv = p.conversation.as_ref().map(replay::Conversation::label).unwrap_or_default();
            let dir = match p.dir {
                Some(replay::Dir::Out) => "out",
                Some(replay::Dir::In) => "in ",
                None => "   ",
            };
            println!("{:>6} {dir} {what} {conv}", p.index);
        }
    }
    print!("{}", report.to_text());
    // A damaged capture is replayed as far as it can be read and reported, but never passes
    // as a clean replay: exit 2, as for a file error, whatever the verdicts before it.
    if let Some(why) = &capture.damaged {
        println!("capture damaged: {why}");
        return fail(format!("{}: damaged: {why}", file.display()));
    }
    if report.classified().1 == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// `NAME=VALUE` with a 32-bit value (a registry `REG_DWORD`).
fn setting(s: &str) -> Result<(String, u32), String> {
    let (name, value) = s.split_once('=').ok_or_else(|| format!("'{s}' is not NAME=VALUE"))?;
    let value = value.parse().map_err(|e| format!("'{value}' is not a 32-bit value: {e}"))?;
    Ok((name.to_owned(), value))
}

/// `vsflow-sim differential`: runs the named cases (all by default) and prints their reports.
fn differential(
    names: &[String],
    list: bool,
    opts: &differential::Options,
    json: bool,
) -> ExitCode {
    let all = differential::cases();
    if list {
        for c in &all {
            println!("{:<28} {}", c.name, c.what);
        }
        return ExitCode::SUCCESS;
    }
    let mut chosen = Vec::new();
    for n in names {
        let Some(c) = all.iter().find(|c| c.name == n.as_str()) else {
            eprintln!("vsflow-sim differential: no case '{n}' (--list names them)");
            return ExitCode::from(2);
        };
        chosen.push(*c);
    }
    if chosen.is_empty() {
        chosen = all;
    }
    let mut passed = true;
    let mut reports = Vec::new();
    for c in chosen {
        let t = std::time::Instant::now();
        let r = (c.run)(opts);
        passed &= r.passed();
        if json {
            let mut v = r.to_json();
            v["seconds"] = serde_json::json!(t.elapsed().as_secs_f64());
            reports.push(v);
        } else {
            print!("{}", r.to_text());
            println!("  ({:.1} s)\n", t.elapsed().as_secs_f64());
        }
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"options": {"spray": opts.spray, "connections": opts.connections, "blob_cap": opts.blob_cap, "settings": opts.settings, "seed": opts.seed}, "cases": reports, "passed": passed})
        );
    } else {
        println!("differential: {}", if passed { "PASS" } else { "FAIL" });
    }
    if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
