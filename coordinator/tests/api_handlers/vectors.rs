//! PutVectors, GetVectors, ListVectors and DeleteVectors against the fake node: routing by key
//! hash, batch atomicity, paging and segments.

use std::collections::{BTreeMap, BTreeSet};

use quiver_proto::{key_hash, owner};
use serde_json::{json, Value};

use super::harness::*;

fn vector(key: &str, i: usize) -> Value {
    json!({"key": key, "data": {"float32": [i as f64, 0.5, -0.25]}, "metadata": {"n": i}})
}

fn keys(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("key-{i:04}")).collect()
}

/// Puts `keys` into bk1/ix1 (dimension 3) in batches of 50.
async fn put_all(h: &Harness, keys: &[String]) {
    for (batch, chunk) in keys.chunks(50).enumerate() {
        let vectors: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, key)| vector(key, batch * 50 + i))
            .collect();
        h.call(
            Who::Dev,
            "PutVectors",
            json!({"vectorBucketName": "bk1", "indexName": "ix1", "vectors": vectors}),
        )
        .await
        .ok_empty();
    }
}

#[tokio::test]
async fn put_vectors_reach_the_shard_that_owns_each_key() {
    let h = Harness::new();
    h.bucket_with_index("bk1", "ix1", 3, "euclidean").await;
    let keys = keys(400);
    put_all(&h, &keys).await;
    let index = h.catalog.index("bk1", "ix1").expect("index");
    let ranges: Vec<_> = index.shards.iter().map(|p| p.range).collect();
    let writes = h.node.writes();
    assert_eq!(writes.len(), keys.len());
    let mut per_shard: BTreeMap<u32, usize> = BTreeMap::new();
    for (shard, key) in &writes {
        let position = owner(ranges.iter().copied(), key_hash(key)).expect("an owner");
        assert_eq!(shard.index, index.uid, "{key}");
        assert_eq!(shard.shard, index.shards[position].shard, "{key}");
        *per_shard.entry(shard.shard).or_default() += 1;
    }
    let written: BTreeSet<&String> = writes.iter().map(|(_, key)| key).collect();
    assert_eq!(written, keys.iter().collect());
    // 400 keys over 4 equal ranges: every shard got some (about 100 each).
    assert_eq!(per_shard.len(), 4, "{per_shard:?}");
    assert!(
        per_shard.values().all(|n| (50..150).contains(n)),
        "{per_shard:?}"
    );
}

#[tokio::test]
async fn a_batch_with_one_bad_vector_writes_nothing() {
    let h = Harness::new();
    h.bucket_with_index("bk1", "ix1", 3, "euclidean").await;
    put_all(&h, &keys(60)).await;
    let bad_ones = [
        json!({"key": "new-13", "data": {"float32": [1.0, 2.0]}}),
        json!({"key": "new-13", "data": {"float32": [1.0, 2.0, 3.0]}, "metadata": {"x": {"nested": 1}}}),
        json!({"key": "", "data": {"float32": [1.0, 2.0, 3.0]}}),
        json!({"key": "new-13", "data": {"float32": [1.0, "2", 3.0]}}),
        json!({"key": "new-13"}),
    ];
    for bad in bad_ones {
        // Overwrites of existing keys and new keys, spread over every shard, around the bad one.
        let mut vectors: Vec<Value> = (0..20)
            .map(|i| vector(&format!("key-{i:04}"), 1000 + i))
            .collect();
        vectors.extend((0..20).map(|i| vector(&format!("new-{i}"), i)));
        vectors[33] = bad.clone();
        h.refused(
            Who::Dev,
            "PutVectors",
            json!({"vectorBucketName": "bk1", "indexName": "ix1", "vectors": vectors}),
            400,
            "ValidationException",
        )
        .await;
    }
    assert_eq!(h.node.writes().len(), 60);
}

/// Pages through ListVectors with `extra` members until no nextToken; the keys in order.
async fn list_all(h: &Harness, extra: Value, page: usize) -> Vec<String> {
    let mut token: Option<String> = None;
    let mut out = Vec::new();
    loop {
        let mut body = json!({"vectorBucketName": "bk1", "indexName": "ix1", "maxResults": page});
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        if let Some(token) = &token {
            body["nextToken"] = json!(token);
        }
        let reply = h.call(Who::Dev, "ListVectors", body).await.ok();
        let vectors = reply["vectors"].as_array().expect("vectors");
        assert!(vectors.len() <= page);
        out.extend(
            vectors
                .iter()
                .map(|v| v["key"].as_str().expect("key").to_owned()),
        );
        match reply.get("nextToken") {
            Some(next) => token = Some(next.as_str().expect("token").to_owned()),
            None => return out,
        }
        assert!(out.len() <= 10_000, "paging does not end");
    }
}

#[tokio::test]
async fn list_vectors_pages_return_every_key_exactly_once() {
    let h = Harness::new();
    h.bucket_with_index("bk1", "ix1", 3, "euclidean").await;
    let keys = keys(237);
    put_all(&h, &keys).await;
    // One listing in pages of 10: every key once, in key order.
    assert_eq!(list_all(&h, json!({}), 10).await, keys);
    // Three segments in pages of 7: disjoint, together every key once.
    let mut seen: Vec<String> = Vec::new();
    for segment in 0..3 {
        let part = list_all(&h, json!({"segmentCount": 3, "segmentIndex": segment}), 7).await;
        assert!(
            part.windows(2).all(|w| w[0] < w[1]),
            "segment {segment} in key order"
        );
        assert!(!part.is_empty(), "segment {segment}");
        seen.extend(part);
    }
    seen.sort();
    assert_eq!(seen, keys);
    // With data and metadata, the values that were put.
    let reply = h
        .call(
            Who::Dev,
            "ListVectors",
            json!({"vectorBucketName": "bk1", "indexName": "ix1", "maxResults": 2,
                   "returnData": true, "returnMetadata": true}),
        )
        .await
        .ok();
    assert_eq!(
        reply["vectors"],
        json!([
            {"key": "key-0000", "data": {"float32": [0.0, 0.5, -0.25]}, "metadata": {"n": 0}},
            {"key": "key-0001", "data": {"float32": [1.0, 0.5, -0.25]}, "metadata": {"n": 1}},
        ])
    );
    // A token belongs to its listing: not to another segment, nor another index.
    let first = h
        .call(
            Who::Dev,
            "ListVectors",
            json!({"vectorBucketName": "bk1", "indexName": "ix1", "maxResults": 5, "segmentCount": 3, "segmentIndex": 0}),
        )
        .await
        .ok();
    let token = first["nextToken"].as_str().expect("a next page").to_owned();
    h.bucket_with_index("bk1", "ix2", 3, "euclidean").await;
    for (index, segment) in [("ix1", 1), ("ix2", 0)] {
        h.refused(
            Who::Dev,
            "ListVectors",
            json!({"vectorBucketName": "bk1", "indexName": index, "maxResults": 5,
                   "segmentCount": 3, "segmentIndex": segment, "nextToken": token}),
            400,
            "ValidationException",
        )
        .await;
    }
}

#[tokio::test]
async fn get_and_delete_vectors_act_on_exactly_the_keys_named() {
    let h = Harness::new();
    h.bucket_with_index("bk1", "ix1", 3, "euclidean").await;
    let keys = keys(40);
    put_all(&h, &keys).await;
    // Duplicates and missing keys: each existing key once.
    let out = h
        .call(
            Who::Dev,
            "GetVectors",
            json!({"vectorBucketName": "bk1", "indexName": "ix1",
                   "keys": ["key-0003", "nope", "key-0003", "key-0017"]}),
        )
        .await
        .ok();
    let mut got: Vec<Value> = out["vectors"].as_array().expect("vectors").clone();
    got.sort_by_key(|v| v["key"].as_str().map(str::to_owned));
    assert_eq!(
        got,
        [json!({"key": "key-0003"}), json!({"key": "key-0017"})]
    );
    // Overwrite one key: the new data and metadata replace the old.
    h.call(
        Who::Dev,
        "PutVectors",
        json!({"vectorBucketName": "bk1", "indexName": "ix1",
               "vectors": [{"key": "key-0003", "data": {"float32": [9.0, 9.0, 9.0]}, "metadata": {"m": "new"}}]}),
    )
    .await
    .ok_empty();
    let out = h
        .call(
            Who::Dev,
            "GetVectors",
            json!({"vectorBucketName": "bk1", "indexName": "ix1", "keys": ["key-0003"],
                   "returnData": true, "returnMetadata": true}),
        )
        .await
        .ok();
    assert_eq!(
        out,
        json!({"vectors": [{"key": "key-0003", "data": {"float32": [9.0, 9.0, 9.0]}, "metadata": {"m": "new"}}]})
    );
    // Delete a mix of existing and missing keys over several shards.
    let deleted: Vec<&String> = keys.iter().step_by(3).collect();
    let mut named: Vec<Value> = deleted.iter().map(|k| json!(k)).collect();
    named.push(json!("never-put"));
    h.call(
        Who::Dev,
        "DeleteVectors",
        json!({"vectorBucketName": "bk1", "indexName": "ix1", "keys": named}),
    )
    .await
    .ok_empty();
    let remaining: Vec<String> = keys
        .iter()
        .filter(|k| !deleted.contains(k))
        .cloned()
        .collect();
    assert_eq!(list_all(&h, json!({}), 500).await, remaining);
    let stored: BTreeSet<String> = h
        .node
        .shards()
        .values()
        .flat_map(|s| s.records.keys().cloned())
        .collect();
    assert_eq!(stored, remaining.into_iter().collect());
}

#[tokio::test]
async fn an_unavailable_node_is_a_503_never_a_partial_answer() {
    use quiver_coordinator::catalog::CatalogCommand;

    let h = Harness::new();
    h.bucket_with_index("bk1", "ix1", 3, "euclidean").await;
    put_all(&h, &keys(20)).await;
    let query = json!({"vectorBucketName": "bk1", "indexName": "ix1", "topK": 3,
                       "queryVector": {"float32": [0.0, 0.0, 0.0]}});
    // The node stops answering: reads and writes are 503, nothing is written.
    h.transport.remove(super::fakes::NODE_ADDR);
    h.refused(
        Who::Dev,
        "QueryVectors",
        query.clone(),
        503,
        "ServiceUnavailableException",
    )
    .await;
    h.refused(
        Who::Dev,
        "PutVectors",
        json!({"vectorBucketName": "bk1", "indexName": "ix1", "vectors": [vector("late", 1)]}),
        503,
        "ServiceUnavailableException",
    )
    .await;
    // CreateIndex whose shards cannot be created takes the index out of the catalog again.
    let before = h.catalog.view();
    let body = json!({"vectorBucketName": "bk1", "indexName": "ix2", "dataType": "float32",
                      "dimension": 3, "distanceMetric": "cosine"});
    h.call(Who::Dev, "CreateIndex", body)
        .await
        .error(503, "ServiceUnavailableException");
    assert_eq!(h.catalog.view(), before);
    // A node the catalog marks down is not even asked.
    h.transport.serve(super::fakes::NODE_ADDR, h.node.clone());
    h.call(Who::Dev, "QueryVectors", query.clone()).await.ok();
    h.catalog
        .apply(CatalogCommand::SetNodeUp {
            id: super::fakes::NODE_ID.into(),
            up: false,
        })
        .expect("mark down");
    let asked = h.node.requests().len();
    h.refused(
        Who::Dev,
        "QueryVectors",
        query,
        503,
        "ServiceUnavailableException",
    )
    .await;
    assert_eq!(h.node.requests().len(), asked);
}
