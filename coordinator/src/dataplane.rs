//! The data path: which shard owns a key (a lookup of the key's hash in the index's shard
//! ranges), fan-out of each request to the shards over the node transport, and the k-way merge
//! of per-shard results. The merge and the grouping are pure functions; the async code only
//! carries requests and deadlines.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::try_join_all;
use quiver_net::{rpc, Transport};
use quiver_proto::{
    key_hash, merge_top_k, owner, Filter, HashRange, Hit, NodeRequest, NodeResponse, ShardId,
    VectorRecord, WriteOp,
};

use crate::catalog::{Catalog, IndexRecord, ShardPlacement};
use crate::error::ApiError;

/// Deadline of one node RPC.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);

pub struct DataPlane {
    transport: Arc<dyn Transport>,
    /// Node addresses and liveness come from here.
    catalog: Arc<dyn Catalog>,
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
        DataPlane { transport, catalog }
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
        request: NodeRequest,
    ) -> Result<NodeResponse, ApiError> {
        let addr = self
            .node_addr(node)
            .inspect_err(|_| tracing::debug!(node, "shard's node is down or unknown"))?;
        let response: NodeResponse = rpc(&*self.transport, &addr, request_id, RPC_TIMEOUT, request)
            .await
            // The client gets a retryable 503, logged once by the API; the cause stays here.
            .inspect_err(|error| tracing::debug!(node, %error, "node call failed"))?;
        match response {
            NodeResponse::Error(error) => Err(error.into()),
            other => Ok(other),
        }
    }

    /// The node that serves `placement` (its first replica's); an internal error for a shard
    /// without replicas, which the catalog never creates.
    fn serving_node<'a>(
        index: &IndexRecord,
        placement: &'a ShardPlacement,
    ) -> Result<&'a str, ApiError> {
        placement.serving_node().ok_or_else(|| {
            tracing::error!(index = %index.name, shard = placement.shard, "shard has no replica");
            ApiError::Internal("We encountered an internal error. Please try again.".into())
        })
    }

    fn unexpected(response: &NodeResponse) -> ApiError {
        tracing::error!(?response, "unexpected node response");
        ApiError::Internal("We encountered an internal error. Please try again.".into())
    }

    /// Creates every shard of a new index on its node (idempotent on the node side).
    pub async fn create_shards(
        &self,
        index: &IndexRecord,
        request_id: &str,
    ) -> Result<(), ApiError> {
        let calls = index
            .shards
            .iter()
            .map(|placement| {
                let node = Self::serving_node(index, placement)?;
                let spec = index.shard_spec(placement);
                Ok(self.call(node, request_id, NodeRequest::CreateShard(spec)))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        try_join_all(calls).await?;
        Ok(())
    }

    /// Drops every shard of a deleted index; failures are logged, not returned (the index is
    /// already gone from the catalog, so the data is unreachable either way, and the node drops
    /// the shard when its next heartbeat no longer lists it).
    pub async fn drop_shards(&self, index: &IndexRecord, request_id: &str) {
        let results = futures::future::join_all(index.shards.iter().map(|placement| async {
            let node = Self::serving_node(index, placement)?;
            let request = NodeRequest::DropShard(index.shard_id(placement));
            self.call(node, request_id, request).await
        }))
        .await;
        for error in results.into_iter().filter_map(Result::err) {
            tracing::warn!(index = %index.name, %error, "dropping a shard failed; the node drops it once its assignments no longer list it");
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

    /// Applies writes; returns once every shard's part is durable.
    pub async fn write(
        &self,
        index: &IndexRecord,
        request_id: &str,
        ops: Vec<WriteOp>,
    ) -> Result<(), ApiError> {
        let groups = Self::route(index, ops, |op| match op {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } => key,
        })?;
        let calls = groups
            .into_iter()
            .map(|(placement, ops)| {
                let request = NodeRequest::Write {
                    shard: index.shard_id(placement),
                    ops,
                };
                Ok(self.call(Self::serving_node(index, placement)?, request_id, request))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
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
        let calls = groups
            .into_iter()
            .map(|(placement, keys)| {
                let request = NodeRequest::Get {
                    shard: index.shard_id(placement),
                    keys,
                    return_data,
                    return_metadata,
                };
                Ok(self.call(Self::serving_node(index, placement)?, request_id, request))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
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
        let calls = index
            .shards
            .iter()
            .map(|placement| {
                let request = NodeRequest::List {
                    shard: index.shard_id(placement),
                    after: after.clone(),
                    limit,
                    range,
                    return_data,
                    return_metadata,
                };
                Ok(self.call(Self::serving_node(index, placement)?, request_id, request))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let mut pages = Vec::new();
        for response in try_join_all(calls).await? {
            match response {
                NodeResponse::Listed { vectors, more } => pages.push((vectors, more)),
                other => return Err(Self::unexpected(&other)),
            }
        }
        Ok(merge_pages(pages, limit as usize))
    }

    /// Fans a query out to every node holding shards of the index (one RPC per node, which
    /// searches and merges its shards) and merges their top-k. Any shard failing fails the
    /// query: never a silently partial answer.
    pub async fn query(
        &self,
        index: &IndexRecord,
        request_id: &str,
        vector: Vec<f32>,
        top_k: u32,
        filter: Option<Filter>,
        return_metadata: bool,
    ) -> Result<Vec<Hit>, ApiError> {
        let mut by_node: BTreeMap<&str, Vec<ShardId>> = BTreeMap::new();
        for placement in &index.shards {
            by_node
                .entry(Self::serving_node(index, placement)?)
                .or_default()
                .push(index.shard_id(placement));
        }
        let calls = by_node.into_iter().map(|(node, shards)| {
            let request = NodeRequest::SearchShards {
                shards,
                vector: vector.clone(),
                top_k,
                filter: filter.clone(),
                return_metadata,
            };
            self.call(node, request_id, request)
        });
        let mut lists = Vec::new();
        for response in try_join_all(calls).await? {
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
