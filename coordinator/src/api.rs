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
use base64::Engine;
use quiver_proto::{DistanceMetric, HashRange, IndexUid, WriteOp};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::Instrument;

use crate::auth::{Authenticator, Principal};
use crate::catalog::{
    BucketRecord, Catalog, CatalogCommand, EncryptionConfig, IndexRecord, ShardPlacement,
};
use crate::dataplane::{metric_name, DataPlane};
use crate::error::ApiError;
use crate::validate::{self, ArnScope, BucketAddress, IndexAddress};

/// Settings of the API layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub scope: ArnScope,
    /// Shards per new index (at least 2 so fan-out and merge always run).
    pub shards_per_index: u32,
}

pub struct AppState {
    pub config: ApiConfig,
    pub catalog: Arc<dyn Catalog>,
    pub data: DataPlane,
    pub auth: Authenticator,
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
        .route("/ready", get(|| async { "ok" }))
        .route("/{operation}", post(dispatch))
        .layer(axum::middleware::from_fn(request_context))
        .layer(DefaultBodyLimit::max(validate::MAX_REQUEST_BYTES))
        .with_state(state)
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
    let principal = match app.auth.authenticate(&method, &uri, &headers, &body) {
        Ok(principal) => principal,
        Err(error) => return error.into_response(),
    };
    let ctx = Ctx {
        request_id,
        principal,
    };
    let result = match operation.as_str() {
        "CreateVectorBucket" => create_bucket(&app, &body, &ctx),
        "GetVectorBucket" => get_bucket(&app, &body, &ctx),
        "ListVectorBuckets" => list_buckets(&app, &body, &ctx),
        "DeleteVectorBucket" => delete_bucket(&app, &body, &ctx),
        "CreateIndex" => create_index(&app, &body, &ctx).await,
        "GetIndex" => get_index(&app, &body, &ctx),
        "ListIndexes" => list_indexes(&app, &body, &ctx),
        "DeleteIndex" => delete_index(&app, &body, &ctx).await,
        "PutVectors" => put_vectors(&app, &body, &ctx).await,
        "GetVectors" => get_vectors(&app, &body, &ctx).await,
        "ListVectors" => list_vectors(&app, &body, &ctx).await,
        "DeleteVectors" => delete_vectors(&app, &body, &ctx).await,
        "QueryVectors" => query_vectors(&app, &body, &ctx).await,
        "PutVectorBucketPolicy" => put_bucket_policy(&app, &body, &ctx),
        "GetVectorBucketPolicy" => get_bucket_policy(&app, &body, &ctx),
        "DeleteVectorBucketPolicy" => delete_bucket_policy(&app, &body, &ctx),
        other => Err(ApiError::UnknownOperation(format!(
            "Unknown operation: {other}"
        ))),
    };
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
    let sse_type = input.sse_type.unwrap_or_else(|| "AES256".into());
    match sse_type.as_str() {
        "AES256" => {
            if input.kms_key_arn.is_some() {
                return Err(ApiError::validation(
                    "kmsKeyArn can only be specified when sseType is aws:kms",
                ));
            }
        }
        "aws:kms" => {
            let Some(arn) = &input.kms_key_arn else {
                return Err(ApiError::validation(
                    "kmsKeyArn must be specified when sseType is aws:kms",
                ));
            };
            let valid = arn.starts_with("arn:aws")
                && arn.split(':').nth(2) == Some("kms")
                && arn.contains(":key/")
                && (1..=2048).contains(&arn.len());
            if !valid {
                return Err(ApiError::field(
                    "/encryptionConfiguration/kmsKeyArn",
                    "Member must satisfy regular expression pattern: (arn:aws[-a-z0-9]*:kms:[-a-z0-9]*:[0-9]{12}:key/.+)",
                ));
            }
        }
        _ => {
            return Err(ApiError::field(
                "/encryptionConfiguration/sseType",
                "Member must satisfy enum value set: [AES256, aws:kms]",
            ))
        }
    }
    Ok(Some(EncryptionConfig {
        sse_type,
        kms_key_arn: input.kms_key_arn,
    }))
}

fn encryption_json(config: &EncryptionConfig) -> Value {
    let mut value = json!({ "sseType": config.sse_type });
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
    if tags.len() > 50 {
        return Err(ApiError::validation("A resource can have at most 50 tags"));
    }
    for (key, value) in &tags {
        if !(1..=128).contains(&key.chars().count()) {
            return Err(ApiError::length("/tags", key.chars().count(), 1, 128));
        }
        if value.chars().count() > 256 {
            return Err(ApiError::length("/tags", value.chars().count(), 0, 256));
        }
    }
    Ok(tags)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBucketIn {
    vector_bucket_name: Option<String>,
    encryption_configuration: Option<EncryptionIn>,
    tags: Option<BTreeMap<String, String>>,
}

fn create_bucket(app: &AppState, body: &[u8], ctx: &Ctx) -> Result<Response, ApiError> {
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
        default_index_mode: "ENHANCED".into(),
        policy: None,
    };
    app.catalog.execute(CatalogCommand::CreateBucket(record))?;
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
            "defaultIndexMode": bucket.default_index_mode,
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

#[derive(Serialize, Deserialize)]
struct PageToken {
    after: String,
}

fn encode_token(after: &str) -> String {
    let json = serde_json::to_vec(&PageToken {
        after: after.to_owned(),
    })
    .unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_token(token: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::validation("The provided nextToken is not valid");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| invalid())?;
    let token: PageToken = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    Ok(token.after)
}

struct Paging {
    limit: usize,
    after: Option<String>,
    prefix: Option<String>,
}

fn paging(input: &ListIn, max: i64) -> Result<Paging, ApiError> {
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
        after: input.next_token.as_deref().map(decode_token).transpose()?,
        prefix: input.prefix.clone(),
    })
}

/// One page of names in order, after `paging.after`, matching the prefix.
fn page<'a, T>(
    items: impl Iterator<Item = (&'a str, T)>,
    paging: &Paging,
) -> (Vec<T>, Option<String>) {
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
            return (out, last.map(encode_token));
        }
        out.push(item);
        last = Some(name);
    }
    (out, None)
}

fn list_buckets(app: &AppState, body: &[u8], ctx: &Ctx) -> Result<Response, ApiError> {
    let input: ListIn = parse(body)?;
    let paging = paging(&input, 500)?;
    app.authorize(ctx, &["s3vectors:ListVectorBuckets"], "*", None)?;
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
    if let Some(token) = token {
        out["nextToken"] = json!(token);
    }
    Ok(ok_json(out))
}

fn delete_bucket(app: &AppState, body: &[u8], ctx: &Ctx) -> Result<Response, ApiError> {
    let input: BucketIn = parse(body)?;
    let bucket = resolve_bucket(
        app,
        ctx,
        &["s3vectors:DeleteVectorBucket"],
        input.vector_bucket_name.as_deref(),
        input.vector_bucket_arn.as_deref(),
    )?;
    app.catalog
        .execute(CatalogCommand::DeleteBucket { name: bucket.name })?;
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
        BucketAddress::Foreign => return Err(ApiError::bucket_not_found()),
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
    let nodes = app.data.node_ids();
    if nodes.is_empty() {
        return Err(ApiError::ServiceUnavailable(
            "No storage node is available".into(),
        ));
    }
    let shard_count = app.config.shards_per_index.max(2);
    let shards = (0..shard_count)
        .map(|shard| ShardPlacement {
            shard,
            range: HashRange::split(shard, shard_count),
            node: nodes[shard as usize % nodes.len()].clone(),
        })
        .collect();
    let record = IndexRecord {
        bucket: bucket.name.clone(),
        name: index_name.clone(),
        uid: IndexUid(rand::random()),
        creation_time: now_epoch_seconds(),
        dimension: dimension as u32,
        metric,
        non_filterable_keys,
        encryption,
        tags,
        index_mode: bucket.default_index_mode.clone(),
        shards,
    };
    // Shards first, then the catalog: an index is visible only once all its shards exist.
    app.data.create_shards(&record, &ctx.request_id).await?;
    if let Err(error) = app
        .catalog
        .execute(CatalogCommand::CreateIndex(record.clone()))
    {
        app.data.drop_shards(&record, &ctx.request_id).await;
        return Err(error.into());
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
        "indexMode": index.index_mode,
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
    let paging = paging(&input, 500)?;
    let bucket = resolve_bucket(
        app,
        ctx,
        &["s3vectors:ListIndexes"],
        input.vector_bucket_name.as_deref(),
        input.vector_bucket_arn.as_deref(),
    )?;
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
    if let Some(token) = token {
        out["nextToken"] = json!(token);
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
    app.catalog.execute(CatalogCommand::DeleteIndex {
        bucket: index.bucket.clone(),
        name: index.name.clone(),
    })?;
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
    let after = input.next_token.as_deref().map(decode_token).transpose()?;
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
    let token = if more {
        records.last().map(|r| encode_token(&r.key))
    } else {
        None
    };
    let vectors: Vec<Value> = records.into_iter().map(record_json).collect();
    let mut out = json!({ "vectors": vectors });
    if let Some(token) = token {
        out["nextToken"] = json!(token);
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
        .and_then(|v| v.float32)
        .ok_or_else(|| ApiError::validation("queryVector is required"))?;
    let enhanced = match input.query_mode.as_deref() {
        None | Some("ENHANCED") => true,
        Some("CLASSIC") => false,
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
    let enhanced = enhanced && index.index_mode == "ENHANCED"
        || input.query_mode.as_deref() == Some("ENHANCED");
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
    let return_distance = input.return_distance.unwrap_or(false);
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
    let vectors: Vec<Value> = hits
        .into_iter()
        .map(|hit| {
            let mut out = json!({ "key": hit.key });
            if return_distance {
                out["distance"] = json!(f64::from(hit.distance));
            }
            if let Some(metadata) = hit.metadata {
                out["metadata"] = validate::metadata_json(&metadata);
            }
            out
        })
        .collect();
    Ok(ok_json(json!({
        "vectors": vectors,
        "distanceMetric": metric_name(index.metric),
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BucketPolicyIn {
    vector_bucket_name: Option<String>,
    vector_bucket_arn: Option<String>,
    policy: Option<String>,
}

fn put_bucket_policy(app: &AppState, body: &[u8], ctx: &Ctx) -> Result<Response, ApiError> {
    let input: BucketPolicyIn = parse(body)?;
    let policy = required(input.policy, "/policy")?;
    crate::auth::policy::Policy::parse(&policy, true)
        .map_err(|e| ApiError::validation(format!("Invalid policy: {e}")))?;
    let bucket = resolve_bucket(
        app,
        ctx,
        &["s3vectors:PutVectorBucketPolicy"],
        input.vector_bucket_name.as_deref(),
        input.vector_bucket_arn.as_deref(),
    )?;
    app.catalog.execute(CatalogCommand::SetBucketPolicy {
        bucket: bucket.name,
        policy: Some(policy),
    })?;
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

fn delete_bucket_policy(app: &AppState, body: &[u8], ctx: &Ctx) -> Result<Response, ApiError> {
    let input: BucketIn = parse(body)?;
    let bucket = resolve_bucket(
        app,
        ctx,
        &["s3vectors:DeleteVectorBucketPolicy"],
        input.vector_bucket_name.as_deref(),
        input.vector_bucket_arn.as_deref(),
    )?;
    app.catalog.execute(CatalogCommand::SetBucketPolicy {
        bucket: bucket.name,
        policy: None,
    })?;
    Ok(ok_empty())
}
