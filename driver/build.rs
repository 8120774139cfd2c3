//! Build script: on a Windows host, configure the WDK binary build (link against the
//! kernel libraries, set the subsystem and entry point). Elsewhere there is nothing to do:
//! the crate is empty off Windows.

#[cfg(windows)]
fn main() -> Result<(), wdk_build::ConfigError> {
    wdk_build::configure_wdk_binary_build()
}

#[cfg(not(windows))]
fn main() {}
