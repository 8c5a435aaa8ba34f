//! The control-plane Raft group's type configuration.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::catalog::{CatalogCommand, CatalogError};

/// A coordinator as a member of the Raft group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorNode {
    /// QUIC address for Raft and the rest of the cluster traffic.
    pub cluster_addr: String,
    /// HTTP address of the S3 Vectors API (for operators).
    pub http_addr: String,
}

/// What applying one command answered: the same on every coordinator.
pub type CommandResult = Result<(), CatalogError>;

openraft::declare_raft_types!(
    pub TypeConfig:
        D = CatalogCommand,
        R = CommandResult,
        NodeId = u64,
        Node = CoordinatorNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type StorageError = openraft::StorageError<u64>;
pub type LogId = openraft::LogId<u64>;
