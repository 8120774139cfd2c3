//! The decoder: untrusted bytes to a validated [`PortState`].
//!
//! Order of checks: size bounds, magic, declared length, CRC-32C, major version, then the
//! header and every record field by field. Nothing is indexed directly; every read goes
//! through a bounds-checked cursor.

use alloc::vec::Vec;
use core::hash::Hasher;

use siphasher::sip::SipHasher13;

use super::error::{ApplyError, DecodeError};
use super::format::{self, compact, hdr, rec};
use super::reader::Reader;
use super::stage::{StageConfig, Staged, stage_saved};
use super::{PortState, SaveInfo, SavedFlow, crc32c};
use crate::counters::PortCounters;
use crate::fingerprint::FingerprintSet;
use crate::flow::{Admission, FlowKey, FlowState, Opener};
use crate::guid::Guid;
use crate::packet::{IpFamily, protocol};
use crate::policy::{AllowRule, MAX_RULES, Mode, PortRange, Prefix, RuleSet};
use crate::port::{CarriedPolicy, MAX_NAME_UNITS, PortIdentity};
use crate::time::TICKS_PER_SECOND;

/// What to do with a blob of a format major version this build cannot read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnknownMajor {
    /// Reject it: the restore fails (and with it Hyper-V's VM restore).
    #[default]
    Strict,
    /// Accept it as an empty state (the port starts with no flows) and count it.
    Lenient,
}

/// Decoder settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeConfig {
    /// If set, blobs saved under another provider GUID are rejected.
    pub expected_provider: Option<Guid>,
    /// Policy for unknown major versions.
    pub unknown_major: UnknownMajor,
    /// Largest blob accepted (default 65,535: `SaveDataSize` is a USHORT).
    pub max_len: usize,
    /// Key of the digest that identifies a blob ([`blob_digest`], [`PortState::digest`]). The
    /// driver uses a per-boot random key, so nobody can build two blobs with one digest; the
    /// default is a fixed key (tools and tests).
    pub digest_key: [u64; 2],
    /// Read as a reader of this minor version does (default: [`format::MINOR`], this build):
    /// record types and header flags that later minors added are unknown to it, so it skips
    /// those records and refuses those flags, exactly as the older build's decoder does.
    /// Cross-version tests read new blobs as a 1.1 reader with it.
    pub reader_minor: u16,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            expected_provider: None,
            unknown_major: UnknownMajor::Strict,
            max_len: usize::from(u16::MAX),
            digest_key: DEFAULT_DIGEST_KEY,
            reader_minor: format::MINOR,
        }
    }
}

/// The fixed digest key of [`DecodeConfig::default`].
pub const DEFAULT_DIGEST_KEY: [u64; 2] = [0x7673_666c_6f77_2d62, 0x6c6f_622d_6964_2d31];

/// A blob's identity: SipHash-1-3 under `key` of its length and bytes, never 0.
///
/// The length (u64 LE) is hashed first, then the bytes. Two different blobs share it with
/// probability about 2^-64 under a key they were not built for (a CRC identifies nothing: a
/// different blob with the same CRC and length is easy to build). SipHash-1-3, the keyed
/// function std's `HashMap` relies on against chosen keys, not SipHash-2-4: the digest only
/// recognises a blob already applied under a per-boot secret key (a forged match would make a
/// port keep the state it has, never open it), and hashing 45-60 KB is on the synchronous
/// restore's path (issue 18: half the rounds, about 100,000 instructions a restore).
#[must_use]
pub fn blob_digest(key: [u64; 2], bytes: &[u8]) -> u64 {
    let mut h = SipHasher13::new_with_keys(key[0], key[1]);
    h.write(&(bytes.len() as u64).to_le_bytes());
    h.write(bytes);
    h.finish() | 1
}

/// A successful decode.
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per restore; boxing would add an infallible allocation"
)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A state to apply.
    State(PortState),
    /// An intact blob of a major version this build cannot read, accepted as empty because
    /// the configuration is [`UnknownMajor::Lenient`].
    UnsupportedMajor {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// An intact no-state blob (1.2, [`format::FLAG_NO_STATE`]): the source host had no state
    /// for the port. It carries no policy: the destination keeps or closes its own.
    NoState {
        /// Why ([`format::no_state`]).
        reason: u8,
    },
}

/// A successful [`decode_staged`]: [`Decoded`] with the state's flows placed in a table.
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per restore; boxing would add an infallible allocation"
)]
#[derive(Debug)]
pub enum DecodedStaged {
    /// A state to apply ([`super::apply_staged`]): its `flows` list is empty, they are in the
    /// staged table, or in the error that placing them met (a duplicate key, memory), which
    /// the apply reports (the state's policy still stands).
    State(PortState, Result<Staged, ApplyError>),
    /// As [`Decoded::UnsupportedMajor`].
    UnsupportedMajor {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// As [`Decoded::NoState`].
    NoState {
        /// Why ([`format::no_state`]).
        reason: u8,
    },
}

/// The mode and rules of a 1.2 blob that failed to decode, recovered through their own
/// integrity check ([`format::rec::POLICY_CHECK`]): damage after them does not lose them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SalvagedPolicy {
    /// The VM's mode.
    pub mode: Mode,
    /// Its rules.
    pub rules: RuleSet,
    /// False if the source's cap left rules out.
    pub complete: bool,
}

impl SalvagedPolicy {
    /// As the policy a restore installs.
    #[must_use]
    pub const fn carried(&self) -> CarriedPolicy<'_> {
        CarriedPolicy { mode: self.mode, rules: &self.rules, complete: self.complete }
    }
}

const MIN_LEN: usize = format::FROZEN_PREFIX_LEN + format::TRAILER_LEN;

/// Checks size, magic, declared length and CRC, and returns the format version, without
/// interpreting anything version-specific. Every major keeps this frozen prefix.
///
/// # Errors
/// The first failed check.
pub fn peek_version(bytes: &[u8], max_len: usize) -> Result<(u16, u16), DecodeError> {
    let len = bytes.len();
    if len < MIN_LEN {
        return Err(DecodeError::TooShort { len });
    }
    if len > max_len {
        return Err(DecodeError::TooLong { len, max: max_len });
    }
    let mut r = Reader::new(bytes);
    let magic: [u8; 4] = r.array().ok_or(DecodeError::TooShort { len })?;
    if magic != format::MAGIC {
        return Err(DecodeError::BadMagic { found: magic });
    }
    let major = r.u16().ok_or(DecodeError::TooShort { len })?;
    let minor = r.u16().ok_or(DecodeError::TooShort { len })?;
    let mut r = Reader::new(bytes.get(hdr::TOTAL_LEN..).ok_or(DecodeError::TooShort { len })?);
    let declared = r.u32().ok_or(DecodeError::TooShort { len })?;
    if usize::try_from(declared).ok() != Some(len) {
        return Err(DecodeError::LengthMismatch { declared, actual: len });
    }
    let (body, trailer) = bytes.split_at(len - format::TRAILER_LEN);
    let stored = Reader::new(trailer).u32().ok_or(DecodeError::TooShort { len })?;
    let computed = crc32c(body);
    if stored != computed {
        return Err(DecodeError::BadChecksum { stored, computed });
    }
    Ok((major, minor))
}

/// Decodes and validates a blob completely.
///
/// # Errors
/// A [`DecodeError`] naming the first problem found. Arbitrary input never panics.
pub fn decode(bytes: &[u8], config: &DecodeConfig) -> Result<Decoded, DecodeError> {
    Ok(match decode_with(bytes, config, InList)? {
        Decoding::State(state, ()) => Decoded::State(state),
        Decoding::UnsupportedMajor { major, minor } => Decoded::UnsupportedMajor { major, minor },
        Decoding::NoState { reason } => Decoded::NoState { reason },
    })
}

/// [`decode`] for a restore: the state's flows are placed as they are read.
///
/// They go in a table configured as `stage` says (the port's table configuration, ages rebased
/// on the instant the blob was received): the table the port gets from
/// [`super::apply_staged`]. The same checks, errors and state as [`decode`], the flows apart.
///
/// # Errors
/// As [`decode`]. What placing the flows meets (a duplicate key, memory) is not a decode
/// error: it is the apply's ([`DecodedStaged::State`]).
pub fn decode_staged(
    bytes: &[u8],
    config: &DecodeConfig,
    stage: &StageConfig,
) -> Result<DecodedStaged, DecodeError> {
    Ok(match decode_with(bytes, config, stage)? {
        Decoding::State(port, flows) => DecodedStaged::State(port, flows),
        Decoding::UnsupportedMajor { major, minor } => {
            DecodedStaged::UnsupportedMajor { major, minor }
        }
        Decoding::NoState { reason } => DecodedStaged::NoState { reason },
    })
}

/// Where a decode puts the state's flows: in its list ([`decode`]) or placed in a staged
/// table ([`decode_staged`]).
trait FlowsOut {
    /// What the decode returns beside the state.
    type Out;
    /// The staged table's configuration, if the flows are placed.
    fn stage(&self) -> Option<&StageConfig>;
    /// The flows' destination once every record is read: `direct` holds the flows the decoder
    /// placed as it read them (`None`: they are in `flows`).
    fn finish(
        self,
        flows: &mut Vec<SavedFlow>,
        direct: Option<Result<Staged, crate::Error>>,
    ) -> Self::Out;
}

/// The flows stay in the state's list.
struct InList;

impl FlowsOut for InList {
    type Out = ();
    fn stage(&self) -> Option<&StageConfig> {
        None
    }
    fn finish(self, _: &mut Vec<SavedFlow>, _: Option<Result<Staged, crate::Error>>) {}
}

impl FlowsOut for &StageConfig {
    type Out = Result<Staged, ApplyError>;
    fn stage(&self) -> Option<&StageConfig> {
        Some(self)
    }
    fn finish(
        self,
        flows: &mut Vec<SavedFlow>,
        direct: Option<Result<Staged, crate::Error>>,
    ) -> Self::Out {
        let staged = match direct {
            Some(Ok(staged)) => Ok(staged.finish()),
            Some(Err(e)) => Err(ApplyError::Core(e)),
            // A list the decoder could not place as it read it (a 1.0 record, more flows
            // than the bound): placed now, then dropped.
            None => stage_saved(flows, self).map_err(ApplyError::Core),
        };
        *flows = Vec::new();
        staged
    }
}

/// [`decode`] and [`decode_staged`].
#[allow(clippy::large_enum_variant, reason = "returned once per decode, moved once")]
enum Decoding<T> {
    State(PortState, T),
    UnsupportedMajor { major: u16, minor: u16 },
    NoState { reason: u8 },
}

fn decode_with<F: FlowsOut>(
    bytes: &[u8],
    config: &DecodeConfig,
    out: F,
) -> Result<Decoding<F::Out>, DecodeError> {
    let (major, minor) = peek_version(bytes, config.max_len)?;
    if major != format::MAJOR {
        return match config.unknown_major {
            UnknownMajor::Strict => Err(DecodeError::UnsupportedMajor { major, minor }),
            UnknownMajor::Lenient => Ok(Decoding::UnsupportedMajor { major, minor }),
        };
    }
    let body = bytes.get(..bytes.len() - format::TRAILER_LEN).unwrap_or(&[]);
    let flags = Reader::new(body.get(hdr::FLAGS..).unwrap_or(&[])).u16().unwrap_or(0);
    if flags & format::FLAG_NO_STATE != 0 && config.reader_minor >= 2 {
        return decode_no_state(body, config).map(|reason| Decoding::NoState { reason });
    }
    let (mut state, staged) = decode_v1(body, minor, config, out)?;
    state.digest = blob_digest(config.digest_key, bytes);
    Ok(Decoding::State(state, staged))
}

/// The fixed header and port identity of a 1.x blob, checked.
struct Header<'a> {
    /// Positioned after the identity: at the first record.
    records: Reader<'a>,
    flags: u16,
    provider: Guid,
    record_count: u32,
    identity: PortIdentity,
}

/// Reads and checks the header up to the port identity.
fn header<'a>(
    body: &'a [u8],
    config: &DecodeConfig,
    known_flags: u16,
) -> Result<Header<'a>, DecodeError> {
    let short = DecodeError::TooShort { len: body.len() + format::TRAILER_LEN };
    let mut r = Reader::new(body);
    r.take(hdr::HEADER_LEN).ok_or(short)?;
    let header_len = r.u16().ok_or(short)?;
    let flags = r.u16().ok_or(short)?;
    let _total = r.u32().ok_or(short)?;
    let provider = Guid::from_bytes(r.array().ok_or(short)?);
    let record_count = r.u32().ok_or(short)?;
    let units = r.u16().ok_or(short)?;
    let _reserved = r.u16().ok_or(short)?;
    if usize::from(header_len) < format::HEADER_LEN || usize::from(header_len) > body.len() {
        return Err(DecodeError::BadHeaderLength { len: header_len });
    }
    if flags & !known_flags != 0 {
        return Err(DecodeError::UnknownFlags { flags });
    }
    if config.expected_provider.is_some_and(|p| p != provider) {
        return Err(DecodeError::ProviderMismatch);
    }
    // Header fields of a later minor version sit between 40 and header_len: skip them.
    r.take(usize::from(header_len) - format::HEADER_LEN).ok_or(short)?;
    if usize::from(units) > MAX_NAME_UNITS {
        return Err(DecodeError::BadIdentity { units });
    }
    let id_bytes = r.take(2 * usize::from(units)).ok_or(DecodeError::BadIdentity { units })?;
    let identity = identity_from(id_bytes, units)?;
    Ok(Header { records: r, flags, provider, record_count, identity })
}

/// A no-state blob: the header (no other flag), then exactly one `NO_STATE` record.
fn decode_no_state(body: &[u8], config: &DecodeConfig) -> Result<u8, DecodeError> {
    let Header { records: mut r, flags, record_count, .. } =
        header(body, config, format::FLAG_NO_STATE)?;
    let kind = rec::NO_STATE;
    if flags != format::FLAG_NO_STATE || record_count != 1 {
        return Err(DecodeError::InvalidField {
            kind,
            entry: 0,
            field: "no-state blob records",
            value: record_count.into(),
        });
    }
    let offset = r.pos();
    let overrun = DecodeError::RecordOverrun { index: 0, offset };
    let found = r.u16().ok_or(overrun)?;
    let _flags = r.u16().ok_or(overrun)?;
    let len = r.u32().ok_or(overrun)?;
    if found != kind {
        return Err(DecodeError::MissingRecord { kind });
    }
    let payload = r.take(usize::try_from(len).map_err(|_| overrun)?).ok_or(overrun)?;
    let mut p = Reader::new(payload);
    let bad = DecodeError::BadRecordLength { kind, len };
    let reason = p.u8().ok_or(bad)?;
    let reserved = [p.u8().ok_or(bad)?, p.u8().ok_or(bad)?, p.u8().ok_or(bad)?];
    if p.remaining() != 0 || reserved != [0; 3] {
        return Err(bad);
    }
    if r.remaining() != 0 {
        return Err(DecodeError::TrailingBytes { offset: r.pos() });
    }
    Ok(reason)
}

/// The mode and rules of a blob that did not decode, if they survived.
///
/// A 1.2 (or later 1.x) blob whose first three records are `MODE`, `RULES` and a
/// `POLICY_CHECK` whose CRC-32C matches the bytes before it, under the expected provider, with
/// no header flag but those this reader knows for a state blob (`FLOWS_DROPPED`).
/// Everything after the policy may be damaged or missing (truncation included). `None` for
/// anything else: the restore then carries no policy.
#[must_use]
pub fn salvage_policy(bytes: &[u8], config: &DecodeConfig) -> Option<SalvagedPolicy> {
    let mut r = Reader::new(bytes);
    if r.array::<4>()? != format::MAGIC || r.u16()? != format::MAJOR || r.u16()? < 2 {
        return None;
    }
    // The body is everything: the trailer, if any, lies past the policy. The policy CRC covers
    // the header: with the policy intact its flags are the writer's, not damage, so a flag this
    // reader does not know is refused exactly as `decode` refuses it (a later minor may define
    // one that changes what the policy means, as 1.2's NO_STATE relies on 1.1 readers refusing
    // it), and a no-state blob carries no policy.
    let known = format::known_flags(config.reader_minor) & !format::FLAG_NO_STATE;
    let Header { records: mut r, .. } = header(bytes, config, known).ok()?;
    let mut record = |want: u16| -> Option<&[u8]> {
        let kind = r.u16()?;
        let _flags = r.u16()?;
        let len = usize::try_from(r.u32()?).ok()?;
        (kind == want).then_some(())?;
        r.take(len)
    };
    let mode = record(rec::MODE)?;
    let rules = record(rec::RULES)?;
    let check = record(rec::POLICY_CHECK)?;
    let crc_at = bytes.len().checked_sub(r.remaining())?.checked_sub(4)?;
    if check.len() != format::POLICY_CHECK_LEN {
        return None;
    }
    let mut c = Reader::new(check);
    let rules_dropped = c.u16()?;
    let _reserved = c.u16()?;
    if c.u32()? != crc32c(bytes.get(..crc_at)?) {
        return None;
    }
    let mode = Mode::from_wire(Reader::new(mode).u8()?)?;
    let (rules, unread) = decode_rules(rules).ok()?;
    Some(SalvagedPolicy { mode, rules, complete: rules_dropped == 0 && unread == 0 })
}

#[allow(clippy::too_many_lines, reason = "one linear pass over the header and records")]
fn decode_v1<F: FlowsOut>(
    body: &[u8],
    minor: u16,
    config: &DecodeConfig,
    out: F,
) -> Result<(PortState, F::Out), DecodeError> {
    let known_flags = format::known_flags(config.reader_minor) & !format::FLAG_NO_STATE;
    let Header { records: mut r, flags, provider, record_count, identity } =
        header(body, config, known_flags)?;
    let last_known = rec::last_known(config.reader_minor);
    // 1.2: the policy's own check, when present, is the third record, after MODE and RULES.
    // (It is not required: a 1.x blob may lack it, as the synthetic `v1.3-future-minor`
    // fixture, made from a 1.0 blob, does; its policy is then only covered by the blob's CRC.)
    let mut policy_check: Option<u16> = None;

    let mut mode = None;
    let mut rules = None;
    let mut rules_unread = 0u16;
    let mut counters = None;
    let mut save_info = None;
    let mut flows: Option<Vec<SavedFlow>> = None;
    let mut seen_v4 = false;
    let mut seen_v6 = false;
    let mut skipped = 0u32;
    let mut info2: Option<(u32, u32, u16)> = None;
    let mut nic = None;
    // 1.1 records whose contents depend on other records: parsed after the loop.
    let mut later: [Option<&[u8]>; 5] = [None; 5];
    for index in 0..record_count {
        let offset = r.pos();
        let overrun = DecodeError::RecordOverrun { index, offset };
        let kind = r.u16().ok_or(overrun)?;
        let _flags = r.u16().ok_or(overrun)?;
        let len = r.u32().ok_or(overrun)?;
        let payload = r.take(usize::try_from(len).map_err(|_| overrun)?).ok_or(overrun)?;
        let dup = DecodeError::DuplicateRecord { kind };
        if kind > last_known {
            // A later minor's record (or one this reader is told not to know): skipped.
            skipped = skipped.saturating_add(1);
            continue;
        }
        match kind {
            rec::MODE => {
                let v =
                    Reader::new(payload).u8().ok_or(DecodeError::BadRecordLength { kind, len })?;
                let m = Mode::from_wire(v).ok_or_else(|| DecodeError::InvalidField {
                    kind,
                    entry: 0,
                    field: "mode",
                    value: v.into(),
                })?;
                if mode.replace(m).is_some() {
                    return Err(dup);
                }
            }
            rec::RULES => {
                let (set, unread) = decode_rules(payload)?;
                rules_unread = unread;
                if rules.replace(set).is_some() {
                    return Err(dup);
                }
            }
            rec::FLOWS_V4 | rec::FLOWS_V6 => {
                let seen = if kind == rec::FLOWS_V4 { &mut seen_v4 } else { &mut seen_v6 };
                if core::mem::replace(seen, true) {
                    return Err(dup);
                }
                let list = flows.get_or_insert_with(Vec::new);
                decode_flows(kind, payload, list)?;
            }
            rec::COUNTERS => {
                let mut p = Reader::new(payload);
                let n = p.u16().ok_or(DecodeError::BadRecordLength { kind, len })?;
                if p.remaining() != 8 * usize::from(n) {
                    return Err(DecodeError::BadRecordLength { kind, len });
                }
                let c = PortCounters::from_values(core::iter::from_fn(|| p.u64()));
                if counters.replace(c).is_some() {
                    return Err(dup);
                }
            }
            rec::SAVE_INFO => {
                let mut p = Reader::new(payload);
                let bad = DecodeError::BadRecordLength { kind, len };
                let info = SaveInfo {
                    flows_in_table: p.u32().ok_or(bad)?,
                    flows_dropped: p.u32().ok_or(bad)?,
                    ..SaveInfo::default()
                };
                if save_info.replace(info).is_some() {
                    return Err(dup);
                }
            }
            rec::SAVE_INFO2 => {
                let mut p = Reader::new(payload);
                let bad = DecodeError::BadRecordLength { kind, len };
                let v = (p.u32().ok_or(bad)?, p.u32().ok_or(bad)?, p.u16().ok_or(bad)?);
                let _reserved = p.u16().ok_or(bad)?;
                if usize::from(v.2) > MAX_RULES {
                    return Err(DecodeError::InvalidField {
                        kind,
                        entry: 0,
                        field: "rules dropped",
                        value: v.2.into(),
                    });
                }
                if info2.replace(v).is_some() {
                    return Err(dup);
                }
            }
            rec::NIC_IDENTITY => {
                let mut p = Reader::new(payload);
                let n = p.u16().ok_or(DecodeError::BadRecordLength { kind, len })?;
                if usize::from(n) > MAX_NAME_UNITS || p.remaining() != 2 * usize::from(n) {
                    return Err(DecodeError::BadRecordLength { kind, len });
                }
                let id = identity_from(p.take(2 * usize::from(n)).unwrap_or(&[]), n)?;
                if nic.replace(id).is_some() {
                    return Err(dup);
                }
            }
            rec::POLICY_CHECK => {
                if index != 2 || mode.is_none() || rules.is_none() {
                    return Err(DecodeError::InvalidField {
                        kind,
                        entry: 0,
                        field: "policy check position (third, after MODE and RULES)",
                        value: index.into(),
                    });
                }
                let bad = DecodeError::BadRecordLength { kind, len };
                let mut p = Reader::new(payload);
                let rules_dropped = p.u16().ok_or(bad)?;
                let reserved = p.u16().ok_or(bad)?;
                let stored = p.u32().ok_or(bad)?;
                if p.remaining() != 0 || reserved != 0 {
                    return Err(bad);
                }
                // The CRC of every byte before its own field.
                let crc_at = offset + format::RECORD_HEADER_LEN + 4;
                let computed = crc32c(body.get(..crc_at).unwrap_or(&[]));
                if stored != computed {
                    return Err(DecodeError::InvalidField {
                        kind,
                        entry: 0,
                        field: "policy CRC-32C",
                        value: stored.into(),
                    });
                }
                if policy_check.replace(rules_dropped).is_some() {
                    return Err(dup);
                }
            }
            rec::NO_STATE => {
                // Only ever the sole record of a no-state blob (decoded apart).
                return Err(DecodeError::InvalidField {
                    kind,
                    entry: 0,
                    field: "no-state record in a state blob",
                    value: 0,
                });
            }
            rec::ADDRS_V4
            | rec::ADDRS_V6
            | rec::COMPACT_V4
            | rec::COMPACT_V6
            | rec::FINGERPRINTS => {
                let slot = later.get_mut(usize::from(kind - rec::ADDRS_V4)).ok_or(dup)?;
                if slot.replace(payload).is_some() {
                    return Err(dup);
                }
            }
            _ => skipped = skipped.saturating_add(1),
        }
    }
    if r.remaining() != 0 {
        return Err(DecodeError::TrailingBytes { offset: r.pos() });
    }
    let missing = |kind| DecodeError::MissingRecord { kind };
    let mode = mode.ok_or_else(|| missing(rec::MODE))?;
    let rules = rules.ok_or_else(|| missing(rec::RULES))?;
    if !seen_v4 {
        return Err(missing(rec::FLOWS_V4));
    }
    if !seen_v6 {
        return Err(missing(rec::FLOWS_V6));
    }
    let counters = counters.ok_or_else(|| missing(rec::COUNTERS))?;
    let save_info = save_info.ok_or_else(|| missing(rec::SAVE_INFO))?;
    if let Some(checked) = policy_check
        && checked != info2.map_or(0, |(_, _, rules_dropped)| rules_dropped)
    {
        return Err(DecodeError::InconsistentSaveInfo);
    }
    let mut flows = flows.unwrap_or_default();
    let mut direct = None;
    let legacy = u64::try_from(flows.len()).unwrap_or(u64::MAX);
    let dropped_flag = flags & format::FLAG_FLOWS_DROPPED != 0;
    if dropped_flag != (save_info.flows_dropped > 0)
        || u64::from(save_info.flows_in_table) != legacy + u64::from(save_info.flows_dropped)
    {
        return Err(DecodeError::InconsistentSaveInfo);
    }
    let [addrs_v4, addrs_v6, compact_v4, compact_v6, fps] = later;
    let (fingerprints, save_info) = match info2 {
        None => {
            if later.iter().any(Option::is_some) {
                return Err(missing(rec::SAVE_INFO2));
            }
            (FingerprintSet::default(), save_info)
        }
        Some((fingerprinted, lost, rules_dropped)) => {
            // 1.1: the 1.0 view counts every flow outside the 1.0 records as dropped; the real
            // split is exact (both kinds of record) + fingerprinted + lost.
            let version = rules.version();
            let compacts =
                [(rec::COMPACT_V4, addrs_v4, compact_v4), (rec::COMPACT_V6, addrs_v6, compact_v6)];
            // A restore places the compact entries in its table as it reads them when they are
            // all the blob's flows and fit the table's bound (always, from this build's
            // encoder at the cap); otherwise they go to the list, placed from there.
            let placed_count: u64 =
                compacts.iter().map(|&(_, _, p)| p.map_or(0, compact_count)).sum();
            let direct_to = out.stage().filter(|stage| {
                flows.is_empty() && placed_count <= u64::from(stage.table.max_flows)
            });
            let mut placed = 0usize;
            let expected = u32::try_from(placed_count).unwrap_or(u32::MAX);
            let mut staged = direct_to.map(|stage| Staged::try_new(stage, expected));
            for (ckind, dict, payload) in compacts {
                if let Some(p) = payload {
                    match &mut staged {
                        Some(Ok(table)) => decode_compact(ckind, dict, p, version, table)?,
                        // Without memory for the table, the entries are still checked.
                        _ => decode_compact(ckind, dict, p, version, &mut flows)?,
                    }
                }
            }
            if let Some(Ok(table)) = &staged {
                placed = table.taken();
            }
            direct = staged;
            let mut fingerprints_unread = 0;
            let fingerprints = match fps.map(decode_fingerprints) {
                Some(Ok(set)) => set,
                // Without memory for the set (4 bytes a fingerprint; the blob's CRC-32C checked
                // every byte already): none, so those connections are judged as any the blob
                // does not carry (fail closed for them), and the flows it carries exactly are
                // restored all the same (review s6, R6-5: this was the decode's error, a
                // degraded restore that lost every one of them); counted by the apply
                // (`untracked`, review s7 F3).
                Some(Err(DecodeError::OutOfMemory)) => {
                    fingerprints_unread = fingerprinted;
                    FingerprintSet::default()
                }
                None => FingerprintSet::default(),
                Some(Err(e)) => return Err(e),
            };
            let exact = u64::try_from(flows.len() + placed).unwrap_or(u64::MAX);
            if u64::from(save_info.flows_in_table)
                != exact + u64::from(fingerprinted) + u64::from(lost)
                || u64::try_from(fingerprints.len()).unwrap_or(u64::MAX) > u64::from(fingerprinted)
            {
                return Err(DecodeError::InconsistentSaveInfo);
            }
            let save_info = SaveInfo {
                flows_in_table: save_info.flows_in_table,
                flows_dropped: lost,
                flows_fingerprinted: fingerprinted,
                rules_dropped: rules_dropped.into(),
                rules_unread: 0,
                fingerprints_unread,
            };
            (fingerprints, save_info)
        }
    };
    // Rules the decode had no memory for make the carried set incomplete (fail closed).
    let save_info = SaveInfo {
        rules_dropped: save_info.rules_dropped.saturating_add(rules_unread.into()),
        rules_unread: rules_unread.into(),
        ..save_info
    };
    let staged = out.finish(&mut flows, direct);
    let state = PortState {
        minor,
        provider,
        identity,
        nic,
        mode,
        rules,
        flows,
        fingerprints,
        counters,
        save_info,
        skipped_records: skipped,
        digest: 0,
    };
    Ok((state, staged))
}

fn identity_from(bytes: &[u8], units: u16) -> Result<PortIdentity, DecodeError> {
    let mut id_units = [0u16; MAX_NAME_UNITS];
    let n = usize::from(units);
    if n > MAX_NAME_UNITS || bytes.len() != 2 * n {
        return Err(DecodeError::BadIdentity { units });
    }
    for (dst, pair) in id_units.iter_mut().zip(bytes.chunks_exact(2)) {
        *dst = u16::from_le_bytes([
            pair.first().copied().unwrap_or(0),
            pair.get(1).copied().unwrap_or(0),
        ]);
    }
    PortIdentity::try_from_utf16(id_units.get(..n).unwrap_or(&[]))
        .map_err(|_| DecodeError::BadIdentity { units })
}

fn decode_fingerprints(payload: &[u8]) -> Result<FingerprintSet, DecodeError> {
    let kind = rec::FINGERPRINTS;
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let bad = DecodeError::BadRecordLength { kind, len };
    let invalid = |field, value: u64| DecodeError::InvalidField { kind, entry: 0, field, value };
    let mut p = Reader::new(payload);
    let salt = [p.u64().ok_or(bad)?, p.u64().ok_or(bad)?];
    let bits = p.u8().ok_or(bad)?;
    let encoding = p.u8().ok_or(bad)?;
    let k = p.u8().ok_or(bad)?;
    let reserved = p.u8().ok_or(bad)?;
    let count = p.u32().ok_or(bad)?;
    if u32::from(bits) != crate::fingerprint::FINGERPRINT_BITS {
        return Err(invalid("fingerprint bits", bits.into()));
    }
    if encoding != format::FINGERPRINTS_RICE {
        return Err(invalid("fingerprint encoding", encoding.into()));
    }
    if k > super::rice::MAX_K || reserved != 0 {
        return Err(invalid("Rice parameter", k.into()));
    }
    if usize::try_from(count).map_or(true, |n| n > crate::fingerprint::MAX_FINGERPRINTS) {
        return Err(invalid("fingerprint count", count.into()));
    }
    let rest = p.take(p.remaining()).unwrap_or(&[]);
    let values = super::rice::decode(rest, k, count).map_err(|e| match e {
        super::rice::RiceError::OutOfMemory => DecodeError::OutOfMemory,
        _ => invalid("Rice-coded fingerprints", count.into()),
    })?;
    if values.is_empty() {
        // The salt of an empty set means nothing: states compare equal without it.
        return Ok(FingerprintSet::default());
    }
    Ok(FingerprintSet::from_sorted(salt, values))
}

#[allow(clippy::too_many_lines, reason = "one entry layout, field by field")]
/// The entry count a compact record's header declares (0 if it has no header: the decode
/// reports that), at most what its bytes can hold: every entry takes at least 7 bytes (the
/// check [`decode_compact_family`] makes before it reads one). A restore sizes its staged
/// table's index by this count before the entries are read, charged to the host's budget even
/// past its limit: a tampered count must not size it past the blob (review2 s5, R5b-1).
fn compact_count(payload: &[u8]) -> u64 {
    let declared = payload.get(4..8).and_then(|c| Reader::new(c).u32()).map_or(0, u64::from);
    let room = payload.len().saturating_sub(compact::HEADER_LEN) / 7;
    declared.min(u64::try_from(room).unwrap_or(u64::MAX))
}

/// Where the decoder puts each flow it reads: a list, or a staged table ([`Staged::place`]).
trait FlowSink {
    /// Room for `n` more flows.
    fn reserve(&mut self, n: usize) -> Result<(), DecodeError>;
    /// One flow, in blob order.
    fn put(&mut self, flow: SavedFlow) -> Result<(), DecodeError>;
}

impl FlowSink for Vec<SavedFlow> {
    fn reserve(&mut self, n: usize) -> Result<(), DecodeError> {
        self.try_reserve(n).map_err(|_| DecodeError::OutOfMemory)
    }

    #[allow(clippy::inline_always, reason = "the decoder's per-entry loop")]
    #[inline(always)]
    fn put(&mut self, flow: SavedFlow) -> Result<(), DecodeError> {
        if self.len() == self.capacity() {
            // Reserved first: never. (Without a growth path in the loop the entry is built in
            // place instead of through the stack.)
            return Err(DecodeError::OutOfMemory);
        }
        self.push(flow);
        Ok(())
    }
}

impl FlowSink for Staged {
    fn reserve(&mut self, _: usize) -> Result<(), DecodeError> {
        // The table's index was split ahead for every entry (`Staged::try_new`); its slab
        // grows a segment at a time as the entries fill it.
        Ok(())
    }

    #[allow(clippy::inline_always, reason = "the decoder's per-entry loop")]
    #[inline(always)]
    fn put(&mut self, flow: SavedFlow) -> Result<(), DecodeError> {
        Self::put(self, flow);
        Ok(())
    }
}

fn decode_compact(
    kind: u16,
    dict: Option<&[u8]>,
    payload: &[u8],
    rules_version: u32,
    list: &mut impl FlowSink,
) -> Result<(), DecodeError> {
    // One copy of the loop per address length, so every address copy has a fixed size.
    if kind == rec::COMPACT_V4 {
        decode_compact_family::<4>(kind, dict, payload, rules_version, list)
    } else {
        decode_compact_family::<16>(kind, dict, payload, rules_version, list)
    }
}

#[allow(clippy::too_many_lines, reason = "one entry's fields in their order")]
fn decode_compact_family<const ALEN: usize>(
    kind: u16,
    dict: Option<&[u8]>,
    payload: &[u8],
    rules_version: u32,
    list: &mut impl FlowSink,
) -> Result<(), DecodeError> {
    let (family, dkind, alen) = if ALEN == 4 {
        (IpFamily::V4, rec::ADDRS_V4, 4)
    } else {
        (IpFamily::V6, rec::ADDRS_V6, 16)
    };
    // The dictionary.
    let dict = dict.unwrap_or(&[0, 0]);
    let dlen = u32::try_from(dict.len()).unwrap_or(u32::MAX);
    let mut d = Reader::new(dict);
    let n = d.u16().ok_or(DecodeError::BadRecordLength { kind: dkind, len: dlen })?;
    if d.remaining() != alen * usize::from(n) {
        return Err(DecodeError::BadRecordLength { kind: dkind, len: dlen });
    }
    let addrs = d.take(alen * usize::from(n)).unwrap_or(&[]);
    // The dictionary as whole addresses: an index is one bounds check.
    let (addrs, _) = addrs.as_chunks::<ALEN>();
    // (`u128`, not `[u8; 16]`: an `Option<[u8; 16]>` holds its array at offset 1, and every
    // address then went into the table's slot in five misaligned pieces.)
    let addr_at = |i: u32| -> Option<u128> { addrs.get(i as usize).map(widen) };
    // The header.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let bad_len = DecodeError::BadRecordLength { kind, len };
    let mut p = Reader::new(payload);
    let flags = p.u8().ok_or(bad_len)?;
    let lw = p.u8().ok_or(bad_len)?;
    let rw = p.u8().ok_or(bad_len)?;
    let reserved = p.u8().ok_or(bad_len)?;
    let count = p.u32().ok_or(bad_len)?;
    let invalid =
        |entry, field, value: u64| DecodeError::InvalidField { kind, entry, field, value };
    if flags & !compact::FLAG_COUNTERS != 0 {
        return Err(invalid(0, "compact flags", flags.into()));
    }
    if lw > 2 || !(1..=2).contains(&rw) || reserved != 0 {
        return Err(invalid(0, "compact index widths", u64::from(lw) << 8 | u64::from(rw)));
    }
    let counters = flags & compact::FLAG_COUNTERS != 0;
    let (lw, rw) = (usize::from(lw), usize::from(rw));
    // Every entry takes at least 7 bytes: refuse counts the payload cannot hold before
    // reserving memory for them.
    let count_us = usize::try_from(count).map_err(|_| bad_len)?;
    if count_us > p.remaining() / 7 {
        return Err(bad_len);
    }
    list.reserve(count_us)?;
    for entry in 0..count {
        let short = bad_len;
        let tag = p.u8().ok_or(short)?;
        let kind_v = tag & compact::KIND_MASK;
        let (state, proto) = match kind_v {
            compact::KIND_ACTIVE_UDP => (FlowState::Active, protocol::UDP),
            compact::KIND_ACTIVE_OTHER => {
                let proto = p.u8().ok_or(short)?;
                if proto == protocol::TCP {
                    return Err(invalid(entry, "protocol of an active flow", proto.into()));
                }
                (FlowState::Active, proto)
            }
            v => (
                FlowState::from_wire(v).ok_or_else(|| invalid(entry, "state", v.into()))?,
                protocol::TCP,
            ),
        };
        let adm = (tag >> compact::ADMISSION_SHIFT) & 0b11;
        let fin_seen = (tag >> compact::FIN_SHIFT) & 0b11;
        if fin_seen != 0 && !state.is_tcp() {
            return Err(invalid(entry, "FIN bits", fin_seen.into()));
        }
        let li = p.index(lw).ok_or(short)?;
        let local_addr =
            addr_at(li).ok_or_else(|| invalid(entry, "local address index", li.into()))?;
        let remote_addr = if tag & compact::REMOTE_LITERAL != 0 {
            let a: [u8; ALEN] = p.array().ok_or(short)?;
            widen(&a)
        } else {
            let ri = p.index(rw).ok_or(short)?;
            addr_at(ri).ok_or_else(|| invalid(entry, "remote address index", ri.into()))?
        };
        let local_port = p.u16().ok_or(short)?;
        let remote_port = p.u16().ok_or(short)?;
        let (opener, admission) = match adm {
            compact::ADM_VM => (Opener::Vm, Admission::Vm),
            compact::ADM_MONITOR => (Opener::Remote, Admission::Monitor),
            compact::ADM_RULE_CURRENT => (Opener::Remote, Admission::Rule(rules_version)),
            _ => {
                let delta = p.varint().ok_or(short)?;
                let delta = u32::try_from(delta)
                    .map_err(|_| invalid(entry, "rule version delta", delta))?;
                (Opener::Remote, Admission::Rule(rules_version.wrapping_sub(delta)))
            }
        };
        let last_s = p.varint().ok_or(short)?;
        let dur_m = p.varint().ok_or(short)?;
        // A last-seen age of `s` whole seconds (rounded down by the writer) means an age in
        // [s, s + 1): read as the oldest, so a carried flow never outlives its idle timeout on
        // this host (it may expire up to a second early, never late). Both ages move together.
        let (last_age, first_age) = if (last_s | dur_m) >> 32 == 0 {
            // Both below 2^32 (every real age): no step can overflow (2^32 * 6e8 < 2^62).
            let last_age = last_s * TICKS_PER_SECOND;
            let first_age = dur_m * (TICKS_PER_SECOND * compact::DURATION_UNIT_SECS) + last_age;
            (last_age + (TICKS_PER_SECOND - 1), first_age + (TICKS_PER_SECOND - 1))
        } else {
            let last_age = last_s
                .checked_mul(TICKS_PER_SECOND)
                .ok_or_else(|| invalid(entry, "last-seen age", last_s))?;
            let first_age = dur_m
                .checked_mul(TICKS_PER_SECOND * compact::DURATION_UNIT_SECS)
                .and_then(|d| d.checked_add(last_age))
                .ok_or_else(|| invalid(entry, "duration", dur_m))?;
            let slack = (TICKS_PER_SECOND - 1).min(u64::MAX - first_age);
            (last_age + slack, first_age + slack)
        };
        let mut c = [0u64; 4];
        if counters {
            for v in &mut c {
                *v = p.varint().ok_or(short)?;
            }
        }
        let key = FlowKey {
            family,
            protocol: proto,
            local_addr: local_addr.to_le_bytes(),
            remote_addr: remote_addr.to_le_bytes(),
            local_port,
            remote_port,
        };
        list.put(SavedFlow {
            key,
            state,
            opener,
            admission,
            fin_seen,
            packets: [c[0], c[1]],
            bytes: [c[2], c[3]],
            first_age,
            last_age,
        })?;
    }
    if p.remaining() != 0 {
        return Err(bad_len);
    }
    Ok(())
}

/// An address of `ALEN` (4 or 16) bytes as a key's 16 (IPv4 in the first 4, the rest zero),
/// built in a register: copying 4 bytes into a zeroed array and reading the key back whole
/// stalled store forwarding on every entry (a third of the decode's time).
#[allow(clippy::inline_always, reason = "one register move per address in the decode loop")]
#[inline(always)]
fn widen<const ALEN: usize>(a: &[u8; ALEN]) -> u128 {
    if let Ok(&v4) = <&[u8; 4]>::try_from(&a[..]) {
        return u128::from(u32::from_le_bytes(v4));
    }
    <[u8; 16]>::try_from(&a[..]).map_or(0, u128::from_le_bytes)
}

/// The rule set of a RULES record, and how many of its rules were left out for want of memory
/// (all of them, then: the set is empty, [`SaveInfo::rules_unread`]).
fn decode_rules(payload: &[u8]) -> Result<(RuleSet, u16), DecodeError> {
    let kind = rec::RULES;
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let bad_len = DecodeError::BadRecordLength { kind, len };
    let mut p = Reader::new(payload);
    let version = p.u32().ok_or(bad_len)?;
    let entry_len = p.u16().ok_or(bad_len)?;
    let count = p.u16().ok_or(bad_len)?;
    if usize::from(entry_len) < format::RULE_ENTRY_LEN {
        return Err(DecodeError::BadEntryLength { kind, len: entry_len });
    }
    if usize::from(count) > MAX_RULES {
        return Err(DecodeError::TooManyRules { count });
    }
    if p.remaining() != usize::from(entry_len) * usize::from(count) {
        return Err(bad_len);
    }
    let mut out =
        [AllowRule { protocol: None, local_ports: PortRange::ANY, remote: Prefix::Any }; MAX_RULES];
    for (i, slot) in (0u32..).zip(out.iter_mut().take(usize::from(count))) {
        let e = p.take(usize::from(entry_len)).ok_or(bad_len)?;
        *slot = super::rule::rule_from_bytes(e, i)?;
    }
    match RuleSet::try_from_slice(version, out.get(..usize::from(count)).unwrap_or(&[])) {
        Ok(set) => Ok((set, 0)),
        // An empty set allocates nothing; its version is the carried one.
        Err(crate::Error::OutOfMemory) => RuleSet::try_from_slice(version, &[])
            .map(|set| (set, count))
            .map_err(|_| DecodeError::OutOfMemory),
        Err(_) => Err(DecodeError::TooManyRules { count }),
    }
}

fn decode_flows(kind: u16, payload: &[u8], list: &mut Vec<SavedFlow>) -> Result<(), DecodeError> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let bad_len = DecodeError::BadRecordLength { kind, len };
    let (family, min_entry) = if kind == rec::FLOWS_V4 {
        (IpFamily::V4, format::FLOW_V4_ENTRY_LEN)
    } else {
        (IpFamily::V6, format::FLOW_V6_ENTRY_LEN)
    };
    let mut p = Reader::new(payload);
    let entry_len = p.u16().ok_or(bad_len)?;
    let _reserved = p.u16().ok_or(bad_len)?;
    let count = p.u32().ok_or(bad_len)?;
    if usize::from(entry_len) < min_entry {
        return Err(DecodeError::BadEntryLength { kind, len: entry_len });
    }
    let count_us = usize::try_from(count).map_err(|_| bad_len)?;
    if Some(p.remaining()) != count_us.checked_mul(usize::from(entry_len)) {
        return Err(bad_len);
    }
    list.try_reserve(count_us).map_err(|_| DecodeError::OutOfMemory)?;
    for entry in 0..count {
        let e = p.take(usize::from(entry_len)).ok_or(bad_len)?;
        list.push(decode_flow(kind, family, e, entry)?);
    }
    Ok(())
}

fn decode_flow(
    kind: u16,
    family: IpFamily,
    e: &[u8],
    entry: u32,
) -> Result<SavedFlow, DecodeError> {
    let invalid = |field, value: u64| DecodeError::InvalidField { kind, entry, field, value };
    let short = DecodeError::BadEntryLength { kind, len: 0 };
    let mut r = Reader::new(e);
    let proto = r.u8().ok_or(short)?;
    let state_v = r.u8().ok_or(short)?;
    let opener_v = r.u8().ok_or(short)?;
    let adm_v = r.u8().ok_or(short)?;
    let fin_seen = r.u8().ok_or(short)?;
    let version = r.u32().ok_or(short)?;
    let (local_addr, remote_addr) = match family {
        IpFamily::V4 => {
            let l: [u8; 4] = r.array().ok_or(short)?;
            let rm: [u8; 4] = r.array().ok_or(short)?;
            (crate::packet::v4(l), crate::packet::v4(rm))
        }
        IpFamily::V6 => (r.array().ok_or(short)?, r.array().ok_or(short)?),
    };
    let local_port = r.u16().ok_or(short)?;
    let remote_port = r.u16().ok_or(short)?;
    let mut vals = [0u64; 6];
    for v in &mut vals {
        *v = r.u64().ok_or(short)?;
    }
    let [p_out, p_in, b_out, b_in, first_age, last_age] = vals;
    let state = FlowState::from_wire(state_v).ok_or_else(|| invalid("state", state_v.into()))?;
    if state.is_tcp() != (proto == protocol::TCP) {
        return Err(invalid("state for this protocol", state_v.into()));
    }
    let opener = Opener::from_wire(opener_v).ok_or_else(|| invalid("opener", opener_v.into()))?;
    let admission = match adm_v {
        format::admission::VM if version == 0 => Admission::Vm,
        format::admission::MONITOR if version == 0 => Admission::Monitor,
        format::admission::RULE => Admission::Rule(version),
        format::admission::VM | format::admission::MONITOR => {
            return Err(invalid("admission rule version", version.into()));
        }
        other => return Err(invalid("admission", other.into())),
    };
    if (opener == Opener::Remote) == (admission == Admission::Vm) {
        return Err(invalid("admission for this opener", adm_v.into()));
    }
    if fin_seen > 0b11 || (fin_seen != 0 && !state.is_tcp()) {
        return Err(invalid("FIN bits", fin_seen.into()));
    }
    if last_age > first_age {
        return Err(invalid("last-seen age (after first-seen)", last_age));
    }
    let key = FlowKey { family, protocol: proto, local_addr, remote_addr, local_port, remote_port };
    Ok(SavedFlow {
        key,
        state,
        opener,
        admission,
        fin_seen,
        packets: [p_out, p_in],
        bytes: [b_out, b_in],
        first_age,
        last_age,
    })
}
