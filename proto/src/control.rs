//! Requests a coordinator serves on its QUIC endpoint: node heartbeats (which also register a
//! node and carry back its shard assignments) and coordinator-to-coordinator traffic (Raft,
//! forwarded writes, read barriers, admin), which the coordinator encodes itself so that this
//! crate stays free of Raft types.

use serde::{Deserialize, Serialize};

use crate::messages::{NodeError, ShardSpec};

/// Longest node id.
pub const MAX_NODE_ID_LEN: usize = 64;

/// The rule for node ids: 1-64 characters `[A-Za-z0-9._-]` (they appear in shard maps, metrics
/// labels and file names).
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NODE_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// What a node says about itself every heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeHello {
    /// Stable node id from the node's config (shard maps refer to it).
    pub node_id: String,
    /// The QUIC address coordinators reach this node at.
    pub addr: String,
    /// The cluster's join token: a shared secret on top of mutual TLS.
    pub join_token: String,
    /// Random, chosen when the node's data directory was first created. A node that comes back
    /// with another incarnation lost its disk: the replicas it held are gone, and the control
    /// plane stops assigning them to it (their ids are never reused).
    pub incarnation: u128,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// A node's heartbeat; the first one registers the node. Only the Raft leader answers it.
    Heartbeat(NodeHello),
    /// Coordinator-to-coordinator message, opaque here.
    Peer(Vec<u8>),
}

impl ControlRequest {
    pub fn kind(&self) -> &'static str {
        match self {
            ControlRequest::Heartbeat(_) => "heartbeat",
            ControlRequest::Peer(_) => "peer",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlResponse {
    /// Every shard the node should host, read linearizably from the control plane, and the id
    /// of the cluster that says so (a node only ever follows the cluster it first joined).
    Assignments {
        cluster_id: u128,
        shards: Vec<ShardSpec>,
        /// `(node id, QUIC address)` of every registered node: where the replicas of a shard
        /// reach each other.
        nodes: Vec<(String, String)>,
    },
    /// This coordinator is not the leader; try the leader's QUIC address if known.
    NotLeader { leader: Option<String> },
    /// Answer to a [`ControlRequest::Peer`].
    Peer(Vec<u8>),
    /// The join token did not match.
    Unauthorized,
    /// The request could not be served (no leader yet, storage failure): retry later.
    Unavailable(String),
    /// The request bytes were refused before reaching a handler.
    Rejected(NodeError),
}
