//! The load driver: clients executing the seeded workload, closed or open loop, recording every
//! answer; and the progress bar.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::MAX_CHURN_KEYS;
use crate::client::{
    Float32Data, KeysRequest, PutVector, PutVectorsRequest, QueryVectorsRequest, S3VectorsClient,
};
use crate::dataset;
use crate::report::{fmt_ms, Failure, Recorder};
use crate::workload::{Mix, Operation, Workload};

pub(super) struct Shared {
    /// Requests go to these in turn (one per coordinator of a cluster).
    pub(super) clients: Vec<S3VectorsClient>,
    pub(super) next_client: AtomicU64,
    pub(super) workload: Arc<Workload>,
    pub(super) bucket: String,
    pub(super) index: String,
    pub(super) mix: Mix,
    pub(super) put_batch: usize,
    pub(super) get_batch: usize,
    pub(super) delete_batch: usize,
    pub(super) churn_keys: Mutex<VecDeque<String>>,
    pub(super) churn_seq: AtomicU64,
    pub(super) recorder: Mutex<Recorder>,
    pub(super) start: Instant,
}

pub(super) enum Recall {
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
pub(super) struct Limits {
    pub(super) deadline: Option<Instant>,
    pub(super) requests: Option<u64>,
}

pub(super) fn client_rng(seed: u64, stream: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ stream.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

pub(super) async fn closed_loop(shared: Arc<Shared>, clients: usize, seed: u64, limits: &Limits) {
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

pub(super) async fn open_loop(
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

pub(super) fn spawn_progress(
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
