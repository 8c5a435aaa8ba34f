//! The data path: which shard owns a key (a lookup of the key's hash in the index's shard
//! ranges), which replica of a shard to ask (its Raft group's leader, learned from answers and
//! followed through `NotLeader` redirects and failovers), fan-out of each request to the shards
//! over the node transport, and the k-way merge of per-shard results. The merge and the grouping
//! are pure functions; the async code only carries requests, retries and deadlines.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use quiver_net::{rpc, Transport};
use quiver_proto::{
    key_hash, merge_top_k, owner, Filter, HashRange, Hit, NodeError, NodeRequest, NodeResponse,
    ShardId, VectorRecord, WriteOp,
};

use crate::catalog::{Catalog, IndexRecord, ShardPlacement};
use crate::error::ApiError;

/// Deadline of one node RPC.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of one attempt on one replica when the shard has others to try: a paused or cut-off
/// leader must not hold a request for longer than an election takes.
pub const REPLICA_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one shard call keeps trying (through redirects, elections and unreachable
/// replicas) before it answers a retryable 503.
pub const FAILOVER_WINDOW: Duration = Duration::from_secs(15);
/// Attempts per shard call, whatever the window.
const MAX_ATTEMPTS: usize = 64;
/// How long a node that did not answer in time (or could not be reached) is tried last for
/// every shard, so one dead or cut-off leader costs each coordinator one attempt timeout, not
/// one per shard it led.
const SUSPECT_FOR: Duration = Duration::from_secs(5);
/// Pause after every replica of a shard failed once, doubled each round up to the maximum.
const FIRST_BACKOFF: Duration = Duration::from_millis(25);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

pub struct DataPlane {
    transport: Arc<dyn Transport>,
    /// Node addresses and liveness come from here.
    catalog: Arc<dyn Catalog>,
    /// The node believed to lead each shard's group: advisory, learned from answers.
    leaders: parking_lot::Mutex<HashMap<ShardId, String>>,
    /// Nodes that recently did not answer, until when they are tried last.
    suspects: parking_lot::Mutex<HashMap<String, Instant>>,
    /// How long one shard call keeps trying: [`FAILOVER_WINDOW`] unless set.
    failover_window: Duration,
}

/// Why one node call failed.
enum CallError {
    /// The node answered with an error.
    Node(NodeError),
    /// The node is down or unknown, or the call did not complete (connection, timeout).
    Unreachable(ApiError),
}

impl CallError {
    /// Whether another attempt (the same replica later, or another one) may succeed.
    fn retryable(&self) -> bool {
        match self {
            CallError::Unreachable(_) => true,
            CallError::Node(error) => matches!(
                error,
                NodeError::NotLeader { .. }
                    | NodeError::ShardUnavailable(_)
                    | NodeError::ShardNotFound(_)
                    | NodeError::DeadlineExceeded
                    | NodeError::Storage(_)
            ),
        }
    }

    fn into_api(self) -> ApiError {
        match self {
            CallError::Node(error) => error.into(),
            CallError::Unreachable(error) => error,
        }
    }
}

/// Splits `items` by the shard that owns each item's key, preserving order within a shard: the
/// shard whose range holds the key's hash ([`owner`]), by the same [`HashRange::contains`] a node
/// checks ownership with. `Err` names a key that no range holds (a broken shard map).
pub fn group_by_shard<T>(
    shards: &[ShardPlacement],
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> &str,
) -> Result<Vec<(&ShardPlacement, Vec<T>)>, String> {
    let mut groups: BTreeMap<usize, Vec<T>> = BTreeMap::new();
    for item in items {
        let hash = key_hash(key(&item));
        let Some(position) = owner(shards.iter().map(|shard| shard.range), hash) else {
            return Err(key(&item).to_owned());
        };
        groups.entry(position).or_default().push(item);
    }
    Ok(groups
        .into_iter()
        .map(|(position, items)| (&shards[position], items))
        .collect())
}

/// Merges per-shard key-ordered pages into one page of at most `limit`; returns whether more
/// keys may follow.
pub fn merge_pages(
    pages: Vec<(Vec<VectorRecord>, bool)>,
    limit: usize,
) -> (Vec<VectorRecord>, bool) {
    let mut any_more = false;
    let mut all = Vec::new();
    for (page, more) in pages {
        any_more |= more;
        all.extend(page);
    }
    all.sort_by(|a, b| a.key.cmp(&b.key));
    let more = any_more || all.len() > limit;
    all.truncate(limit);
    (all, more)
}

impl DataPlane {
    pub fn new(transport: Arc<dyn Transport>, catalog: Arc<dyn Catalog>) -> Self {
        DataPlane {
            transport,
            catalog,
            leaders: parking_lot::Mutex::new(HashMap::new()),
            suspects: parking_lot::Mutex::new(HashMap::new()),
            failover_window: FAILOVER_WINDOW,
        }
    }

    /// The same, with another failover window (tests that make a shard unavailable on purpose
    /// use a short one).
    pub fn with_failover_window(self, failover_window: Duration) -> Self {
        DataPlane {
            failover_window,
            ..self
        }
    }

    fn is_suspect(&self, node: &str) -> bool {
        let mut suspects = self.suspects.lock();
        match suspects.get(node) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                suspects.remove(node);
                false
            }
            None => false,
        }
    }

    fn suspect(&self, node: &str) {
        self.suspects
            .lock()
            .insert(node.to_owned(), Instant::now() + SUSPECT_FOR);
    }

    /// The address of a node that is up; a retryable 503 for a node that is down or unknown
    /// (never a silently partial answer).
    fn node_addr(&self, node: &str) -> Result<String, ApiError> {
        let state = self.catalog.state();
        let record = state.node(node).filter(|record| record.up);
        let addr = record.map(|record| record.addr.clone());
        addr.ok_or_else(|| {
            // Logged once, with the request, where the API answers it.
            ApiError::ServiceUnavailable(
                "A shard of this index is unavailable; please retry".into(),
            )
        })
    }

    async fn call(
        &self,
        node: &str,
        request_id: &str,
        timeout: Duration,
        request: NodeRequest,
    ) -> Result<NodeResponse, CallError> {
        let addr = self
            .node_addr(node)
            .inspect_err(|_| tracing::debug!(node, "node is down or unknown"))
            .map_err(CallError::Unreachable)?;
        let response: NodeResponse = rpc(&*self.transport, &addr, request_id, timeout, request)
            .await
            // The client gets a retryable 503, logged once by the API; the cause stays here.
            .inspect_err(|error| tracing::debug!(node, %error, "node call failed"))
            .map_err(|error| CallError::Unreachable(error.into()))?;
        match response {
            NodeResponse::Error(error) => Err(CallError::Node(error)),
            other => Ok(other),
        }
    }

    /// The node to ask first for `shard`: the leader last seen, else its bootstrap replica
    /// (the one that starts its group), which leads a new group; a suspect node only when every
    /// replica's node is.
    fn first_choice<'a>(&self, id: ShardId, placement: &'a ShardPlacement) -> Option<&'a str> {
        let known = self.leaders.lock().get(&id).cloned();
        let mut replicas: Vec<&'a crate::catalog::Replica> = placement.replicas.iter().collect();
        replicas.sort_by_key(|replica| (Some(&replica.node) != known.as_ref(), replica.id));
        replicas
            .iter()
            .find(|replica| !self.is_suspect(&replica.node))
            .or_else(|| replicas.first())
            .map(|replica| replica.node.as_str())
    }

    /// Sends `request()` to the leader of a shard's group: follows `NotLeader` redirects, and
    /// while the group elects or a replica is unreachable, tries the others with backoff, for
    /// up to the failover window ([`FAILOVER_WINDOW`]). A write keeps its request id across attempts, so one that
    /// committed before its answer was lost applies once.
    async fn call_shard(
        &self,
        index: &IndexRecord,
        placement: &ShardPlacement,
        request_id: &str,
        request: impl Fn() -> NodeRequest,
    ) -> Result<NodeResponse, ApiError> {
        let id = index.shard_id(placement);
        let replicas: Vec<&str> = placement.replicas.iter().map(|r| r.node.as_str()).collect();
        let Some(first) = self.first_choice(id, placement) else {
            tracing::error!(index = %index.name, shard = placement.shard, "shard has no replica");
            return Err(ApiError::Internal(
                "We encountered an internal error. Please try again.".into(),
            ));
        };
        let attempt_timeout = if replicas.len() > 1 {
            REPLICA_ATTEMPT_TIMEOUT
        } else {
            RPC_TIMEOUT
        };
        let deadline = Instant::now() + self.failover_window;
        let mut next = Some(first.to_owned());
        let mut rotation = replicas.iter().position(|node| *node == first).unwrap_or(0) + 1;
        let mut failed_in_round = 0usize;
        let mut backoff = FIRST_BACKOFF;
        let mut last = None;
        for _ in 0..MAX_ATTEMPTS {
            let node = next.take().unwrap_or_else(|| {
                // The next replica in turn, passing over suspect nodes while others remain.
                for _ in 0..replicas.len() {
                    rotation += 1;
                    let candidate = replicas[(rotation - 1) % replicas.len()];
                    if !self.is_suspect(candidate) {
                        return candidate.to_owned();
                    }
                }
                rotation += 1;
                replicas[(rotation - 1) % replicas.len()].to_owned()
            });
            let error = match self
                .call(&node, request_id, attempt_timeout, request())
                .await
            {
                Ok(response) => {
                    self.leaders.lock().insert(id, node);
                    return Ok(response);
                }
                Err(error) if !error.retryable() => return Err(error.into_api()),
                Err(error) => {
                    if matches!(error, CallError::Unreachable(_)) {
                        self.suspect(&node);
                    }
                    error
                }
            };
            if let CallError::Node(NodeError::NotLeader {
                leader: Some(leader),
                ..
            }) = &error
            {
                if *leader != node && replicas.contains(&leader.as_str()) {
                    tracing::debug!(shard = %id, from = %node, to = %leader, "following the shard's leader");
                    next = Some(leader.clone());
                    last = Some(error);
                    continue;
                }
            }
            self.leaders.lock().remove(&id);
            last = Some(error);
            failed_in_round += 1;
            if failed_in_round >= replicas.len() {
                failed_in_round = 0;
                let now = Instant::now();
                if now + backoff >= deadline {
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        tracing::debug!(shard = %id, "no replica of the shard answered in time");
        Err(last.map(CallError::into_api).unwrap_or_else(|| {
            ApiError::ServiceUnavailable(
                "A shard of this index is unavailable; please retry".into(),
            )
        }))
    }

    fn unexpected(response: &NodeResponse) -> ApiError {
        tracing::error!(?response, "unexpected node response");
        ApiError::Internal("We encountered an internal error. Please try again.".into())
    }

    /// Creates every replica of every shard of a new index (idempotent on the node side). A
    /// shard is created once a majority of its replicas is: the group can elect and commit, and
    /// a replica whose node was unreachable is created from that node's assignments later. The
    /// bootstrap replica (which starts the group and asks the others for votes) is created after
    /// the others, so its first election finds them and the group has a leader at once.
    pub async fn create_shards(
        &self,
        index: &IndexRecord,
        request_id: &str,
    ) -> Result<(), ApiError> {
        let shards = index.shards.iter().map(|placement| async move {
            let spec = index.shard_spec(placement);
            let bootstrap = spec.bootstrap_replica();
            let create = |node: String| {
                let request = NodeRequest::CreateShard(spec.clone());
                async move { self.call(&node, request_id, RPC_TIMEOUT, request).await }
            };
            let (others, first): (Vec<_>, Vec<_>) = placement
                .replicas
                .iter()
                .partition(|replica| Some(replica.id) != bootstrap);
            let mut results = futures::future::join_all(
                others.iter().map(|replica| create(replica.node.clone())),
            )
            .await;
            for replica in first {
                results.push(create(replica.node.clone()).await);
            }
            let created = results.iter().filter(|result| result.is_ok()).count();
            if created * 2 > results.len() {
                return Ok(());
            }
            let error = results.into_iter().find_map(Result::err);
            Err(error.map(CallError::into_api).unwrap_or_else(|| {
                ApiError::ServiceUnavailable("Not enough storage nodes are available".into())
            }))
        });
        try_join_all(shards).await?;
        Ok(())
    }

    /// Drops every replica of a deleted index; failures are logged, not returned (the index is
    /// already gone from the catalog, so the data is unreachable either way, and a node drops
    /// the shard when its next heartbeat no longer lists it).
    pub async fn drop_shards(&self, index: &IndexRecord, request_id: &str) {
        let calls = index.shards.iter().flat_map(|placement| {
            let id = index.shard_id(placement);
            self.leaders.lock().remove(&id);
            placement.replicas.iter().map(move |replica| {
                self.call(
                    &replica.node,
                    request_id,
                    RPC_TIMEOUT,
                    NodeRequest::DropShard(id),
                )
            })
        });
        for error in futures::future::join_all(calls)
            .await
            .into_iter()
            .filter_map(Result::err)
        {
            let error = error.into_api();
            tracing::warn!(index = %index.name, %error, "dropping a shard replica failed; its node drops it once its assignments no longer list it");
        }
    }

    /// [`group_by_shard`] over the index's shard map; a key that no shard owns is an internal
    /// error (the shard map is broken), never the caller's fault.
    fn route<T>(
        index: &IndexRecord,
        items: impl IntoIterator<Item = T>,
        key: impl Fn(&T) -> &str,
    ) -> Result<Vec<(&ShardPlacement, Vec<T>)>, ApiError> {
        group_by_shard(&index.shards, items, key).map_err(|key| {
            let hash = key_hash(&key);
            tracing::error!(index = %index.name, key, hash, "no shard owns the key's hash");
            ApiError::Internal("We encountered an internal error. Please try again.".into())
        })
    }

    /// Applies writes; returns once every shard's part is durable on a quorum of its replicas.
    /// Each shard's part carries one request id for all its attempts.
    pub async fn write(
        &self,
        index: &IndexRecord,
        request_id: &str,
        ops: Vec<WriteOp>,
    ) -> Result<(), ApiError> {
        let groups = Self::route(index, ops, |op| match op {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } => key,
        })?;
        let calls = groups.into_iter().map(|(placement, ops)| {
            let shard = index.shard_id(placement);
            let write_id: u128 = rand::random();
            self.call_shard(index, placement, request_id, move || NodeRequest::Write {
                shard,
                request_id: write_id,
                ops: ops.clone(),
            })
        });
        for response in try_join_all(calls).await? {
            if !matches!(response, NodeResponse::Written { .. }) {
                return Err(Self::unexpected(&response));
            }
        }
        Ok(())
    }

    pub async fn get(
        &self,
        index: &IndexRecord,
        request_id: &str,
        keys: Vec<String>,
        return_data: bool,
        return_metadata: bool,
    ) -> Result<Vec<VectorRecord>, ApiError> {
        let groups = Self::route(index, keys, |k| k)?;
        let calls = groups.into_iter().map(|(placement, keys)| {
            let shard = index.shard_id(placement);
            self.call_shard(index, placement, request_id, move || NodeRequest::Get {
                shard,
                keys: keys.clone(),
                return_data,
                return_metadata,
            })
        });
        let mut out = Vec::new();
        for response in try_join_all(calls).await? {
            match response {
                NodeResponse::Vectors(vectors) => out.extend(vectors),
                other => return Err(Self::unexpected(&other)),
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn list(
        &self,
        index: &IndexRecord,
        request_id: &str,
        after: Option<String>,
        limit: u32,
        range: Option<HashRange>,
        return_data: bool,
        return_metadata: bool,
    ) -> Result<(Vec<VectorRecord>, bool), ApiError> {
        let calls = index.shards.iter().map(|placement| {
            let shard = index.shard_id(placement);
            let after = after.clone();
            self.call_shard(index, placement, request_id, move || NodeRequest::List {
                shard,
                after: after.clone(),
                limit,
                range,
                return_data,
                return_metadata,
            })
        });
        let mut pages = Vec::new();
        for response in try_join_all(calls).await? {
            match response {
                NodeResponse::Listed { vectors, more } => pages.push((vectors, more)),
                other => return Err(Self::unexpected(&other)),
            }
        }
        Ok(merge_pages(pages, limit as usize))
    }

    /// Fans a query out to the leaders of the index's shards (one RPC per node, which searches
    /// and merges the shards it leads) and merges their top-k. The shards of a node whose call
    /// fails (a leader moved, a node is down) are asked one by one through [`Self::call_shard`].
    /// Any shard failing fails the query: never a silently partial answer.
    pub async fn query(
        &self,
        index: &IndexRecord,
        request_id: &str,
        vector: Vec<f32>,
        top_k: u32,
        filter: Option<Filter>,
        return_metadata: bool,
    ) -> Result<Vec<Hit>, ApiError> {
        let mut by_node: BTreeMap<&str, Vec<&ShardPlacement>> = BTreeMap::new();
        for placement in &index.shards {
            let id = index.shard_id(placement);
            let Some(node) = self.first_choice(id, placement) else {
                return Err(ApiError::Internal(
                    "We encountered an internal error. Please try again.".into(),
                ));
            };
            by_node.entry(node).or_default().push(placement);
        }
        let search = |shards: Vec<ShardId>| NodeRequest::SearchShards {
            shards,
            vector: vector.clone(),
            top_k,
            filter: filter.clone(),
            return_metadata,
        };
        let calls = by_node.into_iter().map(|(node, placements)| {
            let search = &search;
            async move {
                let ids = placements.iter().map(|p| index.shard_id(p)).collect();
                let timeout = if placements.iter().any(|p| p.replicas.len() > 1) {
                    REPLICA_ATTEMPT_TIMEOUT
                } else {
                    RPC_TIMEOUT
                };
                match self.call(node, request_id, timeout, search(ids)).await {
                    Ok(response) => Ok(vec![response]),
                    Err(error) if error.retryable() => {
                        if matches!(error, CallError::Unreachable(_)) {
                            self.suspect(node);
                        }
                        for placement in &placements {
                            self.leaders.lock().remove(&index.shard_id(placement));
                        }
                        try_join_all(placements.iter().map(|placement| {
                            let id = index.shard_id(placement);
                            self.call_shard(index, placement, request_id, move || search(vec![id]))
                        }))
                        .await
                    }
                    Err(error) => Err(error.into_api()),
                }
            }
        });
        let mut lists = Vec::new();
        for response in try_join_all(calls).await?.into_iter().flatten() {
            match response {
                NodeResponse::Hits(hits) => lists.push(hits),
                other => return Err(Self::unexpected(&other)),
            }
        }
        Ok(merge_top_k(lists, top_k as usize))
    }
}

#[cfg(test)]
mod tests {
    use quiver_proto::{DistanceMetric, ReplicaId};

    use super::*;
    use crate::catalog::Replica;

    fn shard_map(ranges: &[HashRange]) -> Vec<ShardPlacement> {
        (0u32..)
            .zip(ranges)
            .map(|(shard, range)| ShardPlacement {
                shard,
                range: *range,
                replicas: vec![Replica {
                    id: ReplicaId(u64::from(shard) + 1),
                    node: format!("node-{shard}"),
                    incarnation: 1,
                }],
                epoch: 1,
            })
            .collect()
    }

    fn keys() -> Vec<String> {
        (0..1000).map(|i| format!("key{i}")).collect()
    }

    /// Every key lands in exactly one group, in the shard whose range holds its hash, in order.
    fn assert_routed(shards: &[ShardPlacement]) {
        let groups = group_by_shard(shards, keys(), |k| k).expect("routed");
        assert_eq!(
            groups.iter().map(|(_, keys)| keys.len()).sum::<usize>(),
            1000
        );
        for (placement, keys) in &groups {
            for key in keys {
                assert!(placement.range.contains(key_hash(key)), "{key}");
            }
            assert!(keys.windows(2).all(|w| {
                let index = |k: &String| k[3..].parse::<u32>().expect("number");
                index(&w[0]) < index(&w[1])
            }));
        }
    }

    #[test]
    fn grouping_follows_the_shard_ranges() {
        let ranges: Vec<HashRange> = (0..4).map(|p| HashRange::split(p, 4)).collect();
        let shards = shard_map(&ranges);
        assert_routed(&shards);
        assert_eq!(
            group_by_shard(&shards, keys(), |k| k)
                .expect("routed")
                .len(),
            4
        );
    }

    #[test]
    fn uneven_ranges_route_by_their_bounds() {
        // A shard map as after splitting shard 0 of two: [0, 2^62), [2^62, 2^63), [2^63, 2^64),
        // listed out of order to show that routing looks the ranges up, not their positions.
        let shards = shard_map(&[
            HashRange {
                start: 1 << 63,
                end: None,
            },
            HashRange {
                start: 0,
                end: Some(1 << 62),
            },
            HashRange {
                start: 1 << 62,
                end: Some(1 << 63),
            },
        ]);
        assert_routed(&shards);
        let groups = group_by_shard(&shards, keys(), |k| k).expect("routed");
        let sizes: Vec<(u32, usize)> = groups
            .iter()
            .map(|(p, keys)| (p.shard, keys.len()))
            .collect();
        // About a half, a quarter and a quarter of the keys.
        assert!(
            sizes.iter().all(|(shard, len)| match shard {
                0 => (400..600).contains(len),
                _ => (150..350).contains(len),
            }),
            "{sizes:?}"
        );
    }

    #[test]
    fn a_key_no_range_holds_is_refused() {
        let shards = shard_map(&[HashRange {
            start: 0,
            end: Some(1 << 63),
        }]);
        let outside = keys()
            .into_iter()
            .find(|k| key_hash(k) >= 1 << 63)
            .expect("a key in the upper half");
        assert_eq!(
            group_by_shard(&shards, keys(), |k| k).map(|groups| groups.len()),
            Err(outside)
        );
        // For the API that is a 500, never a 400 ValidationException: the map is broken, not
        // the request.
        let index = IndexRecord {
            bucket: "b".into(),
            name: "i".into(),
            uid: quiver_proto::IndexUid(1),
            creation_time: 0.0,
            dimension: 2,
            metric: DistanceMetric::Euclidean,
            non_filterable_keys: None,
            encryption: None,
            tags: BTreeMap::new(),
            index_mode: crate::catalog::IndexMode::Enhanced,
            shards,
        };
        let error = DataPlane::route(&index, keys(), |k| k).expect_err("unrouted");
        assert_eq!(error.status_and_type().0.as_u16(), 500);
    }
}
