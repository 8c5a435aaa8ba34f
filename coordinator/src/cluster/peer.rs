//! Coordinator-to-coordinator messages. They travel inside
//! [`quiver_proto::ControlRequest::Peer`], postcard-encoded, so the wire crate needs no Raft types.

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use quiver_net::tls::{Role, Roles};
use serde::{Deserialize, Serialize};

use super::types::{CommandResult, CoordinatorNode, Proposal, TypeConfig};

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A control-plane command forwarded to the leader.
    Execute(Proposal),
    /// Asks the leader for a read index: it confirms its leadership with a quorum and answers
    /// the log index a linearizable read must wait for.
    ReadIndex,
    /// The operator's view of the cluster; with `digests`, every shard replica's digest (nodes
    /// read every record for it).
    Status {
        digests: bool,
    },
    /// Adds a coordinator to the Raft group (as a learner first, then a voter).
    AddCoordinator {
        id: u64,
        node: CoordinatorNode,
    },
    /// Removes a coordinator from the Raft group.
    RemoveCoordinator {
        id: u64,
    },
}

impl PeerRequest {
    /// Whether a peer whose certificate grants `roles` may send this request: Raft traffic and
    /// forwarded commands come from coordinators, membership changes from operators, and both
    /// may read the status.
    pub fn allowed(&self, roles: Roles) -> bool {
        match self {
            PeerRequest::AppendEntries(_)
            | PeerRequest::Vote(_)
            | PeerRequest::InstallSnapshot(_)
            | PeerRequest::Execute(_)
            | PeerRequest::ReadIndex => roles.contains(Role::Coordinator),
            PeerRequest::Status { .. } => {
                roles.contains(Role::Coordinator) || roles.contains(Role::Admin)
            }
            PeerRequest::AddCoordinator { .. } | PeerRequest::RemoveCoordinator { .. } => {
                roles.contains(Role::Admin)
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            PeerRequest::AppendEntries(_) => "append_entries",
            PeerRequest::Vote(_) => "vote",
            PeerRequest::InstallSnapshot(_) => "install_snapshot",
            PeerRequest::Execute(_) => "execute",
            PeerRequest::ReadIndex => "read_index",
            PeerRequest::Status { .. } => "status",
            PeerRequest::AddCoordinator { .. } => "add_coordinator",
            PeerRequest::RemoveCoordinator { .. } => "remove_coordinator",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    AppendEntries(AppendEntriesResponse<u64>),
    Vote(VoteResponse<u64>),
    InstallSnapshot(InstallSnapshotResponse<u64>),
    /// The command was committed at `index` with this result.
    Executed {
        result: CommandResult,
        index: u64,
    },
    ReadIndex(u64),
    Status(ClusterStatus),
    Done,
    /// Not the leader; the leader's cluster address if known.
    NotLeader {
        leader: Option<String>,
    },
    /// The request failed on the receiver (shutting down, storage failure, bad request).
    Failed(String),
}

/// The operator's view of the cluster, as one coordinator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The coordinator that answered.
    pub id: u64,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_applied: Option<u64>,
    pub last_log_index: Option<u64>,
    pub coordinators: Vec<CoordinatorStatus>,
    pub nodes: Vec<NodeStatus>,
    pub shards: Vec<ShardStatus>,
    /// Every shard replica as its node reports it (nodes that are down or do not answer are
    /// missing).
    pub replicas: Vec<quiver_proto::ReplicaStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorStatus {
    pub id: u64,
    pub cluster_addr: String,
    pub http_addr: String,
    /// leader, follower, learner (non-voter).
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: String,
    pub addr: String,
    pub up: bool,
    pub shards: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardStatus {
    pub bucket: String,
    pub index: String,
    pub shard: u32,
    /// The nodes of the shard's replicas.
    pub replicas: Vec<String>,
}
