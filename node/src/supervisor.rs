//! Shard actors and their supervisor ([`crate::service::NodeService`] routes RPCs to them).
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
use std::time::Duration;

use parking_lot::{RwLock, RwLockUpgradableReadGuard};
use quiver_proto::{NodeError, ShardId, ShardSpec, WriteOp};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::shard::{RebuiltIndex, Shard, ShardConfig, ShardError};

/// Consecutive restarts of one shard before the supervisor gives up on it.
pub const MAX_RESTARTS: u32 = 5;

pub(crate) type SharedShard = Arc<RwLock<Shard>>;

pub(crate) enum ShardSlot {
    /// Opening, restarting or dropping: requests get a retryable error.
    Unavailable,
    Ready {
        state: SharedShard,
        actor: ActorRef<ShardMsg>,
    },
}

#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) shards: RwLock<HashMap<ShardId, (ShardSpec, ShardSlot)>>,
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
pub(crate) struct Supervisor;

impl Supervisor {
    /// Starts the supervisor of the shards under `data_dir`, publishing them in `registry`.
    pub(crate) async fn spawn(
        data_dir: &Path,
        config: ShardConfig,
        registry: Arc<Registry>,
    ) -> Result<ActorRef<SupervisorMsg>, ractor::SpawnErr> {
        let state = SupervisorState {
            data_dir: data_dir.to_owned(),
            config,
            registry,
            children: HashMap::new(),
        };
        let (supervisor, _) = Actor::spawn(None, Supervisor, state).await?;
        Ok(supervisor)
    }
}

pub enum SupervisorMsg {
    Start(ShardSpec, RpcReplyPort<Result<(), NodeError>>),
    Restart(ShardId, u32),
}

pub(crate) struct SupervisorState {
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

pub(crate) fn shard_dir(data_dir: &Path, id: ShardId) -> PathBuf {
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
