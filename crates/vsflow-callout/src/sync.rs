//! A mutex over a kernel spin lock.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};

use crate::services::{RawRundown, RawRwSpinLock, RawSpinLock};

/// Data protected by a [`RawSpinLock`].
pub struct SpinMutex<L: RawSpinLock, T> {
    lock: L,
    data: UnsafeCell<T>,
}

// SAFETY: access to `data` is serialized by `lock` (see `RawSpinLock`'s contract), so sharing
// the mutex across threads is sound when `T` may be sent between them.
unsafe impl<L: RawSpinLock, T: Send> Sync for SpinMutex<L, T> {}
// SAFETY: as above; moving the mutex moves the data.
unsafe impl<L: RawSpinLock, T: Send> Send for SpinMutex<L, T> {}

impl<L: RawSpinLock, T> SpinMutex<L, T> {
    /// Wraps `data`.
    pub const fn new(lock: L, data: T) -> Self {
        Self { lock, data: UnsafeCell::new(data) }
    }

    /// Acquires the lock. Keep guards short: the holder runs at `DISPATCH_LEVEL`.
    pub fn lock(&self) -> SpinGuard<'_, L, T> {
        let token = self.lock.lock();
        SpinGuard { mutex: self, token }
    }

    /// Acquires the lock if it is free, without waiting; the caller runs at `DISPATCH_LEVEL`
    /// already (it holds another spin lock), which the guard leaves as it is.
    pub fn try_lock_at_dpc(&self) -> Option<SpinGuard<'_, L, T>> {
        self.lock.try_lock_at_dpc().then(|| SpinGuard { mutex: self, token: FROM_DPC })
    }
}

/// A guard's token for a lock [`SpinMutex::try_lock_at_dpc`] acquired (no IRQL was saved:
/// never a valid IRQL, 0 to 31).
const FROM_DPC: u8 = u8::MAX;

/// Proof of holding a [`SpinMutex`]; releases it on drop.
pub struct SpinGuard<'a, L: RawSpinLock, T> {
    mutex: &'a SpinMutex<L, T>,
    token: u8,
}

impl<L: RawSpinLock, T> Deref for SpinGuard<'_, L, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, so no other reference to the data exists.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<L: RawSpinLock, T> DerefMut for SpinGuard<'_, L, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock and is borrowed mutably: this is the only reference.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<L: RawSpinLock, T> Drop for SpinGuard<'_, L, T> {
    fn drop(&mut self) {
        if self.token == FROM_DPC {
            // SAFETY: this guard acquired the lock with `try_lock_at_dpc` and releases it
            // exactly once.
            unsafe { self.mutex.lock.unlock_from_dpc() };
        } else {
            // SAFETY: this guard acquired the lock with `token` and releases it exactly once.
            unsafe { self.mutex.lock.unlock(self.token) };
        }
    }
}

/// A shared hold of a [`RawRwSpinLock`]; released on drop.
pub struct SharedGuard<'a, L: RawRwSpinLock> {
    lock: &'a L,
    token: u8,
}

impl<'a, L: RawRwSpinLock> SharedGuard<'a, L> {
    /// Acquires `lock` shared.
    pub fn acquire(lock: &'a L) -> Self {
        let token = lock.lock_shared();
        Self { lock, token }
    }
}

impl<L: RawRwSpinLock> SharedGuard<'_, L> {
    /// Releases the hold now (what dropping the guard does; a path that releases at one known
    /// place calls this, so the release is inlined there instead of called out of line).
    #[inline]
    pub fn release(self) {
        let (lock, token) = (self.lock, self.token);
        core::mem::forget(self);
        // SAFETY: this guard acquired the lock shared with `token`; it is forgotten above, so
        // its drop does not release it a second time.
        unsafe { lock.unlock_shared(token) };
    }
}

impl<L: RawRwSpinLock> Drop for SharedGuard<'_, L> {
    fn drop(&mut self) {
        // SAFETY: this guard acquired the lock shared with `token`; released once.
        unsafe { self.lock.unlock_shared(self.token) };
    }
}

/// An exclusive hold of a [`RawRwSpinLock`]; released on drop.
pub struct ExclusiveGuard<'a, L: RawRwSpinLock> {
    lock: &'a L,
    token: u8,
}

impl<'a, L: RawRwSpinLock> ExclusiveGuard<'a, L> {
    /// Acquires `lock` exclusively.
    pub fn acquire(lock: &'a L) -> Self {
        let token = lock.lock_exclusive();
        Self { lock, token }
    }
}

impl<L: RawRwSpinLock> Drop for ExclusiveGuard<'_, L> {
    fn drop(&mut self) {
        // SAFETY: this guard acquired the lock exclusively with `token`; released once.
        unsafe { self.lock.unlock_exclusive(self.token) };
    }
}

/// A reference taken on a [`RawRundown`]; released on drop.
pub struct RundownGuard<'a, R: RawRundown> {
    rundown: &'a R,
}

impl<'a, R: RawRundown> RundownGuard<'a, R> {
    /// Takes a reference, or `None` once the protection is run down.
    pub fn acquire(rundown: &'a R) -> Option<Self> {
        // Build the guard only after a successful acquire: a guard dropped without its
        // reference would release one it never took.
        if rundown.acquire() { Some(Self { rundown }) } else { None }
    }
}

impl<R: RawRundown> Drop for RundownGuard<'_, R> {
    fn drop(&mut self) {
        // SAFETY: this guard holds the reference its `acquire` took, released once.
        unsafe { self.rundown.release() };
    }
}
