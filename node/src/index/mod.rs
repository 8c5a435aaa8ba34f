//! The in-memory indexes of a shard.
//!
//! - [`vector`]: the FAISS wrapper — the only module with FAISS and `unsafe`.
//! - [`filter`]: per-key roaring bitmaps for metadata filters, and the naive `matches` oracle.
//! - [`distance`]: exact distance kernels (vectorizable).

pub mod distance;
pub mod filter;
pub mod vector;
