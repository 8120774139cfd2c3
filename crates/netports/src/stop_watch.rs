//! What a service's stop watch concludes from each look at the service.
//!
//! `win::service::StopWatch` (Windows only) wakes when the stop notification fires or once a
//! second, reads the service's state, and hands both to [`StopPoll::look`], which decides
//! whether to report a stop. The decision is platform-independent so that it is tested here,
//! on Linux, with the failures Windows and Wine do not produce on demand; the watch runs this
//! same code.
//!
//! **A watch that cannot watch reports a stop** (what `StopWatch::start` promises): a state
//! that cannot be read [`MAX_FAILED_READS`] polls in a row (about three seconds, each read
//! itself retrying Wine's transient `ERROR_INVALID_HANDLE`) is reported, and so is a
//! notification whose state cannot be read (the notification says the service stopped or the
//! request failed; waiting would only spin, its event staying set). One failed read between
//! good ones is not a stop: a read can fail once (Wine has failed two threads opening the
//! manager at once), and a false report ends the caller's watch, which is safe (its WFP
//! objects go, nothing opens) but needless. A good read starts the count again.

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
    /// The wait itself failed (`WAIT_FAILED`, with `GetLastError`'s code): it would fail at
    /// once again, so the watch could only spin; it reports a stop instead.
    WaitFailed(u32),
}

/// Polls in a row whose state cannot be read before the watch reports a stop (see the
/// module docs).
pub const MAX_FAILED_READS: u32 = 3;

/// The watch's decisions, one [`StopPoll::look`] per wake.
#[derive(Debug, Default)]
pub struct StopPoll {
    /// Polls in a row whose state could not be read.
    failed_reads: u32,
}

impl StopPoll {
    /// What one look concludes: `Some(why)` to report a stop (the watch ends), `None` to go on
    /// watching.
    pub fn look(&mut self, wake: Wake, seen: Result<Seen, Error>) -> Option<String> {
        if let Wake::WaitFailed(code) = wake {
            return Some(format!("the watch's wait failed (error {code}), it cannot watch"));
        }
        let seen = match seen {
            Ok(seen) => {
                self.failed_reads = 0;
                seen
            }
            Err(e) if wake == Wake::Notified => {
                return Some(format!("notified, and its state could not be read: {e}"));
            }
            Err(e) => {
                self.failed_reads = self.failed_reads.saturating_add(1);
                return (self.failed_reads >= MAX_FAILED_READS).then(|| {
                    format!(
                        "its state could not be read {} times in a row, the watch cannot watch: {e}",
                        self.failed_reads
                    )
                });
            }
        };
        match seen {
            Seen::Stopped => Some("stopped".into()),
            Seen::StopPending => Some("stopping".into()),
            Seen::Deleted => Some("deleted".into()),
            Seen::Other if wake == Wake::Notified => Some("the stop notification failed".into()),
            Seen::Other => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Seen, StopPoll, Wake};
    use crate::error::{Error, win32};

    fn unreadable() -> Result<Seen, Error> {
        Err(Error::from_win32(win32::ACCESS_DENIED, "QueryServiceStatus"))
    }

    /// A watch that cannot read the service's state is a watch that cannot watch: its doc
    /// promises a stop report, not a silent retry for ever (session 3's wineflake finding).
    #[test]
    fn a_state_that_stays_unreadable_is_reported_as_a_stop_within_three_polls() {
        let mut poll = StopPoll::default();
        let reported = (1..=10).find_map(|n| poll.look(Wake::Poll, unreadable()).map(|w| (n, w)));
        let Some((n, why)) = reported else {
            panic!("10 polls of an unreadable state, never reported")
        };
        assert_eq!(n, 3, "reported after {n} unreadable polls: {why}");
        assert!(why.contains("could not be read"), "{why}");
    }

    /// The notification said the service stopped (or failed): a state that cannot be read
    /// then is no reason to wait; and the notified event stays set, so waiting would spin.
    #[test]
    fn a_notification_whose_state_cannot_be_read_is_reported_at_once() {
        let mut poll = StopPoll::default();
        assert!(poll.look(Wake::Notified, unreadable()).is_some());
    }

    /// A wait that fails returns at once every time: the watch reports instead of spinning.
    #[test]
    fn a_failed_wait_is_reported_at_once() {
        let why = StopPoll::default().look(Wake::WaitFailed(6), Ok(Seen::Other));
        assert!(why.is_some_and(|w| w.contains("wait failed")));
    }

    /// One failed read (Wine has returned `ERROR_INVALID_HANDLE` to two threads opening the
    /// manager at once) is not a stop; a good read starts the count again.
    #[test]
    fn failed_reads_between_good_ones_are_not_a_stop() {
        let mut poll = StopPoll::default();
        for _ in 0..10 {
            assert_eq!(poll.look(Wake::Poll, unreadable()), None);
            assert_eq!(poll.look(Wake::Poll, unreadable()), None);
            assert_eq!(poll.look(Wake::Poll, Ok(Seen::Other)), None);
        }
    }

    #[test]
    fn a_stop_is_reported_with_its_state() {
        for (seen, text) in [
            (Seen::Stopped, "stopped"),
            (Seen::StopPending, "stopping"),
            (Seen::Deleted, "deleted"),
        ] {
            for wake in [Wake::Poll, Wake::Notified] {
                assert_eq!(StopPoll::default().look(wake, Ok(seen)).as_deref(), Some(text));
            }
        }
        assert_eq!(StopPoll::default().look(Wake::Poll, Ok(Seen::Other)), None);
        assert!(StopPoll::default().look(Wake::Notified, Ok(Seen::Other)).is_some());
    }
}
