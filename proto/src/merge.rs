//! The k-way merge of per-shard top-k lists, shared by nodes (several shards in one RPC) and
//! coordinators (several nodes). Pure logic.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::messages::Hit;

/// Merges per-shard result lists, each ascending by (distance, key), into the best `k`.
pub fn merge_top_k(lists: Vec<Vec<Hit>>, k: usize) -> Vec<Hit> {
    struct Head {
        hit: Hit,
        list: usize,
    }
    impl PartialEq for Head {
        fn eq(&self, other: &Self) -> bool {
            self.cmp(other) == Ordering::Equal
        }
    }
    impl Eq for Head {}
    impl PartialOrd for Head {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Head {
        // Reversed: BinaryHeap is a max-heap and we want the smallest (distance, key) first.
        fn cmp(&self, other: &Self) -> Ordering {
            other
                .hit
                .distance
                .total_cmp(&self.hit.distance)
                .then_with(|| other.hit.key.cmp(&self.hit.key))
        }
    }
    let mut iters: Vec<_> = lists.into_iter().map(Vec::into_iter).collect();
    let mut heap = BinaryHeap::with_capacity(iters.len());
    for (list, iter) in iters.iter_mut().enumerate() {
        if let Some(hit) = iter.next() {
            heap.push(Head { hit, list });
        }
    }
    let mut out = Vec::with_capacity(k);
    while out.len() < k {
        let Some(Head { hit, list }) = heap.pop() else {
            break;
        };
        if let Some(next) = iters[list].next() {
            heap.push(Head { hit: next, list });
        }
        out.push(hit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hit(key: &str, distance: f32) -> Hit {
        Hit {
            key: key.into(),
            distance,
            metadata: None,
        }
    }

    #[test]
    fn merge_orders_by_distance_then_key() {
        let merged = merge_top_k(
            vec![
                vec![hit("b", 0.1), hit("d", 0.5)],
                vec![hit("a", 0.1), hit("c", 0.3)],
                vec![],
            ],
            3,
        );
        let keys: Vec<&str> = merged.iter().map(|h| h.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
    }

    proptest! {
        #[test]
        fn merge_equals_sorting_everything(
            lists in prop::collection::vec(prop::collection::vec((0u32..50, 0u32..1000), 0..20), 0..6),
            k in 1usize..40,
        ) {
            let mut n = 0;
            let lists: Vec<Vec<Hit>> = lists.into_iter().map(|list| {
                let mut hits: Vec<Hit> = list.into_iter().map(|(d, _)| { n += 1; hit(&format!("k{n:05}"), d as f32 / 7.0) }).collect();
                hits.sort_by(|a, b| a.distance.total_cmp(&b.distance).then_with(|| a.key.cmp(&b.key)));
                hits
            }).collect();
            let mut all: Vec<Hit> = lists.iter().flatten().cloned().collect();
            all.sort_by(|a, b| a.distance.total_cmp(&b.distance).then_with(|| a.key.cmp(&b.key)));
            all.truncate(k);
            prop_assert_eq!(merge_top_k(lists, k), all);
        }
    }
}
