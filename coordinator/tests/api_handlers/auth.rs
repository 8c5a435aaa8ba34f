//! Authentication and authorization through the router: unsigned and badly signed requests,
//! a caller without the IAM action (403 whether or not the resource exists), implied actions,
//! bucket policies, and routes that are no operation.

use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::Method;
use serde_json::{json, Value};

use super::harness::*;

/// Bucket `bk1` with index `ix1` (dimension 2) holding one vector.
async fn populated() -> Harness {
    let h = Harness::new();
    h.bucket_with_index("bk1", "ix1", 2, "euclidean").await;
    h.call(
        Who::Dev,
        "PutVectors",
        json!({"vectorBucketName": "bk1", "indexName": "ix1",
               "vectors": [{"key": "k1", "data": {"float32": [1.0, 0.0]}, "metadata": {"g": "a"}}]}),
    )
    .await
    .ok_empty();
    h
}

/// A valid request body of `operation` addressing bucket `bucket` and index `index`.
fn body_of(operation: &str, bucket: &str, index: &str) -> Value {
    let b = json!({"vectorBucketName": bucket});
    let i = json!({"vectorBucketName": bucket, "indexName": index});
    let with = |mut base: Value, extra: Value| {
        base.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        base
    };
    match operation {
        "CreateVectorBucket" | "ListVectorBuckets" => json!({"vectorBucketName": bucket}),
        "GetVectorBucket"
        | "DeleteVectorBucket"
        | "GetVectorBucketPolicy"
        | "DeleteVectorBucketPolicy"
        | "ListIndexes" => b,
        "PutVectorBucketPolicy" => with(
            b,
            json!({"policy": r#"{"Version":"2012-10-17","Statement":[]}"#}),
        ),
        "PutVectorBucketDefaultIndexMode" => with(b, json!({"defaultIndexMode": "ENHANCED"})),
        "CreateIndex" => with(
            b,
            json!({"indexName": index, "dataType": "float32", "dimension": 2, "distanceMetric": "cosine"}),
        ),
        "GetIndex" | "DeleteIndex" | "UpdateMetadataConfiguration" | "ListVectors" => i,
        "UpdateIndexMode" => with(i, json!({"indexMode": "ENHANCED"})),
        "PutVectors" => with(
            i,
            json!({"vectors": [{"key": "k2", "data": {"float32": [0.0, 1.0]}}]}),
        ),
        "GetVectors" | "DeleteVectors" => with(i, json!({"keys": ["k1"]})),
        "QueryVectors" => with(
            i,
            json!({"topK": 1, "queryVector": {"float32": [1.0, 0.0]}}),
        ),
        other => panic!("no body for {other}"),
    }
}

/// Sends `operation` as `who` on bucket `bucket` / index `index`.
async fn request(h: &Harness, who: Who, operation: &str, bucket: &str, index: &str) -> Reply {
    let arn = h.index_arn(bucket, index);
    match operation {
        "TagResource" => {
            h.tags(
                who,
                Method::POST,
                &arn,
                "",
                Some(json!({"tags": {"a": "b"}})),
            )
            .await
        }
        "UntagResource" => h.tags(who, Method::DELETE, &arn, "tagKeys=a", None).await,
        "ListTagsForResource" => h.tags(who, Method::GET, &arn, "", None).await,
        _ => {
            h.call(who, operation, body_of(operation, bucket, index))
                .await
        }
    }
}

#[tokio::test]
async fn without_the_action_a_caller_gets_403_whether_or_not_the_resource_exists() {
    let h = populated().await;
    let mut checked = 0;
    for (operation, _, _) in model_operations() {
        let action = format!("s3vectors:{operation}");
        if LIMITED_ACTIONS.contains(&action.as_str()) {
            continue;
        }
        let before = h.snapshot();
        let existing = request(&h, Who::Limited, &operation, "bk1", "ix1")
            .await
            .error(403, "AccessDeniedException");
        let missing = request(&h, Who::Limited, &operation, "nobucket", "noindex")
            .await
            .error(403, "AccessDeniedException");
        h.assert_unchanged(&before);
        assert!(existing.contains(&action), "{existing}");
        // The same answer but for the resource's name: existence does not leak.
        assert_eq!(
            existing.replace("bk1", "B").replace("ix1", "I"),
            missing.replace("nobucket", "B").replace("noindex", "I"),
            "{operation}"
        );
        checked += 1;
    }
    assert_eq!(checked, 22 - LIMITED_ACTIONS.len());
}

#[tokio::test]
async fn implied_actions_are_authorized_too() {
    let h = populated().await;
    let forbidden = [
        // Creating with tags also tags: TagResource.
        (
            "CreateVectorBucket",
            json!({"vectorBucketName": "bk2", "tags": {"a": "b"}}),
            "TagResource",
        ),
        (
            "CreateIndex",
            json!({"vectorBucketName": "bk1", "indexName": "ix2", "dataType": "float32", "dimension": 2,
                   "distanceMetric": "cosine", "tags": {"a": "b"}}),
            "TagResource",
        ),
        // Reading data, metadata or filtering by it also reads: GetVectors.
        (
            "ListVectors",
            json!({"vectorBucketName": "bk1", "indexName": "ix1", "returnMetadata": true}),
            "GetVectors",
        ),
        (
            "ListVectors",
            json!({"vectorBucketName": "bk1", "indexName": "ix1", "returnData": true}),
            "GetVectors",
        ),
        (
            "QueryVectors",
            json!({"vectorBucketName": "bk1", "indexName": "ix1", "topK": 1, "queryVector": {"float32": [1.0, 0.0]},
                   "filter": {"g": "a"}}),
            "GetVectors",
        ),
        (
            "QueryVectors",
            json!({"vectorBucketName": "bk1", "indexName": "ix1", "topK": 1, "queryVector": {"float32": [1.0, 0.0]},
                   "returnMetadata": true}),
            "GetVectors",
        ),
    ];
    for (operation, body, implied) in forbidden {
        let message = h
            .refused(
                Who::Limited,
                operation,
                body.clone(),
                403,
                "AccessDeniedException",
            )
            .await;
        assert!(
            message.contains(&format!("s3vectors:{implied}")),
            "{operation} {body}: {message}"
        );
    }
    // Without what implies the other action, the same caller succeeds.
    let out = h
        .call(
            Who::Limited,
            "QueryVectors",
            json!({"vectorBucketName": "bk1", "indexName": "ix1", "topK": 1,
                   "queryVector": {"float32": [1.0, 0.0]}, "returnDistance": true}),
        )
        .await
        .ok();
    assert_eq!(out["vectors"], json!([{"key": "k1", "distance": 0.0}]));
    let out = h
        .call(
            Who::Limited,
            "ListVectors",
            json!({"vectorBucketName": "bk1", "indexName": "ix1"}),
        )
        .await
        .ok();
    assert_eq!(out, json!({"vectors": [{"key": "k1"}]}));
    h.call(
        Who::Limited,
        "CreateVectorBucket",
        json!({"vectorBucketName": "bk2"}),
    )
    .await
    .ok();
    assert!(h.catalog.bucket("bk2").is_some_and(|b| b.tags.is_empty()));
}

#[tokio::test]
async fn a_bucket_policy_deny_overrides_the_identity_allow() {
    let h = populated().await;
    h.bucket_with_index("bk2", "ix1", 2, "euclidean").await;
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Principal": "*", "Action": ["s3vectors:PutVectors", "s3vectors:GetIndex"],
                       "Resource": format!("{}/index/*", h.bucket_arn("bk1"))}],
    })
    .to_string();
    h.call(
        Who::Dev,
        "PutVectorBucketPolicy",
        json!({"vectorBucketName": "bk1", "policy": policy}),
    )
    .await
    .ok_empty();
    let message = h
        .refused(
            Who::Dev,
            "PutVectors",
            body_of("PutVectors", "bk1", "ix1"),
            403,
            "AccessDeniedException",
        )
        .await;
    assert!(message.contains("explicit deny"), "{message}");
    h.refused(
        Who::Dev,
        "GetIndex",
        body_of("GetIndex", "bk1", "ix1"),
        403,
        "AccessDeniedException",
    )
    .await;
    // Other actions on the bucket, and the other bucket, are not affected.
    h.call(Who::Dev, "GetVectors", body_of("GetVectors", "bk1", "ix1"))
        .await
        .ok();
    h.call(Who::Dev, "PutVectors", body_of("PutVectors", "bk2", "ix1"))
        .await
        .ok_empty();
    h.call(
        Who::Dev,
        "DeleteVectorBucketPolicy",
        json!({"vectorBucketName": "bk1"}),
    )
    .await
    .ok_empty();
    h.call(Who::Dev, "PutVectors", body_of("PutVectors", "bk1", "ix1"))
        .await
        .ok_empty();
    h.call(Who::Dev, "GetIndex", body_of("GetIndex", "bk1", "ix1"))
        .await
        .ok();
}

#[tokio::test]
async fn unsigned_and_badly_signed_requests_get_403_and_change_nothing() {
    let h = populated().await;
    let body = serde_json::to_vec(&json!({"vectorBucketName": "bk9"})).expect("json");
    let now = SystemTime::now();
    let dev = ("quiverdev", "quiverdevsecret");
    let mut cases: Vec<(&str, axum::http::Request<Body>, &str)> = vec![
        (
            "no Authorization header",
            unsigned(Method::POST, "/CreateVectorBucket")
                .body(Body::from(body.clone()))
                .expect("request"),
            "MissingAuthenticationTokenException",
        ),
        (
            "garbage Authorization header",
            unsigned(Method::POST, "/CreateVectorBucket")
                .header("authorization", "AWS4-HMAC-SHA256 garbage")
                .header("x-amz-date", "20261130T000000Z")
                .body(Body::from(body.clone()))
                .expect("request"),
            "IncompleteSignatureException",
        ),
        (
            "unknown access key",
            signed_at(
                ("nosuchkey", "whatever-secret"),
                now,
                Method::POST,
                "/CreateVectorBucket",
                body.clone(),
            ),
            "UnrecognizedClientException",
        ),
        (
            "wrong secret",
            signed_at(
                (dev.0, "not-the-secret"),
                now,
                Method::POST,
                "/CreateVectorBucket",
                body.clone(),
            ),
            "InvalidSignatureException",
        ),
        (
            "signed an hour ago",
            signed_at(
                dev,
                now - Duration::from_secs(3600),
                Method::POST,
                "/CreateVectorBucket",
                body.clone(),
            ),
            "InvalidSignatureException",
        ),
    ];
    // A body other than the signed one.
    let signed_request = signed(Who::Dev, Method::POST, "/CreateVectorBucket", body.clone());
    let (parts, _) = signed_request.into_parts();
    let tampered = serde_json::to_vec(&json!({"vectorBucketName": "bk8"})).expect("json");
    cases.push((
        "tampered body",
        axum::http::Request::from_parts(parts, Body::from(tampered)),
        "InvalidSignatureException",
    ));
    // Signed for another path: the canonical request is rebuilt from the path received.
    let (mut parts, body_bytes) =
        signed_at(dev, now, Method::POST, "/DeleteVectorBucket", body.clone()).into_parts();
    parts.uri = "/CreateVectorBucket".parse().expect("uri");
    cases.push((
        "signed for another path",
        axum::http::Request::from_parts(parts, body_bytes),
        "InvalidSignatureException",
    ));
    // The tag routes too.
    cases.push((
        "unsigned UntagResource",
        unsigned(
            Method::DELETE,
            &format!("/tags/{}?tagKeys=a", enc(&h.bucket_arn("bk1"))),
        )
        .body(Body::empty())
        .expect("request"),
        "MissingAuthenticationTokenException",
    ));
    for (what, request, error_type) in cases {
        let before = h.snapshot();
        let reply = h.send(request).await;
        assert_eq!(reply.status, 403, "{what}");
        reply.error(403, error_type);
        h.assert_unchanged(&before);
    }
    assert!(h.catalog.bucket("bk9").is_none() && h.catalog.bucket("bk8").is_none());
}

fn enc(arn: &str) -> String {
    percent_encoding::utf8_percent_encode(arn, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn routes_that_are_no_operation_get_the_s3_shaped_error() {
    let h = populated().await;
    let arn = enc(&h.bucket_arn("bk1"));
    let requests = [
        // Signed, but no such operation.
        signed(Who::Dev, Method::POST, "/NoSuchOperation", b"{}".to_vec()),
        signed(
            Who::Dev,
            Method::POST,
            "/TagResource",
            b"{\"tags\":{\"a\":\"b\"}}".to_vec(),
        ),
        signed(
            Who::Dev,
            Method::POST,
            "/createvectorbucket",
            b"{\"vectorBucketName\":\"bk7\"}".to_vec(),
        ),
        // Wrong method or shape of path.
        signed(Who::Dev, Method::GET, "/CreateVectorBucket", Vec::new()),
        signed(
            Who::Dev,
            Method::PUT,
            &format!("/tags/{arn}"),
            b"{\"tags\":{\"a\":\"b\"}}".to_vec(),
        ),
        signed(
            Who::Dev,
            Method::POST,
            "/CreateVectorBucket/extra",
            b"{\"vectorBucketName\":\"bk7\"}".to_vec(),
        ),
        signed(Who::Dev, Method::POST, "/", b"{}".to_vec()),
    ];
    for request in requests {
        let what = format!("{} {}", request.method(), request.uri());
        let before = h.snapshot();
        let message = h
            .send(request)
            .await
            .error(404, "UnknownOperationException");
        assert!(!message.is_empty(), "{what}");
        h.assert_unchanged(&before);
    }
    // An unsigned request to an unknown operation is refused as unsigned first.
    let reply = h
        .send(
            unsigned(Method::POST, "/NoSuchOperation")
                .body(Body::from("{}"))
                .expect("request"),
        )
        .await;
    reply.error(403, "MissingAuthenticationTokenException");
}
