//! The link of vsflow.sys on Linux: rustc for `x86_64-pc-windows-msvc`, profile `driver`,
//! against the wdk mirror (as `cargo xtask wdk-check` patches it in), with crates/kmdf-stub as
//! the KMDF entry stub, import libraries made from [`super::exports`] by rust-lld, and rust-lld
//! as the linker with wdk-build's linker arguments for a KMDF driver.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::exports::{self, EMPTY_IMPORT_LIBS, MODULES};
use crate::{KERNEL_TARGET, root, run};

/// wdk-build 0.6's `configure_binary_build` for a KMDF driver, in its order (derived there
/// from the WDK's WindowsDriver.KernelMode.props, WindowsDriver.KernelMode.KMDF.props and
/// Microsoft.Link.Common.props). rust-lld accepts each; `/KERNEL` and `/MAPINFO:EXPORTS` are
/// accepted and have no effect in it.
pub const WDK_LINK_ARGS: [&str; 13] = [
    "/DRIVER",
    "/NODEFAULTLIB",
    "/SUBSYSTEM:NATIVE",
    "/KERNEL",
    "/ENTRY:FxDriverEntry",
    "/IGNORE:4257",
    "/NXCOMPAT",
    "/DYNAMICBASE",
    "/MAP",
    "/MAPINFO:EXPORTS",
    "/OPT:REF,ICF",
    "/INTEGRITYCHECK",
    "/MANIFEST:NO",
];

/// Added to wdk-build's arguments, after rustc's own:
/// - `/RELEASE`, the header checksum: what MSVC's linker does by default for
///   `/SUBSYSTEM:NATIVE` and rust-lld does not ("The /RELEASE option is set by default when the
///   /SUBSYSTEM:NATIVE option is specified"; "The operating system requires the Checksum for
///   device drivers", Microsoft Learn, /RELEASE);
/// - `/DEBUG:NONE` over rustc's `/DEBUG`: no PDB and no debug directory. The PDB names the
///   object files by their absolute paths and its GUID (in the image) hashes it, so two builds
///   in different directories would differ; the loader harness needs no PDB, and the Windows
///   build (the one to debug) keeps its own.
pub const LLD_EXTRA_ARGS: [&str; 2] = ["/RELEASE", "/DEBUG:NONE"];

fn host_tool(name: &str) -> Result<PathBuf, String> {
    let out = |args: &[&str]| -> Result<String, String> {
        let o = Command::new("rustc")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run rustc: {e}"))?;
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let sysroot = out(&["--print", "sysroot"])?;
    let host = out(&["-vV"])?
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .ok_or("rustc -vV gave no host")?;
    let tool = Path::new(sysroot.trim()).join("lib/rustlib").join(host).join("bin").join(name);
    if tool.is_file() {
        Ok(tool)
    } else {
        Err(format!("{} not found (rustup installs it with the toolchain)", tool.display()))
    }
}

/// Writes the `.def` files and makes the import libraries in `dir`.
fn import_libraries(dir: &Path, lld: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut libs: Vec<(String, String)> = MODULES
        .iter()
        .filter_map(|m| m.import_lib.map(|lib| (lib.to_owned(), exports::def_file(m))))
        .collect();
    libs.extend(
        EMPTY_IMPORT_LIBS
            .iter()
            .map(|(lib, dll)| ((*lib).to_owned(), exports::empty_def_file(dll))),
    );
    for (lib, def) in libs {
        let def_path = dir.join(format!("{lib}.def"));
        std::fs::write(&def_path, def).map_err(|e| format!("{}: {e}", def_path.display()))?;
        let lld = lld.to_string_lossy();
        run(
            &lld,
            &[
                "-flavor",
                "link",
                "/lib",
                "/machine:x64",
                &format!("/def:{}", def_path.display()),
                &format!("/out:{}", dir.join(format!("{lib}.lib")).display()),
            ],
        )?;
    }
    Ok(())
}

/// `SOURCE_DATE_EPOCH` as the image's `TimeDateStamp` (what makes two builds byte-identical;
/// without it the linker stamps the time of the link).
fn timestamp() -> Result<Option<u32>, String> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(None),
        Ok(s) => s
            .trim()
            .parse::<u32>()
            .map(Some)
            .map_err(|_| format!("SOURCE_DATE_EPOCH={s}: not a 32-bit count of seconds")),
    }
}

/// Builds vsflow.sys into `target_dir` and copies it to `<target_dir>/vsflow.sys`.
///
/// # Errors
/// The import libraries, the compile or the link failed.
pub fn build(target_dir: &Path) -> Result<PathBuf, String> {
    let root = root().canonicalize().map_err(|e| e.to_string())?;
    let lld = host_tool("rust-lld")?;
    let libs = target_dir.join("lib");
    import_libraries(&libs, &lld)?;
    let cargo_home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| std::env::var("HOME").unwrap_or_default() + "/.cargo");
    // For every crate of the kernel target: wdk-build's static CRT (it refuses a driver build
    // without), and paths in panic messages that do not depend on where the checkout or the
    // cargo home lie (two machines build the same bytes).
    let rustflags = [
        "-C".to_owned(),
        "target-feature=+crt-static".to_owned(),
        format!("--remap-path-prefix={}=/vsflow", root.display()),
        format!("--remap-path-prefix={cargo_home}=/cargo"),
    ];
    let rustflags_toml = rustflags.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", ");
    let mut args: Vec<String> = [
        "rustc",
        "-p",
        "vsflow-driver",
        "--lib",
        "--crate-type",
        "cdylib",
        "--profile",
        "driver",
        "--target",
        KERNEL_TARGET,
        "--features",
        "kmdf-stub",
        "--target-dir",
    ]
    .map(str::to_owned)
    .to_vec();
    args.push(target_dir.to_string_lossy().into_owned());
    // The mirror in place of the wdk crates, as `cargo xtask wdk-check` patches it in.
    args.extend(crate::wdk_check::patches(&root, &crate::wdk_check::MIRRORED));
    args.push("--config".into());
    args.push(format!("target.{KERNEL_TARGET}.linker={:?}", lld.to_string_lossy()));
    args.push("--config".into());
    args.push(format!("target.{KERNEL_TARGET}.rustflags=[{rustflags_toml}]"));
    args.push("--".into());
    args.extend(["-C", "linker-flavor=lld-link"].map(str::to_owned));
    args.push("-L".into());
    args.push(format!("native={}", libs.display()));
    for m in MODULES {
        if let Some(lib) = m.import_lib {
            args.push("-l".into());
            args.push(format!("dylib={lib}"));
        }
    }
    let mut link_args: Vec<String> =
        WDK_LINK_ARGS.iter().chain(&LLD_EXTRA_ARGS).map(|a| (*a).to_owned()).collect();
    if let Some(t) = timestamp()? {
        link_args.push(format!("/timestamp:{t}"));
    }
    for a in link_args {
        args.push("-C".into());
        args.push(format!("link-arg={a}"));
    }
    crate::wdk_check::keeping_lock(&root, || {
        // The build's flags are the ones above: a RUSTFLAGS in the environment would replace
        // the configured rustflags (and with them the path remapping and the static CRT).
        let status = Command::new("cargo")
            .args(&args)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .current_dir(&root)
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("the vsflow.sys build failed ({status})"))
        }
    })?;
    let built = target_dir.join(KERNEL_TARGET).join("driver").join("vsflow.dll");
    let image = target_dir.join("vsflow.sys");
    std::fs::copy(&built, &image).map_err(|e| format!("{}: {e}", built.display()))?;
    Ok(image)
}
