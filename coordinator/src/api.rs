//! The S3 Vectors HTTP API: routes, request parsing, and one function per operation.
//!
//! This is the only module that knows S3 Vectors JSON names. Each handler parses the body into a
//! typed request, validates all of it, and only then touches the catalog or the data plane.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use quiver_proto::{DistanceMetric, HashRange, IndexUid, WriteOp};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::Instrument;

use crate::auth::{Authenticator, Principal};
use crate::catalog::{
    BucketRecord, Catalog, CatalogCommand, EncryptionConfig, IndexMode, IndexRecord, NewIndex,
    SseType,
};
use crate::cluster::ControlPlane;
use crate::dataplane::{metric_name, DataPlane};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::placement;
use crate::throttle::Throttle;
use crate::tokens::{CursorCache, TokenSigner};
use crate::validate::{self, ArnScope, BucketAddress, IndexAddress};

/// Settings of the API layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub scope: ArnScope,
    /// Shards per new index (at least 2 so fan-out and merge always run).
    pub shards_per_index: u32,
    /// API requests executing at once; more wait up to [`ADMISSION_WAIT`], then get 429.
    pub max_concurrent_requests: usize,
}

/// How long a request may wait for an execution slot before it is throttled.
pub const ADMISSION_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub struct AppState {
    pub config: ApiConfig,
    /// The control plane; the same object as `catalog`, with Raft status for /ready and
    /// /metrics.
    pub control: Arc<ControlPlane>,
    pub catalog: Arc<dyn Catalog>,
    pub metrics: Metrics,
    pub data: DataPlane,
    pub auth: Authenticator,
    pub tokens: TokenSigner,
    pub cursors: CursorCache,
    pub throttle: Throttle,
    /// Execution slots (see [`ApiConfig::max_concurrent_requests`]).
    pub admission: Arc<tokio::sync::Semaphore>,
}

/// One authenticated request.
pub struct Ctx {
    pub request_id: String,
    pub principal: Principal,
}

impl AppState {
    /// Authorizes `actions` on `resource`, including the bucket policy of `bucket` if it has one.
    fn authorize(
        &self,
        ctx: &Ctx,
        actions: &[&str],
        resource: &str,
        bucket: Option<&str>,
    ) -> Result<(), ApiError> {
        let policy = bucket.and_then(|b| {
            self.catalog
                .state()
                .bucket(b)
                .and_then(|r| r.policy.clone())
        });
        self.auth
            .authorize(&ctx.principal, actions, resource, policy.as_deref())
    }
}

type App = Arc<AppState>;

#[derive(Clone)]
pub struct RequestId(pub String);

pub fn router(state: App) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/{operation}", post(dispatch))
        .route(
            "/tags/{arn}",
            get(tags_dispatch).post(tags_dispatch).delete(tags_dispatch),
        )
        .fallback(unknown_route)
        .method_not_allowed_fallback(unknown_route)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admission,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(axum::middleware::from_fn(request_context))
        .layer(DefaultBodyLimit::max(validate::MAX_REQUEST_BYTES))
        .with_state(state)
}

/// Ready once this coordinator knows a Raft leader (it can serve reads and forward writes).
async fn ready(State(app): State<App>) -> Response {
    if app.control.ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no control-plane leader yet",
        )
            .into_response()
    }
}

async fn metrics(State(app): State<App>) -> Response {
    crate::metrics::exposition(app.metrics.render(&app.control))
}

/// Gives every request an id (the `x-amzn-RequestId` header) and a tracing span carrying it.
async fn request_context(mut request: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, path = %request.uri().path());
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
}

/// Anything that is not an S3 Vectors route gets an AWS-shaped error, not a bare status.
async fn unknown_route(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    ApiError::UnknownOperation(format!(
        "No S3 Vectors operation matches {method} {}",
        uri.path()
    ))
    .into_response()
}

/// Bounds the requests executing at once: a request waits up to [`ADMISSION_WAIT`] for a slot,
/// then gets a retryable 429, so overload turns into throttling instead of unbounded queues.
async fn admission(State(app): State<App>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/health" || path == "/ready" || path == "/metrics" {
        return next.run(request).await;
    }
    let slot = tokio::time::timeout(ADMISSION_WAIT, app.admission.clone().acquire_owned()).await;
    let Ok(Ok(_permit)) = slot else {
        return ApiError::TooManyRequests(
            "Too many concurrent requests; slow down and retry".into(),
        )
        .into_response();
    };
    next.run(request).await
}

/// Authenticates a request and builds its context.
fn authenticated(
    app: &AppState,
    request_id: String,
    method: &axum::http::Method,
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<Ctx, ApiError> {
    let principal = app.auth.authenticate(method, uri, headers, body)?;
    Ok(Ctx {
        request_id,
        principal,
    })
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::validation(format!("Invalid request body: {e}")))
}

fn ok_json(value: Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

fn ok_empty() -> Response {
    StatusCode::OK.into_response()
}

async fn dispatch(
    State(app): State<App>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(operation): Path<String>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            return ApiError::PayloadTooLarge(format!(
                "Request body rejected: {}",
                rejection.body_text()
            ))
            .into_response()
        }
    };
    let ctx = match authenticated(&app, request_id, &method, &uri, &headers, &body) {
        Ok(ctx) => ctx,
        Err(error) => return error.into_response(),
    };
    // Reads of the catalog itself are linearizable (cheap and rare next to data calls).
    let control_read = CONTROL_READS.contains(&operation.as_str());
    let result = with_read_barrier(&app, control_read, || {
        operate(&app, &operation, &body, &ctx)
    })
    .await;
    match result {
        Ok(response) => response,
        Err(error) => {
            let (status, _) = error.status_and_type();
            if status.is_server_error() {
                tracing::warn!(operation, %error, "request failed");
            } else {
                tracing::debug!(operation, %error, "request rejected");
            }
            error.into_response()
        }
    }
}

/// Runs `attempt` so that it sees every change committed (through any coordinator) before
/// this request started: after a linearizable read barrier when `always`, otherwise from the
/// local state, and once more after the barrier only if that answered NotFound (this
/// coordinator may not yet have applied a change committed elsewhere; a NotFound answer
/// changed nothing, so the second attempt is safe).
async fn with_read_barrier<F, Fut>(
    app: &AppState,
    always: bool,
    attempt: F,
) -> Result<Response, ApiError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
{
    if always {
        app.catalog.sync().await?;
        return attempt().await;
    }
    let result = attempt().await;
    if !result.as_ref().is_err_and(ApiError::is_not_found) {
        return result;
    }
    app.catalog.sync().await?;
    attempt().await
}

/// The operations served under `POST /{operation}` (tags have their own route).
const OPERATIONS: [&str; 19] = [
    "CreateVectorBucket",
    "GetVectorBucket",
    "ListVectorBuckets",
    "DeleteVectorBucket",
    "CreateIndex",
    "GetIndex",
    "ListIndexes",
    "DeleteIndex",
    "PutVectors",
    "GetVectors",
    "ListVectors",
    "DeleteVectors",
    "QueryVectors",
    "PutVectorBucketPolicy",
    "GetVectorBucketPolicy",
    "DeleteVectorBucketPolicy",
    "PutVectorBucketDefaultIndexMode",
    "UpdateIndexMode",
    "UpdateMetadataConfiguration",
];

/// Operations that only read the catalog; they read linearizably.
const CONTROL_READS: [&str; 5] = [
    "GetVectorBucket",
    "ListVectorBuckets",
    "GetIndex",
    "ListIndexes",
    "GetVectorBucketPolicy",
];

/// The metrics label of a request: a known operation or "unknown", so arbitrary paths cannot
/// grow the metric families.
fn operation_label(method: &axum::http::Method, path: &str) -> &'static str {
    if path.starts_with("/tags/") {
        return match *method {
            axum::http::Method::GET => "ListTagsForResource",
            axum::http::Method::POST => "TagResource",
            axum::http::Method::DELETE => "UntagResource",
            _ => "unknown",
        };
    }
    let operation = path.trim_start_matches('/');
    OPERATIONS
        .iter()
        .find(|known| **known == operation)
        .copied()
        .unwrap_or("unknown")
}

/// Counts every API request by operation and status, with its latency.
async fn observe(State(app): State<App>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/health" || path == "/ready" || path == "/metrics" {
        return next.run(request).await;
    }
    let operation = operation_label(request.method(), path);
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    app.metrics
        .record(operation, response.status().as_u16(), started.elapsed());
    response
}

/// Runs one S3 Vectors operation.
async fn operate(
    app: &AppState,
    operation: &str,
    body: &[u8],
    ctx: &Ctx,
) -> Result<Response, ApiError> {
    match operation {
        "CreateVectorBucket" => create_bucket(app, body, ctx).await,
        "GetVectorBucket" => get_bucket(app, body, ctx),
        "ListVectorBuckets" => list_buckets(app, body, ctx),
        "DeleteVectorBucket" => delete_bucket(app, body, ctx).await,
        "CreateIndex" => create_index(app, body, ctx).await,
        "GetIndex" => get_index(app, body, ctx),
        "ListIndexes" => list_indexes(app, body, ctx),
        "DeleteIndex" => delete_index(app, body, ctx).await,
        "PutVectors" => put_vectors(app, body, ctx).await,
        "GetVectors" => get_vectors(app, body, ctx).await,
        "ListVectors" => list_vectors(app, body, ctx).await,
        "DeleteVectors" => delete_vectors(app, body, ctx).await,
        "QueryVectors" => query_vectors(app, body, ctx).await,
        "PutVectorBucketPolicy" => put_bucket_policy(app, body, ctx).await,
        "GetVectorBucketPolicy" => get_bucket_policy(app, body, ctx),
        "DeleteVectorBucketPolicy" => delete_bucket_policy(app, body, ctx).await,
        "PutVectorBucketDefaultIndexMode" => put_default_index_mode(app, body, ctx).await,
        "UpdateIndexMode" => update_index_mode(app, body, ctx).await,
        "UpdateMetadataConfiguration" => update_metadata_configuration(app, body, ctx),
        other => Err(ApiError::UnknownOperation(format!(
            "Unknown operation: {other}"
        ))),
    }
}

fn now_epoch_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| (d.as_millis() as f64) / 1000.0)
        .unwrap_or(0.0)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EncryptionIn {
    sse_type: Option<String>,
    kms_key_arn: Option<String>,
}

fn encryption(input: Option<EncryptionIn>) -> Result<Option<EncryptionConfig>, ApiError> {
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
    *prefix == "arn"
        && partition.strip_prefix("aws").is_some_and(|rest| {
            rest.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
        && *service == "kms"
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && account.len() == 12
        && account.chars().all(|c| c.is_ascii_digit())
        && resource
            .strip_prefix("key/")
            .is_some_and(|id| !id.is_empty())
}

/// The S3 name of an encryption type.
fn sse_type_name(sse_type: SseType) -> &'static str {
    match sse_type {
        SseType::Aes256 => "AES256",
        SseType::Kms => "aws:kms",
    }
}

fn encryption_json(config: &EncryptionConfig) -> Value {
    let mut value = json!({ "sseType": sse_type_name(config.sse_type) });
    if let Some(arn) = &config.kms_key_arn {
        value["kmsKeyArn"] = json!(arn);
    }
    value
}

/// Creating a resource with tags also needs `s3vectors:TagResource`.
fn with_tagging(
    actions: &'static [&'static str],
    tags: &BTreeMap<String, String>,
) -> &'static [&'static str] {
    match (actions, tags.is_empty()) {
        (_, true) => actions,
        (["s3vectors:CreateVectorBucket"], false) => {
            &["s3vectors:CreateVectorBucket", "s3vectors:TagResource"]
        }
        (_, false) => &["s3vectors:CreateIndex", "s3vectors:TagResource"],
    }
}

fn tags(input: Option<BTreeMap<String, String>>) -> Result<BTreeMap<String, String>, ApiError> {
    let tags = input.unwrap_or_default();
    check_tags(&tags)?;
    Ok(tags)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBucketIn {
    vector_bucket_name: Option<String>,
    encryption_configuration: Option<EncryptionIn>,
    tags: Option<BTreeMap<String, String>>,
}

async fn create_bucket(app: &AppState, body: &[u8], ctx: &Ctx) -> Result<Response, ApiError> {
    let input: CreateBucketIn = parse(body)?;
    let Some(name) = input.vector_bucket_name else {
        return Err(ApiError::validation(
            "1 validation error detected. Value null at '/vectorBucketName' failed to satisfy constraint: Member must not be null",
        ));
    };
    validate::bucket_name(&name)?;
    let tags = tags(input.tags)?;
    app.authorize(
        ctx,
        with_tagging(&["s3vectors:CreateVectorBucket"], &tags),
        &app.config.scope.bucket_arn(&name),
        None,
    )?;
    let record = BucketRecord {
        name: name.clone(),
        creation_time: now_epoch_seconds(),
        encryption: encryption(input.encryption_configuration)?.unwrap_or_default(),
        tags,
        default_index_mode: IndexMode::Enhanced,
        policy: None,
    };
    app.catalog
        .execute(&ctx.request_id, CatalogCommand::CreateBucket(record))
        .await?;
    Ok(ok_json(
        json!({ "vectorBucketArn": app.config.scope.bucket_arn(&name) }),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BucketIn {
    vector_bucket_name: Option<String>,
    vector_bucket_arn: Option<String>,
}

/// Authorizes `actions` on the addressed bucket, then resolves it to a bucket that exists.
/// Authorization comes first, so a caller without access cannot probe which buckets exist.
fn resolve_bucket(
    app: &AppState,
    ctx: &Ctx,
    actions: &[&str],
    name: Option<&str>,
    arn: Option<&str>,
) -> Result<BucketRecord, ApiError> {
    match validate::bucket_address(&app.config.scope, name, arn)? {
        BucketAddress::Foreign => {
            app.authorize(ctx, actions, arn.unwrap_or_default(), None)?;
            Err(ApiError::bucket_not_found())
        }
        BucketAddress::Name(name) => {
            app.authorize(
                ctx,
                actions,
                &app.config.scope.bucket_arn(&name),
                Some(&name),
            )?;
            app.catalog
                .state()
                .bucket(&name)
                .cloned()
                .ok_or_else(ApiError::bucket_not_found)
        }
    }
}

fn get_bucket(app: &AppState, body: &[u8], ctx: &Ctx) -> Result<Response, ApiError> {
    let input: BucketIn = parse(body)?;
    let bucket = resolve_bucket(
        app,
        ctx,
        &["s3vectors:GetVectorBucket"],
        input.vector_bucket_name.as_deref(),
        input.vector_bucket_arn.as_deref(),
    )?;
    Ok(ok_json(json!({
        "vectorBucket": {
            "vectorBucketName": bucket.name,
            "vectorBucketArn": app.config.scope.bucket_arn(&bucket.name),
            "creationTime": bucket.creation_time,
            "encryptionConfiguration": encryption_json(&bucket.encryption),
            "defaultIndexMode": index_mode_name(bucket.default_index_mode),
        }
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListIn {
    vector_bucket_name: Option<String>,
    vector_bucket_arn: Option<String>,
    max_results: Option<i64>,
    next_token: Option<String>,
    prefix: Option<String>,
}

/// What a list token continues: which listing (`scope`, e.g. the index ARN plus segment and
/// prefix) and the last name returned.
#[derive(Serialize, Deserialize)]
struct PageToken {
    scope: String,
    after: String,
}

impl AppState {
    fn page_token(&self, scope: &str, after: &str) -> String {
        self.tokens.sign(&PageToken {
            scope: scope.to_owned(),
            after: after.to_owned(),
        })
    }

    /// The `after` name of a token, which must have been issued for `scope`.
    fn page_after(&self, token: Option<&str>, scope: &str) -> Result<Option<String>, ApiError> {
        let Some(token) = token else { return Ok(None) };
        let token: PageToken = self.tokens.verify(token)?;
        if token.scope != scope {
            return Err(crate::tokens::invalid_token());
        }
        Ok(Some(token.after))
    }
}

struct Paging {
    limit: usize,
    after: Option<String>,
    prefix: Option<String>,
}

fn paging(app: &AppState, input: &ListIn, max: i64, scope: &str) -> Result<Paging, ApiError> {
    let limit = match input.max_results {
        None => max,
        Some(n) if (1..=max).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::field(
                "/maxResults",
                format!("Member must be between 1 and {max}, inclusive"),
            ))
        }
    };
    if let Some(prefix) = &input.prefix {
        let len = prefix.chars().count();
        if !(1..=63).contains(&len) {
            return Err(ApiError::length("/prefix", len, 1, 63));
        }
    }
    Ok(Paging {
        limit: limit as usize,
        after: app.page_after(
            input.next_token.as_deref(),
            &format!("{scope}?{}", input.prefix.as_deref().unwrap_or_default()),
        )?,
        prefix: input.prefix.clone(),
    })
}

/// One page of names in order, after `paging.after`, matching the prefix; and the last name
/// returned when more follow.
fn page<'a, T>(
    items: impl Iterator<Item = (&'a str, T)>,
    paging: &Paging,
) -> (Vec<T>, Option<&'a str>) {
    let mut out = Vec::new();
    let mut last = None;
    for (name, item) in items {
        if paging.after.as_deref().is_some_and(|after| name <= after) {
            continue;
        }
        if paging
            .prefix
            .as_deref()
            .is_some_and(|p| !name.starts_with(p))
        {
            continue;
        }
        if out.len() == paging.limit {
            return (out, last);
        }
        out.push(item);
        last = Some(name);
    }
    (out, None)
}

fn list_buckets(app: &AppState, body: &[u8], ctx: &Ctx) -> Result<Response, ApiError> {
    let input: ListIn = parse(body)?;
    app.authorize(ctx, &["s3vectors:ListVectorBuckets"], "*", None)?;
    let paging = paging(app, &input, 500, "buckets")?;
    let state = app.catalog.state();
    let scope = &app.config.scope;
    let (items, token) = page(
        state.buckets().map(|b| {
            (
                b.name.as_str(),
                json!({
                    "vectorBucketName": b.name,
                    "vectorBucketArn": scope.bucket_arn(&b.name),
                    "creationTime": b.creation_time,
                }),
            )
        }),
        &paging,
    );
    let mut out = json!({ "vectorBuckets": items });
    if let Some(last) = token {
        out["nextToken"] = json!(app.page_token(
            &format!("buckets?{}", input.prefix.as_deref().unwrap_or_default()),
            last
        ));
    }
    Ok(ok_json(out))
}

async fn delete_bucket(app: &AppState, body: &[u8], ctx: &Ctx) -> Result<Response, ApiError> {
    let input: BucketIn = parse(body)?;
    let bucket = resolve_bucket(
        app,
        ctx,
        &["s3vectors:DeleteVectorBucket"],
        input.vector_bucket_name.as_deref(),
        input.vector_bucket_arn.as_deref(),
    )?;
    app.catalog
        .execute(
            &ctx.request_id,
            CatalogCommand::DeleteBucket { name: bucket.name },
        )
        .await?;
    Ok(ok_empty())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetadataConfigurationIn {
    non_filterable_metadata_keys: Option<Vec<String>>,
    text_search_configurations: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateIndexIn {
    vector_bucket_name: Option<String>,
    vector_bucket_arn: Option<String>,
    index_name: Option<String>,
    data_type: Option<String>,
    dimension: Option<i64>,
    distance_metric: Option<String>,
    metadata_configuration: Option<MetadataConfigurationIn>,
    encryption_configuration: Option<EncryptionIn>,
    tags: Option<BTreeMap<String, String>>,
}

fn required<T>(value: Option<T>, path: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| {
        ApiError::validation(format!(
            "1 validation error detected. Value null at '{path}' failed to satisfy constraint: Member must not be null"
        ))
    })
}

async fn create_index(app: &AppState, body: &[u8], ctx: &Ctx) -> Result<Response, ApiError> {
    let input: CreateIndexIn = parse(body)?;
    let index_name = required(input.index_name, "/indexName")?;
    validate::index_name(&index_name)?;
    let data_type = required(input.data_type, "/dataType")?;
    if data_type != "float32" {
        return Err(ApiError::field(
            "/dataType",
            "Member must satisfy enum value set: [float32]",
        ));
    }
    let dimension = required(input.dimension, "/dimension")?;
    if !(1..=validate::MAX_DIMENSION).contains(&dimension) {
        return Err(ApiError::field(
            "/dimension",
            "Member must be between 1 and 4096, inclusive",
        ));
    }
    let metric = match required(input.distance_metric, "/distanceMetric")?.as_str() {
        "euclidean" => DistanceMetric::Euclidean,
        "cosine" => DistanceMetric::Cosine,
        _ => {
            return Err(ApiError::field(
                "/distanceMetric",
                "Member must satisfy enum value set: [euclidean, cosine]",
            ))
        }
    };
    let non_filterable_keys = match input.metadata_configuration {
        None => None,
        Some(config) => {
            if config.text_search_configurations.is_some() {
                return Err(ApiError::validation(
                    "Full-text search configurations are not supported by this server yet",
                ));
            }
            let keys = config.non_filterable_metadata_keys.unwrap_or_default();
            if keys.len() > validate::MAX_NON_FILTERABLE_KEYS {
                return Err(ApiError::field(
                    "/metadataConfiguration/nonFilterableMetadataKeys",
                    "Member must have length less than or equal to 10",
                ));
            }
            for key in &keys {
                let len = key.chars().count();
                if !(1..=63).contains(&len) {
                    return Err(ApiError::length(
                        "/metadataConfiguration/nonFilterableMetadataKeys",
                        len,
                        1,
                        63,
                    ));
                }
            }
            Some(keys)
        }
    };
    let encryption = encryption(input.encryption_configuration)?;
    let tags = tags(input.tags)?;
    match validate::bucket_address(
        &app.config.scope,
        input.vector_bucket_name.as_deref(),
        input.vector_bucket_arn.as_deref(),
    )? {
        BucketAddress::Name(bucket) => app.authorize(
            ctx,
            with_tagging(&["s3vectors:CreateIndex"], &tags),
            &app.config.scope.index_arn(&bucket, &index_name),
            Some(&bucket),
        )?,
        BucketAddress::Foreign => {
            app.authorize(
                ctx,
                with_tagging(&["s3vectors:CreateIndex"], &tags),
                input.vector_bucket_arn.as_deref().unwrap_or_default(),
                None,
            )?;
            return Err(ApiError::bucket_not_found());
        }
    }
    let bucket = resolve_bucket(
        app,
        ctx,
        &[],
        input.vector_bucket_name.as_deref(),
        input.vector_bucket_arn.as_deref(),
    )?;
    if app
        .catalog
        .state()
        .index(&bucket.name, &index_name)
        .is_some()
    {
        return Err(ApiError::Conflict(
            "An index with the specified name already exists".into(),
        ));
    }
    let shard_count = app.config.shards_per_index.max(2);
    let shards = placement::new_shards(&app.catalog.state(), shard_count)?;
    let uid = IndexUid(rand::random());
    let index = NewIndex {
        bucket: bucket.name.clone(),
        name: index_name.clone(),
        uid,
        creation_time: now_epoch_seconds(),
        dimension: dimension as u32,
        metric,
        non_filterable_keys,
        encryption,
        tags,
        index_mode: bucket.default_index_mode,
        shards,
    };
    // The catalog first, then the shards: a node drops shards the catalog does not name (see
    // `NodeService::reconcile`), and a node that misses the creation below gets the shard from
    // its next heartbeat. If the shards cannot be created, the index is removed again.
    app.catalog
        .execute(&ctx.request_id, CatalogCommand::CreateIndex(index))
        .await?;
    // The record as committed names the replica ids the catalog gave. It is missing (or another
    // incarnation) only if the index was deleted in between; then there is nothing to create.
    let committed = app
        .catalog
        .state()
        .index(&bucket.name, &index_name)
        .cloned();
    let Some(record) = committed.filter(|record| record.uid == uid) else {
        return Ok(ok_json(json!({
            "indexArn": app.config.scope.index_arn(&bucket.name, &index_name)
        })));
    };
    if let Err(error) = app.data.create_shards(&record, &ctx.request_id).await {
        let undo = app
            .catalog
            .execute(
                &ctx.request_id,
                CatalogCommand::DeleteIndex {
                    bucket: record.bucket.clone(),
                    name: record.name.clone(),
                },
            )
            .await;
        if let Err(undo) = undo {
            tracing::warn!(index = %record.name, %undo, "could not remove an index whose shards failed; nodes will create them from their assignments");
        }
        app.data.drop_shards(&record, &ctx.request_id).await;
        return Err(error);
    }
    Ok(ok_json(json!({
        "indexArn": app.config.scope.index_arn(&bucket.name, &index_name)
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexIn {
    vector_bucket_name: Option<String>,
    index_name: Option<String>,
    index_arn: Option<String>,
}

/// Authorizes `actions` on the addressed index, then resolves it to an existing index.
fn resolve_index(
    app: &AppState,
    ctx: &Ctx,
    actions: &[&str],
    bucket: Option<&str>,
    index: Option<&str>,
    arn: Option<&str>,
) -> Result<IndexRecord, ApiError> {
    match validate::index_address(&app.config.scope, bucket, index, arn)? {
        IndexAddress::Foreign => {
            app.authorize(ctx, actions, arn.unwrap_or_default(), None)?;
            Err(ApiError::index_not_found())
        }
        IndexAddress::Name { bucket, index } => {
            let resource = app.config.scope.index_arn(&bucket, &index);
            app.authorize(ctx, actions, &resource, Some(&bucket))?;
            app.catalog
                .state()
                .index(&bucket, &index)
                .cloned()
                .ok_or_else(ApiError::index_not_found)
        }
    }
}

fn get_index(app: &AppState, body: &[u8], ctx: &Ctx) -> Result<Response, ApiError> {
    let input: IndexIn = parse(body)?;
    let index = resolve_index(
        app,
        ctx,
        &["s3vectors:GetIndex"],
        input.vector_bucket_name.as_deref(),
        input.index_name.as_deref(),
        input.index_arn.as_deref(),
    )?;
    let mut out = json!({
        "vectorBucketName": index.bucket,
        "indexName": index.name,
        "indexArn": app.config.scope.index_arn(&index.bucket, &index.name),
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
    Ok(ok_json(json!({ "index": out })))
}

fn list_indexes(app: &AppState, body: &[u8], ctx: &Ctx) -> Result<Response, ApiError> {
    let input: ListIn = parse(body)?;
    let bucket = resolve_bucket(
        app,
        ctx,
        &["s3vectors:ListIndexes"],
        input.vector_bucket_name.as_deref(),
        input.vector_bucket_arn.as_deref(),
    )?;
    let listing = format!("indexes/{}", bucket.name);
    let paging = paging(app, &input, 500, &listing)?;
    let indexes = app.catalog.state().indexes(&bucket.name);
    let scope = &app.config.scope;
    let (items, token) = page(
        indexes.iter().map(|i| {
            (
                i.name.as_str(),
                json!({
                    "vectorBucketName": i.bucket,
                    "indexName": i.name,
                    "indexArn": scope.index_arn(&i.bucket, &i.name),
                    "creationTime": i.creation_time,
                }),
            )
        }),
        &paging,
    );
    let mut out = json!({ "indexes": items });
    if let Some(last) = token {
        out["nextToken"] = json!(app.page_token(
            &format!("{listing}?{}", input.prefix.as_deref().unwrap_or_default()),
            last
        ));
    }
    Ok(ok_json(out))
}

async fn delete_index(app: &AppState, body: &[u8], ctx: &Ctx) -> Result<Response, ApiError> {
    let input: IndexIn = parse(body)?;
    let index = resolve_index(
        app,
        ctx,
        &["s3vectors:DeleteIndex"],
        input.vector_bucket_name.as_deref(),
        input.index_name.as_deref(),
        input.index_arn.as_deref(),
    )?;
    app.catalog
        .execute(
            &ctx.request_id,
            CatalogCommand::DeleteIndex {
                bucket: index.bucket.clone(),
                name: index.name.clone(),
            },
        )
        .await?;
    app.throttle.forget(index.uid);
    app.data.drop_shards(&index, &ctx.request_id).await;
    Ok(ok_empty())
}

#[derive(Deserialize)]
struct VectorDataIn {
    float32: Option<Vec<f32>>,
}

#[derive(Deserialize)]
struct PutVectorIn {
    key: Option<String>,
    data: Option<VectorDataIn>,
    metadata: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutVectorsIn {
    vector_bucket_name: Option<String>,
    index_name: Option<String>,
    index_arn: Option<String>,
    vectors: Option<Vec<PutVectorIn>>,
}

fn count_limit(path: &str, len: usize, max: usize) -> Result<(), ApiError> {
    if len == 0 || len > max {
        return Err(ApiError::field(
            path,
            format!("Member must have length between 1 and {max}, inclusive"),
        ));
    }
    Ok(())
}

async fn put_vectors(app: &AppState, body: &[u8], ctx: &Ctx) -> Result<Response, ApiError> {
    let input: PutVectorsIn = parse(body)?;
    let vectors = required(input.vectors, "/vectors")?;
    count_limit("/vectors", vectors.len(), validate::MAX_PUT_VECTORS)?;
    let index = resolve_index(
        app,
        ctx,
        &["s3vectors:PutVectors"],
        input.vector_bucket_name.as_deref(),
        input.index_name.as_deref(),
        input.index_arn.as_deref(),
    )?;
    let non_filterable = index.non_filterable_keys.clone().unwrap_or_default();
    let cosine = index.metric == DistanceMetric::Cosine;
    let mut ops = Vec::with_capacity(vectors.len());
    for (i, vector) in vectors.into_iter().enumerate() {
        let key = required(vector.key, &format!("/vectors/{i}/key"))?;
        validate::vector_key(&format!("/vectors/{i}/key"), &key)?;
        let record = format!("Invalid record for key '{key}': ");
        let data = vector.data.and_then(|d| d.float32).ok_or_else(|| {
            ApiError::validation(format!("{record}vector data (float32) is required"))
        })?;
        validate::vector(&data, index.dimension, cosine, &record)?;
        let metadata = match &vector.metadata {
            None => Default::default(),
            Some(value) => validate::metadata(value, &non_filterable, &record)?,
        };
        ops.push(WriteOp::Put {
            key,
            vector: data,
            metadata,
        });
    }
    app.throttle.write(index.uid, ops.len())?;
    app.data.write(&index, &ctx.request_id, ops).await?;
    Ok(ok_empty())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeysIn {
    vector_bucket_name: Option<String>,
    index_name: Option<String>,
    index_arn: Option<String>,
    keys: Option<Vec<String>>,
    return_data: Option<bool>,
    return_metadata: Option<bool>,
}

/// A ListVectors page ends once its JSON reaches about this size.
const LIST_PAGE_BYTES: usize = 1024 * 1024;

fn record_json(record: quiver_proto::VectorRecord) -> Value {
    let mut out = json!({ "key": record.key });
    if let Some(vector) = record.vector {
        let floats: Vec<f64> = vector.into_iter().map(f64::from).collect();
        out["data"] = json!({ "float32": floats });
    }
    if let Some(metadata) = record.metadata {
        out["metadata"] = validate::metadata_json(&metadata);
    }
    out
}

fn checked_keys(keys: Option<Vec<String>>, max: usize) -> Result<Vec<String>, ApiError> {
    let keys = required(keys, "/keys")?;
    count_limit("/keys", keys.len(), max)?;
    for (i, key) in keys.iter().enumerate() {
        validate::vector_key(&format!("/keys/{i}"), key)?;
    }
    Ok(keys)
}

async fn get_vectors(app: &AppState, body: &[u8], ctx: &Ctx) -> Result<Response, ApiError> {
    let input: KeysIn = parse(body)?;
    let keys = checked_keys(input.keys, validate::MAX_GET_KEYS)?;
    let index = resolve_index(
        app,
        ctx,
        &["s3vectors:GetVectors"],
        input.vector_bucket_name.as_deref(),
        input.index_name.as_deref(),
        input.index_arn.as_deref(),
    )?;
    app.throttle.read(index.uid)?;
    let mut unique = Vec::with_capacity(keys.len());
    let mut seen = std::collections::HashSet::new();
    for key in keys {
        if seen.insert(key.clone()) {
            unique.push(key);
        }
    }
    let records = app
        .data
        .get(
            &index,
            &ctx.request_id,
            unique,
            input.return_data.unwrap_or(false),
            input.return_metadata.unwrap_or(false),
        )
        .await?;
    let vectors: Vec<Value> = records.into_iter().map(record_json).collect();
    Ok(ok_json(json!({ "vectors": vectors })))
}

async fn delete_vectors(app: &AppState, body: &[u8], ctx: &Ctx) -> Result<Response, ApiError> {
    let input: KeysIn = parse(body)?;
    let keys = checked_keys(input.keys, validate::MAX_DELETE_KEYS)?;
    let index = resolve_index(
        app,
        ctx,
        &["s3vectors:DeleteVectors"],
        input.vector_bucket_name.as_deref(),
        input.index_name.as_deref(),
        input.index_arn.as_deref(),
    )?;
    app.throttle.write(index.uid, keys.len())?;
    let ops = keys
        .into_iter()
        .map(|key| WriteOp::Delete { key })
        .collect();
    app.data.write(&index, &ctx.request_id, ops).await?;
    Ok(ok_empty())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListVectorsIn {
    vector_bucket_name: Option<String>,
    index_name: Option<String>,
    index_arn: Option<String>,
    max_results: Option<i64>,
    next_token: Option<String>,
    segment_count: Option<i64>,
    segment_index: Option<i64>,
    return_data: Option<bool>,
    return_metadata: Option<bool>,
}

async fn list_vectors(app: &AppState, body: &[u8], ctx: &Ctx) -> Result<Response, ApiError> {
    let input: ListVectorsIn = parse(body)?;
    let limit = match input.max_results {
        None => 500,
        Some(n) if (1..=1000).contains(&n) => n as u32,
        Some(_) => {
            return Err(ApiError::field(
                "/maxResults",
                "Member must be between 1 and 1000, inclusive",
            ))
        }
    };
    let range = match (input.segment_count, input.segment_index) {
        (None, None) => None,
        (Some(count), Some(index)) => {
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
            Some(HashRange::split(index as u32, count as u32))
        }
        _ => {
            return Err(ApiError::validation(
                "segmentCount and segmentIndex must be specified together",
            ))
        }
    };
    let return_data = input.return_data.unwrap_or(false);
    let return_metadata = input.return_metadata.unwrap_or(false);
    // Reading data or metadata through ListVectors also needs GetVectors.
    let list_actions: &[&str] = if return_data || return_metadata {
        &["s3vectors:ListVectors", "s3vectors:GetVectors"]
    } else {
        &["s3vectors:ListVectors"]
    };
    let index = resolve_index(
        app,
        ctx,
        list_actions,
        input.vector_bucket_name.as_deref(),
        input.index_name.as_deref(),
        input.index_arn.as_deref(),
    )?;
    app.throttle.read(index.uid)?;
    // The token is bound to this index incarnation and segment.
    let listing = format!(
        "vectors/{}/{:?}/{:?}",
        index.uid.0, input.segment_count, input.segment_index
    );
    let after = app.page_after(input.next_token.as_deref(), &listing)?;
    let (records, more) = app
        .data
        .list(
            &index,
            &ctx.request_id,
            after,
            limit,
            range,
            return_data,
            return_metadata,
        )
        .await?;
    // Like the service, end a page early once about 1 MB of data has been gathered.
    let mut vectors = Vec::with_capacity(records.len());
    let mut bytes = 0usize;
    let mut last_key = None;
    let total = records.len();
    for record in records {
        let key = record.key.clone();
        let value = record_json(record);
        bytes += value.to_string().len();
        vectors.push(value);
        last_key = Some(key);
        if bytes >= LIST_PAGE_BYTES {
            break;
        }
    }
    let more = more || vectors.len() < total;
    let mut out = json!({ "vectors": vectors });
    if let (true, Some(last)) = (more, last_key) {
        out["nextToken"] = json!(app.page_token(&listing, &last));
    }
    Ok(ok_json(out))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryIn {
    vector_bucket_name: Option<String>,
    index_name: Option<String>,
    index_arn: Option<String>,
    top_k: Option<i64>,
    query_vector: Option<VectorDataIn>,
    filter: Option<Value>,
    return_metadata: Option<bool>,
    return_distance: Option<bool>,
    query_mode: Option<String>,
    query_texts: Option<Value>,
    /// Only meaningful with queryTexts (full-text search); type-checked like every member.
    #[allow(dead_code)]
    return_scores: Option<bool>,
    next_token: Option<String>,
}

async fn query_vectors(app: &AppState, body: &[u8], ctx: &Ctx) -> Result<Response, ApiError> {
    let input: QueryIn = parse(body)?;
    let top_k = required(input.top_k, "/topK")?;
    if top_k < 1 {
        return Err(ApiError::field(
            "/topK",
            "Member must be greater than or equal to 1",
        ));
    }
    if top_k > validate::MAX_TOP_K {
        return Err(ApiError::validation(format!(
            "topK must be at most {}",
            validate::MAX_TOP_K
        )));
    }
    if input.query_texts.is_some() {
        return Err(ApiError::validation(
            "queryTexts (full-text search) is not supported by this server yet",
        ));
    }
    let query_vector = input
        .query_vector
        .as_ref()
        .and_then(|v| v.float32.clone())
        .ok_or_else(|| ApiError::validation("queryVector is required"))?;
    let requested_mode = match input.query_mode.as_deref() {
        None => None,
        Some(mode @ ("ENHANCED" | "CLASSIC")) => Some(mode),
        Some(_) => {
            return Err(ApiError::field(
                "/queryMode",
                "Member must satisfy enum value set: [CLASSIC, ENHANCED]",
            ))
        }
    };
    // A filter or returned metadata reads metadata: that also needs GetVectors.
    let return_metadata = input.return_metadata.unwrap_or(false);
    let query_actions: &[&str] = if input.filter.is_some() || return_metadata {
        &["s3vectors:QueryVectors", "s3vectors:GetVectors"]
    } else {
        &["s3vectors:QueryVectors"]
    };
    let index = resolve_index(
        app,
        ctx,
        query_actions,
        input.vector_bucket_name.as_deref(),
        input.index_name.as_deref(),
        input.index_arn.as_deref(),
    )?;
    // ENHANCED may be asked of a CLASSIC index; CLASSIC may not be asked of an ENHANCED one.
    let enhanced = match (requested_mode, index_mode_name(index.index_mode)) {
        (Some("CLASSIC"), "ENHANCED") => {
            return Err(ApiError::validation(
                "queryMode CLASSIC is not supported for an index in ENHANCED mode",
            ))
        }
        (Some(mode), _) => mode == "ENHANCED",
        (None, mode) => mode == "ENHANCED",
    };
    validate::vector(
        &query_vector,
        index.dimension,
        index.metric == DistanceMetric::Cosine,
        "Invalid query vector: ",
    )?;
    let non_filterable = index.non_filterable_keys.clone().unwrap_or_default();
    let filter = input
        .filter
        .as_ref()
        .map(|f| validate::filter(f, &non_filterable, enhanced))
        .transpose()?;
    app.throttle.read(index.uid)?;
    let return_distance = input.return_distance.unwrap_or(false);
    // Results beyond one page are computed once and served from a cursor, so later pages are
    // stable against writes made in between (while the pages go to the same coordinator within
    // the cursor's lifetime; otherwise the query is computed again).
    let fingerprint = query_fingerprint(
        index.uid,
        &query_vector,
        top_k,
        input.filter.as_ref(),
        enhanced,
    );
    let cached = match &input.next_token {
        None => None,
        Some(token) => {
            let token: QueryToken = app.tokens.verify(token)?;
            if token.fingerprint != fingerprint {
                return Err(ApiError::validation(
                    "The nextToken does not belong to this query: queryVector, topK, filter and queryMode must be the same as in the first request",
                ));
            }
            // The cursor may live on another coordinator, or have expired; then the query runs
            // again here and the page is cut from the fresh results.
            let cursor = app
                .cursors
                .get(token.cursor)
                .filter(|(cursor_fingerprint, _, _)| *cursor_fingerprint == fingerprint);
            if let Some((_, _, with_metadata)) = &cursor {
                if return_metadata && !with_metadata {
                    return Err(ApiError::validation(
                        "returnMetadata must be the same on every page of a paginated query",
                    ));
                }
            }
            Some((token, cursor.map(|(_, hits, _)| hits)))
        }
    };
    let (hits, offset, cursor) = match cached {
        Some((token, Some(hits))) => (hits, token.offset, Some(token.cursor)),
        first_page_or_miss => {
            let hits = app
                .data
                .query(
                    &index,
                    &ctx.request_id,
                    query_vector,
                    top_k as u32,
                    filter,
                    return_metadata,
                )
                .await?;
            let offset = first_page_or_miss.map_or(0, |(token, _)| token.offset);
            (Arc::new(hits), offset, None)
        }
    };
    let end = (offset + QUERY_PAGE_SIZE).min(hits.len());
    let next_token = if end < hits.len() {
        // A follow-up page continues the cursor it came from; a first page opens one.
        let cursor = cursor.unwrap_or_else(|| {
            app.cursors
                .insert(fingerprint, hits.clone(), return_metadata)
        });
        Some(app.tokens.sign(&QueryToken {
            cursor,
            offset: end,
            fingerprint,
        }))
    } else {
        None
    };
    let vectors: Vec<Value> = hits
        .get(offset..end)
        .unwrap_or_default()
        .iter()
        .map(|hit| {
            let mut out = json!({ "key": hit.key });
            if return_distance {
                out["distance"] = json!(f64::from(hit.distance));
            }
            if let (true, Some(metadata)) = (return_metadata, &hit.metadata) {
                out["metadata"] = validate::metadata_json(metadata);
            }
            out
        })
        .collect();
    let mut out = json!({
        "vectors": vectors,
        "distanceMetric": metric_name(index.metric),
    });
    if let Some(token) = next_token {
        out["nextToken"] = json!(token);
    }
    Ok(ok_json(out))
}

/// Results per QueryVectors page; a larger topK is paged with nextToken.
const QUERY_PAGE_SIZE: usize = 100;

#[derive(Serialize, Deserialize)]
struct QueryToken {
    cursor: u64,
    offset: usize,
    fingerprint: u64,
}

/// Identifies a query for pagination: the parameters a follow-up request must repeat.
fn query_fingerprint(
    index: IndexUid,
    vector: &[f32],
    top_k: i64,
    filter: Option<&Value>,
    enhanced: bool,
) -> u64 {
    let mut bytes = Vec::with_capacity(vector.len() * 4 + 64);
    bytes.extend_from_slice(&index.0.to_le_bytes());
    for x in vector {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes.extend_from_slice(&top_k.to_le_bytes());
    bytes.push(u8::from(enhanced));
    if let Some(filter) = filter {
        bytes.extend_from_slice(filter.to_string().as_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BucketPolicyIn {
    vector_bucket_name: Option<String>,
    vector_bucket_arn: Option<String>,
    policy: Option<String>,
}

async fn put_bucket_policy(app: &AppState, body: &[u8], ctx: &Ctx) -> Result<Response, ApiError> {
    let input: BucketPolicyIn = parse(body)?;
    let bucket = resolve_bucket(
        app,
        ctx,
        &["s3vectors:PutVectorBucketPolicy"],
        input.vector_bucket_name.as_deref(),
        input.vector_bucket_arn.as_deref(),
    )?;
    let policy = required(input.policy, "/policy")?;
    crate::auth::policy::Policy::parse(&policy, true)
        .map_err(|e| ApiError::validation(format!("Invalid policy: {e}")))?;
    app.catalog
        .execute(
            &ctx.request_id,
            CatalogCommand::SetBucketPolicy {
                bucket: bucket.name,
                policy: Some(policy),
            },
        )
        .await?;
    Ok(ok_empty())
}

fn get_bucket_policy(app: &AppState, body: &[u8], ctx: &Ctx) -> Result<Response, ApiError> {
    let input: BucketIn = parse(body)?;
    let bucket = resolve_bucket(
        app,
        ctx,
        &["s3vectors:GetVectorBucketPolicy"],
        input.vector_bucket_name.as_deref(),
        input.vector_bucket_arn.as_deref(),
    )?;
    match bucket.policy {
        Some(policy) => Ok(ok_json(json!({ "policy": policy }))),
        None => Err(ApiError::NotFound(
            "The specified vector bucket policy could not be found".into(),
        )),
    }
}

async fn delete_bucket_policy(
    app: &AppState,
    body: &[u8],
    ctx: &Ctx,
) -> Result<Response, ApiError> {
    let input: BucketIn = parse(body)?;
    let bucket = resolve_bucket(
        app,
        ctx,
        &["s3vectors:DeleteVectorBucketPolicy"],
        input.vector_bucket_name.as_deref(),
        input.vector_bucket_arn.as_deref(),
    )?;
    app.catalog
        .execute(
            &ctx.request_id,
            CatalogCommand::SetBucketPolicy {
                bucket: bucket.name,
                policy: None,
            },
        )
        .await?;
    Ok(ok_empty())
}

/// Buckets created before this instant (2026-09-30T00:00:00Z, when S3 Vectors introduced index
/// modes) may use CLASSIC; newer ones only ENHANCED.
const INDEX_MODES_INTRODUCED: f64 = 1_790_726_400.0;

fn index_mode(
    value: Option<String>,
    path: &str,
    bucket: &BucketRecord,
) -> Result<IndexMode, ApiError> {
    let mode = required(value, path)?;
    match mode.as_str() {
        "ENHANCED" => Ok(IndexMode::Enhanced),
        "CLASSIC" if bucket.creation_time < INDEX_MODES_INTRODUCED => Ok(IndexMode::Classic),
        "CLASSIC" => Err(ApiError::validation(
            "CLASSIC mode is only available for indexes in vector buckets created before September 30, 2026",
        )),
        _ => Err(ApiError::field(
            path,
            "Member must satisfy enum value set: [CLASSIC, ENHANCED]",
        )),
    }
}

/// The S3 name of an index mode.
fn index_mode_name(mode: IndexMode) -> &'static str {
    match mode {
        IndexMode::Classic => "CLASSIC",
        IndexMode::Enhanced => "ENHANCED",
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DefaultIndexModeIn {
    vector_bucket_name: Option<String>,
    vector_bucket_arn: Option<String>,
    default_index_mode: Option<String>,
}

async fn put_default_index_mode(
    app: &AppState,
    body: &[u8],
    ctx: &Ctx,
) -> Result<Response, ApiError> {
    let input: DefaultIndexModeIn = parse(body)?;
    let bucket = resolve_bucket(
        app,
        ctx,
        &["s3vectors:PutVectorBucketDefaultIndexMode"],
        input.vector_bucket_name.as_deref(),
        input.vector_bucket_arn.as_deref(),
    )?;
    let mode = index_mode(input.default_index_mode, "/defaultIndexMode", &bucket)?;
    app.catalog
        .execute(
            &ctx.request_id,
            CatalogCommand::SetBucketDefaultIndexMode {
                bucket: bucket.name,
                mode,
            },
        )
        .await?;
    Ok(ok_empty())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexModeIn {
    vector_bucket_name: Option<String>,
    index_name: Option<String>,
    index_arn: Option<String>,
    index_mode: Option<String>,
}

async fn update_index_mode(app: &AppState, body: &[u8], ctx: &Ctx) -> Result<Response, ApiError> {
    let input: IndexModeIn = parse(body)?;
    let index = resolve_index(
        app,
        ctx,
        &["s3vectors:UpdateIndexMode"],
        input.vector_bucket_name.as_deref(),
        input.index_name.as_deref(),
        input.index_arn.as_deref(),
    )?;
    let bucket = app
        .catalog
        .state()
        .bucket(&index.bucket)
        .cloned()
        .ok_or_else(ApiError::index_not_found)?;
    let mode = index_mode(input.index_mode, "/indexMode", &bucket)?;
    app.catalog
        .execute(
            &ctx.request_id,
            CatalogCommand::SetIndexMode {
                bucket: index.bucket,
                index: index.name,
                mode,
            },
        )
        .await?;
    Ok(ok_empty())
}

fn update_metadata_configuration(
    app: &AppState,
    body: &[u8],
    ctx: &Ctx,
) -> Result<Response, ApiError> {
    let input: IndexIn = parse(body)?;
    resolve_index(
        app,
        ctx,
        &["s3vectors:UpdateMetadataConfiguration"],
        input.vector_bucket_name.as_deref(),
        input.index_name.as_deref(),
        input.index_arn.as_deref(),
    )?;
    Err(ApiError::validation(
        "UpdateMetadataConfiguration (full-text search configuration) is not supported by this server yet",
    ))
}

/// Maximum tags on one resource.
const MAX_TAGS: usize = 50;

fn tag_string_ok(s: &str) -> bool {
    s.chars().all(|c| {
        c.is_alphabetic()
            || c.is_numeric()
            || c.is_whitespace()
            || matches!(c, '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@')
    })
}

const TAG_PATTERN: &str =
    "Member must satisfy regular expression pattern: [\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*";

fn check_tag_key(key: &str, path: &str) -> Result<(), ApiError> {
    let len = key.chars().count();
    if !(1..=128).contains(&len) {
        return Err(ApiError::length(path, len, 1, 128));
    }
    if !tag_string_ok(key) {
        return Err(ApiError::field(path, TAG_PATTERN));
    }
    Ok(())
}

fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if tags.len() > MAX_TAGS {
        return Err(ApiError::validation(format!(
            "A resource can have at most {MAX_TAGS} tags"
        )));
    }
    for (key, value) in tags {
        check_tag_key(key, "/tags")?;
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

#[derive(Deserialize)]
struct TagResourceIn {
    tags: Option<BTreeMap<String, String>>,
}

/// `GET|POST|DELETE /tags/{resourceArn}`: ListTagsForResource, TagResource, UntagResource.
#[allow(clippy::too_many_arguments)]
async fn tags_dispatch(
    State(app): State<App>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(arn): Path<String>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let Ok(body) = body else {
        return ApiError::PayloadTooLarge("Request body rejected".into()).into_response();
    };
    let ctx = match authenticated(&app, request_id, &method, &uri, &headers, &body) {
        Ok(ctx) => ctx,
        Err(error) => return error.into_response(),
    };
    // Listing tags is a read of the catalog: linearizable, as in `dispatch`.
    let control_read = method == axum::http::Method::GET;
    let result = with_read_barrier(&app, control_read, || {
        tags_operation(&app, &ctx, &method, &arn, uri.query(), &body)
    })
    .await;
    match result {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn tags_operation(
    app: &AppState,
    ctx: &Ctx,
    method: &axum::http::Method,
    arn: &str,
    query: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let action = match *method {
        axum::http::Method::GET => "s3vectors:ListTagsForResource",
        axum::http::Method::POST => "s3vectors:TagResource",
        _ => "s3vectors:UntagResource",
    };
    let len = arn.chars().count();
    if len > 1011 {
        return Err(ApiError::length("/resourceArn", len, 0, 1011));
    }
    let parsed = app.config.scope.parse_arn(arn)?;
    let bucket_name = parsed.as_ref().map(|(b, _)| b.clone());
    app.authorize(ctx, &[action], arn, bucket_name.as_deref())?;
    let Some((bucket, index)) = parsed else {
        return Err(ApiError::NotFound(
            "The specified resource could not be found".into(),
        ));
    };
    let current = {
        let state = app.catalog.state();
        match &index {
            None => state
                .bucket(&bucket)
                .map(|b| b.tags.clone())
                .ok_or_else(ApiError::bucket_not_found)?,
            Some(index) => state
                .index(&bucket, index)
                .map(|i| i.tags.clone())
                .ok_or_else(ApiError::index_not_found)?,
        }
    };
    let updated = match *method {
        axum::http::Method::GET => return Ok(ok_json(json!({ "tags": current }))),
        axum::http::Method::POST => {
            let input: TagResourceIn = parse(body)?;
            let tags = required(input.tags, "/tags")?;
            check_tags(&tags)?;
            let mut merged = current;
            merged.extend(tags);
            check_tags(&merged)?;
            merged
        }
        _ => {
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
            if keys.is_empty() {
                return Err(ApiError::validation(
                    "1 validation error detected. Value null at '/tagKeys' failed to satisfy constraint: Member must not be null",
                ));
            }
            for key in &keys {
                check_tag_key(key, "/tagKeys")?;
            }
            let mut remaining = current;
            for key in keys {
                remaining.remove(&key);
            }
            remaining
        }
    };
    app.catalog
        .execute(
            &ctx.request_id,
            CatalogCommand::SetTags {
                bucket,
                index,
                tags: updated,
            },
        )
        .await?;
    Ok(ok_empty())
}
