//! `cargo xtask package`: the driver package in `<target dir>/package/vsflow/` (the target
//! directory as `cargo metadata` reports it, so `CARGO_TARGET_DIR` is respected).
//!
//! On every host: stamp `vsflow.inf` from `inf/vsflow.inx` (architecture, and `DriverVer` from
//! the date and the Cargo version), lint it, and lay out the package directory. On Linux, for
//! amd64: `vsflow.sys` linked by `cargo xtask sys` (rust-lld, the repository's KMDF stub and
//! import libraries) beside the INF, unsigned and without a catalog. On Windows with
//! the WDK on `PATH` (a Developer/EWDK prompt): also build the driver (profile `driver`: release with panic = abort), copy
//! `vsflow.sys`, run `infverif /w /h`, `inf2cat` and test-sign the `.sys` and `.cat` with
//! `signtool` (a test certificate is created on first use). Verify on Windows: the
//! Windows-only steps cannot run on the Linux CI.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::inf::{self, Stage};
use crate::{root, run};

/// `MM/DD/YYYY` of a Unix day number (proleptic Gregorian; Howard Hinnant's algorithm).
#[must_use]
pub fn mdy_from_days(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{m:02}/{d:02}/{y:04}")
}

fn today() -> String {
    // SOURCE_DATE_EPOCH makes packages reproducible.
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
        });
    mdy_from_days(secs.div_euclid(86_400))
}

/// Runs the packaging.
pub fn package(args: &[&str]) -> Result<(), String> {
    let arch = match args.iter().position(|a| *a == "--arch").and_then(|i| args.get(i + 1)) {
        None | Some(&"amd64") => "amd64",
        Some(&"arm64") => "arm64",
        Some(other) => return Err(format!("unknown architecture {other} (amd64 or arm64)")),
    };
    let inx = std::fs::read_to_string(root().join("inf/vsflow.inx"))
        .map_err(|e| format!("inf/vsflow.inx: {e}"))?;
    let version = format!("{}.0", env!("CARGO_PKG_VERSION"));
    let stamped = inf::stamp(&inx, arch, &today(), &version);
    let findings = inf::lint(&stamped, Stage::Stamped);
    if !findings.is_empty() {
        for f in &findings {
            eprintln!("vsflow.inf: {f}");
        }
        return Err("the stamped INF does not pass the lint".into());
    }
    let dir = crate::target::dir()?.join("package/vsflow").join(arch);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(dir.join("vsflow.inf"), &stamped).map_err(|e| e.to_string())?;
    println!(
        "package: {} (vsflow.inf stamped for {arch}, DriverVer {}, lint clean)",
        dir.display(),
        today()
    );
    if cfg!(windows) {
        windows_steps(&dir, arch)
    } else {
        if arch == "amd64" {
            let image = crate::sys::build()?;
            std::fs::copy(&image, dir.join("vsflow.sys"))
                .map_err(|e| format!("{}: {e}", image.display()))?;
            println!(
                "package: vsflow.sys linked on Linux (cargo xtask sys) beside vsflow.inf; not signed, no catalog"
            );
        }
        println!(
            "package: not on Windows: the WDK build, InfVerif, Inf2Cat and signing skipped (see docs/INSTALL.md)"
        );
        Ok(())
    }
}

fn windows_steps(dir: &Path, arch: &str) -> Result<(), String> {
    let target = if arch == "arm64" { "aarch64-pc-windows-msvc" } else { "x86_64-pc-windows-msvc" };
    run("cargo", &["build", "-p", "vsflow-driver", "--profile", "driver", "--target", target])?;
    let out = crate::target::dir()?.join(target).join("driver");
    let built = out.join("vsflow.dll");
    if !built.is_file() {
        return Err(format!("the driver build left no {}", built.display()));
    }
    std::fs::copy(&built, dir.join("vsflow.sys"))
        .map_err(|e| format!("{}: {e}", built.display()))?;
    let pdb = out.join("vsflow.pdb");
    let _ = std::fs::copy(&pdb, dir.join("vsflow.pdb"));
    let d = dir.to_string_lossy().into_owned();
    let inf_path = format!("{d}\\vsflow.inf");
    run("infverif", &["/v", "/w", "/h", &inf_path])?;
    let os = if arch == "arm64" { "10_NI_ARM64" } else { "10_x64" };
    run("inf2cat", &[&format!("/driver:{d}"), &format!("/os:{os}"), "/uselocaltime"])?;
    // Test signing: a self-signed certificate in a private store, as windows-drivers-rs does.
    let have_cert = run("certutil", &["-store", "PrivateCertStore", "vsflowTestCert"]).is_ok();
    if !have_cert {
        run(
            "makecert",
            &[
                "-r",
                "-pe",
                "-ss",
                "PrivateCertStore",
                "-n",
                "CN=vsflowTestCert",
                &format!("{d}\\vsflowTestCert.cer"),
            ],
        )?;
    }
    for file in ["vsflow.sys", "vsflow.cat"] {
        run(
            "signtool",
            &[
                "sign",
                "/v",
                "/fd",
                "SHA256",
                "/s",
                "PrivateCertStore",
                "/n",
                "vsflowTestCert",
                &format!("{d}\\{file}"),
            ],
        )?;
    }
    println!("package: {d} built, verified, cataloged and test-signed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::mdy_from_days;

    #[test]
    fn civil_dates_from_unix_days() {
        assert_eq!(mdy_from_days(0), "01/01/1970");
        assert_eq!(mdy_from_days(11_016), "02/29/2000");
        assert_eq!(mdy_from_days(20_413), "11/21/2025");
        assert_eq!(mdy_from_days(20_778), "11/21/2026");
    }
}
