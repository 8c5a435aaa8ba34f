//! Shard replication: one openraft group per shard, its replicas on distinct nodes.
//!
//! - `mod.rs`: the group's type configuration, the command a write proposes, the Raft RPCs as
//!   they travel inside [`quiver_proto::NodeRequest::ShardRaft`], and the group's timings.
//! - [`log`]: the node's one Raft log database shared by every replica it hosts; a single writer
//!   commits the appends of many groups in one fsync (group commit).
//! - [`machine`]: the state machine, the shard itself ([`crate::shard::Shard`]): apply is the
//!   shard's deterministic commit + install, with the applied log id in the same transaction.
//! - [`snapshot`]: snapshot files (a logical dump of the shard's store, streamed from a read
//!   transaction) and installing one into a fresh store.
//! - [`network`]: Raft RPCs to the replicas on other nodes over the node transport.
//!
//! Invariants (ARCHITECTURE.md, "Replicated shards"): a write is acknowledged only after its
//! entry is durable on a quorum and applied on the leader; apply is deterministic, so replicas
//! hold identical records and internal ids; a request id applies at most once.

use std::sync::Arc;

use quiver_proto::{NodeError, WriteOp};
use serde::{Deserialize, Serialize};

pub mod barrier;
pub mod log;
pub mod machine;
pub mod network;
pub mod snapshot;

/// What a write proposes to the shard's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardCommand {
    /// Chosen by the coordinator once per write and kept across its retries.
    pub request_id: u128,
    pub ops: Vec<WriteOp>,
}

/// A replica as a member of its group: the node that hosts it (its address comes from the
/// node directory the control plane sends, so a node that moves keeps its memberships).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardNode {
    pub node: String,
}

impl std::fmt::Display for ShardNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.node)
    }
}

/// What applying one entry answered: the batch's sequence number, or why it was refused (the
/// same on every replica).
pub type ShardApplied = Result<u64, NodeError>;

openraft::declare_raft_types!(
    pub ShardTypeConfig:
        D = ShardCommand,
        R = ShardApplied,
        NodeId = u64,
        Node = ShardNode,
        Entry = openraft::Entry<ShardTypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type ShardRaft = openraft::Raft<ShardTypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type StorageError = openraft::StorageError<u64>;
pub type Membership = openraft::StoredMembership<u64, ShardNode>;

/// A Raft RPC between replicas, postcard-encoded into `NodeRequest::ShardRaft::payload`.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    AppendEntries(openraft::raft::AppendEntriesRequest<ShardTypeConfig>),
    Vote(openraft::raft::VoteRequest<u64>),
    InstallSnapshot(openraft::raft::InstallSnapshotRequest<ShardTypeConfig>),
}

impl RaftRequest {
    pub fn kind(&self) -> &'static str {
        match self {
            RaftRequest::AppendEntries(_) => "append_entries",
            RaftRequest::Vote(_) => "vote",
            RaftRequest::InstallSnapshot(_) => "install_snapshot",
        }
    }
}

/// The answer to a [`RaftRequest`], postcard-encoded into `NodeResponse::ShardRaft`.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftResponse {
    AppendEntries(openraft::raft::AppendEntriesResponse<u64>),
    Vote(openraft::raft::VoteResponse<u64>),
    InstallSnapshot(openraft::raft::InstallSnapshotResponse<u64>),
    /// The receiving group refused the RPC (a fatal Raft error, a snapshot it cannot take).
    Failed(String),
}

/// Timings and log retention of shard groups.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many entries since the last one; as many entries are kept
    /// behind it, so a replica that was down for a while catches up from the log.
    pub snapshot_every: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        // Failover within seconds: a follower campaigns 1-2 s after the last heartbeat.
        ReplicationConfig {
            heartbeat_ms: 250,
            election_timeout_min_ms: 1_000,
            election_timeout_max_ms: 2_000,
            snapshot_every: 2_000,
        }
    }
}

/// Snapshot chunks: well under the transport's frame limit, small enough that a chunk's
/// timeout is meaningful on a slow link.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 4 * 1024 * 1024;

impl ReplicationConfig {
    // openraft's own error type, checked once at start.
    #[allow(clippy::result_large_err)]
    pub fn raft_config(&self) -> Result<Arc<openraft::Config>, openraft::ConfigError> {
        let config = openraft::Config {
            cluster_name: "quiver-shard".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.snapshot_every,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            install_snapshot_timeout: 10_000,
            // Entries are whole write batches (up to ~28 MiB); the network answers
            // `PayloadTooLarge` when a batch of them would not fit one frame.
            max_payload_entries: 64,
            ..Default::default()
        }
        .validate()?;
        Ok(Arc::new(config))
    }
}
