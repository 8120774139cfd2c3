//! The driver's control device `\\.\vsflow` through `DeviceIoControl`.

use windows_sys::Win32::Foundation::{
    CloseHandle, GENERIC_READ, GENERIC_WRITE, GetLastError, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{CreateFileW, OPEN_EXISTING};
use windows_sys::Win32::System::IO::DeviceIoControl;

use crate::driver::{
    IoctlReply, STATUS_BUFFER_TOO_SMALL, STATUS_NOT_FOUND, STATUS_REVISION_MISMATCH, Transport,
};
use crate::error::{Error, win32};

/// An open handle to `\\.\vsflow`.
#[derive(Debug)]
pub struct DeviceTransport {
    handle: HANDLE,
}

impl DeviceTransport {
    /// Opens the device (administrators only, by the driver's SDDL).
    ///
    /// # Errors
    /// `DriverNotInstalled`, `AccessDenied`.
    pub fn open() -> Result<Self, Error> {
        let name: Vec<u16> = r"\\.\vsflow".encode_utf16().chain(std::iter::once(0)).collect();
        // SAFETY: a NUL-terminated name; no security attributes or template.
        let handle = unsafe {
            CreateFileW(
                name.as_ptr(),
                GENERIC_READ | GENERIC_WRITE,
                0,
                std::ptr::null(),
                OPEN_EXISTING,
                0,
                std::ptr::null_mut(),
            )
        };
        if handle == INVALID_HANDLE_VALUE {
            // SAFETY: no arguments.
            let e = unsafe { GetLastError() };
            return Err(match e {
                win32::FILE_NOT_FOUND => Error::DriverNotInstalled,
                win32::ACCESS_DENIED => Error::AccessDenied,
                c => Error::Os { code: c, function: "CreateFileW(\\\\.\\vsflow)" },
            });
        }
        Ok(Self { handle })
    }
}

impl Drop for DeviceTransport {
    fn drop(&mut self) {
        // SAFETY: the handle opened in `open`, closed once.
        unsafe { CloseHandle(self.handle) };
    }
}

/// Win32 errors `DeviceIoControl` reports for the driver's NTSTATUS values.
const ERROR_INSUFFICIENT_BUFFER: u32 = 122;
const ERROR_INVALID_FUNCTION: u32 = 1;
const ERROR_REVISION_MISMATCH: u32 = 1306;
/// `ERROR_TRANSACTIONAL_CONFLICT`: `STATUS_TRANSACTIONAL_CONFLICT`, the driver's "rules changed"
/// (verify on Windows: docs/WINDOWS-VERIFICATION.md).
const ERROR_TRANSACTIONAL_CONFLICT: u32 = 6800;

impl Transport for DeviceTransport {
    fn ioctl(&mut self, code: u32, input: &[u8], output_len: usize) -> Result<IoctlReply, Error> {
        let mut output = vec![0u8; output_len];
        let mut returned = 0u32;
        // SAFETY: an open device; buffers valid for their lengths; synchronous I/O.
        let ok = unsafe {
            DeviceIoControl(
                self.handle,
                code,
                input.as_ptr().cast(),
                u32::try_from(input.len()).unwrap_or(0),
                output.as_mut_ptr().cast(),
                u32::try_from(output_len).unwrap_or(0),
                &raw mut returned,
                std::ptr::null_mut(),
            )
        };
        if ok != 0 {
            output.truncate(returned as usize);
            return Ok(IoctlReply { status: 0, information: returned as usize, output });
        }
        // SAFETY: no arguments.
        let e = unsafe { GetLastError() };
        // The needed size travels in IoStatus.Information; DeviceIoControl may not surface it
        // (verify on Windows), so the client grows the buffer by doubling as a fallback.
        let status = match e {
            ERROR_INSUFFICIENT_BUFFER => STATUS_BUFFER_TOO_SMALL,
            win32::NOT_FOUND => STATUS_NOT_FOUND,
            ERROR_INVALID_FUNCTION => 0xC000_0010_u32.cast_signed(),
            ERROR_REVISION_MISMATCH => STATUS_REVISION_MISMATCH,
            win32::INVALID_PARAMETER => 0xC000_000D_u32.cast_signed(),
            ERROR_TRANSACTIONAL_CONFLICT => vsflow_proto::response::STATUS_RULES_CHANGED,
            win32::ACCESS_DENIED => return Err(Error::AccessDenied),
            c => return Err(Error::Os { code: c, function: "DeviceIoControl" }),
        };
        Ok(IoctlReply { status, information: returned as usize, output: Vec::new() })
    }
}
