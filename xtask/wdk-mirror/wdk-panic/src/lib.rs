//! Mirror of wdk-panic 0.5: the panic handler (check only).

#![no_std]

#[cfg(not(test))]
#[panic_handler]
const fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
