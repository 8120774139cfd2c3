//! Monotonic time as the caller supplies it.
//!
//! The core never reads a clock. The driver passes `KeQueryInterruptTime()` (100 ns units since
//! boot, monotonic, no suspend jumps backwards); the simulator passes its virtual clock. Two hosts
//! have unrelated tick bases, which is why the runtime-state codec stores ages, not instants.

/// A monotonic instant, in 100 ns units from an arbitrary per-host origin.
pub type Tick = u64;

/// Ticks in one second (100 ns units).
pub const TICKS_PER_SECOND: Tick = 10_000_000;

/// Converts whole seconds to ticks, saturating at `Tick::MAX`.
#[must_use]
pub const fn secs(seconds: u64) -> Tick {
    seconds.saturating_mul(TICKS_PER_SECOND)
}
