//! The process-wide registry of simulated hosts. The exported WFP functions have no host
//! argument (a kernel has one engine), so each thread names its current host; every handle the
//! engine issues is unique across hosts.

use std::cell::Cell;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::contract::Violation;
use crate::vswitch::WfpVSwitch;
use crate::wfp::engine::Engine;

/// One host's WFP-side state.
#[derive(Debug, Default)]
pub struct HostState {
    pub engine: Engine,
    pub vswitch: WfpVSwitch,
    pub violations: Vec<Violation>,
    /// VM restores the extensible switch failed because an extension failed
    /// `OID_SWITCH_NIC_RESTORE`: port id and the extension's status.
    pub failed_vm_restores: Vec<(u32, fwps_sys::NTSTATUS)>,
}

impl HostState {
    pub fn violate(&mut self, v: Violation) {
        assert!(
            std::env::var_os("VSFLOW_SIM_PANIC_ON_VIOLATION").is_none(),
            "contract violation: {v}"
        );
        self.violations.push(v);
    }

    /// Records every breach a rule reported.
    pub fn report(&mut self, breaches: Vec<Violation>) {
        for v in breaches {
            self.violate(v);
        }
    }
}

#[derive(Debug, Default)]
pub struct World {
    pub hosts: Vec<Option<HostState>>,
}

static WORLD: Mutex<World> = Mutex::new(World { hosts: Vec::new() });

thread_local! {
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

pub fn world() -> MutexGuard<'static, World> {
    WORLD.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn register_host() -> usize {
    let mut w = world();
    w.hosts.push(Some(HostState::default()));
    w.hosts.len() - 1
}

pub fn remove_host(id: usize) {
    if let Some(slot) = world().hosts.get_mut(id) {
        *slot = None;
    }
}

/// Runs `f` on host `id`'s state.
pub fn with_host_id<R>(id: usize, f: impl FnOnce(&mut HostState) -> R) -> R {
    let mut w = world();
    let host = w
        .hosts
        .get_mut(id)
        .and_then(Option::as_mut)
        .unwrap_or_else(|| panic!("simulated host {id} does not exist"));
    let r = f(host);
    drop(w);
    r
}

/// Runs `f` on the calling thread's current host. A WFP function called outside a simulated
/// host is a test bug: fail loudly.
pub fn with_current<R>(f: impl FnOnce(&mut HostState) -> R) -> R {
    let _sim = crate::kernel::alloc::Attribution::enter(None);
    let id = CURRENT
        .with(Cell::get)
        .expect("a WFP function was called on a thread with no current simulated host");
    with_host_id(id, f)
}

/// The calling thread's current host, if any.
#[must_use]
pub fn current_id() -> Option<usize> {
    CURRENT.try_with(Cell::get).ok().flatten()
}

/// Makes `id` the calling thread's current host until the guard drops.
pub struct CurrentHost {
    previous: Option<usize>,
}

impl CurrentHost {
    pub fn enter(id: usize) -> Self {
        let previous = CURRENT.with(|c| c.replace(Some(id)));
        Self { previous }
    }
}

impl Drop for CurrentHost {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

/// A process-wide unique handle value (never 0).
pub fn next_handle() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0x1000);
    NEXT.fetch_add(0x10, Ordering::Relaxed)
}
