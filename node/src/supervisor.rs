//! Shard actors and their supervisor ([`crate::service::NodeService`] routes RPCs to them).
//!
//! Each shard replica has one ractor actor that owns its lifecycle: it opens the shard, starts
//! the replica's Raft group member ([`crate::replication`]), initializes the group when it is the
//! group's bootstrap replica and new, and keeps the FAISS index maintained (checkpoints,
//! rebuilds) as entries are applied. Writes go through the group's log and are applied by its
//! state machine, one batch at a time. Reads do not go through the actor: they take the shard's
//! read lock on a blocking thread, so a slow query never stalls writes and writes only block
//! reads while the in-memory state is swapped.
//!
//! The supervisor restarts a failed shard actor (re-opening the shard from disk) with exponential
//! backoff, up to [`MAX_RESTARTS`] times in a row; ractor's default of stopping the parent is not
//! what a node wants.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use quiver_net::Transport;
use quiver_proto::{NodeError, ReplicaId, ShardId, ShardSpec};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::replication::barrier::ReadBarrier;
use crate::replication::log::LogEngine;
use crate::replication::machine::{MachinePaths, ShardMachine, SnapshotCounters};
use crate::replication::network::{NodeDirectory, ShardNetwork};
use crate::replication::{ShardNode, ShardRaft};
use crate::shard::{RebuiltIndex, Shard, ShardConfig, ShardError};

/// Consecutive restarts of one shard before the supervisor gives up on it.
pub const MAX_RESTARTS: u32 = 5;

pub(crate) type SharedShard = Arc<RwLock<Shard>>;

pub(crate) enum ShardSlot {
    /// Opening, restarting or dropping: requests get a retryable error.
    Unavailable,
    Ready(ReadyShard),
}

/// An open shard replica: its state, its actor and its Raft group member.
#[derive(Clone)]
pub(crate) struct ReadyShard {
    pub(crate) state: SharedShard,
    pub(crate) actor: ActorRef<ShardMsg>,
    pub(crate) raft: ShardRaft,
    pub(crate) barrier: Arc<ReadBarrier>,
    pub(crate) replica: ReplicaId,
}

/// What every shard replica of this node shares: who the node is, its Raft log, and how to
/// reach the other nodes.
pub struct ReplicationContext {
    pub node_id: String,
    pub data_dir: PathBuf,
    pub log: Arc<LogEngine>,
    pub transport: Arc<dyn Transport>,
    pub directory: Arc<NodeDirectory>,
    pub raft_config: Arc<openraft::Config>,
    pub counters: Arc<SnapshotCounters>,
}

impl ReplicationContext {
    pub(crate) fn snapshot_dir(&self, replica: ReplicaId) -> PathBuf {
        self.data_dir.join("snapshots").join(replica.0.to_string())
    }

    pub(crate) fn incoming_dir(&self, shard: ShardId) -> PathBuf {
        self.data_dir.join("incoming").join(shard.to_string())
    }
}

#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) shards: RwLock<HashMap<ShardId, (ShardSpec, ShardSlot)>>,
}

pub enum ShardMsg {
    /// Entries were applied: checkpoint or rebuild the FAISS index if due.
    Maintain,
    InstallRebuilt(Box<Result<RebuiltIndex, ShardError>>),
    /// The replica's Raft member stopped on a fatal error: fail, so the supervisor re-opens the
    /// shard from disk and starts a new member.
    Fail(String),
}

struct ShardActor;

struct ShardActorState {
    shard: SharedShard,
    raft: ShardRaft,
    rebuilding: bool,
}

struct ShardArgs {
    dir: PathBuf,
    spec: ShardSpec,
    config: ShardConfig,
    registry: Arc<Registry>,
    replication: Arc<ReplicationContext>,
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
            replication,
        } = args;
        let id = spec.id;
        let replica = spec
            .replica_on(&replication.node_id)
            .ok_or_else(|| format!("shard {id} has no replica on node {}", replication.node_id))?;
        let members: BTreeMap<u64, ShardNode> = spec
            .replicas
            .iter()
            .map(|member| {
                (
                    member.replica.0,
                    ShardNode {
                        node: member.node.clone(),
                    },
                )
            })
            .collect();
        let bootstrap = spec.bootstrap_replica() == Some(replica);
        let shard = tokio::task::spawn_blocking(move || Shard::open(&dir, spec, config)).await??;
        tracing::info!(shard = %id, replica = replica.0, vectors = shard.len(), "shard opened");
        let shard = Arc::new(RwLock::new(shard));
        let log = replication.log.replica(replica.0);
        let new_replica = log.is_empty().await?;
        let hook_target = myself.clone();
        let machine = ShardMachine::new(
            shard.clone(),
            MachinePaths {
                snapshots: replication.snapshot_dir(replica),
                incoming: replication.incoming_dir(id),
                trash_root: replication.data_dir.join("trash"),
            },
            replication.counters.clone(),
            Arc::new(move || {
                let _ = hook_target.cast(ShardMsg::Maintain);
            }),
        )?;
        let network = ShardNetwork {
            transport: replication.transport.clone(),
            directory: replication.directory.clone(),
            shard: id,
        };
        let raft = ShardRaft::new(
            replica.0,
            replication.raft_config.clone(),
            network,
            log,
            machine,
        )
        .await?;
        if new_replica && bootstrap {
            // Only the bootstrap replica, only while it has never voted or logged anything: the
            // others learn the membership from its first entries.
            match raft.initialize(members).await {
                Ok(()) => {
                    tracing::info!(shard = %id, replica = replica.0, "shard group initialized")
                }
                Err(error) => tracing::warn!(shard = %id, %error, "shard group not initialized"),
            }
        }
        let fatal_target = myself.clone();
        let barrier = ReadBarrier::new(
            id,
            raft.clone(),
            replication.raft_config.election_timeout_max,
            Box::new(move |reason| {
                let _ = fatal_target.cast(ShardMsg::Fail(reason));
            }),
        );
        // The slot was created before this actor started; if it is gone, the shard was dropped
        // while it opened, and must not come back.
        let published = match registry.shards.write().get_mut(&id) {
            Some((_, slot)) => {
                *slot = ShardSlot::Ready(ReadyShard {
                    state: shard.clone(),
                    actor: myself,
                    raft: raft.clone(),
                    barrier,
                    replica,
                });
                true
            }
            None => false,
        };
        if !published {
            let _ = raft.shutdown().await;
            return Err(format!("shard {id} was dropped while opening").into());
        }
        Ok(ShardActorState {
            shard,
            raft,
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
            ShardMsg::Maintain => self.maintain(&myself, state).await?,
            ShardMsg::Fail(reason) => return Err(reason.into()),
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
        if let Err(error) = state.raft.shutdown().await {
            tracing::warn!(%error, "stopping the shard's raft member");
        }
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

/// Supervises shard actors: spawns them linked, restarts them when they fail.
pub(crate) struct Supervisor;

impl Supervisor {
    /// Starts the supervisor of the shards under `data_dir`, publishing them in `registry`.
    pub(crate) async fn spawn(
        data_dir: &Path,
        config: ShardConfig,
        registry: Arc<Registry>,
        replication: Arc<ReplicationContext>,
    ) -> Result<ActorRef<SupervisorMsg>, ractor::SpawnErr> {
        let state = SupervisorState {
            data_dir: data_dir.to_owned(),
            config,
            registry,
            replication,
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
    replication: Arc<ReplicationContext>,
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
            replication: self.replication.clone(),
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
