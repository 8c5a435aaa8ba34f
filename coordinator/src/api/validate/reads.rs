//! The rules for the paging and query members of the read operations: page sizes, prefixes,
//! ListVectors segments, topK and queryMode. Messages follow the service (the smithy
//! "1 validation error detected" form where AWS uses it).

use quiver_proto::HashRange;

use super::{required, MAX_TOP_K};
use crate::catalog::IndexMode;
use crate::error::ApiError;

/// A page size: `default` when absent, else 1 to `max`.
pub fn max_results(value: Option<i64>, default: i64, max: i64) -> Result<usize, ApiError> {
    match value {
        None => Ok(default as usize),
        Some(n) if (1..=max).contains(&n) => Ok(n as usize),
        Some(_) => Err(ApiError::field(
            "/maxResults",
            format!("Member must be between 1 and {max}, inclusive"),
        )),
    }
}

/// The optional name prefix of ListVectorBuckets and ListIndexes: 1 to 63 characters.
pub fn list_prefix(prefix: Option<&str>) -> Result<(), ApiError> {
    if let Some(prefix) = prefix {
        let len = prefix.chars().count();
        if !(1..=63).contains(&len) {
            return Err(ApiError::length("/prefix", len, 1, 63));
        }
    }
    Ok(())
}

/// The part of the key space one ListVectors segment covers (`None`: all of it):
/// `segmentCount` 1 to 16 and `segmentIndex` below it, given together or not at all.
pub fn segment_range(
    count: Option<i64>,
    index: Option<i64>,
) -> Result<Option<HashRange>, ApiError> {
    let (count, index) = match (count, index) {
        (None, None) => return Ok(None),
        (Some(count), Some(index)) => (count, index),
        _ => {
            return Err(ApiError::validation(
                "segmentCount and segmentIndex must be specified together",
            ))
        }
    };
    if !(1..=16).contains(&count) {
        return Err(ApiError::field(
            "/segmentCount",
            "Member must be between 1 and 16, inclusive",
        ));
    }
    if !(0..=15).contains(&index) {
        return Err(ApiError::field(
            "/segmentIndex",
            "Member must be between 0 and 15, inclusive",
        ));
    }
    if index >= count {
        return Err(ApiError::validation(
            "segmentIndex must be less than segmentCount",
        ));
    }
    Ok(Some(HashRange::split(index as u32, count as u32)))
}

/// The required `topK` of QueryVectors: 1 to 10,000.
pub fn top_k(value: Option<i64>) -> Result<i64, ApiError> {
    let top_k = required(value, "/topK")?;
    if top_k < 1 {
        return Err(ApiError::field(
            "/topK",
            "Member must be greater than or equal to 1",
        ));
    }
    if top_k > MAX_TOP_K {
        return Err(ApiError::validation(format!(
            "topK must be at most {MAX_TOP_K}"
        )));
    }
    Ok(top_k)
}

/// The `queryMode` a QueryVectors request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryMode {
    Enhanced,
    Classic,
}

pub fn query_mode(value: Option<&str>) -> Result<Option<QueryMode>, ApiError> {
    match value {
        None => Ok(None),
        Some("ENHANCED") => Ok(Some(QueryMode::Enhanced)),
        Some("CLASSIC") => Ok(Some(QueryMode::Classic)),
        Some(_) => Err(ApiError::field(
            "/queryMode",
            "Member must satisfy enum value set: [CLASSIC, ENHANCED]",
        )),
    }
}

/// Whether a query on an index in `index_mode` searches in ENHANCED mode. ENHANCED may be
/// asked of a CLASSIC index; CLASSIC may not be asked of an ENHANCED one; without a queryMode
/// the index's own mode applies.
pub fn enhanced_search(
    requested: Option<QueryMode>,
    index_mode: IndexMode,
) -> Result<bool, ApiError> {
    match (requested, index_mode) {
        (Some(QueryMode::Classic), IndexMode::Enhanced) => Err(ApiError::validation(
            "queryMode CLASSIC is not supported for an index in ENHANCED mode",
        )),
        (Some(mode), _) => Ok(mode == QueryMode::Enhanced),
        (None, mode) => Ok(mode == IndexMode::Enhanced),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(error: ApiError) -> String {
        error.to_string()
    }

    #[test]
    fn paging() {
        assert_eq!(max_results(None, 500, 500).ok(), Some(500));
        assert_eq!(max_results(None, 500, 1000).ok(), Some(500));
        assert_eq!(max_results(Some(1), 500, 1000).ok(), Some(1));
        assert_eq!(max_results(Some(1000), 500, 1000).ok(), Some(1000));
        assert_eq!(
            message(max_results(Some(501), 500, 500).unwrap_err()),
            "1 validation error detected. Value at '/maxResults' failed to satisfy constraint: Member must be between 1 and 500, inclusive"
        );
        assert!(max_results(Some(0), 500, 500).is_err());
        assert!(max_results(Some(-5), 500, 1000).is_err());
        assert!(list_prefix(None).is_ok());
        assert!(list_prefix(Some("a")).is_ok());
        assert!(list_prefix(Some(&"a".repeat(63))).is_ok());
        assert!(list_prefix(Some("")).is_err());
        assert!(list_prefix(Some(&"a".repeat(64))).is_err());
    }

    #[test]
    fn segments() {
        assert_eq!(segment_range(None, None).ok(), Some(None));
        assert_eq!(
            segment_range(Some(4), Some(3)).ok(),
            Some(Some(HashRange::split(3, 4)))
        );
        assert_eq!(
            segment_range(Some(1), Some(0)).ok(),
            Some(Some(HashRange::split(0, 1)))
        );
        for (count, index) in [
            (Some(4), None),
            (None, Some(0)),
            (Some(0), Some(0)),
            (Some(17), Some(0)),
            (Some(16), Some(16)),
            (Some(4), Some(-1)),
            (Some(4), Some(4)),
        ] {
            assert!(segment_range(count, index).is_err(), "{count:?} {index:?}");
        }
        assert_eq!(
            message(segment_range(Some(2), Some(5)).unwrap_err()),
            "segmentIndex must be less than segmentCount"
        );
    }

    #[test]
    fn query_options() {
        assert_eq!(top_k(Some(1)).ok(), Some(1));
        assert_eq!(top_k(Some(10_000)).ok(), Some(10_000));
        assert_eq!(
            message(top_k(Some(0)).unwrap_err()),
            "1 validation error detected. Value at '/topK' failed to satisfy constraint: Member must be greater than or equal to 1"
        );
        assert_eq!(
            message(top_k(Some(10_001)).unwrap_err()),
            "topK must be at most 10000"
        );
        assert!(top_k(None).is_err());
        assert_eq!(query_mode(None).ok(), Some(None));
        assert_eq!(
            query_mode(Some("CLASSIC")).ok(),
            Some(Some(QueryMode::Classic))
        );
        assert!(query_mode(Some("classic")).is_err());
        assert_eq!(enhanced_search(None, IndexMode::Enhanced).ok(), Some(true));
        assert_eq!(enhanced_search(None, IndexMode::Classic).ok(), Some(false));
        assert_eq!(
            enhanced_search(Some(QueryMode::Enhanced), IndexMode::Classic).ok(),
            Some(true)
        );
        assert_eq!(
            enhanced_search(Some(QueryMode::Classic), IndexMode::Classic).ok(),
            Some(false)
        );
        assert_eq!(
            message(enhanced_search(Some(QueryMode::Classic), IndexMode::Enhanced).unwrap_err()),
            "queryMode CLASSIC is not supported for an index in ENHANCED mode"
        );
    }
}
