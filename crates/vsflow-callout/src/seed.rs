//! The flow-table hash seed the driver draws at boot, and the `SplitMix64` mixing it uses.

/// The `SplitMix64` finalizer: spreads every input bit over the output.
#[must_use]
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A per-boot seed from the interrupt time and the performance counter
/// (`KeQueryInterruptTimePrecise` gives both in the driver).
#[must_use]
pub const fn boot_seed(interrupt_time: u64, performance_counter: u64) -> u64 {
    mix64(interrupt_time ^ performance_counter.rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15)
}

#[cfg(test)]
mod tests {
    #[test]
    fn nearby_boot_times_give_unrelated_seeds() {
        let a = super::boot_seed(1_000, 5);
        let b = super::boot_seed(1_001, 5);
        assert_ne!(a, b);
        assert!((a ^ b).count_ones() > 16, "one input bit flips about half the output bits");
    }
}
