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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{Entry, EntryPayload, LogId, Membership, Vote};
    use quiver_proto::{ControlRequest, Envelope, NodeHello, PROTOCOL_VERSION};

    use super::*;
    use crate::catalog::CatalogCommand;

    /// One of each coordinator-to-coordinator message, with Raft entries of every payload kind.
    fn samples() -> Vec<PeerRequest> {
        let log_id = |term, index| LogId::new(openraft::CommittedLeaderId::new(term, 1), index);
        let node = CoordinatorNode {
            cluster_addr: "10.0.0.1:7277".into(),
            http_addr: "10.0.0.1:8277".into(),
        };
        let members = BTreeMap::from([(1, node.clone()), (2, node.clone())]);
        let membership = Membership::new(vec![BTreeSet::from([1, 2])], members);
        let proposal = Proposal {
            id: 7,
            command: CatalogCommand::SetTags {
                bucket: "b".into(),
                index: Some("i".into()),
                tags: BTreeMap::from([("k".into(), "v".into())]),
            },
        };
        let entries = vec![
            Entry::<TypeConfig> {
                log_id: log_id(2, 5),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(2, 6),
                payload: EntryPayload::Normal(proposal.clone()),
            },
            Entry {
                log_id: log_id(2, 7),
                payload: EntryPayload::Membership(membership),
            },
        ];
        vec![
            PeerRequest::AppendEntries(AppendEntriesRequest {
                vote: Vote::new_committed(2, 1),
                prev_log_id: Some(log_id(1, 4)),
                entries,
                leader_commit: Some(log_id(2, 5)),
            }),
            PeerRequest::Vote(VoteRequest::new(Vote::new(3, 2), Some(log_id(2, 7)))),
            PeerRequest::Execute(proposal),
            PeerRequest::ReadIndex,
            PeerRequest::Status { digests: true },
            PeerRequest::AddCoordinator { id: 4, node },
            PeerRequest::RemoveCoordinator { id: 4 },
        ]
    }

    /// Every peer message survives its wire encoding inside a `ControlRequest` envelope. With
    /// `QUIVER_FUZZ_SEEDS=DIR` the envelopes are written as seeds of `fuzz/control_rpc`.
    #[test]
    fn peer_messages_round_trip_inside_control_envelopes() {
        let heartbeat = ControlRequest::Heartbeat(NodeHello {
            node_id: "node-1".into(),
            addr: "10.0.0.5:7301".into(),
            join_token: "token".into(),
            incarnation: 42,
        });
        let mut bodies = vec![heartbeat];
        for request in samples() {
            let bytes = postcard::to_stdvec(&request).expect("encode");
            let decoded: PeerRequest = postcard::from_bytes(&bytes).expect("decode");
            assert_eq!(format!("{decoded:?}"), format!("{request:?}"));
            bodies.push(ControlRequest::Peer(bytes));
        }
        for body in bodies {
            let envelope = Envelope {
                version: PROTOCOL_VERSION,
                request_id: "seed".into(),
                deadline_unix_ms: u64::MAX,
                body,
            };
            let bytes = quiver_proto::encode(&envelope).expect("encode");
            assert_eq!(
                quiver_proto::decode::<ControlRequest>(&bytes)
                    .expect("decode")
                    .body,
                envelope.body
            );
            if let Some(dir) = std::env::var_os("QUIVER_FUZZ_SEEDS") {
                // control_rpc's first byte 0: a ControlRequest envelope.
                let dir = std::path::Path::new(&dir).join("control_rpc");
                std::fs::create_dir_all(&dir).expect("seed dir");
                let name = format!("peer-{:08x}", crc(&bytes));
                std::fs::write(dir.join(name), [&[0u8][..], &bytes].concat()).expect("seed");
            }
        }
    }

    fn crc(bytes: &[u8]) -> u32 {
        bytes
            .iter()
            .fold(0u32, |h, b| h.rotate_left(5) ^ u32::from(*b))
    }
}
