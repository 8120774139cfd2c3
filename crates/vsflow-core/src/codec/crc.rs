//! CRC-32C (Castagnoli), the blob's integrity check.

/// CRC-32C of `bytes` (iSCSI polynomial 0x1EDC6F41, reflected, init and xorout all ones).
///
/// SSE4.2's `crc32` instruction where the processor has it, a 16-way table otherwise
/// (`crc32c-hw`; the two agree bit for bit, tested there against the `crc` crate).
#[must_use]
#[inline]
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c_hw::crc32c(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_rfc_3720_check_value() {
        // RFC 3720 B.4 / the CRC catalogue: CRC-32C("123456789") = 0xE3069283.
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
        // 32 bytes of zeros (RFC 3720 B.4).
        assert_eq!(super::crc32c(&[0u8; 32]), 0x8A91_36AA);
    }
}
