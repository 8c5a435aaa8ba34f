//! Validation of everything a client sends, before any side effect: names, ARNs, addressing,
//! vector keys, vectors and metadata limits here; the filter language in `filter`; what
//! buckets and indexes are created or changed with (index definition, encryption, tags, index
//! modes) in `resources`; paging and query options in `reads`. Pure functions, tested without
//! IO.

use quiver_proto::{MetaValue, Metadata};
use serde_json::{Map, Value};

use super::model::{BucketAddressIn, IndexAddressIn};
use crate::error::ApiError;

mod filter;
mod reads;
mod resources;

pub use filter::filter;
pub use reads::{
    enhanced_search, list_prefix, max_results, query_mode, segment_range, top_k, QueryMode,
};
pub use resources::{
    check_tags, dimension, distance_metric, encryption, index_data_type, index_mode,
    non_filterable_keys, tag_keys, tags,
};

/// Limits of the service (reference §4.1, §10 of the design).
pub const MAX_DIMENSION: i64 = 4096;
pub const MAX_PUT_VECTORS: usize = 500;
pub const MAX_DELETE_KEYS: usize = 500;
pub const MAX_GET_KEYS: usize = 100;
pub const MAX_KEY_CHARS: usize = 1024;
pub const MAX_METADATA_BYTES: usize = 40 * 1024;
pub const MAX_FILTERABLE_METADATA_BYTES: usize = 2048;
pub const MAX_METADATA_KEYS: usize = 50;
pub const MAX_NON_FILTERABLE_KEYS: usize = 10;
pub const MAX_TOP_K: i64 = 10_000;
pub const MAX_FILTER_CONSTRAINTS: usize = 100;
pub const MAX_FILTER_DEPTH: usize = 32;
pub const MAX_REQUEST_BYTES: usize = 20 * 1024 * 1024;

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

pub fn bucket_name(name: &str) -> Result<(), ApiError> {
    let len = name.chars().count();
    if !(3..=63).contains(&len) {
        return Err(ApiError::length("/vectorBucketName", len, 3, 63));
    }
    let valid = name.chars().all(|c| is_lower_alnum(c) || c == '-')
        && name.starts_with(is_lower_alnum)
        && name.ends_with(is_lower_alnum);
    if !valid {
        return Err(ApiError::validation("Invalid vector bucket name"));
    }
    Ok(())
}

pub fn index_name(name: &str) -> Result<(), ApiError> {
    let len = name.chars().count();
    if !(3..=63).contains(&len) {
        return Err(ApiError::length("/indexName", len, 3, 63));
    }
    let valid = name
        .chars()
        .all(|c| is_lower_alnum(c) || c == '-' || c == '.')
        && name.starts_with(is_lower_alnum)
        && name.ends_with(is_lower_alnum);
    if !valid {
        return Err(ApiError::validation("Invalid index name"));
    }
    Ok(())
}

/// The account and region this service answers for; ARNs of others are not found here.
#[derive(Debug, Clone)]
pub struct ArnScope {
    pub partition: String,
    pub region: String,
    pub account_id: String,
}

impl ArnScope {
    /// The scope of ARNs in the `aws` partition; the account id must be 12 digits and the region
    /// look like `us-east-1`.
    pub fn new(region: &str, account_id: &str) -> Result<ArnScope, String> {
        if account_id.len() != 12 || !account_id.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("account id must be 12 digits, got {account_id:?}"));
        }
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!("region must look like us-east-1, got {region:?}"));
        }
        Ok(ArnScope {
            partition: "aws".into(),
            region: region.to_owned(),
            account_id: account_id.to_owned(),
        })
    }

    pub fn bucket_arn(&self, bucket: &str) -> String {
        format!(
            "arn:{}:s3vectors:{}:{}:bucket/{bucket}",
            self.partition, self.region, self.account_id
        )
    }

    pub fn index_arn(&self, bucket: &str, index: &str) -> String {
        format!("{}/index/{index}", self.bucket_arn(bucket))
    }

    /// Parses a bucket or index ARN, the value of the member at `path`, into
    /// (bucket, Option<index>). A well-formed ARN of another account or region is reported as not
    /// found by the caller (`Ok(None)`). A malformed one is a field error naming `path`.
    pub fn parse_arn(
        &self,
        arn: &str,
        path: &str,
    ) -> Result<Option<(String, Option<String>)>, ApiError> {
        let invalid = || not_an_arn(path, arn);
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let [prefix, partition, service, region, account, resource] = parts.as_slice() else {
            return Err(invalid());
        };
        if *prefix != "arn" || !partition.starts_with("aws") || *service != "s3vectors" {
            return Err(invalid());
        }
        if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
            return Err(invalid());
        }
        let segments: Vec<&str> = resource.split('/').collect();
        let (bucket, index) = match segments.as_slice() {
            ["bucket", bucket] => (*bucket, None),
            ["bucket", bucket, "index", index] => (*bucket, Some(*index)),
            _ => return Err(invalid()),
        };
        bucket_name(bucket).map_err(|_| invalid())?;
        if let Some(index) = index {
            index_name(index).map_err(|_| invalid())?;
        }
        if *partition != self.partition || *region != self.region || *account != self.account_id {
            return Ok(None);
        }
        Ok(Some((bucket.to_owned(), index.map(str::to_owned))))
    }
}

/// The model's patterns of the two ARN shapes.
const BUCKET_ARN_PATTERN: &str =
    "arn:aws[-a-z0-9]*:s3vectors:[a-z0-9-]+:[0-9]{12}:bucket/[a-z0-9][a-z0-9-.]{1,61}[a-z0-9]";
const INDEX_ARN_SUFFIX_PATTERN: &str = "/index/[a-z0-9][a-z0-9-.]{1,61}[a-z0-9]";

/// The field error of a malformed ARN at `path`: the pattern its member must satisfy.
fn not_an_arn(path: &str, arn: &str) -> ApiError {
    let pattern = match path {
        "/vectorBucketArn" => BUCKET_ARN_PATTERN.to_owned(),
        "/indexArn" => format!("{BUCKET_ARN_PATTERN}{INDEX_ARN_SUFFIX_PATTERN}"),
        // A tag operation's resource: either shape.
        _ => format!("{BUCKET_ARN_PATTERN}({INDEX_ARN_SUFFIX_PATTERN})?"),
    };
    tracing::debug!(path, arn, "malformed ARN");
    ApiError::field(
        path,
        format!("Member must satisfy regular expression pattern: {pattern}"),
    )
}

pub const BUCKET_ADDRESSING: &str =
    "Must specify either vectorBucketName or vectorBucketArn but not both";
pub const INDEX_ADDRESSING: &str =
    "Must specify either indexArn or both vectorBucketName and indexName";

/// How a request named its bucket, after checking the either/or rule.
pub enum BucketAddress {
    Name(String),
    /// A valid ARN outside this account/region: the bucket cannot exist here.
    Foreign,
}

pub fn bucket_address(
    scope: &ArnScope,
    address: &BucketAddressIn,
) -> Result<BucketAddress, ApiError> {
    let name = address.vector_bucket_name.as_deref();
    let arn = address.vector_bucket_arn.as_deref();
    match (name, arn) {
        (Some(name), None) => {
            bucket_name(name)?;
            Ok(BucketAddress::Name(name.to_owned()))
        }
        (None, Some(arn)) => match scope.parse_arn(arn, "/vectorBucketArn")? {
            Some((bucket, None)) => Ok(BucketAddress::Name(bucket)),
            Some((_, Some(_))) => Err(not_an_arn("/vectorBucketArn", arn)),
            None => Ok(BucketAddress::Foreign),
        },
        _ => Err(ApiError::validation(BUCKET_ADDRESSING)),
    }
}

pub enum IndexAddress {
    Name { bucket: String, index: String },
    Foreign,
}

pub fn index_address(scope: &ArnScope, address: &IndexAddressIn) -> Result<IndexAddress, ApiError> {
    let bucket = address.vector_bucket_name.as_deref();
    let index = address.index_name.as_deref();
    let arn = address.index_arn.as_deref();
    match (bucket, index, arn) {
        (Some(bucket), Some(index), None) => {
            bucket_name(bucket)?;
            index_name(index)?;
            Ok(IndexAddress::Name {
                bucket: bucket.to_owned(),
                index: index.to_owned(),
            })
        }
        (None, None, Some(arn)) => match scope.parse_arn(arn, "/indexArn")? {
            Some((bucket, Some(index))) => Ok(IndexAddress::Name { bucket, index }),
            Some((_, None)) => Err(not_an_arn("/indexArn", arn)),
            None => Ok(IndexAddress::Foreign),
        },
        _ => Err(ApiError::validation(INDEX_ADDRESSING)),
    }
}

/// A required member: `None` is the service's "Value null" error for `path`.
pub fn required<T>(value: Option<T>, path: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| {
        ApiError::validation(format!(
            "1 validation error detected. Value null at '{path}' failed to satisfy constraint: Member must not be null"
        ))
    })
}

/// A list member with between 1 and `max` items.
pub fn count_limit(path: &str, len: usize, max: usize) -> Result<(), ApiError> {
    if len == 0 || len > max {
        return Err(ApiError::field(
            path,
            format!("Member must have length between 1 and {max}, inclusive"),
        ));
    }
    Ok(())
}

/// The required `keys` of GetVectors and DeleteVectors: 1 to `max` valid keys.
pub fn keys(keys: Option<Vec<String>>, max: usize) -> Result<Vec<String>, ApiError> {
    let keys = required(keys, "/keys")?;
    count_limit("/keys", keys.len(), max)?;
    for (i, key) in keys.iter().enumerate() {
        vector_key(&format!("/keys/{i}"), key)?;
    }
    Ok(keys)
}

pub fn vector_key(path: &str, key: &str) -> Result<(), ApiError> {
    let len = key.chars().count();
    if !(1..=MAX_KEY_CHARS).contains(&len) {
        return Err(ApiError::length(path, len, 1, MAX_KEY_CHARS));
    }
    Ok(())
}

/// Checks a vector against an index: dimension, finite values, non-zero for cosine.
/// `record` prefixes messages the way AWS does for PutVectors ("Invalid record for key 'k': ").
pub fn vector(data: &[f32], dimension: u32, cosine: bool, record: &str) -> Result<(), ApiError> {
    if data.len() != dimension as usize {
        return Err(ApiError::validation(format!(
            "{record}vector must have length {dimension}, but has length {}",
            data.len()
        )));
    }
    if data.iter().any(|x| !x.is_finite()) {
        return Err(ApiError::validation(format!(
            "{record}vector must not contain NaN or infinite values"
        )));
    }
    if cosine && data.iter().all(|x| *x == 0.0) {
        return Err(ApiError::validation(format!(
            "{record}vector must not be all zeros for an index with the cosine distance metric"
        )));
    }
    Ok(())
}

fn meta_scalar(value: &Value) -> Option<MetaValue> {
    match value {
        Value::String(s) => Some(MetaValue::Str(s.clone())),
        Value::Bool(b) => Some(MetaValue::Bool(*b)),
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()).map(MetaValue::Num),
        _ => None,
    }
}

/// Converts and checks one vector's metadata document against the limits.
pub fn metadata(
    value: &Value,
    non_filterable: &[String],
    record: &str,
) -> Result<Metadata, ApiError> {
    let Value::Object(map) = value else {
        return Err(ApiError::validation(format!(
            "{record}Metadata must be a JSON object"
        )));
    };
    if map.len() > MAX_METADATA_KEYS {
        return Err(ApiError::validation(format!(
            "{record}Metadata object must have at most {MAX_METADATA_KEYS} keys"
        )));
    }
    let total = serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if total > MAX_METADATA_BYTES {
        return Err(ApiError::validation(format!(
            "{record}Metadata must have at most {MAX_METADATA_BYTES} bytes"
        )));
    }
    let filterable: Map<String, Value> = map
        .iter()
        .filter(|(k, _)| !non_filterable.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let filterable_len = serde_json::to_vec(&filterable)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if filterable_len > MAX_FILTERABLE_METADATA_BYTES {
        return Err(ApiError::validation(format!(
            "{record}Filterable metadata must have at most {MAX_FILTERABLE_METADATA_BYTES} bytes"
        )));
    }
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        if key.is_empty() {
            return Err(ApiError::validation(format!(
                "{record}Metadata keys must not be empty"
            )));
        }
        let converted = match value {
            Value::Array(items) => items
                .iter()
                .map(meta_scalar)
                .collect::<Option<Vec<_>>>()
                .map(MetaValue::List),
            other => meta_scalar(other),
        };
        let Some(converted) = converted else {
            return Err(ApiError::validation(format!(
                "{record}Invalid value for metadata key '{key}': values must be strings, numbers, booleans or lists of those"
            )));
        };
        out.push((key.clone(), converted));
    }
    Ok(Metadata(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(bucket_name("my-bucket-1").is_ok());
        assert_eq!(
            bucket_name("ab").unwrap_err().to_string(),
            "1 validation error detected. Value with length 2 at '/vectorBucketName' failed to satisfy constraint: Member must have length between 3 and 63, inclusive"
        );
        assert_eq!(
            bucket_name("bad_name").unwrap_err().to_string(),
            "Invalid vector bucket name"
        );
        assert!(bucket_name("-abc").is_err());
        assert!(bucket_name("a.bc").is_err());
        assert!(index_name("my.index-1").is_ok());
        assert!(index_name("My.index").is_err());
    }

    #[test]
    fn arns() {
        let scope = ArnScope {
            partition: "aws".into(),
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
        };
        let arn = scope.index_arn("b-1", "i.1");
        assert_eq!(
            arn,
            "arn:aws:s3vectors:us-east-1:123456789012:bucket/b-1/index/i.1"
        );
        assert_eq!(
            scope.parse_arn(&arn, "/indexArn").expect("valid"),
            Some(("b-1".to_owned(), Some("i.1".to_owned())))
        );
        assert_eq!(
            scope
                .parse_arn(
                    "arn:aws:s3vectors:eu-west-1:123456789012:bucket/b-1",
                    "/vectorBucketArn"
                )
                .expect("valid"),
            None
        );
        for bad in [
            "arn:aws:s3:us-east-1:123456789012:bucket/b-1",
            "bucket/b-1",
            "arn:aws:s3vectors:us-east-1:123456789012:bucket/b-1/index",
        ] {
            let message = scope
                .parse_arn(bad, "/resourceArn")
                .expect_err(bad)
                .to_string();
            assert!(
                message.starts_with("1 validation error detected. Value at '/resourceArn' failed"),
                "{message}"
            );
        }
    }

    #[test]
    fn metadata_limits() {
        let ok = metadata(&json!({"a": 1, "b": ["x", 2, true]}), &[], "").expect("valid");
        assert_eq!(
            crate::api::json::metadata_json(&ok),
            json!({"a": 1, "b": ["x", 2, true]})
        );
        let big = "x".repeat(3000);
        let err = metadata(&json!({"a": big}), &[], "Invalid record for key 'k': ").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid record for key 'k': Filterable metadata must have at most 2048 bytes"
        );
        assert!(metadata(&json!({"a": "x".repeat(3000)}), &["a".to_owned()], "").is_ok());
        assert!(metadata(&json!({"a": "x".repeat(41_000)}), &["a".to_owned()], "").is_err());
        let many: Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!(i))).collect();
        assert!(metadata(&Value::Object(many), &[], "").is_err());
        assert!(metadata(&json!({"a": {"nested": 1}}), &[], "").is_err());
        assert!(metadata(&json!({"a": null}), &[], "").is_err());
        assert!(metadata(&json!([1]), &[], "").is_err());
    }

    #[test]
    fn vectors() {
        assert!(vector(&[1.0, 2.0], 2, true, "").is_ok());
        assert_eq!(
            vector(&[1.0], 5, false, "Invalid record for key 'a': ")
                .unwrap_err()
                .to_string(),
            "Invalid record for key 'a': vector must have length 5, but has length 1"
        );
        assert!(vector(&[f32::NAN, 1.0], 2, false, "").is_err());
        assert!(vector(&[f32::INFINITY, 1.0], 2, false, "").is_err());
        assert!(vector(&[0.0, 0.0], 2, true, "").is_err());
        assert!(vector(&[0.0, 0.0], 2, false, "").is_ok());
    }

    #[test]
    fn list_lengths_are_one_to_max_inclusive() {
        assert!(count_limit("/keys", 1, 100).is_ok());
        assert!(count_limit("/keys", 100, 100).is_ok());
        for len in [0, 101] {
            let message = count_limit("/keys", len, 100)
                .expect_err("out of range")
                .to_string();
            assert!(
                message.contains("Member must have length between 1 and 100, inclusive"),
                "{message}"
            );
        }
    }

    #[test]
    fn metadata_limits_are_inclusive() {
        let keys = |n: usize| -> Value {
            Value::Object((0..n).map(|i| (format!("k{i}"), json!(i))).collect())
        };
        assert!(metadata(&keys(MAX_METADATA_KEYS), &[], "").is_ok());
        let message = metadata(&keys(MAX_METADATA_KEYS + 1), &[], "")
            .expect_err("too many keys")
            .to_string();
        assert!(message.contains("at most 50 keys"), "{message}");
        // `{"big":"…"}` is 10 bytes and the string; `{"k":"…"}` 8 and the string.
        let big = |len: usize| json!({ "big": "x".repeat(len - 10) });
        let non_filterable = ["big".to_owned()];
        assert!(metadata(&big(MAX_METADATA_BYTES), &non_filterable, "").is_ok());
        let message = metadata(&big(MAX_METADATA_BYTES + 1), &non_filterable, "")
            .expect_err("too large")
            .to_string();
        assert!(
            message.contains("Metadata must have at most 40960 bytes"),
            "{message}"
        );
        let filterable = |len: usize| json!({ "k": "x".repeat(len - 8) });
        assert!(metadata(&filterable(MAX_FILTERABLE_METADATA_BYTES), &[], "").is_ok());
        let message = metadata(&filterable(MAX_FILTERABLE_METADATA_BYTES + 1), &[], "")
            .expect_err("too large")
            .to_string();
        assert!(
            message.contains("Filterable metadata must have at most 2048 bytes"),
            "{message}"
        );
    }

    #[test]
    fn each_part_of_an_arn_is_checked() {
        let scope = ArnScope::new("us-east-1", "123456789012").expect("scope");
        assert!(scope
            .parse_arn(
                "arn:aws:s3vectors:us-east-1:123456789012:bucket/b-1",
                "/vectorBucketArn"
            )
            .expect("valid")
            .is_some());
        for bad in [
            "arx:aws:s3vectors:us-east-1:123456789012:bucket/b-1",
            "arn:gcp:s3vectors:us-east-1:123456789012:bucket/b-1",
            "arn:aws:s3:us-east-1:123456789012:bucket/b-1",
            "arn:aws:s3vectors:us-east-1:12345678901a:bucket/b-1",
            "arn:aws:s3vectors:us-east-1:12345678901:bucket/b-1",
            "arn:aws:s3vectors:us-east-1:123456789012:bucket/b_1",
            "arn:aws:s3vectors:us-east-1:123456789012:bucket/b-1/index/i_1",
            "arn:aws:s3vectors:us-east-1:123456789012:bucket/b-1/idx/i-1",
            "arn:aws:s3vectors:us-east-1:123456789012",
        ] {
            assert!(scope.parse_arn(bad, "/vectorBucketArn").is_err(), "{bad}");
        }
        // The pattern named in the error is the member's own.
        let pattern = |path: &str| {
            scope
                .parse_arn("not-an-arn", path)
                .expect_err("malformed")
                .to_string()
        };
        let bucket = pattern("/vectorBucketArn");
        assert!(
            bucket.ends_with(&format!("pattern: {BUCKET_ARN_PATTERN}")),
            "{bucket}"
        );
        let index = pattern("/indexArn");
        assert!(
            index.ends_with(&format!(
                "pattern: {BUCKET_ARN_PATTERN}{INDEX_ARN_SUFFIX_PATTERN}"
            )),
            "{index}"
        );
        let either = pattern("/resourceArn");
        assert!(
            either.ends_with(&format!(
                "pattern: {BUCKET_ARN_PATTERN}({INDEX_ARN_SUFFIX_PATTERN})?"
            )),
            "{either}"
        );
    }

    #[test]
    fn index_names_allow_dots_but_nothing_else_outside_lowercase_digits_and_dashes() {
        for good in ["abc", "a.b-c", "0-9"] {
            assert!(index_name(good).is_ok(), "{good}");
        }
        for bad in ["a_c", "a c", "aBc", ".ab", "ab.", "-ab", "ab-"] {
            assert!(index_name(bad).is_err(), "{bad}");
        }
    }
}
