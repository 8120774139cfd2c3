//! The `vsflow-sim` command line as support engineers and CI use it: `blob inspect` on good,
//! damaged and missing files, a small `migrate` run, and `replay` of a damaged capture.

use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vsflow-sim"))
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/runtime-state").join(name)
}

#[test]
fn inspect_prints_header_rules_and_flows_of_a_good_blob() {
    let out = bin()
        .args(["blob", "inspect"])
        .arg(fixture("v1.0-enforce-rules.bin"))
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("format 1.0, CRC-32C ok"), "{text}");
    assert!(text.contains("port          Dynamic Ethernet Switch Port 7"), "{text}");
    assert!(text.contains("mode          enforce"), "{text}");
    assert!(text.contains("allow proto 6 local ports 22-22 from 198.51.100.0/24"), "{text}");
    assert!(text.contains("flows         4 carried, 0 dropped"), "{text}");
}

#[test]
fn inspect_reports_what_was_dropped_and_newer_minor_records() {
    let out =
        bin().args(["blob", "inspect"]).arg(fixture("v1.0-capped.bin")).output().expect("runs");
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("dropped by the size cap (300 in the table at save)")
    );
    let out = bin()
        .args(["blob", "inspect"])
        .arg(fixture("v1.3-future-minor.bin"))
        .output()
        .expect("runs");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("skipped       1 record(s) of a newer minor version")
    );
}

#[test]
fn inspect_says_precisely_what_is_wrong_with_a_damaged_blob_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("vsflow-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut bytes = std::fs::read(fixture("v1.0-monitor-mixed.bin")).expect("fixture");
    bytes[200] ^= 0x01;
    let damaged = dir.join("damaged.bin");
    std::fs::write(&damaged, &bytes).expect("write");
    let out = bin().args(["blob", "inspect"]).arg(&damaged).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CRC-32C mismatch"));
    let truncated = dir.join("truncated.bin");
    std::fs::write(&truncated, &bytes[..100]).expect("write");
    let out = bin().args(["blob", "inspect"]).arg(&truncated).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated or padded"));
    let out = bin()
        .args(["blob", "inspect"])
        .arg(fixture("v2.0-future-major.bin"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("format 2.0 is newer than this tool reads")
    );
    let out = bin().args(["blob", "inspect"]).arg(dir.join("missing.bin")).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn migrate_passes_and_writes_every_blob_it_carried() {
    let dir = std::env::temp_dir().join(format!("vsflow-cli-save-{}", std::process::id()));
    let out = bin()
        .args(["migrate", "--ports", "3", "--flows-per-port", "50", "--json", "--save-dir"])
        .arg(&dir)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["passed"], true);
    assert_eq!(json["proof"]["inbound_permitted_on_b"], json["proof"]["connections"]);
    let blobs: Vec<_> = std::fs::read_dir(&dir).expect("save dir").collect();
    assert_eq!(blobs.len(), 3);
    for b in blobs {
        let path = b.expect("entry").path();
        assert!(
            bin().args(["blob", "inspect"]).arg(&path).status().expect("runs").success(),
            "{}",
            path.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn differential_lists_its_cases_runs_one_as_json_and_fails_on_an_unknown_case() {
    let out = bin().args(["differential", "--list"]).output().expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for case in ["legit", "spray", "restore-window", "degraded-empty", "chain"] {
        assert!(text.lines().any(|l| l.starts_with(case)), "{case} listed: {text}");
    }
    let out = bin()
        .args([
            "differential",
            "--case",
            "spray",
            "--spray",
            "2000",
            "--connections",
            "400",
            "--json",
        ])
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["passed"], true);
    let classes = v["cases"][0]["classes"].as_array().expect("classes");
    let sprayed: u64 = classes
        .iter()
        .filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with("spray: ")))
        .map(|c| c["packets"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(sprayed, 2000, "{v}");
    let out = bin().args(["differential", "--case", "no-such-case"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let out = bin().args(["differential", "--set", "RestoreMode"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2), "a setting without a value is a usage error");
    let out = bin()
        .args(["differential", "--case", "restore-window", "--set", "RestoreMode=1", "--json"])
        .output()
        .expect("runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["options"]["settings"][0], serde_json::json!(["RestoreMode", 1]), "{v}");
    assert_eq!(v["passed"], true, "{v}");
}

fn capture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/pcap").join(name)
}

// Issue 17: a capture whose writer stopped in the middle of a record (dpkt's
// truncated_dns_2.pcap: one DNS answer, then 7 of the next record header's 16 bytes) was
// refused whole, "Error reading bytes" and no report, though tcpdump shows its packet: a
// customer's capture cut short is still their traffic. It is replayed as far as it reads, the
// damage is reported, and the exit status is 2 (never a clean pass).
#[test]
fn replay_of_a_capture_cut_mid_record_reports_the_frames_before_the_cut_and_exits_2() {
    let out = bin()
        .arg("replay")
        .arg(capture("dpkt-truncated-dns-2.pcap"))
        .args(["--vm-ip", "192.168.1.100"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("frames 1: classified 1 (permitted 1, blocked 0)"), "{text}");
    assert!(text.contains("udp 192.168.1.100:53 <-> 192.168.1.101:1297: out 1 in 0"), "{text}");
    assert!(text.contains("capture damaged: frame 1 unreadable"), "{text}");
    assert_eq!(out.status.code(), Some(2), "{text}");
}
