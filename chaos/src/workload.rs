//! The seeded workload: dataset + query pool + exact ground truth, the operation mix, and the
//! shared setup both commands use (create bucket and index, ingest with concurrent writers).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use quiver_proto::DistanceMetric;
use rand::Rng;

use crate::client::{Float32Data, PutVector, PutVectorsRequest, S3VectorsClient};
use crate::dataset::{self, ClusteredGenerator, Dataset};
use crate::exact;
use crate::report::{Failure, Recorder};

/// PutVectors accepts at most 500 vectors per request.
pub const MAX_PUT_BATCH: usize = 500;
/// Attempts per ingest batch when the server throttles or is briefly unavailable; with the
/// backoff below a batch gives up after about a minute.
const INGEST_ATTEMPTS: u32 = 70;
const MAX_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, clap::Args)]
pub struct DatasetArgs {
    /// Number of vectors (generated, or the first N of --dataset).
    #[arg(long, default_value_t = 10_000)]
    pub count: usize,
    /// Dimension of generated vectors.
    #[arg(long, default_value_t = 64)]
    pub dimension: usize,
    /// Gaussian clusters of the generated data.
    #[arg(long, default_value_t = 100)]
    pub clusters: usize,
    /// Standard deviation of points around their cluster center (centers are N(0, 1)).
    #[arg(long, default_value_t = 0.5)]
    pub spread: f32,
    /// Read vectors from a .npy (2-D float32/float64) or .fvecs file instead of generating them;
    /// the last --queries rows become the queries.
    #[arg(long)]
    pub dataset: Option<std::path::PathBuf>,
    /// Size of the query pool (each has exact ground truth).
    #[arg(long, default_value_t = 500)]
    pub queries: usize,
    /// Seed of everything random in the workload.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Distance metric of the index: euclidean or cosine.
    #[arg(long, default_value = "euclidean")]
    pub metric: String,
    /// topK of every query.
    #[arg(long, default_value_t = 10)]
    pub top_k: usize,
    /// Fraction of the dataset an equality filter on `group` selects (filtered queries).
    #[arg(long, default_value_t = 0.1)]
    pub filter_selectivity: f64,
}

pub fn parse_metric(name: &str) -> anyhow::Result<DistanceMetric> {
    match name {
        "euclidean" => Ok(DistanceMetric::Euclidean),
        "cosine" => Ok(DistanceMetric::Cosine),
        other => bail!("--metric must be euclidean or cosine, got {other:?}"),
    }
}

pub fn metric_name(metric: DistanceMetric) -> &'static str {
    match metric {
        DistanceMetric::Euclidean => "euclidean",
        DistanceMetric::Cosine => "cosine",
    }
}

/// Everything a run needs to know about its data, immutable once built.
pub struct Workload {
    pub data: Dataset,
    pub queries: Dataset,
    pub metric: DistanceMetric,
    pub top_k: usize,
    pub groups: usize,
    pub truth_plain: Vec<Vec<usize>>,
    pub truth_filtered: Vec<Vec<usize>>,
    /// Added to churn vectors (euclidean) so they never enter a query's top-k.
    pub churn_offset: f32,
    pub source: String,
}

impl Workload {
    pub fn build(args: &DatasetArgs, with_filtered_truth: bool) -> anyhow::Result<Workload> {
        let metric = parse_metric(&args.metric)?;
        if !(1..=10_000).contains(&args.top_k) {
            bail!("--top-k must be in 1..=10000");
        }
        if !(1..=100_000).contains(&args.queries) {
            bail!("--queries must be in 1..=100000");
        }
        if args.count == 0 {
            bail!("--count must be positive");
        }
        let groups = dataset::groups_for_selectivity(args.filter_selectivity)?;
        let (data, queries, source) = match &args.dataset {
            Some(path) => {
                let mut data = dataset::read_file(path, args.count.saturating_add(args.queries))?;
                if data.len() <= args.queries {
                    bail!(
                        "{} has {} rows, need more than --queries",
                        path.display(),
                        data.len()
                    );
                }
                let queries = data.split_off_tail(args.queries);
                data.truncate(args.count);
                (data, queries, path.display().to_string())
            }
            None => {
                if !(1..=4096).contains(&args.dimension) {
                    bail!("--dimension must be in 1..=4096");
                }
                if args.count.saturating_mul(args.dimension) > dataset::MAX_FLOATS {
                    bail!("--count × --dimension is too large");
                }
                let generator =
                    ClusteredGenerator::new(args.dimension, args.clusters, args.spread, args.seed);
                let data = generator.points(args.count, args.seed.wrapping_add(1));
                let queries = generator.points(args.queries, args.seed.wrapping_add(2));
                let source = format!(
                    "clustered(count={}, dimension={}, clusters={}, spread={}, seed={})",
                    args.count, args.dimension, args.clusters, args.spread, args.seed
                );
                (data, queries, source)
            }
        };
        if metric == DistanceMetric::Cosine {
            for i in 0..data.len() {
                if data.vector(i).iter().all(|x| *x == 0.0) {
                    bail!("vector {i} is zero, which a cosine index rejects");
                }
            }
        }
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let truth_plain = exact::ground_truth(&data, metric, &queries, args.top_k, threads, None);
        let truth_filtered = if with_filtered_truth {
            let group_of = move |i: usize| dataset::group_of(i, groups);
            exact::ground_truth(
                &data,
                metric,
                &queries,
                args.top_k,
                threads,
                Some((groups, &group_of)),
            )
        } else {
            Vec::new()
        };
        let churn_offset = 10.0 * (data.max_abs() + 1.0);
        Ok(Workload {
            data,
            queries,
            metric,
            top_k: args.top_k,
            groups,
            truth_plain,
            truth_filtered,
            churn_offset,
            source,
        })
    }

    /// The filter of filtered query `q`: the group `q % groups`.
    pub fn filter_for(&self, q: usize) -> serde_json::Value {
        serde_json::json!({ "group": dataset::group_name(q % self.groups) })
    }

    /// Recall of a query answer given as keys.
    pub fn recall_of(&self, keys: &[String], truth: &[usize]) -> f64 {
        let found: Vec<usize> = keys.iter().filter_map(|k| dataset::parse_key(k)).collect();
        exact::recall(&found, truth)
    }
}

/// Operations of the load mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Query,
    FilteredQuery,
    Put,
    Get,
    Delete,
}

impl Operation {
    pub const ALL: [Operation; 5] = [
        Operation::Query,
        Operation::FilteredQuery,
        Operation::Put,
        Operation::Get,
        Operation::Delete,
    ];

    pub fn mix_name(self) -> &'static str {
        match self {
            Operation::Query => "query",
            Operation::FilteredQuery => "filtered",
            Operation::Put => "put",
            Operation::Get => "get",
            Operation::Delete => "delete",
        }
    }

    /// Name in the report (filtered queries are reported apart from plain ones).
    pub fn report_name(self) -> &'static str {
        match self {
            Operation::Query => "QueryVectors",
            Operation::FilteredQuery => "QueryVectors(filter)",
            Operation::Put => "PutVectors",
            Operation::Get => "GetVectors",
            Operation::Delete => "DeleteVectors",
        }
    }
}

/// Relative weights of the operations, e.g. `query=60,filtered=20,put=10,get=5,delete=5`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    weights: Vec<(Operation, u32)>,
    total: u32,
}

impl Mix {
    pub fn parse(text: &str) -> anyhow::Result<Mix> {
        let mut weights = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .with_context(|| format!("mix entry {part:?} is not name=weight"))?;
            let op = Operation::ALL
                .into_iter()
                .find(|op| op.mix_name() == name.trim())
                .with_context(|| {
                    format!("unknown operation {name:?} (query, filtered, put, get, delete)")
                })?;
            let weight: u32 = weight
                .trim()
                .parse()
                .with_context(|| format!("weight of {name} is not a number"))?;
            if weight > 1_000_000 {
                bail!("weight of {name} is too large");
            }
            if weights.iter().any(|(o, _)| *o == op) {
                bail!("{name} appears twice in the mix");
            }
            if weight > 0 {
                weights.push((op, weight));
            }
        }
        let total = weights.iter().map(|(_, w)| w).sum();
        if total == 0 {
            bail!("the mix has no operation with a positive weight");
        }
        Ok(Mix { weights, total })
    }

    pub fn choose(&self, rng: &mut impl Rng) -> Operation {
        let mut ticket = rng.gen_range(0..self.total);
        for (op, weight) in &self.weights {
            if ticket < *weight {
                return *op;
            }
            ticket -= weight;
        }
        self.weights[self.weights.len() - 1].0
    }

    pub fn contains(&self, op: Operation) -> bool {
        self.weights.iter().any(|(o, _)| *o == op)
    }

    pub fn describe(&self) -> String {
        self.weights
            .iter()
            .map(|(o, w)| format!("{}={w}", o.mix_name()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Creates the bucket and the index of a run.
pub async fn create_index(
    client: &S3VectorsClient,
    bucket: &str,
    index: &str,
    workload: &Workload,
) -> anyhow::Result<()> {
    client
        .create_bucket(bucket)
        .await
        .map_err(|f| anyhow::anyhow!("CreateVectorBucket: {}: {}", f.error_type, f.message))?;
    client
        .create_index(
            bucket,
            index,
            workload.data.dimension,
            metric_name(workload.metric),
        )
        .await
        .map_err(|f| anyhow::anyhow!("CreateIndex: {}: {}", f.error_type, f.message))?;
    Ok(())
}

pub fn put_request<'a>(
    bucket: &'a str,
    index: &'a str,
    data: &'a Dataset,
    groups: usize,
    range: std::ops::Range<usize>,
) -> PutVectorsRequest<'a> {
    PutVectorsRequest {
        vector_bucket_name: bucket,
        index_name: index,
        vectors: range
            .map(|i| PutVector {
                key: dataset::key(i),
                data: Float32Data {
                    float32: data.vector(i),
                },
                metadata: dataset::metadata(i, groups),
            })
            .collect(),
    }
}

/// Puts the whole dataset in batches of `batch` with `writers` concurrent writers. Throttled or
/// unavailable batches are retried with backoff; any other error ends the ingest.
/// Returns the wall time and the per-request measurements.
pub async fn ingest(
    client: &S3VectorsClient,
    bucket: &str,
    index: &str,
    workload: Arc<Workload>,
    batch: usize,
    writers: usize,
) -> anyhow::Result<(Duration, Recorder)> {
    let batch = batch.clamp(1, MAX_PUT_BATCH);
    let batches = workload.data.len().div_ceil(batch);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers.clamp(1, 256) {
        let (client, workload, next) = (client.clone(), workload.clone(), next.clone());
        let (bucket, index) = (bucket.to_owned(), index.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut recorder = Recorder::default();
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return Ok::<_, anyhow::Error>(recorder);
                }
                let range = b * batch..((b + 1) * batch).min(workload.data.len());
                let request = put_request(&bucket, &index, &workload.data, workload.groups, range);
                let mut attempt = 0;
                loop {
                    let sent = Instant::now();
                    let result = client.put_vectors(&request).await;
                    recorder.record(
                        "PutVectors",
                        start.elapsed(),
                        sent.elapsed(),
                        result.as_ref().err(),
                    );
                    match result {
                        Ok(()) => break,
                        Err(f) if retryable(&f) && attempt + 1 < INGEST_ATTEMPTS => {
                            attempt += 1;
                            let backoff =
                                Duration::from_millis(25 << attempt.min(6)).min(MAX_BACKOFF);
                            tokio::time::sleep(backoff).await;
                        }
                        Err(f) => bail!("PutVectors batch {b}: {}: {}", f.error_type, f.message),
                    }
                }
            }
        }));
    }
    let mut total = Recorder::default();
    for task in tasks {
        total.merge(&task.await.context("ingest writer panicked")??);
    }
    Ok((start.elapsed(), total))
}

fn retryable(f: &Failure) -> bool {
    f.is_throttling() || f.status == Some(503)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn mix_parses_and_chooses_by_weight() {
        let mix = Mix::parse("query=60, filtered=20,put=10,get=10,delete=0").unwrap();
        assert!(!mix.contains(Operation::Delete));
        assert_eq!(mix.describe(), "query=60,filtered=20,put=10,get=10");
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..100_000 {
            *counts.entry(mix.choose(&mut rng)).or_insert(0u32) += 1;
        }
        assert!(
            (59_000..61_000).contains(&counts[&Operation::Query]),
            "{counts:?}"
        );
        assert!(
            (9_000..11_000).contains(&counts[&Operation::Put]),
            "{counts:?}"
        );
        assert!(!counts.contains_key(&Operation::Delete));
        assert!(Mix::parse("query=0").is_err());
        assert!(Mix::parse("scan=1").is_err());
        assert!(Mix::parse("query=1,query=2").is_err());
        assert!(Mix::parse("query").is_err());
    }

    #[test]
    fn workload_has_ground_truth_for_plain_and_filtered_queries() {
        let args = DatasetArgs {
            count: 500,
            dimension: 8,
            clusters: 5,
            spread: 0.3,
            dataset: None,
            queries: 20,
            seed: 3,
            metric: "euclidean".into(),
            top_k: 5,
            filter_selectivity: 0.25,
        };
        let w = Workload::build(&args, true).unwrap();
        assert_eq!(w.groups, 4);
        assert_eq!(w.truth_plain.len(), 20);
        for (q, truth) in w.truth_filtered.iter().enumerate() {
            assert_eq!(truth.len(), 5);
            assert!(truth.iter().all(|&i| i % 4 == q % 4));
        }
        assert_eq!(w.filter_for(6), serde_json::json!({"group": "g2"}));
        let keys: Vec<String> = w.truth_plain[0].iter().map(|&i| dataset::key(i)).collect();
        assert_eq!(w.recall_of(&keys, &w.truth_plain[0]), 1.0);
        let request = put_request("b", "i", &w.data, w.groups, 0..3);
        assert_eq!(request.vectors.len(), 3);
        assert_eq!(request.vectors[2].key, "v2");
    }
}
