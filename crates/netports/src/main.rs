//! The `netports` command (see `netports --help` and the crate docs for exit codes).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    #[cfg(windows)]
    let mut platform = netports::win::WindowsPlatform::default();
    #[cfg(not(windows))]
    let mut platform = netports::platform::Unsupported;
    let code = netports::cli::run(
        &args,
        &mut platform,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    ExitCode::from(code)
}
