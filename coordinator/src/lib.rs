//! The Quiver coordinator: the S3 Vectors HTTP API in front of the shard nodes.
//!
//! - [`api`]: the S3 Vectors HTTP API: the `Operation` enum, one dispatch, the request types,
//!   validation, one handler per operation and the response JSON (the only code that knows the
//!   S3 Vectors JSON names).
//! - [`auth`]: SigV4 verification and IAM-style policy evaluation.
//! - [`catalog`]: buckets, indexes and shard maps as a deterministic state machine, behind the
//!   [`catalog::Catalog`] interface, with its versioned durable format.
//! - [`dataplane`]: key -> shard routing by hash range, fan-out over QUIC, k-way merge.
//! - [`error`]: the S3 Vectors error shapes and the one mapping from internal errors to them.
//! - [`tokens`]: tamper-proof pagination tokens and the QueryVectors cursor cache.
//! - [`throttle`]: per-index rate limits (429).
//! - [`cluster`]: the control plane: openraft over QUIC, node liveness, the admin view.
//! - [`placement`]: which node gets each shard of a new index.
//! - [`metrics`]: Prometheus metrics.
//!
//! The `quiver` binary (crate `quiver/`) wires this library into processes.

pub mod api;
pub mod auth;
pub mod catalog;
pub mod cluster;
pub mod dataplane;
pub mod error;
pub mod metrics;
pub mod placement;
pub mod throttle;
pub mod tokens;
