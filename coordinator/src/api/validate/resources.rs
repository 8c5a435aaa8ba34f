//! The rules for what a bucket or index is created or changed with: the definition of a new
//! index, encryption, tags and index modes. Messages follow the service (the smithy
//! "1 validation error detected" form where AWS uses it).

use std::collections::BTreeMap;

use quiver_proto::DistanceMetric;

use super::{required, MAX_DIMENSION, MAX_NON_FILTERABLE_KEYS};
use crate::api::model::{EncryptionIn, MetadataConfigurationIn};
use crate::catalog::{EncryptionConfig, IndexMode, SseType};
use crate::error::ApiError;

/// The `dataType` of a new index: required, and only `float32` exists.
pub fn index_data_type(value: Option<String>) -> Result<(), ApiError> {
    if required(value, "/dataType")? != "float32" {
        return Err(ApiError::field(
            "/dataType",
            "Member must satisfy enum value set: [float32]",
        ));
    }
    Ok(())
}

/// The `dimension` of a new index: required, 1 to 4096.
pub fn dimension(value: Option<i64>) -> Result<u32, ApiError> {
    let dimension = required(value, "/dimension")?;
    if !(1..=MAX_DIMENSION).contains(&dimension) {
        return Err(ApiError::field(
            "/dimension",
            "Member must be between 1 and 4096, inclusive",
        ));
    }
    Ok(dimension as u32)
}

/// The `distanceMetric` of a new index: required, `euclidean` or `cosine`.
pub fn distance_metric(value: Option<String>) -> Result<DistanceMetric, ApiError> {
    match required(value, "/distanceMetric")?.as_str() {
        "euclidean" => Ok(DistanceMetric::Euclidean),
        "cosine" => Ok(DistanceMetric::Cosine),
        _ => Err(ApiError::field(
            "/distanceMetric",
            "Member must satisfy enum value set: [euclidean, cosine]",
        )),
    }
}

/// The `nonFilterableMetadataKeys` of a new index's `metadataConfiguration` (`None` without a
/// configuration): at most 10 keys of 1 to 63 characters. Full-text search configurations
/// are refused until the server supports them.
pub fn non_filterable_keys(
    config: Option<MetadataConfigurationIn>,
) -> Result<Option<Vec<String>>, ApiError> {
    const PATH: &str = "/metadataConfiguration/nonFilterableMetadataKeys";
    let Some(config) = config else {
        return Ok(None);
    };
    if config.text_search_configurations.is_some() {
        return Err(ApiError::validation(
            "Full-text search configurations are not supported by this server yet",
        ));
    }
    let keys = config.non_filterable_metadata_keys.unwrap_or_default();
    if keys.len() > MAX_NON_FILTERABLE_KEYS {
        return Err(ApiError::field(
            PATH,
            "Member must have length less than or equal to 10",
        ));
    }
    for key in &keys {
        let len = key.chars().count();
        if !(1..=63).contains(&len) {
            return Err(ApiError::length(PATH, len, 1, 63));
        }
    }
    Ok(Some(keys))
}

/// An `encryptionConfiguration` (`None` when absent; the sseType defaults to AES256): a KMS key
/// ARN exactly when the type is `aws:kms`.
pub fn encryption(input: Option<EncryptionIn>) -> Result<Option<EncryptionConfig>, ApiError> {
    let Some(input) = input else { return Ok(None) };
    let sse_type = match input.sse_type.as_deref().unwrap_or("AES256") {
        "AES256" => {
            if input.kms_key_arn.is_some() {
                return Err(ApiError::validation(
                    "kmsKeyArn can only be specified when sseType is aws:kms",
                ));
            }
            SseType::Aes256
        }
        "aws:kms" => {
            let Some(arn) = &input.kms_key_arn else {
                return Err(ApiError::validation(
                    "kmsKeyArn must be specified when sseType is aws:kms",
                ));
            };
            let valid = (1..=2048).contains(&arn.len()) && is_kms_key_arn(arn);
            if !valid {
                return Err(ApiError::field(
                    "/encryptionConfiguration/kmsKeyArn",
                    "Member must satisfy regular expression pattern: (arn:aws[-a-z0-9]*:kms:[-a-z0-9]*:[0-9]{12}:key/.+)",
                ));
            }
            SseType::Kms
        }
        _ => {
            return Err(ApiError::field(
                "/encryptionConfiguration/sseType",
                "Member must satisfy enum value set: [AES256, aws:kms]",
            ))
        }
    };
    Ok(Some(EncryptionConfig {
        sse_type,
        kms_key_arn: input.kms_key_arn,
    }))
}

/// `arn:aws[-a-z0-9]*:kms:[-a-z0-9]*:[0-9]{12}:key/.+`, the model's pattern for kmsKeyArn.
fn is_kms_key_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts.as_slice() else {
        return false;
    };
    let lower_digit_dash = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    *prefix == "arn"
        && partition.strip_prefix("aws").is_some_and(lower_digit_dash)
        && *service == "kms"
        && lower_digit_dash(region)
        && account.len() == 12
        && account.chars().all(|c| c.is_ascii_digit())
        && resource
            .strip_prefix("key/")
            .is_some_and(|id| !id.is_empty())
}

/// Maximum tags on one resource.
const MAX_TAGS: usize = 50;

const TAG_PATTERN: &str =
    "Member must satisfy regular expression pattern: [\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*";

fn tag_string_ok(s: &str) -> bool {
    s.chars().all(|c| {
        c.is_alphabetic()
            || c.is_numeric()
            || c.is_whitespace()
            || matches!(c, '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@')
    })
}

fn tag_key(key: &str, path: &str) -> Result<(), ApiError> {
    let len = key.chars().count();
    if !(1..=128).contains(&len) {
        return Err(ApiError::length(path, len, 1, 128));
    }
    if !tag_string_ok(key) {
        return Err(ApiError::field(path, TAG_PATTERN));
    }
    Ok(())
}

/// The tags of a resource: at most 50, keys of 1 to 128 and values of up to 256 characters
/// from the model's pattern.
pub fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if tags.len() > MAX_TAGS {
        return Err(ApiError::validation(format!(
            "A resource can have at most {MAX_TAGS} tags"
        )));
    }
    for (key, value) in tags {
        tag_key(key, "/tags")?;
        let value_len = value.chars().count();
        if value_len > 256 {
            return Err(ApiError::length("/tags", value_len, 0, 256));
        }
        if !tag_string_ok(value) {
            return Err(ApiError::field("/tags", TAG_PATTERN));
        }
    }
    Ok(())
}

/// The optional `tags` of a new bucket or index (none when absent).
pub fn tags(input: Option<BTreeMap<String, String>>) -> Result<BTreeMap<String, String>, ApiError> {
    let tags = input.unwrap_or_default();
    check_tags(&tags)?;
    Ok(tags)
}

/// The required `tagKeys` of UntagResource, from the query string (`tagKeys=a&tagKeys=b`).
pub fn tag_keys(query: Option<&str>) -> Result<Vec<String>, ApiError> {
    let keys: Vec<String> = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == "tagKeys")
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let keys = required(Some(keys).filter(|keys| !keys.is_empty()), "/tagKeys")?;
    for key in &keys {
        tag_key(key, "/tagKeys")?;
    }
    Ok(keys)
}

/// Buckets created before this instant (2026-09-30T00:00:00Z, when S3 Vectors introduced index
/// modes) may use CLASSIC; newer ones only ENHANCED.
const INDEX_MODES_INTRODUCED: f64 = 1_790_726_400.0;

/// A required index mode at `path` for an index of a bucket created at `bucket_created`
/// (seconds since the epoch).
pub fn index_mode(
    value: Option<String>,
    path: &str,
    bucket_created: f64,
) -> Result<IndexMode, ApiError> {
    let mode = required(value, path)?;
    match mode.as_str() {
        "ENHANCED" => Ok(IndexMode::Enhanced),
        "CLASSIC" if bucket_created < INDEX_MODES_INTRODUCED => Ok(IndexMode::Classic),
        "CLASSIC" => Err(ApiError::validation(
            "CLASSIC mode is only available for indexes in vector buckets created before September 30, 2026",
        )),
        _ => Err(ApiError::field(
            path,
            "Member must satisfy enum value set: [CLASSIC, ENHANCED]",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(error: ApiError) -> String {
        error.to_string()
    }

    #[test]
    fn index_definition() {
        assert!(index_data_type(Some("float32".into())).is_ok());
        assert_eq!(
            message(index_data_type(Some("float16".into())).unwrap_err()),
            "1 validation error detected. Value at '/dataType' failed to satisfy constraint: Member must satisfy enum value set: [float32]"
        );
        assert_eq!(
            message(index_data_type(None).unwrap_err()),
            "1 validation error detected. Value null at '/dataType' failed to satisfy constraint: Member must not be null"
        );
        assert_eq!(dimension(Some(1)).ok(), Some(1));
        assert_eq!(dimension(Some(4096)).ok(), Some(4096));
        for bad in [Some(0), Some(4097), Some(-1), None] {
            assert!(dimension(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            distance_metric(Some("cosine".into())).ok(),
            Some(DistanceMetric::Cosine)
        );
        assert_eq!(
            distance_metric(Some("euclidean".into())).ok(),
            Some(DistanceMetric::Euclidean)
        );
        assert!(distance_metric(Some("Cosine".into())).is_err());
        assert!(distance_metric(Some("dot".into())).is_err());
        assert!(distance_metric(None).is_err());
    }

    #[test]
    fn metadata_configuration() {
        let config = |keys: Option<Vec<&str>>, text: bool| MetadataConfigurationIn {
            non_filterable_metadata_keys: keys
                .map(|keys| keys.into_iter().map(str::to_owned).collect()),
            text_search_configurations: text.then(|| serde_json::json!([])),
        };
        assert_eq!(non_filterable_keys(None).ok(), Some(None));
        assert_eq!(
            non_filterable_keys(Some(config(None, false))).ok(),
            Some(Some(vec![]))
        );
        assert_eq!(
            non_filterable_keys(Some(config(Some(vec!["note"]), false))).ok(),
            Some(Some(vec!["note".to_owned()]))
        );
        let ten: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        let ten: Vec<&str> = ten.iter().map(String::as_str).collect();
        assert_eq!(
            non_filterable_keys(Some(config(Some(ten.clone()), false)))
                .ok()
                .flatten()
                .map(|keys| keys.len()),
            Some(10)
        );
        let eleven = vec!["k"; 11];
        assert_eq!(
            message(non_filterable_keys(Some(config(Some(eleven), false))).unwrap_err()),
            "1 validation error detected. Value at '/metadataConfiguration/nonFilterableMetadataKeys' failed to satisfy constraint: Member must have length less than or equal to 10"
        );
        let long = "x".repeat(64);
        assert!(non_filterable_keys(Some(config(Some(vec![&long]), false))).is_err());
        assert!(non_filterable_keys(Some(config(Some(vec![""]), false))).is_err());
        assert!(
            message(non_filterable_keys(Some(config(None, true))).unwrap_err())
                .contains("not supported")
        );
    }

    #[test]
    fn encryption_and_kms_key_arns() {
        let input = |sse: Option<&str>, arn: Option<&str>| {
            Some(EncryptionIn {
                sse_type: sse.map(str::to_owned),
                kms_key_arn: arn.map(str::to_owned),
            })
        };
        let key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd";
        assert_eq!(encryption(None).ok(), Some(None));
        assert_eq!(
            encryption(input(None, None)).ok(),
            Some(Some(EncryptionConfig::default()))
        );
        assert_eq!(
            encryption(input(Some("aws:kms"), Some(key))).ok(),
            Some(Some(EncryptionConfig {
                sse_type: SseType::Kms,
                kms_key_arn: Some(key.into()),
            }))
        );
        assert_eq!(
            message(encryption(input(Some("AES256"), Some(key))).unwrap_err()),
            "kmsKeyArn can only be specified when sseType is aws:kms"
        );
        assert_eq!(
            message(encryption(input(Some("aws:kms"), None)).unwrap_err()),
            "kmsKeyArn must be specified when sseType is aws:kms"
        );
        assert!(encryption(input(Some("aes256"), None)).is_err());
        for arn in [
            "arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/k",
            "arn:aws:kms::123456789012:key/k",
            "arn:aws:kms:us-east-1:123456789012:key/a:b/c",
        ] {
            assert!(is_kms_key_arn(arn), "{arn}");
        }
        for arn in [
            "arn:aws:kms:us-east-1:123456789012:key/",
            "arn:aws:kms:us-east-1:123456789012:alias/k",
            "arn:aws:s3:us-east-1:123456789012:key/k",
            "arn:aws:kms:us-east-1:12345678901:key/k",
            "arn:aws:kms:US-EAST-1:123456789012:key/k",
            "arn:azure:kms:us-east-1:123456789012:key/k",
            "arn:aws:kms:us-east-1:123456789012",
            "",
        ] {
            assert!(!is_kms_key_arn(arn), "{arn}");
        }
        let long = format!("{key}{}", "k".repeat(2048));
        assert!(encryption(input(Some("aws:kms"), Some(&long))).is_err());
    }

    #[test]
    fn tag_rules() {
        let tags_of = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(tags(None).ok(), Some(BTreeMap::new()));
        assert!(tags(Some(tags_of(&[
            ("team", "search"),
            ("a b:c/d=e+f-g@h_i.", "")
        ])))
        .is_ok());
        assert!(tags(Some(tags_of(&[("ключ", "värde 1")]))).is_ok());
        assert_eq!(
            message(tags(Some(tags_of(&[("", "v")]))).unwrap_err()),
            "1 validation error detected. Value with length 0 at '/tags' failed to satisfy constraint: Member must have length between 1 and 128, inclusive"
        );
        assert!(tags(Some(tags_of(&[(&"k".repeat(129), "v")]))).is_err());
        assert!(tags(Some(tags_of(&[("k", &"v".repeat(257))]))).is_err());
        assert!(tags(Some(tags_of(&[("k", &"v".repeat(256))]))).is_ok());
        assert!(tags(Some(tags_of(&[("k#", "v")]))).is_err());
        assert!(tags(Some(tags_of(&[("k", "v*")]))).is_err());
        let fifty: BTreeMap<String, String> =
            (0..50).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(tags(Some(fifty)).is_ok());
        let many: BTreeMap<String, String> =
            (0..51).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(
            message(tags(Some(many)).unwrap_err()),
            "A resource can have at most 50 tags"
        );
    }

    #[test]
    fn untag_keys_come_from_the_query_string() {
        assert_eq!(
            tag_keys(Some("tagKeys=a&tagKeys=b%20c&other=x&tagKeys=d+e")).ok(),
            Some(vec!["a".to_owned(), "b c".to_owned(), "d e".to_owned()])
        );
        for query in [None, Some(""), Some("other=x"), Some("tagKeys")] {
            assert_eq!(
                message(tag_keys(query).unwrap_err()),
                "1 validation error detected. Value null at '/tagKeys' failed to satisfy constraint: Member must not be null",
                "{query:?}"
            );
        }
        assert!(tag_keys(Some("tagKeys=")).is_err());
        assert!(tag_keys(Some("tagKeys=a%23")).is_err());
    }

    #[test]
    fn index_modes() {
        let old_bucket = INDEX_MODES_INTRODUCED - 1.0;
        let new_bucket = INDEX_MODES_INTRODUCED;
        let mode =
            |value: &str, created: f64| index_mode(Some(value.into()), "/indexMode", created);
        assert_eq!(mode("ENHANCED", new_bucket).ok(), Some(IndexMode::Enhanced));
        assert_eq!(mode("CLASSIC", old_bucket).ok(), Some(IndexMode::Classic));
        assert!(message(mode("CLASSIC", new_bucket).unwrap_err()).contains("September 30, 2026"));
        assert_eq!(
            message(mode("enhanced", old_bucket).unwrap_err()),
            "1 validation error detected. Value at '/indexMode' failed to satisfy constraint: Member must satisfy enum value set: [CLASSIC, ENHANCED]"
        );
        assert!(
            message(index_mode(None, "/defaultIndexMode", old_bucket).unwrap_err())
                .contains("Value null at '/defaultIndexMode'")
        );
    }
}
