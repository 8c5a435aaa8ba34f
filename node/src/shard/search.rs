//! The query planner: a filter becomes a bitmap first; a small candidate set is searched
//! exactly, a large one through FAISS with the bitmap as ID selector; candidates are re-ranked
//! with exact distances.

use std::collections::BinaryHeap;

use quiver_proto::{DistanceMetric, Filter, Hit};
use roaring::RoaringTreemap;

use super::{check_vector, Entry, Shard, ShardError};
use crate::index::distance::{dot, l2_squared};

impl Shard {
    fn distance(&self, query: &[f32], entry: &Entry) -> f32 {
        match self.spec.metric {
            DistanceMetric::Cosine => (1.0 - dot(query, &entry.vector) * entry.inv_norm).max(0.0),
            DistanceMetric::Euclidean => l2_squared(query, &entry.vector).sqrt(),
        }
    }

    /// The `top_k` nearest live vectors matching `filter`, ascending by (distance, key).
    pub fn search(
        &self,
        query: &[f32],
        top_k: usize,
        filter: Option<&Filter>,
        return_metadata: bool,
    ) -> Result<Vec<Hit>, ShardError> {
        check_vector(&self.spec, query)?;
        let query = self.index_form(query);
        let candidates = filter.map(|f| self.filter_index.evaluate(f, &self.live));
        let live = self.live.len();
        let tombstones = self.index.len().saturating_sub(live);
        let ids: Vec<u64> = match &candidates {
            Some(c) if c.is_empty() => Vec::new(),
            Some(c) if c.len() <= self.config.exact_search_max_candidates => c.iter().collect(),
            None if live <= self.config.exact_search_max_candidates.min(2_000) => {
                self.live.iter().collect()
            }
            _ => {
                let allowed = candidates.as_ref().unwrap_or(&self.live);
                let selectivity = (allowed.len() as f64 / live.max(1) as f64).clamp(1e-6, 1.0);
                // Raising k raises HNSW's breadth (ef = max(efSearch, k)) for selective filters.
                let breadth = ((top_k as f64) / selectivity).ceil() as usize;
                let k = breadth.clamp(top_k, top_k.saturating_mul(20).max(top_k + 100));
                let bitmap = (candidates.is_some() || tombstones > 0).then(|| self.bitmap(allowed));
                let found: Vec<u64> = self
                    .index
                    .search(&query, k, bitmap.as_deref())?
                    .into_iter()
                    .map(|(_, id)| id)
                    .collect();
                // HNSW with a selector can stop short of k allowed ids; a query must return
                // top_k results whenever that many vectors match, so fall back to exact search.
                if (found.len() as u64) < (top_k as u64).min(allowed.len()) {
                    allowed.iter().collect()
                } else {
                    found
                }
            }
        };
        Ok(self.rank(&query, ids, top_k, return_metadata))
    }

    /// Exact distances for `ids`, best `top_k` ascending by (distance, key).
    fn rank(&self, query: &[f32], ids: Vec<u64>, top_k: usize, return_metadata: bool) -> Vec<Hit> {
        #[derive(PartialEq)]
        struct Candidate<'a>(f32, &'a str, u64);
        impl Eq for Candidate<'_> {}
        impl PartialOrd for Candidate<'_> {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for Candidate<'_> {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.0.total_cmp(&other.0).then_with(|| self.1.cmp(other.1))
            }
        }
        let mut heap: BinaryHeap<Candidate<'_>> = BinaryHeap::with_capacity(top_k + 1);
        for id in ids {
            let Some(entry) = self.entries.get(&id) else {
                continue;
            };
            let candidate = Candidate(self.distance(query, entry), &entry.key, id);
            if heap.len() < top_k {
                heap.push(candidate);
            } else if heap.peek().is_some_and(|worst| candidate < *worst) {
                heap.pop();
                heap.push(candidate);
            }
        }
        heap.into_sorted_vec()
            .into_iter()
            .filter_map(|Candidate(distance, _, id)| {
                let entry = self.entries.get(&id)?;
                Some(Hit {
                    key: entry.key.clone(),
                    distance,
                    metadata: return_metadata.then(|| entry.metadata.clone()),
                })
            })
            .collect()
    }

    fn bitmap(&self, ids: &RoaringTreemap) -> Vec<u8> {
        let len = usize::try_from(self.next_id / 8 + 1).unwrap_or(usize::MAX);
        let mut bitmap = vec![0u8; len];
        for id in ids {
            if let Some(byte) = usize::try_from(id / 8).ok().and_then(|i| bitmap.get_mut(i)) {
                *byte |= 1 << (id % 8);
            }
        }
        bitmap
    }
}
