//! The kernel pool: `ExAllocatePool2` and `ExFreePool` as documented, with Driver Verifier's
//! pool tracking.
//!
//! The driver built for the Linux host (`cargo xtask driver-tests`) allocates from the host heap
//! and never reaches this; vsflow.sys as linked for Windows does, through wdk-alloc's global
//! allocator, when the loader harness (crates/sys-loader) runs it. Rules (wdm.h 10.0.22621,
//! `ExAllocatePool2` and `ExFreePool` reference pages, "Code integrity checking" in Driver
//! Verifier's documentation):
//!
//! - exactly one of `POOL_FLAG_NON_PAGED`, `POOL_FLAG_NON_PAGED_EXECUTE`, `POOL_FLAG_PAGED`;
//!   executable pool is refused (memory integrity: "uses NX APIs/flags for memory
//!   allocation", Driver Verifier code integrity violation 0x2000), as are required flag bits
//!   wdm.h does not define (`POOL_FLAG_UNUSED_REQUIRED_BITS`);
//! - non-paged pool at `IRQL <= DISPATCH_LEVEL`, paged pool at `IRQL <= APC_LEVEL`;
//! - a zero tag is reported (the reference page asks for a non-zero tag);
//! - the memory is zeroed unless `POOL_FLAG_UNINITIALIZED`, in which case it is filled with a
//!   pattern (the worse choice: code that relies on zeroes it did not ask for fails);
//! - 16-byte alignment (`MEMORY_ALLOCATION_ALIGNMENT`), page alignment from `PAGE_SIZE` up;
//! - failure is NULL (`POOL_FLAG_RAISE_ON_FAILURE` is refused: the double cannot raise);
//!   a zero-byte request is NULL (undocumented: the worse choice);
//! - `ExFreePool` of a pointer the pool did not hand out, or freed already, is reported
//!   (Driver Verifier bug check 0xC2) and ignored;
//! - what is still allocated when the image unloads is reported, by tag (pool tracking);
//! - a test can make one later allocation fail (`fail_in`): NULL, as when "there is
//!   insufficient memory in the free pool" (`ExAllocatePool2`'s return value), to check the
//!   driver handles it (fail-closed, nothing established lost).

use std::alloc::{Layout, alloc, dealloc};
use std::collections::BTreeMap;

use crate::framework::DISPATCH_LEVEL;
use crate::violation::Violation;

/// `POOL_FLAG_UNINITIALIZED`.
pub const POOL_FLAG_UNINITIALIZED: u64 = 0x2;
/// `POOL_FLAG_RAISE_ON_FAILURE`.
pub const POOL_FLAG_RAISE_ON_FAILURE: u64 = 0x20;
/// `POOL_FLAG_NON_PAGED` (NX).
pub const POOL_FLAG_NON_PAGED: u64 = 0x40;
/// `POOL_FLAG_NON_PAGED_EXECUTE`.
pub const POOL_FLAG_NON_PAGED_EXECUTE: u64 = 0x80;
/// `POOL_FLAG_PAGED`.
pub const POOL_FLAG_PAGED: u64 = 0x100;
/// Required flags wdm.h defines (`POOL_FLAG_REQUIRED_START` .. `POOL_FLAG_LAST_KNOWN_REQUIRED`).
const KNOWN_REQUIRED: u64 = 0x7FF;
/// `POOL_FLAG_REQUIRED_MASK`.
const REQUIRED_MASK: u64 = 0xFFFF_FFFF;
/// `MEMORY_ALLOCATION_ALIGNMENT` on x64.
pub const ALIGNMENT: usize = 16;
/// `PAGE_SIZE`.
pub const PAGE_SIZE: usize = 4096;
/// What `POOL_FLAG_UNINITIALIZED` memory holds.
pub const UNINITIALIZED_FILL: u8 = 0xA5;
/// `APC_LEVEL`.
const APC_LEVEL: u8 = 1;

/// One live allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// Bytes asked for.
    pub size: usize,
    /// The pool tag.
    pub tag: u32,
    /// How it was allocated.
    layout: Layout,
}

/// The pool's live allocations, by address.
#[derive(Debug, Default)]
pub struct Pool {
    blocks: BTreeMap<usize, Block>,
    /// Allocations made so far.
    pub allocations: u64,
    /// Fail the allocation this many calls from now (1: the next one); 0: none.
    pub fail_in: u64,
}

impl Pool {
    /// `ExAllocatePool2(Flags, NumberOfBytes, Tag)` at `irql`.
    pub fn allocate(
        &mut self,
        flags: u64,
        size: usize,
        tag: u32,
        irql: u8,
        violations: &mut Vec<Violation>,
    ) -> *mut u8 {
        let mut refuse = |what: String| {
            violations.push(Violation::BadArgument { call: "ExAllocatePool2", what });
            std::ptr::null_mut()
        };
        let kinds = [POOL_FLAG_NON_PAGED, POOL_FLAG_NON_PAGED_EXECUTE, POOL_FLAG_PAGED];
        if kinds.into_iter().filter(|k| flags & k != 0).count() != 1 {
            return refuse(format!("flags {flags:#x}: exactly one pool type is required"));
        }
        if flags & POOL_FLAG_NON_PAGED_EXECUTE != 0 {
            return refuse(
                "POOL_FLAG_NON_PAGED_EXECUTE: executable pool (memory integrity; Driver Verifier code integrity 0x2000)"
                    .into(),
            );
        }
        if flags & REQUIRED_MASK & !KNOWN_REQUIRED != 0 {
            return refuse(format!("flags {flags:#x}: required bits wdm.h does not define"));
        }
        if flags & POOL_FLAG_RAISE_ON_FAILURE != 0 {
            return refuse(
                "POOL_FLAG_RAISE_ON_FAILURE: not modelled (the double cannot raise)".into(),
            );
        }
        let max = if flags & POOL_FLAG_PAGED != 0 { APC_LEVEL } else { DISPATCH_LEVEL };
        if irql > max {
            violations.push(Violation::IrqlTooHigh { call: "ExAllocatePool2", irql, max });
            return std::ptr::null_mut();
        }
        if tag == 0 {
            violations.push(Violation::BadArgument {
                call: "ExAllocatePool2",
                what: "a zero pool tag".into(),
            });
        }
        if size == 0 {
            return std::ptr::null_mut();
        }
        if self.fail_in > 0 {
            self.fail_in -= 1;
            if self.fail_in == 0 {
                return std::ptr::null_mut();
            }
        }
        let align = if size >= PAGE_SIZE { PAGE_SIZE } else { ALIGNMENT };
        let Ok(layout) = Layout::from_size_align(size, align) else { return std::ptr::null_mut() };
        // SAFETY: a non-zero size (checked above).
        let p = unsafe { alloc(layout) };
        if p.is_null() {
            return p;
        }
        let fill = if flags & POOL_FLAG_UNINITIALIZED != 0 { UNINITIALIZED_FILL } else { 0 };
        // SAFETY: `size` bytes just allocated at `p`.
        unsafe { p.write_bytes(fill, size) };
        self.blocks.insert(p as usize, Block { size, tag, layout });
        self.allocations += 1;
        p
    }

    /// `ExFreePool(P)` at `irql` (`p`: the pointer's address).
    pub fn free(&mut self, p: usize, irql: u8, violations: &mut Vec<Violation>) {
        if irql > DISPATCH_LEVEL {
            violations.push(Violation::IrqlTooHigh {
                call: "ExFreePool",
                irql,
                max: DISPATCH_LEVEL,
            });
        }
        match self.blocks.remove(&p) {
            Some(b) => {
                // SAFETY: allocated in `allocate` with this layout, freed once (removed above).
                unsafe { dealloc(p as *mut u8, b.layout) };
            }
            None => violations.push(Violation::BadArgument {
                call: "ExFreePool",
                what: format!("{p:#x} is not a live pool allocation (freed twice, or never allocated): bug check 0xC2"),
            }),
        }
    }

    /// Live allocations: (address, block).
    #[must_use]
    pub fn live(&self) -> Vec<(usize, Block)> {
        self.blocks.iter().map(|(a, b)| (*a, *b)).collect()
    }

    /// The live allocations as a report line per tag (`'rust': 3 block(s), 96 bytes`).
    #[must_use]
    pub fn leaks(&self) -> Vec<String> {
        let mut by_tag: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
        for b in self.blocks.values() {
            let e = by_tag.entry(b.tag).or_default();
            e.0 += 1;
            e.1 += b.size;
        }
        by_tag
            .into_iter()
            .map(|(tag, (n, bytes))| {
                let name: String = tag.to_le_bytes().iter().map(|b| char::from(*b)).collect();
                format!("pool tag '{name}': {n} block(s), {bytes} bytes")
            })
            .collect()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for (p, b) in std::mem::take(&mut self.blocks) {
            // SAFETY: allocated in `allocate` with this layout; the session that owned the
            // driver image is over, so nothing refers to it any more.
            unsafe { dealloc(p as *mut u8, b.layout) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: u32 = u32::from_le_bytes(*b"rust");

    #[test]
    fn non_paged_memory_is_zeroed_aligned_and_tracked_until_freed() {
        let mut pool = Pool::default();
        let mut v = Vec::new();
        let p = pool.allocate(POOL_FLAG_NON_PAGED, 40, TAG, DISPATCH_LEVEL, &mut v);
        assert!(!p.is_null());
        assert_eq!(p as usize % ALIGNMENT, 0);
        // SAFETY: 40 bytes just allocated.
        assert!(unsafe { std::slice::from_raw_parts(p, 40) }.iter().all(|b| *b == 0));
        let big = pool.allocate(POOL_FLAG_NON_PAGED, PAGE_SIZE, TAG, 0, &mut v);
        assert_eq!(big as usize % PAGE_SIZE, 0, "PAGE_SIZE and more: page aligned");
        assert_eq!(pool.leaks(), ["pool tag 'rust': 2 block(s), 4136 bytes"]);
        pool.free(p as usize, 0, &mut v);
        pool.free(big as usize, 0, &mut v);
        assert!(pool.live().is_empty());
        assert_eq!(v, []);
    }

    #[test]
    fn uninitialized_memory_holds_the_pattern_not_zeroes() {
        let mut pool = Pool::default();
        let mut v = Vec::new();
        let p = pool.allocate(POOL_FLAG_NON_PAGED | POOL_FLAG_UNINITIALIZED, 8, TAG, 0, &mut v);
        // SAFETY: 8 bytes just allocated.
        let bytes = unsafe { std::slice::from_raw_parts(p, 8) };
        assert!(bytes.iter().all(|b| *b == UNINITIALIZED_FILL));
        pool.free(p as usize, 0, &mut v);
    }

    #[test]
    fn executable_pool_no_or_two_pool_types_and_unknown_required_bits_are_refused() {
        let mut pool = Pool::default();
        let mut v = Vec::new();
        for flags in [
            POOL_FLAG_NON_PAGED_EXECUTE,
            0,
            POOL_FLAG_NON_PAGED | POOL_FLAG_PAGED,
            POOL_FLAG_NON_PAGED | 0x800,
            POOL_FLAG_NON_PAGED | POOL_FLAG_RAISE_ON_FAILURE,
        ] {
            assert!(pool.allocate(flags, 16, TAG, 0, &mut v).is_null(), "{flags:#x}");
        }
        assert_eq!(v.len(), 5);
        assert!(pool.live().is_empty());
    }

    #[test]
    fn irql_limits_a_zero_tag_and_a_bad_free_are_reported() {
        let mut pool = Pool::default();
        let mut v = Vec::new();
        assert!(pool.allocate(POOL_FLAG_PAGED, 16, TAG, DISPATCH_LEVEL, &mut v).is_null());
        assert!(pool.allocate(POOL_FLAG_NON_PAGED, 16, TAG, 3, &mut v).is_null());
        assert_eq!(v.len(), 2);
        let p = pool.allocate(POOL_FLAG_NON_PAGED, 16, 0, 0, &mut v);
        assert_eq!(v.len(), 3, "zero tag");
        pool.free(p as usize, 0, &mut v);
        pool.free(p as usize, 0, &mut v);
        assert_eq!(v.len(), 4, "second free");
        assert!(matches!(&v[3], Violation::BadArgument { call: "ExFreePool", .. }));
    }
}
