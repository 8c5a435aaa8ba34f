//! `quiver-chaos load`: many concurrent clients against a live server, closed-loop (each client
//! sends its next request when the previous one answers) or open-loop (requests start on a fixed
//! schedule at the target rate, and latency counts from the scheduled start, so a slow server
//! cannot hide its queueing: no coordinated omission).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use crate::client::{S3VectorsClient, DEV_ACCESS_KEY_ID, DEV_REGION, DEV_SECRET_ACCESS_KEY};
use crate::exact::RecallSum;
use crate::report::{self, LatencyStats, OperationStats, Recorder};
use crate::server::{self, DevServer};
use crate::workload::{self, DatasetArgs, Mix, Operation, Workload};

pub const MAX_CLIENTS: usize = 10_000;
pub const MAX_DURATION_S: f64 = 3600.0;
pub const MAX_REQUESTS: u64 = 100_000_000;
/// Churn keys remembered for later deletes.
const MAX_CHURN_KEYS: usize = 100_000;

mod driver;
mod render;

use driver::{closed_loop, open_loop, spawn_progress, Limits, Shared};
pub use render::render;
use render::write_plots;

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Use a running server instead of spawning one (http://127.0.0.1:<port> only). Repeat it
    /// for a cluster (`make cluster`: 8277, 8278, 8279): `load` spreads requests over all of
    /// them, set-up and `bench` use the first.
    #[arg(long)]
    pub endpoint: Vec<String>,
    /// `quiver` binary to spawn as `quiver dev` on a free port with a temp data dir.
    #[arg(long, default_value_os_t = server::default_quiver_bin())]
    pub quiver_bin: PathBuf,
    #[arg(long, default_value = DEV_ACCESS_KEY_ID, env = "QUIVER_ACCESS_KEY_ID")]
    pub access_key_id: String,
    #[arg(long, default_value = DEV_SECRET_ACCESS_KEY, env = "QUIVER_SECRET_ACCESS_KEY")]
    pub secret_access_key: String,
    #[arg(long, default_value = DEV_REGION)]
    pub region: String,
    /// Spawned server only: turn off its per-index write rate limits (`bench` always does).
    #[arg(long)]
    pub unlimited_writes: bool,
    /// Spawned server only: shards per new index (`quiver dev`'s default is 2).
    #[arg(long, default_value_t = 2)]
    pub shards_per_index: u32,
}

impl ServerArgs {
    /// Spawns a server unless `--endpoint` was given; returns the endpoint to set up through
    /// and the owned server.
    pub async fn connect(&self) -> anyhow::Result<(String, Option<DevServer>)> {
        match self.endpoint.first() {
            Some(endpoint) => Ok((endpoint.clone(), None)),
            None => {
                let server = DevServer::spawn(
                    &self.quiver_bin,
                    self.unlimited_writes,
                    self.shards_per_index,
                )
                .await?;
                Ok((server.endpoint.clone(), Some(server)))
            }
        }
    }

    /// One client per endpoint the load is spread over (`first` when none was given).
    pub fn clients(&self, first: &str, connections: usize) -> anyhow::Result<Vec<S3VectorsClient>> {
        if self.endpoint.is_empty() {
            return Ok(vec![self.client(first, connections)?]);
        }
        self.endpoint
            .iter()
            .map(|endpoint| self.client(endpoint, connections))
            .collect()
    }

    pub fn client(&self, endpoint: &str, connections: usize) -> anyhow::Result<S3VectorsClient> {
        S3VectorsClient::new(
            endpoint,
            &self.access_key_id,
            &self.secret_access_key,
            &self.region,
            connections,
        )
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Concurrent clients (closed-loop), or the bound on requests in flight (open-loop).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Run for this many seconds (default 10 when --requests is not given).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Stop after this many requests.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Open-loop: start requests at this rate per second instead of closed-loop clients.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Operation weights: query, filtered, put, get, delete.
    #[arg(long, default_value = "query=60,filtered=20,put=10,get=5,delete=5")]
    pub mix: String,
    /// Vectors per PutVectors of the load phase (1..=500).
    #[arg(long, default_value_t = 10)]
    pub put_batch: usize,
    /// Keys per GetVectors (1..=100).
    #[arg(long, default_value_t = 10)]
    pub get_batch: usize,
    /// Keys per DeleteVectors (1..=500).
    #[arg(long, default_value_t = 10)]
    pub delete_batch: usize,
    /// Concurrent writers of the initial ingest (batches of 500).
    #[arg(long, default_value_t = 4)]
    pub ingest_writers: usize,
    /// JSON report path; the SVG plots are written next to it.
    #[arg(long, default_value = "quiver-chaos-load.json")]
    pub report: PathBuf,
    /// Do not draw the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Exit non-zero if any request failed with an error other than throttling (429).
    #[arg(long)]
    pub strict: bool,
    /// Exit non-zero if the mean recall@k of plain queries is below this (or, when above 0, if
    /// no plain query succeeded).
    #[arg(long, default_value_t = 0.0)]
    pub min_recall: f64,
    /// The same floor for filtered queries.
    #[arg(long, default_value_t = 0.0)]
    pub min_filtered_recall: f64,
}

/// Why a recall floor above 0 is not met: no query of the kind succeeded (a run of nothing but
/// 429s must not pass), or the mean is below it.
fn recall_shortfall(kind: &str, recall: &RecallSum, floor: f64, top_k: usize) -> Option<String> {
    if floor <= 0.0 {
        return None;
    }
    match recall.mean() {
        None => Some(format!(
            "no {kind} query succeeded: recall@{top_k} cannot be checked against {floor}"
        )),
        Some(mean) if mean < floor => Some(format!(
            "{kind} recall@{top_k} {mean:.4} is below the floor {floor}"
        )),
        Some(_) => None,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RecallReport {
    pub plain: Option<f64>,
    pub plain_queries: u64,
    pub filtered: Option<f64>,
    pub filtered_queries: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub command: &'static str,
    /// `git describe --always --dirty` of the working tree the run started in.
    pub commit: String,
    pub endpoint: String,
    pub mode: &'static str,
    pub clients: usize,
    pub target_rate: Option<f64>,
    pub mix: String,
    pub dataset: String,
    pub vectors: usize,
    pub dimension: usize,
    pub metric: &'static str,
    pub top_k: usize,
    pub filter_selectivity: f64,
    pub ingest_vectors_per_s: f64,
    pub duration_s: f64,
    pub requests: u64,
    pub errors: u64,
    pub non_throttling_errors: u64,
    pub throughput_rps: f64,
    pub latency: LatencyStats,
    pub operations: std::collections::BTreeMap<String, OperationStats>,
    pub errors_by_type: std::collections::BTreeMap<String, u64>,
    pub error_samples: std::collections::BTreeMap<String, String>,
    pub recall: RecallReport,
    pub server_pid: Option<u32>,
    pub server_peak_rss_kib: Option<u64>,
    pub timeline: Vec<report::WindowStats>,
    pub plots: Vec<String>,
    pub passed: bool,
    pub failures: Vec<String>,
}

pub async fn run(args: LoadArgs) -> anyhow::Result<bool> {
    if !(1..=MAX_CLIENTS).contains(&args.clients) {
        bail!("--clients must be in 1..={MAX_CLIENTS}");
    }
    let duration = match (args.duration, args.requests) {
        (None, None) => Some(10.0),
        (d, _) => d,
    };
    if let Some(d) = duration {
        if !(d > 0.0 && d <= MAX_DURATION_S) {
            bail!("--duration must be in (0, {MAX_DURATION_S}] seconds");
        }
    }
    if let Some(r) = args.requests {
        if !(1..=MAX_REQUESTS).contains(&r) {
            bail!("--requests must be in 1..={MAX_REQUESTS}");
        }
    }
    if let Some(rate) = args.rate {
        if !(rate > 0.0 && rate <= 1_000_000.0) {
            bail!("--rate must be in (0, 1000000]");
        }
    }
    if !(1..=500).contains(&args.put_batch)
        || !(1..=100).contains(&args.get_batch)
        || !(1..=500).contains(&args.delete_batch)
    {
        bail!("batch sizes: --put-batch 1..=500, --get-batch 1..=100, --delete-batch 1..=500");
    }
    let mix = Mix::parse(&args.mix)?;

    eprintln!("preparing the workload and its exact ground truth ...");
    let workload = Arc::new(Workload::build(
        &args.dataset,
        mix.contains(Operation::FilteredQuery),
    )?);
    let (endpoint, server) = args.server.connect().await?;
    let client = args.server.client(&endpoint, args.clients)?;
    let bucket = format!("chaos-{:08x}", rand::random::<u32>());
    let index = "load".to_owned();
    workload::create_index(&client, &bucket, &index, &workload).await?;
    eprintln!(
        "ingesting {} vectors into {endpoint} bucket {bucket} ...",
        workload.data.len()
    );
    let (ingest_time, _) = workload::ingest(
        &client,
        &bucket,
        &index,
        workload.clone(),
        workload::MAX_PUT_BATCH,
        args.ingest_writers,
    )
    .await?;
    let ingest_rate = workload.data.len() as f64 / ingest_time.as_secs_f64();

    let shared = Arc::new(Shared {
        clients: args.server.clients(&endpoint, args.clients)?,
        next_client: AtomicU64::new(0),
        workload: workload.clone(),
        bucket,
        index,
        mix,
        put_batch: args.put_batch,
        get_batch: args.get_batch,
        delete_batch: args.delete_batch,
        churn_keys: Mutex::new(VecDeque::new()),
        churn_seq: AtomicU64::new(0),
        recorder: Mutex::new(Recorder::default()),
        start: Instant::now(),
    });
    let limits = Limits {
        deadline: duration.map(|d| shared.start + Duration::from_secs_f64(d)),
        requests: args.requests,
    };
    let done = Arc::new(AtomicBool::new(false));
    let progress = spawn_progress(shared.clone(), &limits, done.clone(), args.no_progress);
    match args.rate {
        None => closed_loop(shared.clone(), args.clients, args.dataset.seed, &limits).await,
        Some(rate) => {
            open_loop(
                shared.clone(),
                rate,
                args.clients,
                args.dataset.seed,
                &limits,
            )
            .await
        }
    }
    let elapsed = shared.start.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = progress.await;

    let recorder = shared.recorder.lock().expect("recorder lock").clone();
    let server_pid = server.as_ref().map(DevServer::pid);
    let server_peak_rss_kib = server.as_ref().and_then(DevServer::peak_rss_kib);
    drop(server);

    let mut failures = Vec::new();
    if args.strict && recorder.non_throttling_errors() > 0 {
        failures.push(format!(
            "{} requests failed with errors other than throttling",
            recorder.non_throttling_errors()
        ));
    }
    let plain_recall = recorder.recall_plain.mean();
    failures.extend(recall_shortfall(
        "plain",
        &recorder.recall_plain,
        args.min_recall,
        workload.top_k,
    ));
    failures.extend(recall_shortfall(
        "filtered",
        &recorder.recall_filtered,
        args.min_filtered_recall,
        workload.top_k,
    ));
    let plots = write_plots(&args.report, &recorder)?;
    let report = LoadReport {
        command: "load",
        commit: crate::report::git_commit(),
        endpoint: if args.server.endpoint.len() > 1 {
            args.server.endpoint.join(",")
        } else {
            endpoint
        },
        mode: if args.rate.is_some() {
            "open-loop"
        } else {
            "closed-loop"
        },
        clients: args.clients,
        target_rate: args.rate,
        mix: shared.mix.describe(),
        dataset: workload.source.clone(),
        vectors: workload.data.len(),
        dimension: workload.data.dimension,
        metric: workload::metric_name(workload.metric),
        top_k: workload.top_k,
        filter_selectivity: 1.0 / workload.groups as f64,
        ingest_vectors_per_s: ingest_rate,
        duration_s: elapsed.as_secs_f64(),
        requests: recorder.requests(),
        errors: recorder.errors(),
        non_throttling_errors: recorder.non_throttling_errors(),
        throughput_rps: recorder.requests() as f64 / elapsed.as_secs_f64(),
        latency: recorder.latency(),
        operations: recorder.operations(),
        errors_by_type: recorder.errors_by_type(),
        error_samples: recorder.error_samples(),
        recall: RecallReport {
            plain: plain_recall,
            plain_queries: recorder.recall_plain.queries,
            filtered: recorder.recall_filtered.mean(),
            filtered_queries: recorder.recall_filtered.queries,
        },
        server_pid,
        server_peak_rss_kib,
        timeline: recorder.timeline(),
        plots,
        passed: failures.is_empty(),
        failures,
    };
    crate::report::publish(&args.report, &render(&report), &report, &report.failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recall_floor_fails_without_queries_and_below_the_floor() {
        let none = RecallSum::default();
        assert!(recall_shortfall("plain", &none, 0.0, 10).is_none());
        let message = recall_shortfall("plain", &none, 0.9, 10).expect("no query succeeded");
        assert!(message.contains("no plain query succeeded"), "{message}");
        let mut low = RecallSum::default();
        low.add(0.5);
        assert!(recall_shortfall("filtered", &low, 0.9, 10).is_some());
        assert!(recall_shortfall("filtered", &low, 0.5, 10).is_none());
    }
}
