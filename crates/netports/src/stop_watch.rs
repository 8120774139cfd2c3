//! What a service's stop watch concludes from each look at the service.
//!
//! `win::service::StopWatch` (Windows only) wakes when the stop notification fires or once a
//! second, reads the service's state, and hands both to [`StopPoll::look`], which decides
//! whether to report a stop. The decision is platform-independent so that it is tested here,
//! on Linux, with the failures Windows and Wine do not produce on demand; the watch runs this
//! same code.

use crate::error::Error;

/// A service's state as one read found it (`QueryServiceStatus`'s `dwCurrentState`, or no
/// such service).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// `SERVICE_STOPPED`.
    Stopped,
    /// `SERVICE_STOP_PENDING`.
    StopPending,
    /// The service does not exist any more.
    Deleted,
    /// Any other state (running, starting, paused, ...).
    Other,
}

/// Why the watch looked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The stop notification fired (its callback ran).
    Notified,
    /// The poll interval passed.
    Poll,
}

/// The watch's decisions, one [`StopPoll::look`] per wake.
#[derive(Debug, Default)]
pub struct StopPoll {
    _private: (),
}

impl StopPoll {
    /// What one look concludes: `Some(why)` to report a stop (the watch ends), `None` to go on
    /// watching.
    pub fn look(&mut self, wake: Wake, seen: Result<Seen, Error>) -> Option<String> {
        match seen {
            Ok(Seen::Stopped) => Some("stopped".into()),
            Ok(Seen::StopPending) => Some("stopping".into()),
            Ok(Seen::Deleted) => Some("deleted".into()),
            Ok(Seen::Other) if wake == Wake::Notified => {
                Some("the stop notification failed".into())
            }
            Ok(Seen::Other) => None,
            // Not readable this time: the next look asks again.
            Err(e) => {
                drop(e);
                None
            }
        }
    }
}
