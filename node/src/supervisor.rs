//! Shard actors, their supervisor, and the node service that routes RPCs to them.
//!
//! Each shard has one ractor actor that owns its writes and lifecycle (apply, checkpoint,
//! rebuild), so writes to a shard are serialized without locks around the store. Reads do not go
//! through the actor: they take the shard's read lock on a blocking thread, so a slow query never
//! stalls writes and writes only block reads while the in-memory state is swapped.
//!
//! The supervisor restarts a failed shard actor (re-opening the shard from disk) with exponential
//! backoff, up to [`MAX_RESTARTS`] times in a row; ractor's default of stopping the parent is not
//! what a node wants.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{RwLock, RwLockUpgradableReadGuard};
use quiver_proto::{NodeError, NodeRequest, NodeResponse, ShardId, ShardSpec, WriteOp};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::Semaphore;

use crate::shard::{RebuiltIndex, Shard, ShardConfig, ShardError};
use crate::store::ShardStore;

/// Consecutive restarts of one shard before the supervisor gives up on it.
pub const MAX_RESTARTS: u32 = 5;
/// Largest `limit` a List request may ask for.
pub const MAX_LIST_LIMIT: u32 = 10_000;
/// Largest `top_k` a Search request may ask for.
pub const MAX_TOP_K: u32 = 10_000;
/// Most shards one SearchShards request may name.
pub const MAX_SHARDS_PER_SEARCH: usize = 1_024;

type SharedShard = Arc<RwLock<Shard>>;

enum ShardSlot {
    /// Opening, restarting or dropping: requests get a retryable error.
    Unavailable,
    Ready {
        state: SharedShard,
        actor: ActorRef<ShardMsg>,
    },
}

#[derive(Default)]
struct Registry {
    shards: RwLock<HashMap<ShardId, (ShardSpec, ShardSlot)>>,
}

pub enum ShardMsg {
    Write(Vec<WriteOp>, RpcReplyPort<Result<u64, NodeError>>),
    InstallRebuilt(Box<Result<RebuiltIndex, ShardError>>),
}

struct ShardActor;

struct ShardActorState {
    shard: SharedShard,
    rebuilding: bool,
}

struct ShardArgs {
    dir: PathBuf,
    spec: ShardSpec,
    config: ShardConfig,
    registry: Arc<Registry>,
}

impl Actor for ShardActor {
    type Msg = ShardMsg;
    type State = ShardActorState;
    type Arguments = ShardArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let ShardArgs {
            dir,
            spec,
            config,
            registry,
        } = args;
        let id = spec.id;
        let shard = tokio::task::spawn_blocking(move || Shard::open(&dir, spec, config)).await??;
        tracing::info!(shard = %id, vectors = shard.len(), "shard opened");
        let shard = Arc::new(RwLock::new(shard));
        {
            // The slot was created before this actor started; if it is gone, the shard was
            // dropped while it opened, and must not come back.
            let mut shards = registry.shards.write();
            let Some((_, slot)) = shards.get_mut(&id) else {
                return Err(format!("shard {id} was dropped while opening").into());
            };
            *slot = ShardSlot::Ready {
                state: shard.clone(),
                actor: myself,
            };
        }
        Ok(ShardActorState {
            shard,
            rebuilding: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMsg::Write(ops, reply) => {
                let shard = state.shard.clone();
                let result = tokio::task::spawn_blocking(move || apply_write(&shard, ops)).await?;
                match result {
                    Ok(seq) => {
                        let _ = reply.send(Ok(seq));
                    }
                    Err(WriteFailure::Rejected(error)) => {
                        let _ = reply.send(Err(error.into()));
                    }
                    Err(WriteFailure::AfterCommit(error)) => {
                        // Durable but not applied in memory: fail the actor so the supervisor
                        // re-opens the shard from disk, where the batch is.
                        let _ = reply.send(Err(NodeError::Storage(error.to_string())));
                        return Err(Box::new(error));
                    }
                }
                self.maintain(&myself, state).await?;
            }
            ShardMsg::InstallRebuilt(result) => {
                state.rebuilding = false;
                match *result {
                    Ok(rebuilt) => {
                        let shard = state.shard.clone();
                        tokio::task::spawn_blocking(move || -> Result<(), ShardError> {
                            shard.write().install_rebuilt(rebuilt)?;
                            let guard = shard.read();
                            guard.write_checkpoint()
                        })
                        .await??;
                        state.shard.write().mark_checkpointed();
                        tracing::info!(shard = %state.shard.read().spec().id, "faiss index rebuilt");
                    }
                    Err(error) => {
                        tracing::warn!(%error, "faiss rebuild failed; keeping the old index")
                    }
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Best effort: a checkpoint shortens the next start; the store is the truth either way.
        let shard = state.shard.clone();
        let _ = tokio::task::spawn_blocking(move || shard.read().write_checkpoint()).await;
        Ok(())
    }
}

impl ShardActor {
    /// Checkpoint or rebuild the FAISS index when due. Checkpoints run inline (they are short and
    /// keep the shard's write order simple); rebuilds run in the background.
    async fn maintain(
        &self,
        myself: &ActorRef<ShardMsg>,
        state: &mut ShardActorState,
    ) -> Result<(), ActorProcessingErr> {
        let (needs_rebuild, needs_checkpoint) = {
            let shard = state.shard.read();
            (shard.needs_rebuild(), shard.needs_checkpoint())
        };
        if needs_rebuild && !state.rebuilding {
            state.rebuilding = true;
            let input = state.shard.read().rebuild_input();
            let myself = myself.clone();
            tokio::spawn(async move {
                let result = tokio::task::spawn_blocking(move || input.build())
                    .await
                    .unwrap_or_else(|e| Err(ShardError::Invalid(format!("rebuild task: {e}"))));
                let _ = myself.cast(ShardMsg::InstallRebuilt(Box::new(result)));
            });
        } else if needs_checkpoint && !state.rebuilding {
            let shard = state.shard.clone();
            let result =
                tokio::task::spawn_blocking(move || shard.read().write_checkpoint()).await?;
            match result {
                Ok(()) => state.shard.write().mark_checkpointed(),
                Err(error) => tracing::warn!(%error, "faiss checkpoint failed"),
            }
        }
        Ok(())
    }
}

enum WriteFailure {
    Rejected(ShardError),
    AfterCommit(ShardError),
}

/// Commits a batch durably while readers continue (upgradable read lock), then takes the write
/// lock only to make it visible. The shard actor is the only writer, so nothing can change
/// between the two steps.
fn apply_write(shard: &SharedShard, ops: Vec<WriteOp>) -> Result<u64, WriteFailure> {
    let guard = shard.upgradable_read();
    let prepared = guard.commit(ops).map_err(WriteFailure::Rejected)?;
    let mut guard = RwLockUpgradableReadGuard::upgrade(guard);
    guard.install(prepared).map_err(WriteFailure::AfterCommit)
}

/// Supervises shard actors: spawns them linked, restarts them when they fail.
struct Supervisor;

pub enum SupervisorMsg {
    Start(ShardSpec, RpcReplyPort<Result<(), NodeError>>),
    Restart(ShardId, u32),
}

struct SupervisorState {
    data_dir: PathBuf,
    config: ShardConfig,
    registry: Arc<Registry>,
    /// Actor name -> (shard, consecutive restarts).
    children: HashMap<ractor::ActorId, (ShardId, u32)>,
}

impl SupervisorState {
    async fn spawn_shard(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        spec: ShardSpec,
        restarts: u32,
    ) -> Result<(), NodeError> {
        let id = spec.id;
        let args = ShardArgs {
            dir: shard_dir(&self.data_dir, id),
            spec: spec.clone(),
            config: self.config.clone(),
            registry: self.registry.clone(),
        };
        self.registry
            .shards
            .write()
            .entry(id)
            .or_insert((spec, ShardSlot::Unavailable));
        match Actor::spawn_linked(None, ShardActor, args, myself.get_cell()).await {
            Ok((actor, _handle)) => {
                self.children.insert(actor.get_id(), (id, restarts));
                Ok(())
            }
            Err(error) => {
                tracing::error!(shard = %id, %error, "shard failed to start");
                Err(NodeError::Storage(format!(
                    "shard {id} failed to start: {error}"
                )))
            }
        }
    }
}

fn shard_dir(data_dir: &Path, id: ShardId) -> PathBuf {
    data_dir.join("shards").join(id.to_string())
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorState;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Start(spec, reply) => {
                // Starts are serialized here: a second start of the same shard (a create RPC
                // racing the node's own reconciliation) finds the first one's entry.
                let existing = state
                    .registry
                    .shards
                    .read()
                    .get(&spec.id)
                    .map(|(existing, _)| existing.clone());
                let result = match existing {
                    None => state.spawn_shard(&myself, spec, 0).await,
                    Some(existing) if existing == spec => Ok(()),
                    Some(_) => Err(NodeError::InvalidRequest(format!(
                        "shard {} exists with another spec",
                        spec.id
                    ))),
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::Restart(id, restarts) => {
                let spec = state
                    .registry
                    .shards
                    .read()
                    .get(&id)
                    .map(|(s, _)| s.clone());
                if let Some(spec) = spec {
                    if state.spawn_shard(&myself, spec, restarts).await.is_err() {
                        schedule_restart(&myself, id, restarts + 1);
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some((id, restarts)) = state.children.remove(&cell.get_id()) {
                    tracing::error!(shard = %id, %error, restarts, "shard actor failed");
                    if let Some((_, slot)) = state.registry.shards.write().get_mut(&id) {
                        *slot = ShardSlot::Unavailable;
                    }
                    schedule_restart(&myself, id, restarts + 1);
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.children.remove(&cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}

fn schedule_restart(supervisor: &ActorRef<SupervisorMsg>, id: ShardId, restarts: u32) {
    if restarts > MAX_RESTARTS {
        tracing::error!(shard = %id, "shard keeps failing; giving up until the node restarts");
        return;
    }
    let backoff = Duration::from_millis(100 * 2u64.pow(restarts.min(8)));
    let supervisor = supervisor.clone();
    tokio::spawn(async move {
        tokio::time::sleep(backoff).await;
        let _ = supervisor.cast(SupervisorMsg::Restart(id, restarts));
    });
}

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

/// The node: a registry of shards and the RPC entry point.
pub struct NodeService {
    data_dir: PathBuf,
    registry: Arc<Registry>,
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
}

impl NodeService {
    /// Starts the supervisor and re-opens every shard found under `data_dir/shards`.
    pub async fn start(
        data_dir: &Path,
        config: ShardConfig,
        limits: NodeLimits,
    ) -> Result<Arc<NodeService>, NodeStartError> {
        let registry = Arc::new(Registry::default());
        let (supervisor, _) = Actor::spawn(
            None,
            Supervisor,
            SupervisorState {
                data_dir: data_dir.to_owned(),
                config,
                registry: registry.clone(),
                children: HashMap::new(),
            },
        )
        .await?;
        let service = Arc::new(NodeService {
            data_dir: data_dir.to_owned(),
            registry,
            supervisor,
            admission: Semaphore::new(limits.max_in_flight),
            opened_at: parking_lot::Mutex::new(HashMap::new()),
        });
        // Shards dropped just before a crash may still sit in the trash.
        let _ = std::fs::remove_dir_all(data_dir.join("trash"));
        let shards_dir = data_dir.join("shards");
        let io = |source| NodeStartError::Io {
            path: shards_dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&shards_dir).map_err(io)?;
        let mut specs = Vec::new();
        for entry in std::fs::read_dir(&shards_dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
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
        self.supervisor.stop(None);
        for (_, slot) in shards {
            if let ShardSlot::Ready { actor, .. } = slot {
                let _ = actor
                    .stop_and_wait(None, Some(Duration::from_secs(30)))
                    .await;
            }
        }
        self.opened_at.lock().clear();
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

    /// Checks that assignments come from the cluster this node belongs to: the first cluster id
    /// seen is written (fsynced) to `<data-dir>/cluster-id`; another id later is refused, so a
    /// node pointed at a new or wrong control plane never drops the shards it holds.
    pub fn check_cluster(&self, cluster_id: u128) -> Result<(), NodeError> {
        let path = self.data_dir.join("cluster-id");
        let storage = |e: std::io::Error| NodeError::Storage(format!("{}: {e}", path.display()));
        let wanted = format!("{cluster_id:032x}");
        match std::fs::read_to_string(&path) {
            Ok(existing) if existing.trim() == wanted => Ok(()),
            Ok(existing) => Err(NodeError::InvalidRequest(format!(
                "this node belongs to cluster {}, but the control plane is cluster {wanted}",
                existing.trim()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::io::Write;
                let tmp = path.with_extension("tmp");
                let mut file = std::fs::File::create(&tmp).map_err(storage)?;
                file.write_all(wanted.as_bytes()).map_err(storage)?;
                file.sync_all().map_err(storage)?;
                std::fs::rename(&tmp, &path).map_err(storage)?;
                if let Some(dir) = path.parent() {
                    std::fs::File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(storage)?;
                }
                tracing::info!(cluster = %wanted, "joined a cluster");
                Ok(())
            }
            Err(e) => Err(storage(e)),
        }
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
        if let Some((_, ShardSlot::Ready { actor, .. })) = removed {
            let _ = actor
                .stop_and_wait(None, Some(Duration::from_secs(30)))
                .await;
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

    fn ready(&self, id: ShardId) -> Result<(SharedShard, ActorRef<ShardMsg>), NodeError> {
        match self.registry.shards.read().get(&id) {
            None => Err(NodeError::ShardNotFound(id)),
            Some((_, ShardSlot::Unavailable)) => Err(NodeError::ShardUnavailable(id)),
            Some((_, ShardSlot::Ready { state, actor })) => Ok((state.clone(), actor.clone())),
        }
    }

    /// Runs a read against a shard on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        id: ShardId,
        f: impl FnOnce(&Shard) -> Result<T, NodeError> + Send + 'static,
    ) -> Result<T, NodeError> {
        let (state, _) = self.ready(id)?;
        tokio::task::spawn_blocking(move || f(&state.read()))
            .await
            .map_err(|e| NodeError::Storage(format!("read task failed: {e}")))?
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
        let states = shards
            .iter()
            .map(|&id| self.ready(id).map(|(state, _)| state))
            .collect::<Result<Vec<_>, _>>()?;
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
        match tokio::time::timeout(remaining, self.execute(request, remaining)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => NodeResponse::Error(error),
            Err(_) => NodeResponse::Error(NodeError::DeadlineExceeded),
        }
    }

    async fn execute(
        &self,
        request: NodeRequest,
        remaining: Duration,
    ) -> Result<NodeResponse, NodeError> {
        match request {
            NodeRequest::Ping => Ok(NodeResponse::Pong),
            NodeRequest::CreateShard(spec) => {
                if spec.dimension == 0 || spec.dimension > 4096 {
                    return Err(NodeError::InvalidRequest("dimension out of range".into()));
                }
                self.create_shard(spec).await.map(|()| NodeResponse::Done)
            }
            NodeRequest::DropShard(id) => self.drop_shard(id).await.map(|()| NodeResponse::Done),
            NodeRequest::Write { shard, ops } => {
                let (_, actor) = self.ready(shard)?;
                match actor
                    .call(|reply| ShardMsg::Write(ops, reply), Some(remaining))
                    .await
                {
                    Ok(ractor::rpc::CallResult::Success(result)) => {
                        result.map(|seq| NodeResponse::Written { seq })
                    }
                    Ok(ractor::rpc::CallResult::Timeout) => Err(NodeError::DeadlineExceeded),
                    Ok(ractor::rpc::CallResult::SenderError) | Err(_) => {
                        Err(NodeError::ShardUnavailable(shard))
                    }
                }
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
