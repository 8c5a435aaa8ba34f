//! The Quiver coordinator: the S3 Vectors HTTP API in front of the shard nodes.
//!
//! - [`api`]: axum routes and one function per S3 Vectors operation (the only code that knows the
//!   S3 Vectors JSON names).
//! - [`auth`]: SigV4 verification and IAM-style policy evaluation.
//! - [`validate`]: pure validation of names, ARNs, vectors, metadata and filters.
//! - [`catalog`]: buckets, indexes and shard maps as a deterministic state machine, behind the
//!   [`catalog::Catalog`] interface, with its versioned durable format.
//! - [`dataplane`]: key -> shard routing by hash range, fan-out over QUIC, k-way merge.
//! - [`error`]: the S3 Vectors error shapes and the one mapping from internal errors to them.
//! - [`tokens`]: tamper-proof pagination tokens and the QueryVectors cursor cache.
//! - [`throttle`]: per-index rate limits (429).
//! - [`cluster`]: the control plane: openraft over QUIC, node liveness, the admin view.
//! - [`placement`]: which node gets each shard of a new index.
//! - [`metrics`]: Prometheus metrics.
//! - [`config`]: the TOML configuration of `quiver coordinator` and `quiver node`.
//! - [`process`]: starting a coordinator or a node (shared by every role and by `quiver dev`).
//! - [`dev`]: `quiver dev`, the embedded single-process cluster.
//! - [`admin`]: `quiver admin`, the operator's commands over mutual TLS.

pub mod admin;
pub mod api;
pub mod auth;
pub mod catalog;
pub mod cluster;
pub mod config;
pub mod dataplane;
pub mod dev;
pub mod error;
pub mod metrics;
pub mod placement;
pub mod process;
pub mod throttle;
pub mod tokens;
pub mod validate;
