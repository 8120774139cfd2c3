//! Mirror of wdk-alloc 0.4: `WdkAllocator` (check only).

#![no_std]

use core::alloc::{GlobalAlloc, Layout};

/// The kernel pool allocator.
pub struct WdkAllocator;

// SAFETY: check-only mirror; never linked or run.
unsafe impl GlobalAlloc for WdkAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mirror of the real crate's call.
        unsafe { wdk_sys::ntddk::ExAllocatePool2(0x40, layout.size() as wdk_sys::SIZE_T, u32::from_ne_bytes(*b"rust")) }.cast()
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: mirror of the real crate's call.
        unsafe { wdk_sys::ntddk::ExFreePool(ptr.cast()) };
    }
}
