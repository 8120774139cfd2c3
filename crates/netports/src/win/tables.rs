//! The endpoint tables: `GetExtendedTcpTable` / `GetExtendedUdpTable`.
//!
//! Resolved at run time (iphlpapi), read as bytes with the documented row layouts (ports in network order in the
//! low 16 bits of `dwLocalPort`; the first `DWORD` is the row count).
//!
//! Row layouts (tcpmib.h / udpmib.h): `MIB_TCPROW_OWNER_PID` 24 bytes (state, local address,
//! local port, remote address, remote port, pid), `MIB_TCP6ROW_OWNER_PID` 56 (local address
//! [16], scope, local port, remote [16], scope, remote port, state, pid),
//! `MIB_UDPROW_OWNER_PID` 12 (local address, local port, pid), `MIB_UDP6ROW_OWNER_PID` 28
//! (local address [16], scope, local port, pid).

use std::ffi::c_void;

use super::dynload::{Dll, system_fn};
use crate::diagnose::Owner;
use crate::error::Error;
use crate::range::Protocol;

system_fn!(fn get_extended_tcp_table = Dll::Iphlpapi, c"GetExtendedTcpTable": fn(*mut c_void, *mut u32, i32, u32, i32, u32) -> u32;);
system_fn!(fn get_extended_udp_table = Dll::Iphlpapi, c"GetExtendedUdpTable": fn(*mut c_void, *mut u32, i32, u32, i32, u32) -> u32;);

const AF_INET: u32 = 2;
const AF_INET6: u32 = 23;
/// `TCP_TABLE_OWNER_PID_ALL`.
const TCP_TABLE_OWNER_PID_ALL: i32 = 5;
/// `UDP_TABLE_OWNER_PID`.
const UDP_TABLE_OWNER_PID: i32 = 1;
const ERROR_INSUFFICIENT_BUFFER: u32 = 122;

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

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// A `dwLocalPort` as the tables store it (network order in the low 16 bits).
fn port_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2).map_or(0, |s| u16::from_be_bytes([s[0], s[1]]))
}

fn addr(b: &[u8], at: usize, v6: bool) -> String {
    if v6 {
        let mut o = [0u8; 16];
        if let Some(s) = b.get(at..at + 16) {
            o.copy_from_slice(s);
        }
        format!("[{}]", std::net::Ipv6Addr::from(o))
    } else {
        let s = b.get(at..at + 4).unwrap_or(&[0, 0, 0, 0]);
        std::net::Ipv4Addr::new(s[0], s[1], s[2], s[3]).to_string()
    }
}

/// Decodes a table's bytes.
#[must_use]
pub fn decode(bytes: &[u8], proto: Protocol, v6: bool) -> Vec<Endpoint> {
    let (row, port_at_off, pid_off) = match (proto, v6) {
        (Protocol::Tcp, false) => (24, 8, 20),
        (Protocol::Tcp, true) => (56, 20, 52),
        (Protocol::Udp, false) => (12, 4, 8),
        (Protocol::Udp, true) => (28, 20, 24),
    };
    let addr_off = usize::from(proto == Protocol::Tcp && !v6) * 4;
    let n = u32_at(bytes, 0) as usize;
    (0..n)
        .map_while(|i| {
            let r = bytes.get(4 + i * row..4 + (i + 1) * row)?;
            Some(Endpoint {
                local: addr(r, addr_off, v6),
                port: port_at(r, port_at_off),
                pid: u32_at(r, pid_off),
            })
        })
        .collect()
}

/// Every endpoint of `proto` (both families).
///
/// # Errors
/// Unsupported, or the table cannot be read.
pub fn endpoints(proto: Protocol) -> Result<Vec<Endpoint>, Error> {
    let (f, class, name) = match proto {
        Protocol::Tcp => {
            (get_extended_tcp_table()?, TCP_TABLE_OWNER_PID_ALL, "GetExtendedTcpTable")
        }
        Protocol::Udp => (get_extended_udp_table()?, UDP_TABLE_OWNER_PID, "GetExtendedUdpTable"),
    };
    let mut out = Vec::new();
    for (af, v6) in [(AF_INET, false), (AF_INET6, true)] {
        let mut words = vec![0u32; 256];
        let mut done = false;
        for _ in 0..4 {
            let mut size = u32::try_from(words.len() * 4).unwrap_or(u32::MAX);
            // SAFETY: a writable, 4-aligned buffer of `size` bytes and a valid size pointer;
            // no sorting, the documented class and Reserved 0.
            let rc = unsafe { f(words.as_mut_ptr().cast(), &raw mut size, 0, af, class, 0) };
            match rc {
                0 => {
                    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                    out.extend(decode(&bytes, proto, v6));
                    done = true;
                    break;
                }
                ERROR_INSUFFICIENT_BUFFER => {
                    words = vec![0u32; (size as usize).div_ceil(4).max(words.len() + 1)];
                }
                // No IPv6 stack: no IPv6 endpoints.
                _ if v6 => {
                    done = true;
                    break;
                }
                rc => return Err(Error::from_win32(rc, name)),
            }
        }
        if !done {
            return Err(Error::Protocol(format!("{name}: the table kept growing")));
        }
    }
    Ok(out)
}

/// The sockets holding `port`, with their process names where readable.
///
/// # Errors
/// Unsupported, or the table cannot be read.
pub fn owners(proto: Protocol, port: u16) -> Result<Vec<Owner>, Error> {
    Ok(endpoints(proto)?
        .into_iter()
        .filter(|e| e.port == port)
        .map(|e| Owner { pid: e.pid, process: process_name(e.pid), local: e.local })
        .collect())
}

/// The image name of a process (`None` when it cannot be opened: another user's, or gone).
fn process_name(pid: u32) -> Option<String> {
    use windows_sys::Win32::Foundation::CloseHandle;
    use windows_sys::Win32::System::Threading::{
        OpenProcess, PROCESS_NAME_WIN32, PROCESS_QUERY_LIMITED_INFORMATION,
        QueryFullProcessImageNameW,
    };
    if pid == 0 {
        return None;
    }
    // SAFETY: plain arguments; the handle is checked and closed below.
    let h = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if h.is_null() {
        return None;
    }
    let mut buf = [0u16; 520];
    let mut len = u32::try_from(buf.len()).unwrap_or(0);
    // SAFETY: an open process handle and a buffer of `len` code units.
    let ok = unsafe {
        QueryFullProcessImageNameW(h, PROCESS_NAME_WIN32, buf.as_mut_ptr(), &raw mut len)
    };
    // SAFETY: the handle opened above, closed once.
    unsafe { CloseHandle(h) };
    if ok == 0 {
        return None;
    }
    let path = String::from_utf16_lossy(buf.get(..len as usize)?);
    Some(path.rsplit(['\\', '/']).next().unwrap_or(&path).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_decode_with_network_order_ports() {
        let mut b = vec![1, 0, 0, 0];
        b.extend([127, 0, 0, 1]);
        b.extend([0xC3, 0x50, 0, 0]); // 50000 in network order
        b.extend(7u32.to_le_bytes());
        assert_eq!(
            decode(&b, Protocol::Udp, false),
            vec![Endpoint { local: "127.0.0.1".into(), port: 50_000, pid: 7 }]
        );
        assert!(
            decode(&b[..10], Protocol::Udp, false).is_empty(),
            "a short table yields what is complete"
        );
    }
}
