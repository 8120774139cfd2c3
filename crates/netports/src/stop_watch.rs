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
