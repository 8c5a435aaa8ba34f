//! The durable half of a shard: one redb database per shard.
//!
//! Tables: `records` maps a vector key to its stored record (internal id, float32 vector,
//! metadata); `meta` holds the applied sequence number and the next internal id; `raft` holds the
//! shard group's applied state (the last applied log id and membership, encoded by
//! [`crate::replication`]); `requests` maps the request ids of the last applied batches to their
//! sequence numbers (retries apply once). A write batch is one redb transaction, records and
//! applied state together, committed with immediate durability (fsync).

use std::path::{Path, PathBuf};

use quiver_proto::{Metadata, ShardSpec};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SPEC: TableDefinition<&str, &[u8]> = TableDefinition::new("spec");
const RAFT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft");
const REQUESTS: TableDefinition<u128, u64> = TableDefinition::new("requests");

const APPLIED_SEQ: &str = "applied_seq";
const NEXT_ID: &str = "next_id";
const APPLIED: &str = "applied";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Boxed: redb's error is large and this travels through every `Result` of the shard.
    #[error("redb: {0}")]
    Redb(Box<redb::Error>),
    #[error("corrupt record for key {key:?}: {source}")]
    Corrupt {
        key: String,
        source: postcard::Error,
    },
    #[error("encoding: {0}")]
    Encode(#[from] postcard::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Redb(Box::new(e.into())) }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub id: u64,
    pub vector: Vec<f32>,
    pub metadata: Metadata,
}

/// A change to one key inside a batch, in the order the batch applies them.
pub enum RecordChange<'a> {
    Upsert {
        key: &'a str,
        record: &'a StoredRecord,
    },
    Remove {
        key: &'a str,
    },
}

pub struct ShardStore {
    db: Database,
    dir: PathBuf,
}

/// Everything read back at start-up.
pub struct LoadedShard {
    pub applied_seq: u64,
    pub next_id: u64,
    pub records: Vec<(String, StoredRecord)>,
    /// The replication layer's applied state, if a batch or membership was ever applied.
    pub raft_state: Option<Vec<u8>>,
    /// `(request id, sequence number)` of the remembered batches, oldest first.
    pub requests: Vec<(u128, u64)>,
}

/// The request-id bookkeeping of one batch: remember `id` at the batch's sequence number and
/// forget `evict` (the oldest remembered id), keeping the table bounded.
#[derive(Debug, Clone, Copy)]
pub struct RequestRecord {
    pub id: u128,
    pub evict: Option<u128>,
}

/// A read transaction over a whole store, for snapshots.
pub struct StoreSnapshot {
    txn: redb::ReadTransaction,
}

impl StoreSnapshot {
    /// `(applied_seq, next_id)`.
    pub fn counters(&self) -> Result<(u64, u64), StoreError> {
        let meta = self.txn.open_table(META)?;
        let applied_seq = meta.get(APPLIED_SEQ)?.map(|v| v.value()).unwrap_or(0);
        let next_id = meta.get(NEXT_ID)?.map(|v| v.value()).unwrap_or(0);
        Ok((applied_seq, next_id))
    }

    /// The replication layer's applied state as committed.
    pub fn raft_state(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let table = self.txn.open_table(RAFT)?;
        let value = table.get(APPLIED)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// The remembered request ids with their sequence numbers, oldest first.
    pub fn requests(&self) -> Result<Vec<(u128, u64)>, StoreError> {
        let mut requests = Vec::new();
        for row in self.txn.open_table(REQUESTS)?.iter()? {
            let (id, seq) = row?;
            requests.push((id.value(), seq.value()));
        }
        requests.sort_by_key(|&(_, seq)| seq);
        Ok(requests)
    }

    /// Calls `f` with every record in key order.
    pub fn for_each_record(
        &self,
        mut f: impl FnMut(String, StoredRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let table = self.txn.open_table(RECORDS)?;
        for row in table.iter()? {
            let (key, value) = row?;
            let key = key.value().to_owned();
            let record =
                postcard::from_bytes(value.value()).map_err(|source| StoreError::Corrupt {
                    key: key.clone(),
                    source,
                })?;
            f(key, record)?;
        }
        Ok(())
    }
}

/// Everything a new store is created with from a snapshot.
pub struct StoreImage {
    pub applied_seq: u64,
    pub next_id: u64,
    pub raft_state: Vec<u8>,
    pub requests: Vec<(u128, u64)>,
}

impl ShardStore {
    /// Opens (or creates) the store of a shard in `dir`, recording its spec on first creation.
    pub fn open(dir: &Path, spec: &ShardSpec) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let db = Database::create(dir.join("shard.redb"))?;
        Self::open_database(db, dir, spec)
    }

    /// [`ShardStore::open`] over a storage backend of the caller's: tests count its fsyncs.
    pub fn open_with_backend(
        dir: &Path,
        spec: &ShardSpec,
        backend: impl redb::StorageBackend,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let db = Database::builder().create_with_backend(backend)?;
        Self::open_database(db, dir, spec)
    }

    fn open_database(db: Database, dir: &Path, spec: &ShardSpec) -> Result<Self, StoreError> {
        let store = ShardStore {
            db,
            dir: dir.to_owned(),
        };
        let txn = store.db.begin_write()?;
        {
            let mut table = txn.open_table(SPEC)?;
            if table.get("spec")?.is_none() {
                let bytes = postcard::to_stdvec(spec)?;
                table.insert("spec", bytes.as_slice())?;
            }
            txn.open_table(RECORDS)?;
            txn.open_table(META)?;
            txn.open_table(RAFT)?;
            txn.open_table(REQUESTS)?;
        }
        txn.commit()?;
        Ok(store)
    }

    /// Fills a new, empty store from a snapshot image: records arrive in batches through
    /// [`ShardStore::insert_records`]; [`ShardStore::finish_image`] commits the rest durably.
    pub fn insert_records(&self, records: &[(String, StoredRecord)]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None);
        {
            let mut table = txn.open_table(RECORDS)?;
            for (key, record) in records {
                let bytes = postcard::to_stdvec(record)?;
                table.insert(key.as_str(), bytes.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Commits a snapshot image's counters, applied state and request ids, with an fsync that
    /// also covers every earlier [`ShardStore::insert_records`].
    pub fn finish_image(&self, image: &StoreImage) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(APPLIED_SEQ, image.applied_seq)?;
            meta.insert(NEXT_ID, image.next_id)?;
            txn.open_table(RAFT)?
                .insert(APPLIED, image.raft_state.as_slice())?;
            let mut requests = txn.open_table(REQUESTS)?;
            for (id, seq) in &image.requests {
                requests.insert(*id, *seq)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// A consistent view of the whole store as of now; writes continue meanwhile (MVCC).
    pub fn begin_snapshot(&self) -> Result<StoreSnapshot, StoreError> {
        Ok(StoreSnapshot {
            txn: self.db.begin_read()?,
        })
    }

    /// Records the replication layer's applied state alone (an entry without records: a
    /// membership change, a leader's blank entry, a rejected batch).
    pub fn save_raft_state(&self, raft_state: &[u8]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        txn.open_table(RAFT)?.insert(APPLIED, raft_state)?;
        txn.commit()?;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the spec a shard directory was created with.
    pub fn read_spec(dir: &Path) -> Result<Option<ShardSpec>, StoreError> {
        let path = dir.join("shard.redb");
        if !path.exists() {
            return Ok(None);
        }
        let db = Database::create(path)?;
        let txn = db.begin_read()?;
        let table = match txn.open_table(SPEC) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(bytes) = table.get("spec")? else {
            return Ok(None);
        };
        postcard::from_bytes(bytes.value())
            .map(Some)
            .map_err(|source| StoreError::Corrupt {
                key: "spec".into(),
                source,
            })
    }

    pub fn load(&self) -> Result<LoadedShard, StoreError> {
        let snapshot = self.begin_snapshot()?;
        let (applied_seq, next_id) = snapshot.counters()?;
        let mut records = Vec::new();
        snapshot.for_each_record(|key, record| {
            records.push((key, record));
            Ok(())
        })?;
        Ok(LoadedShard {
            applied_seq,
            next_id,
            records,
            raft_state: snapshot.raft_state()?,
            requests: snapshot.requests()?,
        })
    }

    /// Commits one batch durably (fsync) together with the new sequence number, the id counter,
    /// the replication layer's applied state and the batch's request id.
    pub fn commit_batch(
        &self,
        changes: &[RecordChange<'_>],
        applied_seq: u64,
        next_id: u64,
        raft_state: &[u8],
        request: Option<RequestRecord>,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        {
            let mut records = txn.open_table(RECORDS)?;
            for change in changes {
                match change {
                    RecordChange::Upsert { key, record } => {
                        let bytes = postcard::to_stdvec(record)?;
                        records.insert(*key, bytes.as_slice())?;
                    }
                    RecordChange::Remove { key } => {
                        records.remove(*key)?;
                    }
                }
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(APPLIED_SEQ, applied_seq)?;
            meta.insert(NEXT_ID, next_id)?;
            txn.open_table(RAFT)?.insert(APPLIED, raft_state)?;
            if let Some(request) = request {
                let mut requests = txn.open_table(REQUESTS)?;
                if let Some(evict) = request.evict {
                    requests.remove(evict)?;
                }
                requests.insert(request.id, applied_seq)?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}
