//! The documented behaviour of the persistent-reservation APIs, as a model.
//!
//! `Create/Delete/LookupPersistent{Tcp,Udp}PortReservation`: the tests use the model as the
//! Windows double, and it documents what the Windows layer must handle.
//!
//! - Create: not elevated -> `ERROR_ACCESS_DENIED`; zero start or count, or past 65535 ->
//!   `ERROR_INVALID_PARAMETER` (netports rejects these before calling); overlap with a
//!   reservation or a port in use -> `ERROR_SHARING_VIOLATION`; else a token.
//! - Delete: not elevated -> `ERROR_ACCESS_DENIED`; no exact match -> `ERROR_NOT_FOUND`.
//! - Lookup: exact start and count match, else `ERROR_NOT_FOUND`.
//! - Tokens change at every restart: they are never stored.

use std::collections::BTreeMap;

use crate::error::win32;
use crate::range::{PortBlock, Protocol};

/// What a persistent-reservation backend must do; implemented by Windows and by [`Model`].
pub trait Reservations {
    /// Creates a reservation; returns its token.
    ///
    /// # Errors
    /// The Win32 error code.
    fn create(&mut self, proto: Protocol, block: PortBlock) -> Result<u64, u32>;
    /// Deletes a reservation.
    ///
    /// # Errors
    /// The Win32 error code.
    fn delete(&mut self, proto: Protocol, block: PortBlock) -> Result<(), u32>;
    /// Looks a reservation up; returns its token.
    ///
    /// # Errors
    /// The Win32 error code.
    fn lookup(&self, proto: Protocol, block: PortBlock) -> Result<u64, u32>;
}

/// An in-memory host following the documented behaviour.
#[derive(Debug, Default)]
pub struct Model {
    /// Whether the caller is elevated.
    pub elevated: bool,
    /// Ports in use (bound) per protocol.
    pub in_use: Vec<(Protocol, u16)>,
    reservations: BTreeMap<(Protocol, PortBlock), u64>,
    next_token: u64,
}

impl Model {
    /// An elevated host with nothing reserved.
    #[must_use]
    pub fn elevated() -> Self {
        Self { elevated: true, next_token: 0x1000, ..Self::default() }
    }

    /// Simulates a restart: every token changes, reservations persist.
    pub fn restart(&mut self) {
        for token in self.reservations.values_mut() {
            self.next_token += 7;
            *token = self.next_token;
        }
    }

    /// Current reservations.
    pub fn list(&self) -> impl Iterator<Item = (Protocol, PortBlock)> + '_ {
        self.reservations.keys().copied()
    }
}

impl Reservations for Model {
    fn create(&mut self, proto: Protocol, block: PortBlock) -> Result<u64, u32> {
        if !self.elevated {
            return Err(win32::ACCESS_DENIED);
        }
        if block.start == 0
            || block.count == 0
            || u32::from(block.start) + u32::from(block.count) > 65_536
        {
            return Err(win32::INVALID_PARAMETER);
        }
        let overlaps = self.reservations.keys().any(|(p, b)| *p == proto && b.overlaps(&block));
        let busy = self.in_use.iter().any(|(p, port)| *p == proto && block.contains(*port));
        if overlaps || busy {
            return Err(win32::SHARING_VIOLATION);
        }
        self.next_token += 1;
        self.reservations.insert((proto, block), self.next_token);
        Ok(self.next_token)
    }

    fn delete(&mut self, proto: Protocol, block: PortBlock) -> Result<(), u32> {
        if !self.elevated {
            return Err(win32::ACCESS_DENIED);
        }
        self.reservations.remove(&(proto, block)).map(|_| ()).ok_or(win32::NOT_FOUND)
    }

    fn lookup(&self, proto: Protocol, block: PortBlock) -> Result<u64, u32> {
        self.reservations.get(&(proto, block)).copied().ok_or(win32::NOT_FOUND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: u16, n: u16) -> PortBlock {
        PortBlock::new(s, n).unwrap()
    }

    #[test]
    fn the_model_follows_the_documented_behaviour() {
        let mut m = Model::default();
        assert_eq!(m.create(Protocol::Tcp, b(5000, 10)), Err(win32::ACCESS_DENIED));
        m.elevated = true;
        let t = m.create(Protocol::Tcp, b(5000, 10)).unwrap();
        assert_eq!(m.lookup(Protocol::Tcp, b(5000, 10)), Ok(t));
        assert_eq!(m.lookup(Protocol::Tcp, b(5000, 9)), Err(win32::NOT_FOUND), "exact match only");
        assert_eq!(m.create(Protocol::Tcp, b(5009, 5)), Err(win32::SHARING_VIOLATION));
        assert!(m.create(Protocol::Udp, b(5009, 5)).is_ok(), "protocols are separate");
        m.in_use.push((Protocol::Tcp, 6001));
        assert_eq!(m.create(Protocol::Tcp, b(6000, 5)), Err(win32::SHARING_VIOLATION));
        m.restart();
        assert_ne!(m.lookup(Protocol::Tcp, b(5000, 10)), Ok(t), "tokens change at restart");
        assert_eq!(m.delete(Protocol::Tcp, b(5000, 10)), Ok(()));
        assert_eq!(m.delete(Protocol::Tcp, b(5000, 10)), Err(win32::NOT_FOUND));
    }
}
