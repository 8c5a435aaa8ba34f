//! Identifiers and the key -> shard mapping.

use serde::{Deserialize, Serialize};

/// Unique id of one index incarnation. A re-created index with the same name gets a new uid, so
/// data of the old incarnation can never leak into the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IndexUid(pub u64);

/// One shard of one index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShardId {
    pub index: IndexUid,
    pub shard: u32,
}

/// One replica of one shard (the Raft node id of its shard group, once shards are replicated).
/// The catalog allocates replica ids from one counter and never reuses one, so a removed replica
/// (or one whose disk was lost) can never be mistaken for a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReplicaId(pub u64);

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}-{}", self.index.0, self.shard)
    }
}

/// Stable-forever hash of a vector key (xxh3-64 with seed 0). Changing it would move every key.
pub fn key_hash(key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key.as_bytes())
}

/// A half-open range `[start, end)` of the 64-bit key-hash space; `end == None` means up to 2^64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HashRange {
    pub start: u64,
    pub end: Option<u64>,
}

impl HashRange {
    pub const FULL: HashRange = HashRange {
        start: 0,
        end: None,
    };

    /// The `part`-th of `parts` equal contiguous ranges (`parts >= 1`, `part < parts`).
    pub fn split(part: u32, parts: u32) -> HashRange {
        let parts = u128::from(parts.max(1));
        let part = u128::from(part);
        let bound = |i: u128| -> Option<u64> {
            let v = (i << 64) / parts;
            u64::try_from(v).ok()
        };
        HashRange {
            start: bound(part).unwrap_or(u64::MAX),
            end: if part + 1 >= parts {
                None
            } else {
                bound(part + 1)
            },
        }
    }

    pub fn contains(&self, hash: u64) -> bool {
        hash >= self.start && self.end.is_none_or(|end| hash < end)
    }

    /// Whether `ranges`, in this order, cover the whole hash space exactly once: the first starts
    /// at 0, each ends where the next starts, the last runs to 2^64, and none is empty. Every
    /// index's shard map has this shape.
    pub fn is_partition(ranges: &[HashRange]) -> bool {
        let Some(last) = ranges.last() else {
            return false;
        };
        ranges.first().is_some_and(|first| first.start == 0)
            && last.end.is_none()
            && ranges.windows(2).all(|w| w[0].end == Some(w[1].start))
            && ranges.iter().all(|r| r.end.is_none_or(|end| r.start < end))
    }
}

/// Which of `shard_count` equal hash ranges owns `key`. Consistent with [`HashRange::split`].
pub fn shard_for_key(key: &str, shard_count: u32) -> u32 {
    let count = u128::from(shard_count.max(1));
    let shard = (u128::from(key_hash(key)) * count) >> 64;
    // shard < count <= u32::MAX by construction.
    u32::try_from(shard).unwrap_or(shard_count.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_ranges_cover_the_space_and_agree_with_shard_for_key() {
        for parts in [1u32, 2, 3, 7, 16] {
            let ranges: Vec<_> = (0..parts).map(|p| HashRange::split(p, parts)).collect();
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges[parts as usize - 1].end, None);
            for w in ranges.windows(2) {
                assert_eq!(w[0].end, Some(w[1].start));
            }
            for i in 0..2000 {
                let key = format!("key-{i}");
                let shard = shard_for_key(&key, parts);
                assert!(
                    ranges[shard as usize].contains(key_hash(&key)),
                    "{key} {parts}"
                );
            }
        }
    }

    #[test]
    fn key_hash_is_stable() {
        // Golden value: the hash function may never change (it places every stored key).
        assert_eq!(key_hash("hello"), 0x9555e8555c62dcfd);
    }
}
