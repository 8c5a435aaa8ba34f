//! The node service: the registry of hosted shards, admission control, the RPC dispatch of
//! [`NodeRequest`]s, reconciliation with the control plane's assignments, and the cluster-id
//! file that pins the node to one cluster.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use openraft::error::{ClientWriteError, RaftError};
use quiver_net::server::RpcService;
use quiver_net::tls::{Role, Roles};
use quiver_net::Transport;
use quiver_proto::{NodeError, NodeRequest, NodeResponse, ReplicaId, ShardId, ShardSpec};
use ractor::ActorRef;
use tokio::sync::Semaphore;

use crate::replication::log::{LogEngine, LogOpenError};
use crate::replication::network::NodeDirectory;
use crate::replication::{self, ReplicationConfig, ShardCommand};
use crate::shard::{Shard, ShardConfig};
use crate::store::ShardStore;
use crate::supervisor::{
    shard_dir, ReadyShard, Registry, ReplicationContext, ShardMsg, ShardSlot, Supervisor,
    SupervisorMsg,
};

mod identity;
mod status;

pub use status::ReplicationSummary;

/// Largest `limit` a List request may ask for.
pub const MAX_LIST_LIMIT: u32 = 10_000;
/// Largest `top_k` a Search request may ask for.
pub const MAX_TOP_K: u32 = 10_000;
/// Most shards one SearchShards request may name.
pub const MAX_SHARDS_PER_SEARCH: usize = 1_024;

/// Node-wide limits.
#[derive(Debug, Clone)]
pub struct NodeLimits {
    /// Requests executing at once; more are refused with a retryable `Overloaded`.
    pub max_in_flight: usize,
}

impl Default for NodeLimits {
    fn default() -> Self {
        NodeLimits {
            max_in_flight: 1024,
        }
    }
}

/// Who a node is and how its shard replicas reach the others.
pub struct NodeIdentity {
    /// The node id shard maps name (a shard's spec lists its replicas by node id).
    pub node_id: String,
    /// Carries Raft traffic to the other nodes.
    pub transport: Arc<dyn Transport>,
    pub replication: ReplicationConfig,
}

/// The node: a registry of shards and the RPC entry point.
pub struct NodeService {
    data_dir: PathBuf,
    incarnation: u128,
    registry: Arc<Registry>,
    replication: Arc<ReplicationContext>,
    supervisor: ActorRef<SupervisorMsg>,
    admission: Semaphore,
    /// When each hosted shard was opened by this process (see [`NodeService::reconcile`]).
    opened_at: parking_lot::Mutex<HashMap<ShardId, Instant>>,
}

/// What [`NodeService::reconcile`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub created: Vec<ShardId>,
    pub dropped: Vec<ShardId>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeStartError {
    #[error("reading shard directory {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("starting the shard supervisor: {0}")]
    Spawn(#[from] ractor::SpawnErr),
    #[error("shard {0} failed to open: {1}")]
    Shard(String, NodeError),
    #[error("the node's raft log: {0}")]
    Log(#[from] LogOpenError),
    #[error("shard raft settings: {0}")]
    RaftConfig(#[from] openraft::ConfigError),
}

impl NodeService {
    /// Starts the supervisor and re-opens every shard found under `data_dir/shards`.
    pub async fn start(
        data_dir: &Path,
        identity: NodeIdentity,
        config: ShardConfig,
        limits: NodeLimits,
    ) -> Result<Arc<NodeService>, NodeStartError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| NodeStartError::Io { path, source }
        };
        std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
        let incarnation = identity::load_incarnation(data_dir).map_err(io(data_dir))?;
        let registry = Arc::new(Registry::default());
        let replication = Arc::new(ReplicationContext {
            node_id: identity.node_id,
            data_dir: data_dir.to_owned(),
            log: LogEngine::open(&data_dir.join("raft-log.redb"))?,
            transport: identity.transport,
            directory: Arc::new(NodeDirectory::default()),
            counters: Arc::default(),
            raft_config: identity.replication.raft_config()?,
        });
        let supervisor =
            Supervisor::spawn(data_dir, config, registry.clone(), replication.clone()).await?;
        let service = Arc::new(NodeService {
            data_dir: data_dir.to_owned(),
            incarnation,
            registry,
            replication,
            supervisor,
            admission: Semaphore::new(limits.max_in_flight),
            opened_at: parking_lot::Mutex::new(HashMap::new()),
        });
        // Shards dropped just before a crash may still sit in the trash; a snapshot install a
        // crash interrupted is finished.
        let _ = std::fs::remove_dir_all(data_dir.join("trash"));
        let shards_dir = data_dir.join("shards");
        let incoming = data_dir.join("incoming");
        replication::snapshot::recover_incoming(&incoming, |name| shards_dir.join(name))
            .map_err(io(&incoming))?;
        let io = io(&shards_dir);
        std::fs::create_dir_all(&shards_dir).map_err(io.clone())?;
        let mut specs = Vec::new();
        for entry in std::fs::read_dir(&shards_dir).map_err(io.clone())? {
            let path = entry.map_err(io.clone())?.path();
            match ShardStore::read_spec(&path) {
                Ok(Some(spec)) => specs.push(spec),
                Ok(None) => {
                    tracing::warn!(path = %path.display(), "skipping directory without a shard")
                }
                Err(error) => tracing::error!(path = %path.display(), %error, "unreadable shard"),
            }
        }
        for spec in specs {
            let id = spec.id;
            service
                .create_shard(spec)
                .await
                .map_err(|e| NodeStartError::Shard(id.to_string(), e))?;
        }
        Ok(service)
    }

    /// Stops every shard actor (each finishes the batch it is applying; everything acknowledged
    /// is already durable) and the supervisor, closing the shards' stores.
    pub async fn shutdown(&self) {
        let shards: Vec<(ShardSpec, ShardSlot)> = self
            .registry
            .shards
            .write()
            .drain()
            .map(|(_, entry)| entry)
            .collect();
        for (_, slot) in shards {
            if let ShardSlot::Ready(ready) = slot {
                let _ = ready
                    .actor
                    .stop_and_wait(None, Some(Duration::from_secs(30)))
                    .await;
            }
        }
        let _ = self
            .supervisor
            .stop_and_wait(None, Some(Duration::from_secs(10)))
            .await;
        self.opened_at.lock().clear();
    }

    /// This node's incarnation (see [`load_incarnation`]).
    pub fn incarnation(&self) -> u128 {
        self.incarnation
    }

    /// The node id this service answers as.
    pub fn node_id(&self) -> &str {
        &self.replication.node_id
    }

    /// Records where the other nodes are (from the control plane's heartbeat answers).
    pub fn set_directory(&self, nodes: Vec<(String, String)>) {
        self.replication.directory.replace(nodes);
    }

    pub fn shard_count(&self) -> usize {
        self.registry.shards.read().len()
    }

    /// Ids of every shard this node hosts.
    pub fn shard_ids(&self) -> Vec<ShardId> {
        let mut ids: Vec<ShardId> = self.registry.shards.read().keys().copied().collect();
        ids.sort();
        ids
    }

    /// Makes the hosted shards match `assigned`, the control plane's list for this node as read
    /// at or after `asked_at`: creates the missing ones and drops the ones not listed.
    ///
    /// A shard opened after `asked_at` is never dropped: the list may predate it (a coordinator
    /// creates a new index's shards right after committing the index, while an older answer may
    /// still be in flight). Because indexes are committed before their shards are created, a
    /// list read after a shard was opened names it unless its index was deleted.
    pub async fn reconcile(
        &self,
        assigned: Vec<ShardSpec>,
        asked_at: Instant,
    ) -> Result<Reconciled, NodeError> {
        let wanted: std::collections::HashSet<ShardId> = assigned.iter().map(|s| s.id).collect();
        let mut changes = Reconciled::default();
        for id in self.shard_ids() {
            let opened = self.opened_at.lock().get(&id).copied();
            let stale_list = opened.is_some_and(|opened| opened > asked_at);
            if !wanted.contains(&id) && !stale_list {
                tracing::warn!(shard = %id, "dropping a shard the control plane no longer assigns here");
                self.drop_shard(id).await?;
                changes.dropped.push(id);
            }
        }
        let hosted: std::collections::HashSet<ShardId> = self.shard_ids().into_iter().collect();
        for spec in assigned {
            if !hosted.contains(&spec.id) {
                let id = spec.id;
                tracing::info!(shard = %id, "creating a shard the control plane assigns here");
                self.create_shard(spec).await?;
                changes.created.push(id);
            }
        }
        Ok(changes)
    }

    async fn create_shard(&self, spec: ShardSpec) -> Result<(), NodeError> {
        let id = spec.id;
        match ractor::call!(self.supervisor, SupervisorMsg::Start, spec) {
            Ok(result) => {
                if result.is_ok() {
                    self.opened_at.lock().entry(id).or_insert_with(Instant::now);
                }
                result
            }
            Err(e) => Err(NodeError::Storage(format!("supervisor unavailable: {e}"))),
        }
    }

    async fn drop_shard(&self, id: ShardId) -> Result<(), NodeError> {
        self.opened_at.lock().remove(&id);
        let removed = self.registry.shards.write().remove(&id);
        let replica = match &removed {
            Some((spec, _)) => spec.replica_on(&self.replication.node_id),
            None => None,
        };
        if let Some((_, ShardSlot::Ready(ready))) = removed {
            let _ = ready
                .actor
                .stop_and_wait(None, Some(Duration::from_secs(30)))
                .await;
        }
        if let Some(replica) = replica {
            self.forget_replica(replica).await?;
        }
        let dir = shard_dir(&self.data_dir, id);
        let trash = self.data_dir.join("trash").join(format!(
            "{id}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if dir.exists() {
                // Rename first (atomic): a crash can never leave a half-deleted shard to re-open.
                if let Some(parent) = trash.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::rename(&dir, &trash)?;
                std::fs::remove_dir_all(&trash)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| NodeError::Storage(e.to_string()))?
        .map_err(|e| NodeError::Storage(format!("removing shard {id}: {e}")))
    }

    /// Removes a dropped replica's Raft log and snapshot files.
    async fn forget_replica(&self, replica: ReplicaId) -> Result<(), NodeError> {
        self.replication
            .log
            .remove(replica.0)
            .await
            .map_err(|e| NodeError::Storage(format!("removing replica {}: {e}", replica.0)))?;
        let snapshots = self.replication.snapshot_dir(replica);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(snapshots)).await;
        Ok(())
    }

    fn ready(&self, id: ShardId) -> Result<ReadyShard, NodeError> {
        match self.registry.shards.read().get(&id) {
            None => Err(NodeError::ShardNotFound(id)),
            Some((_, ShardSlot::Unavailable)) => Err(NodeError::ShardUnavailable(id)),
            Some((_, ShardSlot::Ready(ready))) => Ok(ready.clone()),
        }
    }

    /// A replica whose Raft member stopped: its actor is failed (the supervisor re-opens it).
    fn failed(&self, id: ShardId, fatal: openraft::error::Fatal<u64>) -> NodeError {
        tracing::error!(shard = %id, %fatal, "shard raft member stopped");
        if let Ok(ready) = self.ready(id) {
            let _ = ready.actor.cast(ShardMsg::Fail(fatal.to_string()));
        }
        NodeError::ShardUnavailable(id)
    }

    /// Runs a linearizable read against a shard on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        id: ShardId,
        f: impl FnOnce(&Shard) -> Result<T, NodeError> + Send + 'static,
    ) -> Result<T, NodeError> {
        let ready = self.ready(id)?;
        // The leader's read barrier: the read sees every write acknowledged before it began.
        ready.barrier.wait().await?;
        let state = ready.state;
        tokio::task::spawn_blocking(move || f(&state.read()))
            .await
            .map_err(|e| NodeError::Storage(format!("read task failed: {e}")))?
    }

    /// Proposes a batch to the shard's group; answers once a quorum has it durable and this
    /// replica (the leader) applied it.
    async fn write(
        &self,
        id: ShardId,
        request_id: u128,
        ops: Vec<quiver_proto::WriteOp>,
    ) -> Result<NodeResponse, NodeError> {
        let ready = self.ready(id)?;
        // Refuse a malformed batch before it enters the log (apply would refuse it too).
        ready
            .state
            .read()
            .check_batch(&ops)
            .map_err(NodeError::from)?;
        match ready
            .raft
            .client_write(ShardCommand { request_id, ops })
            .await
        {
            Ok(written) => written.data.map(|seq| NodeResponse::Written { seq }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(NodeError::NotLeader {
                    shard: id,
                    leader: forward.leader_node.map(|node| node.node),
                })
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error))) => {
                Err(NodeError::Storage(error.to_string()))
            }
            Err(RaftError::Fatal(fatal)) => Err(self.failed(id, fatal)),
        }
    }

    /// Hands a Raft RPC to the addressed replica's group member.
    async fn shard_raft(
        &self,
        id: ShardId,
        to: ReplicaId,
        payload: Vec<u8>,
    ) -> Result<NodeResponse, NodeError> {
        let ready = self.ready(id)?;
        if ready.replica != to {
            // A message for a replica this node no longer (or never) hosted.
            return Err(NodeError::ShardNotFound(id));
        }
        Ok(NodeResponse::ShardRaft(
            replication::network::serve(&ready.raft, &payload).await,
        ))
    }

    /// Searches `shards` (all hosted here) on one blocking task and merges their top-k.
    async fn search(
        &self,
        shards: Vec<ShardId>,
        vector: Vec<f32>,
        top_k: u32,
        filter: Option<quiver_proto::Filter>,
        return_metadata: bool,
    ) -> Result<NodeResponse, NodeError> {
        if top_k == 0 || top_k > MAX_TOP_K {
            return Err(NodeError::InvalidRequest("top_k out of range".into()));
        }
        if shards.is_empty() || shards.len() > MAX_SHARDS_PER_SEARCH {
            return Err(NodeError::InvalidRequest("shard count out of range".into()));
        }
        let ready = shards
            .iter()
            .map(|&id| self.ready(id))
            .collect::<Result<Vec<_>, _>>()?;
        futures::future::try_join_all(ready.iter().map(|ready| ready.barrier.wait())).await?;
        let states: Vec<_> = ready.into_iter().map(|ready| ready.state).collect();
        tokio::task::spawn_blocking(move || {
            let lists = states
                .iter()
                .map(|state| {
                    state
                        .read()
                        .search(&vector, top_k as usize, filter.as_ref(), return_metadata)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(NodeError::from)?;
            Ok(NodeResponse::Hits(quiver_proto::merge_top_k(
                lists,
                top_k as usize,
            )))
        })
        .await
        .map_err(|e| NodeError::Storage(format!("search task failed: {e}")))?
    }

    /// Executes one request before `deadline`.
    pub async fn handle(&self, request: NodeRequest, deadline: Instant) -> NodeResponse {
        let Ok(_permit) = self.admission.try_acquire() else {
            return NodeResponse::Error(NodeError::Overloaded);
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return NodeResponse::Error(NodeError::DeadlineExceeded);
        }
        match tokio::time::timeout(remaining, self.execute(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => NodeResponse::Error(error),
            Err(_) => NodeResponse::Error(NodeError::DeadlineExceeded),
        }
    }

    async fn execute(&self, request: NodeRequest) -> Result<NodeResponse, NodeError> {
        match request {
            NodeRequest::Ping => Ok(NodeResponse::Pong),
            NodeRequest::CreateShard(spec) => {
                if spec.dimension == 0 || spec.dimension > 4096 {
                    return Err(NodeError::InvalidRequest("dimension out of range".into()));
                }
                if spec.replica_on(self.node_id()).is_none() {
                    return Err(NodeError::InvalidRequest(format!(
                        "shard {} has no replica on node {}",
                        spec.id,
                        self.node_id()
                    )));
                }
                self.create_shard(spec).await.map(|()| NodeResponse::Done)
            }
            NodeRequest::DropShard(id) => self.drop_shard(id).await.map(|()| NodeResponse::Done),
            NodeRequest::Write {
                shard,
                request_id,
                ops,
            } => self.write(shard, request_id, ops).await,
            NodeRequest::ShardRaft { shard, to, payload } => {
                self.shard_raft(shard, to, payload).await
            }
            NodeRequest::Replicas { digests } => {
                Ok(NodeResponse::Replicas(self.replicas(digests).await))
            }
            NodeRequest::Get {
                shard,
                keys,
                return_data,
                return_metadata,
            } => {
                if keys.len() > 1_000 {
                    return Err(NodeError::InvalidRequest("too many keys".into()));
                }
                self.read(shard, move |s| {
                    Ok(NodeResponse::Vectors(s.get(
                        &keys,
                        return_data,
                        return_metadata,
                    )))
                })
                .await
            }
            NodeRequest::List {
                shard,
                after,
                limit,
                range,
                return_data,
                return_metadata,
            } => {
                let limit = limit.min(MAX_LIST_LIMIT) as usize;
                self.read(shard, move |s| {
                    let (vectors, more) =
                        s.list(after.as_deref(), limit, range, return_data, return_metadata);
                    Ok(NodeResponse::Listed { vectors, more })
                })
                .await
            }
            NodeRequest::SearchShards {
                shards,
                vector,
                top_k,
                filter,
                return_metadata,
            } => {
                self.search(shards, vector, top_k, filter, return_metadata)
                    .await
            }
            NodeRequest::Search {
                shard,
                vector,
                top_k,
                filter,
                return_metadata,
            } => {
                self.search(vec![shard], vector, top_k, filter, return_metadata)
                    .await
            }
        }
    }
}

impl RpcService for NodeService {
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
        roles: Roles,
        deadline: Instant,
    ) -> BoxFuture<'static, NodeResponse> {
        // Coordinators call shards; nodes only carry their shard groups' Raft traffic.
        let (role, allowed) = match request {
            NodeRequest::ShardRaft { .. } => ("node", roles.contains(Role::Node)),
            _ => ("coordinator", roles.contains(Role::Coordinator)),
        };
        if !allowed {
            return Box::pin(async move {
                NodeResponse::Error(NodeError::Forbidden(format!(
                    "the peer's certificate does not grant the {role} role"
                )))
            });
        }
        Box::pin(async move { NodeService::handle(&self, request, deadline).await })
    }
}
