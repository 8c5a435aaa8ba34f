//! The data path: which shard owns a key, fan-out of each request to the shards over the node
//! transport, and the k-way merge of per-shard results. The merge and the grouping are pure
//! functions; the async code only carries requests and deadlines.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::try_join_all;
use quiver_node::client::NodeTransport;
use quiver_proto::{
    merge_top_k, shard_for_key, DistanceMetric, Filter, HashRange, Hit, NodeRequest, NodeResponse,
    ShardId, VectorRecord, WriteOp,
};

use crate::catalog::{Catalog, IndexRecord, ShardPlacement};
use crate::error::ApiError;

/// Deadline of one node RPC.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);

pub struct DataPlane {
    transport: Arc<dyn NodeTransport>,
    /// Node addresses and liveness come from here.
    catalog: Arc<dyn Catalog>,
}

/// Splits `items` by the shard that owns each item's key, preserving order within a shard.
pub fn group_by_shard<T>(
    shard_count: u32,
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> &str,
) -> BTreeMap<u32, Vec<T>> {
    let mut groups: BTreeMap<u32, Vec<T>> = BTreeMap::new();
    for item in items {
        groups
            .entry(shard_for_key(key(&item), shard_count))
            .or_default()
            .push(item);
    }
    groups
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
    pub fn new(transport: Arc<dyn NodeTransport>, catalog: Arc<dyn Catalog>) -> Self {
        DataPlane { transport, catalog }
    }

    /// The address of a node that is up; a retryable 503 for a node that is down or unknown
    /// (never a silently partial answer).
    fn node_addr(&self, node: &str) -> Result<SocketAddr, ApiError> {
        let state = self.catalog.state();
        let record = state.node(node).filter(|record| record.up);
        let addr = record.and_then(|record| record.addr.parse().ok());
        addr.ok_or_else(|| {
            tracing::warn!(node, "shard's node is down or unknown");
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
        let addr = self.node_addr(node)?;
        let response = self
            .transport
            .call(addr, request_id, RPC_TIMEOUT, request)
            .await?;
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

    fn placement(index: &IndexRecord, shard: u32) -> Result<&ShardPlacement, ApiError> {
        index
            .shards
            .iter()
            .find(|p| p.shard == shard)
            .ok_or_else(|| {
                tracing::error!(index = %index.name, shard, "shard missing from the shard map");
                ApiError::Internal("We encountered an internal error. Please try again.".into())
            })
    }

    fn shard_count(index: &IndexRecord) -> u32 {
        index.shards.len() as u32
    }

    /// Applies writes; returns once every shard's part is durable.
    pub async fn write(
        &self,
        index: &IndexRecord,
        request_id: &str,
        ops: Vec<WriteOp>,
    ) -> Result<(), ApiError> {
        let groups = group_by_shard(Self::shard_count(index), ops, |op| match op {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } => key,
        });
        let calls = groups
            .into_iter()
            .map(|(shard, ops)| {
                let placement = Self::placement(index, shard)?;
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
        let groups = group_by_shard(Self::shard_count(index), keys, |k| k);
        let calls = groups
            .into_iter()
            .map(|(shard, keys)| {
                let placement = Self::placement(index, shard)?;
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

/// The metric name on the wire.
pub fn metric_name(metric: DistanceMetric) -> &'static str {
    match metric {
        DistanceMetric::Euclidean => "euclidean",
        DistanceMetric::Cosine => "cosine",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_follows_the_shard_hash() {
        let keys: Vec<String> = (0..100).map(|i| format!("key{i}")).collect();
        let groups = group_by_shard(4, keys.clone(), |k| k);
        assert_eq!(groups.values().map(Vec::len).sum::<usize>(), 100);
        for (shard, keys) in groups {
            for key in keys {
                assert_eq!(shard_for_key(&key, 4), shard);
            }
        }
    }
}
