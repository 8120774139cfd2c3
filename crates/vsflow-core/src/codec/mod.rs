//! The runtime-state codec: the bytes a port's state becomes on the source host of a live
//! migration and is rebuilt from on the destination host.
//!
//! - [`encode`] writes a port (or a [`PortState`]) into a versioned, checksummed blob no
//!   larger than the configured cap, keeping the most valuable flows if they do not all fit.
//! - [`decode`] validates a blob completely and returns the [`PortState`] it holds. Blobs are
//!   untrusted (they cross hosts and driver versions): every malformation is a
//!   [`DecodeError`], never a panic.
//! - [`apply`] installs a decoded state into a port, all or nothing. A restore decodes with
//!   [`decode_staged`], which places the flows in the port's future table as it reads them
//!   ([`Staged`]), and applies that with [`apply_staged`]; [`apply`] places a decoded list
//!   the same way first.
//!
//! Times travel as *ages* relative to the save instant and are rebased on the destination's
//! clock. The byte format is specified in `docs/runtime-state-format.md` and [`format`].

mod apply;
mod crc;
mod decode;
mod encode;
mod encoder;
mod error;
pub mod format;
mod reader;
pub mod rice;
mod rule;
mod stage;

use alloc::vec::Vec;

pub use self::apply::{
    ApplyConfig, ApplyReport, apply, apply_degraded, apply_staged, apply_with, carried_policy,
};
pub use self::crc::crc32c;
pub use self::decode::{
    DEFAULT_DIGEST_KEY, DecodeConfig, Decoded, DecodedStaged, SalvagedPolicy, UnknownMajor,
    blob_digest, decode, decode_staged, peek_version, salvage_policy,
};
pub use self::encode::{EncodeConfig, EncodeSummary, encode, encode_no_state, encode_state};
pub use self::encoder::{Encoder, PREPARE_HASH, PREPARE_SCAN};
pub use self::error::{ApplyError, DecodeError};
pub use self::rule::{RULE_LEN, rule_from_bytes, rule_to_bytes};
pub use self::stage::{StageConfig, Staged, stage_saved};

use crate::counters::PortCounters;
use crate::fingerprint::FingerprintSet;
use crate::flow::{Admission, FlowKey, FlowRecord, FlowState, Opener};
use crate::guid::Guid;
use crate::policy::{Mode, RuleSet};
use crate::port::PortIdentity;
use crate::time::Tick;

/// Default size cap of one port's blob: 60 KiB. WFP packs every callout's blob for a NIC into
/// one `NDIS_SWITCH_NIC_SAVE_STATE` whose `SaveDataSize` is a USHORT; the cap leaves room for
/// WFP's own framing.
pub const DEFAULT_CAP: usize = 60 * 1024;

/// A flow as stored in a blob: its key, its state, and its times as ages at the save instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SavedFlow {
    /// The flow's key.
    pub key: FlowKey,
    /// Connection state.
    pub state: FlowState,
    /// Who opened it.
    pub opener: Opener,
    /// Why inbound traffic is allowed.
    pub admission: Admission,
    /// FIN bits.
    pub fin_seen: u8,
    /// Packets per direction.
    pub packets: [u64; 2],
    /// Bytes per direction.
    pub bytes: [u64; 2],
    /// Ticks between the first packet and the save.
    pub first_age: Tick,
    /// Ticks between the latest packet and the save (`<= first_age`).
    pub last_age: Tick,
}

impl SavedFlow {
    /// A live record as of `now`.
    #[must_use]
    pub const fn from_record(key: FlowKey, r: &FlowRecord, now: Tick) -> Self {
        let (first_age, last_age) = Self::ages(r, now);
        Self {
            key,
            state: r.state,
            opener: r.opener,
            admission: r.admission,
            fin_seen: r.fin_seen,
            packets: r.packets,
            bytes: r.bytes,
            first_age,
            last_age,
        }
    }

    /// A live record's `(first_age, last_age)` as of `now`: what [`SavedFlow::from_record`]
    /// saves (the at-cap save writes entries straight from the table with these).
    #[must_use]
    pub const fn ages(r: &FlowRecord, now: Tick) -> (Tick, Tick) {
        let first_age = now.saturating_sub(r.first_seen);
        let last_age = now.saturating_sub(r.last_seen);
        // A record whose first_seen lies in the future (caller clock bug) still saves with
        // last_age <= first_age.
        (first_age, if last_age < first_age { last_age } else { first_age })
    }

    /// The live record on a host whose clock reads `now` (ages rebased, clamped at zero).
    #[must_use]
    pub const fn to_record(&self, now: Tick) -> FlowRecord {
        FlowRecord {
            state: self.state,
            opener: self.opener,
            admission: self.admission,
            fin_seen: self.fin_seen,
            packets: self.packets,
            bytes: self.bytes,
            first_seen: now.saturating_sub(self.first_age),
            last_seen: now.saturating_sub(self.last_age),
        }
    }

    /// Writes [`SavedFlow::to_record`] with `admission` in place of the saved one (a restore
    /// maps carried admissions to this host's rule versions) into `out`, field by field (a
    /// restore's bulk insert writes the table's slot in place: [`crate::flow::FlowTable::insert_unique`]).
    pub const fn write_record(&self, now: Tick, admission: Admission, out: &mut FlowRecord) {
        out.state = self.state;
        out.opener = self.opener;
        out.admission = admission;
        out.fin_seen = self.fin_seen;
        out.packets = self.packets;
        out.bytes = self.bytes;
        out.first_seen = now.saturating_sub(self.first_age);
        out.last_seen = now.saturating_sub(self.last_age);
    }

    /// Sort key of the save-cap policy: established TCP first, then most recently active.
    /// Smaller is more valuable; equal ranks keep the order of the table (deterministic).
    #[must_use]
    pub fn value_rank(&self) -> u64 {
        let established = u64::from(self.state != FlowState::Established) << 63;
        established | self.last_age.min(u64::MAX >> 1)
    }
}

/// What a blob says about the saving host's handling of the cap.
///
/// `flows_in_table` = exact flows + `flows_fingerprinted` + `flows_dropped`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SaveInfo {
    /// Flows the port's table held at the save.
    pub flows_in_table: u32,
    /// Flows carried neither exactly nor as a fingerprint (lost to the cap).
    pub flows_dropped: u32,
    /// Established connections carried as fingerprints (format 1.1; 0 in 1.0 blobs).
    pub flows_fingerprinted: u32,
    /// Allow rules left out because they did not fit the cap (format 1.1), plus those this
    /// host could not read ([`SaveInfo::rules_unread`]): the carried rule set is incomplete,
    /// so no carried rule admission is trusted.
    pub rules_dropped: u32,
    /// Not in the blob: allow rules it carries that the decode had no memory for (a few bytes
    /// a rule). The state then carries an empty rule set (fail closed: nothing the rules would
    /// admit is, every carried flow they admitted is re-checked), never a failed decode that
    /// loses every carried flow (review s7 F1, faults).
    pub rules_unread: u32,
    /// Not in the blob: fingerprints it carries that the decode had no memory for (4 bytes a
    /// fingerprint; review s6 R6-5). Those connections are judged as uncarried ones; the apply
    /// counts them `untracked` (review s7 F3: they were lost uncounted).
    pub fingerprints_unread: u32,
}

/// Everything a blob carries for one port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortState {
    /// Format minor version of the blob (decode) or to write (always [`format::MINOR`]).
    pub minor: u16,
    /// The provider GUID of the saving driver (the vSwitch subscription's providerGuid).
    pub provider: Guid,
    /// The port's durable identity on the saving host.
    pub identity: PortIdentity,
    /// The VM network adapter's durable name (`NicName`), if the saving host knew it (1.1).
    pub nic: Option<PortIdentity>,
    /// The port's mode.
    pub mode: Mode,
    /// The port's allow rules.
    pub rules: RuleSet,
    /// Saved flows (exact records). Empty in a state from [`decode_staged`]: its flows are in
    /// the [`Staged`] table beside it.
    pub flows: Vec<SavedFlow>,
    /// Fingerprints of established connections saved without an exact record (1.1).
    pub fingerprints: FingerprintSet,
    /// The port's counters.
    pub counters: PortCounters,
    /// The saving host's cap accounting.
    pub save_info: SaveInfo,
    /// Records of unknown type the decoder skipped (a newer minor version wrote them).
    pub skipped_records: u32,
    /// Identifies the blob this state was decoded from ([`blob_digest`] under the decoder's
    /// key; never 0), so that applying it twice to a port is recognised; 0 for states built
    /// otherwise.
    pub digest: u64,
}
