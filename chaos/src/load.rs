//! `quiver-chaos load`: many concurrent clients against a live server, closed-loop (each client
//! sends its next request when the previous one answers) or open-loop (requests start on a fixed
//! schedule at the target rate, and latency counts from the scheduled start, so a slow server
//! cannot hide its queueing: no coordinated omission).

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::client::{
    Float32Data, KeysRequest, PutVector, PutVectorsRequest, QueryVectorsRequest, S3VectorsClient,
    DEV_ACCESS_KEY_ID, DEV_REGION, DEV_SECRET_ACCESS_KEY,
};
use crate::dataset;
use crate::report::{self, fmt_ms, fmt_opt, Failure, LatencyStats, OperationStats, Recorder};
use crate::server::{self, DevServer};
use crate::workload::{self, DatasetArgs, Mix, Operation, Workload};

pub const MAX_CLIENTS: usize = 10_000;
pub const MAX_DURATION_S: f64 = 3600.0;
pub const MAX_REQUESTS: u64 = 100_000_000;
/// Churn keys remembered for later deletes.
const MAX_CHURN_KEYS: usize = 100_000;

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
}

impl ServerArgs {
    /// Spawns a server unless `--endpoint` was given; returns the endpoint to set up through
    /// and the owned server.
    pub async fn connect(&self) -> anyhow::Result<(String, Option<DevServer>)> {
        match self.endpoint.first() {
            Some(endpoint) => Ok((endpoint.clone(), None)),
            None => {
                let server = DevServer::spawn(&self.quiver_bin, self.unlimited_writes).await?;
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
    /// Exit non-zero if the mean recall@k of plain queries is below this.
    #[arg(long, default_value_t = 0.0)]
    pub min_recall: f64,
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

struct Shared {
    /// Requests go to these in turn (one per coordinator of a cluster).
    clients: Vec<S3VectorsClient>,
    next_client: AtomicU64,
    workload: Arc<Workload>,
    bucket: String,
    index: String,
    mix: Mix,
    put_batch: usize,
    get_batch: usize,
    delete_batch: usize,
    churn_keys: Mutex<VecDeque<String>>,
    churn_seq: AtomicU64,
    recorder: Mutex<Recorder>,
    start: Instant,
}

enum Recall {
    Plain(f64),
    Filtered(f64),
}

impl Shared {
    fn client(&self) -> &S3VectorsClient {
        let turn = self.next_client.fetch_add(1, Ordering::Relaxed) as usize;
        &self.clients[turn % self.clients.len()]
    }

    async fn execute(&self, op: Operation, rng: &mut StdRng) -> Result<Option<Recall>, Failure> {
        let w = &self.workload;
        match op {
            Operation::Query | Operation::FilteredQuery => {
                let q = rng.gen_range(0..w.queries.len());
                let filtered = op == Operation::FilteredQuery;
                let request = QueryVectorsRequest {
                    vector_bucket_name: &self.bucket,
                    index_name: &self.index,
                    top_k: w.top_k,
                    query_vector: Float32Data {
                        float32: w.queries.vector(q),
                    },
                    filter: filtered.then(|| w.filter_for(q)),
                    return_distance: true,
                };
                let keys = self.client().query_keys(&request).await?;
                Ok(Some(if filtered {
                    Recall::Filtered(w.recall_of(&keys, &w.truth_filtered[q]))
                } else {
                    Recall::Plain(w.recall_of(&keys, &w.truth_plain[q]))
                }))
            }
            Operation::Put => {
                let sources: Vec<usize> = (0..self.put_batch)
                    .map(|_| rng.gen_range(0..w.data.len()))
                    .collect();
                let vectors: Vec<Vec<f32>> = sources
                    .iter()
                    .map(|&i| dataset::churn_vector(w.data.vector(i), w.metric, w.churn_offset))
                    .collect();
                let keys: Vec<String> = (0..self.put_batch)
                    .map(|_| format!("churn-{}", self.churn_seq.fetch_add(1, Ordering::Relaxed)))
                    .collect();
                let request = PutVectorsRequest {
                    vector_bucket_name: &self.bucket,
                    index_name: &self.index,
                    vectors: keys
                        .iter()
                        .zip(&vectors)
                        .map(|(key, v)| PutVector {
                            key: key.clone(),
                            data: Float32Data { float32: v },
                            metadata: serde_json::json!({ "group": "churn" }),
                        })
                        .collect(),
                };
                self.client().put_vectors(&request).await?;
                let mut churn = self.churn_keys.lock().expect("churn lock");
                churn.extend(keys);
                while churn.len() > MAX_CHURN_KEYS {
                    churn.pop_front();
                }
                Ok(None)
            }
            Operation::Get => {
                let keys: Vec<String> = (0..self.get_batch)
                    .map(|_| dataset::key(rng.gen_range(0..w.data.len())))
                    .collect();
                let wanted = keys.iter().collect::<std::collections::BTreeSet<_>>().len();
                let request = KeysRequest {
                    vector_bucket_name: &self.bucket,
                    index_name: &self.index,
                    keys,
                };
                let found = self.client().get_keys(&request).await?;
                if found.len() != wanted {
                    return Err(crate::client::client_failure(
                        "ChaosGetMissingKeys",
                        format!("asked for {wanted} dataset keys, got {}", found.len()),
                    ));
                }
                Ok(None)
            }
            Operation::Delete => {
                let mut keys: Vec<String> = {
                    let mut churn = self.churn_keys.lock().expect("churn lock");
                    let n = self.delete_batch.min(churn.len());
                    churn.drain(..n).collect()
                };
                // Nothing written yet: deleting absent keys is valid and still exercises the path.
                while keys.len() < self.delete_batch {
                    keys.push(format!("churn-absent-{}", rng.gen::<u32>()));
                }
                let request = KeysRequest {
                    vector_bucket_name: &self.bucket,
                    index_name: &self.index,
                    keys,
                };
                self.client().delete_keys(&request).await?;
                Ok(None)
            }
        }
    }

    async fn run_one(&self, op: Operation, rng: &mut StdRng, started: Instant) {
        let result = self.execute(op, rng).await;
        let latency = started.elapsed();
        let completed_at = self.start.elapsed();
        let mut recorder = self.recorder.lock().expect("recorder lock");
        recorder.record(
            op.report_name(),
            completed_at,
            latency,
            result.as_ref().err(),
        );
        match result {
            Ok(Some(Recall::Plain(r))) => recorder.recall_plain.add(r),
            Ok(Some(Recall::Filtered(r))) => recorder.recall_filtered.add(r),
            _ => {}
        }
    }
}

/// When the run stops: at a deadline, after a number of requests, or both.
struct Limits {
    deadline: Option<Instant>,
    requests: Option<u64>,
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
    if plain_recall.is_some_and(|r| r < args.min_recall) {
        failures.push(format!(
            "recall@{} {:.4} is below --min-recall {}",
            workload.top_k,
            plain_recall.unwrap_or(0.0),
            args.min_recall
        ));
    }
    let plots = write_plots(&args.report, &recorder)?;
    let report = LoadReport {
        command: "load",
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

fn client_rng(seed: u64, stream: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ stream.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

async fn closed_loop(shared: Arc<Shared>, clients: usize, seed: u64, limits: &Limits) {
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let (shared, issued) = (shared.clone(), issued.clone());
        let (deadline, max_requests) = (limits.deadline, limits.requests);
        tasks.push(tokio::spawn(async move {
            let mut rng = client_rng(seed, c as u64);
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                if max_requests.is_some_and(|m| issued.fetch_add(1, Ordering::Relaxed) >= m) {
                    break;
                }
                let op = shared.mix.choose(&mut rng);
                shared.run_one(op, &mut rng, Instant::now()).await;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

async fn open_loop(
    shared: Arc<Shared>,
    rate: f64,
    max_in_flight: usize,
    seed: u64,
    limits: &Limits,
) {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut i: u64 = 0;
    loop {
        if limits.requests.is_some_and(|m| i >= m) {
            break;
        }
        let intended = shared.start + interval.mul_f64(i as f64);
        if limits.deadline.is_some_and(|d| intended >= d) {
            break;
        }
        tokio::time::sleep_until(intended.into()).await;
        // Waiting for a permit delays the request but not its intended start: the wait counts.
        let Ok(permit) = semaphore.clone().acquire_owned().await else {
            break;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut rng = client_rng(seed, i);
            let op = shared.mix.choose(&mut rng);
            shared.run_one(op, &mut rng, intended).await;
            drop(permit);
        });
        i += 1;
    }
    let _ = semaphore.acquire_many(max_in_flight as u32).await;
}

fn spawn_progress(
    shared: Arc<Shared>,
    limits: &Limits,
    done: Arc<AtomicBool>,
    hidden: bool,
) -> tokio::task::JoinHandle<()> {
    let (length, by_requests) = match (limits.requests, limits.deadline) {
        (Some(r), _) => (r, true),
        (None, Some(d)) => ((d - shared.start).as_millis() as u64, false),
        (None, None) => (0, true),
    };
    let terminal = std::io::stderr().is_terminal() && !hidden;
    let bar = if terminal {
        ProgressBar::new(length)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("[{elapsed_precise}] {bar:30.cyan/blue} {percent:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    tokio::spawn(async move {
        let mut last_line = Instant::now();
        while !done.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let (requests, errors, latency) = {
                let r = shared.recorder.lock().expect("recorder lock");
                (r.requests(), r.errors(), r.latency())
            };
            let elapsed = shared.start.elapsed();
            let message = format!(
                "{requests} req  {:.0}/s  {errors} err  p50 {}ms  p99 {}ms",
                requests as f64 / elapsed.as_secs_f64().max(1e-3),
                fmt_ms(latency.p50_ms),
                fmt_ms(latency.p99_ms)
            );
            bar.set_position(if by_requests {
                requests
            } else {
                elapsed.as_millis() as u64
            });
            bar.set_message(message.clone());
            if !terminal && !hidden && last_line.elapsed() >= Duration::from_secs(5) {
                eprintln!("[{:>5.1}s] {message}", elapsed.as_secs_f64());
                last_line = Instant::now();
            }
        }
        bar.finish_and_clear();
    })
}

fn write_plots(report_path: &std::path::Path, recorder: &Recorder) -> anyhow::Result<Vec<String>> {
    let stem = report_path.file_stem().map_or_else(
        || "quiver-chaos".into(),
        |s| s.to_string_lossy().into_owned(),
    );
    let dir = report_path.parent().unwrap_or(std::path::Path::new(""));
    let over_time = dir.join(format!("{stem}-latency-over-time.svg"));
    let distribution = dir.join(format!("{stem}-latency-distribution.svg"));
    crate::plot::latency_over_time(&over_time, "latency over time", &recorder.timeline())?;
    crate::plot::latency_distribution(&distribution, "latency distribution", recorder.overall())?;
    Ok(vec![
        over_time.display().to_string(),
        distribution.display().to_string(),
    ])
}

pub fn render(r: &LoadReport) -> String {
    let mut out = format!(
        "\nquiver-chaos load: {} {} clients{}, mix {}, {} vectors × {} ({}), {:.1} s\n\n",
        r.mode,
        r.clients,
        r.target_rate
            .map_or(String::new(), |t| format!(", target {t:.0}/s")),
        r.mix,
        r.vectors,
        r.dimension,
        r.metric,
        r.duration_s
    );
    let header = [
        "operation",
        "requests",
        "errors",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
    ];
    let row = |name: &str, requests: u64, errors: u64, l: &LatencyStats| {
        vec![
            name.to_owned(),
            requests.to_string(),
            errors.to_string(),
            fmt_ms(l.p50_ms),
            fmt_ms(l.p90_ms),
            fmt_ms(l.p99_ms),
            fmt_ms(l.p999_ms),
            fmt_ms(l.max_ms),
        ]
    };
    let mut rows: Vec<Vec<String>> = r
        .operations
        .iter()
        .map(|(name, s)| row(name, s.requests, s.errors, &s.latency))
        .collect();
    rows.push(row("all", r.requests, r.errors, &r.latency));
    out.push_str(&report::render_table(&header, &rows));
    out.push_str(&format!(
        "\nthroughput {:.0} req/s   ingest {:.0} vectors/s   recall@{} plain {} ({} queries)   filtered {} ({} queries)\n",
        r.throughput_rps,
        r.ingest_vectors_per_s,
        r.top_k,
        fmt_opt(r.recall.plain, 4),
        r.recall.plain_queries,
        fmt_opt(r.recall.filtered, 4),
        r.recall.filtered_queries,
    ));
    if r.errors_by_type.is_empty() {
        out.push_str("errors: none\n");
    } else {
        out.push_str("errors by type:\n");
        for (t, n) in &r.errors_by_type {
            let sample = r.error_samples.get(t).map(String::as_str).unwrap_or("");
            out.push_str(&format!("  {t}: {n}   e.g. {sample}\n"));
        }
    }
    if let Some(rss) = r.server_peak_rss_kib {
        out.push_str(&format!(
            "server peak RSS (VmHWM): {:.1} MiB\n",
            rss as f64 / 1024.0
        ));
    }
    out
}
