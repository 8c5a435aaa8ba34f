//! Applying a write batch: validate, commit durably to the store, then make it visible.

use std::collections::BTreeMap;

use quiver_proto::{key_hash, WriteOp};

use super::{check_vector, Shard, ShardError};
use crate::store::{RecordChange, RequestRecord, StoredRecord};

/// A batch that is durable in the store but not yet visible in memory.
pub struct PreparedBatch {
    seq: u64,
    next_id: u64,
    outcome: BTreeMap<String, Option<StoredRecord>>,
    raft_state: Vec<u8>,
    request: Option<RequestRecord>,
}

impl Shard {
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
        let raft_state = self.raft_state.clone().unwrap_or_default();
        self.commit_entry(ops, None, raft_state)
    }

    /// [`Shard::commit`] of a replicated batch: `raft_state` (the applied log id, encoded by the
    /// replication layer) and the request id are committed in the same transaction.
    pub fn commit_entry(
        &self,
        ops: Vec<WriteOp>,
        request_id: Option<u128>,
        raft_state: Vec<u8>,
    ) -> Result<PreparedBatch, ShardError> {
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
        let request = request_id.map(|id| RequestRecord {
            id,
            evict: (self.request_order.len() >= super::REMEMBERED_REQUESTS)
                .then(|| self.request_order.front().copied())
                .flatten(),
        });
        self.store
            .commit_batch(&changes, seq, next_id, &raft_state, request)?;
        Ok(PreparedBatch {
            seq,
            next_id,
            outcome,
            raft_state,
            request,
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
        self.raft_state = Some(batch.raft_state);
        if let Some(request) = batch.request {
            if let Some(evicted) = request.evict {
                self.request_order.pop_front();
                self.requests.remove(&evicted);
            }
            self.request_order.push_back(request.id);
            self.requests.insert(request.id, batch.seq);
        }
        self.vectors_since_checkpoint += new_ids.len() as u64;
        self.index.add(&new_vectors, &new_ids)?;
        Ok(batch.seq)
    }

    /// Applies one batch (commit then install). On a commit error nothing changed.
    pub fn apply(&mut self, ops: Vec<WriteOp>) -> Result<u64, ShardError> {
        let batch = self.commit(ops)?;
        self.install(batch)
    }
}
