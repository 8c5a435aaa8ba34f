//! The wire contract between Quiver processes.
//!
//! Pure data: no tokio, no quinn, no faiss. Everything that crosses a QUIC stream is defined here and
//! encoded with postcard inside an [`Envelope`] that carries the protocol version, the request id and
//! the deadline. Both sides decode with a size limit (see [`MAX_FRAME_BYTES`]).

pub mod codec;
pub mod control;
pub mod filter;
pub mod ids;
pub mod merge;
pub mod messages;
pub mod metadata;

pub use codec::{decode, encode, CodecError, Envelope, MAX_FRAME_BYTES, PROTOCOL_VERSION};
pub use control::{valid_node_id, ControlRequest, ControlResponse, NodeHello};
pub use filter::{Filter, FilterValue};
pub use ids::{key_hash, owner, HashRange, IndexUid, ReplicaId, ShardId};
pub use merge::merge_top_k;
pub use messages::*;
pub use metadata::{MetaValue, Metadata};
