//! The request bodies of the S3 Vectors operations, as they arrive (restJson1, camelCase).
//!
//! Every member is optional here, so a missing required member gets the service's own
//! "Value null at '/x'" message from validation rather than a serde message. Unknown members
//! are ignored (no `deny_unknown_fields`); a member of the wrong JSON type is rejected, by path,
//! when the body is parsed. The address members are plain members of each body (not a
//! `#[serde(flatten)]`ed struct, inside which serde loses the path of an error and buffers the
//! members it does not know); `address()` gathers them.
//!
//! `#[doc(hidden)] pub` only so that `benches/auth_overhead.rs` can parse into the real types.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// How a request names a bucket: by name or by ARN (exactly one; see
/// `validate::bucket_address`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketAddressIn {
    pub vector_bucket_name: Option<String>,
    pub vector_bucket_arn: Option<String>,
}

/// How a request names an index: bucket and index name, or the index ARN (see
/// `validate::index_address`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexAddressIn {
    pub vector_bucket_name: Option<String>,
    pub index_name: Option<String>,
    pub index_arn: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionIn {
    pub sse_type: Option<String>,
    pub kms_key_arn: Option<String>,
}

/// CreateVectorBucket (it names the new bucket; there is no ARN yet).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateBucketIn {
    pub vector_bucket_name: Option<String>,
    pub encryption_configuration: Option<EncryptionIn>,
    pub tags: Option<BTreeMap<String, String>>,
}

/// ListVectorBuckets and ListIndexes. ListVectorBuckets ignores the address, but its members
/// are type-checked like every member.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListIn {
    pub vector_bucket_name: Option<String>,
    pub vector_bucket_arn: Option<String>,
    pub max_results: Option<i64>,
    pub next_token: Option<String>,
    pub prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataConfigurationIn {
    pub non_filterable_metadata_keys: Option<Vec<String>>,
    pub text_search_configurations: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateIndexIn {
    /// The bucket of the new index: by name or by ARN.
    pub vector_bucket_name: Option<String>,
    pub vector_bucket_arn: Option<String>,
    pub index_name: Option<String>,
    pub data_type: Option<String>,
    pub dimension: Option<i64>,
    pub distance_metric: Option<String>,
    pub metadata_configuration: Option<MetadataConfigurationIn>,
    pub encryption_configuration: Option<EncryptionIn>,
    pub tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
pub struct VectorDataIn {
    pub float32: Option<Vec<f32>>,
}

#[derive(Debug, Deserialize)]
pub struct PutVectorIn {
    pub key: Option<String>,
    pub data: Option<VectorDataIn>,
    pub metadata: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutVectorsIn {
    pub vector_bucket_name: Option<String>,
    pub index_name: Option<String>,
    pub index_arn: Option<String>,
    pub vectors: Option<Vec<PutVectorIn>>,
}

/// GetVectors and DeleteVectors (DeleteVectors ignores the two flags, type-checked all the
/// same).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeysIn {
    pub vector_bucket_name: Option<String>,
    pub index_name: Option<String>,
    pub index_arn: Option<String>,
    pub keys: Option<Vec<String>>,
    pub return_data: Option<bool>,
    pub return_metadata: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListVectorsIn {
    pub vector_bucket_name: Option<String>,
    pub index_name: Option<String>,
    pub index_arn: Option<String>,
    pub max_results: Option<i64>,
    pub next_token: Option<String>,
    pub segment_count: Option<i64>,
    pub segment_index: Option<i64>,
    pub return_data: Option<bool>,
    pub return_metadata: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryIn {
    pub vector_bucket_name: Option<String>,
    pub index_name: Option<String>,
    pub index_arn: Option<String>,
    pub top_k: Option<i64>,
    pub query_vector: Option<VectorDataIn>,
    pub filter: Option<Value>,
    pub return_metadata: Option<bool>,
    pub return_distance: Option<bool>,
    pub query_mode: Option<String>,
    pub query_texts: Option<Value>,
    /// Only meaningful with queryTexts (full-text search); type-checked like every member.
    pub return_scores: Option<bool>,
    pub next_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketPolicyIn {
    pub vector_bucket_name: Option<String>,
    pub vector_bucket_arn: Option<String>,
    pub policy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultIndexModeIn {
    pub vector_bucket_name: Option<String>,
    pub vector_bucket_arn: Option<String>,
    pub default_index_mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexModeIn {
    pub vector_bucket_name: Option<String>,
    pub index_name: Option<String>,
    pub index_arn: Option<String>,
    pub index_mode: Option<String>,
}

/// `address()` for the bodies that name a bucket or an index among their other members.
macro_rules! address_of {
    (BucketAddressIn: $($body:ty),+) => {$(
        impl $body {
            pub fn address(&self) -> BucketAddressIn {
                BucketAddressIn {
                    vector_bucket_name: self.vector_bucket_name.clone(),
                    vector_bucket_arn: self.vector_bucket_arn.clone(),
                }
            }
        }
    )+};
    (IndexAddressIn: $($body:ty),+) => {$(
        impl $body {
            pub fn address(&self) -> IndexAddressIn {
                IndexAddressIn {
                    vector_bucket_name: self.vector_bucket_name.clone(),
                    index_name: self.index_name.clone(),
                    index_arn: self.index_arn.clone(),
                }
            }
        }
    )+};
}

address_of!(BucketAddressIn: ListIn, CreateIndexIn, BucketPolicyIn, DefaultIndexModeIn);
address_of!(IndexAddressIn: PutVectorsIn, KeysIn, ListVectorsIn, QueryIn, IndexModeIn);

/// TagResource (the ARN is in the path).
#[derive(Debug, Deserialize)]
pub struct TagResourceIn {
    pub tags: Option<BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, String> {
        serde_json::from_str(body).map_err(|e| e.to_string())
    }

    #[test]
    fn the_address_is_read_with_the_other_members() {
        let input: QueryIn = parse(
            r#"{"vectorBucketName": "b-1", "indexName": "i-1", "topK": 3,
                "queryVector": {"float32": [1, 2.5]}}"#,
        )
        .expect("valid");
        assert_eq!(input.address().vector_bucket_name.as_deref(), Some("b-1"));
        assert_eq!(input.address().index_name.as_deref(), Some("i-1"));
        assert_eq!(input.address().index_arn, None);
        assert_eq!(input.top_k, Some(3));
        assert_eq!(
            input.query_vector.and_then(|v| v.float32),
            Some(vec![1.0, 2.5])
        );
        let input: ListIn = parse(r#"{"vectorBucketArn": "arn", "maxResults": 5}"#).expect("valid");
        assert_eq!(input.address().vector_bucket_arn.as_deref(), Some("arn"));
        assert_eq!(input.address().vector_bucket_name, None);
        assert_eq!(input.max_results, Some(5));
    }

    #[test]
    fn unknown_members_are_ignored_and_nulls_are_absent() {
        let input: PutVectorsIn = parse(
            r#"{"indexArn": null, "vectorBucketName": "b", "somethingElse": {"x": [1]},
                "vectors": null}"#,
        )
        .expect("valid");
        assert_eq!(input.address().vector_bucket_name.as_deref(), Some("b"));
        assert_eq!(input.address().index_arn, None);
        assert!(input.vectors.is_none());
        let input: BucketAddressIn = parse("{}").expect("valid");
        assert!(input.vector_bucket_name.is_none() && input.vector_bucket_arn.is_none());
    }

    #[test]
    fn members_of_the_wrong_type_are_rejected() {
        for body in [
            r#"{"vectorBucketName": 42}"#,
            r#"{"indexName": ["i"]}"#,
            r#"{"indexArn": true}"#,
            r#"{"topK": "10"}"#,
            r#"{"topK": 4.5}"#,
            r#"{"queryVector": [1, 2]}"#,
            r#"{"returnScores": "yes"}"#,
            r#"{"indexName": "a", "indexName": "b"}"#,
            "[]",
            "null",
            r#""QueryVectors""#,
        ] {
            assert!(parse::<QueryIn>(body).is_err(), "{body}");
        }
        assert!(parse::<ListIn>(r#"{"vectorBucketArn": 1}"#).is_err());
        assert!(parse::<ListIn>(r#"{"prefix": 1}"#).is_err());
        assert!(parse::<CreateIndexIn>(r#"{"vectorBucketName": {}}"#).is_err());
        assert!(parse::<CreateIndexIn>(r#"{"dimension": "4"}"#).is_err());
        assert!(parse::<KeysIn>(r#"{"keys": "k"}"#).is_err());
        assert!(parse::<TagResourceIn>(r#"{"tags": {"k": 1}}"#).is_err());
    }

    #[test]
    fn a_wrong_type_names_the_member_type() {
        let message = parse::<IndexModeIn>(r#"{"indexArn": 7, "indexMode": "CLASSIC"}"#)
            .expect_err("a number is not an ARN");
        assert!(
            message.starts_with("invalid type: integer `7`, expected a string"),
            "{message}"
        );
    }
}
