//! The catalog's records: what the control plane stores about buckets, indexes (with their shard
//! maps) and storage nodes. These types are replicated through the Raft log and snapshots, so
//! their encoding is a durable format: changing a field or variant needs a new
//! [`super::format::CATALOG_FORMAT_VERSION`].

use std::collections::BTreeMap;

use quiver_proto::{
    DistanceMetric, HashRange, IndexUid, ReplicaId, ShardId, ShardMember, ShardSpec,
};
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

/// One copy of a shard, on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// Allocated by the catalog from [`super::CatalogState`]'s counter; never reused.
    pub id: ReplicaId,
    pub node: String,
    /// The node's incarnation when the replica was placed: the replica lives on that
    /// incarnation's disk, and is gone when the node comes back with another one.
    pub incarnation: u128,
}

/// Where one shard of an index lives: the hash range it owns and its replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardPlacement {
    /// The shard's number inside its index (part of its [`ShardId`]).
    pub shard: u32,
    pub range: HashRange,
    /// The voters of the shard's Raft group; never empty, on distinct nodes.
    pub replicas: Vec<Replica>,
    /// Version of `range` and `replicas`: 1 when the shard is created, increased by every change
    /// of either (a replica added, moved or removed, a split), so that a node or coordinator
    /// acting on an older placement can tell it is stale. Nothing changes a placement yet, so
    /// every epoch is 1 today.
    pub epoch: u64,
}

impl ShardPlacement {
    /// Whether one of the shard's replicas is on `node`.
    pub fn has_replica_on(&self, node: &str) -> bool {
        self.replicas.iter().any(|replica| replica.node == node)
    }
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

/// One shard of an index being created: its hash range and the nodes of its replicas. The catalog
/// gives each replica its id when it applies [`super::CatalogCommand::CreateIndex`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewShard {
    pub range: HashRange,
    pub nodes: Vec<String>,
}

/// An index to create: an [`IndexRecord`] whose shards are not placed yet. Shard `i` of the
/// record is `shards[i]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewIndex {
    pub bucket: String,
    pub name: String,
    pub uid: IndexUid,
    pub creation_time: f64,
    pub dimension: u32,
    pub metric: DistanceMetric,
    pub non_filterable_keys: Option<Vec<String>>,
    pub encryption: Option<EncryptionConfig>,
    pub tags: BTreeMap<String, String>,
    pub index_mode: IndexMode,
    pub shards: Vec<NewShard>,
}

impl NewIndex {
    /// Why this shard map cannot be an index's, if it cannot: its ranges must partition the hash
    /// space (so every key has exactly one owner) and each shard needs replicas on distinct nodes.
    pub fn shard_map_error(&self) -> Option<&'static str> {
        let ranges: Vec<HashRange> = self.shards.iter().map(|shard| shard.range).collect();
        if !HashRange::is_partition(&ranges) {
            return Some("the shard ranges do not partition the hash space");
        }
        for shard in &self.shards {
            if shard.nodes.is_empty() {
                return Some("a shard has no replica");
            }
            let distinct: std::collections::BTreeSet<&String> = shard.nodes.iter().collect();
            if distinct.len() != shard.nodes.len() {
                return Some("two replicas of a shard are on one node");
            }
        }
        None
    }

    /// The index's record: shard `i` gets number `i`, epoch 1, and its replicas the ids
    /// `*next_replica_id`, `*next_replica_id + 1`, ... (the counter is advanced past them) and
    /// their nodes' current incarnations.
    pub fn into_record(
        self,
        next_replica_id: &mut u64,
        incarnation: impl Fn(&str) -> u128,
    ) -> IndexRecord {
        let shards = (0u32..)
            .zip(self.shards)
            .map(|(shard, new)| ShardPlacement {
                shard,
                range: new.range,
                replicas: new
                    .nodes
                    .into_iter()
                    .map(|node| {
                        let id = ReplicaId(*next_replica_id);
                        *next_replica_id += 1;
                        Replica {
                            id,
                            incarnation: incarnation(&node),
                            node,
                        }
                    })
                    .collect(),
                epoch: 1,
            })
            .collect();
        IndexRecord {
            bucket: self.bucket,
            name: self.name,
            uid: self.uid,
            creation_time: self.creation_time,
            dimension: self.dimension,
            metric: self.metric,
            non_filterable_keys: self.non_filterable_keys,
            encryption: self.encryption,
            tags: self.tags,
            index_mode: self.index_mode,
            shards,
        }
    }
}

/// A storage node as the control plane knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    /// QUIC address of the node.
    pub addr: String,
    /// Whether the node heartbeats (the Raft leader marks it down after missed heartbeats).
    pub up: bool,
    /// The node's incarnation as it last registered (see `NodeHello::incarnation`).
    pub incarnation: u128,
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
            replicas: placement
                .replicas
                .iter()
                .map(|replica| ShardMember {
                    replica: replica.id,
                    node: replica.node.clone(),
                })
                .collect(),
        }
    }
}
