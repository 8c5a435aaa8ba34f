//! QUIC RPC between Quiver processes: mutual TLS with roles in certificates, one bidirectional
//! stream per request, a postcard [`quiver_proto::Envelope`] each way.
//!
//! - [`server`]: the accept loop every process runs, generic over an [`server::RpcService`];
//!   limits, deadlines, draining shutdown.
//! - [`client`]: the [`client::Transport`] trait every caller programs against, [`client::rpc`]
//!   for typed exchanges, and [`client::QuicTransport`] (per-peer connection set-up, `host:port`
//!   names resolved at connect time).
//! - [`connections`]: the bounded table of a server's connections (QUIC here, HTTP in the
//!   `quiver` crate) and which idle one to close when it is full.
//! - [`local`]: an in-process transport for tests; [`fault`]: a fault-injecting wrapper
//!   (partitions, drops, delays).
//! - [`tls`]: the cluster CA, leaf certificates with roles, rustls configurations.

pub mod client;
pub mod connections;
pub mod fault;
pub mod local;
pub mod server;
pub mod tls;

pub use client::{check_peer_addr, rpc, QuicTransport, Transport, TransportError};
