//! vsflow.sys, the PE image `cargo xtask sys` links for Windows, loaded into a Linux process
//! and run under the doubles.
//!
//! [`Loaded::load`] does what the Windows loader does with a driver image: parses it
//! (crates/sys-image, bounds-checked), maps `SizeOfImage` bytes, copies the headers and
//! sections, applies the base relocations for the address it got, binds every import to a
//! Win64 shim ([`shims`]) — an import without one fails the load by name, before any of the
//! image's code runs — and protects each section's pages as memory integrity would ([`map`]).
//! [`Loaded::driver_entry`] then calls the image's entry point, the KMDF stub's `FxDriverEntry`,
//! through the KMDF double's harness (crates/wdf-sim: `PASSIVE_LEVEL`, cleanup on failure), and
//! [`Loaded::unload`] calls `DriverObject->DriverUnload` as the I/O manager does when the
//! service stops. Everything in between (IOCTLs, work items, timers, vSwitch events, classify)
//! is driven through wdf-sim's `Session` and vsflow-sim's `Host` exactly as the driver tests
//! drive driver/ built for the host, except that the code they reach is the image's.
//!
//! What runs is the real machine code of the Windows image: the Win64 calling convention of
//! every call in both directions (`extern "win64"` shims; [`trampoline`]s for the callbacks the
//! image registers), the WDF function-table dispatch (`WdfFunctions_01033` indices, the bound
//! `WdfDriverGlobals`), structure layouts as compiled for `x86_64-pc-windows-msvc` (the doubles
//! check the `Size` fields and read the structures the image wrote), `__chkstk`, the image's
//! relocations, imports and entry stub. What it cannot show is listed in
//! docs/WINDOWS-VERIFICATION.md ("The image under the doubles").
//!
//! One image at a time per process: a [`Loaded`] holds wdf-sim's `Session`, which serializes.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]
#![allow(
    clippy::doc_markdown,
    reason = "the docs name Windows DDIs, structures and headers in prose throughout"
)]
#![allow(
    clippy::too_long_first_doc_paragraph,
    reason = "each shim module's first paragraph says which module it stands for and over which double"
)]

pub mod map;
pub mod shims;
pub mod trampoline;

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use sys_image::Image;
use wdf_sim::Session;
use wdk_sys::{DRIVER_OBJECT, NTSTATUS, PCUNICODE_STRING, PUNICODE_STRING};

pub use map::{LoadError, Mapping};

/// `DRIVER_INITIALIZE`, as the image implements it.
type Entry = unsafe extern "win64" fn(*mut DRIVER_OBJECT, PUNICODE_STRING) -> NTSTATUS;

/// The image's entry point while it is loaded.
static ENTRY: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The driver object the I/O manager (wdf-sim) handed to the entry point.
    static DRIVER_OBJECT_PTR: Cell<*mut DRIVER_OBJECT> = const { Cell::new(std::ptr::null_mut()) };
}

/// The entry point as wdf-sim's `Session::driver_entry` calls it: remembers the driver object
/// (the I/O manager keeps it; unload needs it) and calls the image's entry point as Win64.
unsafe extern "system" fn entry_point(
    driver_object: &mut DRIVER_OBJECT,
    registry_path: PCUNICODE_STRING,
) -> NTSTATUS {
    DRIVER_OBJECT_PTR.with(|d| d.set(std::ptr::from_mut(driver_object)));
    let entry = ENTRY.load(Ordering::Acquire);
    assert_ne!(entry, 0, "no image loaded");
    // SAFETY: the image's `AddressOfEntryPoint` in the mapping (`FxDriverEntry`), which has
    // this signature (`DRIVER_INITIALIZE`).
    let entry = unsafe { std::mem::transmute::<usize, Entry>(entry) };
    // SAFETY: the driver object and registry path the I/O manager passes, valid for the call.
    unsafe { entry(std::ptr::from_mut(driver_object), registry_path.cast_mut()) }
}

/// vsflow.sys mapped, bound and ready to run under the doubles.
#[derive(Debug)]
pub struct Loaded {
    session: Session,
    mapping: Mapping,
    entry: usize,
}

impl Loaded {
    /// Parses, maps, relocates and binds `bytes`, in a fresh KMDF double session.
    ///
    /// # Errors
    /// The image could not be loaded ([`LoadError`]: a truncated or corrupted file, an import
    /// with no shim, by name, ...). Nothing of the image has run.
    pub fn load(bytes: &[u8]) -> Result<Self, LoadError> {
        let image = Image::parse(bytes)?;
        let session = Session::new();
        shims::reset();
        let mapping = Mapping::load(&image, shims::resolve)?;
        let entry = mapping.base() + image.entry as usize;
        ENTRY.store(entry, Ordering::Release);
        DRIVER_OBJECT_PTR.with(|d| d.set(std::ptr::null_mut()));
        Ok(Self { session, mapping, entry })
    }

    /// The KMDF double's session (parameters, IOCTLs, work items, timers, what it recorded).
    #[must_use]
    pub const fn session(&self) -> &Session {
        &self.session
    }

    /// The mapping.
    #[must_use]
    pub const fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// The entry point's address.
    #[must_use]
    pub const fn entry(&self) -> usize {
        self.entry
    }

    /// The address in `DriverObject->DriverUnload`, once the entry point has run.
    #[must_use]
    pub fn driver_unload_routine(&self) -> Option<usize> {
        let object = DRIVER_OBJECT_PTR.with(Cell::get);
        // SAFETY: the driver object wdf-sim's session keeps alive (or null).
        let routine = unsafe { object.as_ref() }?.DriverUnload?;
        Some(routine as *const () as usize)
    }

    /// Starts the driver: the image's entry point (`FxDriverEntry`: `WdfVersionBind`, then the
    /// driver's `DriverEntry`) with a driver object and the service's registry path, as the I/O
    /// manager calls it (wdf-sim's `Session::driver_entry`: `PASSIVE_LEVEL`; on failure the
    /// framework's cleanup and the leftovers report).
    pub fn driver_entry(&self) -> NTSTATUS {
        ENTRY.store(self.entry, Ordering::Release);
        shims::wdfldr::with_session(&self.session, || {
            // SAFETY: `entry_point` calls the image's entry point with wdf-sim's arguments.
            unsafe { self.session.driver_entry(entry_point) }
        })
    }

    /// Stops the service as the I/O manager does: `DriverObject->DriverUnload` (the KMDF
    /// stub's, which calls the framework's routine and then `WdfVersionUnbind`).
    ///
    /// # Errors
    /// The driver has no unload routine (it cannot stop), the framework's routine never ran or
    /// failed, or the driver is still bound to the framework afterwards.
    pub fn unload(&self) -> Result<(), String> {
        let object = DRIVER_OBJECT_PTR.with(Cell::get);
        // SAFETY: the driver object wdf-sim's session keeps alive until it is dropped.
        let object_ref = unsafe { object.as_ref() }.ok_or("DriverEntry never ran")?;
        let routine = object_ref.DriverUnload.ok_or("no DriverUnload: the service cannot stop")?;
        let routine = shims::driver_unload_of(routine);
        shims::wdfldr::with_session(&self.session, || {
            // SAFETY: the unload routine the image (or the framework) put in the driver object,
            // called once at PASSIVE_LEVEL with that driver object.
            unsafe { routine(object) }
        });
        let framework = shims::wdfldr::take_unload_result()
            .ok_or("the framework's unload routine never ran (the stub did not call it)")?;
        framework.map_err(str::to_owned)?;
        if shims::wdfldr::is_bound() {
            return Err("still bound to the framework after unload (no WdfVersionUnbind)".into());
        }
        Ok(())
    }
}

/// The image the scenarios run: `VSFLOW_SYS`, which `cargo xtask sys-loader` sets to the image
/// it has just linked.
///
/// # Panics
/// If `VSFLOW_SYS` is not set (run the scenarios through `cargo xtask sys-loader`).
#[must_use]
pub fn image_path() -> PathBuf {
    std::env::var_os("VSFLOW_SYS").map(PathBuf::from).expect(
        "VSFLOW_SYS names the image to load: run `cargo xtask sys-loader` (it links vsflow.sys first)",
    )
}
