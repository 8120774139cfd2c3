//! Exhaustive interleaving check of the exactly-once completion protocol and the stop drain.
//!
//! The driver touches the pending set only in short steps under its spin lock, so the
//! protocol's interleavings are the interleavings of those steps. This test runs the *real*
//! `PendingSet` through every interleaving of the actors below (a depth-first search over all
//! schedules, like loom, at lock granularity), with each actor's steps exactly those of the
//! driver code named beside it, and checks in every final state that each pended notification
//! was completed exactly once and nothing else was completed.
//!
//! - `Restore(port)`: `Driver::pend_restore`: one step, refused once stopping.
//! - `Worker`: `Driver::run_deferred`: step 1 `take_next`; step 2 `claim(id)` (nothing more if
//!   a canceller removed it); step 3, once applied, `release(id)` and the completion; repeat
//!   until `take_next` finds nothing. While it holds a claimed entry, the port's restore is in
//!   flight (`in_flight`: what a save of the port checks) in every interleaving.
//! - `PortDelete(port)`: `Driver::cancel_pending` for one port: `remove_where` and complete,
//!   until nothing is left for the port.
//! - `Stop`: `Driver::stop`: set `stopping`, then `cancel_pending` for all ports; afterwards the
//!   worker is flushed (runs to completion).

use std::collections::BTreeMap;

use vsflow_callout::pending::PendingSet;
use vsflow_callout::ports::PortKey;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Actor {
    Restore { port: u32, done: bool },
    Worker { holding: Option<(u64, u32, bool)>, finished: bool },
    PortDelete { port: u32, finished: bool },
    Stop { stopped: bool, finished: bool },
}

#[derive(Clone, Debug)]
struct World {
    pending: PendingSet,
    stopping: bool,
    actors: Vec<Actor>,
    /// completion context -> times completed
    completed: BTreeMap<usize, u32>,
    /// contexts that were pended
    pended: Vec<usize>,
    /// entries the worker claimed and has not released: id -> completion context
    claimed: BTreeMap<u64, usize>,
}

const fn key(port: u32) -> PortKey {
    PortKey { switch: 1, port }
}

impl World {
    fn complete(&mut self, ctx: usize) {
        *self.completed.entry(ctx).or_default() += 1;
    }

    /// Runs one step of actor `i`; returns false if it has nothing left to do.
    fn step(&mut self, i: usize) -> bool {
        let actor = self.actors[i];
        let next = match actor {
            Actor::Restore { done: true, .. }
            | Actor::Worker { finished: true, .. }
            | Actor::PortDelete { finished: true, .. }
            | Actor::Stop { finished: true, .. } => return false,
            Actor::Restore { port, done: false } => {
                if !self.stopping {
                    let ctx = 0x1000 + self.pended.len();
                    self.pending.push(ctx, (key(port), None), vec![0], 0).unwrap();
                    self.pended.push(ctx);
                }
                Actor::Restore { port, done: true }
            }
            Actor::Worker { holding: None, .. } => match self.pending.take_next() {
                Some((id, k, _, _)) => {
                    Actor::Worker { holding: Some((id, k.0.port, false)), finished: false }
                }
                None => Actor::Worker { holding: None, finished: true },
            },
            Actor::Worker { holding: Some((id, port, false)), .. } => {
                match self.pending.claim(id) {
                    Some((ctx, _)) => {
                        self.claimed.insert(id, ctx);
                        Actor::Worker { holding: Some((id, port, true)), finished: false }
                    }
                    None => Actor::Worker { holding: None, finished: false },
                }
            }
            Actor::Worker { holding: Some((id, _, true)), .. } => {
                self.pending.release(id);
                if let Some(ctx) = self.claimed.remove(&id) {
                    self.complete(ctx);
                }
                Actor::Worker { holding: None, finished: false }
            }
            Actor::PortDelete { port, .. } => {
                match self.pending.remove_where(|k| *k == key(port)) {
                    Some(e) => {
                        self.complete(e.completion);
                        Actor::PortDelete { port, finished: false }
                    }
                    None => Actor::PortDelete { port, finished: true },
                }
            }
            Actor::Stop { stopped: false, .. } => {
                self.stopping = true;
                Actor::Stop { stopped: true, finished: false }
            }
            Actor::Stop { stopped: true, .. } => match self.pending.remove_where(|_| true) {
                Some(e) => {
                    self.complete(e.completion);
                    Actor::Stop { stopped: true, finished: false }
                }
                None => Actor::Stop { stopped: true, finished: true },
            },
        };
        self.actors[i] = next;
        // A save checks `in_flight`: a claimed restore not yet applied must show there.
        for a in &self.actors {
            if let Actor::Worker { holding: Some((_, port, true)), .. } = a {
                assert!(self.pending.in_flight(key(*port)), "a claimed restore is in flight");
            }
        }
        true
    }

    /// After every actor finished: the stop path flushes the worker (runs it to the end), as
    /// `flush_deferred_work` does; without a stop, the work item eventually runs too.
    fn flush(&mut self) {
        let mut w = self.clone();
        w.actors = vec![Actor::Worker { holding: None, finished: false }];
        while w.step(0) {}
        *self = w;
    }

    fn check(&self) -> Result<(), String> {
        for ctx in &self.pended {
            let n = self.completed.get(ctx).copied().unwrap_or(0);
            if n != 1 {
                return Err(format!("notification {ctx:#x} completed {n} times"));
            }
        }
        if self.completed.keys().any(|c| !self.pended.contains(c)) {
            return Err("completion of a notification never pended".to_owned());
        }
        if !self.pending.is_empty() {
            return Err("pending set not drained".to_owned());
        }
        Ok(())
    }
}

/// Explores every schedule; returns the number of complete schedules checked.
fn explore(w: &World, schedules: &mut u64) {
    let mut progressed = false;
    for i in 0..w.actors.len() {
        let mut next = w.clone();
        if next.step(i) {
            progressed = true;
            explore(&next, schedules);
        }
    }
    if !progressed {
        let mut end = w.clone();
        end.flush();
        if let Err(e) = end.check() {
            panic!("{e} in final state {end:#?}");
        }
        *schedules += 1;
    }
}

fn world(actors: Vec<Actor>) -> World {
    World {
        pending: PendingSet::default(),
        stopping: false,
        actors,
        completed: BTreeMap::new(),
        pended: Vec::new(),
        claimed: BTreeMap::new(),
    }
}

#[test]
fn every_schedule_of_restores_worker_and_port_delete_completes_each_notification_once() {
    let mut n = 0;
    explore(
        &world(vec![
            Actor::Restore { port: 1, done: false },
            Actor::Restore { port: 1, done: false },
            Actor::Restore { port: 2, done: false },
            Actor::Worker { holding: None, finished: false },
            Actor::PortDelete { port: 1, finished: false },
        ]),
        &mut n,
    );
    assert!(n > 1000, "explored {n} schedules");
}

#[test]
fn every_schedule_with_a_driver_stop_drains_everything_exactly_once() {
    let mut n = 0;
    explore(
        &world(vec![
            Actor::Restore { port: 1, done: false },
            Actor::Restore { port: 2, done: false },
            Actor::Worker { holding: None, finished: false },
            Actor::PortDelete { port: 2, finished: false },
            Actor::Stop { stopped: false, finished: false },
        ]),
        &mut n,
    );
    assert!(n > 1000, "explored {n} schedules");
}

#[test]
fn the_checker_catches_a_protocol_that_completes_without_removing() {
    // A broken worker that completes what it took without re-checking the set races with a
    // port delete: the checker must find the double completion.
    let mut w = world(vec![Actor::Restore { port: 1, done: false }]);
    while w.step(0) {}
    let (id, _, _, _) = w.pending.take_next().unwrap();
    let ctx = w.pended[0];
    let e = w.pending.remove_where(|_| true).unwrap(); // port delete wins
    w.complete(e.completion);
    let _ = id;
    w.complete(ctx); // broken worker: completes anyway
    assert!(w.check().is_err());
}

// ---------------------------------------------------------------------------------------------
// Port delete vs classify vs restore vs walks vs unload: the port map (ports.rs).
//
// A step-level model of `PortMap`: one reader/writer spin lock per processor; a reader takes its
// processor's lock shared, a writer takes every processor's lock exclusively in order, and while
// a writer waits for a lock no new reader gets it ("Reader/Writer Spin Locks"). Classify judges
// its packet under the shared hold (one step). Everything longer takes a *reference* on the port
// under the shared hold, lets the lock go, and works outside it (several steps): the restore
// worker (whoever removes a pended entry completes it, then applies through a reference) and a
// walk (references to every port under one hold, then one port at a time). A writer changes the
// map and drops the map's reference to what it removed after releasing the locks; a port is
// freed when its last reference goes. Actors: classify on each processor, the worker, a walk, a
// port delete (cancel the port's pended restores, then the exclusive update), and stop (close
// the pending set and finish everything pended, then close the map). Explored over every
// interleaving with memoized states. Checked in every reachable state: no one uses a freed
// port; no writer waits at a processor's lock held by long work (it would hold the locks of the
// processors before it meanwhile, and with them every packet there); no deadlock. At the end
// every pended notification completed exactly once, every port freed, every lock free.
// ---------------------------------------------------------------------------------------------

mod portmap {
    use std::collections::{BTreeMap, BTreeSet, HashSet};

    const CPUS: usize = 2;
    /// Steps of work a reference holder does on its port (long work, in the model's units).
    const WORK: u8 = 2;

    #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, Default)]
    struct RwLock {
        shared: u32,
        exclusive: bool,
        /// Writers waiting for it: no new reader gets in meanwhile.
        waiting: u32,
        /// Shared holders doing long work under it (only the broken design of the last test).
        long: u32,
    }

    #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
    enum Reader {
        Start,
        /// Holds its processor's lock shared.
        Holding,
        /// Holds it and judges a packet of port `p` (under the port's lock).
        Using(u32),
        Done,
    }

    /// Someone who works on a port for longer than a packet, through a reference.
    #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
    enum Holder {
        Start,
        /// Holds its processor's lock shared, about to look the port up.
        Holding,
        /// Works on port `p` (`left` more steps), holding a reference; `locked`: still holding
        /// the processor's map lock (the old design, where long work ran under it).
        Working {
            p: u32,
            left: u8,
            locked: bool,
        },
        Done,
    }

    #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
    enum Writer {
        /// Holds the first `n` processors' locks exclusively.
        Locking(usize),
        /// Holds the first `n` and waits for lock `n` (counted in its `waiting`).
        Waiting(usize),
        /// Changed the map; releasing (holds `n` locks still).
        Releasing(usize),
        /// Locks released; drops the map's references to what it removed.
        Freeing,
        Done,
    }

    #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
    enum Actor {
        Classify {
            cpu: usize,
            port: u32,
            r: Reader,
        },
        /// Pends a restore of `port` (refused once the pending set is closed).
        Restore {
            port: u32,
            done: bool,
        },
        /// The work item on processor `cpu`: take; remove (then complete after applying);
        /// apply through a reference.
        Worker {
            cpu: usize,
            job: Option<(usize, u32)>,
            removed: bool,
            h: Holder,
        },
        /// A walk over every port (expiry sweep, ListPorts): references to all under one hold
        /// (`taken`), then each port in turn (`left`: a bit per port still to visit).
        Walk {
            cpu: usize,
            taken: bool,
            holding: bool,
            left: u8,
        },
        /// Port delete: cancel its pended restores, then the exclusive update.
        Delete {
            port: u32,
            cancelled: bool,
            w: Writer,
        },
        /// Stop: close the pending set and finish everything pended, then close the map.
        Stop {
            cancelled: bool,
            w: Writer,
        },
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq)]
    struct World {
        locks: [RwLock; CPUS],
        closed: bool,
        map: BTreeSet<u32>,
        /// References to each port (the map's one included).
        refs: BTreeMap<u32, u32>,
        freed: BTreeSet<u32>,
        /// Removed by a writer, its reference not yet dropped: (writer index, port).
        removed: BTreeSet<(usize, u32)>,
        /// Pended: (context, port, taken by the worker).
        pending: Vec<(usize, u32, bool)>,
        pending_closed: bool,
        pended: Vec<usize>,
        completed: BTreeMap<usize, u32>,
        actors: Vec<Actor>,
        /// The old design: long work holds the map lock (the checker must catch it).
        work_under_map_lock: bool,
    }

    impl World {
        fn new(ports: &[u32], actors: Vec<Actor>) -> Self {
            Self {
                locks: [RwLock::default(); CPUS],
                closed: false,
                map: ports.iter().copied().collect(),
                refs: ports.iter().map(|&p| (p, 1)).collect(),
                freed: BTreeSet::new(),
                removed: BTreeSet::new(),
                pending: Vec::new(),
                pending_closed: false,
                pended: Vec::new(),
                completed: BTreeMap::new(),
                actors,
                work_under_map_lock: false,
            }
        }

        fn complete(&mut self, ctx: usize) {
            *self.completed.entry(ctx).or_default() += 1;
        }

        /// Takes `cpu`'s lock shared if no writer holds it or waits for it.
        fn lock_shared(&mut self, cpu: usize) -> bool {
            let l = &mut self.locks[cpu];
            if l.exclusive || l.waiting > 0 {
                return false;
            }
            l.shared += 1;
            true
        }

        fn drop_ref(&mut self, p: u32) {
            let n = self.refs.get_mut(&p).expect("a counted port");
            assert!(*n > 0, "port {p}: reference dropped twice");
            *n -= 1;
            if *n == 0 {
                assert!(!self.map.contains(&p), "port {p} freed while still in the map");
                self.freed.insert(p);
            }
        }

        fn use_port(&self, p: u32) {
            assert!(!self.freed.contains(&p), "port {p} used after free");
        }

        /// One step of a classify on `cpu` wanting `port`; `None` when blocked.
        fn read_step(&mut self, cpu: usize, r: Reader, port: u32) -> Option<Reader> {
            Some(match r {
                Reader::Start => {
                    if !self.lock_shared(cpu) {
                        return None;
                    }
                    Reader::Holding
                }
                Reader::Holding => {
                    if !self.closed && self.map.contains(&port) {
                        Reader::Using(port)
                    } else {
                        self.locks[cpu].shared -= 1;
                        Reader::Done
                    }
                }
                Reader::Using(p) => {
                    self.use_port(p);
                    self.locks[cpu].shared -= 1;
                    Reader::Done
                }
                Reader::Done => return None,
            })
        }

        /// One step of a reference holder on `cpu` working on `port`; `None` when blocked.
        fn hold_step(&mut self, cpu: usize, h: Holder, port: u32) -> Option<Holder> {
            Some(match h {
                Holder::Start => {
                    if !self.lock_shared(cpu) {
                        return None;
                    }
                    Holder::Holding
                }
                Holder::Holding => {
                    if self.closed || !self.map.contains(&port) {
                        self.locks[cpu].shared -= 1;
                        return Some(Holder::Done);
                    }
                    *self.refs.get_mut(&port).expect("a counted port") += 1;
                    let locked = self.work_under_map_lock;
                    if locked {
                        self.locks[cpu].long += 1;
                    } else {
                        self.locks[cpu].shared -= 1;
                    }
                    Holder::Working { p: port, left: WORK, locked }
                }
                Holder::Working { p, left, locked } => {
                    self.use_port(p);
                    if left > 0 {
                        return Some(Holder::Working { p, left: left - 1, locked });
                    }
                    if locked {
                        self.locks[cpu].long -= 1;
                        self.locks[cpu].shared -= 1;
                    }
                    self.drop_ref(p);
                    Holder::Done
                }
                Holder::Done => return None,
            })
        }

        /// One step of writer `me`; `change` runs once every lock is held. `None` when blocked.
        fn write_step(
            &mut self,
            me: usize,
            w: Writer,
            change: impl FnOnce(&mut Self),
        ) -> Option<Writer> {
            Some(match w {
                Writer::Locking(n) if n < CPUS => {
                    let l = &mut self.locks[n];
                    if l.exclusive || l.shared > 0 {
                        l.waiting += 1;
                        return Some(Writer::Waiting(n));
                    }
                    l.exclusive = true;
                    Writer::Locking(n + 1)
                }
                Writer::Waiting(n) => {
                    let l = &mut self.locks[n];
                    if l.exclusive || l.shared > 0 {
                        // Waiting here holds the locks of processors 0..n: it must only ever
                        // wait for short holds.
                        assert!(
                            l.long == 0,
                            "a writer holding {n} processors' locks waits for long work under \
                             processor {n}'s map lock"
                        );
                        return None;
                    }
                    l.waiting -= 1;
                    l.exclusive = true;
                    Writer::Locking(n + 1)
                }
                Writer::Locking(_) => {
                    change(self);
                    Writer::Releasing(CPUS)
                }
                Writer::Releasing(0) => Writer::Freeing,
                Writer::Releasing(n) => {
                    self.locks[n - 1].exclusive = false;
                    Writer::Releasing(n - 1)
                }
                Writer::Freeing => {
                    let mine: Vec<_> =
                        self.removed.iter().filter(|(w, _)| *w == me).copied().collect();
                    for (w, p) in mine {
                        self.removed.remove(&(w, p));
                        self.drop_ref(p);
                    }
                    Writer::Done
                }
                Writer::Done => return None,
            })
        }

        #[allow(clippy::too_many_lines, reason = "one arm per actor step, as in the driver")]
        fn step(&mut self, i: usize) -> bool {
            let actor = self.actors[i];
            let next = match actor {
                Actor::Classify { cpu, port, r } => match self.read_step(cpu, r, port) {
                    Some(r) => Actor::Classify { cpu, port, r },
                    None => return false,
                },
                Actor::Restore { done: true, .. } => return false,
                Actor::Restore { port, .. } => {
                    if !self.pending_closed {
                        let ctx = 0x1000 + self.pended.len();
                        self.pending.push((ctx, port, false));
                        self.pended.push(ctx);
                    }
                    Actor::Restore { port, done: true }
                }
                Actor::Worker { cpu, job: None, .. } => {
                    let Some(e) = self.pending.iter_mut().find(|e| !e.2) else { return false };
                    e.2 = true;
                    let (ctx, port) = (e.0, e.1);
                    Actor::Worker { cpu, job: Some((ctx, port)), removed: false, h: Holder::Start }
                }
                // Decoded outside every lock; whoever removes the entry completes it.
                Actor::Worker { cpu, job: Some((ctx, port)), removed: false, .. } => {
                    match self.pending.iter().position(|e| e.0 == ctx) {
                        Some(at) => {
                            self.pending.remove(at);
                            Actor::Worker {
                                cpu,
                                job: Some((ctx, port)),
                                removed: true,
                                h: Holder::Start,
                            }
                        }
                        None => Actor::Worker { cpu, job: None, removed: false, h: Holder::Start },
                    }
                }
                // Apply through a reference to the port; then complete.
                Actor::Worker { cpu, job: Some((ctx, port)), removed: true, h } => {
                    match self.hold_step(cpu, h, port) {
                        Some(Holder::Done) => {
                            self.complete(ctx);
                            Actor::Worker { cpu, job: None, removed: false, h: Holder::Start }
                        }
                        Some(h) => Actor::Worker { cpu, job: Some((ctx, port)), removed: true, h },
                        None => return false,
                    }
                }
                Actor::Walk { cpu, taken: false, holding: false, left } => {
                    if !self.lock_shared(cpu) {
                        return false;
                    }
                    Actor::Walk { cpu, taken: false, holding: true, left }
                }
                Actor::Walk { cpu, taken: false, holding: true, .. } => {
                    let mut left = 0u8;
                    if !self.closed {
                        for &p in &self.map {
                            left |= 1 << p;
                        }
                        for p in self.map.clone() {
                            *self.refs.get_mut(&p).expect("a counted port") += 1;
                        }
                    }
                    self.locks[cpu].shared -= 1;
                    Actor::Walk { cpu, taken: true, holding: false, left }
                }
                Actor::Walk { left: 0, .. } => return false,
                Actor::Walk { cpu, taken: true, left, .. } => {
                    let p = left.trailing_zeros();
                    self.use_port(p);
                    self.drop_ref(p);
                    Actor::Walk { cpu, taken: true, holding: false, left: left & !(1 << p) }
                }
                Actor::Delete { port, cancelled: false, w } => {
                    match self.pending.iter().position(|e| e.1 == port) {
                        Some(at) => {
                            let (ctx, _, _) = self.pending.remove(at);
                            self.complete(ctx);
                            Actor::Delete { port, cancelled: false, w }
                        }
                        None => Actor::Delete { port, cancelled: true, w },
                    }
                }
                Actor::Delete { port, cancelled: true, w } => {
                    let next = self.write_step(i, w, |world| {
                        if !world.closed && world.map.remove(&port) {
                            world.removed.insert((i, port));
                        }
                    });
                    match next {
                        Some(w) => Actor::Delete { port, cancelled: true, w },
                        None => return false,
                    }
                }
                // Stop finishes what is pended (decode, apply, complete with success), one
                // entry per step; entries the worker took are its own to complete.
                Actor::Stop { cancelled: false, w } => {
                    self.pending_closed = true;
                    match self.pending.iter().position(|e| !e.2) {
                        Some(at) => {
                            let (ctx, _, _) = self.pending.remove(at);
                            self.complete(ctx);
                            Actor::Stop { cancelled: false, w }
                        }
                        None => Actor::Stop { cancelled: true, w },
                    }
                }
                Actor::Stop { cancelled: true, w } => {
                    let next = self.write_step(i, w, |world| {
                        world.closed = true;
                        let all: Vec<u32> = std::mem::take(&mut world.map).into_iter().collect();
                        for p in all {
                            world.removed.insert((i, p));
                        }
                    });
                    match next {
                        Some(w) => Actor::Stop { cancelled: true, w },
                        None => return false,
                    }
                }
            };
            self.actors[i] = next;
            true
        }

        fn finished(a: &Actor) -> bool {
            matches!(
                a,
                Actor::Classify { r: Reader::Done, .. }
                    | Actor::Restore { done: true, .. }
                    | Actor::Worker { job: None, .. }
                    | Actor::Walk { taken: true, left: 0, .. }
                    | Actor::Delete { w: Writer::Done, .. }
                    | Actor::Stop { w: Writer::Done, .. }
            )
        }

        fn check_end(&self) -> Result<(), String> {
            for ctx in &self.pended {
                let n = self.completed.get(ctx).copied().unwrap_or(0);
                if n != 1 {
                    return Err(format!("notification {ctx:#x} completed {n} times"));
                }
            }
            if self.locks.iter().any(|l| l.shared > 0 || l.exclusive || l.waiting > 0) {
                return Err("a lock is still held".to_owned());
            }
            if !self.map.is_empty() || !self.removed.is_empty() {
                return Err("ports left after stop".to_owned());
            }
            if let Some((p, n)) = self.refs.iter().find(|(_, n)| **n > 0) {
                return Err(format!("port {p} still has {n} references after stop"));
            }
            if self.freed.len() != self.refs.len() {
                return Err("a port was never freed".to_owned());
            }
            Ok(())
        }
    }

    fn explore(w: &World, seen: &mut HashSet<World>, ends: &mut u64) {
        if !seen.insert(w.clone()) {
            return;
        }
        let mut progressed = false;
        for i in 0..w.actors.len() {
            let mut next = w.clone();
            if next.step(i) {
                progressed = true;
                explore(&next, seen, ends);
            }
        }
        if !progressed {
            let stuck: Vec<_> = w.actors.iter().filter(|a| !World::finished(a)).collect();
            assert!(stuck.is_empty(), "deadlock: {stuck:?} in {w:#?}");
            if let Err(e) = w.check_end() {
                panic!("{e} in final state {w:#?}");
            }
            *ends += 1;
        }
    }

    fn run_world(world: &World) -> (u64, usize) {
        let mut seen = HashSet::new();
        let mut ends = 0;
        explore(world, &mut seen, &mut ends);
        (ends, seen.len())
    }

    fn run(ports: &[u32], actors: Vec<Actor>) -> (u64, usize) {
        run_world(&World::new(ports, actors))
    }

    const fn walk(cpu: usize) -> Actor {
        Actor::Walk { cpu, taken: false, holding: false, left: 0 }
    }

    const fn worker(cpu: usize) -> Actor {
        Actor::Worker { cpu, job: None, removed: false, h: Holder::Start }
    }

    #[test]
    fn port_delete_vs_classify_vs_restore_vs_unload_never_uses_a_freed_port() {
        let (ends, states) = run(
            &[1, 2],
            vec![
                Actor::Restore { port: 1, done: false },
                Actor::Classify { cpu: 0, port: 1, r: Reader::Start },
                Actor::Classify { cpu: 1, port: 1, r: Reader::Start },
                worker(1),
                Actor::Delete { port: 1, cancelled: false, w: Writer::Locking(0) },
                Actor::Stop { cancelled: false, w: Writer::Locking(0) },
            ],
        );
        assert!(ends >= 2 && states > 1_000, "{ends} end states, {states} states");
    }

    #[test]
    fn a_walk_and_the_worker_hold_references_across_a_delete_and_a_stop() {
        let (ends, states) = run(
            &[1, 2],
            vec![
                Actor::Restore { port: 2, done: false },
                walk(1),
                worker(0),
                Actor::Classify { cpu: 0, port: 2, r: Reader::Start },
                Actor::Delete { port: 2, cancelled: false, w: Writer::Locking(0) },
                Actor::Stop { cancelled: false, w: Writer::Locking(0) },
            ],
        );
        assert!(ends >= 2 && states > 1_000, "{ends} end states, {states} states");
    }

    #[test]
    fn two_deletes_two_classifies_and_a_stop_interleave_safely() {
        let (ends, states) = run(
            &[1, 2],
            vec![
                Actor::Classify { cpu: 0, port: 2, r: Reader::Start },
                Actor::Classify { cpu: 1, port: 1, r: Reader::Start },
                Actor::Delete { port: 1, cancelled: false, w: Writer::Locking(0) },
                Actor::Delete { port: 2, cancelled: false, w: Writer::Locking(0) },
                Actor::Stop { cancelled: false, w: Writer::Locking(0) },
            ],
        );
        assert!(ends >= 1 && states > 1_000, "{ends} end states, {states} states");
    }

    #[test]
    fn the_model_catches_a_writer_that_skips_a_processors_lock() {
        // A writer that takes only processor 0's lock frees a port a reader on processor 1 is
        // using: the exploration must find it.
        let mut w = World::new(&[1], vec![Actor::Classify { cpu: 1, port: 1, r: Reader::Start }]);
        assert!(w.step(0) && w.step(0)); // Holding, then Using(1)
        w.locks[0].exclusive = true; // the broken writer's only lock
        w.map.remove(&1);
        w.freed.insert(1);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.step(0)));
        assert!(r.is_err(), "use after free detected");
    }

    #[test]
    fn the_model_catches_a_port_freed_under_a_reference() {
        // A delete that frees the port outright (no reference counting) while the worker
        // applies through its reference: the exploration must find the use after free.
        let mut w = World::new(&[1], vec![worker(0)]);
        w.pending.push((0x1000, 1, false));
        w.pended.push(0x1000);
        for _ in 0..4 {
            assert!(w.step(0)); // take, remove, lock, reference
        }
        w.map.remove(&1);
        w.freed.insert(1); // the broken delete
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.step(0)));
        assert!(r.is_err(), "use after free detected");
    }

    #[test]
    fn the_model_catches_long_work_under_the_map_lock() {
        // The old design: the worker applied (and saves, sweeps and IOCTL walks ran) under the
        // map lock. A port delete then waits at that processor holding the others' locks.
        let mut world = World::new(
            &[1, 2],
            vec![
                Actor::Restore { port: 1, done: false },
                worker(1),
                Actor::Delete { port: 2, cancelled: false, w: Writer::Locking(0) },
                Actor::Classify { cpu: 0, port: 2, r: Reader::Start },
                Actor::Stop { cancelled: false, w: Writer::Locking(0) },
            ],
        );
        world.work_under_map_lock = true;
        let r = std::panic::catch_unwind(|| run_world(&world));
        let msg = r.err().and_then(|e| e.downcast::<String>().ok()).expect("caught");
        assert!(msg.contains("waits for long work"), "{msg}");
    }
}

// ---------------------------------------------------------------------------------------------
// One port on several processors (issue 18 §2; `vsflow_core::port::shards`, `PortSlot::classify`,
// `PortSlot::lock_whole`, `PortSlot::sweep`). The port's locks are the home lock (0) and one per
// processor's shard (1, 2); the tables are sets of flows. Each actor's steps are those of the
// driver at lock granularity:
// - classify on processor `cpu` of a packet of flow `key` (that creates it if absent, or not):
//   read `sharded`; if set, lock the processor's shard, and if it holds the flow judge it there
//   (the fast path); else unlock it; if the processor's hints name another shard, lock that one
//   alone and judge there if it holds the flow; else lock home; whole port: judge in home; split: look in home
//   (judge there, then move the flow to the processor's shard: adoption), then in each shard,
//   one lock at a time, judging where found; else lock the processor's shard and create there;
// - a save (merge): lock home, then every shard in order, move every flow home, clear `sharded`;
// - the sweep: lock home; split: expire the flow from home and from each shard, one lock at a
//   time; whole: lock every shard in order and set `sharded`.
// Checked in every reachable state: a flow is in at most one table; a packet is judged in a
// table whose lock it holds, and judged as "no such flow" only when no table holds it (else its
// verdict could differ from the single-lock port's); no deadlock.
// ---------------------------------------------------------------------------------------------

mod shards {
    use std::collections::HashSet;

    const CPUS: usize = 2;
    const LOCKS: usize = 1 + CPUS;

    #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
    enum Pc {
        Start,
        /// Wants its processor's shard's lock (fast path).
        Fast,
        /// Holds it.
        FastHeld,
        /// Missed; wants the hinted shard `j`'s lock (alone).
        Hint(usize),
        /// Holds shard `j`'s lock alone.
        HintHeld(usize),
        /// Wants the home lock.
        Home,
        /// Holds the home lock.
        HomeHeld,
        /// Holds home, judged the flow there; wants its shard's lock to adopt the flow.
        Adopt,
        /// Holds home, wants shard `i`'s lock to look for the flow.
        Search(usize),
        /// Holds home and shard `i`.
        SearchHeld(usize),
        /// Holds home, wants its processor's shard's lock to create the flow.
        Create,
        Done,
    }

    #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
    enum Actor {
        /// `hint`: the shard this processor's hints name for the flow (any: hints may be stale).
        Classify { cpu: usize, key: u8, creates: bool, hint: Option<usize>, pc: Pc },
        /// Save (`lock_whole`): `held` locks taken in order, then merge and release.
        Save { held: usize, done: bool },
        /// Sweep: `held` locks in order (home, then one shard at a time when split).
        Sweep { key: u8, held: usize, split: Option<bool>, done: bool },
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq)]
    struct World {
        /// Which actor holds each lock (0 = home, 1 + cpu = that processor's shard).
        held: [Option<usize>; LOCKS],
        sharded: bool,
        /// Flows (bits) of each table.
        tables: [u8; LOCKS],
        actors: Vec<Actor>,
        /// A broken slow path that lets go of the home lock before searching (the model must
        /// catch it).
        broken_early_release: bool,
    }

    impl World {
        fn new(sharded: bool, tables: [u8; LOCKS], actors: Vec<Actor>) -> Self {
            Self { held: [None; LOCKS], sharded, tables, actors, broken_early_release: false }
        }

        fn lock(&mut self, l: usize, me: usize) -> bool {
            if self.held[l].is_some() {
                return false;
            }
            self.held[l] = Some(me);
            true
        }

        fn unlock(&mut self, l: usize, me: usize) {
            assert_eq!(self.held[l], Some(me), "lock {l} released by a non-holder");
            self.held[l] = None;
        }

        /// Judges flow `key` in table `t` (creating it if `creates`); the judge holds `t`.
        fn judge(&mut self, me: usize, t: usize, key: u8, creates: bool) {
            assert_eq!(self.held[t], Some(me), "judged in table {t} without its lock");
            let bit = 1 << key;
            if self.tables[t] & bit == 0 {
                let elsewhere: Vec<_> = (0..LOCKS).filter(|&o| self.tables[o] & bit != 0).collect();
                assert!(
                    elsewhere.is_empty(),
                    "flow {key} judged absent in table {t} while tables {elsewhere:?} hold it"
                );
                if creates {
                    self.tables[t] |= bit;
                }
            }
        }

        fn holds(&self, key: u8, t: usize) -> bool {
            self.tables[t] & (1 << key) != 0
        }

        fn check(&self) {
            for key in 0..8u8 {
                let n = (0..LOCKS).filter(|&t| self.holds(key, t)).count();
                assert!(n <= 1, "flow {key} in {n} tables: {:?}", self.tables);
            }
        }

        #[allow(clippy::too_many_lines, reason = "one match arm per step of the driver")]
        fn step(&mut self, i: usize) -> bool {
            let next = match self.actors[i] {
                Actor::Classify { pc: Pc::Done, .. }
                | Actor::Save { done: true, .. }
                | Actor::Sweep { done: true, .. } => return false,
                Actor::Classify { cpu, key, creates, hint, pc } => {
                    let own = 1 + cpu;
                    let pc = match pc {
                        Pc::Start => {
                            if self.sharded {
                                Pc::Fast
                            } else {
                                Pc::Home
                            }
                        }
                        Pc::Fast => {
                            if !self.lock(own, i) {
                                return false;
                            }
                            Pc::FastHeld
                        }
                        Pc::FastHeld => {
                            let hit = self.sharded && self.holds(key, own);
                            if hit {
                                self.judge(i, own, key, false);
                            }
                            self.unlock(own, i);
                            match hint {
                                _ if hit => Pc::Done,
                                Some(j) if j != cpu => Pc::Hint(j),
                                _ => Pc::Home,
                            }
                        }
                        Pc::Hint(j) => {
                            if !self.lock(1 + j, i) {
                                return false;
                            }
                            Pc::HintHeld(j)
                        }
                        Pc::HintHeld(j) => {
                            let hit = self.sharded && self.holds(key, 1 + j);
                            if hit {
                                self.judge(i, 1 + j, key, false);
                            }
                            self.unlock(1 + j, i);
                            if hit { Pc::Done } else { Pc::Home }
                        }
                        Pc::Home => {
                            if !self.lock(0, i) {
                                return false;
                            }
                            Pc::HomeHeld
                        }
                        Pc::HomeHeld => {
                            if !self.sharded {
                                self.judge(i, 0, key, creates);
                                self.unlock(0, i);
                                Pc::Done
                            } else if self.holds(key, 0) {
                                self.judge(i, 0, key, creates);
                                Pc::Adopt
                            } else {
                                if self.broken_early_release {
                                    self.held[0] = None;
                                }
                                Pc::Search(0)
                            }
                        }
                        Pc::Adopt => {
                            if !self.lock(own, i) {
                                return false;
                            }
                            if self.holds(key, 0) {
                                self.tables[0] &= !(1 << key);
                                self.tables[own] |= 1 << key;
                            }
                            self.unlock(own, i);
                            self.unlock(0, i);
                            Pc::Done
                        }
                        Pc::Search(s) => {
                            if !self.lock(1 + s, i) {
                                return false;
                            }
                            Pc::SearchHeld(s)
                        }
                        Pc::SearchHeld(s) => {
                            let found = self.holds(key, 1 + s);
                            if found {
                                self.judge(i, 1 + s, key, creates);
                            }
                            self.unlock(1 + s, i);
                            if found {
                                if !self.broken_early_release {
                                    self.unlock(0, i);
                                }
                                Pc::Done
                            } else if s + 1 < CPUS {
                                Pc::Search(s + 1)
                            } else {
                                Pc::Create
                            }
                        }
                        Pc::Create => {
                            if !self.lock(own, i) {
                                return false;
                            }
                            self.judge(i, own, key, creates);
                            self.unlock(own, i);
                            if !self.broken_early_release {
                                self.unlock(0, i);
                            }
                            Pc::Done
                        }
                        Pc::Done => unreachable!(),
                    };
                    Actor::Classify { cpu, key, creates, hint, pc }
                }
                Actor::Save { held, .. } if held < LOCKS => {
                    if !self.lock(held, i) {
                        return false;
                    }
                    Actor::Save { held: held + 1, done: false }
                }
                Actor::Save { held, .. } => {
                    let all = self.tables.iter().fold(0, |a, t| a | t);
                    self.tables = [0; LOCKS];
                    self.tables[0] = all;
                    self.sharded = false;
                    for l in (0..LOCKS).rev() {
                        self.unlock(l, i);
                    }
                    Actor::Save { held, done: true }
                }
                Actor::Sweep { key, held: 0, .. } => {
                    if !self.lock(0, i) {
                        return false;
                    }
                    self.tables[0] &= !(1 << key);
                    Actor::Sweep { key, held: 1, split: Some(self.sharded), done: false }
                }
                Actor::Sweep { key, held, split: Some(true), .. } => {
                    // Split: expire in each shard, one lock at a time.
                    if held < LOCKS {
                        if !self.lock(held, i) {
                            return false;
                        }
                        self.tables[held] &= !(1 << key);
                        self.unlock(held, i);
                        Actor::Sweep { key, held: held + 1, split: Some(true), done: false }
                    } else {
                        self.unlock(0, i);
                        Actor::Sweep { key, held, split: Some(true), done: true }
                    }
                }
                Actor::Sweep { key, held, split: Some(false), .. } => {
                    // Whole: every shard's lock in order, then split.
                    if held < LOCKS {
                        if !self.lock(held, i) {
                            return false;
                        }
                        Actor::Sweep { key, held: held + 1, split: Some(false), done: false }
                    } else {
                        self.sharded = true;
                        for l in (0..LOCKS).rev() {
                            self.unlock(l, i);
                        }
                        Actor::Sweep { key, held, split: Some(false), done: true }
                    }
                }
                Actor::Sweep { split: None, .. } => unreachable!(),
            };
            self.actors[i] = next;
            self.check();
            true
        }
    }

    fn explore(w: &World, seen: &mut HashSet<World>, ends: &mut u64) {
        if !seen.insert(w.clone()) {
            return;
        }
        let mut progressed = false;
        for i in 0..w.actors.len() {
            let mut next = w.clone();
            if next.step(i) {
                progressed = true;
                explore(&next, seen, ends);
            }
        }
        if !progressed {
            let stuck: Vec<_> = w
                .actors
                .iter()
                .filter(|a| {
                    !matches!(
                        a,
                        Actor::Classify { pc: Pc::Done, .. }
                            | Actor::Save { done: true, .. }
                            | Actor::Sweep { done: true, .. }
                    )
                })
                .collect();
            assert!(stuck.is_empty(), "deadlock: {stuck:?} in {w:#?}");
            assert!(w.held.iter().all(Option::is_none), "a lock left held: {w:?}");
            *ends += 1;
        }
    }

    fn run(w: &World) -> (u64, usize) {
        let mut seen = HashSet::new();
        let mut ends = 0;
        explore(w, &mut seen, &mut ends);
        (ends, seen.len())
    }

    const fn classify(cpu: usize, key: u8, creates: bool) -> Actor {
        Actor::Classify { cpu, key, creates, hint: None, pc: Pc::Start }
    }

    /// A classify whose processor's hints name shard `hint` for the flow.
    const fn hinted(cpu: usize, key: u8, hint: usize) -> Actor {
        Actor::Classify { cpu, key, creates: true, hint: Some(hint), pc: Pc::Start }
    }

    #[test]
    fn a_new_flow_on_two_processors_at_once_is_created_once_under_saves_and_sweeps() {
        // Flow 0 new, its two directions on both processors; flow 1 in processor 0's shard,
        // judged on processor 1 (the slow path); flow 2 in home, adopted.
        let w = World::new(
            true,
            [0b100, 0b010, 0],
            vec![
                classify(0, 0, true),
                classify(1, 0, true),
                hinted(1, 1, 0),
                classify(0, 2, false),
                Actor::Save { held: 0, done: false },
                Actor::Sweep { key: 3, held: 0, split: None, done: false },
            ],
        );
        let (ends, states) = run(&w);
        assert!(ends >= 1 && states > 10_000, "{ends} end states, {states} states");
    }

    #[test]
    fn a_whole_port_split_by_the_sweep_while_packets_of_one_flow_arrive_on_both_processors() {
        let w = World::new(
            false,
            [0b11, 0, 0],
            vec![
                classify(0, 0, true),
                classify(1, 0, true),
                classify(1, 1, false),
                hinted(0, 2, 1),
                Actor::Sweep { key: 1, held: 0, split: None, done: false },
                Actor::Sweep { key: 3, held: 0, split: None, done: false },
            ],
        );
        let (ends, states) = run(&w);
        assert!(ends >= 1 && states > 1_000, "{ends} end states, {states} states");
    }

    #[test]
    fn the_model_catches_a_slow_path_that_searches_without_the_home_lock() {
        let mut w = World::new(true, [0; LOCKS], vec![classify(0, 0, true), classify(1, 0, true)]);
        w.broken_early_release = true;
        let r = std::panic::catch_unwind(|| run(&w));
        let msg = r.err().and_then(|e| e.downcast::<String>().ok()).expect("caught");
        assert!(msg.contains("in 2 tables") || msg.contains("judged absent"), "{msg}");
    }
}
