//! Mirror of wdk-panic 0.5: the kernel panic handler, which bugchecks with code `RPNC`
//! ("Rust panic") and the panic's file, length, line and column as the four parameters.

#![no_std]

#[cfg(not(test))]
mod kernel_panic_handler {
    use core::panic::PanicInfo;

    #[allow(non_snake_case)]
    unsafe extern "system" {
        fn KeBugCheckEx(BugCheckCode: u32, BugCheckParameter1: usize, BugCheckParameter2: usize, BugCheckParameter3: usize, BugCheckParameter4: usize) -> !;
    }

    const RUST_PANIC_BUGCHECK_CODE: u32 = u32::from_be_bytes(*b"RPNC");

    #[cold]
    #[panic_handler]
    fn panic(info: &PanicInfo) -> ! {
        let (file, len, line, column) = info.location().map_or((0, 0, 0, 0), |loc| (loc.file().as_ptr() as usize, loc.file().len(), loc.line() as usize, loc.column() as usize));
        // SAFETY: `KeBugCheckEx` has no preconditions on its arguments and is callable at any IRQL.
        unsafe { KeBugCheckEx(RUST_PANIC_BUGCHECK_CODE, file, len, line, column) }
    }
}
