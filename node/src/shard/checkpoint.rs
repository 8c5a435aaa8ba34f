//! The FAISS checkpoint (an optimisation: the store is the truth) and background rebuilds that
//! drop tombstones.

use std::path::{Path, PathBuf};

use quiver_proto::DistanceMetric;
use serde::{Deserialize, Serialize};

use super::{Shard, ShardConfig, ShardError};
use crate::index::vector::VectorIndex;
use crate::store::StoreError;

/// Sidecar of a FAISS checkpoint: which ids the checkpointed index contains.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CheckpointInfo {
    /// Every id below this was assigned before the checkpoint; ids at or above were not added.
    pub(super) next_id: u64,
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

impl Shard {
    fn checkpoint_path(dir: &Path) -> PathBuf {
        dir.join("index.faiss")
    }

    fn checkpoint_info_path(dir: &Path) -> PathBuf {
        dir.join("index.faiss.info")
    }

    pub(super) fn load_checkpoint(
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
