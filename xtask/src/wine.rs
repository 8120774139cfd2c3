//! `cargo xtask wine`: netports' Windows code run under Wine, against test doubles.
//!
//! Wine (Debian 12: Wine 8.0) lacks `GetTeredoPort`, `NotifyTeredoPortChange`, the persistent
//! reservation functions and the WFP functions netports uses. The doubles in
//! `crates/netports/tests/wine-doubles/` (iphlpapi, fwpuclnt, and bcryptprimitives for the
//! test harness) implement them as Microsoft documents them (docs/SIMULATOR-FIDELITY.md, "Wine
//! doubles"). They are built with mingw, copied into the prefix's system32 and loaded "native"
//! for netports' two executables only (Wine's per-application `DllOverrides`; Wine's own
//! services keep its builtin iphlpapi, which has what they use), so netports' production
//! loader (`LoadLibraryExW` from System32) finds them as it would the real DLLs: no test-only
//! code path in netports.
//!
//! What this shows is netports' handling of the answers it gets: the doubles follow Microsoft's
//! documents where netports depends on them, and the rest is Wine's (its sockets, its bind
//! rules, its registry and service manager), not Windows'. Exclusions and reservations never
//! refuse a bind under Wine, for example, so the "excluded" verdicts are checked against the
//! model (`crates/netports/tests/cli.rs`), and what only Windows can show is listed in
//! docs/WINDOWS-VERIFICATION.md.
//!
//! Two parts:
//! 1. the release `netports.exe`, command by command, with the exit code and output each must
//!    give (the error mapping, the byte-order cross-check, what stays unsupported);
//! 2. `crates/netports/tests/wine.rs` built for Windows and run test by test, each in its own
//!    Wine process: the watcher (start, follow, stop, cancel from its own callback), the
//!    reservation round trip, why-blocked, the host Teredo filters, error mapping.
//!
//! Paths come from `cargo metadata` (`CARGO_TARGET_DIR` is respected); a missing executable or
//! a failing tool is an error, never a silent skip. Without Wine the step is skipped loudly,
//! except under CI (`CI` set), where that is an error.

use std::fmt::Write as _;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{USER_TARGET, root, run};

/// Tools the step needs; `.ci/run` installs them (`wine`, `wine64`, `gcc-mingw-w64-x86-64`).
const TOOLS: [&str; 4] =
    ["wine", "wineserver", "x86_64-w64-mingw32-gcc", "x86_64-w64-mingw32-objdump"];

/// The doubles: DLL name and extra libraries.
const DOUBLES: [(&str, &[&str]); 3] =
    [("iphlpapi", &[]), ("fwpuclnt", &[]), ("bcryptprimitives", &["-ladvapi32"])];

/// Wine's overrides for every process: no Mono/Gecko prompts. (The doubles are native for
/// netports' executables only: [`install_doubles`].)
const OVERRIDES: &str = "mscoree,mshtml=";
/// The name the Windows test binary runs under (per-application overrides are by name).
const TEST_EXE: &str = "netports-wine-tests.exe";

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What one command must give.
struct Case {
    args: Vec<String>,
    env: Vec<(&'static str, &'static str)>,
    exit: i32,
    /// Must appear in stdout (or, for failures, in the last stderr line).
    says: String,
    /// A failure that reports on stdout (a check's answer), with nothing on stderr.
    stdout: bool,
}

fn case(args: &[&str], exit: i32, says: &str) -> Case {
    Case {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        env: Vec::new(),
        exit,
        says: says.to_owned(),
        stdout: false,
    }
}

impl Case {
    fn with(mut self, key: &'static str, value: &'static str) -> Self {
        self.env.push((key, value));
        self
    }

    /// The answer is on stdout even though the exit code is not 0.
    const fn on_stdout(mut self) -> Self {
        self.stdout = true;
        self
    }
}

/// Runs the step.
///
/// # Errors
/// A build failure, a missing executable, a failing tool, or any command or test that does
/// not give what it must.
pub fn smoke() -> Result<(), String> {
    let missing: Vec<&str> = TOOLS.into_iter().filter(|t| !have(t)).collect();
    if !missing.is_empty() {
        let why = format!(
            "{} not installed (apt-get install wine wine64 gcc-mingw-w64-x86-64; .ci/run does)",
            missing.join(", ")
        );
        if std::env::var_os("CI").is_some() {
            return Err(why);
        }
        println!("SKIPPED: {why}");
        return Ok(());
    }
    let target = crate::target::dir()?;
    // The release binary, the one that ships. (A debug build also imports
    // `bcryptprimitives.dll`, which Rust's std uses for hash seeds and Wine 8 lacks; the
    // release binary does not, because netports never seeds a std `HashMap`:
    // `check_imports` keeps it that way.)
    run("cargo", &["build", "-p", "netports", "--release", "--target", USER_TARGET, "--locked"])?;
    let exe = existing(target.join(USER_TARGET).join("release").join("netports.exe"))?;
    check_imports(&exe)?;
    let dir = target.join("wine-doubles");
    let doubles = build_doubles(&dir)?;
    // Not beside the doubles: Windows looks in the application's directory before system32,
    // so there the test's own LoadLibraryW would load the doubles from it, not from system32
    // where netports' production loader (LOAD_LIBRARY_SEARCH_SYSTEM32) looks.
    let tests_dir = target.join("wine-tests");
    std::fs::create_dir_all(&tests_dir).map_err(|e| format!("{}: {e}", tests_dir.display()))?;
    let tests = tests_dir.join(TEST_EXE);
    std::fs::copy(build_tests()?, &tests).map_err(|e| format!("{}: {e}", tests.display()))?;
    let prefix = target.join("wine-prefix");
    install_doubles(&prefix, &doubles)?;
    // The set-up's own Wine session (wineboot, regedit) must end first: while its server
    // runs, a second `wineserver` for the prefix exits at once (status 2), and everything
    // would run in the set-up's session instead of the persistent one.
    wait_for_server_exit(&prefix)?;

    // One wine server for everything (each process would otherwise start and stop its own).
    // It stays in the foreground: spawned with its output to a log, stopped with `-k`.
    let log = prefix.with_file_name("wineserver.log");
    let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    let mut server = Command::new("wineserver")
        .args(["-f", "-p"])
        .env("WINEPREFIX", &prefix)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot run wineserver: {e}"))?;
    let result = register_services(&prefix)
        .and_then(|()| persistent(&mut server, &log))
        .and_then(|()| run_all(&exe, &tests, &prefix));
    let _ = Command::new("wineserver").arg("-k").env("WINEPREFIX", &prefix).status();
    let _ = server.wait();
    result
}

/// How long the set-up's server may take to exit on its own.
const SESSION_EXIT: std::time::Duration = std::time::Duration::from_mins(1);

/// Ends the Wine session of `prefix`: waits (`wineserver -w`) for its server to exit, as the
/// set-up's does once its processes have; after [`SESSION_EXIT`] stops it (`wineserver -k`),
/// since a persistent server left by an interrupted run never exits and `-w` would wait forever.
fn wait_for_server_exit(prefix: &Path) -> Result<(), String> {
    let wait = || {
        Command::new("wineserver")
            .arg("-w")
            .env("WINEPREFIX", prefix)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run wineserver -w: {e}"))
    };
    let mut waiting = wait()?;
    let start = std::time::Instant::now();
    while start.elapsed() < SESSION_EXIT {
        match waiting.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("wineserver -w failed ({status})")),
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(100)),
            Err(e) => return Err(format!("wineserver -w: {e}")),
        }
    }
    let _ = waiting.kill();
    let _ = waiting.wait();
    println!(
        "wine: a server for the prefix still runs after {SESSION_EXIT:?} (left by an interrupted run?): stopping it"
    );
    let _ = Command::new("wineserver").arg("-k").env("WINEPREFIX", prefix).status();
    let status = wait()?.wait().map_err(|e| format!("wineserver -w: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("wineserver -w failed ({status})")) }
}

/// Whether the persistent server spawned by [`smoke`] is the one serving the prefix: had
/// another server been running, it would have exited already (`register_services` ran Wine
/// processes in between, so it had the time to).
fn persistent(server: &mut std::process::Child, log: &Path) -> Result<(), String> {
    match server.try_wait() {
        Ok(None) => Ok(()),
        Ok(Some(status)) => Err(format!(
            "the persistent wineserver exited ({status}): another server runs for the prefix; see {}",
            log.display()
        )),
        Err(e) => Err(format!("wineserver: {e}")),
    }
}

fn run_all(exe: &Path, tests: &Path, prefix: &Path) -> Result<(), String> {
    let mut failures = commands(exe, prefix)?;
    let (passed, total, test_failures) = windows_tests(tests, prefix)?;
    println!(
        "wine: {passed} of {total} Windows tests passed against the doubles (netports' handling of what Wine and the doubles answer, not Windows' behaviour)"
    );
    failures.extend(test_failures);
    if failures.is_empty() { Ok(()) } else { Err(failures.join("\n")) }
}

/// The CLI cases; returns the failures.
fn commands(exe: &Path, prefix: &Path) -> Result<Vec<String>, String> {
    // Ports held by this (Linux) process: Wine's bind of them must fail with "in use".
    let tcp = TcpListener::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    let udp = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    let tcp_port = tcp.local_addr().map_err(|e| e.to_string())?.port().to_string();
    let udp_port = udp.local_addr().map_err(|e| e.to_string())?.port().to_string();
    let free_port = {
        let probe = TcpListener::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        probe.local_addr().map_err(|e| e.to_string())?.port().to_string()
    };
    // Wine names the profile after the Unix user.
    let user = std::env::var("USER").unwrap_or_else(|_| "root".to_owned());
    let local_app_data = format!(r"C:\users\{user}\AppData\Local");
    // A folder any user may write, made on the Linux side (Wine maps its mode to the DACL).
    let shared = prefix.join("drive_c/shared");
    std::fs::create_dir_all(&shared).map_err(|e| format!("{}: {e}", shared.display()))?;
    world_writable(&shared)?;
    let cases = cli_cases(&tcp_port, &udp_port, &free_port, &local_app_data);
    let mut failures = Vec::new();
    for c in &cases {
        if let Err(e) = check(exe, prefix, c) {
            failures.push(e);
        }
    }
    // The byte-order disagreement is logged (stderr) when the double reports host order.
    let warned = wine(exe, &["teredo", "port"], prefix, &[("NETPORTS_DOUBLE_TEREDO", "51234")])?;
    if warned.stderr.contains("reports the Teredo port in host order") {
        println!("  ok   netports teredo port (host-order source) -> the disagreement is logged");
    } else {
        failures
            .push(format!("  FAIL the byte-order disagreement was not logged: {}", warned.stderr));
    }
    drop((tcp, udp));
    println!(
        "wine: {} of {} netports.exe commands as expected (netports' handling; Wine's sockets and the doubles, not Windows)",
        cases.len() + 1 - failures.len(),
        cases.len() + 1
    );
    Ok(failures)
}

/// Gives every user write access to `dir` (Wine shows it as an Everyone full-access ACE).
#[cfg(unix)]
fn world_writable(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// Wine runs on Unix only.
#[cfg(not(unix))]
fn world_writable(_: &Path) -> Result<(), String> {
    Err("the Wine step runs on Linux".into())
}

/// What each netports.exe command must give; the ports are held (`tcp`, `udp`) or free.
fn cli_cases(tcp_port: &str, udp_port: &str, free_port: &str, local_app_data: &str) -> Vec<Case> {
    let not_recognised = "netsh excludedportrange: output not recognised";
    vec![
        case(&["--help"], 0, "Exit codes: 0 ok"),
        case(
            &["why-blocked", tcp_port],
            0,
            &format!("tcp {tcp_port} is in use (bind fails with WSAEADDRINUSE on 0.0.0.0"),
        ),
        case(&["why-blocked", udp_port, "--udp"], 0, &format!("udp {udp_port} is in use")),
        case(&["why-blocked", free_port], 0, &format!("tcp {free_port} is free")),
        // Wine's netsh prints nothing: the sources are named as not consulted, not faked.
        case(&["why-blocked", free_port], 0, not_recognised),
        case(&["--json", "why-blocked", tcp_port], 0, "\"verdict\":\"in-use\""),
        case(&["list"], 1, not_recognised),
        case(&["find-free", "3"], 1, not_recognised),
        case(&["reserve", "tcp", "0", "10"], 2, "invalid port block: a port is a number"),
        case(&["reserve", "udp", "65535", "2"], 2, "runs past port 65535"),
        case(&["acquire"], 2, "netports acquire [--udp] [--hold] [START] COUNT"),
        // The doubles: Teredo not started, then started (the system-ports list reports host
        // order: the UDP table settles it and the disagreement is logged).
        case(&["teredo", "port"], 6, "the Teredo client is not started"),
        case(&["teredo", "port"], 0, "teredo client port: udp 51234")
            .with("NETPORTS_DOUBLE_TEREDO", "51234"),
        case(&["--json", "teredo", "port"], 0, r#"{"byte_order":"host","byte_order_basis":"hint","static_port":3544,"teredo_port":51234,"teredo_ports":[51234]}"#)
            .with("NETPORTS_DOUBLE_TEREDO", "51234"),
        case(&["reserve", "tcp", "50000", "10"], 4, "access denied: run from an elevated prompt"),
        case(&["reserve", "tcp", "50000", "10"], 0, "reserved tcp 50000-50009")
            .with("NETPORTS_DOUBLE_ELEVATED", "1"),
        case(
            &["lookup", "udp", "50000", "10"],
            6,
            "not found: no reservation with exactly this start and count",
        ),
        case(&["release", "tcp", "50000", "10"], 4, "access denied"),
        case(&["teredo-exception"], 4, "access denied"),
        // Windows Defender Firewall's Teredo rules, as `install_doubles` put them in the
        // prefix's registry (the inbound one enabled, the outbound one disabled).
        case(
            &["teredo-exception", "--check"],
            6,
            "CoreNet-Teredo-In (local): enabled: allow in, udp, local port Teredo, svchost.exe, service iphlpsvc\nCoreNet-Teredo-Out (local): disabled",
        )
        .on_stdout(),
        case(&["teredo-exception", "--check"], 6, "Enable-NetFirewallRule -Name CoreNet-Teredo-In,CoreNet-Teredo-Out")
            .on_stdout(),
        // Wine's own ws2_32 has no runtime reservations (not doubled).
        case(&["acquire", "5"], 3, "SIO_ACQUIRE_PORT_RESERVATION is not available"),
        case(&["driver", "status"], 7, "the vsflow driver is not installed"),
        case(&["driver", "flows", "1"], 7, "the vsflow driver is not installed"),
        // The name provider: Wine has no NSPv2 hosting or catalog install, but the names file
        // is real file I/O (with `LockFileEx`, a create-new temporary file and an atomic
        // rename) in the user's own %LOCALAPPDATA% (never %ProgramData%, where any user can
        // create the folder first), its folder's owner and DACL checked before every use.
        // The catalog is checked first: not installed (Wine cannot install it), exit 6.
        case(&["nsp", "serve"], 6, "the netports name provider is not installed: run `netports nsp install`"),
        // Both catalogs are checked first; Wine has no 32-bit catalog functions (nor
        // WSCInstallNameSpaceEx): unsupported, never a half install.
        case(&["nsp", "install"], 3, "WSCEnumNameSpaceProviders32 is not exported by ws2_32.dll"),
        case(&["nsp", "install", "--service"], 2, "unexpected argument '--service'"),
        case(&["nsp", "uninstall"], 3, "WSCEnumNameSpaceProviders32 is not exported by ws2_32.dll"),
        case(
            &["nsp", "register", "Web", "tcp", "50000", "10"],
            0,
            &format!(
                r"registered web -> tcp 50000-50009 (in {local_app_data}\netports\nsp-names.json)"
            ),
        ),
        case(&["nsp", "names"], 0, "web                      tcp 50000-50009"),
        case(
            &["--json", "nsp", "names"],
            0,
            r#"{"count":10,"name":"web","protocol":"tcp","start":50000}"#,
        ),
        case(&["nsp", "unregister", "web"], 0, "unregistered web (was tcp 50000-50009)"),
        case(&["nsp", "unregister", "web"], 6, "web is not registered"),
        // A folder other users can write (mode 0777 here, which Wine shows as a DACL granting
        // Everyone full access) is refused, for reading and for writing.
        case(
            &[
                "nsp",
                "register",
                "--names-file",
                r"C:\shared\names.json",
                "web",
                "tcp",
                "50000",
                "10",
            ],
            4,
            r"C:\shared: other users can change it",
        ),
        case(
            &["nsp", "names", "--names-file", r"C:\shared\names.json"],
            4,
            "other users can change it",
        ),
        // Wine's WSALookupServiceBegin is a stub that fails: the client path says so.
        case(&["nsp", "resolve", "teredo"], 1, "WSALookupServiceBeginW failed"),
    ]
}

fn existing(path: PathBuf) -> Result<PathBuf, String> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing after the build (target dir from cargo metadata)",
            path.display()
        ))
    }
}

/// Builds `tests/wine.rs` for Windows; its executable.
fn build_tests() -> Result<PathBuf, String> {
    let out = Command::new("cargo")
        .args([
            "test",
            "-p",
            "netports",
            "--target",
            USER_TARGET,
            "--test",
            "wine",
            "--no-run",
            "--locked",
            "--message-format=json",
        ])
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("building the Windows tests failed ({})", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let exe = text
        .lines()
        .filter(|l| {
            l.contains("\"reason\":\"compiler-artifact\"") && l.contains("\"name\":\"wine\"")
        })
        .find_map(|l| crate::target::json_string_field(l, "executable"))
        .ok_or("cargo reported no executable for the `wine` test")?;
    existing(PathBuf::from(exe))
}

/// Compiles the doubles into `dir`; their paths.
fn build_doubles(dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let src = root().join("crates/netports/tests/wine-doubles");
    let mut built = Vec::new();
    for (name, libs) in DOUBLES {
        let dll = dir.join(format!("{name}.dll"));
        let c = src.join(format!("{name}.c"));
        let def = src.join(format!("{name}.def"));
        let status = Command::new("x86_64-w64-mingw32-gcc")
            .args(["-O2", "-Wall", "-Wextra", "-Werror", "-static-libgcc", "-shared", "-o"])
            .arg(&dll)
            .arg(&c)
            .arg(&def)
            .args(libs)
            .status()
            .map_err(|e| format!("cannot run x86_64-w64-mingw32-gcc: {e}"))?;
        if !status.success() {
            return Err(format!("building the {name} double failed ({status})"));
        }
        built.push(existing(dll)?);
    }
    // The service stand-in (tests/wine-doubles/service.c): an executable, registered as the
    // services "BFE" and "iphlpsvc" by `register_services`.
    let exe = dir.join(SERVICE_EXE);
    let status = Command::new("x86_64-w64-mingw32-gcc")
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-static-libgcc", "-o"])
        .arg(&exe)
        .arg(src.join("service.c"))
        .status()
        .map_err(|e| format!("cannot run x86_64-w64-mingw32-gcc: {e}"))?;
    if !status.success() {
        return Err(format!("building the service stand-in failed ({status})"));
    }
    built.push(existing(exe)?);
    Ok(built)
}

/// Where Wine keeps its 64-bit builtin DLLs (Debian 12's package first).
const WINE_DLL_DIRS: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/wine/x86_64-windows",
    "/usr/lib/wine/x86_64-windows",
    "/usr/local/lib/wine/x86_64-windows",
];

/// The service stand-in's file name in the prefix's system32.
const SERVICE_EXE: &str = "service-double.exe";

/// Registers the service stand-in as BFE and iphlpsvc (once per prefix) and starts BFE (Wine
/// has neither; the tests that stop BFE leave it running, iphlpsvc starts only where a test
/// wants it).
fn register_services(prefix: &Path) -> Result<(), String> {
    let binpath = format!(r"C:\windows\system32\{SERVICE_EXE}");
    for name in ["BFE", "iphlpsvc"] {
        // Fails harmlessly when the service exists already (a reused prefix).
        wine_tool(prefix, &["sc", "create", name, "binpath=", &binpath])?;
    }
    // Fails harmlessly when it runs already.
    wine_tool(prefix, &["sc", "start", "BFE"])?;
    // The tests expect BFE running: say so here if it is not, rather than in five tests.
    let query = Command::new("wine")
        .args(["sc", "query", "BFE"])
        .env("WINEPREFIX", prefix)
        .env("WINEDEBUG", "-all")
        .env("WINEDLLOVERRIDES", OVERRIDES)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run wine sc query BFE: {e}"))?;
    let text = String::from_utf8_lossy(&query.stdout);
    if text.contains("RUNNING") {
        Ok(())
    } else {
        Err(format!("the BFE stand-in did not start (wine sc query BFE: {})", text.trim()))
    }
}

/// Runs one of Wine's own programs quietly; whether it succeeded.
fn wine_tool(prefix: &Path, args: &[&str]) -> Result<bool, String> {
    let status = Command::new("wine")
        .args(args)
        .env("WINEPREFIX", prefix)
        .env("WINEDEBUG", "-all")
        .env("WINEDLLOVERRIDES", OVERRIDES)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run wine {}: {e}", args.join(" ")))?;
    Ok(status.success())
}

/// Creates the prefix if needed and puts the doubles in its system32.
fn install_doubles(prefix: &Path, doubles: &[PathBuf]) -> Result<(), String> {
    let system32 = prefix.join("drive_c/windows/system32");
    if !system32.is_dir() {
        let log = prefix.with_file_name("wineboot.log");
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        // Plain `wineboot`, not `wineboot -i`: for a missing prefix Wine's loader runs
        // `wineboot --init` itself before the program it was asked to run, and `-i` then
        // initialises a second time, starting a second services.exe beside the first. Two
        // service control managers in one session share the ServiceCurrent counter that
        // names a service's control pipe, so a service one of them starts may connect to the
        // other's pipe: StartService then times out, and the service stays stopped (main's
        // CI, 2026-12-07: five Windows tests timed out waiting for the BFE and iphlpsvc
        // stand-ins on a fresh prefix, while reused prefixes passed).
        let status = Command::new("wineboot")
            .env("WINEPREFIX", prefix)
            .env("WINEDEBUG", "-all")
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .status()
            .map_err(|e| format!("cannot run wineboot: {e}"))?;
        if !status.success() || !system32.is_dir() {
            return Err(format!("wineboot failed ({status}); see {}", log.display()));
        }
    }
    for dll in doubles {
        let name = dll.file_name().ok_or("a double without a name")?;
        // (Also the service stand-in's executable.)
        std::fs::copy(dll, system32.join(name)).map_err(|e| format!("{}: {e}", dll.display()))?;
    }
    // Wine's own iphlpapi under another name: the iphlpapi double takes the endpoint tables
    // (the real sockets) from it.
    let wine_iphlpapi = WINE_DLL_DIRS
        .iter()
        .map(|d| Path::new(d).join("iphlpapi.dll"))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("Wine's builtin iphlpapi.dll is in none of {WINE_DLL_DIRS:?}"))?;
    std::fs::copy(&wine_iphlpapi, system32.join("wineiphlp.dll"))
        .map_err(|e| format!("{}: {e}", wine_iphlpapi.display()))?;
    // Native for netports.exe and the test binary only.
    let mut reg = String::from("REGEDIT4\n");
    for exe in ["netports.exe", TEST_EXE] {
        let _ = write!(
            reg,
            "\n[HKEY_CURRENT_USER\\Software\\Wine\\AppDefaults\\{exe}\\DllOverrides]\n"
        );
        for (name, _) in DOUBLES {
            let _ = writeln!(reg, "\"{name}\"=\"native\"");
        }
    }
    // Windows Defender Firewall's Teredo rules in its local store ([MS-GPFAS] 2.2.2.19
    // grammar): the inbound one enabled, the outbound one disabled.
    reg.push_str(
        "\n[HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\SharedAccess\\Parameters\\FirewallPolicy\\FirewallRules]\n",
    );
    for (id, rule) in [
        (
            "CoreNet-Teredo-In",
            r"v2.30|Action=Allow|Active=TRUE|Dir=In|Protocol=17|LPort=Teredo|App=%SystemRoot%\system32\svchost.exe|Svc=iphlpsvc|Edge=TRUE|",
        ),
        (
            "CoreNet-Teredo-Out",
            r"v2.30|Action=Allow|Active=FALSE|Dir=Out|Protocol=17|App=%SystemRoot%\system32\svchost.exe|Svc=iphlpsvc|",
        ),
    ] {
        let _ = writeln!(reg, "\"{id}\"=\"{}\"", rule.replace('\\', "\\\\"));
    }
    let file = prefix.with_file_name("wine-doubles.reg");
    std::fs::write(&file, reg).map_err(|e| format!("{}: {e}", file.display()))?;
    let log = prefix.with_file_name("regedit.log");
    let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let status = Command::new("wine")
        .arg("regedit")
        .arg("/S")
        .arg(&file)
        .env("WINEPREFIX", prefix)
        .env("WINEDEBUG", "-all")
        .env("WINEDLLOVERRIDES", OVERRIDES)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .map_err(|e| format!("cannot run wine regedit: {e}"))?;
    if !status.success() {
        return Err(format!(
            "wine regedit {} failed ({status}); see {}",
            file.display(),
            log.display()
        ));
    }
    Ok(())
}

/// Runs every test of the Windows test binary in its own Wine process: (passed, total,
/// failures).
fn windows_tests(tests: &Path, prefix: &Path) -> Result<(usize, usize, Vec<String>), String> {
    let list = wine(tests, &["--list", "--format", "terse"], prefix, &[])?;
    let names: Vec<String> =
        list.stdout.lines().filter_map(|l| l.strip_suffix(": test")).map(str::to_owned).collect();
    if names.is_empty() {
        return Err(format!(
            "the Windows test binary listed no tests: {}{}",
            list.stdout, list.stderr
        ));
    }
    let mut failures = Vec::new();
    for name in &names {
        let got = wine(
            tests,
            &["--exact", name, "--test-threads=1"],
            prefix,
            &[("NETPORTS_WINE_DOUBLES", "1")],
        )?;
        let ran = got.stdout.contains("test result: ok. 1 passed");
        if got.code == 0 && ran {
            println!("  ok   {name}");
        } else {
            let why = if got.code == 86 {
                " (the double caught a cancel from inside its own callback: a deadlock on Windows)"
            } else {
                ""
            };
            failures.push(format!(
                "  FAIL {name}: exit {}{why}\n    stdout: {}\n    stderr: {}",
                got.code, got.stdout, got.stderr
            ));
        }
    }
    Ok((names.len() - failures.len(), names.len(), failures))
}

/// DLLs the binary must not import: Wine 8 lacks them, and every command would fail to
/// start (exit 53) instead of testing anything.
const MISSING_ON_WINE: [&str; 1] = ["bcryptprimitives.dll"];

/// Fails with a clear message when the binary imports a DLL Wine lacks, or objdump fails.
fn check_imports(exe: &Path) -> Result<(), String> {
    let out = Command::new("x86_64-w64-mingw32-objdump")
        .arg("-p")
        .arg(exe)
        .output()
        .map_err(|e| format!("cannot run x86_64-w64-mingw32-objdump: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "x86_64-w64-mingw32-objdump -p {} failed ({}): {}",
            exe.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    if !text.contains("dll name:") {
        return Err(format!(
            "objdump listed no imports for {}: not a PE executable?",
            exe.display()
        ));
    }
    for dll in MISSING_ON_WINE {
        if text.contains(&format!("dll name: {dll}")) {
            return Err(format!(
                "netports.exe imports {dll}, which Wine 8 lacks (std's HashMap RandomState \
                 imports ProcessPrng from it: use a fixed-key hasher for maps keyed by our own ids)"
            ));
        }
    }
    Ok(())
}

/// What a Wine process gave.
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn wine(exe: &Path, args: &[&str], prefix: &Path, env: &[(&str, &str)]) -> Result<Output, String> {
    // Output goes to files, not pipes: the services Wine starts inherit the handles and
    // outlive the program, so a pipe would not reach end-of-file.
    let dir = prefix.with_file_name("wine-out");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let file = |p: &Path| std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut cmd = Command::new("wine");
    cmd.arg(exe)
        .args(args)
        .env("WINEPREFIX", prefix)
        .env("WINEDEBUG", "-all")
        .env("WINEDLLOVERRIDES", OVERRIDES)
        .stdin(Stdio::null())
        .stdout(file(&out_path)?)
        .stderr(file(&err_path)?);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd.status().map_err(|e| format!("cannot run wine: {e}"))?;
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    Ok(Output {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&read(&out_path)?).into_owned(),
        stderr: String::from_utf8_lossy(&read(&err_path)?).into_owned(),
    })
}

fn check(exe: &Path, prefix: &Path, c: &Case) -> Result<(), String> {
    let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
    let out = wine(exe, &args, prefix, &c.env)?;
    // Wine's own chatter (prefix creation) goes to stderr before the program runs; the
    // program's error is its last line.
    let last_err = out.stderr.lines().last().unwrap_or("");
    let on_stdout = c.exit == 0 || c.stdout;
    let shown = if on_stdout { out.stdout.as_str() } else { out.stderr.as_str() };
    let one_line = if c.stdout {
        out.stderr.is_empty()
    } else {
        c.exit == 0 || c.exit == 2 || last_err.starts_with("netports: ")
    };
    let env: Vec<String> = c.env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    let label = format!("{}netports {}", env.concat(), c.args.join(" "));
    if out.code == c.exit && shown.contains(&c.says) && one_line && !out.stderr.contains("panicked")
    {
        println!("  ok   {label} -> {}", out.code);
        Ok(())
    } else {
        Err(format!(
            "  FAIL {label}: exit {} (want {}), wanted {:?}\n    stdout: {}\n    stderr: {}",
            out.code, c.exit, c.says, out.stdout, out.stderr
        ))
    }
}
