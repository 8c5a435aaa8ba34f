//! The control plane's durable storage, one redb file per coordinator: the Raft log, the vote,
//! and the latest snapshot of the state machine.
//!
//! Every write that openraft must be able to rely on after a crash (log appends, the vote, a
//! snapshot) is committed with `Durability::Immediate` (fsync) before it is reported done, and
//! every redb call runs on the blocking pool.
//!
//! The state machine itself ([`StateMachine`]) lives in memory, shared with the API through a
//! lock; on start it is restored from the stored snapshot, and openraft re-applies the committed
//! log entries after it.
//!
//! Every stored value is encoded by [`crate::catalog::format`] (a header with the catalog format
//! version, then postcard), and the file carries a format marker: [`open`] refuses a file of
//! another format version, or one written before the format was versioned, before anything in it
//! is read.

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership, Vote,
};
use parking_lot::RwLock;
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};

use super::types::{CommandResult, CoordinatorNode, LogId, StorageError, TypeConfig};
use crate::catalog::format::{self, FormatError, CATALOG_FORMAT_VERSION};
use crate::catalog::CatalogState;

type Entry = openraft::Entry<TypeConfig>;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
const SNAPSHOT_META: &str = "snapshot_meta";
const SNAPSHOT_DATA: &str = "snapshot_data";
/// The format marker: the encoding of `()`, i.e. the bare header of the file's format version.
const FORMAT: &str = "catalog_format";

fn any(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, AnyError> {
    format::encode(value).map_err(any)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AnyError> {
    format::decode(bytes).map_err(any)
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Storage(Box<redb::Error>),
    /// Raft data without a format marker: written before the catalog format was versioned.
    #[error(
        "it holds Raft data written before catalog formats were versioned (format 0); this \
         build reads catalog format version {CATALOG_FORMAT_VERSION} only and does not migrate \
         older data: start with a new data directory"
    )]
    Unversioned,
    #[error("its format marker: {0}")]
    Format(FormatError),
}

impl<E: Into<redb::Error>> From<E> for OpenError {
    fn from(e: E) -> Self {
        OpenError::Storage(Box::new(e.into()))
    }
}

/// Opens (or creates) the coordinator's Raft database, in this build's catalog format: a new file
/// gets the format marker; an existing one must have the marker of this format version.
pub fn open(path: &Path) -> Result<Arc<Database>, OpenError> {
    open_database(Database::create(path)?)
}

/// [`open`] over a storage backend of the caller's: tests count its fsyncs.
pub fn open_with_backend(backend: impl redb::StorageBackend) -> Result<Arc<Database>, OpenError> {
    open_database(Database::builder().create_with_backend(backend)?)
}

fn open_database(db: Database) -> Result<Arc<Database>, OpenError> {
    let txn = db.begin_write()?;
    {
        let log = txn.open_table(LOG)?;
        let mut meta = txn.open_table(META)?;
        let marker = meta.get(FORMAT)?.map(|value| value.value().to_vec());
        match marker {
            Some(marker) => format::decode::<()>(&marker).map_err(OpenError::Format)?,
            None if log.first()?.is_none() && meta.first()?.is_none() => {
                let marker = format::encode(&()).map_err(OpenError::Format)?;
                meta.insert(FORMAT, marker.as_slice())?;
            }
            None => return Err(OpenError::Unversioned),
        }
    }
    txn.commit()?;
    Ok(Arc::new(db))
}

/// Runs a redb operation on the blocking pool.
async fn blocking<T: Send + 'static>(
    db: &Arc<Database>,
    f: impl FnOnce(&Database) -> Result<T, AnyError> + Send + 'static,
) -> Result<T, AnyError> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || f(&db))
        .await
        .map_err(any)?
}

fn read_meta<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, AnyError> {
    let txn = db.begin_read().map_err(any)?;
    let table = txn.open_table(META).map_err(any)?;
    match table.get(key).map_err(any)? {
        Some(value) => Ok(Some(decode(value.value())?)),
        None => Ok(None),
    }
}

fn write_meta(
    db: &Database,
    durability: Durability,
    values: &[(&str, Vec<u8>)],
) -> Result<(), AnyError> {
    let mut txn = db.begin_write().map_err(any)?;
    txn.set_durability(durability);
    {
        let mut table = txn.open_table(META).map_err(any)?;
        for (key, value) in values {
            table.insert(*key, value.as_slice()).map_err(any)?;
        }
    }
    txn.commit().map_err(any)
}

/// The Raft log and vote.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> Self {
        LogStore { db }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        blocking(&self.db, move |db| {
            let txn = db.begin_read().map_err(any)?;
            let table = txn.open_table(LOG).map_err(any)?;
            let mut entries = Vec::new();
            for row in table.range::<u64>((start, end)).map_err(any)? {
                let (_, value) = row.map_err(any)?;
                entries.push(decode(value.value())?);
            }
            Ok(entries)
        })
        .await
        .map_err(|e| StorageIOError::read_logs(e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        blocking(&self.db, |db| {
            let last_purged: Option<LogId> = read_meta(db, LAST_PURGED)?;
            let txn = db.begin_read().map_err(any)?;
            let table = txn.open_table(LOG).map_err(any)?;
            let last = match table.last().map_err(any)? {
                Some((_, value)) => Some(decode::<Entry>(value.value())?.log_id),
                None => last_purged,
            };
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last,
            })
        })
        .await
        .map_err(|e| StorageIOError::read_logs(e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let bytes = encode(vote).map_err(StorageIOError::write_vote)?;
        blocking(&self.db, move |db| {
            write_meta(db, Durability::Immediate, &[(VOTE, bytes)])
        })
        .await
        .map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        blocking(&self.db, |db| read_meta(db, VOTE))
            .await
            .map_err(|e| StorageIOError::read_vote(e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not fsynced on its own: losing it only means re-applying from the snapshot, which
        // openraft does anyway once the leader tells us the commit index again.
        let bytes = encode(&committed).map_err(StorageIOError::write)?;
        blocking(&self.db, move |db| {
            write_meta(db, Durability::None, &[(COMMITTED, bytes)])
        })
        .await
        .map_err(|e| StorageIOError::write(e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        blocking(&self.db, |db| {
            Ok(read_meta::<Option<LogId>>(db, COMMITTED)?.flatten())
        })
        .await
        .map_err(|e| StorageIOError::read(e).into())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let rows = entries
            .into_iter()
            .map(|entry| Ok((entry.log_id.index, encode(&entry)?)))
            .collect::<Result<Vec<_>, AnyError>>()
            .map_err(StorageIOError::write_logs)?;
        let result = blocking(&self.db, move |db| {
            let mut txn = db.begin_write().map_err(any)?;
            txn.set_durability(Durability::Immediate);
            {
                let mut table = txn.open_table(LOG).map_err(any)?;
                for (index, bytes) in &rows {
                    table.insert(*index, bytes.as_slice()).map_err(any)?;
                }
            }
            txn.commit().map_err(any)
        })
        .await;
        match result {
            Ok(()) => {
                // Reported durable only now, after the fsync.
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        blocking(&self.db, move |db| {
            let mut txn = db.begin_write().map_err(any)?;
            txn.set_durability(Durability::Immediate);
            {
                let mut table = txn.open_table(LOG).map_err(any)?;
                table.retain_in(log_id.index.., |_, _| false).map_err(any)?;
            }
            txn.commit().map_err(any)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = encode(&log_id).map_err(StorageIOError::write_logs)?;
        blocking(&self.db, move |db| {
            let mut txn = db.begin_write().map_err(any)?;
            txn.set_durability(Durability::Immediate);
            {
                let mut meta = txn.open_table(META).map_err(any)?;
                meta.insert(LAST_PURGED, bytes.as_slice()).map_err(any)?;
                let mut table = txn.open_table(LOG).map_err(any)?;
                table
                    .retain_in(..=log_id.index, |_, _| false)
                    .map_err(any)?;
            }
            txn.commit().map_err(any)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(e).into())
    }
}

type Meta = SnapshotMeta<u64, CoordinatorNode>;

/// The catalog state machine.
pub struct StateMachine {
    db: Arc<Database>,
    state: Arc<RwLock<CatalogState>>,
    applied: Option<LogId>,
    membership: StoredMembership<u64, CoordinatorNode>,
}

impl StateMachine {
    /// Restores the state from the stored snapshot, if any. `state` is the lock the API reads.
    pub async fn open(
        db: Arc<Database>,
        state: Arc<RwLock<CatalogState>>,
    ) -> Result<Self, StorageError> {
        let mut machine = StateMachine {
            db,
            state,
            applied: None,
            membership: StoredMembership::default(),
        };
        if let Some((meta, data)) = machine.stored_snapshot().await? {
            machine
                .restore(&meta, &data)
                .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), e))?;
        }
        Ok(machine)
    }

    async fn stored_snapshot(&self) -> Result<Option<(Meta, Vec<u8>)>, StorageError> {
        blocking(&self.db, |db| {
            let meta: Option<Meta> = read_meta(db, SNAPSHOT_META)?;
            let txn = db.begin_read().map_err(any)?;
            let table = txn.open_table(META).map_err(any)?;
            let data = table.get(SNAPSHOT_DATA).map_err(any)?;
            Ok(match (meta, data) {
                (Some(meta), Some(data)) => Some((meta, data.value().to_vec())),
                _ => None,
            })
        })
        .await
        .map_err(|e| StorageIOError::read_snapshot(None, e).into())
    }

    fn restore(&mut self, meta: &Meta, data: &[u8]) -> Result<(), AnyError> {
        *self.state.write() = format::decode_snapshot(data).map_err(any)?;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn save_snapshot(&self, meta: &Meta, data: Vec<u8>) -> Result<(), StorageError> {
        let meta_bytes =
            encode(meta).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        blocking(&self.db, move |db| {
            write_meta(
                db,
                Durability::Immediate,
                &[(SNAPSHOT_DATA, data), (SNAPSHOT_META, meta_bytes)],
            )
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e).into())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let data = format::encode_snapshot(&self.state.read())
            .map_err(|e| StorageIOError::write_snapshot(None, any(e)))?;
        let snapshot_id = format!(
            "{}-{}",
            self.applied.map(|log_id| log_id.index).unwrap_or(0),
            uuid::Uuid::new_v4()
        );
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        self.save_snapshot(&meta, data.clone()).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

/// Builds snapshots from a copy of the state taken when openraft asks for a builder.
pub struct SnapshotBuilder {
    machine: StateMachine,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.machine.build_snapshot().await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, CoordinatorNode>), StorageError> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut results = Vec::new();
        for entry in entries {
            self.applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => results.push(Ok(())),
                EntryPayload::Normal(proposal) => {
                    let result = self.state.write().apply(proposal.id, proposal.command);
                    results.push(result);
                }
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    results.push(Ok(()));
                }
            }
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // A detached copy: the snapshot reflects the state at this point of the log.
        SnapshotBuilder {
            machine: StateMachine {
                db: self.db.clone(),
                state: Arc::new(RwLock::new(self.state.read().clone())),
                applied: self.applied,
                membership: self.membership.clone(),
            },
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        self.restore(meta, &data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), e))?;
        self.save_snapshot(meta, data).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.stored_snapshot().await?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
