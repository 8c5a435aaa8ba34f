//! The Quiver node: hosts shards and answers the RPCs of [`quiver_proto::NodeRequest`].
//!
//! Layers, from the wire inwards:
//! - [`agent`]: heartbeats to the control plane; creates and drops shards as it assigns them.
//! - [`service`]: [`service::NodeService`], the RPC entry point (served over QUIC by
//!   `quiver_net::server`): shard registry, admission control, dispatch, reconciliation.
//! - [`supervisor`]: one ractor actor per shard under a supervisor that restarts failed shards.
//! - [`replication`]: each shard is a replica of its own Raft group (openraft): the node's shared
//!   log, the shard as state machine, snapshots, and Raft RPCs between nodes.
//! - [`shard`]: the shard state machine (apply write batches, get, list, search).
//! - [`store`]: the shard's redb database, fsynced before a batch is acknowledged.
//! - [`index`]: the in-memory indexes: FAISS (the only module with `unsafe`), metadata filters
//!   (roaring bitmaps), exact distance kernels.

pub mod agent;
pub mod index;
pub mod replication;
pub mod service;
pub mod shard;
pub mod store;
pub mod supervisor;
