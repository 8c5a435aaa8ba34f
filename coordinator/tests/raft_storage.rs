//! openraft's own storage test suite against the control plane's redb log store and state
//! machine, plus a restart check: a reopened store has the log, the vote and the snapshot.

use std::sync::Arc;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{RaftLogReader, RaftSnapshotBuilder, StorageError, Vote};
use parking_lot::RwLock;
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
