//! `cargo xtask sys --check`: the rules a Windows kernel image must meet that a static look at
//! vsflow.sys can decide, each with its Microsoft source, and the list of those it cannot.
//!
//! Every rule is a function of the parsed image ([`sys_image::Image`]), so the tests below feed
//! each one an image that breaks it.

use std::fmt::Write as _;

use sys_image::{
    IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE, IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY,
    IMAGE_DLLCHARACTERISTICS_NX_COMPAT, IMAGE_FILE_MACHINE_AMD64, IMAGE_FILE_RELOCS_STRIPPED,
    IMAGE_REL_BASED_ABSOLUTE, IMAGE_REL_BASED_DIR64, IMAGE_SUBSYSTEM_NATIVE, Image, Symbol,
};

use super::exports::{self, FLOOR, FORBIDDEN_MODULES, MODULES};

/// Largest file (bytes) and `SizeOfImage` the budget allows (docs/WINDOWS-VERIFICATION.md,
/// "Image checks": about 1.5 times the image when the budget was set; raised once, on
/// 2026-12-07, when issue 18's processor shards, per-processor port cache, save paths and keys
/// had grown the file from 224 KB to 340 KB; by 8 KiB at 23:20 UTC, pastcap: the save past
/// the cap planned from the tables' slots took main's 388,096 bytes to 393,728; and by 16 KiB
/// on 2026-12-08 at 01:30 UTC, pastcap: the fingerprint values kept sorted across saves took
/// main's 397,312 bytes to 406,528; fpwindow's restore window check, landed after it within it).
pub const FILE_BUDGET: usize = 408 * 1024;
/// See [`FILE_BUDGET`].
pub const IMAGE_BUDGET: u32 = 448 * 1024;
/// The sections the image may have (what rustc and the linker emit for it today). A new one
/// (a writable code section, TLS, an `INIT` section) is a change to review and to budget.
pub const SECTIONS: [&str; 5] = [".text", ".rdata", ".data", ".pdata", ".reloc"];

/// Exports a Rust KMDF driver has. rustc exports every `#[no_mangle]` item of a cdylib and
/// cannot name a symbol without exporting it (rust-lang/rust#67399): wdk-build ignores the
/// linker's LNK4216 ("Exported entry point `DriverEntry`") for that reason, and wdk-sys defines
/// the other four for every driver. Anything else is a symbol the driver leaks.
pub const ALLOWED_EXPORTS: [&str; 5] =
    ["DriverEntry", "_fltused", "__CxxFrameHandler3", "__CxxFrameHandler4", "__GSHandlerCheck_EH4"];

/// DDIs Microsoft lists as affected by memory integrity because they can return or map
/// executable memory ("Implement memory integrity compatible code", the kernel, NDIS and CLFS
/// entries). Whether a call is compatible depends on its arguments, which a static check
/// cannot see, so the image may not import them at all.
pub const HVCI_IMPACTED_DDIS: [&str; 23] = [
    "ExAllocatePool",
    "ExAllocatePoolWithQuota",
    "ExAllocatePoolWithQuotaTag",
    "ExAllocatePoolWithTag",
    "ExAllocatePoolWithTagPriority",
    "ExInitializeNPagedLookasideList",
    "ExInitializeLookasideListEx",
    "MmAllocateContiguousMemory",
    "MmAllocateContiguousMemorySpecifyCache",
    "MmAllocateContiguousMemorySpecifyCacheNode",
    "MmAllocateContiguousNodeMemory",
    "MmCopyMemory",
    "MmMapIoSpace",
    "MmMapLockedPages",
    "MmMapLockedPagesSpecifyCache",
    "MmProtectMdlSystemAddress",
    "ZwAllocateVirtualMemory",
    "ZwCreateSection",
    "ZwMapViewOfSection",
    "NtCreateSection",
    "NtMapViewOfSection",
    "ClfsCreateMarshallingArea",
    "NdisAllocateMemoryWithTagPriority",
];

/// What a static check of the image cannot see, and where it is checked instead.
pub const NOT_VISIBLE: [&str; 5] = [
    "the pool flags and pool types the driver passes (Driver Verifier code integrity 0x2000, executable pool): arguments at run time; the loader harness's ExAllocatePool2 and ExAllocateCacheAwareRundownProtection shims refuse executable ones on every path the tests run (crates/sys-loader)",
    "page protections and MDL mappings (0x2001, 0x2002): the image imports none of the DDIs that take them (rule hvci-ddis)",
    "code written at run time (\"does not use dynamic code\", \"does not modify executable system memory\"): the loader harness maps code read+execute and data without execute, so a write to code or a jump into data faults in the tests",
    "IRQL, the real pool, PatchGuard, Driver Verifier, the real KMDF and WFP: Windows only (docs/WINDOWS-VERIFICATION.md)",
    "that the WDK's import libraries name the same modules and functions as the table: the Windows workflow compares the two images' import tables",
];

/// One rule's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Rule id.
    pub rule: &'static str,
    /// The Microsoft (or toolchain) source of the rule.
    pub source: &'static str,
    /// Problems found (empty: the rule holds).
    pub problems: Vec<String>,
    /// What was seen, for the report.
    pub seen: String,
}

fn verdict(
    rule: &'static str,
    source: &'static str,
    seen: String,
    problems: Vec<String>,
) -> Verdict {
    Verdict { rule, source, problems, seen }
}

fn flag(image: &Image<'_>, bit: u16) -> bool {
    image.dll_characteristics & bit != 0
}

/// Every rule, in report order.
#[must_use]
pub fn rules(image: &Image<'_>) -> Vec<Verdict> {
    vec![
        machine(image),
        subsystem(image),
        entry_point(image),
        integrity_check(image),
        nx(image),
        dynamic_base(image),
        checksum(image),
        exports_allowed(image),
        imports_in_table(image),
        imports_floor(image),
        forbidden_modules(image),
        hvci_write_execute(image),
        hvci_alignment(image),
        hvci_iat(image),
        hvci_relocations(image),
        hvci_ddis(image),
        budget(image),
    ]
}

fn machine(image: &Image<'_>) -> Verdict {
    let ok = image.machine == IMAGE_FILE_MACHINE_AMD64;
    verdict(
        "machine",
        "PE Format (Microsoft Learn): IMAGE_FILE_MACHINE_AMD64, optional header magic 0x20b (PE32+)",
        format!("machine {:#06x}, PE32+", image.machine),
        if ok { vec![] } else { vec![format!("machine {:#06x} is not AMD64", image.machine)] },
    )
}

fn subsystem(image: &Image<'_>) -> Verdict {
    let ok = image.subsystem == IMAGE_SUBSYSTEM_NATIVE;
    verdict(
        "subsystem",
        "/SUBSYSTEM (Microsoft Learn): NATIVE is for kernel mode drivers; wdk-build /SUBSYSTEM:NATIVE /DRIVER",
        format!("subsystem {}", image.subsystem),
        if ok { vec![] } else { vec![format!("subsystem {} is not NATIVE (1)", image.subsystem)] },
    )
}

fn entry_point(image: &Image<'_>) -> Verdict {
    let mut problems = Vec::new();
    match image.section_at(image.entry, 1) {
        Some(s) if s.executable() => {}
        Some(s) => {
            problems.push(format!("entry {:#x} lies in non-executable {}", image.entry, s.name));
        }
        None => problems.push(format!("entry {:#x} lies in no section", image.entry)),
    }
    if image.entry == 0 {
        problems.push("no entry point".into());
    }
    if let Some(d) = image.exports.iter().find(|e| e.name == "DriverEntry")
        && d.rva == image.entry
    {
        problems.push("the entry point is DriverEntry: the KMDF stub (FxDriverEntry) must bind the framework first".into());
    }
    verdict(
        "entry",
        "wdk-build /ENTRY:FxDriverEntry (WindowsDriver.KernelMode.KMDF.props): the KMDF stub is the image's entry and calls DriverEntry after WdfVersionBind",
        format!("entry {:#x}", image.entry),
        problems,
    )
}

fn integrity_check(image: &Image<'_>) -> Verdict {
    let ok = flag(image, IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY);
    verdict(
        "integritycheck",
        "/INTEGRITYCHECK (Microsoft Learn): IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY, the signature is checked at load; wdk-build sets it",
        format!("DllCharacteristics {:#06x}", image.dll_characteristics),
        if ok { vec![] } else { vec!["FORCE_INTEGRITY (0x80) not set".into()] },
    )
}

fn nx(image: &Image<'_>) -> Verdict {
    let ok = flag(image, IMAGE_DLLCHARACTERISTICS_NX_COMPAT);
    verdict(
        "nx",
        "/NXCOMPAT (Microsoft Learn); memory integrity: \"opts in to NX by default\"",
        format!("DllCharacteristics {:#06x}", image.dll_characteristics),
        if ok { vec![] } else { vec!["NX_COMPAT (0x100) not set".into()] },
    )
}

fn dynamic_base(image: &Image<'_>) -> Verdict {
    let mut problems = Vec::new();
    if !flag(image, IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE) {
        problems.push("DYNAMIC_BASE (0x40) not set".into());
    }
    if image.characteristics & IMAGE_FILE_RELOCS_STRIPPED != 0 {
        problems.push("relocations stripped".into());
    }
    if !image.relocations.iter().any(|r| r.kind == IMAGE_REL_BASED_DIR64) {
        problems.push("no base relocations: the image cannot be loaded at another address".into());
    }
    verdict(
        "dynamicbase",
        "/DYNAMICBASE (Microsoft Learn): the image can be relocated, which needs its base relocations",
        format!("{} base relocations", image.relocations.len()),
        problems,
    )
}

fn checksum(image: &Image<'_>) -> Verdict {
    let computed = sys_image::checksum(image.data);
    let ok = image.checksum != 0 && computed == Some(image.checksum);
    let computed = computed.map_or_else(|| "none".to_owned(), |c| format!("{c:#x}"));
    verdict(
        "checksum",
        "/RELEASE (Microsoft Learn): \"The operating system requires the Checksum for device drivers\"",
        format!("CheckSum {:#x}, computed {computed}", image.checksum),
        if ok {
            vec![]
        } else {
            vec![format!("header CheckSum {:#x} is not the file's ({computed})", image.checksum)]
        },
    )
}

fn exports_allowed(image: &Image<'_>) -> Verdict {
    let problems = image
        .exports
        .iter()
        .filter(|e| !ALLOWED_EXPORTS.contains(&e.name.as_str()))
        .map(|e| format!("exports {}", e.name))
        .collect();
    verdict(
        "exports",
        "wdk-build ignores LNK4216 for DriverEntry (rustc exports what it names, rust-lang/rust#67399); wdk-sys defines _fltused and the C++ frame handlers; nothing else",
        image.exports.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", "),
        problems,
    )
}

fn imports_in_table(image: &Image<'_>) -> Verdict {
    let mut problems = Vec::new();
    for i in &image.imports {
        match &i.symbol {
            Symbol::Ordinal(o) => problems.push(format!("{}!#{o}: imported by ordinal", i.module)),
            Symbol::Name(n) if exports::find(&i.module, n).is_none() => {
                problems.push(format!(
                    "{}!{n} is not in the kernel-export table (xtask/src/sys/exports.rs)",
                    i.module
                ));
            }
            Symbol::Name(_) => {}
        }
    }
    let modules: Vec<&str> = MODULES.iter().map(|m| m.name).collect();
    verdict(
        "imports",
        "every import is a documented kernel export in the repository's table (module, name, first release, evidence)",
        format!("{} imports from {}", image.imports.len(), modules.join(", ")),
        problems,
    )
}

fn imports_floor(image: &Image<'_>) -> Verdict {
    imports_floor_at(image, FLOOR)
}

fn imports_floor_at(image: &Image<'_>, floor: exports::Release) -> Verdict {
    let known: Vec<&exports::Export> = image
        .imports
        .iter()
        .filter_map(|i| match &i.symbol {
            Symbol::Name(n) => exports::find(&i.module, n),
            Symbol::Ordinal(_) => None,
        })
        .collect();
    let problems = known
        .iter()
        .filter(|e| e.since > floor)
        .map(|e| {
            format!("{}!{} needs {} ({})", e.module.name, e.name, e.since.name(), e.since.ntddi())
        })
        .collect();
    let newest = known.iter().max_by_key(|e| e.since);
    verdict(
        "floor",
        "docs/INSTALL.md: Windows 11 21H2 and Windows Server 2022 (KMDF 1.33, Microsoft's KMDF version history); nothing newer than Server 2022 (NTDDI_WIN10_FE)",
        newest.map_or_else(String::new, |e| {
            format!("newest: {}!{} ({})", e.module.name, e.name, e.since.name())
        }),
        problems,
    )
}

fn forbidden_modules(image: &Image<'_>) -> Verdict {
    let mut problems = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for i in &image.imports {
        if seen.iter().any(|m| m.eq_ignore_ascii_case(&i.module)) {
            continue;
        }
        seen.push(&i.module);
        if let Some((_, why)) =
            FORBIDDEN_MODULES.iter().find(|(m, _)| m.eq_ignore_ascii_case(&i.module))
        {
            problems.push(format!("imports from {}: {why}", i.module));
        } else if !MODULES.iter().any(|m| m.name.eq_ignore_ascii_case(&i.module)) {
            problems.push(format!(
                "imports from {}, which is not a kernel module in the table",
                i.module
            ));
        }
    }
    verdict(
        "modules",
        "a kernel image imports only kernel-mode modules; a WFP callout driver uses fwpkclnt.sys, never the user-mode fwpuclnt.dll (Microsoft Learn, WFP callout drivers)",
        seen.join(", "),
        problems,
    )
}

fn hvci_write_execute(image: &Image<'_>) -> Verdict {
    let problems = image
        .sections
        .iter()
        .filter(|s| s.writable() && s.executable())
        .map(|s| format!("section {} is writable and executable", s.name))
        .collect();
    verdict(
        "hvci-wx",
        "Driver Verifier code integrity 0x2003 \"executable and writable section\"; memory integrity: \"does not use sections that are both writable and executable\"",
        image
            .sections
            .iter()
            .map(|s| {
                format!(
                    "{} {}{}",
                    s.name,
                    if s.writable() { "W" } else { "-" },
                    if s.executable() { "X" } else { "-" }
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        problems,
    )
}

fn hvci_alignment(image: &Image<'_>) -> Verdict {
    let mut problems = Vec::new();
    if !image.section_alignment.is_multiple_of(0x1000) {
        problems.push(format!(
            "SectionAlignment {:#x} is not a multiple of 0x1000",
            image.section_alignment
        ));
    }
    for s in &image.sections {
        if !s.virtual_address.is_multiple_of(0x1000) {
            problems.push(format!(
                "section {} at {:#x} is not page aligned",
                s.name, s.virtual_address
            ));
        }
    }
    verdict(
        "hvci-align",
        "Driver Verifier code integrity 0x2004 \"section that is not page aligned\"; memory integrity: \"Section alignment is a multiple of 0x1000 (PAGE_SIZE)\"",
        format!("SectionAlignment {:#x}", image.section_alignment),
        problems,
    )
}

fn hvci_iat(image: &Image<'_>) -> Verdict {
    let mut problems = Vec::new();
    if image.iat.size > 0 {
        match image.section_at(image.iat.rva, image.iat.size) {
            Some(s) if s.executable() => {
                problems.push(format!("the IAT lies in executable section {}", s.name));
            }
            Some(_) => {}
            None => problems.push("the IAT lies in no section".into()),
        }
    }
    for i in &image.imports {
        if image.section_at(i.slot, 8).is_some_and(sys_image::Section::executable) {
            problems.push(format!("the IAT slot of {}!{} is executable", i.module, i.symbol));
        }
    }
    verdict(
        "hvci-iat",
        "Driver Verifier code integrity 0x2005 \"IAT located in an executable section\"",
        image
            .section_at(image.iat.rva, image.iat.size.max(1))
            .map_or_else(String::new, |s| format!("IAT in {}", s.name)),
        problems,
    )
}

fn hvci_relocations(image: &Image<'_>) -> Verdict {
    let mut problems = Vec::new();
    for r in &image.relocations {
        if r.kind == IMAGE_REL_BASED_ABSOLUTE {
            continue;
        }
        if r.kind != IMAGE_REL_BASED_DIR64 {
            problems.push(format!("relocation type {} at {:#x}", r.kind, r.rva));
        }
        if let Some(s) = image.section_at(r.rva, 8).filter(|s| s.executable()) {
            problems
                .push(format!("relocation at {:#x} patches executable section {}", r.rva, s.name));
        }
    }
    problems.truncate(10);
    verdict(
        "hvci-reloc",
        "memory integrity: \"does not attempt to directly modify executable system memory\"; a base relocation inside code makes the loader write to code pages",
        format!("{} relocations, none in code", image.relocations.len()),
        problems,
    )
}

fn hvci_ddis(image: &Image<'_>) -> Verdict {
    let problems = image
        .imports
        .iter()
        .filter(
            |i| matches!(&i.symbol, Symbol::Name(n) if HVCI_IMPACTED_DDIS.contains(&n.as_str())),
        )
        .map(|i| {
            format!(
                "imports {}!{}, which can allocate or map executable memory",
                i.module, i.symbol
            )
        })
        .collect();
    verdict(
        "hvci-ddis",
        "\"Implement memory integrity compatible code\" (Microsoft Learn): the DDIs that may be impacted",
        "none of the listed DDIs imported".into(),
        problems,
    )
}

fn budget(image: &Image<'_>) -> Verdict {
    let mut problems = Vec::new();
    if image.data.len() > FILE_BUDGET {
        problems.push(format!("file {} bytes > budget {FILE_BUDGET}", image.data.len()));
    }
    if image.size_of_image > IMAGE_BUDGET {
        problems.push(format!("SizeOfImage {} > budget {IMAGE_BUDGET}", image.size_of_image));
    }
    for s in &image.sections {
        if !SECTIONS.contains(&s.name.as_str()) {
            problems.push(format!("section {} is not in the budget's list", s.name));
        }
    }
    let mut seen = format!("file {} bytes, SizeOfImage {}", image.data.len(), image.size_of_image);
    for s in &image.sections {
        let _ = write!(seen, ", {} {}", s.name, s.virtual_size);
    }
    verdict(
        "budget",
        "docs/WINDOWS-VERIFICATION.md, \"Image checks\": size and section budget",
        seen,
        problems,
    )
}

/// The report: one line per rule, the problems under it, then what a static check cannot see.
#[must_use]
pub fn report(verdicts: &[Verdict]) -> String {
    let mut out = String::new();
    for v in verdicts {
        let mark = if v.problems.is_empty() { "ok  " } else { "FAIL" };
        let _ = writeln!(out, "{mark} {:<15} {}", v.rule, v.seen);
        let _ = writeln!(out, "     {:<15} source: {}", "", v.source);
        for p in &v.problems {
            let _ = writeln!(out, "     {:<15} - {p}", "");
        }
    }
    let _ = writeln!(out, "not visible to a static check:");
    for n in NOT_VISIBLE {
        let _ = writeln!(out, "  - {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use sys_image::{Directory, Export, Import, Relocation, Section};

    use super::*;

    fn section(name: &str, va: u32, flags: u32) -> Section {
        Section {
            name: name.into(),
            virtual_address: va,
            virtual_size: 0x1000,
            raw_offset: 0,
            raw_size: 0,
            characteristics: flags,
        }
    }

    const X: u32 = sys_image::IMAGE_SCN_MEM_EXECUTE | sys_image::IMAGE_SCN_MEM_READ;
    const R: u32 = sys_image::IMAGE_SCN_MEM_READ;
    const W: u32 = sys_image::IMAGE_SCN_MEM_WRITE | sys_image::IMAGE_SCN_MEM_READ;

    fn import(module: &str, name: &str, slot: u32) -> Import {
        Import { module: module.into(), symbol: Symbol::Name(name.into()), slot }
    }

    /// An image that meets every rule (its bytes are not a PE file: the checksum rule is fed
    /// separately).
    fn good(data: &[u8]) -> Image<'_> {
        Image {
            data,
            machine: IMAGE_FILE_MACHINE_AMD64,
            characteristics: 0x22,
            timestamp: 0,
            dll_characteristics: 0x1e0,
            subsystem: IMAGE_SUBSYSTEM_NATIVE,
            entry: 0x1010,
            image_base: 0x1_4000_0000,
            size_of_image: 0x5000,
            size_of_headers: 0x400,
            section_alignment: 0x1000,
            checksum: 0,
            sections: vec![
                section(".text", 0x1000, X),
                section(".rdata", 0x2000, R),
                section(".data", 0x3000, W),
                section(".reloc", 0x4000, R),
            ],
            imports: vec![
                import("ntoskrnl.exe", "ExAllocatePool2", 0x2000),
                import("WDFLDR.SYS", "WdfVersionBind", 0x2008),
            ],
            exports: vec![Export { name: "DriverEntry".into(), rva: 0x1000 }],
            relocations: vec![Relocation { rva: 0x3000, kind: IMAGE_REL_BASED_DIR64 }],
            iat: Directory { rva: 0x2000, size: 16 },
            export: Directory::default(),
            tls: Directory::default(),
        }
    }

    fn failing(image: &Image<'_>) -> Vec<&'static str> {
        rules(image).into_iter().filter(|v| !v.problems.is_empty()).map(|v| v.rule).collect()
    }

    #[test]
    fn a_conforming_image_fails_only_the_checksum_rule_which_needs_real_bytes() {
        let data = [0u8; 64];
        assert_eq!(failing(&good(&data)), ["checksum"]);
    }

    #[test]
    fn each_header_rule_fails_on_the_flag_or_field_it_checks() {
        let data = [0u8; 64];
        let mut i = good(&data);
        i.subsystem = 2;
        i.dll_characteristics = 0;
        i.machine = 0x14c;
        let f = failing(&i);
        for rule in ["machine", "subsystem", "integritycheck", "nx", "dynamicbase"] {
            assert!(f.contains(&rule), "{rule} not failed: {f:?}");
        }
    }

    #[test]
    fn an_entry_point_at_driver_entry_or_in_data_fails() {
        let data = [0u8; 64];
        let mut i = good(&data);
        i.entry = 0x1000;
        assert!(failing(&i).contains(&"entry"));
        i.entry = 0x3010;
        assert!(failing(&i).contains(&"entry"));
    }

    #[test]
    fn imports_outside_the_table_by_ordinal_or_from_user_mode_fail() {
        let data = [0u8; 64];
        let mut i = good(&data);
        i.imports.push(import("ntoskrnl.exe", "ExAllocatePoolWithTag", 0x2010));
        i.imports.push(import("rpcrt4.dll", "UuidCreate", 0x2018));
        i.imports.push(Import {
            module: "ndis.sys".into(),
            symbol: Symbol::Ordinal(7),
            slot: 0x2020,
        });
        let f = failing(&i);
        assert!(f.contains(&"imports"));
        assert!(f.contains(&"modules"));
        assert!(f.contains(&"hvci-ddis"), "ExAllocatePoolWithTag can allocate executable pool");
        assert!(!f.contains(&"floor"));
    }

    #[test]
    fn an_import_newer_than_the_floor_fails_and_the_newest_import_is_reported() {
        let data = [0u8; 64];
        let image = good(&data);
        let v = imports_floor(&image);
        assert!(v.problems.is_empty());
        assert!(v.seen.contains("ExAllocatePool2"), "the newest import is named: {}", v.seen);
        // ExAllocatePool2 is Windows 10 2004: under a Windows 8 floor it fails by name.
        let v = imports_floor_at(&image, exports::Release::Win8);
        assert_eq!(
            v.problems,
            ["ntoskrnl.exe!ExAllocatePool2 needs Windows 10 2004 (NTDDI_WIN10_VB)"]
        );
    }

    #[test]
    fn extra_exports_fail() {
        let data = [0u8; 64];
        let mut i = good(&data);
        i.exports.push(Export { name: "WdfDriverGlobals".into(), rva: 0x3000 });
        assert_eq!(failing(&i), ["checksum", "exports"]);
    }

    #[test]
    fn hvci_rules_fail_on_a_wx_section_an_unaligned_section_an_executable_iat_and_code_relocations()
    {
        let data = [0u8; 64];
        let mut i = good(&data);
        i.sections[2].characteristics = W | X;
        i.sections[3].virtual_address = 0x4100;
        i.iat = Directory { rva: 0x1000, size: 16 };
        i.imports[0].slot = 0x1000;
        i.relocations.push(Relocation { rva: 0x1008, kind: IMAGE_REL_BASED_DIR64 });
        i.relocations.push(Relocation { rva: 0x3008, kind: 3 });
        let f = failing(&i);
        for rule in ["hvci-wx", "hvci-align", "hvci-iat", "hvci-reloc"] {
            assert!(f.contains(&rule), "{rule} not failed: {f:?}");
        }
    }

    #[test]
    fn an_unknown_section_or_an_oversized_image_breaks_the_budget() {
        let data = vec![0u8; FILE_BUDGET + 1];
        let mut i = good(&data);
        i.sections.push(section(".tls", 0x5000, W));
        let v = budget(&i);
        assert_eq!(v.problems.len(), 2, "{:?}", v.problems);
    }

    #[test]
    fn the_report_marks_failures_and_lists_what_a_static_check_cannot_see() {
        let data = [0u8; 64];
        let r = report(&rules(&good(&data)));
        assert!(r.contains("FAIL checksum"));
        assert!(r.contains("ok   subsystem"));
        assert!(r.contains("not visible to a static check:"));
    }
}
