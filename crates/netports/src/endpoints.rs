//! The rows of the endpoint tables (`GetExtendedTcpTable` / `GetExtendedUdpTable` with the
//! `*_OWNER_PID` classes), read with windows-sys's definitions of the row structures.
//!
//! A table is a `DWORD` count followed by the rows (`MIB_TCPTABLE_OWNER_PID` and its three
//! siblings). `dwLocalPort` holds the port in network byte order in its low 16 bits ("the upper
//! 16 bits may contain uninitialized data": `MIB_TCPROW_LH`, `MIB_TCP6ROW`; ignored here for every
//! row), an IPv4 address is in network order as stored. Platform-independent, so it is tested on
//! every system; the Windows code hands it the bytes the functions wrote.

use windows_sys::Win32::NetworkManagement::IpHelper::{
    MIB_TCP6ROW_OWNER_PID, MIB_TCPROW_OWNER_PID, MIB_UDP6ROW_OWNER_PID, MIB_UDPROW_OWNER_PID,
};

use crate::range::Protocol;

/// One endpoint: local address, host-order local port, owning pid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The local address as text.
    pub local: String,
    /// The local port (host order).
    pub port: u16,
    /// The owning process (0: unavailable).
    pub pid: u32,
}

/// The rows of type `T` in a table's bytes: the count, then as many whole rows as the bytes
/// hold (a short table yields what is complete).
fn rows<T: Copy>(bytes: &[u8]) -> Vec<T> {
    let count = bytes.get(..4).map_or(0, |c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    let size = size_of::<T>();
    (0..count as usize)
        .map_while(|i| {
            let row = bytes.get(4 + i * size..4 + (i + 1) * size)?;
            // SAFETY: `row` holds exactly `size_of::<T>()` readable bytes, `T` is a plain
            // repr(C) structure of integers and byte arrays (any bit pattern is valid), and
            // the read does not assume alignment.
            Some(unsafe { row.as_ptr().cast::<T>().read_unaligned() })
        })
        .collect()
}

/// The port in a `dwLocalPort` (network order in the low 16 bits).
fn port(dw: u32) -> u16 {
    let b = dw.to_ne_bytes();
    u16::from_be_bytes([b[0], b[1]])
}

fn v4(dw: u32) -> String {
    std::net::Ipv4Addr::from(dw.to_ne_bytes()).to_string()
}

fn v6(addr: [u8; 16]) -> String {
    format!("[{}]", std::net::Ipv6Addr::from(addr))
}

/// Decodes a table's bytes.
#[must_use]
pub fn decode(bytes: &[u8], proto: Protocol, ipv6: bool) -> Vec<Endpoint> {
    match (proto, ipv6) {
        (Protocol::Tcp, false) => rows::<MIB_TCPROW_OWNER_PID>(bytes)
            .into_iter()
            .map(|r| Endpoint {
                local: v4(r.dwLocalAddr),
                port: port(r.dwLocalPort),
                pid: r.dwOwningPid,
            })
            .collect(),
        (Protocol::Tcp, true) => rows::<MIB_TCP6ROW_OWNER_PID>(bytes)
            .into_iter()
            .map(|r| Endpoint {
                local: v6(r.ucLocalAddr),
                port: port(r.dwLocalPort),
                pid: r.dwOwningPid,
            })
            .collect(),
        (Protocol::Udp, false) => rows::<MIB_UDPROW_OWNER_PID>(bytes)
            .into_iter()
            .map(|r| Endpoint {
                local: v4(r.dwLocalAddr),
                port: port(r.dwLocalPort),
                pid: r.dwOwningPid,
            })
            .collect(),
        (Protocol::Udp, true) => rows::<MIB_UDP6ROW_OWNER_PID>(bytes)
            .into_iter()
            .map(|r| Endpoint {
                local: v6(r.ucLocalAddr),
                port: port(r.dwLocalPort),
                pid: r.dwOwningPid,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of `rows` as the functions write it.
    fn table<T: Copy>(rows: &[T]) -> Vec<u8> {
        let mut b = u32::try_from(rows.len()).unwrap().to_le_bytes().to_vec();
        for r in rows {
            // SAFETY: a plain repr(C) row viewed as its bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts(std::ptr::from_ref(r).cast::<u8>(), size_of::<T>())
            };
            b.extend_from_slice(bytes);
        }
        b
    }

    /// `dwLocalPort` as the tables store it, with junk in the upper half.
    fn stored(port: u16) -> u32 {
        let [hi, lo] = port.to_be_bytes();
        u32::from_ne_bytes([hi, lo, 0xC3, 0xA5])
    }

    #[test]
    fn rows_decode_with_the_sdk_layouts() {
        let tcp4 = MIB_TCPROW_OWNER_PID {
            dwState: 2,
            dwLocalAddr: u32::from_ne_bytes([127, 0, 0, 1]),
            dwLocalPort: stored(50_000),
            dwRemoteAddr: 0,
            dwRemotePort: 0,
            dwOwningPid: 7,
        };
        assert_eq!(
            decode(&table(&[tcp4]), Protocol::Tcp, false),
            vec![Endpoint { local: "127.0.0.1".into(), port: 50_000, pid: 7 }]
        );
        let mut tcp6 = MIB_TCP6ROW_OWNER_PID {
            dwLocalPort: stored(443),
            dwOwningPid: 9,
            ..Default::default()
        };
        tcp6.ucLocalAddr[15] = 1;
        assert_eq!(
            decode(&table(&[tcp6]), Protocol::Tcp, true),
            vec![Endpoint { local: "[::1]".into(), port: 443, pid: 9 }]
        );
        let udp4 =
            MIB_UDPROW_OWNER_PID { dwLocalAddr: 0, dwLocalPort: stored(3544), dwOwningPid: 4 };
        let udp6 = MIB_UDP6ROW_OWNER_PID {
            dwLocalPort: stored(51_234),
            dwOwningPid: 5,
            ..Default::default()
        };
        assert_eq!(decode(&table(&[udp4, udp4]), Protocol::Udp, false).len(), 2);
        assert_eq!(
            decode(&table(&[udp6]), Protocol::Udp, true),
            vec![Endpoint { local: "[::]".into(), port: 51_234, pid: 5 }]
        );
        let t = table(&[udp4]);
        assert!(
            decode(&t[..10], Protocol::Udp, false).is_empty(),
            "a short table yields what is complete"
        );
        assert_eq!(size_of::<MIB_TCP6ROW_OWNER_PID>(), 56, "the documented row sizes");
        assert_eq!(size_of::<MIB_UDP6ROW_OWNER_PID>(), 28);
    }
}
