//! What a lookup answers: the name, its port block, and a comment for people.

use crate::name::{ServiceName, TEREDO};
use crate::reservation::{Reservation, Transport};

/// One result set of a lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The name looked up (lower case).
    pub name: ServiceName,
    /// The ports.
    pub reservation: Reservation,
    /// A line for people (`lpszComment`).
    pub comment: String,
}

impl Answer {
    /// `teredo` → the Teredo client's current UDP port.
    ///
    /// # Errors
    /// Port 0 is not a port.
    pub fn teredo(port: u16) -> Result<Self, crate::reservation::InvalidBlock> {
        let reservation = Reservation::new(Transport::Udp, port, 1)?;
        let name = ServiceName::parse(TEREDO).map_err(|_| crate::reservation::InvalidBlock)?;
        Ok(Self { name, reservation, comment: format!("Teredo client port (udp {port})") })
    }

    /// A registered name → its persistent reservation.
    #[must_use]
    pub fn registered(name: ServiceName, reservation: Reservation) -> Self {
        let comment = format!("persistent reservation {reservation}");
        Self { name, reservation, comment }
    }
}
