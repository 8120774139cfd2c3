//! Administered (persistent) reservations, read from the NSI registry store (undocumented,
//! read-only; verify on Windows): each value name under the key is the hex of an
//! `INET_PORT_RANGE`.

use windows_sys::Win32::Foundation::{ERROR_FILE_NOT_FOUND, ERROR_MORE_DATA};
use windows_sys::Win32::System::Registry::{
    HKEY, HKEY_LOCAL_MACHINE, KEY_READ, RRF_RT_REG_SZ, RegCloseKey, RegEnumValueW, RegGetValueW,
    RegOpenKeyExW,
};

use crate::error::Error;
use crate::excluded::{ValueName, administered_from};
use crate::range::{PortBlock, Protocol};

const TCP_KEY: &str =
    r"SYSTEM\CurrentControlSet\Control\Nsi\{eb004a03-9b1a-11d4-9123-0050047759bc}\29";
const UDP_KEY: &str =
    r"SYSTEM\CurrentControlSet\Control\Nsi\{eb004a02-9b1a-11d4-9123-0050047759bc}\5";

/// Windows Defender Firewall's local rule store (`crate::firewall`).
pub const FIREWALL_RULES: &str =
    r"SYSTEM\CurrentControlSet\Services\SharedAccess\Parameters\FirewallPolicy\FirewallRules";
/// Group Policy's firewall rule store ([MS-GPFAS] 2.2.2.19).
pub const POLICY_FIREWALL_RULES: &str =
    r"SOFTWARE\Policies\Microsoft\WindowsFirewall\FirewallRules";

/// The `REG_SZ` value `name` under `HKLM\key` (`None`: no such key or value).
///
/// # Errors
/// The value cannot be read (other than being absent), or is not a string.
pub fn string_value(key: &str, name: &str) -> Result<Option<String>, Error> {
    let key: Vec<u16> = key.encode_utf16().chain(std::iter::once(0)).collect();
    let value: Vec<u16> = name.encode_utf16().chain(std::iter::once(0)).collect();
    let mut buf = vec![0u16; 1024];
    for _ in 0..3 {
        let mut size = u32::try_from(buf.len() * 2).unwrap_or(u32::MAX);
        // SAFETY: a predefined root key, NUL-terminated names, a buffer of `size` bytes and a
        // valid size pointer; the type is not asked for.
        let rc = unsafe {
            RegGetValueW(
                HKEY_LOCAL_MACHINE,
                key.as_ptr(),
                value.as_ptr(),
                RRF_RT_REG_SZ,
                std::ptr::null_mut(),
                buf.as_mut_ptr().cast(),
                &raw mut size,
            )
        };
        match rc {
            0 => {
                let units = (size as usize / 2).min(buf.len());
                let text = buf.get(..units).unwrap_or(&[]);
                let end = text.iter().position(|&c| c == 0).unwrap_or(text.len());
                return Ok(Some(String::from_utf16_lossy(&text[..end])));
            }
            ERROR_FILE_NOT_FOUND => return Ok(None),
            ERROR_MORE_DATA => buf = vec![0u16; (size as usize).div_ceil(2) + 1],
            rc => return Err(Error::from_win32(rc, "RegGetValueW (firewall rules)")),
        }
    }
    Err(Error::Protocol("a firewall rule value kept growing".into()))
}

/// The administered reservations of `proto`.
///
/// # Errors
/// The key cannot be read (other than being absent).
pub fn administered(proto: Protocol) -> Result<Vec<PortBlock>, Error> {
    let path: Vec<u16> = match proto {
        Protocol::Tcp => TCP_KEY,
        Protocol::Udp => UDP_KEY,
    }
    .encode_utf16()
    .chain(std::iter::once(0))
    .collect();
    let mut key: HKEY = std::ptr::null_mut();
    // SAFETY: a predefined root key, a NUL-terminated path and a valid out-pointer.
    let rc = unsafe { RegOpenKeyExW(HKEY_LOCAL_MACHINE, path.as_ptr(), 0, KEY_READ, &raw mut key) };
    if rc == ERROR_FILE_NOT_FOUND {
        return Ok(Vec::new());
    }
    if rc != 0 {
        return Err(Error::from_win32(rc, "RegOpenKeyExW (NSI reservations)"));
    }
    let listed = administered_from(|index| {
        let mut name = [0u16; 64];
        let mut len = u32::try_from(name.len()).unwrap_or(0);
        // SAFETY: an open key; a buffer of `len` code units; null for the optional outputs.
        let rc = unsafe {
            RegEnumValueW(
                key,
                index,
                name.as_mut_ptr(),
                &raw mut len,
                std::ptr::null(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        match rc {
            0 => ValueName::Name(String::from_utf16_lossy(name.get(..len as usize).unwrap_or(&[]))),
            ERROR_MORE_DATA => ValueName::TooLong,
            rc => ValueName::Error(rc),
        }
    });
    // SAFETY: the key opened above, closed once.
    unsafe { RegCloseKey(key) };
    listed.map_err(|rc| Error::from_win32(rc, "RegEnumValueW (NSI reservations)"))
}
