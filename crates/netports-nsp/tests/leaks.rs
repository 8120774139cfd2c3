//! Everything the provider allocates for sessions and lookups is freed after rundown: a
//! counting global allocator measures the bytes live before and after a workload of
//! sessions, lookups in every state (fresh, resolved and cached, delivered, in flight at
//! rundown) and rundowns, run from several threads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Barrier};

use netports_nsp::Provider;
use netports_nsp::provider::{NAMESPACE, PROVIDER_ID, Restrictions, SourceError, Sources};
use netports_nsp::reservation::Reservation;
use netports_nsp::sessions::{Limits, Stats};
use netports_nsp::store::Store;
use netports_nsp::wsa::WsaError;
use windows_sys::Win32::Networking::WinSock::LUP_RETURN_ALL;

struct Counting;

/// Bytes allocated and not yet freed, by anyone in the process.
static LIVE: AtomicIsize = AtomicIsize::new(0);

fn bytes(layout: Layout) -> isize {
    isize::try_from(layout.size()).unwrap_or(isize::MAX)
}

// SAFETY: every method forwards to `System`, which upholds the `GlobalAlloc` contract; the
// counter has no effect on the memory returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(bytes(layout), Ordering::SeqCst);
        // SAFETY: the caller's layout obligations are passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(bytes(layout), Ordering::SeqCst);
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            isize::try_from(new_size).unwrap_or(isize::MAX) - bytes(layout),
            Ordering::SeqCst,
        );
        // SAFETY: as for `dealloc`; `new_size` obligations are the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Teredo;

impl Sources for Teredo {
    fn teredo_port(&self) -> Result<Option<u16>, SourceError> {
        Ok(Some(51_234))
    }
    fn reservation_exists(&self, _: &Reservation) -> Result<bool, SourceError> {
        Ok(true)
    }
}

fn ask() -> Restrictions {
    Restrictions { name: Some("teredo".into()), namespace: NAMESPACE, provider: None }
}

/// One session with four lookups left in four states, then run down.
fn workload(p: &Provider) {
    let s = p.startup(&PROVIDER_ID).unwrap();
    let begin = || p.lookup_begin(&PROVIDER_ID, &ask(), LUP_RETURN_ALL, Some(s)).unwrap();
    let _fresh = begin();
    let cached = begin();
    assert!(matches!(
        p.lookup_next(cached, LUP_RETURN_ALL, &mut [0; 8]),
        Err(WsaError::Fault { .. })
    ));
    let delivered = begin();
    assert!(p.lookup_next(delivered, LUP_RETURN_ALL, &mut [0; 1024]).is_ok());
    let ended = begin();
    p.lookup_end(ended).unwrap();
    p.rundown(&PROVIDER_ID, Some(s));
}

const THREADS: usize = 4;

/// `rounds` workloads on each of [`THREADS`] threads, started together.
fn run_threads(provider: &Arc<Provider>, rounds: usize) {
    let start = Arc::new(Barrier::new(THREADS));
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            let (provider, start) = (provider.clone(), start.clone());
            scope.spawn(move || {
                start.wait();
                for _ in 0..rounds {
                    workload(&provider);
                }
            });
        }
    });
}

// One test function: the counter is process-wide.
#[test]
fn sessions_and_lookups_free_everything_at_rundown() {
    let dir = std::env::temp_dir().join(format!("netports-nsp-leaks-{}", std::process::id()));
    let provider = Arc::new(Provider::new(
        Store::new(dir.join("names.json")),
        Arc::new(Teredo),
        Limits::default(),
    ));
    // Warm up with the same concurrency: the table's maps reach their working capacity and
    // lazy statics initialize.
    run_threads(&provider, 100);
    let before = LIVE.load(Ordering::SeqCst);
    run_threads(&provider, 500);
    // Rundown with a lookup's resolution in flight: the answer is dropped by `finish`.
    let session = provider.startup(&PROVIDER_ID).unwrap();
    let lookup =
        provider.lookup_begin(&PROVIDER_ID, &ask(), LUP_RETURN_ALL, Some(session)).unwrap();
    std::thread::scope(|scope| {
        let other = provider.clone();
        let next = scope.spawn(move || other.lookup_next(lookup, LUP_RETURN_ALL, &mut [0; 1024]));
        provider.rundown(&PROVIDER_ID, Some(session));
        let outcome = next.join().unwrap();
        assert!(
            matches!(outcome, Ok(_) | Err(WsaError::Cancelled | WsaError::InvalidHandle)),
            "{outcome:?}"
        );
    });
    assert_eq!(provider.stats(), Stats::default());
    let after = LIVE.load(Ordering::SeqCst);
    // The maps may still grow a little past the warm-up's capacity (at most 4 sessions of 4
    // lookups live at once; measured 0 to 3 KiB); everything per session and per lookup must
    // be back. 16 KiB catches any leak of 8 bytes or more per session (2,000 sessions).
    let grown = after - before;
    // (2,000 = THREADS x 500 rounds.)
    assert!(
        grown <= 16 * 1024,
        "{grown} bytes still live after 2,000 sessions and 8,000 lookups ran down"
    );
    drop(provider);
    let _ = std::fs::remove_dir_all(&dir);
}
