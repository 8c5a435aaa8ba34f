//! Requests a coordinator sends to a node, and the node's answers.

use serde::{Deserialize, Serialize};

use crate::filter::Filter;
use crate::ids::{HashRange, ReplicaId, ShardId};
use crate::metadata::Metadata;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DistanceMetric {
    Euclidean,
    Cosine,
}

/// Everything a node needs to host one shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardSpec {
    pub id: ShardId,
    pub dimension: u32,
    pub metric: DistanceMetric,
    /// Metadata keys that are stored but never indexed for filtering.
    pub non_filterable_keys: Vec<String>,
    /// The hash range of vector keys this shard owns.
    pub range: HashRange,
    /// The shard's replicas (its Raft group's voters), in the catalog's order, on distinct
    /// nodes. The replica with the smallest id initializes the group when it is first created.
    pub replicas: Vec<ShardMember>,
}

/// One replica of a shard: its id (the Raft node id in the shard's group) and its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMember {
    pub replica: ReplicaId,
    pub node: String,
}

impl ShardSpec {
    /// This node's replica of the shard, if it has one.
    pub fn replica_on(&self, node: &str) -> Option<ReplicaId> {
        self.replicas
            .iter()
            .find(|member| member.node == node)
            .map(|member| member.replica)
    }

    /// The replica that initializes the shard's Raft group: the one with the smallest id.
    pub fn bootstrap_replica(&self) -> Option<ReplicaId> {
        self.replicas.iter().map(|member| member.replica).min()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WriteOp {
    /// Insert or fully replace a vector.
    Put {
        key: String,
        vector: Vec<f32>,
        metadata: Metadata,
    },
    /// Remove a vector; removing a missing key is not an error.
    Delete { key: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeRequest {
    Ping,
    /// Idempotent: creating an existing shard with the same spec succeeds.
    CreateShard(ShardSpec),
    /// Idempotent: dropping a missing shard succeeds.
    DropShard(ShardId),
    /// Apply a batch atomically; answered once the batch is durable on a quorum of the shard's
    /// replicas and applied on its leader. `request_id` makes a retry apply at most once: a
    /// batch whose id the shard applied before answers the first result.
    Write {
        shard: ShardId,
        request_id: u128,
        ops: Vec<WriteOp>,
    },
    Get {
        shard: ShardId,
        keys: Vec<String>,
        return_data: bool,
        return_metadata: bool,
    },
    /// Keys in ascending order strictly after `after`, optionally restricted to a hash range.
    List {
        shard: ShardId,
        after: Option<String>,
        limit: u32,
        range: Option<HashRange>,
        return_data: bool,
        return_metadata: bool,
    },
    Search {
        shard: ShardId,
        vector: Vec<f32>,
        top_k: u32,
        filter: Option<Filter>,
        return_metadata: bool,
    },
    /// Search several shards hosted by this node and merge their top-k: one round trip per
    /// node instead of one per shard. Appended last so earlier variants keep their encoding.
    SearchShards {
        shards: Vec<ShardId>,
        vector: Vec<f32>,
        top_k: u32,
        filter: Option<Filter>,
        return_metadata: bool,
    },
    /// The state of every shard replica this node hosts; with `digests`, a digest of each
    /// replica's records (reads them all: for operators and tests).
    Replicas {
        digests: bool,
    },
    /// Raft traffic of a shard's group between nodes, addressed to replica `to`; the payload is
    /// the node crate's encoding of an openraft RPC (this crate stays free of Raft types).
    ShardRaft {
        shard: ShardId,
        to: ReplicaId,
        payload: Vec<u8>,
    },
}

impl NodeRequest {
    pub fn kind(&self) -> &'static str {
        match self {
            NodeRequest::Ping => "ping",
            NodeRequest::CreateShard(_) => "create_shard",
            NodeRequest::DropShard(_) => "drop_shard",
            NodeRequest::Write { .. } => "write",
            NodeRequest::Get { .. } => "get",
            NodeRequest::List { .. } => "list",
            NodeRequest::Search { .. } => "search",
            NodeRequest::SearchShards { .. } => "search_shards",
            NodeRequest::ShardRaft { .. } => "shard_raft",
            NodeRequest::Replicas { .. } => "replicas",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorRecord {
    pub key: String,
    pub vector: Option<Vec<f32>>,
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub key: String,
    /// The S3 Vectors distance: `1 - cos` for cosine, L2 (not squared) for euclidean.
    pub distance: f32,
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeResponse {
    Pong,
    Done,
    /// The batch is durable at this shard sequence number.
    Written {
        seq: u64,
    },
    Vectors(Vec<VectorRecord>),
    Listed {
        vectors: Vec<VectorRecord>,
        /// More keys may follow when `true`.
        more: bool,
    },
    Hits(Vec<Hit>),
    Error(NodeError),
    /// The answer to a [`NodeRequest::ShardRaft`], encoded by the node crate.
    ShardRaft(Vec<u8>),
    Replicas(Vec<ReplicaStatus>),
}

/// One shard replica as its node sees it: its Raft view and contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub shard: ShardId,
    pub replica: ReplicaId,
    pub node: String,
    pub is_leader: bool,
    /// The replica id this replica believes leads, if any.
    pub leader: Option<u64>,
    pub term: u64,
    pub last_log: Option<u64>,
    pub applied: Option<u64>,
    /// The last log index removed from this replica's log (covered by a snapshot).
    pub purged: Option<u64>,
    /// The index of the newest snapshot this replica holds.
    pub snapshot: Option<u64>,
    /// On a leader: how far each follower's log is behind the leader's last index.
    pub lag: Vec<(u64, u64)>,
    pub vectors: u64,
    /// A digest of the records, equal on replicas that applied the same entries (only when
    /// asked for).
    pub digest: Option<u64>,
}

/// Errors a node reports, each telling the caller what to do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum NodeError {
    /// The shard is not hosted here (yet): placement may be stale; do not retry blindly.
    #[error("shard {0} is not hosted on this node")]
    ShardNotFound(ShardId),
    /// Admission control refused the request: retry later.
    #[error("node is overloaded, retry later")]
    Overloaded,
    /// The request's deadline passed before it completed: retry with a new deadline.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The request is malformed for this shard (wrong dimension, ...): a bug in the caller.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {got}, this node speaks {supported}")]
    ProtocolVersion { got: u16, supported: u16 },
    /// The request bytes did not decode.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// Storage or index failure on the node; the write was not applied. Retryable.
    #[error("node storage failure: {0}")]
    Storage(String),
    /// The shard is restarting or being dropped: retry shortly.
    #[error("shard {0} is unavailable, retry later")]
    ShardUnavailable(ShardId),
    /// The caller's certificate does not grant the role this request needs.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// This replica is not the shard's Raft leader: retry on `leader` (a node id) if known, on
    /// another replica otherwise.
    #[error("shard {shard} is led elsewhere (leader: {leader:?})")]
    NotLeader {
        shard: ShardId,
        leader: Option<String>,
    },
}
