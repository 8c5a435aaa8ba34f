//! S3 Vectors errors on the wire, and the one exhaustive mapping from internal errors to them.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use quiver_net::TransportError;
use quiver_proto::NodeError;
use serde::Serialize;

use crate::catalog::CatalogError;
use crate::placement::PlacementError;

/// The exceptions of the S3 Vectors model that Quiver returns.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Validation {
        message: String,
        field_list: Vec<FieldError>,
    },
    #[error("{0}")]
    AccessDenied(String),
    /// Authentication failed (missing, malformed, expired or wrong signature, unknown key).
    #[error("{message}")]
    Unauthenticated {
        error_type: &'static str,
        message: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    ServiceQuotaExceeded(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    ServiceUnavailable(String),
    /// Request body too large for the service (not a modelled exception; AWS answers 413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The operation name in the path is unknown.
    #[error("{0}")]
    UnknownOperation(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

pub const BUCKET_NOT_FOUND: &str = "The specified vector bucket could not be found";
pub const INDEX_NOT_FOUND: &str = "The specified index could not be found";

impl ApiError {
    /// A missing bucket, index or other resource (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::NotFound(_))
    }

    pub fn validation(message: impl Into<String>) -> Self {
        ApiError::Validation {
            message: message.into(),
            field_list: Vec::new(),
        }
    }

    /// The smithy-style single-field message: "1 validation error detected. Value at '/x' ...".
    pub fn field(path: &str, constraint: impl std::fmt::Display) -> Self {
        let detail = format!("Value at '{path}' failed to satisfy constraint: {constraint}");
        ApiError::Validation {
            message: format!("1 validation error detected. {detail}"),
            field_list: vec![FieldError {
                path: path.to_owned(),
                message: detail,
            }],
        }
    }

    /// Like [`ApiError::field`] for string lengths, which AWS reports with the value's length.
    pub fn length(path: &str, len: usize, min: usize, max: usize) -> Self {
        let detail = format!(
            "Value with length {len} at '{path}' failed to satisfy constraint: Member must have length between {min} and {max}, inclusive"
        );
        ApiError::Validation {
            message: format!("1 validation error detected. {detail}"),
            field_list: vec![FieldError {
                path: path.to_owned(),
                message: detail,
            }],
        }
    }

    pub fn bucket_not_found() -> Self {
        ApiError::NotFound(BUCKET_NOT_FOUND.into())
    }

    pub fn index_not_found() -> Self {
        ApiError::NotFound(INDEX_NOT_FOUND.into())
    }

    /// (HTTP status, error type name) — exhaustive, so a new variant must pick its status.
    pub fn status_and_type(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Validation { .. } => (StatusCode::BAD_REQUEST, "ValidationException"),
            ApiError::AccessDenied(_) => (StatusCode::FORBIDDEN, "AccessDeniedException"),
            ApiError::Unauthenticated { error_type, .. } => (StatusCode::FORBIDDEN, error_type),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "NotFoundException"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "ConflictException"),
            ApiError::ServiceQuotaExceeded(_) => (
                StatusCode::PAYMENT_REQUIRED,
                "ServiceQuotaExceededException",
            ),
            ApiError::TooManyRequests(_) => {
                (StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException")
            }
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "RequestTimeoutException"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerException"),
            ApiError::ServiceUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
            ),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "ValidationException"),
            ApiError::UnknownOperation(_) => (StatusCode::NOT_FOUND, "UnknownOperationException"),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "__type")]
    error_type: &'a str,
    message: String,
    #[serde(rename = "fieldList", skip_serializing_if = "Option::is_none")]
    field_list: Option<&'a [FieldError]>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error_type) = self.status_and_type();
        let field_list = match &self {
            ApiError::Validation { field_list, .. } if !field_list.is_empty() => {
                Some(field_list.as_slice())
            }
            _ => None,
        };
        let body = ErrorBody {
            error_type,
            message: self.to_string(),
            field_list,
        };
        let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, json).into_response();
        let headers = response.headers_mut();
        headers.insert("x-amzn-errortype", HeaderValue::from_static(error_type));
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::BucketExists => {
                ApiError::Conflict("A vector bucket with the specified name already exists".into())
            }
            CatalogError::IndexExists => {
                ApiError::Conflict("An index with the specified name already exists".into())
            }
            CatalogError::BucketNotFound => ApiError::bucket_not_found(),
            CatalogError::IndexNotFound => ApiError::index_not_found(),
            CatalogError::BucketNotEmpty => {
                ApiError::Conflict("The specified vector bucket is not empty".into())
            }
            CatalogError::TooManyBuckets(limit) => ApiError::ServiceQuotaExceeded(format!(
                "The maximum number of vector buckets ({limit}) has been reached"
            )),
            CatalogError::TooManyIndexes(limit) => ApiError::ServiceQuotaExceeded(format!(
                "The maximum number of indexes per vector bucket ({limit}) has been reached"
            )),
            CatalogError::NodeNotFound(_) => {
                ApiError::Internal("We encountered an internal error. Please try again.".into())
            }
            CatalogError::InvalidShardMap(problem) => {
                // A bug, not the caller's fault: the detail goes to the log, not to the client.
                tracing::error!(problem, "command carries an invalid shard map");
                ApiError::Internal("We encountered an internal error. Please try again.".into())
            }
            CatalogError::Unavailable(_) => ApiError::ServiceUnavailable(
                "The cluster's control plane is unavailable; please retry".into(),
            ),
        }
    }
}

impl From<PlacementError> for ApiError {
    fn from(e: PlacementError) -> Self {
        match e {
            PlacementError::NotEnoughNodes { live: 0, .. } => {
                ApiError::ServiceUnavailable("No storage node is available".into())
            }
            PlacementError::NotEnoughNodes { .. } => {
                ApiError::ServiceUnavailable(format!("Not enough storage nodes are available: {e}"))
            }
        }
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Overloaded => {
                ApiError::ServiceUnavailable("Currently unable to handle the request".into())
            }
            // The node gave up on the caller's deadline: the same retryable 503 as a shard that
            // did not answer in time (408 is for a client too slow to send its request).
            NodeError::DeadlineExceeded => ApiError::ServiceUnavailable(
                "A shard of this index did not answer in time; please retry".into(),
            ),
            NodeError::InvalidRequest(message) => ApiError::validation(message),
            NodeError::ShardNotFound(_)
            | NodeError::ShardUnavailable(_)
            | NodeError::NotLeader { .. }
            | NodeError::Storage(_) => ApiError::ServiceUnavailable(
                "A shard of this index is unavailable; please retry".into(),
            ),
            NodeError::ProtocolVersion { .. }
            | NodeError::Malformed(_)
            | NodeError::Forbidden(_) => {
                ApiError::Internal("We encountered an internal error. Please try again.".into())
            }
        }
    }
}

impl From<TransportError> for ApiError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Timeout { .. } => ApiError::ServiceUnavailable(
                "A shard of this index did not answer in time; please retry".into(),
            ),
            TransportError::Unreachable { .. } | TransportError::Protocol { .. } => {
                ApiError::ServiceUnavailable(
                    "A shard of this index is unavailable; please retry".into(),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exception_has_its_model_status() {
        let cases = [
            (ApiError::validation("x"), 400, "ValidationException"),
            (
                ApiError::AccessDenied("x".into()),
                403,
                "AccessDeniedException",
            ),
            (ApiError::bucket_not_found(), 404, "NotFoundException"),
            (ApiError::Conflict("x".into()), 409, "ConflictException"),
            (
                ApiError::ServiceQuotaExceeded("x".into()),
                402,
                "ServiceQuotaExceededException",
            ),
            (
                ApiError::TooManyRequests("x".into()),
                429,
                "TooManyRequestsException",
            ),
            (
                ApiError::RequestTimeout("x".into()),
                408,
                "RequestTimeoutException",
            ),
            (
                ApiError::Internal("x".into()),
                500,
                "InternalServerException",
            ),
            (
                ApiError::ServiceUnavailable("x".into()),
                503,
                "ServiceUnavailableException",
            ),
        ];
        for (error, status, name) in cases {
            let (got_status, got_name) = error.status_and_type();
            assert_eq!((got_status.as_u16(), got_name), (status, name));
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(
                response
                    .headers()
                    .get("x-amzn-errortype")
                    .and_then(|v| v.to_str().ok()),
                Some(name)
            );
        }
        // Too many buckets is the service quota error, HTTP 402.
        let quota: ApiError = CatalogError::TooManyBuckets(10_000).into();
        assert_eq!(quota.status_and_type().0.as_u16(), 402);
    }

    #[test]
    fn a_shard_out_of_time_is_a_503_whichever_side_timed_out() {
        let node: ApiError = NodeError::DeadlineExceeded.into();
        let transport: ApiError = TransportError::Timeout {
            peer: "node-1".into(),
        }
        .into();
        for error in [node, transport] {
            assert_eq!(error.status_and_type().0.as_u16(), 503, "{error}");
        }
    }
}
