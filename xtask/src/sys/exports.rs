//! The kernel exports vsflow.sys may import: module, name, the first Windows release that has
//! them, and the evidence. `cargo xtask sys` makes the import libraries from this table (the
//! WDK's may not enter the repository) and `cargo xtask sys --check` refuses an image that
//! imports anything else, anything newer than the supported floor, or anything from a module a
//! WFP callout driver must not import.
//!
//! The release of an entry with [`Evidence::Header`] is the `NTDDI_VERSION` guard around its
//! declaration in the WDK 10.0.22621 headers: `xtask/sys/header_versions.py` re-derives it with
//! clang from the headers wdk-real assembles (docs/WINDOWS-VERIFICATION.md gives the last run).
//! Names and modules are the ones the WDK's import libraries give (ntoskrnl.lib, WdfLdr.lib,
//! fwpkclnt.lib, ndis.lib, cng.lib); the Windows workflow compares the two images' import tables.

use std::fmt::Write as _;

/// A Windows release, as the WDK headers name it (`NTDDI_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Release {
    /// Windows 2000 (`NTDDI_WIN2K`): declared with no version guard.
    Win2k,
    /// Windows XP (`NTDDI_WINXP`).
    WinXp,
    /// Windows Server 2003 SP1 (`NTDDI_WS03SP1`), the first x64 release.
    Ws03Sp1,
    /// Windows Vista (`NTDDI_VISTA`).
    Vista,
    /// Windows Vista SP1 / Server 2008 (`NTDDI_WS08`, `NTDDI_VISTASP1`).
    Ws08,
    /// Windows 7 (`NTDDI_WIN7`).
    Win7,
    /// Windows 8 (`NTDDI_WIN8`).
    Win8,
    /// Windows 8.1 (`NTDDI_WINBLUE`).
    WinBlue,
    /// Windows 10 1507 (`NTDDI_WIN10`, "Threshold").
    Win10,
    /// Windows 10 1703 (`NTDDI_WIN10_RS2`).
    Win10Rs2,
    /// Windows 10 2004 (`NTDDI_WIN10_VB`).
    Win10Vb,
    /// Windows Server 2022 (`NTDDI_WIN10_FE`, build 20348).
    Win10Fe,
}

impl Release {
    /// The `NTDDI_*` name.
    #[must_use]
    pub const fn ntddi(self) -> &'static str {
        match self {
            Self::Win2k => "NTDDI_WIN2K",
            Self::WinXp => "NTDDI_WINXP",
            Self::Ws03Sp1 => "NTDDI_WS03SP1",
            Self::Vista => "NTDDI_VISTA",
            Self::Ws08 => "NTDDI_WS08",
            Self::Win7 => "NTDDI_WIN7",
            Self::Win8 => "NTDDI_WIN8",
            Self::WinBlue => "NTDDI_WINBLUE",
            Self::Win10 => "NTDDI_WIN10",
            Self::Win10Rs2 => "NTDDI_WIN10_RS2",
            Self::Win10Vb => "NTDDI_WIN10_VB",
            Self::Win10Fe => "NTDDI_WIN10_FE",
        }
    }

    /// The release's name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Win2k => "Windows 2000",
            Self::WinXp => "Windows XP",
            Self::Ws03Sp1 => "Windows Server 2003 SP1",
            Self::Vista => "Windows Vista",
            Self::Ws08 => "Windows Vista SP1 / Server 2008",
            Self::Win7 => "Windows 7",
            Self::Win8 => "Windows 8",
            Self::WinBlue => "Windows 8.1",
            Self::Win10 => "Windows 10 1507",
            Self::Win10Rs2 => "Windows 10 1703",
            Self::Win10Vb => "Windows 10 2004",
            Self::Win10Fe => "Windows Server 2022",
        }
    }
}

/// The oldest release vsflow supports (docs/INSTALL.md: Windows 11 21H2, build 22000, and
/// Windows Server 2022, build 20348; Server 2022 is the older of the two, so nothing it lacks
/// may be imported).
pub const FLOOR: Release = Release::Win10Fe;

/// Why an entry's release is what the table says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// The header declares the function only from that `NTDDI_VERSION` (header name given).
    Header(&'static str),
    /// Not established by a header guard: the reason and the source.
    Documented(&'static str),
}

/// A module the image may import from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module {
    /// The name in the import directory, as the WDK's import library spells it.
    pub name: &'static str,
    /// The import library `cargo xtask sys` makes for it (`None`: the crate that calls it
    /// declares its imports itself, `raw-dylib`).
    pub import_lib: Option<&'static str>,
    /// What it is.
    pub what: &'static str,
}

/// The kernel: executive, kernel, runtime library, ETW, the C runtime helpers.
pub const NTOSKRNL: Module = Module {
    name: "ntoskrnl.exe",
    import_lib: Some("ntoskrnl"),
    what: "the kernel (wdk-sys's ntddk functions, tracelogging's ETW calls, wdk-panic's bugcheck, the compiler's memcpy/memset/memcmp/memmove and __chkstk)",
};
/// The KMDF loader.
pub const WDFLDR: Module = Module {
    name: "WDFLDR.SYS",
    import_lib: Some("WdfLdr"),
    what: "the KMDF loader (the entry stub's bind and unbind)",
};
/// The WFP kernel client.
pub const FWPKCLNT: Module = Module {
    name: "fwpkclnt.sys",
    import_lib: None,
    what: "the WFP kernel-mode client (fwps-sys, raw-dylib)",
};
/// NDIS.
pub const NDIS: Module =
    Module { name: "ndis.sys", import_lib: None, what: "NDIS (fwps-sys, raw-dylib)" };
/// Kernel-mode CNG.
pub const CNG: Module = Module {
    name: "cng.sys",
    import_lib: Some("cng"),
    what: "kernel-mode CNG (BCryptGenRandom: the per-boot seed, driver/src/random.rs)",
};
/// Every module the image may import from.
pub const MODULES: [Module; 5] = [NTOSKRNL, WDFLDR, FWPKCLNT, NDIS, CNG];

/// Modules a WFP callout driver must not import, and why. Any module not in [`MODULES`] is
/// refused too; these get their own reason because something in the build could name them.
pub const FORBIDDEN_MODULES: [(&str, &str); 8] = [
    (
        "rpcrt4.dll",
        "the user-mode RPC runtime: tracelogging's `Guid::new` names it with #[link]; a kernel image can only import kernel-mode modules, and the driver must not call Guid::new",
    ),
    (
        "fwpuclnt.dll",
        "the user-mode WFP API; a callout driver links fwpkclnt (Microsoft Learn, \"Callout Driver Programming Considerations\")",
    ),
    ("ntdll.dll", "user-mode native API"),
    ("kernel32.dll", "user-mode Win32 API"),
    ("advapi32.dll", "user-mode Win32 API"),
    ("ucrtbase.dll", "user-mode C runtime"),
    ("vcruntime140.dll", "user-mode C runtime"),
    ("msvcrt.dll", "user-mode C runtime"),
];

/// The import library `cargo xtask sys` makes for [`FORBIDDEN_MODULES`]' rpcrt4: it has no
/// exports, so the link succeeds (tracelogging's `#[link(name = "rpcrt4")]` needs the file)
/// and any actual use of it fails the link by name.
pub const EMPTY_IMPORT_LIBS: [(&str, &str); 1] = [("rpcrt4", "rpcrt4.dll")];

/// One export the image may import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Export {
    /// The module.
    pub module: Module,
    /// The name.
    pub name: &'static str,
    /// The first release that has it.
    pub since: Release,
    /// Why.
    pub evidence: Evidence,
}

const fn ex(module: Module, name: &'static str, since: Release, evidence: Evidence) -> Export {
    Export { module, name, since, evidence }
}

use Evidence::{Documented, Header};
use Release::{Vista, Win2k, Win7, Win8, Win10, Win10Rs2, Win10Vb, WinBlue, WinXp, Ws03Sp1, Ws08};

const NO_GUARD: Evidence = Documented(
    "declared with no NTDDI_VERSION guard in the 10.0.22621 headers (present in every release they support)",
);
const CRT: Evidence = Documented(
    "C runtime routine the compiler calls; ntoskrnl.exe exports it (WDK ntoskrnl.lib); not in the DDI reference: verify on Windows (the workflow's import-table comparison)",
);

/// The table.
pub const EXPORTS: &[Export] = &[
    ex(NTOSKRNL, "DbgPrintEx", WinXp, Header("wdm.h")),
    ex(NTOSKRNL, "EtwRegister", Vista, Header("wdm.h")),
    ex(
        NTOSKRNL,
        "EtwSetInformation",
        Win10,
        Documented(
            "wdm.h guards it with NTDDI_THRESHOLD (Windows 10 1507's codename), a macro the 10.0.22621 sdkddkver.h does not define, so the guard is always true; Windows 10 is the header's intent",
        ),
    ),
    ex(NTOSKRNL, "EtwUnregister", Vista, Header("wdm.h")),
    ex(NTOSKRNL, "EtwWriteTransfer", Vista, Header("wdm.h")),
    ex(NTOSKRNL, "ExAcquireRundownProtectionCacheAware", Ws03Sp1, Header("wdm.h")),
    ex(NTOSKRNL, "ExAllocateCacheAwareRundownProtection", Ws03Sp1, Header("wdm.h")),
    ex(NTOSKRNL, "ExFreeCacheAwareRundownProtection", Ws03Sp1, Header("wdm.h")),
    ex(NTOSKRNL, "ExReInitializeRundownProtectionCacheAware", Ws03Sp1, Header("wdm.h")),
    ex(NTOSKRNL, "ExReleaseRundownProtectionCacheAware", Ws03Sp1, Header("wdm.h")),
    ex(NTOSKRNL, "ExWaitForRundownProtectionReleaseCacheAware", Ws03Sp1, Header("wdm.h")),
    ex(NTOSKRNL, "ExAcquireSpinLockExclusive", Ws08, Header("wdm.h")),
    ex(NTOSKRNL, "ExAcquireSpinLockShared", Ws08, Header("wdm.h")),
    ex(NTOSKRNL, "ExReleaseSpinLockExclusive", Ws08, Header("wdm.h")),
    ex(NTOSKRNL, "ExReleaseSpinLockShared", Ws08, Header("wdm.h")),
    ex(NTOSKRNL, "ExAllocatePool2", Win10Vb, Header("wdm.h")),
    ex(NTOSKRNL, "ExFreePool", Win2k, NO_GUARD),
    ex(NTOSKRNL, "KeAcquireSpinLockRaiseToDpc", Win2k, NO_GUARD),
    ex(NTOSKRNL, "KeBugCheckEx", Win2k, NO_GUARD),
    ex(NTOSKRNL, "KeDelayExecutionThread", Win2k, NO_GUARD),
    ex(NTOSKRNL, "KeGetCurrentProcessorNumberEx", Win7, Header("wdm.h")),
    ex(NTOSKRNL, "KeQueryInterruptTimePrecise", WinBlue, Header("wdm.h")),
    ex(NTOSKRNL, "KeQueryMaximumProcessorCountEx", Win7, Header("wdm.h")),
    ex(NTOSKRNL, "KeReleaseSpinLock", Win2k, NO_GUARD),
    ex(NTOSKRNL, "KeReleaseSpinLockFromDpcLevel", Win2k, NO_GUARD),
    ex(NTOSKRNL, "KeTryToAcquireSpinLockAtDpcLevel", Ws03Sp1, Header("wdm.h")),
    ex(
        NTOSKRNL,
        "MmGetPhysicalMemoryRangesEx2",
        Win10Vb,
        Documented(
            "Microsoft Learn, \"MmGetPhysicalMemoryRangesEx2 function (ntddk.h)\": minimum supported client Windows 10, version 2004; the 10.0.22621 ntddk.h declares it with no NTDDI_VERSION guard (header_versions.py reads NTDDI_WIN2K), so the page is the evidence; the floor is 2004 already (ExAllocatePool2)",
        ),
    ),
    ex(NTOSKRNL, "RtlGetVersion", Win2k, NO_GUARD),
    ex(NTOSKRNL, "memcmp", Win2k, CRT),
    ex(NTOSKRNL, "memcpy", Win2k, CRT),
    ex(NTOSKRNL, "memmove", Win2k, CRT),
    ex(NTOSKRNL, "memset", Win2k, CRT),
    ex(
        NTOSKRNL,
        "__chkstk",
        Ws03Sp1,
        Documented(
            "the x64 stack-probe helper the compiler calls for frames above a page (x64 software conventions, \"Stack allocation\"); ntoskrnl.exe exports it on x64 (WDK ntoskrnl.lib), so from the first x64 release; verify on Windows (the workflow's import-table comparison)",
        ),
    ),
    ex(
        WDFLDR,
        "WdfVersionBind",
        Vista,
        Documented(
            "the KMDF loader's export (open-source KMDF fxldr.h, \"WDFLDR.SYS exported function prototype definitions\"); WDFLDR.SYS ships with KMDF 1.5 in Windows Vista",
        ),
    ),
    ex(WDFLDR, "WdfVersionUnbind", Vista, Documented("as WdfVersionBind (fxldr.h)")),
    ex(FWPKCLNT, "FwpsCalloutRegister3", Win10Rs2, Header("fwpsk.h")),
    ex(FWPKCLNT, "FwpsCalloutUnregisterById0", Vista, Header("fwpsk.h")),
    ex(FWPKCLNT, "FwpsCalloutUnregisterByKey0", Vista, Header("fwpsk.h")),
    ex(FWPKCLNT, "FwpsvSwitchEventsSubscribe0", Win8, Header("fwpsk.h")),
    ex(FWPKCLNT, "FwpsvSwitchEventsUnsubscribe0", Win8, Header("fwpsk.h")),
    ex(FWPKCLNT, "FwpsvSwitchNotifyComplete0", Win8, Header("fwpsk.h")),
    ex(FWPKCLNT, "FwpmBfeStateGet0", Vista, Header("fwpmk.h")),
    ex(FWPKCLNT, "FwpmBfeStateSubscribeChanges0", Vista, Header("fwpmk.h")),
    ex(FWPKCLNT, "FwpmBfeStateUnsubscribeChanges0", Vista, Header("fwpmk.h")),
    ex(FWPKCLNT, "FwpmCalloutAdd0", Vista, Header("fwpmk.h")),
    ex(FWPKCLNT, "FwpmCalloutDeleteByKey0", Vista, Header("fwpmk.h")),
    ex(FWPKCLNT, "FwpmEngineClose0", Vista, Header("fwpmk.h")),
    ex(FWPKCLNT, "FwpmEngineOpen0", Vista, Header("fwpmk.h")),
    ex(FWPKCLNT, "FwpmFilterAdd0", Vista, Header("fwpmk.h")),
    ex(FWPKCLNT, "FwpmFilterDeleteByKey0", Vista, Header("fwpmk.h")),
    ex(FWPKCLNT, "FwpmProviderAdd0", Vista, Header("fwpmk.h")),
    ex(FWPKCLNT, "FwpmProviderDeleteByKey0", Vista, Header("fwpmk.h")),
    ex(FWPKCLNT, "FwpmSubLayerAdd0", Vista, Header("fwpmk.h")),
    ex(FWPKCLNT, "FwpmSubLayerDeleteByKey0", Vista, Header("fwpmk.h")),
    ex(FWPKCLNT, "FwpmTransactionAbort0", Vista, Header("fwpmk.h")),
    ex(FWPKCLNT, "FwpmTransactionBegin0", Vista, Header("fwpmk.h")),
    ex(FWPKCLNT, "FwpmTransactionCommit0", Vista, Header("fwpmk.h")),
    ex(
        CNG,
        "BCryptGenRandom",
        Ws08,
        Documented(
            "bcrypt.h; BCryptGenRandom's page: kernel-mode callers link Cng.lib (Ksecdd.lib before Vista SP1), and BCRYPT_USE_SYSTEM_PREFERRED_RNG needs Vista SP1 (SP2 on Vista); the module name cng.sys is the one Cng.lib's imports are expected to give: verify on Windows (the workflow's import-table comparison)",
        ),
    ),
    ex(
        NDIS,
        "NdisGetDataBuffer",
        Vista,
        Documented(
            "NDIS 6.0 (Windows Vista) net buffer routine; nblapi.h declares it with no NTDDI_VERSION guard",
        ),
    ),
];

/// The table's entry for `module!name` (module names compare case-insensitively, as the
/// loader compares them).
#[must_use]
pub fn find(module: &str, name: &str) -> Option<&'static Export> {
    EXPORTS.iter().find(|e| e.module.name.eq_ignore_ascii_case(module) && e.name == name)
}

/// The `.def` file of `module`'s import library: `LIBRARY` and one name per export (imported
/// by name; Microsoft documents no ordinals for these exports).
#[must_use]
pub fn def_file(module: &Module) -> String {
    let mut def = format!("LIBRARY {}\nEXPORTS\n", module.name);
    for e in EXPORTS.iter().filter(|e| e.module == *module) {
        let _ = writeln!(def, "  {}", e.name);
    }
    def
}

/// The `.def` file of an import library with no exports.
#[must_use]
pub fn empty_def_file(dll: &str) -> String {
    format!("LIBRARY {dll}\nEXPORTS\n")
}

/// The table as text (`cargo xtask sys --exports`): module, name, `NTDDI_*`, evidence kind;
/// what `xtask/sys/header_versions.py` reads.
#[must_use]
pub fn listing() -> String {
    let mut out = String::new();
    for e in EXPORTS {
        let evidence = match e.evidence {
            Evidence::Header(h) => format!("header:{h}"),
            Evidence::Documented(_) => "documented".to_owned(),
        };
        let _ = writeln!(out, "{}\t{}\t{}\t{evidence}", e.module.name, e.name, e.since.ntddi());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_unique_in_a_known_module_and_not_newer_than_the_floor() {
        for (i, e) in EXPORTS.iter().enumerate() {
            assert!(MODULES.contains(&e.module), "{}", e.name);
            assert!(e.since <= FLOOR, "{} is newer than {}", e.name, FLOOR.name());
            assert!(
                EXPORTS[i + 1..].iter().all(|o| o.module != e.module || o.name != e.name),
                "{} twice",
                e.name
            );
        }
    }

    #[test]
    fn the_def_files_name_the_module_and_list_only_its_exports() {
        let def = def_file(&WDFLDR);
        assert_eq!(def, "LIBRARY WDFLDR.SYS\nEXPORTS\n  WdfVersionBind\n  WdfVersionUnbind\n");
        assert!(def_file(&NTOSKRNL).contains("\n  ExAllocatePool2\n"));
        assert!(!def_file(&NTOSKRNL).contains("Fwps"));
        assert_eq!(empty_def_file("rpcrt4.dll"), "LIBRARY rpcrt4.dll\nEXPORTS\n");
    }

    #[test]
    fn lookups_ignore_the_module_names_case_but_not_the_functions() {
        assert!(find("NTOSKRNL.EXE", "ExAllocatePool2").is_some());
        assert!(find("wdfldr.sys", "WdfVersionBind").is_some());
        assert!(find("ntoskrnl.exe", "exallocatepool2").is_none());
        assert!(find("ntoskrnl.exe", "ExAllocatePoolWithTag").is_none());
    }

    #[test]
    fn the_floor_is_server_2022() {
        assert_eq!(FLOOR.ntddi(), "NTDDI_WIN10_FE");
    }
}
