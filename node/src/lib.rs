//! The Quiver node: hosts shards and answers the RPCs of [`quiver_proto::NodeRequest`].
//!
//! Layers, from the wire inwards:
//! - [`agent`]: heartbeats to the control plane; creates and drops shards as it assigns them.
//! - [`service`]: [`service::NodeService`], the RPC entry point (served over QUIC by
//!   `quiver_net::server`): shard registry, admission control, dispatch, reconciliation.
//! - [`supervisor`]: one ractor actor per shard under a supervisor that restarts failed shards.
//! - [`shard`]: the shard state machine (apply write batches, get, list, search).
//! - [`store`]: the shard's redb database, fsynced before a batch is acknowledged.
//! - [`vector_index`]: the FAISS wrapper — the only module with `unsafe`.
//! - [`distance`]: exact distance kernels (vectorizable).
//! - [`filter_index`]: the in-memory metadata filter index (roaring bitmaps).

pub mod agent;
pub mod distance;
pub mod filter_index;
pub mod service;
pub mod shard;
pub mod store;
pub mod supervisor;
pub mod vector_index;
