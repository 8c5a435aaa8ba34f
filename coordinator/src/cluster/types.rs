//! The control-plane Raft group's type configuration.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::catalog::{CatalogCommand, CatalogError};

/// A command as proposed to the Raft log. `id` makes retries idempotent: a proposal whose id was
/// applied before (a forward that timed out after it committed, then retried) answers the first
/// result instead of applying again. 0 means "do not remember" (single-attempt internal writes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: u128,
    pub command: CatalogCommand,
}

impl Proposal {
    /// A proposal that may be retried: a fresh id.
    pub fn retryable(command: CatalogCommand) -> Self {
        Proposal {
            id: uuid::Uuid::new_v4().as_u128(),
            command,
        }
    }

    /// A proposal made once (its outcome is not looked up again).
    pub fn once(command: CatalogCommand) -> Self {
        Proposal { id: 0, command }
    }
}

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
        D = Proposal,
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
