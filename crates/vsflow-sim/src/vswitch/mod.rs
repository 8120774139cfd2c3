//! The Hyper-V extensible switch as a WFP callout sees it.
//!
//! - [`notify`]: the WFP side of the vSwitch event API (`FwpsvSwitchEventsSubscribe0`):
//!   subscriptions and the notifications in flight, pended and completed;
//! - [`packet`]: packets as the vSwitch transport layers hand them to a callout (`NET_BUFFER_LIST`
//!   and MDL chains whose data starts at the IP header);
//! - [`wire`]: packets crossing a simulated switch, classified layer by layer.
//!
//! The switch itself (its ports, NICs and event sequences) is driven by [`crate::Host`].

pub mod notify;
pub mod packet;
pub mod wire;

pub use notify::{Completed, Outstanding, Subscription, WfpVSwitch};
