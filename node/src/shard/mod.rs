//! The shard state machine: applies ordered write batches and answers reads.
//!
//! A shard is deterministic: the same sequence of batches applied to the same starting state gives
//! the same state. The durable truth is the redb store ([`crate::store`]); everything here in
//! memory (key maps, FAISS index, filter index) is rebuilt from it at start, with the FAISS index
//! taken from its checkpoint when one exists and only the newer ids added.
//!
//! - `mod.rs`: opening a shard, its in-memory state, get and list.
//! - [`write`]: `check_batch`, `commit` (durable) and `install` (visible): the apply of a batch.
//! - [`search`]: the planner (exact search over a filtered set, or FAISS) and exact re-ranking.
//! - [`checkpoint`]: the FAISS checkpoint and background rebuilds.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use quiver_proto::{
    key_hash, DistanceMetric, HashRange, Metadata, NodeError, ShardSpec, VectorRecord,
};
use roaring::RoaringTreemap;
use rustc_hash::FxHashMap;

use crate::index::distance::dot;
use crate::index::filter::FilterIndex;
use crate::index::vector::{VectorIndex, VectorIndexError};
use crate::store::{ShardStore, StoreError, StoredRecord};

mod checkpoint;
mod search;
mod write;

pub use checkpoint::{RebuildInput, RebuiltIndex};
pub use write::PreparedBatch;

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
            index_description: crate::index::vector::DEFAULT_INDEX_DESCRIPTION.into(),
            ef_search: crate::index::vector::DEFAULT_EF_SEARCH,
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

/// How many applied batches' request ids a shard remembers (a retry older than that many batches
/// would apply again; coordinators retry for seconds, while this covers minutes of writes).
pub const REMEMBERED_REQUESTS: usize = 10_000;

pub struct Shard {
    spec: ShardSpec,
    config: ShardConfig,
    store: Arc<ShardStore>,
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
    /// The replication layer's applied state as last committed (opaque here).
    raft_state: Option<Vec<u8>>,
    /// Request id -> sequence number of the last [`REMEMBERED_REQUESTS`] batches, and their
    /// order (oldest first) for eviction.
    requests: FxHashMap<u128, u64>,
    request_order: VecDeque<u128>,
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
    /// Opens a shard from its directory, rebuilding all in-memory state from the store.
    pub fn open(dir: &Path, spec: ShardSpec, config: ShardConfig) -> Result<Shard, ShardError> {
        let store = Arc::new(ShardStore::open(dir, &spec)?);
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
            raft_state: loaded.raft_state,
            requests: loaded.requests.iter().copied().collect(),
            request_order: loaded.requests.iter().map(|&(id, _)| id).collect(),
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

    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    pub fn applied_seq(&self) -> u64 {
        self.applied_seq
    }

    /// The replication layer's applied state as last committed with a batch or on its own.
    pub fn raft_state(&self) -> Option<&[u8]> {
        self.raft_state.as_deref()
    }

    /// Commits the replication layer's applied state alone (an entry that changes no record).
    pub fn save_raft_state(&mut self, raft_state: Vec<u8>) -> Result<(), ShardError> {
        self.store.save_raft_state(&raft_state)?;
        self.raft_state = Some(raft_state);
        Ok(())
    }

    /// The sequence number a batch with this request id was applied at, if it is remembered.
    pub fn applied_request(&self, request_id: u128) -> Option<u64> {
        self.requests.get(&request_id).copied()
    }

    /// The shard's store, for reads that must not hold the shard's lock (snapshots).
    pub fn store(&self) -> Arc<ShardStore> {
        self.store.clone()
    }

    /// The shard's directory.
    pub fn dir(&self) -> &Path {
        self.store.dir()
    }

    pub fn len(&self) -> u64 {
        self.live.len()
    }

    /// A digest of the records (keys in order, their internal ids, vectors and metadata):
    /// replicas that applied the same log have the same digest.
    pub fn digest(&self) -> u64 {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for (key, id) in &self.by_key {
            hasher.update(&(key.len() as u64).to_le_bytes());
            hasher.update(key.as_bytes());
            hasher.update(&id.to_le_bytes());
            if let Some(entry) = self.entries.get(id) {
                for x in &entry.vector {
                    hasher.update(&x.to_le_bytes());
                }
                if let Ok(bytes) = postcard::to_stdvec(&entry.metadata) {
                    hasher.update(&bytes);
                }
            }
        }
        hasher.digest()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
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
}
