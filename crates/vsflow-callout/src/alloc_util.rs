//! Fallible boxing: `Box::new` aborts (a bugcheck in the kernel) when memory runs out.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::error::CalloutError;

/// Moves `value` to the heap, or returns out of memory.
///
/// # Errors
/// [`CalloutError::Core`] with `OutOfMemory`.
pub fn try_box<T>(value: T) -> Result<Box<T>, CalloutError> {
    let mut v: Vec<T> = Vec::new();
    v.try_reserve_exact(1)?;
    v.push(value);
    let slice: Box<[T]> = v.into_boxed_slice();
    let raw = Box::into_raw(slice).cast::<T>();
    // SAFETY: a boxed one-element slice is an allocation with the layout of `[T; 1]`, which is
    // the layout of `T`; ownership moves from the slice box to the new box exactly once.
    Ok(unsafe { Box::from_raw(raw) })
}

#[cfg(test)]
mod tests {
    use super::try_box;

    #[test]
    fn boxes_values_and_drops_them_once() {
        use alloc::rc::Rc;
        let rc = Rc::new(5);
        let b = try_box(Rc::clone(&rc)).unwrap();
        assert_eq!(Rc::strong_count(&rc), 2);
        assert_eq!(**b, 5);
        drop(b);
        assert_eq!(Rc::strong_count(&rc), 1);
        let z = try_box(()).unwrap();
        assert_eq!(*z, ());
        let big = try_box([7u64; 1000]).unwrap();
        assert_eq!(big[999], 7);
    }
}
