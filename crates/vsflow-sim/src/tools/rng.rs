//! A tiny deterministic generator (`SplitMix64`): the same seed gives the same run, so the
//! main job and the soak are reproducible from their seeds.

/// `SplitMix64`.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next value.
    pub const fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        vsflow_callout::seed::mix64(self.0)
    }

    /// A value below `n` (0 when `n` is 0).
    pub const fn below(&mut self, n: u64) -> u64 {
        self.next() % if n == 0 { 1 } else { n }
    }
}
