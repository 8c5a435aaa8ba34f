//! The shard state machine: applies ordered write batches and answers reads.
//!
//! A shard is deterministic: the same sequence of batches applied to the same starting state gives
//! the same state. The durable truth is the redb store ([`crate::store`]); everything here in
//! memory (key maps, FAISS index, filter index) is rebuilt from it at start, with the FAISS index
//! taken from its checkpoint when one exists and only the newer ids added.

use std::collections::{BTreeMap, BinaryHeap};
use std::path::{Path, PathBuf};

use quiver_proto::{
    key_hash, DistanceMetric, Filter, HashRange, Hit, Metadata, NodeError, ShardSpec, VectorRecord,
    WriteOp,
};
use roaring::RoaringTreemap;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::distance::{dot, l2_squared};
use crate::filter_index::FilterIndex;
use crate::store::{RecordChange, ShardStore, StoreError, StoredRecord};
use crate::vector_index::{VectorIndex, VectorIndexError};

/// Tunables of one shard; the node config fills them in.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// FAISS index description (without the IDMap wrapper), e.g. `HNSW32,Flat`.
    pub index_description: String,
    pub ef_search: usize,
    /// A filtered query whose candidate set is at most this large is answered by exact search.
    pub exact_search_max_candidates: u64,
    /// Rebuild the FAISS index when tombstones exceed this fraction of its entries.
    pub rebuild_tombstone_ratio: f64,
    /// Write a FAISS checkpoint after this many vectors were added since the last one.
    pub checkpoint_every_vectors: u64,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            index_description: crate::vector_index::DEFAULT_INDEX_DESCRIPTION.into(),
            ef_search: crate::vector_index::DEFAULT_EF_SEARCH,
            exact_search_max_candidates: 10_000,
            rebuild_tombstone_ratio: 0.2,
            checkpoint_every_vectors: 20_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] VectorIndexError),
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl From<ShardError> for NodeError {
    fn from(e: ShardError) -> Self {
        match e {
            ShardError::Invalid(msg) => NodeError::InvalidRequest(msg),
            ShardError::Store(e) => NodeError::Storage(e.to_string()),
            ShardError::Index(e) => NodeError::Storage(e.to_string()),
        }
    }
}

struct Entry {
    key: String,
    vector: Vec<f32>,
    /// 1/|v| for cosine shards (vectors are stored as written, searched normalized).
    inv_norm: f32,
    metadata: Metadata,
}

/// Sidecar of a FAISS checkpoint: which ids the checkpointed index contains.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointInfo {
    /// Every id below this was assigned before the checkpoint; ids at or above were not added.
    next_id: u64,
    /// Entries in the checkpointed index, tombstones included.
    len: u64,
    /// xxh3-64 of the index file: a damaged file is never loaded.
    checksum: u64,
}

fn file_checksum(path: &Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(hasher.digest());
        }
        hasher.update(&buffer[..n]);
    }
}

fn fsync(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// A consistent snapshot of the live vectors, taken to rebuild the FAISS index off-lock.
pub struct RebuildInput {
    ids: Vec<u64>,
    vectors: Vec<f32>,
    next_id: u64,
    dimension: usize,
    metric: DistanceMetric,
    config: ShardConfig,
}

pub struct RebuiltIndex {
    index: VectorIndex,
    next_id: u64,
}

impl RebuildInput {
    /// Builds a fresh FAISS index from the snapshot. Slow; call on a blocking thread.
    pub fn build(self) -> Result<RebuiltIndex, ShardError> {
        let mut index = VectorIndex::new(
            self.dimension,
            self.metric,
            &self.config.index_description,
            self.config.ef_search,
        )?;
        index.add(&self.vectors, &self.ids)?;
        Ok(RebuiltIndex {
            index,
            next_id: self.next_id,
        })
    }
}

/// A batch that is durable in the store but not yet visible in memory.
pub struct PreparedBatch {
    seq: u64,
    next_id: u64,
    outcome: BTreeMap<String, Option<StoredRecord>>,
}

pub struct Shard {
    spec: ShardSpec,
    config: ShardConfig,
    store: ShardStore,
    by_key: BTreeMap<String, u64>,
    /// id -> live entry. Fx hashing: ids are trusted integers, and exact search looks up every
    /// candidate, where SipHash showed up in profiles.
    entries: FxHashMap<u64, Entry>,
    live: RoaringTreemap,
    filter_index: FilterIndex,
    index: VectorIndex,
    next_id: u64,
    applied_seq: u64,
    vectors_since_checkpoint: u64,
}

fn norm(vector: &[f32]) -> f32 {
    dot(vector, vector).sqrt()
}

/// Validates a vector for this shard: dimension, finite components, non-zero for cosine.
fn check_vector(spec: &ShardSpec, vector: &[f32]) -> Result<(), ShardError> {
    if vector.len() != spec.dimension as usize {
        return Err(ShardError::Invalid(format!(
            "vector must have length {}, but has length {}",
            spec.dimension,
            vector.len()
        )));
    }
    if vector.iter().any(|x| !x.is_finite()) {
        return Err(ShardError::Invalid(
            "vector contains NaN or infinity".into(),
        ));
    }
    if spec.metric == DistanceMetric::Cosine && norm(vector) == 0.0 {
        return Err(ShardError::Invalid(
            "zero vector is not allowed in a cosine index".into(),
        ));
    }
    Ok(())
}

impl Shard {
    fn checkpoint_path(dir: &Path) -> PathBuf {
        dir.join("index.faiss")
    }

    fn checkpoint_info_path(dir: &Path) -> PathBuf {
        dir.join("index.faiss.info")
    }

    /// Opens a shard from its directory, rebuilding all in-memory state from the store.
    pub fn open(dir: &Path, spec: ShardSpec, config: ShardConfig) -> Result<Shard, ShardError> {
        let store = ShardStore::open(dir, &spec)?;
        let loaded = store.load()?;
        let dimension = spec.dimension as usize;
        let checkpoint = Self::load_checkpoint(dir, dimension, &config, loaded.next_id);
        let (index, checkpoint_next_id) = match checkpoint {
            Some((index, info)) => (index, info.next_id),
            None => (
                VectorIndex::new(
                    dimension,
                    spec.metric,
                    &config.index_description,
                    config.ef_search,
                )?,
                0,
            ),
        };
        let mut shard = Shard {
            filter_index: FilterIndex::new(spec.non_filterable_keys.iter().cloned()),
            spec,
            config,
            store,
            by_key: BTreeMap::new(),
            entries: FxHashMap::default(),
            live: RoaringTreemap::new(),
            index,
            next_id: loaded.next_id,
            applied_seq: loaded.applied_seq,
            vectors_since_checkpoint: 0,
        };
        let mut missing_ids = Vec::new();
        let mut missing_vectors = Vec::new();
        for (key, record) in loaded.records {
            let id = record.id;
            if id >= checkpoint_next_id {
                missing_ids.push(id);
                missing_vectors.extend(shard.index_form(&record.vector));
            }
            shard.insert_entry(key, record);
        }
        // Add what the checkpoint does not have, in id order so the graph build is deterministic.
        let mut order: Vec<usize> = (0..missing_ids.len()).collect();
        order.sort_by_key(|&i| missing_ids[i]);
        let mut ids = Vec::with_capacity(order.len());
        let mut vectors = Vec::with_capacity(missing_vectors.len());
        for i in order {
            ids.push(missing_ids[i]);
            vectors.extend_from_slice(&missing_vectors[i * dimension..(i + 1) * dimension]);
        }
        shard.index.add(&vectors, &ids)?;
        shard.vectors_since_checkpoint = ids.len() as u64;
        Ok(shard)
    }

    fn load_checkpoint(
        dir: &Path,
        dimension: usize,
        config: &ShardConfig,
        store_next_id: u64,
    ) -> Option<(VectorIndex, CheckpointInfo)> {
        let info_bytes = std::fs::read(Self::checkpoint_info_path(dir)).ok()?;
        let info: CheckpointInfo = postcard::from_bytes(&info_bytes).ok()?;
        if info.next_id > store_next_id {
            // A checkpoint from the future of the store cannot be trusted.
            tracing::warn!(dir = %dir.display(), "ignoring faiss checkpoint newer than the store");
            return None;
        }
        let path = Self::checkpoint_path(dir);
        if file_checksum(&path).ok() != Some(info.checksum) {
            tracing::warn!(dir = %dir.display(), "ignoring faiss checkpoint with a bad checksum");
            return None;
        }
        match VectorIndex::read(&path, dimension, config.ef_search) {
            Ok(index) if index.len() == info.len => Some((index, info)),
            Ok(_) => {
                tracing::warn!(dir = %dir.display(), "ignoring faiss checkpoint with wrong length");
                None
            }
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "ignoring unreadable faiss checkpoint");
                None
            }
        }
    }

    /// The vector as FAISS sees it: normalized for cosine, as written for euclidean.
    fn index_form(&self, vector: &[f32]) -> Vec<f32> {
        match self.spec.metric {
            DistanceMetric::Cosine => {
                let n = norm(vector);
                vector.iter().map(|x| x / n).collect()
            }
            DistanceMetric::Euclidean => vector.to_vec(),
        }
    }

    fn insert_entry(&mut self, key: String, record: StoredRecord) {
        let inv_norm = match self.spec.metric {
            DistanceMetric::Cosine => 1.0 / norm(&record.vector),
            DistanceMetric::Euclidean => 1.0,
        };
        self.filter_index.insert(record.id, &record.metadata);
        self.live.insert(record.id);
        self.by_key.insert(key.clone(), record.id);
        self.entries.insert(
            record.id,
            Entry {
                key,
                vector: record.vector,
                inv_norm,
                metadata: record.metadata,
            },
        );
    }

    fn remove_entry(&mut self, key: &str) {
        if let Some(id) = self.by_key.remove(key) {
            self.live.remove(id);
            if let Some(entry) = self.entries.remove(&id) {
                self.filter_index.remove(id, &entry.metadata);
            }
        }
    }

    pub fn spec(&self) -> &ShardSpec {
        &self.spec
    }

    pub fn applied_seq(&self) -> u64 {
        self.applied_seq
    }

    pub fn len(&self) -> u64 {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Validates a batch without changing anything.
    pub fn check_batch(&self, ops: &[WriteOp]) -> Result<(), ShardError> {
        for op in ops {
            let key = match op {
                WriteOp::Put { key, vector, .. } => {
                    check_vector(&self.spec, vector)?;
                    key
                }
                WriteOp::Delete { key } => key,
            };
            if !self.spec.range.contains(key_hash(key)) {
                return Err(ShardError::Invalid(format!(
                    "key {key:?} does not belong to shard {}",
                    self.spec.id
                )));
            }
        }
        Ok(())
    }

    /// First half of applying a batch: validates it and commits it durably (fsync) to the store.
    /// Needs only `&self`, so readers continue meanwhile; the caller must be the shard's only
    /// writer and must [`Shard::install`] the result before committing the next batch.
    pub fn commit(&self, ops: Vec<WriteOp>) -> Result<PreparedBatch, ShardError> {
        self.check_batch(&ops)?;
        let seq = self.applied_seq + 1;
        let mut next_id = self.next_id;
        // Resolve the batch to its final per-key outcome (last write to a key wins).
        let mut outcome: BTreeMap<String, Option<StoredRecord>> = BTreeMap::new();
        for op in ops {
            match op {
                WriteOp::Put {
                    key,
                    vector,
                    metadata,
                } => {
                    let record = StoredRecord {
                        id: next_id,
                        vector,
                        metadata,
                    };
                    next_id += 1;
                    outcome.insert(key, Some(record));
                }
                WriteOp::Delete { key } => {
                    outcome.insert(key, None);
                }
            }
        }
        let changes: Vec<RecordChange<'_>> = outcome
            .iter()
            .map(|(key, record)| match record {
                Some(record) => RecordChange::Upsert { key, record },
                None => RecordChange::Remove { key },
            })
            .collect();
        self.store.commit_batch(&changes, seq, next_id)?;
        Ok(PreparedBatch {
            seq,
            next_id,
            outcome,
        })
    }

    /// Second half: makes a durable batch visible in memory. An error here means memory and disk
    /// disagree; the caller must re-open the shard from disk.
    pub fn install(&mut self, batch: PreparedBatch) -> Result<u64, ShardError> {
        if batch.seq != self.applied_seq + 1 {
            return Err(ShardError::Invalid(format!(
                "batch {} installed out of order after {}",
                batch.seq, self.applied_seq
            )));
        }
        let mut new_ids = Vec::new();
        let mut new_vectors = Vec::new();
        for (key, record) in batch.outcome {
            self.remove_entry(&key);
            if let Some(record) = record {
                new_ids.push(record.id);
                new_vectors.extend(self.index_form(&record.vector));
                self.insert_entry(key, record);
            }
        }
        self.next_id = batch.next_id;
        self.applied_seq = batch.seq;
        self.vectors_since_checkpoint += new_ids.len() as u64;
        self.index.add(&new_vectors, &new_ids)?;
        Ok(batch.seq)
    }

    /// Applies one batch (commit then install). On a commit error nothing changed.
    pub fn apply(&mut self, ops: Vec<WriteOp>) -> Result<u64, ShardError> {
        let batch = self.commit(ops)?;
        self.install(batch)
    }

    pub fn get(
        &self,
        keys: &[String],
        return_data: bool,
        return_metadata: bool,
    ) -> Vec<VectorRecord> {
        let mut seen = std::collections::HashSet::new();
        keys.iter()
            .filter(|key| seen.insert(key.as_str()))
            .filter_map(|key| self.by_key.get(key))
            .filter_map(|id| self.entries.get(id))
            .map(|entry| Self::record(entry, return_data, return_metadata))
            .collect()
    }

    fn record(entry: &Entry, return_data: bool, return_metadata: bool) -> VectorRecord {
        VectorRecord {
            key: entry.key.clone(),
            vector: return_data.then(|| entry.vector.clone()),
            metadata: return_metadata.then(|| entry.metadata.clone()),
        }
    }

    /// Up to `limit` records with keys strictly after `after`, ascending, in `range` if given.
    /// The second value is true when more keys may follow.
    pub fn list(
        &self,
        after: Option<&str>,
        limit: usize,
        range: Option<HashRange>,
        return_data: bool,
        return_metadata: bool,
    ) -> (Vec<VectorRecord>, bool) {
        use std::ops::Bound;
        let lower = match after {
            Some(after) => Bound::Excluded(after.to_owned()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for (key, id) in self.by_key.range((lower, Bound::Unbounded)) {
            if range.is_some_and(|r| !r.contains(key_hash(key))) {
                continue;
            }
            if out.len() == limit {
                return (out, true);
            }
            if let Some(entry) = self.entries.get(id) {
                out.push(Self::record(entry, return_data, return_metadata));
            }
        }
        (out, false)
    }

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

    /// Whether enough tombstones piled up to rebuild the FAISS index.
    pub fn needs_rebuild(&self) -> bool {
        let total = self.index.len();
        let tombstones = total.saturating_sub(self.live.len());
        total >= 1_000 && tombstones as f64 > self.config.rebuild_tombstone_ratio * total as f64
    }

    pub fn needs_checkpoint(&self) -> bool {
        self.vectors_since_checkpoint >= self.config.checkpoint_every_vectors
    }

    /// Snapshot of the live vectors for an off-lock rebuild.
    pub fn rebuild_input(&self) -> RebuildInput {
        let mut ids: Vec<u64> = self.live.iter().collect();
        ids.sort_unstable();
        let mut vectors = Vec::with_capacity(ids.len() * self.spec.dimension as usize);
        for id in &ids {
            if let Some(entry) = self.entries.get(id) {
                vectors.extend(self.index_form(&entry.vector));
            }
        }
        RebuildInput {
            ids,
            vectors,
            next_id: self.next_id,
            dimension: self.spec.dimension as usize,
            metric: self.spec.metric,
            config: self.config.clone(),
        }
    }

    /// Swaps in a rebuilt index after adding the ids assigned since its snapshot.
    pub fn install_rebuilt(&mut self, rebuilt: RebuiltIndex) -> Result<(), ShardError> {
        let mut index = rebuilt.index;
        let newer: Vec<u64> = self
            .live
            .iter()
            .filter(|&id| id >= rebuilt.next_id)
            .collect();
        let mut vectors = Vec::with_capacity(newer.len() * self.spec.dimension as usize);
        for id in &newer {
            if let Some(entry) = self.entries.get(id) {
                vectors.extend(self.index_form(&entry.vector));
            }
        }
        index.add(&vectors, &newer)?;
        self.index = index;
        Ok(())
    }

    /// Writes the FAISS index and its sidecar (temp file + rename, so a crash leaves either the
    /// old checkpoint or the new one). Call with the shard read-locked, on a blocking thread.
    pub fn write_checkpoint(&self) -> Result<(), ShardError> {
        let dir = self.store.dir();
        let tmp = dir.join("index.faiss.tmp");
        self.index.write(&tmp)?;
        let io = |e: std::io::Error| ShardError::Store(StoreError::from(e));
        fsync(&tmp).map_err(io)?;
        let info = CheckpointInfo {
            next_id: self.next_id,
            len: self.index.len(),
            checksum: file_checksum(&tmp).map_err(io)?,
        };
        let info_tmp = dir.join("index.faiss.info.tmp");
        std::fs::write(
            &info_tmp,
            postcard::to_stdvec(&info).map_err(StoreError::from)?,
        )
        .map_err(io)?;
        fsync(&info_tmp).map_err(io)?;
        // Remove the old sidecar first: an index without a matching sidecar is ignored.
        let _ = std::fs::remove_file(Self::checkpoint_info_path(dir));
        std::fs::rename(&tmp, Self::checkpoint_path(dir)).map_err(io)?;
        std::fs::rename(&info_tmp, Self::checkpoint_info_path(dir)).map_err(io)?;
        fsync(dir).map_err(io)?;
        Ok(())
    }

    pub fn mark_checkpointed(&mut self) {
        self.vectors_since_checkpoint = 0;
    }
}
