//! Exact (brute-force) nearest neighbours and recall@k: the oracle every measured search is
//! compared with. Pure logic; `ground_truth` spreads queries over scoped threads.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};

use quiver_proto::DistanceMetric;

use crate::dataset::Dataset;

/// A candidate ordered by (distance, index), so the heap's max is the worst kept result.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Candidate {
    distance: f32,
    index: usize,
}

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then(self.index.cmp(&other.index))
    }
}

/// Distance used for ranking only: squared L2, or `1 - cos` (monotone in the real distances).
pub fn ranking_distance(metric: DistanceMetric, query: &[f32], vector: &[f32]) -> f32 {
    match metric {
        DistanceMetric::Euclidean => query
            .iter()
            .zip(vector)
            .map(|(a, b)| (a - b) * (a - b))
            .sum(),
        DistanceMetric::Cosine => {
            let (mut dot, mut qq, mut vv) = (0f32, 0f32, 0f32);
            for (a, b) in query.iter().zip(vector) {
                dot += a * b;
                qq += a * a;
                vv += b * b;
            }
            if qq == 0.0 || vv == 0.0 {
                return 1.0;
            }
            1.0 - dot / (qq.sqrt() * vv.sqrt())
        }
    }
}

/// Indexes of the `k` nearest vectors among those `allowed`, nearest first.
pub fn exact_top_k(
    data: &Dataset,
    metric: DistanceMetric,
    query: &[f32],
    k: usize,
    allowed: impl Fn(usize) -> bool,
) -> Vec<usize> {
    if k == 0 {
        return Vec::new();
    }
    let mut heap = BinaryHeap::with_capacity(k + 1);
    for index in 0..data.len() {
        if !allowed(index) {
            continue;
        }
        let candidate = Candidate {
            distance: ranking_distance(metric, query, data.vector(index)),
            index,
        };
        if heap.len() < k {
            heap.push(candidate);
        } else if heap.peek().is_some_and(|worst| candidate < *worst) {
            heap.pop();
            heap.push(candidate);
        }
    }
    heap.into_sorted_vec()
        .into_iter()
        .map(|c| c.index)
        .collect()
}

/// Exact top-k of every query, computed on `threads` threads. `filter_of(q)` restricts query `q`
/// to the vectors it allows (`None`: all).
pub fn ground_truth(
    data: &Dataset,
    metric: DistanceMetric,
    queries: &Dataset,
    k: usize,
    threads: usize,
    group_filter: Option<(usize, &(dyn Fn(usize) -> usize + Sync))>,
) -> Vec<Vec<usize>> {
    let n = queries.len();
    let threads = threads.clamp(1, 64);
    let chunk = n.div_ceil(threads).max(1);
    let mut out = vec![Vec::new(); n];
    std::thread::scope(|scope| {
        for (c, slot) in out.chunks_mut(chunk).enumerate() {
            scope.spawn(move || {
                for (j, result) in slot.iter_mut().enumerate() {
                    let q = c * chunk + j;
                    *result = match group_filter {
                        None => exact_top_k(data, metric, queries.vector(q), k, |_| true),
                        Some((groups, group_of)) => {
                            let wanted = q % groups;
                            exact_top_k(data, metric, queries.vector(q), k, |i| {
                                group_of(i) == wanted
                            })
                        }
                    };
                }
            });
        }
    });
    out
}

/// |distinct retrieved ∩ truth| / |truth| (1.0 when the truth is empty: nothing could be
/// found). A right answer returned twice counts once.
pub fn recall(retrieved: &[usize], truth: &[usize]) -> f64 {
    if truth.is_empty() {
        return 1.0;
    }
    let truth: HashSet<usize> = truth.iter().copied().collect();
    let hits: HashSet<usize> = retrieved
        .iter()
        .copied()
        .filter(|i| truth.contains(i))
        .collect();
    hits.len() as f64 / truth.len() as f64
}

/// Running mean of recall values.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct RecallSum {
    pub queries: u64,
    pub sum: f64,
}

impl RecallSum {
    pub fn add(&mut self, value: f64) {
        self.queries += 1;
        self.sum += value;
    }

    pub fn merge(&mut self, other: RecallSum) {
        self.queries += other.queries;
        self.sum += other.sum;
    }

    /// `None` when no query was measured.
    pub fn mean(&self) -> Option<f64> {
        (self.queries > 0).then(|| self.sum / self.queries as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> Dataset {
        Dataset {
            dimension: 2,
            vectors: (0..n).flat_map(|i| [i as f32, 0.0]).collect(),
        }
    }

    #[test]
    fn exact_top_k_finds_nearest_in_order() {
        let data = line(100);
        let top = exact_top_k(&data, DistanceMetric::Euclidean, &[10.2, 0.0], 3, |_| true);
        assert_eq!(top, vec![10, 11, 9]);
        let even = exact_top_k(&data, DistanceMetric::Euclidean, &[10.2, 0.0], 2, |i| {
            i % 2 == 0
        });
        assert_eq!(even, vec![10, 12]);
        assert_eq!(
            exact_top_k(&data, DistanceMetric::Euclidean, &[0.0, 0.0], 500, |_| true).len(),
            100
        );
    }

    #[test]
    fn cosine_ranks_by_angle() {
        let data = Dataset {
            dimension: 2,
            vectors: vec![1.0, 0.0, 0.0, 1.0, 10.0, 1.0],
        };
        let top = exact_top_k(&data, DistanceMetric::Cosine, &[1.0, 0.05], 3, |_| true);
        assert_eq!(top, vec![2, 0, 1]);
    }

    #[test]
    fn ground_truth_matches_single_threaded_and_filters_by_group() {
        let data = line(50);
        let queries = Dataset {
            dimension: 2,
            vectors: (0..7).flat_map(|i| [i as f32 * 7.0, 0.0]).collect(),
        };
        let truth = ground_truth(&data, DistanceMetric::Euclidean, &queries, 4, 3, None);
        for (q, t) in truth.iter().enumerate() {
            let expected = exact_top_k(
                &data,
                DistanceMetric::Euclidean,
                queries.vector(q),
                4,
                |_| true,
            );
            assert_eq!(t, &expected);
        }
        let group_of = |i: usize| i % 5;
        let filtered = ground_truth(
            &data,
            DistanceMetric::Euclidean,
            &queries,
            4,
            2,
            Some((5, &group_of)),
        );
        for (q, t) in filtered.iter().enumerate() {
            assert!(t.iter().all(|&i| i % 5 == q % 5), "{t:?}");
            assert_eq!(t.len(), 4);
        }
    }

    #[test]
    fn recall_counts_overlap() {
        assert_eq!(recall(&[1, 2, 3, 4], &[1, 2, 5, 6]), 0.5);
        assert_eq!(recall(&[], &[]), 1.0);
        assert_eq!(recall(&[], &[1]), 0.0);
        // Ten copies of one right answer are one right answer.
        assert_eq!(recall(&[1; 10], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), 0.1);
        let mut sum = RecallSum::default();
        assert_eq!(sum.mean(), None);
        sum.add(1.0);
        sum.add(0.5);
        assert_eq!(sum.mean(), Some(0.75));
    }
}
