//! The tag routes (`GET|POST|DELETE /tags/{arn}`) on buckets and indexes.

use axum::http::Method;
use serde_json::{json, Value};

use super::harness::*;

async fn list(h: &Harness, arn: &str) -> Value {
    h.tags(Who::Dev, Method::GET, arn, "", None).await.ok()
}

#[tokio::test]
async fn tags_are_added_overwritten_and_removed_per_resource() {
    let h = Harness::new();
    let created = json!({"vectorBucketName": "bk1", "tags": {"team": "search", "env": "dev"}});
    h.call(Who::Dev, "CreateVectorBucket", created).await.ok();
    h.bucket_with_index("bk1", "ix1", 2, "cosine").await;
    let bucket = h.bucket_arn("bk1");
    let index = h.index_arn("bk1", "ix1");
    // Tags given at creation; none on the index.
    assert_eq!(
        list(&h, &bucket).await,
        json!({"tags": {"env": "dev", "team": "search"}})
    );
    assert_eq!(list(&h, &index).await, json!({"tags": {}}));
    // TagResource adds and overwrites; the index's tags are its own.
    let body = json!({"tags": {"env": "prod", "cost center": "a+b"}});
    h.tags(Who::Dev, Method::POST, &bucket, "", Some(body))
        .await
        .ok_empty();
    let body = json!({"tags": {"env": "index"}});
    h.tags(Who::Dev, Method::POST, &index, "", Some(body))
        .await
        .ok_empty();
    assert_eq!(
        list(&h, &bucket).await,
        json!({"tags": {"cost center": "a+b", "env": "prod", "team": "search"}})
    );
    assert_eq!(list(&h, &index).await, json!({"tags": {"env": "index"}}));
    // UntagResource removes every key named (percent-encoded in the query); absent keys are
    // no error.
    let query = "tagKeys=cost%20center&tagKeys=team&tagKeys=absent";
    h.tags(Who::Dev, Method::DELETE, &bucket, query, None)
        .await
        .ok_empty();
    assert_eq!(list(&h, &bucket).await, json!({"tags": {"env": "prod"}}));
    assert_eq!(list(&h, &index).await, json!({"tags": {"env": "index"}}));
    // More than 50 tags in all is refused and changes nothing.
    let many: serde_json::Map<String, Value> =
        (0..50).map(|i| (format!("k{i}"), json!("v"))).collect();
    let before = h.snapshot();
    let message = h
        .tags(
            Who::Dev,
            Method::POST,
            &bucket,
            "",
            Some(json!({"tags": many})),
        )
        .await
        .error(400, "ValidationException");
    assert!(message.contains("50"), "{message}");
    h.assert_unchanged(&before);
    // A deleted and re-created bucket starts without tags.
    h.call(Who::Dev, "DeleteIndex", json!({"indexArn": index}))
        .await
        .ok_empty();
    h.call(
        Who::Dev,
        "DeleteVectorBucket",
        json!({"vectorBucketArn": bucket}),
    )
    .await
    .ok_empty();
    h.tags(Who::Dev, Method::GET, &bucket, "", None)
        .await
        .error(404, "NotFoundException");
    h.call(
        Who::Dev,
        "CreateVectorBucket",
        json!({"vectorBucketName": "bk1"}),
    )
    .await
    .ok();
    assert_eq!(list(&h, &bucket).await, json!({"tags": {}}));
}
