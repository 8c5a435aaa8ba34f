//! The catalog: vector buckets, indexes, each index's shard map, and the storage nodes.
//!
//! [`CatalogState`] is a deterministic state machine: [`CatalogState::plan`] checks a
//! [`CatalogCommand`] against the state and turns it into row changes without touching anything;
//! [`CatalogState::apply_rows`] applies them. It is the state machine of the control-plane Raft
//! group ([`crate::cluster`]), which replicates the commands. [`Catalog`] is the interface the API
//! uses.
//!
//! - `records.rs`: the records (buckets, indexes and their shard maps, nodes).
//! - `state.rs`: [`CatalogState`] and [`CatalogCommand`].
//! - [`format`](mod@format): how they are encoded durably (versioned, with golden-bytes tests).

pub mod format;
mod records;
mod state;

pub use records::*;
pub use state::*;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum CatalogError {
    #[error("bucket exists")]
    BucketExists,
    #[error("index exists")]
    IndexExists,
    #[error("bucket not found")]
    BucketNotFound,
    #[error("index not found")]
    IndexNotFound,
    #[error("bucket not empty")]
    BucketNotEmpty,
    #[error("too many buckets (limit {0})")]
    TooManyBuckets(usize),
    #[error("too many indexes (limit {0})")]
    TooManyIndexes(usize),
    #[error("node {0} is not registered")]
    NodeNotFound(String),
    /// A CreateIndex whose shard map cannot be an index's (a bug in the proposer).
    #[error("invalid shard map: {0}")]
    InvalidShardMap(String),
    /// The control plane cannot decide right now (no leader, leader unreachable): retry.
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
}

/// What the API needs from the catalog.
pub trait Catalog: Send + Sync + 'static {
    /// Executes a command through the control plane; returns once it is committed (durable on
    /// a quorum) and applied to this coordinator's state. On error nothing changed, except for
    /// [`CatalogError::Unavailable`] after a timeout, when the outcome is unknown.
    /// `request_id` joins the logs of every coordinator the command passes through.
    fn execute<'a>(
        &'a self,
        request_id: &'a str,
        command: CatalogCommand,
    ) -> BoxFuture<'a, Result<(), CatalogError>>;
    /// The current state, read-locked for the guard's lifetime (keep it short, never across an
    /// await).
    fn state(&self) -> parking_lot::RwLockReadGuard<'_, CatalogState>;
    /// A linearizable read barrier: returns once this coordinator's state includes every
    /// command committed before the call.
    fn sync(&self) -> BoxFuture<'_, Result<(), CatalogError>>;
}
