//! `cargo xtask wine`: the real Windows build of `netports.exe` (x86_64-pc-windows-gnu) run
//! under Wine, command by command, with the exit code and output each must give.
//!
//! Wine (Debian 12: Wine 8.0) is a Windows without Teredo, persistent or runtime reservations
//! and the vsflow device, and its sockets are the Linux host's. So this proves, on a real PE
//! binary: run-time resolution turns every missing export into a clear "not available"
//! (exit 3) instead of a crash; validation happens before any Windows call (exit 2); a
//! missing driver says so (exit 7); and `why-blocked` really binds: a port a Linux process
//! holds is "in use", a free one is "free". What Wine cannot show (the APIs themselves) is
//! listed in docs/WINDOWS-VERIFICATION.md.

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::{USER_TARGET, root, run};

/// Tools the step needs; `.ci/run` installs them (`wine64`, `gcc-mingw-w64-x86-64`).
const TOOLS: [&str; 3] = ["wine", "x86_64-w64-mingw32-gcc", "x86_64-w64-mingw32-objdump"];

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What a command printed.
struct Captured {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// What one command must give.
struct Case {
    args: Vec<String>,
    exit: i32,
    /// Must appear in stdout (or, for failures, in the one stderr line).
    says: String,
}

fn case(args: &[&str], exit: i32, says: &str) -> Case {
    Case { args: args.iter().map(|a| (*a).to_owned()).collect(), exit, says: says.to_owned() }
}

/// Runs the step. Without Wine it is skipped loudly, except under CI (`CI` set), where that
/// is an error.
///
/// # Errors
/// A build failure or any command that does not give what it must.
pub fn smoke() -> Result<(), String> {
    let missing: Vec<&str> = TOOLS.into_iter().filter(|t| !have(t)).collect();
    if !missing.is_empty() {
        let why = format!(
            "{} not installed (apt-get install wine64 gcc-mingw-w64-x86-64; .ci/run does)",
            missing.join(", ")
        );
        if std::env::var_os("CI").is_some() {
            return Err(why);
        }
        println!("SKIPPED: {why}");
        return Ok(());
    }
    // The release binary, the one that ships. (A debug build also imports
    // `bcryptprimitives.dll`, which Rust's std uses for hash seeds and Wine 8 lacks; the
    // release binary does not, because netports never seeds a std `HashMap`:
    // `check_imports` keeps it that way.)
    run("cargo", &["build", "-p", "netports", "--release", "--target", USER_TARGET, "--locked"])?;
    let root = root().canonicalize().map_err(|e| e.to_string())?;
    let exe = root.join("target").join(USER_TARGET).join("release").join("netports.exe");
    check_imports(&exe)?;
    let prefix = root.join("target").join("wine-prefix");

    // Ports held by this (Linux) process: Wine's bind of them must fail with "in use".
    let tcp = TcpListener::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    let udp = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    let tcp_port = tcp.local_addr().map_err(|e| e.to_string())?.port().to_string();
    let udp_port = udp.local_addr().map_err(|e| e.to_string())?.port().to_string();
    let free_port = {
        let probe = TcpListener::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        probe.local_addr().map_err(|e| e.to_string())?.port().to_string()
    };

    let cases = [
        case(&["--help"], 0, "Exit codes: 0 ok"),
        case(
            &["why-blocked", &tcp_port],
            0,
            &format!("tcp {tcp_port} is in use by another socket"),
        ),
        case(&["why-blocked", &udp_port, "--udp"], 0, &format!("udp {udp_port} is in use")),
        case(&["why-blocked", &free_port], 0, &format!("tcp {free_port} is free")),
        case(&["--json", "why-blocked", &tcp_port], 0, "\"result\":{\"verdict\":\"in-use\"}"),
        case(&["--json", "list"], 0, "{\"ranges\":["),
        case(&["reserve", "tcp", "0", "10"], 2, "invalid port block: a port is a number"),
        case(&["reserve", "udp", "65535", "2"], 2, "runs past port 65535"),
        case(&["teredo", "port"], 3, "is not exported by iphlpapi.dll"),
        case(&["teredo", "watch"], 3, "is not exported by iphlpapi.dll"),
        case(&["reserve", "tcp", "50000", "10"], 3, "CreatePersistentTcpPortReservation"),
        case(&["lookup", "udp", "50000", "10"], 3, "LookupPersistentUdpPortReservation"),
        case(&["release", "tcp", "50000", "10"], 3, "DeletePersistentTcpPortReservation"),
        case(&["acquire", "5"], 3, "SIO_ACQUIRE_PORT_RESERVATION is not available"),
        case(&["driver", "status"], 7, "the vsflow driver is not installed"),
        case(&["driver", "flows", "1"], 7, "the vsflow driver is not installed"),
        case(&["teredo-exception", "--follow"], 7, "the vsflow driver is not installed"),
        // The name provider: Wine has no NSPv2 hosting or catalog install, but the names file
        // is real file I/O (with `LockFileEx` and an atomic rename) in the prefix's
        // C:\ProgramData.
        case(&["nsp", "serve"], 3, "WSAAdvertiseProvider is not exported by ws2_32.dll"),
        case(&["nsp", "install"], 3, "WSCInstallNameSpaceEx is not exported by ws2_32.dll"),
        case(&["nsp", "uninstall"], 6, "the netports name provider is not installed"),
        case(
            &["nsp", "register", "Web", "tcp", "50000", "10"],
            0,
            r"registered web -> tcp 50000-50009 (in C:\ProgramData\netports\nsp-names.json)",
        ),
        case(&["nsp", "names"], 0, "web                      tcp 50000-50009"),
        case(
            &["--json", "nsp", "names"],
            0,
            r#"{"count":10,"name":"web","protocol":"tcp","start":50000}"#,
        ),
        case(&["nsp", "unregister", "web"], 0, "unregistered web (was tcp 50000-50009)"),
        case(&["nsp", "unregister", "web"], 6, "web is not registered"),
        // Wine's WSALookupServiceBegin is a stub that fails: the client path says so.
        case(&["nsp", "resolve", "teredo"], 1, "WSALookupServiceBeginW failed"),
    ];
    // One wine server for all the commands (each would otherwise start and stop its own).
    // It stays in the foreground: spawned with its output detached, stopped with `-k`.
    let server = Command::new("wineserver")
        .args(["-f", "-p"])
        .env("WINEPREFIX", &prefix)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut failures = Vec::new();
    for c in &cases {
        if let Err(e) = check(&exe, &prefix, c) {
            failures.push(e);
        }
    }
    drop((tcp, udp));
    let _ = Command::new("wineserver").arg("-k").env("WINEPREFIX", &prefix).status();
    if let Ok(mut server) = server {
        let _ = server.wait();
    }
    println!("wine: {} of {} commands as expected", cases.len() - failures.len(), cases.len());
    if failures.is_empty() { Ok(()) } else { Err(failures.join("\n")) }
}

/// DLLs the binary must not import: Wine 8 lacks them, and every command would fail to
/// start (exit 53) instead of testing anything.
const MISSING_ON_WINE: [&str; 1] = ["bcryptprimitives.dll"];

/// Fails with a clear message when the binary imports a DLL Wine lacks.
fn check_imports(exe: &Path) -> Result<(), String> {
    let out = Command::new("x86_64-w64-mingw32-objdump")
        .arg("-p")
        .arg(exe)
        .output()
        .map_err(|e| format!("cannot run x86_64-w64-mingw32-objdump: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
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

fn check(exe: &Path, prefix: &Path, c: &Case) -> Result<(), String> {
    // Output goes to files, not pipes: the services Wine starts inherit the handles and
    // outlive the program, so a pipe would not reach end-of-file.
    let dir = prefix.with_file_name("wine-out");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let file = |p: &Path| std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
    let status = Command::new("wine")
        .arg(exe)
        .args(&c.args)
        .env("WINEPREFIX", prefix)
        .env("WINEDEBUG", "-all")
        .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
        .stdin(Stdio::null())
        .stdout(file(&out_path)?)
        .stderr(file(&err_path)?)
        .status()
        .map_err(|e| format!("cannot run wine: {e}"))?;
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let out = Captured { status, stdout: read(&out_path)?, stderr: read(&err_path)? };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Wine's own chatter (prefix creation) goes to stderr before the program runs; the
    // program's error is its last line.
    let last_err = stderr.lines().last().unwrap_or("");
    let code = out.status.code().unwrap_or(-1);
    let shown = if c.exit == 0 { stdout.as_ref() } else { last_err };
    let one_line = c.exit == 0 || last_err.starts_with("netports: ");
    let label = format!("netports {}", c.args.join(" "));
    if code == c.exit && shown.contains(&c.says) && one_line && !stderr.contains("panicked") {
        println!("  ok   {label} -> {code}");
        Ok(())
    } else {
        Err(format!(
            "  FAIL {label}: exit {code} (want {}), wanted {:?}\n    stdout: {stdout}\n    stderr: {stderr}",
            c.exit, c.says
        ))
    }
}
