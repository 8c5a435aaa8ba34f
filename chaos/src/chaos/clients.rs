//! The chaos workload: clients that put new keys, delete acknowledged ones, read keys back and
//! probe the index with a written key's own vector, recording every operation in the history;
//! and the final reads after healing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use super::history::{Fault, FinalState, Line, Op, OpKind, Outcome, Phase};
use crate::client::{
    client_failure, Float32Data, KeysRequest, PutVector, PutVectorsRequest, QueryVectorsRequest,
    S3VectorsClient,
};
use crate::report::Failure;

/// GetVectors takes at most 100 keys.
const GET_BATCH: usize = 100;
/// Keys a probe or a delete picks from: the most recently acknowledged ones.
const RECENT: usize = 200;
/// Most keys one PutVectors writes.
const MAX_PUT_BATCH: u64 = 3;
/// Most keys one GetVectors of the workload reads.
const MAX_GET_KEYS: usize = 4;
/// Answers of a probe.
const PROBE_TOP_K: usize = 3;
/// Pause between attempts of the final reads.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Where the history goes: kept in memory for the checker and appended to a JSONL file.
pub struct Recorder {
    start: Instant,
    next_id: AtomicU64,
    not_ok: AtomicU64,
    ops: Mutex<Vec<Op>>,
    faults: Mutex<Vec<Fault>>,
    file: Mutex<BufWriter<File>>,
}

impl Recorder {
    pub fn create(path: &Path, start: Instant) -> anyhow::Result<Recorder> {
        Ok(Recorder {
            start,
            next_id: AtomicU64::new(0),
            not_ok: AtomicU64::new(0),
            ops: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            file: Mutex::new(BufWriter::new(File::create(path)?)),
        })
    }

    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn write(&self, line: &Line) {
        if let Ok(mut file) = self.file.lock() {
            // The in-memory history is the checker's input; a failed write of the file copy is
            // reported by `flush`.
            let _ = serde_json::to_writer(&mut *file, line);
            let _ = file.write_all(b"\n");
        }
    }

    /// Records the invocation; returns the op to complete.
    fn invoke(
        &self,
        client: u32,
        coordinator: usize,
        kind: OpKind,
        phase: Phase,
        keys: Vec<(String, String)>,
    ) -> Op {
        let op = Op {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            client,
            coordinator,
            kind,
            phase,
            keys,
            invoke_ms: self.now_ms(),
            complete_ms: 0,
            outcome: Outcome::Info,
            found: Vec::new(),
            error: None,
        };
        self.write(&op.invoke_line());
        op
    }

    /// Records the completion; returns what the client was told.
    fn complete(&self, mut op: Op, result: Result<Vec<(String, String)>, Failure>) -> Outcome {
        op.complete_ms = self.now_ms();
        match result {
            Ok(found) => {
                op.outcome = Outcome::Ok;
                op.found = found;
            }
            Err(failure) => {
                op.outcome = outcome_of(&failure);
                op.error = Some(format!("{}: {}", failure.error_type, failure.message));
            }
        }
        self.write(&op.complete_line());
        let outcome = op.outcome;
        if outcome != Outcome::Ok {
            self.not_ok.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut ops) = self.ops.lock() {
            ops.push(op);
        }
        outcome
    }

    pub fn fault(&self, fault: Fault) {
        self.write(&Line::Fault(fault.clone()));
        if let Ok(mut faults) = self.faults.lock() {
            faults.push(fault);
        }
    }

    pub fn final_state(&self, key: &str, state: &FinalState) {
        self.write(&Line::Final {
            key: key.to_owned(),
            state: state.clone(),
        });
    }

    /// Operations completed, and how many of them did not succeed.
    pub fn counts(&self) -> (usize, u64) {
        let done = self.ops.lock().map(|o| o.len()).unwrap_or(0);
        (done, self.not_ok.load(Ordering::Relaxed))
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().map(|o| o.clone()).unwrap_or_default()
    }

    pub fn faults(&self) -> Vec<Fault> {
        self.faults.lock().map(|f| f.clone()).unwrap_or_default()
    }

    pub fn flush(&self) -> anyhow::Result<()> {
        match self.file.lock() {
            Ok(mut file) => Ok(file.flush()?),
            Err(_) => anyhow::bail!("history writer poisoned"),
        }
    }
}

/// What the client was told, as the checker needs it: a refusal (4xx) or a connection that was
/// never made certainly changed nothing; everything else may have.
pub fn outcome_of(failure: &Failure) -> Outcome {
    match failure.status {
        Some(status) => Outcome::from_status(Some(status)),
        None if matches!(
            failure.error_type.as_str(),
            "ChaosConnectError" | "ChaosEncodeError" | "ChaosSigningError"
        ) =>
        {
            Outcome::Fail
        }
        None => Outcome::Info,
    }
}

/// A written key: its value, and the seed of its vector.
#[derive(Debug, Clone)]
struct Written {
    key: String,
    vector_seed: u64,
}

/// Keys shared by the clients.
#[derive(Default)]
struct Pool {
    /// Every key a put was invoked for (reads pick from these).
    invoked: Vec<Written>,
    /// Acknowledged, and no delete attempted yet (deletes and probes pick from these).
    live: Vec<Written>,
}

/// The workload's fixed settings.
#[derive(Debug, Clone)]
pub struct Workload {
    pub bucket: String,
    pub index: String,
    pub dimension: usize,
    pub seed: u64,
    pub op_timeout: Duration,
}

impl Workload {
    pub fn vector(&self, vector_seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(vector_seed);
        (0..self.dimension)
            .map(|_| rng.gen_range(-1.0..1.0))
            .collect()
    }

    fn value(&self, key: &str) -> String {
        format!("{key}@{:x}", self.seed)
    }

    async fn timed<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        tokio::time::timeout(self.op_timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(client_failure(
                    "ChaosTimeout",
                    format!("no answer within {:?}", self.op_timeout),
                ))
            })
    }

    async fn get(
        &self,
        client: &S3VectorsClient,
        keys: &[String],
    ) -> Result<Vec<(String, String)>, Failure> {
        let body = serde_json::json!({
            "vectorBucketName": self.bucket, "indexName": self.index,
            "keys": keys, "returnMetadata": true,
        });
        let response: VectorsResponse = self.timed(client.call_json("GetVectors", &body)).await?;
        Ok(response.pairs())
    }

    async fn probe(
        &self,
        client: &S3VectorsClient,
        vector_seed: u64,
    ) -> Result<Vec<(String, String)>, Failure> {
        let vector = self.vector(vector_seed);
        let request = QueryVectorsRequest {
            vector_bucket_name: &self.bucket,
            index_name: &self.index,
            top_k: PROBE_TOP_K,
            query_vector: Float32Data { float32: &vector },
            filter: None,
            return_distance: false,
        };
        let keys = self.timed(client.query_keys(&request)).await?;
        Ok(keys.into_iter().map(|k| (k, String::new())).collect())
    }
}

#[derive(Deserialize)]
struct VectorsResponse {
    vectors: Vec<Item>,
    #[serde(rename = "nextToken")]
    next_token: Option<String>,
}

#[derive(Deserialize)]
struct Item {
    key: String,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

impl VectorsResponse {
    fn pairs(self) -> Vec<(String, String)> {
        self.vectors
            .into_iter()
            .map(|item| {
                let value = item
                    .metadata
                    .as_ref()
                    .and_then(|m| m.get("value"))
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned();
                (item.key, value)
            })
            .collect()
    }
}

/// Everything a client task needs.
pub struct Shared {
    pub workload: Workload,
    pub clients: Vec<S3VectorsClient>,
    pub recorder: Arc<Recorder>,
    pool: Mutex<Pool>,
}

impl Shared {
    pub fn new(workload: Workload, clients: Vec<S3VectorsClient>, recorder: Arc<Recorder>) -> Self {
        Shared {
            workload,
            clients,
            recorder,
            pool: Mutex::new(Pool::default()),
        }
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One client: operations back to back until `stop` is set.
pub async fn run_client(shared: Arc<Shared>, id: u32, stop: tokio::sync::watch::Receiver<bool>) {
    let w = &shared.workload;
    let mut rng = StdRng::seed_from_u64(w.seed ^ (u64::from(id) << 40) ^ 0x5eed);
    let mut next = 0u64;
    while !*stop.borrow() {
        let coordinator = rng.gen_range(0..shared.clients.len());
        let client = &shared.clients[coordinator];
        let recorder = &shared.recorder;
        match rng.gen_range(0..10) {
            // 4 in 10: put new keys.
            0..=3 => {
                let batch: Vec<Written> = (0..rng.gen_range(1..=MAX_PUT_BATCH))
                    .map(|_| {
                        next += 1;
                        Written {
                            key: format!("c{id}-{next}"),
                            vector_seed: w.seed ^ (u64::from(id) << 32) ^ next,
                        }
                    })
                    .collect();
                let keys = batch
                    .iter()
                    .map(|k| (k.key.clone(), w.value(&k.key)))
                    .collect();
                shared.pool().invoked.extend(batch.iter().cloned());
                let op = recorder.invoke(id, coordinator, OpKind::Put, Phase::Workload, keys);
                let data: Vec<Vec<f32>> = batch.iter().map(|k| w.vector(k.vector_seed)).collect();
                let request = PutVectorsRequest {
                    vector_bucket_name: &w.bucket,
                    index_name: &w.index,
                    vectors: batch
                        .iter()
                        .zip(&data)
                        .map(|(k, vector)| PutVector {
                            key: k.key.clone(),
                            data: Float32Data { float32: vector },
                            metadata: serde_json::json!({ "value": w.value(&k.key) }),
                        })
                        .collect(),
                };
                let result = w
                    .timed(client.put_vectors(&request))
                    .await
                    .map(|()| Vec::new());
                if recorder.complete(op, result) == Outcome::Ok {
                    shared.pool().live.extend(batch);
                }
            }
            // 3 in 10: read keys back.
            4..=6 => {
                let count = rng.gen_range(1..=MAX_GET_KEYS);
                let keys: Vec<String> = {
                    let pool = shared.pool();
                    pool.invoked
                        .choose_multiple(&mut rng, count)
                        .map(|k| k.key.clone())
                        .collect()
                };
                if keys.is_empty() {
                    continue;
                }
                let pairs = keys.iter().map(|k| (k.clone(), String::new())).collect();
                let op = recorder.invoke(id, coordinator, OpKind::Get, Phase::Workload, pairs);
                recorder.complete(op, w.get(client, &keys).await);
            }
            // 2 in 10: probe with a recent key's own vector.
            7 | 8 => {
                let target = {
                    let pool = shared.pool();
                    let from = pool.live.len().saturating_sub(RECENT);
                    pool.live[from..].choose(&mut rng).cloned()
                };
                let Some(target) = target else { continue };
                let keys = vec![(target.key.clone(), String::new())];
                let op = recorder.invoke(id, coordinator, OpKind::Probe, Phase::Workload, keys);
                recorder.complete(op, w.probe(client, target.vector_seed).await);
            }
            // 1 in 10: delete an acknowledged key.
            _ => {
                let target = {
                    let mut pool = shared.pool();
                    if pool.live.is_empty() {
                        None
                    } else {
                        let from = pool.live.len().saturating_sub(RECENT);
                        let at = rng.gen_range(from..pool.live.len());
                        Some(pool.live.swap_remove(at))
                    }
                };
                let Some(target) = target else { continue };
                let keys = vec![(target.key.clone(), String::new())];
                let op = recorder.invoke(id, coordinator, OpKind::Delete, Phase::Workload, keys);
                let request = KeysRequest {
                    vector_bucket_name: &w.bucket,
                    index_name: &w.index,
                    keys: vec![target.key],
                };
                let result = w
                    .timed(client.delete_keys(&request))
                    .await
                    .map(|()| Vec::new());
                recorder.complete(op, result);
            }
        }
    }
}

/// Reads running at once in the final phase.
const FINAL_CONCURRENCY: usize = 8;

/// The shard of `key` among `shards` equal hash ranges, as the coordinator places keys.
pub fn shard_of(key: &str, shards: u32) -> u32 {
    let hash = quiver_proto::key_hash(key);
    (0..shards)
        .find(|&part| quiver_proto::HashRange::split(part, shards).contains(hash))
        .unwrap_or(0)
}

/// The final reads, once every fault is healed: every key a put was invoked for, then a
/// listing of the whole index for keys nobody wrote, then probes of up to `probes` present keys.
///
/// Keys are read in batches of one shard's keys (`shards`: the index's shard count), a few
/// batches at once, each retried across the coordinators until `deadline`. A batch still
/// failing then marks its shard unreadable: the shard's other batches are tried once, and what
/// fails is recorded as unreadable. Returns the states and whether the listing completed.
pub async fn final_reads(
    shared: &Shared,
    shards: u32,
    deadline: Instant,
    probes: usize,
) -> (BTreeMap<String, FinalState>, bool) {
    let w = &shared.workload;
    let invoked: Vec<Written> = shared.pool().invoked.clone();
    let attempt = AtomicUsize::new(0);
    let mut by_shard: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for k in &invoked {
        by_shard
            .entry(shard_of(&k.key, shards.max(1)))
            .or_default()
            .push(k.key.clone());
    }
    let dead: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());
    let batches = by_shard
        .iter()
        .flat_map(|(shard, keys)| keys.chunks(GET_BATCH).map(move |batch| (*shard, batch)));
    let results: Vec<Vec<(String, FinalState)>> = futures::stream::iter(batches)
        .map(|(shard, keys)| {
            let (attempt, dead) = (&attempt, &dead);
            async move {
                let gone = dead.lock().map(|d| d.contains(&shard)).unwrap_or(false);
                let until = if gone { Instant::now() } else { deadline };
                let found = retry(shared, attempt, until, |c| w.get(c, keys)).await;
                let Some(found) = found else {
                    if let Ok(mut dead) = dead.lock() {
                        dead.insert(shard);
                    }
                    return keys
                        .iter()
                        .map(|k| (k.clone(), FinalState::Unreadable))
                        .collect();
                };
                let found: BTreeMap<String, String> = found.into_iter().collect();
                keys.iter()
                    .map(|k| {
                        let state = found
                            .get(k)
                            .map_or(FinalState::Absent, |v| FinalState::Present(v.clone()));
                        (k.clone(), state)
                    })
                    .collect()
            }
        })
        .buffer_unordered(FINAL_CONCURRENCY)
        .collect()
        .await;
    let mut states: BTreeMap<String, FinalState> = results.into_iter().flatten().collect();
    // Keys nobody wrote (phantoms) can only be found by listing.
    let mut listed_all = true;
    let mut token: Option<String> = None;
    loop {
        let body = serde_json::json!({
            "vectorBucketName": w.bucket, "indexName": w.index, "maxResults": 1000,
            "returnMetadata": true, "nextToken": token,
        });
        let page = retry(shared, &attempt, deadline, |c| {
            w.timed(c.call_json::<_, VectorsResponse>("ListVectors", &body))
        })
        .await;
        let Some(page) = page else {
            listed_all = false;
            break;
        };
        token = page.next_token.clone();
        for (key, value) in page.pairs() {
            states
                .entry(key)
                .or_insert_with_key(|_| FinalState::Present(value));
        }
        if token.is_none() {
            break;
        }
    }
    for (key, state) in &states {
        shared.recorder.final_state(key, state);
    }
    // Probes of present keys: recall after healing.
    let mut rng = StdRng::seed_from_u64(w.seed ^ 0xf1a1);
    let present: Vec<&Written> = invoked
        .iter()
        .filter(|k| matches!(states.get(&k.key), Some(FinalState::Present(_))))
        .collect();
    let chosen: Vec<&&Written> = present.choose_multiple(&mut rng, probes).collect();
    let mut failed_rounds = 0;
    for round in chosen.chunks(FINAL_CONCURRENCY) {
        let outcomes = futures::future::join_all(round.iter().map(|target| {
            let coordinator = attempt.fetch_add(1, Ordering::Relaxed) % shared.clients.len();
            let keys = vec![(target.key.clone(), String::new())];
            let op =
                shared
                    .recorder
                    .invoke(u32::MAX, coordinator, OpKind::Probe, Phase::Final, keys);
            async move {
                let result = w
                    .probe(&shared.clients[coordinator], target.vector_seed)
                    .await;
                shared.recorder.complete(op, result)
            }
        }))
        .await;
        // Queries that do not answer at all after the heal fail the recall gate already;
        // two rounds of nothing but failures are enough to show it.
        failed_rounds = if outcomes.iter().all(|o| *o != Outcome::Ok) {
            failed_rounds + 1
        } else {
            0
        };
        if failed_rounds >= 2 {
            break;
        }
    }
    (states, listed_all)
}

/// Calls `call` on the coordinators in turn until it succeeds, at least once and until
/// `deadline` passes.
async fn retry<'a, T, F, Fut>(
    shared: &'a Shared,
    attempt: &AtomicUsize,
    deadline: Instant,
    call: F,
) -> Option<T>
where
    F: Fn(&'a S3VectorsClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    loop {
        let client =
            &shared.clients[attempt.fetch_add(1, Ordering::Relaxed) % shared.clients.len()];
        if let Ok(value) = call(client).await {
            return Some(value);
        }
        if Instant::now() + RETRY_PAUSE > deadline {
            return None;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_and_unmade_connections_are_definite_failures() {
        let failure = |error_type: &str, status| Failure {
            error_type: error_type.into(),
            status,
            message: String::new(),
        };
        assert_eq!(
            outcome_of(&failure("ValidationException", Some(400))),
            Outcome::Fail
        );
        assert_eq!(
            outcome_of(&failure("ServiceUnavailableException", Some(503))),
            Outcome::Info
        );
        assert_eq!(
            outcome_of(&failure("ChaosConnectError", None)),
            Outcome::Fail
        );
        assert_eq!(outcome_of(&failure("ChaosTimeout", None)), Outcome::Info);
        assert_eq!(
            outcome_of(&failure("ChaosTransportError", None)),
            Outcome::Info
        );
    }

    #[test]
    fn vectors_are_a_function_of_their_seed() {
        let w = Workload {
            bucket: "b".into(),
            index: "i".into(),
            dimension: 8,
            seed: 1,
            op_timeout: Duration::from_secs(1),
        };
        assert_eq!(w.vector(5), w.vector(5));
        assert_ne!(w.vector(5), w.vector(6));
        assert_eq!(w.vector(5).len(), 8);
        assert_ne!(w.value("a"), w.value("b"));
    }

    #[test]
    fn keys_fall_in_the_shard_whose_range_holds_their_hash() {
        for shards in [1, 2, 6, 7] {
            for i in 0..200 {
                let key = format!("c1-{i}");
                let shard = shard_of(&key, shards);
                assert!(shard < shards);
                assert!(quiver_proto::HashRange::split(shard, shards)
                    .contains(quiver_proto::key_hash(&key)));
            }
        }
    }
}
