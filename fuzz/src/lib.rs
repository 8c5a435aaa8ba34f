//! What the fuzz targets share: the coordinator's real router over the in-memory fakes of its
//! handler tests (`coordinator/tests/api_handlers`, included as they are, so the targets and the
//! tests drive the same thing), on one runtime per process.

#![allow(dead_code)]

#[path = "../../coordinator/tests/api_handlers/fakes.rs"]
pub mod fakes;
#[path = "../../coordinator/tests/api_handlers/harness.rs"]
pub mod harness;

use std::sync::OnceLock;

use serde_json::json;

pub use harness::{Harness, Who};

/// The runtime every target runs its async code on.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// The bucket and index every API target starts with, so requests can reach the data paths.
pub const BUCKET: &str = "fuzz-bucket";
pub const INDEX: &str = "fuzz-index";

/// A harness with [`BUCKET`]/[`INDEX`] (dimension 4, cosine, one non-filterable key) holding a
/// few vectors with metadata.
pub async fn seeded_harness() -> Harness {
    let harness = Harness::new();
    harness
        .call(
            Who::Dev,
            "CreateVectorBucket",
            json!({ "vectorBucketName": BUCKET }),
        )
        .await
        .ok();
    harness
        .call(
            Who::Dev,
            "CreateIndex",
            json!({
                "vectorBucketName": BUCKET, "indexName": INDEX, "dataType": "float32",
                "dimension": 4, "distanceMetric": "cosine",
                "metadataConfiguration": { "nonFilterableMetadataKeys": ["text"] }
            }),
        )
        .await
        .ok();
    let vectors: Vec<_> = (0..8)
        .map(|i| {
            json!({
                "key": format!("k{i}"),
                "data": { "float32": [1.0 + i as f32, 0.5, -0.25, i as f32 / 8.0] },
                "metadata": { "genre": if i % 2 == 0 { "a" } else { "b" }, "year": 2000 + i,
                              "tags": ["x", "y"], "text": "free text" }
            })
        })
        .collect();
    harness
        .call(
            Who::Dev,
            "PutVectors",
            json!({ "vectorBucketName": BUCKET, "indexName": INDEX, "vectors": vectors }),
        )
        .await
        .ok_empty();
    harness
}
