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
