//! The durable half of a shard: one redb database per shard.
//!
//! Tables: `records` maps a vector key to its stored record (internal id, float32 vector,
//! metadata); `meta` holds the applied sequence number and the next internal id. A write batch is
//! one redb transaction committed with immediate durability (fsync) before it is acknowledged.

use std::path::{Path, PathBuf};

use quiver_proto::{Metadata, ShardSpec};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SPEC: TableDefinition<&str, &[u8]> = TableDefinition::new("spec");

const APPLIED_SEQ: &str = "applied_seq";
const NEXT_ID: &str = "next_id";

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
}

impl ShardStore {
    /// Opens (or creates) the store of a shard in `dir`, recording its spec on first creation.
    pub fn open(dir: &Path, spec: &ShardSpec) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let db = Database::create(dir.join("shard.redb"))?;
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
        }
        txn.commit()?;
        Ok(store)
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
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let applied_seq = meta.get(APPLIED_SEQ)?.map(|v| v.value()).unwrap_or(0);
        let next_id = meta.get(NEXT_ID)?.map(|v| v.value()).unwrap_or(0);
        let table = txn.open_table(RECORDS)?;
        let mut records = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            let key = key.value().to_owned();
            let record: StoredRecord =
                postcard::from_bytes(value.value()).map_err(|source| StoreError::Corrupt {
                    key: key.clone(),
                    source,
                })?;
            records.push((key, record));
        }
        Ok(LoadedShard {
            applied_seq,
            next_id,
            records,
        })
    }

    /// Commits one batch durably (fsync) together with the new sequence number and id counter.
    pub fn commit_batch(
        &self,
        changes: &[RecordChange<'_>],
        applied_seq: u64,
        next_id: u64,
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
        }
        txn.commit()?;
        Ok(())
    }
}
