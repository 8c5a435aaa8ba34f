//! Coalesced read barriers: one quorum round serves every read that arrived before it began.
//!
//! A linearizable read on the leader needs a round that confirms leadership with a quorum and
//! waits for the apply to reach the commit index (openraft's `ensure_linearizable`). Run once per
//! read, that is a round of heartbeats per query. Here a read that arrives while a round is in
//! flight waits for the *next* round (never the current one, which may have begun before the read
//! and so does not cover writes acknowledged just before it), and every read waiting for a round
//! is answered by it: under load, one round per round-trip serves any number of reads.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use quiver_proto::{NodeError, ShardId};
use tokio::sync::oneshot;

use super::ShardRaft;
use openraft::error::{CheckIsLeaderError, RaftError};

/// Waiting reads, most one round takes (more wait for the following round).
const MAX_WAITERS: usize = 100_000;

#[derive(Default)]
struct State {
    /// A task is running rounds.
    running: bool,
    /// Reads waiting for the next round to begin.
    next: Vec<oneshot::Sender<Result<(), NodeError>>>,
}

/// Called when the replica's Raft member stopped on a fatal error.
pub type FatalHook = Box<dyn Fn(String) + Send + Sync>;

pub struct ReadBarrier {
    shard: ShardId,
    raft: ShardRaft,
    /// How long a round may take: the group's longest election timeout.
    round_timeout_ms: u64,
    state: Mutex<State>,
    on_fatal: FatalHook,
}

impl ReadBarrier {
    pub fn new(
        shard: ShardId,
        raft: ShardRaft,
        round_timeout_ms: u64,
        on_fatal: FatalHook,
    ) -> Arc<ReadBarrier> {
        Arc::new(ReadBarrier {
            shard,
            raft,
            round_timeout_ms,
            state: Mutex::new(State::default()),
            on_fatal,
        })
    }

    /// Returns once a round that began after this call confirmed leadership and this replica
    /// applied everything committed before it; `NotLeader` (with the leader's node when known)
    /// on a replica that does not lead.
    pub async fn wait(self: &Arc<Self>) -> Result<(), NodeError> {
        let (done, answer) = oneshot::channel();
        {
            let mut state = self.state.lock();
            if state.next.len() >= MAX_WAITERS {
                return Err(NodeError::Overloaded);
            }
            state.next.push(done);
            if !state.running {
                state.running = true;
                tokio::spawn(self.clone().run());
            }
        }
        answer
            .await
            .unwrap_or(Err(NodeError::ShardUnavailable(self.shard)))
    }

    /// Runs rounds while reads wait for one.
    async fn run(self: Arc<Self>) {
        loop {
            let waiters = {
                let mut state = self.state.lock();
                if state.next.is_empty() {
                    state.running = false;
                    return;
                }
                std::mem::take(&mut state.next)
            };
            let result = self.round().await;
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
        }
    }

    async fn round(&self) -> Result<(), NodeError> {
        // A leader cut off from its followers cannot confirm its leadership; by the time the
        // round has waited an election timeout, the others may have elected a new leader:
        // answer, so the caller tries them instead of waiting for the RPCs to time out.
        let patience = Duration::from_millis(self.round_timeout_ms);
        let Ok(result) = tokio::time::timeout(patience, self.raft.ensure_linearizable()).await
        else {
            return Err(NodeError::ShardUnavailable(self.shard));
        };
        match result {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                Err(NodeError::NotLeader {
                    shard: self.shard,
                    leader: forward.leader_node.map(|node| node.node),
                })
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                Err(NodeError::ShardUnavailable(self.shard))
            }
            Err(RaftError::Fatal(fatal)) => {
                tracing::error!(shard = %self.shard, %fatal, "shard raft member stopped");
                (self.on_fatal)(fatal.to_string());
                Err(NodeError::ShardUnavailable(self.shard))
            }
        }
    }
}
