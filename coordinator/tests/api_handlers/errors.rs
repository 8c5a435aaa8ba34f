//! Refused requests, operation by operation: validation errors (status, S3 error type, the rule
//! that fired), conflicts and missing buckets and indexes. After each one, the catalog and the
//! node's data must be as they were.

use axum::http::Method;
use serde_json::{json, Value};

use super::harness::*;

const BUCKET_ADDRESSING: &str =
    "Must specify either vectorBucketName or vectorBucketArn but not both";
const INDEX_ADDRESSING: &str =
    "Must specify either indexArn or both vectorBucketName and indexName";
const BUCKET_NOT_FOUND: &str = "The specified vector bucket could not be found";
const INDEX_NOT_FOUND: &str = "The specified index could not be found";

/// Bucket `bk1` with index `ix1` (dimension 3, euclidean, `note` not filterable) holding two
/// vectors, and an empty bucket `bk2`.
async fn populated() -> Harness {
    let h = Harness::new();
    h.bucket_with_index("bk1", "plain", 3, "euclidean").await;
    h.call(
        Who::Dev,
        "CreateIndex",
        json!({"vectorBucketName": "bk1", "indexName": "ix1", "dataType": "float32", "dimension": 3,
               "distanceMetric": "euclidean",
               "metadataConfiguration": {"nonFilterableMetadataKeys": ["note"]}}),
    )
    .await
    .ok();
    h.call(
        Who::Dev,
        "PutVectors",
        json!({"vectorBucketName": "bk1", "indexName": "ix1", "vectors": [
            {"key": "k1", "data": {"float32": [1.0, 2.0, 3.0]}, "metadata": {"genre": "drama", "note": "n"}},
            {"key": "k2", "data": {"float32": [3.0, 2.0, 1.0]}},
        ]}),
    )
    .await
    .ok_empty();
    h.call(
        Who::Dev,
        "CreateVectorBucket",
        json!({"vectorBucketName": "bk2"}),
    )
    .await
    .ok();
    h
}

fn index(extra: Value) -> Value {
    let mut body = json!({"vectorBucketName": "bk1", "indexName": "ix1"});
    body.as_object_mut()
        .expect("object")
        .extend(extra.as_object().expect("object").clone());
    body
}

#[tokio::test]
async fn every_operation_refuses_invalid_input_and_changes_nothing() {
    let h = populated().await;
    let bk1_arn = h.bucket_arn("bk1");
    let q = json!({"float32": [1.0, 2.0, 3.0]});
    // (operation, body, 400 ValidationException whose message contains this)
    let cases: Vec<(&str, Value, &str)> = vec![
        ("CreateVectorBucket", json!({}), "'/vectorBucketName'"),
        (
            "CreateVectorBucket",
            json!({"vectorBucketName": "Bad_Name"}),
            "Invalid vector bucket name",
        ),
        (
            "CreateVectorBucket",
            json!({"vectorBucketName": "bk3", "tags": {"": "x"}}),
            "'/tags'",
        ),
        ("GetVectorBucket", json!({}), BUCKET_ADDRESSING),
        (
            "GetVectorBucket",
            json!({"vectorBucketName": "bk1", "vectorBucketArn": bk1_arn}),
            BUCKET_ADDRESSING,
        ),
        (
            "ListVectorBuckets",
            json!({"maxResults": 0}),
            "'/maxResults'",
        ),
        (
            "ListVectorBuckets",
            json!({"nextToken": "forged"}),
            "nextToken",
        ),
        ("DeleteVectorBucket", json!({}), BUCKET_ADDRESSING),
        (
            "PutVectorBucketPolicy",
            json!({"vectorBucketName": "bk2", "policy": "{not json"}),
            "Invalid policy",
        ),
        (
            "PutVectorBucketPolicy",
            json!({"vectorBucketName": "bk2"}),
            "'/policy'",
        ),
        ("GetVectorBucketPolicy", json!({}), BUCKET_ADDRESSING),
        (
            "DeleteVectorBucketPolicy",
            json!({"vectorBucketName": "bk2", "vectorBucketArn": h.bucket_arn("bk2")}),
            BUCKET_ADDRESSING,
        ),
        (
            "PutVectorBucketDefaultIndexMode",
            json!({"vectorBucketName": "bk1", "defaultIndexMode": "FAST"}),
            "[CLASSIC, ENHANCED]",
        ),
        (
            "PutVectorBucketDefaultIndexMode",
            json!({"vectorBucketName": "bk1", "defaultIndexMode": "CLASSIC"}),
            "CLASSIC mode is only available",
        ),
        (
            "CreateIndex",
            json!({"vectorBucketName": "bk1", "indexName": "ix2", "dataType": "float32", "dimension": 0, "distanceMetric": "cosine"}),
            "'/dimension'",
        ),
        (
            "CreateIndex",
            json!({"vectorBucketName": "bk1", "indexName": "ix2", "dataType": "float32", "dimension": 4097, "distanceMetric": "cosine"}),
            "'/dimension'",
        ),
        (
            "CreateIndex",
            json!({"vectorBucketName": "bk1", "indexName": "ix2", "dataType": "float16", "dimension": 3, "distanceMetric": "cosine"}),
            "'/dataType'",
        ),
        (
            "CreateIndex",
            json!({"vectorBucketName": "bk1", "indexName": "ix2", "dataType": "float32", "dimension": 3, "distanceMetric": "manhattan"}),
            "'/distanceMetric'",
        ),
        (
            "CreateIndex",
            json!({"indexName": "ix2", "dataType": "float32", "dimension": 3, "distanceMetric": "cosine"}),
            BUCKET_ADDRESSING,
        ),
        ("GetIndex", json!({"indexName": "ix1"}), INDEX_ADDRESSING),
        (
            "GetIndex",
            json!({"vectorBucketName": "bk1", "indexName": "ix1", "indexArn": h.index_arn("bk1", "ix1")}),
            INDEX_ADDRESSING,
        ),
        (
            "ListIndexes",
            json!({"vectorBucketName": "bk1", "maxResults": 501}),
            "'/maxResults'",
        ),
        ("DeleteIndex", json!({}), INDEX_ADDRESSING),
        (
            "UpdateIndexMode",
            index(json!({"indexMode": "CLASSIC"})),
            "CLASSIC mode is only available",
        ),
        ("UpdateIndexMode", index(json!({})), "'/indexMode'"),
        (
            "UpdateMetadataConfiguration",
            json!({"vectorBucketName": "bk1"}),
            INDEX_ADDRESSING,
        ),
        ("PutVectors", index(json!({})), "'/vectors'"),
        ("PutVectors", index(json!({"vectors": []})), "'/vectors'"),
        (
            "PutVectors",
            index(json!({"vectors": [{"key": "k9", "data": {"float32": [1.0, 2.0]}}]})),
            "k9",
        ),
        (
            "PutVectors",
            index(json!({"vectors": [{"key": "k9"}]})),
            "Value null at '/vectors/0/data'",
        ),
        (
            "PutVectors",
            index(json!({"vectors": [{"key": "k9", "data": {}}]})),
            "'/vectors/0/data' failed to satisfy constraint: Member must have its one member, float32",
        ),
        (
            "PutVectors",
            index(
                json!({"vectors": [{"key": "k9", "data": {"float32": [1.0, 2.0, 3.0]}, "metadata": {"a": null}}]}),
            ),
            "k9",
        ),
        ("GetVectors", index(json!({})), "'/keys'"),
        ("GetVectors", index(json!({"keys": []})), "'/keys'"),
        (
            "ListVectors",
            index(json!({"segmentCount": 2})),
            "segmentCount and segmentIndex",
        ),
        (
            "ListVectors",
            index(json!({"maxResults": 1001})),
            "'/maxResults'",
        ),
        ("DeleteVectors", index(json!({})), "'/keys'"),
        (
            "QueryVectors",
            index(json!({"topK": 0, "queryVector": q})),
            "'/topK'",
        ),
        (
            "QueryVectors",
            index(json!({"topK": 10001, "queryVector": q})),
            "topK",
        ),
        ("QueryVectors", index(json!({"topK": 1})), "queryVector"),
        (
            "QueryVectors",
            index(json!({"topK": 1, "queryVector": {"float32": [1.0]}})),
            "query vector",
        ),
        (
            "QueryVectors",
            index(json!({"topK": 1, "queryVector": q, "filter": {"genre": {"$regex": "d"}}})),
            "$regex",
        ),
        (
            "QueryVectors",
            index(json!({"topK": 1, "queryVector": q, "filter": {"note": "n"}})),
            "note",
        ),
        (
            "QueryVectors",
            index(json!({"topK": 1, "queryVector": q, "queryMode": "CLASSIC"})),
            "CLASSIC",
        ),
        // A member of the wrong type is named by its path, in a flattened address member too.
        (
            "GetIndex",
            json!({"vectorBucketName": 7, "indexName": "ix1"}),
            "Invalid request body at '/vectorBucketName': invalid type",
        ),
        (
            "GetIndex",
            json!({"indexArn": ["x"]}),
            "Invalid request body at '/indexArn': invalid type",
        ),
        (
            "QueryVectors",
            index(json!({"topK": "7", "queryVector": q})),
            "Invalid request body at '/topK': invalid type",
        ),
        (
            "PutVectors",
            index(json!({"vectors": [{"key": "a", "data": {"float32": [1.0, "x"]}}]})),
            "Invalid request body at '/vectors/0/data/float32/1': invalid type",
        ),
    ];
    // Every operation has a case (the tag operations below).
    let covered: std::collections::BTreeSet<&str> = cases
        .iter()
        .map(|(operation, _, _)| *operation)
        .chain(["TagResource", "UntagResource", "ListTagsForResource"])
        .collect();
    for (name, _, _) in model_operations() {
        assert!(
            covered.contains(name.as_str()),
            "no invalid-input case for {name}"
        );
    }
    for (operation, body, expected) in cases {
        let message = h
            .refused(
                Who::Dev,
                operation,
                body.clone(),
                400,
                "ValidationException",
            )
            .await;
        assert!(
            message.contains(expected),
            "{operation} {body}: {message:?} does not name {expected:?}"
        );
    }
    // A body that is not JSON.
    for operation in ["CreateVectorBucket", "PutVectors", "QueryVectors"] {
        let before = h.snapshot();
        let request = signed(
            Who::Dev,
            Method::POST,
            &format!("/{operation}"),
            b"{\"vectors\": [".to_vec(),
        );
        let message = h.send(request).await.error(400, "ValidationException");
        assert!(message.contains("Invalid request body"), "{message}");
        h.assert_unchanged(&before);
    }

    // The tag routes: the ARN in the path, the tags in the body, the keys in the query.
    let b1 = h.bucket_arn("bk1");
    let tag_cases = [
        (Method::POST, b1.clone(), "", Some(json!({})), "'/tags'"),
        (
            Method::POST,
            b1.clone(),
            "",
            Some(json!({"tags": {"bad\u{0}key": "v"}})),
            "'/tags'",
        ),
        (Method::DELETE, b1.clone(), "", None, "'/tagKeys'"),
        (
            Method::GET,
            "not-an-arn".to_owned(),
            "",
            None,
            "'/resourceArn' failed to satisfy constraint: Member must satisfy regular expression",
        ),
        (
            Method::POST,
            "arn:aws:s3:::bucket".to_owned(),
            "",
            Some(json!({"tags": {"a": "b"}})),
            "'/resourceArn' failed to satisfy constraint: Member must satisfy regular expression",
        ),
    ];
    for (method, arn, query, body, expected) in tag_cases {
        let before = h.snapshot();
        let message = h
            .tags(Who::Dev, method.clone(), &arn, query, body)
            .await
            .error(400, "ValidationException");
        assert!(message.contains(expected), "{method} {arn}: {message}");
        h.assert_unchanged(&before);
    }
}

#[tokio::test]
async fn conflicts_are_409_and_change_nothing() {
    let h = populated().await;
    let message = h
        .refused(
            Who::Dev,
            "CreateVectorBucket",
            json!({"vectorBucketName": "bk1"}),
            409,
            "ConflictException",
        )
        .await;
    assert_eq!(
        message,
        "A vector bucket with the specified name already exists"
    );
    let message = h
        .refused(
            Who::Dev,
            "CreateIndex",
            json!({"vectorBucketName": "bk1", "indexName": "ix1", "dataType": "float32", "dimension": 5,
                   "distanceMetric": "cosine"}),
            409,
            "ConflictException",
        )
        .await;
    assert_eq!(message, "An index with the specified name already exists");
    let message = h
        .refused(
            Who::Dev,
            "DeleteVectorBucket",
            json!({"vectorBucketName": "bk1"}),
            409,
            "ConflictException",
        )
        .await;
    assert_eq!(message, "The specified vector bucket is not empty");
}

#[tokio::test]
async fn missing_buckets_and_indexes_are_404_and_change_nothing() {
    let h = populated().await;
    let missing_bucket = [
        json!({"vectorBucketName": "nobucket"}),
        json!({"vectorBucketArn": h.bucket_arn("nobucket")}),
        // Another account's bucket is not found here either.
        json!({"vectorBucketArn": "arn:aws:s3vectors:us-east-1:999999999999:bucket/bk1"}),
    ];
    let bucket_operations = [
        ("GetVectorBucket", json!({})),
        ("DeleteVectorBucket", json!({})),
        (
            "PutVectorBucketPolicy",
            json!({"policy": r#"{"Version":"2012-10-17","Statement":[]}"#}),
        ),
        ("GetVectorBucketPolicy", json!({})),
        ("DeleteVectorBucketPolicy", json!({})),
        (
            "PutVectorBucketDefaultIndexMode",
            json!({"defaultIndexMode": "ENHANCED"}),
        ),
        ("ListIndexes", json!({})),
        (
            "CreateIndex",
            json!({"indexName": "ix9", "dataType": "float32", "dimension": 3, "distanceMetric": "cosine"}),
        ),
    ];
    for address in &missing_bucket {
        for (operation, extra) in &bucket_operations {
            let mut body = address.clone();
            body.as_object_mut()
                .expect("object")
                .extend(extra.as_object().expect("object").clone());
            let message = h
                .refused(Who::Dev, operation, body, 404, "NotFoundException")
                .await;
            assert_eq!(message, BUCKET_NOT_FOUND, "{operation} {address}");
        }
    }
    let q = json!({"float32": [1.0, 2.0, 3.0]});
    let index_operations = [
        ("GetIndex", json!({})),
        ("DeleteIndex", json!({})),
        ("UpdateIndexMode", json!({"indexMode": "ENHANCED"})),
        ("UpdateMetadataConfiguration", json!({})),
        (
            "PutVectors",
            json!({"vectors": [{"key": "k", "data": {"float32": [1.0, 2.0, 3.0]}}]}),
        ),
        ("GetVectors", json!({"keys": ["k1"]})),
        ("ListVectors", json!({})),
        ("DeleteVectors", json!({"keys": ["k1"]})),
        ("QueryVectors", json!({"topK": 1, "queryVector": q})),
    ];
    let missing_index = [
        json!({"vectorBucketName": "bk1", "indexName": "noindex"}),
        // An unknown bucket is reported as an unknown index.
        json!({"vectorBucketName": "nobucket", "indexName": "ix1"}),
        json!({"indexArn": h.index_arn("bk2", "ix1")}),
        json!({"indexArn": "arn:aws:s3vectors:eu-west-1:123456789012:bucket/bk1/index/ix1"}),
    ];
    for address in &missing_index {
        for (operation, extra) in &index_operations {
            let mut body = address.clone();
            body.as_object_mut()
                .expect("object")
                .extend(extra.as_object().expect("object").clone());
            let message = h
                .refused(Who::Dev, operation, body, 404, "NotFoundException")
                .await;
            assert_eq!(message, INDEX_NOT_FOUND, "{operation} {address}");
        }
    }
    // The tag routes on a missing bucket or index.
    for (arn, expected) in [
        (h.bucket_arn("nobucket"), BUCKET_NOT_FOUND),
        (h.index_arn("bk1", "noindex"), INDEX_NOT_FOUND),
        (h.index_arn("nobucket", "ix1"), INDEX_NOT_FOUND),
    ] {
        for (method, query, body) in [
            (Method::GET, "", None),
            (Method::POST, "", Some(json!({"tags": {"a": "b"}}))),
            (Method::DELETE, "tagKeys=a", None),
        ] {
            let before = h.snapshot();
            let message = h
                .tags(Who::Dev, method.clone(), &arn, query, body)
                .await
                .error(404, "NotFoundException");
            assert_eq!(message, expected, "{method} {arn}");
            h.assert_unchanged(&before);
        }
    }
}

/// Found by `fuzz/http_raw`: a tag route whose ARN label does not percent-decode to UTF-8
/// (`%ae`) was refused by the router's path extractor with a plain-text 400, not an S3 error.
#[tokio::test]
async fn a_path_label_that_is_not_utf8_gets_an_s3_error_and_changes_nothing() {
    let h = populated().await;
    let before = h.snapshot();
    let request = unsigned(
        Method::DELETE,
        "/tags/arn%3Aaws%3As3vectors%3Au%ae2Dsst%2D1%3A123456789012%3Abucket%2Fbk1?tagKeys=a",
    )
    .body(axum::body::Body::empty())
    .expect("request");
    let message = h.send(request).await.error(400, "ValidationException");
    assert!(message.starts_with("Invalid request path"), "{message}");
    h.assert_unchanged(&before);
}

/// The request size limit is 20 MiB, inclusive: a body of exactly that size is read (and
/// answered on its merits), one byte more is refused with 413 before anything is parsed.
#[tokio::test]
async fn a_body_of_20_mib_is_read_and_one_byte_more_is_refused() {
    const LIMIT: usize = 20 * 1024 * 1024;
    let h = Harness::new();
    // An unknown member pads the body; unknown members are ignored.
    let body = |total: usize| {
        let head = br#"{"vectorBucketName":"nope","padding":""#;
        let mut body = head.to_vec();
        body.resize(total - 2, b'x');
        body.extend_from_slice(br#""}"#);
        assert_eq!(body.len(), total);
        body
    };
    let before = h.snapshot();
    let at_limit = h
        .send(signed(
            Who::Dev,
            Method::POST,
            "/GetVectorBucket",
            body(LIMIT),
        ))
        .await;
    assert_eq!(at_limit.error(404, "NotFoundException"), BUCKET_NOT_FOUND);
    let over = h
        .send(signed(
            Who::Dev,
            Method::POST,
            "/GetVectorBucket",
            body(LIMIT + 1),
        ))
        .await;
    over.error(413, "ValidationException");
    h.assert_unchanged(&before);
}
