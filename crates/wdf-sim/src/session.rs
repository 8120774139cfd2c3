//! The test harness: loads the driver image (`DriverEntry`), plays the I/O manager
//! (`DeviceIoControl` on the control device), the system worker threads (work items), the
//! clock (timers) and the service control manager (unload), and reports what it saw.

use std::cell::RefCell;
use std::sync::{Mutex, MutexGuard, PoisonError};

use wdk_sys::{
    DRIVER_OBJECT, NTSTATUS, PCUNICODE_STRING, PFN_WDF_WORKITEM, UNICODE_STRING, WDFDRIVER,
    WDFQUEUE, WDFREQUEST, WDFTIMER,
};

use crate::etw::EtwEvent;
use crate::framework::{self, DISPATCH_LEVEL, Framework, Kind, PASSIVE_LEVEL, RegValue, Request};
use crate::status;
use crate::violation::Violation;

/// `DriverEntry`'s type as driver/ exports it.
pub type DriverEntry = unsafe extern "system" fn(&mut DRIVER_OBJECT, PCUNICODE_STRING) -> NTSTATUS;

/// One driver image per process, as one kernel loads one image of a service: sessions
/// serialize.
static SERIAL: Mutex<()> = Mutex::new(());

/// The registry path the service control manager passes (`\Registry\Machine\...\vsflow`).
const REGISTRY_PATH: &str = "\\REGISTRY\\MACHINE\\SYSTEM\\ControlSet001\\Services\\vsflow";

/// The result of an IOCTL as the caller of `DeviceIoControl` sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ioctl {
    /// Completed: status, `Information`, and the bytes copied back (`Information` bytes of the
    /// system buffer on success, none on failure).
    Completed {
        /// Final status.
        status: NTSTATUS,
        /// `Information`.
        information: u64,
        /// Output bytes.
        output: Vec<u8>,
    },
    /// The driver returned from `EvtIoDeviceControl` without completing the request.
    Pending,
    /// The I/O manager or the framework failed it before the driver saw it.
    Refused(NTSTATUS),
}

/// A loaded (or loadable) driver image and the framework around it.
#[derive(Debug)]
pub struct Session {
    _serial: MutexGuard<'static, ()>,
    driver_object: RefCell<Option<Box<DRIVER_OBJECT>>>,
    registry_path: Vec<u16>,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    /// A fresh framework with an empty `Parameters` key (waits for any other session).
    #[must_use]
    pub fn new() -> Self {
        let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        *framework::lock() = Some(Framework::default());
        Self {
            _serial: serial,
            driver_object: RefCell::new(None),
            registry_path: REGISTRY_PATH.encode_utf16().collect(),
        }
    }

    /// Sets a `REG_DWORD` value under the service's `Parameters` key.
    pub fn set_parameter(&self, name: &str, value: u32) {
        Self::set_value(name, RegValue::Dword(value));
    }

    /// Sets a `REG_SZ` value under the service's `Parameters` key.
    pub fn set_parameter_string(&self, name: &str, value: &str) {
        Self::set_value(name, RegValue::String(value.to_owned()));
    }

    fn set_value(name: &str, value: RegValue) {
        framework::with(|fw| {
            let p = fw.parameters.get_or_insert_with(Vec::new);
            p.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            p.push((name.to_owned(), value));
        });
    }

    /// Removes the `Parameters` key (an install that did not create it).
    pub fn remove_parameters_key(&self) {
        framework::with(|fw| fw.parameters = None);
    }

    /// The state of the system-preferred RNG `BCryptGenRandom` draws from; the bytes the next
    /// call returns are [`Session::next_random`]'s.
    pub fn set_rng_state(&self, state: u64) {
        framework::with(|fw| fw.rng_state = state);
    }

    /// What the next 8 bytes of `BCryptGenRandom` will be for RNG state `state`, as a
    /// little-endian `u64` (the SplitMix64 step the double uses).
    #[must_use]
    pub const fn next_random(state: u64) -> u64 {
        crate::exports::splitmix64(state.wrapping_add(crate::exports::SPLITMIX_GAMMA))
    }

    /// Makes `BCryptGenRandom` fail from now on (`STATUS_UNSUCCESSFUL`).
    pub fn fail_rng(&self) {
        framework::with(|fw| fw.rng_fails = true);
    }

    /// Makes the `n`-th `ExAllocatePool2` from now fail (NULL: insufficient pool).
    pub fn fail_pool_allocation(&self, n: u64) {
        framework::with(|fw| fw.pool.fail_in = n);
    }

    /// The physical memory `MmGetPhysicalMemoryRangesEx2` reports, in bytes (0: the call
    /// fails).
    pub fn set_physical_memory(&self, bytes: u64) {
        framework::with(|fw| fw.physical_memory = bytes);
    }

    /// The build number `RtlGetVersion` reports.
    pub fn set_os_build(&self, build: u32) {
        framework::with(|fw| fw.os_build = build);
    }

    /// Calls `DriverEntry` at `PASSIVE_LEVEL` as the I/O manager does. On failure the framework
    /// deletes the WDF driver object and everything under it (`EvtDriverUnload` is not called),
    /// and whatever the driver left outside the framework is reported.
    ///
    /// # Safety
    /// `entry` is the driver's `DriverEntry`.
    pub unsafe fn driver_entry(&self, entry: DriverEntry) -> NTSTATUS {
        // SAFETY: plain data; all zeroes is a valid DRIVER_OBJECT prefix for the double.
        let mut object: Box<DRIVER_OBJECT> = Box::new(unsafe { std::mem::zeroed() });
        framework::with(|fw| {
            fw.driver_object = std::ptr::from_mut(&mut *object) as usize;
            fw.irql = PASSIVE_LEVEL;
        });
        #[allow(clippy::cast_possible_truncation, reason = "a short constant path")]
        let bytes = (self.registry_path.len() * 2) as u16;
        let path = UNICODE_STRING {
            Length: bytes,
            MaximumLength: bytes,
            Buffer: self.registry_path.as_ptr().cast_mut(),
        };
        // SAFETY: the driver's entry point with a valid driver object and registry path.
        let status = unsafe { entry(&mut object, &raw const path) };
        *self.driver_object.borrow_mut() = Some(object);
        check_irql("DriverEntry", PASSIVE_LEVEL);
        if !status::nt_success(status) {
            if let Some(d) = framework::with(|fw| fw.driver) {
                delete_tree(d);
            }
            report_leftovers("failed DriverEntry");
        }
        status
    }

    /// `DeviceIoControl` on the control device with a `METHOD_BUFFERED` code: one system buffer
    /// of `max(input, output)` bytes holding the input, presented to the default queue's
    /// `EvtIoDeviceControl` at `PASSIVE_LEVEL` if the queue's execution level is passive, else
    /// at `DISPATCH_LEVEL` (documented as `IRQL <= DISPATCH_LEVEL`: the double takes the worse).
    #[must_use]
    pub fn ioctl(&self, code: u32, input: &[u8], output_len: usize) -> Ioctl {
        let presented = framework::with(|fw| -> Result<_, NTSTATUS> {
            if code & 3 != 0 {
                // Only METHOD_BUFFERED is modelled (the driver defines no other).
                return Err(status::NOT_SUPPORTED);
            }
            let device = fw
                .objects
                .iter()
                .find_map(|(h, o)| match &o.kind {
                    Kind::Device(d) if !d.links.is_empty() => {
                        Some((*h, d.initializing, d.default_queue))
                    }
                    _ => None,
                })
                .ok_or(status::OBJECT_NAME_NOT_FOUND)?;
            // The I/O manager does not open a device object still marked DO_DEVICE_INITIALIZING.
            if device.1 {
                return Err(status::NO_SUCH_DEVICE);
            }
            let queue = device.2.ok_or(status::INVALID_DEVICE_REQUEST)?;
            let request = fw.handle();
            let Some(Kind::Queue(q)) = fw.objects.get_mut(&queue).map(|o| &mut o.kind) else {
                return Err(status::INVALID_DEVICE_REQUEST);
            };
            if q.in_flight.is_some() {
                // Sequential dispatch: the next request waits for the previous completion.
                return Err(status::INVALID_DEVICE_STATE);
            }
            q.in_flight = Some(request);
            let (func, passive) = (q.device_control, q.passive);
            let mut buffer = vec![0u8; input.len().max(output_len)];
            buffer[..input.len()].copy_from_slice(input);
            fw.requests.insert(
                request,
                Request {
                    queue,
                    code,
                    buffer,
                    input_len: input.len(),
                    output_len,
                    completed: None,
                },
            );
            fw.irql = if passive { PASSIVE_LEVEL } else { DISPATCH_LEVEL };
            Ok((queue, request, func))
        });
        let (queue, request, func) = match presented {
            Ok(p) => p,
            Err(s) => return Ioctl::Refused(s),
        };
        let Some(f) = func else {
            framework::with(|fw| fw.irql = PASSIVE_LEVEL);
            return Ioctl::Refused(status::INVALID_DEVICE_REQUEST);
        };
        let level = framework::with(|fw| fw.irql);
        // SAFETY: the driver's callback with the queue and request the framework presents.
        unsafe { f(queue as WDFQUEUE, request as WDFREQUEST, output_len, input.len(), code) };
        check_irql("EvtIoDeviceControl", level);
        framework::with(|fw| {
            let r = fw.requests.get(&request);
            match r.and_then(|r| r.completed.map(|c| (c, r))) {
                None => Ioctl::Pending,
                Some(((status, information), r)) => {
                    let copied = if status::nt_success(status) {
                        usize::try_from(information).unwrap_or(usize::MAX).min(r.output_len)
                    } else {
                        0
                    };
                    Ioctl::Completed { status, information, output: r.buffer[..copied].to_vec() }
                }
            }
        })
    }

    /// Runs every queued work item at `PASSIVE_LEVEL` (a system worker thread), including items
    /// queued by the callbacks themselves; returns how many callbacks ran.
    pub fn run_work_items(&self) -> usize {
        let mut runs = 0;
        for _ in 0..10_000 {
            let next = framework::with(|fw| {
                fw.objects.iter_mut().find_map(|(h, o)| match &mut o.kind {
                    Kind::WorkItem(w) if w.queued => {
                        w.queued = false;
                        Some((*h, w.func))
                    }
                    _ => None,
                })
            });
            let Some((h, f)) = next else { break };
            run_work_item(h, f);
            runs += 1;
        }
        runs
    }

    /// Advances interrupt time by `ticks` (100 ns), firing each timer that falls due, in order,
    /// at `DISPATCH_LEVEL` (a DPC), or `PASSIVE_LEVEL` for a passive one-shot timer; periodic
    /// timers are re-queued `Period` ms after their due time. Returns how many callbacks ran.
    pub fn advance(&self, ticks: u64) -> usize {
        let target = framework::with(|fw| fw.clock.saturating_add(ticks));
        let mut fired = 0;
        for _ in 0..1_000_000 {
            let next = framework::with(|fw| {
                let due = fw
                    .objects
                    .iter()
                    .filter_map(|(h, o)| match &o.kind {
                        Kind::Timer(t) => t.due.filter(|d| *d <= target).map(|d| (d, *h)),
                        _ => None,
                    })
                    .min();
                let Some((due, h)) = due else {
                    fw.clock = target;
                    return None;
                };
                fw.clock = fw.clock.max(due);
                let Some(Kind::Timer(t)) = fw.objects.get_mut(&h).map(|o| &mut o.kind) else {
                    return None;
                };
                t.due = (t.period_ms > 0).then(|| due + u64::from(t.period_ms) * 10_000);
                let (f, passive) = (t.func, t.passive);
                let level = if passive { PASSIVE_LEVEL } else { DISPATCH_LEVEL };
                fw.irql = level;
                fw.running_timer = Some(h);
                Some((h, f, level))
            });
            let Some((h, f, level)) = next else { break };
            if let Some(f) = f {
                // SAFETY: the driver's timer callback with its timer.
                unsafe { f(h as WDFTIMER) };
            }
            framework::with(|fw| fw.running_timer = None);
            check_irql("EvtTimerFunc", level);
            fired += 1;
        }
        fired
    }

    /// Stops the service: `EvtDriverUnload` at `PASSIVE_LEVEL`, then the framework deletes the
    /// WDF driver object and its tree; whatever the driver left is reported.
    ///
    /// # Errors
    /// The driver cannot be unloaded (not loaded, or no `EvtDriverUnload`: a non-PnP KMDF driver
    /// without one has no unload routine, and the service cannot stop).
    pub fn unload(&self) -> Result<(), &'static str> {
        let (driver, unload) = framework::with(|fw| {
            let d = fw.driver.ok_or("no WDF driver")?;
            match fw.objects.get(&d).map(|o| &o.kind) {
                Some(Kind::Driver { unload: Some(u) }) => Ok((d, *u)),
                _ => Err("no EvtDriverUnload: the service cannot stop"),
            }
        })?;
        framework::with(|fw| {
            fw.calls.push("EvtDriverUnload");
            fw.irql = PASSIVE_LEVEL;
        });
        // SAFETY: the driver's unload callback with its WDFDRIVER.
        unsafe { unload(driver as WDFDRIVER) };
        check_irql("EvtDriverUnload", PASSIVE_LEVEL);
        delete_tree(driver);
        report_leftovers("unload");
        Ok(())
    }
}

/// A callback returns at the IRQL it was called at, holding no lock.
fn check_irql(what: &'static str, level: u8) {
    framework::with(|fw| {
        if fw.irql != level {
            let irql = fw.irql;
            fw.violate(Violation::CallbackReturned {
                what: format!("{what} returned at IRQL {irql}, called at {level}"),
            });
        }
        fw.irql = PASSIVE_LEVEL;
        fw.rw_locks.retain(|_, (shared, exclusive)| *shared > 0 || *exclusive);
        if !fw.rw_locks.is_empty() {
            fw.violate(Violation::CallbackReturned {
                what: format!("{what} returned holding an EX_SPIN_LOCK"),
            });
            fw.rw_locks.clear();
        }
        if !fw.held_locks.is_empty() {
            let n = fw.held_locks.len();
            fw.violate(Violation::CallbackReturned {
                what: format!("{what} returned holding {n} spin lock(s)"),
            });
            fw.held_locks.clear();
        }
    });
}

/// Reports what the driver left outside the framework's own tree.
fn report_leftovers(when: &str) {
    framework::with(|fw| {
        let mut left = Vec::new();
        for (name, _) in &fw.etw.registered {
            left.push(format!("ETW provider {name} still registered after {when}"));
        }
        if !fw.rundowns.is_empty() {
            left.push(format!(
                "{} rundown protection(s) never freed after {when}",
                fw.rundowns.len()
            ));
        }
        if !fw.inits.is_empty() {
            left.push(format!("{} WDFDEVICE_INIT never freed after {when}", fw.inits.len()));
        }
        for leak in fw.pool.leaks() {
            left.push(format!("{leak} never freed after {when}"));
        }
        for (h, r) in &fw.requests {
            if r.completed.is_none() {
                left.push(format!("request {h:#x} (IOCTL {:#x}) never completed", r.code));
            }
        }
        for v in left {
            fw.violate(Violation::LeftAtUnload { what: v });
        }
    });
}

impl Session {
    /// Misuses seen so far.
    #[must_use]
    pub fn violations(&self) -> Vec<Violation> {
        framework::with(|fw| fw.violations.clone())
    }

    /// Every DDI called so far, in order.
    #[must_use]
    pub fn calls(&self) -> Vec<&'static str> {
        framework::with(|fw| fw.calls.clone())
    }

    /// ETW events written so far.
    #[must_use]
    pub fn etw_events(&self) -> Vec<EtwEvent> {
        framework::with(|fw| fw.etw.events.clone())
    }

    /// Registered ETW providers (name, GUID bytes).
    #[must_use]
    pub fn etw_providers(&self) -> Vec<(&'static str, [u8; 16])> {
        framework::with(|fw| fw.etw.registered.clone())
    }

    /// `DbgPrintEx` output so far: component id, level, text.
    #[must_use]
    pub fn debug_output(&self) -> Vec<(u32, u32, String)> {
        framework::with(|fw| fw.debug_output.clone())
    }

    /// Live pool allocations: address, bytes, tag.
    #[must_use]
    pub fn pool_live(&self) -> Vec<(usize, usize, u32)> {
        framework::with(|fw| fw.pool.live().into_iter().map(|(a, b)| (a, b.size, b.tag)).collect())
    }

    /// Pool allocations made so far.
    #[must_use]
    pub fn pool_allocations(&self) -> u64 {
        framework::with(|fw| fw.pool.allocations)
    }

    /// Live WDF objects by type name.
    #[must_use]
    pub fn live_objects(&self) -> Vec<&'static str> {
        framework::with(|fw| fw.objects.values().map(|o| o.kind.name()).collect())
    }

    /// The control device's name, SDDL, symbolic links and whether it is still initializing.
    #[must_use]
    pub fn control_device(&self) -> Option<(String, String, Vec<String>, bool)> {
        framework::with(|fw| {
            fw.objects.values().find_map(|o| match &o.kind {
                Kind::Device(d) => Some((
                    d.name.clone().unwrap_or_default(),
                    d.sddl.clone(),
                    d.links.clone(),
                    d.initializing,
                )),
                _ => None,
            })
        })
    }

    /// The control device's `WDFDEVICE` handle.
    #[must_use]
    pub fn device_handle(&self) -> Option<usize> {
        framework::with(|fw| {
            fw.objects.iter().find_map(|(h, o)| matches!(o.kind, Kind::Device(_)).then_some(*h))
        })
    }

    /// Timers: (period ms, due time) for each live timer.
    #[must_use]
    pub fn timers(&self) -> Vec<(u32, Option<u64>)> {
        framework::with(|fw| {
            fw.objects
                .values()
                .filter_map(|o| match &o.kind {
                    Kind::Timer(t) => Some((t.period_ms, t.due)),
                    _ => None,
                })
                .collect()
        })
    }

    /// Interrupt time now.
    #[must_use]
    pub fn now(&self) -> u64 {
        framework::with(|fw| fw.clock)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        *framework::lock() = None;
    }
}

/// Runs work item `h`'s callback at `PASSIVE_LEVEL`.
pub(crate) fn run_work_item(h: usize, f: PFN_WDF_WORKITEM) {
    let previous = framework::with(|fw| {
        fw.irql = PASSIVE_LEVEL;
        fw.running_work_item.replace(h)
    });
    if let Some(f) = f {
        // SAFETY: the driver's work-item callback with its work item.
        unsafe { f(h as wdk_sys::WDFWORKITEM) };
    }
    framework::with(|fw| {
        fw.running_work_item = previous;
        if fw.irql != PASSIVE_LEVEL || !fw.held_locks.is_empty() {
            fw.violate(Violation::CallbackReturned {
                what: "a work item returned above PASSIVE_LEVEL or holding a spin lock".into(),
            });
            fw.irql = PASSIVE_LEVEL;
            fw.held_locks.clear();
        }
    });
}

/// Deletes `root` and its descendants, children first, as KMDF disposes a tree: a queued work
/// item is flushed (its callback runs), a timer is stopped, cleanup callbacks run, then the
/// objects are destroyed.
pub(crate) fn delete_tree(root: usize) {
    let order = framework::with(|fw| fw.subtree(root));
    for h in &order {
        let (flush, cleanup) = framework::with(|fw| {
            let Some(o) = fw.objects.get_mut(h) else { return (None, None) };
            let flush = match &mut o.kind {
                Kind::WorkItem(w) if w.queued => {
                    w.queued = false;
                    Some(w.func)
                }
                Kind::Timer(t) => {
                    t.due = None;
                    None
                }
                _ => None,
            };
            (flush, o.cleanup)
        });
        if let Some(f) = flush {
            run_work_item(*h, f);
        }
        if let Some(c) = cleanup {
            // SAFETY: the driver's cleanup callback with its object.
            unsafe { c(*h as wdk_sys::WDFOBJECT) };
        }
    }
    let destroys: Vec<_> = framework::with(|fw| {
        order
            .iter()
            .filter_map(|h| {
                let o = fw.objects.remove(h)?;
                if fw.driver == Some(*h) {
                    fw.driver = None;
                }
                o.destroy.map(|d| (*h, d))
            })
            .collect()
    });
    for (h, d) in destroys {
        // SAFETY: the driver's destroy callback with its object.
        unsafe { d(h as wdk_sys::WDFOBJECT) };
    }
}
