//! UTF-16 names built at compile time from ASCII: WFP display names here, and the driver's
//! device, link, SDDL and registry value names.

/// `s` (ASCII) widened to UTF-16, unit for unit; include a trailing `\0` in `s` where the
/// consumer needs a NUL-terminated string.
#[must_use]
pub const fn ascii<const N: usize>(s: &[u8; N]) -> [u16; N] {
    let mut out = [0u16; N];
    let mut i = 0;
    while i < N {
        out[i] = s[i] as u16;
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn ascii_widens_unit_for_unit() {
        const W: [u16; 4] = super::ascii(b"Ab\\\0");
        assert_eq!(W, [0x41, 0x62, 0x5C, 0]);
    }
}
