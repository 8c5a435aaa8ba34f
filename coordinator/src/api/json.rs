//! Response bodies: catalog records, vectors and query hits rendered with their S3 Vectors JSON
//! names. Pure functions.

use quiver_proto::{DistanceMetric, Hit, MetaValue, Metadata, VectorRecord};
use serde_json::{json, Value};

use super::validate::ArnScope;
use crate::catalog::{BucketRecord, EncryptionConfig, IndexMode, IndexRecord, SseType};

/// The distance metric's name in requests and responses.
pub fn metric_name(metric: DistanceMetric) -> &'static str {
    match metric {
        DistanceMetric::Euclidean => "euclidean",
        DistanceMetric::Cosine => "cosine",
    }
}

/// The index mode's name in requests and responses.
pub fn index_mode_name(mode: IndexMode) -> &'static str {
    match mode {
        IndexMode::Classic => "CLASSIC",
        IndexMode::Enhanced => "ENHANCED",
    }
}

/// The server-side encryption type's name in requests and responses.
pub fn sse_type_name(sse: SseType) -> &'static str {
    match sse {
        SseType::Aes256 => "AES256",
        SseType::Kms => "aws:kms",
    }
}

pub fn encryption_json(config: &EncryptionConfig) -> Value {
    let mut value = json!({ "sseType": sse_type_name(config.sse_type) });
    if let Some(arn) = &config.kms_key_arn {
        value["kmsKeyArn"] = json!(arn);
    }
    value
}

/// Renders stored metadata back to JSON; integral numbers come back as integers.
pub fn metadata_json(metadata: &Metadata) -> Value {
    fn scalar(value: &MetaValue) -> Value {
        match value {
            MetaValue::Str(s) => Value::String(s.clone()),
            MetaValue::Bool(b) => Value::Bool(*b),
            MetaValue::Num(n) => number_json(*n),
            MetaValue::List(items) => Value::Array(items.iter().map(scalar).collect()),
        }
    }
    Value::Object(
        metadata
            .0
            .iter()
            .map(|(k, v)| (k.clone(), scalar(v)))
            .collect(),
    )
}

fn number_json(n: f64) -> Value {
    const EXACT_INT: f64 = 9_007_199_254_740_992.0; // 2^53
    if n.fract() == 0.0 && n.abs() < EXACT_INT {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

/// A vector of GetVectors and ListVectors: its key, and data and metadata if they were read.
pub fn record_json(record: VectorRecord) -> Value {
    let mut out = json!({ "key": record.key });
    if let Some(vector) = record.vector {
        let floats: Vec<f64> = vector.into_iter().map(f64::from).collect();
        out["data"] = json!({ "float32": floats });
    }
    if let Some(metadata) = record.metadata {
        out["metadata"] = metadata_json(&metadata);
    }
    out
}

/// A result of QueryVectors.
pub fn hit_json(hit: &Hit, return_distance: bool, return_metadata: bool) -> Value {
    let mut out = json!({ "key": hit.key });
    if return_distance {
        out["distance"] = json!(f64::from(hit.distance));
    }
    if let (true, Some(metadata)) = (return_metadata, &hit.metadata) {
        out["metadata"] = metadata_json(metadata);
    }
    out
}

/// The `vectorBucket` of GetVectorBucket.
pub fn bucket_json(scope: &ArnScope, bucket: &BucketRecord) -> Value {
    json!({
        "vectorBucketName": bucket.name,
        "vectorBucketArn": scope.bucket_arn(&bucket.name),
        "creationTime": bucket.creation_time,
        "encryptionConfiguration": encryption_json(&bucket.encryption),
        "defaultIndexMode": index_mode_name(bucket.default_index_mode),
    })
}

/// A bucket of ListVectorBuckets.
pub fn bucket_summary_json(scope: &ArnScope, bucket: &BucketRecord) -> Value {
    json!({
        "vectorBucketName": bucket.name,
        "vectorBucketArn": scope.bucket_arn(&bucket.name),
        "creationTime": bucket.creation_time,
    })
}

/// The `index` of GetIndex.
pub fn index_json(scope: &ArnScope, index: &IndexRecord) -> Value {
    let mut out = json!({
        "vectorBucketName": index.bucket,
        "indexName": index.name,
        "indexArn": scope.index_arn(&index.bucket, &index.name),
        "creationTime": index.creation_time,
        "dataType": "float32",
        "dimension": index.dimension,
        "distanceMetric": metric_name(index.metric),
        "indexMode": index_mode_name(index.index_mode),
    });
    if let Some(keys) = &index.non_filterable_keys {
        out["metadataConfiguration"] = json!({ "nonFilterableMetadataKeys": keys });
    }
    if let Some(encryption) = &index.encryption {
        out["encryptionConfiguration"] = encryption_json(encryption);
    }
    out
}

/// An index of ListIndexes.
pub fn index_summary_json(scope: &ArnScope, index: &IndexRecord) -> Value {
    json!({
        "vectorBucketName": index.bucket,
        "indexName": index.name,
        "indexArn": scope.index_arn(&index.bucket, &index.name),
        "creationTime": index.creation_time,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use quiver_proto::IndexUid;

    use super::*;

    fn scope() -> ArnScope {
        ArnScope {
            partition: "aws".into(),
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
        }
    }

    fn bucket() -> BucketRecord {
        BucketRecord {
            name: "b-1".into(),
            creation_time: 1_700_000_000.5,
            encryption: EncryptionConfig::default(),
            tags: BTreeMap::new(),
            default_index_mode: IndexMode::Enhanced,
            policy: None,
        }
    }

    fn index() -> IndexRecord {
        IndexRecord {
            bucket: "b-1".into(),
            name: "i.1".into(),
            uid: IndexUid(7),
            creation_time: 1_700_000_001.0,
            dimension: 4,
            metric: DistanceMetric::Cosine,
            non_filterable_keys: None,
            encryption: None,
            tags: BTreeMap::new(),
            index_mode: IndexMode::Classic,
            shards: Vec::new(),
        }
    }

    #[test]
    fn metric_names() {
        assert_eq!(metric_name(DistanceMetric::Euclidean), "euclidean");
        assert_eq!(metric_name(DistanceMetric::Cosine), "cosine");
    }

    #[test]
    fn encryption_has_a_key_only_for_kms() {
        let sse = EncryptionConfig {
            sse_type: SseType::Aes256,
            kms_key_arn: None,
        };
        assert_eq!(encryption_json(&sse), json!({"sseType": "AES256"}));
        let kms = EncryptionConfig {
            sse_type: SseType::Kms,
            kms_key_arn: Some("arn:aws:kms:us-east-1:123456789012:key/k".into()),
        };
        assert_eq!(
            encryption_json(&kms),
            json!({"sseType": "aws:kms", "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/k"})
        );
    }

    #[test]
    fn metadata_numbers_come_back_as_written() {
        let metadata = Metadata(vec![
            ("int".into(), MetaValue::Num(2000.0)),
            ("float".into(), MetaValue::Num(0.25)),
            ("big".into(), MetaValue::Num(1e300)),
            ("s".into(), MetaValue::Str("x".into())),
            (
                "list".into(),
                MetaValue::List(vec![MetaValue::Bool(true), MetaValue::Num(-3.0)]),
            ),
        ]);
        assert_eq!(
            metadata_json(&metadata),
            json!({"int": 2000, "float": 0.25, "big": 1e300, "s": "x", "list": [true, -3]})
        );
    }

    #[test]
    fn records_carry_what_was_read() {
        let bare = VectorRecord {
            key: "k".into(),
            vector: None,
            metadata: None,
        };
        assert_eq!(record_json(bare), json!({"key": "k"}));
        let full = VectorRecord {
            key: "k".into(),
            vector: Some(vec![0.5, -1.0]),
            metadata: Some(Metadata(vec![("a".into(), MetaValue::Num(1.0))])),
        };
        assert_eq!(
            record_json(full),
            json!({"key": "k", "data": {"float32": [0.5, -1.0]}, "metadata": {"a": 1}})
        );
    }

    #[test]
    fn hits_carry_what_was_asked() {
        let hit = Hit {
            key: "k".into(),
            distance: 0.5,
            metadata: Some(Metadata(vec![("a".into(), MetaValue::Bool(false))])),
        };
        assert_eq!(hit_json(&hit, false, false), json!({"key": "k"}));
        assert_eq!(
            hit_json(&hit, true, true),
            json!({"key": "k", "distance": 0.5, "metadata": {"a": false}})
        );
        let without_metadata = Hit {
            metadata: None,
            ..hit
        };
        assert_eq!(
            hit_json(&without_metadata, false, true),
            json!({"key": "k"})
        );
    }

    #[test]
    fn buckets() {
        let arn = "arn:aws:s3vectors:us-east-1:123456789012:bucket/b-1";
        assert_eq!(
            bucket_json(&scope(), &bucket()),
            json!({
                "vectorBucketName": "b-1",
                "vectorBucketArn": arn,
                "creationTime": 1_700_000_000.5,
                "encryptionConfiguration": {"sseType": "AES256"},
                "defaultIndexMode": "ENHANCED",
            })
        );
        assert_eq!(
            bucket_summary_json(&scope(), &bucket()),
            json!({"vectorBucketName": "b-1", "vectorBucketArn": arn, "creationTime": 1_700_000_000.5})
        );
    }

    #[test]
    fn indexes() {
        let arn = "arn:aws:s3vectors:us-east-1:123456789012:bucket/b-1/index/i.1";
        let mut index = index();
        assert_eq!(
            index_json(&scope(), &index),
            json!({
                "vectorBucketName": "b-1",
                "indexName": "i.1",
                "indexArn": arn,
                "creationTime": 1_700_000_001.0,
                "dataType": "float32",
                "dimension": 4,
                "distanceMetric": "cosine",
                "indexMode": "CLASSIC",
            })
        );
        index.non_filterable_keys = Some(vec!["note".into()]);
        index.encryption = Some(EncryptionConfig::default());
        let out = index_json(&scope(), &index);
        assert_eq!(
            out["metadataConfiguration"],
            json!({"nonFilterableMetadataKeys": ["note"]})
        );
        assert_eq!(out["encryptionConfiguration"]["sseType"], "AES256");
        assert_eq!(
            index_summary_json(&scope(), &index),
            json!({"vectorBucketName": "b-1", "indexName": "i.1", "indexArn": arn, "creationTime": 1_700_000_001.0})
        );
    }
}
