//! Mirror of wdk-alloc 0.4: `WdkAllocator`, the kernel heap (`ExAllocatePool2`, non-paged,
//! tag `'rust'`; `ExFreePool`).

#![no_std]

use core::alloc::{GlobalAlloc, Layout};

/// The kernel pool allocator.
pub struct WdkAllocator;

/// `POOL_FLAG_NON_PAGED` (wdm.h).
const POOL_FLAG_NON_PAGED: u64 = 0x40;
const RUST_TAG: u32 = u32::from_ne_bytes(*b"rust");

// SAFETY: the pool returns memory aligned to 16 bytes (no type the driver allocates needs
// more: `cargo xtask wdk-check`'s alignment lint), freed once by `dealloc`.
unsafe impl GlobalAlloc for WdkAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: callable at IRQL <= DISPATCH_LEVEL for non-paged pool.
        unsafe { wdk_sys::ntddk::ExAllocatePool2(POOL_FLAG_NON_PAGED, layout.size() as wdk_sys::SIZE_T, RUST_TAG) }.cast()
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from `alloc`.
        unsafe { wdk_sys::ntddk::ExFreePool(ptr.cast()) };
    }
}
