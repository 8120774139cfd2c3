//! Ctrl-C (and Ctrl-Break, closing the console): a request to stop.
//!
//! The long-running commands (`teredo watch`, `teredo-exception`, `acquire --hold`, `nsp serve`) honour by
//! returning normally, so what they hold is released on the way out (filters deleted with the
//! WFP session, watches ended, reservations released) and netports exits 0.
//!
//! `SetConsoleCtrlHandler` adds a handler that runs on a thread the system creates for the
//! event (`HandlerRoutine`); it only sets a flag, which the commands poll. Returning TRUE
//! stops the default handler (`ExitProcess`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use windows_sys::Win32::System::Console::SetConsoleCtrlHandler;
use windows_sys::core::BOOL;

/// Set by the handler.
static STOP: AtomicBool = AtomicBool::new(false);

/// How often a waiting command looks at the flag.
pub const POLL: Duration = Duration::from_millis(100);

unsafe extern "system" fn on_console_control(_kind: u32) -> BOOL {
    STOP.store(true, Ordering::SeqCst);
    1
}

/// The handler, installed while this lives.
#[derive(Debug)]
pub struct Interrupt(());

impl Interrupt {
    /// Installs the handler (and forgets an earlier request).
    #[must_use]
    pub fn install() -> Self {
        STOP.store(false, Ordering::SeqCst);
        // SAFETY: a handler that only sets an atomic; it stays valid for the process.
        unsafe { SetConsoleCtrlHandler(Some(on_console_control), 1) };
        Self(())
    }

    /// Whether a stop was requested.
    #[must_use]
    pub fn requested(&self) -> bool {
        STOP.load(Ordering::SeqCst)
    }

    /// Waits until a stop is requested.
    pub fn wait(&self) {
        while !self.requested() {
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        // SAFETY: removes the handler added by `install`.
        unsafe { SetConsoleCtrlHandler(Some(on_console_control), 0) };
    }
}
