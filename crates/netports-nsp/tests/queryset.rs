//! The `WSAQUERYSET2W` serializer, read back the way a Winsock client reads it: through
//! windows-sys's structure definitions, following the pointers. Every pointer must land
//! inside the caller's buffer, every item must fit in it, and what it points to must be
//! the answer.

use netports_nsp::answer::Answer;
use netports_nsp::name::ServiceName;
use netports_nsp::queryset::{AF_INET, AF_INET6, encode, encoded_len};
use netports_nsp::reservation::{Reservation, Transport};
use proptest::prelude::*;
use windows_sys::Win32::Networking::WinSock::{
    CSADDR_INFO, LUP_RETURN_ADDR, LUP_RETURN_ALL, LUP_RETURN_BLOB, LUP_RETURN_COMMENT,
    LUP_RETURN_NAME, WSAQUERYSET2W,
};
use windows_sys::Win32::System::Com::BLOB;
use windows_sys::core::GUID;

const PROVIDER: GUID = GUID::from_u128(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff);

/// An 8-aligned buffer of `len` bytes (Winsock's buffers are aligned; the typed reads below
/// need it).
struct Aligned {
    words: Vec<u64>,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        Self { words: vec![0xA5A5_A5A5_A5A5_A5A5; len.div_ceil(8)], len }
    }
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the Vec<u64> holds at least `len` initialized bytes; u8 has no alignment
        // or validity requirements; the slice borrows `self` mutably.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
    fn range(&self) -> std::ops::Range<usize> {
        let base = self.words.as_ptr().addr();
        base..base + self.len
    }
}

/// Checks that `[p, p + size)` is inside the buffer.
fn inside(buf: &std::ops::Range<usize>, p: usize, size: usize) -> Result<(), TestCaseError> {
    prop_assert!(p >= buf.start && p + size <= buf.end, "{p:#x}+{size} outside {buf:x?}");
    Ok(())
}

/// Reads a NUL-terminated UTF-16 string that must lie inside the buffer.
fn wide_at(buf: &std::ops::Range<usize>, p: *const u16) -> Result<String, TestCaseError> {
    let mut units = Vec::new();
    for i in 0.. {
        let at = p.wrapping_add(i);
        inside(buf, at.addr(), 2)?;
        // SAFETY: inside the live buffer (checked above), aligned for u16.
        let c = unsafe { at.read() };
        if c == 0 {
            break;
        }
        units.push(c);
    }
    Ok(String::from_utf16(&units).unwrap())
}

fn answer() -> impl Strategy<Value = Answer> {
    ("[a-z0-9][a-z0-9._-]{0,62}", 1u16.., 1u16..=64, any::<bool>(), any::<bool>()).prop_map(
        |(name, start, count, udp, teredo)| {
            if teredo {
                return Answer::teredo(start).unwrap();
            }
            let t = if udp { Transport::Udp } else { Transport::Tcp };
            let start = u16::try_from(u32::from(start).min(65_536 - u32::from(count))).unwrap_or(1);
            Answer::registered(
                ServiceName::parse(&name).unwrap(),
                Reservation::new(t, start, count).unwrap(),
            )
        },
    )
}

fn flags() -> impl Strategy<Value = u32> {
    proptest::collection::vec(
        prop_oneof![
            Just(LUP_RETURN_NAME),
            Just(LUP_RETURN_ADDR),
            Just(LUP_RETURN_COMMENT),
            Just(LUP_RETURN_BLOB),
            Just(LUP_RETURN_ALL),
            Just(0x1000_0000_u32)
        ],
        0..4,
    )
    .prop_map(|v| v.into_iter().fold(0, |a, f| a | f))
}

/// Reads an encoded query set back through windows-sys's types, checking every pointer.
fn check(a: &Answer, flags: u32, buf: &Aligned, used: usize) -> Result<(), TestCaseError> {
    let range = buf.range();
    prop_assert!(used <= buf.len);
    let r = a.reservation;
    // SAFETY: the buffer is 8-aligned and at least 112 bytes (`used` >= the query set);
    // WSAQUERYSET2W is plain data.
    let qs: &WSAQUERYSET2W = unsafe { &*buf.words.as_ptr().cast::<WSAQUERYSET2W>() };
    prop_assert_eq!(qs.dwSize as usize, size_of::<WSAQUERYSET2W>());
    prop_assert_eq!(qs.dwNameSpace, 37);
    inside(&range, qs.lpNSProviderId.addr(), 16)?;
    // SAFETY: inside the buffer (checked), 4-aligned.
    let g = unsafe { qs.lpNSProviderId.read() };
    prop_assert_eq!(
        (g.data1, g.data2, g.data3, g.data4),
        (PROVIDER.data1, PROVIDER.data2, PROVIDER.data3, PROVIDER.data4)
    );
    prop_assert!(
        qs.lpVersion.is_null()
            && qs.lpszContext.is_null()
            && qs.lpafpProtocols.is_null()
            && qs.lpszQueryString.is_null()
    );

    if flags & LUP_RETURN_NAME != 0 {
        prop_assert_eq!(wide_at(&range, qs.lpszServiceInstanceName)?, a.name.as_str());
    } else {
        prop_assert!(qs.lpszServiceInstanceName.is_null());
    }
    if flags & LUP_RETURN_COMMENT != 0 {
        prop_assert_eq!(wide_at(&range, qs.lpszComment)?, a.comment.as_str());
    } else {
        prop_assert!(qs.lpszComment.is_null());
    }
    if flags & LUP_RETURN_BLOB != 0 {
        inside(&range, qs.lpBlob.addr(), size_of::<BLOB>())?;
        // SAFETY: inside the buffer (checked), 8-aligned.
        let b = unsafe { qs.lpBlob.read() };
        inside(&range, b.pBlobData.addr(), b.cbSize as usize)?;
        // SAFETY: inside the buffer (checked).
        let data = unsafe { std::slice::from_raw_parts(b.pBlobData, b.cbSize as usize) };
        prop_assert_eq!(Reservation::from_blob(data), Ok(r));
    } else {
        prop_assert!(qs.lpBlob.is_null());
    }
    if flags & LUP_RETURN_ADDR != 0 {
        prop_assert_eq!(qs.dwNumberOfCsAddrs, 2);
        inside(&range, qs.lpcsaBuffer.addr(), 2 * size_of::<CSADDR_INFO>())?;
        for i in 0..2 {
            // SAFETY: inside the buffer (checked), 8-aligned.
            let cs = unsafe { qs.lpcsaBuffer.wrapping_add(i).read() };
            prop_assert_eq!(cs.iProtocol, r.transport().protocol());
            prop_assert_eq!(cs.iSocketType, r.transport().socket_type());
            for (sa, loopback) in [(cs.LocalAddr, false), (cs.RemoteAddr, true)] {
                let len = usize::try_from(sa.iSockaddrLength).unwrap();
                inside(&range, sa.lpSockaddr.addr(), len)?;
                // SAFETY: `len` bytes inside the buffer (checked).
                let bytes = unsafe { std::slice::from_raw_parts(sa.lpSockaddr.cast::<u8>(), len) };
                let family = u16::from_le_bytes([bytes[0], bytes[1]]);
                prop_assert_eq!(u16::from_be_bytes([bytes[2], bytes[3]]), r.start());
                if i == 0 {
                    prop_assert_eq!((family, len), (AF_INET, 16));
                    let want: [u8; 4] = if loopback { [127, 0, 0, 1] } else { [0; 4] };
                    prop_assert_eq!(&bytes[4..8], &want);
                } else {
                    prop_assert_eq!((family, len), (AF_INET6, 28));
                    let mut want = [0u8; 16];
                    if loopback {
                        want[15] = 1;
                    }
                    prop_assert_eq!(&bytes[8..24], &want);
                }
            }
        }
    } else {
        prop_assert_eq!(qs.dwNumberOfCsAddrs, 0);
        prop_assert!(qs.lpcsaBuffer.is_null());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn every_pointer_lands_inside_the_callers_buffer_and_reads_back_the_answer(
        a in answer(),
        flags in flags(),
        slack in 0usize..64,
    ) {
        let need = encoded_len(&a, flags);
        let mut buf = Aligned::new(need + slack);
        let used = encode(&a, flags, 37, &PROVIDER, buf.bytes());
        prop_assert_eq!(used, Ok(need));
        check(&a, flags, &buf, need)?;
        // Bytes past the set are not touched.
        prop_assert!(buf.bytes()[need..].iter().all(|b| *b == 0xA5));
    }

    #[test]
    fn a_short_buffer_gets_the_needed_size_and_is_not_written(
        a in answer(),
        flags in flags(),
        short in 0usize..400,
    ) {
        let need = encoded_len(&a, flags);
        let len = short.min(need.saturating_sub(1));
        let mut buf = Aligned::new(len);
        prop_assert_eq!(encode(&a, flags, 37, &PROVIDER, buf.bytes()), Err(need));
        prop_assert!(buf.bytes().iter().all(|b| *b == 0xA5), "nothing written");
    }
}

#[test]
fn the_size_grows_with_what_is_asked_for() {
    let a = Answer::teredo(51_234).unwrap();
    let base = encoded_len(&a, 0);
    assert_eq!(base, 112 + 16, "the query set and the provider id");
    for f in [LUP_RETURN_NAME, LUP_RETURN_ADDR, LUP_RETURN_COMMENT, LUP_RETURN_BLOB] {
        assert!(encoded_len(&a, f) > base, "flag {f:#x}");
    }
    assert_eq!(encoded_len(&a, LUP_RETURN_ADDR), base + 80 + 32 + 64);
    assert_eq!(encoded_len(&a, LUP_RETURN_BLOB), base + 24);
    assert_eq!(
        encoded_len(&a, LUP_RETURN_NAME),
        base + 16,
        "\"teredo\" + NUL = 14 bytes, 8-aligned"
    );
}
