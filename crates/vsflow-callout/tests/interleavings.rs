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
//! - `Worker`: `Driver::run_deferred`: step 1 `take_next`; step 2 `remove(id)`, and the
//!   completion if it removed it; repeat until `take_next` finds nothing.
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
    Worker { holding: Option<u64>, finished: bool },
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
                    self.pending.push(ctx, key(port), vec![0]).unwrap();
                    self.pended.push(ctx);
                }
                Actor::Restore { port, done: true }
            }
            Actor::Worker { holding: None, .. } => match self.pending.take_next() {
                Some((id, _, _)) => Actor::Worker { holding: Some(id), finished: false },
                None => Actor::Worker { holding: None, finished: true },
            },
            Actor::Worker { holding: Some(id), .. } => {
                if let Some(e) = self.pending.remove(id) {
                    self.complete(e.completion);
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
    let (id, _, _) = w.pending.take_next().unwrap();
    let ctx = w.pended[0];
    let e = w.pending.remove_where(|_| true).unwrap(); // port delete wins
    w.complete(e.completion);
    let _ = id;
    w.complete(ctx); // broken worker: completes anyway
    assert!(w.check().is_err());
}

// ---------------------------------------------------------------------------------------------
// Port delete vs classify vs restore vs unload: the published port index (ports.rs).
//
// A step-level model of `PortMap` (two index slots, each with a cache-aware rundown), explored
// over every interleaving with memoized states, together with the real `PendingSet`. Each
// actor's steps are those of the driver code named beside it; a rundown's acquire is two steps
// (increment, then check the run-down flag) and a wait is two (set the flag, then wait for zero),
// which is where the races are. Checked in every reachable state: no actor reads a freed port
// or index; at the end every pended notification was completed exactly once, every port is
// freed after stop, and no rundown reference is left.
// ---------------------------------------------------------------------------------------------

mod portmap {
    use std::collections::{BTreeMap, BTreeSet, HashSet};

    use vsflow_callout::pending::PendingSet;
    use vsflow_callout::ports::PortKey;

    const fn key(port: u32) -> PortKey {
        PortKey { switch: 1, port }
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq)]
    struct Slot {
        count: u32,
        run_down: bool,
        /// Index id in this slot (None = empty).
        index: Option<u32>,
    }

    /// A reader of the index (`PortMap::read`): classify, the restore worker's apply, IOCTLs.
    #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
    enum Reader {
        Start,
        /// Loaded generation `g`, about to increment slot `g & 1`.
        Loaded(usize),
        /// Incremented slot `s`, about to check its run-down flag.
        Incremented(usize),
        /// Holds slot `s`; about to read its index and look up the port.
        Holding(usize),
        /// Holds slot `s` and uses port `p` (under the port lock).
        Using(usize, u32),
        Done,
    }

    #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
    enum Actor {
        /// Classify of a packet of `port`.
        Classify { port: u32, r: Reader },
        /// `restore_fn` (pend) of `port`, one step.
        Restore { port: u32, done: bool },
        /// The work item: `take_next`; remove; read-apply; complete; repeat.
        Worker { phase: u8, job: Option<(u64, u32)>, r: Reader },
        /// `on_port(PORT_DELETE)`: cancel, then `PortMap::update` (fill stale slot, publish,
        /// run the old slot down, wait, free).
        Delete { port: u32, phase: u8 },
        /// `Driver::stop`: close and cancel pending, then `PortMap::close`.
        Stop { phase: u8 },
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq)]
    struct World {
        generation: usize,
        slots: [Slot; 2],
        stale_run_down: bool,
        closed: bool,
        /// Index id -> ports it holds.
        indexes: BTreeMap<u32, BTreeSet<u32>>,
        next_index: u32,
        freed_indexes: BTreeSet<u32>,
        live_ports: BTreeSet<u32>,
        freed_ports: BTreeSet<u32>,
        /// Ports removed by the writer, freed after the drain.
        garbage: BTreeSet<u32>,
        pending_items: Vec<(u64, usize, u32, bool)>,
        pending_closed: bool,
        next_pending: u64,
        completed: BTreeMap<usize, u32>,
        pended: Vec<usize>,
        actors: Vec<Actor>,
    }

    impl World {
        fn new(ports: &[u32], actors: Vec<Actor>) -> Self {
            let mut indexes = BTreeMap::new();
            indexes.insert(0, ports.iter().copied().collect());
            Self {
                generation: 0,
                slots: [
                    Slot { count: 0, run_down: false, index: Some(0) },
                    Slot { count: 0, run_down: false, index: None },
                ],
                stale_run_down: false,
                closed: false,
                indexes,
                next_index: 1,
                freed_indexes: BTreeSet::new(),
                live_ports: ports.iter().copied().collect(),
                freed_ports: BTreeSet::new(),
                garbage: BTreeSet::new(),
                pending_items: Vec::new(),
                pending_closed: false,
                next_pending: 0,
                completed: BTreeMap::new(),
                pended: Vec::new(),
                actors,
            }
        }

        /// The real `PendingSet` loaded with this world's entries (its protocol decides).
        fn pending(&self) -> PendingSet {
            let mut p = PendingSet::default();
            // Rebuild preserving ids: push placeholders until ids line up.
            let mut items = self.pending_items.clone();
            items.sort_by_key(|e| e.0);
            let mut next = 1u64;
            for (id, ctx, port, taken) in items {
                while next < id {
                    let filler = p.push(0, key(u32::MAX), vec![]).unwrap();
                    let _ = p.remove(filler);
                    next += 1;
                }
                let got = p.push(ctx, key(port), vec![1]).unwrap();
                assert_eq!(got, id);
                let _ = taken; // marked below, in id order
                next += 1;
            }
            // Re-mark taken entries in id order.
            let mut order: Vec<_> = self.pending_items.clone();
            order.sort_by_key(|e| e.0);
            for (id, _, _, taken) in order {
                if taken {
                    // take_next hands out the oldest untaken: consume until this one.
                    loop {
                        let (got, _, _) = p.take_next().unwrap();
                        if got == id {
                            break;
                        }
                    }
                }
            }
            while next <= self.next_pending {
                let filler = p.push(0, key(u32::MAX), vec![]).unwrap();
                let _ = p.remove(filler);
                next += 1;
            }
            if self.pending_closed {
                p.close();
            }
            p
        }

        fn complete(&mut self, ctx: usize) {
            *self.completed.entry(ctx).or_default() += 1;
        }

        fn slot_of(g: usize) -> usize {
            g & 1
        }

        /// One step of a reader wanting `port`; returns the next reader state, and whether
        /// the port was found (at `Using`). Panics on a use after free.
        fn read_step(&mut self, r: Reader, port: u32) -> Reader {
            match r {
                Reader::Start => Reader::Loaded(self.generation),
                Reader::Loaded(g) => {
                    let s = Self::slot_of(g);
                    if self.slots[s].run_down {
                        if self.closed {
                            return Reader::Done;
                        }
                        return Reader::Start; // retry with the new generation
                    }
                    self.slots[s].count += 1;
                    Reader::Incremented(s)
                }
                Reader::Incremented(s) => {
                    if self.slots[s].run_down {
                        self.slots[s].count -= 1;
                        if self.closed {
                            return Reader::Done;
                        }
                        return Reader::Start;
                    }
                    Reader::Holding(s)
                }
                Reader::Holding(s) => {
                    let Some(ix) = self.slots[s].index else {
                        self.slots[s].count -= 1;
                        return Reader::Done;
                    };
                    assert!(!self.freed_indexes.contains(&ix), "reader read freed index {ix}");
                    if self.indexes[&ix].contains(&port) {
                        Reader::Using(s, port)
                    } else {
                        self.slots[s].count -= 1;
                        Reader::Done
                    }
                }
                Reader::Using(s, p) => {
                    assert!(!self.freed_ports.contains(&p), "port {p} used after free");
                    self.slots[s].count -= 1;
                    Reader::Done
                }
                Reader::Done => Reader::Done,
            }
        }

        /// Writer's `update` step `phase` removing `port` (or closing when `port` is None).
        /// Returns the next phase, or None when it cannot proceed yet (a wait).
        fn update_step(&mut self, phase: u8, port: u32) -> Option<u8> {
            let g = self.generation;
            let stale = Self::slot_of(g + 1);
            let old = Self::slot_of(g);
            match phase {
                // Remove from the master copy (into garbage).
                0 => {
                    if self.live_ports.remove(&port) {
                        self.garbage.insert(port);
                    }
                    Some(1)
                }
                // Run the stale slot down if it is not yet (set flag).
                1 => {
                    if !self.stale_run_down {
                        self.slots[stale].run_down = true;
                    }
                    Some(2)
                }
                // ... and wait for its readers.
                2 => (self.slots[stale].count == 0).then_some(3),
                // Replace its index (free the old one), reinitialize, publish.
                3 => {
                    let id = self.next_index;
                    self.next_index += 1;
                    self.indexes.insert(id, self.live_ports.clone());
                    if let Some(prev) = self.slots[stale].index.replace(id) {
                        self.freed_indexes.insert(prev);
                    }
                    self.slots[stale].run_down = false;
                    self.generation = g + 1;
                    Some(4)
                }
                // Run the old slot down...
                4 => {
                    let old_after = Self::slot_of(self.generation - 1);
                    let _ = old;
                    self.slots[old_after].run_down = true;
                    Some(5)
                }
                // ... wait, then free the garbage.
                5 => {
                    let old_after = Self::slot_of(self.generation - 1);
                    if self.slots[old_after].count != 0 {
                        return None;
                    }
                    self.stale_run_down = true;
                    let garbage = std::mem::take(&mut self.garbage);
                    self.freed_ports.extend(garbage);
                    Some(6)
                }
                _ => Some(6),
            }
        }

        #[allow(clippy::too_many_lines, reason = "one arm per actor step, as in the driver")]
        fn step(&mut self, i: usize) -> bool {
            let actor = self.actors[i];
            let next = match actor {
                Actor::Classify { r: Reader::Done, .. }
                | Actor::Restore { done: true, .. }
                | Actor::Delete { phase: 7, .. }
                | Actor::Stop { phase: 4, .. } => return false,
                Actor::Classify { port, r } => Actor::Classify { port, r: self.read_step(r, port) },
                Actor::Restore { port, .. } => {
                    let mut p = self.pending();
                    let ctx = 0x1000 + self.pended.len();
                    if let Ok(id) = p.push(ctx, key(port), vec![1]) {
                        self.pending_items.push((id, ctx, port, false));
                        self.next_pending = id;
                        self.pended.push(ctx);
                    }
                    Actor::Restore { port, done: true }
                }
                Actor::Worker { phase: 0, .. } => {
                    let mut p = self.pending();
                    match p.take_next() {
                        Some((id, k, _)) => {
                            for e in &mut self.pending_items {
                                if e.0 == id {
                                    e.3 = true;
                                }
                            }
                            Actor::Worker { phase: 1, job: Some((id, k.port)), r: Reader::Start }
                        }
                        None => return false,
                    }
                }
                // Decoded (outside locks); remove its entry: whoever removes completes.
                Actor::Worker { phase: 1, job: Some((id, port)), .. } => {
                    let mut p = self.pending();
                    match p.remove(id) {
                        Some(_) => {
                            self.pending_items.retain(|e| e.0 != id);
                            Actor::Worker { phase: 2, job: Some((id, port)), r: Reader::Start }
                        }
                        None => Actor::Worker { phase: 0, job: None, r: Reader::Start },
                    }
                }
                // Apply under the port lock, found through the index (a reader).
                Actor::Worker { phase: 2, job: Some((id, port)), r } => {
                    let r = self.read_step(r, port);
                    if r == Reader::Done {
                        let ctx = Self::pended_ctx(id);
                        self.complete(ctx);
                        Actor::Worker { phase: 0, job: None, r: Reader::Start }
                    } else {
                        Actor::Worker { phase: 2, job: Some((id, port)), r }
                    }
                }
                Actor::Worker { .. } => return false,
                // Port delete: cancel its pended restores, then update the index.
                Actor::Delete { port, phase: 0 } => {
                    if self.closed {
                        Actor::Delete { port, phase: 7 }
                    } else {
                        let mut p = self.pending();
                        match p.remove_where(|k| *k == key(port)) {
                            Some(e) => {
                                self.pending_items.retain(|x| x.1 != e.completion);
                                self.complete(e.completion);
                                Actor::Delete { port, phase: 0 }
                            }
                            None => Actor::Delete { port, phase: 1 },
                        }
                    }
                }
                // `update` runs under the writers' passive mutex: one writer at a time, and it
                // checks `closed` first (then it changes nothing).
                Actor::Delete { port, phase: 1 } => {
                    let other_writer = self.actors.iter().enumerate().any(|(j, a)| {
                        j != i
                            && matches!(
                                a,
                                Actor::Delete { phase: 2..=6, .. } | Actor::Stop { phase: 2..=3 }
                            )
                    });
                    if other_writer {
                        return false;
                    }
                    if self.closed {
                        Actor::Delete { port, phase: 7 }
                    } else {
                        match self.update_step(0, port) {
                            Some(n) => Actor::Delete { port, phase: n + 1 },
                            None => return false,
                        }
                    }
                }
                Actor::Delete { port, phase } => match self.update_step(phase - 1, port) {
                    Some(n) => Actor::Delete { port, phase: n + 1 },
                    None => return false,
                },
                // Stop: close the pending set and complete everything in it.
                Actor::Stop { phase: 0 } => {
                    let mut p = self.pending();
                    p.close();
                    self.pending_closed = true;
                    match p.remove_where(|_| true) {
                        Some(e) => {
                            self.pending_items.retain(|x| x.1 != e.completion);
                            self.complete(e.completion);
                            Actor::Stop { phase: 0 }
                        }
                        None => Actor::Stop { phase: 1 },
                    }
                }
                // PortMap::close: closed flag, run both slots down (set), then wait, free all.
                Actor::Stop { phase: 1 } => {
                    // Serialized with writers by the passive mutex: only when no delete is
                    // mid-update.
                    if self.actors.iter().any(|a| matches!(a, Actor::Delete { phase: 2..=6, .. })) {
                        return false;
                    }
                    self.closed = true;
                    self.slots[0].run_down = true;
                    self.slots[1].run_down = true;
                    Actor::Stop { phase: 2 }
                }
                Actor::Stop { phase: 2 } => {
                    if self.slots.iter().any(|s| s.count != 0) {
                        return false;
                    }
                    Actor::Stop { phase: 3 }
                }
                Actor::Stop { .. } => {
                    for s in &mut self.slots {
                        if let Some(ix) = s.index.take() {
                            self.freed_indexes.insert(ix);
                        }
                    }
                    let all: Vec<u32> = self.live_ports.iter().copied().collect();
                    self.freed_ports.extend(all);
                    self.live_ports.clear();
                    Actor::Stop { phase: 4 }
                }
            };
            if next == actor {
                return false;
            }
            self.actors[i] = next;
            true
        }

        fn pended_ctx(id: u64) -> usize {
            // Contexts are 0x1000 + order of pending; ids start at 1 in the same order.
            0x1000 + usize::try_from(id - 1).unwrap()
        }

        fn check_end(&self) -> Result<(), String> {
            for ctx in &self.pended {
                let n = self.completed.get(ctx).copied().unwrap_or(0);
                if n != 1 {
                    return Err(format!("notification {ctx:#x} completed {n} times"));
                }
            }
            if self.slots.iter().any(|s| s.count != 0) {
                return Err("a rundown reference was never released".to_owned());
            }
            if !self.live_ports.is_empty() {
                return Err("ports left after stop".to_owned());
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
            // Every actor is done or blocked: with a stop among them, the end state.
            let blocked: Vec<_> = w
                .actors
                .iter()
                .filter(|a| {
                    !matches!(
                        a,
                        Actor::Classify { r: Reader::Done, .. }
                            | Actor::Restore { done: true, .. }
                            | Actor::Worker { phase: 0, .. }
                            | Actor::Delete { phase: 7, .. }
                            | Actor::Stop { phase: 4, .. }
                    )
                })
                .collect();
            assert!(blocked.is_empty(), "deadlock: {blocked:?} in {w:#?}");
            if let Err(e) = w.check_end() {
                panic!("{e} in final state {w:#?}");
            }
            *ends += 1;
        }
    }

    #[test]
    fn port_delete_vs_classify_vs_restore_vs_unload_never_reads_a_freed_port() {
        // The test ids are sequential: PendingSet ids start at 1 in push order, which
        // `pended_ctx` relies on (ids also advance for fillers, so keep restores first).
        let actors = vec![
            Actor::Restore { port: 1, done: false },
            Actor::Classify { port: 1, r: Reader::Start },
            Actor::Classify { port: 2, r: Reader::Start },
            Actor::Worker { phase: 0, job: None, r: Reader::Start },
            Actor::Delete { port: 1, phase: 0 },
            Actor::Stop { phase: 0 },
        ];
        let mut seen = HashSet::new();
        let mut ends = 0;
        explore(&World::new(&[1, 2], actors), &mut seen, &mut ends);
        assert!(ends >= 2 && seen.len() > 5_000, "{ends} end states, {} states", seen.len());
    }

    #[test]
    fn two_deletes_and_a_classify_interleave_safely() {
        let actors = vec![
            Actor::Classify { port: 2, r: Reader::Start },
            Actor::Classify { port: 1, r: Reader::Start },
            Actor::Delete { port: 1, phase: 0 },
            Actor::Delete { port: 2, phase: 0 },
            Actor::Stop { phase: 0 },
        ];
        let mut seen = HashSet::new();
        let mut ends = 0;
        explore(&World::new(&[1, 2], actors), &mut seen, &mut ends);
        assert!(ends > 1, "{ends}");
    }

    #[test]
    fn the_model_catches_freeing_before_the_drain() {
        // A writer that frees the removed port right after publishing (no wait) must be
        // caught: a reader that loaded the old index uses the freed port.
        let mut w = World::new(&[1], vec![Actor::Classify { port: 1, r: Reader::Start }]);
        for _ in 0..3 {
            w.step(0); // Loaded -> Incremented -> Holding
        }
        assert_eq!(w.actors[0], Actor::Classify { port: 1, r: Reader::Holding(0) });
        w.step(0); // Using(0, 1)
        // Broken writer: remove and free at once.
        w.live_ports.remove(&1);
        w.freed_ports.insert(1);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.step(0)));
        assert!(r.is_err(), "use after free detected");
    }
}
