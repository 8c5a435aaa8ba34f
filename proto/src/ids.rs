//! Identifiers and the key -> shard mapping: a shard owns a contiguous range of the key-hash
//! space, and [`owner`] looks a key's hash up in an index's ranges.

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

/// Which of `ranges` owns `hash`: the position of the range that contains it. The ranges of a
/// shard map partition the hash space ([`HashRange::is_partition`]), so exactly one does; `None`
/// means the ranges have a gap there. The coordinator routes keys with this function and a node
/// checks ownership with the same [`HashRange::contains`], so the two cannot disagree, whatever
/// shape the ranges have (equal splits today, uneven ones after a shard split).
pub fn owner(ranges: impl IntoIterator<Item = HashRange>, hash: u64) -> Option<usize> {
    ranges.into_iter().position(|range| range.contains(hash))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn split(parts: u32) -> Vec<HashRange> {
        (0..parts).map(|p| HashRange::split(p, parts)).collect()
    }

    /// The equal-split arithmetic (`shard_for_key`) the coordinator routed with before it looked
    /// ranges up.
    fn equal_split_shard(hash: u64, parts: u32) -> usize {
        ((u128::from(hash) * u128::from(parts)) >> 64) as usize
    }

    #[test]
    fn split_ranges_partition_the_space() {
        for parts in [1u32, 2, 3, 7, 16, 1000] {
            let ranges = split(parts);
            assert!(HashRange::is_partition(&ranges), "{parts}");
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges[parts as usize - 1].end, None);
        }
        assert!(!HashRange::is_partition(&[]));
    }

    #[test]
    fn is_partition_refuses_gaps_overlaps_and_empty_ranges() {
        let range = |start, end| HashRange { start, end };
        assert!(HashRange::is_partition(&[
            range(0, Some(10)),
            range(10, None)
        ]));
        assert!(!HashRange::is_partition(&[
            range(0, Some(10)),
            range(11, None)
        ]));
        assert!(!HashRange::is_partition(&[
            range(0, Some(10)),
            range(9, None)
        ]));
        assert!(!HashRange::is_partition(&[range(1, None)]));
        assert!(!HashRange::is_partition(&[range(0, Some(10))]));
        assert!(!HashRange::is_partition(&[
            range(0, Some(10)),
            range(10, Some(10)),
            range(10, None)
        ]));
    }

    proptest! {
        /// Every hash has exactly one owner among equal split ranges, and `owner` names the
        /// range that `contains` it. Away from range starts it is also the shard the old
        /// equal-split arithmetic chose, so stored keys are found where they were written.
        #[test]
        fn every_hash_has_exactly_one_owner(parts in 1u32..=64, hash in any::<u64>()) {
            let ranges = split(parts);
            let owners: Vec<usize> = (0..ranges.len()).filter(|&i| ranges[i].contains(hash)).collect();
            prop_assert_eq!(owners.len(), 1);
            prop_assert_eq!(owner(ranges.iter().copied(), hash), Some(owners[0]));
            if ranges.iter().all(|range| range.start != hash) {
                prop_assert_eq!(owners[0], equal_split_shard(hash, parts));
            }
        }
    }

    /// The same at both edges of every range of every split up to 64 parts (and a large one),
    /// where an off-by-one would show.
    #[test]
    fn range_edges_belong_to_exactly_one_range() {
        for parts in (1u32..=64).chain([1000]) {
            let ranges = split(parts);
            for (i, range) in ranges.iter().enumerate() {
                let last = range.end.map_or(u64::MAX, |end| end - 1);
                for hash in [range.start, last] {
                    let owners = ranges.iter().filter(|range| range.contains(hash)).count();
                    assert_eq!(owners, 1, "{parts} {hash:#x}");
                    assert_eq!(owner(ranges.iter().copied(), hash), Some(i), "{parts}");
                }
                assert_eq!(equal_split_shard(last, parts), i, "{parts}");
            }
        }
    }

    /// Why routing looks ranges up: the old arithmetic sent the first hash of a range whose start
    /// is not an exact multiple of 2^64 / parts to the shard before it, which refused the key as
    /// out of its range (a 400 for a routing disagreement). Such a key could never be stored, so
    /// routing by ranges moves no stored key.
    #[test]
    fn the_old_arithmetic_disagreed_with_the_ranges_at_inexact_range_starts() {
        let ranges = split(3);
        let start = ranges[1].start;
        assert_eq!(start, u64::MAX / 3);
        assert_eq!(owner(ranges.iter().copied(), start), Some(1));
        assert_eq!(equal_split_shard(start, 3), 0);
        assert!(!ranges[0].contains(start));
        // Powers of two split exactly: there the two rules agree everywhere.
        let ranges = split(4);
        for range in &ranges {
            assert_eq!(
                owner(ranges.iter().copied(), range.start),
                Some(equal_split_shard(range.start, 4))
            );
        }
    }

    #[test]
    fn uneven_ranges_route_by_their_bounds() {
        // As after splitting shard 0 of two at 2^62: [0, 2^62), [2^62, 2^63), [2^63, 2^64).
        let ranges = [
            HashRange {
                start: 0,
                end: Some(1 << 62),
            },
            HashRange {
                start: 1 << 62,
                end: Some(1 << 63),
            },
            HashRange {
                start: 1 << 63,
                end: None,
            },
        ];
        assert!(HashRange::is_partition(&ranges));
        for (hash, expected) in [
            (0, 0),
            ((1 << 62) - 1, 0),
            (1 << 62, 1),
            ((1 << 63) - 1, 1),
            (1 << 63, 2),
            (u64::MAX, 2),
        ] {
            assert_eq!(owner(ranges, hash), Some(expected), "{hash:#x}");
        }
        // A gap in the ranges owns nothing.
        assert_eq!(owner([ranges[0], ranges[2]], 1 << 62), None);
    }

    #[test]
    fn key_hash_is_stable() {
        // Golden value: the hash function may never change (it places every stored key).
        assert_eq!(key_hash("hello"), 0x9555e8555c62dcfd);
    }
}
