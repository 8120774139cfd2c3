//! The hardware path is the table path, bit for bit, on every length and alignment.

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Any bytes, at any offset into the buffer (so every alignment and every tail length):
    /// the chosen path, the instruction (where this processor has it) and `crc`'s table agree.
    #[test]
    fn hardware_equals_the_crc_crate(bytes in proptest::collection::vec(any::<u8>(), 0..2_100), skip in 0usize..16) {
        let bytes = bytes.get(skip.min(bytes.len())..).unwrap_or(&[]);
        let reference = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(bytes);
        prop_assert_eq!(crc32c_hw::crc32c_table(bytes), reference);
        prop_assert_eq!(crc32c_hw::crc32c(bytes), reference);
        if let Some(hardware) = crc32c_hw::crc32c_hardware(bytes) {
            prop_assert_eq!(hardware, reference);
        }
    }

    /// The same over several of the hardware path's three-stream rounds (1,536 bytes each)
    /// and every remainder after them.
    #[test]
    fn hardware_equals_the_crc_crate_over_several_rounds(
        bytes in proptest::collection::vec(any::<u8>(), 1_500..8_000),
        cut in 0usize..1_600,
    ) {
        let bytes = bytes.get(..bytes.len().saturating_sub(cut)).unwrap_or(&[]);
        let reference = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(bytes);
        prop_assert_eq!(crc32c_hw::crc32c(bytes), reference);
        if let Some(hardware) = crc32c_hw::crc32c_hardware(bytes) {
            prop_assert_eq!(hardware, reference);
        }
    }
}

/// A blob-sized input (the codec's 60 KiB cap and more), every byte value.
#[test]
fn hardware_equals_the_crc_crate_on_blob_sizes() {
    let reference = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    for len in [45_000usize, 61_440, 65_535, 65_536 + 7] {
        let bytes: Vec<u8> =
            (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 7).to_le_bytes()[0]).collect();
        assert_eq!(crc32c_hw::crc32c(&bytes), reference.checksum(&bytes), "len {len}");
    }
}

/// The CPUID read agrees with std's detection, so the tests above ran the instruction on
/// every machine whose processor has it (this VM's does: the hardware path is what ran).
#[test]
#[cfg(target_arch = "x86_64")]
fn cpuid_detection_agrees_with_std() {
    assert_eq!(crc32c_hw::has_hardware(), std::is_x86_feature_detected!("sse4.2"));
    assert_eq!(crc32c_hw::crc32c_hardware(b"x").is_some(), crc32c_hw::has_hardware());
}
