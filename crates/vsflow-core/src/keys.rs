//! Per-purpose keys derived from the per-boot seed.
//!
//! The driver draws one secret per boot (`BCryptGenRandom`, 64 bits: the seed). Several hashes
//! need a key: the flow table's and the port map's (against peers aiming 5-tuples at one
//! bucket), the shards' hints, the encoder's address index, the fingerprint salt's derivation
//! and the restore blob's digest. Keying them all with the seed itself, or with the seed
//! shifted by a constant, links them: what a peer learns of one hash's behaviour (which of its
//! 5-tuples collide in the flow table, how long a lookup takes) is evidence about the seed and
//! so about every other hash. Each [`Purpose`] therefore gets a key of its own:
//!
//! `key(purpose, i) = SipHash-2-4(k0 = seed, k1 = DOMAIN; [i] || label || 0x00 || [64 * n])`
//!
//! the KDF in counter mode of NIST SP 800-108r1 section 4.1 with `SipHash-2-4` as its PRF
//! (`[i]`: the block counter, one byte from 1; `label`: the purpose's name, ASCII; `[64 * n]`:
//! the output length in bits, two bytes little-endian; no context). `SipHash` is a PRF by design
//! (Aumasson and Bernstein, "`SipHash`: a fast short-input PRF", 2012; the `siphasher` crate,
//! already this crate's fingerprint hash), so keys of different purposes, or blocks of one, are
//! independent to whoever does not know the seed: learning one says nothing about another, and
//! nothing about the seed. The secret is still the seed's 64 bits (`k1` is a public
//! constant); the derivation separates purposes, it does not add entropy.
//!
//! Derived where the key is set up, never per packet: a flow table derives its key when it is
//! created, an encoder its two per save, the driver its own at load.

use core::hash::Hasher;

use siphasher::sip::SipHasher24;

/// `k1` of the derivation's `SipHash` key: a public domain constant ("vsflowKD").
const DOMAIN: u64 = u64::from_le_bytes(*b"vsflowKD");

/// What a derived key is for (its label is part of the derivation: see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A flow table's key hash (foldhash).
    FlowTable,
    /// The driver's port map hash (foldhash).
    PortMap,
    /// A sharded port's per-shard hints (foldhash).
    ShardHints,
    /// The encoder's address dictionaries' hash (foldhash).
    AddressIndex,
    /// The `SipHash-1-3` key the encoder draws fingerprint salts with.
    FingerprintSalt,
    /// The `SipHash-1-3` key of a restore blob's digest.
    BlobDigest,
}

impl Purpose {
    /// Every purpose.
    pub const ALL: [Self; 6] = [
        Self::FlowTable,
        Self::PortMap,
        Self::ShardHints,
        Self::AddressIndex,
        Self::FingerprintSalt,
        Self::BlobDigest,
    ];

    /// The purpose's label in the derivation.
    #[must_use]
    pub const fn label(self) -> &'static [u8] {
        match self {
            Self::FlowTable => b"vsflow flow table hash",
            Self::PortMap => b"vsflow port map hash",
            Self::ShardHints => b"vsflow shard hints hash",
            Self::AddressIndex => b"vsflow encoder address index",
            Self::FingerprintSalt => b"vsflow fingerprint salt key",
            Self::BlobDigest => b"vsflow blob digest key",
        }
    }
}

/// Block `i` (from 1) of `n` 64-bit blocks of the purpose's key.
fn block(seed: u64, purpose: Purpose, i: u8, n: u16) -> u64 {
    let mut h = SipHasher24::new_with_keys(seed, DOMAIN);
    h.write(&[i]);
    h.write(purpose.label());
    h.write(&[0]);
    h.write(&n.saturating_mul(64).to_le_bytes());
    h.finish()
}

/// A 64-bit key for `purpose` from the boot seed (see the module docs).
#[must_use]
pub fn derive(seed: u64, purpose: Purpose) -> u64 {
    block(seed, purpose, 1, 1)
}

/// A 128-bit key (a `SipHash` key) for `purpose` from the boot seed.
#[must_use]
pub fn derive128(seed: u64, purpose: Purpose) -> [u64; 2] {
    [block(seed, purpose, 1, 2), block(seed, purpose, 2, 2)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_purpose_gets_a_different_key_and_none_is_the_seed() {
        for seed in [0u64, 1, 0x5653_464c_4f57_0001, u64::MAX] {
            let mut all: alloc::vec::Vec<u64> =
                Purpose::ALL.iter().map(|&p| derive(seed, p)).collect();
            for p in Purpose::ALL {
                all.extend(derive128(seed, p));
            }
            all.push(seed);
            let n = all.len();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), n, "seed {seed:#x}: two keys, or a key and the seed, equal");
        }
    }

    #[test]
    fn a_128_bit_key_is_not_two_64_bit_ones_and_labels_are_distinct() {
        let (seed, p) = (7, Purpose::BlobDigest);
        assert_ne!(derive128(seed, p)[0], derive(seed, p), "the length is part of the input");
        let mut labels: alloc::vec::Vec<_> = Purpose::ALL.iter().map(|p| p.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Purpose::ALL.len());
    }

    /// The derivation is `SipHash-2-4` over the documented input, byte for byte (a reader can
    /// reproduce a key from the module docs alone).
    #[test]
    fn the_derivation_is_the_documented_sp_800_108_counter_mode_input() {
        let seed = 0x0123_4567_89ab_cdef;
        let mut input = alloc::vec![1u8];
        input.extend_from_slice(b"vsflow flow table hash");
        input.extend_from_slice(&[0, 64, 0]);
        let mut h = SipHasher24::new_with_keys(seed, u64::from_le_bytes(*b"vsflowKD"));
        h.write(&input);
        assert_eq!(derive(seed, Purpose::FlowTable), h.finish());
    }

    /// One seed bit flips about half of every key's bits.
    #[test]
    fn nearby_seeds_give_unrelated_keys() {
        for p in Purpose::ALL {
            let flips = (derive(1000, p) ^ derive(1001, p)).count_ones();
            assert!((12..=52).contains(&flips), "{p:?}: {flips} bits differ");
        }
    }
}
