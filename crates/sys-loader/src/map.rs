//! The image in memory, as the Windows loader lays it out: `SizeOfImage` bytes, the headers at
//! the base, each section at its RVA (raw data copied, the rest zero), base relocations applied
//! for the address the mapping got, then each page protected as its section says.
//!
//! The protections are the memory-integrity ones: code read+execute, read-only data read-only,
//! writable data without execute, discardable sections (`.reloc`) inaccessible once loaded, as
//! Windows frees them. A write to code, a jump into data or a read of `.reloc` by the driver
//! faults in the test instead of passing unnoticed.

use std::fmt;

use sys_image::{
    IMAGE_REL_BASED_ABSOLUTE, IMAGE_REL_BASED_DIR64, IMAGE_SCN_MEM_DISCARDABLE,
    IMAGE_SCN_MEM_EXECUTE, IMAGE_SCN_MEM_READ, IMAGE_SCN_MEM_WRITE, Image, ImageError, Symbol,
};

/// `PAGE_SIZE` on x64.
pub const PAGE: usize = 4096;

/// Why an image was not loaded. Every refusal happens before any of the image's code runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// The file is not a PE32+ image this loader can map (truncated, corrupted, inconsistent).
    Image(ImageError),
    /// Not an x64 image.
    Machine(u16),
    /// No entry point.
    NoEntryPoint,
    /// A section whose RVA is not page aligned (the pages could not be protected separately).
    Unaligned {
        /// The section.
        section: String,
    },
    /// A base relocation of a type the loader does not apply.
    Relocation {
        /// Its RVA.
        rva: u32,
        /// `IMAGE_REL_BASED_*`.
        kind: u16,
    },
    /// An import no shim implements: the load fails by name, never with a silent stub.
    NoShim {
        /// The module.
        module: String,
        /// The function.
        symbol: String,
    },
    /// The operating system refused the mapping or a protection change.
    Os(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Image(e) => write!(f, "{e}"),
            Self::Machine(m) => write!(f, "machine {m:#06x} is not AMD64"),
            Self::NoEntryPoint => f.write_str("the image has no entry point"),
            Self::Unaligned { section } => write!(f, "section {section} is not page aligned"),
            Self::Relocation { rva, kind } => {
                write!(f, "base relocation type {kind} at {rva:#x} is not supported")
            }
            Self::NoShim { module, symbol } => {
                write!(f, "import {module}!{symbol} has no shim: the image cannot be loaded")
            }
            Self::Os(e) => write!(f, "mapping the image: {e}"),
        }
    }
}

impl std::error::Error for LoadError {}

impl From<ImageError> for LoadError {
    fn from(e: ImageError) -> Self {
        Self::Image(e)
    }
}

/// A mapped image (unmapped on drop).
#[derive(Debug)]
pub struct Mapping {
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; the driver's code in it synchronizes
// its own data as on Windows.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

fn os_error(what: &str) -> LoadError {
    LoadError::Os(format!("{what}: {}", std::io::Error::last_os_error()))
}

const fn round_up(n: usize) -> usize {
    n.div_ceil(PAGE) * PAGE
}

impl Mapping {
    /// Maps `image`: headers and sections copied, relocations applied (`resolve` is then called
    /// to fill each import's IAT slot), pages protected.
    ///
    /// # Errors
    /// See [`LoadError`]; the mapping is released on every error.
    pub fn load(
        image: &Image<'_>,
        mut resolve: impl FnMut(&str, &Symbol) -> Option<usize>,
    ) -> Result<Self, LoadError> {
        if image.machine != sys_image::IMAGE_FILE_MACHINE_AMD64 {
            return Err(LoadError::Machine(image.machine));
        }
        if image.entry == 0 {
            return Err(LoadError::NoEntryPoint);
        }
        if let Some(s) =
            image.sections.iter().find(|s| !(s.virtual_address as usize).is_multiple_of(PAGE))
        {
            return Err(LoadError::Unaligned { section: s.name.clone() });
        }
        // Every import resolves before anything is mapped: a missing shim is refused by name.
        let mut slots = Vec::with_capacity(image.imports.len());
        for i in &image.imports {
            let address = resolve(&i.module, &i.symbol).ok_or_else(|| LoadError::NoShim {
                module: i.module.clone(),
                symbol: i.symbol.to_string(),
            })?;
            slots.push((i.slot, address));
        }
        for r in &image.relocations {
            if r.kind != IMAGE_REL_BASED_DIR64 && r.kind != IMAGE_REL_BASED_ABSOLUTE {
                return Err(LoadError::Relocation { rva: r.rva, kind: r.kind });
            }
        }
        let len = round_up(image.size_of_image as usize);
        // SAFETY: an anonymous private mapping of `len` bytes at an address the kernel picks.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(os_error("mmap"));
        }
        let mut mapping = Self { base: base.cast(), len };
        mapping.copy(0, image.data.get(..image.size_of_headers as usize).unwrap_or(&[]));
        for s in &image.sections {
            mapping.copy(s.virtual_address as usize, image.raw(s));
        }
        let delta = (mapping.base as u64).wrapping_sub(image.image_base);
        for r in image.relocations.iter().filter(|r| r.kind == IMAGE_REL_BASED_DIR64) {
            let value = mapping.read_u64(r.rva as usize);
            mapping.write_u64(r.rva as usize, value.wrapping_add(delta));
        }
        for (slot, address) in slots {
            mapping.write_u64(slot as usize, address as u64);
        }
        mapping.protect(image)?;
        Ok(mapping)
    }

    /// The address the image was mapped at.
    #[must_use]
    pub fn base(&self) -> usize {
        self.base as usize
    }

    /// Whether `address` lies in the mapping.
    #[must_use]
    pub fn contains(&self, address: usize) -> bool {
        address >= self.base() && address < self.base() + self.len
    }

    fn copy(&mut self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.len, "checked by sys_image::Image::parse");
        // SAFETY: within the mapping (asserted).
        let target = unsafe { self.base.add(offset) };
        // SAFETY: the mapping is writable while loading; the source is the file, which does
        // not overlap it.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), target, bytes.len()) };
    }

    #[allow(clippy::cast_ptr_alignment, reason = "read unaligned")]
    fn read_u64(&self, offset: usize) -> u64 {
        assert!(offset + 8 <= self.len, "checked by sys_image::Image::parse");
        // SAFETY: within the mapping (asserted).
        let at = unsafe { self.base.add(offset) }.cast::<u64>();
        // SAFETY: 8 bytes within the mapping (asserted); unaligned reads are allowed.
        unsafe { at.read_unaligned() }
    }

    #[allow(clippy::cast_ptr_alignment, reason = "written unaligned")]
    fn write_u64(&mut self, offset: usize, value: u64) {
        assert!(offset + 8 <= self.len, "checked by sys_image::Image::parse");
        // SAFETY: within the mapping (asserted).
        let at = unsafe { self.base.add(offset) }.cast::<u64>();
        // SAFETY: 8 bytes within the mapping (asserted), writable while loading.
        unsafe { at.write_unaligned(value) };
    }

    fn protect(&self, image: &Image<'_>) -> Result<(), LoadError> {
        let mut regions = vec![(0, round_up(image.size_of_headers as usize), libc::PROT_READ)];
        for s in &image.sections {
            let c = s.characteristics;
            let prot = if c & IMAGE_SCN_MEM_DISCARDABLE != 0 {
                libc::PROT_NONE
            } else {
                let mut p = libc::PROT_NONE;
                if c & IMAGE_SCN_MEM_READ != 0 {
                    p |= libc::PROT_READ;
                }
                if c & IMAGE_SCN_MEM_WRITE != 0 {
                    p |= libc::PROT_WRITE;
                }
                if c & IMAGE_SCN_MEM_EXECUTE != 0 {
                    p |= libc::PROT_EXEC | libc::PROT_READ;
                }
                p
            };
            regions.push((s.virtual_address as usize, round_up(s.virtual_size as usize), prot));
        }
        for (offset, len, prot) in regions {
            let len = len.min(self.len - offset.min(self.len));
            if len == 0 {
                continue;
            }
            // SAFETY: inside the mapping (`offset` < `len` of the mapping).
            let at = unsafe { self.base.add(offset) };
            // SAFETY: page-aligned range inside the mapping (sections are page aligned, checked
            // above, and inside SizeOfImage, checked by the parser).
            if unsafe { libc::mprotect(at.cast(), len, prot) } != 0 {
                return Err(os_error("mprotect"));
            }
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `load`, unmapped once; no code of the image runs any more
        // (the harness unloads the driver before dropping it).
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}
