//! Fingerprints of established connections that a runtime-state blob could not carry exactly.
//!
//! When a port holds more flows than fit in one save record, the encoder (format 1.1) writes
//! exact records for the most valuable flows and, for the remaining *established TCP*
//! connections, a 32-bit keyed hash each (a fingerprint). On the destination a packet of a flow
//! the table does not know is looked up here (the classify hook, see [`Pickup::take`]): if its
//! key's fingerprint is in the set, and the restore is less than the pickup window old, the
//! flow is picked up as an established connection instead of being judged as unsolicited.
//!
//! # The hash (part of the blob format: never change it)
//! `fingerprint = high 32 bits of SipHash-1-3(k0, k1; canonical key bytes)`, where `k0, k1` are
//! the blob's salt (two u64, random per save) and the canonical key bytes are
//! `family (4 or 6) u8, protocol u8, local port u16 LE, remote port u16 LE, local address
//! (4 or 16 bytes), remote address (4 or 16 bytes)`. The key is the VM's point of view
//! ([`FlowKey::of`]), so both directions of a connection have the same fingerprint.
//!
//! # False admissions
//! The set holds `n` distinct 32-bit values. The key of an unknown packet that is not one of
//! the fingerprinted connections hashes, under a salt the sender cannot know, to a uniformly
//! distributed 32-bit value, so it matches with probability `n / 2^32` per packet: 6.0e-6 at
//! the capacity of a default 60 KiB blob (about 25,900 fingerprints), under the 1e-5 target
//! (measured: docs/PERFORMANCE.md, `cargo run --release -p vsflow-core --example
//! fingerprint_fp`). A match admits one mid-stream TCP segment to a *tentative* flow, never a
//! new conversation, and uses nothing up until the VM confirms the flow ([`Pickup`]); the
//! bound on what a spray gets through is derived in docs/runtime-state-format.md ("False
//! admissions") and measured by `cargo run --release -p vsflow-core --example pickup_spray`.

use alloc::vec::Vec;

use crate::error::Error;
use crate::flow::FlowKey;
use crate::packet::IpFamily;
use crate::time::{Tick, secs};

/// Bits in one fingerprint.
pub const FINGERPRINT_BITS: u32 = 32;

/// Most fingerprints one blob may carry: `MAX_FINGERPRINTS / 2^32 <= 1e-5`.
///
/// So the false match probability per unknown packet stays within the target for any blob a
/// decoder accepts. (A 60 KiB blob holds about 26,000.)
pub const MAX_FINGERPRINTS: usize = 42_949;

/// Default pickup window: fingerprints match for this long after the restore (5 minutes).
pub const DEFAULT_PICKUP_WINDOW: Tick = secs(300);

/// The keyed hash of a key (see the module docs). `salt` is `[k0, k1]`.
#[must_use]
pub fn fingerprint(salt: [u64; 2], key: &FlowKey) -> u32 {
    high(sip(salt, key))
}

/// The full 64-bit `SipHash` of the canonical key bytes: the fingerprint is its high half.
///
/// The canonical bytes are assembled straight into `SipHash`'s message words (two for IPv4,
/// five for IPv6): the encoder hashes every established connection of a port past the cap at
/// each save (20,000 in issue 18's target), where building the bytes in a buffer first cost
/// as much as the rounds. Tested equal to [`sip13`] of [`canonical_bytes`] on random keys.
#[inline]
fn sip(salt: [u64; 2], key: &FlowKey) -> u64 {
    let [l0, l1] = key.local_port.to_le_bytes();
    let [r0, r1] = key.remote_port.to_le_bytes();
    let l = &key.local_addr;
    let r = &key.remote_addr;
    let mut s = Sip13::new(salt);
    match key.family {
        IpFamily::V4 => {
            // 4, proto, lport, rport, local[0..2] | local[2..4], remote, 0, length 14
            s.word(u64::from_le_bytes([4, key.protocol, l0, l1, r0, r1, l[0], l[1]]));
            s.last(u64::from_le_bytes([l[2], l[3], r[0], r[1], r[2], r[3], 0, 14]))
        }
        IpFamily::V6 => {
            s.word(u64::from_le_bytes([6, key.protocol, l0, l1, r0, r1, l[0], l[1]]));
            s.word(u64::from_le_bytes([l[2], l[3], l[4], l[5], l[6], l[7], l[8], l[9]]));
            s.word(u64::from_le_bytes([l[10], l[11], l[12], l[13], l[14], l[15], r[0], r[1]]));
            s.word(u64::from_le_bytes([r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9]]));
            // remote[10..16], 0, length 38
            s.last(u64::from_le_bytes([r[10], r[11], r[12], r[13], r[14], r[15], 0, 38]))
        }
    }
}

/// `SipHash-1-3`'s state, fed whole little-endian message words.
struct Sip13([u64; 4]);

impl Sip13 {
    #[inline]
    const fn new([k0, k1]: [u64; 2]) -> Self {
        Self([
            k0 ^ 0x736f_6d65_7073_6575,
            k1 ^ 0x646f_7261_6e64_6f6d,
            k0 ^ 0x6c79_6765_6e65_7261,
            k1 ^ 0x7465_6462_7974_6573,
        ])
    }

    #[inline]
    fn round(&mut self) {
        let v = &mut self.0;
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }

    /// One message word (one compression round).
    #[inline]
    fn word(&mut self, m: u64) {
        self.0[3] ^= m;
        self.round();
        self.0[0] ^= m;
    }

    /// The last word (the message's tail bytes and its length in the top byte), then the
    /// three finalization rounds.
    #[inline]
    fn last(mut self, m: u64) -> u64 {
        self.word(m);
        self.0[2] ^= 0xff;
        self.round();
        self.round();
        self.round();
        self.0[0] ^ self.0[1] ^ self.0[2] ^ self.0[3]
    }
}

/// SipHash-1-3 of `msg` under `[k0, k1]`, from the `siphasher` crate: the reference [`sip`]
/// is tested against.
#[cfg(test)]
fn sip13(key: [u64; 2], msg: &[u8]) -> u64 {
    siphasher::sip::SipHasher13::new_with_keys(key[0], key[1]).hash(msg)
}

const fn high(h: u64) -> u32 {
    #[allow(clippy::cast_possible_truncation, reason = "the high 32 bits, by definition")]
    let fp = (h >> 32) as u32;
    fp
}

/// Writes the canonical key bytes into `buf`; returns their length (14 IPv4, 38 IPv6): the
/// documented definition [`sip`] assembles into words directly.
#[cfg(test)]
fn canonical_bytes(key: &FlowKey, buf: &mut [u8; 38]) -> usize {
    let (fam, alen) = match key.family {
        IpFamily::V4 => (4u8, 4usize),
        IpFamily::V6 => (6u8, 16usize),
    };
    let [l0, l1] = key.local_port.to_le_bytes();
    let [r0, r1] = key.remote_port.to_le_bytes();
    let head = [fam, key.protocol, l0, l1, r0, r1];
    let local = key.local_addr.get(..alen).unwrap_or(&[]);
    let remote = key.remote_addr.get(..alen).unwrap_or(&[]);
    let mut n = 0;
    for part in [&head[..], local, remote] {
        if let Some(d) = buf.get_mut(n..n + part.len()) {
            d.copy_from_slice(part);
            n += part.len();
        }
    }
    n
}

/// A set of fingerprints under one salt: sorted, distinct 32-bit values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FingerprintSet {
    salt: [u64; 2],
    values: Vec<u32>,
}

impl FingerprintSet {
    /// An empty set under `salt`.
    #[must_use]
    pub const fn new(salt: [u64; 2]) -> Self {
        Self { salt, values: Vec::new() }
    }

    /// The set of the fingerprints of `keys` under `salt` (duplicates merged).
    ///
    /// # Errors
    /// [`Error::OutOfMemory`].
    pub fn try_from_keys<'a>(
        salt: [u64; 2],
        keys: impl ExactSizeIterator<Item = &'a FlowKey>,
    ) -> Result<Self, Error> {
        let mut values = Vec::new();
        values.try_reserve_exact(keys.len())?;
        values.extend(keys.map(|k| fingerprint(salt, k)));
        values.sort_unstable();
        values.dedup();
        Ok(Self { salt, values })
    }

    /// From sorted, distinct values (the decoder checks this before calling).
    pub(crate) const fn from_sorted(salt: [u64; 2], values: Vec<u32>) -> Self {
        Self { salt, values }
    }

    /// A copy, allocated fallibly.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`].
    pub fn try_clone(&self) -> Result<Self, Error> {
        let mut values = Vec::new();
        values.try_reserve_exact(self.values.len())?;
        values.extend_from_slice(&self.values);
        Ok(Self { salt: self.salt, values })
    }

    /// The salt.
    #[must_use]
    pub const fn salt(&self) -> [u64; 2] {
        self.salt
    }

    /// The fingerprints, ascending.
    #[must_use]
    pub fn values(&self) -> &[u32] {
        &self.values
    }

    /// Number of distinct fingerprints.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.values.len()
    }

    /// True if the set is empty.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Position of `key`'s fingerprint in the set, if present (binary search).
    #[must_use]
    pub fn position(&self, key: &FlowKey) -> Option<usize> {
        if self.values.is_empty() {
            return None;
        }
        self.values.binary_search(&fingerprint(self.salt, key)).ok()
    }

    /// Position of the fingerprint `value` in the set, if present.
    fn position_of(&self, value: u32) -> Option<usize> {
        self.values.binary_search(&value).ok()
    }

    /// True if `key`'s fingerprint is in the set.
    #[must_use]
    pub fn contains(&self, key: &FlowKey) -> bool {
        self.position(key).is_some()
    }

    /// Upper bound of the probability that a key not in the set matches: `len / 2^32`.
    #[must_use]
    pub fn false_match_probability(&self) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "at most 2^32 values, a ratio")]
        let n = self.values.len() as f64;
        n / 4_294_967_296.0
    }
}

/// A restored fingerprint set armed for pickup on the destination: matches until `until`.
///
/// Each fingerprint is *unused* (its connection has not resumed), *used* (a flow it admitted
/// was confirmed by the VM: it admits nothing more), or unused but *refused for up to two
/// keys* (the VM reset flows it admitted: those 5-tuples are not admitted by it again, every
/// other key with this fingerprint still is). A match alone uses nothing up: classify holds
/// the flow tentatively ([`crate::flow::tentative`]) and calls [`Pickup::confirm`] when the VM
/// answers, [`Pickup::refuse`] when it resets. So a spray can never use up a real connection's
/// fingerprint; and since refusals are remembered per fingerprint (not only in the bounded
/// tentative set), a 5-tuple that matched by chance cannot be replayed for more segments
/// unless three spray keys match the same fingerprint (docs/runtime-state-format.md, "Pickups:
/// what they admit").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pickup {
    set: FingerprintSet,
    until: Tick,
    /// Per fingerprint: [`UNUSED`], [`USED`], or the tags of the last two keys the VM refused
    /// (the latest in the low half; an empty half is 0).
    state: Vec<u64>,
    picked: u32,
}

/// A fingerprint whose connection has not resumed and that nothing was refused for.
const UNUSED: u64 = 0;
/// A fingerprint whose pickup the VM confirmed.
const USED: u64 = u64::MAX;

/// The tag of a key in a fingerprint's state: the low half of the key's `SipHash` (the
/// fingerprint is the high half), never 0 or `u32::MAX` (so a state of refusals is never
/// [`UNUSED`] or [`USED`]).
const fn tag(h: u64) -> u32 {
    #[allow(clippy::cast_possible_truncation, reason = "the low 32 bits")]
    let t = h as u32;
    if t == 0 || t == u32::MAX { 1 } else { t }
}

/// True if `state` (refusals) holds `t`.
const fn refused(state: u64, t: u32) -> bool {
    #[allow(clippy::cast_possible_truncation, reason = "the two 32-bit halves")]
    let (latest, earlier) = (state as u32, (state >> 32) as u32);
    latest == t || earlier == t
}

impl Pickup {
    /// Arms `set` until `until` (the restore instant plus the window).
    ///
    /// # Errors
    /// [`Error::OutOfMemory`].
    pub fn try_new(set: FingerprintSet, until: Tick) -> Result<Self, Error> {
        let mut state = Vec::new();
        state.try_reserve_exact(set.len())?;
        state.resize(set.len(), UNUSED);
        Ok(Self { set, until, state, picked: 0 })
    }

    /// The armed set.
    #[must_use]
    pub const fn set(&self) -> &FingerprintSet {
        &self.set
    }

    /// When the window ends.
    #[must_use]
    pub const fn until(&self) -> Tick {
        self.until
    }

    /// Pickups the VM confirmed so far (fingerprints used).
    #[must_use]
    pub const fn picked(&self) -> u32 {
        self.picked
    }

    /// True while fingerprints can still match at `now`.
    #[inline]
    #[must_use]
    pub fn is_armed(&self, now: Tick) -> bool {
        now < self.until && !self.set.is_empty()
    }

    /// The position of an unused fingerprint of `key` (a TCP flow the table does not know)
    /// within the window, unless the VM refused this very key with it. Uses nothing up. Cost:
    /// one `SipHash` of at most 38 bytes and a binary search, only while armed.
    #[must_use]
    pub fn lookup(&self, key: &FlowKey, now: Tick) -> Option<u32> {
        if !self.is_armed(now) {
            return None;
        }
        let h = sip(self.set.salt, key);
        let i = self.set.position_of(high(h))?;
        match *self.state.get(i)? {
            USED => None,
            s if s != UNUSED && refused(s, tag(h)) => None,
            _ => u32::try_from(i).ok(),
        }
    }

    /// The VM confirmed the flow fingerprint `i` admitted: the fingerprint is used up. False if
    /// it already was.
    pub fn confirm(&mut self, i: u32) -> bool {
        match self.state.get_mut(i as usize) {
            Some(s) if *s != USED => {
                *s = USED;
                self.picked = self.picked.saturating_add(1);
                true
            }
            _ => false,
        }
    }

    /// The VM refused (reset) the flow `key` that fingerprint `i` admitted: `key` is not
    /// admitted by it again (nor is the key refused before it); the fingerprint stays unused
    /// for every other key.
    pub fn refuse(&mut self, i: u32, key: &FlowKey) {
        let t = tag(sip(self.set.salt, key));
        if let Some(s) = self.state.get_mut(i as usize).filter(|s| **s != USED && !refused(**s, t))
        {
            *s = (*s << 32) | u64::from(t);
        }
    }

    /// [`Pickup::lookup`] and [`Pickup::confirm`] at once: for a flow the VM itself speaks on
    /// (its own packet, or traffic it sent in the restore window).
    pub fn take(&mut self, key: &FlowKey, now: Tick) -> bool {
        self.lookup(key, now).is_some_and(|i| self.confirm(i))
    }

    /// The fingerprints not used up: connections that have not resumed (a save during the
    /// window can carry them on).
    pub fn pending(&self) -> impl Iterator<Item = u32> + '_ {
        self.set.values.iter().zip(&self.state).filter(|(_, s)| **s != USED).map(|(v, _)| *v)
    }

    /// Disarms and frees the set (the window ended, or the port was restored empty).
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Direction, PacketMeta, protocol};

    fn key(sport: u16) -> FlowKey {
        FlowKey::of(&PacketMeta::ipv4(
            Direction::Outbound,
            protocol::TCP,
            [10, 0, 0, 2],
            sport,
            [93, 184, 216, 34],
            443,
            0x10,
            60,
        ))
    }

    #[test]
    fn the_word_assembled_hash_is_siphash_of_the_canonical_bytes_for_random_keys() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..4_000 {
            let family = if round % 2 == 0 { IpFamily::V4 } else { IpFamily::V6 };
            let mut local_addr = [0u8; 16];
            let mut remote_addr = [0u8; 16];
            local_addr[..8].copy_from_slice(&next().to_le_bytes());
            local_addr[8..].copy_from_slice(&next().to_le_bytes());
            remote_addr[..8].copy_from_slice(&next().to_le_bytes());
            remote_addr[8..].copy_from_slice(&next().to_le_bytes());
            if family == IpFamily::V4 {
                // A FlowKey holds an IPv4 address in its first four bytes, the rest zero.
                local_addr[4..].fill(0);
                remote_addr[4..].fill(0);
            }
            let r = next().to_le_bytes();
            let k = FlowKey {
                family,
                protocol: r[0],
                local_addr,
                remote_addr,
                local_port: u16::from_le_bytes([r[1], r[2]]),
                remote_port: u16::from_le_bytes([r[3], r[4]]),
            };
            let salt = [next(), next()];
            let mut buf = [0u8; 38];
            let n = canonical_bytes(&k, &mut buf);
            assert_eq!(sip(salt, &k), sip13(salt, &buf[..n]), "{k:?}");
        }
    }

    #[test]
    fn the_hash_is_the_documented_siphash_1_3_of_the_canonical_bytes() {
        // Reference value computed with an independent implementation of the SipHash paper's
        // definition (c = 1, d = 3; the same code reproduces the paper's SipHash-2-4 vector
        // 0x726fdb47dd0e0e31) over the 14 canonical bytes
        // 04 06 | 40 9c | bb 01 | 0a 00 00 02 | 5d b8 d8 22 with k = (1, 2):
        // SipHash-1-3 = 0x3966078293cdce98, so the fingerprint is 0x39660782.
        let k = key(40000);
        let mut buf = [0u8; 38];
        let n = canonical_bytes(&k, &mut buf);
        assert_eq!(&buf[..n], &[4, 6, 0x40, 0x9c, 0xbb, 1, 10, 0, 0, 2, 93, 184, 216, 34]);
        assert_eq!(fingerprint([1, 2], &k), 0x3966_0782);
        // A different salt gives an unrelated value.
        assert_ne!(fingerprint([1, 2], &k), fingerprint([1, 3], &k));
    }

    #[test]
    fn both_directions_match_and_other_keys_do_not() {
        let out = PacketMeta::ipv4(
            Direction::Outbound,
            protocol::TCP,
            [10, 0, 0, 2],
            40000,
            [93, 184, 216, 34],
            443,
            0x10,
            60,
        );
        let set = FingerprintSet::try_from_keys([7, 9], [FlowKey::of(&out)].iter()).unwrap();
        assert!(set.contains(&FlowKey::of(&out)));
        assert!(set.contains(&FlowKey::of(&out.reply(0x10))));
        assert!(!set.contains(&key(40001)));
    }

    #[test]
    fn pickup_matches_once_and_only_inside_the_window() {
        let keys = [key(1), key(2), key(3)];
        let set = FingerprintSet::try_from_keys([5, 6], keys.iter()).unwrap();
        let mut p = Pickup::try_new(set, 1000).unwrap();
        assert!(p.take(&keys[0], 10));
        assert!(!p.take(&keys[0], 11), "a fingerprint admits one flow");
        assert!(!p.take(&key(4), 12));
        assert!(!p.take(&keys[1], 1000), "the window has ended");
        assert!(p.take(&keys[2], 999));
        assert_eq!(p.picked(), 2);
        assert_eq!(p.pending().count(), 1);
        p.clear();
        assert!(!p.is_armed(0));
    }

    #[test]
    fn a_match_uses_nothing_up_until_confirmed_and_a_refusal_is_per_key() {
        let keys = [key(1), key(2)];
        let set = FingerprintSet::try_from_keys([5, 6], keys.iter()).unwrap();
        let mut p = Pickup::try_new(set, 1000).unwrap();
        let i = p.lookup(&keys[0], 1).unwrap();
        assert_eq!(p.lookup(&keys[0], 2), Some(i), "a lookup uses nothing up");
        p.refuse(i, &keys[0]);
        assert_eq!(p.lookup(&keys[0], 3), None, "the refused key is not admitted again");
        assert_eq!(p.pending().count(), 2, "a refusal uses nothing up");
        let j = p.lookup(&keys[1], 3).unwrap();
        assert!(p.confirm(j));
        assert!(!p.confirm(j));
        assert_eq!(p.lookup(&keys[1], 4), None);
        p.refuse(j, &keys[1]);
        assert_eq!(p.lookup(&keys[1], 4), None, "a refusal never revives a used fingerprint");
        assert_eq!((p.picked(), p.pending().count()), (1, 1));
    }

    #[test]
    fn a_fingerprint_remembers_the_last_two_keys_refused_with_it() {
        let real = key(1);
        let set = FingerprintSet::try_from_keys([5, 6], [real].iter()).unwrap();
        let mut p = Pickup::try_new(set, 1000).unwrap();
        let i = p.lookup(&real, 1).unwrap();
        // Other keys refused with this fingerprint do not shut the real one out.
        p.refuse(i, &key(2));
        p.refuse(i, &key(3));
        assert_eq!(p.lookup(&real, 2), Some(i));
        p.refuse(i, &real);
        assert_eq!(p.lookup(&real, 3), None);
        p.refuse(i, &real);
        p.refuse(i, &key(2));
        assert_eq!(p.lookup(&real, 4), None, "still one of the last two refused");
        p.refuse(i, &key(3));
        assert_eq!(p.lookup(&real, 5), Some(i), "two later refusals push it out");
    }
}
