//! `cargo xtask live`: live traffic from the Linux kernel judged by vsflow and by conntrack
//! (`tests/live.rs`, issue 17). It needs root, network namespaces and the Debian packages
//! `.ci/run` installs (iproute2, nftables, conntrack, tcpdump, iputils-ping, ethtool); without
//! them the step says so and is skipped, except under CI (`CI` set), where it fails. Must run
//! in under a minute.

use std::process::Command;
use std::time::{Duration, Instant};

const TOOLS: [&str; 6] = ["ip", "nft", "conntrack", "tcpdump", "ping", "ethtool"];
const BUDGET: Duration = Duration::from_mins(1);

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Why the live step cannot run on this machine, if it cannot.
fn missing() -> Option<String> {
    let root =
        Command::new("id").arg("-u").output().ok().is_some_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        return Some("not root".into());
    }
    let absent: Vec<&str> = TOOLS.into_iter().filter(|t| !have(t)).collect();
    if !absent.is_empty() {
        return Some(format!(
            "{} not installed (apt-get install iproute2 nftables conntrack tcpdump iputils-ping ethtool; .ci/run does)",
            absent.join(", ")
        ));
    }
    let probe = format!("vsfxtask{}", std::process::id());
    let made = Command::new("ip")
        .args(["netns", "add", &probe])
        .output()
        .ok()
        .is_some_and(|o| o.status.success());
    if !made {
        return Some("cannot create network namespaces here".into());
    }
    let _ = Command::new("ip").args(["netns", "del", &probe]).output();
    None
}

/// Builds the test first (not timed), then runs it within the budget.
///
/// # Errors
/// The test failed, overran the budget, or cannot run under CI.
pub fn live() -> Result<(), String> {
    if let Some(why) = missing() {
        if std::env::var_os("CI").is_some() {
            return Err(format!("live traffic cannot run: {why}"));
        }
        println!("SKIPPED: live traffic: {why}");
        return Ok(());
    }
    let test = ["test", "-p", "vsflow-scenarios", "--test", "live", "--locked"];
    crate::run("cargo", &[&test[..], &["--no-run"]].concat())?;
    let started = Instant::now();
    crate::run("cargo", &[&test[..], &["--", "--ignored", "--nocapture"]].concat())?;
    let took = started.elapsed();
    println!("live traffic: {:.1} s (budget {} s)", took.as_secs_f64(), BUDGET.as_secs());
    if took > BUDGET {
        return Err(format!(
            "live traffic took {:.1} s, over the {} s budget",
            took.as_secs_f64(),
            BUDGET.as_secs()
        ));
    }
    Ok(())
}
