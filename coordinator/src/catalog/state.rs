//! [`CatalogState`], the control plane's deterministic state machine, and the commands it applies.

use std::collections::BTreeMap;

use quiver_proto::ShardSpec;
use serde::{Deserialize, Serialize};

use super::{BucketRecord, CatalogError, IndexMode, IndexRecord, NewIndex, NodeRecord};

/// Service limits (reference §4.1).
pub const MAX_BUCKETS: usize = 10_000;
pub const MAX_INDEXES_PER_BUCKET: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CatalogCommand {
    CreateBucket(BucketRecord),
    DeleteBucket {
        name: String,
    },
    /// Creates an index; the catalog numbers its shards and gives their replicas new ids.
    CreateIndex(NewIndex),
    DeleteIndex {
        bucket: String,
        name: String,
    },
    /// Sets (`Some`) or removes (`None`) a bucket's policy.
    SetBucketPolicy {
        bucket: String,
        policy: Option<String>,
    },
    /// Replaces the tags of a bucket (`index: None`) or an index.
    SetTags {
        bucket: String,
        index: Option<String>,
        tags: BTreeMap<String, String>,
    },
    SetBucketDefaultIndexMode {
        bucket: String,
        mode: IndexMode,
    },
    SetIndexMode {
        bucket: String,
        index: String,
        mode: IndexMode,
    },
    /// Adds a node or updates its address and incarnation; the node is up afterwards.
    RegisterNode {
        id: String,
        addr: String,
        incarnation: u128,
    },
    /// Marks a registered node up or down.
    SetNodeUp {
        id: String,
        up: bool,
    },
    /// Names the cluster, once: later attempts change nothing.
    SetClusterId(u128),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RowChange {
    PutBucket(BucketRecord),
    DeleteBucket(String),
    PutIndex(IndexRecord),
    DeleteIndex(String, String),
    PutNode(NodeRecord),
    SetClusterId(u128),
    SetNextReplicaId(u64),
}

/// How many proposal results the state remembers for idempotent retries.
pub const REMEMBERED_PROPOSALS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogState {
    buckets: BTreeMap<String, BucketRecord>,
    indexes: BTreeMap<(String, String), IndexRecord>,
    nodes: BTreeMap<String, NodeRecord>,
    /// The id the next replica gets. Only ever grows (ids of deleted indexes are not handed out
    /// again); starts at 1, so `ReplicaId(0)` is never a replica.
    next_replica_id: u64,
    /// Random id chosen when the first node joins; nodes refuse assignments from another cluster.
    cluster_id: Option<u128>,
    /// Results of the last [`REMEMBERED_PROPOSALS`] proposals by id, oldest first in `order`.
    results: BTreeMap<u128, Result<(), CatalogError>>,
    order: std::collections::VecDeque<u128>,
}

impl Default for CatalogState {
    fn default() -> Self {
        CatalogState {
            buckets: BTreeMap::new(),
            indexes: BTreeMap::new(),
            nodes: BTreeMap::new(),
            next_replica_id: 1,
            cluster_id: None,
            results: BTreeMap::new(),
            order: std::collections::VecDeque::new(),
        }
    }
}

impl CatalogState {
    fn index_count(&self, bucket: &str) -> usize {
        self.indexes_of(bucket).count()
    }

    fn indexes_of<'a>(&'a self, bucket: &'a str) -> impl Iterator<Item = &'a IndexRecord> + 'a {
        self.indexes
            .range((bucket.to_owned(), String::new())..)
            .take_while(move |((b, _), _)| b == bucket)
            .map(|(_, index)| index)
    }

    /// The row change that rewrites an existing bucket with `change` applied.
    fn update_bucket(
        &self,
        bucket: &str,
        change: impl FnOnce(&mut BucketRecord),
    ) -> Result<Vec<RowChange>, CatalogError> {
        let mut record = self
            .buckets
            .get(bucket)
            .cloned()
            .ok_or(CatalogError::BucketNotFound)?;
        change(&mut record);
        Ok(vec![RowChange::PutBucket(record)])
    }

    /// The row change that rewrites an existing index with `change` applied.
    fn update_index(
        &self,
        bucket: String,
        index: String,
        change: impl FnOnce(&mut IndexRecord),
    ) -> Result<Vec<RowChange>, CatalogError> {
        let mut record = self
            .indexes
            .get(&(bucket, index))
            .cloned()
            .ok_or(CatalogError::IndexNotFound)?;
        change(&mut record);
        Ok(vec![RowChange::PutIndex(record)])
    }

    /// Checks `command` and returns the row changes it makes. Pure: changes nothing.
    pub fn plan(&self, command: CatalogCommand) -> Result<Vec<RowChange>, CatalogError> {
        match command {
            CatalogCommand::CreateBucket(bucket) => {
                if self.buckets.contains_key(&bucket.name) {
                    return Err(CatalogError::BucketExists);
                }
                if self.buckets.len() >= MAX_BUCKETS {
                    return Err(CatalogError::TooManyBuckets(MAX_BUCKETS));
                }
                Ok(vec![RowChange::PutBucket(bucket)])
            }
            CatalogCommand::DeleteBucket { name } => {
                if !self.buckets.contains_key(&name) {
                    return Err(CatalogError::BucketNotFound);
                }
                if self.index_count(&name) > 0 {
                    return Err(CatalogError::BucketNotEmpty);
                }
                Ok(vec![RowChange::DeleteBucket(name)])
            }
            CatalogCommand::CreateIndex(index) => {
                if !self.buckets.contains_key(&index.bucket) {
                    return Err(CatalogError::BucketNotFound);
                }
                if self
                    .indexes
                    .contains_key(&(index.bucket.clone(), index.name.clone()))
                {
                    return Err(CatalogError::IndexExists);
                }
                if self.index_count(&index.bucket) >= MAX_INDEXES_PER_BUCKET {
                    return Err(CatalogError::TooManyIndexes(MAX_INDEXES_PER_BUCKET));
                }
                if let Some(problem) = index.shard_map_error() {
                    return Err(CatalogError::InvalidShardMap(problem.into()));
                }
                let mut next_replica_id = self.next_replica_id;
                let nodes = &self.nodes;
                let record = index.into_record(&mut next_replica_id, |node| {
                    nodes
                        .get(node)
                        .map(|record| record.incarnation)
                        .unwrap_or(0)
                });
                Ok(vec![
                    RowChange::PutIndex(record),
                    RowChange::SetNextReplicaId(next_replica_id),
                ])
            }
            CatalogCommand::DeleteIndex { bucket, name } => {
                if !self.indexes.contains_key(&(bucket.clone(), name.clone())) {
                    return Err(CatalogError::IndexNotFound);
                }
                Ok(vec![RowChange::DeleteIndex(bucket, name)])
            }
            CatalogCommand::SetBucketPolicy { bucket, policy } => {
                self.update_bucket(&bucket, |record| record.policy = policy)
            }
            CatalogCommand::SetTags {
                bucket,
                index: None,
                tags,
            } => self.update_bucket(&bucket, |record| record.tags = tags),
            CatalogCommand::SetTags {
                bucket,
                index: Some(index),
                tags,
            } => self.update_index(bucket, index, |record| record.tags = tags),
            CatalogCommand::SetBucketDefaultIndexMode { bucket, mode } => {
                self.update_bucket(&bucket, |record| record.default_index_mode = mode)
            }
            CatalogCommand::SetIndexMode {
                bucket,
                index,
                mode,
            } => self.update_index(bucket, index, |record| record.index_mode = mode),
            CatalogCommand::RegisterNode {
                id,
                addr,
                incarnation,
            } => Ok(vec![RowChange::PutNode(NodeRecord {
                id,
                addr,
                up: true,
                incarnation,
            })]),
            CatalogCommand::SetNodeUp { id, up } => {
                let mut record = self
                    .nodes
                    .get(&id)
                    .cloned()
                    .ok_or(CatalogError::NodeNotFound(id))?;
                record.up = up;
                Ok(vec![RowChange::PutNode(record)])
            }
            CatalogCommand::SetClusterId(id) => Ok(match self.cluster_id {
                Some(_) => vec![],
                None => vec![RowChange::SetClusterId(id)],
            }),
        }
    }

    /// Plans and applies `command` as proposal `id`. A proposal applied before (the same id,
    /// retried after an unknown outcome) answers its first result and changes nothing; id 0 is
    /// never remembered. Deterministic, as a Raft state machine must be.
    pub fn apply(&mut self, id: u128, command: CatalogCommand) -> Result<(), CatalogError> {
        if let Some(result) = self.results.get(&id) {
            return result.clone();
        }
        let result = self.plan(command).map(|rows| self.apply_rows(rows));
        if id != 0 {
            self.results.insert(id, result.clone());
            self.order.push_back(id);
            while self.order.len() > REMEMBERED_PROPOSALS {
                if let Some(oldest) = self.order.pop_front() {
                    self.results.remove(&oldest);
                }
            }
        }
        result
    }

    pub fn apply_rows(&mut self, rows: Vec<RowChange>) {
        for row in rows {
            match row {
                RowChange::PutBucket(bucket) => {
                    self.buckets.insert(bucket.name.clone(), bucket);
                }
                RowChange::DeleteBucket(name) => {
                    self.buckets.remove(&name);
                }
                RowChange::PutIndex(index) => {
                    self.indexes
                        .insert((index.bucket.clone(), index.name.clone()), index);
                }
                RowChange::DeleteIndex(bucket, name) => {
                    self.indexes.remove(&(bucket, name));
                }
                RowChange::PutNode(node) => {
                    self.nodes.insert(node.id.clone(), node);
                }
                RowChange::SetClusterId(id) => {
                    self.cluster_id = Some(id);
                }
                RowChange::SetNextReplicaId(id) => {
                    self.next_replica_id = id;
                }
            }
        }
    }

    pub fn cluster_id(&self) -> Option<u128> {
        self.cluster_id
    }

    pub fn node(&self, id: &str) -> Option<&NodeRecord> {
        self.nodes.get(id)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values()
    }

    /// Every index of every bucket.
    pub fn all_indexes(&self) -> impl Iterator<Item = &IndexRecord> {
        self.indexes.values()
    }

    /// Shard replicas placed on each registered node (nodes without any included, with 0).
    pub fn shard_counts(&self) -> BTreeMap<String, usize> {
        let mut counts: BTreeMap<String, usize> =
            self.nodes.keys().map(|id| (id.clone(), 0)).collect();
        let replicas = self
            .indexes
            .values()
            .flat_map(|index| &index.shards)
            .flat_map(|placement| &placement.replicas);
        for replica in replicas {
            *counts.entry(replica.node.clone()).or_default() += 1;
        }
        counts
    }

    /// Everything `node` should host: the specs of the shards with a replica on it, placed on
    /// its current incarnation. A replica placed on an earlier incarnation was on a disk the node
    /// lost: it is never assigned again (its group goes on without it until it is replaced), so
    /// a wiped node never rejoins a group under an old replica id with a forgotten vote.
    pub fn assignments(&self, node: &str) -> Vec<ShardSpec> {
        let Some(incarnation) = self.nodes.get(node).map(|record| record.incarnation) else {
            return Vec::new();
        };
        self.indexes
            .values()
            .flat_map(|index| {
                index
                    .shards
                    .iter()
                    .filter(move |placement| {
                        placement.replicas.iter().any(|replica| {
                            replica.node == node && replica.incarnation == incarnation
                        })
                    })
                    .map(move |placement| index.shard_spec(placement))
            })
            .collect()
    }

    /// `(node id, address)` of every registered node.
    pub fn node_directory(&self) -> Vec<(String, String)> {
        self.nodes
            .values()
            .map(|node| (node.id.clone(), node.addr.clone()))
            .collect()
    }

    pub fn bucket(&self, name: &str) -> Option<&BucketRecord> {
        self.buckets.get(name)
    }

    pub fn buckets(&self) -> impl Iterator<Item = &BucketRecord> {
        self.buckets.values()
    }

    pub fn index(&self, bucket: &str, name: &str) -> Option<&IndexRecord> {
        self.indexes.get(&(bucket.to_owned(), name.to_owned()))
    }

    pub fn indexes(&self, bucket: &str) -> Vec<IndexRecord> {
        self.indexes_of(bucket).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use quiver_proto::{DistanceMetric, HashRange, IndexUid};

    use super::*;
    use crate::catalog::{EncryptionConfig, NewShard};

    fn bucket(name: &str) -> BucketRecord {
        BucketRecord {
            name: name.into(),
            creation_time: 1.0,
            encryption: EncryptionConfig::default(),
            tags: BTreeMap::new(),
            default_index_mode: IndexMode::Enhanced,
            policy: None,
        }
    }

    /// An index with one shard per node in `nodes` (one replica each).
    fn index_on(bucket: &str, name: &str, nodes: &[&str]) -> NewIndex {
        let count = nodes.len() as u32;
        NewIndex {
            bucket: bucket.into(),
            name: name.into(),
            uid: IndexUid(7),
            creation_time: 2.0,
            dimension: 3,
            metric: DistanceMetric::Cosine,
            non_filterable_keys: None,
            encryption: None,
            tags: BTreeMap::new(),
            index_mode: IndexMode::Enhanced,
            shards: (0..count)
                .zip(nodes)
                .map(|(shard, node)| NewShard {
                    range: HashRange::split(shard, count),
                    nodes: vec![(*node).into()],
                })
                .collect(),
        }
    }

    fn index(bucket: &str, name: &str) -> NewIndex {
        index_on(bucket, name, &["n1"])
    }

    fn replica_ids(state: &CatalogState, bucket: &str, name: &str) -> Vec<(u64, u64)> {
        let index = state.index(bucket, name).expect("index");
        index
            .shards
            .iter()
            .flat_map(|shard| shard.replicas.iter().map(|r| (r.id.0, shard.epoch)))
            .collect()
    }

    #[test]
    fn replica_ids_come_from_one_counter_and_are_never_reused() {
        let mut state = CatalogState::default();
        let mut run = |command| state.apply(0, command).expect("apply");
        run(CatalogCommand::CreateBucket(bucket("b")));
        run(CatalogCommand::CreateIndex(index_on(
            "b",
            "i",
            &["n1", "n2"],
        )));
        run(CatalogCommand::DeleteIndex {
            bucket: "b".into(),
            name: "i".into(),
        });
        run(CatalogCommand::CreateIndex(index_on(
            "b",
            "i",
            &["n1", "n2"],
        )));
        run(CatalogCommand::CreateIndex(index_on("b", "j", &["n1"])));
        // Ids start at 1, the deleted index's 1 and 2 are not handed out again, epochs start at 1.
        assert_eq!(replica_ids(&state, "b", "i"), vec![(3, 1), (4, 1)]);
        assert_eq!(replica_ids(&state, "b", "j"), vec![(5, 1)]);
        let shard = &state.index("b", "i").expect("index").shards[1];
        assert_eq!(shard.shard, 1);
        assert_eq!(shard.replicas[0].node, "n2");
        // The counter is part of the state, so it survives a snapshot round trip.
        let restored: CatalogState =
            postcard::from_bytes(&postcard::to_stdvec(&state).expect("encode")).expect("decode");
        assert_eq!(restored.next_replica_id, 6);
    }

    #[test]
    fn a_shard_map_must_partition_the_hash_space_with_distinct_replica_nodes() {
        let mut state = CatalogState::default();
        state
            .apply(0, CatalogCommand::CreateBucket(bucket("b")))
            .expect("bucket");
        let mut gap = index_on("b", "i", &["n1", "n2"]);
        gap.shards[1].range.start += 1;
        let mut no_replica = index("b", "i");
        no_replica.shards[0].nodes.clear();
        let mut same_node = index("b", "i");
        same_node.shards[0].nodes.push("n1".into());
        let mut no_shards = index("b", "i");
        no_shards.shards.clear();
        for bad in [gap, no_replica, same_node, no_shards] {
            assert!(matches!(
                state.plan(CatalogCommand::CreateIndex(bad)),
                Err(CatalogError::InvalidShardMap(_))
            ));
        }
    }

    #[test]
    fn a_node_is_assigned_the_shards_it_has_a_replica_of() {
        let mut state = CatalogState::default();
        let register = |state: &mut CatalogState, node: &str, incarnation: u128| {
            state
                .apply(
                    0,
                    CatalogCommand::RegisterNode {
                        id: node.into(),
                        addr: "127.0.0.1:1".into(),
                        incarnation,
                    },
                )
                .expect("register");
        };
        for node in ["n1", "n2", "n3"] {
            register(&mut state, node, 1);
        }
        state
            .apply(0, CatalogCommand::CreateBucket(bucket("b")))
            .expect("bucket");
        let mut replicated = index_on("b", "i", &["n1", "n2"]);
        replicated.shards[0].nodes.push("n3".into());
        state
            .apply(0, CatalogCommand::CreateIndex(replicated))
            .expect("index");
        let shards = |state: &CatalogState, node: &str| -> Vec<u32> {
            state
                .assignments(node)
                .iter()
                .map(|spec| spec.id.shard)
                .collect()
        };
        assert_eq!(shards(&state, "n1"), vec![0]);
        assert_eq!(shards(&state, "n2"), vec![1]);
        assert_eq!(shards(&state, "n3"), vec![0]);
        assert!(shards(&state, "n4").is_empty());
        // n3 comes back with another incarnation (its disk was lost): its replica is gone, and
        // is never assigned to it again, so it never rejoins the group under the old id.
        register(&mut state, "n3", 2);
        assert!(shards(&state, "n3").is_empty());
        assert_eq!(shards(&state, "n1"), vec![0]);
    }

    #[test]
    fn a_retried_proposal_answers_its_first_result() {
        let mut state = CatalogState::default();
        assert!(state
            .apply(7, CatalogCommand::CreateBucket(bucket("b1")))
            .is_ok());
        // The same proposal again (a retry after a timeout): the first answer, no Conflict.
        assert!(state
            .apply(7, CatalogCommand::CreateBucket(bucket("b1")))
            .is_ok());
        // A new proposal with the same command is a new request.
        assert!(matches!(
            state.apply(8, CatalogCommand::CreateBucket(bucket("b1"))),
            Err(CatalogError::BucketExists)
        ));
        // Only the last REMEMBERED_PROPOSALS are kept: with 7, 8 and REMEMBERED_PROPOSALS - 2
        // more, 7 is still remembered; one more and it is forgotten.
        let forget = |state: &mut CatalogState, ids: std::ops::Range<u128>| {
            for id in ids {
                let _ = state.apply(
                    id,
                    CatalogCommand::DeleteBucket {
                        name: "none".into(),
                    },
                );
            }
        };
        let last = 100 + REMEMBERED_PROPOSALS as u128 - 2;
        forget(&mut state, 100..last);
        assert!(state
            .apply(7, CatalogCommand::CreateBucket(bucket("b1")))
            .is_ok());
        forget(&mut state, last..last + 1);
        assert!(matches!(
            state.apply(7, CatalogCommand::CreateBucket(bucket("b1"))),
            Err(CatalogError::BucketExists)
        ));
    }

    #[test]
    fn state_machine_rules() {
        let mut state = CatalogState::default();
        let rows = state
            .plan(CatalogCommand::CreateBucket(bucket("b1")))
            .expect("create");
        state.apply_rows(rows);
        assert!(matches!(
            state.plan(CatalogCommand::CreateBucket(bucket("b1"))),
            Err(CatalogError::BucketExists)
        ));
        assert!(matches!(
            state.plan(CatalogCommand::CreateIndex(index("nope", "i"))),
            Err(CatalogError::BucketNotFound)
        ));
        let rows = state
            .plan(CatalogCommand::CreateIndex(index("b1", "i1")))
            .expect("index");
        state.apply_rows(rows);
        assert!(matches!(
            state.plan(CatalogCommand::DeleteBucket { name: "b1".into() }),
            Err(CatalogError::BucketNotEmpty)
        ));
        // An index in a bucket whose name extends b1 must not count for b1.
        let rows = state
            .plan(CatalogCommand::CreateBucket(bucket("b1x")))
            .expect("create");
        state.apply_rows(rows);
        let rows = state
            .plan(CatalogCommand::CreateIndex(index("b1x", "i1")))
            .expect("index");
        state.apply_rows(rows);
        assert_eq!(state.indexes("b1").len(), 1);
        let rows = state
            .plan(CatalogCommand::DeleteIndex {
                bucket: "b1".into(),
                name: "i1".into(),
            })
            .expect("delete");
        state.apply_rows(rows);
        let rows = state
            .plan(CatalogCommand::DeleteBucket { name: "b1".into() })
            .expect("delete");
        state.apply_rows(rows);
        assert!(state.bucket("b1").is_none());
    }

    #[test]
    fn updates_change_the_record_they_name_and_nothing_else() {
        let mut state = CatalogState::default();
        let run = |state: &mut CatalogState, command| state.apply(0, command);
        run(&mut state, CatalogCommand::CreateBucket(bucket("b"))).expect("bucket");
        run(&mut state, CatalogCommand::CreateBucket(bucket("c"))).expect("bucket");
        run(&mut state, CatalogCommand::CreateIndex(index("b", "i"))).expect("index");
        let tags: BTreeMap<String, String> = [("k".to_owned(), "v".to_owned())].into();
        for command in [
            CatalogCommand::SetBucketPolicy {
                bucket: "b".into(),
                policy: Some("{}".into()),
            },
            CatalogCommand::SetTags {
                bucket: "b".into(),
                index: None,
                tags: tags.clone(),
            },
            CatalogCommand::SetBucketDefaultIndexMode {
                bucket: "b".into(),
                mode: IndexMode::Classic,
            },
            CatalogCommand::SetTags {
                bucket: "b".into(),
                index: Some("i".into()),
                tags: tags.clone(),
            },
            CatalogCommand::SetIndexMode {
                bucket: "b".into(),
                index: "i".into(),
                mode: IndexMode::Classic,
            },
        ] {
            run(&mut state, command).expect("update");
        }
        let b = state.bucket("b").expect("bucket b");
        assert_eq!(b.policy.as_deref(), Some("{}"));
        assert_eq!(b.tags, tags);
        assert_eq!(b.default_index_mode, IndexMode::Classic);
        let i = state.index("b", "i").expect("index i");
        assert_eq!(i.tags, tags);
        assert_eq!(i.index_mode, IndexMode::Classic);
        assert_eq!(state.bucket("c"), Some(&bucket("c")));
        let names: Vec<&str> = state.buckets().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["b", "c"]);
        // Updates of what does not exist.
        assert!(matches!(
            run(
                &mut state,
                CatalogCommand::SetBucketPolicy {
                    bucket: "none".into(),
                    policy: None,
                }
            ),
            Err(CatalogError::BucketNotFound)
        ));
        assert!(matches!(
            run(
                &mut state,
                CatalogCommand::SetIndexMode {
                    bucket: "b".into(),
                    index: "none".into(),
                    mode: IndexMode::Enhanced,
                }
            ),
            Err(CatalogError::IndexNotFound)
        ));
    }

    #[test]
    fn nodes_cluster_id_and_shard_counts() {
        let mut state = CatalogState::default();
        assert_eq!(state.cluster_id(), None);
        state
            .apply(0, CatalogCommand::SetClusterId(42))
            .expect("id");
        // The first cluster id stays.
        state
            .apply(0, CatalogCommand::SetClusterId(43))
            .expect("id");
        assert_eq!(state.cluster_id(), Some(42));
        for (node, port) in [("n1", 1), ("n2", 2), ("n3", 3)] {
            state
                .apply(
                    0,
                    CatalogCommand::RegisterNode {
                        id: node.into(),
                        addr: format!("127.0.0.1:{port}"),
                        incarnation: 1,
                    },
                )
                .expect("register");
        }
        state
            .apply(
                0,
                CatalogCommand::SetNodeUp {
                    id: "n2".into(),
                    up: false,
                },
            )
            .expect("down");
        let n2 = state.node("n2").expect("n2");
        assert_eq!((n2.addr.as_str(), n2.up), ("127.0.0.1:2", false));
        assert!(state.node("n1").expect("n1").up);
        assert!(state.node("n4").is_none());
        assert_eq!(
            state.node_directory(),
            vec![
                ("n1".to_owned(), "127.0.0.1:1".to_owned()),
                ("n2".to_owned(), "127.0.0.1:2".to_owned()),
                ("n3".to_owned(), "127.0.0.1:3".to_owned()),
            ]
        );
        state
            .apply(0, CatalogCommand::CreateBucket(bucket("b")))
            .expect("bucket");
        let mut replicated = index_on("b", "i", &["n1", "n2"]);
        replicated.shards[0].nodes.push("n4".into());
        state
            .apply(0, CatalogCommand::CreateIndex(replicated))
            .expect("index");
        state
            .apply(0, CatalogCommand::CreateIndex(index_on("b", "j", &["n1"])))
            .expect("index");
        let names: Vec<&str> = state.all_indexes().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["i", "j"]);
        // n3 has none (listed with 0), n4 is not registered but holds a replica.
        assert_eq!(
            state.shard_counts(),
            BTreeMap::from([
                ("n1".to_owned(), 2),
                ("n2".to_owned(), 1),
                ("n3".to_owned(), 0),
                ("n4".to_owned(), 1),
            ])
        );
    }
}
