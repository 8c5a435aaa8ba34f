//! The node's Raft log: one redb database (`<data-dir>/raft-log.redb`) for every shard replica
//! the node hosts, keyed by replica id.
//!
//! Reads go straight to the database. Every change (appends, votes, truncations, purges) goes to
//! one writer thread, which commits whatever is queued, from any number of groups, in a single
//! transaction with one fsync, and only then answers each caller: appends are reported durable
//! (openraft's `LogFlushed`) after the fsync that covers them. This is group commit: the fsyncs a
//! node does per second do not grow with the number of shards it hosts.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, RaftLogReader, StorageIOError, Vote};
use redb::{Database, Durability, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{LogId, ShardTypeConfig, StorageError};

type Entry = openraft::Entry<ShardTypeConfig>;

/// `(replica, log index)` -> encoded entry.
const ENTRIES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("entries");
/// `(replica, what)` -> encoded value, `what` one of the constants below.
const STATE: TableDefinition<(u64, u8), &[u8]> = TableDefinition::new("state");

const VOTE: u8 = 0;
const COMMITTED: u8 = 1;
const LAST_PURGED: u8 = 2;

/// Most changes one group commit takes from the queue.
const MAX_GROUP: usize = 512;
/// Changes waiting for the writer; callers wait when it is full.
const QUEUE: usize = 4_096;

fn any(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, AnyError> {
    postcard::to_stdvec(value).map_err(any)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AnyError> {
    postcard::from_bytes(bytes).map_err(any)
}

enum Change {
    Append(Vec<(u64, Vec<u8>)>),
    SetState(u8, Vec<u8>),
    /// Removes the entries from this index on.
    Truncate(u64),
    /// Removes the entries up to this index, and records the purged log id.
    Purge(u64, Vec<u8>),
    /// Removes everything of the replica (it was dropped).
    Remove,
}

struct Job {
    replica: u64,
    change: Change,
    done: oneshot::Sender<Result<(), String>>,
}

/// The shared log database and its writer.
pub struct LogEngine {
    db: Arc<Database>,
    queue: mpsc::Sender<Job>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogOpenError {
    #[error("opening {path}: {source}")]
    Open {
        path: String,
        source: Box<redb::Error>,
    },
    #[error("starting the log writer: {0}")]
    Thread(std::io::Error),
}

impl LogEngine {
    /// Opens (or creates) the log database and starts its writer thread, which ends when the
    /// engine and every handle on it are dropped.
    pub fn open(path: &Path) -> Result<Arc<LogEngine>, LogOpenError> {
        let open_error = |source: redb::Error| LogOpenError::Open {
            path: path.display().to_string(),
            source: Box::new(source),
        };
        let db = Database::create(path).map_err(|e| open_error(e.into()))?;
        Self::open_database(db, open_error)
    }

    /// [`LogEngine::open`] over a storage backend of the caller's: tests count its fsyncs.
    pub fn open_with_backend(
        backend: impl redb::StorageBackend,
    ) -> Result<Arc<LogEngine>, LogOpenError> {
        let open_error = |source: redb::Error| LogOpenError::Open {
            path: "(storage backend)".into(),
            source: Box::new(source),
        };
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(|e| open_error(e.into()))?;
        Self::open_database(db, open_error)
    }

    fn open_database(
        db: Database,
        open_error: impl Fn(redb::Error) -> LogOpenError,
    ) -> Result<Arc<LogEngine>, LogOpenError> {
        let txn = db.begin_write().map_err(|e| open_error(e.into()))?;
        txn.open_table(ENTRIES).map_err(|e| open_error(e.into()))?;
        txn.open_table(STATE).map_err(|e| open_error(e.into()))?;
        txn.commit().map_err(|e| open_error(e.into()))?;
        let db = Arc::new(db);
        let (queue, jobs) = mpsc::channel(QUEUE);
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || write_loop(&writer_db, jobs))
            .map_err(LogOpenError::Thread)?;
        Ok(Arc::new(LogEngine { db, queue }))
    }

    /// The log of one replica.
    pub fn replica(self: &Arc<Self>, replica: u64) -> ShardLog {
        ShardLog {
            engine: self.clone(),
            replica,
        }
    }

    async fn submit(&self, replica: u64, change: Change) -> Result<(), AnyError> {
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Job {
                replica,
                change,
                done,
            })
            .await
            .map_err(|_| AnyError::error("the raft log writer stopped"))?;
        answer
            .await
            .map_err(|_| AnyError::error("the raft log writer stopped"))?
            .map_err(AnyError::error)
    }

    /// Removes every entry and state of a replica (after its shard was dropped).
    pub async fn remove(&self, replica: u64) -> Result<(), AnyError> {
        self.submit(replica, Change::Remove).await
    }

    /// Runs a read on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, AnyError> + Send + 'static,
    ) -> Result<T, AnyError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(any)?
    }
}

/// The writer: takes what is queued (at least one change), commits it in one fsynced
/// transaction, answers every change of the group with the outcome.
fn write_loop(db: &Database, mut jobs: mpsc::Receiver<Job>) {
    while let Some(first) = jobs.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let result = commit_group(db, &group).map_err(|e| e.to_string());
        if let Err(error) = &result {
            tracing::error!(%error, "raft log commit failed");
        }
        for job in group {
            let _ = job.done.send(result.clone());
        }
    }
}

// redb's error stays on the writer thread: its one caller turns it into a string.
#[allow(clippy::result_large_err)]
fn commit_group(db: &Database, group: &[Job]) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    {
        let mut entries = txn.open_table(ENTRIES)?;
        let mut state = txn.open_table(STATE)?;
        for job in group {
            let replica = job.replica;
            match &job.change {
                Change::Append(rows) => {
                    for (index, bytes) in rows {
                        entries.insert((replica, *index), bytes.as_slice())?;
                    }
                }
                Change::SetState(what, bytes) => {
                    state.insert((replica, *what), bytes.as_slice())?;
                }
                Change::Truncate(from) => {
                    entries.retain_in((replica, *from)..=(replica, u64::MAX), |_, _| false)?;
                }
                Change::Purge(upto, purged) => {
                    entries.retain_in((replica, 0)..=(replica, *upto), |_, _| false)?;
                    state.insert((replica, LAST_PURGED), purged.as_slice())?;
                }
                Change::Remove => {
                    entries.retain_in((replica, 0)..=(replica, u64::MAX), |_, _| false)?;
                    state.retain_in((replica, 0)..=(replica, u8::MAX), |_, _| false)?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

fn read_state<T: DeserializeOwned>(
    db: &Database,
    replica: u64,
    what: u8,
) -> Result<Option<T>, AnyError> {
    let txn = db.begin_read().map_err(any)?;
    let table = txn.open_table(STATE).map_err(any)?;
    let value = table.get((replica, what)).map_err(any)?;
    value.map(|value| decode(value.value())).transpose()
}

/// One replica's view of the shared log: openraft's log storage for its group.
#[derive(Clone)]
pub struct ShardLog {
    engine: Arc<LogEngine>,
    replica: u64,
}

impl ShardLog {
    /// Whether the replica has never stored a vote or an entry: a replica that is new here.
    pub async fn is_empty(&self) -> Result<bool, StorageError> {
        let replica = self.replica;
        self.engine
            .read(move |db| {
                let txn = db.begin_read().map_err(any)?;
                let entries = txn.open_table(ENTRIES).map_err(any)?;
                let state = txn.open_table(STATE).map_err(any)?;
                let no_entry = entries
                    .range((replica, 0)..=(replica, u64::MAX))
                    .map_err(any)?
                    .next()
                    .is_none();
                let no_state = state
                    .range((replica, 0)..=(replica, u8::MAX))
                    .map_err(any)?
                    .next()
                    .is_none();
                Ok(no_entry && no_state)
            })
            .await
            .map_err(|e| StorageIOError::read_logs(e).into())
    }
}

impl RaftLogReader<ShardTypeConfig> for ShardLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let replica = self.replica;
        let start = match range.start_bound() {
            Bound::Included(&i) => Bound::Included((replica, i)),
            Bound::Excluded(&i) => Bound::Excluded((replica, i)),
            Bound::Unbounded => Bound::Included((replica, 0)),
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Bound::Included((replica, i)),
            Bound::Excluded(&i) => Bound::Excluded((replica, i)),
            Bound::Unbounded => Bound::Included((replica, u64::MAX)),
        };
        self.engine
            .read(move |db| {
                let txn = db.begin_read().map_err(any)?;
                let table = txn.open_table(ENTRIES).map_err(any)?;
                let mut entries = Vec::new();
                for row in table.range::<(u64, u64)>((start, end)).map_err(any)? {
                    let (_, value) = row.map_err(any)?;
                    entries.push(decode(value.value())?);
                }
                Ok(entries)
            })
            .await
            .map_err(|e| StorageIOError::read_logs(e).into())
    }
}

impl RaftLogStorage<ShardTypeConfig> for ShardLog {
    type LogReader = ShardLog;

    async fn get_log_state(&mut self) -> Result<LogState<ShardTypeConfig>, StorageError> {
        let replica = self.replica;
        self.engine
            .read(move |db| {
                let last_purged: Option<LogId> = read_state(db, replica, LAST_PURGED)?;
                let txn = db.begin_read().map_err(any)?;
                let table = txn.open_table(ENTRIES).map_err(any)?;
                let last = table
                    .range((replica, 0)..=(replica, u64::MAX))
                    .map_err(any)?
                    .next_back()
                    .transpose()
                    .map_err(any)?;
                let last = match last {
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
        self.engine
            .submit(self.replica, Change::SetState(VOTE, bytes))
            .await
            .map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        let replica = self.replica;
        self.engine
            .read(move |db| read_state(db, replica, VOTE))
            .await
            .map_err(|e| StorageIOError::read_vote(e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = encode(&committed).map_err(StorageIOError::write)?;
        self.engine
            .submit(self.replica, Change::SetState(COMMITTED, bytes))
            .await
            .map_err(|e| StorageIOError::write(e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let replica = self.replica;
        self.engine
            .read(move |db| Ok(read_state::<Option<LogId>>(db, replica, COMMITTED)?.flatten()))
            .await
            .map_err(|e| StorageIOError::read(e).into())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<ShardTypeConfig>,
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
        match self.engine.submit(self.replica, Change::Append(rows)).await {
            Ok(()) => {
                // Reported durable only now, after the group's fsync.
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
        self.engine
            .submit(self.replica, Change::Truncate(log_id.index))
            .await
            .map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = encode(&log_id).map_err(StorageIOError::write_logs)?;
        self.engine
            .submit(self.replica, Change::Purge(log_id.index, bytes))
            .await
            .map_err(|e| StorageIOError::write_logs(e).into())
    }
}
