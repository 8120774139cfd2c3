//! A simulated Hyper-V host: its WFP engine, its virtual switches, and its instance of the
//! vsflow driver. Scenarios drive it event by event, as a real host would.

use std::ffi::c_void;
use std::mem::size_of;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fwps_sys::{self as sys, GUID, NTSTATUS};
use vsflow_callout::{Driver, DriverConfig};

use crate::contract::Violation;
use crate::kernel::services::{HostShared, RegValue, SimServices};
use crate::vswitch::Subscription;
use crate::vswitch::packet::SimPacket;
use crate::world::{CurrentHost, next_handle, register_host, remove_host, with_host_id};

/// The external port's id on every simulated switch.
pub const EXTERNAL_PORT: u32 = 1;

/// A port on a simulated switch.
#[derive(Clone, Debug)]
pub struct SimPort {
    /// Run-time id.
    pub id: u32,
    /// Name (UTF-16).
    pub name: Vec<u16>,
    /// `NDIS_SWITCH_PORT_TYPE`.
    pub port_type: u32,
    /// `IsValidationPort`: a port Hyper-V creates to validate a configuration, never a VM's.
    pub is_validation: bool,
    /// NIC index and its `NDIS_SWITCH_NIC_STATE`.
    pub nic: Option<(u16, u32)>,
}

impl SimPort {
    /// A port of this `NDIS_SWITCH_PORT_TYPE` with no NIC.
    #[must_use]
    pub fn new(id: u32, name: &str, port_type: u32) -> Self {
        Self { id, name: utf16(name), port_type, is_validation: false, nic: None }
    }

    /// The same port with a NIC in `state` (`NdisSwitchNicState*`).
    #[must_use]
    pub const fn with_nic(mut self, index: u16, state: u32) -> Self {
        self.nic = Some((index, state));
        self
    }

    /// The same port flagged `IsValidationPort`.
    #[must_use]
    pub const fn validation(mut self) -> Self {
        self.is_validation = true;
        self
    }
}

/// The `ElementSize` of the NIC arrays the double hands over (`NDIS_SWITCH_NIC_ARRAY`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NicElementSize {
    /// `sizeof(NDIS_SWITCH_NIC_PARAMETERS)` of NDIS 6.40+ headers (2224 bytes), revision 2.
    #[default]
    Current,
    /// `NDIS_SIZEOF_NDIS_SWITCH_NIC_PARAMETERS_REVISION_1` (2207 bytes), revision 1: the
    /// elements are packed at that stride, so fields are unaligned.
    Revision1,
    /// A later revision: this many bytes past the current size.
    Larger(usize),
}

/// Whether Windows replays `VSWITCH_CREATE` to a subscription made after switches exist.
/// No document says it does: a test chooses (WINDOWS-VERIFICATION).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExistingSwitches {
    /// The subscriber hears only of switches created later (worse for the driver).
    #[default]
    NotReplayed,
    /// The subscriber gets `VSWITCH_CREATE` with the current arrays for each existing switch.
    Replayed,
}

/// A simulated virtual switch.
#[derive(Clone, Debug)]
pub struct SimSwitch {
    /// Name (UTF-16).
    pub name: Vec<u16>,
    /// Ports.
    pub ports: Vec<SimPort>,
}

/// What happened to a packet crossing the switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketFate {
    /// Permitted at ingress and egress.
    Delivered,
    /// Blocked at ingress.
    BlockedAtIngress,
    /// Blocked at egress.
    BlockedAtEgress,
}

/// A saved blob and the provider GUID of the subscription that saved it.
pub type SavedBlob = (Option<GUID>, Vec<u8>);

/// A restore notification handed to the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreTicket {
    /// Completion context passed to the callback.
    pub context: usize,
    /// What the callback returned.
    pub returned: NTSTATUS,
    /// How long the callback took.
    pub elapsed: Duration,
}

/// The outcome of a VM's restore as Hyper-V sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmRestore {
    /// Every extension restored (or had nothing to restore).
    Succeeded,
    /// An extension has not completed its pended restore yet.
    Pending,
    /// An extension failed `OID_SWITCH_NIC_RESTORE`: the whole VM restore fails.
    Failed(NTSTATUS),
}

/// One vSwitch callback the double made.
#[derive(Clone, Copy, Debug)]
struct Notified {
    context: usize,
    status: NTSTATUS,
    elapsed: Duration,
}

/// A simulated host.
#[derive(Debug)]
pub struct Host {
    id: usize,
    shared: Arc<HostShared>,
    driver: Option<Box<Driver<SimServices>>>,
    /// `ElementSize` of the NIC arrays handed over.
    pub nic_element_size: NicElementSize,
    /// The IRQL the vSwitch callbacks run at: `DISPATCH_LEVEL` by default, the highest their
    /// pages allow (`req.irql: <= DISPATCH_LEVEL` on every `FWPS_VSWITCH_*_CALLBACK0`).
    pub vswitch_callback_irql: crate::kernel::irql::Irql,
    /// Whether a late subscriber hears of existing switches.
    pub existing_switches: ExistingSwitches,
    /// Subscriptions already told of the existing switches.
    told: Vec<u32>,
    /// The host's switches.
    pub switches: Vec<SimSwitch>,
    seed: u64,
}

fn utf16(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

fn counted(s: &[u16]) -> sys::IF_COUNTED_STRING {
    let mut c = sys::IF_COUNTED_STRING::EMPTY;
    let n = s.len().min(sys::IF_MAX_STRING_SIZE);
    c.String[..n].copy_from_slice(&s[..n]);
    c.Length = u16::try_from(2 * n).unwrap_or(0);
    c
}

/// A saved blob WFP has not copied yet ([`Host::save_held`]): the driver's address and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldBlob {
    /// The blob's address, as the save callback returned it.
    pub address: usize,
    /// Its length.
    pub len: usize,
}

fn switch_params(name: &[u16]) -> sys::NDIS_SWITCH_PARAMETERS {
    sys::NDIS_SWITCH_PARAMETERS {
        Header: sys::NDIS_OBJECT_HEADER {
            Type: sys::NDIS_OBJECT_TYPE_DEFAULT,
            Revision: 1,
            Size: u16::try_from(size_of::<sys::NDIS_SWITCH_PARAMETERS>()).unwrap_or(0),
        },
        Flags: 0,
        SwitchName: counted(name),
        SwitchFriendlyName: counted(name),
        // Callbacks may see initial values (documented).
        NumSwitchPorts: 0,
        IsActive: 0,
    }
}

fn port_params(p: &SimPort, restoring: bool) -> sys::NDIS_SWITCH_PORT_PARAMETERS {
    let mut pp = port_params_of(p, restoring);
    pp.IsValidationPort = u8::from(p.is_validation);
    pp
}

fn port_params_of(p: &SimPort, restoring: bool) -> sys::NDIS_SWITCH_PORT_PARAMETERS {
    sys::NDIS_SWITCH_PORT_PARAMETERS {
        Header: sys::NDIS_OBJECT_HEADER {
            Type: sys::NDIS_OBJECT_TYPE_DEFAULT,
            Revision: 1,
            Size: u16::try_from(size_of::<sys::NDIS_SWITCH_PORT_PARAMETERS>()).unwrap_or(0),
        },
        Flags: if restoring { sys::NDIS_SWITCH_PORT_PARAMETERS_FLAG_RESTORING_PORT } else { 0 },
        PortId: p.id,
        PortName: counted(&p.name),
        PortFriendlyName: counted(&p.name),
        PortType: p.port_type,
        IsValidationPort: 0,
        PortState: 1,
    }
}

fn nic_params(port_id: u32, index: u16, state: u32) -> Box<sys::NDIS_SWITCH_NIC_PARAMETERS> {
    // SAFETY: plain data (integers and arrays); all zeroes is valid.
    let mut n: Box<sys::NDIS_SWITCH_NIC_PARAMETERS> = Box::new(unsafe { std::mem::zeroed() });
    n.Header = sys::NDIS_OBJECT_HEADER {
        Type: sys::NDIS_OBJECT_TYPE_DEFAULT,
        Revision: 2,
        Size: u16::try_from(size_of::<sys::NDIS_SWITCH_NIC_PARAMETERS>()).unwrap_or(0),
    };
    n.PortId = port_id;
    n.NicIndex = index;
    n.NicType = 1;
    n.NicState = state;
    n.MTU = 1500;
    n
}

/// Builds an NDIS switch array of `elements` in one 8-aligned buffer, each element `stride`
/// bytes apart (the first `min(stride, size_of::<T>())` bytes of each element are copied; the
/// rest, for a larger stride, is zero).
fn ndis_array<T: Copy>(elements: &[T], stride: usize) -> Vec<u64> {
    let header = size_of::<sys::NDIS_SWITCH_PORT_ARRAY>().next_multiple_of(8);
    let bytes = header + stride * elements.len();
    let mut buf = vec![0u64; bytes.div_ceil(8).max(1)];
    let base = buf.as_mut_ptr().cast::<u8>();
    let a = sys::NDIS_SWITCH_PORT_ARRAY {
        Header: sys::NDIS_OBJECT_HEADER {
            Type: sys::NDIS_OBJECT_TYPE_DEFAULT,
            Revision: 1,
            Size: u16::try_from(size_of::<sys::NDIS_SWITCH_PORT_ARRAY>()).unwrap_or(0),
        },
        Flags: 0,
        FirstElementOffset: u16::try_from(header).unwrap_or(0),
        NumElements: u32::try_from(elements.len()).unwrap_or(0),
        ElementSize: u32::try_from(stride).unwrap_or(0),
    };
    // SAFETY: the buffer holds the header.
    unsafe { base.cast::<sys::NDIS_SWITCH_PORT_ARRAY>().write_unaligned(a) };
    let n = stride.min(size_of::<T>());
    for (i, e) in elements.iter().enumerate() {
        let dst = base.wrapping_add(header + i * stride);
        // SAFETY: 1. `dst` is inside the buffer (sized for every element at its stride);
        // 2. `n` bytes of `e` are readable; 3. the regions do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(std::ptr::from_ref(e).cast::<u8>(), dst, n) };
    }
    buf
}

impl Host {
    /// A host whose base filtering engine is running.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        crate::kernel::alloc::keep_heap_resident();
        let id = register_host();
        let shared = Arc::new(HostShared::default());
        shared.host_id.store(id, Ordering::SeqCst);
        Self {
            id,
            shared,
            driver: None,
            nic_element_size: NicElementSize::default(),
            vswitch_callback_irql: crate::kernel::irql::Irql::Dispatch,
            existing_switches: ExistingSwitches::default(),
            told: Vec::new(),
            switches: Vec::new(),
            seed,
        }
    }

    /// A host whose base filtering engine has not started yet.
    #[must_use]
    pub fn with_bfe_stopped(seed: u64) -> Self {
        let h = Self::new(seed);
        with_host_id(h.id, |s| s.engine.bfe_state = sys::FWPM_SERVICE_STOPPED);
        h
    }

    /// The simulated clock (100 ns ticks).
    #[must_use]
    pub fn now(&self) -> u64 {
        self.shared.clock.load(Ordering::SeqCst)
    }

    /// Advances the clock.
    pub fn advance(&self, ticks: u64) {
        self.shared.clock.fetch_add(ticks, Ordering::SeqCst);
    }

    /// Sets the host's physical memory the driver reads at load (`None`: unreadable); the
    /// default flow-memory budget is derived from it.
    pub fn set_physical_memory(&self, bytes: Option<u64>) {
        let v = bytes.map_or(u64::MAX, |b| b.clamp(1, u64::MAX - 1));
        self.shared.physical_memory.store(v, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sets a `REG_DWORD` under the driver service's `Parameters` key (read at load).
    pub fn set_parameter(&self, name: &str, value: u32) {
        self.set_registry_value(name, RegValue::Dword(value));
    }

    /// Sets a `REG_SZ` under the `Parameters` key (a mistyped value).
    pub fn set_parameter_string(&self, name: &str, value: &str) {
        self.set_registry_value(name, RegValue::String(value.to_owned()));
    }

    fn set_registry_value(&self, name: &str, value: RegValue) {
        let mut reg =
            self.shared.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        reg.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        reg.push((name.to_owned(), value));
    }

    /// Loads the driver as `DriverEntry` does: its configuration read from the `Parameters`
    /// key by `Driver::try_from_services` (`DriverConfig::from_services`, the code the shipped
    /// driver runs; out-of-range values refused with their defaults and an event).
    ///
    /// # Errors
    /// The status loading failed with (start failure).
    ///
    /// # Panics
    /// If a driver is already loaded (a scenario bug).
    pub fn load_driver_from_registry(&mut self) -> Result<(), NTSTATUS> {
        assert!(self.driver.is_none(), "driver already loaded");
        let services = SimServices { shared: Arc::clone(&self.shared), seed: self.seed };
        let device = std::ptr::null_mut::<c_void>().wrapping_add(0xD0);
        let driver = Driver::try_from_services(services, device)
            .map_err(vsflow_callout::CalloutError::to_ntstatus)?;
        self.start_driver(driver)
    }

    /// Runs each requested work item at once on its own thread (another CPU): it may complete
    /// a pended notification before the callback that pended it has returned.
    pub fn eager_work_items(&self, eager: bool) {
        self.shared.eager_work_items.store(eager, Ordering::SeqCst);
    }

    /// Race tests: the next clock read (`KeQueryInterruptTime`) of a work item running on its
    /// own thread (`eager_work_items`) stops the work item there, as if its CPU were preempted at
    /// that instant, until [`WorkItemPause::resume`]; meanwhile the test runs callbacks on its
    /// own thread (another CPU).
    #[must_use]
    pub fn pause_work_item_at_clock(&self) -> WorkItemPause {
        let (reached_tx, reached) = std::sync::mpsc::channel();
        let (resume, resume_rx) = std::sync::mpsc::channel();
        *self
            .shared
            .work_item_clock_pause
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(crate::kernel::services::ClockPause { reached: reached_tx, resume: resume_rx });
        WorkItemPause { reached, resume }
    }

    /// Makes deferred-work requests fail (exercises the synchronous fallback).
    pub fn refuse_deferred_work(&self, refuse: bool) {
        self.shared.refuse_deferred.store(refuse, Ordering::SeqCst);
    }

    /// Sends an IOCTL to the driver's control device, as `DeviceIoControl` with a
    /// `METHOD_BUFFERED` code would: returns the outcome and the output bytes the I/O manager
    /// would copy back (`Information` bytes on success, none on failure).
    ///
    /// # Panics
    /// If no driver is loaded.
    #[must_use]
    pub fn ioctl(
        &self,
        code: u32,
        input: &[u8],
        output_len: usize,
    ) -> (vsflow_callout::control::IoctlOutcome, Vec<u8>) {
        let _cur = CurrentHost::enter(self.id);
        let mut system_buffer = vec![0u8; output_len];
        let outcome = {
            let _drv = self.driver_code();
            self.driver().handle_ioctl(code, input, &mut system_buffer)
        };
        let copied =
            if sys::nt_success(outcome.status) { outcome.information.min(output_len) } else { 0 };
        system_buffer.truncate(copied);
        (outcome, system_buffer)
    }

    /// Sends a control request as user mode would (`DeviceIoControl` on the control device):
    /// encodes it, sends it, and returns the status and output bytes.
    ///
    /// # Panics
    /// If the request does not encode (a scenario bug) or no driver is loaded.
    #[must_use]
    pub fn control(
        &self,
        req: &vsflow_proto::request::Request<'_>,
        output_len: usize,
    ) -> (NTSTATUS, Vec<u8>) {
        let mut buf = vec![0u8; req.encoded_len()];
        req.encode(&mut buf).expect("a scenario's request encodes");
        let (o, bytes) = self.ioctl(req.ioctl().code(), &buf, output_len);
        (o.status, bytes)
    }

    /// The driver's ports, through the `ListPorts` IOCTL.
    ///
    /// # Panics
    /// If the driver's answer does not decode.
    #[must_use]
    pub fn list_ports(&self) -> Vec<vsflow_proto::response::PortInfo> {
        let (status, bytes) = self.control(&vsflow_proto::request::Request::ListPorts, 1 << 20);
        let mut v = Vec::new();
        if sys::nt_success(status) {
            vsflow_proto::response::decode_ports(&bytes, |p| v.push(p)).expect("ListPorts decodes");
        }
        v
    }

    /// Replaces the allow rules of every port the driver lists, through the `ReplaceRules`
    /// IOCTL (as an operator's tool does). Returns how many ports accepted them.
    #[must_use]
    pub fn replace_rules_everywhere(&self, rules: &[vsflow_core::policy::AllowRule]) -> usize {
        let mut space = vec![0u8; 24 * rules.len().max(1)];
        let Ok(list) = vsflow_proto::request::rule_list(rules, &mut space) else { return 0 };
        self.list_ports()
            .iter()
            .filter(|p| {
                let req = vsflow_proto::request::Request::ReplaceRules {
                    port: p.port,
                    expected_version: p.rules_version,
                    rules: list,
                };
                sys::nt_success(self.control(&req, 64).0)
            })
            .count()
    }

    /// The host's id (heap accounting and diagnostics).
    #[must_use]
    pub const fn id(&self) -> usize {
        self.id
    }

    /// Marks the calling thread as running this host's driver code (heap accounting).
    fn driver_code(&self) -> crate::kernel::alloc::Attribution {
        crate::kernel::alloc::Attribution::enter(Some(self.id))
    }

    /// Moves BFE to `state` and calls every state-change subscriber with it
    /// (`FwpmBfeStateSubscribeChanges0`).
    fn bfe_transition(&self, state: u32) {
        let subs = with_host_id(self.id, |s| {
            s.engine.bfe_state = state;
            s.engine.bfe_subscriptions.clone()
        });
        let _cur = CurrentHost::enter(self.id);
        let _drv = self.driver_code();
        for sub in subs {
            if let Some(cb) = sub.callback {
                // SAFETY: the driver's callback with the context it registered.
                unsafe { cb(sub.context as *mut c_void, state) };
            }
        }
    }

    /// Starts the base filtering engine: `START_PENDING`, then RUNNING, each reported to the
    /// subscribers.
    pub fn start_bfe(&mut self) {
        self.bfe_transition(sys::FWPM_SERVICE_START_PENDING);
        self.bfe_transition(sys::FWPM_SERVICE_RUNNING);
        self.tell_new_subscribers();
    }

    /// Stops the base filtering engine as the service manager does (`FwpmBfeStateSubscribeChanges0`
    /// remarks; `WFPSampler`'s BFE subscription): subscribers hear `STOP_PENDING` (and should close
    /// their engine handles then); BFE then goes away: every session's handle becomes invalid
    /// and the objects of dynamic sessions are deleted; subscribers hear STOPPED. Run-time
    /// callouts (fwpkclnt, in the kernel) and vSwitch subscriptions stay.
    pub fn stop_bfe(&mut self) {
        self.bfe_transition(sys::FWPM_SERVICE_STOP_PENDING);
        self.finish_bfe_stop();
    }

    /// Makes BFE begin to stop right after the driver's next successful `call` (an engine
    /// function name, e.g. `"FwpmTransactionCommit0"`) returns: subscribers hear
    /// `STOP_PENDING` then, from another thread, while the driver may be in the middle of
    /// registering. The stop completes with [`Host::finish_bfe_stop`].
    pub fn stop_bfe_after(&self, call: &'static str) {
        with_host_id(self.id, |s| s.engine.stop_after = Some(call));
    }

    /// The rest of a BFE stop whose `STOP_PENDING` was already delivered: every session's
    /// handle becomes invalid, dynamic sessions' objects are deleted, subscribers hear STOPPED.
    pub fn finish_bfe_stop(&mut self) {
        with_host_id(self.id, |s| {
            let sessions: Vec<_> = s.engine.sessions.drain(..).collect();
            for session in sessions {
                if let Some(snapshot) = session.txn {
                    s.engine.objects = *snapshot;
                }
                if session.dynamic {
                    s.engine.drop_session_objects(session.handle);
                }
                s.engine.stale_handles.push(session.handle);
            }
        });
        self.bfe_transition(sys::FWPM_SERVICE_STOPPED);
    }

    /// Loads and starts the driver (`DriverEntry`).
    ///
    /// # Errors
    /// The status `Driver::start` failed with.
    ///
    /// # Panics
    /// If a driver is already loaded (a scenario bug).
    pub fn load_driver(&mut self, config: DriverConfig) -> Result<(), NTSTATUS> {
        // One path: the configuration goes into the Parameters key and the driver reads it
        // from there, as on Windows.
        config.validate().map_err(vsflow_callout::CalloutError::to_ntstatus)?;
        for key in vsflow_callout::Key::ALL {
            self.set_parameter(key.setting().name, config.registry_value(key));
        }
        self.load_driver_from_registry()?;
        assert_eq!(self.driver().config(), &config, "the Parameters key gives the configuration");
        Ok(())
    }

    fn start_driver(&mut self, driver: Driver<SimServices>) -> Result<(), NTSTATUS> {
        let driver = Box::new(driver);
        self.shared.driver.store(std::ptr::from_ref(&*driver) as usize, Ordering::SeqCst);
        let cur = CurrentHost::enter(self.id);
        // SAFETY: the box keeps the driver at a fixed address until unload stops it.
        let r = unsafe { driver.start() };
        match r {
            Ok(()) => {
                self.driver = Some(driver);
                drop(cur);
                self.tell_new_subscribers();
                Ok(())
            }
            Err(e) => {
                self.shared.driver.store(0, Ordering::SeqCst);
                Err(e.to_ntstatus())
            }
        }
    }

    /// The loaded driver.
    ///
    /// # Panics
    /// If no driver is loaded.
    #[must_use]
    pub fn driver(&self) -> &Driver<SimServices> {
        self.driver.as_deref().expect("no driver loaded")
    }

    /// Allocations (and reallocations) this host's driver has made so far: what a callback
    /// allocates is the difference across it.
    #[must_use]
    pub fn driver_allocations(&self) -> usize {
        crate::kernel::alloc::driver_allocations(self.id)
    }

    /// Blocks this host's driver has allocated and not freed; `None` if the record overflowed.
    #[must_use]
    pub fn driver_blocks(&self) -> Option<usize> {
        crate::kernel::alloc::live_driver_blocks(self.id)
    }

    /// Stops and unloads the driver, then checks it left nothing behind.
    pub fn unload_driver(&mut self) {
        let Some(driver) = self.driver.take() else { return };
        {
            let _cur = CurrentHost::enter(self.id);
            let _drv = self.driver_code();
            driver.stop();
            SimServices { shared: Arc::clone(&self.shared), seed: self.seed }.join_workers();
            self.shared.driver.store(0, Ordering::SeqCst);
            drop(driver);
        }
        let live = crate::kernel::alloc::live_driver_blocks(self.id);
        let misused = self.primitive_misuse();
        with_host_id(self.id, |s| {
            let key = vsflow_callout::keys::PROVIDER;
            let mut left = Vec::new();
            let o = &s.engine.objects;
            let ours = |p: &Option<GUID>| *p == Some(key);
            if o.providers.iter().any(|p| p.key == key) {
                left.push("provider".to_owned());
            }
            left.extend(
                o.sublayers.iter().filter(|x| ours(&x.provider)).map(|_| "sublayer".to_owned()),
            );
            left.extend(
                o.callouts
                    .iter()
                    .filter(|x| ours(&x.provider))
                    .map(|_| "callout object".to_owned()),
            );
            left.extend(
                o.filters.iter().filter(|x| ours(&x.provider)).map(|_| "filter".to_owned()),
            );
            if !s.engine.registered.is_empty() {
                left.push(format!("{} registered callouts", s.engine.registered.len()));
            }
            if !s.engine.sessions.is_empty() {
                left.push(format!("{} open engine sessions", s.engine.sessions.len()));
            }
            if !s.engine.bfe_subscriptions.is_empty() {
                left.push("BFE subscription".to_owned());
            }
            if !s.vswitch.subscriptions.is_empty() {
                left.push("vSwitch subscription".to_owned());
            }
            for (ctx, o) in &s.vswitch.outstanding {
                left.push(format!(
                    "pended {} of port {} (context {ctx:#x})",
                    o.callback, o.port_id
                ));
            }
            let outstanding: Vec<_> = s.vswitch.outstanding.drain().collect();
            for (_, o) in outstanding {
                s.violate(Violation::NeverCompleted {
                    what: format!("{} of port {}", o.callback, o.port_id),
                });
            }
            if let Some(n) = live
                && n > 0
            {
                left.push(format!("{n} heap blocks allocated by the driver and never freed"));
            }
            for what in left {
                s.violate(Violation::Leak { what });
            }
            for what in misused {
                s.violate(Violation::KernelPrimitiveMisuse { what });
            }
        });
    }

    /// Runs `f` with this host as the thread's current host (to call WFP functions directly).
    pub fn within<R>(&self, f: impl FnOnce() -> R) -> R {
        let _cur = CurrentHost::enter(self.id);
        f()
    }

    /// Records a pended notification the driver never saw (to test the never-completed check).
    pub fn forge_outstanding(&self, context: usize, callback: &'static str, port_id: u32) {
        with_host_id(self.id, |s| {
            s.vswitch
                .outstanding
                .insert(context, crate::vswitch::Outstanding { callback, port_id });
        });
    }

    /// The engine's committed management objects (for HLK-style checks).
    #[must_use]
    pub fn engine_objects(&self) -> crate::wfp::engine::Objects {
        with_host_id(self.id, |s| s.engine.objects.clone())
    }

    /// Makes the next `n` callout unregistrations answer `STATUS_DEVICE_BUSY`, as when a
    /// classify of the callout runs on another processor at that moment.
    pub fn busy_unregisters(&self, n: u32) {
        with_host_id(self.id, |s| s.engine.busy_unregisters = n);
    }

    /// Classify calls the engine has made on this host (every callout).
    #[must_use]
    pub fn classify_invocations(&self) -> u64 {
        with_host_id(self.id, |s| s.engine.classify_calls)
    }

    /// The flags of every registered run-time callout.
    #[must_use]
    pub fn callout_flags(&self) -> Vec<u32> {
        with_host_id(self.id, |s| s.engine.registered.iter().map(|c| c.flags).collect())
    }

    /// Contract violations recorded so far.
    #[must_use]
    pub fn violations(&self) -> Vec<Violation> {
        with_host_id(self.id, |s| s.violations.clone())
    }

    /// Captured driver log lines.
    #[must_use]
    pub fn logs(&self) -> Vec<String> {
        self.shared.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Pended notifications not yet completed.
    #[must_use]
    pub fn outstanding(&self) -> usize {
        with_host_id(self.id, |s| s.vswitch.outstanding.len())
    }

    /// Completions that arrived before the callback that pended them had returned.
    #[must_use]
    pub fn early_completions(&self) -> u64 {
        with_host_id(self.id, |s| s.vswitch.early_completions)
    }

    /// The status a pended notification completed with.
    #[must_use]
    pub fn completion(&self, context: usize) -> Option<NTSTATUS> {
        with_host_id(self.id, |s| s.vswitch.completed.get(&context).copied())
    }

    /// Runs the driver's queued deferred work (its work item); returns how many runs.
    #[allow(clippy::must_use_candidate, reason = "callers run it for its effect")]
    pub fn run_deferred(&self) -> usize {
        let _cur = CurrentHost::enter(self.id);
        let _drv = self.driver_code();
        SimServices { shared: Arc::clone(&self.shared), seed: self.seed }.run_deferred()
    }

    /// Deferred-work requests waiting.
    #[must_use]
    pub fn deferred_waiting(&self) -> usize {
        self.shared.deferred_requests.load(Ordering::SeqCst)
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        with_host_id(self.id, |s| s.vswitch.subscriptions.clone())
    }

    /// [`Self::notify`] for callbacks every subscriber gets (a missing callback counts as
    /// success).
    fn notify_each(
        &self,
        callback: &'static str,
        may_pend: bool,
        port_id: u32,
        mut call: impl FnMut(&Subscription, *mut c_void) -> NTSTATUS,
    ) -> Vec<Notified> {
        self.notify(callback, may_pend, port_id, |s, c| Some(call(s, c)))
    }

    /// Calls a vSwitch callback of every subscription, tracking pended completions: the one
    /// place the double calls vSwitch callbacks. `call` returns `None` when it did not call
    /// the subscriber (no callback, or nothing for it). The callback runs at `DISPATCH_LEVEL`
    /// (the vSwitch callbacks are documented for IRQL <= `DISPATCH_LEVEL`: the double takes the
    /// higher). Its completion may arrive before it returns (a work item on another CPU): the
    /// double accepts that for a callback that then returns `STATUS_PENDING`.
    fn notify(
        &self,
        callback: &'static str,
        may_pend: bool,
        port_id: u32,
        mut call: impl FnMut(&Subscription, *mut c_void) -> Option<NTSTATUS>,
    ) -> Vec<Notified> {
        let _cur = CurrentHost::enter(self.id);
        let mut out = Vec::new();
        for sub in self.subscriptions() {
            let ctx = next_handle();
            with_host_id(self.id, |s| {
                s.vswitch.in_callback += 1;
                s.vswitch
                    .in_progress
                    .insert(ctx, crate::vswitch::Outstanding { callback, port_id });
            });
            let t = Instant::now();
            let status = {
                let _drv = self.driver_code();
                let _irql = crate::kernel::irql::Raised::to(self.vswitch_callback_irql);
                call(&sub, ctx as *mut c_void)
            };
            let elapsed = t.elapsed();
            with_host_id(self.id, |s| {
                s.vswitch.in_callback -= 1;
                s.vswitch.in_progress.remove(&ctx);
                let early = s.vswitch.early.remove(&ctx);
                let Some(status) = status else { return };
                match (status == sys::STATUS_PENDING, early) {
                    (true, _) if !may_pend => s.violate(Violation::PendingNotAllowed { callback }),
                    (true, Some(done)) => {
                        s.vswitch.completed.insert(ctx, done);
                    }
                    (true, None) => {
                        s.vswitch
                            .outstanding
                            .insert(ctx, crate::vswitch::Outstanding { callback, port_id });
                    }
                    (false, Some(_)) => s.violate(Violation::UnknownCompletion { context: ctx }),
                    (false, None) => {}
                }
                if callback == "vSwitchRuntimeStateRestoreNotifyFn"
                    && status != sys::STATUS_PENDING
                    && !sys::nt_success(status)
                {
                    // OID_SWITCH_NIC_RESTORE: an extension's failure fails the whole restore.
                    s.failed_vm_restores.push((port_id, status));
                }
            });
            if let Some(status) = status {
                out.push(Notified { context: ctx, status, elapsed });
            }
        }
        out
    }

    /// The NIC array of switch `sw`: every port's NIC with its `NicState`.
    fn nic_array(&self, sw: &SimSwitch) -> Vec<u64> {
        let nics: Vec<sys::NDIS_SWITCH_NIC_PARAMETERS> = sw
            .ports
            .iter()
            .filter_map(|p| p.nic.map(|(i, state)| *self.nic_params(p.id, i, state)))
            .collect();
        let stride = match self.nic_element_size {
            NicElementSize::Current => size_of::<sys::NDIS_SWITCH_NIC_PARAMETERS>(),
            NicElementSize::Revision1 => sys::NDIS_SIZEOF_NDIS_SWITCH_NIC_PARAMETERS_REVISION_1,
            NicElementSize::Larger(extra) => size_of::<sys::NDIS_SWITCH_NIC_PARAMETERS>() + extra,
        };
        ndis_array(&nics, stride)
    }

    /// NIC parameters as this host's NDIS revision writes them.
    fn nic_params(
        &self,
        port_id: u32,
        index: u16,
        state: u32,
    ) -> Box<sys::NDIS_SWITCH_NIC_PARAMETERS> {
        let mut n = nic_params(port_id, index, state);
        if self.nic_element_size == NicElementSize::Revision1 {
            n.Header.Revision = sys::NDIS_SWITCH_NIC_PARAMETERS_REVISION_1;
            n.Header.Size =
                u16::try_from(sys::NDIS_SIZEOF_NDIS_SWITCH_NIC_PARAMETERS_REVISION_1).unwrap_or(0);
        }
        n
    }

    /// `VSWITCH_CREATE` for switch `sw` with its current port and NIC arrays, to `subs`.
    fn announce_switch(&self, sw: &SimSwitch, only: Option<&[u32]>) {
        let params = switch_params(&sw.name);
        let port_array: Vec<sys::NDIS_SWITCH_PORT_PARAMETERS> =
            sw.ports.iter().map(|p| port_params(p, false)).collect();
        let pa = ndis_array(&port_array, size_of::<sys::NDIS_SWITCH_PORT_PARAMETERS>());
        let na = self.nic_array(sw);
        self.notify_each("vSwitchLifetimeNotifyFn", false, 0, |sub, _| {
            if only.is_some_and(|ids| !ids.contains(&sub.id)) {
                return sys::STATUS_SUCCESS;
            }
            match sub.table.vSwitchLifetimeNotifyFn {
                // SAFETY: the driver's callback with its context and valid arguments.
                Some(f) => unsafe {
                    f(
                        sub.context as *mut c_void,
                        sys::FWPS_VSWITCH_EVENT_VSWITCH_CREATE,
                        &raw const params,
                        pa.as_ptr().cast(),
                        na.as_ptr().cast(),
                    )
                },
                None => sys::STATUS_SUCCESS,
            }
        });
    }

    /// Creates a switch with its initial external port (and any more ports), as the
    /// `VSWITCH_CREATE` lifetime event reports it. Returns the switch index.
    pub fn create_switch(&mut self, name: &str, initial: &[SimPort]) -> usize {
        let mut ports = vec![
            SimPort::new(EXTERNAL_PORT, "external", sys::NdisSwitchPortTypeExternal)
                .with_nic(0, sys::NdisSwitchNicStateConnected),
        ];
        ports.extend_from_slice(initial);
        let sw = SimSwitch { name: utf16(name), ports };
        self.announce_switch(&sw, None);
        self.switches.push(sw);
        self.switches.len() - 1
    }

    /// Pauses and restarts the WFP extension on switch `sw` (what a filter-engine reorder or
    /// any FilterPause/FilterRestart of the extension does): WFP queries the switch's ports
    /// and NICs again in `FilterRestart` and reports them with `VSWITCH_CREATE`, for a switch
    /// the driver already knows (lifetime callback doc; see WINDOWS-VERIFICATION for whether
    /// a `VSWITCH_DELETE` precedes it: the double sends none).
    pub fn pause_restart(&mut self, sw: usize) {
        let s = self.switches[sw].clone();
        self.announce_switch(&s, None);
    }

    /// Replaces what switch `sw` knows of port `id` without telling the driver (a port
    /// deleted and another created under the same id while the extension was paused).
    pub fn replace_port_silently(&mut self, sw: usize, port: SimPort) {
        let ports = &mut self.switches[sw].ports;
        ports.retain(|p| p.id != port.id);
        ports.push(port);
    }

    /// Tells subscriptions made since the last call of the switches that already exist, if
    /// this host replays them ([`ExistingSwitches`]).
    fn tell_new_subscribers(&mut self) {
        let subs: Vec<u32> = self.subscriptions().iter().map(|s| s.id).collect();
        let new: Vec<u32> = subs.iter().copied().filter(|id| !self.told.contains(id)).collect();
        self.told = subs;
        if new.is_empty() || self.existing_switches == ExistingSwitches::NotReplayed {
            return;
        }
        for sw in self.switches.clone() {
            self.announce_switch(&sw, Some(&new));
        }
    }

    /// Deletes a switch (lifetime event).
    pub fn delete_switch(&mut self, sw: usize) {
        let params = switch_params(&self.switches[sw].name);
        self.notify_each("vSwitchLifetimeNotifyFn", false, 0, |sub, _| {
            match sub.table.vSwitchLifetimeNotifyFn {
                // SAFETY: as in `create_switch`.
                Some(f) => unsafe {
                    f(
                        sub.context as *mut c_void,
                        sys::FWPS_VSWITCH_EVENT_VSWITCH_DELETE,
                        &raw const params,
                        std::ptr::null(),
                        std::ptr::null(),
                    )
                },
                None => sys::STATUS_SUCCESS,
            }
        });
        self.switches[sw].ports.clear();
    }

    /// Creates a VM port; `restoring` sets `NDIS_SWITCH_PORT_PARAMETERS_FLAG_RESTORING_PORT`.
    pub fn create_port(&mut self, sw: usize, id: u32, name: &str, restoring: bool) -> NTSTATUS {
        self.create_port_as(sw, SimPort::new(id, name, sys::NdisSwitchPortTypeSynthetic), restoring)
    }

    /// Creates `port` (any type, validation or not) on switch `sw`.
    pub fn create_port_as(&mut self, sw: usize, port: SimPort, restoring: bool) -> NTSTATUS {
        let params = switch_params(&self.switches[sw].name);
        let pp = port_params(&port, restoring);
        let r = self.port_event(sys::FWPS_VSWITCH_EVENT_PORT_CREATE, &params, &pp);
        self.switches[sw].ports.push(port);
        r
    }

    fn port_event(
        &self,
        event: u32,
        params: &sys::NDIS_SWITCH_PARAMETERS,
        pp: &sys::NDIS_SWITCH_PORT_PARAMETERS,
    ) -> NTSTATUS {
        let results = self.notify_each("vSwitchPortEventNotifyFn", true, pp.PortId, |sub, ctx| {
            match sub.table.vSwitchPortEventNotifyFn {
                // SAFETY: the driver's callback with valid arguments.
                Some(f) => unsafe { f(sub.context as *mut c_void, ctx, event, params, pp) },
                None => sys::STATUS_SUCCESS,
            }
        });
        results.first().map_or(sys::STATUS_SUCCESS, |r| r.status)
    }

    /// Sends `PORT_CREATE` (`create`) or `PORT_DELETE` for `port` on switch `sw` without
    /// recording it in the host's list of the switch's ports (so it takes `&self`): for tests
    /// that raise port events on one thread while others save, restore or send packets.
    #[must_use]
    pub fn port_notification(&self, sw: usize, port: &SimPort, create: bool) -> NTSTATUS {
        let params = switch_params(&self.switches[sw].name);
        let pp = port_params(port, false);
        let event = if create {
            sys::FWPS_VSWITCH_EVENT_PORT_CREATE
        } else {
            sys::FWPS_VSWITCH_EVENT_PORT_DELETE
        };
        self.port_event(event, &params, &pp)
    }

    /// Interrupts that hold up one of this host's processors ([`crate::kernel::interrupts`]).
    #[must_use]
    pub fn interrupts(&self) -> &crate::kernel::interrupts::InterruptHold {
        &self.shared.interrupts
    }

    /// Deletes a VM port.
    pub fn delete_port(&mut self, sw: usize, id: u32) -> NTSTATUS {
        let Some(i) = self.switches[sw].ports.iter().position(|p| p.id == id) else {
            return sys::STATUS_NOT_FOUND;
        };
        let port = self.switches[sw].ports.remove(i);
        let params = switch_params(&self.switches[sw].name);
        let pp = port_params(&port, false);
        self.port_event(sys::FWPS_VSWITCH_EVENT_PORT_DELETE, &params, &pp)
    }

    /// A NIC event on a port (`INTERFACE_CREATE`, `_CONNECT`, `_DISCONNECT`, `_DELETE`).
    pub fn nic_event(&mut self, sw: usize, port_id: u32, index: u16, event: u32) -> NTSTATUS {
        let state = match event {
            sys::FWPS_VSWITCH_EVENT_INTERFACE_CREATE => 1,
            sys::FWPS_VSWITCH_EVENT_INTERFACE_CONNECT => 2,
            sys::FWPS_VSWITCH_EVENT_INTERFACE_DISCONNECT => 3,
            _ => 4,
        };
        if let Some(p) = self.switches[sw].ports.iter_mut().find(|p| p.id == port_id) {
            p.nic = (state != sys::NdisSwitchNicStateDeleted).then_some((index, state));
        }
        let params = switch_params(&self.switches[sw].name);
        let nic = self.nic_params(port_id, index, state);
        let results =
            self.notify_each("vSwitchInterfaceEventNotifyFn", true, port_id, |sub, ctx| {
                match sub.table.vSwitchInterfaceEventNotifyFn {
                    // SAFETY: the driver's callback with valid arguments.
                    Some(f) => unsafe {
                        f(
                            sub.context as *mut c_void,
                            ctx,
                            event,
                            &raw const params,
                            &raw const *nic,
                        )
                    },
                    None => sys::STATUS_SUCCESS,
                }
            });
        results.first().map_or(sys::STATUS_SUCCESS, |r| r.status)
    }

    /// A filter-engine reorder notification.
    pub fn reorder(&mut self, in_required_position: bool) -> NTSTATUS {
        let filters = sys::NDIS_ENUM_FILTERS::default();
        let results =
            self.notify_each("vSwitchFilterEngineReorderNotifyRn", false, 0, |sub, ctx| {
                match sub.table.vSwitchFilterEngineReorderNotifyRn {
                    // SAFETY: the driver's callback with valid arguments.
                    Some(f) => unsafe {
                        f(
                            sub.context as *mut c_void,
                            ctx,
                            u8::from(in_required_position),
                            &raw const filters,
                        )
                    },
                    None => sys::STATUS_SUCCESS,
                }
            });
        // A reorder pauses and restarts the extension: every switch is reported again.
        for sw in 0..self.switches.len() {
            self.pause_restart(sw);
        }
        results.first().map_or(sys::STATUS_SUCCESS, |r| r.status)
    }

    /// A port policy event (`POLICY_ADD`, `_UPDATE`, `_DELETE`).
    pub fn policy_event(&mut self, sw: usize, port_id: u32, event: u32) -> NTSTATUS {
        let params = switch_params(&self.switches[sw].name);
        let prop =
            sys::NDIS_SWITCH_PORT_PROPERTY_PARAMETERS { PortId: port_id, ..Default::default() };
        let del = sys::NDIS_SWITCH_PORT_PROPERTY_DELETE_PARAMETERS {
            PortId: port_id,
            ..Default::default()
        };
        let is_delete = event == sys::FWPS_VSWITCH_EVENT_POLICY_DELETE;
        let results = self.notify_each("vSwitchPolicyEventNotifyFn", true, port_id, |sub, ctx| {
            match sub.table.vSwitchPolicyEventNotifyFn {
                // SAFETY: the driver's callback; property pointer null on delete, delete pointer
                // only on delete (documented).
                Some(f) => unsafe {
                    f(
                        sub.context as *mut c_void,
                        ctx,
                        event,
                        &raw const params,
                        if is_delete { std::ptr::null() } else { &raw const prop },
                        if is_delete { &raw const del } else { std::ptr::null() },
                    )
                },
                None => sys::STATUS_SUCCESS,
            }
        });
        results.first().map_or(sys::STATUS_SUCCESS, |r| r.status)
    }

    /// A runtime-state save of a port whose blob WFP has not copied yet: the driver's answer
    /// as WFP holds it between the save callback's return and the OID's completion
    /// (WINDOWS-VERIFICATION 1: WFP copies it before the OID completes; when within that, the
    /// documents do not say, so the worse case for the driver: after its own timers ran).
    /// [`Host::held_blob_is_live`] tells whether WFP could still copy it then. For a port
    /// whose save writes its buffer (the no-state blob is not a heap block).
    #[must_use]
    pub fn save_held(&self, sw: usize, port_id: u32) -> HeldBlob {
        let params = switch_params(&self.switches[sw].name);
        let (data, len) = self.within(|| {
            let _driver = self.driver_code();
            self.driver().on_save(&params, port_id)
        });
        HeldBlob { address: data as usize, len }
    }

    /// Whether the block the driver handed over for `held` is still its live allocation, as
    /// WFP's later copy needs: freed (or moved by a reallocation, which frees it), a copy
    /// would read freed pool, which Driver Verifier's special pool bugchecks.
    #[must_use]
    pub fn held_blob_is_live(&self, held: &HeldBlob) -> bool {
        held.len > 0
            && crate::kernel::alloc::is_live_driver_block(self.id, held.address as *const u8)
    }

    /// Runtime-state save of a port: every subscriber's blob, copied out at once as Hyper-V
    /// copies it into the OID's buffer, tagged with the subscriber's provider GUID.
    #[must_use]
    pub fn save(&self, sw: usize, port_id: u32) -> (Vec<SavedBlob>, Duration) {
        let params = switch_params(&self.switches[sw].name);
        let mut blobs = Vec::new();
        let results = self.notify("vSwitchRuntimeStateSaveNotifyFn", false, port_id, |sub, ctx| {
            let f = sub.table.vSwitchRuntimeStateSaveNotifyFn?;
            let mut data: *mut c_void = std::ptr::null_mut();
            let mut len = 0usize;
            // SAFETY: the driver's callback with valid out-pointers.
            let status = unsafe {
                f(
                    sub.context as *mut c_void,
                    ctx,
                    sys::FWPS_VSWITCH_EVENT_RUNTIME_STATE_SAVE,
                    &raw const params,
                    port_id,
                    &raw mut data,
                    &raw mut len,
                )
            };
            // What follows is the double's memory, not the driver's.
            let _kernel = crate::kernel::alloc::Attribution::enter(None);
            let bytes = if len == 0 || data.is_null() {
                Vec::new()
            } else {
                // SAFETY: the driver returned `len` readable bytes at `data`.
                unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) }.to_vec()
            };
            let null_on_success =
                sys::nt_success(status) && status != sys::STATUS_PENDING && data.is_null();
            with_host_id(self.id, |s| {
                if null_on_success {
                    s.violate(Violation::SaveNullOnSuccess);
                }
                if len > usize::from(u16::MAX) {
                    s.violate(Violation::SaveTooLarge { len });
                }
            });
            blobs.push((sub.provider, bytes));
            Some(status)
        });
        (blobs, results.iter().map(|r| r.elapsed).sum())
    }

    /// Runtime-state restore of a port: each blob goes to the subscriber whose provider GUID
    /// matches the one it was saved under (blobs of no subscriber are dropped, as WFP does).
    /// WFP's buffer lives only for the call: the double hands a copy and poisons it after.
    #[must_use]
    pub fn restore(
        &self,
        sw: usize,
        port_id: u32,
        blobs: &[(Option<GUID>, Vec<u8>)],
    ) -> Vec<RestoreTicket> {
        let params = switch_params(&self.switches[sw].name);
        let results =
            self.notify("vSwitchRuntimeStateRestoreNotifyFn", true, port_id, |sub, ctx| {
                let f = sub.table.vSwitchRuntimeStateRestoreNotifyFn?;
                let (_, blob) = blobs.iter().find(|(p, _)| p.is_some() && *p == sub.provider)?;
                let mut buffer = {
                    let _kernel = crate::kernel::alloc::Attribution::enter(None);
                    blob.clone()
                };
                // SAFETY: the driver's callback with a valid buffer of `len` bytes.
                let status = unsafe {
                    f(
                        sub.context as *mut c_void,
                        ctx,
                        sys::FWPS_VSWITCH_EVENT_RUNTIME_STATE_RESTORE,
                        &raw const params,
                        port_id,
                        buffer.as_mut_ptr().cast(),
                        buffer.len(),
                    )
                };
                buffer.fill(0xDD);
                Some(status)
            });
        results
            .into_iter()
            .map(|r| RestoreTicket { context: r.context, returned: r.status, elapsed: r.elapsed })
            .collect()
    }

    /// The VM restores this host's extensible switch failed because an extension (vsflow)
    /// failed `OID_SWITCH_NIC_RESTORE` ("if an extension fails the request, the whole restore
    /// fails"): port id and status.
    #[must_use]
    pub fn failed_vm_restores(&self) -> Vec<(u32, NTSTATUS)> {
        with_host_id(self.id, |s| s.failed_vm_restores.clone())
    }

    /// How Hyper-V sees the restore of one port's state from the callbacks' tickets: failed if
    /// any extension failed it, pending while any has not completed, else succeeded.
    #[must_use]
    pub fn vm_restore(&self, tickets: &[RestoreTicket]) -> VmRestore {
        let mut pending = false;
        for t in tickets {
            match self.restore_status(t) {
                None => pending = true,
                Some(s) if !sys::nt_success(s) => return VmRestore::Failed(s),
                Some(_) => {}
            }
        }
        if pending { VmRestore::Pending } else { VmRestore::Succeeded }
    }

    /// The final status of a restore: the callback's, or its completion's once completed.
    #[must_use]
    pub fn restore_status(&self, t: &RestoreTicket) -> Option<NTSTATUS> {
        if t.returned == sys::STATUS_PENDING {
            self.completion(t.context)
        } else {
            Some(t.returned)
        }
    }

    /// Sends `p` across switch `sw` from port `src` to port `dst`: classified at the ingress
    /// transport layer, then at egress.
    pub fn transmit(&mut self, sw: usize, src: u32, dst: u32, p: &SimPacket) -> PacketFate {
        crate::vswitch::wire::transmit(self.id, &self.switches[sw].name, src, dst, p)
    }

    /// A handle other threads can send packets with while this host runs events (real
    /// concurrency: classify on several threads).
    #[must_use]
    pub fn wire(&self) -> crate::vswitch::wire::Wire {
        crate::vswitch::wire::Wire::new(
            self.id,
            self.switches.iter().map(|s| s.name.clone()).collect(),
        )
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.unload_driver();
        remove_host(self.id);
    }
}

impl Host {
    /// The diagnostic events the driver emitted so far (what it writes to ETW), oldest first.
    #[must_use]
    pub fn trace_events(&self) -> Vec<vsflow_callout::TraceEvent> {
        self.shared.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Kernel-primitive misuse the services detected (each also panicked where it happened).
    #[must_use]
    pub fn primitive_misuse(&self) -> Vec<String> {
        self.shared.misuse.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// A work item stopped at a clock read ([`Host::pause_work_item_at_clock`]).
#[derive(Debug)]
pub struct WorkItemPause {
    reached: std::sync::mpsc::Receiver<()>,
    resume: std::sync::mpsc::Sender<()>,
}

impl WorkItemPause {
    /// Waits (up to 10 s) until the work item has stopped; false if it never got there.
    #[must_use]
    pub fn stopped(&self) -> bool {
        self.reached.recv_timeout(std::time::Duration::from_secs(10)).is_ok()
    }

    /// Lets the work item go on.
    pub fn resume(self) {
        let _ = self.resume.send(());
    }
}
