//! In-memory stand-ins for what the API sits on: the catalog (the Raft state machine without
//! Raft), one storage node (shards as sorted maps, brute-force search, a naive filter
//! evaluator) and the cluster view.
//!
//! What they do not model: Raft (no leader changes, no forwarding, `sync` is a no-op), node
//! liveness changes other than by a catalog command, durability, FAISS (search here is always
//! exact), shard actors and restarts, admission control and deadlines on the node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use quiver_coordinator::api::ClusterView;
use quiver_coordinator::catalog::{
    BucketRecord, Catalog, CatalogCommand, CatalogError, CatalogState, IndexRecord, NodeRecord,
};
use quiver_coordinator::metrics::Metrics;
use quiver_net::server::RpcService;
use quiver_net::tls::Roles;
use quiver_proto::{
    key_hash, DistanceMetric, Filter, FilterValue, Hit, MetaValue, Metadata, NodeError,
    NodeRequest, NodeResponse, ShardId, ShardSpec, VectorRecord, WriteOp,
};

/// The storage node's id and address in the catalog (and the [`LocalTransport`] peer name).
///
/// [`LocalTransport`]: quiver_net::local::LocalTransport
pub const NODE_ID: &str = "node-1";
pub const NODE_ADDR: &str = "node-1:7000";

/// The catalog as the Raft state machine runs it, minus Raft: every command is one proposal
/// (a fresh id) planned and applied to one [`CatalogState`].
pub struct MemCatalog {
    state: RwLock<CatalogState>,
    next_proposal: AtomicU64,
    /// Every command executed and whether it was applied, in order.
    log: Mutex<Vec<(CatalogCommand, Result<(), CatalogError>)>>,
}

impl MemCatalog {
    /// A catalog with the storage node registered (and up).
    pub fn with_node() -> Arc<MemCatalog> {
        let catalog = MemCatalog {
            state: RwLock::new(CatalogState::default()),
            next_proposal: AtomicU64::new(1),
            log: Mutex::new(Vec::new()),
        };
        catalog
            .apply(CatalogCommand::RegisterNode {
                id: NODE_ID.into(),
                addr: NODE_ADDR.into(),
                incarnation: 7,
            })
            .expect("register the node");
        Arc::new(catalog)
    }

    pub fn apply(&self, command: CatalogCommand) -> Result<(), CatalogError> {
        let id = u128::from(self.next_proposal.fetch_add(1, Ordering::Relaxed));
        let result = self.state.write().apply(id, command.clone());
        self.log.lock().push((command, result.clone()));
        result
    }

    /// The commands executed after the first `from`.
    pub fn commands_since(&self, from: usize) -> Vec<(CatalogCommand, Result<(), CatalogError>)> {
        self.log.lock()[from..].to_vec()
    }

    pub fn executed(&self) -> usize {
        self.log.lock().len()
    }

    /// Everything the API can observe of the catalog (the remembered proposal results aside).
    pub fn view(&self) -> CatalogView {
        let state = self.state.read();
        CatalogView {
            buckets: state.buckets().cloned().collect(),
            indexes: state.all_indexes().cloned().collect(),
            nodes: state.nodes().cloned().collect(),
            cluster_id: state.cluster_id(),
        }
    }

    pub fn index(&self, bucket: &str, name: &str) -> Option<IndexRecord> {
        self.state.read().index(bucket, name).cloned()
    }

    pub fn bucket(&self, name: &str) -> Option<BucketRecord> {
        self.state.read().bucket(name).cloned()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CatalogView {
    pub buckets: Vec<BucketRecord>,
    pub indexes: Vec<IndexRecord>,
    pub nodes: Vec<NodeRecord>,
    pub cluster_id: Option<u128>,
}

impl Catalog for MemCatalog {
    fn execute<'a>(
        &'a self,
        _request_id: &'a str,
        command: CatalogCommand,
    ) -> BoxFuture<'a, Result<(), CatalogError>> {
        Box::pin(async move { self.apply(command) })
    }

    fn state(&self) -> RwLockReadGuard<'_, CatalogState> {
        self.state.read()
    }

    fn sync(&self) -> BoxFuture<'_, Result<(), CatalogError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Always ready; no cluster gauges.
pub struct FakeCluster;

impl ClusterView for FakeCluster {
    fn ready(&self) -> bool {
        true
    }

    fn render_metrics(&self, _metrics: &Metrics) -> String {
        String::new()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredVector {
    pub vector: Vec<f32>,
    pub metadata: Metadata,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FakeShard {
    pub spec: ShardSpec,
    pub records: BTreeMap<String, StoredVector>,
}

/// A storage node: shards in memory, exact search. It checks what the real node checks of a
/// request (the shard exists, keys are in its range, the dimension), so a coordinator that
/// routes wrongly gets an error here as it would there.
#[derive(Default)]
pub struct FakeNode {
    shards: Mutex<BTreeMap<ShardId, FakeShard>>,
    seq: AtomicU64,
    /// Every request handled, by kind, in order.
    requests: Mutex<Vec<&'static str>>,
    /// Each applied write op: the shard it reached and the key.
    writes: Mutex<Vec<(ShardId, String)>>,
}

impl FakeNode {
    pub fn shards(&self) -> BTreeMap<ShardId, FakeShard> {
        self.shards.lock().clone()
    }

    pub fn requests(&self) -> Vec<&'static str> {
        self.requests.lock().clone()
    }

    pub fn writes(&self) -> Vec<(ShardId, String)> {
        self.writes.lock().clone()
    }

    fn answer(&self, request: NodeRequest) -> Result<NodeResponse, NodeError> {
        let mut shards = self.shards.lock();
        match request {
            NodeRequest::Ping => Ok(NodeResponse::Pong),
            NodeRequest::CreateShard(spec) => match shards.get(&spec.id) {
                Some(existing) if existing.spec != spec => Err(NodeError::InvalidRequest(
                    "shard exists with another spec".into(),
                )),
                Some(_) => Ok(NodeResponse::Done),
                None => {
                    let shard = FakeShard {
                        spec: spec.clone(),
                        records: BTreeMap::new(),
                    };
                    shards.insert(spec.id, shard);
                    Ok(NodeResponse::Done)
                }
            },
            NodeRequest::DropShard(id) => {
                shards.remove(&id);
                Ok(NodeResponse::Done)
            }
            NodeRequest::Write { shard, ops, .. } => {
                let target = shards
                    .get_mut(&shard)
                    .ok_or(NodeError::ShardNotFound(shard))?;
                // Check the whole batch first: a batch is applied atomically or not at all.
                for op in &ops {
                    let (WriteOp::Put { key, .. } | WriteOp::Delete { key }) = op;
                    if !target.spec.range.contains(key_hash(key)) {
                        return Err(NodeError::InvalidRequest(format!(
                            "key {key} is not in the shard's range"
                        )));
                    }
                    if let WriteOp::Put { vector, .. } = op {
                        if vector.len() != target.spec.dimension as usize {
                            return Err(NodeError::InvalidRequest("wrong dimension".into()));
                        }
                    }
                }
                let mut writes = self.writes.lock();
                for op in ops {
                    match op {
                        WriteOp::Put {
                            key,
                            vector,
                            metadata,
                        } => {
                            writes.push((shard, key.clone()));
                            target
                                .records
                                .insert(key, StoredVector { vector, metadata });
                        }
                        WriteOp::Delete { key } => {
                            writes.push((shard, key.clone()));
                            target.records.remove(&key);
                        }
                    }
                }
                let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
                Ok(NodeResponse::Written { seq })
            }
            NodeRequest::Get {
                shard,
                keys,
                return_data,
                return_metadata,
            } => {
                let target = shards.get(&shard).ok_or(NodeError::ShardNotFound(shard))?;
                let mut seen = BTreeSet::new();
                let records = keys
                    .iter()
                    .filter(|key| seen.insert(key.as_str()))
                    .filter_map(|key| target.records.get_key_value(key))
                    .map(|(key, stored)| record(key, stored, return_data, return_metadata))
                    .collect();
                Ok(NodeResponse::Vectors(records))
            }
            NodeRequest::List {
                shard,
                after,
                limit,
                range,
                return_data,
                return_metadata,
            } => {
                let target = shards.get(&shard).ok_or(NodeError::ShardNotFound(shard))?;
                let mut matching = target
                    .records
                    .iter()
                    .filter(|(key, _)| after.as_ref().is_none_or(|after| *key > after))
                    .filter(|(key, _)| range.is_none_or(|r| r.contains(key_hash(key))));
                let vectors: Vec<VectorRecord> = matching
                    .by_ref()
                    .take(limit as usize)
                    .map(|(key, stored)| record(key, stored, return_data, return_metadata))
                    .collect();
                let more = matching.next().is_some();
                Ok(NodeResponse::Listed { vectors, more })
            }
            NodeRequest::Search {
                shard,
                vector,
                top_k,
                filter,
                return_metadata,
            } => {
                let target = shards.get(&shard).ok_or(NodeError::ShardNotFound(shard))?;
                Ok(NodeResponse::Hits(search(
                    target,
                    &vector,
                    top_k,
                    filter.as_ref(),
                    return_metadata,
                )))
            }
            NodeRequest::SearchShards {
                shards: ids,
                vector,
                top_k,
                filter,
                return_metadata,
            } => {
                let mut lists = Vec::new();
                for id in ids {
                    let target = shards.get(&id).ok_or(NodeError::ShardNotFound(id))?;
                    lists.push(search(
                        target,
                        &vector,
                        top_k,
                        filter.as_ref(),
                        return_metadata,
                    ));
                }
                let mut all: Vec<Hit> = lists.into_iter().flatten().collect();
                all.sort_by(|a, b| a.distance.total_cmp(&b.distance).then(a.key.cmp(&b.key)));
                all.truncate(top_k as usize);
                Ok(NodeResponse::Hits(all))
            }
            // Coordinators never carry shard Raft traffic.
            NodeRequest::ShardRaft { .. } => Err(NodeError::Forbidden("not a node".into())),
            NodeRequest::Replicas { .. } => Ok(NodeResponse::Replicas(Vec::new())),
        }
    }
}

fn record(key: &str, stored: &StoredVector, data: bool, metadata: bool) -> VectorRecord {
    VectorRecord {
        key: key.to_owned(),
        vector: data.then(|| stored.vector.clone()),
        metadata: metadata.then(|| stored.metadata.clone()),
    }
}

/// Exact top-k of one shard, ascending by (distance, key).
fn search(
    shard: &FakeShard,
    query: &[f32],
    top_k: u32,
    filter: Option<&Filter>,
    return_metadata: bool,
) -> Vec<Hit> {
    let mut hits: Vec<Hit> = shard
        .records
        .iter()
        .filter(|(_, stored)| filter.is_none_or(|f| matches(f, &stored.metadata)))
        .map(|(key, stored)| Hit {
            key: key.clone(),
            distance: distance(shard.spec.metric, query, &stored.vector),
            metadata: return_metadata.then(|| stored.metadata.clone()),
        })
        .collect();
    hits.sort_by(|a, b| a.distance.total_cmp(&b.distance).then(a.key.cmp(&b.key)));
    hits.truncate(top_k as usize);
    hits
}

/// The S3 Vectors distance: L2 (not squared) for euclidean, `1 - cos` for cosine.
pub fn distance(metric: DistanceMetric, a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    match metric {
        DistanceMetric::Euclidean => {
            let squares: f64 = a
                .iter()
                .zip(b)
                .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
                .sum();
            squares.sqrt() as f32
        }
        DistanceMetric::Cosine => (1.0 - dot / (norm(a) * norm(b))) as f32,
    }
}

/// The filter semantics of ARCHITECTURE.md: a list value matches if any element does; `$ne`
/// and `$nin` need the key; comparisons are type-strict; ranges match numbers only.
fn matches(filter: &Filter, metadata: &Metadata) -> bool {
    fn scalars(value: &MetaValue) -> Vec<&MetaValue> {
        match value {
            MetaValue::List(items) => items.iter().collect(),
            other => vec![other],
        }
    }
    fn equals(value: &MetaValue, operand: &FilterValue) -> bool {
        match (value, operand) {
            (MetaValue::Str(a), FilterValue::Str(b)) => a == b,
            (MetaValue::Num(a), FilterValue::Num(b)) => a == b,
            (MetaValue::Bool(a), FilterValue::Bool(b)) => a == b,
            _ => false,
        }
    }
    let any = |key: &str, test: &dyn Fn(&MetaValue) -> bool| {
        metadata
            .get(key)
            .is_some_and(|value| scalars(value).into_iter().any(test))
    };
    let number = |key: &str, test: &dyn Fn(f64) -> bool| {
        any(key, &|v| matches!(v, MetaValue::Num(n) if test(*n)))
    };
    match filter {
        Filter::And(children) => children.iter().all(|c| matches(c, metadata)),
        Filter::Or(children) => children.iter().any(|c| matches(c, metadata)),
        Filter::Eq(key, operand) => any(key, &|v| equals(v, operand)),
        Filter::Ne(key, operand) => {
            metadata.get(key).is_some() && !any(key, &|v| equals(v, operand))
        }
        Filter::In(key, operands) => any(key, &|v| operands.iter().any(|o| equals(v, o))),
        Filter::Nin(key, operands) => {
            metadata.get(key).is_some() && !any(key, &|v| operands.iter().any(|o| equals(v, o)))
        }
        Filter::Gt(key, x) => number(key, &|n| n > *x),
        Filter::Gte(key, x) => number(key, &|n| n >= *x),
        Filter::Lt(key, x) => number(key, &|n| n < *x),
        Filter::Lte(key, x) => number(key, &|n| n <= *x),
        Filter::Exists(key, present) => metadata.get(key).is_some() == *present,
        Filter::StartsWith(key, prefix) => any(
            key,
            &|v| matches!(v, MetaValue::Str(s) if s.starts_with(prefix.as_str())),
        ),
    }
}

impl RpcService for FakeNode {
    type Request = NodeRequest;
    type Response = NodeResponse;

    fn kind(request: &NodeRequest) -> &'static str {
        request.kind()
    }

    fn reject(error: NodeError) -> NodeResponse {
        NodeResponse::Error(error)
    }

    fn is_error(response: &NodeResponse) -> bool {
        matches!(response, NodeResponse::Error(_))
    }

    fn handle(
        self: Arc<Self>,
        request: NodeRequest,
        _roles: Roles,
        _deadline: Instant,
    ) -> BoxFuture<'static, NodeResponse> {
        if let Some(dir) = std::env::var_os("QUIVER_FUZZ_SEEDS") {
            // A seed of fuzz/fuzz_targets/node_rpc.rs: the request as it crossed the wire.
            let envelope = quiver_proto::Envelope {
                version: quiver_proto::PROTOCOL_VERSION,
                request_id: "seed".into(),
                deadline_unix_ms: u64::MAX,
                body: request.clone(),
            };
            if let Ok(bytes) = quiver_proto::encode(&envelope) {
                super::harness::write_seed(&std::path::Path::new(&dir).join("node_rpc"), &bytes);
            }
        }
        Box::pin(async move {
            self.requests.lock().push(request.kind());
            self.answer(request).unwrap_or_else(NodeResponse::Error)
        })
    }
}
