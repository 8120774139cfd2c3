//! A growable array in fixed-size segments: growing it allocates one more segment and never
//! moves what it holds, so a step costs one bounded allocation and no copy.
//!
//! Segments are arrays of a fixed length `N` (a power of two), so an index is split with a
//! shift and a mask and only the directory lookup is bounds-checked. The directory is reserved
//! for the largest length up front ([`Segments::try_new`]), so it never grows either.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::error::Error;

/// A growable array of `T` in segments of `N` elements.
#[derive(Debug)]
pub struct Segments<T, const N: usize> {
    dir: Vec<Box<[T; N]>>,
    len: usize,
    bound: usize,
}

impl<T: Copy, const N: usize> Segments<T, N> {
    /// An empty array that may hold up to `bound` elements (its directory reserved).
    pub fn try_new(bound: usize) -> Result<Self, Error> {
        const { assert!(N.is_power_of_two()) };
        let mut dir = Vec::new();
        dir.try_reserve_exact(bound.div_ceil(N))?;
        Ok(Self { dir, len: 0, bound })
    }

    /// Elements held.
    #[inline]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Elements it can hold without another segment.
    pub fn capacity(&self) -> usize {
        self.dir.len() * N
    }

    /// Bytes of the next segment ([`Segments::grow`]), 0 once the directory is full.
    pub fn next_segment_bytes(&self) -> usize {
        if self.dir.len() < self.dir.capacity() { N * core::mem::size_of::<T>() } else { 0 }
    }

    /// Bytes of heap held (segments and directory).
    pub fn heap_bytes(&self) -> usize {
        self.dir.len() * N * core::mem::size_of::<T>() + self.dir_bytes()
    }

    /// Bytes of the directory alone.
    pub fn dir_bytes(&self) -> usize {
        self.dir.capacity() * core::mem::size_of::<Box<[T; N]>>()
    }

    /// True if a push needs another segment first (or the bound is reached).
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == self.dir.len() * N || self.len >= self.bound
    }

    /// Allocates one more segment ([`Segments::next_segment_bytes`] bytes), every element
    /// `fill`.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`]; with the directory full (the bound), [`Error::TableFull`].
    pub fn grow(&mut self, fill: T) -> Result<(), Error> {
        if self.dir.len() == self.dir.capacity() {
            return Err(Error::TableFull);
        }
        let mut v = Vec::new();
        v.try_reserve_exact(N)?;
        v.resize(N, fill);
        // Exactly `N` elements in an allocation of `N`: neither conversion reallocates.
        let segment: Box<[T; N]> =
            v.into_boxed_slice().try_into().map_err(|_| Error::OutOfMemory)?;
        // Cannot reallocate: the directory was reserved for every segment up to the bound.
        self.dir.push(segment);
        Ok(())
    }

    /// Appends a segment built by the caller: its elements (at most `N`) are appended, the
    /// rest of the segment holds `fill`. Only when every segment is full (the length a
    /// multiple of `N`, as after [`Segments::grow`]'s segments are used up).
    ///
    /// # Errors
    /// [`Error::TableFull`] with the directory full or a segment not full (nothing changes);
    /// [`Error::OutOfMemory`] if `values` had room for fewer than `N` and no more could be had.
    pub fn push_segment(&mut self, mut values: Vec<T>, fill: T) -> Result<(), Error> {
        let n = values.len();
        if n > N || self.len != self.dir.len() * N || self.dir.len() == self.dir.capacity() {
            return Err(Error::TableFull);
        }
        // Within the capacity reserved for the segment (`N`: no allocation).
        values.try_reserve_exact(N - n)?;
        values.resize(N, fill);
        // Exactly `N` elements: neither conversion reallocates.
        let segment: Box<[T; N]> =
            values.into_boxed_slice().try_into().map_err(|_| Error::OutOfMemory)?;
        // Cannot reallocate: the directory was reserved for every segment up to the bound.
        self.dir.push(segment);
        self.len += n;
        Ok(())
    }

    /// Appends `value`; the caller made room ([`Segments::is_full`] is false).
    #[inline]
    pub fn push(&mut self, value: T) {
        debug_assert!(!self.is_full(), "push without room");
        if let Some(segment) = self.dir.get_mut(self.len / N) {
            segment[self.len % N] = value;
            self.len += 1;
        }
    }

    /// Appends `value` until the array holds `len` elements, or as many as its segments and
    /// bound allow: a segment's run at a time (a fill, not one push each).
    pub fn fill_to(&mut self, len: usize, value: T) {
        let end = len.min(self.capacity()).min(self.bound);
        while self.len < end {
            let at = self.len % N;
            let run = (N - at).min(end - self.len);
            if let Some(part) = self.dir.get_mut(self.len / N).and_then(|s| s.get_mut(at..at + run))
            {
                part.fill(value);
            }
            self.len += run;
        }
    }

    /// Appends an element for the caller to overwrite in place (it holds what the slot held
    /// before: the segment's fill or an old element); `None` without room
    /// ([`Segments::is_full`]).
    #[inline]
    pub fn push_in_place(&mut self) -> Option<&mut T> {
        if self.len >= self.bound {
            return None;
        }
        let segment = self.dir.get_mut(self.len / N)?;
        self.len += 1;
        Some(&mut segment[(self.len - 1) % N])
    }

    /// The element at `i` (`i < capacity`).
    #[inline]
    pub fn get(&self, i: usize) -> &T {
        &self.dir[i / N][i % N]
    }

    /// The element at `i` (`i < capacity`), mutable.
    #[inline]
    pub fn get_mut(&mut self, i: usize) -> &mut T {
        &mut self.dir[i / N][i % N]
    }

    /// The element at `i`, or `None` past the length.
    pub fn try_get(&self, i: usize) -> Option<&T> {
        if i < self.len { self.dir.get(i / N).map(|s| &s[i % N]) } else { None }
    }

    /// Calls `f` on every element held, in order, a segment at a time.
    pub fn for_each_mut(&mut self, mut f: impl FnMut(&mut T)) {
        let mut left = self.len;
        for segment in &mut self.dir {
            let n = left.min(N);
            for v in segment.iter_mut().take(n) {
                f(v);
            }
            left -= n;
            if left == 0 {
                break;
            }
        }
    }

    /// Forgets every element, keeping the segments.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The elements from `from` on, in order.
    pub fn iter_from(&self, from: usize) -> impl Iterator<Item = &T> + '_ {
        let first = from / N;
        let skip = from % N;
        let take = self.len.saturating_sub(from);
        self.dir.get(first..).unwrap_or(&[]).iter().flat_map(|s| s.iter()).skip(skip).take(take)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_a_segment_at_a_time_up_to_its_bound_without_moving_elements() {
        let mut s: Segments<u32, 4> = Segments::try_new(10).unwrap();
        assert!(s.is_full());
        let mut first = None;
        for i in 0..10u32 {
            if s.is_full() {
                s.grow(u32::MAX).unwrap();
            }
            s.push(i);
            first.get_or_insert_with(|| core::ptr::from_ref(s.get(0)));
            assert_eq!(first, Some(core::ptr::from_ref(s.get(0))), "element 0 moved");
        }
        assert_eq!((s.len(), s.capacity()), (10, 12), "three segments of four");
        assert!(s.is_full(), "at the bound");
        assert_eq!(s.grow(0), Err(Error::TableFull));
        assert_eq!(*s.get(9), 9);
        assert_eq!(s.iter_from(5).copied().collect::<Vec<_>>(), [5, 6, 7, 8, 9]);
        assert_eq!(s.try_get(10), None);
        s.clear();
        assert_eq!((s.len(), s.capacity()), (0, 12));
        s.push(40);
        s.fill_to(7, 41);
        assert_eq!(s.iter_from(0).copied().collect::<Vec<_>>(), [40, 41, 41, 41, 41, 41, 41]);
        s.fill_to(100, 42);
        assert_eq!(s.len(), 10, "up to the bound only");
        assert_eq!(s.iter_from(6).copied().collect::<Vec<_>>(), [41, 42, 42, 42]);
    }
}
