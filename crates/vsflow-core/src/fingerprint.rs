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
//! distributed 32-bit value, so it matches with probability `n / 2^32` per packet: 3.5e-6 at
//! the capacity of a default 60 KiB blob (about 15,000 fingerprints), under the 1e-5 target.
//! [`Pickup::take`] consumes a fingerprint when it matches, so a set of `n` fingerprints admits
//! at most `n` flows in total however many packets are sent (measured: see docs/PERFORMANCE.md,
//! `cargo run --release -p vsflow-core --example fingerprint_fp`).

use alloc::vec::Vec;

use siphasher::sip::SipHasher13;

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
    let mut buf = [0u8; 38];
    let n = canonical_bytes(key, &mut buf);
    let h = SipHasher13::new_with_keys(salt[0], salt[1]).hash(buf.get(..n).unwrap_or(&[]));
    #[allow(clippy::cast_possible_truncation, reason = "the high 32 bits, by definition")]
    let fp = (h >> 32) as u32;
    fp
}

/// Writes the canonical key bytes into `buf`; returns their length (14 IPv4, 38 IPv6).
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
    for (dst, src) in buf.iter_mut().zip(head.iter().chain(local).chain(remote)) {
        *dst = *src;
        n += 1;
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

/// A restored fingerprint set armed for pickup on the destination: matches until `until`, each
/// fingerprint at most once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pickup {
    set: FingerprintSet,
    until: Tick,
    taken: Vec<u64>,
    picked: u32,
}

impl Pickup {
    /// Arms `set` until `until` (the restore instant plus the window).
    ///
    /// # Errors
    /// [`Error::OutOfMemory`].
    pub fn try_new(set: FingerprintSet, until: Tick) -> Result<Self, Error> {
        let words = set.len().div_ceil(64);
        let mut taken = Vec::new();
        taken.try_reserve_exact(words)?;
        taken.resize(words, 0);
        Ok(Self { set, until, taken, picked: 0 })
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

    /// Flows picked up so far.
    #[must_use]
    pub const fn picked(&self) -> u32 {
        self.picked
    }

    /// True while fingerprints can still match at `now`.
    #[must_use]
    pub fn is_armed(&self, now: Tick) -> bool {
        now < self.until && !self.set.is_empty()
    }

    /// The classify hook: true if `key` (a flow the table does not know) matches a fingerprint
    /// not yet used, within the window; that fingerprint is then used up. Cost: one `SipHash` of
    /// at most 38 bytes and a binary search, only while armed.
    pub fn take(&mut self, key: &FlowKey, now: Tick) -> bool {
        if !self.is_armed(now) {
            return false;
        }
        let Some(i) = self.set.position(key) else { return false };
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        match self.taken.get_mut(word) {
            Some(w) if *w & bit == 0 => {
                *w |= bit;
                self.picked = self.picked.saturating_add(1);
                true
            }
            _ => false,
        }
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
        p.clear();
        assert!(!p.is_armed(0));
    }
}
