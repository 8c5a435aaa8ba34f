//! openraft's own storage test suite against the control plane's redb log store and state
//! machine, plus a restart check: a reopened store has the log, the vote and the snapshot.

use std::sync::Arc;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{RaftLogReader, RaftSnapshotBuilder, StorageError, Vote};
use parking_lot::RwLock;
use quiver_coordinator::catalog::format::CATALOG_FORMAT_VERSION;
use quiver_coordinator::catalog::CatalogState;
use quiver_coordinator::cluster::store::{self, LogStore, StateMachine};
use quiver_coordinator::cluster::types::TypeConfig;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = store::open(&dir.path().join("raft.redb")).expect("open");
        let machine =
            StateMachine::open(db.clone(), Arc::new(RwLock::new(CatalogState::default()))).await?;
        Ok((dir, LogStore::new(db), machine))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft storage suite");
}

#[tokio::test]
async fn a_reopened_store_keeps_vote_log_and_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    let vote = Vote::new(3, 1);
    {
        let db = store::open(&path).expect("open");
        let mut log = LogStore::new(db.clone());
        log.save_vote(&vote).await.expect("vote");
        let mut machine = StateMachine::open(db, Arc::new(RwLock::new(CatalogState::default())))
            .await
            .expect("machine");
        let mut builder = machine.get_snapshot_builder().await;
        builder.build_snapshot().await.expect("snapshot");
    }
    let db = store::open(&path).expect("reopen");
    let mut log = LogStore::new(db.clone());
    assert_eq!(log.read_vote().await.expect("vote"), Some(vote));
    assert!(log
        .try_get_log_entries(0..10)
        .await
        .expect("log")
        .is_empty());
    let mut machine = StateMachine::open(db, Arc::new(RwLock::new(CatalogState::default())))
        .await
        .expect("machine");
    assert!(machine
        .get_current_snapshot()
        .await
        .expect("snapshot")
        .is_some());
}

/// A raft.redb as the code before catalog format versions wrote it: the same tables, values in
/// plain postcard, no format marker.
fn write_unversioned_raft_db(path: &std::path::Path) {
    let log: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("raft_log");
    let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("raft_meta");
    let db = redb::Database::create(path).expect("create");
    let txn = db.begin_write().expect("txn");
    {
        let mut meta = txn.open_table(meta).expect("meta");
        let vote = postcard::to_stdvec(&Vote::<u64>::new(1, 1)).expect("vote");
        meta.insert("vote", vote.as_slice()).expect("insert");
        let mut log = txn.open_table(log).expect("log");
        // A blank entry of term 1, leader 1, index 1.
        log.insert(1, [1u8, 1, 1, 0].as_slice()).expect("insert");
    }
    txn.commit().expect("commit");
}

#[test]
fn a_raft_db_from_before_format_versions_is_refused_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    write_unversioned_raft_db(&path);
    let error = store::open(&path).expect_err("refused");
    assert!(matches!(error, store::OpenError::Unversioned), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("(format 0)"), "{message}");
    assert!(
        message.contains(&format!("format version {CATALOG_FORMAT_VERSION}")),
        "{message}"
    );
    // Refusing changed nothing: the old data is still there, still without a marker.
    assert!(matches!(
        store::open(&path),
        Err(store::OpenError::Unversioned)
    ));
}

#[test]
fn a_raft_db_of_another_format_version_is_refused_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    drop(store::open(&path).expect("create"));
    {
        let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("raft_meta");
        let db = redb::Database::create(&path).expect("open");
        let txn = db.begin_write().expect("txn");
        txn.open_table(meta)
            .expect("meta")
            .insert("catalog_format", b"QCAT\x03".as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    let message = store::open(&path).expect_err("refused").to_string();
    assert!(
        message.contains("catalog format version 3 is not supported"),
        "{message}"
    );
}
