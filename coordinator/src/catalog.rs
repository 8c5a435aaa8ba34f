//! The catalog: vector buckets, indexes and each index's shard map.
//!
//! [`CatalogState`] is a deterministic state machine: [`CatalogState::plan`] checks a
//! [`CatalogCommand`] against the state and turns it into row changes without touching anything;
//! [`CatalogState::apply_rows`] applies them. [`Catalog`] is the interface the API uses; the local
//! implementation, [`RedbCatalog`], makes the rows durable in redb (fsync) before it applies them
//! in memory. A Raft state machine can implement the same interface by replicating the commands.

use std::collections::BTreeMap;
use std::path::Path;

use parking_lot::RwLock;
use quiver_proto::{DistanceMetric, HashRange, IndexUid};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// Service limits (reference §4.1).
pub const MAX_BUCKETS: usize = 10_000;
pub const MAX_INDEXES_PER_BUCKET: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("bucket exists")]
    BucketExists,
    #[error("index exists")]
    IndexExists,
    #[error("bucket not found")]
    BucketNotFound,
    #[error("index not found")]
    IndexNotFound,
    #[error("bucket not empty")]
    BucketNotEmpty,
    #[error("too many buckets (limit {0})")]
    TooManyBuckets(usize),
    #[error("too many indexes (limit {0})")]
    TooManyIndexes(usize),
    #[error("catalog storage: {0}")]
    Storage(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncryptionConfig {
    pub sse_type: String,
    pub kms_key_arn: Option<String>,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        EncryptionConfig {
            sse_type: "AES256".into(),
            kms_key_arn: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BucketRecord {
    pub name: String,
    /// Seconds since the Unix epoch.
    pub creation_time: f64,
    pub encryption: EncryptionConfig,
    pub tags: BTreeMap<String, String>,
    pub default_index_mode: String,
    /// The bucket policy document (validated JSON text), if one is set.
    pub policy: Option<String>,
}

/// Where one shard of an index lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardPlacement {
    pub shard: u32,
    pub range: HashRange,
    pub node: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexRecord {
    pub bucket: String,
    pub name: String,
    pub uid: IndexUid,
    pub creation_time: f64,
    pub dimension: u32,
    pub metric: DistanceMetric,
    /// `None` when the index was created without a metadata configuration.
    pub non_filterable_keys: Option<Vec<String>>,
    pub encryption: Option<EncryptionConfig>,
    pub tags: BTreeMap<String, String>,
    pub index_mode: String,
    pub shards: Vec<ShardPlacement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CatalogCommand {
    CreateBucket(BucketRecord),
    DeleteBucket {
        name: String,
    },
    CreateIndex(IndexRecord),
    DeleteIndex {
        bucket: String,
        name: String,
    },
    /// Sets (`Some`) or removes (`None`) a bucket's policy.
    SetBucketPolicy {
        bucket: String,
        policy: Option<String>,
    },
    /// Replaces the tags of a bucket (`index: None`) or an index.
    SetTags {
        bucket: String,
        index: Option<String>,
        tags: BTreeMap<String, String>,
    },
    SetBucketDefaultIndexMode {
        bucket: String,
        mode: String,
    },
    SetIndexMode {
        bucket: String,
        index: String,
        mode: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RowChange {
    PutBucket(BucketRecord),
    DeleteBucket(String),
    PutIndex(IndexRecord),
    DeleteIndex(String, String),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatalogState {
    buckets: BTreeMap<String, BucketRecord>,
    indexes: BTreeMap<(String, String), IndexRecord>,
}

impl CatalogState {
    fn index_count(&self, bucket: &str) -> usize {
        self.indexes_of(bucket).count()
    }

    fn indexes_of<'a>(&'a self, bucket: &'a str) -> impl Iterator<Item = &'a IndexRecord> + 'a {
        self.indexes
            .range((bucket.to_owned(), String::new())..)
            .take_while(move |((b, _), _)| b == bucket)
            .map(|(_, index)| index)
    }

    /// The row change that rewrites an existing bucket with `change` applied.
    fn update_bucket(
        &self,
        bucket: &str,
        change: impl FnOnce(&mut BucketRecord),
    ) -> Result<Vec<RowChange>, CatalogError> {
        let mut record = self
            .buckets
            .get(bucket)
            .cloned()
            .ok_or(CatalogError::BucketNotFound)?;
        change(&mut record);
        Ok(vec![RowChange::PutBucket(record)])
    }

    /// The row change that rewrites an existing index with `change` applied.
    fn update_index(
        &self,
        bucket: String,
        index: String,
        change: impl FnOnce(&mut IndexRecord),
    ) -> Result<Vec<RowChange>, CatalogError> {
        let mut record = self
            .indexes
            .get(&(bucket, index))
            .cloned()
            .ok_or(CatalogError::IndexNotFound)?;
        change(&mut record);
        Ok(vec![RowChange::PutIndex(record)])
    }

    /// Checks `command` and returns the row changes it makes. Pure: changes nothing.
    pub fn plan(&self, command: CatalogCommand) -> Result<Vec<RowChange>, CatalogError> {
        match command {
            CatalogCommand::CreateBucket(bucket) => {
                if self.buckets.contains_key(&bucket.name) {
                    return Err(CatalogError::BucketExists);
                }
                if self.buckets.len() >= MAX_BUCKETS {
                    return Err(CatalogError::TooManyBuckets(MAX_BUCKETS));
                }
                Ok(vec![RowChange::PutBucket(bucket)])
            }
            CatalogCommand::DeleteBucket { name } => {
                if !self.buckets.contains_key(&name) {
                    return Err(CatalogError::BucketNotFound);
                }
                if self.index_count(&name) > 0 {
                    return Err(CatalogError::BucketNotEmpty);
                }
                Ok(vec![RowChange::DeleteBucket(name)])
            }
            CatalogCommand::CreateIndex(index) => {
                if !self.buckets.contains_key(&index.bucket) {
                    return Err(CatalogError::BucketNotFound);
                }
                if self
                    .indexes
                    .contains_key(&(index.bucket.clone(), index.name.clone()))
                {
                    return Err(CatalogError::IndexExists);
                }
                if self.index_count(&index.bucket) >= MAX_INDEXES_PER_BUCKET {
                    return Err(CatalogError::TooManyIndexes(MAX_INDEXES_PER_BUCKET));
                }
                Ok(vec![RowChange::PutIndex(index)])
            }
            CatalogCommand::DeleteIndex { bucket, name } => {
                if !self.indexes.contains_key(&(bucket.clone(), name.clone())) {
                    return Err(CatalogError::IndexNotFound);
                }
                Ok(vec![RowChange::DeleteIndex(bucket, name)])
            }
            CatalogCommand::SetBucketPolicy { bucket, policy } => {
                self.update_bucket(&bucket, |record| record.policy = policy)
            }
            CatalogCommand::SetTags {
                bucket,
                index: None,
                tags,
            } => self.update_bucket(&bucket, |record| record.tags = tags),
            CatalogCommand::SetTags {
                bucket,
                index: Some(index),
                tags,
            } => self.update_index(bucket, index, |record| record.tags = tags),
            CatalogCommand::SetBucketDefaultIndexMode { bucket, mode } => {
                self.update_bucket(&bucket, |record| record.default_index_mode = mode)
            }
            CatalogCommand::SetIndexMode {
                bucket,
                index,
                mode,
            } => self.update_index(bucket, index, |record| record.index_mode = mode),
        }
    }

    pub fn apply_rows(&mut self, rows: Vec<RowChange>) {
        for row in rows {
            match row {
                RowChange::PutBucket(bucket) => {
                    self.buckets.insert(bucket.name.clone(), bucket);
                }
                RowChange::DeleteBucket(name) => {
                    self.buckets.remove(&name);
                }
                RowChange::PutIndex(index) => {
                    self.indexes
                        .insert((index.bucket.clone(), index.name.clone()), index);
                }
                RowChange::DeleteIndex(bucket, name) => {
                    self.indexes.remove(&(bucket, name));
                }
            }
        }
    }

    pub fn bucket(&self, name: &str) -> Option<&BucketRecord> {
        self.buckets.get(name)
    }

    pub fn buckets(&self) -> impl Iterator<Item = &BucketRecord> {
        self.buckets.values()
    }

    pub fn index(&self, bucket: &str, name: &str) -> Option<&IndexRecord> {
        self.indexes.get(&(bucket.to_owned(), name.to_owned()))
    }

    pub fn indexes(&self, bucket: &str) -> Vec<IndexRecord> {
        self.indexes_of(bucket).cloned().collect()
    }
}

/// What the API needs from the catalog, local or replicated.
pub trait Catalog: Send + Sync + 'static {
    /// Executes a command durably; on error nothing changed.
    fn execute(&self, command: CatalogCommand) -> Result<(), CatalogError>;
    /// The current state, read-locked for the guard's lifetime (keep it short, never across an
    /// await).
    fn state(&self) -> parking_lot::RwLockReadGuard<'_, CatalogState>;
}

const BUCKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("buckets");
const INDEXES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("indexes");

/// The single-process catalog: state in memory, rows in a redb file.
pub struct RedbCatalog {
    db: Database,
    state: RwLock<CatalogState>,
}

fn storage(e: impl std::fmt::Display) -> CatalogError {
    CatalogError::Storage(e.to_string())
}

impl RedbCatalog {
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        let db = Database::create(path).map_err(storage)?;
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(BUCKETS).map_err(storage)?;
        txn.open_table(INDEXES).map_err(storage)?;
        txn.commit().map_err(storage)?;
        let mut state = CatalogState::default();
        let txn = db.begin_read().map_err(storage)?;
        let mut rows = Vec::new();
        for row in txn
            .open_table(BUCKETS)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            let (_, value) = row.map_err(storage)?;
            rows.push(RowChange::PutBucket(
                postcard::from_bytes(value.value()).map_err(storage)?,
            ));
        }
        for row in txn
            .open_table(INDEXES)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            let (_, value) = row.map_err(storage)?;
            rows.push(RowChange::PutIndex(
                postcard::from_bytes(value.value()).map_err(storage)?,
            ));
        }
        state.apply_rows(rows);
        Ok(RedbCatalog {
            db,
            state: RwLock::new(state),
        })
    }

    fn persist(&self, rows: &[RowChange]) -> Result<(), CatalogError> {
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate);
        {
            let mut buckets = txn.open_table(BUCKETS).map_err(storage)?;
            let mut indexes = txn.open_table(INDEXES).map_err(storage)?;
            for row in rows {
                match row {
                    RowChange::PutBucket(bucket) => {
                        let bytes = postcard::to_stdvec(bucket).map_err(storage)?;
                        buckets
                            .insert(bucket.name.as_str(), bytes.as_slice())
                            .map_err(storage)?;
                    }
                    RowChange::DeleteBucket(name) => {
                        buckets.remove(name.as_str()).map_err(storage)?;
                    }
                    RowChange::PutIndex(index) => {
                        let bytes = postcard::to_stdvec(index).map_err(storage)?;
                        indexes
                            .insert(
                                (index.bucket.as_str(), index.name.as_str()),
                                bytes.as_slice(),
                            )
                            .map_err(storage)?;
                    }
                    RowChange::DeleteIndex(bucket, name) => {
                        indexes
                            .remove((bucket.as_str(), name.as_str()))
                            .map_err(storage)?;
                    }
                }
            }
        }
        txn.commit().map_err(storage)
    }
}

impl Catalog for RedbCatalog {
    fn execute(&self, command: CatalogCommand) -> Result<(), CatalogError> {
        // One writer at a time: plan against the state we are about to change.
        let mut state = self.state.write();
        let rows = state.plan(command)?;
        self.persist(&rows)?;
        state.apply_rows(rows);
        Ok(())
    }

    fn state(&self) -> parking_lot::RwLockReadGuard<'_, CatalogState> {
        self.state.read()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(name: &str) -> BucketRecord {
        BucketRecord {
            name: name.into(),
            creation_time: 1.0,
            encryption: EncryptionConfig::default(),
            tags: BTreeMap::new(),
            default_index_mode: "ENHANCED".into(),
            policy: None,
        }
    }

    fn index(bucket: &str, name: &str) -> IndexRecord {
        IndexRecord {
            bucket: bucket.into(),
            name: name.into(),
            uid: IndexUid(7),
            creation_time: 2.0,
            dimension: 3,
            metric: DistanceMetric::Cosine,
            non_filterable_keys: None,
            encryption: None,
            tags: BTreeMap::new(),
            index_mode: "ENHANCED".into(),
            shards: vec![],
        }
    }

    #[test]
    fn state_machine_rules() {
        let mut state = CatalogState::default();
        let rows = state
            .plan(CatalogCommand::CreateBucket(bucket("b1")))
            .expect("create");
        state.apply_rows(rows);
        assert!(matches!(
            state.plan(CatalogCommand::CreateBucket(bucket("b1"))),
            Err(CatalogError::BucketExists)
        ));
        assert!(matches!(
            state.plan(CatalogCommand::CreateIndex(index("nope", "i"))),
            Err(CatalogError::BucketNotFound)
        ));
        let rows = state
            .plan(CatalogCommand::CreateIndex(index("b1", "i1")))
            .expect("index");
        state.apply_rows(rows);
        assert!(matches!(
            state.plan(CatalogCommand::DeleteBucket { name: "b1".into() }),
            Err(CatalogError::BucketNotEmpty)
        ));
        // An index in a bucket whose name extends b1 must not count for b1.
        let rows = state
            .plan(CatalogCommand::CreateBucket(bucket("b1x")))
            .expect("create");
        state.apply_rows(rows);
        let rows = state
            .plan(CatalogCommand::CreateIndex(index("b1x", "i1")))
            .expect("index");
        state.apply_rows(rows);
        assert_eq!(state.indexes("b1").len(), 1);
        let rows = state
            .plan(CatalogCommand::DeleteIndex {
                bucket: "b1".into(),
                name: "i1".into(),
            })
            .expect("delete");
        state.apply_rows(rows);
        let rows = state
            .plan(CatalogCommand::DeleteBucket { name: "b1".into() })
            .expect("delete");
        state.apply_rows(rows);
        assert!(state.bucket("b1").is_none());
    }

    #[test]
    fn redb_catalog_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("catalog.redb");
        {
            let catalog = RedbCatalog::open(&path).expect("open");
            catalog
                .execute(CatalogCommand::CreateBucket(bucket("b1")))
                .expect("create");
            catalog
                .execute(CatalogCommand::CreateIndex(index("b1", "i1")))
                .expect("index");
        }
        let catalog = RedbCatalog::open(&path).expect("reopen");
        assert!(catalog.state().index("b1", "i1").is_some());
        assert!(catalog.state().bucket("b1").is_some());
    }
}
