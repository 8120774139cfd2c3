//! The endpoint tables: `GetExtendedTcpTable` / `GetExtendedUdpTable`.
//!
//! Resolved at run time (iphlpapi); the bytes they write are decoded by `crate::endpoints`
//! with windows-sys's row structures (`MIB_*ROW_OWNER_PID`).

use std::ffi::c_void;

use windows_sys::Win32::Foundation::ERROR_INSUFFICIENT_BUFFER;
use windows_sys::Win32::NetworkManagement::IpHelper::{
    TCP_TABLE_OWNER_PID_ALL, UDP_TABLE_OWNER_PID,
};
use windows_sys::Win32::Networking::WinSock::{AF_INET, AF_INET6};

use super::dynload::{Dll, system_fn};
use crate::diagnose::Owner;
pub use crate::endpoints::{Endpoint, decode};
use crate::error::Error;
use crate::range::Protocol;

system_fn!(fn get_extended_tcp_table = Dll::Iphlpapi, c"GetExtendedTcpTable": fn(*mut c_void, *mut u32, i32, u32, i32, u32) -> u32;);
system_fn!(fn get_extended_udp_table = Dll::Iphlpapi, c"GetExtendedUdpTable": fn(*mut c_void, *mut u32, i32, u32, i32, u32) -> u32;);

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
    for (af, v6) in [(u32::from(AF_INET), false), (u32::from(AF_INET6), true)] {
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
