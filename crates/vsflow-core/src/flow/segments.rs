//! A growable array in fixed-size segments: growing it allocates one more segment and never
//! moves what it holds, so a step costs one bounded allocation and no copy.
//!
//! The directory of segments is reserved for the largest length up front
//! ([`Segments::try_new`]), so it never grows either.

use alloc::vec::Vec;

use crate::error::Error;

/// A growable array of `T` in segments of `1 << SHIFT` elements (the last one may be shorter:
/// the array never holds storage past its bound).
#[derive(Debug)]
pub(crate) struct Segments<T, const SHIFT: u32> {
    dir: Vec<Vec<T>>,
    len: usize,
    bound: usize,
}

impl<T: Copy, const SHIFT: u32> Segments<T, SHIFT> {
    /// Elements per segment.
    pub(crate) const SEGMENT: usize = 1 << SHIFT;

    /// An empty array that may hold up to `bound` elements (its directory reserved).
    pub(crate) fn try_new(bound: usize) -> Result<Self, Error> {
        let mut dir = Vec::new();
        dir.try_reserve_exact(bound.div_ceil(Self::SEGMENT))?;
        Ok(Self { dir, len: 0, bound })
    }

    /// Elements held.
    #[inline]
    pub(crate) const fn len(&self) -> usize {
        self.len
    }

    /// Elements it can hold without another segment.
    pub(crate) fn capacity(&self) -> usize {
        self.dir.iter().map(Vec::capacity).sum()
    }

    /// Bytes of the next segment ([`Segments::grow`]), 0 at the bound.
    pub(crate) fn next_segment_bytes(&self) -> usize {
        let cap = self.dir.len() * Self::SEGMENT;
        Self::SEGMENT.min(self.bound.saturating_sub(cap)) * core::mem::size_of::<T>()
    }

    /// Bytes of heap held (segments and directory).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.capacity() * core::mem::size_of::<T>()
            + self.dir.capacity() * core::mem::size_of::<Vec<T>>()
    }

    /// Bytes of the directory alone.
    pub(crate) fn dir_bytes(&self) -> usize {
        self.dir.capacity() * core::mem::size_of::<Vec<T>>()
    }

    /// True if a push needs another segment first.
    #[inline]
    pub(crate) fn is_full(&self) -> bool {
        self.len == self.dir.len() * Self::SEGMENT || self.len >= self.bound
    }

    /// Allocates one more segment ([`Segments::next_segment_bytes`] bytes).
    ///
    /// # Errors
    /// [`Error::OutOfMemory`]; at the bound, [`Error::TableFull`].
    pub(crate) fn grow(&mut self) -> Result<(), Error> {
        let size = self.next_segment_bytes() / core::mem::size_of::<T>().max(1);
        if size == 0 || self.dir.len() == self.dir.capacity() {
            return Err(Error::TableFull);
        }
        let mut segment = Vec::new();
        segment.try_reserve_exact(size)?;
        // Cannot reallocate: the directory was reserved for every segment up to the bound.
        self.dir.push(segment);
        Ok(())
    }

    /// Appends `value`; the caller made room ([`Segments::is_full`] is false).
    #[inline]
    pub(crate) fn push(&mut self, value: T) {
        debug_assert!(!self.is_full(), "push without room");
        if let Some(segment) = self.dir.get_mut(self.len >> SHIFT) {
            // Within the segment's reserved capacity: no reallocation.
            segment.push(value);
            self.len += 1;
        }
    }

    /// The element at `i` (`i < len`).
    #[inline]
    pub(crate) fn get(&self, i: usize) -> &T {
        &self.dir[i >> SHIFT][i & (Self::SEGMENT - 1)]
    }

    /// The element at `i` (`i < len`), mutable.
    #[inline]
    pub(crate) fn get_mut(&mut self, i: usize) -> &mut T {
        &mut self.dir[i >> SHIFT][i & (Self::SEGMENT - 1)]
    }

    /// The element at `i`, or `None` past the length.
    pub(crate) fn try_get(&self, i: usize) -> Option<&T> {
        self.dir.get(i >> SHIFT)?.get(i & (Self::SEGMENT - 1))
    }

    /// Forgets every element, keeping the segments.
    pub(crate) fn clear(&mut self) {
        self.dir.iter_mut().for_each(Vec::clear);
        self.len = 0;
    }

    /// The elements from `from` on, in order.
    pub(crate) fn iter_from(&self, from: usize) -> impl Iterator<Item = &T> + '_ {
        let first = from >> SHIFT;
        let skip = from & (Self::SEGMENT - 1);
        self.dir.get(first..).unwrap_or(&[]).iter().flatten().skip(skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_a_segment_at_a_time_up_to_its_bound_without_moving_elements() {
        let mut s: Segments<u32, 2> = Segments::try_new(10).unwrap();
        assert!(s.is_full());
        let mut first = None;
        for i in 0..10u32 {
            if s.is_full() {
                s.grow().unwrap();
            }
            s.push(i);
            first.get_or_insert(core::ptr::from_ref(s.get(0)));
            assert_eq!(first, Some(core::ptr::from_ref(s.get(0))), "element 0 moved");
        }
        assert_eq!((s.len(), s.capacity()), (10, 10), "the last segment is cut at the bound");
        assert!(s.is_full());
        assert_eq!(s.grow(), Err(Error::TableFull));
        assert_eq!(*s.get(9), 9);
        assert_eq!(s.iter_from(5).copied().collect::<Vec<_>>(), [5, 6, 7, 8, 9]);
        assert_eq!(s.try_get(10), None);
        s.clear();
        assert_eq!((s.len(), s.capacity()), (0, 10));
    }
}
