//! `quiver-chaos bench`: the same data and queries through (a) the FAISS wrapper Quiver's shards
//! use, in-process, and (b) Quiver end to end (HTTP → coordinator → QUIC → shards), side by side.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use quiver_node::index::distance::{dot, l2_squared};
use quiver_node::index::vector::{VectorIndex, DEFAULT_EF_SEARCH, DEFAULT_INDEX_DESCRIPTION};
use quiver_proto::{key_hash, owner, DistanceMetric, HashRange};
use serde::Serialize;

use crate::client::{Float32Data, QueryVectorsRequest};
use crate::dataset;
use crate::exact::{recall, RecallSum};
use crate::load::ServerArgs;
use crate::report::{self, fmt_ms, new_histogram, LatencyStats, Recorder};
use crate::workload::{self, DatasetArgs, Workload, MAX_PUT_BATCH};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Concurrent single-query callers on both sides (threads for FAISS, clients for Quiver).
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Minimum measuring time per side; each side also answers every pool query at least once.
    #[arg(long, default_value_t = 10.0)]
    pub query_seconds: f64,
    /// Upper bound on queries per side.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_queries: u64,
    /// Concurrent PutVectors writers (batches of 500) during the Quiver ingest.
    #[arg(long, default_value_t = 4)]
    pub ingest_writers: usize,
    /// JSON report path.
    #[arg(long, default_value = "quiver-chaos-bench.json")]
    pub report: PathBuf,
    /// Exit non-zero if Quiver's recall@k is below this.
    #[arg(long, default_value_t = 0.0)]
    pub min_recall: f64,
    /// Exit non-zero if the two sides' recall@k differ by more than this: the ratios compare
    /// equal search work only while the recalls agree.
    #[arg(long, default_value_t = 1.0)]
    pub max_recall_gap: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SideReport {
    pub name: &'static str,
    pub recall: f64,
    pub recall_queries: u64,
    pub queries: u64,
    pub seconds: f64,
    pub qps: f64,
    pub latency: LatencyStats,
    pub ingest_vectors_per_s: f64,
    pub ingest_seconds: f64,
    pub errors_by_type: BTreeMap<String, u64>,
    pub non_throttling_errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    pub qps: f64,
    pub p50: f64,
    pub p99: f64,
    pub ingest: f64,
    pub recall: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub command: &'static str,
    /// `git describe --always --dirty` of the working tree the run started in.
    pub commit: String,
    pub dataset: String,
    pub vectors: usize,
    pub dimension: usize,
    pub metric: &'static str,
    pub top_k: usize,
    pub query_pool: usize,
    pub threads: usize,
    pub index_description: &'static str,
    pub ef_search: usize,
    /// Quiver's shards per index; the raw side is partitioned the same way.
    pub shards_per_index: u32,
    pub faiss: SideReport,
    pub quiver: SideReport,
    /// Quiver divided by FAISS (b / a).
    pub ratio: Ratios,
    pub server_peak_rss_kib: Option<u64>,
    pub passed: bool,
    pub failures: Vec<String>,
}

/// Decides whether the caller takes query number `i`: the run ends after `max` queries, or once
/// the minimum time has passed and every pool query was asked at least once.
fn take_query(
    counter: &AtomicU64,
    start: Instant,
    min_time: Duration,
    pool: u64,
    max: u64,
) -> Option<u64> {
    let i = counter.fetch_add(1, Ordering::Relaxed);
    if i >= max || (i >= pool && start.elapsed() >= min_time) {
        return None;
    }
    Some(i)
}

struct Measured {
    histogram: Histogram<u64>,
    recall: RecallSum,
    seconds: f64,
    /// FAISS searches that failed (they still count in the histogram and QPS, as failed Quiver
    /// requests do, and fail the run).
    errors: u64,
}

/// The raw side's answer to one query, shaped like Quiver's: each shard's FAISS top-k, re-ranked
/// by exact distance (what `Shard::rank` does), merged into the best `top_k`. A shard is one
/// FAISS index of the dataset rows a Quiver shard of the same index would hold (by [`key_hash`]
/// of the key, over the same equal [`HashRange::split`] ranges), its ids the row numbers.
fn raw_search(
    shards: &[VectorIndex],
    rows: &[Vec<f32>],
    metric: DistanceMetric,
    query: &[f32],
    top_k: usize,
) -> Result<Vec<usize>, quiver_node::index::vector::VectorIndexError> {
    let mut candidates: Vec<(f32, usize)> = Vec::with_capacity(top_k * shards.len());
    for shard in shards {
        for (_, id) in shard.search(query, top_k, None)? {
            let Some(row) = usize::try_from(id).ok().and_then(|i| rows.get(i)) else {
                continue;
            };
            let distance = match metric {
                DistanceMetric::Cosine => 1.0 - dot(query, row),
                DistanceMetric::Euclidean => l2_squared(query, row),
            };
            candidates.push((distance, id as usize));
        }
    }
    candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    candidates.truncate(top_k);
    Ok(candidates.into_iter().map(|(_, id)| id).collect())
}

fn raw_faiss(
    workload: &Workload,
    shard_count: u32,
    threads: usize,
    min_time: Duration,
    max_queries: u64,
) -> anyhow::Result<(Measured, f64)> {
    let prepare = |v: &[f32]| {
        let mut v = v.to_vec();
        if workload.metric == DistanceMetric::Cosine {
            dataset::normalize(&mut v);
        }
        v
    };
    let n = workload.data.len();
    let rows: Vec<Vec<f32>> = (0..n).map(|i| prepare(workload.data.vector(i))).collect();
    let ranges: Vec<HashRange> = (0..shard_count)
        .map(|part| HashRange::split(part, shard_count))
        .collect();
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); ranges.len()];
    for i in 0..n {
        let shard = owner(ranges.iter().copied(), key_hash(&dataset::key(i)))
            .context("the hash ranges leave a gap")?;
        members[shard].push(i);
    }
    let ingest_start = Instant::now();
    let mut shards = Vec::with_capacity(members.len());
    for member in &members {
        let mut index = VectorIndex::new(
            workload.data.dimension,
            workload.metric,
            DEFAULT_INDEX_DESCRIPTION,
            DEFAULT_EF_SEARCH,
        )
        .context("creating the FAISS index")?;
        for batch in member.chunks(MAX_PUT_BATCH) {
            let vectors: Vec<f32> = batch.iter().flat_map(|&i| rows[i].clone()).collect();
            let ids: Vec<u64> = batch.iter().map(|&i| i as u64).collect();
            index.add(&vectors, &ids).context("faiss add")?;
        }
        shards.push(index);
    }
    let ingest_seconds = ingest_start.elapsed().as_secs_f64();
    let queries: Vec<Vec<f32>> = (0..workload.queries.len())
        .map(|q| prepare(workload.queries.vector(q)))
        .collect();
    let pool = queries.len() as u64;
    let counter = AtomicU64::new(0);
    let total = Mutex::new((new_histogram(), RecallSum::default(), 0u64));
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut hist = new_histogram();
                let mut recall_sum = RecallSum::default();
                let mut errors = 0u64;
                while let Some(i) = take_query(&counter, start, min_time, pool, max_queries) {
                    let q = (i % pool) as usize;
                    let sent = Instant::now();
                    let hits =
                        raw_search(&shards, &rows, workload.metric, &queries[q], workload.top_k);
                    hist.saturating_record((sent.elapsed().as_micros() as u64).max(1));
                    // A failed search scores recall 0, as a failed Quiver query does.
                    let ids = hits.unwrap_or_else(|_| {
                        errors += 1;
                        Vec::new()
                    });
                    if i < pool {
                        recall_sum.add(recall(&ids, &workload.truth_plain[q]));
                    }
                }
                let mut total = total.lock().expect("lock");
                let _ = total.0.add(&hist);
                total.1.merge(recall_sum);
                total.2 += errors;
            });
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    let (histogram, recall, errors) = total.into_inner().expect("lock");
    Ok((
        Measured {
            histogram,
            recall,
            seconds,
            errors,
        },
        ingest_seconds,
    ))
}

pub async fn run(args: BenchArgs) -> anyhow::Result<bool> {
    if !(1..=1024).contains(&args.threads) {
        bail!("--threads must be in 1..=1024");
    }
    if !(args.query_seconds >= 0.0 && args.query_seconds <= 3600.0) {
        bail!("--query-seconds must be in [0, 3600]");
    }
    if !args.server.endpoint.is_empty() {
        bail!(
            "bench spawns its own `quiver dev` (--quiver-bin) so that the settings its report \
             names are the ones the server ran with; --endpoint is for `load`"
        );
    }
    let shards = args.server.shards_per_index;
    if !(2..=64).contains(&shards) {
        bail!("--shards-per-index must be in 2..=64");
    }
    let min_time = Duration::from_secs_f64(args.query_seconds);
    eprintln!("preparing the workload and its exact ground truth ...");
    let workload = Arc::new(Workload::build(&args.dataset, false)?);
    let n = workload.data.len();

    eprintln!(
        "(a) raw FAISS {DEFAULT_INDEX_DESCRIPTION} efSearch={DEFAULT_EF_SEARCH}, {shards} \
         partitions as Quiver's shards: adding {n} vectors ..."
    );
    let (faiss, faiss_ingest_s) = {
        let (w, threads, max) = (workload.clone(), args.threads, args.max_queries);
        tokio::task::spawn_blocking(move || raw_faiss(&w, shards, threads, min_time, max))
            .await
            .context("faiss benchmark panicked")??
    };
    let faiss_side = SideReport {
        name: "faiss (in-process, sharded)",
        recall: faiss.recall.mean().unwrap_or(0.0),
        recall_queries: faiss.recall.queries,
        queries: faiss.histogram.len(),
        seconds: faiss.seconds,
        qps: faiss.histogram.len() as f64 / faiss.seconds,
        latency: LatencyStats::from_histogram(&faiss.histogram),
        ingest_vectors_per_s: n as f64 / faiss_ingest_s,
        ingest_seconds: faiss_ingest_s,
        errors_by_type: if faiss.errors > 0 {
            BTreeMap::from([("FaissSearchError".to_owned(), faiss.errors)])
        } else {
            BTreeMap::new()
        },
        non_throttling_errors: faiss.errors,
    };

    eprintln!("(b) quiver end to end: starting the server and ingesting {n} vectors ...");
    let server_args = ServerArgs {
        unlimited_writes: true,
        ..args.server.clone()
    };
    let (endpoint, server) = server_args.connect().await?;
    let client = args
        .server
        .client(&endpoint, args.threads.max(args.ingest_writers))?;
    let bucket = format!("bench-{:08x}", rand::random::<u32>());
    let index = "bench".to_owned();
    workload::create_index(&client, &bucket, &index, &workload).await?;
    let (ingest_time, ingest_recorder) = workload::ingest(
        &client,
        &bucket,
        &index,
        workload.clone(),
        MAX_PUT_BATCH,
        args.ingest_writers,
    )
    .await?;
    eprintln!(
        "(b) querying through HTTP with {} clients ...",
        args.threads
    );
    let pool = workload.queries.len() as u64;
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.threads {
        let (client, workload, counter) = (client.clone(), workload.clone(), counter.clone());
        let (bucket, index, max) = (bucket.clone(), index.clone(), args.max_queries);
        tasks.push(tokio::spawn(async move {
            let mut recorder = Recorder::default();
            while let Some(i) = take_query(&counter, start, min_time, pool, max) {
                let q = (i % pool) as usize;
                let request = QueryVectorsRequest {
                    vector_bucket_name: &bucket,
                    index_name: &index,
                    top_k: workload.top_k,
                    query_vector: Float32Data {
                        float32: workload.queries.vector(q),
                    },
                    filter: None,
                    return_distance: true,
                };
                let sent = Instant::now();
                let result = client.query_keys(&request).await;
                recorder.record(
                    "QueryVectors",
                    start.elapsed(),
                    sent.elapsed(),
                    result.as_ref().err(),
                );
                if i < pool {
                    let keys = result.unwrap_or_default();
                    recorder
                        .recall_plain
                        .add(workload.recall_of(&keys, &workload.truth_plain[q]));
                }
            }
            recorder
        }));
    }
    let mut queries = Recorder::default();
    for task in tasks {
        queries.merge(&task.await.context("query client panicked")?);
    }
    let quiver_seconds = start.elapsed().as_secs_f64();
    let server_peak_rss_kib = server.as_ref().and_then(|s| s.peak_rss_kib());
    drop(server);

    let mut errors = ingest_recorder.errors_by_type();
    for (t, c) in queries.errors_by_type() {
        *errors.entry(t).or_default() += c;
    }
    let quiver_side = SideReport {
        name: "quiver (HTTP e2e)",
        recall: queries.recall_plain.mean().unwrap_or(0.0),
        recall_queries: queries.recall_plain.queries,
        queries: queries.requests(),
        seconds: quiver_seconds,
        qps: queries.requests() as f64 / quiver_seconds,
        latency: queries.latency(),
        ingest_vectors_per_s: n as f64 / ingest_time.as_secs_f64(),
        ingest_seconds: ingest_time.as_secs_f64(),
        errors_by_type: errors,
        non_throttling_errors: queries.non_throttling_errors()
            + ingest_recorder.non_throttling_errors(),
    };
    let ratio = |b: f64, a: f64| if a > 0.0 { b / a } else { f64::NAN };
    let ratios = Ratios {
        qps: ratio(quiver_side.qps, faiss_side.qps),
        p50: ratio(quiver_side.latency.p50_ms, faiss_side.latency.p50_ms),
        p99: ratio(quiver_side.latency.p99_ms, faiss_side.latency.p99_ms),
        ingest: ratio(
            quiver_side.ingest_vectors_per_s,
            faiss_side.ingest_vectors_per_s,
        ),
        recall: ratio(quiver_side.recall, faiss_side.recall),
    };
    let mut failures = Vec::new();
    if faiss_side.non_throttling_errors > 0 {
        failures.push(format!(
            "{} raw FAISS searches failed",
            faiss_side.non_throttling_errors
        ));
    }
    if quiver_side.non_throttling_errors > 0 {
        failures.push(format!(
            "{} Quiver requests failed with errors other than throttling: {:?}",
            quiver_side.non_throttling_errors, quiver_side.errors_by_type
        ));
    }
    let gap = (quiver_side.recall - faiss_side.recall).abs();
    if gap > args.max_recall_gap {
        failures.push(format!(
            "recall@{} differs by {gap:.4} between the sides ({:.4} raw, {:.4} Quiver), more than \
             --max-recall-gap {}",
            workload.top_k, faiss_side.recall, quiver_side.recall, args.max_recall_gap
        ));
    }
    if quiver_side.recall < args.min_recall {
        failures.push(format!(
            "Quiver recall@{} {:.4} is below --min-recall {}",
            workload.top_k, quiver_side.recall, args.min_recall
        ));
    }
    let report = BenchReport {
        command: "bench",
        commit: report::git_commit(),
        dataset: workload.source.clone(),
        vectors: n,
        dimension: workload.data.dimension,
        metric: workload::metric_name(workload.metric),
        top_k: workload.top_k,
        query_pool: workload.queries.len(),
        threads: args.threads,
        index_description: DEFAULT_INDEX_DESCRIPTION,
        ef_search: DEFAULT_EF_SEARCH,
        shards_per_index: shards,
        faiss: faiss_side,
        quiver: quiver_side,
        ratio: ratios,
        server_peak_rss_kib,
        passed: failures.is_empty(),
        failures,
    };
    crate::report::publish(&args.report, &render(&report), &report, &report.failures)
}

pub fn render(r: &BenchReport) -> String {
    let mut out = format!(
        "\nquiver-chaos bench at {}: {} vectors × {} ({}), {} queries in the pool, top-{}, {} concurrent callers, \
         {} efSearch={}, {} shards per index on both sides\n\n",
        r.commit, r.vectors, r.dimension, r.metric, r.query_pool, r.top_k, r.threads, r.index_description,
        r.ef_search, r.shards_per_index
    );
    let recall_header = format!("recall@{}", r.top_k);
    let header = [
        "",
        recall_header.as_str(),
        "QPS",
        "p50 ms",
        "p99 ms",
        "queries",
        "ingest vec/s",
    ];
    let side = |s: &SideReport| {
        vec![
            s.name.to_owned(),
            format!("{:.4}", s.recall),
            format!("{:.0}", s.qps),
            fmt_ms(s.latency.p50_ms),
            fmt_ms(s.latency.p99_ms),
            s.queries.to_string(),
            format!("{:.0}", s.ingest_vectors_per_s),
        ]
    };
    let rows = vec![
        side(&r.faiss),
        side(&r.quiver),
        vec![
            "ratio b/a".to_owned(),
            format!("{:.3}", r.ratio.recall),
            format!("{:.3}", r.ratio.qps),
            format!("{:.2}", r.ratio.p50),
            format!("{:.2}", r.ratio.p99),
            String::new(),
            format!("{:.3}", r.ratio.ingest),
        ],
    ];
    out.push_str(&report::render_table(&header, &rows));
    if !r.faiss.errors_by_type.is_empty() {
        out.push_str(&format!(
            "faiss errors by type: {:?}\n",
            r.faiss.errors_by_type
        ));
    }
    if !r.quiver.errors_by_type.is_empty() {
        out.push_str(&format!(
            "quiver errors by type: {:?}\n",
            r.quiver.errors_by_type
        ));
    }
    if let Some(rss) = r.server_peak_rss_kib {
        out.push_str(&format!(
            "server peak RSS (VmHWM): {:.1} MiB\n",
            rss as f64 / 1024.0
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pool_query_is_taken_once_before_time_can_end_the_run() {
        let counter = AtomicU64::new(0);
        let start = Instant::now();
        let taken: Vec<u64> =
            std::iter::from_fn(|| take_query(&counter, start, Duration::ZERO, 5, 100)).collect();
        assert_eq!(taken, vec![0, 1, 2, 3, 4]);
        let counter = AtomicU64::new(0);
        let taken =
            std::iter::from_fn(|| take_query(&counter, start, Duration::from_secs(3600), 5, 12))
                .count();
        assert_eq!(taken, 12);
    }

    #[test]
    fn raw_faiss_finds_the_exact_neighbours_on_small_data() {
        let args = DatasetArgs {
            count: 2_000,
            dimension: 16,
            clusters: 10,
            spread: 0.5,
            dataset: None,
            queries: 50,
            seed: 9,
            metric: "euclidean".into(),
            top_k: 10,
            filter_selectivity: 0.1,
        };
        let w = Workload::build(&args, false).unwrap();
        let (measured, ingest_s) = raw_faiss(&w, 3, 2, Duration::ZERO, 10_000).unwrap();
        assert_eq!(measured.errors, 0);
        assert_eq!(measured.recall.queries, 50);
        assert!(
            measured.recall.mean().unwrap() > 0.95,
            "{:?}",
            measured.recall
        );
        assert_eq!(measured.histogram.len(), 50);
        assert!(ingest_s > 0.0);
    }
}
