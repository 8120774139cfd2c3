//! vsflow.sys as a PE32+ image, parsed once and bounds-checked, for the two programs that read
//! it: `cargo xtask sys --check` (the image rules) and the loader harness (crates/sys-loader),
//! which maps and runs it.
//!
//! [`Image::parse`] reads the headers, the section table, the import directory (every import
//! with the address of its IAT slot), the export directory and the base relocations with the
//! `object` crate, and refuses anything it could not map safely: a truncated or corrupted
//! file, a section outside the image or overlapping another, raw data past the end of the file,
//! an import slot, relocation or entry point outside the image. Every refusal is an
//! [`ImageError`] naming what is wrong; nothing here panics on the file's contents.
//!
//! [`checksum`] computes the PE checksum the `/RELEASE` linker option stores.

use std::fmt;

use object::LittleEndian as LE;
use object::pe;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, ImageThunkData, PeFile64};

pub use object::pe::{
    IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE, IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY,
    IMAGE_DLLCHARACTERISTICS_NX_COMPAT, IMAGE_FILE_MACHINE_AMD64, IMAGE_FILE_RELOCS_STRIPPED,
    IMAGE_REL_BASED_ABSOLUTE, IMAGE_REL_BASED_DIR64, IMAGE_SCN_MEM_DISCARDABLE,
    IMAGE_SCN_MEM_EXECUTE, IMAGE_SCN_MEM_READ, IMAGE_SCN_MEM_WRITE, IMAGE_SUBSYSTEM_NATIVE,
};

/// Why a file is not an image this crate accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageError(pub String);

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a loadable PE32+ image: {}", self.0)
    }
}

impl std::error::Error for ImageError {}

fn err<T>(what: impl Into<String>) -> Result<T, ImageError> {
    Err(ImageError(what.into()))
}

fn read<T>(r: object::read::Result<T>, what: &str) -> Result<T, ImageError> {
    r.map_err(|e| ImageError(format!("{what}: {e}")))
}

/// A section header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// Name (up to 8 bytes, as stored).
    pub name: String,
    /// RVA.
    pub virtual_address: u32,
    /// Bytes in memory (`VirtualSize`, or the raw size when that is 0).
    pub virtual_size: u32,
    /// File offset of the raw data.
    pub raw_offset: u32,
    /// Bytes of raw data in the file (at most `virtual_size` are mapped).
    pub raw_size: u32,
    /// `IMAGE_SCN_*` flags.
    pub characteristics: u32,
}

impl Section {
    /// `IMAGE_SCN_MEM_EXECUTE`.
    #[must_use]
    pub const fn executable(&self) -> bool {
        self.characteristics & IMAGE_SCN_MEM_EXECUTE != 0
    }

    /// `IMAGE_SCN_MEM_WRITE`.
    #[must_use]
    pub const fn writable(&self) -> bool {
        self.characteristics & IMAGE_SCN_MEM_WRITE != 0
    }

    /// Whether `rva..rva + len` lies inside the section's memory.
    #[must_use]
    pub fn contains(&self, rva: u32, len: u32) -> bool {
        let end = u64::from(self.virtual_address) + u64::from(self.virtual_size);
        rva >= self.virtual_address && u64::from(rva) + u64::from(len) <= end
    }
}

/// What an import names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Symbol {
    /// By name (the hint is ignored, as the Windows loader may).
    Name(String),
    /// By ordinal.
    Ordinal(u16),
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Ordinal(o) => write!(f, "#{o}"),
        }
    }
}

/// One imported function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Import {
    /// The module, as the import directory spells it.
    pub module: String,
    /// The function.
    pub symbol: Symbol,
    /// RVA of its IAT slot (8 bytes, inside a section).
    pub slot: u32,
}

/// One exported name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    /// The name.
    pub name: String,
    /// Its RVA (0 for a forwarder).
    pub rva: u32,
}

/// One base relocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Relocation {
    /// RVA of the patched value.
    pub rva: u32,
    /// `IMAGE_REL_BASED_*`.
    pub kind: u16,
}

/// A data directory entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    /// RVA.
    pub rva: u32,
    /// Size in bytes.
    pub size: u32,
}

/// A parsed image.
#[derive(Clone, Debug)]
pub struct Image<'a> {
    /// The file.
    pub data: &'a [u8],
    /// `FileHeader.Machine`.
    pub machine: u16,
    /// `FileHeader.Characteristics`.
    pub characteristics: u16,
    /// `FileHeader.TimeDateStamp`.
    pub timestamp: u32,
    /// `OptionalHeader.DllCharacteristics`.
    pub dll_characteristics: u16,
    /// `OptionalHeader.Subsystem`.
    pub subsystem: u16,
    /// `OptionalHeader.AddressOfEntryPoint`.
    pub entry: u32,
    /// `OptionalHeader.ImageBase`.
    pub image_base: u64,
    /// `OptionalHeader.SizeOfImage`.
    pub size_of_image: u32,
    /// `OptionalHeader.SizeOfHeaders`.
    pub size_of_headers: u32,
    /// `OptionalHeader.SectionAlignment`.
    pub section_alignment: u32,
    /// `OptionalHeader.CheckSum`.
    pub checksum: u32,
    /// Sections in RVA order.
    pub sections: Vec<Section>,
    /// Imports in directory order.
    pub imports: Vec<Import>,
    /// Exported names.
    pub exports: Vec<Export>,
    /// Base relocations (type `IMAGE_REL_BASED_ABSOLUTE` padding included).
    pub relocations: Vec<Relocation>,
    /// `IMAGE_DIRECTORY_ENTRY_IAT`.
    pub iat: Directory,
    /// `IMAGE_DIRECTORY_ENTRY_EXPORT`.
    pub export: Directory,
    /// `IMAGE_DIRECTORY_ENTRY_TLS`.
    pub tls: Directory,
}

impl<'a> Image<'a> {
    /// Parses and checks `data`.
    ///
    /// # Errors
    /// What makes the file unsafe to map or not a PE32+ image.
    pub fn parse(data: &'a [u8]) -> Result<Self, ImageError> {
        let file = read(PeFile64::parse(data), "headers")?;
        let nt = file.nt_headers();
        let header = nt.file_header();
        let optional = nt.optional_header();
        let size_of_image = optional.size_of_image();
        let size_of_headers = optional.size_of_headers();
        let section_alignment = optional.section_alignment();
        if size_of_image == 0 || size_of_headers == 0 || size_of_headers > size_of_image {
            return err(format!(
                "SizeOfHeaders {size_of_headers:#x} / SizeOfImage {size_of_image:#x}"
            ));
        }
        if usize::try_from(size_of_headers).map_or(true, |h| h > data.len()) {
            return err("the headers run past the end of the file");
        }
        if section_alignment == 0 || !section_alignment.is_power_of_two() {
            return err(format!("SectionAlignment {section_alignment:#x}"));
        }
        let sections = sections(&file, data, size_of_image, size_of_headers)?;
        let entry = optional.address_of_entry_point();
        if entry >= size_of_image {
            return err(format!("entry point {entry:#x} outside the image"));
        }
        let directory = |id: usize| {
            file.data_directory(id).map_or_else(Directory::default, |d| Directory {
                rva: d.virtual_address.get(LE),
                size: d.size.get(LE),
            })
        };
        let mut image = Self {
            data,
            machine: header.machine.get(LE),
            characteristics: header.characteristics.get(LE),
            timestamp: header.time_date_stamp.get(LE),
            dll_characteristics: optional.dll_characteristics(),
            subsystem: optional.subsystem(),
            entry,
            image_base: optional.image_base(),
            size_of_image,
            size_of_headers,
            section_alignment,
            checksum: optional.check_sum(),
            sections,
            imports: Vec::new(),
            exports: Vec::new(),
            relocations: Vec::new(),
            iat: directory(pe::IMAGE_DIRECTORY_ENTRY_IAT),
            export: directory(pe::IMAGE_DIRECTORY_ENTRY_EXPORT),
            tls: directory(pe::IMAGE_DIRECTORY_ENTRY_TLS),
        };
        image.imports = imports(&file)?;
        for i in &image.imports {
            if image.section_at(i.slot, 8).is_none() {
                return err(format!("IAT slot of {}!{} outside every section", i.module, i.symbol));
            }
        }
        image.exports = exports(&image)?;
        image.relocations = relocations(&file, data)?;
        for r in &image.relocations {
            if r.kind == IMAGE_REL_BASED_DIR64 && image.section_at(r.rva, 8).is_none() {
                return err(format!("relocation at {:#x} outside every section", r.rva));
            }
        }
        Ok(image)
    }

    /// The section holding `rva..rva + len`.
    #[must_use]
    pub fn section_at(&self, rva: u32, len: u32) -> Option<&Section> {
        self.sections.iter().find(|s| s.contains(rva, len))
    }

    /// The file bytes at `rva..rva + len`, if they lie in one section's raw data.
    #[must_use]
    pub fn bytes_at(&self, rva: u32, len: u32) -> Option<&'a [u8]> {
        let s = self.section_at(rva, len)?;
        let within = rva - s.virtual_address;
        if u64::from(within) + u64::from(len) > u64::from(s.raw_size.min(s.virtual_size)) {
            return None;
        }
        let start = usize::try_from(s.raw_offset).ok()?.checked_add(within as usize)?;
        self.data.get(start..start.checked_add(len as usize)?)
    }

    /// The NUL-terminated string at `rva` (at most 4096 bytes, inside one section's raw data).
    #[must_use]
    pub fn c_string_at(&self, rva: u32) -> Option<String> {
        let s = self.section_at(rva, 1)?;
        let available = (s.virtual_address + s.raw_size.min(s.virtual_size)).checked_sub(rva)?;
        let bytes = self.bytes_at(rva, available.min(4096))?;
        let end = bytes.iter().position(|b| *b == 0)?;
        Some(String::from_utf8_lossy(&bytes[..end]).into_owned())
    }

    /// The raw bytes of `section` in the file (at most its virtual size).
    #[must_use]
    pub fn raw(&self, section: &Section) -> &'a [u8] {
        let start = section.raw_offset as usize;
        let len = section.raw_size.min(section.virtual_size) as usize;
        start.checked_add(len).and_then(|end| self.data.get(start..end)).unwrap_or(&[])
    }
}

fn sections(
    file: &PeFile64<'_>,
    data: &[u8],
    size_of_image: u32,
    size_of_headers: u32,
) -> Result<Vec<Section>, ImageError> {
    let mut out: Vec<Section> = Vec::new();
    for s in file.section_table().iter() {
        let name = String::from_utf8_lossy(s.raw_name()).trim_end_matches('\0').to_owned();
        let va = s.virtual_address.get(LE);
        let raw_size = s.size_of_raw_data.get(LE);
        let virtual_size = match s.virtual_size.get(LE) {
            0 => raw_size,
            v => v,
        };
        let raw_offset = s.pointer_to_raw_data.get(LE);
        if va < size_of_headers {
            return err(format!("section {name} overlaps the headers"));
        }
        if u64::from(va) + u64::from(virtual_size) > u64::from(size_of_image) {
            return err(format!("section {name} runs past SizeOfImage"));
        }
        // All of `SizeOfRawData` must be in the file (the PE format's "size of the initialized
        // data on disk"), not only the part that is mapped: a file cut inside a section's
        // padding is still a truncated file.
        if raw_size > 0 && u64::from(raw_offset) + u64::from(raw_size) > data.len() as u64 {
            return err(format!("section {name}'s raw data runs past the end of the file"));
        }
        if let Some(prev) = out.last()
            && u64::from(prev.virtual_address) + u64::from(prev.virtual_size) > u64::from(va)
        {
            return err(format!("section {name} overlaps {} or is out of order", prev.name));
        }
        out.push(Section {
            name,
            virtual_address: va,
            virtual_size,
            raw_offset,
            raw_size,
            characteristics: s.characteristics.get(LE),
        });
    }
    if out.is_empty() {
        return err("no sections");
    }
    Ok(out)
}

fn imports(file: &PeFile64<'_>) -> Result<Vec<Import>, ImageError> {
    let mut out = Vec::new();
    let Some(table) = read(file.import_table(), "import directory")? else { return Ok(out) };
    let mut descriptors = read(table.descriptors(), "import descriptors")?;
    while let Some(d) = read(descriptors.next(), "import descriptor")? {
        let module =
            String::from_utf8_lossy(read(table.name(d.name.get(LE)), "module name")?).into_owned();
        let first_thunk = d.first_thunk.get(LE);
        // The lookup table names the imports; without one the IAT itself does (before binding).
        let lookup = match d.original_first_thunk.get(LE) {
            0 => first_thunk,
            rva => rva,
        };
        let mut thunks = read(table.thunks(lookup), "import lookup table")?;
        let mut index = 0u32;
        while let Some(thunk) = read(thunks.next::<pe::ImageNtHeaders64>(), "import thunk")? {
            let symbol = if thunk.is_ordinal() {
                Symbol::Ordinal(thunk.ordinal())
            } else {
                let (_hint, name) = read(table.hint_name(thunk.address()), "import name")?;
                Symbol::Name(String::from_utf8_lossy(name).into_owned())
            };
            let slot = index
                .checked_mul(8)
                .and_then(|o| first_thunk.checked_add(o))
                .ok_or_else(|| ImageError(format!("{module}: IAT address overflows")))?;
            out.push(Import { module: module.clone(), symbol, slot });
            index += 1;
        }
    }
    Ok(out)
}

/// Reads the export directory by hand: `object` reads it as an aligned structure, and rust-lld
/// places it at whatever offset its strings end (vsflow.sys's is at an odd address).
fn exports(image: &Image<'_>) -> Result<Vec<Export>, ImageError> {
    let dir = image.export;
    if dir.rva == 0 || dir.size == 0 {
        return Ok(Vec::new());
    }
    let u32_at = |rva: u32| -> Result<u32, ImageError> {
        image
            .bytes_at(rva, 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| ImageError(format!("export directory: no data at {rva:#x}")))
    };
    let at = |offset: u32| {
        dir.rva
            .checked_add(offset)
            .ok_or_else(|| ImageError("export directory address overflows".into()))
    };
    let functions = u32_at(at(20)?)?;
    let names = u32_at(at(24)?)?;
    let address_of_functions = u32_at(at(28)?)?;
    let address_of_names = u32_at(at(32)?)?;
    let address_of_ordinals = u32_at(at(36)?)?;
    if names > 65_536 || functions > 65_536 {
        return err(format!("export directory: {names} names, {functions} functions"));
    }
    let mut out = Vec::new();
    for i in 0..names {
        let name_rva = u32_at(address_of_names.wrapping_add(i * 4))?;
        let name = image
            .c_string_at(name_rva)
            .ok_or_else(|| ImageError(format!("export name {i} at {name_rva:#x}")))?;
        let ordinal = image
            .bytes_at(address_of_ordinals.wrapping_add(i * 2), 2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_le_bytes)
            .ok_or_else(|| ImageError(format!("export ordinal {i}")))?;
        if u32::from(ordinal) >= functions {
            return err(format!(
                "export {name}: ordinal index {ordinal} past {functions} functions"
            ));
        }
        let rva = u32_at(address_of_functions.wrapping_add(u32::from(ordinal) * 4))?;
        // An address inside the export directory is a forwarder string, not code or data.
        let forwarder = rva >= dir.rva && u64::from(rva) < u64::from(dir.rva) + u64::from(dir.size);
        out.push(Export { name, rva: if forwarder { 0 } else { rva } });
    }
    Ok(out)
}

fn relocations(file: &PeFile64<'_>, data: &[u8]) -> Result<Vec<Relocation>, ImageError> {
    let mut out = Vec::new();
    let blocks = read(
        file.data_directories().relocation_blocks(data, &file.section_table()),
        "base relocation directory",
    )?;
    let Some(mut blocks) = blocks else { return Ok(out) };
    while let Some(block) = read(blocks.next(), "base relocation block")? {
        out.extend(block.map(|r| Relocation { rva: r.virtual_address, kind: r.typ }));
    }
    Ok(out)
}

/// The PE checksum of `data`, `None` if the file is too short to have the field.
///
/// The algorithm of `CheckSumMappedFile`: the file summed as 16-bit words with the carries
/// folded back in, the `CheckSum` field taken as zero, plus the file length.
#[must_use]
pub fn checksum(data: &[u8]) -> Option<u32> {
    let e_lfanew = data.get(0x3c..0x40)?;
    let nt = u32::from_le_bytes(e_lfanew.try_into().ok()?) as usize;
    // Signature (4) + file header (20) + 64 bytes into the optional header.
    let field = nt.checked_add(4 + 20 + 64)?;
    data.get(field..field + 4)?;
    let mut sum: u64 = 0;
    for (i, chunk) in data.chunks(2).enumerate() {
        let offset = i * 2;
        if offset >= field && offset < field + 4 {
            continue;
        }
        let word = u64::from(chunk[0]) | chunk.get(1).map_or(0, |b| u64::from(*b) << 8);
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    u32::try_from(sum + data.len() as u64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_short_or_foreign_files_are_errors_not_panics() {
        assert!(Image::parse(&[]).is_err());
        assert!(Image::parse(b"MZ").is_err());
        let mut elf = vec![0x7f, b'E', b'L', b'F'];
        elf.resize(4096, 0);
        assert!(Image::parse(&elf).is_err());
        let mut seed = 0x2545_F491_4F6C_DD1D_u64;
        for len in [64usize, 512, 4096] {
            let noise: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed.to_le_bytes()[0]
                })
                .collect();
            let mut with_mz = noise.clone();
            with_mz[..2].copy_from_slice(b"MZ");
            assert!(Image::parse(&noise).is_err());
            assert!(Image::parse(&with_mz).is_err());
        }
    }

    #[test]
    fn the_checksum_sums_16_bit_words_skips_its_own_field_and_adds_the_length() {
        // e_lfanew = 0: the field is at 4 + 20 + 64 = 88.
        let mut data = vec![0u8; 96];
        data[0] = 0x01;
        data[1] = 0x02;
        data[88..92].copy_from_slice(&[0xff; 4]);
        data[94] = 0x03;
        assert_eq!(checksum(&data), Some(0x0201 + 0x0003 + 96));
        // Carries fold back into 16 bits.
        data[2..6].copy_from_slice(&[0xff, 0xff, 0x02, 0x00]);
        assert_eq!(checksum(&data), Some(((0x0201 + 0xffff + 0x0002 + 0x0003) & 0xffff) + 1 + 96));
        assert_eq!(checksum(&data[..80]), None, "too short to hold the field");
    }
}
