//! The guard on Windows: the owner and DACL as SDDL, decided by [`super::sddl::check`].
//!
//! [`open`] opens the folder or file with `FILE_FLAG_OPEN_REPARSE_POINT` (a reparse point at
//! its name is opened itself, not followed, and then refused by its
//! `FILE_ATTRIBUTE_REPARSE_POINT`); a folder with `FILE_FLAG_BACKUP_SEMANTICS`, only
//! `READ_CONTROL | FILE_READ_ATTRIBUTES`, and shared for reading and writing but not for
//! deleting, so it cannot be renamed or deleted while held. The check is made on that handle:
//! `GetSecurityInfo(OWNER | DACL)` then `ConvertSecurityDescriptorToStringSecurityDescriptorW`;
//! the current user is the token's user (`GetTokenInformation(TokenUser)`), written both as its
//! `S-1-...` string and as SDDL writes it (an alias such as `LA` for the built-in
//! Administrator). Folders are created with [`super::sddl::protected_folder`] through
//! `ConvertStringSecurityDescriptorToSecurityDescriptorW`; nonces come from `BCryptGenRandom`
//! with the system-preferred generator.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::fs::{MetadataExt, OpenOptionsExt};
use std::os::windows::io::AsRawHandle;
use std::path::Path;
use std::sync::OnceLock;

use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, HLOCAL, LocalFree};
use windows_sys::Win32::Security::Authorization::{
    ConvertSecurityDescriptorToStringSecurityDescriptorW, ConvertSidToStringSidW,
    ConvertStringSecurityDescriptorToSecurityDescriptorW, GetSecurityInfo, SDDL_REVISION_1,
    SE_FILE_OBJECT,
};
use windows_sys::Win32::Security::Cryptography::{
    BCRYPT_USE_SYSTEM_PREFERRED_RNG, BCryptGenRandom,
};
use windows_sys::Win32::Security::{
    DACL_SECURITY_INFORMATION, GetTokenInformation, InitializeSecurityDescriptor,
    OWNER_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID, SECURITY_ATTRIBUTES,
    SECURITY_DESCRIPTOR, SetSecurityDescriptorOwner, TOKEN_QUERY, TOKEN_USER, TokenUser,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateDirectoryW, FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_REPARSE_POINT,
    FILE_FLAG_BACKUP_SEMANTICS, FILE_FLAG_OPEN_REPARSE_POINT, FILE_READ_ATTRIBUTES,
    FILE_SHARE_READ, FILE_SHARE_WRITE, READ_CONTROL,
};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};
use windows_sys::core::PWSTR;

use super::{Guard, Kind, OpenError, sddl};

/// Opens `path` for the check and for use, never through a reparse point at `path` itself.
pub(super) fn open(path: &Path, kind: Kind) -> Result<File, OpenError> {
    let mut options = OpenOptions::new();
    match kind {
        Kind::Folder => {
            options
                .access_mode(READ_CONTROL | FILE_READ_ATTRIBUTES)
                .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE)
                .custom_flags(FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT);
        }
        // GENERIC_READ includes READ_CONTROL; std's default share mode lets a writer rename
        // a new file over this one meanwhile (the reader keeps what it opened).
        Kind::File => {
            options.read(true).custom_flags(FILE_FLAG_OPEN_REPARSE_POINT);
        }
    }
    let opened = match options.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(OpenError::Missing),
        Err(e) => return Err(OpenError::Io(e)),
    };
    let attributes = opened.metadata().map_err(OpenError::Io)?.file_attributes();
    if attributes & FILE_ATTRIBUTE_REPARSE_POINT != 0 {
        return Err(OpenError::Link);
    }
    Ok(opened)
}

/// `SECURITY_DESCRIPTOR_REVISION`.
const SECURITY_DESCRIPTOR_REVISION: u32 = 1;

fn wide(path: &Path) -> Vec<u16> {
    path.as_os_str().encode_wide().chain(std::iter::once(0)).collect()
}

/// Reads and frees a string a conversion function allocated with `LocalAlloc`.
///
/// # Safety
/// `p` is null or a NUL-terminated string allocated with `LocalAlloc`, not used afterwards.
unsafe fn take_local_string(p: PWSTR) -> Option<String> {
    if p.is_null() {
        return None;
    }
    let mut len = 0;
    // SAFETY: NUL-terminated (contract); the loop stops at the NUL.
    while unsafe { p.wrapping_add(len).read() } != 0 {
        len += 1;
    }
    // SAFETY: `len` units were just read.
    let s = String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(p, len) });
    // SAFETY: allocated with LocalAlloc (contract), freed once.
    unsafe { LocalFree(p as HLOCAL) };
    Some(s)
}

/// The current user's SID, as `S-1-...` and as SDDL writes it when different.
fn current_user() -> io::Result<Vec<String>> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: no arguments; returns this process's pseudo-handle.
    let process = unsafe { GetCurrentProcess() };
    // SAFETY: the pseudo-handle of this process and a valid out-pointer.
    if unsafe { OpenProcessToken(process, TOKEN_QUERY, &raw mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut words = [0u64; 64];
    let mut needed = 0u32;
    // SAFETY: an open token and an 8-aligned buffer of the size given.
    let ok = unsafe {
        GetTokenInformation(
            token,
            TokenUser,
            words.as_mut_ptr().cast(),
            u32::try_from(size_of_val(&words)).unwrap_or(0),
            &raw mut needed,
        )
    };
    let error = io::Error::last_os_error();
    // SAFETY: the token opened above, closed once.
    unsafe { CloseHandle(token) };
    if ok == 0 {
        return Err(error);
    }
    // SAFETY: GetTokenInformation(TokenUser) wrote a TOKEN_USER at the start of the buffer.
    let sid: PSID = unsafe { words.as_ptr().cast::<TOKEN_USER>().read() }.User.Sid;
    let mut text: PWSTR = std::ptr::null_mut();
    // SAFETY: a valid SID inside `words` and a valid out-pointer.
    if unsafe { ConvertSidToStringSidW(sid, &raw mut text) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: LocalAlloc'ed by ConvertSidToStringSidW.
    let full = unsafe { take_local_string(text) }.ok_or_else(io::Error::last_os_error)?;
    let mut names = vec![full];
    // As SDDL writes it: a descriptor holding only this owner, converted to a string.
    let mut sd = SECURITY_DESCRIPTOR::default();
    let psd: PSECURITY_DESCRIPTOR = (&raw mut sd).cast();
    // SAFETY: a descriptor of the right size, initialised with the current revision.
    let init = unsafe { InitializeSecurityDescriptor(psd, SECURITY_DESCRIPTOR_REVISION) };
    // SAFETY: an initialised absolute descriptor and the SID, which outlives it.
    if init != 0 && unsafe { SetSecurityDescriptorOwner(psd, sid, 0) } != 0 {
        let mut s: PWSTR = std::ptr::null_mut();
        // SAFETY: a valid descriptor and out-pointer; the length is optional.
        let ok = unsafe {
            ConvertSecurityDescriptorToStringSecurityDescriptorW(
                psd,
                SDDL_REVISION_1,
                OWNER_SECURITY_INFORMATION,
                &raw mut s,
                std::ptr::null_mut(),
            )
        };
        let owner = if ok == 0 {
            None
        } else {
            // SAFETY: allocated by the conversion with LocalAlloc.
            unsafe { take_local_string(s) }
        };
        if let Some(alias) = owner.as_deref().and_then(|o| o.strip_prefix("O:"))
            && alias != names[0]
        {
            names.push(alias.to_owned());
        }
    }
    Ok(names)
}

/// The guard; the current user is read once.
#[derive(Debug, Default)]
pub struct WindowsGuard {
    me: OnceLock<Result<Vec<String>, String>>,
}

impl WindowsGuard {
    fn me(&self) -> Result<&[String], String> {
        self.me
            .get_or_init(|| {
                current_user().map_err(|e| format!("the current user cannot be read ({e})"))
            })
            .as_deref()
            .map_err(Clone::clone)
    }
}

impl Guard for WindowsGuard {
    fn check(&self, opened: &File, kind: Kind) -> Result<(), String> {
        let me = self.me()?;
        let attributes = opened
            .metadata()
            .map_err(|e| format!("its attributes cannot be read ({e})"))?
            .file_attributes();
        match kind {
            Kind::Folder if attributes & FILE_ATTRIBUTE_DIRECTORY == 0 => {
                return Err("it is not a folder".into());
            }
            Kind::File if attributes & FILE_ATTRIBUTE_DIRECTORY != 0 => {
                return Err("it is a folder, not a file".into());
            }
            _ => {}
        }
        let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: a handle opened with READ_CONTROL (`open`), alive for the call; the
        // owner/group/DACL/SACL out-pointers are optional (null), the descriptor out-pointer
        // is valid.
        let rc = unsafe {
            GetSecurityInfo(
                opened.as_raw_handle(),
                SE_FILE_OBJECT,
                OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &raw mut sd,
            )
        };
        if rc != 0 {
            return Err(format!("its security cannot be read (Windows error {rc})"));
        }
        let mut s: PWSTR = std::ptr::null_mut();
        // SAFETY: the descriptor GetSecurityInfo returned and a valid out-pointer.
        let ok = unsafe {
            ConvertSecurityDescriptorToStringSecurityDescriptorW(
                sd,
                SDDL_REVISION_1,
                OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
                &raw mut s,
                std::ptr::null_mut(),
            )
        };
        let error = io::Error::last_os_error();
        // SAFETY: LocalAlloc'ed by GetSecurityInfo, freed once.
        unsafe { LocalFree(sd as HLOCAL) };
        if ok == 0 {
            return Err(format!("its security cannot be read ({error})"));
        }
        // SAFETY: LocalAlloc'ed by the conversion.
        let text = unsafe { take_local_string(s) }.unwrap_or_default();
        let me: Vec<&str> = me.iter().map(String::as_str).collect();
        sddl::check(&text, &me)
    }

    fn create_folder(&self, dir: &Path) -> io::Result<()> {
        let me = self.me().map_err(io::Error::other)?;
        let descriptor: Vec<u16> =
            sddl::protected_folder(&me[0]).encode_utf16().chain(std::iter::once(0)).collect();
        let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: a NUL-terminated SDDL string and a valid out-pointer; the size is optional.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                descriptor.as_ptr(),
                SDDL_REVISION_1,
                &raw mut sd,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        let attributes = SECURITY_ATTRIBUTES {
            nLength: u32::try_from(size_of::<SECURITY_ATTRIBUTES>()).unwrap_or(0),
            lpSecurityDescriptor: sd,
            bInheritHandle: 0,
        };
        let name = wide(dir);
        // SAFETY: a NUL-terminated path and attributes whose descriptor is alive.
        let created = unsafe { CreateDirectoryW(name.as_ptr(), &raw const attributes) };
        let error = io::Error::last_os_error();
        // SAFETY: LocalAlloc'ed by the conversion, freed once (after its last use).
        unsafe { LocalFree(sd as HLOCAL) };
        if created == 0 { Err(error) } else { Ok(()) }
    }

    fn nonce(&self) -> io::Result<u64> {
        let mut bytes = [0u8; 8];
        // SAFETY: no algorithm handle with the system-preferred flag, and a buffer of 8 bytes.
        let status = unsafe {
            BCryptGenRandom(
                std::ptr::null_mut(),
                bytes.as_mut_ptr(),
                8,
                BCRYPT_USE_SYSTEM_PREFERRED_RNG,
            )
        };
        if status < 0 {
            return Err(io::Error::other(format!("BCryptGenRandom failed: {status:#x}")));
        }
        Ok(u64::from_ne_bytes(bytes))
    }
}
