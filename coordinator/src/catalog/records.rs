//! The catalog's records: what the control plane stores about buckets, indexes (with their shard
//! maps) and storage nodes. These types are replicated through the Raft log and snapshots, so
//! their encoding is a durable format.

use std::collections::BTreeMap;

use quiver_proto::{DistanceMetric, HashRange, IndexUid, ShardId, ShardSpec};
use serde::{Deserialize, Serialize};

/// How an index evaluates filters: ENHANCED accepts `$startsWith` and caps a filter at 100
/// constraints. A CLASSIC index may be queried in ENHANCED mode, not the other way round. The S3 names
/// ("CLASSIC", "ENHANCED") belong to the API layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexMode {
    Classic,
    Enhanced,
}

/// Server-side encryption of a bucket or index. The S3 names ("AES256", "aws:kms") belong to the
/// API layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SseType {
    Aes256,
    /// With the key named by [`EncryptionConfig::kms_key_arn`].
    Kms,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncryptionConfig {
    pub sse_type: SseType,
    pub kms_key_arn: Option<String>,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        EncryptionConfig {
            sse_type: SseType::Aes256,
            kms_key_arn: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BucketRecord {
    pub name: String,
    /// Seconds since the Unix epoch.
    pub creation_time: f64,
    pub encryption: EncryptionConfig,
    pub tags: BTreeMap<String, String>,
    pub default_index_mode: IndexMode,
    /// The bucket policy document (validated JSON text), if one is set.
    pub policy: Option<String>,
}

/// Where one shard of an index lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardPlacement {
    pub shard: u32,
    pub range: HashRange,
    pub node: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexRecord {
    pub bucket: String,
    pub name: String,
    pub uid: IndexUid,
    pub creation_time: f64,
    pub dimension: u32,
    pub metric: DistanceMetric,
    /// `None` when the index was created without a metadata configuration.
    pub non_filterable_keys: Option<Vec<String>>,
    pub encryption: Option<EncryptionConfig>,
    pub tags: BTreeMap<String, String>,
    pub index_mode: IndexMode,
    pub shards: Vec<ShardPlacement>,
}

/// A storage node as the control plane knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    /// QUIC address of the node.
    pub addr: String,
    /// Whether the node heartbeats (the Raft leader marks it down after missed heartbeats).
    pub up: bool,
}

impl IndexRecord {
    pub fn shard_id(&self, placement: &ShardPlacement) -> ShardId {
        ShardId {
            index: self.uid,
            shard: placement.shard,
        }
    }

    /// What a node needs to host one of this index's shards.
    pub fn shard_spec(&self, placement: &ShardPlacement) -> ShardSpec {
        ShardSpec {
            id: self.shard_id(placement),
            dimension: self.dimension,
            metric: self.metric,
            non_filterable_keys: self.non_filterable_keys.clone().unwrap_or_default(),
            range: placement.range,
        }
    }
}
