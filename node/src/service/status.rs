//! What the node's shard replicas report: one replica's Raft view and contents
//! ([`ReplicaStatus`], for `quiver admin status`) and the node-wide numbers of `/metrics`.

use std::sync::atomic::Ordering;

use quiver_proto::{NodeError, ReplicaStatus, ShardId};

use super::NodeService;
use crate::supervisor::{ReadyShard, ShardSlot};

/// The node's replicas in numbers, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationSummary {
    /// Shard replicas open here.
    pub replicas: u64,
    /// Of those, the ones that lead their group.
    pub leaders: u64,
    /// On the groups led here: the largest number of entries a follower is behind.
    pub max_lag: u64,
    /// The sum of the replicas' Raft terms: it grows by one with every election a group here
    /// takes part in.
    pub terms: u64,
    /// Snapshots built and installed by the replicas here since the node started.
    pub snapshots_built: u64,
    pub snapshots_installed: u64,
}

impl NodeService {
    /// This node's replica of `id`: its Raft view, its record count, and with `digest` a digest
    /// of its records (which reads every record: for operators and tests, not for hot paths).
    pub async fn replica_status(
        &self,
        id: ShardId,
        digest: bool,
    ) -> Result<ReplicaStatus, NodeError> {
        let ready = self.ready(id)?;
        let metrics = ready.raft.metrics().borrow().clone();
        let state = ready.state.clone();
        let (vectors, digest) = tokio::task::spawn_blocking(move || {
            let shard = state.read();
            (shard.len(), digest.then(|| shard.digest()))
        })
        .await
        .map_err(|e| NodeError::Storage(format!("digest task failed: {e}")))?;
        let last_log = metrics.last_log_index;
        let lag = metrics
            .replication
            .iter()
            .flatten()
            .filter(|(replica, _)| **replica != ready.replica.0)
            .map(|(replica, matched)| {
                let matched = matched.map(|log_id| log_id.index + 1).unwrap_or(0);
                let last = last_log.map(|index| index + 1).unwrap_or(0);
                (*replica, last.saturating_sub(matched))
            })
            .collect();
        Ok(ReplicaStatus {
            shard: id,
            replica: ready.replica,
            node: self.replication.node_id.clone(),
            is_leader: metrics.current_leader == Some(ready.replica.0),
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log,
            applied: metrics.last_applied.map(|log_id| log_id.index),
            purged: metrics.purged.map(|log_id| log_id.index),
            snapshot: metrics.snapshot.map(|log_id| log_id.index),
            lag,
            vectors,
            digest,
        })
    }

    /// The numbers `/metrics` shows, from every open replica's Raft metrics (no record read).
    pub fn replication_summary(&self) -> ReplicationSummary {
        let mut summary = ReplicationSummary {
            snapshots_built: self
                .replication
                .counters
                .snapshots_built
                .load(Ordering::Relaxed),
            snapshots_installed: self
                .replication
                .counters
                .snapshots_installed
                .load(Ordering::Relaxed),
            ..ReplicationSummary::default()
        };
        let ready: Vec<ReadyShard> = self
            .registry
            .shards
            .read()
            .values()
            .filter_map(|(_, slot)| match slot {
                ShardSlot::Ready(ready) => Some(ready.clone()),
                ShardSlot::Unavailable => None,
            })
            .collect();
        for shard in ready {
            let metrics = shard.raft.metrics().borrow().clone();
            summary.replicas += 1;
            summary.terms += metrics.current_term;
            if metrics.current_leader == Some(shard.replica.0) {
                summary.leaders += 1;
                let last = metrics.last_log_index.map_or(0, |i| i + 1);
                for matched in metrics.replication.iter().flat_map(|r| r.values()) {
                    let matched = matched.map_or(0, |log_id| log_id.index + 1);
                    summary.max_lag = summary.max_lag.max(last.saturating_sub(matched));
                }
            }
        }
        summary
    }

    /// [`NodeService::replica_status`] of every open replica here.
    pub async fn replicas(&self, digests: bool) -> Vec<ReplicaStatus> {
        let mut out = Vec::new();
        for id in self.shard_ids() {
            if let Ok(status) = self.replica_status(id, digests).await {
                out.push(status);
            }
        }
        out
    }
}
