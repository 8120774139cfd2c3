//! Bad input to the loader is a clear error, never a crash: vsflow.sys truncated at every
//! length, corrupted header by header and byte by byte, with an import no shim implements, for
//! another machine, with a relocation type the loader does not apply. None of these images is
//! run: `Loaded::load` refuses them before any of their code could execute, or (for a
//! corruption it cannot see, in code or data) maps them without running them.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use sys_loader::{LoadError, Loaded};

fn image() -> Vec<u8> {
    let path = sys_loader::image_path();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// File offset of the PE signature.
fn nt(b: &[u8]) -> usize {
    u32_at(b, 0x3c) as usize
}

/// The optional header's offset.
fn optional(b: &[u8]) -> usize {
    nt(b) + 4 + 20
}

#[test]
fn every_truncation_is_refused_with_an_error() {
    let bytes = image();
    let lengths: Vec<usize> = (0..2048).chain((2048..bytes.len()).step_by(509)).collect();
    for len in lengths {
        match Loaded::load(&bytes[..len]) {
            Err(LoadError::Image(e)) => assert!(!e.0.is_empty()),
            Err(other) => panic!("truncated at {len}: {other}"),
            Ok(_) => panic!("truncated at {len}: loaded"),
        }
    }
}

#[test]
fn corrupted_header_fields_are_refused_by_name() {
    let bytes = image();
    let o = optional(&bytes);
    let sections =
        o + usize::from(u16::from_le_bytes([bytes[nt(&bytes) + 20], bytes[nt(&bytes) + 21]]));
    let cases: Vec<(&str, usize, u32)> = vec![
        ("e_lfanew past the end", 0x3c, 0x7fff_0000),
        ("optional header magic", o, 0x010b),
        ("SizeOfImage 0", o + 56, 0),
        ("SizeOfHeaders past the image", o + 60, 0x7fff_0000),
        ("SectionAlignment not a power of two", o + 32, 0x1001),
        ("entry point outside the image", o + 16, 0x7fff_0000),
        ("first section's size past SizeOfImage", sections + 8, 0x7fff_0000),
        ("first section's raw data past the end", sections + 20, 0x7fff_0000),
        ("import directory outside every section", o + 112 + 8, 0x7fff_0000),
        ("base relocations outside every section", o + 112 + 5 * 8, 0x7fff_0000),
    ];
    for (what, at, value) in cases {
        let mut b = bytes.clone();
        b[at..at + 4].copy_from_slice(&value.to_le_bytes()[..4]);
        match Loaded::load(&b) {
            Err(LoadError::Image(e)) => assert!(!e.0.is_empty(), "{what}"),
            Err(other) => panic!("{what}: {other}"),
            Ok(_) => panic!("{what}: loaded"),
        }
    }
}

#[test]
fn an_import_without_a_shim_fails_the_load_by_name() {
    let mut b = image();
    let at = b.windows(13).position(|w| w == b"KeBugCheckEx\0").expect("the import's name");
    b[at..at + 12].copy_from_slice(b"KeBugCheckXx");
    assert_eq!(
        Loaded::load(&b).expect_err("refused").to_string(),
        "import ntoskrnl.exe!KeBugCheckXx has no shim: the image cannot be loaded"
    );
    let mut b = image();
    let at = b.windows(11).position(|w| w == b"WDFLDR.SYS\0").expect("the module's name");
    b[at..at + 10].copy_from_slice(b"WDFLDX.SYS");
    assert!(matches!(
        Loaded::load(&b),
        Err(LoadError::NoShim { module, symbol }) if module == "WDFLDX.SYS" && symbol == "WdfVersionBind"
    ));
}

#[test]
fn another_machine_and_an_unsupported_relocation_type_are_refused() {
    let mut b = image();
    let machine = nt(&b) + 4;
    b[machine..machine + 2].copy_from_slice(&0x014c_u16.to_le_bytes());
    assert_eq!(Loaded::load(&b).expect_err("refused"), LoadError::Machine(0x014c));
    // The first entry of the first relocation block, made IMAGE_REL_BASED_HIGHLOW (3).
    let b0 = image();
    let image = sys_image::Image::parse(&b0).expect("parses");
    let reloc = image.sections.iter().find(|s| s.name == ".reloc").expect(".reloc");
    let entry = reloc.raw_offset as usize + 8;
    let mut b = b0.clone();
    let value = u16::from_le_bytes([b[entry], b[entry + 1]]);
    b[entry..entry + 2].copy_from_slice(&((value & 0x0fff) | 0x3000).to_le_bytes());
    assert!(matches!(Loaded::load(&b), Err(LoadError::Relocation { kind: 3, .. })));
}

#[test]
fn single_byte_corruption_anywhere_in_the_headers_and_tables_never_crashes_the_loader() {
    let bytes = image();
    let parsed = sys_image::Image::parse(&bytes).expect("parses");
    // The headers, and the sections that hold the loader's tables (imports, exports,
    // relocations), corrupted one byte at a time with a few values each; code and plain data
    // are not the loader's business (it never runs a corrupted image here).
    let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
    spans.push(0..parsed.size_of_headers as usize);
    for s in &parsed.sections {
        if s.name == ".rdata" || s.name == ".reloc" {
            let start = s.raw_offset as usize;
            spans.push(start..start + s.raw_size.min(s.virtual_size) as usize);
        }
    }
    let mut loaded = 0usize;
    let mut refused = 0usize;
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    for span in spans {
        for at in span.step_by(7) {
            for value in [0x00, 0xff, 0x80] {
                if bytes[at] == value {
                    continue;
                }
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let mut b = bytes.clone();
                b[at] = value ^ u8::try_from(seed & 0x01).expect("one bit");
                match Loaded::load(&b) {
                    Ok(_) => loaded += 1,
                    Err(e) => {
                        assert!(!e.to_string().is_empty());
                        refused += 1;
                    }
                }
            }
        }
    }
    assert!(refused > 0 && loaded > 0, "refused {refused}, loaded {loaded}");
}
