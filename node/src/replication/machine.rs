//! The shard as its group's state machine.
//!
//! Applying a write entry is the shard's own commit + install ([`crate::shard::Shard`]), with the
//! entry's log id and the group's membership committed in the same redb transaction as the
//! records: after a crash the shard says exactly which entry it applied last, and openraft
//! re-applies the committed entries after it. Entries that change no record (a leader's blank
//! entry, a membership change, a refused or repeated batch) are not persisted one by one:
//! applying them again after a restart gives the same result. Before a snapshot is built the
//! applied state is persisted, so the log is never purged past what the store says it applied.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership,
};
use parking_lot::{Mutex, RwLockUpgradableReadGuard};
use quiver_proto::NodeError;
use serde::{Deserialize, Serialize};

use super::{snapshot, LogId, Membership, ShardApplied, ShardNode, ShardTypeConfig, StorageError};
use crate::shard::{Shard, ShardError};
use crate::supervisor::SharedShard;

type Entry = openraft::Entry<ShardTypeConfig>;
type Meta = SnapshotMeta<u64, ShardNode>;

fn any(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

/// What the shard's store records about the group: the last applied entry and membership.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AppliedState {
    pub applied: Option<LogId>,
    pub membership: Membership,
}

impl AppliedState {
    /// Decodes what the store holds; nothing (or the empty value a non-replicated commit
    /// leaves) is the initial state.
    pub fn decode(bytes: Option<&[u8]>) -> Result<AppliedState, postcard::Error> {
        match bytes {
            None | Some([]) => Ok(AppliedState::default()),
            Some(bytes) => postcard::from_bytes(bytes),
        }
    }

    fn encode(&self) -> Result<Vec<u8>, AnyError> {
        postcard::to_stdvec(self).map_err(any)
    }
}

/// Where a replica keeps its snapshot files, and where an incoming snapshot's store is built.
#[derive(Debug, Clone)]
pub struct MachinePaths {
    /// `<data-dir>/snapshots/<replica>`: `<snapshot id>.bin` files and `current` (the meta of
    /// the newest).
    pub snapshots: PathBuf,
    /// `<data-dir>/incoming/<shard>`.
    pub incoming: PathBuf,
    /// `<data-dir>/trash/<shard>-<n>`: where a replaced shard directory goes to be removed.
    pub trash_root: PathBuf,
}

/// Snapshots built and installed on this node (for `/metrics`).
#[derive(Debug, Default)]
pub struct SnapshotCounters {
    pub snapshots_built: AtomicU64,
    pub snapshots_installed: AtomicU64,
}

/// Called after every applied batch of entries (the shard actor checks its FAISS maintenance).
pub type AppliedHook = Arc<dyn Fn() + Send + Sync>;

pub struct ShardMachine {
    shard: SharedShard,
    paths: MachinePaths,
    state: AppliedState,
    /// The receiving snapshot file, between `begin_receiving_snapshot` and `install_snapshot`.
    receiving: Option<PathBuf>,
    /// Serializes publishing a snapshot as current (builders run beside the machine).
    publish: Arc<Mutex<()>>,
    on_applied: AppliedHook,
    counters: Arc<SnapshotCounters>,
}

impl ShardMachine {
    // openraft's storage error, as every method of the state machine returns.
    #[allow(clippy::result_large_err)]
    pub fn new(
        shard: SharedShard,
        paths: MachinePaths,
        counters: Arc<SnapshotCounters>,
        on_applied: AppliedHook,
    ) -> Result<ShardMachine, StorageError> {
        let state = AppliedState::decode(shard.read().raft_state())
            .map_err(|e| StorageIOError::read_state_machine(any(e)))?;
        std::fs::create_dir_all(&paths.snapshots)
            .map_err(|e| StorageIOError::write_snapshot(None, any(e)))?;
        Ok(ShardMachine {
            shard,
            paths,
            state,
            receiving: None,
            publish: Arc::new(Mutex::new(())),
            on_applied,
            counters,
        })
    }
}

/// Applies one batch of entries to the shard, on a blocking thread.
fn apply_entries(
    shard: &SharedShard,
    state: &mut AppliedState,
    entries: Vec<Entry>,
) -> Result<Vec<ShardApplied>, AnyError> {
    let mut results = Vec::with_capacity(entries.len());
    for entry in entries {
        state.applied = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Blank => results.push(Ok(shard.read().applied_seq())),
            EntryPayload::Membership(membership) => {
                state.membership = StoredMembership::new(Some(entry.log_id), membership);
                results.push(Ok(shard.read().applied_seq()));
            }
            EntryPayload::Normal(command) => {
                let guard = shard.upgradable_read();
                if let Some(seq) = guard.applied_request(command.request_id) {
                    results.push(Ok(seq));
                    continue;
                }
                match guard.commit_entry(command.ops, Some(command.request_id), state.encode()?) {
                    Ok(prepared) => {
                        let mut guard = RwLockUpgradableReadGuard::upgrade(guard);
                        // Durable but not visible: the machine must stop, and the shard is
                        // re-opened from its store, where the batch is.
                        let seq = guard.install(prepared).map_err(any)?;
                        results.push(Ok(seq));
                    }
                    // Refused the same way on every replica: an answer, not a failure.
                    Err(ShardError::Invalid(message)) => {
                        results.push(Err(NodeError::InvalidRequest(message)))
                    }
                    Err(error) => return Err(any(error)),
                }
            }
        }
    }
    Ok(results)
}

impl RaftStateMachine<ShardTypeConfig> for ShardMachine {
    type SnapshotBuilder = ShardSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        Ok((self.state.applied, self.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ShardApplied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let shard = self.shard.clone();
        let mut state = self.state.clone();
        let (state, results) = tokio::task::spawn_blocking(move || {
            let results = apply_entries(&shard, &mut state, entries);
            (state, results)
        })
        .await
        .map_err(|e| StorageIOError::apply(self.state.applied.unwrap_or_default(), any(e)))?;
        self.state = state;
        let results = results
            .map_err(|e| StorageIOError::apply(self.state.applied.unwrap_or_default(), e))?;
        (self.on_applied)();
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Taken here, between two applies: the store's read transaction and the applied state
        // describe the same point of the log.
        let store = self.shard.read().store();
        let view = store.begin_snapshot().map_err(any);
        ShardSnapshotBuilder {
            shard: self.shard.clone(),
            view,
            state: self.state.clone(),
            snapshots: self.paths.snapshots.clone(),
            publish: self.publish.clone(),
            counters: self.counters.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = self.paths.snapshots.join("receiving.bin");
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, any(e)))?;
        self.receiving = Some(path);
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let error = |e: AnyError| StorageIOError::read_snapshot(Some(meta.signature()), e);
        let received = self
            .receiving
            .take()
            .ok_or_else(|| error(AnyError::error("no snapshot was being received")))?;
        let mut file = *snapshot;
        use tokio::io::AsyncWriteExt;
        file.flush().await.map_err(|e| error(any(e)))?;
        let file = file.into_std().await;
        let state = AppliedState {
            applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let raft_state = state.encode().map_err(error)?;
        let shard = self.shard.clone();
        let paths = self.paths.clone();
        let publish = self.publish.clone();
        let meta_owned = meta.clone();
        tokio::task::spawn_blocking(move || -> Result<(), AnyError> {
            file.sync_all().map_err(any)?;
            install(&shard, &paths, file, raft_state)?;
            let path = paths
                .snapshots
                .join(format!("{}.bin", meta_owned.snapshot_id));
            std::fs::rename(&received, &path).map_err(any)?;
            publish_current(&paths.snapshots, &publish, &meta_owned)
        })
        .await
        .map_err(|e| error(any(e)))?
        .map_err(error)?;
        tracing::info!(shard = %self.shard.read().spec().id, snapshot = %meta.snapshot_id, "installed a snapshot from the leader");
        self.state = state;
        self.counters
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<ShardTypeConfig>>, StorageError> {
        let Some(meta) = read_current(&self.paths.snapshots)
            .map_err(|e| StorageIOError::read_snapshot(None, e))?
        else {
            return Ok(None);
        };
        let path = self
            .paths
            .snapshots
            .join(format!("{}.bin", meta.snapshot_id));
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), any(e)))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}

/// Loads a received snapshot into a new store and swaps it in for the shard, which is re-opened
/// from it (FAISS rebuilt from the records). Readers wait meanwhile.
fn install(
    shard: &SharedShard,
    paths: &MachinePaths,
    file: std::fs::File,
    raft_state: Vec<u8>,
) -> Result<(), AnyError> {
    use std::io::Seek;
    let mut file = file;
    file.rewind().map_err(any)?;
    let spec = shard.read().spec().clone();
    snapshot::load(file, &paths.incoming, &spec, raft_state).map_err(any)?;
    let mut guard = shard.write();
    let dir = guard.dir().to_owned();
    let trash = paths.trash_root.join(format!(
        "{}-{}",
        spec.id,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let config = guard.config().clone();
    snapshot::swap_in(&paths.incoming, &dir, &trash).map_err(any)?;
    *guard = Shard::open(&dir, spec, config).map_err(any)?;
    Ok(())
}

const CURRENT: &str = "current";

fn read_current(dir: &Path) -> Result<Option<Meta>, AnyError> {
    match std::fs::read(dir.join(CURRENT)) {
        Ok(bytes) => postcard::from_bytes(&bytes).map(Some).map_err(any),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(any(e)),
    }
}

/// Makes `meta` (whose `<id>.bin` is in place) the current snapshot unless a newer one is, and
/// removes the files of every other snapshot.
fn publish_current(dir: &Path, lock: &Mutex<()>, meta: &Meta) -> Result<(), AnyError> {
    let _guard = lock.lock();
    if let Some(current) = read_current(dir)? {
        if current.last_log_id > meta.last_log_id {
            let _ = std::fs::remove_file(dir.join(format!("{}.bin", meta.snapshot_id)));
            return Ok(());
        }
    }
    let tmp = dir.join("current.tmp");
    let bytes = postcard::to_stdvec(meta).map_err(any)?;
    let file = std::fs::File::create(&tmp).map_err(any)?;
    {
        use std::io::Write;
        let mut file = &file;
        file.write_all(&bytes).map_err(any)?;
    }
    file.sync_all().map_err(any)?;
    std::fs::rename(&tmp, dir.join(CURRENT)).map_err(any)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(any)?;
    let keep = format!("{}.bin", meta.snapshot_id);
    for entry in std::fs::read_dir(dir).map_err(any)?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Open files stay readable after removal: a transfer in progress is not cut.
        if name.ends_with(".bin") && name != keep && name != "receiving.bin" {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Builds a snapshot file from the read transaction taken when openraft asked for a builder.
pub struct ShardSnapshotBuilder {
    shard: SharedShard,
    view: Result<crate::store::StoreSnapshot, AnyError>,
    state: AppliedState,
    snapshots: PathBuf,
    publish: Arc<Mutex<()>>,
    counters: Arc<SnapshotCounters>,
}

impl RaftSnapshotBuilder<ShardTypeConfig> for ShardSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<ShardTypeConfig>, StorageError> {
        let error = |e: AnyError| StorageIOError::write_snapshot(None, e);
        let view = std::mem::replace(&mut self.view, Err(AnyError::error("used")));
        let view = view.map_err(error)?;
        let state = self.state.clone();
        let meta = Meta {
            last_log_id: state.applied,
            last_membership: state.membership.clone(),
            snapshot_id: format!(
                "{}-{:032x}",
                state.applied.map(|id| id.index).unwrap_or(0),
                rand_id()
            ),
        };
        let shard = self.shard.clone();
        let dir = self.snapshots.clone();
        let publish = self.publish.clone();
        let meta_owned = meta.clone();
        let path = tokio::task::spawn_blocking(move || -> Result<PathBuf, AnyError> {
            // The log is purged up to this snapshot: the store must say it applied that far
            // (entries without records are not persisted one by one). Records applied after the
            // read transaction only move the stored state further.
            persist_at_least(&shard, &state)?;
            let path = dir.join(format!("{}.bin", meta_owned.snapshot_id));
            snapshot::write(&view, &path).map_err(any)?;
            publish_current(&dir, &publish, &meta_owned)?;
            Ok(path)
        })
        .await
        .map_err(|e| error(any(e)))?
        .map_err(error)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| error(any(e)))?;
        self.counters
            .snapshots_built
            .fetch_add(1, Ordering::Relaxed);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

/// Commits `state` as the shard's applied state unless the store is already past it.
fn persist_at_least(shard: &SharedShard, state: &AppliedState) -> Result<(), AnyError> {
    let mut guard = shard.write();
    let stored = AppliedState::decode(guard.raft_state()).map_err(any)?;
    if stored.applied >= state.applied {
        return Ok(());
    }
    guard.save_raft_state(state.encode()?).map_err(any)
}

fn rand_id() -> u128 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    nanos ^ (u128::from(std::process::id()) << 96)
}
